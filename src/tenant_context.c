/*
 * tenant_context.c - the tenant a transaction acts for.
 *
 * The binding lives in backend memory, not in a GUC, so no SET, set_config,
 * RESET, header or JWT claim can forge it.  Two ways in:
 *   - apikeys.set_tenant(tenant): EXECUTE is the privilege, granted only to
 *     roles trusted to switch tenants ("trusted" binding);
 *   - apikeys.authenticate(key, ...): a valid key binds its own tenant
 *     ("key" binding), and never replaces a binding to another tenant.
 * Either lasts until the end of the top-level transaction, or of the
 * savepoint it was made after if that is rolled back.  RLS policies read it
 * through apikeys.current_tenant().
 */
#include "apikeys.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "tcop/tcopprot.h"

#include "caller.h"
#include "tenant_context.h"

typedef struct Binding
{
	char		tenant[TENANT_ID_MAX + 1];
	TenantSource source;
	pg_uuid_t	key;
	bool		key_bound;
	SubTransactionId subid;		/* the subtransaction that made it */
} Binding;

static Binding cur = {.source = TENANT_SOURCE_NONE};
static Binding prev = {.source = TENANT_SOURCE_NONE};	/* what the last change replaced */

/* Before a change: remember what it replaces, in case its subtransaction aborts. */
static void
binding_changing(void)
{
	SubTransactionId subid = GetCurrentSubTransactionId();

	if (cur.subid != subid)
	{
		prev = cur;
		cur.subid = subid;
	}
}

static void
binding_clear(void)
{
	memset(&cur, 0, sizeof(cur));
	cur.source = TENANT_SOURCE_NONE;
	prev = cur;
}

/*
 * ROLLBACK TO a savepoint undoes a binding made after it, like any other
 * change; a released savepoint hands its binding to the parent.  One level
 * is remembered: a binding changed again in a deeper subtransaction that
 * aborts returns to the state before the outer change.
 */
static void
tenant_context_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
								SubTransactionId parentSubid, void *arg)
{
	if (cur.subid != mySubid)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		cur = prev;
		if (cur.subid == mySubid)
			binding_clear();
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		cur.subid = parentSubid;
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

const char *
apikeys_bound_tenant(TenantSource *source)
{
	if (source)
		*source = cur.source;
	return cur.source == TENANT_SOURCE_NONE ? NULL : cur.tenant;
}

static void
bind(const char *tenant, size_t len, TenantSource source)
{
	Assert(len <= TENANT_ID_MAX);
	binding_changing();
	memcpy(cur.tenant, tenant, len);
	cur.tenant[len] = '\0';
	cur.source = source;
}

/*
 * Called by apikeys.authenticate() for a valid key.  A transaction already
 * bound to another tenant stays bound to it: that is an error, not a switch.
 */
void
apikeys_bind_tenant_from_key(text *tenant, const pg_uuid_t *key_id)
{
	const char *t = VARDATA_ANY(tenant);
	size_t		len = VARSIZE_ANY_EXHDR(tenant);

	apikeys_refuse_restricted("apikeys.authenticate");
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

/* apikeys.set_tenant(tenant text): trusted binding (EXECUTE is the gate). */
PG_FUNCTION_INFO_V1(apikeys_set_tenant);
Datum
apikeys_set_tenant(PG_FUNCTION_ARGS)
{
	text	   *tenant = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	char	   *t;

	if (!IsTransactionBlock())
		ereport(WARNING,
				(errcode(ERRCODE_NO_ACTIVE_SQL_TRANSACTION),
				 errmsg("set_tenant outside a transaction block lasts only for this statement"),
				 errhint("Call it after BEGIN.")));
	apikeys_refuse_restricted("apikeys.set_tenant");
	t = apikeys_check_tenant_id(tenant);
	bind(t, strlen(t), TENANT_SOURCE_TRUSTED);
	PG_RETURN_TEXT_P(cstring_to_text(t));
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
 */
PG_FUNCTION_INFO_V1(apikeys_bulk_loading);
Datum
apikeys_bulk_loading(PG_FUNCTION_ARGS)
{
	static const char copy_into[] = "copy apikeys.";
	const char *q = debug_query_string;

	/* never inside a management call or a maintenance run of someone's code */
	if (q == NULL || !superuser_arg(GetOuterUserId()) ||
		apikeys_in_entry_point() || InSecurityRestrictedOperation())
		PG_RETURN_BOOL(false);
	while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
		q++;
	PG_RETURN_BOOL(pg_strncasecmp(q, copy_into, sizeof(copy_into) - 1) == 0 &&
				   strchr(q, ';') == strrchr(q, ';') &&
				   strstr(q, " FROM stdin") != NULL);
}
