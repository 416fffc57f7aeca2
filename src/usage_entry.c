/*
 * usage_entry.c - the one owner of a usage entry's counts on their way from
 * a verify to apikeys.usage: the verify path counts, the flush worker of the
 * entry's database collects, writes and settles, readers merge, eviction
 * forgets.  No other file reads or changes the fields involved
 * (counts_pending, counts_inflight, dirty, flushing, urgent_marked,
 * inflight_xid, inflight_collect) or writes the marks (apikeys_usage_dirty/_urgent).
 *
 * States, by (dirty, flushing):
 *
 *   clean      (no, no)    nothing unwritten: what the entry counted is in
 *                          apikeys.usage (or was dropped: a standby, a
 *                          dropped extension)
 *   pending    (yes, no)   counts_pending holds counts no flush has taken;
 *                          the way's dirty mark is set, and its urgent mark
 *                          too (urgent_marked) once the entry holds a usage
 *                          cap's figure, which must be written at the next
 *                          turn
 *   in flight  (no, yes)   a flush took the counts (counts_inflight) and is
 *                          writing them, or wrote them and waits until every
 *                          snapshot sees them; inflight_xid names its
 *                          transaction once it has one, before it commits
 *   both       (yes, yes)  counts came while a flush had the earlier ones
 *
 * Transitions:
 *
 *   count    any -> pending/both: one more count in counts_pending
 *            (usage_entry_count, the verify path)
 *   collect  pending -> in flight: counts_pending is added to
 *            counts_inflight and handed to the flush, marks cleared
 *            (usage_entry_collect; an entry in flight is not collected)
 *   stamp    in flight: the writing transaction is named, so readers can
 *            tell whether their snapshot sees the counts (usage_entry_stamp)
 *   settle   in flight/both -> clean/pending: written, the flush's counts
 *            leave counts_inflight; not written, they go back to
 *            counts_pending, marked again (usage_entry_settle).  Only the
 *            collect that took them settles them: a written batch is
 *            settled up to 10 s after its commit, and by then its entry may
 *            have been evicted and its key taken by a new entry, whose own
 *            counts a later collect may have in flight
 *   evict    any evictable -> gone: the entry goes to another key, its
 *            pending counts are lost (usage_entry_evict), or its database
 *            is gone (usage_entry_release); in flight only once the flush
 *            committed, never for a dropped database
 *
 * Invariants, asserted at each transition: dirty exactly when a pending
 * count is not zero; no count below zero; a settle takes from
 * counts_inflight no more than its collect put there.  Stamp and settle
 * find their entry by key and act only when it is in flight for their
 * collect (inflight_collect, a number no other collect in the server's life
 * has): another entry of the same key is left alone.
 *
 * Readers add the in-flight counts their snapshot does not see yet
 * (usage_entry_visible_counts), so a count is seen once whether the
 * reader's snapshot is before, during or after the flush's commit.
 */
#include "usage_entry.h"
#include "shmem.h"

#include "storage/lwlock.h"
#include "utils/snapmgr.h"

/* The lock of e's set, for the Asserts that the caller holds it. */
static inline LWLock *
entry_lock(const UsageEntry *e)
{
	return slot_lock(&apikeys_usage_table,
					 slot_index(&apikeys_usage_table, &e->hdr) / SLOT_WAYS);
}

/*
 * The invariants every transition keeps (spinlock held or the partition
 * lock exclusive): dirty exactly when something is pending, no count
 * negative.
 */
static inline bool
counts_consistent(const UsageEntry *e)
{
	bool		any = false;

	for (int i = 0; i < VERDICT_COUNT; i++)
	{
		if (e->counts_pending[i] < 0 || e->counts_inflight[i] < 0)
			return false;
		any |= e->counts_pending[i] != 0;
	}
	return any == e->dirty;
}

/* Set e's way in the dirty marks, so the worker's scan finds its counts. */
static void
mark_dirty(const UsageEntry *e)
{
	Size		idx = slot_index(&apikeys_usage_table, &e->hdr);

	pg_atomic_fetch_or_u32(&apikeys_usage_dirty[idx / SLOT_WAYS], 1U << (idx % SLOT_WAYS));
}

/* Set e's way in the urgent marks, so the next turn writes it, whatever the delay. */
static void
mark_urgent(const UsageEntry *e)
{
	Size		idx = slot_index(&apikeys_usage_table, &e->hdr);

	pg_atomic_fetch_or_u32(&apikeys_usage_urgent[idx / SLOT_WAYS], 1U << (idx % SLOT_WAYS));
}

/* Clear e's way in both marks: nothing of it is left to find. */
static void
unmark(const UsageEntry *e)
{
	Size		idx = slot_index(&apikeys_usage_table, &e->hdr);
	uint32		bit = 1U << (idx % SLOT_WAYS);

	pg_atomic_fetch_and_u32(&apikeys_usage_dirty[idx / SLOT_WAYS], ~bit);
	pg_atomic_fetch_and_u32(&apikeys_usage_urgent[idx / SLOT_WAYS], ~bit);
}

/*
 * Count one verdict (count): the verify path, partition lock held (any
 * mode) and the entry's spinlock held, as it changes the entry's other
 * figures in the same hold.  urgent: the entry holds a usage cap's figure,
 * to be written at the next turn rather than within usage_write_delay.
 */
void
usage_entry_count(UsageEntry *e, VerdictCode code, bool urgent)
{
	Assert(LWLockHeldByMe(entry_lock(e)));
	Assert(e->hdr.used);
	Assert(code >= 0 && code < VERDICT_COUNT);
	Assert(counts_consistent(e));

	e->counts_pending[code]++;
	if (!e->dirty)
		mark_dirty(e);
	if (urgent && !e->urgent_marked)
	{
		mark_urgent(e);
		e->urgent_marked = true;
	}
	e->dirty = true;

	Assert(counts_consistent(e));
}

/*
 * Does a flush hold e's counts (in flight or both)?  Partition lock held;
 * read without the spinlock, which is exact for the database's flush worker
 * (only it collects the entry's counts) and under the lock held exclusive.
 */
bool
usage_entry_in_flight(const UsageEntry *e)
{
	Assert(LWLockHeldByMe(entry_lock(e)));
	return e->flushing;
}

/*
 * Hand e's pending counts to a flush (collect) with the figures that go
 * with them, all read in one spinlock hold so the row written is one state
 * of the entry.  Partition lock held (shared is enough), spinlock not.
 * False when nothing is pending (the other pass of the same turn took it):
 * a stale mark, dropped.  The caller skips entries in flight: their marks
 * wait for the settle.
 */
bool
usage_entry_collect(UsageEntry *e, FlushItem *it)
{
	Assert(LWLockHeldByMe(entry_lock(e)));
	Assert(e->hdr.used);

	SpinLockAcquire(&e->mutex);
	Assert(!e->flushing);		/* only this worker sets it */
	Assert(counts_consistent(e));
	if (!e->dirty)
	{
		/* taken by the other pass of this turn: drop a stale mark */
		unmark(e);
		SpinLockRelease(&e->mutex);
		return false;
	}
	it->key = e->key;
	it->has_used = e->base_loaded;
	it->used = e->used;
	it->period = e->usage_period;
	it->period_s = e->usage_period_s;
	it->last_used_at = e->last_used_at;
	it->collect = pg_atomic_add_fetch_u64(&apikeys_shared->collects, 1);
	e->inflight_collect = it->collect;
	for (int i = 0; i < VERDICT_COUNT; i++)
	{
		it->counts[i] = e->counts_pending[i];
		e->counts_inflight[i] += e->counts_pending[i];
		e->counts_pending[i] = 0;
	}
	e->dirty = false;
	e->urgent_marked = false;
	e->flushing = true;
	unmark(e);
	Assert(counts_consistent(e));
	SpinLockRelease(&e->mutex);
	return true;
}

/*
 * Is e in flight for the collect that filled `it`?  Not when e is a later
 * entry of its key (see settle).  Spinlock held, or the partition lock
 * held by the database's flush worker (the only one that changes these).
 */
static inline bool
taken_by(const UsageEntry *e, const FlushItem *it)
{
	return e->flushing && e->inflight_collect == it->collect;
}

/*
 * Name the transaction writing the in-flight counts `it` took from e
 * (stamp), before it commits, so readers can tell whether their snapshot
 * sees them (stats.c) and eviction whether they are written.  Partition
 * lock held, spinlock not.
 */
void
usage_entry_stamp(UsageEntry *e, const FlushItem *it, TransactionId xid)
{
	Assert(LWLockHeldByMe(entry_lock(e)));
	Assert(TransactionIdIsValid(xid));

	SpinLockAcquire(&e->mutex);
	/* not committed yet, so not evictable: the entry is the collect's */
	Assert(taken_by(e, it));
	if (taken_by(e, it))
		e->inflight_xid = xid;
	SpinLockRelease(&e->mutex);
}

/*
 * After the write (settle): forget (written) or put back into pending, to
 * be written by a later turn (not written), the counts `it` took.  A count
 * put back is marked again, urgent when it was a usage cap's figure, unless
 * the entry was dirty anyway (counted meanwhile: marked then).  Entries in
 * flight are not evicted until their flush committed, so one that is not
 * in flight for this collect is a later entry of the same key, holding
 * counts of its own: left as it is.  Partition lock held, spinlock not.
 */
void
usage_entry_settle(UsageEntry *e, const FlushItem *it, bool written)
{
	Assert(LWLockHeldByMe(entry_lock(e)));
	Assert(e->hdr.used);

	SpinLockAcquire(&e->mutex);
	Assert(counts_consistent(e));
	if (!taken_by(e, it))
	{
		/* evicted after its flush committed: only a written batch is */
		Assert(written);
		SpinLockRelease(&e->mutex);
		return;
	}
	for (int i = 0; i < VERDICT_COUNT; i++)
	{
		Assert(it->counts[i] >= 0 && it->counts[i] <= e->counts_inflight[i]);
		e->counts_inflight[i] -= it->counts[i];
		if (!written)
			e->counts_pending[i] += it->counts[i];
	}
	if (!written && !e->dirty)
	{
		e->dirty = true;
		mark_dirty(e);
		if (it->has_used && !e->urgent_marked)
		{
			e->urgent_marked = true;
			mark_urgent(e);
		}
	}
	e->flushing = false;
	e->inflight_xid = InvalidTransactionId;
	e->inflight_collect = 0;
	Assert(counts_consistent(e));
	SpinLockRelease(&e->mutex);
}

/*
 * Does e hold counts apikeys.usage may not have (pending, or in flight
 * until settled)?  Then evicting it costs something (usage_entry_evictable
 * says whether it may).  Partition lock exclusive.
 */
bool
usage_entry_unsettled(const UsageEntry *e)
{
	Assert(LWLockHeldByMeInMode(entry_lock(e), LW_EXCLUSIVE));
	return e->dirty || e->flushing;
}

/* Would evicting e lose counts no flush has taken?  Partition lock exclusive. */
bool
usage_entry_has_pending(const UsageEntry *e)
{
	Assert(LWLockHeldByMeInMode(entry_lock(e), LW_EXCLUSIVE));
	return e->dirty;
}

/*
 * Has the flush that took e's counts committed (they are in apikeys.usage)?
 * Reads the commit log: partition lock held exclusive, so no one holds the
 * entry's spinlock, which must not be held across it.
 */
static bool
flush_committed(const UsageEntry *e)
{
	return TransactionIdIsValid(e->inflight_xid) && TransactionIdDidCommit(e->inflight_xid);
}

/*
 * May e go to another key?  Its pending counts only when lossy (they would
 * be lost), its in-flight ones only once their flush committed (before,
 * they would be neither in the table nor in memory when the flush fails,
 * and readers would lose them).  The commit log is read last, and only
 * when the answer depends on it.  Partition lock exclusive.
 */
bool
usage_entry_evictable(const UsageEntry *e, bool lossy)
{
	Assert(LWLockHeldByMeInMode(entry_lock(e), LW_EXCLUSIVE));
	return (lossy || !e->dirty) && (!e->flushing || flush_committed(e));
}

/*
 * e goes to another key (evict; the caller then takes it with slot_take,
 * which zeroes it, clean): its marks are dropped with its pending counts,
 * whose number comes back for runtime.tracking_dropped.  Partition lock
 * exclusive; e must be evictable (usage_entry_evictable with lossy when it
 * has pending counts).
 */
int64
usage_entry_evict(UsageEntry *e)
{
	int64		lost = 0;

	Assert(LWLockHeldByMeInMode(entry_lock(e), LW_EXCLUSIVE));
	Assert(e->hdr.used);
	Assert(counts_consistent(e));
	Assert(!e->flushing || flush_committed(e));

	if (e->dirty)
	{
		for (int i = 0; i < VERDICT_COUNT; i++)
			lost += e->counts_pending[i];
		unmark(e);
	}
	return lost;
}

/*
 * Free e, whose database was dropped (evict): its counts have no home and
 * go uncounted, its marks with them.  Not while a flush holds them (the
 * settle must find the entry).  Partition lock exclusive.
 */
void
usage_entry_release(UsageEntry *e)
{
	Assert(LWLockHeldByMeInMode(entry_lock(e), LW_EXCLUSIVE));
	Assert(e->hdr.used);
	Assert(!e->flushing);

	slot_release(&apikeys_usage_table, &e->hdr);
	unmark(e);
}

/*
 * A claim found set's ways all taken (usage.c): mark every way of it with
 * unwritten counts urgent, so the next turn writes them and frees the set
 * (entry by entry, urgent_marked stays as it was: the bit is a hint the
 * collect clears).  True when a way was not marked urgent yet: the workers
 * are worth waking.  No lock: the marks are atomics.
 */
bool
usage_marks_hurry(uint32 set)
{
	uint32		dirty = pg_atomic_read_u32(&apikeys_usage_dirty[set]);
	uint32		before = pg_atomic_fetch_or_u32(&apikeys_usage_urgent[set], dirty);

	return (dirty & ~before) != 0;
}

/*
 * Copy e's counts for a reader (apikeys.key_usage), in the spinlock hold
 * that copies the entry's other figures, so they are one state of it.
 * Partition lock held, spinlock held.
 */
void
usage_entry_read_counts(const UsageEntry *e, UsageEntryCounts *c)
{
	Assert(LWLockHeldByMe(entry_lock(e)));
	memcpy(c->pending, e->counts_pending, sizeof(c->pending));
	memcpy(c->inflight, e->counts_inflight, sizeof(c->inflight));
	c->xid = e->inflight_xid;
}

/*
 * Are an entry's in-flight counts already in apikeys.usage as `snapshot`
 * sees it?  Readers add them otherwise, so a count is seen once whether the
 * reader's snapshot is before, during or after the flush's commit.
 */
static bool
inflight_visible(TransactionId inflight_xid, Snapshot snapshot)
{
	/* may read the commit log: never call it under the entry's spinlock */
	return TransactionIdIsValid(inflight_xid) &&
		!XidInMVCCSnapshot(inflight_xid, snapshot) &&
		TransactionIdDidCommit(inflight_xid);
}

/*
 * What a reader with `snapshot` adds to apikeys.usage for the counts c
 * copied: the pending ones, and the in-flight ones unless the snapshot sees
 * their flush.  No lock held (reads the commit log).
 */
void
usage_entry_visible_counts(const UsageEntryCounts *c, Snapshot snapshot,
						   int64 counts[VERDICT_COUNT])
{
	bool		seen = inflight_visible(c->xid, snapshot);

	for (int i = 0; i < VERDICT_COUNT; i++)
		counts[i] = c->pending[i] + (seen ? 0 : c->inflight[i]);
}

/*
 * Entries with pending counts, for apikeys.runtime: read without locks, so
 * approximate under traffic, and cheap enough to ask at any time.
 */
int64
usage_entries_dirty(void)
{
	int64		dirty = 0;

	for (uint32 set = 0; set < apikeys_usage_table.nsets; set++)
		for (int w = 0; w < SLOT_WAYS; w++)
		{
			const UsageEntry *e = (const UsageEntry *) slot_entry(&apikeys_usage_table, set, w);

			dirty += (e->hdr.used && e->dirty) ? 1 : 0;
		}
	return dirty;
}
