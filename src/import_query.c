/*
 * import_query.c - the columns an apikey_import_many() query returns, found
 * without running it.
 *
 * apikey_import_many runs its query with the caller's rights and turns each
 * row into an apikeys.legacy_key.  A column of a type some role created (an
 * enum, a domain, a composite of a tenant's schema) may carry that role's
 * code into the conversion: to_jsonb, or a cast to the field's type, calls a
 * cast function its owner wrote, as the caller, who may be a superuser
 * reading a tenant's plain table.  So the import first asks the query's
 * result type (parse analysis only: nothing is executed) and refuses any
 * column whose type is not a built-in base type (or an array of one); the caller then writes the cast in the
 * query, where it can be read.  Built-in types cannot get new casts from
 * anyone but a superuser (CREATE CAST needs to own the source or target).
 */
#include "apikeys.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"

/*
 * Is typid a built-in base type (or an array of one)?  Not a pseudo-type:
 * record and anyarray are built in, but a record's fields or an anyarray's
 * elements may be of any type, converted by their own casts.  Nor a
 * built-in composite or domain: the query can convert those itself.
 */
static bool
plain_built_in(Oid typid)
{
	Oid			elem;

	if (typid >= FirstNormalObjectId || get_typtype(typid) != TYPTYPE_BASE)
		return false;
	elem = get_element_type(typid);
	return !OidIsValid(elem) || plain_built_in(elem);
}

PG_FUNCTION_INFO_V1(apikeys_import_columns);

/*
 * apikeys_internal._import_columns(query text) RETURNS TABLE (name text,
 * type_name text, built_in boolean): the query's result columns in order.
 * The query must be one statement returning rows.
 */
Datum
apikeys_import_columns(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *query;
	SPIPlanPtr	plan;
	List	   *sources;
	TupleDesc	desc;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_import: query must not be NULL")));
	query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	InitMaterializedSRF(fcinfo, 0);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(query, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	sources = SPI_plan_get_plan_sources(plan);
	desc = list_length(sources) == 1 ?
		((CachedPlanSource *) linitial(sources))->resultDesc : NULL;
	if (desc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_import: query must be one statement returning rows"),
				 errhint("Pass a SELECT whose columns are named as those of apikeys.legacy_key.")));

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		if (att->attisdropped)
			continue;
		values[0] = CStringGetTextDatum(NameStr(att->attname));
		values[1] = CStringGetTextDatum(format_type_be(att->atttypid));
		values[2] = BoolGetDatum(plain_built_in(att->atttypid));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}
