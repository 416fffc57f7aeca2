/*
 * rls_owner.c - apikeys_internal._role_skips_rls(role): may this role run queries
 * that row-level security does not filter, because it owns (or can become
 * the owner of) a table with RLS enabled but not forced?  The PostgREST gate
 * refuses to switch to such a role: the key's tenant binding would not
 * restrict it.
 *
 * Answering means reading all of pg_class (owners have no index), about
 * 0.5 ms with a few thousand relations: too much for every request.  So the
 * answers are kept per backend and forgotten on any change to pg_class, to
 * role membership, to roles (a superuser is a member of every role) or to
 * databases (the owner is a member of pg_database_owner): syscache
 * invalidation, which also brings other sessions' committed changes.
 *
 * apikeys_internal._role_confinement_cached(role) keeps, the same way, the answer of
 * apikeys_internal._role_confinement_scan(role) (SQL, run through SPI): why the role
 * is not confined to one tenant's rows by row-level security (NULL: it is),
 * which the gate needs for mappings that apply to keys of any tenant.  That
 * answer reads privileges too, so it is also forgotten on any change to
 * schemas, functions and column privileges (pg_namespace, pg_proc,
 * pg_attribute).
 */
#include "apikeys.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/syscache.h"

#define RLS_OWNER_CACHE 8

typedef struct RoleAnswer
{
	Oid			role;
	bool		skips;
} RoleAnswer;

static RoleAnswer answers[RLS_OWNER_CACHE];
static int	nanswers = 0;

/* A reason is a sentence naming one object: names are at most 63 bytes. */
#define CONFINEMENT_REASON_MAX 512

typedef struct ConfinementAnswer
{
	Oid			role;
	bool		confined;		/* the scan returned NULL */
	char		reason[CONFINEMENT_REASON_MAX];	/* else its answer */
} ConfinementAnswer;

static ConfinementAnswer confinement[RLS_OWNER_CACHE];
static int	nconfinement = 0;
static bool callbacks_registered = false;

/*
 * Bumped by every invalidation.  The scan reads pg_class with the snapshot
 * it started with, and is_member_of_role may take in invalidations halfway
 * (opening pg_auth_members): an answer is kept only if none came during it.
 */
static uint64 answers_generation = 0;

/* Syscache callback: forget every kept answer of both caches. */
static void
forget_answers(Datum arg, int cacheid, uint32 hashvalue)
{
	nanswers = 0;
	nconfinement = 0;
	answers_generation++;
}

/* Register forget_answers() for every catalog the answers depend on, once. */
static void
register_callbacks(void)
{
	if (callbacks_registered)
		return;
	CacheRegisterSyscacheCallback(RELOID, forget_answers, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMMEMROLE, forget_answers, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, forget_answers, (Datum) 0);
	CacheRegisterSyscacheCallback(DATABASEOID, forget_answers, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, forget_answers, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, forget_answers, (Datum) 0);
	CacheRegisterSyscacheCallback(ATTNUM, forget_answers, (Datum) 0);
	callbacks_registered = true;
}

/* Does role own, or may it become the owner of, an RLS table not forced? */
static bool
scan_pg_class(Oid role)
{
	Relation	rel = table_open(RelationRelationId, AccessShareLock);
	SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	HeapTuple	tuple;
	bool		skips = false;

	while (!skips && HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_class c = (Form_pg_class) GETSTRUCT(tuple);

		skips = c->relrowsecurity && !c->relforcerowsecurity &&
			is_member_of_role(role, c->relowner);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return skips;
}

/*
 * apikeys_internal._role_skips_rls(role oid) -> boolean: the answer of scan_pg_class,
 * kept per backend.
 */
PG_FUNCTION_INFO_V1(apikeys_role_skips_rls);
Datum
apikeys_role_skips_rls(PG_FUNCTION_ARGS)
{
	Oid			role = PG_GETARG_OID(0);
	uint64		generation;
	bool		skips;

	register_callbacks();
	for (int i = 0; i < nanswers; i++)
		if (answers[i].role == role)
			PG_RETURN_BOOL(answers[i].skips);

	generation = answers_generation;
	skips = scan_pg_class(role);
	if (generation == answers_generation && nanswers < RLS_OWNER_CACHE)
	{
		answers[nanswers].role = role;
		answers[nanswers].skips = skips;
		nanswers++;
	}
	PG_RETURN_BOOL(skips);
}

/*
 * Run apikeys_internal._role_confinement_scan(role) through SPI; store its answer in
 * *out.  The plan is kept: the statement is schema-qualified and the scan
 * pins its search_path.
 */
static void
scan_confinement(Oid role, ConfinementAnswer *out)
{
	static SPIPlanPtr plans[2];
	static const char *const sql[2] = {
		[APIKEYS_HELPER_1_1] = "SELECT apikeys_internal._role_confinement_scan($1)",
		[APIKEYS_HELPER_1_0] = "SELECT apikeys._role_confinement_scan($1)",
	};
	Oid			argtypes[1] = {OIDOID};
	int			v = apikeys_helper_version("_role_confinement_scan", 1, argtypes);
	Datum		values[1];
	bool		isnull;
	Datum		d;

	values[0] = ObjectIdGetDatum(role);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	apikeys_spi_run(&plans[v], sql[v], 1, argtypes, values, NULL, SPI_OK_SELECT);
	Assert(SPI_processed == 1);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	out->role = role;
	out->confined = isnull;
	out->reason[0] = '\0';
	if (!isnull)
		strlcpy(out->reason, TextDatumGetCString(d), CONFINEMENT_REASON_MAX);
	SPI_finish();
}

/*
 * apikeys_internal._role_confinement_cached(role oid) -> text: why role is not
 * confined to one tenant's rows (NULL: it is), kept per backend like the
 * answers of _role_skips_rls, and kept only if no invalidation came during
 * the scan.
 */
PG_FUNCTION_INFO_V1(apikeys_role_confinement_cached);
Datum
apikeys_role_confinement_cached(PG_FUNCTION_ARGS)
{
	Oid			role = PG_GETARG_OID(0);
	uint64		generation;
	ConfinementAnswer a;

	register_callbacks();
	for (int i = 0; i < nconfinement; i++)
		if (confinement[i].role == role)
		{
			if (confinement[i].confined)
				PG_RETURN_NULL();
			PG_RETURN_TEXT_P(cstring_to_text(confinement[i].reason));
		}

	generation = answers_generation;
	scan_confinement(role, &a);
	if (generation == answers_generation && nconfinement < RLS_OWNER_CACHE)
		confinement[nconfinement++] = a;
	if (a.confined)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(a.reason));
}
