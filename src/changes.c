/*
 * changes.c - notice committed changes to key data, for the policy cache.
 *
 * apikeys._changed() is an ALWAYS trigger (it fires under
 * session_replication_role = replica too) on apikeys.tenant, credential and
 * secret, for rows and TRUNCATE.  It marks the transaction; when a marked
 * transaction commits, the shared generation is bumped, which retires every
 * cached policy.  XACT_EVENT_COMMIT runs after the commit is visible to
 * other backends and before the client hears of it, so anyone who knows a
 * revoke committed also sees the cache retired.  PREPARE TRANSACTION of such
 * a transaction is refused: the commit would happen where no callback runs.
 */
#include "shmem.h"

#include "access/xact.h"
#include "commands/trigger.h"

static bool xact_changed = false;

bool
apikeys_xact_changed_keys(void)
{
	return xact_changed;
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
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (apikeys_shared)
				pg_atomic_fetch_add_u64(&apikeys_shared->generation, 1);
			xact_changed = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
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
