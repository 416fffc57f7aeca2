/*
 * stats.c - shared-memory figures for the observability views
 * (apikeys.verifications, apikeys.key_usage, apikeys.runtime).
 */
#include "shmem.h"
#include "policy_cache.h"
#include "usage.h"
#include "usage_entry.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

/* Set up a set-returning function's tuplestore (InitMaterializedSRF, 15+). */
static void
materialize_srf(FunctionCallInfo fcinfo)
{
#if PG_VERSION_NUM >= 150000
	InitMaterializedSRF(fcinfo, 0);
#else
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	desc;
	MemoryContext old;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	rsinfo->setDesc = CreateTupleDescCopy(desc);
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	MemoryContextSwitchTo(old);
#endif
}

/* apikeys_internal._verification_totals(): (outcome text, total bigint), all databases */
PG_FUNCTION_INFO_V1(apikeys_verification_totals);
Datum
apikeys_verification_totals(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	materialize_srf(fcinfo);
	for (int i = 0; i < VERDICT_COUNT; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = CStringGetTextDatum(apikeys_verdict_names[i]);
		values[1] = Int64GetDatum(apikeys_shared ? (int64) pg_atomic_read_u64(&apikeys_shared->outcomes[i]) : 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * apikeys_internal.verdicts(): (code integer, name text, counted boolean,
 * http_status integer), one row per verdict in code order: the list in
 * verdicts.h, for the SQL that must agree with it (apikeys.key_usage, the
 * PostgREST gate, test policy_verdicts).  code is the verdict's index in
 * _pending_usage's counts array, less one.
 */
PG_FUNCTION_INFO_V1(apikeys_verdicts_sql);
Datum
apikeys_verdicts_sql(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	materialize_srf(fcinfo);
	for (int i = 0; i < VERDICT_COUNT; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = Int32GetDatum(i);
		values[1] = CStringGetTextDatum(apikeys_verdicts[i].name);
		values[2] = BoolGetDatum(apikeys_verdicts[i].counted);
		values[3] = Int32GetDatum(apikeys_verdicts[i].http_status);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * apikeys.last_verify_limits(): (scope, name, max_uses, remaining, reset,
 * passed, tightest) for each limit the last apikey_verify of this session
 * checked (usage.c); none when it stopped before the limits (a bad key).
 * Only the session's own call: nothing about other sessions' keys.
 */
PG_FUNCTION_INFO_V1(apikeys_last_verify_limits);
Datum
apikeys_last_verify_limits(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const LimitRow *rows;
	int			n = apikeys_last_limits(&rows);

	materialize_srf(fcinfo);
	for (int i = 0; i < n; i++)
	{
		Datum		values[7];
		bool		nulls[7] = {false, false, false, false, false, false, false};

		values[0] = CStringGetTextDatum(rows[i].scope);
		values[1] = CStringGetTextDatum(rows[i].name);
		values[2] = Int32GetDatum(rows[i].report.limit);
		values[3] = Int32GetDatum(rows[i].report.remaining);
		values[4] = TimestampTzGetDatum(rows[i].report.reset);
		values[5] = BoolGetDatum(rows[i].passed);
		values[6] = BoolGetDatum(rows[i].tightest);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * Which keys the caller may see: those apikeys.credential shows it, with its
 * row-level security (this function runs as the caller, SECURITY INVOKER).
 * Per call site and statement (fn_extra, in the statement's memory): the
 * first VISIBLE_PROBES keys are checked one by one with a prepared probe,
 * so a look at one key costs one index probe; from then on the ids the
 * caller sees are read once into a hash table, so apikeys.key_usage over N
 * keys costs one scan of them instead of N probes.
 */
#define VISIBLE_PROBES 16
#define VISIBLE_FETCH 10000

typedef struct VisibleKeys
{
	Oid			userid;			/* the role it was read as */
	int			probes;			/* one-by-one checks made */
	HTAB	   *ids;			/* the visible ids, once read (NULL before) */
} VisibleKeys;

/* Can the caller see key_id in apikeys.credential?  (SPI connected.) */
static bool
probe_visible(const pg_uuid_t *key_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {UUIDOID};
	Datum		values[1];
	int			rc;

	if (plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare("SELECT 1 FROM apikeys.credential c"
									" WHERE c.key_id OPERATOR(pg_catalog.=) $1", 1, argtypes);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		plan = p;
	}
	values[0] = UUIDPGetDatum(key_id);
	/* read only: the statement's snapshot, as the view's own scan of credential */
	rc = SPI_execute_plan(plan, values, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return SPI_processed > 0;
}

/* Read every key id the caller sees into vk->ids (SPI connected). */
static void
read_visible(VisibleKeys *vk, MemoryContext cxt)
{
	HASHCTL		info;
	SPIPlanPtr	plan;
	Portal		portal;

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(pg_uuid_t);
	info.entrysize = sizeof(pg_uuid_t);
	info.hcxt = cxt;
	vk->ids = hash_create("apikeys visible keys", 1024, &info,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	plan = SPI_prepare("SELECT c.key_id FROM apikeys.credential c", 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, VISIBLE_FETCH);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				hash_search(vk->ids, DatumGetUUIDP(d), HASH_ENTER, NULL);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
}

/*
 * May the caller learn about key_id?  Asked before shared memory is read,
 * whatever it holds, so a key of another tenant and a key that does not
 * exist cost the same and answer the same.
 */
static bool
key_visible(FunctionCallInfo fcinfo, const pg_uuid_t *key_id)
{
	VisibleKeys *vk = fcinfo->flinfo->fn_extra;
	Oid			userid = GetUserId();
	bool		visible;

	if (pg_class_aclcheck(apikeys_catalog()->credential_rel, userid, ACL_SELECT) != ACLCHECK_OK)
		return false;
	if (vk == NULL || vk->userid != userid)
	{
		vk = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(VisibleKeys));
		vk->userid = userid;
		fcinfo->flinfo->fn_extra = vk;
	}
	if (vk->ids != NULL)
		return hash_search(vk->ids, key_id, HASH_FIND, NULL) != NULL;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (vk->probes < VISIBLE_PROBES)
	{
		vk->probes++;
		visible = probe_visible(key_id);
	}
	else
	{
		read_visible(vk, fcinfo->flinfo->fn_mcxt);
		visible = hash_search(vk->ids, key_id, HASH_FIND, NULL) != NULL;
	}
	SPI_finish();
	return visible;
}

/*
 * apikeys_internal._pending_usage(key_id): what shared memory holds for one key of
 * this database that apikeys.usage does not yet: (key_id, last_used_at,
 * used, pending counts by outcome as bigint[] in VerdictCode order), or
 * NULL.  NULL too for a key the caller cannot see in apikeys.credential
 * (key_visible): tenant roles may call it (apikeys.key_usage does, with the
 * ids RLS lets them see), and must learn nothing about other tenants' keys.
 */
PG_FUNCTION_INFO_V1(apikeys_pending_usage);
Datum
apikeys_pending_usage(PG_FUNCTION_ARGS)
{
	UsageKey	key;
	UsageEntry *e;
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	Datum		counts[VERDICT_COUNT];
	uint32		set,
					hash;
	LWLock	   *lock;
	bool		found = false;
	UsageEntryCounts entry_counts;
	int64		visible[VERDICT_COUNT];

	if (PG_ARGISNULL(0) || apikeys_shared == NULL)
		PG_RETURN_NULL();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (!key_visible(fcinfo, PG_GETARG_UUID_P(0)))
		PG_RETURN_NULL();

	memset(&key, 0, sizeof(key));
	key.dbid = MyDatabaseId;
	memcpy(&key.key_id, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	hash = slot_hash(&apikeys_usage_table, &key);
	set = slot_set(&apikeys_usage_table, hash);
	lock = slot_lock(&apikeys_usage_table, set);
	LWLockAcquire(lock, LW_SHARED);
	e = (UsageEntry *) slot_find(&apikeys_usage_table, hash, &key);
	if (e)
	{
		SpinLockAcquire(&e->mutex);
		values[1] = TimestampTzGetDatum(e->last_used_at);
		nulls[1] = e->last_used_at == 0;
		values[2] = Int64GetDatum(e->used);
		nulls[2] = !e->base_loaded;
		usage_entry_read_counts(e, &entry_counts);
		SpinLockRelease(&e->mutex);
		found = true;
	}
	LWLockRelease(lock);
	if (!found)
		PG_RETURN_NULL();
	/* in flight: counted here unless this snapshot already sees the flush */
	usage_entry_visible_counts(&entry_counts,
							   ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot(),
							   visible);
	for (int i = 0; i < VERDICT_COUNT; i++)
		counts[i] = Int64GetDatum(visible[i]);

	values[0] = PG_GETARG_DATUM(0);
	values[3] = PointerGetDatum(construct_array(counts, VERDICT_COUNT, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* apikeys_internal._runtime(): one row of shared-memory figures */
PG_FUNCTION_INFO_V1(apikeys_runtime);
Datum
apikeys_runtime(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[16];
	bool		nulls[16];
	int			i = 0;
	int64		cache_used = 0,
				usage_used = 0,
				dirty = 0;
	int			workers = 0;
	TimestampTz last_flush;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	memset(nulls, 0, sizeof(nulls));

	if (apikeys_shared)
	{
		cache_used = slot_count_used(&apikeys_policy_table);
		usage_used = slot_count_used(&apikeys_usage_table);
		dirty = usage_entries_dirty();
		SpinLockAcquire(&apikeys_shared->db_mutex);
		for (int d = 0; d < APIKEYS_MAX_FLUSH_DBS; d++)
			workers += apikeys_shared->dbs[d].worker_pid != 0;
		SpinLockRelease(&apikeys_shared->db_mutex);
	}
	last_flush = apikeys_shared ? (TimestampTz) pg_atomic_read_u64(&apikeys_shared->last_flush_at) : 0;

#define U64(field) Int64GetDatum(apikeys_shared ? (int64) pg_atomic_read_u64(&apikeys_shared->field) : 0)
	values[i++] = BoolGetDatum(apikeys_shared != NULL);
	values[i++] = Int64GetDatum(apikeys_shared ? (int64) apikeys_shmem_size() : 0);
	values[i++] = Int32GetDatum(apikeys_shared ? (int32) (apikeys_policy_table.nsets * SLOT_WAYS) : 0);
	values[i++] = Int64GetDatum(cache_used);
	values[i++] = U64(cache_hits);
	values[i++] = U64(cache_misses);
	values[i++] = U64(cache_evictions);
	values[i++] = Int32GetDatum(apikeys_shared ? (int32) (apikeys_usage_table.nsets * SLOT_WAYS) : 0);
	values[i++] = Int64GetDatum(usage_used);
	values[i++] = Int64GetDatum(dirty);
	values[i++] = U64(tracking_dropped);
	values[i++] = U64(flushed_rows);
	values[i++] = U64(flush_errors);
	values[i] = TimestampTzGetDatum(last_flush);
	nulls[i++] = last_flush == 0;
	values[i++] = Int32GetDatum(workers);
	values[i++] = U64(generation);
#undef U64
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/*
 * apikeys_internal._pending_credits(key_id): the credits a key spent in
 * shared memory (used) and the spending period they count in
 * (period_start), or NULL (no entry, the entry does not count credits, or
 * a key the caller cannot see: key_visible).  Shared memory owns the
 * spent count of a key in use; apikeys.usage holds it as of the last flush.
 */
PG_FUNCTION_INFO_V1(apikeys_pending_credits);
Datum
apikeys_pending_credits(PG_FUNCTION_ARGS)
{
	UsageKey	key;
	UsageEntry *e;
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	uint32		set,
					hash;
	LWLock	   *lock;
	bool		found = false;

	if (PG_ARGISNULL(0) || apikeys_shared == NULL)
		PG_RETURN_NULL();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (!key_visible(fcinfo, PG_GETARG_UUID_P(0)))
		PG_RETURN_NULL();

	memset(&key, 0, sizeof(key));
	key.dbid = MyDatabaseId;
	memcpy(&key.key_id, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	hash = slot_hash(&apikeys_usage_table, &key);
	set = slot_set(&apikeys_usage_table, hash);
	lock = slot_lock(&apikeys_usage_table, set);
	LWLockAcquire(lock, LW_SHARED);
	e = (UsageEntry *) slot_find(&apikeys_usage_table, hash, &key);
	if (e)
	{
		SpinLockAcquire(&e->mutex);
		if (e->base_loaded && e->usage_period_s < 0)
		{
			values[1] = Int64GetDatum(e->used);
			values[2] = TimestampTzGetDatum((TimestampTz) e->usage_period);
			found = true;
		}
		SpinLockRelease(&e->mutex);
	}
	LWLockRelease(lock);
	if (!found)
		PG_RETURN_NULL();
	/* (key_id, used, period_start): key_id is INOUT */
	Assert(desc->natts == 3);
	values[0] = PG_GETARG_DATUM(0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * apikeys_internal._credits_state(credits, at, since, refill,
 * refill_interval, refill_day, now): what apikeys_credits_state says of a
 * key's credit columns at `now` (period_start, balance, next_refill; NULL
 * next_refill without refill), so that SQL computes as verify charges.
 * NULL when credits is NULL.
 */
PG_FUNCTION_INFO_V1(apikeys_credits_state_sql);
Datum
apikeys_credits_state_sql(PG_FUNCTION_ARGS)
{
	CreditsSpec c;
	CreditsState st;
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (PG_ARGISNULL(0) || PG_ARGISNULL(6))
		PG_RETURN_NULL();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	c.credits = PG_GETARG_INT64(0);
	c.at = PG_ARGISNULL(1) ? DT_NOBEGIN : PG_GETARG_TIMESTAMPTZ(1);
	c.since = PG_ARGISNULL(2) ? DT_NOBEGIN : PG_GETARG_TIMESTAMPTZ(2);
	c.refill = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT64(3);
	c.refill_s = PG_ARGISNULL(4) ? 0 : apikeys_interval_seconds(PG_GETARG_DATUM(4));
	c.refill_day = PG_ARGISNULL(5) ? 0 : (int16) PG_GETARG_INT32(5);
	if (c.credits < 0 || c.refill < 0 || c.refill_day < 0 || c.refill_day > 31)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_credits: credits and refill must be 0 or more, refill_day 1 to 31"),
				 errdetail("apikeys.credential's CHECK constraints allow no other values.")));
	if (c.refill_s == 0 && c.refill_day == 0)
		c.refill = 0;
	apikeys_credits_state(&c, PG_GETARG_TIMESTAMPTZ(6), &st);
	values[0] = TimestampTzGetDatum(st.period_start);
	values[1] = Int64GetDatum(st.balance);
	values[2] = TimestampTzGetDatum(st.next_refill);
	nulls[2] = st.next_refill == DT_NOEND;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
