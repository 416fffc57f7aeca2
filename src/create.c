/*
 * create.c - apikey_create(tenant, name, scopes, expires_at, description,
 * metadata, prefix): a new credential and its first secret.
 *
 * Runs SECURITY DEFINER with a pinned search_path; the statements below are
 * schema- and operator-qualified anyway.  The plaintext leaves this function
 * only in its result row: it is never stored, logged or put in a message.
 */
#include "apikeys.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

static SPIPlanPtr tenant_plan = NULL;
static SPIPlanPtr credential_plans[2];	/* per apikeys_helper_version() */
static const char *const credential_sql[2] = {
	[APIKEYS_HELPER_1_1] = "INSERT INTO apikeys.credential"
	" (tenant, name, scopes, expires_at, description, metadata, prefix, key_id, created_by)"
	" VALUES ($1, $2, $3, $4, $5, COALESCE($6, '{}'::pg_catalog.jsonb), $7, $8,"
	" apikeys_internal._acting_role())"
	" RETURNING key_id, created_at",
	[APIKEYS_HELPER_1_0] = "INSERT INTO apikeys.credential"
	" (tenant, name, scopes, expires_at, description, metadata, prefix, key_id, created_by)"
	" VALUES ($1, $2, $3, $4, $5, COALESCE($6, '{}'::pg_catalog.jsonb), $7, $8,"
	" apikeys._acting_role())"
	" RETURNING key_id, created_at",
};
static SPIPlanPtr secret_plan = NULL;

/*
 * Lock the tenant row against concurrent deactivation or deletion and check
 * that keys may be issued for it.  Shared with rotate.c.
 */
void
apikeys_require_active_tenant(const char *tenant, const char *action, Datum key_id)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(tenant)};
	bool		isnull;

	apikeys_spi_run(&tenant_plan,
					"SELECT active FROM apikeys.tenant"
					" WHERE tenant OPERATOR(pg_catalog.=) $1 FOR SHARE",
					1, argtypes, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		apikeys_spi_deny(action, tenant, key_id, "42704",
						 "Create it first with apikeys.tenant_create().",
						 "tenant_not_found: tenant \"%s\" does not exist", tenant);
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		apikeys_spi_deny(action, tenant, key_id, "55000",
						 "Reactivate it with apikeys.tenant_update(tenant, active => true).",
						 "tenant_inactive: tenant \"%s\" is inactive", tenant);
}

/* Store the digest and hint of a new current secret for key_id. */
void
apikeys_insert_secret(Datum key_id, NewSecret *secret)
{
	Oid			argtypes[3] = {BYTEAOID, UUIDOID, TEXTOID};
	Datum		values[3];
	bytea	   *digest = palloc(VARHDRSZ + APIKEYS_DIGEST_LEN);

	SET_VARSIZE(digest, VARHDRSZ + APIKEYS_DIGEST_LEN);
	memcpy(VARDATA(digest), secret->digest, APIKEYS_DIGEST_LEN);
	values[0] = PointerGetDatum(digest);
	values[1] = key_id;
	values[2] = CStringGetTextDatum(secret->hint);
	apikeys_spi_run(&secret_plan,
					"INSERT INTO apikeys.secret (digest, key_id, hint) VALUES ($1, $2, $3)",
					3, argtypes, values, NULL, SPI_OK_INSERT);
}

/*
 * apikey_create: registry (1.1) checks the scopes against the tenant's scope
 * registry and allows wildcards; without it, the 1.0 rules.
 */
static Datum
create_common(FunctionCallInfo fcinfo, bool registry)
{
	char	   *tenant = apikeys_check_tenant_id(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	char	   *name = apikeys_check_name(PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1));
	ArrayType  *scopes = apikeys_normalize_scopes_ext(PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2),
													  registry);
	bool		expires_null = PG_ARGISNULL(3);
	Datum		expires_at = expires_null ? (Datum) 0 : PG_GETARG_DATUM(3);
	text	   *description = PG_ARGISNULL(4) ? NULL : PG_GETARG_TEXT_PP(4);
	int			version;
	Datum		metadata = PG_ARGISNULL(5) ? (Datum) 0 : PG_GETARG_DATUM(5);
	char	   *prefix = apikeys_check_prefix(PG_ARGISNULL(6) ? NULL : PG_GETARG_TEXT_PP(6));
	Oid			argtypes[8] = {TEXTOID, TEXTOID, TEXTARRAYOID, TIMESTAMPTZOID,
	TEXTOID, JSONBOID, TEXTOID, UUIDOID};
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	pg_uuid_t	new_id;
	Datum		key_id;
	TimestampTz created_at;
	bool		isnull;
	NewSecret	secret;
	volatile Datum result;

	if (!expires_null)
		apikeys_check_expiry(DatumGetTimestampTz(expires_at));
	apikeys_check_description(description);
	if (metadata != (Datum) 0)
		apikeys_check_metadata(metadata);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	apikeys_spi_authorize(tenant, "key_create", (Datum) 0);
	apikeys_require_active_tenant(tenant, "key_create", (Datum) 0);
	if (registry)
		apikeys_check_scope_registry(tenant, scopes);

	values[0] = CStringGetTextDatum(tenant);
	values[1] = CStringGetTextDatum(name);
	values[2] = PointerGetDatum(scopes);
	values[3] = expires_at;
	nulls[3] = expires_null ? 'n' : ' ';
	values[4] = description ? PointerGetDatum(description) : (Datum) 0;
	nulls[4] = description ? ' ' : 'n';
	values[5] = metadata;
	nulls[5] = metadata ? ' ' : 'n';
	values[6] = CStringGetTextDatum(prefix);
	apikeys_new_key_id(&new_id);
	values[7] = UUIDPGetDatum(&new_id);
	/* created_by: the caller, not the definer */
	version = apikeys_helper_version("_acting_role", 0, NULL);
	apikeys_spi_run(&credential_plans[version], credential_sql[version],
					8, argtypes, values, nulls, SPI_OK_INSERT_RETURNING);
	/* a value, not a Datum: by reference on 32-bit, gone at SPI_finish */
	created_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	key_id = PointerGetDatum(SPI_palloc(sizeof(pg_uuid_t)));
	memcpy(DatumGetPointer(key_id),
		   DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
		   sizeof(pg_uuid_t));

	/* the plaintext is wiped from this frame whether or not we get through */
	PG_TRY();
	{
		apikeys_new_secret(prefix, strlen(prefix), &secret);
		apikeys_insert_secret(key_id, &secret);

		SPI_finish();
		result = apikeys_issued_key_tuple(fcinfo, key_id, &secret, expires_at,
										  expires_null, TimestampTzGetDatum(created_at));
	}
	PG_FINALLY();
	{
		apikeys_wipe_secret(&secret);
	}
	PG_END_TRY();
	PG_RETURN_DATUM(result);
}

/* 1.0's apikeys_internal.apikey_create: no registry (1.0 has none). */
PG_FUNCTION_INFO_V1(apikey_create);
Datum
apikey_create(PG_FUNCTION_ARGS)
{
	return create_common(fcinfo, false);
}

/* 1.1's apikeys_internal.apikey_create: scopes checked against the registry. */
PG_FUNCTION_INFO_V1(apikey_create_1_1);
Datum
apikey_create_1_1(PG_FUNCTION_ARGS)
{
	return create_common(fcinfo, true);
}
