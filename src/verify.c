/*
 * verify.c - apikey_verify(api_key, required_scopes, client_addr): the hot
 * path.
 *
 * Order of work, cheapest first:
 *   1. shape and checksum of the presented string (key_format.c): garbage,
 *      NULL and oversized input end here as 'malformed', no table touched;
 *   2. SHA-256, then one probe of the unique digest index on apikeys.secret;
 *   3. one probe of the credential primary key, one of the tenant primary key.
 * No SPI, no planner, no permission or RLS checks: EXECUTE on this function
 * is the privilege.  Nothing is written, so it runs in READ ONLY
 * transactions and on hot standbys.  Bad keys never raise; the verdict says
 * why.
 */
#include "apikeys.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/detoast.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "tenant_context.h"

typedef enum VerdictCode
{
	V_VALID,
	V_MALFORMED,
	V_NOT_FOUND,
	V_DISABLED,
	V_REVOKED,
	V_EXPIRED,
	V_TENANT_INACTIVE,
	V_IP_NOT_ALLOWED,
	V_INSUFFICIENT_SCOPE,
	V_RATE_LIMITED,
	V_USAGE_EXCEEDED
} VerdictCode;

/* the verdict codes of SPEC.md, in VerdictCode order */
static const char *const verdict_names[] = {
	"valid", "malformed", "not_found", "disabled", "revoked", "expired",
	"tenant_inactive", "ip_not_allowed", "insufficient_scope",
	"rate_limited", "usage_exceeded"
};

#define VERIFICATION_NATTS 7

typedef struct Verdict
{
	VerdictCode code;
	bool		have_key;
	pg_uuid_t	key_id;
	Datum		tenant;			/* text, or 0 */
	Datum		name;			/* text, or 0 */
	Datum		scopes;			/* text[], or 0 */
	Datum		expires_at;
	bool		expires_null;
} Verdict;

static Snapshot
verify_snapshot(void)
{
	return ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();
}

/* Probe a unique index for one key; copy the row out before closing. */
static HeapTuple
probe_unique(Oid relid, Oid indexid, RegProcedure eqproc, Datum value,
			 Oid collation, TupleDesc *desc_out, Relation *rel_out)
{
	Relation	rel = table_open(relid, AccessShareLock);
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tuple;

	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   collation, eqproc, value);
	scan = systable_beginscan(rel, indexid, true, verify_snapshot(), 1, &skey);
	tuple = systable_getnext(scan);
	if (tuple)
		tuple = heap_copytuple(tuple);
	systable_endscan(scan);
	*desc_out = RelationGetDescr(rel);
	*rel_out = rel;
	return tuple;
}

/* Every required scope must be among the key's (both arrays of text). */
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
		bool		found = false;

		if (nn[i])
			return false;
		for (int j = 0; j < nh && !found; j++)
			found = !hn[j] && DatumGetBool(DirectFunctionCall2Coll(texteq,
																   C_COLLATION_OID,
																   h[j], n[i]));
		if (!found)
			return false;
	}
	return true;
}

static void
verify_lookup(const char *key, size_t len, ArrayType *required, Verdict *v)
{
	const ApikeysCatalog *cat = apikeys_catalog();
	uint8		digest[VARHDRSZ + APIKEYS_DIGEST_LEN];
	TimestampTz now = GetCurrentTimestamp();
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	tuple;
	bool		isnull;
	Datum		d;
	TimestampTz secret_until = DT_NOEND;
	text	   *status;
	bool		tenant_active;

	/* the digest as a bytea on the stack */
	SET_VARSIZE(digest, VARHDRSZ + APIKEYS_DIGEST_LEN);
	apikeys_sha256(key, len, digest + VARHDRSZ);

	tuple = probe_unique(cat->secret_rel, cat->secret_pkey, F_BYTEAEQ,
						 PointerGetDatum(digest), InvalidOid, &desc, &rel);
	if (tuple == NULL)
	{
		table_close(rel, AccessShareLock);
		v->code = V_NOT_FOUND;
		return;
	}
	memcpy(&v->key_id, DatumGetUUIDP(heap_getattr(tuple, Anum_secret_key_id, desc, &isnull)),
		   sizeof(pg_uuid_t));
	d = heap_getattr(tuple, Anum_secret_valid_until, desc, &isnull);
	if (!isnull)
		secret_until = DatumGetTimestampTz(d);
	table_close(rel, AccessShareLock);
	v->have_key = true;

	tuple = probe_unique(cat->credential_rel, cat->credential_pkey, F_UUID_EQ,
						 UUIDPGetDatum(&v->key_id), InvalidOid, &desc, &rel);
	if (tuple == NULL)
	{
		/* secret row without credential: cannot happen (FK), treat as gone */
		table_close(rel, AccessShareLock);
		v->have_key = false;
		v->code = V_NOT_FOUND;
		return;
	}
	v->tenant = heap_getattr(tuple, Anum_credential_tenant, desc, &isnull);
	v->name = heap_getattr(tuple, Anum_credential_name, desc, &isnull);
	v->scopes = PointerGetDatum(PG_DETOAST_DATUM(heap_getattr(tuple, Anum_credential_scopes,
															  desc, &isnull)));
	v->expires_at = heap_getattr(tuple, Anum_credential_expires_at, desc, &v->expires_null);
	status = DatumGetTextPP(heap_getattr(tuple, Anum_credential_status, desc, &isnull));
	table_close(rel, AccessShareLock);

	tuple = probe_unique(cat->tenant_rel, cat->tenant_pkey, F_TEXTEQ,
						 v->tenant, C_COLLATION_OID, &desc, &rel);
	tenant_active = tuple != NULL &&
		DatumGetBool(heap_getattr(tuple, Anum_tenant_active, desc, &isnull));
	table_close(rel, AccessShareLock);

	if (VARSIZE_ANY_EXHDR(status) == 7 && memcmp(VARDATA_ANY(status), "revoked", 7) == 0)
		v->code = V_REVOKED;
	else if (VARSIZE_ANY_EXHDR(status) == 8 && memcmp(VARDATA_ANY(status), "disabled", 8) == 0)
		v->code = V_DISABLED;
	else if (!tenant_active)
		v->code = V_TENANT_INACTIVE;
	else if ((!v->expires_null && DatumGetTimestampTz(v->expires_at) <= now) ||
			 secret_until <= now)
		v->code = V_EXPIRED;
	else if (required && !scopes_satisfied(DatumGetArrayTypeP(v->scopes), required))
		v->code = V_INSUFFICIENT_SCOPE;
	else
		v->code = V_VALID;
}

static Datum
verify_common(FunctionCallInfo fcinfo, bool bind)
{
	TupleDesc	desc = (TupleDesc) fcinfo->flinfo->fn_extra;
	Verdict		v = {.code = V_MALFORMED, .expires_null = true};
	Datum		values[VERIFICATION_NATTS];
	bool		nulls[VERIFICATION_NATTS];

	if (desc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		desc = BlessTupleDesc(CreateTupleDescCopy(desc));
		MemoryContextSwitchTo(old);
		fcinfo->flinfo->fn_extra = desc;
	}

	/* Reject by size before detoasting: a 10 MB argument costs nothing. */
	if (!PG_ARGISNULL(0) &&
		toast_raw_datum_size(PG_GETARG_DATUM(0)) <= VARHDRSZ + KEY_MAX_LEN)
	{
		text	   *key = PG_GETARG_TEXT_PP(0);
		size_t		prefix_len;

		if (key_parse(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), &prefix_len) == KEY_OK)
			verify_lookup(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key),
						  PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1), &v);
	}

	if (bind && v.code == V_VALID)
		apikeys_bind_tenant_from_key(DatumGetTextPP(v.tenant), &v.key_id);

	memset(nulls, true, sizeof(nulls));
	values[0] = BoolGetDatum(v.code == V_VALID);
	nulls[0] = false;
	values[1] = CStringGetTextDatum(verdict_names[v.code]);
	nulls[1] = false;
	if (v.have_key)
	{
		values[2] = UUIDPGetDatum(&v.key_id);
		values[3] = v.tenant;
		values[4] = v.name;
		values[5] = v.scopes;
		values[6] = v.expires_at;
		nulls[2] = nulls[3] = nulls[4] = nulls[5] = false;
		nulls[6] = v.expires_null;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
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
