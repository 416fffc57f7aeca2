/*
 * rls_owner.c - apikeys._role_skips_rls(role): may this role run queries
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
 */
#include "apikeys.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_class.h"
#include "utils/acl.h"
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
static bool callbacks_registered = false;

/*
 * Bumped by every invalidation.  The scan reads pg_class with the snapshot
 * it started with, and is_member_of_role may take in invalidations halfway
 * (opening pg_auth_members): an answer is kept only if none came during it.
 */
static uint64 answers_generation = 0;

static void
forget_answers(Datum arg, int cacheid, uint32 hashvalue)
{
	nanswers = 0;
	answers_generation++;
}

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

PG_FUNCTION_INFO_V1(apikeys_role_skips_rls);
Datum
apikeys_role_skips_rls(PG_FUNCTION_ARGS)
{
	Oid			role = PG_GETARG_OID(0);
	uint64		generation;
	bool		skips;

	if (!callbacks_registered)
	{
		CacheRegisterSyscacheCallback(RELOID, forget_answers, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMMEMROLE, forget_answers, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, forget_answers, (Datum) 0);
		CacheRegisterSyscacheCallback(DATABASEOID, forget_answers, (Datum) 0);
		callbacks_registered = true;
	}
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
