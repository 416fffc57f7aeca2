/*
 * flush_loop.c - the flush worker's life (flush.h): its main loop, latch
 * waits and signals, the timing of turns, and each turn's collect, write
 * and settle of its database's counts; its exit.
 */
#include "flush.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#define IDLE_EXIT_MS 60000

typedef struct FlushList
{
	FlushItem  *items;
	int			n;
	int			cap;
} FlushList;

/*
 * The turn under way, kept where flush_exit can see it: a FATAL error (a
 * cancel outside the turn's transaction, out of memory while collecting)
 * ends the worker without settling its entries, which would otherwise stay
 * in flight, never written again nor evicted.  xid: the write's, once made.
 * A turn takes at most TURN_MAX_ITEMS entries (144 MB of items); the rest
 * stay marked for the next.
 */
#define TURN_MAX_ITEMS 1000000
static FlushList turn = {NULL, 0, 0};
static TransactionId turn_xid = InvalidTransactionId;
static bool last_turn_ok = true;	/* the last turn wrote, or had nothing to */

/*
 * Move the pending counts of dbid's entries marked in marks[from..to) to
 * in-flight and append them to list.  Only marked sets are locked and only
 * marked ways read.
 */
static void
collect(Oid dbid, pg_atomic_uint32 *marks, uint32 from, uint32 to, FlushList *list)
{
	const SlotTable *t = &apikeys_usage_table;

	for (uint32 set = from; set < to; set++)
	{
		uint32		mask = pg_atomic_read_u32(&marks[set]);
		LWLock	   *lock;

		if (mask == 0)
			continue;
		lock = slot_lock(t, set);
		LWLockAcquire(lock, LW_SHARED);
		for (int w = 0; w < SLOT_WAYS; w++)
		{
			UsageEntry *e = (UsageEntry *) slot_entry(t, set, w);

			/* still in flight from an earlier turn: its marks wait for it */
			if (!(mask & (1U << w)) || !e->hdr.used || e->key.dbid != dbid ||
				usage_entry_in_flight(e))
				continue;
			if (list->n >= TURN_MAX_ITEMS)
				break;
			if (list->n == list->cap)
			{
				list->cap *= 2;
				list->items = repalloc(list->items, sizeof(FlushItem) * list->cap);
			}
			/* false: taken by the other pass of this turn (its stale mark dropped) */
			if (usage_entry_collect(e, &list->items[list->n]))
				list->n++;
		}
		LWLockRelease(lock);
	}
}

/*
 * What one turn writes: every usage cap's count, and the sets of this turn's
 * slice of the sweep, which covers the whole table once per
 * apikeys.usage_write_delay (everything when all).  Each unwritten count
 * thus waits at most one delay, and the writes are spread evenly over it.
 */
static FlushItem *
collect_turn(Oid dbid, bool all, int *n_out)
{
	FlushList  *list = &turn;
	static uint32 cursor = 0;
	static TimestampTz last_turn = 0;
	TimestampTz now = GetCurrentTimestamp();
	int64		elapsed_ms = last_turn == 0 ? apikeys_flush_interval_ms : (now - last_turn) / 1000;
	uint32		nsets = apikeys_usage_table.nsets;
	uint32		per_turn = nsets;

	list->cap = 256;
	list->n = 0;
	list->items = palloc(sizeof(FlushItem) * list->cap);
	turn_xid = InvalidTransactionId;

	collect(dbid, apikeys_usage_urgent, 0, nsets, list);
	/* the share of the table for the time since the last turn (turns run late) */
	last_turn = now;
	if (!all && apikeys_write_delay_ms > elapsed_ms && elapsed_ms >= 0)
		per_turn = Max((uint32) ((uint64) nsets * elapsed_ms / apikeys_write_delay_ms), 1);
	if (per_turn >= nsets)
		collect(dbid, apikeys_usage_dirty, 0, nsets, list);
	else
	{
		uint32		end = Min(cursor + per_turn, nsets);

		collect(dbid, apikeys_usage_dirty, cursor, end, list);
		cursor = end == nsets ? 0 : end;
	}
	*n_out = list->n;
	return list->items;
}

/*
 * After the write: forget (ok) or restore (failed) the in-flight counts.
 * An entry in flight is evicted only once its flush committed
 * (usage_entry_evictable), so one not found had its counts written; the one
 * found may be a later entry of the same key, which usage_entry_settle
 * leaves alone.
 */
static void
settle(FlushItem *items, int n, bool ok)
{
	const SlotTable *t = &apikeys_usage_table;

	for (int k = 0; k < n; k++)
	{
		uint32		hash = slot_hash(t, &items[k].key);
		uint32		set = slot_set(t, hash);
		LWLock	   *lock = slot_lock(t, set);
		UsageEntry *e;

		LWLockAcquire(lock, LW_SHARED);
		e = (UsageEntry *) slot_find(t, hash, &items[k].key);
		if (e)
			usage_entry_settle(e, &items[k], ok);
		LWLockRelease(lock);
	}
}

/*
 * Before the flush commits: name its transaction in the entries, so readers
 * can tell whether their snapshot sees the written counts (stats.c).
 */
static void
stamp_inflight(FlushItem *items, int n, TransactionId xid)
{
	const SlotTable *t = &apikeys_usage_table;

	for (int k = 0; k < n; k++)
	{
		uint32		hash = slot_hash(t, &items[k].key);
		LWLock	   *lock = slot_lock(t, slot_set(t, hash));
		UsageEntry *e;

		LWLockAcquire(lock, LW_SHARED);
		e = (UsageEntry *) slot_find(t, hash, &items[k].key);
		if (e)
			usage_entry_stamp(e, &items[k], xid);
		LWLockRelease(lock);
	}
}

/*
 * Written batches whose in-flight counts stay until no snapshot older than
 * their commit remains (a reader with one must still add them), or for
 * WRITTEN_KEEP_MS at most: a long transaction elsewhere (pg_dump) must not
 * keep entries from being written again or evicted.  A snapshot older than
 * that may miss counts written after it was taken.
 */
#define WRITTEN_KEEP_MS 10000

typedef struct WrittenBatch
{
	TransactionId xid;
	TimestampTz at;
	int			n;
	FlushItem  *items;
} WrittenBatch;

static List *written = NIL;

/*
 * A committed batch waits in `written` (worker memory, outliving the turn's
 * context) until retire_written settles it.
 */
static void
keep_written(FlushItem *items, int n, TransactionId xid)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	WrittenBatch *b = palloc(sizeof(WrittenBatch));

	b->xid = xid;
	b->at = GetCurrentTimestamp();
	b->n = n;
	b->items = palloc(sizeof(FlushItem) * n);
	memcpy(b->items, items, sizeof(FlushItem) * n);
	written = lappend(written, b);
	MemoryContextSwitchTo(old);
}

/* Forget the in-flight counts of batches every snapshot now sees (all: any). */
static void
retire_written(bool all)
{
#if PG_VERSION_NUM >= 140000
	TransactionId horizon = GetOldestNonRemovableTransactionId(NULL);
#else
	TransactionId horizon = GetOldestXmin(NULL, PROCARRAY_FLAGS_VACUUM);
#endif
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;

	/* in place, allocating nothing: flush_exit calls this after any error */
	foreach(lc, written)
	{
		WrittenBatch *b = lfirst(lc);

		if (all || TransactionIdPrecedes(b->xid, horizon) ||
			TimestampDifferenceExceeds(b->at, now, WRITTEN_KEEP_MS))
		{
			written = foreach_delete_current(written, lc);
			settle(b->items, b->n, true);
			pfree(b->items);
			pfree(b);
		}
	}
}

static volatile sig_atomic_t got_sigterm = false;

/*
 * SIGTERM (shutdown, DROP DATABASE, an administrator): the loop ends at its
 * next look, and flushes once more before exiting rather than dying mid-turn.
 */
static void
flush_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/* The turn is settled: flush_exit has nothing left of it; free its memory. */
static void
end_turn(MemoryContext old, MemoryContext cxt)
{
	turn.items = NULL;
	turn.n = 0;
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/* One turn: collect, write, settle.  Returns how many keys were written. */
static int
flush_once(Oid dbid, bool all)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "apikeys flush",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	FlushItem  *volatile items;
	int			n;
	volatile bool ok = false;
	volatile FlushTarget target = TARGET_BUSY;
	Oid			usage = InvalidOid,
				usage_pkey = InvalidOid;
	volatile TransactionId xid = InvalidTransactionId;
	volatile int nw = 0;		/* items[0..nw) written; the rest held by others */
	int			w = 0;

	retire_written(false);
	items = collect_turn(dbid, all, &n);
	if (n == 0)
	{
		last_turn_ok = true;
		end_turn(old, cxt);
		return 0;
	}
	if (RecoveryInProgress())
	{
		/* a standby cannot write: drop the counts (documented) */
		settle((FlushItem *) items, n, true);
		end_turn(old, cxt);
		return 0;
	}

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "apikeys: flushing usage");
		target = flush_lock_target(&usage, &usage_pkey);
		if (target == TARGET_READY)
		{
			ok = flush_write_batch(usage, usage_pkey, (FlushItem *) items, n, &w);
			nw = w;
		}
		if (ok && TransactionIdIsValid(xid = GetCurrentTransactionIdIfAny()))
		{
			turn_xid = xid;
			stamp_inflight((FlushItem *) items, nw, xid);
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		ok = false;
	}
	PG_END_TRY();

	MemoryContextSwitchTo(cxt);
	/*
	 * written: keep the in-flight counts until every snapshot sees them;
	 * gone: forget the counts; busy or failed, or a row another transaction
	 * held: back to pending
	 */
	if (!ok)
		settle((FlushItem *) items, n, target == TARGET_GONE);
	else
	{
		Assert(nw >= 0 && nw <= n);
		if (TransactionIdIsValid(xid))
			keep_written((FlushItem *) items, nw, xid);
		else
			settle((FlushItem *) items, nw, true);
		if (nw < n)
			settle((FlushItem *) items + nw, n - nw, false);
	}
	last_turn_ok = ok || target == TARGET_GONE;
	if (ok)
	{
		pg_atomic_fetch_add_u64(&apikeys_shared->flushed_rows, nw);
		pg_atomic_write_u64(&apikeys_shared->last_flush_at, (uint64) GetCurrentTimestamp());
	}
	else if (target == TARGET_READY)
		pg_atomic_fetch_add_u64(&apikeys_shared->flush_errors, 1);
	end_turn(old, cxt);
	return ok ? nw : 0;
}

/* Are entries of dbid waiting to be written? */
static bool
db_has_dirty(Oid dbid)
{
	const SlotTable *t = &apikeys_usage_table;

	for (uint32 set = 0; set < t->nsets; set++)
	{
		uint32		mask = pg_atomic_read_u32(&apikeys_usage_dirty[set]);
		bool		found = false;

		if (mask == 0)
			continue;
		LWLockAcquire(slot_lock(t, set), LW_SHARED);
		for (int w = 0; w < SLOT_WAYS && !found; w++)
		{
			const UsageEntry *e = (const UsageEntry *) slot_entry(t, set, w);

			found = (mask & (1U << w)) && e->hdr.used && e->key.dbid == dbid;
		}
		LWLockRelease(slot_lock(t, set));
		if (found)
			return true;
	}
	return false;
}

/*
 * Whatever ended the worker: free its slot (first: nothing after may fail
 * the exit), settle what it had in flight, and start a successor when its
 * database's counts still wait, unless it was told to stop (shutdown, DROP
 * DATABASE, an administrator), runs on a standby, or its last turn failed
 * (a successor would fail the same way; the next verify starts one).  A
 * verify that came during the last turn saw this worker and started none,
 * and a quiet database would otherwise keep its counts unwritten.  A
 * worker that lived less than a second leaves its start time in the slot,
 * so its successor waits for the rest of that second
 * (apikeys_flush_worker_wake).
 */
static void
flush_exit(int code, Datum arg)
{
	Oid			dbid = DatumGetObjectId(arg);
	TimestampTz now = GetCurrentTimestamp();

	/*
	 * A FATAL error may come with the turn's transaction open and, out of
	 * one (collecting), a partition lock held.
	 */
	LWLockReleaseAll();
	flush_slot_release(dbid, now);
	AbortOutOfAnyTransaction();
	if (turn.items != NULL)
	{
		bool		committed = TransactionIdIsValid(turn_xid) &&
			TransactionIdDidCommit(turn_xid);

		settle(turn.items, turn.n, committed);
		turn.items = NULL;
		turn.n = 0;
	}
	retire_written(true);

	/* pairs with the verify's dirty mark before it looks for a worker */
	pg_memory_barrier();
	if (!got_sigterm && !IsBinaryUpgrade && !RecoveryInProgress() &&
		(code != 0 || last_turn_ok) && db_has_dirty(dbid))
		apikeys_flush_worker_wake(dbid);
}

/*
 * The worker's entry point (registered by apikeys_flush_worker_wake, one per
 * database, dbid in arg): set up a session that cannot be led astray or kept
 * waiting, take the database's slot, then turn until idle or told to stop.
 */
void
apikeys_flush_main(Datum arg)
{
	Oid			dbid = DatumGetObjectId(arg);
	TimestampTz last_work = GetCurrentTimestamp();
	TimestampTz next_turn;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, flush_sigterm);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);
	/*
	 * A flush must never wait long: a row lock held by an open transaction
	 * (apikey_delete of a key being flushed) would otherwise hold the worker,
	 * and with it shutdown, which it only notices between turns.  A timed
	 * out turn keeps its counts for the next one.
	 */
	SetConfigOption("lock_timeout", "2s", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "30s", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * The worker is the bootstrap superuser and has taken the database's
	 * settings, which its owner sets without being a superuser: a
	 * search_path of "evil, pg_catalog" would make the flush statement's
	 * type names evil's domains, whose CHECK code would run as superuser.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	/* one worker per database: a late start of a second one ends here */
	if (!flush_slot_claim(dbid))
		proc_exit(0);
	before_shmem_exit(flush_exit, ObjectIdGetDatum(dbid));

	/*
	 * A turn at once: sets may have been marked urgent while this worker was
	 * starting, with nobody to wake.  Then a turn every flush_interval or
	 * when woken (usage.c hurries), and in between, while written batches
	 * wait to be retired (their entries cannot be evicted until then), a
	 * look every 100 ms that retires them and writes nothing.
	 */
	next_turn = GetCurrentTimestamp();
	while (!got_sigterm)
	{
		TimestampTz now = GetCurrentTimestamp();
		int			rc = 0;

		if (now < next_turn)
		{
			long		wait_ms = (long) ((next_turn - now + 999) / 1000);

			if (written != NIL)
				wait_ms = Min(wait_ms, 100);
			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						   wait_ms, PG_WAIT_EXTENSION);
			/* a set that came after a timeout stays, for the next wait */
			if (rc & WL_LATCH_SET)
				ResetLatch(MyLatch);
		}
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		now = GetCurrentTimestamp();
		if (!(rc & WL_LATCH_SET) && now < next_turn)
		{
			retire_written(false);
			continue;
		}
		next_turn = now + (int64) apikeys_flush_interval_ms * 1000;
		if (flush_once(dbid, false) > 0)
			last_work = now;
		else if (TimestampDifferenceExceeds(last_work, now, IDLE_EXIT_MS))
			break;
	}
	/* clean shutdown or idle: write what is left, free every entry */
	while (flush_once(dbid, true) >= TURN_MAX_ITEMS)
		;
	retire_written(true);
	proc_exit(0);
}
