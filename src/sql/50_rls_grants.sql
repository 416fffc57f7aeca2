------------------------------------------------------------------------------
-- Row-level security
------------------------------------------------------------------------------

ALTER TABLE apikeys.tenant ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.credential ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.secret ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.role_tenant ENABLE ROW LEVEL SECURITY;

-- Reads only: every write goes through the management functions.  These
-- policies guard roles a DBA lets read the tables themselves (global admins
-- and auditors get that from grant_tenant); tenant-scoped roles read the
-- views below instead, which never scan another tenant's rows (a query on a
-- table under RLS still scans them, and EXPLAIN ANALYZE would count them).
-- apikeys.visible_tenants() runs once per query (an InitPlan); NULL means
-- every tenant, hence the coalesce.
CREATE POLICY role_tenant_read ON apikeys.role_tenant FOR SELECT
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro
                    WHERE ro.rolname OPERATOR(pg_catalog.=) role_tenant.role_name
                      AND pg_catalog.pg_has_role(current_user, ro.oid, 'USAGE'))
           OR (SELECT apikeys.visible_tenants('read')) IS NULL);
CREATE POLICY tenant_read ON apikeys.tenant FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys.visible_tenants('read')), ARRAY[tenant])));
CREATE POLICY credential_read ON apikeys.credential FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys.visible_tenants('read')), ARRAY[tenant])));
CREATE POLICY secret_read ON apikeys.secret FOR SELECT
    USING (EXISTS (SELECT 1 FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) secret.key_id));
-- the audit only through a mapping, never through a key-bound transaction
CREATE POLICY audit_read ON apikeys.audit FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys.visible_tenants('audit')), ARRAY[tenant])));

------------------------------------------------------------------------------
-- Tenant-facing readers: each reads the caller's visible tenants' rows only
-- (through the tenant indexes), inside a function, so neither EXPLAIN nor
-- the planner's estimates show anything of the others.  Custom plans: the
-- visible tenants are known when each query is planned.
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal.read_tenants() RETURNS SETOF apikeys.tenant
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 10
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
BEGIN
    RETURN QUERY SELECT * FROM apikeys.tenant t
                  WHERE v IS NULL OR t.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;
SELECT apikeys_internal.publish('read_tenants', 'Rows of apikeys.tenants: the tenants the caller may read.');
CREATE VIEW apikeys.tenants WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_tenants();
COMMENT ON VIEW apikeys.tenants IS 'The tenants the caller may read (all of them for superusers and global roles).';

CREATE FUNCTION apikeys_internal.read_grants() RETURNS SETOF apikeys.role_tenant
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name := apikeys_internal._acting_role();
    all_ boolean := apikeys.visible_tenants('read') IS NULL;
BEGIN
    RETURN QUERY SELECT g.* FROM apikeys.role_tenant g
                  WHERE all_ OR EXISTS (
                        SELECT 1 FROM pg_catalog.pg_roles ro
                         WHERE ro.rolname OPERATOR(pg_catalog.=) g.role_name
                           AND pg_catalog.pg_has_role(r, ro.oid, 'USAGE'));
END;
$$;
SELECT apikeys_internal.publish('read_grants', 'Rows of apikeys.tenant_grants: the caller''s own tenant mappings (every mapping for superusers and global roles).');
CREATE VIEW apikeys.tenant_grants WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_grants();
COMMENT ON VIEW apikeys.tenant_grants IS 'Which tenants the caller (and the roles it belongs to) manage or audit.';

------------------------------------------------------------------------------
-- Privilege recipes (superuser only)
------------------------------------------------------------------------------

-- The role a grant recipe names: an existing role, never NULL or PUBLIC
-- (GRANT ... TO public would hand the privilege to every role).
CREATE FUNCTION apikeys_internal._check_role(role_name name) RETURNS name
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF role_name IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'invalid_role: role_name must not be NULL';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro WHERE ro.rolname OPERATOR(pg_catalog.=) role_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('role_not_found: role "%s" does not exist', role_name),
            HINT = 'Grants go to one existing role at a time, never to PUBLIC.';
    END IF;
    RETURN role_name;
END;
$$;

-- The privilege a tenant grant names.
CREATE FUNCTION apikeys_internal._check_privilege(privilege text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF privilege IS NULL OR privilege NOT IN ('manage', 'audit') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_privilege: privilege must be ''manage'' or ''audit''';
    END IF;
    RETURN privilege;
END;
$$;

CREATE FUNCTION apikeys_internal.grant_verifier(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys_internal._check_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.apikey_verify(text, text[], inet),'
                   ' apikeys.apikey_verify(text, text[], inet, integer), apikeys.last_verify_limits(),'
                   ' apikeys.authenticate(text, text[], inet, text, text), apikeys.current_tenant(),'
                   ' apikeys.current_key_id() TO %I', role_name);
END;
$$;
SELECT apikeys_internal.publish('grant_verifier', 'Let a role verify keys (apikey_verify, authenticate).');

CREATE FUNCTION apikeys_internal.grant_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys_internal._check_privilege(privilege), apikeys_internal._check_role(role_name),
            apikeys_internal._check_tenant_id(tenant);   -- STRICT: NULL is every tenant
    IF tenant IS NOT NULL AND NOT EXISTS (SELECT 1 FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) grant_tenant.tenant) THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('tenant_not_found: tenant "%s" does not exist', tenant);
    END IF;
    INSERT INTO apikeys.role_tenant (role_name, tenant, privilege)
    VALUES (grant_tenant.role_name, grant_tenant.tenant, grant_tenant.privilege)
    ON CONFLICT DO NOTHING;
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    -- the views, never the tables (see the readers above) ...
    EXECUTE format('GRANT SELECT ON apikeys.tenants, apikeys.keys, apikeys.audit_log,'
                   ' apikeys.tenant_grants, apikeys.key_usage, apikeys.key_credits TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.read_tenants(), apikeys.read_keys(),'
                   ' apikeys.read_audit(), apikeys.read_grants(), apikeys.read_key_usage(), apikeys.read_key_credits(),'
                   ' apikeys.audit_log_page(text, bigint, integer, uuid),'
                   ' apikeys.current_tenant(), apikeys.current_key_id() TO %I', role_name);
    -- ... but for global roles, who see every row anyway
    IF tenant IS NULL THEN
        EXECUTE format('GRANT SELECT ON apikeys.tenant, apikeys.credential, apikeys.audit,'
                       ' apikeys.role_tenant, apikeys.usage TO %I', role_name);
        EXECUTE format('GRANT SELECT (key_id, hint, created_at, valid_until) ON apikeys.secret TO %I', role_name);
    END IF;
    IF privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION'
            ' apikeys.apikey_create(text, text, text[], timestamptz, text, jsonb, text),'
            ' apikeys.apikey_create_many(text, text[], text[], timestamptz, text),'
            ' apikeys.apikey_rotate(uuid, interval), apikeys.apikey_revoke(uuid, text),'
            ' apikeys.apikey_disable(uuid), apikeys.apikey_enable(uuid),'
            ' apikeys.apikey_update(uuid, text, text, text[], timestamptz, jsonb),'
            ' apikeys.apikey_delete(uuid), apikeys.apikey_verify(text, text[], inet),'
            ' apikeys.apikey_set_policy(uuid, cidr[], integer, interval, bigint, interval) TO %I', role_name);
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.apikey_verify(text, text[], inet, integer),'
            ' apikeys.last_verify_limits(), apikeys.apikey_set_limits(uuid, apikeys.named_limit[]) TO %I', role_name);
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.apikey_set_credits(uuid, bigint, bigint, interval, integer),'
            ' apikeys.apikey_add_credits(uuid, bigint), apikeys.apikey_subtract_credits(uuid, bigint) TO %I', role_name);
    END IF;
    IF tenant IS NULL AND privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.tenant_create(text, text),'
            ' apikeys.tenant_update(text, text, boolean), apikeys.tenant_delete(text, boolean),'
            ' apikeys.tenant_set_limits(text, apikeys.named_limit[]) TO %I', role_name);
    END IF;
    IF privilege OPERATOR(pg_catalog.=) 'audit' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.audit_check(), apikeys.audit_verify(), apikeys.audit_head(),'
            ' apikeys.audit_head_check(text, bigint, text, timestamptz) TO %I', role_name);
    END IF;
    PERFORM apikeys_internal._grant_scope_privileges(role_name, tenant, privilege);   -- 1.1
    -- legacy key formats and import (45_legacy.sql)
    EXECUTE format('GRANT SELECT ON apikeys.key_formats, apikeys.legacy_keys TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.read_key_formats(), apikeys.read_legacy_keys() TO %I', role_name);
    IF tenant IS NULL THEN
        EXECUTE format('GRANT SELECT ON apikeys.key_format TO %I', role_name);
    END IF;
    IF privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION'
            ' apikeys.key_format_register(text, text, text, integer, text, text, integer, text, text, text),'
            ' apikeys.key_format_drop(text, text),'
            ' apikeys.apikey_import(text, text, text, text, text[], timestamptz, jsonb, timestamptz, text, text,'
            '                       timestamptz, text, integer, interval, timestamptz, text, text),'
            ' apikeys.apikey_import_rows(text, text, apikeys.legacy_key[], text, bigint),'
            ' apikeys.apikey_import_many(text, text, text, text) TO %I', role_name);
    END IF;
END;
$$;
SELECT apikeys_internal.publish('grant_tenant', 'Let a role manage (or only audit) one tenant, or every tenant with tenant => NULL.');

CREATE FUNCTION apikeys_internal.revoke_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys_internal._check_privilege(privilege), apikeys_internal._check_tenant_id(tenant);
    DELETE FROM apikeys.role_tenant g
     WHERE g.role_name OPERATOR(pg_catalog.=) revoke_tenant.role_name
       AND g.tenant IS NOT DISTINCT FROM revoke_tenant.tenant
       AND g.privilege OPERATOR(pg_catalog.=) revoke_tenant.privilege;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('grant_not_found: role "%s" holds no %s grant on %s', role_name, privilege,
                             coalesce('tenant "' || tenant || '"', 'every tenant'));
    END IF;
END;
$$;
SELECT apikeys_internal.publish('revoke_tenant', 'Undo grant_tenant (the mapping; SQL privileges stay, harmless without it).');
