/*
 * verify.c - apikey_verify(api_key, required_scopes, client_addr) and
 * apikeys.authenticate(): the hot path.
 *
 * Cheapest first:
 *   1. shape and checksum of the presented string (key_format.c): NULL,
 *      garbage and oversized input end here as 'malformed', no table touched,
 *      unless it matches a registered legacy format (legacy_format.c, a
 *      backend-local registry), which gives its lookup digest instead;
 *   2. SHA-256, then the policy: from the shared cache when it is current
 *      (policy_cache.c), else three index probes (policy_load.c);
 *   3. status, tenant, expiry, IP allowlist, scopes; then the rate limit and
 *      the usage cap, charged in shared memory only when all else passed.
 * Nothing is written, so it works in READ ONLY transactions and on hot
 * standbys.  A bad key never raises: the verdict says why.
 */
#include "shmem.h"
#include "inval_stamps.h"
#include "policy_cache.h"
#include "usage.h"

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

#include "caller.h"
#include "legacy_format.h"
#include "miscadmin.h"
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
#define VERIFY_MEMO_MAX_ARGS 8

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

/*
 * Does a wildcard scope "p:*" the key holds cover want?  It covers every
 * scope that starts with "p:" and goes on after it ("read:*" covers
 * "read:orders" and "read:orders:eu", not "read" nor "reader:x").  Only a
 * final '*' right after a ':' is a wildcard; the 1.1 validators allow no
 * other '*' in a key's scopes.  Asked only when no scope matched exactly.
 */
static bool
wildcard_covers(Datum *h, bool *hn, int nh, text *want)
{
	int			wlen = VARSIZE_ANY_EXHDR(want);

	for (int j = 0; j < nh; j++)
	{
		text	   *got;
		int			glen;
		const char *g;

		if (hn[j])
			continue;
		got = DatumGetTextPP(h[j]);
		glen = VARSIZE_ANY_EXHDR(got);
		g = VARDATA_ANY(got);
		if (glen >= 3 && g[glen - 1] == '*' && g[glen - 2] == ':' &&
			wlen > glen - 1 && memcmp(VARDATA_ANY(want), g, glen - 1) == 0)
			return true;
	}
	return false;
}

/* Every required scope must be among the key's, or under one of its wildcards. */
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
		if (!found && !wildcard_covers(h, hn, nh, want))
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
	  int32 cost, RateVerdict *rv)
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
		return apikeys_usage_charge(p, now, cost, rv);	/* also counts the use */

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

/*
 * One call, one verification: the memo.
 *
 * PostgreSQL expands (f(k)).* into one call of f(k) per column, and
 * (f(k)).a, (f(k)).b into two; each would verify, count and charge the rate
 * limit and usage cap again.  So the last verdict is kept, keyed on the
 * function, the role, every argument and the memory context current at the
 * call, which for an expression is the per-tuple context of the row being
 * computed.  The executor evaluates all of a row's expressions in that
 * context and resets it before the next row (ExecScan, ExecResult,
 * ValuesScan, ProjectSet, Agg, ModifyTable's RETURNING, PL/pgSQL after each
 * statement), and a context that is reset or deleted runs its reset
 * callbacks: the one registered here forgets the verdict.  So calls with
 * the same arguments within one row are one verification, and every other
 * row, rescan, statement and PL/pgSQL statement verifies and charges anew.
 *
 * The context's address alone would not do (a new context may take a freed
 * one's address): the callback forgets the memo before that can happen.  A
 * reset that finds the context already empty skips the callbacks, but the
 * callback itself is allocated in the context, so it is never empty while a
 * memo refers to it.  A key change committed meanwhile (the shared
 * generation moved) or made by this transaction verifies anew.  Errors are
 * not remembered.
 */
typedef struct VerifyMemo
{
	MemoryContext cxt;			/* NULL: nothing remembered */
	Oid			fn_oid;
	Oid			userid;
	uint64		generation;
	short		nargs;
	Datum		args[VERIFY_MEMO_MAX_ARGS];	/* copies, in cxt */
	bool		argnull[VERIFY_MEMO_MAX_ARGS];
	uint32		byval_mask;		/* bit i: argument i is by value */
	Datum		result;			/* copy of the verdict, in cxt */
	bool		bound;			/* valid verdict of a binding call: */
	pg_uuid_t	key_id;			/* what to bind again */
	text	   *tenant;			/* in cxt */
} VerifyMemo;

static VerifyMemo verify_memo;

/* reset/delete callback of the memo's context: forget it */
static void
verify_memo_forget(void *arg)
{
	if (verify_memo.cxt == (MemoryContext) arg)
		verify_memo.cxt = NULL;
}

static uint64
verify_memo_generation(void)
{
	return apikeys_shared ? pg_atomic_read_u64(&apikeys_shared->generation) : 0;
}

/* May this call use (or fill) the memo at all? */
static bool
verify_memo_usable(FunctionCallInfo fcinfo)
{
	return fcinfo->nargs <= VERIFY_MEMO_MAX_ARGS &&
		!(apikeys_shmem_ready() && apikeys_xact_changed_keys());
}

/*
 * The remembered verdict of this very call (same context, function, role,
 * arguments, and no key change since), copied into the current context; or
 * false.
 */
static bool
verify_memo_lookup(FunctionCallInfo fcinfo, uint32 byval_mask, Datum *result)
{
	VerifyMemo *m = &verify_memo;

	if (m->cxt != CurrentMemoryContext || m->fn_oid != fcinfo->flinfo->fn_oid ||
		m->nargs != fcinfo->nargs || m->byval_mask != byval_mask ||
		m->userid != GetUserId() || !verify_memo_usable(fcinfo) ||
		m->generation != verify_memo_generation())
		return false;
	for (int i = 0; i < fcinfo->nargs; i++)
	{
		bool		byval = (byval_mask & (1U << i)) != 0;

		if (m->argnull[i] != fcinfo->args[i].isnull)
			return false;
		if (!m->argnull[i] &&
			!datumIsEqual(m->args[i], fcinfo->args[i].value, byval, byval ? sizeof(Datum) : -1))
			return false;
	}
	if (m->bound)
		apikeys_bind_tenant_from_key(m->tenant, &m->key_id);
	*result = datumCopy(m->result, false, -1);
	return true;
}

/*
 * Remember this call's verdict in the current context (see above).  bound:
 * a valid verdict of a binding call, whose tenant a repeat binds again.
 */
static void
verify_memo_store(FunctionCallInfo fcinfo, uint32 byval_mask, Datum result,
				  const KeyPolicy *policy, bool bound)
{
	VerifyMemo *m = &verify_memo;
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContextCallback *cb;

	m->cxt = NULL;
	if (!verify_memo_usable(fcinfo))
		return;
	cb = MemoryContextAlloc(cxt, sizeof(MemoryContextCallback));
	cb->func = verify_memo_forget;
	cb->arg = cxt;
	MemoryContextRegisterResetCallback(cxt, cb);
	for (int i = 0; i < fcinfo->nargs; i++)
	{
		bool		byval = (byval_mask & (1U << i)) != 0;

		m->argnull[i] = fcinfo->args[i].isnull;
		m->args[i] = m->argnull[i] ? (Datum) 0 :
			datumCopy(fcinfo->args[i].value, byval, byval ? sizeof(Datum) : -1);
	}
	m->result = datumCopy(result, false, -1);
	m->bound = bound;
	if (bound)
	{
		memcpy(&m->key_id, &policy->key_id, sizeof(pg_uuid_t));
		m->tenant = (text *) DatumGetPointer(datumCopy(PointerGetDatum(policy->tenant), false, -1));
	}
	m->fn_oid = fcinfo->flinfo->fn_oid;
	m->nargs = fcinfo->nargs;
	m->byval_mask = byval_mask;
	m->userid = GetUserId();
	m->generation = verify_memo_generation();
	m->cxt = cxt;
}

/*
 * The verification itself: verdict and charges, no memo.  *bound_out: the
 * verdict is valid and bind asked for its tenant to be bound (done).
 */
static Datum
verify_once(FunctionCallInfo fcinfo, VerifyState *st, bool bind, int32 cost,
			KeyPolicy *policy, bool *bound_out)
{
	size_t		prefix_len;
	text	   *key;
	uint8		digest[APIKEYS_DIGEST_LEN];
	RateVerdict rv;
	VerdictCode code;
	TimestampTz now;

	*bound_out = false;
	apikeys_last_limits_reset();
	if (PG_ARGISNULL(0))
		goto malformed;
	/* Reject by size before detoasting: a 10 MB argument costs nothing. */
	if (toast_raw_datum_size(PG_GETARG_DATUM(0)) > VARHDRSZ + KEY_MAX_LEN)
		goto legacy;
	key = PG_GETARG_TEXT_PP(0);
	if (key_parse(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), &prefix_len) != KEY_OK)
		goto legacy;
	apikeys_sha256(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), digest);
	goto known;

legacy:
	/* not a native key: one of a registered legacy format, or malformed */
	if (!apikeys_legacy_digest(PG_GETARG_DATUM(0), digest))
		goto malformed;

known:
	now = GetCurrentTimestamp();	/* the one clock read of a verify */
	if (!find_policy(digest, now, policy))
	{
		if (apikeys_shared)
			pg_atomic_fetch_add_u64(&apikeys_shared->outcomes[V_NOT_FOUND], 1);
		return verdict_tuple(st->desc, V_NOT_FOUND, NULL, NULL);
	}

	code = judge(policy,
				 PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1),
				 PG_ARGISNULL(2) ? NULL : PG_GETARG_INET_PP(2),
				 now, cost, &rv);
	if (apikeys_shared)
		pg_atomic_fetch_add_u64(&apikeys_shared->outcomes[code], 1);
	if (bind && code == V_VALID)
	{
		apikeys_bind_tenant_from_key(policy->tenant, &policy->key_id);
		*bound_out = true;
	}
	return verdict_tuple(st->desc, code, policy, &rv);

malformed:
	if (apikeys_shared)
		pg_atomic_fetch_add_u64(&apikeys_shared->outcomes[V_MALFORMED], 1);
	return datumCopy(st->malformed, false, -1);
}

/*
 * apikey_verify and authenticate: the memo's verdict when this is the same
 * call again (verify_memo_lookup), else a verification, remembered.
 * cost_arg: the argument that holds the cost (by value), or -1 (cost 1).
 */
static Datum
verify_common(FunctionCallInfo fcinfo, bool bind, int cost_arg)
{
	VerifyState *st = fcinfo->flinfo->fn_extra;
	KeyPolicy	policy;
	Datum		result;
	bool		bound;
	int32		cost = 1;
	uint32		byval_mask = 0;

	/* once per FmgrInfo: a typcache probe; the state itself is per backend */
	if (st == NULL)
		fcinfo->flinfo->fn_extra = st = verify_state_for(fcinfo);

	if (cost_arg >= 0)
	{
		/* the caller's mistake, whatever the key: raise, before anything */
		if (PG_ARGISNULL(cost_arg) || PG_GETARG_INT32(cost_arg) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid_cost: cost must be 0 or more"),
					 errhint("0 checks the limits without charging them; the default is 1.")));
		cost = PG_GETARG_INT32(cost_arg);
		byval_mask = 1U << cost_arg;
	}

	if (verify_memo_lookup(fcinfo, byval_mask, &result))
		PG_RETURN_DATUM(result);
	result = verify_once(fcinfo, st, bind, cost, &policy, &bound);
	verify_memo_store(fcinfo, byval_mask, result, &policy, bound);
	PG_RETURN_DATUM(result);
}

PG_FUNCTION_INFO_V1(apikey_verify);
Datum
apikey_verify(PG_FUNCTION_ARGS)
{
	return verify_common(fcinfo, false, -1);
}

/*
 * apikey_verify(api_key, required_scopes, client_addr, cost) (1.1): the
 * same, charging cost (0: check only) to every limit and the usage cap.
 */
PG_FUNCTION_INFO_V1(apikeys_verify_1_1);
Datum
apikeys_verify_1_1(PG_FUNCTION_ARGS)
{
	return verify_common(fcinfo, false, 3);
}

/* apikeys.authenticate(): verify, and bind the key's tenant on success. */
PG_FUNCTION_INFO_V1(apikeys_authenticate);
Datum
apikeys_authenticate(PG_FUNCTION_ARGS)
{
	return verify_common(fcinfo, true, -1);
}

/*
 * apikeys_internal._authenticate_route(api_key, required_scopes,
 * client_addr, route, route_limits, cost) (1.1): authenticate() for the
 * PostgREST gate, charging cost (0: check only) to the key's and tenant's
 * limits and to route_limits (apikeys.named_limit[], the route's own, kept
 * per key and route: route is the route's identity) in the same
 * all-or-nothing pass.  No route limits: authenticate() with a cost.
 */
PG_FUNCTION_INFO_V1(apikeys_authenticate_route_1_1);
Datum
apikeys_authenticate_route_1_1(PG_FUNCTION_ARGS)
{
	LimitSpec	specs[POLICY_MAX_LIMITS];
	int			n = 0;
	text	   *route = NULL;
	volatile Datum result = (Datum) 0;	/* set inside PG_TRY */

	/* before verifying: a maintenance run charges no limit and binds nothing */
	apikeys_refuse_restricted("apikeys.authenticate");
	if (!PG_ARGISNULL(4))
		n = apikeys_load_limits(PG_GETARG_DATUM(4), specs);
	if (n > 0)
	{
		if (PG_ARGISNULL(3))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid_route: route limits need the route they belong to"),
					 errhint("Pass the route's identity (\"method match path\"), as apikeys.postgrest_gate() does.")));
		route = PG_GETARG_TEXT_PP(3);
	}
	apikeys_usage_set_route(specs, n, route ? VARDATA_ANY(route) : NULL,
							route ? VARSIZE_ANY_EXHDR(route) : 0);
	PG_TRY();
	{
		result = verify_common(fcinfo, true, 5);
	}
	PG_FINALLY();
	{
		apikeys_usage_set_route(NULL, 0, NULL, 0);
	}
	PG_END_TRY();
	return result;
}
