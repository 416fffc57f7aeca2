/*
 * spi_util.c - run a management statement through a plan kept for the life
 * of the backend.  Management functions pin search_path and every statement
 * is schema-qualified, so a kept plan cannot be redirected by the caller.
 */
#include "apikeys.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

void
apikeys_spi_run(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
				Datum *values, const char *nulls, int expected)
{
	int			rc;

	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s",
				 sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "SPI_keepplan failed");
		*plan = p;
	}
	rc = SPI_execute_plan(*plan, values, nulls, false, 0);
	if (rc != expected)
		elog(ERROR, "SPI_execute_plan returned %s for \"%s\"",
			 SPI_result_code_string(rc), sql);
}

/*
 * Refuse a management call the way the PL/pgSQL functions do: through
 * apikeys._deny(), which writes a structured "apikeys_audit_denied" line to
 * the server log (it outlives the rollback) and raises.  Needs SPI_connect.
 */
void
apikeys_spi_deny(const char *action, const char *tenant, Datum key_id,
				 const char *sqlstate, const char *hint, const char *fmt,...)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[6] = {TEXTOID, TEXTOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	StringInfoData msg;

	initStringInfo(&msg);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&msg, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&msg, needed);
	}

	values[0] = CStringGetTextDatum(action);
	values[1] = tenant ? CStringGetTextDatum(tenant) : (Datum) 0;
	nulls[1] = tenant ? ' ' : 'n';
	values[2] = key_id;
	nulls[2] = key_id ? ' ' : 'n';
	values[3] = CStringGetTextDatum(sqlstate);
	values[4] = CStringGetTextDatum(msg.data);
	values[5] = hint ? CStringGetTextDatum(hint) : (Datum) 0;
	nulls[5] = hint ? ' ' : 'n';
	apikeys_spi_run(&plan, "SELECT apikeys._deny($1, $2, $3, $4, $5, $6)",
					6, argtypes, values, nulls, SPI_OK_SELECT);
	elog(ERROR, "apikeys._deny() returned");
}

/* Authorize the session's role for tenant (see apikeys._authorize()). */
void
apikeys_spi_authorize(const char *tenant, const char *action, Datum key_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[3] = {TEXTOID, TEXTOID, UUIDOID};
	Datum		values[3] = {CStringGetTextDatum(tenant), CStringGetTextDatum(action), key_id};
	char		nulls[3] = {' ', ' ', key_id ? ' ' : 'n'};

	apikeys_spi_run(&plan, "SELECT apikeys._authorize($1, $2, $3)",
					3, argtypes, values, nulls, SPI_OK_SELECT);
}
