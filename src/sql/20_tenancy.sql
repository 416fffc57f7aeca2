------------------------------------------------------------------------------
-- Tenancy: who may act for which tenant
------------------------------------------------------------------------------

-- Roles mapped to tenants.  tenant NULL: every tenant (a global admin).
-- 'manage' may create/rotate/revoke/... keys and read them and their audit;
-- 'audit' may only read keys and audit rows.
CREATE TABLE apikeys.role_tenant (
    role_name  name NOT NULL,
    tenant     text COLLATE "C" REFERENCES apikeys.tenant (tenant) ON DELETE CASCADE,
    privilege  text NOT NULL CHECK (privilege IN ('manage', 'audit')),
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by name NOT NULL DEFAULT current_user
);
CREATE UNIQUE INDEX role_tenant_uniq ON apikeys.role_tenant (role_name, (coalesce(tenant, '')), privilege);
SELECT pg_catalog.pg_extension_config_dump('apikeys.role_tenant', '');
COMMENT ON TABLE apikeys.role_tenant IS 'Which roles manage or audit which tenants (tenant NULL: all). Maintained by grant_tenant()/revoke_tenant().';

CREATE FUNCTION apikeys.current_tenant() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_current_tenant';
COMMENT ON FUNCTION apikeys.current_tenant IS 'Tenant this transaction is bound to (set_tenant or authenticate), or NULL. Not settable by SET/set_config.';
CREATE FUNCTION apikeys.current_key_id() RETURNS uuid
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_current_key_id';
COMMENT ON FUNCTION apikeys.current_key_id IS 'Key that authenticate() accepted in this transaction, or NULL.';
CREATE FUNCTION apikeys.set_tenant(tenant text, actor text DEFAULT NULL, request_id text DEFAULT NULL)
    RETURNS text
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_set_tenant';
COMMENT ON FUNCTION apikeys.set_tenant IS 'Bind this transaction to a tenant (and label its audit with actor/request_id). Grant EXECUTE only to roles trusted to switch tenants.';
-- The tenant the transaction's binding lets the acting role act for (only a
-- set_tenant() binding when trusted_only), or NULL: a binding serves the role
-- that made it, not another role's SECURITY DEFINER code (tenant_context.c).
CREATE FUNCTION apikeys_internal._binding_for_caller(trusted_only boolean) RETURNS text
    LANGUAGE C STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_binding_for_caller_sql';
CREATE FUNCTION apikeys_internal._context_source() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_context_source';
-- The labels set_tenant()/authenticate() bound to this transaction, or NULL.
CREATE FUNCTION apikeys_internal._context_actor() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_context_actor';
CREATE FUNCTION apikeys_internal._context_request_id() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_context_request_id';
-- A setting's value if it was set for this transaction (SET LOCAL,
-- set_config(..., true), a function's SET clause) and is at most max_bytes
-- long; else NULL, with a WARNING when a value was ignored.
CREATE FUNCTION apikeys_internal._transaction_setting(name text, max_bytes integer) RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_transaction_setting';
CREATE FUNCTION apikeys_internal._bulk_loading() RETURNS boolean
    LANGUAGE C VOLATILE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_bulk_loading';

CREATE FUNCTION apikeys.authenticate(
    api_key         text,
    required_scopes text[] DEFAULT NULL,
    client_addr     inet DEFAULT NULL,
    actor           text DEFAULT NULL,
    request_id      text DEFAULT NULL)
    RETURNS apikeys.verification
    LANGUAGE C VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'apikeys_authenticate_labelled';
COMMENT ON FUNCTION apikeys.authenticate IS 'apikey_verify, and on a valid key bind its tenant (and actor/request_id labels) to this transaction (RLS then shows that tenant only).';

-- pg_roles.rolsuper of role r; NULL if there is no such role.
-- (C: a SQL function with a SET clause is planned again in every transaction.)
CREATE FUNCTION apikeys_internal._is_superuser(r name) RETURNS boolean
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_is_superuser_1_1';

-- Does role r hold `need` ('read', 'audit' or 'manage') on tenant t through role_tenant?
-- (t NULL: a grant on every tenant.)
CREATE FUNCTION apikeys_internal._role_may(r name, t text, need text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1
          FROM apikeys.role_tenant g
          JOIN pg_catalog.pg_roles ro ON ro.rolname OPERATOR(pg_catalog.=) g.role_name
         WHERE (g.tenant IS NULL OR g.tenant OPERATOR(pg_catalog.=) t)
           AND (need OPERATOR(pg_catalog.<>) 'manage' OR g.privilege OPERATOR(pg_catalog.=) 'manage')
           AND pg_catalog.pg_has_role(r, ro.oid, 'USAGE'))
$$;

-- The tenants whose rows the role whose code runs may read.  need 'read'
-- (keys, tenants, usage): its mappings of either privilege and the tenant its
-- transaction is bound to; 'audit' (audit rows): its mappings only, never a
-- key-bound transaction.  NULL: every tenant (superusers, global mappings).
-- Published (below) so that it answers for the caller, whoever owns the
-- code; row-level policies ask it once per query, and the tenant-facing
-- readers (apikeys.keys, apikeys.tenants, apikeys.audit_log ...) read only
-- these tenants' rows, so no other tenant's row is scanned on its behalf.
CREATE FUNCTION apikeys_internal.visible_tenants(need text) RETURNS text[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name := apikeys_internal._acting_role();
BEGIN
    IF apikeys_internal._is_superuser(r) OR apikeys_internal._role_may(r, NULL, 'read') THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY(
        SELECT g.tenant
          FROM apikeys.role_tenant g
          JOIN pg_catalog.pg_roles ro ON ro.rolname OPERATOR(pg_catalog.=) g.role_name
         WHERE g.tenant IS NOT NULL AND pg_catalog.pg_has_role(r, ro.oid, 'USAGE')
        UNION
        SELECT apikeys_internal._binding_for_caller(false)
         WHERE need OPERATOR(pg_catalog.=) 'read' AND apikeys_internal._binding_for_caller(false) IS NOT NULL
        ORDER BY 1);
END;
$$;
SELECT apikeys_internal.publish('visible_tenants', 'Tenants the calling role may read (NULL: every tenant); answers only about the caller.');

-- Record a refused management attempt in the server log (it survives the
-- rollback that the error causes), then raise.
CREATE FUNCTION apikeys_internal._deny(p_action text, p_tenant text, p_key_id uuid,
                              p_sqlstate text, p_message text, p_hint text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE LOG USING MESSAGE = 'apikeys_audit_denied ' || jsonb_build_object(
        'at', clock_timestamp(), 'action', p_action, 'outcome', 'denied',
        'error', split_part(p_message, ':', 1), 'sqlstate', p_sqlstate,
        'tenant', p_tenant, 'key_id', p_key_id,
        'db_role', apikeys_internal._acting_role(), 'session_role', session_user,
        'actor', apikeys_internal._actor(), 'request_id', apikeys_internal._request_id(),
        'client_addr', inet_client_addr(),
        'application_name', current_setting('application_name'),
        'txid', pg_current_xact_id_if_assigned())::text;
    IF p_hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message;
    END IF;
    RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message, HINT = p_hint;
END;
$$;

-- May the acting role manage tenant p_tenant (NULL: manage tenants)?  The
-- role whose code called the entry point (apikeys_internal._acting_role(): inside a
-- tenant admin's SECURITY DEFINER function that is the tenant admin, whoever
-- runs the session) may if it is a superuser, is mapped to the tenant with
-- 'manage' (or to every tenant), or its transaction is bound to the tenant
-- by set_tenant() (apikeys_internal._binding_for_caller).  A question, never an error: callers that must not tell
-- "not yours" from "no such thing" raise one error for both.
CREATE FUNCTION apikeys_internal._may_manage(p_tenant text) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name := apikeys_internal._acting_role();
BEGIN
    IF apikeys_internal._is_superuser(r) THEN
        RETURN true;
    END IF;
    IF p_tenant IS NULL THEN
        RETURN apikeys_internal._role_may(r, NULL, 'manage');
    END IF;
    RETURN coalesce(apikeys_internal._binding_for_caller(true) OPERATOR(pg_catalog.=) p_tenant, false)
        OR apikeys_internal._role_may(r, p_tenant, 'manage');
END;
$$;

-- Raise (and log) unless the acting role may manage p_tenant.  With a key or
-- secret id the refusal reads as key_not_found, so other tenants' ids stay
-- unseen (apikeys_internal._lock_key() looks keys up that way).
CREATE FUNCTION apikeys_internal._authorize(p_tenant text, p_action text, p_key_id uuid DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF apikeys_internal._may_manage(p_tenant) THEN
        RETURN;
    END IF;
    IF p_key_id IS NOT NULL THEN
        PERFORM apikeys_internal._deny(p_action, p_tenant, p_key_id, '42704',
            format('key_not_found: no API key with id %s', p_key_id));
    ELSIF p_tenant IS NULL THEN
        PERFORM apikeys_internal._deny(p_action, NULL, NULL, '42501',
            format('permission_denied: role "%s" may not manage tenants', apikeys_internal._acting_role()),
            'Tenants are managed by superusers and roles granted apikeys.grant_tenant(role, NULL).');
    ELSE
        PERFORM apikeys_internal._deny(p_action, p_tenant, NULL, '42501',
            format('permission_denied: role "%s" may not manage tenant "%s"', apikeys_internal._acting_role(), p_tenant),
            'A superuser can allow it with apikeys.grant_tenant(role, tenant).');
    END IF;
END;
$$;
