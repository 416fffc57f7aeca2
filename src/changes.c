/*
 * changes.c - notice committed changes to key data, for the policy cache.
 *
 * apikeys_internal._changed() is an ALWAYS trigger (it fires under
 * session_replication_role = replica and in logical replication's apply
 * worker too) on apikeys.tenant, credential and secret, per row and for
 * TRUNCATE.  Any change marks the transaction, which then bypasses the
 * cache itself.  UPDATE and DELETE also note what a cached policy could
 * depend on: the key_id of a credential or secret row, or "everything" for
 * a tenant row, a TRUNCATE or more than MAX_NOTED keys.  INSERT notes
 * nothing: no cached policy can refer to a row that did not exist.
 * Changes made while these triggers do not fire (disabled, origin-only
 * under session_replication_role = replica, dropped; COPY and TRUNCATE
 * then too) are noticed by trigger_guard.c, which notes "everything"
 * (apikeys_changes_note_all).
 *
 * When a transaction with notes commits, the shared generation is bumped
 * and the noted keys' stamps (or the floor) raised to it, which retires
 * their cached policies.  The commit is visible to new snapshots a moment
 * before XACT_EVENT_COMMIT runs, so PRE_COMMIT announces it
 * (commits_in_flight) and the cache is bypassed until the stamps are
 * raised: anyone who can see that a revoke committed also sees the revoked
 * key refused.  PREPARE TRANSACTION of a marked transaction is refused: the
 * commit would happen where no callback runs.
 */
#include "inval_stamps.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/trigger.h"

#define MAX_NOTED 64

static bool xact_changed = false;
static bool in_flight = false;	/* we hold one of commits_in_flight */
static bool noted_all = false;
static int	n_noted = 0;
static pg_uuid_t noted[MAX_NOTED];

bool
apikeys_xact_changed_keys(void)
{
	return xact_changed;
}

static void
note_key(const pg_uuid_t *key_id)
{
	for (int i = 0; i < n_noted; i++)
		if (memcmp(&noted[i], key_id, sizeof(pg_uuid_t)) == 0)
			return;
	if (n_noted == MAX_NOTED)
		noted_all = true;
	else
		noted[n_noted++] = *key_id;
}

/*
 * Mark the transaction as having changed key data in ways no trigger
 * reported: it bypasses the cache itself, and its end (commit or abort)
 * retires every cached policy, by the same protocol as the trigger path.
 */
void
apikeys_changes_note_all(void)
{
	xact_changed = true;
	noted_all = true;
}

static void
raise_to(pg_atomic_uint64 *stamp, uint64 to)
{
	uint64		cur = pg_atomic_read_u64(stamp);

	while (cur < to && !pg_atomic_compare_exchange_u64(stamp, &cur, to))
		;
}

/* COMMIT (or ABORT after PRE_COMMIT): retire what changed, then withdraw. */
static void
commit_done(void)
{
	if (apikeys_shared && (noted_all || n_noted > 0))
	{
		uint64		gen = pg_atomic_add_fetch_u64(&apikeys_shared->generation, 1);

		if (noted_all)
			raise_to(&apikeys_shared->floor, gen);
		else
			for (int i = 0; i < n_noted; i++)
				raise_to(apikeys_key_stamp(&noted[i]), gen);
	}
	if (in_flight)
		pg_atomic_fetch_sub_u32(&apikeys_shared->commits_in_flight, 1);
	in_flight = false;
	xact_changed = false;
	noted_all = false;
	n_noted = 0;
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
			if (apikeys_shared && !in_flight && (noted_all || n_noted > 0))
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
			noted_all = false;
			n_noted = 0;
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
	TriggerData *td = (TriggerData *) fcinfo->context;
	TriggerEvent ev;
	Relation	rel;
	const ApikeysCatalog *cat;
	AttrNumber	key_att = InvalidAttrNumber;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "apikeys_internal._changed() must be called as a trigger");
	xact_changed = true;
	ev = td->tg_event;
	if (TRIGGER_FIRED_BY_TRUNCATE(ev))
		noted_all = true;
	if (!TRIGGER_FIRED_FOR_ROW(ev) || TRIGGER_FIRED_BY_INSERT(ev) || noted_all)
		return PointerGetDatum(NULL);

	rel = td->tg_relation;
	cat = apikeys_catalog();
	if (RelationGetRelid(rel) == cat->credential_rel)
		key_att = Anum_credential_key_id;
	else if (RelationGetRelid(rel) == cat->secret_rel)
		key_att = Anum_secret_key_id;
	if (key_att == InvalidAttrNumber)
		noted_all = true;		/* a tenant: its active flag is in every entry */
	else
	{
		/* the old row's key, and the new row's if an UPDATE moved it */
		HeapTuple	rows[2] = {td->tg_trigtuple,
		TRIGGER_FIRED_BY_UPDATE(ev) ? td->tg_newtuple : NULL};

		for (int i = 0; i < 2 && rows[i]; i++)
		{
			bool		isnull;
			Datum		d = heap_getattr(rows[i], key_att, RelationGetDescr(rel), &isnull);

			if (isnull)
				noted_all = true;
			else
				note_key(DatumGetUUIDP(d));
		}
	}
	return PointerGetDatum(NULL);
}
