/*
 * tenant_context.c - the tenant a transaction acts for, and who asks.
 *
 * The binding lives in backend memory, not in a GUC, so no SET, set_config,
 * RESET, header or JWT claim can forge it.  Two ways in:
 *   - apikeys.set_tenant(tenant, actor, request_id): EXECUTE is the
 *     privilege, granted only to roles trusted to switch tenants ("trusted"
 *     binding);
 *   - apikeys.authenticate(key, ..., actor, request_id): a valid key binds
 *     its own tenant ("key" binding), and never replaces a binding to
 *     another tenant.
 * Either lasts until the end of the top-level transaction.  Savepoints undo
 * it like any other change: every subtransaction that changes the binding
 * first saves the binding it replaces on a stack (in TopTransactionContext),
 * ROLLBACK TO restores the saved one, RELEASE hands the change to the
 * parent.  RLS policies read the tenant through apikeys.current_tenant().
 *
 * The binding also carries the caller's labels for the audit: the actor and
 * request id that set_tenant()/authenticate() were given.  They are stated
 * per transaction, so a pooled connection never hands one client's labels
 * to the next; apikeys_internal._actor()/_request_id() (src/sql/30_audit.sql) read
 * them first, then settings that apikeys_internal._transaction_setting() accepts
 * only when they were set for the current transaction (SET LOCAL).
 */
#include "apikeys.h"

#include "access/detoast.h"
#include "access/xact.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"
#include "utils/memutils.h"
#include "tcop/tcopprot.h"

#include "caller.h"
#include "replication/logicalworker.h"
#include "tenant_context.h"

/* Labels (actor, request id): characters, and the bytes they may take. */
#define LABEL_MAX_CHARS 200
#define LABEL_MAX_BYTES (LABEL_MAX_CHARS * MAX_MULTIBYTE_CHAR_LEN)

typedef struct Binding
{
	char		tenant[TENANT_ID_MAX + 1];
	TenantSource source;
	pg_uuid_t	key;
	bool		key_bound;
	/* labels: NULL or a string in TopTransactionContext, never changed */
	const char *actor;
	const char *request_id;
	Oid			binder;			/* the role that called set_tenant/authenticate */
	SubTransactionId subid;		/* the subtransaction that made it */
} Binding;

/* The binding in force.  source NONE: unbound; subid 0: never changed. */
static Binding cur = {.source = TENANT_SOURCE_NONE};

/*
 * What the open subtransactions' changes replaced, oldest first: saved[i] is
 * the binding before the first change made in a subtransaction that is
 * still open (or that was released into one that is).  Invariants: the
 * subids strictly increase from saved[0] up, and cur.subid is greater than
 * the top one's, so an aborting subtransaction owns at most the top entry.
 * The array lives in TopTransactionContext and is forgotten at the end of
 * the transaction, with the memory.
 */
static Binding *saved = NULL;
static int	n_saved = 0;
static int	max_saved = 0;

/*
 * Labels given to the apikeys.authenticate() call in progress, for
 * apikeys_bind_tenant_from_key() to take if the key is valid.  Set (NULL
 * included) by every call before it verifies, so nothing stale is taken.
 */
static const char *pending_actor = NULL;
static const char *pending_request_id = NULL;

/* Save the binding in force on the stack of replaced bindings. */
static void
binding_push(void)
{
	if (n_saved == max_saved)
	{
		int			n = max_saved == 0 ? 8 : max_saved * 2;

		if (saved == NULL)
			saved = MemoryContextAlloc(TopTransactionContext, n * sizeof(Binding));
		else
			saved = repalloc(saved, n * sizeof(Binding));
		max_saved = n;
	}
	Assert(n_saved == 0 || saved[n_saved - 1].subid < cur.subid);
	saved[n_saved++] = cur;
}

/*
 * Before a change: the first change in a subtransaction saves what it
 * replaces, in case that subtransaction is rolled back.
 */
static void
binding_changing(void)
{
	SubTransactionId subid = GetCurrentSubTransactionId();

	if (cur.subid == subid)
		return;
	Assert(cur.subid < subid);
	binding_push();
	cur.subid = subid;
}

/* End of the transaction: unbound, nothing saved, no labels. */
static void
binding_clear(void)
{
	memset(&cur, 0, sizeof(cur));
	cur.source = TENANT_SOURCE_NONE;
	/* the array went (or goes) with TopTransactionContext */
	saved = NULL;
	n_saved = max_saved = 0;
	pending_actor = pending_request_id = NULL;
}

/*
 * ROLLBACK TO a savepoint undoes a binding made after it, like any other
 * change: each aborting subtransaction that changed the binding restores the
 * binding it saved.  A released savepoint hands its binding to the parent;
 * if the parent had changed the binding too, the parent's own saved entry
 * (further down) is what its rollback must restore, so the released one's
 * goes.
 */
static void
tenant_context_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
								SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		pending_actor = pending_request_id = NULL;
	if (cur.subid != mySubid)
		return;
	Assert(n_saved > 0 && saved[n_saved - 1].subid < mySubid);
	if (event == SUBXACT_EVENT_ABORT_SUB)
		cur = saved[--n_saved];
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		cur.subid = parentSubid;
		if (saved[n_saved - 1].subid == parentSubid)
			n_saved--;
	}
}

static void
tenant_context_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			binding_clear();
			break;
		default:
			break;
	}
}

void
apikeys_tenant_context_init(void)
{
	RegisterXactCallback(tenant_context_xact_callback, NULL);
	RegisterSubXactCallback(tenant_context_subxact_callback, NULL);
}

/*
 * Argument argno of the call, an actor or request id label, checked: NULL,
 * or 1 to 200 characters without control characters.  The error never
 * contains the value; an oversized one is refused before it is detoasted.
 */
static char *
check_label(FunctionCallInfo fcinfo, int argno, const char *what)
{
	text	   *t = NULL;
	const char *s;
	int			len;

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return NULL;
	if (toast_raw_datum_size(PG_GETARG_DATUM(argno)) > VARHDRSZ + LABEL_MAX_BYTES)
		len = -1;
	else
	{
		t = PG_GETARG_TEXT_PP(argno);
		s = VARDATA_ANY(t);
		len = VARSIZE_ANY_EXHDR(t);
		if (len > 0 && pg_mbstrlen_with_len(s, len) > LABEL_MAX_CHARS)
			len = -1;
		for (int i = 0; i < len; i++)
			if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
				len = -1;
	}
	if (len <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_%s: %s must be 1 to %d characters without control characters",
						what, what, LABEL_MAX_CHARS),
				 errhint("Pass NULL to state no %s.", what)));
	return text_to_cstring(t);
}

/* Label slot := value (NULL: keep what the transaction already states). */
static void
set_label(const char **slot, const char *value)
{
	if (value != NULL)
		*slot = MemoryContextStrdup(TopTransactionContext, value);
}

/* set_tenant and authenticate run with their caller's rights: GetUserId() is the binder. */
static void
bind(const char *tenant, size_t len, TenantSource source)
{
	Assert(len <= TENANT_ID_MAX);
	binding_changing();
	memcpy(cur.tenant, tenant, len);
	cur.tenant[len] = '\0';
	cur.source = source;
	cur.binder = GetUserId();
}

/*
 * The tenant the binding lets the acting role act for, or NULL.  The binding
 * belongs to the role that made it and to whatever runs with the rights that
 * role holds in this session (SET ROLE, PostgREST's role switch), not to
 * another role's SECURITY DEFINER code that happens to run in the same
 * transaction: a tenant admin's function called by a trusted switcher, or
 * by a PostgREST request bound to another tenant, must not borrow it.
 * trusted_only: only a set_tenant() binding counts (management).
 */
const char *
apikeys_binding_for_caller(bool trusted_only)
{
	Oid			role;
	bool		in_definer;

	if (cur.source == TENANT_SOURCE_NONE ||
		(trusted_only && cur.source != TENANT_SOURCE_TRUSTED))
		return NULL;
	apikeys_caller(&role, &in_definer);
	if (in_definer && role != cur.binder)
		return NULL;
	return cur.tenant;
}

/* apikeys_internal._binding_for_caller(trusted_only boolean): the SQL form of the above. */
PG_FUNCTION_INFO_V1(apikeys_binding_for_caller_sql);
Datum
apikeys_binding_for_caller_sql(PG_FUNCTION_ARGS)
{
	const char *t = apikeys_binding_for_caller(PG_GETARG_BOOL(0));

	if (t == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(t));
}

/*
 * Called by apikeys.authenticate() for a valid key.  A transaction already
 * bound to another tenant stays bound to it: that is an error, not a switch.
 * The key, and the labels given to authenticate(), join the binding.
 */
void
apikeys_bind_tenant_from_key(text *tenant, const pg_uuid_t *key_id)
{
	const char *t = VARDATA_ANY(tenant);
	size_t		len = VARSIZE_ANY_EXHDR(tenant);

	if (cur.source != TENANT_SOURCE_NONE &&
		(strlen(cur.tenant) != len || memcmp(cur.tenant, t, len) != 0))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tenant_context_conflict: this transaction already acts for another tenant"),
				 errdetail("A key of one tenant cannot switch a transaction bound to another."),
				 errhint("Authenticate each request in its own transaction.")));
	if (len > TENANT_ID_MAX)
		elog(ERROR, "tenant id too long");
	if (cur.source == TENANT_SOURCE_NONE)
		bind(t, len, TENANT_SOURCE_KEY);
	else
		binding_changing();
	memcpy(&cur.key, key_id, sizeof(pg_uuid_t));
	cur.key_bound = true;
	set_label(&cur.actor, pending_actor);
	set_label(&cur.request_id, pending_request_id);
}

/* verify.c: apikey_verify that binds the tenant of a valid key */
extern Datum apikeys_authenticate(PG_FUNCTION_ARGS);

/*
 * apikeys.authenticate(api_key, required_scopes, client_addr, actor,
 * request_id): the labels are checked first (a bad one is the caller's
 * error, whatever the key), then verify.c verifies with the first three
 * arguments and, for a valid key, binds its tenant with these labels.
 */
PG_FUNCTION_INFO_V1(apikeys_authenticate_labelled);
Datum
apikeys_authenticate_labelled(PG_FUNCTION_ARGS)
{
	const char *actor;
	const char *request_id;
	Datum		result;

	/* before verifying: a maintenance run charges no limit and binds nothing */
	apikeys_refuse_restricted("apikeys.authenticate");
	actor = check_label(fcinfo, 3, "actor");
	request_id = check_label(fcinfo, 4, "request_id");

	pending_actor = actor;
	pending_request_id = request_id;
	result = apikeys_authenticate(fcinfo);
	pending_actor = pending_request_id = NULL;
	return result;
}

PG_FUNCTION_INFO_V1(apikeys_current_key_id);
Datum
apikeys_current_key_id(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *result;

	if (!cur.key_bound)
		PG_RETURN_NULL();
	result = palloc(sizeof(pg_uuid_t));
	memcpy(result, &cur.key, sizeof(pg_uuid_t));
	PG_RETURN_UUID_P(result);
}

PG_FUNCTION_INFO_V1(apikeys_current_tenant);
Datum
apikeys_current_tenant(PG_FUNCTION_ARGS)
{
	if (cur.source == TENANT_SOURCE_NONE)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(cur.tenant));
}

PG_FUNCTION_INFO_V1(apikeys_context_source);
Datum
apikeys_context_source(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"none", "trusted", "key"};

	PG_RETURN_TEXT_P(cstring_to_text(names[cur.source]));
}

/* The actor (or, with request_id, the request id) this transaction stated, or NULL. */
const char *
apikeys_context_label(bool request_id)
{
	return request_id ? cur.request_id : cur.actor;
}

/* apikeys_internal._context_actor(): the actor this transaction stated, or NULL. */
PG_FUNCTION_INFO_V1(apikeys_context_actor);
Datum
apikeys_context_actor(PG_FUNCTION_ARGS)
{
	if (cur.actor == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(cur.actor));
}

/* apikeys_internal._context_request_id(): the request id this transaction stated, or NULL. */
PG_FUNCTION_INFO_V1(apikeys_context_request_id);
Datum
apikeys_context_request_id(PG_FUNCTION_ARGS)
{
	if (cur.request_id == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(cur.request_id));
}

/*
 * apikeys.set_tenant(tenant text, actor text, request_id text): trusted
 * binding (EXECUTE is the gate), with the caller's labels.
 */
PG_FUNCTION_INFO_V1(apikeys_set_tenant);
Datum
apikeys_set_tenant(PG_FUNCTION_ARGS)
{
	text	   *tenant = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	char	   *t;
	const char *actor;
	const char *request_id;

	if (!IsTransactionBlock())
		ereport(WARNING,
				(errcode(ERRCODE_NO_ACTIVE_SQL_TRANSACTION),
				 errmsg("set_tenant outside a transaction block lasts only for this statement"),
				 errhint("Call it after BEGIN.")));
	apikeys_refuse_restricted("apikeys.set_tenant");
	t = apikeys_check_tenant_id(tenant);
	actor = check_label(fcinfo, 1, "actor");
	request_id = check_label(fcinfo, 2, "request_id");
	bind(t, strlen(t), TENANT_SOURCE_TRUSTED);
	set_label(&cur.actor, actor);
	set_label(&cur.request_id, request_id);
	PG_RETURN_TEXT_P(cstring_to_text(t));
}

/* The setting called name (placeholders included), or NULL. */
static struct config_generic *
find_setting(const char *name)
{
#if PG_VERSION_NUM >= 160000
	return find_option(name, false, true, DEBUG1);
#else
	struct config_generic **vars = get_guc_variables();
	int			n = GetNumConfigOptions();

	for (int i = 0; i < n; i++)
		if (pg_strcasecmp(vars[i]->name, name) == 0)
			return vars[i];
	return NULL;
#endif
}

/*
 * Was the current value of setting g set for the current transaction only?
 * PostgreSQL's own record says: a SET LOCAL (or set_config(..., true)), or
 * a function's SET clause, pushes an entry on the setting's stack that the
 * end of the transaction (or of the function) pops to restore the prior
 * value, and the top entry's state tells whether the latest change at its
 * level was local (GUC_LOCAL, GUC_SET_LOCAL), a function's (GUC_SAVE) or a
 * plain SET that outlives the transaction (GUC_SET).  No entry: the value
 * comes from before this transaction (an earlier SET, ALTER ROLE/DATABASE
 * ... SET, the server configuration).
 */
static bool
set_for_this_transaction(struct config_generic *g)
{
	return g->stack != NULL && g->stack->state != GUC_SET;
}

/*
 * The value of setting name (palloc'd) when it was set for this transaction
 * and is at most max_bytes long, else NULL (apikeys_internal._transaction_setting()).
 * A non-empty value ignored gives a WARNING that names the setting, never
 * its value: a session's value in a pooled connection may be another
 * client's.  Superuser-only settings read as NULL.
 */
char *
apikeys_transaction_setting_value(const char *name, int max_bytes)
{
	const char *value = GetConfigOption(name, true, false);
	struct config_generic *g;

	/* absent or empty, the usual case: no need to find the setting's record */
	if (value == NULL || value[0] == '\0')
		return NULL;
	g = find_setting(name);
	if (g == NULL || (g->flags & GUC_SUPERUSER_ONLY) || g->vartype != PGC_STRING)
		return NULL;
	if (!set_for_this_transaction(g))
	{
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("apikeys_setting_ignored: %s is not set for this transaction", g->name),
				 errdetail("A value set for the session (SET, not SET LOCAL) may be another client's in a pooled connection; audit rows and refusals ignore it."),
				 errhint("Use SET LOCAL or set_config(..., true), or pass actor and request_id to apikeys.set_tenant() or apikeys.authenticate().")));
		return NULL;
	}
	if (strlen(value) > (size_t) Max(max_bytes, 0))
	{
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("apikeys_setting_ignored: %s is longer than %d bytes", g->name, max_bytes)));
		return NULL;
	}
	return pstrdup(value);
}

/* apikeys_internal._transaction_setting(name text, max_bytes integer): the SQL form. */
PG_FUNCTION_INFO_V1(apikeys_transaction_setting);
Datum
apikeys_transaction_setting(PG_FUNCTION_ARGS)
{
	char	   *value;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	value = apikeys_transaction_setting_value(text_to_cstring(PG_GETARG_TEXT_PP(0)),
											  PG_GETARG_INT32(1));
	if (value == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(value));
}

/*
 * True while the top-level statement is pg_restore loading one of the
 * extension's tables: "COPY apikeys.<table> ... FROM stdin" sent by a
 * superuser.  Restored rows are history, not new changes, so the audit
 * triggers let them pass as they are (an audit row keeps its chain fields).
 *
 * The statement text alone is not proof: anyone can write
 * COPY (SELECT apikeys.apikey_revoke(...)) TO STDOUT with " FROM stdin" in
 * a literal.  So the session's role must be a superuser (who can silence
 * triggers anyway), and the text must start with a plain COPY into our
 * schema.
 *
 * A logical replication apply worker counts too: the rows it writes are
 * the publisher's changes (audited there), and audit rows it applies keep
 * their chain fields.
 */
bool
apikeys_is_bulk_loading(void)
{
	static const char copy_into[] = "copy apikeys.";
	const char *q = debug_query_string;

	/* logical replication applies what the publisher did, and audited */
	if (IsLogicalWorker())
		return true;

	/* never inside a management call or a maintenance run of someone's code */
	if (q == NULL || !superuser_arg(GetOuterUserId()) ||
		apikeys_in_entry_point() || InSecurityRestrictedOperation())
		return false;
	while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
		q++;
	return pg_strncasecmp(q, copy_into, sizeof(copy_into) - 1) == 0 &&
		strchr(q, ';') == strrchr(q, ';') &&
		strstr(q, " FROM stdin") != NULL;
}

/* apikeys_internal._bulk_loading(): the SQL form of apikeys_is_bulk_loading(). */
PG_FUNCTION_INFO_V1(apikeys_bulk_loading);
Datum
apikeys_bulk_loading(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(apikeys_is_bulk_loading());
}
