------------------------------------------------------------------------------
-- Keys: create, rotate, verify (C)
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal.apikey_create(
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
SELECT apikeys_internal.publish('apikey_create', 'Create an API key; the returned api_key is shown once and never stored.');

CREATE FUNCTION apikeys_internal.apikey_create_many(
    tenant     text,
    names      text[],
    scopes     text[] DEFAULT '{}',
    expires_at timestamptz DEFAULT NULL,
    prefix     text DEFAULT 'ak')
    RETURNS TABLE (key_id uuid, api_key text, hint text, name text)
    LANGUAGE C VOLATILE SECURITY DEFINER ROWS 1000
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikey_create_many_1_1';   -- 1.1: the scope registry
SELECT apikeys_internal.publish('apikey_create_many', 'Create one key per name in one call (up to 1,000,000), audited; each api_key is shown once.');

CREATE FUNCTION apikeys_internal.apikey_rotate(
    key_id uuid,
    grace  interval DEFAULT '0',
    OUT key_id     uuid,
    OUT api_key    text,
    OUT hint       text,
    OUT key_prefix text,
    OUT expires    timestamptz,
    OUT created_at timestamptz)
    RETURNS record
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikey_rotate';
SELECT apikeys_internal.publish('apikey_rotate', 'Issue a new secret for a key; the old one dies at commit (grace 0) or after the grace period.');

CREATE FUNCTION apikeys.apikey_verify(
    api_key         text,
    required_scopes text[] DEFAULT NULL,
    client_addr     inet DEFAULT NULL)
    RETURNS apikeys.verification
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'apikey_verify';
COMMENT ON FUNCTION apikeys.apikey_verify(text, text[], inet) IS 'Check a presented key; returns a verdict, never raises for a bad key.';
-- 1.1: the same with a cost, charged to every limit and the usage cap (0:
-- check without charging).  All four arguments: an overload with defaults
-- would make apikey_verify(key) ambiguous.
CREATE FUNCTION apikeys.apikey_verify(
    api_key         text,
    required_scopes text[],
    client_addr     inet,
    cost            integer)
    RETURNS apikeys.verification
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'apikeys_verify_1_1';
COMMENT ON FUNCTION apikeys.apikey_verify(text, text[], inet, integer) IS 'Check a presented key and charge cost (0: check only) to its limits and usage cap; never raises for a bad key.';

------------------------------------------------------------------------------
-- Key lifecycle (PL/pgSQL)
------------------------------------------------------------------------------

-- Lock the key and return its row, if the acting role may manage its tenant.
-- An unknown key and another tenant's key take the same path to the same
-- error (message, context and all), so neither tells the other apart.
CREATE FUNCTION apikeys_internal._lock_key(p_key_id uuid, p_action text) RETURNS apikeys.credential
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential;
    owner_tenant text;   -- for the server log only
BEGIN
    IF p_key_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'invalid_key_id: key_id must not be NULL';
    END IF;
    SELECT * INTO k FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) p_key_id;
    owner_tenant := k.tenant;
    IF FOUND AND apikeys_internal._may_manage(k.tenant) THEN
        -- FOR UPDATE only now: a foreign key is never locked (nor waited for)
        SELECT * INTO k FROM apikeys.credential c
         WHERE c.key_id OPERATOR(pg_catalog.=) p_key_id FOR UPDATE;
    ELSE
        k := NULL;
    END IF;
    IF k.key_id IS NULL THEN   -- unknown, foreign, or deleted while we waited
        PERFORM apikeys_internal._deny(p_action, owner_tenant, p_key_id, '42704',
            format('key_not_found: no API key with id %s', p_key_id));
    END IF;
    RETURN k;
END;
$$;

CREATE FUNCTION apikeys_internal._require_not_revoked(k apikeys.credential, p_action text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF k.status OPERATOR(pg_catalog.=) 'revoked' THEN
        PERFORM apikeys_internal._deny(p_action, k.tenant, k.key_id, '55000',
            format('key_revoked: API key %s is revoked', k.key_id),
            'Revocation is permanent; create a new key.');
    END IF;
END;
$$;

CREATE FUNCTION apikeys_internal._require_active_tenant(p_tenant text, p_action text, p_key_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM apikeys.tenant t
     WHERE t.tenant OPERATOR(pg_catalog.=) p_tenant AND t.active;
    IF NOT FOUND THEN
        PERFORM apikeys_internal._deny(p_action, p_tenant, p_key_id, '55000',
            format('tenant_inactive: tenant "%s" is inactive', p_tenant),
            'Reactivate it with apikeys.tenant_update(tenant, active => true).');
    END IF;
END;
$$;

CREATE FUNCTION apikeys_internal.apikey_revoke(key_id uuid, reason text DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_revoke');
BEGIN
    IF char_length(reason) > 2000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_reason: reason must be at most 2000 characters';
    END IF;
    -- Revoking twice is a no-op: the first time and reason stand.
    IF k.status OPERATOR(pg_catalog.<>) 'revoked' THEN
        UPDATE apikeys.credential c
           SET status = 'revoked', revoked_at = now(), revoked_reason = reason, updated_at = now()
         WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
        -- Secrets still in rotation grace die with the key.
        DELETE FROM apikeys.secret s
         WHERE s.key_id OPERATOR(pg_catalog.=) k.key_id AND s.valid_until IS NOT NULL;
    END IF;
END;
$$;
SELECT apikeys_internal.publish('apikey_revoke', 'Revoke a key for good: it verifies as revoked from commit on.');

CREATE FUNCTION apikeys_internal.apikey_disable(key_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_disable');
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, 'key_disable');
    IF k.status OPERATOR(pg_catalog.=) 'active' THEN
        UPDATE apikeys.credential c SET status = 'disabled', updated_at = now()
         WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
    END IF;
END;
$$;
SELECT apikeys_internal.publish('apikey_disable', 'Suspend a key (verifies as disabled) until apikey_enable.');

CREATE FUNCTION apikeys_internal.apikey_enable(key_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_enable');
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, 'key_enable');
    PERFORM apikeys_internal._require_active_tenant(k.tenant, 'key_enable', k.key_id);
    IF k.status OPERATOR(pg_catalog.=) 'disabled' THEN
        UPDATE apikeys.credential c SET status = 'active', updated_at = now()
         WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
    END IF;
END;
$$;
SELECT apikeys_internal.publish('apikey_enable', 'Re-enable a disabled key.');

CREATE FUNCTION apikeys_internal.apikey_update(
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
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_update');
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, 'key_update');
    PERFORM apikeys_internal._require_active_tenant(k.tenant, 'key_update', k.key_id);
    -- NULL leaves a field unchanged; expires_at => 'infinity' removes the expiry.
    -- Scopes the key gains must be in its tenant's registry (those it keeps need not).
    UPDATE apikeys.credential c SET
        name        = coalesce(apikeys_internal._check_name(apikey_update.name), c.name),
        description = coalesce(apikeys_internal._check_description(apikey_update.description), c.description),
        scopes      = coalesce(CASE WHEN apikey_update.scopes IS NOT NULL
                                    THEN apikeys_internal.check_scopes(k.tenant, apikey_update.scopes, k.scopes) END,
                               c.scopes),
        expires_at  = CASE WHEN apikey_update.expires_at IS NULL THEN c.expires_at
                           WHEN apikey_update.expires_at OPERATOR(pg_catalog.=) 'infinity' THEN NULL
                           ELSE apikeys_internal._check_expiry(apikey_update.expires_at) END,
        metadata    = coalesce(apikeys_internal._check_metadata(apikey_update.metadata), c.metadata),
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
SELECT apikeys_internal.publish('apikey_update', 'Change name, description, scopes, expiry or metadata of a key; NULL leaves a field as it is.');

CREATE FUNCTION apikeys_internal.apikey_delete(key_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_delete');
BEGIN
    DELETE FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
    DELETE FROM apikeys.usage u WHERE u.key_id OPERATOR(pg_catalog.=) k.key_id;
END;
$$;
SELECT apikeys_internal.publish('apikey_delete', 'Delete a key and all its secrets; it verifies as not_found from commit on.');

------------------------------------------------------------------------------
-- Tenants
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal.tenant_create(tenant text, display_name text DEFAULT NULL)
    RETURNS apikeys.tenant
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t apikeys.tenant;
BEGIN
    PERFORM apikeys_internal._authorize(NULL, 'tenant_create');
    IF display_name IS NOT NULL AND char_length(display_name) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_display_name: display_name must be 1 to 200 characters';
    END IF;
    INSERT INTO apikeys.tenant (tenant, display_name)
    VALUES (apikeys_internal._tenant_arg(tenant), coalesce(display_name, tenant))
    ON CONFLICT DO NOTHING
    RETURNING * INTO t;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = format('tenant_exists: tenant "%s" already exists', tenant);
    END IF;
    RETURN t;
END;
$$;
SELECT apikeys_internal.publish('tenant_create', 'Create a tenant.');

CREATE FUNCTION apikeys_internal.tenant_update(tenant text, display_name text DEFAULT NULL, active boolean DEFAULT NULL)
    RETURNS apikeys.tenant
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t apikeys.tenant;
BEGIN
    PERFORM apikeys_internal._authorize(NULL, 'tenant_update');
    PERFORM apikeys_internal._tenant_arg(tenant);   -- before any message echoes it
    IF display_name IS NOT NULL AND char_length(display_name) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_display_name: display_name must be 1 to 200 characters';
    END IF;
    UPDATE apikeys.tenant x SET
        display_name = coalesce(tenant_update.display_name, x.display_name),
        active       = coalesce(tenant_update.active, x.active),
        updated_at   = now()
     WHERE x.tenant OPERATOR(pg_catalog.=) tenant_update.tenant
    RETURNING * INTO t;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('tenant_not_found: tenant "%s" does not exist', tenant);
    END IF;
    RETURN t;
END;
$$;
SELECT apikeys_internal.publish('tenant_update', 'Rename, deactivate (keys verify as tenant_inactive) or reactivate a tenant.');

CREATE FUNCTION apikeys_internal.tenant_delete(tenant text, force boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM apikeys_internal._authorize(NULL, 'tenant_delete');
    PERFORM apikeys_internal._tenant_arg(tenant);   -- before any message echoes it
    PERFORM 1 FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) tenant_delete.tenant FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('tenant_not_found: tenant "%s" does not exist', tenant);
    END IF;
    SELECT count(*) INTO n FROM apikeys.credential c WHERE c.tenant OPERATOR(pg_catalog.=) tenant_delete.tenant;
    IF n OPERATOR(pg_catalog.>) 0 AND NOT coalesce(force, false) THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = format('tenant_has_keys: tenant "%s" still has %s API keys', tenant, n),
            HINT = 'Delete its keys first, or call tenant_delete(tenant, force => true).';
    END IF;
    DELETE FROM apikeys.credential c WHERE c.tenant OPERATOR(pg_catalog.=) tenant_delete.tenant;
    DELETE FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) tenant_delete.tenant;
END;
$$;
SELECT apikeys_internal.publish('tenant_delete', 'Delete a tenant; with force => true its keys too.');

------------------------------------------------------------------------------
-- Views (never a digest)
------------------------------------------------------------------------------

-- Rows of apikeys.keys: the visible tenants' keys only (apikeys.tenants
-- explains why a reader function).
CREATE FUNCTION apikeys_internal.read_keys()
    RETURNS TABLE (key_id uuid, tenant text, name text, description text, prefix text, hint text,
                   scopes text[], metadata jsonb, status text, expires_at timestamptz,
                   created_by name, created_at timestamptz, updated_at timestamptz,
                   rotated_at timestamptz, rotation_count integer,
                   revoked_at timestamptz, revoked_reason text,
                   allowed_ips cidr[], rate_limit integer, rate_window interval,
                   usage_limit bigint, usage_period interval, secrets_in_grace bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
BEGIN
    RETURN QUERY
    SELECT c.key_id, c.tenant, c.name, c.description, c.prefix,
           (SELECT s.hint FROM apikeys.secret s
             WHERE s.key_id OPERATOR(pg_catalog.=) c.key_id AND s.valid_until IS NULL) AS hint,
           c.scopes, c.metadata, c.status, c.expires_at,
           c.created_by, c.created_at, c.updated_at, c.rotated_at, c.rotation_count,
           c.revoked_at, c.revoked_reason,
           c.allowed_ips, c.rate_limit, c.rate_window, c.usage_limit, c.usage_period,
           (SELECT count(*) FROM apikeys.secret s
             WHERE s.key_id OPERATOR(pg_catalog.=) c.key_id AND s.valid_until IS NOT NULL
               AND s.valid_until OPERATOR(pg_catalog.>) now()) AS secrets_in_grace
      FROM apikeys.credential c
     WHERE v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;
SELECT apikeys_internal.publish('read_keys', 'Rows of apikeys.keys: the keys of the tenants the caller may read.');
CREATE VIEW apikeys.keys WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_keys();
COMMENT ON VIEW apikeys.keys IS 'One row per API key with its current hint; no secret or digest.';
