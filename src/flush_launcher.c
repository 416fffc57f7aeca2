/*
 * flush_launcher.c - start the per-database flush workers (flush.h) and
 * keep their slots: one slot per database with a worker running or
 * starting (ApikeysShared.dbs, under db_mutex).  A verify asks for its
 * database's worker (apikeys_flush_worker_wake); a full usage set wakes
 * every worker at once (apikeys_flush_worker_hurry); a worker takes its
 * slot when it starts and frees it when it exits (flush_loop.c).
 */
#include "flush.h"

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/timestamp.h"

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

/*
 * A starting worker takes its database's slot: false when it must exit at
 * once, because another worker has it (a start given up as lost may have
 * come through late: one worker only) or no slot is to be had.  The slot
 * may have been freed and taken over meanwhile: look again.
 */
bool
flush_slot_claim(Oid dbid)
{
	FlushDbSlot *slot;

	for (;;)
	{
		if ((slot = db_slot(dbid, true)) == NULL)
			return false;
		SpinLockAcquire(&apikeys_shared->db_mutex);
		if (slot->dbid == dbid)
			break;
		SpinLockRelease(&apikeys_shared->db_mutex);
	}
	if (slot->worker_pid != 0 && slot->worker_pid != MyProcPid)
	{
		SpinLockRelease(&apikeys_shared->db_mutex);
		return false;
	}
	slot->worker_pid = MyProcPid;
	slot->starting = false;
	SpinLockRelease(&apikeys_shared->db_mutex);
	return true;
}

/*
 * An exiting worker frees its slot (if still its own), so a successor can
 * start.  One that lived less than a second (now: when it began to exit)
 * keeps its start time there, so the successor waits for the rest of that
 * second (apikeys_flush_worker_wake): no crash loop.  Allocates nothing
 * and cannot fail: flush_exit calls it first.
 */
void
flush_slot_release(Oid dbid, TimestampTz now)
{
	FlushDbSlot *slot = db_slot(dbid, false);

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
}
