/* apikeys--1.0--1.1.sql - upgrade apikeys from 1.0 to 1.1 */

\echo Use "ALTER EXTENSION apikeys UPDATE TO '1.1'" to load this file. \quit

-- Every schema change made after 1.0 is here as well as in src/sql/: after
-- this script a 1.0 database has exactly the schema (objects, definitions,
-- privileges, comments) of a fresh 1.1 install; test/t/upgrade.sh checks it.
-- The library serves both: a C function that 1.0's SQL calls keeps its
-- symbol and its contract, and a changed contract gets a new symbol
-- (apikeys_<name>_1_1), as pg_stat_statements does.

------------------------------------------------------------------------------
-- 1.1: scope registry (apikeys.scope, scope_define/scope_drop, apikeys.scopes,
-- apikeys_internal.check_scopes; apikey_create, apikey_create_many and
-- apikey_update check new scopes against it; wildcard scopes "read:*").
-- Roles mapped before the upgrade get the registry's privileges when
-- grant_tenant() is run for them again (grants made by an extension script
-- would count as the extension's initial privileges, which pg_dump omits).
------------------------------------------------------------------------------
-- The valid scopes of tenant t are t's entries plus the global ones (tenant
-- NULL); a tenant with neither is unrestricted.  Entries match literally
-- ("read:*" lets a key hold "read:*"; it does not make "read:orders" valid).
-- Only new scope lists are checked (apikey_create, apikey_create_many, the
-- scopes apikey_update adds: apikeys_internal.check_scopes()); apikey_verify
-- never reads the registry.  src/scope_registry.c has the check.
CREATE TABLE apikeys.scope (
    tenant      text COLLATE "C" REFERENCES apikeys.tenant (tenant) ON DELETE CASCADE,   -- NULL: global
    scope       text COLLATE "C" NOT NULL
                CHECK (scope ~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$' OR scope ~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,61}:\*$'),
    description text CHECK (char_length(description) <= 2000),
    created_by  name NOT NULL DEFAULT current_user,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- one probe finds a tenant's entries and the global ones together
CREATE UNIQUE INDEX scope_registry_idx ON apikeys.scope ((coalesce(tenant, '')), scope);
-- for ON DELETE CASCADE from apikeys.tenant
CREATE INDEX scope_tenant_idx ON apikeys.scope (tenant) WHERE tenant IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('apikeys.scope', '');
COMMENT ON TABLE apikeys.scope IS 'Scope registry: the scopes keys of a tenant (tenant NULL: of every tenant) may be given, with descriptions. Maintained by scope_define()/scope_drop().';

CREATE TRIGGER audit_scope AFTER INSERT OR UPDATE OR DELETE ON apikeys.scope
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
ALTER TABLE apikeys.scope ENABLE ALWAYS TRIGGER audit_scope;
CREATE TRIGGER scope_no_truncate BEFORE TRUNCATE ON apikeys.scope
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();

-- Reads only, as for the other tables (50_rls_grants.sql): the global
-- entries and the visible tenants' entries.
ALTER TABLE apikeys.scope ENABLE ROW LEVEL SECURITY;
CREATE POLICY scope_read ON apikeys.scope FOR SELECT
    USING (tenant IS NULL
           OR tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys._visible_tenants('read')), ARRAY[tenant])));

-- One registry entry's scope: the key scope rules, and a final ':*' (C).
CREATE FUNCTION apikeys_internal._check_scope(scope text) RETURNS text
    LANGUAGE C IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_scope_1_1';
COMMENT ON FUNCTION apikeys_internal._check_scope(text) IS 'Check one scope (wildcards allowed: read:*); NULL is an error.';

-- scopes normalized (sorted, de-duplicated, wildcards allowed) and checked
-- against tenant's registry (22023 invalid_scope: unknown scope), their
-- entries locked FOR KEY SHARE until commit; scopes in kept (what a key
-- already holds) are not checked.  Callers authorize for tenant first: the
-- error lists the tenant's valid scopes.
CREATE FUNCTION apikeys_internal.check_scopes(tenant text, scopes text[], kept text[] DEFAULT NULL)
    RETURNS text[]
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_scopes_1_1';
COMMENT ON FUNCTION apikeys_internal.check_scopes(text, text[], text[]) IS 'Normalize a scope list and refuse a scope the tenant''s registry does not list (scopes in kept are exempt); authorize first.';

-- Define (or redefine: the description is replaced) a scope of tenant's
-- registry, or of the global one (tenant NULL: global admins only).
CREATE FUNCTION apikeys_internal.scope_define(tenant text, scope text, description text DEFAULT NULL)
    RETURNS apikeys.scope
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    sc text;
    r apikeys.scope;
BEGIN
    PERFORM apikeys._check_tenant_id(tenant);   -- STRICT: NULL is the global registry
    PERFORM apikeys._authorize(tenant, 'scope_define');
    sc := apikeys_internal._check_scope(scope);
    PERFORM apikeys._check_description(description);
    IF tenant IS NOT NULL THEN
        PERFORM 1 FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) scope_define.tenant FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = format('tenant_not_found: tenant "%s" does not exist', tenant);
        END IF;
    END IF;
    IF (SELECT count(*) FROM apikeys.scope s
         WHERE coalesce(s.tenant, '') OPERATOR(pg_catalog.=) coalesce(scope_define.tenant, '')
           AND s.scope OPERATOR(pg_catalog.<>) sc) OPERATOR(pg_catalog.>=) 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'program_limit_exceeded',
            MESSAGE = format('scope_registry_full: %s already has 1000 scopes',
                             coalesce('tenant "' || tenant || '"', 'the global registry')),
            HINT = 'Drop unused scopes with apikeys.scope_drop(), or use wildcards (read:*).';
    END IF;
    INSERT INTO apikeys.scope AS s (tenant, scope, description, created_by)
    VALUES (scope_define.tenant, sc, scope_define.description, apikeys._acting_role())
    ON CONFLICT ((coalesce(tenant, '')), scope) DO UPDATE
       SET description = excluded.description, updated_at = now()
     WHERE s.description IS DISTINCT FROM excluded.description
    RETURNING * INTO r;
    IF NOT FOUND THEN   -- already so: nothing changed, nothing audited
        SELECT * INTO STRICT r FROM apikeys.scope s
         WHERE coalesce(s.tenant, '') OPERATOR(pg_catalog.=) coalesce(scope_define.tenant, '')
           AND s.scope OPERATOR(pg_catalog.=) sc;
    END IF;
    RETURN r;
END;
$$;
SELECT apikeys_internal.publish('scope_define', 'Add a scope (with a description) to a tenant''s scope registry, or to the global one (tenant NULL); keys may then be given only registered scopes.');

-- Remove a scope from a registry.  Refused (2BP01 scope_in_use) while keys
-- that are not revoked hold it and no other entry covers them (for a tenant
-- entry: the global one; for a global entry: their tenant's own), unless
-- force: those keys then keep the scope and keep verifying with it.
CREATE FUNCTION apikeys_internal.scope_drop(tenant text, scope text, force boolean DEFAULT false)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sc text;
    n bigint;
BEGIN
    PERFORM apikeys._check_tenant_id(tenant);   -- STRICT: NULL is the global registry
    PERFORM apikeys._authorize(tenant, 'scope_drop');
    sc := apikeys_internal._check_scope(scope);
    IF tenant IS NULL THEN
        -- a concurrent drop of a tenant's entry for this scope finishes
        -- first, so that the count below sees that tenant uncovered
        PERFORM 1 FROM apikeys.scope s
         WHERE s.tenant IS NOT NULL AND s.scope OPERATOR(pg_catalog.=) sc FOR UPDATE;
    END IF;
    -- waits for transactions whose new keys use the entry (FOR KEY SHARE)
    DELETE FROM apikeys.scope s
     WHERE coalesce(s.tenant, '') OPERATOR(pg_catalog.=) coalesce(scope_drop.tenant, '')
       AND s.scope OPERATOR(pg_catalog.=) sc;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('scope_not_found: scope "%s" is not in %s', sc,
                             coalesce('the registry of tenant "' || tenant || '"', 'the global registry'));
    END IF;
    IF coalesce(force, false) THEN
        RETURN;
    END IF;
    IF tenant IS NOT NULL THEN
        SELECT count(*) INTO n FROM apikeys.credential c
         WHERE c.tenant OPERATOR(pg_catalog.=) scope_drop.tenant
           AND c.status OPERATOR(pg_catalog.<>) 'revoked' AND sc OPERATOR(pg_catalog.=) ANY (c.scopes)
           AND NOT EXISTS (SELECT 1 FROM apikeys.scope g
                            WHERE g.tenant IS NULL AND g.scope OPERATOR(pg_catalog.=) sc);
    ELSE
        SELECT count(*) INTO n FROM apikeys.credential c
         WHERE c.status OPERATOR(pg_catalog.<>) 'revoked' AND sc OPERATOR(pg_catalog.=) ANY (c.scopes)
           AND NOT EXISTS (SELECT 1 FROM apikeys.scope t
                            WHERE t.tenant OPERATOR(pg_catalog.=) c.tenant AND t.scope OPERATOR(pg_catalog.=) sc);
    END IF;
    IF n OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = format('scope_in_use: scope "%s" is held by %s API keys', sc, n),
            HINT = 'Remove it from those keys with apikeys.apikey_update(key_id, scopes => ...), or call '
                   'scope_drop(tenant, scope, force => true): they keep it and keep verifying with it.';
    END IF;
END;
$$;
SELECT apikeys_internal.publish('scope_drop', 'Remove a scope from a tenant''s scope registry or the global one; refused while keys it covers hold it, unless force.');

-- Rows of apikeys.scopes: the global registry and the visible tenants'
-- registries only (apikeys.tenants explains why a reader function).
CREATE FUNCTION apikeys_internal._read_scopes() RETURNS SETOF apikeys.scope
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys._visible_tenants('read');
BEGIN
    IF v IS NULL THEN
        RETURN QUERY SELECT * FROM apikeys.scope s;
    ELSE
        RETURN QUERY SELECT * FROM apikeys.scope s
                      WHERE coalesce(s.tenant, '') OPERATOR(pg_catalog.=) ANY (pg_catalog.array_prepend('', v));
    END IF;
END;
$$;
SELECT apikeys_internal.publish('_read_scopes', 'Rows of apikeys.scopes: the global scope registry and the registries of the tenants the caller may read.');
CREATE VIEW apikeys.scopes WITH (security_invoker = true) AS
SELECT * FROM apikeys._read_scopes();
COMMENT ON VIEW apikeys.scopes IS 'The scope registries the caller may read: the global one (tenant NULL) and its tenants''.';

-- The registry privileges that go with a tenant grant (grant_tenant()).
CREATE FUNCTION apikeys_internal._grant_scope_privileges(role_name name, tenant text, privilege text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT SELECT ON apikeys.scopes TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys._read_scopes() TO %I', role_name);
    IF tenant IS NULL THEN
        EXECUTE format('GRANT SELECT ON apikeys.scope TO %I', role_name);
    END IF;
    IF privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.scope_define(text, text, text),'
                       ' apikeys.scope_drop(text, text, boolean) TO %I', role_name);
    END IF;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._grant_scope_privileges(name, text, text) IS 'The scope registry privileges grant_tenant() grants with a tenant mapping.';

-- what 90_privileges.sql does for a fresh install: nothing for PUBLIC
REVOKE ALL ON apikeys.scope, apikeys.scopes FROM PUBLIC;
REVOKE ALL ON FUNCTION apikeys.scope_define(text, text, text), apikeys.scope_drop(text, text, boolean),
    apikeys._read_scopes() FROM PUBLIC;

-- the audit names the registry's changes scope_defined/scope_updated/scope_dropped
CREATE OR REPLACE FUNCTION apikeys._audit_row_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o jsonb;
    n jsonb;
    r jsonb;
    t text;
    k uuid;
    act text;
    detail jsonb;
BEGIN
    IF apikeys._bulk_loading() THEN
        RETURN NULL;   -- pg_restore: these rows' history is in the restored audit
    END IF;
    -- never a digest, a vault ciphertext or a master-key fingerprint (a
    -- fingerprint lets a reader test guesses of the master key offline)
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN o := to_jsonb(OLD) OPERATOR(pg_catalog.-) '{digest,ciphertext,key_fp}'::text[]; END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN n := to_jsonb(NEW) OPERATOR(pg_catalog.-) '{digest,ciphertext,key_fp}'::text[]; END IF;
    r := coalesce(n, o);
    t := r OPERATOR(pg_catalog.->>) 'tenant';
    k := (r OPERATOR(pg_catalog.->>) 'key_id')::uuid;

    IF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'tenant' THEN
        act := CASE TG_OP WHEN 'INSERT' THEN 'tenant_created' WHEN 'DELETE' THEN 'tenant_deleted'
               ELSE CASE WHEN (o OPERATOR(pg_catalog.->) 'active') OPERATOR(pg_catalog.=) (n OPERATOR(pg_catalog.->) 'active') THEN 'tenant_updated'
                         WHEN (n OPERATOR(pg_catalog.->>) 'active')::boolean THEN 'tenant_activated'
                         ELSE 'tenant_deactivated' END END;
    ELSIF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'credential' THEN
        act := CASE TG_OP WHEN 'INSERT' THEN 'key_created' WHEN 'DELETE' THEN 'key_deleted'
               ELSE CASE WHEN (o OPERATOR(pg_catalog.->>) 'status') OPERATOR(pg_catalog.<>) (n OPERATOR(pg_catalog.->>) 'status') THEN
                             CASE n OPERATOR(pg_catalog.->>) 'status' WHEN 'revoked' THEN 'key_revoked'
                                  WHEN 'disabled' THEN 'key_disabled' ELSE 'key_enabled' END
                         WHEN (o OPERATOR(pg_catalog.->) 'rotation_count') OPERATOR(pg_catalog.<>) (n OPERATOR(pg_catalog.->) 'rotation_count') THEN 'key_rotated'
                         ELSE 'key_updated' END END;
    ELSIF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'secret' THEN
        SELECT c.tenant INTO t FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) k;
        IF NOT FOUND THEN
            RETURN NULL;   -- removed with its key: key_deleted says it
        END IF;
        act := CASE TG_OP WHEN 'INSERT' THEN 'secret_issued' WHEN 'DELETE' THEN 'secret_retired'
               ELSE 'secret_grace_set' END;
    ELSIF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'vault_secret' THEN
        k := (r OPERATOR(pg_catalog.->>) 'id')::uuid;   -- the vault secret's id
        IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE'
           AND (to_jsonb(OLD) OPERATOR(pg_catalog.-) 'last_used_at') OPERATOR(pg_catalog.=) (to_jsonb(NEW) OPERATOR(pg_catalog.-) 'last_used_at') THEN
            RETURN NULL;   -- only last_used_at: vault_reveal writes vault_secret_revealed itself
        END IF;
        act := CASE TG_OP WHEN 'INSERT' THEN 'vault_secret_added' WHEN 'DELETE' THEN 'vault_secret_deleted'
               ELSE CASE WHEN (o OPERATOR(pg_catalog.->) 'active') OPERATOR(pg_catalog.<>) (n OPERATOR(pg_catalog.->) 'active') THEN
                             CASE WHEN (n OPERATOR(pg_catalog.->>) 'active')::boolean THEN 'vault_secret_activated'
                                  ELSE 'vault_secret_deactivated' END
                         WHEN (to_jsonb(OLD) OPERATOR(pg_catalog.->) 'key_fp') OPERATOR(pg_catalog.<>) (to_jsonb(NEW) OPERATOR(pg_catalog.->) 'key_fp') THEN 'vault_secret_reencrypted'
                         ELSE 'vault_secret_updated' END END;
    ELSIF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'scope' THEN
        act := CASE TG_OP WHEN 'INSERT' THEN 'scope_defined' WHEN 'DELETE' THEN 'scope_dropped'
               ELSE 'scope_updated' END;
    ELSIF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'vault_service' THEN
        act := CASE TG_OP WHEN 'INSERT' THEN 'vault_service_registered' WHEN 'DELETE' THEN 'vault_service_unregistered'
               ELSE 'vault_service_updated' END;
    ELSE
        act := CASE TG_OP WHEN 'INSERT' THEN 'role_granted' WHEN 'DELETE' THEN 'role_revoked'
               ELSE 'role_updated' END;
    END IF;

    IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
        SELECT jsonb_object_agg(e.key, jsonb_build_array(o OPERATOR(pg_catalog.->) e.key, e.value))
          INTO detail
          FROM jsonb_each(n) e
         WHERE (o OPERATOR(pg_catalog.->) e.key) IS DISTINCT FROM e.value;
        detail := jsonb_build_object('changed', coalesce(detail, '{}'));
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        detail := jsonb_build_object('new', n);
    ELSE
        detail := jsonb_build_object('old', o);
    END IF;
    PERFORM apikeys._audit_write(act, t, k, detail);
    RETURN NULL;
END;
$$;

-- the 1.1 symbols: the scope registry
CREATE OR REPLACE FUNCTION apikeys_internal.apikey_create(
    tenant      text,
    name        text,
    scopes      text[] DEFAULT '{}',
    expires_at  timestamptz DEFAULT NULL,
    description text DEFAULT NULL,
    metadata    jsonb DEFAULT '{}',
    prefix      text DEFAULT 'ak',
    OUT key_id     uuid,
    OUT api_key    text,
    OUT hint       text,
    OUT key_prefix text,
    OUT expires    timestamptz,
    OUT created_at timestamptz)
    RETURNS record
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikey_create_1_1';   -- 1.1: the scope registry

CREATE OR REPLACE FUNCTION apikeys_internal.apikey_create_many(
    tenant     text,
    names      text[],
    scopes     text[] DEFAULT '{}',
    expires_at timestamptz DEFAULT NULL,
    prefix     text DEFAULT 'ak')
    RETURNS TABLE (key_id uuid, api_key text, hint text, name text)
    LANGUAGE C VOLATILE SECURITY DEFINER ROWS 1000
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikey_create_many_1_1';   -- 1.1: the scope registry

-- scopes a key gains must be registered
CREATE OR REPLACE FUNCTION apikeys_internal.apikey_update(
    key_id      uuid,
    name        text DEFAULT NULL,
    description text DEFAULT NULL,
    scopes      text[] DEFAULT NULL,
    expires_at  timestamptz DEFAULT NULL,
    metadata    jsonb DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys._lock_key(key_id, 'key_update');
BEGIN
    PERFORM apikeys._require_not_revoked(k, 'key_update');
    PERFORM apikeys._require_active_tenant(k.tenant, 'key_update', k.key_id);
    -- NULL leaves a field unchanged; expires_at => 'infinity' removes the expiry.
    -- Scopes the key gains must be in its tenant's registry (those it keeps need not).
    UPDATE apikeys.credential c SET
        name        = coalesce(apikeys._check_name(apikey_update.name), c.name),
        description = coalesce(apikeys._check_description(apikey_update.description), c.description),
        scopes      = coalesce(CASE WHEN apikey_update.scopes IS NOT NULL
                                    THEN apikeys_internal.check_scopes(k.tenant, apikey_update.scopes, k.scopes) END,
                               c.scopes),
        expires_at  = CASE WHEN apikey_update.expires_at IS NULL THEN c.expires_at
                           WHEN apikey_update.expires_at OPERATOR(pg_catalog.=) 'infinity' THEN NULL
                           ELSE apikeys._check_expiry(apikey_update.expires_at) END,
        metadata    = coalesce(apikeys._check_metadata(apikey_update.metadata), c.metadata),
        updated_at  = now()
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
    -- Rotation grace never outlives the key.
    UPDATE apikeys.secret s
       SET valid_until = least(s.valid_until, c.expires_at)
      FROM apikeys.credential c
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id AND s.key_id OPERATOR(pg_catalog.=) c.key_id
       AND s.valid_until IS NOT NULL AND c.expires_at IS NOT NULL;
END;
$$;

-- grants the registry's privileges with a mapping
CREATE OR REPLACE FUNCTION apikeys_internal.grant_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys._check_privilege(privilege), apikeys._check_role(role_name),
            apikeys._check_tenant_id(tenant);   -- STRICT: NULL is every tenant
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
                   ' apikeys.tenant_grants, apikeys.key_usage TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys._read_tenants(), apikeys._read_keys(),'
                   ' apikeys._read_audit(), apikeys._read_grants(), apikeys._read_key_usage(),'
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
    END IF;
    IF tenant IS NULL AND privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.tenant_create(text, text),'
            ' apikeys.tenant_update(text, text, boolean), apikeys.tenant_delete(text, boolean) TO %I', role_name);
    END IF;
    IF privilege OPERATOR(pg_catalog.=) 'audit' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.audit_check(), apikeys.audit_verify(), apikeys.audit_head() TO %I', role_name);
    END IF;
    PERFORM apikeys_internal._grant_scope_privileges(role_name, tenant, privilege);   -- 1.1
END;
$$;

-- the registry's reader answers only about the caller's tenants (and the global registry)
CREATE OR REPLACE FUNCTION apikeys._role_confinement_scan(role oid) RETURNS text
    LANGUAGE sql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
WITH rel AS (
    SELECT c.oid, c.relkind, c.relrowsecurity,
           c.relkind = 'v' AND EXISTS (SELECT 1 FROM pg_options_to_table(c.reloptions) o
                                        WHERE o.option_name = 'security_invoker' AND o.option_value::boolean)
               AS invoker_view
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
), extra AS (
    -- the privileges role holds on each relation beyond PUBLIC's
    SELECT rel.*,
           CASE WHEN rel.relkind = 'S' THEN
               array(SELECT p FROM unnest('{UPDATE}'::text[]) p
                      WHERE has_sequence_privilege(role, rel.oid, p)
                        AND NOT has_sequence_privilege('public', rel.oid, p))
           ELSE
               array(SELECT p FROM unnest('{SELECT,INSERT,UPDATE,REFERENCES}'::text[]) p
                      WHERE has_any_column_privilege(role, rel.oid, p)
                        AND NOT has_any_column_privilege('public', rel.oid, p))
               || array(SELECT p FROM unnest('{DELETE,TRUNCATE,TRIGGER}'::text[]) p
                         WHERE has_table_privilege(role, rel.oid, p)
                           AND NOT has_table_privilege('public', rel.oid, p))
           END AS privs
      FROM rel
), reasons AS (
    SELECT 1 AS o, format('holds %s on %s %s, whose rows row-level security does not confine',
                          array_to_string(e.privs, ', '),
                          CASE e.relkind WHEN 'v' THEN 'view (without security_invoker)'
                                         WHEN 'm' THEN 'materialized view'
                                         WHEN 'f' THEN 'foreign table'
                                         ELSE 'table (without row-level security)' END,
                          e.oid::regclass) AS why
      FROM extra e
     WHERE cardinality(e.privs) > 0 AND e.relkind <> 'S'
       AND NOT (e.relkind IN ('r', 'p') AND e.relrowsecurity) AND NOT e.invoker_view
    UNION ALL
    SELECT 2, format('holds %s on %s, which row-level security does not restrict',
                     array_to_string(array(SELECT p FROM unnest(e.privs) p
                                            WHERE p IN ('TRUNCATE', 'TRIGGER', 'REFERENCES')), ', '),
                     e.oid::regclass)
      FROM extra e
     WHERE e.privs && '{TRUNCATE,TRIGGER,REFERENCES}' AND e.relkind <> 'S'
    UNION ALL
    SELECT 3, format('holds UPDATE (setval) on sequence %s', e.oid::regclass)
      FROM extra e
     WHERE e.relkind = 'S' AND cardinality(e.privs) > 0
    UNION ALL
    SELECT 4, format('may execute %s %s, which PUBLIC may not',
                     CASE WHEN p.prosecdef THEN 'SECURITY DEFINER function' ELSE 'function' END,
                     p.oid::regprocedure)
      FROM pg_proc p
     WHERE (p.prosecdef OR p.pronamespace = 'apikeys'::regnamespace)
       AND p.oid NOT IN ('apikeys.pre_request()'::regprocedure, 'apikeys._postgrest_gate()'::regprocedure,
                         'apikeys.current_tenant()'::regprocedure, 'apikeys.current_key_id()'::regprocedure)
       -- the readers behind the views answer only about the caller's own tenants
       AND NOT (p.pronamespace = 'apikeys'::regnamespace
                AND p.proname IN ('_read_keys', '_read_tenants', '_read_key_usage', '_read_vault_secrets',
                                  '_read_audit', '_read_grants', 'audit_log_page', '_read_scopes'))
       AND has_function_privilege(role, p.oid, 'EXECUTE')
       AND NOT has_function_privilege('public', p.oid, 'EXECUTE')
    UNION ALL
    SELECT 5, format('may create objects in schema %s, which PUBLIC may not', n.oid::regnamespace)
      FROM pg_namespace n
     WHERE n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
       AND has_schema_privilege(role, n.oid, 'CREATE')
       AND NOT has_schema_privilege('public', n.oid, 'CREATE')
    UNION ALL
    SELECT 6, 'may create schemas in this database, which PUBLIC may not'
     WHERE has_database_privilege(role, current_database(), 'CREATE')
       AND NOT has_database_privilege('public', current_database(), 'CREATE')
)
SELECT why FROM reasons ORDER BY o, why LIMIT 1
$$;
