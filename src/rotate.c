/*
 * rotate.c - apikey_rotate(key_id, grace): a new secret for the same
 * credential.
 *
 * The credential row is locked FOR UPDATE first, so concurrent rotations of
 * one key run one after the other; the partial unique index
 * secret_one_current makes "two current secrets" impossible even so.
 * grace = 0 deletes every older secret of the key (dead at commit);
 * grace > 0 lets the current one verify until now() + grace, never past the
 * credential's own expiry.  Secrets whose grace has run out are purged here.
 */
#include "apikeys.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

static SPIPlanPtr lock_plans[2];	/* per apikeys_helper_version() */
static const char *const lock_sql[2] = {
	[APIKEYS_HELPER_1_1] = "SELECT tenant, status, prefix, expires_at"
	" FROM apikeys_internal._lock_key($1, 'key_rotate')",
	[APIKEYS_HELPER_1_0] = "SELECT tenant, status, prefix, expires_at"
	" FROM apikeys._lock_key($1, 'key_rotate')",
};
static const Oid lock_argtypes[2] = {UUIDOID, TEXTOID};
static SPIPlanPtr purge_plan = NULL;
static SPIPlanPtr kill_plan = NULL;
static SPIPlanPtr grace_plan = NULL;
static SPIPlanPtr touch_plan = NULL;

PG_FUNCTION_INFO_V1(apikey_rotate);

Datum
apikey_rotate(PG_FUNCTION_ARGS)
{
	Oid			uuid_type[1] = {UUIDOID};
	Oid			grace_types[2] = {UUIDOID, INTERVALOID};
	Datum		values[2];
	Interval   *grace;
	bool		grace_zero;
	bool		isnull;
	HeapTuple	row;
	TupleDesc	desc;
	char	   *tenant,
			   *status,
			   *prefix;
	Datum		key_id;
	TimestampTz expires_at,
				rotated_at;
	bool		expires_null;
	NewSecret	secret;
	char	   *key_text;
	volatile Datum result;
	int			v;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("invalid_key_id: key_id must not be NULL")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_grace: grace must not be NULL"),
				 errhint("Use interval '0' to end the old secret at commit.")));
	grace = PG_GETARG_INTERVAL_P(1);
	if (grace->month < 0 || grace->day < 0 || grace->time < 0 ||
		INTERVAL_NOT_FINITE_COMPAT(grace))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_grace: grace must be a finite, non-negative interval")));
	grace_zero = grace->month == 0 && grace->day == 0 && grace->time == 0;

	key_id = PG_GETARG_DATUM(0);
	key_text = DatumGetCString(DirectFunctionCall1(uuid_out, key_id));
	values[0] = key_id;
	values[1] = PointerGetDatum(grace);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* locked if ours to manage; unknown and foreign keys raise alike */
	v = apikeys_helper_version("_lock_key", 2, lock_argtypes);
	apikeys_spi_run(&lock_plans[v], lock_sql[v], 1, uuid_type, values, NULL, SPI_OK_SELECT);
	Assert(SPI_processed == 1);
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	tenant = SPI_getvalue(row, desc, 1);
	status = SPI_getvalue(row, desc, 2);
	prefix = SPI_getvalue(row, desc, 3);
	expires_at = DatumGetTimestampTz(SPI_getbinval(row, desc, 4, &expires_null));

	if (strcmp(status, "revoked") == 0)
		apikeys_spi_deny("key_rotate", tenant, key_id, "55000",
						 "A revoked key cannot be rotated; create a new key.",
						 "key_revoked: API key %s is revoked", key_text);
	if (!expires_null && expires_at <= GetCurrentTransactionStartTimestamp())
		apikeys_spi_deny("key_rotate", tenant, key_id, "55000",
						 "Extend it with apikeys.apikey_update(key_id, expires_at => ...) first.",
						 "key_expired: API key %s has expired", key_text);
	apikeys_require_active_tenant(tenant, "key_rotate", key_id);

	/*
	 * the plaintext is wiped from this frame whether or not we get through;
	 * minted before the first write, so that the audit chain's lock, taken
	 * by that write's audit row and held to commit, waits for no minting
	 */
	PG_TRY();
	{
		apikeys_new_secret(prefix, strlen(prefix), &secret);

		apikeys_spi_run(&purge_plan,
						"DELETE FROM apikeys.secret WHERE key_id OPERATOR(pg_catalog.=) $1"
						" AND valid_until OPERATOR(pg_catalog.<=) pg_catalog.now()",
						1, uuid_type, values, NULL, SPI_OK_DELETE);
		if (grace_zero)
			apikeys_spi_run(&kill_plan,
							"DELETE FROM apikeys.secret WHERE key_id OPERATOR(pg_catalog.=) $1",
							1, uuid_type, values, NULL, SPI_OK_DELETE);
		else
			apikeys_spi_run(&grace_plan,
							"UPDATE apikeys.secret s"
							" SET valid_until = LEAST(pg_catalog.now() OPERATOR(pg_catalog.+) $2,"
							"   COALESCE(c.expires_at, 'infinity'))"
							" FROM apikeys.credential c"
							" WHERE c.key_id OPERATOR(pg_catalog.=) s.key_id"
							"   AND s.key_id OPERATOR(pg_catalog.=) $1 AND s.valid_until IS NULL",
							2, grace_types, values, NULL, SPI_OK_UPDATE);
		apikeys_insert_secret(key_id, &secret);

		apikeys_spi_run(&touch_plan,
						"UPDATE apikeys.credential"
						" SET rotated_at = pg_catalog.now(), updated_at = pg_catalog.now(),"
						"     rotation_count = rotation_count OPERATOR(pg_catalog.+) 1"
						" WHERE key_id OPERATOR(pg_catalog.=) $1 RETURNING rotated_at",
						1, uuid_type, values, NULL, SPI_OK_UPDATE_RETURNING);
		/* a value, not a Datum: by reference on 32-bit, gone at SPI_finish */
		rotated_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

		SPI_finish();
		result = apikeys_issued_key_tuple(fcinfo, key_id, &secret,
										  expires_null ? (Datum) 0 : TimestampTzGetDatum(expires_at),
										  expires_null, TimestampTzGetDatum(rotated_at));
	}
	PG_FINALLY();
	{
		apikeys_wipe_secret(&secret);
	}
	PG_END_TRY();
	PG_RETURN_DATUM(result);
}
