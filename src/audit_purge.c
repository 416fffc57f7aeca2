/*
 * audit_purge.c - the one way rows leave apikeys.audit.
 *
 * The audit's BEFORE UPDATE/DELETE/TRUNCATE triggers refuse every change
 * unless apikeys_internal._audit_purging() is true, which it is only inside
 * apikeys.audit_purge(): a flag in backend memory that no SET can turn on.
 * The purge deletes a prefix of each chain (its rows older than the cutoff)
 * after appending to it an 'audit_purged' row naming the last purged row
 * and its hash, so apikeys.audit_check() can still verify every chain from
 * its new start (docs/audit.md).
 */
#include "apikeys.h"

#include "catalog/pg_type.h"
#include "access/xact.h"
#include "utils/builtins.h"
#include "utils/datetime.h"

static bool purging = false;

PG_FUNCTION_INFO_V1(apikeys_audit_purging);
Datum
apikeys_audit_purging(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(purging);
}

PG_FUNCTION_INFO_V1(apikeys_audit_purge);
Datum
apikeys_audit_purge(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plans[2];
	static const char *const sql[2] = {
		[APIKEYS_HELPER_1_1] = "SELECT apikeys_internal._audit_purge_rows($1, $2)",
		[APIKEYS_HELPER_1_0] = "SELECT apikeys._audit_purge_rows($1, $2)",
	};
	int			v;
	Datum		older_than;
	Datum		args[2];
	Oid			argtypes[2] = {TIMESTAMPTZOID, INTERVALOID};
	TimestampTz now,
				cutoff;
	int64		purged = 0;
	bool		isnull;

	if (!PG_ARGISNULL(0))
		older_than = PG_GETARG_DATUM(0);
	else if (apikeys_audit_retention && apikeys_audit_retention[0] != '\0')
		older_than = DirectFunctionCall3(interval_in,
										 CStringGetDatum(apikeys_audit_retention),
										 ObjectIdGetDatum(InvalidOid),
										 Int32GetDatum(-1));
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_retention: no retention age given and apikeys.audit_retention is not set"),
				 errhint("Call apikeys.audit_purge(interval '90 days') or set apikeys.audit_retention.")));

	/*
	 * The instant the interval means, not its fields: '-12 mons +361 days'
	 * is about a week ago.  At least a day ago, and finite.
	 */
	now = GetCurrentTransactionStartTimestamp();
	cutoff = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
													 TimestampTzGetDatum(now), older_than));
	if (TIMESTAMP_NOT_FINITE(cutoff) || cutoff > now - USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_retention: audit rows must be kept at least 1 day"),
				 errdetail("The cutoff now() - older_than must be a finite time at least 1 day ago.")));
	args[0] = TimestampTzGetDatum(cutoff);
	args[1] = older_than;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	purging = true;
	PG_TRY();
	{
		v = apikeys_helper_version("_audit_purge_rows", 2, argtypes);
		apikeys_spi_run(&plans[v], sql[v], 2, argtypes, args, NULL, SPI_OK_SELECT);
		purged = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	PG_FINALLY();
	{
		purging = false;
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_INT64(purged);
}
