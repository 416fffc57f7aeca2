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
 *
 * Parse analysis locks every table the query names (in the mode its
 * statement needs: ROW EXCLUSIVE for a DELETE, ROW SHARE for FOR UPDATE),
 * before any privilege check, and anyone may call this: kept to the end of
 * the caller's transaction, those locks would let any role hold tables it
 * cannot read, and make the maintenance that needs them (a vault master key
 * rotation) wait, and everyone else behind it.  So the query is analyzed in
 * a subtransaction that is rolled back, which releases them.
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

/* One result column of the query, as the caller is told it. */
typedef struct ImportColumn
{
	char	   *name;
	char	   *type_name;
	bool		built_in;
} ImportColumn;

/* What analyze_columns is given and answers. */
typedef struct ImportAnalysis
{
	const char *query;
	MemoryContext cxt;			/* where the answer goes */
	ImportColumn *cols;
	int			ncols;
} ImportAnalysis;

/*
 * The result columns of a->query (allocated in a->cxt), by parse analysis
 * with SPI.  Runs in a subtransaction that is rolled back.
 */
static void
analyze_columns(void *arg)
{
	ImportAnalysis *a = (ImportAnalysis *) arg;
	SPIPlanPtr	plan;
	List	   *sources;
	TupleDesc	desc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(a->query, 0, NULL);
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

	a->cols = MemoryContextAllocZero(a->cxt, sizeof(ImportColumn) * Max(desc->natts, 1));
	a->ncols = 0;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		ImportColumn *c = &a->cols[a->ncols];

		if (att->attisdropped)
			continue;
		c->name = MemoryContextStrdup(a->cxt, NameStr(att->attname));
		c->type_name = MemoryContextStrdup(a->cxt, format_type_be(att->atttypid));
		c->built_in = plain_built_in(att->atttypid);
		a->ncols++;
	}
	SPI_finish();
}

PG_FUNCTION_INFO_V1(apikeys_import_columns);

/*
 * apikeys_internal._import_columns(query text) RETURNS TABLE (name text,
 * type_name text, built_in boolean): the query's result columns in order.
 * The query must be one statement returning rows.  Nothing of its analysis
 * outlives the call: no lock, no plan.
 */
Datum
apikeys_import_columns(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ImportAnalysis a = {0};
	ErrorData  *edata;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_import: query must not be NULL")));
	a.query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	a.cxt = CurrentMemoryContext;
	InitMaterializedSRF(fcinfo, 0);

	/* rolled back whatever happens: no lock of the analysis outlives it */
	edata = apikeys_subxact_run(analyze_columns, &a, false);
	if (edata != NULL)
		ReThrowError(edata);

	for (int i = 0; i < a.ncols; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(a.cols[i].name);
		values[1] = CStringGetTextDatum(a.cols[i].type_name);
		values[2] = BoolGetDatum(a.cols[i].built_in);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
