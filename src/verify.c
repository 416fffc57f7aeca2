/*
 * verify.c - apikey_verify(api_key, required_scopes, client_addr) and
 * apikeys.authenticate(): the hot path.
 *
 * Cheapest first:
 *   1. shape and checksum of the presented string (key_format.c): NULL,
 *      garbage and oversized input end here as 'malformed', no table touched;
 *   2. SHA-256, then the policy: from the shared cache when it is current
 *      (policy_cache.c), else three index probes (policy_load.c);
 *   3. status, tenant, expiry, IP allowlist, scopes; then the rate limit and
 *      the usage cap, charged in shared memory only when all else passed.
 * Nothing is written, so it works in READ ONLY transactions and on hot
 * standbys.  A bad key never raises: the verdict says why.
 */
#include "shmem.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/inet.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/typcache.h"
#include "access/detoast.h"

#include "tenant_context.h"

/* the verdicts and their names, in VerdictCode order (verdicts.h) */
const VerdictInfo apikeys_verdicts[VERDICT_COUNT] = {
#define VERDICT_INFO(e, name, counted, http) [e] = {name, counted, http},
	APIKEYS_VERDICTS(VERDICT_INFO)
#undef VERDICT_INFO
};

const char *const apikeys_verdict_names[VERDICT_COUNT] = {
#define VERDICT_NAME(e, name, counted, http) [e] = name,
	APIKEYS_VERDICTS(VERDICT_NAME)
#undef VERDICT_NAME
};

#define VERIFICATION_NATTS 11

/*
 * The result descriptor and a ready "malformed" verdict, kept for the life
 * of the backend.  fn_extra alone would not do: the executor builds a new
 * FmgrInfo for every execution of a statement, prepared or not, so per-call
 * state would be rebuilt (type lookups, a descriptor copy, a tuple) on every
 * pgbench transaction.  The state is keyed by the result type and its
 * typcache identifier, so DROP/CREATE EXTENSION or ALTER TYPE rebuild it.
 */
typedef struct VerifyState
{
	Oid			typid;
	uint64		tupdesc_id;
	TupleDesc	desc;
	Datum		malformed;		/* a ready tuple for the commonest rejection */
} VerifyState;

static VerifyState verify_state;

static Datum
datumCopyTo(MemoryContext cxt, Datum tuple)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Datum		copy = datumCopy(tuple, false, -1);

	MemoryContextSwitchTo(old);
	return copy;
}

static Datum verdict_tuple(TupleDesc desc, VerdictCode code, const KeyPolicy *p,
						   const RateVerdict *rv);

static VerifyState *
verify_state_for(FunctionCallInfo fcinfo)
{
	Oid			typid = get_fn_expr_rettype(fcinfo->flinfo);
	TypeCacheEntry *tce;
	TupleDesc	desc;
	MemoryContext old;

	if (!OidIsValid(typid) &&
		get_call_result_type(fcinfo, &typid, NULL) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tce = lookup_type_cache(typid, TYPECACHE_TUPDESC);
	if (tce->tupDesc == NULL)
		elog(ERROR, "return type must be a row type");
	if (verify_state.desc != NULL && verify_state.typid == typid &&
		verify_state.tupdesc_id == tce->tupDesc_identifier)
		return &verify_state;

	old = MemoryContextSwitchTo(TopMemoryContext);
	desc = CreateTupleDescCopy(tce->tupDesc);
	if (desc->natts != VERIFICATION_NATTS)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension_damaged: apikeys.verification has %d columns, the library expects %d",
						desc->natts, VERIFICATION_NATTS),
				 errhint("The SQL objects and the loaded library disagree; run ALTER EXTENSION apikeys UPDATE.")));
	BlessTupleDesc(desc);
	MemoryContextSwitchTo(old);
	if (verify_state.desc != NULL)
	{
		pfree(DatumGetPointer(verify_state.malformed));
		FreeTupleDesc(verify_state.desc);
		verify_state.desc = NULL;
	}
	/* formed here, then copied whole: a HeapTuple's datum points inside it */
	verify_state.malformed = datumCopyTo(TopMemoryContext,
										 verdict_tuple(desc, V_MALFORMED, NULL, NULL));
	verify_state.desc = desc;
	verify_state.typid = typid;
	verify_state.tupdesc_id = tce->tupDesc_identifier;
	return &verify_state;
}

/* Every required scope must be among the key's. */
static bool
scopes_satisfied(ArrayType *have, ArrayType *need)
{
	Datum	   *h,
			   *n;
	bool	   *hn,
			   *nn;
	int			nh,
				nneed;

	if (ARR_NDIM(need) == 0)
		return true;
	deconstruct_array(have, TEXTOID, -1, false, TYPALIGN_INT, &h, &hn, &nh);
	deconstruct_array(need, TEXTOID, -1, false, TYPALIGN_INT, &n, &nn, &nneed);
	for (int i = 0; i < nneed; i++)
	{
		text	   *want;
		bool		found = false;

		if (nn[i])
			return false;
		want = DatumGetTextPP(n[i]);
		for (int j = 0; j < nh && !found; j++)
		{
			text	   *got = DatumGetTextPP(h[j]);

			found = !hn[j] && VARSIZE_ANY_EXHDR(got) == VARSIZE_ANY_EXHDR(want) &&
				memcmp(VARDATA_ANY(got), VARDATA_ANY(want), VARSIZE_ANY_EXHDR(want)) == 0;
		}
		if (!found)
			return false;
	}
	return true;
}

/* Find the policy of a digest: shared cache when usable, else the tables. */
static bool
find_policy(const uint8 *digest, TimestampTz now, KeyPolicy *policy)
{
	uint64		generation;
	bool		use_cache = apikeys_shmem_ready() && !RecoveryInProgress() &&
		!apikeys_xact_changed_keys() && !apikeys_commit_in_flight();

	if (!use_cache)
		return apikeys_policy_load(digest, policy, 0);

	/*
	 * Read the generation after the in-flight check (so the stamps a
	 * finished commit raised are seen) and before the snapshot a fill uses.
	 */
	pg_memory_barrier();
	generation = pg_atomic_read_u64(&apikeys_shared->generation);
	pg_memory_barrier();
	if (apikeys_cache_lookup(digest, now, policy))
	{
		/*
		 * A commit that became visible after the check above may not have
		 * raised its stamps yet: if one is in flight now, ask the tables.
		 */
		pg_memory_barrier();
		if (!apikeys_commit_in_flight())
			return true;
		return apikeys_policy_load(digest, policy, 0);
	}
	if (!apikeys_policy_load(digest, policy, generation))
		return false;
	apikeys_cache_store(digest, generation, now, policy);
	return true;
}

static VerdictCode
judge(const KeyPolicy *p, ArrayType *required, const inet *client, TimestampTz now,
	  RateVerdict *rv)
{
	VerdictCode code;

	rv->limit = 0;
	rv->usage_remaining = -1;
	if (p->status == KEY_STATUS_REVOKED)
		code = V_REVOKED;
	else if (p->status == KEY_STATUS_DISABLED)
		code = V_DISABLED;
	else if (!p->tenant_active)
		code = V_TENANT_INACTIVE;
	else if (p->expires_at <= now || p->secret_until <= now)
		code = V_EXPIRED;
	else if (!apikeys_ip_allowed(p, client))
		code = V_IP_NOT_ALLOWED;
	else if (required && !scopes_satisfied(p->scopes, required))
		code = V_INSUFFICIENT_SCOPE;
	else
		return apikeys_usage_charge(p, now, rv);	/* also counts the use */

	apikeys_usage_count(p, code, now);
	return code;
}

/* The verdict's name as text, made once per backend (heap_form_tuple copies it). */
static text *
verdict_text(VerdictCode code)
{
	static text *names[VERDICT_COUNT];

	if (names[code] == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		names[code] = cstring_to_text(apikeys_verdict_names[code]);
		MemoryContextSwitchTo(old);
	}
	return names[code];
}

static Datum
verdict_tuple(TupleDesc desc, VerdictCode code, const KeyPolicy *p, const RateVerdict *rv)
{
	Datum		values[VERIFICATION_NATTS];
	bool		nulls[VERIFICATION_NATTS];

	memset(nulls, true, sizeof(nulls));
	values[0] = BoolGetDatum(code == V_VALID);
	nulls[0] = false;
	values[1] = PointerGetDatum(verdict_text(code));
	nulls[1] = false;
	if (p)
	{
		values[2] = UUIDPGetDatum(&p->key_id);
		values[3] = PointerGetDatum(p->tenant);
		values[4] = PointerGetDatum(p->name);
		values[5] = PointerGetDatum(p->scopes);
		values[6] = TimestampTzGetDatum(p->expires_at);
		nulls[2] = nulls[3] = nulls[4] = nulls[5] = false;
		nulls[6] = p->expires_at == DT_NOEND;
	}
	if (rv && rv->limit > 0)
	{
		values[7] = Int32GetDatum(rv->limit);
		values[8] = Int32GetDatum(rv->remaining);
		values[9] = TimestampTzGetDatum(rv->reset);
		nulls[7] = nulls[8] = nulls[9] = false;
	}
	if (rv && rv->usage_remaining >= 0)
	{
		values[10] = Int64GetDatum(rv->usage_remaining);
		nulls[10] = false;
	}
	return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}

static Datum
verify_common(FunctionCallInfo fcinfo, bool bind)
{
	VerifyState *st = fcinfo->flinfo->fn_extra;
	size_t		prefix_len;
	text	   *key;
	uint8		digest[APIKEYS_DIGEST_LEN];
	KeyPolicy	policy;
	RateVerdict rv;
	VerdictCode code;
	TimestampTz now;

	/* once per FmgrInfo: a typcache probe; the state itself is per backend */
	if (st == NULL)
		fcinfo->flinfo->fn_extra = st = verify_state_for(fcinfo);

	/* Reject by size before detoasting: a 10 MB argument costs nothing. */
	if (PG_ARGISNULL(0) ||
		toast_raw_datum_size(PG_GETARG_DATUM(0)) > VARHDRSZ + KEY_MAX_LEN)
		goto malformed;
	key = PG_GETARG_TEXT_PP(0);
	if (key_parse(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), &prefix_len) != KEY_OK)
		goto malformed;

	apikeys_sha256(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), digest);
	now = GetCurrentTimestamp();	/* the one clock read of a verify */
	if (!find_policy(digest, now, &policy))
	{
		if (apikeys_shared)
			pg_atomic_fetch_add_u64(&apikeys_shared->outcomes[V_NOT_FOUND], 1);
		PG_RETURN_DATUM(verdict_tuple(st->desc, V_NOT_FOUND, NULL, NULL));
	}

	code = judge(&policy,
				 PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1),
				 PG_ARGISNULL(2) ? NULL : PG_GETARG_INET_PP(2),
				 now, &rv);
	if (apikeys_shared)
		pg_atomic_fetch_add_u64(&apikeys_shared->outcomes[code], 1);
	if (bind && code == V_VALID)
		apikeys_bind_tenant_from_key(policy.tenant, &policy.key_id);
	PG_RETURN_DATUM(verdict_tuple(st->desc, code, &policy, &rv));

malformed:
	if (apikeys_shared)
		pg_atomic_fetch_add_u64(&apikeys_shared->outcomes[V_MALFORMED], 1);
	PG_RETURN_DATUM(datumCopy(st->malformed, false, -1));
}

PG_FUNCTION_INFO_V1(apikey_verify);
Datum
apikey_verify(PG_FUNCTION_ARGS)
{
	return verify_common(fcinfo, false);
}

/* apikeys.authenticate(): verify, and bind the key's tenant on success. */
PG_FUNCTION_INFO_V1(apikeys_authenticate);
Datum
apikeys_authenticate(PG_FUNCTION_ARGS)
{
	return verify_common(fcinfo, true);
}
