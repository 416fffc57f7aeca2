/*
 * spi_util.c - run a management statement through a plan kept for the life
 * of the backend.  Management functions pin search_path and every statement
 * is schema-qualified, so a kept plan cannot be redirected by the caller.
 */
#include "apikeys.h"

#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/syscache.h"

/*
 * The OID of helper name(argtypes) in schema nspname, or InvalidOid.  Read
 * from the syscache, never through name lookup: no USAGE is needed (nobody
 * holds it on apikeys_internal) and nothing raises.
 */
static Oid
helper_oid_in(const char *nspname, const char *name, int nargs, const Oid *argtypes)
{
	Oid			nsp = get_namespace_oid(nspname, true);

	if (!OidIsValid(nsp))
		return InvalidOid;
	return GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid, CStringGetDatum(name),
						   PointerGetDatum(buildoidvector(argtypes, nargs)),
						   ObjectIdGetDatum(nsp));
}

/*
 * Which version's schema holds helper name(argtypes): APIKEYS_HELPER_1_1
 * (apikeys_internal) when it is there, else APIKEYS_HELPER_1_0 (apikeys).
 * Asked at every call (two syscache probes), so that a backend whose kept
 * plans date from before ALTER EXTENSION apikeys UPDATE takes the other
 * statement text (and plan) from then on.
 */
int
apikeys_helper_version(const char *name, int nargs, const Oid *argtypes)
{
	return OidIsValid(helper_oid_in(APIKEYS_INTERNAL_SCHEMA, name, nargs, argtypes))
		? APIKEYS_HELPER_1_1 : APIKEYS_HELPER_1_0;
}

/* The OID of helper name(argtypes) wherever it lives (see above), or InvalidOid. */
Oid
apikeys_helper_oid(const char *name, int nargs, const Oid *argtypes)
{
	Oid			oid = helper_oid_in(APIKEYS_INTERNAL_SCHEMA, name, nargs, argtypes);

	return OidIsValid(oid) ? oid : helper_oid_in(APIKEYS_SCHEMA, name, nargs, argtypes);
}

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
 * apikeys_internal._deny(), which writes a structured "apikeys_audit_denied" line to
 * the server log (it outlives the rollback) and raises.  Needs SPI_connect.
 */
void
apikeys_spi_deny(const char *action, const char *tenant, Datum key_id,
				 const char *sqlstate, const char *hint, const char *fmt,...)
{
	static SPIPlanPtr plans[2];
	static const char *const sql[2] = {
		[APIKEYS_HELPER_1_1] = "SELECT apikeys_internal._deny($1, $2, $3, $4, $5, $6)",
		[APIKEYS_HELPER_1_0] = "SELECT apikeys._deny($1, $2, $3, $4, $5, $6)",
	};
	Oid			argtypes[6] = {TEXTOID, TEXTOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID};
	int			v = apikeys_helper_version("_deny", 6, argtypes);
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
	apikeys_spi_run(&plans[v], sql[v], 6, argtypes, values, nulls, SPI_OK_SELECT);
	elog(ERROR, "apikeys_internal._deny() returned");
}

/* Authorize the session's role for tenant (see apikeys_internal._authorize()). */
void
apikeys_spi_authorize(const char *tenant, const char *action, Datum key_id)
{
	static SPIPlanPtr plans[2];
	static const char *const sql[2] = {
		[APIKEYS_HELPER_1_1] = "SELECT apikeys_internal._authorize($1, $2, $3)",
		[APIKEYS_HELPER_1_0] = "SELECT apikeys._authorize($1, $2, $3)",
	};
	Oid			argtypes[3] = {TEXTOID, TEXTOID, UUIDOID};
	int			v = apikeys_helper_version("_authorize", 3, argtypes);
	Datum		values[3] = {CStringGetTextDatum(tenant), CStringGetTextDatum(action), key_id};
	char		nulls[3] = {' ', ' ', key_id ? ' ' : 'n'};

	apikeys_spi_run(&plans[v], sql[v], 3, argtypes, values, nulls, SPI_OK_SELECT);
}
