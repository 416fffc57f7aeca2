/*
 * slot_table.h - a fixed-size, set-associative table in shared memory.
 *
 * A key may live in two sets of SLOT_WAYS entries: its home set, and an
 * alternative chosen by a second hash among the sets of the same lock
 * partition (so one lock covers both).  It goes to the one of the two with
 * more free ways (home on a tie), else it replaces the least recently used
 * entry of the two that the caller allows to go.  With one set only, about
 * 8 % of the sets of a table sized 1.5 x its keys get more than SLOT_WAYS
 * keys and thrash while the table is a third empty; going home while there
 * is room still left some keys with both sets full (72 to 78 of 20,000 keys
 * at 2 / 3 full); the less loaded of two choices keeps every set near the
 * mean (0 of them, at times 1).
 * Lookups read the home set's tags, and the alternative's only when the key
 * is not at home.  Constant time,
 * constant size, no allocation: what the verify path needs.  Each set also
 * has a line of SLOT_WAYS 32-bit hash tags, so a lookup reads one cache line
 * of tags and then only the entry whose tag matches, instead of SLOT_WAYS
 * entries scattered over as many lines (with a million keys that is the
 * difference between one and eight memory stalls).  Sets are guarded by
 * SLOT_PARTITIONS LWLocks (set % SLOT_PARTITIONS; the number of sets is a
 * multiple of SLOT_PARTITIONS): shared to read, exclusive to insert or evict.
 */
#ifndef APIKEYS_SLOT_TABLE_H
#define APIKEYS_SLOT_TABLE_H

#include "postgres.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"
#include "common/hashfn.h"

#define SLOT_WAYS 8
#define SLOT_PARTITIONS 64

/* every entry starts with this, then its key */
typedef struct SlotHeader
{
	bool		used;
	TimestampTz last_use;
} SlotHeader;

typedef struct SlotTable
{
	uint32		nsets;
	Size		entry_size;
	Size		key_offset;
	Size		key_size;
	LWLock	   *locks[SLOT_PARTITIONS];
	uint32	   *tags;			/* nsets * SLOT_WAYS; 0: free way */
	char	   *entries;		/* nsets * SLOT_WAYS entries */
} SlotTable;

extern uint32 slot_sets_for(int nentries);
extern Size slot_table_size(int nentries, Size entry_size);
extern void slot_table_init(SlotTable *t, const char *name, int nentries,
							Size entry_size, Size key_offset, Size key_size,
							LWLockPadded *locks, bool *found);

static inline uint32
slot_hash(const SlotTable *t, const void *key)
{
	return hash_bytes((const unsigned char *) key, (int) t->key_size);
}

/* a key's home set; its partition lock also covers the alternative set */
static inline uint32
slot_set(const SlotTable *t, uint32 hash)
{
	return hash % t->nsets;
}

/*
 * A key's alternative set: another set of the same partition, picked by a
 * second hash (the home set itself when the partition has only one).
 */
static inline uint32
slot_alt_set(const SlotTable *t, uint32 hash)
{
	uint32		per_partition = t->nsets / SLOT_PARTITIONS;
	uint32		home = slot_set(t, hash);

	if (per_partition < 2)
		return home;
	return (home + SLOT_PARTITIONS * (1 + murmurhash32(hash) % (per_partition - 1))) % t->nsets;
}

/* The sets a key may sit in, home first: 2, or 1 when they are the same. */
static inline int
slot_sets_of(const SlotTable *t, uint32 hash, uint32 sets[2])
{
	sets[0] = slot_set(t, hash);
	sets[1] = slot_alt_set(t, hash);
	return sets[1] == sets[0] ? 1 : 2;
}

static inline LWLock *
slot_lock(const SlotTable *t, uint32 set)
{
	return t->locks[set % SLOT_PARTITIONS];
}

static inline SlotHeader *
slot_entry(const SlotTable *t, uint32 set, int way)
{
	return (SlotHeader *) (t->entries + ((Size) set * SLOT_WAYS + way) * t->entry_size);
}

/* an entry's position: set * SLOT_WAYS + way */
static inline Size
slot_index(const SlotTable *t, const SlotHeader *e)
{
	return ((const char *) e - t->entries) / t->entry_size;
}

/* the entry holding key (hash: slot_hash of it), or NULL; its set's lock held, any mode */
extern SlotHeader *slot_find(const SlotTable *t, uint32 hash, const void *key);

/*
 * A free entry of the key's home set, else of its alternative set, else the
 * least recently used entry of the two that may_evict() accepts (NULL: any),
 * else NULL.  Needs the partition lock exclusive.  The
 * entry comes back with its key set and used = true; the caller fills the
 * rest.
 */
extern SlotHeader *slot_claim(const SlotTable *t, uint32 hash, const void *key,
							  bool (*may_evict) (const SlotHeader *), bool *evicted);

/*
 * The entry a claim of the key would take, without taking it: a free way of
 * whichever of its two sets has more (home on a tie), else among the used entries the
 * one with the highest rank (ranks[i * SLOT_WAYS + w] for way w of the i-th
 * set of slot_sets_of; 0: may not go), the least recently used among equals;
 * NULL when every rank is 0.  Partition lock exclusive.
 */
extern SlotHeader *slot_choose(const SlotTable *t, uint32 hash,
							   const uint8 ranks[2 * SLOT_WAYS]);

/*
 * Give entry e (from slot_choose, same lock hold) to key: zeroed, key set,
 * used = true, tag written.  Whatever it held is gone.
 */
extern void slot_take(const SlotTable *t, uint32 hash, const void *key, SlotHeader *e);

/* free an entry (partition lock exclusive) */
extern void slot_release(const SlotTable *t, SlotHeader *e);

/* entries in use (approximate: no locks) */
extern int64 slot_count_used(const SlotTable *t);

#endif
