/*
 * create_many.c - apikey_create_many(tenant, names, scopes, expires_at,
 * prefix): many keys of one tenant in one call.
 *
 * The same rules as apikey_create (create.c), checked once for the call:
 * one authorization, one tenant lock, then, for each chunk of up to
 * AUDIT_HOLD_MAX keys, one INSERT of its credentials and one of its secrets,
 * set-based, so that the audit triggers chain the rows under one chain lock
 * and each key's secret joins its key_created row.  Each plaintext leaves this function only in
 * its result row, and is wiped from its memory once the rows are built.
 */
#include "apikeys.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "audit_pending.h"

/* One call creates at most this many keys (all plaintexts are held at once). */
#define CREATE_MANY_MAX 1000000

static SPIPlanPtr credential_plans[2];	/* per apikeys_helper_version() */
static const char *const credential_sql[2] = {
	[APIKEYS_HELPER_1_1] = "INSERT INTO apikeys.credential"
	" (key_id, tenant, name, scopes, expires_at, prefix, created_by)"
	" SELECT u.id, $1, u.name, $4, $5, $6, apikeys_internal._acting_role()"
	" FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3)) AS u(id, name)",
	[APIKEYS_HELPER_1_0] = "INSERT INTO apikeys.credential"
	" (key_id, tenant, name, scopes, expires_at, prefix, created_by)"
	" SELECT u.id, $1, u.name, $4, $5, $6, apikeys._acting_role()"
	" FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3)) AS u(id, name)",
};
static SPIPlanPtr secret_plan = NULL;

/* The names, checked: NULL, an empty array, a NULL name or a bad one is an error. */
static Datum *
checked_names(ArrayType *names, int *n)
{
	Datum	   *elems;
	bool	   *nulls;

	if (names == NULL || ARR_NDIM(names) != 1 || ARR_DIMS(names)[0] > CREATE_MANY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_name: names must be a one-dimensional array of 1 to %d names",
						CREATE_MANY_MAX)));
	deconstruct_array(names, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	if (*n < 1 || *n > CREATE_MANY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_name: names must be a one-dimensional array of 1 to %d names",
						CREATE_MANY_MAX)));
	for (int i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid_name: name %d must not be NULL", i + 1)));
		apikeys_check_name(DatumGetTextPP(elems[i]));
	}
	return elems;
}

/*
 * apikey_create_many: registry (1.1) checks the scopes against the tenant's
 * scope registry, once for the call, and allows wildcards.
 */
static Datum
create_many_common(FunctionCallInfo fcinfo, bool registry)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *tenant = apikeys_check_tenant_id(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	ArrayType  *names = PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1);
	ArrayType  *scopes = apikeys_normalize_scopes_ext(PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2),
													  registry);
	bool		expires_null = PG_ARGISNULL(3);
	Datum		expires_at = expires_null ? (Datum) 0 : PG_GETARG_DATUM(3);
	char	   *prefix = apikeys_check_prefix(PG_ARGISNULL(4) ? NULL : PG_GETARG_TEXT_PP(4));
	Datum	   *name_elems;
	int			n;
	pg_uuid_t  *ids;
	NewSecret  *secrets;
	Datum	   *id_datums,
			   *digest_datums,
			   *hint_datums;
	TupleDesc	call_desc;
	TupleDesc volatile desc = NULL;
	Tuplestorestate *volatile store = NULL;
	MemoryContext per_query,
				old;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("apikey_create_many must be called in FROM: SELECT * FROM apikeys.apikey_create_many(...)")));
	name_elems = checked_names(names, &n);
	if (!expires_null)
		apikeys_check_expiry(DatumGetTimestampTz(expires_at));

	/* what outlives SPI_finish is allocated before SPI_connect */
	ids = palloc(sizeof(pg_uuid_t) * n);
	secrets = palloc0(sizeof(NewSecret) * n);
	id_datums = palloc(sizeof(Datum) * n);
	digest_datums = palloc(sizeof(Datum) * n);
	hint_datums = palloc(sizeof(Datum) * n);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	apikeys_spi_authorize(tenant, "key_create", (Datum) 0);
	apikeys_require_active_tenant(tenant, "key_create", (Datum) 0);
	if (registry)
		apikeys_check_scope_registry(tenant, scopes);

	per_query = rsinfo->econtext->ecxt_per_query_memory;
	if (get_call_result_type(fcinfo, NULL, &call_desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	/* the plaintexts are wiped from this frame whether or not we get through */
	PG_TRY();
	{
		Oid			cred_types[6] = {TEXTOID, UUIDARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TIMESTAMPTZOID, TEXTOID};
		Datum		cred_values[6];
		char		cred_nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
		Oid			secret_types[3] = {BYTEAARRAYOID, UUIDARRAYOID, TEXTARRAYOID};
		Datum		secret_values[3];
		int			v;

		for (int i = 0; i < n; i++)
		{
			bytea	   *digest = palloc(VARHDRSZ + APIKEYS_DIGEST_LEN);

			CHECK_FOR_INTERRUPTS();
			apikeys_new_key_id(&ids[i]);
			id_datums[i] = UUIDPGetDatum(&ids[i]);
			apikeys_new_secret(prefix, strlen(prefix), &secrets[i]);
			SET_VARSIZE(digest, VARHDRSZ + APIKEYS_DIGEST_LEN);
			memcpy(VARDATA(digest), secrets[i].digest, APIKEYS_DIGEST_LEN);
			digest_datums[i] = PointerGetDatum(digest);
			hint_datums[i] = CStringGetTextDatum(secrets[i].hint);
		}

		/*
		 * A chunk's credentials, then its secrets: two statements, audited
		 * as sets; chunks of AUDIT_HOLD_MAX keys, so each key's key_created
		 * row is held until its secret joins it (audit_pending.h).
		 */
		cred_values[0] = CStringGetTextDatum(tenant);
		cred_values[3] = PointerGetDatum(scopes);
		cred_values[4] = expires_at;
		cred_nulls[4] = expires_null ? 'n' : ' ';
		cred_values[5] = CStringGetTextDatum(prefix);
		v = apikeys_helper_version("_acting_role", 0, NULL);
		for (int first = 0; first < n; first += AUDIT_HOLD_MAX)
		{
			int			m = Min(n - first, AUDIT_HOLD_MAX);

			cred_values[1] = PointerGetDatum(construct_array(id_datums + first, m, UUIDOID, UUID_LEN,
															 false, TYPALIGN_CHAR));
			cred_values[2] = PointerGetDatum(construct_array(name_elems + first, m, TEXTOID, -1,
															 false, TYPALIGN_INT));
			apikeys_spi_run(&credential_plans[v], credential_sql[v],
							6, cred_types, cred_values, cred_nulls, SPI_OK_INSERT);
			Assert(SPI_processed == (uint64) m);

			secret_values[0] = PointerGetDatum(construct_array(digest_datums + first, m, BYTEAOID, -1,
															   false, TYPALIGN_INT));
			secret_values[1] = cred_values[1];
			secret_values[2] = PointerGetDatum(construct_array(hint_datums + first, m, TEXTOID, -1,
															   false, TYPALIGN_INT));
			apikeys_spi_run(&secret_plan,
							"INSERT INTO apikeys.secret (digest, key_id, hint)"
							" SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3))",
							3, secret_types, secret_values, NULL, SPI_OK_INSERT);
			Assert(SPI_processed == (uint64) m);
		}
		SPI_finish();

		/*
		 * Held in memory whatever its size (CREATE_MANY_MAX bounds it): a
		 * plaintext never goes to a temporary file from here.
		 */
		old = MemoryContextSwitchTo(per_query);
		store = tuplestore_begin_heap(true, false, MAX_KILOBYTES);
		desc = CreateTupleDescCopy(call_desc);
		MemoryContextSwitchTo(old);
		for (int i = 0; i < n; i++)
		{
			Datum		values[4];
			bool		nulls[4] = {false, false, false, false};
			text	   *key = cstring_to_text_with_len(secrets[i].key, secrets[i].key_len);

			values[0] = UUIDPGetDatum(&ids[i]);
			values[1] = PointerGetDatum(key);
			values[2] = CStringGetTextDatum(secrets[i].hint);
			values[3] = name_elems[i];
			tuplestore_putvalues(store, desc, values, nulls);
			explicit_bzero(VARDATA(key), VARSIZE(key) - VARHDRSZ);
			pfree(key);
		}
	}
	PG_FINALLY();
	{
		for (int i = 0; i < n; i++)
			apikeys_wipe_secret(&secrets[i]);
	}
	PG_END_TRY();

	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = store;
	rsinfo->setDesc = desc;
	return (Datum) 0;
}

/* 1.0's apikeys_internal.apikey_create_many: no registry (1.0 has none). */
PG_FUNCTION_INFO_V1(apikey_create_many);
Datum
apikey_create_many(PG_FUNCTION_ARGS)
{
	return create_many_common(fcinfo, false);
}

/* 1.1's apikeys_internal.apikey_create_many: scopes checked against the registry. */
PG_FUNCTION_INFO_V1(apikey_create_many_1_1);
Datum
apikey_create_many_1_1(PG_FUNCTION_ARGS)
{
	return create_many_common(fcinfo, true);
}
