------------------------------------------------------------------------------
-- Scope registry: the scopes a tenant's keys may be given
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
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_row_change();
ALTER TABLE apikeys.scope ENABLE ALWAYS TRIGGER audit_scope;
CREATE TRIGGER scope_no_truncate BEFORE TRUNCATE ON apikeys.scope
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._refuse_truncate();

-- Reads only, as for the other tables (50_rls_grants.sql): the global
-- entries and the visible tenants' entries.
ALTER TABLE apikeys.scope ENABLE ROW LEVEL SECURITY;
CREATE POLICY scope_read ON apikeys.scope FOR SELECT
    USING (tenant IS NULL
           OR tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys.visible_tenants('read')), ARRAY[tenant])));

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
    PERFORM apikeys_internal._check_tenant_id(tenant);   -- STRICT: NULL is the global registry
    PERFORM apikeys_internal._authorize(tenant, 'scope_define');
    sc := apikeys_internal._check_scope(scope);
    PERFORM apikeys_internal._check_description(description);
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
    VALUES (scope_define.tenant, sc, scope_define.description, apikeys_internal._acting_role())
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
    PERFORM apikeys_internal._check_tenant_id(tenant);   -- STRICT: NULL is the global registry
    PERFORM apikeys_internal._authorize(tenant, 'scope_drop');
    sc := apikeys_internal._check_scope(scope);
    -- waits for transactions whose new keys use the entry (FOR KEY SHARE),
    -- and for a tenant's concurrent drop of its own entry (below); a global
    -- drop locks no tenant's entry, so while it waits no tenant waits for it
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
        -- against a concurrent global drop of this scope: a global entry
        -- it already deleted makes this wait for it, then reads as gone;
        -- locked here first, it makes that drop's DELETE wait for this
        -- transaction, whose entry that drop then counts as gone
        PERFORM 1 FROM apikeys.scope g
         WHERE g.tenant IS NULL AND g.scope OPERATOR(pg_catalog.=) sc FOR KEY SHARE;
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
CREATE FUNCTION apikeys_internal.read_scopes() RETURNS SETOF apikeys.scope
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
BEGIN
    IF v IS NULL THEN
        RETURN QUERY SELECT * FROM apikeys.scope s;
    ELSE
        RETURN QUERY SELECT * FROM apikeys.scope s
                      WHERE coalesce(s.tenant, '') OPERATOR(pg_catalog.=) ANY (pg_catalog.array_prepend('', v));
    END IF;
END;
$$;
SELECT apikeys_internal.publish('read_scopes', 'Rows of apikeys.scopes: the global scope registry and the registries of the tenants the caller may read.');
CREATE VIEW apikeys.scopes WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_scopes();
COMMENT ON VIEW apikeys.scopes IS 'The scope registries the caller may read: the global one (tenant NULL) and its tenants''.';
COMMENT ON COLUMN apikeys.scope.tenant IS 'The tenant whose keys may hold the scope; NULL: an entry of the global registry, valid for every tenant.';
COMMENT ON COLUMN apikeys.scope.scope IS 'The scope, matched literally (a final ":*" is a wildcard a key may hold, not a pattern for the registry).';
COMMENT ON COLUMN apikeys.scope.description IS 'What the scope allows, for people (at most 2000 characters).';
COMMENT ON COLUMN apikeys.scope.created_by IS 'The role that defined the entry.';
COMMENT ON COLUMN apikeys.scope.created_at IS 'When the entry was defined.';
COMMENT ON COLUMN apikeys.scope.updated_at IS 'When the description last changed.';
COMMENT ON COLUMN apikeys.scopes.tenant IS 'The tenant whose keys may hold the scope; NULL: an entry of the global registry, valid for every tenant.';
COMMENT ON COLUMN apikeys.scopes.scope IS 'The scope, matched literally (a final ":*" is a wildcard a key may hold, not a pattern for the registry).';
COMMENT ON COLUMN apikeys.scopes.description IS 'What the scope allows, for people (at most 2000 characters).';
COMMENT ON COLUMN apikeys.scopes.created_by IS 'The role that defined the entry.';
COMMENT ON COLUMN apikeys.scopes.created_at IS 'When the entry was defined.';
COMMENT ON COLUMN apikeys.scopes.updated_at IS 'When the description last changed.';

-- The registry privileges that go with a tenant grant (grant_tenant()).
CREATE FUNCTION apikeys_internal._grant_scope_privileges(role_name name, tenant text, privilege text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT SELECT ON apikeys.scopes TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.read_scopes() TO %I', role_name);
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
