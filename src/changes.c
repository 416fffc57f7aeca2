/*
 * changes.c - notice committed changes to key data, for the policy cache.
 *
 * apikeys._changed() is an ALWAYS trigger (it fires under
 * session_replication_role = replica too) on apikeys.tenant, credential and
 * secret, for rows and TRUNCATE.  It marks the transaction; when a marked
 * transaction commits, the shared generation is bumped, which retires every
 * cached policy.  The commit is visible to new snapshots a moment before
 * XACT_EVENT_COMMIT runs, so the cache is also bypassed from PRE_COMMIT on
 * (see commit_done): anyone who can see that a revoke committed also sees
 * the revoked key refused.  PREPARE TRANSACTION of such
 * a transaction is refused: the commit would happen where no callback runs.
 */
#include "shmem.h"

#include "access/xact.h"
#include "commands/trigger.h"

static bool xact_changed = false;
static bool in_flight = false;	/* we hold one of commits_in_flight */

bool
apikeys_xact_changed_keys(void)
{
	return xact_changed;
}

/*
 * Between PRE_COMMIT and COMMIT the transaction becomes visible to new
 * snapshots (ProcArrayEndTransaction) before any callback can bump the
 * generation.  So PRE_COMMIT announces the commit: while any is in flight,
 * verify reads the tables and neither trusts nor fills the cache; COMMIT (or
 * ABORT, if the commit failed) bumps the generation and withdraws it.
 */
static void
commit_done(void)
{
	if (apikeys_shared)
	{
		pg_atomic_fetch_add_u64(&apikeys_shared->generation, 1);
		if (in_flight)
			pg_atomic_fetch_sub_u32(&apikeys_shared->commits_in_flight, 1);
	}
	in_flight = false;
	xact_changed = false;
}

static void
changes_xact_callback(XactEvent event, void *arg)
{
	if (!xact_changed)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("prepare_not_supported: cannot PREPARE a transaction that changed API keys"),
					 errhint("Commit changes to apikeys tables directly.")));
			break;
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			if (apikeys_shared && !in_flight)
			{
				pg_atomic_fetch_add_u32(&apikeys_shared->commits_in_flight, 1);
				in_flight = true;
			}
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			commit_done();
			break;
		case XACT_EVENT_PREPARE:
			xact_changed = false;
			break;
		default:
			break;
	}
}

void
apikeys_changes_init(void)
{
	RegisterXactCallback(changes_xact_callback, NULL);
}

PG_FUNCTION_INFO_V1(apikeys_changed);
Datum
apikeys_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "apikeys._changed() must be called as a trigger");
	xact_changed = true;
	return PointerGetDatum(NULL);
}
