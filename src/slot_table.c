/*
 * slot_table.c - set-associative shared tables (see slot_table.h).
 */
#include "slot_table.h"

#include "common/hashfn.h"
#include "storage/shmem.h"

/* enough sets for nentries, a whole number of them per lock partition */
uint32
slot_sets_for(int nentries)
{
	uint32		sets = (nentries + SLOT_WAYS - 1) / SLOT_WAYS;

	return Max((sets + SLOT_PARTITIONS - 1) / SLOT_PARTITIONS, 1) * SLOT_PARTITIONS;
}

static Size
tags_size(int nentries)
{
	return MAXALIGN(mul_size(mul_size(slot_sets_for(nentries), SLOT_WAYS), sizeof(uint32)));
}

Size
slot_table_size(int nentries, Size entry_size)
{
	return add_size(tags_size(nentries),
					mul_size(mul_size(slot_sets_for(nentries), SLOT_WAYS), MAXALIGN(entry_size)));
}

/* a key's tag: its full hash (the set only used the remainder), never 0 */
static inline uint32
tag_of(uint32 hash)
{
	return hash == 0 ? 1 : hash;
}

void
slot_table_init(SlotTable *t, const char *name, int nentries, Size entry_size,
				Size key_offset, Size key_size, LWLockPadded *locks, bool *found)
{
	t->nsets = slot_sets_for(nentries);
	t->entry_size = MAXALIGN(entry_size);
	t->key_offset = key_offset;
	t->key_size = key_size;
	for (int i = 0; i < SLOT_PARTITIONS; i++)
		t->locks[i] = &locks[i].lock;
	t->tags = ShmemInitStruct(name, slot_table_size(nentries, entry_size), found);
	t->entries = (char *) t->tags + tags_size(nentries);
	if (!*found)
		memset(t->tags, 0, slot_table_size(nentries, entry_size));
}

static SlotHeader *
find_in_set(const SlotTable *t, uint32 set, uint32 tag, const void *key)
{
	const uint32 *tags = &t->tags[(Size) set * SLOT_WAYS];

	for (int w = 0; w < SLOT_WAYS; w++)
	{
		SlotHeader *e;

		if (tags[w] != tag)
			continue;
		e = slot_entry(t, set, w);
		if (e->used && memcmp((char *) e + t->key_offset, key, t->key_size) == 0)
			return e;
	}
	return NULL;
}

SlotHeader *
slot_find(const SlotTable *t, uint32 hash, const void *key)
{
	uint32		home = slot_set(t, hash);
	uint32		alt = slot_alt_set(t, hash);
	SlotHeader *e = find_in_set(t, home, tag_of(hash), key);

	if (e == NULL && alt != home)
		e = find_in_set(t, alt, tag_of(hash), key);
	return e;
}

SlotHeader *
slot_choose(const SlotTable *t, uint32 hash, const uint8 ranks[2 * SLOT_WAYS])
{
	uint32		sets[2];
	int			nsets = slot_sets_of(t, hash, sets);
	SlotHeader *victim = NULL;
	int			victim_rank = 0;
	SlotHeader *free_way[2] = {NULL, NULL};
	int			nfree[2] = {0, 0};

	/*
	 * A free way of the set with more of them, home on a tie: taking home
	 * first would fill home sets as a Poisson draw does (at 2 / 3 full, one
	 * home set in six overflows) until both sets of some keys are full,
	 * while the less loaded of two choices keeps every set near the mean.
	 */
	for (int i = 0; i < nsets; i++)
		for (int w = SLOT_WAYS - 1; w >= 0; w--)
			if (!slot_entry(t, sets[i], w)->used)
			{
				free_way[i] = slot_entry(t, sets[i], w);
				nfree[i]++;
			}
	if (nfree[0] > 0 || nfree[1] > 0)
		return nfree[1] > nfree[0] ? free_way[1] : free_way[0];
	/* else the best-ranked used entry, least recently used among equals */
	for (int i = 0; i < nsets; i++)
		for (int w = 0; w < SLOT_WAYS; w++)
		{
			SlotHeader *e = slot_entry(t, sets[i], w);
			int			rank = ranks[i * SLOT_WAYS + w];

			if (rank == 0)
				continue;
			if (victim == NULL || rank > victim_rank ||
				(rank == victim_rank && e->last_use < victim->last_use))
			{
				victim = e;
				victim_rank = rank;
			}
		}
	return victim;
}

void
slot_take(const SlotTable *t, uint32 hash, const void *key, SlotHeader *e)
{
	Size		idx = slot_index(t, e);

	Assert(idx < (Size) t->nsets * SLOT_WAYS);
	Assert(slot_set(t, hash) == idx / SLOT_WAYS || slot_alt_set(t, hash) == idx / SLOT_WAYS);
	memset(e, 0, t->entry_size);
	memcpy((char *) e + t->key_offset, key, t->key_size);
	e->used = true;
	t->tags[idx] = tag_of(hash);
}

SlotHeader *
slot_claim(const SlotTable *t, uint32 hash, const void *key,
		   bool (*may_evict) (const SlotHeader *), bool *evicted)
{
	uint32		sets[2];
	int			nsets = slot_sets_of(t, hash, sets);
	uint8		ranks[2 * SLOT_WAYS] = {0};
	SlotHeader *victim;

	for (int i = 0; i < nsets; i++)
		for (int w = 0; w < SLOT_WAYS; w++)
		{
			const SlotHeader *e = slot_entry(t, sets[i], w);

			ranks[i * SLOT_WAYS + w] = (e->used && (may_evict == NULL || may_evict(e))) ? 1 : 0;
		}
	victim = slot_choose(t, hash, ranks);
	*evicted = victim != NULL && victim->used;
	if (victim != NULL)
		slot_take(t, hash, key, victim);
	return victim;
}

void
slot_release(const SlotTable *t, SlotHeader *e)
{
	e->used = false;
	t->tags[slot_index(t, e)] = 0;
}

int64
slot_count_used(const SlotTable *t)
{
	int64		n = 0;

	for (uint32 s = 0; s < t->nsets; s++)
		for (int w = 0; w < SLOT_WAYS; w++)
			n += slot_entry(t, s, w)->used;
	return n;
}
