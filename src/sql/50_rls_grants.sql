------------------------------------------------------------------------------
-- Row-level security
------------------------------------------------------------------------------

ALTER TABLE apikeys.tenant ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.credential ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.secret ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.role_tenant ENABLE ROW LEVEL SECURITY;

-- Reads only: every write goes through the SECURITY DEFINER functions.
-- A role sees the tenants it is mapped to in role_tenant (whose own policy
-- shows each role only its mappings), or the tenant its transaction is bound
-- to.  No function call per row: the subqueries become hashed subplans.
CREATE POLICY role_tenant_read ON apikeys.role_tenant FOR SELECT
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro
                    WHERE ro.rolname OPERATOR(pg_catalog.=) role_tenant.role_name
                      AND pg_catalog.pg_has_role(current_user, ro.oid, 'USAGE')));
CREATE POLICY tenant_read ON apikeys.tenant FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) apikeys.current_tenant()
           OR tenant IN (SELECT g.tenant FROM apikeys.role_tenant g)
           OR EXISTS (SELECT 1 FROM apikeys.role_tenant g WHERE g.tenant IS NULL));
CREATE POLICY credential_read ON apikeys.credential FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) apikeys.current_tenant()
           OR tenant IN (SELECT g.tenant FROM apikeys.role_tenant g)
           OR EXISTS (SELECT 1 FROM apikeys.role_tenant g WHERE g.tenant IS NULL));
CREATE POLICY secret_read ON apikeys.secret FOR SELECT
    USING (EXISTS (SELECT 1 FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) secret.key_id));
-- the audit only through a mapping, never through a key-bound transaction
CREATE POLICY audit_read ON apikeys.audit FOR SELECT
    USING (tenant IN (SELECT g.tenant FROM apikeys.role_tenant g)
           OR (tenant IS NOT NULL AND EXISTS (SELECT 1 FROM apikeys.role_tenant g WHERE g.tenant IS NULL)));

------------------------------------------------------------------------------
-- Privilege recipes (superuser only)
------------------------------------------------------------------------------

CREATE FUNCTION apikeys.grant_verifier(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.apikey_verify(text, text[], inet),'
                   ' apikeys.authenticate(text, text[], inet, text, text), apikeys.current_tenant(),'
                   ' apikeys.current_key_id() TO %I', role_name);
END;
$$;
COMMENT ON FUNCTION apikeys.grant_verifier IS 'Let a role verify keys (apikey_verify, authenticate).';

CREATE FUNCTION apikeys.grant_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF privilege IS NULL OR privilege NOT IN ('manage', 'audit') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_privilege: privilege must be ''manage'' or ''audit''';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro WHERE ro.rolname OPERATOR(pg_catalog.=) role_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('role_not_found: role "%s" does not exist', role_name);
    END IF;
    IF tenant IS NOT NULL AND NOT EXISTS (SELECT 1 FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) grant_tenant.tenant) THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('tenant_not_found: tenant "%s" does not exist', tenant);
    END IF;
    INSERT INTO apikeys.role_tenant (role_name, tenant, privilege)
    VALUES (grant_tenant.role_name, grant_tenant.tenant, grant_tenant.privilege)
    ON CONFLICT DO NOTHING;
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT SELECT ON apikeys.tenant, apikeys.credential, apikeys.keys, apikeys.audit,'
                   ' apikeys.role_tenant, apikeys.usage, apikeys.key_usage TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys._pending_usage(uuid) TO %I', role_name);
    EXECUTE format('GRANT SELECT (key_id, hint, created_at, valid_until) ON apikeys.secret TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.current_tenant(), apikeys.current_key_id() TO %I', role_name);
    IF privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION'
            ' apikeys.apikey_create(text, text, text[], timestamptz, text, jsonb, text),'
            ' apikeys.apikey_rotate(uuid, interval), apikeys.apikey_revoke(uuid, text),'
            ' apikeys.apikey_disable(uuid), apikeys.apikey_enable(uuid),'
            ' apikeys.apikey_update(uuid, text, text, text[], timestamptz, jsonb),'
            ' apikeys.apikey_delete(uuid), apikeys.apikey_verify(text, text[], inet),'
            ' apikeys.apikey_set_policy(uuid, cidr[], integer, interval, bigint, interval) TO %I', role_name);
    END IF;
    IF tenant IS NULL AND privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.tenant_create(text, text),'
            ' apikeys.tenant_update(text, text, boolean), apikeys.tenant_delete(text, boolean) TO %I', role_name);
    END IF;
    IF privilege OPERATOR(pg_catalog.=) 'audit' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.audit_check(), apikeys.audit_head() TO %I', role_name);
    END IF;
END;
$$;
COMMENT ON FUNCTION apikeys.grant_tenant IS 'Let a role manage (or only audit) one tenant, or every tenant with tenant => NULL.';

CREATE FUNCTION apikeys.revoke_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
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
COMMENT ON FUNCTION apikeys.revoke_tenant IS 'Undo grant_tenant (the mapping; SQL privileges stay, harmless without it).';
