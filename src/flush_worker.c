/*
 * flush_worker.c - write usage figures from shared memory to apikeys.usage.
 *
 * One dynamic background worker per database with tracked keys, started by
 * the first verify that finds none running.  Each turn (flush_interval) it
 * moves the pending counts of its database's dirty entries that are due
 * (see collect) to "in flight", writes them (rows that exist are updated in
 * place, flush_update.c; new ones through INSERT ... ON CONFLICT), and on
 * success forgets the in-flight counts; on failure it puts them back.  It
 * flushes once more on SIGTERM (clean shutdown), and exits after a minute
 * with nothing to do, so it does not hold its database (DROP DATABASE waits
 * for connected workers).  On a hot standby nothing can be written: counts
 * are dropped and only rate limits, kept in memory, apply.
 */
#include "flush.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#define IDLE_EXIT_MS 60000

/* the verdicts with a column in apikeys.usage, in column order (verdicts.h) */
const VerdictCode apikeys_flush_counted[] = {
#define COUNTED_CODE_IF(e, name, counted, http) IF_COUNTED_##counted(e)
#define IF_COUNTED_true(e) e,
#define IF_COUNTED_false(e)
	APIKEYS_VERDICTS(COUNTED_CODE_IF)
#undef COUNTED_CODE_IF
#undef IF_COUNTED_true
#undef IF_COUNTED_false
};
const int	apikeys_flush_ncounted = lengthof(apikeys_flush_counted);
StaticAssertDecl(lengthof(apikeys_flush_counted) == VERDICT_NCOUNTED,
				 "counted verdicts disagree");

/* a slot no worker holds or is starting (a start lost for 10 s counts as none) */
static bool
slot_idle(const FlushDbSlot *slot, TimestampTz now)
{
	return slot->worker_pid == 0 &&
		(!slot->starting || now - slot->start_requested >= 10000 * (int64) 1000);
}

/*
 * The slot of dbid, created when asked (NULL: all taken).  A worker frees
 * its slot when it exits (flush_exit); when none is free, an idle slot of
 * another database is taken over: its database gets a new one at its next
 * verify.  So the APIKEYS_MAX_FLUSH_DBS limit is on databases with a worker
 * at the same time, not on databases ever served.  Callers recheck
 * slot->dbid under db_mutex before acting on it.
 */
static FlushDbSlot *
db_slot(Oid dbid, bool create)
{
	static Oid	cached_db = InvalidOid;
	static int	cached_idx = -1;
	FlushDbSlot *found = NULL;
	TimestampTz now = 0;

	if (cached_idx >= 0 && cached_db == dbid &&
		apikeys_shared->dbs[cached_idx].dbid == dbid)
		return &apikeys_shared->dbs[cached_idx];
	if (create)
		now = GetCurrentTimestamp();

	SpinLockAcquire(&apikeys_shared->db_mutex);
	for (int i = 0; i < APIKEYS_MAX_FLUSH_DBS && !found; i++)
		if (apikeys_shared->dbs[i].dbid == dbid)
		{
			found = &apikeys_shared->dbs[i];
			cached_idx = i;
		}
	for (int pass = 0; pass < 2 && !found && create; pass++)
		for (int i = 0; i < APIKEYS_MAX_FLUSH_DBS && !found; i++)
		{
			FlushDbSlot *s = &apikeys_shared->dbs[i];

			if (pass == 0 ? s->dbid == InvalidOid : slot_idle(s, now))
			{
				found = s;
				found->dbid = dbid;
				found->worker_pid = 0;
				found->starting = false;
				found->start_requested = 0;
				cached_idx = i;
			}
		}
	SpinLockRelease(&apikeys_shared->db_mutex);
	cached_db = found ? dbid : InvalidOid;
	return found;
}

/*
 * Sets filled up with unwritten entries and were marked urgent (usage.c):
 * wake every worker now rather than at the end of its interval (the entries
 * may be any database's).
 */
void
apikeys_flush_worker_hurry(void)
{
	for (int i = 0; i < APIKEYS_MAX_FLUSH_DBS; i++)
	{
		pid_t		pid = apikeys_shared->dbs[i].worker_pid;	/* unlocked: a hint */
		PGPROC	   *proc;

		if (pid != 0 && (proc = BackendPidGetProc(pid)) != NULL)
			SetLatch(&proc->procLatch);
	}
}

/* Make sure a flush worker runs for dbid; cheap when one does. */
void
apikeys_flush_worker_wake(Oid dbid)
{
	FlushDbSlot *slot = db_slot(dbid, true);
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	bool		start = false;
	TimestampTz now;

	/* pg_upgrade's servers run no workers; the new cluster starts them */
	if (slot == NULL || slot->worker_pid != 0 || IsBinaryUpgrade)
		return;
	/*
	 * At most one attempt a second (registering takes a global lock), and a
	 * start that never reported back (the worker died before connecting) is
	 * given up after ten seconds.
	 */
	now = GetCurrentTimestamp();
	SpinLockAcquire(&apikeys_shared->db_mutex);
	if (slot->dbid == dbid && slot->worker_pid == 0 &&
		(now < slot->start_requested ||
		 now - slot->start_requested >= (slot->starting ? 10000 : 1000) * (int64) 1000))
	{
		start = slot->starting = true;
		slot->start_requested = now;
	}
	SpinLockRelease(&apikeys_shared->db_mutex);
	if (!start)
		return;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "apikeys");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "apikeys_flush_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "apikeys usage flush (db %u)", dbid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "apikeys usage flush");
	worker.bgw_main_arg = ObjectIdGetDatum(dbid);
	worker.bgw_notify_pid = 0;
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		SpinLockAcquire(&apikeys_shared->db_mutex);
		if (slot->dbid == dbid)
			slot->starting = false;
		SpinLockRelease(&apikeys_shared->db_mutex);
	}
}

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
 * Entries in flight are not evicted (usage.c), so each is still there.
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
			usage_entry_stamp(e, xid);
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

/*
 * One statement per batch: one unique-index probe per key (ON CONFLICT).
 * Keys are unique within a batch (one shared entry per key).  used is NULL
 * for keys without a usage cap: the stored figure is then left alone.
 * Rows of keys deleted meanwhile are skipped.  The count columns, one per
 * counted verdict in list order, come from verdicts.h; the statement is
 * built once per worker.  Every name and type is qualified: the worker also
 * pins search_path (apikeys_flush_main).
 */
#define FLUSH_NARGS (4 + VERDICT_NCOUNTED)

static const char *
flush_sql(void)
{
	static char *sql = NULL;
	StringInfoData cols,
				unnests,
				aliases,
				sets;
	int			c = 0;

	if (sql != NULL)
		return sql;
	initStringInfo(&cols);
	initStringInfo(&unnests);
	initStringInfo(&aliases);
	initStringInfo(&sets);
	for (int v = 0; v < VERDICT_COUNT; v++)
	{
		const char *name = apikeys_verdicts[v].name;

		if (!apikeys_verdicts[v].counted)
			continue;
		c++;
		appendStringInfo(&cols, ", count_%s", name);
		appendStringInfo(&unnests, ", pg_catalog.unnest($%d::pg_catalog.int8[])", 4 + c);
		appendStringInfo(&aliases, ", c%d", c);
		appendStringInfo(&sets, "   count_%s = u.count_%s OPERATOR(pg_catalog.+) excluded.count_%s,",
						 name, name, name);
	}
	Assert(c == VERDICT_NCOUNTED);
	sql = MemoryContextStrdup(TopMemoryContext, psprintf(
		"INSERT INTO apikeys.usage AS u (key_id, last_used_at, used, period_start%s)"
		" SELECT t.* FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.uuid[]), pg_catalog.unnest($2::pg_catalog.timestamptz[]),"
		"       pg_catalog.unnest($3::pg_catalog.int8[]), pg_catalog.unnest($4::pg_catalog.timestamptz[])%s)"
		"       AS t(k, l, ug, ps%s)"
		"  WHERE EXISTS (SELECT 1 FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) t.k)"
		" ON CONFLICT (key_id) DO UPDATE SET"
		"   last_used_at = GREATEST(u.last_used_at, excluded.last_used_at),"
		"   used = COALESCE(excluded.used, u.used),"
		"   period_start = CASE WHEN excluded.used IS NULL THEN u.period_start ELSE excluded.period_start END,"
		"%s"
		"   flushed_at = pg_catalog.now()",
		cols.data, unnests.data, aliases.data, sets.data));
	pfree(cols.data);
	pfree(unnests.data);
	pfree(aliases.data);
	pfree(sets.data);
	return sql;
}

static ArrayType *
int8_array(Datum *values, bool *nulls, int n)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};

	return construct_md_array(values, nulls, 1, dims, lbs, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

/* Insert or update the rows of items through SQL; true on success. */
static bool
write_batch_sql(FlushItem *items, int n)
{
	Oid			argtypes[FLUSH_NARGS];
	Datum		args[FLUSH_NARGS];
	Datum	   *keys = palloc(sizeof(Datum) * n);
	Datum	   *last = palloc(sizeof(Datum) * n);
	Datum	   *used = palloc(sizeof(Datum) * n);
	Datum	   *pstart = palloc(sizeof(Datum) * n);
	bool	   *last_null = palloc(sizeof(bool) * n);
	bool	   *used_null = palloc(sizeof(bool) * n);
	bool	   *pstart_null = palloc(sizeof(bool) * n);
	Datum	   *counts = palloc(sizeof(Datum) * n);
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			rc;

	for (int k = 0; k < n; k++)
	{
		keys[k] = UUIDPGetDatum(&items[k].key.key_id);
		last[k] = TimestampTzGetDatum(items[k].last_used_at);
		last_null[k] = items[k].last_used_at == 0;
		used[k] = Int64GetDatum(items[k].used);
		used_null[k] = !items[k].has_used;
		pstart[k] = TimestampTzGetDatum(apikeys_flush_period_start(&items[k], &pstart_null[k]));
	}
	argtypes[0] = UUIDARRAYOID;
	args[0] = PointerGetDatum(construct_array(keys, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	argtypes[1] = TIMESTAMPTZARRAYOID;
	args[1] = PointerGetDatum(construct_md_array(last, last_null, 1, dims, lbs, TIMESTAMPTZOID, 8,
												 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	argtypes[2] = INT8ARRAYOID;
	args[2] = PointerGetDatum(int8_array(used, used_null, n));
	argtypes[3] = TIMESTAMPTZARRAYOID;
	args[3] = PointerGetDatum(construct_md_array(pstart, pstart_null, 1, dims, lbs, TIMESTAMPTZOID, 8,
												 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	for (int c = 0; c < apikeys_flush_ncounted; c++)
	{
		for (int k = 0; k < n; k++)
			counts[k] = Int64GetDatum(items[k].counts[apikeys_flush_counted[c]]);
		argtypes[4 + c] = INT8ARRAYOID;
		args[4 + c] = PointerGetDatum(int8_array(counts, NULL, n));
		counts = palloc(sizeof(Datum) * n);
	}

	rc = SPI_execute_with_args(flush_sql(), FLUSH_NARGS, argtypes, args, NULL, false, 0);
	return rc == SPI_OK_INSERT;
}

/*
 * Write one batch inside the caller's transaction: rows that exist are
 * updated in place (flush_update.c), the rest go through SQL.
 */
static bool
write_batch(Oid usage_rel, Oid usage_pkey, FlushItem *items, int n)
{
	bool	   *done = palloc(sizeof(bool) * n);
	int			updated = apikeys_flush_update_existing(usage_rel, usage_pkey, items, n, done);
	FlushItem  *rest;
	int			m = 0;

	if (updated == n)
		return true;
	rest = palloc(sizeof(FlushItem) * (n - updated));
	for (int k = 0; k < n; k++)
		if (!done[k])
			rest[m++] = items[k];
	return write_batch_sql(rest, m);
}

static volatile sig_atomic_t got_sigterm = false;

static void
flush_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

typedef enum FlushTarget
{
	TARGET_READY,				/* tables locked: write */
	TARGET_GONE,				/* extension dropped: the counts have no home */
	TARGET_BUSY					/* someone holds a conflicting lock: retry */
} FlushTarget;

/*
 * Lock the relations the flush touches, without waiting.  The
 * worker must never queue behind DROP EXTENSION (or ALTER, TRUNCATE...):
 * DROP locks the extension's objects one by one in catalog order, so a
 * waiting worker holding one of them deadlocks it.  Once all are locked
 * nothing else the statement needs can be taken away, and the existence
 * check after the lock sees a DROP that committed meanwhile.
 */
static FlushTarget
lock_flush_target(Oid *usage_out, Oid *usage_pkey_out)
{
	Oid			nsp,
				usage,
				usage_pkey,
				credential;

	if (!OidIsValid(get_extension_oid("apikeys", true)) ||
		!OidIsValid(nsp = get_namespace_oid(APIKEYS_SCHEMA, true)) ||
		!OidIsValid(usage = get_relname_relid("usage", nsp)) ||
		!OidIsValid(usage_pkey = get_relname_relid("usage_pkey", nsp)) ||
		!OidIsValid(credential = get_relname_relid("credential", nsp)))
		return TARGET_GONE;
	if (!ConditionalLockRelationOid(usage, RowExclusiveLock) ||
		!ConditionalLockRelationOid(usage_pkey, RowExclusiveLock) ||
		!ConditionalLockRelationOid(credential, AccessShareLock))
		return TARGET_BUSY;		/* locks go at the transaction's end */
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(usage)) ||
		!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(usage_pkey)) ||
		!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(credential)))
		return TARGET_GONE;
	*usage_out = usage;
	*usage_pkey_out = usage_pkey;
	return TARGET_READY;
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
		target = lock_flush_target(&usage, &usage_pkey);
		if (target == TARGET_READY)
			ok = write_batch(usage, usage_pkey, (FlushItem *) items, n);
		if (ok && TransactionIdIsValid(xid = GetCurrentTransactionIdIfAny()))
		{
			turn_xid = xid;
			stamp_inflight((FlushItem *) items, n, xid);
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
	 * gone: forget the counts; busy or failed: back to pending
	 */
	if (ok && TransactionIdIsValid(xid))
		keep_written((FlushItem *) items, n, xid);
	else
		settle((FlushItem *) items, n, ok || target == TARGET_GONE);
	last_turn_ok = ok || target == TARGET_GONE;
	if (ok)
	{
		pg_atomic_fetch_add_u64(&apikeys_shared->flushed_rows, n);
		pg_atomic_write_u64(&apikeys_shared->last_flush_at, (uint64) GetCurrentTimestamp());
	}
	else if (target == TARGET_READY)
		pg_atomic_fetch_add_u64(&apikeys_shared->flush_errors, 1);
	end_turn(old, cxt);
	return ok ? n : 0;
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
	FlushDbSlot *slot = db_slot(dbid, false);
	TimestampTz now = GetCurrentTimestamp();

	/*
	 * A FATAL error may come with the turn's transaction open and, out of
	 * one (collecting), a partition lock held.
	 */
	LWLockReleaseAll();
	if (slot)
	{
		SpinLockAcquire(&apikeys_shared->db_mutex);
		if (slot->dbid == dbid && slot->worker_pid == MyProcPid)
		{
			slot->worker_pid = 0;
			slot->starting = false;
			/* one that died young keeps its start time: no crash loop */
			if (now - slot->start_requested >= 1000 * (int64) 1000)
				slot->start_requested = 0;
		}
		SpinLockRelease(&apikeys_shared->db_mutex);
	}
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

void
apikeys_flush_main(Datum arg)
{
	Oid			dbid = DatumGetObjectId(arg);
	FlushDbSlot *slot;
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

	/*
	 * A start given up as lost may have come through late: one worker only.
	 * The slot may have been freed and taken over meanwhile: look again.
	 */
	for (;;)
	{
		if ((slot = db_slot(dbid, true)) == NULL)
			proc_exit(0);
		SpinLockAcquire(&apikeys_shared->db_mutex);
		if (slot->dbid == dbid)
			break;
		SpinLockRelease(&apikeys_shared->db_mutex);
	}
	if (slot->worker_pid != 0 && slot->worker_pid != MyProcPid)
	{
		SpinLockRelease(&apikeys_shared->db_mutex);
		proc_exit(0);
	}
	slot->worker_pid = MyProcPid;
	slot->starting = false;
	SpinLockRelease(&apikeys_shared->db_mutex);
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
