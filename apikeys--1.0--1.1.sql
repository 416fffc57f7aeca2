/* apikeys--1.0--1.1.sql - upgrade apikeys from 1.0 to 1.1 */

\echo Use "ALTER EXTENSION apikeys UPDATE TO '1.1'" to load this file. \quit

-- Every schema change made after 1.0 is here as well as in src/sql/: after
-- this script a 1.0 database has exactly the schema (objects, definitions,
-- privileges, comments) of a fresh 1.1 install; test/t/upgrade.sh checks it.
-- The library serves both: a C function that 1.0's SQL calls keeps its
-- symbol and its contract, and a changed contract gets a new symbol
-- (apikeys_<name>_1_1), as pg_stat_statements does.

------------------------------------------------------------------------------
-- Catalog tidy: the internal helpers leave schema apikeys for
-- apikeys_internal (USAGE granted to no one), so that \df apikeys.* lists
-- what users call.  The readers behind the views, the row-level policies'
-- helper and the PostgREST gate are granted to roles (the gate and the
-- policies' helper are called by name or by PUBLIC), so they stay in apikeys
-- under names without the underscore; the readers' bodies are renamed with
-- them (an entry point's body has its name).  SET SCHEMA and RENAME keep each
-- function's OID, privileges and comment, and what refers to it by OID
-- (policies, views, triggers, CHECK constraints) follows; the SQL and
-- PL/pgSQL functions whose bodies name a moved function are re-created
-- below with their text in src/sql/.
------------------------------------------------------------------------------

ALTER FUNCTION apikeys._acting_role() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._check_tenant_id(text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._tenant_arg(text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._check_name(text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._check_description(text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._normalize_scopes(text[]) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._check_expiry(timestamp with time zone) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._check_metadata(jsonb) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._binding_for_caller(boolean) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._context_source() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._context_actor() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._context_request_id() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._transaction_setting(text,integer) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._bulk_loading() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._is_superuser(name) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._role_may(name,text,text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._deny(text,text,uuid,text,text,text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._may_manage(text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._authorize(text,text,uuid) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._json_setting(text,text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._actor() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._request_id() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._audit_hash(apikeys.audit) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._audit_chain() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._audit_purging() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._audit_append_only() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._audit_write(text,text,uuid,jsonb) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._audit_row_change() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._refuse_truncate() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._audit_since(text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._audit_of(text,bigint,integer,uuid) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._audit_chains() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._audit_purge_rows(timestamp with time zone,interval) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._lock_key(uuid,text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._require_not_revoked(apikeys.credential,text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._require_active_tenant(text,text,uuid) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._check_role(name) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._check_privilege(text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._vault_fingerprint(text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._vault_key_state() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._vault_seal(uuid,text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._vault_open(uuid,bytea,text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._vault_rewrap(uuid,bytea,text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._vault_lock_slot(text,text,text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._vault_service(text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._vault_check_name(text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._vault_may(text,text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._vault_authorize(text,text,text) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._vault_find(uuid,text,text,boolean) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._vault_check_one(apikeys.vault_secret) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._changed() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._verification_totals() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._pending_usage(uuid) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._runtime() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._postgrest_role_map_check() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._postgrest_config_audit() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._postgrest_key(jsonb,text[]) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._role_skips_rls(oid) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._role_confinement_scan(oid) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._role_confinement_cached(oid) SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._postgrest_limits() SET SCHEMA apikeys_internal;
ALTER FUNCTION apikeys._postgrest_log_denied(integer,text,text,uuid,text,text,text) SET SCHEMA apikeys_internal;

ALTER FUNCTION apikeys._visible_tenants(text) RENAME TO visible_tenants;
ALTER FUNCTION apikeys_internal._visible_tenants(text) RENAME TO visible_tenants;
ALTER FUNCTION apikeys._read_audit() RENAME TO read_audit;
ALTER FUNCTION apikeys_internal._read_audit() RENAME TO read_audit;
ALTER FUNCTION apikeys._read_keys() RENAME TO read_keys;
ALTER FUNCTION apikeys_internal._read_keys() RENAME TO read_keys;
ALTER FUNCTION apikeys._read_tenants() RENAME TO read_tenants;
ALTER FUNCTION apikeys_internal._read_tenants() RENAME TO read_tenants;
ALTER FUNCTION apikeys._read_grants() RENAME TO read_grants;
ALTER FUNCTION apikeys_internal._read_grants() RENAME TO read_grants;
ALTER FUNCTION apikeys._read_vault_secrets() RENAME TO read_vault_secrets;
ALTER FUNCTION apikeys_internal._read_vault_secrets() RENAME TO read_vault_secrets;
ALTER FUNCTION apikeys._read_key_usage() RENAME TO read_key_usage;
ALTER FUNCTION apikeys_internal._read_key_usage() RENAME TO read_key_usage;
ALTER FUNCTION apikeys._postgrest_gate() RENAME TO postgrest_gate;

-- A view names its function scan after the function: re-created, the views
-- over the renamed readers read as those of a fresh install.
CREATE OR REPLACE VIEW apikeys.audit_log WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_audit();
CREATE OR REPLACE VIEW apikeys.keys WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_keys();
CREATE OR REPLACE VIEW apikeys.tenants WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_tenants();
CREATE OR REPLACE VIEW apikeys.tenant_grants WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_grants();
CREATE OR REPLACE VIEW apikeys.vault_secrets WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_vault_secrets();
CREATE OR REPLACE VIEW apikeys.key_usage WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_key_usage();

-- A policy's subquery names its column after the function: set again, the
-- policies over the renamed visible_tenants() read as those of a fresh install.
ALTER POLICY role_tenant_read ON apikeys.role_tenant
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro
                    WHERE ro.rolname OPERATOR(pg_catalog.=) role_tenant.role_name
                      AND pg_catalog.pg_has_role(current_user, ro.oid, 'USAGE'))
           OR (SELECT apikeys.visible_tenants('read')) IS NULL);
ALTER POLICY tenant_read ON apikeys.tenant
    USING (tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys.visible_tenants('read')), ARRAY[tenant])));
ALTER POLICY credential_read ON apikeys.credential
    USING (tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys.visible_tenants('read')), ARRAY[tenant])));
ALTER POLICY audit_read ON apikeys.audit
    USING (tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys.visible_tenants('audit')), ARRAY[tenant])));
ALTER POLICY vault_secret_read ON apikeys.vault_secret
    USING (tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys.visible_tenants('read')), ARRAY[tenant])));

CREATE OR REPLACE FUNCTION apikeys_internal.visible_tenants(need text) RETURNS text[]
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

CREATE OR REPLACE FUNCTION apikeys_internal._deny(p_action text, p_tenant text, p_key_id uuid,
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

CREATE OR REPLACE FUNCTION apikeys_internal._may_manage(p_tenant text) RETURNS boolean
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

CREATE OR REPLACE FUNCTION apikeys_internal._authorize(p_tenant text, p_action text, p_key_id uuid DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION apikeys_internal._json_setting(name text, field text) RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := apikeys_internal._transaction_setting(name, 16384);
BEGIN
    IF v IS NULL THEN
        RETURN NULL;   -- the usual case: no subtransaction for nothing to parse
    END IF;
    BEGIN
        RETURN nullif(v::jsonb OPERATOR(pg_catalog.->>) field, '');
    EXCEPTION WHEN OTHERS THEN
        RETURN NULL;
    END;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._actor() RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := coalesce(apikeys_internal._context_actor(),
                       apikeys_internal._transaction_setting('apikeys.actor', 16384),
                       apikeys_internal._json_setting('request.jwt.claims', 'sub'));
BEGIN
    IF length(v) OPERATOR(pg_catalog.>) 200 THEN
        RAISE WARNING 'apikeys_setting_ignored: the actor is longer than 200 characters';
        RETURN NULL;
    END IF;
    RETURN v;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._request_id() RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := coalesce(apikeys_internal._context_request_id(),
                       apikeys_internal._transaction_setting('apikeys.request_id', 16384),
                       apikeys_internal._json_setting('request.headers', 'x-request-id'));
BEGIN
    IF length(v) OPERATOR(pg_catalog.>) 200 THEN
        RAISE WARNING 'apikeys_setting_ignored: the request id is longer than 200 characters';
        RETURN NULL;
    END IF;
    RETURN v;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._audit_append_only() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' AND apikeys_internal._audit_purging() THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = format('audit_append_only: %s on apikeys.audit is not allowed', TG_OP),
        HINT = 'Old rows leave only through apikeys.audit_purge().';
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._audit_write(p_action text, p_tenant text, p_key_id uuid, p_detail jsonb)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- chain, audit_id, at, prev_hash and row_hash come from the chain trigger
    INSERT INTO apikeys.audit (tenant, key_id, action, db_role, session_role, actor,
                               request_id, client_addr, application_name, txid, detail)
    VALUES (p_tenant, p_key_id, p_action, apikeys_internal._acting_role(), session_user, apikeys_internal._actor(),
            apikeys_internal._request_id(), inet_client_addr(), current_setting('application_name'),
            pg_current_xact_id(), p_detail);
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._audit_row_change() RETURNS trigger
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
    IF apikeys_internal._bulk_loading() THEN
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
    PERFORM apikeys_internal._audit_write(act, t, k, detail);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._audit_of(t text, before_id bigint, max_rows integer, key_id uuid)
    RETURNS SETOF apikeys.audit
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM apikeys.audit a
     WHERE a.chain OPERATOR(pg_catalog.=) t
       AND a.audit_id OPERATOR(pg_catalog.>=) apikeys_internal._audit_since(t)
       AND a.audit_id OPERATOR(pg_catalog.<) coalesce(before_id, 9223372036854775807)
       AND (_audit_of.key_id IS NULL OR a.key_id OPERATOR(pg_catalog.=) _audit_of.key_id)
     ORDER BY a.audit_id DESC LIMIT max_rows
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._audit_chains() RETURNS SETOF text
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('audit');
BEGIN
    IF v IS NULL THEN
        -- one index probe per chain, however long the chains
        RETURN QUERY WITH RECURSIVE c(chain) AS (
            (SELECT a.chain FROM apikeys.audit a ORDER BY a.chain LIMIT 1)
            UNION ALL
            SELECT (SELECT a.chain FROM apikeys.audit a WHERE a.chain OPERATOR(pg_catalog.>) c.chain
                     ORDER BY a.chain LIMIT 1)
              FROM c WHERE c.chain IS NOT NULL)
        SELECT c.chain FROM c WHERE c.chain IS NOT NULL;
    ELSE
        RETURN QUERY SELECT t FROM unnest(v) t ORDER BY 1;
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.read_audit() RETURNS SETOF apikeys.audit
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 1000
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('audit');
BEGIN
    IF v IS NULL THEN
        RETURN QUERY SELECT * FROM apikeys.audit a;
    ELSE
        RETURN QUERY SELECT a.* FROM unnest(v) t(tenant)
                       CROSS JOIN LATERAL apikeys_internal._audit_of(t.tenant, NULL, NULL, NULL) a;
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.audit_log_page(tenant text, before_id bigint DEFAULT NULL,
                                                max_rows integer DEFAULT 100, key_id uuid DEFAULT NULL)
    RETURNS SETOF apikeys.audit
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('audit');
BEGIN
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_max_rows: max_rows must be between 1 and 10000';
    END IF;
    IF v IS NULL THEN
        RETURN QUERY SELECT * FROM apikeys.audit a
                      WHERE a.chain OPERATOR(pg_catalog.=) coalesce(audit_log_page.tenant, '')
                        AND a.audit_id OPERATOR(pg_catalog.<) coalesce(before_id, 9223372036854775807)
                        AND (audit_log_page.key_id IS NULL OR a.key_id OPERATOR(pg_catalog.=) audit_log_page.key_id)
                      ORDER BY a.audit_id DESC LIMIT max_rows;
    ELSIF tenant OPERATOR(pg_catalog.=) ANY (v) THEN
        RETURN QUERY SELECT * FROM apikeys_internal._audit_of(tenant, before_id, max_rows, audit_log_page.key_id);
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.audit_check(
    OUT ok boolean, OUT rows_checked bigint, OUT first_bad_chain text, OUT first_bad_id bigint, OUT problem text)
    RETURNS record
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text;
    a apikeys.audit;
    anchor apikeys.audit;
    purged apikeys.audit;
    next_id bigint;
    next_prev bytea;
    scoped boolean := apikeys.visible_tenants('audit') IS NOT NULL;
    since bigint;
BEGIN
    ok := true;
    rows_checked := 0;
    FOR c IN SELECT x FROM apikeys_internal._audit_chains() x LOOP
        next_id := 1;
        next_prev := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
        -- after a purge: start from the anchor, which must hold the whole
        -- newest purged row, hashing to what it says, at least a day older
        -- than the anchor itself (a forged anchor cannot name seconds-old rows)
        -- and the anchor dated no later than the check and every row after
        -- it (with 5 minutes for clock steps): an anchor dated a day ahead,
        -- to pass the day rule, is refused until that day comes, and for
        -- ever once a row of that day follows it (a forged row right after
        -- it, dated as far ahead, does not hide the rows after that)
        SELECT * INTO anchor FROM apikeys.audit p
         WHERE p.chain OPERATOR(pg_catalog.=) c AND p.action OPERATOR(pg_catalog.=) 'audit_purged'
         ORDER BY p.audit_id DESC LIMIT 1;
        IF anchor.audit_id IS NOT NULL AND
           (anchor.at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.+) interval '5 minutes') OR
            anchor.at OPERATOR(pg_catalog.>) (SELECT pg_catalog.min(n.at) OPERATOR(pg_catalog.+) interval '5 minutes' FROM apikeys.audit n
                                               WHERE n.chain OPERATOR(pg_catalog.=) c
                                                 AND n.audit_id OPERATOR(pg_catalog.>) anchor.audit_id)) THEN
            ok := false;
            first_bad_chain := c;
            first_bad_id := anchor.audit_id;
            problem := 'the purge anchor is dated after the check or a row that follows it';
            RETURN;
        END IF;
        IF anchor.audit_id IS NOT NULL THEN
            BEGIN
                purged := jsonb_populate_record(NULL::apikeys.audit, anchor.detail OPERATOR(pg_catalog.->) 'last_purged_row');
            EXCEPTION WHEN others THEN
                purged := NULL;
            END;
            next_id := (anchor.detail OPERATOR(pg_catalog.->>) 'last_purged_id')::bigint OPERATOR(pg_catalog.+) 1;
            next_prev := decode(anchor.detail OPERATOR(pg_catalog.->>) 'last_purged_hash', 'hex');
            -- every part must hold (IS NOT TRUE): a missing field is a NULL
            -- comparison, which must not pass for a true one
            IF (purged.audit_id IS NOT NULL AND purged.chain OPERATOR(pg_catalog.=) c
                AND purged.audit_id OPERATOR(pg_catalog.=) (next_id OPERATOR(pg_catalog.-) 1)
                AND purged.row_hash OPERATOR(pg_catalog.=) next_prev
                AND apikeys_internal._audit_hash(purged) OPERATOR(pg_catalog.=) next_prev
                AND purged.at OPERATOR(pg_catalog.<) (anchor.detail OPERATOR(pg_catalog.->>) 'cutoff')::timestamptz
                AND (anchor.detail OPERATOR(pg_catalog.->>) 'cutoff')::timestamptz
                    OPERATOR(pg_catalog.<=) (anchor.at OPERATOR(pg_catalog.-) interval '1 day')) IS NOT TRUE THEN
                ok := false;
                first_bad_chain := c;
                first_bad_id := anchor.audit_id;
                problem := 'the purge anchor does not prove what it purged';
                RETURN;
            END IF;
        END IF;
        -- a one-tenant auditor sees its tenant's chain from the tenant's
        -- latest creation on: a tenant id reused shows nothing of before
        IF scoped THEN
            since := apikeys_internal._audit_since(c);
            IF since OPERATOR(pg_catalog.>) next_id THEN
                next_id := since;
                SELECT x.prev_hash INTO next_prev FROM apikeys.audit x
                 WHERE x.chain OPERATOR(pg_catalog.=) c AND x.audit_id OPERATOR(pg_catalog.=) since;
            END IF;
        END IF;
        FOR a IN SELECT * FROM apikeys.audit x WHERE x.chain OPERATOR(pg_catalog.=) c
                                                 AND x.audit_id OPERATOR(pg_catalog.>=) CASE WHEN scoped THEN next_id ELSE 0 END
                  ORDER BY x.audit_id LOOP
            rows_checked := rows_checked OPERATOR(pg_catalog.+) 1;
            IF a.audit_id OPERATOR(pg_catalog.>) next_id THEN
                problem := format('rows %s to %s are missing', next_id, a.audit_id OPERATOR(pg_catalog.-) 1);
            ELSIF a.audit_id OPERATOR(pg_catalog.<) next_id THEN
                problem := 'the row is older than the chain''s start';
            ELSIF a.prev_hash OPERATOR(pg_catalog.<>) next_prev THEN
                problem := CASE WHEN rows_checked OPERATOR(pg_catalog.=) 1 OR a.audit_id OPERATOR(pg_catalog.=) 1
                                THEN 'first row does not link to the chain start'
                                ELSE 'prev_hash does not match the previous row' END;
            ELSIF a.row_hash OPERATOR(pg_catalog.<>) apikeys_internal._audit_hash(a) THEN
                problem := 'row content does not match its hash';
            END IF;
            IF problem IS NOT NULL THEN
                ok := false;
                first_bad_chain := c;
                first_bad_id := a.audit_id;
                RETURN;
            END IF;
            next_id := a.audit_id OPERATOR(pg_catalog.+) 1;
            next_prev := a.row_hash;
        END LOOP;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.audit_head()
    RETURNS TABLE (chain text, audit_id bigint, row_hash text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT c.x, h.audit_id, encode(h.row_hash, 'hex')
      FROM apikeys_internal._audit_chains() c(x)
      CROSS JOIN LATERAL (SELECT a.audit_id, a.row_hash FROM apikeys.audit a
                           WHERE a.chain OPERATOR(pg_catalog.=) c.x
                           ORDER BY a.audit_id DESC LIMIT 1) h
     ORDER BY 1;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._audit_purge_rows(cutoff timestamptz, older_than interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    chk record;
    c text;
    cut apikeys.audit;
    n bigint;
    total bigint := 0;
BEGIN
    IF NOT apikeys_internal._audit_purging() THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'audit_append_only: call apikeys.audit_purge()';
    END IF;
    -- never purge evidence: a broken chain stays until someone looks at it
    SELECT * INTO chk FROM apikeys.audit_check();
    IF NOT chk.ok THEN
        RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
            MESSAGE = format('audit_chain_broken: chain "%s" row %s: %s', chk.first_bad_chain, chk.first_bad_id, chk.problem),
            HINT = 'apikeys.audit_check() shows the first broken row; the purge refuses to delete evidence of tampering.';
    END IF;
    FOR c IN SELECT x FROM apikeys_internal._audit_chains() x LOOP
        SELECT * INTO cut FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.at OPERATOR(pg_catalog.<) cutoff
         ORDER BY a.audit_id DESC LIMIT 1;
        CONTINUE WHEN cut.audit_id IS NULL;
        SELECT count(*) INTO n FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.audit_id OPERATOR(pg_catalog.<=) cut.audit_id;
        -- the anchor carries the whole newest purged row, so a check can prove
        -- that what it names really was hashed, and at least a day old
        PERFORM apikeys_internal._audit_write('audit_purged', nullif(c, ''), NULL, jsonb_build_object(
            'rows', n, 'older_than', older_than, 'cutoff', cutoff, 'last_purged_id', cut.audit_id,
            'last_purged_hash', encode(cut.row_hash, 'hex'), 'last_purged_row', to_jsonb(cut)));
        DELETE FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.audit_id OPERATOR(pg_catalog.<=) cut.audit_id;
        total := total OPERATOR(pg_catalog.+) n;
    END LOOP;
    RETURN total;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._lock_key(p_key_id uuid, p_action text) RETURNS apikeys.credential
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

CREATE OR REPLACE FUNCTION apikeys_internal._require_not_revoked(k apikeys.credential, p_action text) RETURNS void
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

CREATE OR REPLACE FUNCTION apikeys_internal._require_active_tenant(p_tenant text, p_action text, p_key_id uuid) RETURNS void
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

CREATE OR REPLACE FUNCTION apikeys_internal.apikey_revoke(key_id uuid, reason text DEFAULT NULL) RETURNS void
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

CREATE OR REPLACE FUNCTION apikeys_internal.apikey_disable(key_id uuid) RETURNS void
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

CREATE OR REPLACE FUNCTION apikeys_internal.apikey_enable(key_id uuid) RETURNS void
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
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_update');
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, 'key_update');
    PERFORM apikeys_internal._require_active_tenant(k.tenant, 'key_update', k.key_id);
    -- NULL leaves a field unchanged; expires_at => 'infinity' removes the expiry.
    UPDATE apikeys.credential c SET
        name        = coalesce(apikeys_internal._check_name(apikey_update.name), c.name),
        description = coalesce(apikeys_internal._check_description(apikey_update.description), c.description),
        scopes      = coalesce(apikeys_internal._normalize_scopes(apikey_update.scopes), c.scopes),
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

CREATE OR REPLACE FUNCTION apikeys_internal.apikey_delete(key_id uuid) RETURNS void
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

CREATE OR REPLACE FUNCTION apikeys_internal.tenant_create(tenant text, display_name text DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION apikeys_internal.tenant_update(tenant text, display_name text DEFAULT NULL, active boolean DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION apikeys_internal.tenant_delete(tenant text, force boolean DEFAULT false) RETURNS void
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

CREATE OR REPLACE FUNCTION apikeys_internal.read_keys()
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

CREATE OR REPLACE FUNCTION apikeys_internal.read_tenants() RETURNS SETOF apikeys.tenant
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

CREATE OR REPLACE FUNCTION apikeys_internal.read_grants() RETURNS SETOF apikeys.role_tenant
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

CREATE OR REPLACE FUNCTION apikeys_internal.grant_verifier(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys_internal._check_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.apikey_verify(text, text[], inet),'
                   ' apikeys.authenticate(text, text[], inet, text, text), apikeys.current_tenant(),'
                   ' apikeys.current_key_id() TO %I', role_name);
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.grant_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
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
                   ' apikeys.tenant_grants, apikeys.key_usage TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.read_tenants(), apikeys.read_keys(),'
                   ' apikeys.read_audit(), apikeys.read_grants(), apikeys.read_key_usage(),'
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
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.revoke_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
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

CREATE OR REPLACE FUNCTION apikeys_internal.read_vault_secrets()
    RETURNS TABLE (id uuid, tenant text, owner_user text, service text, name text, active boolean,
                   last_used_at timestamptz, created_at timestamptz, updated_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
BEGIN
    RETURN QUERY
    SELECT s.id, s.tenant, s.owner_user, s.service, s.name, s.active, s.last_used_at, s.created_at, s.updated_at
      FROM apikeys.vault_secret s
     WHERE v IS NULL OR s.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._vault_may(p_tenant text, p_need text)
    RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text[];
BEGIN
    IF p_need OPERATOR(pg_catalog.=) 'manage' THEN
        RETURN apikeys_internal._may_manage(p_tenant);
    END IF;
    v := apikeys.visible_tenants('read');
    RETURN v IS NULL OR p_tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._vault_authorize(p_tenant text, p_action text, p_need text)
    RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name := apikeys_internal._acting_role();
BEGIN
    IF NOT apikeys_internal._vault_may(p_tenant, p_need) THEN
        PERFORM apikeys_internal._deny(p_action, NULL, NULL, '42501',
            format('permission_denied: role "%s" may not %s this tenant', r, p_need),
            'A superuser can allow it with apikeys.grant_tenant(role, tenant).');
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._vault_find(p_id uuid, p_action text, p_need text, p_lock boolean)
    RETURNS apikeys.vault_secret
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret;
    visible boolean;
BEGIN
    IF p_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'invalid_id: id must not be NULL';
    END IF;
    SELECT * INTO s FROM apikeys.vault_secret v WHERE v.id OPERATOR(pg_catalog.=) p_id;
    visible := FOUND AND apikeys_internal._vault_may(s.tenant, p_need);
    IF visible AND p_lock THEN
        -- locked only once authorized: a foreign row is never waited for
        SELECT * INTO s FROM apikeys.vault_secret v WHERE v.id OPERATOR(pg_catalog.=) p_id FOR UPDATE;
        visible := FOUND;
    END IF;
    IF NOT visible THEN
        PERFORM apikeys_internal._deny(p_action, s.tenant, p_id, '42704',
            format('vault_secret_not_found: no vault secret with id %s', p_id));
    END IF;
    RETURN s;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.vault_add(
    tenant     text,
    service    text,
    name       text,
    secret     text,
    owner_user text DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- the secret never a plan constant
AS $$
DECLARE
    r name := apikeys_internal._acting_role();
    su boolean;
    svc apikeys.vault_service;
    sealed record;
    new_id uuid := gen_random_uuid();
    visible boolean;
BEGIN
    su := apikeys_internal._is_superuser(r);
    -- An unknown tenant and one the role may not manage read the same (and
    -- neither is echoed: it could be a misplaced secret); only a superuser
    -- is told that a tenant does not exist.
    IF tenant IS NULL OR NOT EXISTS (SELECT 1 FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) vault_add.tenant) THEN
        IF su THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = 'tenant_not_found: no such tenant';
        END IF;
        visible := false;
    ELSE
        visible := apikeys_internal._may_manage(tenant);
    END IF;
    IF NOT visible THEN
        PERFORM apikeys_internal._deny('vault_add', NULL, NULL, '42501',
            format('permission_denied: role "%s" may not manage this tenant', r));
    END IF;
    PERFORM apikeys_internal._require_active_tenant(tenant, 'vault_add', NULL);
    PERFORM apikeys_internal._vault_check_name(name);
    IF owner_user IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro WHERE ro.rolname OPERATOR(pg_catalog.=) owner_user) THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = 'role_not_found: owner_user must name an existing role';
        END IF;
        IF NOT su AND owner_user OPERATOR(pg_catalog.<>) r::text THEN
            PERFORM apikeys_internal._deny('vault_add', tenant, NULL, '42501',
                format('vault_not_owner: role "%s" may add only secrets it owns itself', r),
                'Pass owner_user => NULL (the tenant) or your own role name.');
        END IF;
    END IF;
    svc := apikeys_internal._vault_service(service);
    IF secret IS NULL OR secret OPERATOR(pg_catalog.=) '' OR octet_length(secret) OPERATOR(pg_catalog.>) 4096 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'vault_invalid_secret: secret must be 1 to 4096 bytes';
    END IF;
    IF NOT (secret OPERATOR(pg_catalog.~) svc.format) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('vault_invalid_format: the secret does not have the format of service "%s"', svc.service),
            HINT = format('%s keys match %s', svc.display_name, svc.format);
    END IF;
    -- a simple expression: the secret reaches no statement (see Internals)
    sealed := apikeys_internal._vault_seal(new_id, secret);

    -- one active secret per owner and service: the new one replaces it
    PERFORM apikeys_internal._vault_lock_slot(tenant, owner_user, svc.service);
    UPDATE apikeys.vault_secret v SET active = false, updated_at = now()
     WHERE v.tenant OPERATOR(pg_catalog.=) vault_add.tenant
       AND v.owner_user IS NOT DISTINCT FROM vault_add.owner_user
       AND v.service OPERATOR(pg_catalog.=) svc.service AND v.active;
    INSERT INTO apikeys.vault_secret (id, tenant, owner_user, service, name, ciphertext, key_fp)
    VALUES (new_id, tenant, owner_user, svc.service, name, sealed.ciphertext, sealed.key_fp);
    RETURN new_id;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.vault_list(tenant text DEFAULT NULL)
    RETURNS SETOF apikeys.vault_secrets
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tenant IS NOT NULL THEN
        PERFORM apikeys_internal._vault_authorize(tenant, 'vault_list', 'read');
    END IF;
    RETURN QUERY
    SELECT v.* FROM apikeys.read_vault_secrets() v
     WHERE vault_list.tenant IS NULL OR v.tenant OPERATOR(pg_catalog.=) vault_list.tenant
     ORDER BY v.tenant, v.service, v.owner_user NULLS FIRST, v.active DESC, v.created_at, v.id;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.vault_get(id uuid)
    RETURNS apikeys.vault_secrets
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret := apikeys_internal._vault_find(id, 'vault_get', 'read', false);
    m apikeys.vault_secrets;
BEGIN
    SELECT s.id, s.tenant, s.owner_user, s.service, s.name, s.active, s.last_used_at, s.created_at, s.updated_at
      INTO m;
    RETURN m;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.vault_update(id uuid, name text DEFAULT NULL, active boolean DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret := apikeys_internal._vault_find(vault_update.id, 'vault_update', 'manage', true);
BEGIN
    IF name IS NOT NULL THEN
        PERFORM apikeys_internal._vault_check_name(name);
    END IF;
    IF name IS NULL AND active IS NULL THEN
        RETURN;
    END IF;
    IF active AND NOT s.active THEN
        -- reactivating replaces the owner's active secret for that service
        PERFORM apikeys_internal._require_active_tenant(s.tenant, 'vault_update', s.id);
        PERFORM apikeys_internal._vault_lock_slot(s.tenant, s.owner_user, s.service);
        UPDATE apikeys.vault_secret v SET active = false, updated_at = now()
         WHERE v.tenant OPERATOR(pg_catalog.=) s.tenant
           AND v.owner_user IS NOT DISTINCT FROM s.owner_user
           AND v.service OPERATOR(pg_catalog.=) s.service AND v.active
           AND v.id OPERATOR(pg_catalog.<>) s.id;
    END IF;
    UPDATE apikeys.vault_secret v
       SET name = coalesce(vault_update.name, v.name),
           active = coalesce(vault_update.active, v.active),
           updated_at = now()
     WHERE v.id OPERATOR(pg_catalog.=) s.id;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.vault_delete(id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret := apikeys_internal._vault_find(vault_delete.id, 'vault_delete', 'manage', true);
BEGIN
    DELETE FROM apikeys.vault_secret v WHERE v.id OPERATOR(pg_catalog.=) s.id;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.vault_reveal(id uuid) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- the plaintext never a plan constant
AS $$
DECLARE
    s apikeys.vault_secret := apikeys_internal._vault_find(vault_reveal.id, 'vault_reveal', 'manage', false);
    r name := apikeys_internal._acting_role();
    o record;
    detail jsonb;
BEGIN
    IF s.owner_user IS NOT NULL AND s.owner_user OPERATOR(pg_catalog.<>) r::text THEN
        PERFORM apikeys_internal._deny('vault_reveal', s.tenant, s.id, '42501',
            format('vault_not_owner: vault secret %s belongs to another role', s.id),
            'Only its owner_user may reveal it.');
    END IF;
    PERFORM apikeys_internal._require_active_tenant(s.tenant, 'vault_reveal', s.id);
    o := apikeys_internal._vault_open(s.id, s.ciphertext, s.key_fp);   -- o.plaintext only in simple expressions
    IF o.problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
            MESSAGE = format('vault_decrypt_failed: vault secret %s could not be decrypted', s.id),
            HINT = CASE o.problem WHEN 'master_key_mismatch'
                        THEN 'It was encrypted with another master key; a superuser can run apikeys.vault_check().'
                        ELSE 'The ciphertext is corrupt or the master key is wrong; a superuser can run apikeys.vault_check().' END;
    END IF;
    UPDATE apikeys.vault_secret v SET last_used_at = now() WHERE v.id OPERATOR(pg_catalog.=) s.id;
    detail := jsonb_build_object('service', s.service, 'name', s.name, 'owner_user', s.owner_user, 'active', s.active);
    PERFORM apikeys_internal._audit_write('vault_secret_revealed', s.tenant, s.id, detail);
    -- the server log keeps it even if the transaction rolls back
    RAISE LOG USING MESSAGE = 'apikeys_audit_vault_reveal ' || (detail OPERATOR(pg_catalog.||) jsonb_build_object(
        'at', clock_timestamp(), 'tenant', s.tenant, 'id', s.id,
        'db_role', r, 'session_role', session_user, 'actor', apikeys_internal._actor(),
        'request_id', apikeys_internal._request_id(), 'client_addr', inet_client_addr()))::text;
    RETURN o.plaintext;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._vault_check_one(s apikeys.vault_secret) RETURNS apikeys.vault_check_result
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- the plaintext never a plan constant
AS $$
DECLARE
    fmt text := (SELECT x.format FROM apikeys.vault_service x WHERE x.service OPERATOR(pg_catalog.=) s.service);
    o record := apikeys_internal._vault_open(s.id, s.ciphertext, s.key_fp);
    res apikeys.vault_check_result;
BEGIN
    res.id := s.id;
    res.tenant := s.tenant;
    res.service := s.service;
    res.name := s.name;
    res.problem := o.problem;
    IF res.problem IS NULL THEN
        -- a simple expression (no subquery): the plaintext reaches no statement
        IF NOT (o.plaintext OPERATOR(pg_catalog.~) fmt) THEN
            res.problem := 'invalid_format';
        ELSIF o.stale THEN
            res.problem := 'stale_master_key';
        END IF;
    END IF;
    res.ok := res.problem IS NULL;
    RETURN res;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.vault_check(id uuid DEFAULT NULL)
    RETURNS SETOF apikeys.vault_check_result
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret;
BEGIN
    IF id IS NOT NULL THEN
        s := apikeys_internal._vault_find(id, 'vault_check', 'read', false);
        PERFORM apikeys_internal._vault_key_state();   -- vault_master_key_missing
        RETURN NEXT apikeys_internal._vault_check_one(s);
        RETURN;
    END IF;
    PERFORM apikeys_internal._vault_key_state();
    FOR s IN SELECT v.* FROM apikeys.vault_secret v
              WHERE v.id IN (SELECT l.id FROM apikeys.vault_list() l)
              ORDER BY v.tenant, v.service, v.owner_user NULLS FIRST, v.active DESC, v.created_at, v.id LOOP
        RETURN NEXT apikeys_internal._vault_check_one(s);
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.vault_rotate_master_key()
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- no fingerprint or ciphertext as a plan constant
AS $$
DECLARE
    r name := apikeys_internal._acting_role();
    s apikeys.vault_secret;
    k record;
    w record;
    n bigint := 0;
BEGIN
    IF NOT coalesce(apikeys_internal._is_superuser(r), false) THEN
        PERFORM apikeys_internal._deny('vault_rotate_master_key', NULL, NULL, '42501',
            format('permission_denied: role "%s" may not rotate the vault master key', r),
            'Only superusers rotate the vault master key.');
    END IF;
    k := apikeys_internal._vault_key_state();   -- checks the current key itself

    LOCK TABLE apikeys.vault_secret IN EXCLUSIVE MODE;
    FOR s IN SELECT * FROM apikeys.vault_secret v WHERE v.key_fp OPERATOR(pg_catalog.<>) k.cur_fp ORDER BY v.id LOOP
        -- decrypted with the previous key and encrypted with the current one
        -- inside C: the plaintext and both keys stay out of SQL
        w := apikeys_internal._vault_rewrap(s.id, s.ciphertext, s.key_fp);
        IF w.ciphertext IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
                MESSAGE = format('vault_decrypt_failed: vault secret %s could not be decrypted with the old master key', s.id),
                HINT = 'Nothing was re-encrypted. apikeys.vault_check() lists the secrets that do not open.';
        END IF;
        UPDATE apikeys.vault_secret v
           SET ciphertext = w.ciphertext, key_fp = w.key_fp
         WHERE v.id OPERATOR(pg_catalog.=) s.id;
        n := n OPERATOR(pg_catalog.+) 1;
    END LOOP;
    -- no fingerprints here: they would let an audit reader test key guesses
    PERFORM apikeys_internal._audit_write('vault_master_key_rotated', NULL, NULL,
        jsonb_build_object('secrets', n));
    RETURN n;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.vault_service_register(service text, display_name text, format text DEFAULT NULL,
                                               alias_of text DEFAULT NULL)
    RETURNS apikeys.vault_service
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_service;
    target apikeys.vault_service;
BEGIN
    PERFORM apikeys_internal._authorize(NULL, 'vault_service_register');
    IF service IS NULL OR service !~ '^[a-z][a-z0-9_-]{1,62}$' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_service: service must be 2 to 63 characters: a-z first, then a-z, 0-9, _ or -';
    END IF;
    IF display_name IS NULL OR char_length(display_name) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_display_name: display_name must be 1 to 200 characters';
    END IF;
    IF (format IS NULL) OPERATOR(pg_catalog.=) (alias_of IS NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'vault_invalid_pattern: pass either a format or alias_of';
    END IF;
    IF format IS NOT NULL THEN
        IF char_length(format) NOT BETWEEN 2 AND 1000 OR format !~ '^\^.*[$]$' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'vault_invalid_pattern: format must be an anchored regular expression (^...$) of at most 1000 characters';
        END IF;
        BEGIN
            PERFORM '' OPERATOR(pg_catalog.~) format;
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'vault_invalid_pattern: format is not a valid regular expression: ' || SQLERRM;
        END;
    ELSE
        SELECT * INTO target FROM apikeys.vault_service v
         WHERE v.service OPERATOR(pg_catalog.=) vault_service_register.alias_of;
        IF NOT FOUND OR target.alias_of IS NOT NULL OR target.service OPERATOR(pg_catalog.=) vault_service_register.service THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'vault_invalid_pattern: alias_of must name a registered service that is not an alias';
        END IF;
    END IF;
    SELECT * INTO s FROM apikeys.vault_service v WHERE v.service OPERATOR(pg_catalog.=) vault_service_register.service FOR UPDATE;
    IF s.builtin THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('vault_service_builtin: service "%s" is built in and cannot be changed', s.service),
            HINT = 'Register a service under another name.';
    END IF;
    -- A format that changes under stored secrets would make vault_check() an
    -- oracle on them (one regular expression at a time): frozen while in use.
    IF FOUND AND (vault_service_register.format IS DISTINCT FROM s.format
                  OR vault_service_register.alias_of IS DISTINCT FROM s.alias_of)
       AND EXISTS (SELECT 1 FROM apikeys.vault_secret x
                    WHERE x.service OPERATOR(pg_catalog.=) s.service
                       OR x.service IN (SELECT a.service FROM apikeys.vault_service a
                                         WHERE a.alias_of OPERATOR(pg_catalog.=) s.service)) THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = format('vault_service_in_use: service "%s" still has secrets; its format cannot change', s.service),
            HINT = 'Register the new format under another service name, or delete the secrets first.';
    END IF;
    IF FOUND AND EXISTS (SELECT 1 FROM apikeys.vault_service x WHERE x.alias_of OPERATOR(pg_catalog.=) s.service)
       AND vault_service_register.alias_of IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = format('vault_service_in_use: service "%s" has aliases', s.service);
    END IF;
    INSERT INTO apikeys.vault_service AS v (service, display_name, format, alias_of)
    VALUES (vault_service_register.service, vault_service_register.display_name,
            vault_service_register.format, vault_service_register.alias_of)
    ON CONFLICT ON CONSTRAINT vault_service_pkey DO UPDATE
       SET display_name = excluded.display_name, format = excluded.format,
           alias_of = excluded.alias_of, updated_at = now()
    RETURNING * INTO s;
    RETURN s;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.vault_service_unregister(service text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_service;
BEGIN
    PERFORM apikeys_internal._authorize(NULL, 'vault_service_unregister');
    SELECT * INTO s FROM apikeys.vault_service v WHERE v.service OPERATOR(pg_catalog.=) vault_service_unregister.service FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = 'vault_service_not_found: no such vault service';
    END IF;
    IF s.builtin THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('vault_service_builtin: service "%s" is built in and cannot be changed', s.service);
    END IF;
    IF EXISTS (SELECT 1 FROM apikeys.vault_secret x WHERE x.service OPERATOR(pg_catalog.=) s.service)
       OR EXISTS (SELECT 1 FROM apikeys.vault_service x WHERE x.alias_of OPERATOR(pg_catalog.=) s.service) THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = format('vault_service_in_use: service "%s" still has secrets or aliases', s.service),
            HINT = 'Delete its secrets (apikeys.vault_delete) and aliases first.';
    END IF;
    DELETE FROM apikeys.vault_service v WHERE v.service OPERATOR(pg_catalog.=) s.service;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.grant_vault(role_name name, privilege text DEFAULT 'manage') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys_internal._check_privilege(privilege), apikeys_internal._check_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT SELECT ON apikeys.vault_service, apikeys.vault_secrets TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.vault_list(text), apikeys.vault_get(uuid),'
                   ' apikeys.vault_check(uuid), apikeys.current_tenant(), apikeys.read_vault_secrets() TO %I', role_name);
    IF privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.vault_add(text, text, text, text, text),'
                       ' apikeys.vault_update(uuid, text, boolean), apikeys.vault_delete(uuid),'
                       ' apikeys.vault_reveal(uuid),'
                       ' apikeys.vault_service_register(text, text, text, text),'
                       ' apikeys.vault_service_unregister(text) TO %I', role_name);
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.apikey_set_policy(
    key_id       uuid,
    allowed_ips  cidr[] DEFAULT NULL,
    rate_limit   integer DEFAULT NULL,
    rate_window  interval DEFAULT '1 minute',
    usage_limit  bigint DEFAULT NULL,
    usage_period interval DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_set_policy');
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, 'key_set_policy');
    PERFORM apikeys_internal._require_active_tenant(k.tenant, 'key_set_policy', k.key_id);
    -- one dimension first: array_position() refuses a multidimensional array
    IF allowed_ips IS NOT NULL AND (array_ndims(allowed_ips) OPERATOR(pg_catalog.>) 1
                                    OR cardinality(allowed_ips) NOT BETWEEN 1 AND 16
                                    OR CASE WHEN array_ndims(allowed_ips) OPERATOR(pg_catalog.>) 1 THEN true
                                            ELSE array_position(allowed_ips, NULL) IS NOT NULL END) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_allowed_ips: allowed_ips must be a one-dimensional array of 1 to 16 networks and no NULL',
            HINT = 'Pass NULL to allow every address.';
    END IF;
    IF rate_limit IS NOT NULL AND rate_limit OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_rate_limit: rate_limit must be positive',
            HINT = 'Pass NULL for no rate limit.';
    END IF;
    IF rate_limit IS NOT NULL AND (rate_window IS NULL
            OR rate_window OPERATOR(pg_catalog.<) '1 second'
            OR rate_window OPERATOR(pg_catalog.>) '1 day'
            OR date_part('month', rate_window) OPERATOR(pg_catalog.<>) 0
            OR date_part('year', rate_window) OPERATOR(pg_catalog.<>) 0
            OR extract(epoch FROM rate_window) OPERATOR(pg_catalog.<>) trunc(extract(epoch FROM rate_window))) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_rate_window: rate_window must be whole seconds from 1 second to 1 day';
    END IF;
    IF usage_limit IS NOT NULL AND usage_limit OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_usage_limit: usage_limit must be positive',
            HINT = 'Pass NULL for no usage cap.';
    END IF;
    IF usage_period IS NOT NULL AND (usage_limit IS NULL
            OR usage_period OPERATOR(pg_catalog.<) '1 second'
            OR usage_period OPERATOR(pg_catalog.>) '366 days'
            OR date_part('month', usage_period) OPERATOR(pg_catalog.<>) 0
            OR date_part('year', usage_period) OPERATOR(pg_catalog.<>) 0
            OR extract(epoch FROM usage_period) OPERATOR(pg_catalog.<>) trunc(extract(epoch FROM usage_period))) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_usage_period: usage_period must be whole seconds from 1 second to 366 days (in days, not months) and needs a usage_limit';
    END IF;
    UPDATE apikeys.credential c SET
        allowed_ips  = apikey_set_policy.allowed_ips,
        rate_limit   = apikey_set_policy.rate_limit,
        rate_window  = CASE WHEN apikey_set_policy.rate_limit IS NULL THEN NULL ELSE apikey_set_policy.rate_window END,
        usage_limit  = apikey_set_policy.usage_limit,
        usage_period = apikey_set_policy.usage_period,
        updated_at   = now()
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.read_key_usage()
    RETURNS TABLE (key_id uuid, tenant text, name text, last_used_at timestamptz, usage_limit bigint,
                   used bigint, usage_remaining bigint, valid bigint, disabled bigint, revoked bigint,
                   expired bigint, tenant_inactive bigint, ip_not_allowed bigint,
                   insufficient_scope bigint, rate_limited bigint, usage_exceeded bigint,
                   flushed_at timestamptz, has_unflushed boolean)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
BEGIN
    RETURN QUERY
    SELECT c.key_id, c.tenant, c.name,
           GREATEST(u.last_used_at, p.last_used_at) AS last_used_at,
           c.usage_limit,
           COALESCE(p.used, u.used, 0) AS used,
           CASE WHEN c.usage_limit IS NOT NULL
                THEN GREATEST(c.usage_limit OPERATOR(pg_catalog.-) COALESCE(p.used, u.used, 0), 0) END AS usage_remaining,
           COALESCE(u.count_valid, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[1], 0) AS valid,
           COALESCE(u.count_disabled, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[4], 0) AS disabled,
           COALESCE(u.count_revoked, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[5], 0) AS revoked,
           COALESCE(u.count_expired, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[6], 0) AS expired,
           COALESCE(u.count_tenant_inactive, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[7], 0) AS tenant_inactive,
           COALESCE(u.count_ip_not_allowed, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[8], 0) AS ip_not_allowed,
           COALESCE(u.count_insufficient_scope, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[9], 0) AS insufficient_scope,
           COALESCE(u.count_rate_limited, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[10], 0) AS rate_limited,
           COALESCE(u.count_usage_exceeded, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[11], 0) AS usage_exceeded,
           u.flushed_at,
           p.key_id IS NOT NULL AND (p.counts OPERATOR(pg_catalog.<>) array_fill(0::bigint, ARRAY[11])) AS has_unflushed
      FROM apikeys.credential c
      LEFT JOIN apikeys.usage u ON u.key_id OPERATOR(pg_catalog.=) c.key_id
      LEFT JOIN LATERAL apikeys_internal._pending_usage(c.key_id) p ON true
     WHERE v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._postgrest_role_map_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    why text;
BEGIN
    IF apikeys_internal._bulk_loading() THEN
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.role_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('role_not_found: role "%s" does not exist', NEW.role_name);
    END IF;
    IF NEW.tenant IS NULL AND NEW.key_id IS NULL THEN
        why := apikeys.postgrest_role_confinement(NEW.role_name);
        IF why IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = format('role_not_confined: a mapping for keys of any tenant may not name role "%s": it %s',
                                 NEW.role_name, why),
                HINT = 'Set the mapping''s tenant or key_id, or confine the role (docs/postgrest.md, "Roles from keys").';
        END IF;
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._postgrest_config_audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o jsonb;
    n jsonb;
    detail jsonb;
BEGIN
    IF apikeys_internal._bulk_loading() THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN o := to_jsonb(OLD); END IF;
    IF TG_OP <> 'DELETE' THEN n := to_jsonb(NEW); END IF;
    IF TG_OP = 'UPDATE' THEN
        SELECT jsonb_object_agg(e.key, jsonb_build_array(o -> e.key, e.value))
          INTO detail FROM jsonb_each(n) e WHERE (o -> e.key) IS DISTINCT FROM e.value;
        detail := jsonb_build_object('changed', coalesce(detail, '{}'));
    ELSIF TG_OP = 'INSERT' THEN
        detail := jsonb_build_object('new', n);
    ELSE
        detail := jsonb_build_object('old', o);
    END IF;
    PERFORM apikeys_internal._audit_write(
        TG_TABLE_NAME || CASE TG_OP WHEN 'INSERT' THEN '_added' WHEN 'DELETE' THEN '_removed' ELSE '_changed' END,
        coalesce(n, o) ->> 'tenant', (coalesce(n, o) ->> 'key_id')::uuid, detail);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._role_confinement_scan(role oid) RETURNS text
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
     WHERE (p.prosecdef OR p.pronamespace IN ('apikeys'::regnamespace, 'apikeys_internal'::regnamespace))
       AND p.oid NOT IN ('apikeys.pre_request()'::regprocedure, 'apikeys.postgrest_gate()'::regprocedure,
                         'apikeys.current_tenant()'::regprocedure, 'apikeys.current_key_id()'::regprocedure)
       -- the readers behind the views answer only about the caller's own tenants
       AND NOT (p.pronamespace = 'apikeys'::regnamespace
                AND p.proname IN ('read_keys', 'read_tenants', 'read_key_usage', 'read_vault_secrets',
                                  'read_audit', 'read_grants', 'audit_log_page'))
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

CREATE OR REPLACE FUNCTION apikeys.postgrest_role_confinement(role_name name) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pg_catalog.pg_roles;
BEGIN
    SELECT * INTO r FROM pg_catalog.pg_roles x WHERE x.rolname = role_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('role_not_found: role "%s" does not exist', role_name);
    END IF;
    IF r.rolsuper THEN
        RETURN 'is a superuser';
    ELSIF r.rolbypassrls THEN
        RETURN 'bypasses row-level security (BYPASSRLS)';
    ELSIF apikeys_internal._role_skips_rls(r.oid) THEN
        RETURN 'owns, or has the privileges of the owner of, a table with row-level security not forced';
    ELSIF EXISTS (SELECT 1 FROM apikeys.role_tenant g JOIN pg_catalog.pg_roles o ON o.rolname = g.role_name
                   WHERE pg_has_role(r.oid, o.oid, 'USAGE')) THEN
        RETURN 'is granted tenants to manage or audit (apikeys.grant_tenant)';
    END IF;
    RETURN apikeys_internal._role_confinement_cached(r.oid);
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal._postgrest_log_denied(p_status integer, p_code text, p_tenant text, p_key_id uuid,
                                              p_method text, p_path text, p_reason text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    actor      text;
    request_id text;
    lim        record := apikeys_internal._postgrest_limits();
BEGIN
    actor := apikeys_internal._actor();
    request_id := apikeys_internal._request_id();
    RAISE LOG USING MESSAGE = 'apikeys_audit_denied ' || jsonb_build_object(
        'at', clock_timestamp(), 'action', 'postgrest_request', 'outcome', 'denied',
        'error', p_code, 'sqlstate', 'PGRST', 'http_status', p_status,
        'tenant', p_tenant, 'key_id', p_key_id,
        'method', left(p_method, lim.max_method), 'path', left(p_path, lim.max_path), 'reason', p_reason,
        'db_role', apikeys_internal._acting_role(), 'session_role', session_user,
        'actor', actor, 'request_id', request_id,
        'client_addr', inet_client_addr(),
        'application_name', current_setting('application_name'),
        'txid', pg_current_xact_id_if_assigned())::text;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys.postgrest_gate(
    OUT status           integer,   -- 200: let the request through
    OUT message          text,      -- PGRST error message (JSON)
    OUT detail           text,      -- PGRST error detail (JSON)
    OUT response_headers jsonb,     -- on 200: [{"name": "value"}, ...]
    OUT set_role         name)      -- on 200: role to switch to, or NULL
    RETURNS record
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg        apikeys.postgrest_setting;
    lim        record := apikeys_internal._postgrest_limits();
    raw_method text := coalesce(current_setting('request.method', true), '');
    raw_path   text := coalesce(current_setting('request.path', true), '');
    raw_hdrs   text := nullif(current_setting('request.headers', true), '');
    stage      text;
    bad        text;        -- why the request cannot be read (400)
    req_method text;
    req_path   text;
    headers    jsonb;
    api_key    text;
    need       text[];
    n_routes   integer;
    path_known boolean;
    anonymous  boolean;
    any_tenant boolean;
    v          apikeys.verification;
    hdrs       jsonb := '{}';
    rl_hdrs    jsonb := '[]';
    code       text;
    msg        text;
    details    text;
    hint       text;
    reason     text;        -- for the log line only
    wait_s     bigint;
    per        interval;
    r          pg_catalog.pg_roles;
BEGIN
    SELECT * INTO cfg FROM apikeys.postgrest_setting;
    IF NOT FOUND THEN
        cfg := ROW(true, '{x-api-key,apikey,authorization}', 'api', true, true, false, NULL);
    END IF;

    -- Read the request: bounded, and any error in it (bad JSON, nesting too
    -- deep, \u0000, invalid UTF-8 once percent-decoded, ...) is a 400.
    BEGIN
        stage := 'request.method';
        IF octet_length(raw_method) > lim.max_method OR raw_method !~ '^[A-Za-z]*$' THEN
            bad := format('request.method is not an HTTP method (letters only, at most %s)', lim.max_method);
        ELSIF octet_length(raw_path) > lim.max_path THEN
            bad := format('request.path is longer than %s bytes', lim.max_path);
        ELSIF octet_length(raw_hdrs) > lim.max_headers THEN
            bad := format('request.headers is longer than %s bytes', lim.max_headers);
        ELSE
            req_method := upper(raw_method);
            stage := 'request.path';
            req_path := apikeys.postgrest_normalize_path(raw_path);
            stage := 'request.headers';
            headers := raw_hdrs::jsonb;
            IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
                bad := 'request.headers is not a JSON object';
            ELSIF EXISTS (SELECT 1 FROM jsonb_each(headers) e WHERE jsonb_typeof(e.value) NOT IN ('string', 'null')) THEN
                bad := 'request.headers has a value that is not a string';   -- (null: no such header)
            ELSIF EXISTS (SELECT 1 FROM jsonb_each_text(headers) e WHERE octet_length(e.value) > lim.max_header_value) THEN
                bad := format('a header value is longer than %s bytes', lim.max_header_value);
            ELSE
                -- routes that match this request, and whether any matches its path
                stage := 'routes';
                WITH p AS (
                    SELECT rt.method, rt.required_scopes, rt.allow_anonymous
                      FROM apikeys.postgrest_route rt
                     WHERE CASE rt.match WHEN 'exact' THEN req_path = rt.path
                                         WHEN 'like'  THEN req_path LIKE rt.path
                                         ELSE req_path ~ rt.path END),
                m AS (
                    SELECT p.* FROM p
                     WHERE p.method = '*' OR p.method = req_method OR (p.method = 'GET' AND req_method = 'HEAD'))
                SELECT (SELECT count(*) FROM m), (SELECT bool_and(m.allow_anonymous) FROM m),
                       array(SELECT DISTINCT s FROM m, unnest(m.required_scopes) s ORDER BY s),
                       EXISTS (SELECT 1 FROM p)
                  INTO n_routes, anonymous, need, path_known;
                stage := 'key';
                api_key := apikeys_internal._postgrest_key(headers, cfg.key_headers);
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        bad := CASE stage
               WHEN 'request.path' THEN 'request.path is not valid UTF-8 once percent-decoded'
               WHEN 'request.headers' THEN 'request.headers is not valid JSON'
               WHEN 'routes' THEN 'request.path cannot be matched against the routes'
               ELSE 'the API key header cannot be read' END;
        reason := SQLSTATE || ' ' || left(SQLERRM, 200);
    END;

    IF bad IS NOT NULL THEN
        status := 400;
        code := 'apikeys.bad_request';
        msg := 'The request cannot be read';
        details := bad;
        reason := coalesce(reason, bad);
    ELSIF n_routes = 0 AND path_known AND NOT cfg.allow_unlisted_methods THEN
        -- routes list this path for other methods only: refused whoever asks
        status := 403;
        code := 'apikeys.method_not_allowed';
        msg := 'This method is not allowed on this path';
        hint := 'apikeys.postgrest_route lists this path for other methods only.';
    ELSE
        IF n_routes = 0 THEN
            anonymous := NOT cfg.require_key;
        END IF;

        IF api_key IS NULL THEN
            IF anonymous THEN
                status := 200;
                RETURN;
            END IF;
            status := 401;
            code := 'apikeys.missing';
            msg := 'API key required';
            hint := 'Send the API key in one of these headers: '
                    || array_to_string(array(SELECT CASE x WHEN 'authorization' THEN 'Authorization: Bearer'
                                                           WHEN 'x-api-key' THEN 'X-API-Key'
                                                           ELSE x END
                                               FROM unnest(cfg.key_headers) WITH ORDINALITY AS u(x, i)
                                              ORDER BY i), ', ') || '.';
            hdrs := jsonb_build_object('WWW-Authenticate', format('Bearer realm="%s"', cfg.realm));
        ELSE
            v := apikeys.authenticate(api_key, CASE WHEN cardinality(need) > 0 THEN need END, NULL);

            IF v.rate_limit IS NOT NULL AND cfg.rate_limit_headers THEN
                rl_hdrs := jsonb_build_array(
                    jsonb_build_object('X-RateLimit-Limit', v.rate_limit::text),
                    jsonb_build_object('X-RateLimit-Remaining', greatest(v.rate_remaining, 0)::text),
                    jsonb_build_object('X-RateLimit-Reset', ceil(extract(epoch FROM v.rate_reset))::bigint::text));
            END IF;

            IF v.valid THEN
                -- the role mapped from the key, if any
                SELECT m.role_name, (m.tenant IS NULL AND m.key_id IS NULL) INTO set_role, any_tenant
                  FROM apikeys.postgrest_role_map m
                 WHERE (m.tenant IS NULL OR m.tenant = v.tenant)
                   AND (m.key_id IS NULL OR m.key_id = v.key_id)
                   AND (m.scope IS NULL OR m.scope = ANY (v.scopes))
                 ORDER BY m.priority DESC, (m.key_id IS NOT NULL) DESC, (m.scope IS NOT NULL) DESC,
                          (m.tenant IS NOT NULL) DESC, m.role_name
                 LIMIT 1;
                IF set_role IS NOT NULL THEN
                    SELECT * INTO r FROM pg_catalog.pg_roles x WHERE x.rolname = set_role;
                    IF NOT FOUND THEN
                        code := 'apikeys.role_missing';
                        msg := 'The role mapped to this API key does not exist';
                        hint := 'Fix apikeys.postgrest_role_map.';
                    ELSIF r.rolsuper OR r.rolbypassrls THEN
                        code := 'apikeys.role_unsafe';
                        msg := 'The role mapped to this API key is a superuser or bypasses row-level security';
                        hint := 'Map keys to ordinary roles in apikeys.postgrest_role_map.';
                    ELSIF apikeys_internal._role_skips_rls(r.oid) THEN
                        -- an owner's queries skip RLS unless it is forced: the key's
                        -- tenant binding would not restrict them
                        code := 'apikeys.role_unsafe';
                        msg := 'The role mapped to this API key owns a table whose row-level security does not apply to its owner';
                        hint := 'ALTER TABLE ... FORCE ROW LEVEL SECURITY on the tables that role owns (or inherits), or map keys to a role that owns none.';
                    ELSIF any_tenant AND apikeys.postgrest_role_confinement(set_role) IS NOT NULL THEN
                        -- a row for keys of any tenant (whose scopes each tenant
                        -- chooses) may name only a role RLS confines to the tenant
                        reason := apikeys.postgrest_role_confinement(set_role);
                        code := 'apikeys.role_unsafe';
                        msg := 'The role mapped to this API key by a mapping for every tenant is not confined to the key''s tenant';
                        hint := 'Set the mapping''s tenant or key_id in apikeys.postgrest_role_map, or see apikeys.postgrest_role_confinement().';
                    ELSIF NOT pg_has_role(session_user, r.oid, 'MEMBER') THEN
                        code := 'apikeys.role_not_allowed';
                        msg := 'The database connection may not switch to the role mapped to this API key';
                        hint := format('GRANT %I TO %I (as for PostgREST''s own roles).', set_role, session_user);
                    END IF;
                END IF;
                IF code IS NULL THEN
                    status := 200;
                    response_headers := rl_hdrs;
                    RETURN;
                END IF;
                -- a server misconfiguration, not the client's fault
                status := 500;
                reason := format('role %s: %s', set_role, coalesce(reason, code));
                set_role := NULL;
            ELSE
                code := 'apikeys.' || v.code;
                CASE v.code
                WHEN 'malformed' THEN
                    status := 401; msg := 'API key is malformed';
                WHEN 'not_found' THEN
                    status := 401; msg := 'API key is not valid';
                WHEN 'disabled' THEN
                    status := 401; msg := 'API key is disabled';
                WHEN 'revoked' THEN
                    status := 401; msg := 'API key has been revoked';
                WHEN 'expired' THEN
                    status := 401; msg := 'API key has expired';
                WHEN 'tenant_inactive' THEN
                    status := 403; msg := 'The tenant of this API key is inactive';
                WHEN 'ip_not_allowed' THEN
                    status := 403; msg := 'Requests from this address are not allowed with this API key';
                WHEN 'insufficient_scope' THEN
                    status := 403; msg := 'API key lacks a scope this request requires';
                    details := 'Required scopes: ' || array_to_string(need, ' ');
                    hdrs := jsonb_build_object('WWW-Authenticate',
                        format('Bearer realm="%s", error="insufficient_scope", scope="%s"',
                               cfg.realm, array_to_string(need, ' ')));
                WHEN 'rate_limited' THEN
                    status := 429; msg := 'Rate limit exceeded';
                    wait_s := greatest(ceil(extract(epoch FROM v.rate_reset - clock_timestamp())), 1);
                    hdrs := jsonb_build_object('Retry-After', wait_s::text);
                    details := format('At most %s requests per window.', v.rate_limit);
                    hint := 'Retry after the number of seconds in the Retry-After header.';
                WHEN 'usage_exceeded' THEN
                    status := 429; msg := 'Usage limit exceeded';
                    -- periods are aligned to 2000-01-01 UTC, like the C code
                    SELECT c.usage_period INTO per FROM apikeys.credential c WHERE c.key_id = v.key_id;
                    IF per IS NOT NULL THEN
                        wait_s := greatest(ceil(extract(epoch FROM
                            ('2000-01-01 00:00:00+00'::timestamptz
                             + (floor(extract(epoch FROM clock_timestamp() - '2000-01-01 00:00:00+00'::timestamptz)
                                      / extract(epoch FROM per)) + 1) * per)
                            - clock_timestamp())), 1);
                        hdrs := jsonb_build_object('Retry-After', wait_s::text);
                        details := 'The usage cap resets at the end of its period.';
                        hint := 'Retry after the number of seconds in the Retry-After header.';
                    ELSE
                        details := 'The usage cap does not reset.';
                    END IF;
                ELSE
                    status := 401; msg := 'API key is not valid';
                END CASE;
                IF status = 401 THEN
                    hdrs := jsonb_build_object('WWW-Authenticate',
                        format('Bearer realm="%s", error="invalid_token"', cfg.realm));
                END IF;
                -- the rate-limit figures, when verify got that far
                SELECT hdrs || coalesce(jsonb_object_agg(e.key, e.value), '{}')
                  INTO hdrs FROM jsonb_array_elements(rl_hdrs) a, jsonb_each(a.value) e;
            END IF;
        END IF;
    END IF;

    PERFORM apikeys_internal._postgrest_log_denied(status, substr(code, 9), v.tenant, v.key_id,
                                          raw_method, raw_path, reason);
    IF status = 500 THEN
        hdrs := '{}';
    END IF;
    message := json_build_object('code', code, 'message', msg, 'details', details, 'hint', hint)::text;
    detail := json_build_object('status', status, 'headers', hdrs)::text;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys.pre_request() RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g record;
    cur text;
    merged jsonb;
BEGIN
    g := apikeys.postgrest_gate();
    IF g.status <> 200 THEN
        RAISE SQLSTATE 'PGRST' USING MESSAGE = g.message, DETAIL = g.detail;
    END IF;
    IF g.response_headers IS NOT NULL AND jsonb_array_length(g.response_headers) > 0 THEN
        -- keep what an earlier function set (a JSON array of objects)
        cur := nullif(current_setting('response.headers', true), '');
        merged := g.response_headers;
        IF cur IS NOT NULL THEN
            BEGIN
                IF jsonb_typeof(cur::jsonb) = 'array' THEN
                    merged := cur::jsonb || g.response_headers;
                END IF;
            EXCEPTION WHEN OTHERS THEN
                NULL;   -- not JSON (or nested too deep): PostgREST would reject it anyway; replace it
            END;
        END IF;
        PERFORM set_config('response.headers', merged::text, true);
    END IF;
    IF g.set_role IS NOT NULL THEN
        PERFORM set_config('role', g.set_role, true);
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.grant_postgrest(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys_internal._check_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.pre_request(), apikeys.postgrest_gate(),'
                   ' apikeys.current_tenant(), apikeys.current_key_id() TO %I', role_name);
END;
$$;

-- The bodies and helpers are reached only through the entry points and our
-- own code (by OID, or as the extension owner): no one gets EXECUTE.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA apikeys_internal FROM PUBLIC;

------------------------------------------------------------------------------
-- Catalog tidy, comments: publish() comments an entry point's body too (the
-- bodies already published get the same words here), and every other
-- object of the extension gets a comment: src/sql/95_comments.sql, below
-- unchanged.
------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION apikeys_internal.publish(name text, comment text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
BEGIN
    SELECT f.oid, f.provolatile, f.proparallel, f.proretset, f.prorows INTO STRICT p
      FROM pg_catalog.pg_proc f
     WHERE f.pronamespace OPERATOR(pg_catalog.=) 'apikeys_internal'::regnamespace
       AND f.proname OPERATOR(pg_catalog.=) publish.name;
    EXECUTE format('CREATE FUNCTION apikeys.%I(%s) RETURNS %s LANGUAGE C %s PARALLEL %s%s AS %L, %L',
        name, pg_catalog.pg_get_function_arguments(p.oid), pg_catalog.pg_get_function_result(p.oid),
        CASE p.provolatile WHEN 'i' THEN 'IMMUTABLE' WHEN 's' THEN 'STABLE' ELSE 'VOLATILE' END,
        CASE p.proparallel WHEN 's' THEN 'SAFE' WHEN 'r' THEN 'RESTRICTED' ELSE 'UNSAFE' END,
        CASE WHEN p.proretset THEN format(' ROWS %s', p.prorows) ELSE '' END,
        'MODULE_PATHNAME', 'apikeys_entry');
    EXECUTE format('COMMENT ON FUNCTION apikeys.%I(%s) IS %L',
        name, pg_catalog.pg_get_function_identity_arguments(p.oid), comment);
    EXECUTE format('COMMENT ON FUNCTION %s IS %L', p.oid::regprocedure,
        format('Body of apikeys.%I (reached only through it): %s', name, comment));
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', p.oid::regprocedure);
END;
$$;

DO $$
DECLARE
    e record;
BEGIN
    FOR e IN
        SELECT b.oid AS body, f.proname, pg_catalog.obj_description(f.oid, 'pg_proc') AS comment
          FROM pg_catalog.pg_proc f
          JOIN pg_catalog.pg_proc b ON b.proname OPERATOR(pg_catalog.=) f.proname
                                   AND b.proargtypes OPERATOR(pg_catalog.=) f.proargtypes
                                   AND b.pronamespace OPERATOR(pg_catalog.=) 'apikeys_internal'::regnamespace
         WHERE f.pronamespace OPERATOR(pg_catalog.=) 'apikeys'::regnamespace
           AND f.prosrc OPERATOR(pg_catalog.=) 'apikeys_entry'
         ORDER BY f.proname
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION %s IS %L', e.body::regprocedure,
            pg_catalog.format('Body of apikeys.%I (reached only through it): %s', e.proname, e.comment));
    END LOOP;
END;
$$;

------------------------------------------------------------------------------
-- Comments: what \d+, \df+ and \dn+ show a DBA.  Every schema, table, view,
-- column, type and function of the extension has one (sql/catalog_tidy.sql
-- fails otherwise); the entry points get theirs from publish(), which also
-- comments their bodies.  This file is appended unchanged to
-- apikeys--1.0--1.1.sql, so an upgraded 1.0 reads like a fresh install.
------------------------------------------------------------------------------

COMMENT ON SCHEMA apikeys IS 'API keys, tenants, audit and vault: the functions and views users call (\df apikeys.*); GRANT recipes: apikeys.grant_tenant/grant_verifier/grant_vault/grant_postgrest.';

COMMENT ON FUNCTION apikeys_internal.publish(text, text) IS 'Install time only: create the C entry point apikeys.<name> for body apikeys_internal.<name>, comment both, revoke it from PUBLIC.';
COMMENT ON FUNCTION apikeys.postgrest_gate() IS 'The decision of apikeys.pre_request(), computed as the extension owner: status, PGRST message/detail, response headers, role to switch to. Granted by grant_postgrest.';

------------------------------------------------------------------------------
-- Internal helpers (schema apikeys_internal: no role may use it, and no
-- function in it is granted to PUBLIC)
------------------------------------------------------------------------------

-- identity and tenancy
COMMENT ON FUNCTION apikeys_internal._acting_role() IS 'The role the running management call acts for: the caller of its entry point (outside one, the session''s current role).';
COMMENT ON FUNCTION apikeys_internal._binding_for_caller(boolean) IS 'The tenant this transaction''s binding lets the acting role act for (set_tenant() bindings only when trusted_only), or NULL.';
COMMENT ON FUNCTION apikeys_internal._context_source() IS 'How this transaction is bound to a tenant: none, trusted (set_tenant) or key (authenticate).';
COMMENT ON FUNCTION apikeys_internal._context_actor() IS 'The actor label set_tenant()/authenticate() bound to this transaction, or NULL.';
COMMENT ON FUNCTION apikeys_internal._context_request_id() IS 'The request id label set_tenant()/authenticate() bound to this transaction, or NULL.';
COMMENT ON FUNCTION apikeys_internal._transaction_setting(text, integer) IS 'A setting''s value if set for this transaction only and at most max_bytes long; else NULL (a WARNING when a value was ignored).';
COMMENT ON FUNCTION apikeys_internal._bulk_loading() IS 'Is this a restore or replication apply (rows whose history is already in the audit)?';
COMMENT ON FUNCTION apikeys_internal._is_superuser(name) IS 'pg_roles.rolsuper of a role; NULL if there is no such role.';
COMMENT ON FUNCTION apikeys_internal._role_may(name, text, text) IS 'Does a role hold read, audit or manage on a tenant (NULL: every tenant) through apikeys.role_tenant?';
COMMENT ON FUNCTION apikeys_internal._may_manage(text) IS 'May the acting role manage this tenant (NULL: manage tenants)? Answers, never raises.';
COMMENT ON FUNCTION apikeys_internal._authorize(text, text, uuid) IS 'Raise permission_denied (or key_not_found, given a key id) and log it unless the acting role may manage the tenant.';
COMMENT ON FUNCTION apikeys_internal._deny(text, text, uuid, text, text, text) IS 'Log a refused management call (apikeys_audit_denied line, outlives the rollback), then raise the given SQLSTATE and message.';

-- argument validators (C)
COMMENT ON FUNCTION apikeys_internal._check_tenant_id(text) IS 'A valid tenant id, or invalid_tenant (STRICT: NULL passes as NULL).';
COMMENT ON FUNCTION apikeys_internal._tenant_arg(text) IS 'A valid tenant id, or invalid_tenant; NULL is an error too.';
COMMENT ON FUNCTION apikeys_internal._check_name(text) IS 'A valid key name (1 to 200 characters, no control characters or outer spaces), or invalid_name.';
COMMENT ON FUNCTION apikeys_internal._check_description(text) IS 'A valid key description (at most 2000 characters), or invalid_description.';
COMMENT ON FUNCTION apikeys_internal._normalize_scopes(text[]) IS 'Scopes checked, sorted and de-duplicated, or invalid_scope; also the CHECK of the PostgREST tables'' scopes.';
COMMENT ON FUNCTION apikeys_internal._check_expiry(timestamp with time zone) IS 'A valid expiry (finite, in the future), or invalid_expiry.';
COMMENT ON FUNCTION apikeys_internal._check_metadata(jsonb) IS 'Valid key metadata (a JSON object of at most 8 kB), or invalid_metadata.';
COMMENT ON FUNCTION apikeys_internal._check_role(name) IS 'The existing role a grant recipe names; never NULL or PUBLIC.';
COMMENT ON FUNCTION apikeys_internal._check_privilege(text) IS 'The privilege a tenant grant names: manage or audit.';

-- audit labels and audit writing
COMMENT ON FUNCTION apikeys_internal._json_setting(text, text) IS 'A field of the JSON object in a transaction-local setting; anything unreadable reads as NULL, never an error.';
COMMENT ON FUNCTION apikeys_internal._actor() IS 'The actor for audit rows and refusals: the bound label, apikeys.actor, or PostgREST''s JWT sub (at most 200 characters).';
COMMENT ON FUNCTION apikeys_internal._request_id() IS 'The request id for audit rows and refusals: the bound label, apikeys.request_id, or PostgREST''s X-Request-Id (at most 200 characters).';
COMMENT ON FUNCTION apikeys_internal._audit_hash(apikeys.audit) IS 'What an audit row''s row_hash must be: SHA-256 of its other columns, length-prefixed (docs/audit.md).';
COMMENT ON FUNCTION apikeys_internal._audit_chain() IS 'Trigger (BEFORE INSERT, ALWAYS) on apikeys.audit: number the row in its chain, link it to the chain''s head and hash it.';
COMMENT ON FUNCTION apikeys_internal._audit_purging() IS 'Is apikeys.audit_purge() running in this backend (the only time audit rows may be deleted)?';
COMMENT ON FUNCTION apikeys_internal._audit_append_only() IS 'Trigger on apikeys.audit: refuse UPDATE, DELETE and TRUNCATE (audit_append_only) except audit_purge''s deletes.';
COMMENT ON FUNCTION apikeys_internal._audit_write(text, text, uuid, jsonb) IS 'Append one audit row for the acting role, with the session''s labels.';
COMMENT ON FUNCTION apikeys_internal._audit_row_change() IS 'Trigger (AFTER row, ALWAYS): audit a change to tenants, keys, secrets, role mappings or the vault; never a digest, ciphertext or fingerprint.';
COMMENT ON FUNCTION apikeys_internal._refuse_truncate() IS 'Trigger: refuse TRUNCATE of an audited table (truncate_not_allowed); delete through the functions instead.';
COMMENT ON FUNCTION apikeys_internal._audit_since(text) IS 'The first audit_id a tenant-scoped reader sees of a tenant''s chain: its latest tenant_created row.';
COMMENT ON FUNCTION apikeys_internal._audit_of(text, bigint, integer, uuid) IS 'A tenant''s audit chain since its creation, newest first: before before_id, of one key if given, at most max_rows.';
COMMENT ON FUNCTION apikeys_internal._audit_chains() IS 'The audit chains the acting role may audit (every chain for superusers and global auditors).';
COMMENT ON FUNCTION apikeys_internal._audit_purge_rows(timestamp with time zone, interval) IS 'The work of apikeys.audit_purge(): per chain, append an audit_purged anchor, then delete the rows older than the cutoff.';

-- keys
COMMENT ON FUNCTION apikeys_internal._lock_key(uuid, text) IS 'Lock and return a key the acting role may manage; unknown and foreign keys raise the same key_not_found.';
COMMENT ON FUNCTION apikeys_internal._require_not_revoked(apikeys.credential, text) IS 'Raise key_revoked (and log it) for a revoked key.';
COMMENT ON FUNCTION apikeys_internal._require_active_tenant(text, text, uuid) IS 'Raise tenant_inactive (and log it) unless the tenant is active.';

-- vault
COMMENT ON FUNCTION apikeys_internal._vault_fingerprint(text) IS 'Fingerprint of a vault master key (the key_fp of the rows it encrypts): for superusers and tests; nothing calls it with a real key.';
COMMENT ON FUNCTION apikeys_internal._vault_key_state() IS 'Fingerprints of the configured master keys (current, previous); raises without a usable key. Superuser code only.';
COMMENT ON FUNCTION apikeys_internal._vault_seal(uuid, text) IS 'Encrypt a vault secret under the current master key (in C: the key never reaches SQL). Superuser code only.';
COMMENT ON FUNCTION apikeys_internal._vault_open(uuid, bytea, text) IS 'Decrypt a vault row with whichever configured master key encrypted it; problem and stale say how it went. Superuser code only.';
COMMENT ON FUNCTION apikeys_internal._vault_rewrap(uuid, bytea, text) IS 'A vault row re-encrypted under the current master key, the plaintext never leaving C. Superuser code only.';
COMMENT ON FUNCTION apikeys_internal._vault_lock_slot(text, text, text) IS 'Serialize changes to one owner''s secrets of one service until transaction end (a lock no SQL can take). Superuser code only.';
COMMENT ON FUNCTION apikeys_internal._vault_service(text) IS 'A vault service by name, aliases resolved; vault_service_not_found never echoes the input.';
COMMENT ON FUNCTION apikeys_internal._vault_check_name(text) IS 'A valid vault secret name (3 to 100 characters, no control characters), or invalid_name.';
COMMENT ON FUNCTION apikeys_internal._vault_may(text, text) IS 'May the acting role read or manage this tenant''s vault? Answers, never raises.';
COMMENT ON FUNCTION apikeys_internal._vault_authorize(text, text, text) IS 'Raise permission_denied (and log it) unless the acting role may read or manage the tenant''s vault; the tenant is not echoed.';
COMMENT ON FUNCTION apikeys_internal._vault_find(uuid, text, text, boolean) IS 'A vault secret the acting role may read or manage (locked if asked); others'' and unknown ids raise the same vault_secret_not_found.';
COMMENT ON FUNCTION apikeys_internal._vault_check_one(apikeys.vault_secret) IS 'vault_check() for one row: does it decrypt, match its service''s format, and is it under the current master key?';

-- policies, usage and observability
COMMENT ON FUNCTION apikeys_internal._changed() IS 'Trigger (ALWAYS, statement and row) on tenant, credential and secret: a committed change retires the shared policy cache.';
COMMENT ON FUNCTION apikeys_internal._verification_totals() IS 'Verifications since server start by outcome, all databases (the rows of apikeys.verifications).';
COMMENT ON FUNCTION apikeys_internal._pending_usage(uuid) IS 'What shared memory holds for one key not yet flushed (last use, uses charged, counts); NULLs for a key the caller cannot see in apikeys.credential.';
COMMENT ON FUNCTION apikeys_internal._runtime() IS 'Shared memory, policy cache and usage-flush figures (the row of apikeys.runtime).';

-- PostgREST
COMMENT ON FUNCTION apikeys_internal._postgrest_role_map_check() IS 'Trigger on apikeys.postgrest_role_map: the role must exist, and a mapping for every tenant may name only a confined role.';
COMMENT ON FUNCTION apikeys_internal._postgrest_config_audit() IS 'Trigger: audit changes to the PostgREST gate''s configuration tables.';
COMMENT ON FUNCTION apikeys_internal._postgrest_key(jsonb, text[]) IS 'The API key in PostgREST''s request.headers, per the configured header names (JWT-shaped values skipped), or NULL.';
COMMENT ON FUNCTION apikeys_internal._role_skips_rls(oid) IS 'Does the role own, or may it become the owner of, a table whose row-level security is enabled but not forced? Cached per backend.';
COMMENT ON FUNCTION apikeys_internal._role_confinement_scan(oid) IS 'Why row-level security does not confine a role to one tenant''s rows, from the catalogs (NULL: it does).';
COMMENT ON FUNCTION apikeys_internal._role_confinement_cached(oid) IS '_role_confinement_scan(), cached per backend until the catalogs it reads change.';
COMMENT ON FUNCTION apikeys_internal._postgrest_limits() IS 'Bounds on what the PostgREST gate reads from the request (headers, one header value, path, method), in bytes.';
COMMENT ON FUNCTION apikeys_internal._postgrest_log_denied(integer, text, text, uuid, text, text, text) IS 'Log a request the PostgREST gate refused (apikeys_audit_denied line, outlives the rollback); never a header value.';

------------------------------------------------------------------------------
-- Types
------------------------------------------------------------------------------

COMMENT ON TYPE apikeys.vault_check_result IS 'One row of apikeys.vault_check(): a vault secret and whether it decrypts and matches its service''s format.';

COMMENT ON COLUMN apikeys.verification.valid IS 'true when code = ''valid''.';
COMMENT ON COLUMN apikeys.verification.code IS 'The verdict: valid, malformed, not_found, disabled, revoked, expired, tenant_inactive, ip_not_allowed, insufficient_scope, rate_limited, usage_exceeded.';
COMMENT ON COLUMN apikeys.verification.key_id IS 'The key, when its digest is known (NULL for malformed and not_found).';
COMMENT ON COLUMN apikeys.verification.tenant IS 'The key''s tenant, when the key is known.';
COMMENT ON COLUMN apikeys.verification.name IS 'The key''s name, when the key is known.';
COMMENT ON COLUMN apikeys.verification.scopes IS 'The key''s scopes, when the key is known.';
COMMENT ON COLUMN apikeys.verification.expires_at IS 'The key''s expiry (NULL: none), when the key is known.';
COMMENT ON COLUMN apikeys.verification.rate_limit IS 'Requests allowed per rate window (X-RateLimit-Limit); NULL without a rate limit.';
COMMENT ON COLUMN apikeys.verification.rate_remaining IS 'Requests left in this window after this call (X-RateLimit-Remaining); NULL without a rate limit.';
COMMENT ON COLUMN apikeys.verification.rate_reset IS 'When the rate window ends (X-RateLimit-Reset); NULL without a rate limit.';
COMMENT ON COLUMN apikeys.verification.usage_remaining IS 'Uses left under the usage cap; NULL without one.';

COMMENT ON COLUMN apikeys.vault_check_result.id IS 'The vault secret.';
COMMENT ON COLUMN apikeys.vault_check_result.tenant IS 'Its tenant.';
COMMENT ON COLUMN apikeys.vault_check_result.service IS 'Its service.';
COMMENT ON COLUMN apikeys.vault_check_result.name IS 'Its name.';
COMMENT ON COLUMN apikeys.vault_check_result.ok IS 'true when problem is NULL.';
COMMENT ON COLUMN apikeys.vault_check_result.problem IS 'NULL, master_key_mismatch, decrypt_failed, invalid_format or stale_master_key.';

------------------------------------------------------------------------------
-- Table columns
------------------------------------------------------------------------------

COMMENT ON COLUMN apikeys.tenant.tenant IS 'Tenant id: 1 to 63 of [a-z0-9_.-], starting with [a-z0-9].';
COMMENT ON COLUMN apikeys.tenant.display_name IS 'Human-readable name (1 to 200 characters).';
COMMENT ON COLUMN apikeys.tenant.active IS 'false: the tenant''s keys verify as tenant_inactive and cannot be created or changed.';
COMMENT ON COLUMN apikeys.tenant.created_at IS 'When the tenant was created.';
COMMENT ON COLUMN apikeys.tenant.updated_at IS 'When the tenant was last changed.';

COMMENT ON COLUMN apikeys.credential.key_id IS 'The key''s identity; it survives rotation.';
COMMENT ON COLUMN apikeys.credential.tenant IS 'The tenant the key belongs to.';
COMMENT ON COLUMN apikeys.credential.name IS 'Name (1 to 200 characters).';
COMMENT ON COLUMN apikeys.credential.description IS 'Free text (at most 2000 characters), or NULL.';
COMMENT ON COLUMN apikeys.credential.prefix IS 'The key''s prefix, the part of the key before its body (e.g. ak, live).';
COMMENT ON COLUMN apikeys.credential.scopes IS 'Scopes the key holds (sorted, unique, at most 64).';
COMMENT ON COLUMN apikeys.credential.metadata IS 'A JSON object for the application.';
COMMENT ON COLUMN apikeys.credential.status IS 'active, disabled or revoked (revocation is permanent).';
COMMENT ON COLUMN apikeys.credential.expires_at IS 'When the key stops verifying (expired); NULL: never.';
COMMENT ON COLUMN apikeys.credential.created_by IS 'The role whose call created the key (the acting role).';
COMMENT ON COLUMN apikeys.credential.created_at IS 'When the key was created.';
COMMENT ON COLUMN apikeys.credential.updated_at IS 'When the key was last changed.';
COMMENT ON COLUMN apikeys.credential.rotated_at IS 'When a secret was last issued by apikey_rotate; NULL: never rotated.';
COMMENT ON COLUMN apikeys.credential.rotation_count IS 'How many times the key was rotated.';
COMMENT ON COLUMN apikeys.credential.revoked_at IS 'When the key was revoked; NULL unless status is revoked.';
COMMENT ON COLUMN apikeys.credential.revoked_reason IS 'The reason given to apikey_revoke, or NULL.';
COMMENT ON COLUMN apikeys.credential.allowed_ips IS 'Networks the key verifies from (1 to 16); NULL: any address. Set by apikey_set_policy.';
COMMENT ON COLUMN apikeys.credential.rate_limit IS 'Verifications allowed per rate_window; NULL: no rate limit. Set by apikey_set_policy.';
COMMENT ON COLUMN apikeys.credential.rate_window IS 'The rate limit''s window (1 second to 1 day); NULL exactly when rate_limit is.';
COMMENT ON COLUMN apikeys.credential.usage_limit IS 'Successful verifications allowed in total or per usage_period; NULL: no cap. Set by apikey_set_policy.';
COMMENT ON COLUMN apikeys.credential.usage_period IS 'The usage cap''s period (1 second to 366 days); NULL: the cap is for the key''s lifetime.';

COMMENT ON COLUMN apikeys.secret.digest IS 'SHA-256 of the API key (the key itself is never stored).';
COMMENT ON COLUMN apikeys.secret.key_id IS 'The key this secret belongs to.';
COMMENT ON COLUMN apikeys.secret.hint IS 'Prefix, first 4 and last 4 characters of the API key, to recognize it.';
COMMENT ON COLUMN apikeys.secret.created_at IS 'When the secret was issued.';
COMMENT ON COLUMN apikeys.secret.valid_until IS 'NULL: the key''s current secret; else the end of its rotation grace.';

COMMENT ON COLUMN apikeys.usage.key_id IS 'The key (no foreign key: a flush never fails on a key just deleted).';
COMMENT ON COLUMN apikeys.usage.last_used_at IS 'Last verification of the key, as of the last flush.';
COMMENT ON COLUMN apikeys.usage.used IS 'Uses charged against the usage cap in the current period; NULL: no cap tracked.';
COMMENT ON COLUMN apikeys.usage.period_start IS 'Start of the usage cap''s current period; NULL: the cap is for the key''s lifetime.';
COMMENT ON COLUMN apikeys.usage.count_valid IS 'Verifications with verdict valid.';
COMMENT ON COLUMN apikeys.usage.count_disabled IS 'Verifications with verdict disabled.';
COMMENT ON COLUMN apikeys.usage.count_revoked IS 'Verifications with verdict revoked.';
COMMENT ON COLUMN apikeys.usage.count_expired IS 'Verifications with verdict expired.';
COMMENT ON COLUMN apikeys.usage.count_tenant_inactive IS 'Verifications with verdict tenant_inactive.';
COMMENT ON COLUMN apikeys.usage.count_ip_not_allowed IS 'Verifications with verdict ip_not_allowed.';
COMMENT ON COLUMN apikeys.usage.count_insufficient_scope IS 'Verifications with verdict insufficient_scope.';
COMMENT ON COLUMN apikeys.usage.count_rate_limited IS 'Verifications with verdict rate_limited.';
COMMENT ON COLUMN apikeys.usage.count_usage_exceeded IS 'Verifications with verdict usage_exceeded.';
COMMENT ON COLUMN apikeys.usage.flushed_at IS 'When the row was last written by the flush worker.';

COMMENT ON COLUMN apikeys.role_tenant.role_name IS 'The role mapped (and the roles that have its privileges).';
COMMENT ON COLUMN apikeys.role_tenant.tenant IS 'The tenant; NULL: every tenant (a global admin or auditor).';
COMMENT ON COLUMN apikeys.role_tenant.privilege IS 'manage (keys and their audit) or audit (read only).';
COMMENT ON COLUMN apikeys.role_tenant.granted_at IS 'When grant_tenant made the mapping.';
COMMENT ON COLUMN apikeys.role_tenant.granted_by IS 'The role that made the mapping.';

COMMENT ON COLUMN apikeys.audit.chain IS 'The hash chain: the row''s tenant, '''' for rows of no tenant.';
COMMENT ON COLUMN apikeys.audit.audit_id IS 'Position in the chain: 1, 2, 3, ... without gaps (until a purge).';
COMMENT ON COLUMN apikeys.audit.at IS 'When the row was written (clock_timestamp()).';
COMMENT ON COLUMN apikeys.audit.tenant IS 'The tenant the change concerns, or NULL.';
COMMENT ON COLUMN apikeys.audit.key_id IS 'The API key (or vault secret) the change concerns, or NULL.';
COMMENT ON COLUMN apikeys.audit.action IS 'What happened: key_created, key_revoked, tenant_updated, role_granted, vault_secret_revealed, audit_purged, ...';
COMMENT ON COLUMN apikeys.audit.outcome IS 'success (refusals go to the server log, not here: they roll back).';
COMMENT ON COLUMN apikeys.audit.db_role IS 'The acting role: the role whose code made the management call.';
COMMENT ON COLUMN apikeys.audit.session_role IS 'session_user of the connection.';
COMMENT ON COLUMN apikeys.audit.actor IS 'Application actor: set_tenant/authenticate label, apikeys.actor, or PostgREST''s JWT sub.';
COMMENT ON COLUMN apikeys.audit.request_id IS 'Request id: set_tenant/authenticate label, apikeys.request_id, or PostgREST''s X-Request-Id.';
COMMENT ON COLUMN apikeys.audit.client_addr IS 'inet_client_addr() of the connection.';
COMMENT ON COLUMN apikeys.audit.application_name IS 'application_name of the connection.';
COMMENT ON COLUMN apikeys.audit.txid IS 'The writing transaction''s id.';
COMMENT ON COLUMN apikeys.audit.detail IS 'The change: new row, old row, or changed columns as [old, new]; never a digest, ciphertext or fingerprint.';
COMMENT ON COLUMN apikeys.audit.prev_hash IS 'row_hash of the chain''s previous row (32 zero bytes for the first).';
COMMENT ON COLUMN apikeys.audit.row_hash IS 'SHA-256 over the row''s other columns (apikeys_internal._audit_hash); audit_check() recomputes it.';

COMMENT ON COLUMN apikeys.vault_service.service IS 'Service name (2 to 63 of a-z, 0-9, _, -, starting with a letter).';
COMMENT ON COLUMN apikeys.vault_service.display_name IS 'Human-readable name (1 to 200 characters).';
COMMENT ON COLUMN apikeys.vault_service.format IS 'Anchored regular expression a secret of the service must match; NULL for an alias.';
COMMENT ON COLUMN apikeys.vault_service.alias_of IS 'The service this one is an alias of (its secrets are stored under it), or NULL.';
COMMENT ON COLUMN apikeys.vault_service.builtin IS 'true for the services the extension ships, which cannot change.';
COMMENT ON COLUMN apikeys.vault_service.created_at IS 'When the service was registered.';
COMMENT ON COLUMN apikeys.vault_service.updated_at IS 'When the service was last changed.';

COMMENT ON COLUMN apikeys.vault_secret.id IS 'The vault secret''s id.';
COMMENT ON COLUMN apikeys.vault_secret.tenant IS 'The tenant that owns the secret.';
COMMENT ON COLUMN apikeys.vault_secret.owner_user IS 'The role within the tenant that owns it (only it may reveal it); NULL: the tenant.';
COMMENT ON COLUMN apikeys.vault_secret.service IS 'The service the secret is for.';
COMMENT ON COLUMN apikeys.vault_secret.name IS 'Name (3 to 100 characters).';
COMMENT ON COLUMN apikeys.vault_secret.ciphertext IS 'The secret, encrypted with pgp_sym_encrypt (AES-256) under id and the master key.';
COMMENT ON COLUMN apikeys.vault_secret.key_fp IS 'Fingerprint of the master key that encrypted it.';
COMMENT ON COLUMN apikeys.vault_secret.active IS 'At most one active secret per tenant, owner_user and service.';
COMMENT ON COLUMN apikeys.vault_secret.last_used_at IS 'Last vault_reveal of the secret, or NULL.';
COMMENT ON COLUMN apikeys.vault_secret.created_at IS 'When the secret was added.';
COMMENT ON COLUMN apikeys.vault_secret.updated_at IS 'When the secret was last changed.';

COMMENT ON COLUMN apikeys.postgrest_setting.singleton IS 'Always true: the table holds one row at most.';
COMMENT ON COLUMN apikeys.postgrest_setting.key_headers IS 'request.headers names tried in order for the key; authorization means "Authorization: Bearer <key>".';
COMMENT ON COLUMN apikeys.postgrest_setting.realm IS 'Realm of the WWW-Authenticate: Bearer header.';
COMMENT ON COLUMN apikeys.postgrest_setting.require_key IS 'Whether requests that match no route need a key.';
COMMENT ON COLUMN apikeys.postgrest_setting.rate_limit_headers IS 'Whether answers for rate-limited keys carry X-RateLimit-* headers.';
COMMENT ON COLUMN apikeys.postgrest_setting.allow_unlisted_methods IS 'false: a method no route lists, on a path some route lists, is refused (403); true: require_key decides.';
COMMENT ON COLUMN apikeys.postgrest_setting.updated_at IS 'When the settings were last changed.';

COMMENT ON COLUMN apikeys.postgrest_route.method IS 'HTTP method, or * for every method (a GET route also covers HEAD).';
COMMENT ON COLUMN apikeys.postgrest_route.path IS 'Pattern for the normalized request.path (apikeys.postgrest_normalize_path).';
COMMENT ON COLUMN apikeys.postgrest_route.match IS 'How path matches: exact, like or regex.';
COMMENT ON COLUMN apikeys.postgrest_route.required_scopes IS 'Scopes a key must hold for a matching request.';
COMMENT ON COLUMN apikeys.postgrest_route.allow_anonymous IS 'Whether a matching request may come without a key (only without required scopes).';
COMMENT ON COLUMN apikeys.postgrest_route.description IS 'Free text (at most 2000 characters), or NULL.';
COMMENT ON COLUMN apikeys.postgrest_route.created_at IS 'When the route was added.';

COMMENT ON COLUMN apikeys.postgrest_role_map.tenant IS 'Keys of this tenant only; NULL: any tenant.';
COMMENT ON COLUMN apikeys.postgrest_role_map.key_id IS 'This key only; NULL: any key.';
COMMENT ON COLUMN apikeys.postgrest_role_map.scope IS 'Keys holding this scope only; NULL: any scopes.';
COMMENT ON COLUMN apikeys.postgrest_role_map.role_name IS 'The role the request''s query runs as.';
COMMENT ON COLUMN apikeys.postgrest_role_map.priority IS 'Among matching rows the highest wins (then key, scope, tenant rows, then role name).';
COMMENT ON COLUMN apikeys.postgrest_role_map.created_at IS 'When the mapping was added.';

------------------------------------------------------------------------------
-- View columns.  Those the views take from a table say what the table's
-- column says (copied below); the others are written here.
------------------------------------------------------------------------------

COMMENT ON COLUMN apikeys.keys.hint IS 'Hint of the key''s current secret: prefix, first 4 and last 4 characters.';
COMMENT ON COLUMN apikeys.keys.secrets_in_grace IS 'Older secrets still verifying in their rotation grace.';

COMMENT ON COLUMN apikeys.key_usage.key_id IS 'The key.';
COMMENT ON COLUMN apikeys.key_usage.tenant IS 'The key''s tenant.';
COMMENT ON COLUMN apikeys.key_usage.name IS 'The key''s name.';
COMMENT ON COLUMN apikeys.key_usage.last_used_at IS 'Last verification of the key (flushed or still in shared memory).';
COMMENT ON COLUMN apikeys.key_usage.usage_limit IS 'The key''s usage cap; NULL: none.';
COMMENT ON COLUMN apikeys.key_usage.used IS 'Uses charged against the cap in the current period.';
COMMENT ON COLUMN apikeys.key_usage.usage_remaining IS 'Uses left under the cap; NULL without one.';
COMMENT ON COLUMN apikeys.key_usage.valid IS 'Verifications with verdict valid (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.disabled IS 'Verifications with verdict disabled (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.revoked IS 'Verifications with verdict revoked (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.expired IS 'Verifications with verdict expired (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.tenant_inactive IS 'Verifications with verdict tenant_inactive (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.ip_not_allowed IS 'Verifications with verdict ip_not_allowed (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.insufficient_scope IS 'Verifications with verdict insufficient_scope (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.rate_limited IS 'Verifications with verdict rate_limited (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.usage_exceeded IS 'Verifications with verdict usage_exceeded (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.flushed_at IS 'When the flush worker last wrote the key''s figures; NULL: never.';
COMMENT ON COLUMN apikeys.key_usage.has_unflushed IS 'Whether shared memory holds counts not yet written to apikeys.usage.';

COMMENT ON COLUMN apikeys.verifications.outcome IS 'The verdict code.';
COMMENT ON COLUMN apikeys.verifications.total IS 'Verifications with that verdict since server start, all databases.';

COMMENT ON COLUMN apikeys.runtime.preloaded IS 'Whether apikeys is in shared_preload_libraries (without it: no cache, no limits, no usage counts).';
COMMENT ON COLUMN apikeys.runtime.shmem_bytes IS 'Shared memory the extension holds.';
COMMENT ON COLUMN apikeys.runtime.cache_capacity IS 'Entries the policy cache can hold (apikeys.cache_entries, rounded to whole sets).';
COMMENT ON COLUMN apikeys.runtime.cache_entries IS 'Entries the policy cache holds now.';
COMMENT ON COLUMN apikeys.runtime.cache_hits IS 'Verifications answered from the policy cache since server start.';
COMMENT ON COLUMN apikeys.runtime.cache_misses IS 'Verifications that had to read the tables since server start.';
COMMENT ON COLUMN apikeys.runtime.cache_evictions IS 'Cache entries dropped for room since server start.';
COMMENT ON COLUMN apikeys.runtime.tracked_capacity IS 'Keys whose usage shared memory can track (apikeys.tracked_keys, rounded to whole sets).';
COMMENT ON COLUMN apikeys.runtime.tracked_keys IS 'Keys whose usage shared memory tracks now.';
COMMENT ON COLUMN apikeys.runtime.unflushed_keys IS 'Keys with figures not yet written to apikeys.usage.';
COMMENT ON COLUMN apikeys.runtime.tracking_dropped IS 'Uses not counted because usage tracking was full, since server start.';
COMMENT ON COLUMN apikeys.runtime.flushed_rows IS 'Rows the flush workers wrote since server start.';
COMMENT ON COLUMN apikeys.runtime.flush_errors IS 'Flushes that failed since server start (alert when it rises).';
COMMENT ON COLUMN apikeys.runtime.last_flush_at IS 'When a flush worker last wrote anything; NULL: never.';
COMMENT ON COLUMN apikeys.runtime.flush_workers IS 'Flush workers running now.';
COMMENT ON COLUMN apikeys.runtime.cache_generation IS 'Times the whole policy cache was retired (a tenant change, a TRUNCATE, ...) since server start.';
COMMENT ON COLUMN apikeys.runtime.flush_lag IS 'now() - last_flush_at (alert when it grows past apikeys.usage_write_delay while keys are in use).';

-- The views that show a table's rows: each column the table has, the
-- table's comment (keys: credential; tenants: tenant; tenant_grants:
-- role_tenant; audit_log: audit; vault_secrets: vault_secret).
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT v.view, a.attname, d.description
          FROM (VALUES ('apikeys.keys'::regclass, 'apikeys.credential'::regclass),
                       ('apikeys.tenants', 'apikeys.tenant'),
                       ('apikeys.tenant_grants', 'apikeys.role_tenant'),
                       ('apikeys.audit_log', 'apikeys.audit'),
                       ('apikeys.vault_secrets', 'apikeys.vault_secret')) v(view, tab)
          JOIN pg_catalog.pg_attribute va ON va.attrelid OPERATOR(pg_catalog.=) v.view AND va.attnum OPERATOR(pg_catalog.>) 0
          JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) v.tab AND a.attname OPERATOR(pg_catalog.=) va.attname
          JOIN pg_catalog.pg_description d ON d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
                                          AND d.objoid OPERATOR(pg_catalog.=) v.tab AND d.objsubid OPERATOR(pg_catalog.=) a.attnum
         ORDER BY 1, 2
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON COLUMN %s.%I IS %L', c.view, c.attname, c.description);
    END LOOP;
END;
$$;

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

-- what 90_privileges.sql does for a fresh install: nothing for PUBLIC
REVOKE ALL ON apikeys.scope, apikeys.scopes FROM PUBLIC;
REVOKE ALL ON FUNCTION apikeys.scope_define(text, text, text), apikeys.scope_drop(text, text, boolean),
    apikeys.read_scopes() FROM PUBLIC;

-- the audit names the registry's changes scope_defined/scope_updated/scope_dropped
CREATE OR REPLACE FUNCTION apikeys_internal._audit_row_change() RETURNS trigger
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
    IF apikeys_internal._bulk_loading() THEN
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
    PERFORM apikeys_internal._audit_write(act, t, k, detail);
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

-- grants the registry's privileges with a mapping
CREATE OR REPLACE FUNCTION apikeys_internal.grant_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
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
                   ' apikeys.tenant_grants, apikeys.key_usage TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.read_tenants(), apikeys.read_keys(),'
                   ' apikeys.read_audit(), apikeys.read_grants(), apikeys.read_key_usage(),'
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
CREATE OR REPLACE FUNCTION apikeys_internal._role_confinement_scan(role oid) RETURNS text
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
     WHERE (p.prosecdef OR p.pronamespace IN ('apikeys'::regnamespace, 'apikeys_internal'::regnamespace))
       AND p.oid NOT IN ('apikeys.pre_request()'::regprocedure, 'apikeys.postgrest_gate()'::regprocedure,
                         'apikeys.current_tenant()'::regprocedure, 'apikeys.current_key_id()'::regprocedure)
       -- the readers behind the views answer only about the caller's own tenants
       AND NOT (p.pronamespace = 'apikeys'::regnamespace
                AND p.proname IN ('read_keys', 'read_tenants', 'read_key_usage', 'read_vault_secrets',
                                  'read_audit', 'read_grants', 'audit_log_page', 'read_scopes'))
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

-- ---------------------------------------------------------------------------
-- Monitoring: apikeys.monitor_usage, apikeys.monitor_tenants, grant_monitor,
-- revoke_monitor (docs/monitoring.md)
-- ---------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Monitoring (docs/monitoring.md): what a metrics collector such as
-- postgres_exporter reads.  A monitoring role gets EXECUTE on these readers
-- and on the shared-memory figures behind apikeys.verifications and
-- apikeys.runtime (apikeys.grant_monitor), never SELECT on a table: it sees
-- tenant ids, key ids and counts, no name, scope, metadata or secret.
------------------------------------------------------------------------------

-- Verifications by outcome, per tenant (every tenant and outcome, zeros
-- included) or per key (per_key: only the outcomes a key has had), flushed
-- plus pending, as apikeys.key_usage counts them.  Outcomes that name no key
-- (malformed, not_found) are in apikeys.verifications only.
CREATE FUNCTION apikeys_internal.monitor_usage(per_key boolean DEFAULT false)
    RETURNS TABLE (tenant text, key_id uuid, outcome text, total bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF per_key IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'invalid_per_key: per_key must be true or false';
    END IF;
    RETURN QUERY
    WITH outcomes (n, outcome) AS (
        -- every verdict that names a key, from the library's list; n: its
        -- index in apikeys_internal._pending_usage's counts
        SELECT d.code OPERATOR(pg_catalog.+) 1, d.name FROM apikeys_internal.verdicts() d WHERE d.counted),
    k AS (
        SELECT c.tenant, c.key_id, to_jsonb(u) AS flushed, p.counts AS pending
          FROM apikeys.credential c
          LEFT JOIN apikeys.usage u ON u.key_id OPERATOR(pg_catalog.=) c.key_id
          LEFT JOIN LATERAL apikeys_internal._pending_usage(c.key_id) p ON true),
    o AS (
        SELECT k.tenant, k.key_id, x.outcome,
               COALESCE((k.flushed OPERATOR(pg_catalog.->>) ('count_' OPERATOR(pg_catalog.||) x.outcome))::bigint, 0)
               OPERATOR(pg_catalog.+) COALESCE(k.pending[x.n], 0) AS total
          FROM k CROSS JOIN outcomes x)
    SELECT o.tenant, o.key_id, o.outcome, o.total
      FROM o
     WHERE per_key AND o.total OPERATOR(pg_catalog.>) 0
    UNION ALL
    SELECT t.tenant, NULL::uuid, x.outcome, COALESCE(sum(o.total), 0)::bigint
      FROM apikeys.tenant t
     CROSS JOIN outcomes x
      LEFT JOIN o ON o.tenant OPERATOR(pg_catalog.=) t.tenant AND o.outcome OPERATOR(pg_catalog.=) x.outcome
     WHERE NOT per_key
     GROUP BY t.tenant, x.n, x.outcome
     ORDER BY 1, 2, 3;
END;
$$;
SELECT apikeys_internal.publish('monitor_usage', 'For monitoring roles: verifications by outcome per tenant, or per key (per_key => true; nonzero outcomes only), flushed plus pending.');

-- One row per tenant: whether it is active, its keys by state, and its audit
-- chain's head (newest row id and time; an index probe each).
CREATE FUNCTION apikeys_internal.monitor_tenants()
    RETURNS TABLE (tenant text, active boolean, keys_active bigint, keys_disabled bigint,
                   keys_revoked bigint, keys_expired bigint, audit_head_id bigint, audit_head_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT t.tenant, t.active,
           count(c.key_id) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'active'
                                     AND (c.expires_at IS NULL OR c.expires_at OPERATOR(pg_catalog.>) now())),
           count(c.key_id) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'disabled'
                                     AND (c.expires_at IS NULL OR c.expires_at OPERATOR(pg_catalog.>) now())),
           count(c.key_id) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'revoked'),
           count(c.key_id) FILTER (WHERE c.status OPERATOR(pg_catalog.<>) 'revoked'
                                     AND c.expires_at OPERATOR(pg_catalog.<=) now()),
           h.audit_id, h.at
      FROM apikeys.tenant t
      LEFT JOIN apikeys.credential c ON c.tenant OPERATOR(pg_catalog.=) t.tenant
      LEFT JOIN LATERAL (SELECT a.audit_id, a.at FROM apikeys.audit a
                          WHERE a.chain OPERATOR(pg_catalog.=) t.tenant
                          ORDER BY a.audit_id DESC LIMIT 1) h ON true
     GROUP BY t.tenant, t.active, h.audit_id, h.at
     ORDER BY 1;
END;
$$;
SELECT apikeys_internal.publish('monitor_tenants', 'For monitoring roles: per tenant, whether it is active, its keys by state (active, disabled, revoked, expired) and its audit chain''s head.');

-- Not SECURITY DEFINER, as grant_verifier: the GRANTs need the rights of
-- the caller (the extension's owner or a superuser).
CREATE FUNCTION apikeys_internal.grant_monitor(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys_internal._check_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT SELECT ON apikeys.verifications, apikeys.runtime TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys_internal._verification_totals(), apikeys_internal._runtime(),'
                   ' apikeys.monitor_usage(boolean), apikeys.monitor_tenants() TO %I', role_name);
END;
$$;
SELECT apikeys_internal.publish('grant_monitor', 'Let a role read the monitoring figures (verifications, runtime, monitor_usage, monitor_tenants) without any table access.');

-- Undo grant_monitor (USAGE on the schema stays: other grants may need it).
CREATE FUNCTION apikeys_internal.revoke_monitor(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys_internal._check_role(role_name);
    EXECUTE format('REVOKE SELECT ON apikeys.verifications, apikeys.runtime FROM %I', role_name);
    EXECUTE format('REVOKE EXECUTE ON FUNCTION apikeys_internal._verification_totals(), apikeys_internal._runtime(),'
                   ' apikeys.monitor_usage(boolean), apikeys.monitor_tenants() FROM %I', role_name);
END;
$$;
SELECT apikeys_internal.publish('revoke_monitor', 'Undo grant_monitor: the monitoring figures'' privileges (USAGE on the schema stays).');
-- publish() revokes PUBLIC's EXECUTE from the bodies; the entry points lose
-- it here (in a fresh install 90_privileges.sql would too, an upgrade has
-- no such step): monitor_usage and monitor_tenants read every tenant.
REVOKE ALL ON FUNCTION apikeys.monitor_usage(boolean), apikeys.monitor_tenants(),
    apikeys.grant_monitor(name), apikeys.revoke_monitor(name) FROM PUBLIC;

-- >>> legacy key formats and import (src/sql/45_legacy.sql)
------------------------------------------------------------------------------
-- Legacy key formats and key import (1.1; docs/migration.md)
--
-- Keys that users issued before apikeys keep working: a format registered
-- here describes their shape (literal prefix, length, alphabet) and the
-- digest the old system stored; apikey_import* moves those digests into
-- apikeys.secret under a lookup digest bound to the format (SHA-256 of
-- "apikeys-legacy-1", the format id and the legacy digest: src/legacy_format.c),
-- and apikey_verify serves them like native keys.
------------------------------------------------------------------------------

CREATE TABLE apikeys.key_format (
    format_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant        text COLLATE "C",   -- NULL: every tenant (no foreign key: see key_format_tenant_deleted)
    name          text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    prefix        text NOT NULL CHECK (prefix ~ '^[!-~]{0,32}$'),
    key_length    integer NOT NULL CHECK (key_length BETWEEN 16 AND 256 AND key_length > length(prefix)),
    alphabet      text NOT NULL,
    head_alphabet text,
    digest        text NOT NULL CHECK (digest IN ('sha256', 'sha512')),
    digest_offset integer NOT NULL DEFAULT 0 CHECK (digest_offset >= 0 AND digest_offset < key_length),
    native_prefix text NOT NULL CHECK (native_prefix ~ '^[a-z][a-z0-9]*(_[a-z0-9]+)*$' AND length(native_prefix) <= 32),
    description   text CHECK (char_length(description) <= 2000),
    created_by    name NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (tenant, name)
);
COMMENT ON TABLE apikeys.key_format IS 'Formats of keys issued before apikeys (legacy keys): shape and stored digest; keys of one format verify through it.';

-- Which format a secret was imported under: apikeys.secret.format_id (NULL
-- for a native secret).  A column of the secret's own row, so an import
-- writes one row per secret and the link goes with the secret (rotated away,
-- deleted, truncated).  No foreign key: a check per imported row would cost
-- more than the rest of its row, and key_format_drop() refuses while a
-- secret of the format can still verify (then deletes the rest).  The
-- lookup digest embeds the format, so a secret whose format is gone can
-- never match a presented key again.
ALTER TABLE apikeys.secret ADD COLUMN format_id uuid;
CREATE INDEX secret_format_idx ON apikeys.secret (format_id) WHERE format_id IS NOT NULL;
COMMENT ON COLUMN apikeys.secret.format_id IS 'The legacy format an imported secret verifies through (apikeys.key_format); NULL: a native secret.';

SELECT pg_catalog.pg_extension_config_dump('apikeys.key_format', '');
ALTER TABLE apikeys.key_format ENABLE ROW LEVEL SECURITY;
CREATE POLICY key_format_read ON apikeys.key_format FOR SELECT
    USING (tenant IS NULL
           OR tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys.visible_tenants('read')), ARRAY[tenant])));

CREATE TYPE apikeys.legacy_key AS (
    digest       text,          -- the digest the old system stored (hex or base64)
    name         text,
    scopes       text[],
    expires_at   timestamptz,   -- may be past: the key imports as expired
    metadata     jsonb,
    created_at   timestamptz,   -- NULL: now
    hint         text,          -- the visible part shown to users (NULL: the format's prefix and '...')
    status       text,          -- active (NULL), disabled or revoked
    revoked_at   timestamptz,   -- for status revoked (NULL: now)
    description  text,
    rate_limit   integer,
    rate_window  interval,      -- NULL with a rate_limit: 1 minute
    last_used_at timestamptz,
    source_id    text,          -- names the row in errors; not stored
    head         text           -- the key's first digest_offset characters when the digest leaves
                                -- them out and they are not the literal prefix (KeyHippo's prefix)
);
COMMENT ON TYPE apikeys.legacy_key IS 'One key to import: its stored digest and what apikeys keeps about it (apikey_import_rows, apikey_import_many).';

------------------------------------------------------------------------------
-- C helpers (src/legacy_format.c)
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal._key_format_alphabet(name text) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_key_format_alphabet';
COMMENT ON FUNCTION apikeys_internal._key_format_alphabet(text) IS 'The characters of a key-format alphabet (hex, HEX, hex_any, base64, base64url, base58, alnum); NULL for another name.';

CREATE FUNCTION apikeys_internal._legacy_digest(format_id uuid, digest text, stored text, encoding text, head text) RETURNS bytea
    LANGUAGE C IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_legacy_digest_sql';
COMMENT ON FUNCTION apikeys_internal._legacy_digest(uuid, text, text, text, text) IS 'The lookup digest apikey_verify computes for a key of format format_id starting with head whose legacy system stored `stored` (hex or base64).';

CREATE FUNCTION apikeys_internal._sha512(bytea) RETURNS bytea
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sha512_sql';
COMMENT ON FUNCTION apikeys_internal._sha512(bytea) IS 'The SHA-512 apikey_verify computes for SHA-512 formats (for tests).';

CREATE FUNCTION apikeys_internal._lock_key_shape(integer, text) RETURNS void
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'apikeys_lock_key_shape';
COMMENT ON FUNCTION apikeys_internal._lock_key_shape(integer, text) IS 'Serialize registrations of formats that could overlap (one key length and prefix), until commit, without waiting: format_registration_busy.';
CREATE FUNCTION apikeys_internal._lock_format_tenant(text) RETURNS void
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'apikeys_lock_format_tenant';
COMMENT ON FUNCTION apikeys_internal._lock_format_tenant(text) IS 'Serialize one tenant''s format registrations (its format limit), until commit, without waiting: format_registration_busy.';

CREATE FUNCTION apikeys_internal._key_format_changed() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'apikeys_key_format_changed';
COMMENT ON FUNCTION apikeys_internal._key_format_changed() IS 'Statement trigger: every backend rereads the format registry after this commit.';
CREATE TRIGGER key_format_changed AFTER INSERT OR UPDATE OR DELETE ON apikeys.key_format
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._key_format_changed();
ALTER TABLE apikeys.key_format ENABLE ALWAYS TRIGGER key_format_changed;

CREATE TRIGGER key_format_no_truncate BEFORE TRUNCATE ON apikeys.key_format
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._refuse_truncate();

-- Audit of the registry: key_format_registered / key_format_dropped, in the
-- format's tenant's chain ('' for a global format).
CREATE FUNCTION apikeys_internal._audit_key_format() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF apikeys_internal._bulk_loading() THEN
        RETURN NULL;   -- pg_restore: the restored audit has the history
    END IF;
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        PERFORM apikeys_internal._audit_write('key_format_registered', NEW.tenant, NULL,
                                     jsonb_build_object('new', to_jsonb(NEW)));
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        PERFORM apikeys_internal._audit_write('key_format_dropped', OLD.tenant, NULL,
                                     jsonb_build_object('old', to_jsonb(OLD)));
    ELSE
        PERFORM apikeys_internal._audit_write('key_format_updated', NEW.tenant, NULL,
                                     jsonb_build_object('old', to_jsonb(OLD), 'new', to_jsonb(NEW)));
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._audit_key_format() IS 'Row trigger: audit every change to apikeys.key_format.';
CREATE TRIGGER audit_key_format AFTER INSERT OR UPDATE OR DELETE ON apikeys.key_format
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_key_format();
ALTER TABLE apikeys.key_format ENABLE ALWAYS TRIGGER audit_key_format;

-- A deleted tenant's formats go with it (a tenant id created again must not
-- inherit them); its keys, and so their secrets, are gone already.
CREATE FUNCTION apikeys_internal._key_format_tenant_deleted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM apikeys.key_format g WHERE g.tenant OPERATOR(pg_catalog.=) OLD.tenant;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._key_format_tenant_deleted() IS 'Row trigger on apikeys.tenant: drop a deleted tenant''s key formats.';
CREATE TRIGGER key_format_tenant_deleted AFTER DELETE ON apikeys.tenant
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._key_format_tenant_deleted();

------------------------------------------------------------------------------
-- Registering and dropping formats
------------------------------------------------------------------------------

-- The characters position i (1-based) of a key of format f may hold: one
-- literal character, or an alphabet's characters.
CREATE FUNCTION apikeys_internal._key_format_chars(f apikeys.key_format, i integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN i OPERATOR(pg_catalog.<=) length(f.prefix) THEN substr(f.prefix, i, 1)
                WHEN i OPERATOR(pg_catalog.<=) f.digest_offset AND f.head_alphabet IS NOT NULL
                    THEN apikeys_internal._key_format_alphabet(f.head_alphabet)
                ELSE apikeys_internal._key_format_alphabet(f.alphabet) END
$$;
COMMENT ON FUNCTION apikeys_internal._key_format_chars(apikeys.key_format, integer) IS 'The characters a key of format f may hold at position i.';

-- Could one string match both formats?  Only at equal lengths, and only if
-- every position admits a common character.  Past both literal prefixes
-- that always holds (all alphabets share the digits 1-9), so only the
-- positions of the longer prefix are compared.
CREATE FUNCTION apikeys_internal._key_formats_overlap(a apikeys.key_format, b apikeys.key_format) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.key_length OPERATOR(pg_catalog.=) b.key_length AND NOT EXISTS (
        SELECT 1
          FROM generate_series(1, greatest(length(a.prefix), length(b.prefix))) i,
               LATERAL (SELECT apikeys_internal._key_format_chars(a, i) AS x,
                               apikeys_internal._key_format_chars(b, i) AS y) c
         WHERE CASE WHEN length(c.x) OPERATOR(pg_catalog.=) 1 THEN strpos(c.y, c.x) OPERATOR(pg_catalog.=) 0
                    WHEN length(c.y) OPERATOR(pg_catalog.=) 1 THEN strpos(c.x, c.y) OPERATOR(pg_catalog.=) 0
                    ELSE false END)
$$;
COMMENT ON FUNCTION apikeys_internal._key_formats_overlap(apikeys.key_format, apikeys.key_format) IS 'Could one string match both formats?';

CREATE FUNCTION apikeys_internal._format_invalid(msg text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'invalid_format: ' || msg;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._format_invalid(text) IS 'Raise invalid_format (22023).';

CREATE FUNCTION apikeys_internal.key_format_register(
    tenant        text,
    name          text,
    prefix        text,
    key_length    integer,
    alphabet      text,
    digest        text DEFAULT 'sha256',
    digest_offset integer DEFAULT 0,
    head_alphabet text DEFAULT NULL,
    native_prefix text DEFAULT NULL,
    description   text DEFAULT NULL)
    RETURNS apikeys.key_format
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f apikeys.key_format;
    other apikeys.key_format;
BEGIN
    PERFORM apikeys_internal._check_tenant_id(tenant);   -- NULL: a global format
    PERFORM apikeys_internal._authorize(tenant, 'key_format_register');
    -- the tenant row held (FOR KEY SHARE) to commit: a tenant_delete that
    -- ran meanwhile would miss this format and leave it to a tenant later
    -- created under the same id
    IF tenant IS NOT NULL THEN
        PERFORM 1 FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) key_format_register.tenant FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = format('tenant_not_found: tenant "%s" does not exist', tenant);
        END IF;
    END IF;
    IF name IS NULL OR name OPERATOR(pg_catalog.!~) '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_format_name: a format name is 1 to 63 of [a-z0-9_], starting with a letter';
    END IF;
    IF prefix IS NULL OR prefix OPERATOR(pg_catalog.!~) '^[!-~]{0,32}$' THEN
        PERFORM apikeys_internal._format_invalid('prefix must be 0 to 32 printable ASCII characters without spaces');
    END IF;
    IF tenant IS NOT NULL AND length(prefix) OPERATOR(pg_catalog.<) 3 THEN
        PERFORM apikeys_internal._format_invalid('a tenant''s format needs a literal prefix of at least 3 characters');
    END IF;
    IF key_length IS NULL OR key_length NOT BETWEEN 16 AND 256 OR key_length OPERATOR(pg_catalog.<=) length(prefix) THEN
        PERFORM apikeys_internal._format_invalid('key_length must be 16 to 256 and longer than the prefix');
    END IF;
    IF apikeys_internal._key_format_alphabet(alphabet) IS NULL
       OR (head_alphabet IS NOT NULL AND apikeys_internal._key_format_alphabet(head_alphabet) IS NULL) THEN
        PERFORM apikeys_internal._format_invalid('alphabets are hex, HEX, hex_any, base64, base64url, base58 or alnum');
    END IF;
    IF digest IS NULL OR digest NOT IN ('sha256', 'sha512') THEN
        PERFORM apikeys_internal._format_invalid('digest must be sha256 or sha512');
    END IF;
    IF digest_offset IS NULL OR (digest_offset OPERATOR(pg_catalog.<>) 0
           AND (digest_offset OPERATOR(pg_catalog.<) length(prefix)
                OR digest_offset OPERATOR(pg_catalog.>) (key_length OPERATOR(pg_catalog.-) 16))) THEN
        PERFORM apikeys_internal._format_invalid('digest_offset must be 0 (the whole key) or from the prefix''s length to key_length - 16');
    END IF;
    IF head_alphabet IS NOT NULL AND digest_offset OPERATOR(pg_catalog.<=) length(prefix) THEN
        PERFORM apikeys_internal._format_invalid('head_alphabet needs a digest_offset past the prefix');
    END IF;
    IF native_prefix IS NOT NULL AND (native_prefix OPERATOR(pg_catalog.!~) '^[a-z][a-z0-9]*(_[a-z0-9]+)*$'
                                      OR length(native_prefix) OPERATOR(pg_catalog.>) 32) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_prefix: native_prefix must be 1 to 32 characters: [a-z0-9] words joined by single underscores, starting with a letter';
    END IF;
    PERFORM apikeys_internal._check_description(description);

    f.format_id := gen_random_uuid();
    f.tenant := tenant;
    f.name := name;
    f.prefix := prefix;
    f.key_length := key_length;
    f.alphabet := alphabet;
    f.head_alphabet := head_alphabet;
    f.digest := digest;
    f.digest_offset := digest_offset;
    -- rotation issues native keys with this prefix: the legacy one when it is one
    f.native_prefix := coalesce(native_prefix,
        CASE WHEN rtrim(prefix, '_') OPERATOR(pg_catalog.~) '^[a-z][a-z0-9]*(_[a-z0-9]+)*$'
                  AND length(rtrim(prefix, '_')) OPERATOR(pg_catalog.<=) 32
             THEN rtrim(prefix, '_') ELSE 'ak' END);
    f.description := description;
    f.created_by := apikeys_internal._acting_role();
    f.created_at := now();

    -- one registration per key shape at a time, never waiting for another
    -- transaction: the overlap check holds at commit
    PERFORM apikeys_internal._lock_key_shape(key_length, prefix);
    -- a tenant's formats are few: each holds a shape others cannot register
    -- (counted under the tenant's registration lock: two of its
    -- transactions cannot both see room for one more)
    IF tenant IS NOT NULL THEN
        PERFORM apikeys_internal._lock_format_tenant(tenant);
    END IF;
    IF tenant IS NOT NULL AND (SELECT count(*) FROM apikeys.key_format g
                                WHERE g.tenant OPERATOR(pg_catalog.=) f.tenant) OPERATOR(pg_catalog.>=) 16 THEN
        RAISE EXCEPTION USING ERRCODE = 'program_limit_exceeded',
            MESSAGE = format('format_limit: tenant "%s" has 16 formats, the most a tenant may have', tenant),
            HINT = 'Drop a format whose keys are gone (apikeys.key_format_drop) first.';
    END IF;
    IF EXISTS (SELECT 1 FROM apikeys.key_format g
                WHERE g.tenant IS NOT DISTINCT FROM f.tenant AND g.name OPERATOR(pg_catalog.=) f.name) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = format('format_exists: format "%s" is already registered%s', name,
                             CASE WHEN tenant IS NULL THEN ' globally' ELSE format(' for tenant "%s"', tenant) END);
    END IF;
    SELECT * INTO other FROM apikeys.key_format g
     WHERE g.key_length OPERATOR(pg_catalog.=) f.key_length AND apikeys_internal._key_formats_overlap(g, f)
     ORDER BY g.created_at LIMIT 1;
    IF FOUND THEN
        -- another tenant's format is not named
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = CASE WHEN other.tenant IS NULL OR other.tenant OPERATOR(pg_catalog.=) f.tenant
                           THEN format('format_overlaps: a key could match both this format and format "%s"', other.name)
                           ELSE 'format_overlaps: a key could match both this format and a format of another tenant' END,
            HINT = 'Formats are matched by prefix, length and alphabet across all tenants; one key must match at most one.';
    END IF;
    INSERT INTO apikeys.key_format VALUES (f.*) RETURNING * INTO f;
    RETURN f;
END;
$$;
SELECT apikeys_internal.publish('key_format_register', 'Register the format of keys issued before apikeys (tenant => NULL: for every tenant), so that they can be imported and verified.');

-- The format `name` that tenant t may import into: its own, else a global one.
CREATE FUNCTION apikeys_internal._format_for(t text, format_name text, p_action text) RETURNS apikeys.key_format
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f apikeys.key_format;
BEGIN
    SELECT * INTO f FROM apikeys.key_format g
     WHERE g.name OPERATOR(pg_catalog.=) format_name
       AND (g.tenant OPERATOR(pg_catalog.=) t OR g.tenant IS NULL)
     ORDER BY g.tenant NULLS LAST LIMIT 1;
    IF NOT FOUND THEN
        PERFORM apikeys_internal._deny(p_action, t, NULL, '42704',
            format('format_not_found: no key format "%s" for tenant "%s"', format_name, t),
            'Register it with apikeys.key_format_register(tenant, name, ...).');
    END IF;
    RETURN f;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._format_for(text, text, text) IS 'The format a tenant imports under that name: its own, else a global one; format_not_found otherwise.';

CREATE FUNCTION apikeys_internal.key_format_drop(tenant text, name text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f apikeys.key_format;
    n bigint;
BEGIN
    PERFORM apikeys_internal._check_tenant_id(tenant);   -- NULL: a global format
    PERFORM apikeys_internal._authorize(tenant, 'key_format_drop');
    SELECT * INTO f FROM apikeys.key_format g
     WHERE g.tenant IS NOT DISTINCT FROM key_format_drop.tenant AND g.name OPERATOR(pg_catalog.=) key_format_drop.name
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM apikeys_internal._deny('key_format_drop', tenant, NULL, '42704',
            format('format_not_found: no key format "%s" %s', name,
                   CASE WHEN tenant IS NULL THEN 'registered globally' ELSE format('for tenant "%s"', tenant) END));
    END IF;
    -- secrets whose rotation grace is over can never verify again
    DELETE FROM apikeys.secret s
     WHERE s.format_id OPERATOR(pg_catalog.=) f.format_id AND s.valid_until OPERATOR(pg_catalog.<=) now();
    SELECT count(*) INTO n FROM apikeys.secret s WHERE s.format_id OPERATOR(pg_catalog.=) f.format_id;
    IF n OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = format('format_in_use: %s secrets of format "%s" can still verify', n, name),
            HINT = 'Rotate those keys (apikeys.apikey_rotate) or delete them; apikeys.legacy_keys lists them.';
    END IF;
    DELETE FROM apikeys.key_format g WHERE g.format_id OPERATOR(pg_catalog.=) f.format_id;
END;
$$;
SELECT apikeys_internal.publish('key_format_drop', 'Drop a key format once no secret of it can verify (expired grace secrets are deleted first).');

------------------------------------------------------------------------------
-- Import
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal._import_fail(sqlstate text, msg text) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = msg;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._import_fail(text, text) IS 'Raise msg with sqlstate (an expression''s error branch).';

-- One import row checked and normalized, or an error.  Plain SQL without
-- SET: inlined into the set-based INSERT of apikeys_internal._import_keys.
CREATE FUNCTION apikeys_internal._import_values(k apikeys.legacy_key, f apikeys.key_format, enc text)
    RETURNS TABLE (name text, description text, scopes text[], metadata jsonb, status text,
                   expires_at timestamptz, created_at timestamptz, revoked_at timestamptz,
                   rate_limit integer, rate_window interval, hint text, digest bytea,
                   last_used_at timestamptz)
    LANGUAGE sql STABLE
AS $$
    SELECT apikeys_internal._check_name(coalesce(k.name, '')),
           apikeys_internal._check_description(k.description),
           apikeys_internal._normalize_scopes(coalesce(k.scopes, '{}')),
           apikeys_internal._check_metadata(coalesce(k.metadata, '{}')),
           CASE WHEN k.status IS NULL THEN 'active'
                WHEN k.status OPERATOR(pg_catalog.=) ANY ('{active,disabled,revoked}'::text[]) THEN k.status
                ELSE apikeys_internal._import_fail('22023', 'invalid_status: status must be active, disabled or revoked') END,
           CASE WHEN k.expires_at IS NULL OR k.expires_at OPERATOR(pg_catalog.=) 'infinity' THEN NULL
                WHEN pg_catalog.isfinite(k.expires_at) THEN k.expires_at
                ELSE apikeys_internal._import_fail('22023', 'invalid_expiry: expires_at must be a finite time (a past one imports the key as expired)')::timestamptz END,
           CASE WHEN k.created_at IS NULL THEN pg_catalog.now()
                WHEN pg_catalog.isfinite(k.created_at) AND k.created_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN k.created_at
                ELSE apikeys_internal._import_fail('22023', 'invalid_created_at: created_at must be a finite time, not in the future')::timestamptz END,
           CASE WHEN k.status IS DISTINCT FROM 'revoked' THEN NULL
                WHEN k.revoked_at IS NULL THEN pg_catalog.now()
                WHEN pg_catalog.isfinite(k.revoked_at) AND k.revoked_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN k.revoked_at
                ELSE apikeys_internal._import_fail('22023', 'invalid_revoked_at: revoked_at must be a finite time, not in the future')::timestamptz END,
           CASE WHEN k.rate_limit IS NULL OR k.rate_limit OPERATOR(pg_catalog.>) 0 THEN k.rate_limit
                ELSE apikeys_internal._import_fail('22023', 'invalid_rate_limit: rate_limit must be positive')::integer END,
           CASE WHEN k.rate_limit IS NULL AND k.rate_window IS NULL THEN NULL
                WHEN k.rate_limit IS NULL THEN apikeys_internal._import_fail('22023', 'invalid_rate_window: rate_window needs a rate_limit')::interval
                WHEN k.rate_window IS NULL THEN interval '1 minute'
                WHEN k.rate_window OPERATOR(pg_catalog.>=) '1 second' AND k.rate_window OPERATOR(pg_catalog.<=) '1 day'
                     AND date_part('month', k.rate_window) OPERATOR(pg_catalog.=) 0
                     AND date_part('year', k.rate_window) OPERATOR(pg_catalog.=) 0
                     AND extract(epoch FROM k.rate_window) OPERATOR(pg_catalog.=) trunc(extract(epoch FROM k.rate_window)) THEN k.rate_window
                ELSE apikeys_internal._import_fail('22023', 'invalid_rate_window: rate_window must be whole seconds from 1 second to 1 day')::interval END,
           CASE WHEN k.hint IS NULL THEN f.prefix OPERATOR(pg_catalog.||) '...'
                WHEN char_length(k.hint) BETWEEN 1 AND 64 AND k.hint OPERATOR(pg_catalog.!~) '[[:cntrl:]]' THEN k.hint
                ELSE apikeys_internal._import_fail('22023', 'invalid_hint: hint must be 1 to 64 characters without control characters') END,
           apikeys_internal._legacy_digest(f.format_id, f.digest, k.digest, enc, h.head),
           CASE WHEN k.last_used_at IS NULL OR (pg_catalog.isfinite(k.last_used_at) AND k.last_used_at OPERATOR(pg_catalog.<=) pg_catalog.now()) THEN k.last_used_at
                ELSE apikeys_internal._import_fail('22023', 'invalid_last_used_at: last_used_at must be a finite time, not in the future')::timestamptz END
      FROM (SELECT CASE
                WHEN f.digest_offset OPERATOR(pg_catalog.=) 0 AND k.head IS NULL THEN ''
                WHEN f.digest_offset OPERATOR(pg_catalog.=) 0
                    THEN apikeys_internal._import_fail('22023', 'invalid_head: the format digests the whole key; head must be NULL')
                WHEN k.head IS NULL AND f.digest_offset OPERATOR(pg_catalog.=) length(f.prefix) THEN f.prefix
                WHEN length(k.head) OPERATOR(pg_catalog.=) f.digest_offset
                     AND left(k.head, length(f.prefix)) OPERATOR(pg_catalog.=) f.prefix
                     AND ltrim(substr(k.head, length(f.prefix) OPERATOR(pg_catalog.+) 1),
                               apikeys_internal._key_format_alphabet(coalesce(f.head_alphabet, f.alphabet))) OPERATOR(pg_catalog.=) ''
                    THEN k.head
                ELSE apikeys_internal._import_fail('22023', 'invalid_head: head must be the key''s first digest_offset characters, in the format''s shape') END AS head) h
$$;
COMMENT ON FUNCTION apikeys_internal._import_values(apikeys.legacy_key, apikeys.key_format, text) IS 'One import row, checked and normalized (raises on a bad field).';

-- The first row of a failed import batch and its error: rows are checked
-- one by one in order (a subtransaction each: this runs only after a
-- failure), then digests seen twice or known already.  NULL if no row is
-- at fault (the failure was something else).
CREATE FUNCTION apikeys_internal._import_first_bad(p_tenant text, p_keys apikeys.legacy_key[], f apikeys.key_format, enc text,
    OUT ord bigint, OUT err_state text, OUT err_message text, OUT err_detail text, OUT err_hint text)
    RETURNS record
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.legacy_key;
    i bigint := 0;
    dup bigint;
    twice bigint;
BEGIN
    FOREACH k IN ARRAY p_keys LOOP
        i := i OPERATOR(pg_catalog.+) 1;
        BEGIN
            -- every column: unused ones would not be computed (nor checked)
            PERFORM x.* FROM apikeys_internal._import_values(k, f, enc) x;
            PERFORM apikeys_internal.check_scopes(p_tenant, k.scopes);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT,
                                    err_detail = PG_EXCEPTION_DETAIL, err_hint = PG_EXCEPTION_HINT;
            ord := i;
            RETURN;
        END;
    END LOOP;
    SELECT d.ord, d.first INTO dup, twice
      FROM (SELECT v.ord, v.digest,
                   min(v.ord) OVER (PARTITION BY v.digest) AS first
              FROM (SELECT row_number() OVER () AS ord, x.digest
                      FROM unnest(p_keys) u, LATERAL apikeys_internal._import_values(u, f, enc) x) v) d
     WHERE d.first OPERATOR(pg_catalog.<) d.ord
        OR EXISTS (SELECT 1 FROM apikeys.secret s WHERE s.digest OPERATOR(pg_catalog.=) d.digest)
     ORDER BY d.ord LIMIT 1;
    IF FOUND THEN
        ord := dup;
        err_state := '23505';
        err_message := CASE WHEN twice OPERATOR(pg_catalog.<) dup
                        THEN format('duplicate_digest: the digest of this row is also in row %s', twice)
                        ELSE 'duplicate_digest: a key with this digest exists already' END;
    END IF;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._import_first_bad(text, apikeys.legacy_key[], apikeys.key_format, text) IS 'The first failing row of an import batch, with its error.';

-- Import p_keys into tenant p_tenant under format p_format: one key per row,
-- all or nothing.  A failure names its row (p_first_row numbers the first).
-- Audit: the triggers' key_created and secret_issued rows for each key, and
-- one keys_imported row for the call (format, count, first row).
CREATE FUNCTION apikeys_internal._import_keys(p_tenant text, p_format text, p_keys apikeys.legacy_key[],
                                              p_first_row bigint, p_encoding text)
    RETURNS uuid[]
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f apikeys.key_format;
    n integer := coalesce(cardinality(p_keys), 0);
    ids uuid[];
    bad record;
    src text;
    e_state text;
    e_msg text;
    e_detail text;
    e_hint text;
BEGIN
    PERFORM apikeys_internal._tenant_arg(p_tenant);
    PERFORM apikeys_internal._authorize(p_tenant, 'key_import');
    IF p_format IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_format_name: format must not be NULL';
    END IF;
    f := apikeys_internal._format_for(p_tenant, p_format, 'key_import');
    PERFORM 1 FROM apikeys.tenant t WHERE t.tenant OPERATOR(pg_catalog.=) p_tenant AND t.active FOR SHARE;
    IF NOT FOUND THEN
        PERFORM apikeys_internal._require_active_tenant(p_tenant, 'key_import', NULL);
    END IF;
    IF p_encoding IS NULL OR p_encoding NOT IN ('hex', 'base64') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_encoding: digest_encoding must be hex or base64';
    END IF;
    IF array_ndims(p_keys) OPERATOR(pg_catalog.>) 1 OR n OPERATOR(pg_catalog.>) 1000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_import: keys must be a one-dimensional array of at most 1000000 rows';
    END IF;
    IF n OPERATOR(pg_catalog.=) 0 THEN
        RETURN '{}';
    END IF;
    ids := ARRAY(SELECT apikeys_internal._key_id() FROM generate_series(1, n));

    BEGIN
        -- the tenant's scope registry holds for imported keys as for created
        -- ones: the batch's distinct scopes checked together, 64 at a time
        -- (the most one list may hold); the row that holds an unknown one
        -- is found below, on failure
        PERFORM apikeys_internal.check_scopes(p_tenant, pg_catalog.array_agg(d.x))
           FROM (SELECT u.x, (pg_catalog.dense_rank() OVER (ORDER BY u.x) OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog./) 64 AS chunk
                   FROM (SELECT DISTINCT x FROM unnest(p_keys) k, unnest(k.scopes) x WHERE x IS NOT NULL) u) d
          GROUP BY d.chunk;
        -- one statement: credentials (the main insert) first, then their
        -- secrets (with their format) and last uses, so each key's secret
        -- joins its key_created audit row
        WITH v AS MATERIALIZED (
            SELECT ids[u.ord] AS key_id, x.*
              FROM (SELECT k, row_number() OVER () AS ord FROM unnest(p_keys) k) u,
                   LATERAL apikeys_internal._import_values(u.k, f, p_encoding) x),
        s AS (
            INSERT INTO apikeys.secret (digest, key_id, hint, created_at, format_id)
            SELECT v.digest, v.key_id, v.hint, v.created_at, f.format_id FROM v),
        lu AS (
            INSERT INTO apikeys.usage (key_id, last_used_at)
            SELECT v.key_id, v.last_used_at FROM v WHERE v.last_used_at IS NOT NULL)
        INSERT INTO apikeys.credential (key_id, tenant, name, description, prefix, scopes, metadata,
                                        status, expires_at, created_by, created_at, updated_at,
                                        revoked_at, rate_limit, rate_window)
        SELECT v.key_id, p_tenant, v.name, v.description, f.native_prefix, v.scopes, v.metadata,
               v.status, v.expires_at, apikeys_internal._acting_role(), v.created_at, now(),
               v.revoked_at, v.rate_limit, v.rate_window
          FROM v;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT,
                                e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
        bad := apikeys_internal._import_first_bad(p_tenant, p_keys, f, p_encoding);
        IF bad.ord IS NOT NULL THEN
            -- the row's own error, naming the row
            src := (p_keys[bad.ord]).source_id;
            e_state := bad.err_state;
            e_msg := format('%s (import row %s%s)', bad.err_message,
                            p_first_row OPERATOR(pg_catalog.+) bad.ord OPERATOR(pg_catalog.-) 1,
                            CASE WHEN src IS NULL THEN '' ELSE format(', source_id %s', quote_literal(left(src, 100))) END);
            e_detail := coalesce(bad.err_detail, 'Nothing of this import was kept.');
            e_hint := bad.err_hint;
        ELSIF e_state OPERATOR(pg_catalog.=) '23505' THEN
            -- a concurrent import won the race: never echo the index's detail (a digest)
            e_msg := 'duplicate_digest: a key of this import was imported by a concurrent transaction';
            e_detail := 'Nothing of this import was kept.';
            e_hint := 'Run the import again: the row will be named.';
        END IF;
        IF e_hint IS NULL OR e_hint OPERATOR(pg_catalog.=) '' THEN
            RAISE EXCEPTION USING ERRCODE = e_state, MESSAGE = e_msg, DETAIL = coalesce(e_detail, '');
        END IF;
        RAISE EXCEPTION USING ERRCODE = e_state, MESSAGE = e_msg, DETAIL = coalesce(e_detail, ''), HINT = e_hint;
    END;
    -- what the rows above do not say: that these keys were imported, under which format
    PERFORM apikeys_internal._audit_write('keys_imported', p_tenant, NULL,
        jsonb_build_object('format', f.name, 'format_id', f.format_id, 'format_tenant', f.tenant,
                           'keys', n, 'first_row', p_first_row));
    RETURN ids;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._import_keys(text, text, apikeys.legacy_key[], bigint, text) IS 'Import legacy keys into a tenant, all or nothing; errors name their row.';

CREATE FUNCTION apikeys_internal.apikey_import(
    tenant          text,
    format          text,
    digest          text,
    name            text,
    scopes          text[] DEFAULT '{}',
    expires_at      timestamptz DEFAULT NULL,
    metadata        jsonb DEFAULT '{}',
    created_at      timestamptz DEFAULT NULL,
    hint            text DEFAULT NULL,
    status          text DEFAULT 'active',
    revoked_at      timestamptz DEFAULT NULL,
    description     text DEFAULT NULL,
    rate_limit      integer DEFAULT NULL,
    rate_window     interval DEFAULT NULL,
    last_used_at    timestamptz DEFAULT NULL,
    digest_encoding text DEFAULT 'hex',
    head            text DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (apikeys_internal._import_keys(tenant, format,
        ARRAY[ROW(digest, name, scopes, expires_at, metadata, created_at, hint, status, revoked_at,
                  description, rate_limit, rate_window, last_used_at, NULL, head)::apikeys.legacy_key],
        1, digest_encoding))[1];
END;
$$;
SELECT apikeys_internal.publish('apikey_import', 'Import one key issued before apikeys, by the digest its old system stored; returns its key_id.');

CREATE FUNCTION apikeys_internal.apikey_import_rows(
    tenant          text,
    format          text,
    keys            apikeys.legacy_key[],
    digest_encoding text DEFAULT 'hex',
    first_row       bigint DEFAULT 1)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF first_row IS NULL OR first_row OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_import: first_row must be at least 1';
    END IF;
    RETURN coalesce(cardinality(apikeys_internal._import_keys(tenant, format, keys, first_row, digest_encoding)), 0);
END;
$$;
SELECT apikeys_internal.publish('apikey_import_rows', 'Import an array of legacy keys (up to 1,000,000), all or nothing; returns how many.');

-- The columns an import query returns (parse analysis only: nothing runs),
-- and whether each type is built in (src/import_query.c).  Callable by
-- anyone: it says only what the caller's own query would return.
CREATE FUNCTION apikeys.import_query_columns(query text, OUT name text, OUT type text, OUT built_in boolean)
    RETURNS SETOF record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_import_columns';
COMMENT ON FUNCTION apikeys.import_query_columns(text) IS 'The result columns of a query for apikey_import_many (parse analysis only), and whether each type is built in (apikey_import_many imports only those).';

-- The bulk form.  Not an entry point of its own but a SECURITY INVOKER
-- function: the query runs with the caller's rights and search_path, as if
-- the caller ran it, and only its rows reach the apikey_import_rows entry
-- point (which authorizes and audits), 10,000 at a time.  Its columns are
-- matched to apikeys.legacy_key by name; an unknown one is an error.
CREATE FUNCTION apikeys.apikey_import_many(
    tenant          text,
    format          text,
    query           text,
    digest_encoding text DEFAULT 'hex')
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    -- a row-level policy of the queried table would run its owner's code as
    -- the caller: such a table is refused instead (an error, no policy run)
    SET row_security = off
AS $$
DECLARE
    batch apikeys.legacy_key[] := '{}';
    j jsonb;
    total bigint := 0;
    first bigint := 1;
    extra text;
BEGIN
    IF query IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_import: query must not be NULL';
    END IF;
    -- a value of a type some role created is converted by that role's casts,
    -- as the caller (src/import_query.c): only built-in types are read
    SELECT pg_catalog.string_agg(pg_catalog.format('%s (%s)', pg_catalog.quote_ident(c.name), c.type), ', ')
      INTO extra FROM apikeys.import_query_columns(query) c WHERE NOT c.built_in;
    IF extra IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_import: the query has columns of types that are not built in: ' OPERATOR(pg_catalog.||) extra,
            DETAIL = 'A value of a type some role created is converted by that role''s casts, which would run with your rights.',
            HINT = 'Convert each in the query to a built-in type (for example label::text AS name), after checking with \dC that no role''s cast function would run.';
    END IF;
    FOR j IN EXECUTE 'SELECT pg_catalog.to_jsonb(q) FROM (' OPERATOR(pg_catalog.||) query OPERATOR(pg_catalog.||) E'\n) q' LOOP
        IF total OPERATOR(pg_catalog.=) 0 AND pg_catalog.cardinality(batch) OPERATOR(pg_catalog.=) 0 THEN
            SELECT pg_catalog.string_agg(pg_catalog.quote_ident(c), ', ') INTO extra
              FROM pg_catalog.jsonb_object_keys(j) c
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                WHERE a.attrelid OPERATOR(pg_catalog.=) 'apikeys.legacy_key'::pg_catalog.regclass
                                  AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
                                  AND a.attname::text OPERATOR(pg_catalog.=) c);
            IF extra IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = 'invalid_import: the query has columns apikeys.legacy_key does not: ' OPERATOR(pg_catalog.||) extra,
                    HINT = 'Name the columns digest, name, scopes, expires_at, metadata, created_at, hint, status, revoked_at, description, rate_limit, rate_window, last_used_at, source_id, head.';
            END IF;
        END IF;
        batch := pg_catalog.array_append(batch, pg_catalog.jsonb_populate_record(NULL::apikeys.legacy_key, j));
        IF pg_catalog.cardinality(batch) OPERATOR(pg_catalog.>=) 10000 THEN
            total := total OPERATOR(pg_catalog.+) apikeys.apikey_import_rows(tenant, format, batch, digest_encoding, first);
            first := total OPERATOR(pg_catalog.+) 1;
            batch := '{}';
        END IF;
    END LOOP;
    IF pg_catalog.cardinality(batch) OPERATOR(pg_catalog.>) 0 OR total OPERATOR(pg_catalog.=) 0 THEN
        total := total OPERATOR(pg_catalog.+) apikeys.apikey_import_rows(tenant, format, batch, digest_encoding, first);
    END IF;
    RETURN total;
END;
$$;
COMMENT ON FUNCTION apikeys.apikey_import_many(text, text, text, text) IS 'Import every row of a query (run with the caller''s rights; columns named as in apikeys.legacy_key), all or nothing; returns how many.';

------------------------------------------------------------------------------
-- Readers
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal.read_key_formats()
    RETURNS TABLE (tenant text, name text, prefix text, key_length integer, alphabet text,
                   head_alphabet text, digest text, digest_offset integer, native_prefix text,
                   description text, created_by name, created_at timestamptz, secrets bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 10
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
BEGIN
    RETURN QUERY
    SELECT g.tenant, g.name, g.prefix, g.key_length, g.alphabet, g.head_alphabet, g.digest,
           g.digest_offset, g.native_prefix, g.description, g.created_by, g.created_at,
           (SELECT count(*) FROM apikeys.secret s
              JOIN apikeys.credential c ON c.key_id OPERATOR(pg_catalog.=) s.key_id
             WHERE s.format_id OPERATOR(pg_catalog.=) g.format_id
               AND (v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v)))
      FROM apikeys.key_format g
     WHERE g.tenant IS NULL OR v IS NULL OR g.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;
SELECT apikeys_internal.publish('read_key_formats', 'Rows of apikeys.key_formats: global formats and those of the tenants the caller may read.');
CREATE VIEW apikeys.key_formats WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_key_formats();
COMMENT ON VIEW apikeys.key_formats IS 'Registered legacy key formats the caller may use, with how many of its secrets each still verifies.';

CREATE FUNCTION apikeys_internal.read_legacy_keys()
    RETURNS TABLE (key_id uuid, tenant text, format text, hint text, status text, valid_until timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
BEGIN
    RETURN QUERY
    SELECT c.key_id, c.tenant, g.name, s.hint, c.status, s.valid_until
      FROM apikeys.credential c
      JOIN apikeys.secret s ON s.key_id OPERATOR(pg_catalog.=) c.key_id
      JOIN apikeys.key_format g ON g.format_id OPERATOR(pg_catalog.=) s.format_id
     WHERE v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;
SELECT apikeys_internal.publish('read_legacy_keys', 'Rows of apikeys.legacy_keys: the legacy secrets of the tenants the caller may read.');
CREATE VIEW apikeys.legacy_keys WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_legacy_keys();
COMMENT ON VIEW apikeys.legacy_keys IS 'Keys that still verify with a legacy secret (imported, not yet rotated away), with the secret''s format.';
-- Column comments (the views' columns say the same as the table's).
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT * FROM (VALUES
            ('tenant',        'The tenant whose keys have this format; NULL: a global format, usable for every tenant (registered by a global admin).'),
            ('name',          'The format''s name, unique per tenant (and among global formats).'),
            ('prefix',        'The literal text every key of the format starts with (may be empty for a global format).'),
            ('key_length',    'The length of every key of the format, prefix included.'),
            ('alphabet',      'The characters of the key after its prefix (or after its head): hex, HEX, hex_any, base64, base64url, base58 or alnum.'),
            ('head_alphabet', 'The alphabet of a random head between the prefix and digest_offset (KeyHippo''s prefix); NULL: none.'),
            ('digest',        'What the old system stored: sha256 or sha512 of the key from digest_offset on.'),
            ('digest_offset', 'Where the digested part starts (0: the whole key).'),
            ('native_prefix', 'The prefix of the native keys apikey_rotate issues in place of this format''s keys.'),
            ('description',   'What the format is, for people.'),
            ('created_by',    'The role that registered the format.'),
            ('created_at',    'When the format was registered.')) AS v(col, txt)
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON COLUMN apikeys.key_format.%I IS %L', c.col, c.txt);
        EXECUTE pg_catalog.format('COMMENT ON COLUMN apikeys.key_formats.%I IS %L', c.col, c.txt);
    END LOOP;
END;
$$;
COMMENT ON COLUMN apikeys.key_format.format_id IS 'The format''s id; imported secrets refer to it (apikeys.secret.format_id).';
COMMENT ON COLUMN apikeys.key_formats.secrets IS 'How many secrets of the caller''s tenants still verify through the format.';
COMMENT ON COLUMN apikeys.legacy_keys.key_id IS 'The key that still has a legacy secret.';
COMMENT ON COLUMN apikeys.legacy_keys.tenant IS 'The key''s tenant.';
COMMENT ON COLUMN apikeys.legacy_keys.format IS 'The name of the legacy secret''s format.';
COMMENT ON COLUMN apikeys.legacy_keys.hint IS 'The visible part of the legacy key.';
COMMENT ON COLUMN apikeys.legacy_keys.status IS 'The key''s status (active, disabled, revoked).';
COMMENT ON COLUMN apikeys.legacy_keys.valid_until IS 'When the legacy secret stops verifying (rotated with grace); NULL: while the key lives.';
COMMENT ON COLUMN apikeys.legacy_key.digest IS 'The digest the old system stored, in hex or base64.';
COMMENT ON COLUMN apikeys.legacy_key.name IS 'The key''s name.';
COMMENT ON COLUMN apikeys.legacy_key.scopes IS 'The key''s scopes (checked against the tenant''s scope registry).';
COMMENT ON COLUMN apikeys.legacy_key.expires_at IS 'When the key expires; a past time imports it as expired.';
COMMENT ON COLUMN apikeys.legacy_key.metadata IS 'The key''s metadata (a JSON object).';
COMMENT ON COLUMN apikeys.legacy_key.created_at IS 'When the old system created the key (NULL: now).';
COMMENT ON COLUMN apikeys.legacy_key.hint IS 'The visible part the old system showed (NULL: the format''s prefix and "...").';
COMMENT ON COLUMN apikeys.legacy_key.status IS 'active (NULL), disabled or revoked.';
COMMENT ON COLUMN apikeys.legacy_key.revoked_at IS 'When a revoked key was revoked (NULL: now).';
COMMENT ON COLUMN apikeys.legacy_key.description IS 'The key''s description.';
COMMENT ON COLUMN apikeys.legacy_key.rate_limit IS 'A rate limit to keep (per rate_window).';
COMMENT ON COLUMN apikeys.legacy_key.rate_window IS 'The rate limit''s window (NULL with a rate_limit: 1 minute).';
COMMENT ON COLUMN apikeys.legacy_key.last_used_at IS 'When the old system last saw the key used.';
COMMENT ON COLUMN apikeys.legacy_key.source_id IS 'The row''s id in the old table, named in errors; not stored.';
COMMENT ON COLUMN apikeys.legacy_key.head IS 'The key''s first digest_offset characters, when the digest leaves them out and they are not the literal prefix (KeyHippo''s random prefix).';

-- the confinement scan knows the new readers answer only about the caller's tenants
CREATE OR REPLACE FUNCTION apikeys_internal._role_confinement_scan(role oid) RETURNS text
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
     WHERE (p.prosecdef OR p.pronamespace IN ('apikeys'::regnamespace, 'apikeys_internal'::regnamespace))
       AND p.oid NOT IN ('apikeys.pre_request()'::regprocedure, 'apikeys.postgrest_gate()'::regprocedure,
                         'apikeys.current_tenant()'::regprocedure, 'apikeys.current_key_id()'::regprocedure)
       -- the readers behind the views answer only about the caller's own tenants
       AND NOT (p.pronamespace = 'apikeys'::regnamespace
                AND p.proname IN ('read_keys', 'read_tenants', 'read_key_usage', 'read_vault_secrets',
                                  'read_audit', 'read_grants', 'audit_log_page', 'read_scopes',
                                  'read_key_formats', 'read_legacy_keys'))
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

-- grant_tenant also grants the import functions and the format views
CREATE OR REPLACE FUNCTION apikeys_internal.grant_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
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
                   ' apikeys.tenant_grants, apikeys.key_usage TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.read_tenants(), apikeys.read_keys(),'
                   ' apikeys.read_audit(), apikeys.read_grants(), apikeys.read_key_usage(),'
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

-- as 90_privileges.sql does for a fresh install
REVOKE ALL ON FUNCTION apikeys.apikey_import_many(text, text, text, text),
    apikeys.key_format_register(text, text, text, integer, text, text, integer, text, text, text),
    apikeys.key_format_drop(text, text),
    apikeys.apikey_import(text, text, text, text, text[], timestamptz, jsonb, timestamptz, text, text,
                          timestamptz, text, integer, interval, timestamptz, text, text),
    apikeys.apikey_import_rows(text, text, apikeys.legacy_key[], text, bigint),
    apikeys.read_key_formats(), apikeys.read_legacy_keys() FROM PUBLIC;
REVOKE ALL ON apikeys.key_format, apikeys.key_formats, apikeys.legacy_keys FROM PUBLIC;
-- <<< legacy key formats and import

------------------------------------------------------------------------------
-- audit-v2 performance: the audit's row writer, its trigger and its labels
-- in C (src/audit_row.c), the same rows as 1.0's PL/pgSQL; _is_superuser in C
------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION apikeys_internal._is_superuser(r name) RETURNS boolean
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_is_superuser_1_1';
CREATE OR REPLACE FUNCTION apikeys_internal._actor() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_actor_1_1';
CREATE OR REPLACE FUNCTION apikeys_internal._request_id() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_request_id_1_1';
DROP FUNCTION apikeys_internal._json_setting(text, text);
CREATE OR REPLACE FUNCTION apikeys_internal._audit_write(p_action text, p_tenant text, p_key_id uuid, p_detail jsonb)
    RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikeys_audit_write_1_1';
CREATE OR REPLACE FUNCTION apikeys_internal._audit_row_change() RETURNS trigger
    LANGUAGE C SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikeys_audit_row_change_1_1';
-- inserts of keys and secrets: one statement trigger per statement, the
-- audit rows of all its new rows written set-based (apikey_create_many)
DROP TRIGGER audit_credential ON apikeys.credential;
DROP TRIGGER audit_secret ON apikeys.secret;
CREATE TRIGGER audit_credential AFTER UPDATE OR DELETE ON apikeys.credential
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_row_change();
CREATE TRIGGER audit_credential_insert AFTER INSERT ON apikeys.credential
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._audit_row_change();
CREATE TRIGGER audit_secret AFTER UPDATE OR DELETE ON apikeys.secret
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_row_change();
CREATE TRIGGER audit_secret_insert AFTER INSERT ON apikeys.secret
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._audit_row_change();
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER audit_credential;
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER audit_credential_insert;
ALTER TABLE apikeys.secret ENABLE ALWAYS TRIGGER audit_secret;
ALTER TABLE apikeys.secret ENABLE ALWAYS TRIGGER audit_secret_insert;

------------------------------------------------------------------------------
-- limits: one list of verdicts (src/verdicts.h) read by the SQL through
-- apikeys_internal.verdicts(): apikeys.key_usage finds each verdict's count
-- by its code, the PostgREST gate takes its HTTP status from the list.
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal.verdicts(OUT code integer, OUT name text, OUT counted boolean,
                                          OUT http_status integer)
    RETURNS SETOF record
    LANGUAGE C STABLE PARALLEL SAFE ROWS 16 AS 'MODULE_PATHNAME', 'apikeys_verdicts_sql';
REVOKE ALL ON FUNCTION apikeys_internal.verdicts() FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal.verdicts() IS 'The verdicts of apikey_verify (code, name, counted in apikeys.usage, HTTP status), from the library''s list.';

CREATE OR REPLACE FUNCTION apikeys_internal.read_key_usage()
    RETURNS TABLE (key_id uuid, tenant text, name text, last_used_at timestamptz, usage_limit bigint,
                   used bigint, usage_remaining bigint, valid bigint, disabled bigint, revoked bigint,
                   expired bigint, tenant_inactive bigint, ip_not_allowed bigint,
                   insufficient_scope bigint, rate_limited bigint, usage_exceeded bigint,
                   flushed_at timestamptz, has_unflushed boolean)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
    -- each verdict's index in _pending_usage's counts, from the library's
    -- list (a constant once the plan is made: force_custom_plan)
    ix jsonb := (SELECT jsonb_object_agg(d.name, d.code OPERATOR(pg_catalog.+) 1)
                   FROM apikeys_internal.verdicts() d);
BEGIN
    RETURN QUERY
    SELECT c.key_id, c.tenant, c.name,
           GREATEST(u.last_used_at, p.last_used_at) AS last_used_at,
           c.usage_limit,
           COALESCE(p.used, u.used, 0) AS used,
           CASE WHEN c.usage_limit IS NOT NULL
                THEN GREATEST(c.usage_limit OPERATOR(pg_catalog.-) COALESCE(p.used, u.used, 0), 0) END AS usage_remaining,
           COALESCE(u.count_valid, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'valid')::integer], 0) AS valid,
           COALESCE(u.count_disabled, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'disabled')::integer], 0) AS disabled,
           COALESCE(u.count_revoked, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'revoked')::integer], 0) AS revoked,
           COALESCE(u.count_expired, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'expired')::integer], 0) AS expired,
           COALESCE(u.count_tenant_inactive, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'tenant_inactive')::integer], 0) AS tenant_inactive,
           COALESCE(u.count_ip_not_allowed, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'ip_not_allowed')::integer], 0) AS ip_not_allowed,
           COALESCE(u.count_insufficient_scope, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'insufficient_scope')::integer], 0) AS insufficient_scope,
           COALESCE(u.count_rate_limited, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'rate_limited')::integer], 0) AS rate_limited,
           COALESCE(u.count_usage_exceeded, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'usage_exceeded')::integer], 0) AS usage_exceeded,
           u.flushed_at,
           p.key_id IS NOT NULL AND (p.counts OPERATOR(pg_catalog.<>) array_fill(0::bigint, ARRAY[cardinality(p.counts)])) AS has_unflushed
      FROM apikeys.credential c
      LEFT JOIN apikeys.usage u ON u.key_id OPERATOR(pg_catalog.=) c.key_id
      LEFT JOIN LATERAL apikeys_internal._pending_usage(c.key_id) p ON true
     WHERE v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;

CREATE OR REPLACE FUNCTION apikeys.postgrest_gate(
    OUT status           integer,   -- 200: let the request through
    OUT message          text,      -- PGRST error message (JSON)
    OUT detail           text,      -- PGRST error detail (JSON)
    OUT response_headers jsonb,     -- on 200: [{"name": "value"}, ...]
    OUT set_role         name)      -- on 200: role to switch to, or NULL
    RETURNS record
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg        apikeys.postgrest_setting;
    lim        record := apikeys_internal._postgrest_limits();
    raw_method text := coalesce(current_setting('request.method', true), '');
    raw_path   text := coalesce(current_setting('request.path', true), '');
    raw_hdrs   text := nullif(current_setting('request.headers', true), '');
    stage      text;
    bad        text;        -- why the request cannot be read (400)
    req_method text;
    req_path   text;
    headers    jsonb;
    api_key    text;
    need       text[];
    n_routes   integer;
    path_known boolean;
    anonymous  boolean;
    any_tenant boolean;
    v          apikeys.verification;
    hdrs       jsonb := '{}';
    rl_hdrs    jsonb := '[]';
    code       text;
    msg        text;
    details    text;
    hint       text;
    reason     text;        -- for the log line only
    wait_s     bigint;
    per        interval;
    r          pg_catalog.pg_roles;
BEGIN
    SELECT * INTO cfg FROM apikeys.postgrest_setting;
    IF NOT FOUND THEN
        cfg := ROW(true, '{x-api-key,apikey,authorization}', 'api', true, true, false, NULL);
    END IF;

    -- Read the request: bounded, and any error in it (bad JSON, nesting too
    -- deep, \u0000, invalid UTF-8 once percent-decoded, ...) is a 400.
    BEGIN
        stage := 'request.method';
        IF octet_length(raw_method) > lim.max_method OR raw_method !~ '^[A-Za-z]*$' THEN
            bad := format('request.method is not an HTTP method (letters only, at most %s)', lim.max_method);
        ELSIF octet_length(raw_path) > lim.max_path THEN
            bad := format('request.path is longer than %s bytes', lim.max_path);
        ELSIF octet_length(raw_hdrs) > lim.max_headers THEN
            bad := format('request.headers is longer than %s bytes', lim.max_headers);
        ELSE
            req_method := upper(raw_method);
            stage := 'request.path';
            req_path := apikeys.postgrest_normalize_path(raw_path);
            stage := 'request.headers';
            headers := raw_hdrs::jsonb;
            IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
                bad := 'request.headers is not a JSON object';
            ELSIF EXISTS (SELECT 1 FROM jsonb_each(headers) e WHERE jsonb_typeof(e.value) NOT IN ('string', 'null')) THEN
                bad := 'request.headers has a value that is not a string';   -- (null: no such header)
            ELSIF EXISTS (SELECT 1 FROM jsonb_each_text(headers) e WHERE octet_length(e.value) > lim.max_header_value) THEN
                bad := format('a header value is longer than %s bytes', lim.max_header_value);
            ELSE
                -- routes that match this request, and whether any matches its path
                stage := 'routes';
                WITH p AS (
                    SELECT rt.method, rt.required_scopes, rt.allow_anonymous
                      FROM apikeys.postgrest_route rt
                     WHERE CASE rt.match WHEN 'exact' THEN req_path = rt.path
                                         WHEN 'like'  THEN req_path LIKE rt.path
                                         ELSE req_path ~ rt.path END),
                m AS (
                    SELECT p.* FROM p
                     WHERE p.method = '*' OR p.method = req_method OR (p.method = 'GET' AND req_method = 'HEAD'))
                SELECT (SELECT count(*) FROM m), (SELECT bool_and(m.allow_anonymous) FROM m),
                       array(SELECT DISTINCT s FROM m, unnest(m.required_scopes) s ORDER BY s),
                       EXISTS (SELECT 1 FROM p)
                  INTO n_routes, anonymous, need, path_known;
                stage := 'key';
                api_key := apikeys_internal._postgrest_key(headers, cfg.key_headers);
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        bad := CASE stage
               WHEN 'request.path' THEN 'request.path is not valid UTF-8 once percent-decoded'
               WHEN 'request.headers' THEN 'request.headers is not valid JSON'
               WHEN 'routes' THEN 'request.path cannot be matched against the routes'
               ELSE 'the API key header cannot be read' END;
        reason := SQLSTATE || ' ' || left(SQLERRM, 200);
    END;

    IF bad IS NOT NULL THEN
        status := 400;
        code := 'apikeys.bad_request';
        msg := 'The request cannot be read';
        details := bad;
        reason := coalesce(reason, bad);
    ELSIF n_routes = 0 AND path_known AND NOT cfg.allow_unlisted_methods THEN
        -- routes list this path for other methods only: refused whoever asks
        status := 403;
        code := 'apikeys.method_not_allowed';
        msg := 'This method is not allowed on this path';
        hint := 'apikeys.postgrest_route lists this path for other methods only.';
    ELSE
        IF n_routes = 0 THEN
            anonymous := NOT cfg.require_key;
        END IF;

        IF api_key IS NULL THEN
            IF anonymous THEN
                status := 200;
                RETURN;
            END IF;
            status := 401;
            code := 'apikeys.missing';
            msg := 'API key required';
            hint := 'Send the API key in one of these headers: '
                    || array_to_string(array(SELECT CASE x WHEN 'authorization' THEN 'Authorization: Bearer'
                                                           WHEN 'x-api-key' THEN 'X-API-Key'
                                                           ELSE x END
                                               FROM unnest(cfg.key_headers) WITH ORDINALITY AS u(x, i)
                                              ORDER BY i), ', ') || '.';
            hdrs := jsonb_build_object('WWW-Authenticate', format('Bearer realm="%s"', cfg.realm));
        ELSE
            v := apikeys.authenticate(api_key, CASE WHEN cardinality(need) > 0 THEN need END, NULL);

            IF v.rate_limit IS NOT NULL AND cfg.rate_limit_headers THEN
                rl_hdrs := jsonb_build_array(
                    jsonb_build_object('X-RateLimit-Limit', v.rate_limit::text),
                    jsonb_build_object('X-RateLimit-Remaining', greatest(v.rate_remaining, 0)::text),
                    jsonb_build_object('X-RateLimit-Reset', ceil(extract(epoch FROM v.rate_reset))::bigint::text));
            END IF;

            IF v.valid THEN
                -- the role mapped from the key, if any
                SELECT m.role_name, (m.tenant IS NULL AND m.key_id IS NULL) INTO set_role, any_tenant
                  FROM apikeys.postgrest_role_map m
                 WHERE (m.tenant IS NULL OR m.tenant = v.tenant)
                   AND (m.key_id IS NULL OR m.key_id = v.key_id)
                   AND (m.scope IS NULL OR m.scope = ANY (v.scopes))
                 ORDER BY m.priority DESC, (m.key_id IS NOT NULL) DESC, (m.scope IS NOT NULL) DESC,
                          (m.tenant IS NOT NULL) DESC, m.role_name
                 LIMIT 1;
                IF set_role IS NOT NULL THEN
                    SELECT * INTO r FROM pg_catalog.pg_roles x WHERE x.rolname = set_role;
                    IF NOT FOUND THEN
                        code := 'apikeys.role_missing';
                        msg := 'The role mapped to this API key does not exist';
                        hint := 'Fix apikeys.postgrest_role_map.';
                    ELSIF r.rolsuper OR r.rolbypassrls THEN
                        code := 'apikeys.role_unsafe';
                        msg := 'The role mapped to this API key is a superuser or bypasses row-level security';
                        hint := 'Map keys to ordinary roles in apikeys.postgrest_role_map.';
                    ELSIF apikeys_internal._role_skips_rls(r.oid) THEN
                        -- an owner's queries skip RLS unless it is forced: the key's
                        -- tenant binding would not restrict them
                        code := 'apikeys.role_unsafe';
                        msg := 'The role mapped to this API key owns a table whose row-level security does not apply to its owner';
                        hint := 'ALTER TABLE ... FORCE ROW LEVEL SECURITY on the tables that role owns (or inherits), or map keys to a role that owns none.';
                    ELSIF any_tenant AND apikeys.postgrest_role_confinement(set_role) IS NOT NULL THEN
                        -- a row for keys of any tenant (whose scopes each tenant
                        -- chooses) may name only a role RLS confines to the tenant
                        reason := apikeys.postgrest_role_confinement(set_role);
                        code := 'apikeys.role_unsafe';
                        msg := 'The role mapped to this API key by a mapping for every tenant is not confined to the key''s tenant';
                        hint := 'Set the mapping''s tenant or key_id in apikeys.postgrest_role_map, or see apikeys.postgrest_role_confinement().';
                    ELSIF NOT pg_has_role(session_user, r.oid, 'MEMBER') THEN
                        code := 'apikeys.role_not_allowed';
                        msg := 'The database connection may not switch to the role mapped to this API key';
                        hint := format('GRANT %I TO %I (as for PostgREST''s own roles).', set_role, session_user);
                    END IF;
                END IF;
                IF code IS NULL THEN
                    status := 200;
                    response_headers := rl_hdrs;
                    RETURN;
                END IF;
                -- a server misconfiguration, not the client's fault
                status := 500;
                reason := format('role %s: %s', set_role, coalesce(reason, code));
                set_role := NULL;
            ELSE
                code := 'apikeys.' || v.code;
                -- the status from the library's list (src/verdicts.h); 401 for
                -- a code it does not know
                status := coalesce((SELECT d.http_status FROM apikeys_internal.verdicts() d
                                     WHERE d.name = v.code), 401);
                CASE v.code
                WHEN 'malformed' THEN
                    msg := 'API key is malformed';
                WHEN 'not_found' THEN
                    msg := 'API key is not valid';
                WHEN 'disabled' THEN
                    msg := 'API key is disabled';
                WHEN 'revoked' THEN
                    msg := 'API key has been revoked';
                WHEN 'expired' THEN
                    msg := 'API key has expired';
                WHEN 'tenant_inactive' THEN
                    msg := 'The tenant of this API key is inactive';
                WHEN 'ip_not_allowed' THEN
                    msg := 'Requests from this address are not allowed with this API key';
                WHEN 'insufficient_scope' THEN
                    msg := 'API key lacks a scope this request requires';
                    details := 'Required scopes: ' || array_to_string(need, ' ');
                    hdrs := jsonb_build_object('WWW-Authenticate',
                        format('Bearer realm="%s", error="insufficient_scope", scope="%s"',
                               cfg.realm, array_to_string(need, ' ')));
                WHEN 'rate_limited' THEN
                    msg := 'Rate limit exceeded';
                    wait_s := greatest(ceil(extract(epoch FROM v.rate_reset - clock_timestamp())), 1);
                    hdrs := jsonb_build_object('Retry-After', wait_s::text);
                    details := format('At most %s requests per window.', v.rate_limit);
                    hint := 'Retry after the number of seconds in the Retry-After header.';
                WHEN 'usage_exceeded' THEN
                    msg := 'Usage limit exceeded';
                    -- periods are aligned to 2000-01-01 UTC, like the C code
                    SELECT c.usage_period INTO per FROM apikeys.credential c WHERE c.key_id = v.key_id;
                    IF per IS NOT NULL THEN
                        wait_s := greatest(ceil(extract(epoch FROM
                            ('2000-01-01 00:00:00+00'::timestamptz
                             + (floor(extract(epoch FROM clock_timestamp() - '2000-01-01 00:00:00+00'::timestamptz)
                                      / extract(epoch FROM per)) + 1) * per)
                            - clock_timestamp())), 1);
                        hdrs := jsonb_build_object('Retry-After', wait_s::text);
                        details := 'The usage cap resets at the end of its period.';
                        hint := 'Retry after the number of seconds in the Retry-After header.';
                    ELSE
                        details := 'The usage cap does not reset.';
                    END IF;
                ELSE
                    msg := 'API key is not valid';
                END CASE;
                IF status = 401 THEN
                    hdrs := jsonb_build_object('WWW-Authenticate',
                        format('Bearer realm="%s", error="invalid_token"', cfg.realm));
                END IF;
                -- the rate-limit figures, when verify got that far
                SELECT hdrs || coalesce(jsonb_object_agg(e.key, e.value), '{}')
                  INTO hdrs FROM jsonb_array_elements(rl_hdrs) a, jsonb_each(a.value) e;
            END IF;
        END IF;
    END IF;

    PERFORM apikeys_internal._postgrest_log_denied(status, substr(code, 9), v.tenant, v.key_id,
                                          raw_method, raw_path, reason);
    IF status = 500 THEN
        hdrs := '{}';
    END IF;
    message := json_build_object('code', code, 'message', msg, 'details', details, 'hint', hint)::text;
    detail := json_build_object('status', status, 'headers', hdrs)::text;
END;
$$;

------------------------------------------------------------------------------
-- limits: named limits per key and per tenant (apikeys.named_limit,
-- credential.limits, tenant.limits, apikey_set_limits, tenant_set_limits),
-- apikey_verify(api_key, required_scopes, client_addr, cost) and
-- last_verify_limits().  The library's sliding windows need no schema.
------------------------------------------------------------------------------

CREATE TYPE apikeys.named_limit AS (name text, max_uses integer, per interval);
COMMENT ON TYPE apikeys.named_limit IS 'A named rate limit: at most max_uses uses in any interval of length per (1 second to 1 day); name: 1 to 15 of a-z, 0-9, _ . -.';

ALTER TABLE apikeys.tenant ADD COLUMN limits apikeys.named_limit[] NOT NULL DEFAULT '{}';
ALTER TABLE apikeys.credential ADD COLUMN limits apikeys.named_limit[] NOT NULL DEFAULT '{}';
-- apikeys.tenants is SELECT * of the tenant rows: it shows the new column
CREATE OR REPLACE VIEW apikeys.tenants WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_tenants();

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
REVOKE ALL ON FUNCTION apikeys.apikey_verify(text, text[], inet, integer) FROM PUBLIC;

-- Named limits (limits v2).  A list of apikeys.named_limit as stored:
-- at most 3, one-dimensional, names unique (1 to 15 of a-z, 0-9, _ . -,
-- starting with a letter or digit), max_uses positive, per a whole number
-- of seconds from 1 second to 1 day; NULL or empty: none (stored as '{}').
CREATE FUNCTION apikeys_internal.check_limits(limits apikeys.named_limit[])
    RETURNS apikeys.named_limit[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l apikeys.named_limit;
BEGIN
    IF limits IS NULL OR cardinality(limits) OPERATOR(pg_catalog.=) 0 THEN
        RETURN '{}';
    END IF;
    IF array_ndims(limits) OPERATOR(pg_catalog.>) 1 OR cardinality(limits) OPERATOR(pg_catalog.>) 3 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_limits: at most 3 named limits, in a one-dimensional array';
    END IF;
    FOREACH l IN ARRAY limits LOOP
        IF l.name IS NULL OR l.name OPERATOR(pg_catalog.!~) '^[a-z0-9][a-z0-9_.-]{0,14}$' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = format('invalid_limit_name: %s is not a limit name', coalesce(quote_literal(left(l.name, 40)), 'NULL')),
                HINT = '1 to 15 characters of a-z, 0-9, _ . -, starting with a letter or digit.';
        END IF;
        IF l.max_uses IS NULL OR l.max_uses OPERATOR(pg_catalog.<=) 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = format('invalid_limit: max_uses of limit "%s" must be positive', l.name);
        END IF;
        IF l.per IS NULL OR l.per OPERATOR(pg_catalog.<) '1 second' OR l.per OPERATOR(pg_catalog.>) '1 day'
           OR date_part('month', l.per) OPERATOR(pg_catalog.<>) 0 OR date_part('year', l.per) OPERATOR(pg_catalog.<>) 0
           OR extract(epoch FROM l.per) OPERATOR(pg_catalog.<>) trunc(extract(epoch FROM l.per)) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = format('invalid_limit_window: per of limit "%s" must be whole seconds from 1 second to 1 day', l.name);
        END IF;
    END LOOP;
    IF (SELECT count(DISTINCT x.name) FROM unnest(limits) x) OPERATOR(pg_catalog.<>) cardinality(limits) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_limits: two limits have the same name';
    END IF;
    RETURN limits;
END;
$$;
REVOKE ALL ON FUNCTION apikeys_internal.check_limits(apikeys.named_limit[]) FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal.check_limits(apikeys.named_limit[]) IS 'Check a list of named limits as apikey_set_limits and tenant_set_limits store it (''{}'' for none).';

CREATE FUNCTION apikeys_internal.apikey_set_limits(key_id uuid, limits apikeys.named_limit[])
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_set_limits');
    v apikeys.named_limit[];
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, 'key_set_limits');
    PERFORM apikeys_internal._require_active_tenant(k.tenant, 'key_set_limits', k.key_id);
    v := apikeys_internal.check_limits(limits);
    UPDATE apikeys.credential c SET limits = v, updated_at = now()
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
END;
$$;
SELECT apikeys_internal.publish('apikey_set_limits', 'Set (replace) a key''s named limits, up to 3 of (name, max_uses, per); NULL removes them. They add to its tenant''s limits, never replace them.');

CREATE FUNCTION apikeys_internal.tenant_set_limits(tenant text, limits apikeys.named_limit[])
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v apikeys.named_limit[];
BEGIN
    PERFORM apikeys_internal._authorize(NULL, 'tenant_set_limits');
    PERFORM apikeys_internal._tenant_arg(tenant);   -- before any message echoes it
    v := apikeys_internal.check_limits(limits);
    UPDATE apikeys.tenant x SET limits = v, updated_at = now()
     WHERE x.tenant OPERATOR(pg_catalog.=) tenant_set_limits.tenant;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('tenant_not_found: tenant "%s" does not exist', tenant);
    END IF;
END;
$$;
SELECT apikeys_internal.publish('tenant_set_limits', 'Set (replace) a tenant''s named limits, shared by all its keys: up to 3 of (name, max_uses, per); NULL removes them. Global administrators only.');

-- The limits the last apikey_verify or authenticate of this session checked.
CREATE FUNCTION apikeys.last_verify_limits(OUT scope text, OUT name text, OUT max_uses integer,
                                           OUT remaining integer, OUT reset timestamptz,
                                           OUT passed boolean, OUT tightest boolean)
    RETURNS SETOF record
    LANGUAGE C VOLATILE PARALLEL RESTRICTED ROWS 7 AS 'MODULE_PATHNAME', 'apikeys_last_verify_limits';
COMMENT ON FUNCTION apikeys.last_verify_limits() IS 'Each limit (key rate_limit, key and tenant named limits) the last verification of this session checked: what remains, when it resets, which one the rate_* columns report.';
REVOKE ALL ON FUNCTION apikeys.last_verify_limits() FROM PUBLIC;
-- the entry points publish() made: nothing for PUBLIC, as 90_privileges.sql does
REVOKE ALL ON FUNCTION apikeys.apikey_set_limits(uuid, apikeys.named_limit[]),
    apikeys.tenant_set_limits(text, apikeys.named_limit[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION apikeys_internal.grant_verifier(role_name name) RETURNS void
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

-- roles that may verify (grant_verifier) may use the new verify functions
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole::text AS grantee
               FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
              WHERE p.oid OPERATOR(pg_catalog.=) 'apikeys.apikey_verify(text, text[], inet)'::pg_catalog.regprocedure
                AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
                AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.apikey_verify(text, text[], inet, integer),'
                       ' apikeys.last_verify_limits() TO %s', r.grantee);
    END LOOP;
END;
$$;

-- grant_tenant grants the new functions; roles granted before the upgrade get
-- them as grant_tenant would have given them
CREATE OR REPLACE FUNCTION apikeys_internal.grant_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
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
                   ' apikeys.tenant_grants, apikeys.key_usage TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.read_tenants(), apikeys.read_keys(),'
                   ' apikeys.read_audit(), apikeys.read_grants(), apikeys.read_key_usage(),'
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
    END IF;
    IF tenant IS NULL AND privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.tenant_create(text, text),'
            ' apikeys.tenant_update(text, text, boolean), apikeys.tenant_delete(text, boolean),'
            ' apikeys.tenant_set_limits(text, apikeys.named_limit[]) TO %I', role_name);
    END IF;
    IF privilege OPERATOR(pg_catalog.=) 'audit' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.audit_check(), apikeys.audit_verify(), apikeys.audit_head() TO %I', role_name);
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
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole::text AS grantee
               FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
              WHERE p.oid OPERATOR(pg_catalog.=) 'apikeys.apikey_set_policy(uuid, cidr[], integer, interval, bigint, interval)'::pg_catalog.regprocedure
                AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
                AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.apikey_verify(text, text[], inet, integer),'
                       ' apikeys.last_verify_limits(), apikeys.apikey_set_limits(uuid, apikeys.named_limit[]) TO %s', r.grantee);
    END LOOP;
    FOR r IN SELECT DISTINCT a.grantee::regrole::text AS grantee
               FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
              WHERE p.oid OPERATOR(pg_catalog.=) 'apikeys.tenant_update(text, text, boolean)'::pg_catalog.regprocedure
                AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
                AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.tenant_set_limits(text, apikeys.named_limit[]) TO %s', r.grantee);
    END LOOP;
END;
$$;

------------------------------------------------------------------------------
-- 1.1: comments on the named limits; apikeys.runtime's flush_lag from the
-- clock (now() is the statement's start: a flush since made it negative).
------------------------------------------------------------------------------
COMMENT ON COLUMN apikeys.named_limit.name IS 'The limit''s name (reported by last_verify_limits()); a key limit and a tenant limit of one name are two limits.';
COMMENT ON COLUMN apikeys.named_limit.max_uses IS 'At most this many units (a verification costs 1, or its cost) in any interval of length per.';
COMMENT ON COLUMN apikeys.named_limit.per IS 'The sliding window''s length (1 second to 1 day).';
COMMENT ON COLUMN apikeys.credential.limits IS 'The key''s named limits (up to 3), set by apikey_set_limits().';
COMMENT ON COLUMN apikeys.tenant.limits IS 'The tenant''s named limits (up to 3), shared by all its keys, set by tenant_set_limits().';
COMMENT ON COLUMN apikeys.tenants.limits IS 'The tenant''s named limits (up to 3), shared by all its keys, set by tenant_set_limits().';
CREATE OR REPLACE VIEW apikeys.runtime AS
SELECT r.*, clock_timestamp() OPERATOR(pg_catalog.-) r.last_flush_at AS flush_lag
  FROM apikeys_internal._runtime() r;

------------------------------------------------------------------------------
-- 1.1: credits with refill (src/sql/10_schema.sql, 70_policies_usage.sql,
-- 50_rls_grants.sql, 80_postgrest.sql): credential's credit columns,
-- apikey_set_credits, apikey_add_credits, apikey_subtract_credits, view
-- key_credits; apikey_set_policy refuses a cap on a key with credits;
-- key_usage reports credits; grant_tenant grants the new functions and view
-- (and roles granted before get them); the PostgREST role check knows the
-- new reader.
------------------------------------------------------------------------------
ALTER TABLE apikeys.credential
    ADD COLUMN credits                 bigint,
    ADD COLUMN credits_at              timestamptz,
    ADD COLUMN credits_since           timestamptz,
    ADD COLUMN credits_refill          bigint,
    ADD COLUMN credits_refill_interval interval,
    ADD COLUMN credits_refill_day      integer;

------------------------------------------------------------------------------
-- credential's bounds in one CHECK constraint calling C (credential_check.c)
-- instead of 1.0's fourteen SQL ones (and the credit columns' four): PostgreSQL
-- reads a table's CHECK expressions back and plans them again for every
-- statement that writes it, a seventh of an apikey_create.  The same rules;
-- an error names the rule by its old constraint's name.
------------------------------------------------------------------------------
CREATE FUNCTION apikeys_internal.credential_valid(
    name text, description text, prefix text, scopes text[], metadata jsonb, status text,
    revoked_at timestamptz, revoked_reason text, allowed_ips cidr[], rate_limit integer,
    rate_window interval, usage_limit bigint, usage_period interval, credits bigint,
    credits_refill bigint, credits_refill_interval interval, credits_refill_day integer)
    RETURNS boolean
    LANGUAGE C IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_credential_valid';
REVOKE ALL ON FUNCTION apikeys_internal.credential_valid(text, text, text, text[], jsonb, text,
    timestamptz, text, cidr[], integer, interval, bigint, interval, bigint, bigint, interval, integer) FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal.credential_valid(text, text, text, text[], jsonb, text,
    timestamptz, text, cidr[], integer, interval, bigint, interval, bigint, bigint, interval, integer)
    IS 'apikeys.credential''s CHECK constraint: true, or an error naming the rule a key row breaks.';
ALTER TABLE apikeys.credential
    DROP CONSTRAINT credential_name_check,
    DROP CONSTRAINT credential_description_check,
    DROP CONSTRAINT credential_prefix_check,
    DROP CONSTRAINT credential_scopes_check,
    DROP CONSTRAINT credential_metadata_check,
    DROP CONSTRAINT credential_status_check,
    DROP CONSTRAINT credential_revoked_reason_check,
    DROP CONSTRAINT credential_allowed_ips_check,
    DROP CONSTRAINT credential_rate_limit_check,
    DROP CONSTRAINT credential_rate_window_check,
    DROP CONSTRAINT credential_usage_limit_check,
    DROP CONSTRAINT credential_usage_period_check,
    DROP CONSTRAINT credential_check,
    DROP CONSTRAINT credential_check1,
    ADD CONSTRAINT credential_valid CHECK (apikeys_internal.credential_valid(
        name, description, prefix, scopes, metadata, status, revoked_at, revoked_reason,
        allowed_ips, rate_limit, rate_window, usage_limit, usage_period, credits,
        credits_refill, credits_refill_interval, credits_refill_day));

------------------------------------------------------------------------------
-- New key ids: time-ordered UUIDs (version 7), so that the indexes on key_id
-- take new keys on their rightmost page instead of a random one (src/key_id.c).
CREATE FUNCTION apikeys_internal._key_id() RETURNS uuid
    LANGUAGE C VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_key_id';
COMMENT ON FUNCTION apikeys_internal._key_id() IS 'A new key id: a time-ordered UUID (RFC 9562 version 7).';
REVOKE ALL ON FUNCTION apikeys_internal._key_id() FROM PUBLIC;
ALTER TABLE apikeys.credential ALTER COLUMN key_id SET DEFAULT apikeys_internal._key_id();

------------------------------------------------------------------------------
-- Credits: remaining uses of a key, with an optional refill (Unkey-style).
-- The balance (credential.credits, as of credits_at) belongs to the tables:
-- set, add and subtract are transactional row updates (audited as
-- key_updated).  What verify spends belongs to shared memory, counted as a
-- usage cap's uses are (apikeys.usage.used, period_start = the spending
-- start: the last set, or the last refill), so a top-up never races a
-- charge: remaining = balance - spent.  A refill replaces the balance with
-- the refill amount and starts a new spending period.  A key has credits or
-- a usage cap, never both; used up, verify answers usage_exceeded for both
-- (src/verdicts.h).
------------------------------------------------------------------------------
CREATE FUNCTION apikeys_internal._credits_state(credits bigint, credits_at timestamptz,
        credits_since timestamptz, refill bigint, refill_interval interval, refill_day integer,
        now timestamptz, OUT period_start timestamptz, OUT balance bigint, OUT next_refill timestamptz)
    RETURNS record
    LANGUAGE C IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_credits_state_sql';
REVOKE ALL ON FUNCTION apikeys_internal._credits_state(bigint, timestamptz, timestamptz, bigint, interval, integer, timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal._credits_state(bigint, timestamptz, timestamptz, bigint, interval, integer, timestamptz) IS 'A key''s credits at a time, as verify computes them: start of the spending period, balance of the period, next refill (NULL: none).';

CREATE FUNCTION apikeys_internal._pending_credits(INOUT key_id uuid, OUT used bigint, OUT period_start timestamptz)
    RETURNS record
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'apikeys_pending_credits';
REVOKE ALL ON FUNCTION apikeys_internal._pending_credits(uuid) FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal._pending_credits(uuid) IS 'Credits a key spent as shared memory holds them (used) and the spending period they count in; NULLs without an entry or for a key the caller cannot see.';

-- A key's credits at time t (the caller's one clock read): balance of the
-- period, spent in it (shared memory if it holds the period, else the
-- flushed row), remaining, next refill; no row for a key without credits.
CREATE FUNCTION apikeys_internal._credits_now(k apikeys.credential, t timestamptz, OUT balance bigint, OUT spent bigint,
        OUT remaining bigint, OUT period_start timestamptz, OUT next_refill timestamptz)
    RETURNS record
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.balance, x.spent, GREATEST(s.balance OPERATOR(pg_catalog.-) x.spent, 0),
           s.period_start, s.next_refill
      FROM apikeys_internal._credits_state(k.credits, k.credits_at, k.credits_since, k.credits_refill,
                                           k.credits_refill_interval, k.credits_refill_day, t) s
     CROSS JOIN LATERAL (
        SELECT CASE WHEN p.period_start OPERATOR(pg_catalog.=) s.period_start THEN p.used
                    WHEN p.period_start OPERATOR(pg_catalog.>) s.period_start THEN 0
                    ELSE COALESCE((SELECT u.used FROM apikeys.usage u
                                    WHERE u.key_id OPERATOR(pg_catalog.=) k.key_id
                                      AND u.period_start OPERATOR(pg_catalog.=) s.period_start), 0)
               END AS spent
          FROM (SELECT NULL) one
          LEFT JOIN apikeys_internal._pending_credits(k.key_id) p ON true) x
     WHERE k.credits IS NOT NULL
$$;
REVOKE ALL ON FUNCTION apikeys_internal._credits_now(apikeys.credential, timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal._credits_now(apikeys.credential, timestamptz) IS 'A key''s credits at a time (balance, spent, remaining, period start, next refill), pending charges included; no row without credits.';

CREATE FUNCTION apikeys_internal.apikey_set_credits(
    key_id          uuid,
    credits         bigint,
    refill_amount   bigint DEFAULT NULL,
    refill_interval interval DEFAULT NULL,
    refill_day      integer DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_set_credits');
    t timestamptz := clock_timestamp();
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, 'key_set_credits');
    PERFORM apikeys_internal._require_active_tenant(k.tenant, 'key_set_credits', k.key_id);
    IF credits IS NULL AND (refill_amount IS NOT NULL OR refill_interval IS NOT NULL OR refill_day IS NOT NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_refill: a refill needs credits',
            HINT = 'Pass credits NULL alone to remove the key''s credits.';
    END IF;
    IF credits OPERATOR(pg_catalog.<) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_credits: credits must be 0 or more';
    END IF;
    IF refill_amount IS NOT NULL AND refill_amount OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_refill_amount: refill_amount must be positive';
    END IF;
    IF (refill_amount IS NULL) OPERATOR(pg_catalog.<>) (refill_interval IS NULL AND refill_day IS NULL)
       OR (refill_interval IS NOT NULL AND refill_day IS NOT NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_refill: a refill takes a refill_amount and exactly one of refill_interval, refill_day';
    END IF;
    IF refill_interval IS NOT NULL AND (refill_interval OPERATOR(pg_catalog.<) '1 second'
            OR refill_interval OPERATOR(pg_catalog.>) '366 days'
            OR date_part('month', refill_interval) OPERATOR(pg_catalog.<>) 0
            OR date_part('year', refill_interval) OPERATOR(pg_catalog.<>) 0
            OR extract(epoch FROM refill_interval) OPERATOR(pg_catalog.<>) trunc(extract(epoch FROM refill_interval))) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_refill_interval: refill_interval must be whole seconds from 1 second to 366 days (in days, not months)',
            HINT = 'For a monthly refill pass refill_day.';
    END IF;
    IF refill_day IS NOT NULL AND refill_day NOT BETWEEN 1 AND 31 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_refill_day: refill_day must be between 1 and 31',
            HINT = 'A month shorter than refill_day refills on its last day.';
    END IF;
    IF credits IS NOT NULL AND k.usage_limit IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('credits_conflict: key %s has a usage cap', k.key_id),
            HINT = 'A key has credits or a usage cap: remove the cap with apikey_set_policy first (a cap per period is credits that refill).';
    END IF;
    UPDATE apikeys.credential c SET
        credits                 = apikey_set_credits.credits,
        credits_at              = CASE WHEN apikey_set_credits.credits IS NOT NULL THEN t END,
        credits_since           = CASE WHEN apikey_set_credits.credits IS NOT NULL THEN t END,
        credits_refill          = apikey_set_credits.refill_amount,
        credits_refill_interval = apikey_set_credits.refill_interval,
        credits_refill_day      = apikey_set_credits.refill_day,
        updated_at              = now()
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
END;
$$;
SELECT apikeys_internal.publish('apikey_set_credits', 'Set (replace) a key''s credits: remaining uses, with an optional refill (refill_amount every refill_interval, or on refill_day of each month) that replaces the remaining uses; credits NULL removes them. Spending starts anew.');

-- add (amount > 0) or subtract (amount < 0) credits of key k, now
CREATE FUNCTION apikeys_internal._change_credits(key_id uuid, amount bigint, action text)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, action);
    t timestamptz := clock_timestamp();
    n record;
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, action);
    PERFORM apikeys_internal._require_active_tenant(k.tenant, action, k.key_id);
    IF amount IS NULL OR amount OPERATOR(pg_catalog.=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_credits: amount must be positive';
    END IF;
    IF k.credits IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('credits_not_set: key %s has no credits', k.key_id),
            HINT = 'Give it credits with apikey_set_credits first.';
    END IF;
    -- the row is locked: the balance read here is the latest, and stays so;
    -- it is the balance at t, when the new one is written (a refill after
    -- t replaces it)
    n := apikeys_internal._credits_now(k, t);
    IF amount OPERATOR(pg_catalog.>) 0 AND amount OPERATOR(pg_catalog.>) (9223372036854775807 OPERATOR(pg_catalog.-) n.balance) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('invalid_credits: key %s would have more than 9223372036854775807 credits', k.key_id);
    END IF;
    IF amount OPERATOR(pg_catalog.<) 0 AND (OPERATOR(pg_catalog.-) amount) OPERATOR(pg_catalog.>) n.remaining THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('insufficient_credits: key %s has %s credits left, cannot subtract %s',
                             k.key_id, n.remaining, OPERATOR(pg_catalog.-) amount),
            HINT = 'Subtract at most the remaining credits, or set them with apikey_set_credits.';
    END IF;
    -- the period's balance (a refill since the last write included) plus the change
    UPDATE apikeys.credential c SET
        credits    = n.balance OPERATOR(pg_catalog.+) amount,
        credits_at = t,
        updated_at = now()
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
    RETURN n.remaining OPERATOR(pg_catalog.+) amount;
END;
$$;
REVOKE ALL ON FUNCTION apikeys_internal._change_credits(uuid, bigint, text) FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal._change_credits(uuid, bigint, text) IS 'Add (amount > 0) or subtract (amount < 0) credits of a key under its row lock; returns the credits left (pending charges counted).';

CREATE FUNCTION apikeys_internal.apikey_add_credits(key_id uuid, amount bigint)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF amount OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_credits: amount must be positive';
    END IF;
    RETURN apikeys_internal._change_credits(key_id, amount, 'key_add_credits');
END;
$$;
SELECT apikeys_internal.publish('apikey_add_credits', 'Add credits to a key (a top-up, until the next refill replaces them); returns the credits left.');

CREATE FUNCTION apikeys_internal.apikey_subtract_credits(key_id uuid, amount bigint)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF amount OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_credits: amount must be positive';
    END IF;
    RETURN apikeys_internal._change_credits(key_id, OPERATOR(pg_catalog.-) amount, 'key_subtract_credits');
END;
$$;
SELECT apikeys_internal.publish('apikey_subtract_credits', 'Subtract credits from a key, at most those left (insufficient_credits otherwise); returns the credits left.');

-- Rows of apikeys.key_credits: the visible tenants' keys with credits, what
-- is left of them now (pending charges included) and their refill
-- (apikeys.tenants explains why a reader function).
CREATE FUNCTION apikeys_internal.read_key_credits()
    RETURNS TABLE (key_id uuid, tenant text, name text, credits bigint, spent bigint, remaining bigint,
                   period_start timestamptz, next_refill timestamptz, refill_amount bigint,
                   refill_interval interval, refill_day integer, credits_at timestamptz)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
    t timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    SELECT c.key_id, c.tenant, c.name, cr.balance, cr.spent, cr.remaining, cr.period_start, cr.next_refill,
           c.credits_refill, c.credits_refill_interval, c.credits_refill_day, c.credits_at
      FROM apikeys.credential c
     CROSS JOIN LATERAL apikeys_internal._credits_now(c, t) cr
     WHERE c.credits IS NOT NULL AND (v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v));
END;
$$;
SELECT apikeys_internal.publish('read_key_credits', 'Rows of apikeys.key_credits: the keys with credits of the tenants the caller may read.');
CREATE VIEW apikeys.key_credits WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_key_credits();
COMMENT ON VIEW apikeys.key_credits IS 'Per key with credits: the credits of the current refill period, spent, left (pending charges included), the refill.';
COMMENT ON COLUMN apikeys.key_credits.key_id IS 'The key.';
COMMENT ON COLUMN apikeys.key_credits.tenant IS 'The key''s tenant.';
COMMENT ON COLUMN apikeys.key_credits.name IS 'The key''s name.';
COMMENT ON COLUMN apikeys.key_credits.credits IS 'Credits of the current period: as last set, added or subtracted, or the refill amount once a refill came after that.';
COMMENT ON COLUMN apikeys.key_credits.spent IS 'Credits verifications spent in the current period (flushed or still in shared memory).';
COMMENT ON COLUMN apikeys.key_credits.remaining IS 'Credits left: credits - spent, at least 0.';
COMMENT ON COLUMN apikeys.key_credits.period_start IS 'Start of the current period: the last set, or the last refill after it.';
COMMENT ON COLUMN apikeys.key_credits.next_refill IS 'When the next refill replaces what is left; NULL: no refill.';
COMMENT ON COLUMN apikeys.key_credits.refill_amount IS 'Credits a refill gives; NULL: no refill.';
COMMENT ON COLUMN apikeys.key_credits.refill_interval IS 'Refill every interval (aligned to 2000-01-01 UTC); NULL: monthly or none.';
COMMENT ON COLUMN apikeys.key_credits.refill_day IS 'Refill on this day of each month at 00:00 UTC (a shorter month: its last day); NULL: by interval or none.';
COMMENT ON COLUMN apikeys.key_credits.credits_at IS 'When the credits were last set, added or subtracted.';

COMMENT ON COLUMN apikeys.credential.credits IS 'Credits: the balance of remaining uses as of credits_at (before the uses since); NULL: none. apikey_set_credits.';
COMMENT ON COLUMN apikeys.credential.credits_at IS 'When the credits balance was last written (set, add, subtract); a refill after it replaces the balance.';
COMMENT ON COLUMN apikeys.credential.credits_since IS 'When the credits were last set: uses count against them from here (and anew from each refill).';
COMMENT ON COLUMN apikeys.credential.credits_refill IS 'Credits a refill sets the balance to; NULL: no refill.';
COMMENT ON COLUMN apikeys.credential.credits_refill_interval IS 'Refill every interval (aligned to 2000-01-01 UTC); NULL: monthly or none.';
COMMENT ON COLUMN apikeys.credential.credits_refill_day IS 'Refill on this day of each month at 00:00 UTC (a shorter month: its last day); NULL: by interval or none.';

CREATE OR REPLACE FUNCTION apikeys_internal.apikey_set_policy(
    key_id       uuid,
    allowed_ips  cidr[] DEFAULT NULL,
    rate_limit   integer DEFAULT NULL,
    rate_window  interval DEFAULT '1 minute',
    usage_limit  bigint DEFAULT NULL,
    usage_period interval DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_set_policy');
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, 'key_set_policy');
    PERFORM apikeys_internal._require_active_tenant(k.tenant, 'key_set_policy', k.key_id);
    -- one dimension first: array_position() refuses a multidimensional array
    IF allowed_ips IS NOT NULL AND (array_ndims(allowed_ips) OPERATOR(pg_catalog.>) 1
                                    OR cardinality(allowed_ips) NOT BETWEEN 1 AND 16
                                    OR CASE WHEN array_ndims(allowed_ips) OPERATOR(pg_catalog.>) 1 THEN true
                                            ELSE array_position(allowed_ips, NULL) IS NOT NULL END) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_allowed_ips: allowed_ips must be a one-dimensional array of 1 to 16 networks and no NULL',
            HINT = 'Pass NULL to allow every address.';
    END IF;
    IF rate_limit IS NOT NULL AND rate_limit OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_rate_limit: rate_limit must be positive',
            HINT = 'Pass NULL for no rate limit.';
    END IF;
    IF rate_limit IS NOT NULL AND (rate_window IS NULL
            OR rate_window OPERATOR(pg_catalog.<) '1 second'
            OR rate_window OPERATOR(pg_catalog.>) '1 day'
            OR date_part('month', rate_window) OPERATOR(pg_catalog.<>) 0
            OR date_part('year', rate_window) OPERATOR(pg_catalog.<>) 0
            OR extract(epoch FROM rate_window) OPERATOR(pg_catalog.<>) trunc(extract(epoch FROM rate_window))) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_rate_window: rate_window must be whole seconds from 1 second to 1 day';
    END IF;
    IF usage_limit IS NOT NULL AND usage_limit OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_usage_limit: usage_limit must be positive',
            HINT = 'Pass NULL for no usage cap.';
    END IF;
    IF usage_period IS NOT NULL AND (usage_limit IS NULL
            OR usage_period OPERATOR(pg_catalog.<) '1 second'
            OR usage_period OPERATOR(pg_catalog.>) '366 days'
            OR date_part('month', usage_period) OPERATOR(pg_catalog.<>) 0
            OR date_part('year', usage_period) OPERATOR(pg_catalog.<>) 0
            OR extract(epoch FROM usage_period) OPERATOR(pg_catalog.<>) trunc(extract(epoch FROM usage_period))) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_usage_period: usage_period must be whole seconds from 1 second to 366 days (in days, not months) and needs a usage_limit';
    END IF;
    IF usage_limit IS NOT NULL AND k.credits IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('credits_conflict: key %s has credits', k.key_id),
            HINT = 'A key has credits or a usage cap: remove the credits with apikey_set_credits(key_id, NULL) first.';
    END IF;
    UPDATE apikeys.credential c SET
        allowed_ips  = apikey_set_policy.allowed_ips,
        rate_limit   = apikey_set_policy.rate_limit,
        rate_window  = CASE WHEN apikey_set_policy.rate_limit IS NULL THEN NULL ELSE apikey_set_policy.rate_window END,
        usage_limit  = apikey_set_policy.usage_limit,
        usage_period = apikey_set_policy.usage_period,
        updated_at   = now()
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.read_key_usage()
    RETURNS TABLE (key_id uuid, tenant text, name text, last_used_at timestamptz, usage_limit bigint,
                   used bigint, usage_remaining bigint, valid bigint, disabled bigint, revoked bigint,
                   expired bigint, tenant_inactive bigint, ip_not_allowed bigint,
                   insufficient_scope bigint, rate_limited bigint, usage_exceeded bigint,
                   flushed_at timestamptz, has_unflushed boolean)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
    -- each verdict's index in _pending_usage's counts, from the library's
    -- list (a constant once the plan is made: force_custom_plan)
    ix jsonb := (SELECT jsonb_object_agg(d.name, d.code OPERATOR(pg_catalog.+) 1)
                   FROM apikeys_internal.verdicts() d);
BEGIN
    RETURN QUERY
    SELECT c.key_id, c.tenant, c.name,
           GREATEST(u.last_used_at, p.last_used_at) AS last_used_at,
           -- credits: the balance of the period (used + usage_remaining)
           COALESCE(c.usage_limit, cr.balance) AS usage_limit,
           CASE WHEN c.credits IS NOT NULL THEN cr.spent ELSE COALESCE(p.used, u.used, 0) END AS used,
           CASE WHEN c.usage_limit IS NOT NULL
                THEN GREATEST(c.usage_limit OPERATOR(pg_catalog.-) COALESCE(p.used, u.used, 0), 0)
                ELSE cr.remaining END AS usage_remaining,
           COALESCE(u.count_valid, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'valid')::integer], 0) AS valid,
           COALESCE(u.count_disabled, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'disabled')::integer], 0) AS disabled,
           COALESCE(u.count_revoked, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'revoked')::integer], 0) AS revoked,
           COALESCE(u.count_expired, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'expired')::integer], 0) AS expired,
           COALESCE(u.count_tenant_inactive, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'tenant_inactive')::integer], 0) AS tenant_inactive,
           COALESCE(u.count_ip_not_allowed, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'ip_not_allowed')::integer], 0) AS ip_not_allowed,
           COALESCE(u.count_insufficient_scope, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'insufficient_scope')::integer], 0) AS insufficient_scope,
           COALESCE(u.count_rate_limited, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'rate_limited')::integer], 0) AS rate_limited,
           COALESCE(u.count_usage_exceeded, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'usage_exceeded')::integer], 0) AS usage_exceeded,
           u.flushed_at,
           p.key_id IS NOT NULL AND (p.counts OPERATOR(pg_catalog.<>) array_fill(0::bigint, ARRAY[cardinality(p.counts)])) AS has_unflushed
      FROM apikeys.credential c
      LEFT JOIN apikeys.usage u ON u.key_id OPERATOR(pg_catalog.=) c.key_id
      LEFT JOIN LATERAL apikeys_internal._pending_usage(c.key_id) p ON true
      -- only keys with credits pay for the call (a one-time filter)
      LEFT JOIN LATERAL (SELECT * FROM apikeys_internal._credits_now(c, clock_timestamp()) n
                          WHERE c.credits IS NOT NULL) cr ON true
     WHERE v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.grant_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
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
CREATE OR REPLACE FUNCTION apikeys_internal._role_confinement_scan(role oid) RETURNS text
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
     WHERE (p.prosecdef OR p.pronamespace IN ('apikeys'::regnamespace, 'apikeys_internal'::regnamespace))
       AND p.oid NOT IN ('apikeys.pre_request()'::regprocedure, 'apikeys.postgrest_gate()'::regprocedure,
                         'apikeys.current_tenant()'::regprocedure, 'apikeys.current_key_id()'::regprocedure)
       -- the readers behind the views answer only about the caller's own tenants
       AND NOT (p.pronamespace = 'apikeys'::regnamespace
                AND p.proname IN ('read_keys', 'read_tenants', 'read_key_usage', 'read_vault_secrets',
                                  'read_audit', 'read_grants', 'audit_log_page', 'read_scopes',
                                  'read_key_formats', 'read_legacy_keys', 'read_key_credits'))
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
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole::text AS grantee
               FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
              WHERE p.oid OPERATOR(pg_catalog.=) 'apikeys.apikey_set_limits(uuid, apikeys.named_limit[])'::pg_catalog.regprocedure
                AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
                AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.apikey_set_credits(uuid, bigint, bigint, interval, integer),'
                       ' apikeys.apikey_add_credits(uuid, bigint), apikeys.apikey_subtract_credits(uuid, bigint) TO %s', r.grantee);
    END LOOP;
    -- who may read key_usage may read key_credits
    FOR r IN SELECT DISTINCT a.grantee::regrole::text AS grantee
               FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
              WHERE c.oid OPERATOR(pg_catalog.=) 'apikeys.key_usage'::pg_catalog.regclass
                AND a.privilege_type OPERATOR(pg_catalog.=) 'SELECT'
                AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
    LOOP
        EXECUTE format('GRANT SELECT ON apikeys.key_credits TO %s', r.grantee);
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.read_key_credits() TO %s', r.grantee);
    END LOOP;
END;
$$;

------------------------------------------------------------------------------
-- Route limits (PostgREST): a route's own limits, per key, and its cost
-- (src/sql/80_postgrest.sql): two columns at the end of postgrest_route,
-- apikeys_internal._authenticate_route(), postgrest_route_set_limits(), and
-- the gate that charges them.
------------------------------------------------------------------------------

ALTER TABLE apikeys.postgrest_route
    ADD COLUMN limits apikeys.named_limit[] NOT NULL DEFAULT '{}'
               CHECK (apikeys_internal.check_limits(limits) IS NOT NULL),
    ADD COLUMN cost integer NOT NULL DEFAULT 1 CHECK (cost BETWEEN 0 AND 1000000);
COMMENT ON COLUMN apikeys.postgrest_route.limits IS 'The route''s own limits, up to 3 of (name, max_uses, per), each kept per key (apikeys.postgrest_route_set_limits).';
COMMENT ON COLUMN apikeys.postgrest_route.cost IS 'Units a request charges to each limit it meets (key, tenant, route) and to the usage cap; 0 checks only.';
COMMENT ON TABLE apikeys.postgrest_route IS 'Scopes required by apikeys.pre_request() per request.method and request.path (exact, LIKE or regex), and the route''s own limits (per key) and cost. Superuser-only.';

-- authenticate() for the gate, charging cost (0: check only) to the key's
-- and tenant's limits and to the route's limits, kept per key and route
-- (route: the route's identity, "method match path"), in one
-- all-or-nothing pass (src/usage.c, "Route limits").  Not granted to anyone.
CREATE FUNCTION apikeys_internal._authenticate_route(api_key text, required_scopes text[], client_addr inet,
                                                     route text, route_limits apikeys.named_limit[],
                                                     cost integer)
    RETURNS apikeys.verification
    LANGUAGE C VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'apikeys_authenticate_route_1_1';
COMMENT ON FUNCTION apikeys_internal._authenticate_route IS 'apikeys.authenticate() with a cost and a PostgREST route''s own limits (per key and route), charged all or nothing with the key''s and tenant''s (the gate''s).';

-- Set (replace) a route's limits and cost.  Superuser-only, like the route
-- table (SECURITY INVOKER: the caller must be able to update it); the change
-- is audited by the table's trigger (postgrest_route_changed).  A limit
-- that keeps its name keeps its state (a new per or max_uses applies to
-- what was counted), a new name starts from nothing, a removed one is
-- forgotten.
CREATE FUNCTION apikeys.postgrest_route_set_limits(method text, path text, limits apikeys.named_limit[],
                                                   cost integer DEFAULT 1, match text DEFAULT 'exact')
    RETURNS apikeys.postgrest_route
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v         apikeys.named_limit[];
    rt        apikeys.postgrest_route;
    too_small record;
BEGIN
    IF cost IS NULL OR cost < 0 OR cost > 1000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_cost: cost must be from 0 to 1000000',
            HINT = '0 checks the limits without charging them; the default is 1.';
    END IF;
    v := apikeys_internal.check_limits(limits);
    -- a cost no route limit could ever hold would refuse every request
    SELECT x.name, x.max_uses INTO too_small FROM unnest(v) x
     WHERE x.max_uses < postgrest_route_set_limits.cost ORDER BY x.max_uses LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('invalid_cost: cost %s is more than route limit "%s" allows (%s): every request would be refused',
                             cost, too_small.name, too_small.max_uses),
            HINT = 'Lower the cost or raise the limit''s max_uses.';
    END IF;
    UPDATE apikeys.postgrest_route x
       SET limits = v, cost = postgrest_route_set_limits.cost
     WHERE x.method = upper(postgrest_route_set_limits.method)
       AND x.path = postgrest_route_set_limits.path
       AND x.match = postgrest_route_set_limits.match
    RETURNING * INTO rt;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('route_not_found: no route %s %s (%s) in apikeys.postgrest_route',
                             upper(left(postgrest_route_set_limits.method, 16)),
                             left(postgrest_route_set_limits.path, 200),
                             left(postgrest_route_set_limits.match, 16)),
            HINT = 'Add the route first: INSERT INTO apikeys.postgrest_route (method, path, ...).';
    END IF;
    RETURN rt;
END;
$$;
COMMENT ON FUNCTION apikeys.postgrest_route_set_limits IS 'Set (replace) a PostgREST route''s own limits (up to 3 of (name, max_uses, per), per key; NULL removes them) and its cost. Superuser-only; audited.';
-- last_verify_limits() also reports the route's limits (scope 'route')
COMMENT ON FUNCTION apikeys.last_verify_limits() IS 'Each limit (key rate_limit, key and tenant named limits, the PostgREST route''s) the last verification of this session checked: what remains, when it resets, which one the rate_* columns report.';

CREATE OR REPLACE FUNCTION apikeys.postgrest_gate(
    OUT status           integer,   -- 200: let the request through
    OUT message          text,      -- PGRST error message (JSON)
    OUT detail           text,      -- PGRST error detail (JSON)
    OUT response_headers jsonb,     -- on 200: [{"name": "value"}, ...]
    OUT set_role         name)      -- on 200: role to switch to, or NULL
    RETURNS record
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg        apikeys.postgrest_setting;
    lim        record := apikeys_internal._postgrest_limits();
    raw_method text := coalesce(current_setting('request.method', true), '');
    raw_path   text := coalesce(current_setting('request.path', true), '');
    raw_hdrs   text := nullif(current_setting('request.headers', true), '');
    stage      text;
    bad        text;        -- why the request cannot be read (400)
    req_method text;
    req_path   text;
    headers    jsonb;
    api_key    text;
    need       text[];
    n_routes   integer;
    path_known boolean;
    anonymous  boolean;
    any_tenant boolean;
    v          apikeys.verification;
    hdrs       jsonb := '{}';
    rl_hdrs    jsonb := '[]';
    code       text;
    msg        text;
    details    text;
    hint       text;
    reason     text;        -- for the log line only
    wait_s     bigint;
    per        interval;
    r          pg_catalog.pg_roles;
    route_id   text;        -- the route whose limits and cost apply, or NULL
    route_lims apikeys.named_limit[];
    route_cost integer;
    lim_scope  text;
    lim_name   text;
    lim_per    text;
BEGIN
    SELECT * INTO cfg FROM apikeys.postgrest_setting;
    IF NOT FOUND THEN
        cfg := ROW(true, '{x-api-key,apikey,authorization}', 'api', true, true, false, NULL);
    END IF;

    -- Read the request: bounded, and any error in it (bad JSON, nesting too
    -- deep, \u0000, invalid UTF-8 once percent-decoded, ...) is a 400.
    BEGIN
        stage := 'request.method';
        IF octet_length(raw_method) > lim.max_method OR raw_method !~ '^[A-Za-z]*$' THEN
            bad := format('request.method is not an HTTP method (letters only, at most %s)', lim.max_method);
        ELSIF octet_length(raw_path) > lim.max_path THEN
            bad := format('request.path is longer than %s bytes', lim.max_path);
        ELSIF octet_length(raw_hdrs) > lim.max_headers THEN
            bad := format('request.headers is longer than %s bytes', lim.max_headers);
        ELSE
            req_method := upper(raw_method);
            stage := 'request.path';
            req_path := apikeys.postgrest_normalize_path(raw_path);
            stage := 'request.headers';
            headers := raw_hdrs::jsonb;
            IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
                bad := 'request.headers is not a JSON object';
            ELSIF EXISTS (SELECT 1 FROM jsonb_each(headers) e WHERE jsonb_typeof(e.value) NOT IN ('string', 'null')) THEN
                bad := 'request.headers has a value that is not a string';   -- (null: no such header)
            ELSIF EXISTS (SELECT 1 FROM jsonb_each_text(headers) e WHERE octet_length(e.value) > lim.max_header_value) THEN
                bad := format('a header value is longer than %s bytes', lim.max_header_value);
            ELSE
                -- routes that match this request, and whether any matches its path
                stage := 'routes';
                WITH p AS (
                    SELECT rt.method, rt.required_scopes, rt.allow_anonymous
                      FROM apikeys.postgrest_route rt
                     WHERE CASE rt.match WHEN 'exact' THEN req_path = rt.path
                                         WHEN 'like'  THEN req_path LIKE rt.path
                                         ELSE req_path ~ rt.path END),
                m AS (
                    SELECT p.* FROM p
                     WHERE p.method = '*' OR p.method = req_method OR (p.method = 'GET' AND req_method = 'HEAD'))
                SELECT (SELECT count(*) FROM m), (SELECT bool_and(m.allow_anonymous) FROM m),
                       array(SELECT DISTINCT s FROM m, unnest(m.required_scopes) s ORDER BY s),
                       EXISTS (SELECT 1 FROM p)
                  INTO n_routes, anonymous, need, path_known;
                -- the most specific matching route that sets limits or a
                -- cost: exact, then like, then regex; its own method, then
                -- GET for HEAD, then *; the longest pattern; then by name
                SELECT rt.method || ' ' || rt.match || ' ' || rt.path, rt.limits, rt.cost
                  INTO route_id, route_lims, route_cost
                  FROM apikeys.postgrest_route rt
                 WHERE (cardinality(rt.limits) > 0 OR rt.cost <> 1)
                   AND (rt.method = '*' OR rt.method = req_method OR (rt.method = 'GET' AND req_method = 'HEAD'))
                   AND CASE rt.match WHEN 'exact' THEN req_path = rt.path
                                     WHEN 'like'  THEN req_path LIKE rt.path
                                     ELSE req_path ~ rt.path END
                 ORDER BY array_position('{exact,like,regex}'::text[], rt.match),
                          array_position(ARRAY[req_method, 'GET', '*'], rt.method),
                          char_length(rt.path) DESC, rt.path
                 LIMIT 1;
                stage := 'key';
                api_key := apikeys_internal._postgrest_key(headers, cfg.key_headers);
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        bad := CASE stage
               WHEN 'request.path' THEN 'request.path is not valid UTF-8 once percent-decoded'
               WHEN 'request.headers' THEN 'request.headers is not valid JSON'
               WHEN 'routes' THEN 'request.path cannot be matched against the routes'
               ELSE 'the API key header cannot be read' END;
        reason := SQLSTATE || ' ' || left(SQLERRM, 200);
    END;

    IF bad IS NOT NULL THEN
        status := 400;
        code := 'apikeys.bad_request';
        msg := 'The request cannot be read';
        details := bad;
        reason := coalesce(reason, bad);
    ELSIF n_routes = 0 AND path_known AND NOT cfg.allow_unlisted_methods THEN
        -- routes list this path for other methods only: refused whoever asks
        status := 403;
        code := 'apikeys.method_not_allowed';
        msg := 'This method is not allowed on this path';
        hint := 'apikeys.postgrest_route lists this path for other methods only.';
    ELSE
        IF n_routes = 0 THEN
            anonymous := NOT cfg.require_key;
        END IF;

        IF api_key IS NULL THEN
            IF anonymous THEN
                status := 200;
                RETURN;
            END IF;
            status := 401;
            code := 'apikeys.missing';
            msg := 'API key required';
            hint := 'Send the API key in one of these headers: '
                    || array_to_string(array(SELECT CASE x WHEN 'authorization' THEN 'Authorization: Bearer'
                                                           WHEN 'x-api-key' THEN 'X-API-Key'
                                                           ELSE x END
                                               FROM unnest(cfg.key_headers) WITH ORDINALITY AS u(x, i)
                                              ORDER BY i), ', ') || '.';
            hdrs := jsonb_build_object('WWW-Authenticate', format('Bearer realm="%s"', cfg.realm));
        ELSE
            -- the key's, its tenant's and the route's limits, all or nothing
            v := apikeys_internal._authenticate_route(api_key, CASE WHEN cardinality(need) > 0 THEN need END,
                                                      NULL, route_id, route_lims, coalesce(route_cost, 1));

            IF v.rate_limit IS NOT NULL AND cfg.rate_limit_headers THEN
                rl_hdrs := jsonb_build_array(
                    jsonb_build_object('X-RateLimit-Limit', v.rate_limit::text),
                    jsonb_build_object('X-RateLimit-Remaining', greatest(v.rate_remaining, 0)::text),
                    jsonb_build_object('X-RateLimit-Reset', ceil(extract(epoch FROM v.rate_reset))::bigint::text));
            END IF;

            IF v.valid THEN
                -- the role mapped from the key, if any
                SELECT m.role_name, (m.tenant IS NULL AND m.key_id IS NULL) INTO set_role, any_tenant
                  FROM apikeys.postgrest_role_map m
                 WHERE (m.tenant IS NULL OR m.tenant = v.tenant)
                   AND (m.key_id IS NULL OR m.key_id = v.key_id)
                   AND (m.scope IS NULL OR m.scope = ANY (v.scopes))
                 ORDER BY m.priority DESC, (m.key_id IS NOT NULL) DESC, (m.scope IS NOT NULL) DESC,
                          (m.tenant IS NOT NULL) DESC, m.role_name
                 LIMIT 1;
                IF set_role IS NOT NULL THEN
                    SELECT * INTO r FROM pg_catalog.pg_roles x WHERE x.rolname = set_role;
                    IF NOT FOUND THEN
                        code := 'apikeys.role_missing';
                        msg := 'The role mapped to this API key does not exist';
                        hint := 'Fix apikeys.postgrest_role_map.';
                    ELSIF r.rolsuper OR r.rolbypassrls THEN
                        code := 'apikeys.role_unsafe';
                        msg := 'The role mapped to this API key is a superuser or bypasses row-level security';
                        hint := 'Map keys to ordinary roles in apikeys.postgrest_role_map.';
                    ELSIF apikeys_internal._role_skips_rls(r.oid) THEN
                        -- an owner's queries skip RLS unless it is forced: the key's
                        -- tenant binding would not restrict them
                        code := 'apikeys.role_unsafe';
                        msg := 'The role mapped to this API key owns a table whose row-level security does not apply to its owner';
                        hint := 'ALTER TABLE ... FORCE ROW LEVEL SECURITY on the tables that role owns (or inherits), or map keys to a role that owns none.';
                    ELSIF any_tenant AND apikeys.postgrest_role_confinement(set_role) IS NOT NULL THEN
                        -- a row for keys of any tenant (whose scopes each tenant
                        -- chooses) may name only a role RLS confines to the tenant
                        reason := apikeys.postgrest_role_confinement(set_role);
                        code := 'apikeys.role_unsafe';
                        msg := 'The role mapped to this API key by a mapping for every tenant is not confined to the key''s tenant';
                        hint := 'Set the mapping''s tenant or key_id in apikeys.postgrest_role_map, or see apikeys.postgrest_role_confinement().';
                    ELSIF NOT pg_has_role(session_user, r.oid, 'MEMBER') THEN
                        code := 'apikeys.role_not_allowed';
                        msg := 'The database connection may not switch to the role mapped to this API key';
                        hint := format('GRANT %I TO %I (as for PostgREST''s own roles).', set_role, session_user);
                    END IF;
                END IF;
                IF code IS NULL THEN
                    status := 200;
                    response_headers := rl_hdrs;
                    RETURN;
                END IF;
                -- a server misconfiguration, not the client's fault
                status := 500;
                reason := format('role %s: %s', set_role, coalesce(reason, code));
                set_role := NULL;
            ELSE
                code := 'apikeys.' || v.code;
                -- the status from the library's list (src/verdicts.h); 401 for
                -- a code it does not know
                status := coalesce((SELECT d.http_status FROM apikeys_internal.verdicts() d
                                     WHERE d.name = v.code), 401);
                CASE v.code
                WHEN 'malformed' THEN
                    msg := 'API key is malformed';
                WHEN 'not_found' THEN
                    msg := 'API key is not valid';
                WHEN 'disabled' THEN
                    msg := 'API key is disabled';
                WHEN 'revoked' THEN
                    msg := 'API key has been revoked';
                WHEN 'expired' THEN
                    msg := 'API key has expired';
                WHEN 'tenant_inactive' THEN
                    msg := 'The tenant of this API key is inactive';
                WHEN 'ip_not_allowed' THEN
                    msg := 'Requests from this address are not allowed with this API key';
                WHEN 'insufficient_scope' THEN
                    msg := 'API key lacks a scope this request requires';
                    details := 'Required scopes: ' || array_to_string(need, ' ');
                    hdrs := jsonb_build_object('WWW-Authenticate',
                        format('Bearer realm="%s", error="insufficient_scope", scope="%s"',
                               cfg.realm, array_to_string(need, ' ')));
                WHEN 'rate_limited' THEN
                    msg := 'Rate limit exceeded';
                    wait_s := greatest(ceil(extract(epoch FROM v.rate_reset - clock_timestamp())), 1);
                    hdrs := jsonb_build_object('Retry-After', wait_s::text);
                    SELECT l.scope, l.name INTO lim_scope, lim_name
                      FROM apikeys.last_verify_limits() l WHERE l.tightest;
                    IF lim_scope = 'route' THEN
                        -- the route's limit that refused, its window in
                        -- words whatever the session's IntervalStyle
                        SELECT CASE WHEN s % 3600 = 0 THEN (s / 3600) || ' h'
                                    WHEN s % 60 = 0 THEN (s / 60) || ' min'
                                    ELSE s || ' s' END
                          INTO lim_per
                          FROM (SELECT extract(epoch FROM x.per)::bigint AS s
                                  FROM unnest(route_lims) x WHERE x.name = lim_name) w;
                        details := format('At most %s requests per %s on this route (route limit "%s").',
                                          v.rate_limit, lim_per, lim_name);
                    ELSE
                        details := format('At most %s requests per window.', v.rate_limit);
                    END IF;
                    hint := 'Retry after the number of seconds in the Retry-After header.';
                WHEN 'usage_exceeded' THEN
                    msg := 'Usage limit exceeded';
                    -- periods are aligned to 2000-01-01 UTC, like the C code
                    SELECT c.usage_period INTO per FROM apikeys.credential c WHERE c.key_id = v.key_id;
                    IF per IS NOT NULL THEN
                        wait_s := greatest(ceil(extract(epoch FROM
                            ('2000-01-01 00:00:00+00'::timestamptz
                             + (floor(extract(epoch FROM clock_timestamp() - '2000-01-01 00:00:00+00'::timestamptz)
                                      / extract(epoch FROM per)) + 1) * per)
                            - clock_timestamp())), 1);
                        hdrs := jsonb_build_object('Retry-After', wait_s::text);
                        details := 'The usage cap resets at the end of its period.';
                        hint := 'Retry after the number of seconds in the Retry-After header.';
                    ELSE
                        details := 'The usage cap does not reset.';
                    END IF;
                ELSE
                    msg := 'API key is not valid';
                END CASE;
                IF status = 401 THEN
                    hdrs := jsonb_build_object('WWW-Authenticate',
                        format('Bearer realm="%s", error="invalid_token"', cfg.realm));
                END IF;
                -- the rate-limit figures, when verify got that far
                SELECT hdrs || coalesce(jsonb_object_agg(e.key, e.value), '{}')
                  INTO hdrs FROM jsonb_array_elements(rl_hdrs) a, jsonb_each(a.value) e;
            END IF;
        END IF;
    END IF;

    PERFORM apikeys_internal._postgrest_log_denied(status, substr(code, 9), v.tenant, v.key_id,
                                          raw_method, raw_path, reason);
    IF status = 500 THEN
        hdrs := '{}';
    END IF;
    message := json_build_object('code', code, 'message', msg, 'details', details, 'hint', hint)::text;
    detail := json_build_object('status', status, 'headers', hdrs)::text;
END;
$$;

------------------------------------------------------------------------------
-- Audit heads with their time, and audit_head_check() (src/sql/30_audit.sql):
-- a head that is gone must be accounted for by a purge.  audit_head() gains
-- a column, so it is made again; the roles that may audit get both.
------------------------------------------------------------------------------

DROP FUNCTION apikeys.audit_head();
DROP FUNCTION apikeys_internal.audit_head();
CREATE FUNCTION apikeys_internal.audit_head()
    RETURNS TABLE (chain text, audit_id bigint, row_hash text, at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT c.x, h.audit_id, encode(h.row_hash, 'hex'), h.at
      FROM apikeys_internal._audit_chains() c(x)
      CROSS JOIN LATERAL (SELECT a.audit_id, a.row_hash, a.at FROM apikeys.audit a
                           WHERE a.chain OPERATOR(pg_catalog.=) c.x
                           ORDER BY a.audit_id DESC LIMIT 1) h
     ORDER BY 1;
END;
$$;
SELECT apikeys_internal.publish('audit_head', 'Newest row, hash and time of each audit chain the caller may audit: store them outside the database to detect a rewritten or shortened chain (audit_head_check).');

-- A head stored from audit_head() earlier, checked against the chain now:
-- the row is still there with that hash and time, or a purge accounts for
-- it (the chain's newest audit_purged row purged up to it or past it, with a
-- cutoff after the row's time, and names its hash if it was the last row
-- purged).  Rows deleted from the end of a chain leave a valid shorter
-- chain, and a forged anchor over them checks too unless it is dated a day
-- ahead (which audit_check() refuses until then): this finds both.  The
-- anchor itself is proved by audit_check().
CREATE FUNCTION apikeys_internal.audit_head_check(chain text, audit_id bigint, row_hash text, at timestamptz,
    OUT ok boolean, OUT problem text)
    RETURNS record
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('audit');
    r apikeys.audit;
    p apikeys.audit;
BEGIN
    IF chain IS NULL OR audit_id IS NULL OR row_hash IS NULL OR at IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_head: chain, audit_id, row_hash and at must not be NULL',
            HINT = 'Pass a row of apikeys.audit_head() as it was stored.';
    END IF;
    IF v IS NOT NULL AND NOT (chain OPERATOR(pg_catalog.=) ANY (v)) THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'not_authorized: you may not audit this chain';
    END IF;
    SELECT * INTO r FROM apikeys.audit a
     WHERE a.chain OPERATOR(pg_catalog.=) audit_head_check.chain
       AND a.audit_id OPERATOR(pg_catalog.=) audit_head_check.audit_id;
    IF FOUND THEN
        ok := encode(r.row_hash, 'hex') OPERATOR(pg_catalog.=) lower(audit_head_check.row_hash)
              AND r.at OPERATOR(pg_catalog.=) audit_head_check.at;
        problem := CASE WHEN NOT ok THEN 'the stored head''s row has another hash or time now' END;
        RETURN;
    END IF;
    SELECT * INTO p FROM apikeys.audit a
     WHERE a.chain OPERATOR(pg_catalog.=) audit_head_check.chain AND a.action OPERATOR(pg_catalog.=) 'audit_purged'
     ORDER BY a.audit_id DESC LIMIT 1;
    ok := coalesce((p.detail OPERATOR(pg_catalog.->>) 'last_purged_id')::bigint OPERATOR(pg_catalog.>=) audit_head_check.audit_id
                   AND (p.detail OPERATOR(pg_catalog.->>) 'cutoff')::timestamptz OPERATOR(pg_catalog.>) audit_head_check.at
                   AND ((p.detail OPERATOR(pg_catalog.->>) 'last_purged_id')::bigint OPERATOR(pg_catalog.>) audit_head_check.audit_id
                        OR p.detail OPERATOR(pg_catalog.->>) 'last_purged_hash' OPERATOR(pg_catalog.=) lower(audit_head_check.row_hash)),
                   false);
    problem := CASE WHEN NOT ok THEN 'the stored head is gone and no purge accounts for it: rows were deleted from the end of the chain' END;
END;
$$;
SELECT apikeys_internal.publish('audit_head_check', 'Check a head stored from audit_head() against the chain now: still there, or purged (else rows were deleted from the end).');
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole::text AS grantee
               FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
              WHERE p.oid OPERATOR(pg_catalog.=) 'apikeys.audit_check()'::pg_catalog.regprocedure
                AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
                AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.audit_head(), apikeys.audit_head_check(text, bigint, text, timestamptz) TO %s', r.grantee);
    END LOOP;
END;
$$;

------------------------------------------------------------------------------
-- audit_purge() never waits for a chain's writer (src/sql/30_audit.sql): a
-- chain being written is left for the next purge
------------------------------------------------------------------------------
CREATE FUNCTION apikeys_internal._audit_chain_try_lock(chain text) RETURNS boolean
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'apikeys_audit_chain_try_lock';
COMMENT ON FUNCTION apikeys_internal._audit_chain_try_lock(text) IS 'Take an audit chain''s lock without waiting (held to commit); false when another transaction is writing the chain.';

CREATE OR REPLACE FUNCTION apikeys_internal._audit_purge_rows(cutoff timestamptz, older_than interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    chk record;
    c text;
    cut apikeys.audit;
    n bigint;
    total bigint := 0;
    busy text[] := '{}';
BEGIN
    IF NOT apikeys_internal._audit_purging() THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'audit_append_only: call apikeys.audit_purge()';
    END IF;
    -- never purge evidence: a broken chain stays until someone looks at it
    SELECT * INTO chk FROM apikeys.audit_check();
    IF NOT chk.ok THEN
        RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
            MESSAGE = format('audit_chain_broken: chain "%s" row %s: %s', chk.first_bad_chain, chk.first_bad_id, chk.problem),
            HINT = 'apikeys.audit_check() shows the first broken row; the purge refuses to delete evidence of tampering.';
    END IF;
    FOR c IN SELECT x FROM apikeys_internal._audit_chains() x LOOP
        SELECT * INTO cut FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.at OPERATOR(pg_catalog.<) cutoff
         ORDER BY a.audit_id DESC LIMIT 1;
        CONTINUE WHEN cut.audit_id IS NULL;
        IF NOT apikeys_internal._audit_chain_try_lock(c) THEN
            busy := busy OPERATOR(pg_catalog.||) c;
            CONTINUE;
        END IF;
        -- read again under the lock: another purge may have committed since
        -- (an anchor naming rows it already deleted would break the chain)
        SELECT * INTO cut FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.at OPERATOR(pg_catalog.<) cutoff
         ORDER BY a.audit_id DESC LIMIT 1;
        CONTINUE WHEN cut.audit_id IS NULL;
        SELECT count(*) INTO n FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.audit_id OPERATOR(pg_catalog.<=) cut.audit_id;
        -- the anchor carries the whole newest purged row, so a check can prove
        -- that what it names really was hashed, and at least a day old
        PERFORM apikeys_internal._audit_write('audit_purged', nullif(c, ''), NULL, jsonb_build_object(
            'rows', n, 'older_than', older_than, 'cutoff', cutoff, 'last_purged_id', cut.audit_id,
            'last_purged_hash', encode(cut.row_hash, 'hex'), 'last_purged_row', to_jsonb(cut)));
        DELETE FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.audit_id OPERATOR(pg_catalog.<=) cut.audit_id;
        total := total OPERATOR(pg_catalog.+) n;
    END LOOP;
    IF cardinality(busy) OPERATOR(pg_catalog.>) 0 THEN
        RAISE WARNING 'audit_purge_busy: % chain(s) being written were left as they are: %', cardinality(busy),
                      array_to_string(ARRAY(SELECT quote_literal(b) FROM unnest(busy) b), ', ')
            USING DETAIL = 'A transaction that wrote to each of them is still open; the purge does not wait for it.',
                  HINT = 'Their old rows go at the next purge.';
    END IF;
    RETURN total;
END;
$$;

------------------------------------------------------------------------------
-- The vault never lets one tenant's open transaction hold up another
-- (src/sql/60_vault.sql): vault_add asks the same questions whether the
-- tenant exists or not; the master key rotation does not queue for its lock
------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION apikeys_internal.vault_add(
    tenant     text,
    service    text,
    name       text,
    secret     text,
    owner_user text DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- the secret never a plan constant
AS $$
DECLARE
    r name := apikeys_internal._acting_role();
    su boolean;
    svc apikeys.vault_service;
    sealed record;
    new_id uuid := gen_random_uuid();
    visible boolean;
BEGIN
    su := apikeys_internal._is_superuser(r);
    -- An unknown tenant and one the role may not manage read the same (and
    -- neither is echoed: it could be a misplaced secret); only a superuser
    -- is told that a tenant does not exist.  Both questions are asked
    -- whatever the answers, so the time taken does not tell them apart
    -- either (asking one only when the other said yes did).
    visible := tenant IS NOT NULL AND coalesce(apikeys_internal._may_manage(tenant), false);
    IF tenant IS NULL OR NOT EXISTS (SELECT 1 FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) vault_add.tenant) THEN
        IF su THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = 'tenant_not_found: no such tenant';
        END IF;
        visible := false;
    END IF;
    IF NOT visible THEN
        PERFORM apikeys_internal._deny('vault_add', NULL, NULL, '42501',
            format('permission_denied: role "%s" may not manage this tenant', r));
    END IF;
    PERFORM apikeys_internal._require_active_tenant(tenant, 'vault_add', NULL);
    PERFORM apikeys_internal._vault_check_name(name);
    IF owner_user IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro WHERE ro.rolname OPERATOR(pg_catalog.=) owner_user) THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = 'role_not_found: owner_user must name an existing role';
        END IF;
        IF NOT su AND owner_user OPERATOR(pg_catalog.<>) r::text THEN
            PERFORM apikeys_internal._deny('vault_add', tenant, NULL, '42501',
                format('vault_not_owner: role "%s" may add only secrets it owns itself', r),
                'Pass owner_user => NULL (the tenant) or your own role name.');
        END IF;
    END IF;
    svc := apikeys_internal._vault_service(service);
    IF secret IS NULL OR secret OPERATOR(pg_catalog.=) '' OR octet_length(secret) OPERATOR(pg_catalog.>) 4096 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'vault_invalid_secret: secret must be 1 to 4096 bytes';
    END IF;
    IF NOT (secret OPERATOR(pg_catalog.~) svc.format) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('vault_invalid_format: the secret does not have the format of service "%s"', svc.service),
            HINT = format('%s keys match %s', svc.display_name, svc.format);
    END IF;
    -- a simple expression: the secret reaches no statement (see Internals)
    sealed := apikeys_internal._vault_seal(new_id, secret);

    -- one active secret per owner and service: the new one replaces it
    PERFORM apikeys_internal._vault_lock_slot(tenant, owner_user, svc.service);
    UPDATE apikeys.vault_secret v SET active = false, updated_at = now()
     WHERE v.tenant OPERATOR(pg_catalog.=) vault_add.tenant
       AND v.owner_user IS NOT DISTINCT FROM vault_add.owner_user
       AND v.service OPERATOR(pg_catalog.=) svc.service AND v.active;
    INSERT INTO apikeys.vault_secret (id, tenant, owner_user, service, name, ciphertext, key_fp)
    VALUES (new_id, tenant, owner_user, svc.service, name, sealed.ciphertext, sealed.key_fp);
    RETURN new_id;
END;
$$;

CREATE OR REPLACE FUNCTION apikeys_internal.vault_rotate_master_key()
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- no fingerprint or ciphertext as a plan constant
AS $$
DECLARE
    r name := apikeys_internal._acting_role();
    s apikeys.vault_secret;
    k record;
    w record;
    n bigint := 0;
    locked boolean := false;
BEGIN
    IF NOT coalesce(apikeys_internal._is_superuser(r), false) THEN
        PERFORM apikeys_internal._deny('vault_rotate_master_key', NULL, NULL, '42501',
            format('permission_denied: role "%s" may not rotate the vault master key', r),
            'Only superusers rotate the vault master key.');
    END IF;
    k := apikeys_internal._vault_key_state();   -- checks the current key itself

    -- Every secret is rewritten under one lock that keeps writers out.  It is
    -- taken without joining the lock queue: queued behind one tenant's open
    -- vault write, the rotation would make every other tenant's vault
    -- writes queue behind it.  It tries for up to 10 seconds, then refuses.
    FOR i IN 1..100 LOOP
        BEGIN
            LOCK TABLE apikeys.vault_secret IN EXCLUSIVE MODE NOWAIT;
            locked := true;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM pg_catalog.pg_sleep(0.1);
        END;
        EXIT WHEN locked;
    END LOOP;
    IF NOT locked THEN
        RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
            MESSAGE = 'vault_busy: vault secrets were being written throughout the last 10 seconds; nothing was re-encrypted',
            DETAIL = 'The rotation does not wait in line for a writer: that would hold up every tenant''s vault writes behind it.',
            HINT = 'Run it again; pg_stat_activity shows transactions left open after a vault change.';
    END IF;
    FOR s IN SELECT * FROM apikeys.vault_secret v WHERE v.key_fp OPERATOR(pg_catalog.<>) k.cur_fp ORDER BY v.id LOOP
        -- decrypted with the previous key and encrypted with the current one
        -- inside C: the plaintext and both keys stay out of SQL
        w := apikeys_internal._vault_rewrap(s.id, s.ciphertext, s.key_fp);
        IF w.ciphertext IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
                MESSAGE = format('vault_decrypt_failed: vault secret %s could not be decrypted with the old master key', s.id),
                HINT = 'Nothing was re-encrypted. apikeys.vault_check() lists the secrets that do not open.';
        END IF;
        UPDATE apikeys.vault_secret v
           SET ciphertext = w.ciphertext, key_fp = w.key_fp
         WHERE v.id OPERATOR(pg_catalog.=) s.id;
        n := n OPERATOR(pg_catalog.+) 1;
    END LOOP;
    -- no fingerprints here: they would let an audit reader test key guesses
    PERFORM apikeys_internal._audit_write('vault_master_key_rotated', NULL, NULL,
        jsonb_build_object('secrets', n));
    RETURN n;
END;
$$;

------------------------------------------------------------------------------
-- Last, as at the end of a fresh install (src/sql/90_privileges.sql, the
-- same statements): nothing the sections above created is for PUBLIC, or for
-- a role the installing role's default privileges name.  publish() revokes
-- PUBLIC's EXECUTE from a body, not from its entry point.
------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA apikeys FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA apikeys FROM PUBLIC;
-- The bodies and helpers are reached only through the entry points and our
-- own code (by OID, or as the extension owner): no one gets EXECUTE.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA apikeys_internal FROM PUBLIC;
GRANT EXECUTE ON FUNCTION apikeys.current_tenant(), apikeys.current_key_id() TO PUBLIC;
-- The row-level policies call this for any role granted SELECT on a table;
-- it answers only about the caller.
GRANT EXECUTE ON FUNCTION apikeys.visible_tenants(text) TO PUBLIC;
-- apikey_import_many (invoker code) asks it about its caller's own query.
GRANT EXECUTE ON FUNCTION apikeys.import_query_columns(text) TO PUBLIC;

-- Default privileges (ALTER DEFAULT PRIVILEGES) of the role running this
-- script, or of the extension's owner, give other roles the objects the
-- script creates: CREATE on the schemas, TRIGGER on the tables (a trigger
-- of theirs would run as the definer code that writes them, a superuser),
-- EXECUTE on the bodies.  Roles get privileges from the grant recipes only:
-- take back what such defaults gave, from every object of the extension
-- (PUBLIC's are dealt with above).  A role that also had a recipe's grants
-- loses them (WARNING): run its recipe again.
DO $$
DECLARE
    r name;
BEGIN
    FOR r IN
        SELECT DISTINCT pg_catalog.pg_get_userbyid(a.grantee)
          FROM pg_catalog.pg_default_acl d, pg_catalog.aclexplode(d.defaclacl) a
         WHERE d.defaclrole IN (SELECT e.extowner FROM pg_catalog.pg_extension e
                                 WHERE e.extname OPERATOR(pg_catalog.=) 'apikeys'
                                UNION ALL
                                SELECT u.oid FROM pg_catalog.pg_roles u
                                 WHERE u.rolname OPERATOR(pg_catalog.=) current_user)
           AND d.defaclnamespace IN (0, 'apikeys'::regnamespace, 'apikeys_internal'::regnamespace)
           AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) d.defaclrole
    LOOP
        RAISE WARNING 'apikeys_default_privileges: revoked from role "%" what default privileges gave it on the extension''s objects', r
            USING HINT = 'If that role was granted apikeys.grant_tenant(), grant_verifier(), grant_vault() or grant_postgrest(), run it again.';
        EXECUTE format('REVOKE ALL ON SCHEMA apikeys, apikeys_internal FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA apikeys, apikeys_internal FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA apikeys, apikeys_internal FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA apikeys, apikeys_internal FROM %I', r);
    END LOOP;
END;
$$;
