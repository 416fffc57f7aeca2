/*
 * slot_table.h - a fixed-size, set-associative table in shared memory.
 *
 * A key hashes to one set of SLOT_WAYS entries; a full set replaces its
 * least recently used entry that the caller allows to go.  Constant time,
 * constant size, no allocation: what the verify path needs.  Each set also
 * has a line of SLOT_WAYS 32-bit hash tags, so a lookup reads one cache line
 * of tags and then only the entry whose tag matches, instead of SLOT_WAYS
 * entries scattered over as many lines (with a million keys that is the
 * difference between one and eight memory stalls).  Sets are guarded by
 * SLOT_PARTITIONS LWLocks (set % SLOT_PARTITIONS): shared to read, exclusive
 * to insert or evict.
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

/* the set a key's hash falls in */
static inline uint32
slot_set(const SlotTable *t, uint32 hash)
{
	return hash % t->nsets;
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
 * A free entry of set, else the least recently used one that may_evict()
 * accepts (NULL: any), else NULL.  Needs the partition lock exclusive.  The
 * entry comes back with its key set and used = true; the caller fills the
 * rest.
 */
extern SlotHeader *slot_claim(const SlotTable *t, uint32 hash, const void *key,
							  bool (*may_evict) (const SlotHeader *), bool *evicted);

/* entries in use (approximate: no locks) */
extern int64 slot_count_used(const SlotTable *t);

#endif
