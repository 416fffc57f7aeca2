/*
 * caller.c - who a management call acts for, and the gate every management
 * function is entered through.
 *
 * A management function must be authorized as the role whose code makes the
 * call.  Its body is SECURITY DEFINER (it writes tables no tenant may write),
 * and inside it PostgreSQL no longer says who called: GetUserId() is the
 * extension's owner and GetOuterUserId() is the session's role, which is the
 * wrong answer whenever someone else's code runs in the session: a tenant
 * admin's SECURITY DEFINER function or trigger that a superuser calls, or an
 * index expression that ANALYZE, autovacuum or REFRESH MATERIALIZED VIEW
 * evaluates as the table's owner.
 *
 * So each public management function apikeys.<name> is a C entry point,
 * apikeys_entry(), created by apikeys_internal.publish() from its body
 * apikeys_internal.<name>.  The entry point runs with the caller's rights, so
 * GetUserId() is exactly the role whose code called it.  It
 *   - refuses the call inside a security-restricted operation (the code of a
 *     table's owner run by maintenance: it must gain nothing, not even its
 *     owner's own rights, since nobody asked for a key change there);
 *   - pushes that role on a small stack, calls the implementation with the
 *     same arguments, and pops it however the call ends;
 * and apikeys_internal._acting_role() answers the top of the stack.  No SQL can push:
 * the only way in is to call an entry point, which records the truth.
 *
 * An entry point reached from inside another one's implementation (our own
 * SECURITY DEFINER code, running as the extension's owner) keeps the outer
 * caller: the owner's rights there are ours, not the caller's.
 */
#include "apikeys.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "audit_pending.h"
#include "caller.h"

/* Deeper nesting than this is a loop in our own code. */
#define CALLER_STACK_MAX 32

/*
 * One entry per running entry point: the role it acts for, and whether that
 * role's code was running with a local user change (inside a SECURITY
 * DEFINER function, or maintenance) when it called.
 */
typedef struct Caller
{
	Oid			role;
	bool		in_definer;
} Caller;

static Caller caller_stack[CALLER_STACK_MAX];
static int	caller_depth = 0;

/* What an entry point remembers about its implementation (in fn_extra). */
typedef struct EntryTarget
{
	FmgrInfo	impl;
	Oid			impl_owner;
	char	   *name;			/* the public name, for messages */
} EntryTarget;

/*
 * Transaction end: every entry point pops what it pushed (PG_FINALLY), so
 * the stack is empty here; reset it anyway so no mistake can outlive the
 * transaction that made it.
 */
static void
caller_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		Assert(caller_depth == 0 || event == XACT_EVENT_ABORT ||
			   event == XACT_EVENT_PARALLEL_ABORT);
		caller_depth = 0;
	}
}

void
apikeys_caller_init(void)
{
	RegisterXactCallback(caller_xact_callback, NULL);
}

Oid
apikeys_acting_role(void)
{
	/*
	 * Outside any entry point only a superuser (or the owner) can be changing
	 * our tables, by hand: label it with the session's current role.
	 */
	return caller_depth > 0 ? caller_stack[caller_depth - 1].role : GetOuterUserId();
}

void
apikeys_caller(Oid *role, bool *in_definer)
{
	if (caller_depth > 0)
	{
		*role = caller_stack[caller_depth - 1].role;
		*in_definer = caller_stack[caller_depth - 1].in_definer;
	}
	else
	{
		*role = GetUserId();
		*in_definer = InLocalUserIdChange();
	}
}

bool
apikeys_in_entry_point(void)
{
	return caller_depth > 0;
}

/*
 * Refuse what must not run inside a security-restricted operation, leaving
 * the refusal in the server log like every other one (apikeys_internal._deny).
 */
void
apikeys_refuse_restricted(const char *what)
{
	static const Oid deny_argtypes[6] = {TEXTOID, TEXTOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID};
	Oid			deny_oid;
	char	   *msg;

	if (!InSecurityRestrictedOperation())
		return;

	msg = psprintf("permission_denied: %s cannot run inside a security-restricted operation",
				   what);
	deny_oid = apikeys_helper_oid("_deny", 6, deny_argtypes);
	if (OidIsValid(deny_oid))
	{
		/* _deny(action, tenant NULL, key_id NULL, sqlstate, message, hint) */
		FmgrInfo	flinfo;
		LOCAL_FCINFO(deny, 6);

		fmgr_info(deny_oid, &flinfo);
		InitFunctionCallInfoData(*deny, &flinfo, 6, InvalidOid, NULL, NULL);
		deny->args[0].value = CStringGetTextDatum(what);
		deny->args[1].isnull = deny->args[2].isnull = true;
		deny->args[0].isnull = deny->args[3].isnull = deny->args[4].isnull =
			deny->args[5].isnull = false;
		deny->args[3].value = CStringGetTextDatum("42501");
		deny->args[4].value = CStringGetTextDatum(msg);
		deny->args[5].value = CStringGetTextDatum("ANALYZE, VACUUM, CREATE INDEX, REFRESH MATERIALIZED VIEW"
												  " and autovacuum run a table owner's code; apikeys"
												  " refuses key and vault management there.");
		FunctionCallInvoke(deny);
	}
	/* _deny raises; this is reached only without the SQL objects */
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s", msg)));
}

/*
 * Find apikeys_internal.<name>, the body of the entry point being called:
 * same name, same argument types.
 */
static pg_noinline EntryTarget *
entry_target(FmgrInfo *flinfo)
{
	EntryTarget *t = (EntryTarget *) flinfo->fn_extra;
	HeapTuple	tup;
	Form_pg_proc proc;
	oidvector  *args;
	Oid			impl_nsp = get_namespace_oid(APIKEYS_INTERNAL_SCHEMA, false);
	HeapTuple	impl_tup;

	if (t != NULL)
		return t;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(flinfo->fn_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", flinfo->fn_oid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	args = &proc->proargtypes;
	impl_tup = SearchSysCache3(PROCNAMEARGSNSP, NameGetDatum(&proc->proname),
							   PointerGetDatum(args), ObjectIdGetDatum(impl_nsp));
	if (!HeapTupleIsValid(impl_tup))
		elog(ERROR, "apikeys: entry point %s has no body in schema %s",
			 NameStr(proc->proname), APIKEYS_INTERNAL_SCHEMA);

	t = MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(EntryTarget));
	t->name = MemoryContextStrdup(flinfo->fn_mcxt, NameStr(proc->proname));
	t->impl_owner = ((Form_pg_proc) GETSTRUCT(impl_tup))->proowner;
	fmgr_info_cxt(((Form_pg_proc) GETSTRUCT(impl_tup))->oid, &t->impl, flinfo->fn_mcxt);
	t->impl.fn_expr = flinfo->fn_expr;
	ReleaseSysCache(impl_tup);
	ReleaseSysCache(tup);
	flinfo->fn_extra = t;
	return t;
}

/*
 * apikeys_entry: the body of every published management function.  Calls
 * its implementation with the same arguments, acting for the caller.
 */
PG_FUNCTION_INFO_V1(apikeys_entry);
Datum
apikeys_entry(PG_FUNCTION_ARGS)
{
	EntryTarget *t = entry_target(fcinfo->flinfo);
	Caller		caller = {GetUserId(), InLocalUserIdChange()};
	int			nargs = PG_NARGS();
	volatile Datum result = (Datum) 0;
	int			depth_before = caller_depth;

	/* our own definer code calling another entry point keeps its caller */
	if (caller_depth > 0 && caller.role == t->impl_owner && caller.in_definer)
		caller = caller_stack[caller_depth - 1];

	if (caller_depth >= CALLER_STACK_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("apikeys: management calls nested more than %d deep", CALLER_STACK_MAX)));
	caller_stack[caller_depth++] = caller;
	Assert(caller_depth <= CALLER_STACK_MAX);

	PG_TRY();
	{
		char		what[NAMEDATALEN + 16];
		bool		null_arg = false;

		snprintf(what, sizeof(what), "apikeys.%s", t->name);
		apikeys_refuse_restricted(what);

		for (int i = 0; i < nargs; i++)
			null_arg |= PG_ARGISNULL(i);
		if (null_arg && t->impl.fn_strict)
			fcinfo->isnull = true;	/* what calling a STRICT function does */
		else
		{
			FunctionCallInfo inner = palloc(SizeForFunctionCallInfo(nargs));

			InitFunctionCallInfoData(*inner, &t->impl, nargs, fcinfo->fncollation,
									 fcinfo->context, fcinfo->resultinfo);
			for (int i = 0; i < nargs; i++)
				inner->args[i] = fcinfo->args[i];
			result = FunctionCallInvoke(inner);
			fcinfo->isnull = inner->isnull;
			/*
			 * The audit rows the call's changes held are written now, as the
			 * audit table's owner (the triggers that held them run as it):
			 * their columns were taken when they were held.
			 */
			if (audit_held_count() > 0)
			{
				Oid			user;
				int			sec;

				GetUserIdAndSecContext(&user, &sec);
				SetUserIdAndSecContext(t->impl_owner, sec | SECURITY_LOCAL_USERID_CHANGE);
				apikeys_audit_flush_held();
				SetUserIdAndSecContext(user, sec);	/* an error: the abort restores it */
			}
			pfree(inner);
		}
	}
	PG_FINALLY();
	{
		caller_depth = depth_before;
	}
	PG_END_TRY();
	return result;
}

/* apikeys_internal._acting_role(): the role the current management call acts for. */
PG_FUNCTION_INFO_V1(apikeys_acting_role_sql);
Datum
apikeys_acting_role_sql(PG_FUNCTION_ARGS)
{
	Name		result = (Name) palloc0(NAMEDATALEN);

	namestrcpy(result, GetUserNameFromId(apikeys_acting_role(), false));
	PG_RETURN_NAME(result);
}

/*
 * apikeys_internal._is_superuser(r name): pg_roles.rolsuper of role r, NULL if there
 * is no such role.  In C: as a SQL function with a SET clause it could not
 * be inlined and was planned again in every transaction that called it.
 */
PG_FUNCTION_INFO_V1(apikeys_is_superuser_1_1);
Datum
apikeys_is_superuser_1_1(PG_FUNCTION_ARGS)
{
	HeapTuple	tup = SearchSysCache1(AUTHNAME, PG_GETARG_DATUM(0));
	bool		result;

	if (!HeapTupleIsValid(tup))
		PG_RETURN_NULL();
	result = ((Form_pg_authid) GETSTRUCT(tup))->rolsuper;
	ReleaseSysCache(tup);
	PG_RETURN_BOOL(result);
}
