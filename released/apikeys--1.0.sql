/* apikeys--1.0.sql - API key management inside PostgreSQL */

\echo Use "CREATE EXTENSION apikeys" to load this file. \quit

-- Nothing in this schema is for PUBLIC unless granted below or by the DBA.
REVOKE ALL ON SCHEMA apikeys FROM PUBLIC;

------------------------------------------------------------------------------
-- Entry points.  A management function's body lives in apikeys_internal
-- (SECURITY DEFINER, never granted to anyone); the apikeys.<name> that users
-- call is a C entry point published from it, which records the role whose
-- code makes the call, refuses security-restricted operations (ANALYZE,
-- VACUUM, CREATE INDEX, REFRESH ...) and calls the body (src/caller.c).
-- Authorization then asks apikeys._acting_role(), never the session.
------------------------------------------------------------------------------

CREATE SCHEMA apikeys_internal;
REVOKE ALL ON SCHEMA apikeys_internal FROM PUBLIC;
COMMENT ON SCHEMA apikeys_internal IS 'Bodies of the apikeys management functions; reached only through their apikeys.* entry points.';

-- Publish apikeys_internal.<name> as apikeys.<name>: same arguments, defaults,
-- result, volatility and parallel safety; the comment goes on the entry point.
CREATE FUNCTION apikeys_internal.publish(name text, comment text) RETURNS void
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
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', p.oid::regprocedure);
END;
$$;

-- The role the current management call acts for: the caller of the entry
-- point being run (outside one: the session's current role).
CREATE FUNCTION apikeys._acting_role() RETURNS name
    LANGUAGE C VOLATILE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_acting_role_sql';

------------------------------------------------------------------------------
-- Tables.  Column order of tenant, credential and secret is read by the C
-- verify path (src/apikeys.h); add columns at the end only.
------------------------------------------------------------------------------

CREATE TABLE apikeys.tenant (
    tenant       text COLLATE "C" PRIMARY KEY
                 CHECK (tenant ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE apikeys.tenant IS 'Tenants: every API key belongs to one; an inactive tenant''s keys do not verify.';

CREATE TABLE apikeys.credential (
    key_id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant         text COLLATE "C" NOT NULL REFERENCES apikeys.tenant (tenant),
    name           text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description    text CHECK (char_length(description) <= 2000),
    prefix         text NOT NULL CHECK (prefix ~ '^[a-z][a-z0-9]*(_[a-z0-9]+)*$' AND length(prefix) <= 32),
    scopes         text[] NOT NULL DEFAULT '{}' CHECK (cardinality(scopes) <= 64),
    metadata       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'revoked')),
    expires_at     timestamptz,
    created_by     name NOT NULL DEFAULT current_user,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    rotated_at     timestamptz,
    rotation_count integer NOT NULL DEFAULT 0,
    revoked_at     timestamptz,
    revoked_reason text CHECK (char_length(revoked_reason) <= 2000),
    -- policies enforced by apikey_verify (NULL: none); set by apikey_set_policy()
    allowed_ips    cidr[] CHECK (cardinality(allowed_ips) BETWEEN 1 AND 16),
    rate_limit     integer CHECK (rate_limit > 0),
    rate_window    interval CHECK (rate_window >= '1 second' AND rate_window <= '1 day'),
    usage_limit    bigint CHECK (usage_limit > 0),
    usage_period   interval CHECK (usage_period >= '1 second' AND usage_period <= '366 days'),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL)),
    CHECK ((rate_limit IS NULL) = (rate_window IS NULL))
);
CREATE INDEX credential_tenant_idx ON apikeys.credential (tenant, created_at);
COMMENT ON TABLE apikeys.credential IS 'API keys: the identity (key_id) that survives rotation, with name, scopes, expiry and status.';

CREATE TABLE apikeys.secret (
    digest      bytea PRIMARY KEY CHECK (octet_length(digest) = 32),
    key_id      uuid NOT NULL REFERENCES apikeys.credential (key_id) ON DELETE CASCADE,
    hint        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    valid_until timestamptz   -- NULL: the current secret; else in its rotation grace
);
CREATE UNIQUE INDEX secret_one_current ON apikeys.secret (key_id) WHERE valid_until IS NULL;
CREATE INDEX secret_key_id_idx ON apikeys.secret (key_id);
COMMENT ON TABLE apikeys.secret IS 'SHA-256 digests of the secrets of each key: one current, others in rotation grace. Never readable by tenants.';

-- Usage figures flushed from shared memory by the background worker (no
-- foreign key: a flush must never fail because a key was just deleted).
-- Each flush rewrites the row of every key used since the last one: the
-- free space of fillfactor 70 keeps those updates HOT (no index entry).
CREATE TABLE apikeys.usage (
    key_id                   uuid PRIMARY KEY,
    last_used_at             timestamptz,
    used                     bigint,                      -- uses charged in the period; NULL: no cap tracked
    period_start             timestamptz,                 -- NULL: lifetime
    count_valid              bigint NOT NULL DEFAULT 0,
    count_disabled           bigint NOT NULL DEFAULT 0,
    count_revoked            bigint NOT NULL DEFAULT 0,
    count_expired            bigint NOT NULL DEFAULT 0,
    count_tenant_inactive    bigint NOT NULL DEFAULT 0,
    count_ip_not_allowed     bigint NOT NULL DEFAULT 0,
    count_insufficient_scope bigint NOT NULL DEFAULT 0,
    count_rate_limited       bigint NOT NULL DEFAULT 0,
    count_usage_exceeded     bigint NOT NULL DEFAULT 0,
    flushed_at               timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
COMMENT ON TABLE apikeys.usage IS 'Per-key use counts and last use, flushed in batches from shared memory; read apikeys.key_usage for live figures.';

-- pg_dump keeps the user data of an extension's tables only when asked.
SELECT pg_catalog.pg_extension_config_dump('apikeys.tenant', '');
SELECT pg_catalog.pg_extension_config_dump('apikeys.credential', '');
SELECT pg_catalog.pg_extension_config_dump('apikeys.secret', '');
SELECT pg_catalog.pg_extension_config_dump('apikeys.usage', '');

------------------------------------------------------------------------------
-- Types
------------------------------------------------------------------------------

CREATE TYPE apikeys.verification AS (
    valid      boolean,
    code       text,
    key_id     uuid,
    tenant     text,
    name       text,
    scopes     text[],
    expires_at timestamptz,
    rate_limit      integer,      -- requests allowed per window (X-RateLimit-Limit)
    rate_remaining  integer,      -- left in this window after this call (X-RateLimit-Remaining)
    rate_reset      timestamptz,  -- when the window ends (X-RateLimit-Reset)
    usage_remaining bigint        -- uses left under the usage cap
);
COMMENT ON TYPE apikeys.verification IS 'Result of apikey_verify: valid, a verdict code, and the key''s identity when it was found.';

------------------------------------------------------------------------------
-- Validators (C), shared by the C and PL/pgSQL management functions
------------------------------------------------------------------------------

CREATE FUNCTION apikeys._check_tenant_id(text) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_tenant_id';
-- the same, for an argument that must name one tenant (NULL is an error)
CREATE FUNCTION apikeys._tenant_arg(text) RETURNS text
    LANGUAGE C IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_tenant_id';
CREATE FUNCTION apikeys._check_name(text) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_name';
CREATE FUNCTION apikeys._check_description(text) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_description';
CREATE FUNCTION apikeys._normalize_scopes(text[]) RETURNS text[]
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_normalize_scopes';
CREATE FUNCTION apikeys._check_expiry(timestamptz) RETURNS timestamptz
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_expiry';
CREATE FUNCTION apikeys._check_metadata(jsonb) RETURNS jsonb
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_metadata';
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
CREATE FUNCTION apikeys._binding_for_caller(trusted_only boolean) RETURNS text
    LANGUAGE C STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_binding_for_caller_sql';
CREATE FUNCTION apikeys._context_source() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_context_source';
-- The labels set_tenant()/authenticate() bound to this transaction, or NULL.
CREATE FUNCTION apikeys._context_actor() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_context_actor';
CREATE FUNCTION apikeys._context_request_id() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_context_request_id';
-- A setting's value if it was set for this transaction (SET LOCAL,
-- set_config(..., true), a function's SET clause) and is at most max_bytes
-- long; else NULL, with a WARNING when a value was ignored.
CREATE FUNCTION apikeys._transaction_setting(name text, max_bytes integer) RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_transaction_setting';
CREATE FUNCTION apikeys._bulk_loading() RETURNS boolean
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
CREATE FUNCTION apikeys._is_superuser(r name) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ro.rolsuper FROM pg_catalog.pg_roles ro WHERE ro.rolname OPERATOR(pg_catalog.=) r
$$;

-- Does role r hold `need` ('read', 'audit' or 'manage') on tenant t through role_tenant?
-- (t NULL: a grant on every tenant.)
CREATE FUNCTION apikeys._role_may(r name, t text, need text) RETURNS boolean
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
CREATE FUNCTION apikeys_internal._visible_tenants(need text) RETURNS text[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name := apikeys._acting_role();
BEGIN
    IF apikeys._is_superuser(r) OR apikeys._role_may(r, NULL, 'read') THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY(
        SELECT g.tenant
          FROM apikeys.role_tenant g
          JOIN pg_catalog.pg_roles ro ON ro.rolname OPERATOR(pg_catalog.=) g.role_name
         WHERE g.tenant IS NOT NULL AND pg_catalog.pg_has_role(r, ro.oid, 'USAGE')
        UNION
        SELECT apikeys._binding_for_caller(false)
         WHERE need OPERATOR(pg_catalog.=) 'read' AND apikeys._binding_for_caller(false) IS NOT NULL
        ORDER BY 1);
END;
$$;
SELECT apikeys_internal.publish('_visible_tenants', 'Tenants the calling role may read (NULL: every tenant); answers only about the caller.');

-- Record a refused management attempt in the server log (it survives the
-- rollback that the error causes), then raise.
CREATE FUNCTION apikeys._deny(p_action text, p_tenant text, p_key_id uuid,
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
        'db_role', apikeys._acting_role(), 'session_role', session_user,
        'actor', apikeys._actor(), 'request_id', apikeys._request_id(),
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
-- role whose code called the entry point (apikeys._acting_role(): inside a
-- tenant admin's SECURITY DEFINER function that is the tenant admin, whoever
-- runs the session) may if it is a superuser, is mapped to the tenant with
-- 'manage' (or to every tenant), or its transaction is bound to the tenant
-- by set_tenant() (apikeys._binding_for_caller).  A question, never an error: callers that must not tell
-- "not yours" from "no such thing" raise one error for both.
CREATE FUNCTION apikeys._may_manage(p_tenant text) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name := apikeys._acting_role();
BEGIN
    IF apikeys._is_superuser(r) THEN
        RETURN true;
    END IF;
    IF p_tenant IS NULL THEN
        RETURN apikeys._role_may(r, NULL, 'manage');
    END IF;
    RETURN coalesce(apikeys._binding_for_caller(true) OPERATOR(pg_catalog.=) p_tenant, false)
        OR apikeys._role_may(r, p_tenant, 'manage');
END;
$$;

-- Raise (and log) unless the acting role may manage p_tenant.  With a key or
-- secret id the refusal reads as key_not_found, so other tenants' ids stay
-- unseen (apikeys._lock_key() looks keys up that way).
CREATE FUNCTION apikeys._authorize(p_tenant text, p_action text, p_key_id uuid DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF apikeys._may_manage(p_tenant) THEN
        RETURN;
    END IF;
    IF p_key_id IS NOT NULL THEN
        PERFORM apikeys._deny(p_action, p_tenant, p_key_id, '42704',
            format('key_not_found: no API key with id %s', p_key_id));
    ELSIF p_tenant IS NULL THEN
        PERFORM apikeys._deny(p_action, NULL, NULL, '42501',
            format('permission_denied: role "%s" may not manage tenants', apikeys._acting_role()),
            'Tenants are managed by superusers and roles granted apikeys.grant_tenant(role, NULL).');
    ELSE
        PERFORM apikeys._deny(p_action, p_tenant, NULL, '42501',
            format('permission_denied: role "%s" may not manage tenant "%s"', apikeys._acting_role(), p_tenant),
            'A superuser can allow it with apikeys.grant_tenant(role, tenant).');
    END IF;
END;
$$;
------------------------------------------------------------------------------
-- Audit: append-only, hash-chained
------------------------------------------------------------------------------

-- One hash chain per tenant (chain = tenant, '' for rows of no tenant);
-- audit_id numbers the rows of one chain.  docs/audit.md explains the design.
CREATE TABLE apikeys.audit (
    chain            text COLLATE "C" NOT NULL,
    audit_id         bigint NOT NULL,
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    tenant           text COLLATE "C",
    key_id           uuid,
    action           text NOT NULL,
    outcome          text NOT NULL DEFAULT 'success',
    db_role          name NOT NULL,
    session_role     name NOT NULL,
    actor            text,
    request_id       text,
    client_addr      inet,
    application_name text,
    txid             xid8,
    detail           jsonb NOT NULL DEFAULT '{}',
    prev_hash        bytea NOT NULL,
    row_hash         bytea NOT NULL,
    PRIMARY KEY (chain, audit_id)
);
CREATE INDEX audit_key_idx ON apikeys.audit (key_id, audit_id) WHERE key_id IS NOT NULL;
CREATE INDEX audit_at_idx ON apikeys.audit (at, audit_id);
SELECT pg_catalog.pg_extension_config_dump('apikeys.audit', '');
COMMENT ON TABLE apikeys.audit IS 'Every change to tenants, keys, secrets, role mappings and the vault. Append-only; one hash chain per tenant, each row hashing the previous one of its chain (audit_check()).';

-- Application actor and request id, in this order: the labels set_tenant()
-- or authenticate() bound to the transaction; apikeys.actor /
-- apikeys.request_id if set for this transaction (SET LOCAL); PostgREST's
-- transaction-local request.jwt.claims "sub" / request.headers
-- "x-request-id".  A value set for the session is ignored with a WARNING (in
-- a pooled connection it may be another client's), and so is one over 200
-- characters.  Nothing here raises: any setting's value, however malformed,
-- reads as absent, so an audit row or a refusal's log line is never lost.

-- Field `field` of the JSON object in setting `name`.  Values over 16 kB, or
-- not valid JSON, or not an object, or holding anything jsonb refuses (a
-- \u0000, nesting past the stack limit), read as absent: WHEN OTHERS catches
-- every error but query_canceled (and assert_failure).
CREATE FUNCTION apikeys._json_setting(name text, field text) RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := apikeys._transaction_setting(name, 16384);
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
CREATE FUNCTION apikeys._actor() RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := coalesce(apikeys._context_actor(),
                       apikeys._transaction_setting('apikeys.actor', 16384),
                       apikeys._json_setting('request.jwt.claims', 'sub'));
BEGIN
    IF length(v) OPERATOR(pg_catalog.>) 200 THEN
        RAISE WARNING 'apikeys_setting_ignored: the actor is longer than 200 characters';
        RETURN NULL;
    END IF;
    RETURN v;
END;
$$;
CREATE FUNCTION apikeys._request_id() RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := coalesce(apikeys._context_request_id(),
                       apikeys._transaction_setting('apikeys.request_id', 16384),
                       apikeys._json_setting('request.headers', 'x-request-id'));
BEGIN
    IF length(v) OPERATOR(pg_catalog.>) 200 THEN
        RAISE WARNING 'apikeys_setting_ignored: the request id is longer than 200 characters';
        RETURN NULL;
    END IF;
    RETURN v;
END;
$$;

-- What row_hash must be: SHA-256 of every other column, length-prefixed
-- (src/audit_chain.c; the encoding is in docs/audit.md).
CREATE FUNCTION apikeys._audit_hash(a apikeys.audit) RETURNS bytea
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_audit_hash';

-- BEFORE INSERT: number the row in its chain, link it to the chain's head and
-- hash it, under the chain's lock (src/audit_chain.c).  ALWAYS: also under
-- session_replication_role = replica.
CREATE FUNCTION apikeys._audit_chain() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'apikeys_audit_chain_trigger';
CREATE TRIGGER audit_chain BEFORE INSERT ON apikeys.audit
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_chain();
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_chain;

CREATE FUNCTION apikeys._audit_purging() RETURNS boolean
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_audit_purging';

-- SECURITY DEFINER: it must reach _audit_purging() whoever owns the table.
CREATE FUNCTION apikeys._audit_append_only() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' AND apikeys._audit_purging() THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = format('audit_append_only: %s on apikeys.audit is not allowed', TG_OP),
        HINT = 'Old rows leave only through apikeys.audit_purge().';
END;
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON apikeys.audit
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON apikeys.audit
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._audit_append_only();
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_no_truncate;

CREATE FUNCTION apikeys._audit_write(p_action text, p_tenant text, p_key_id uuid, p_detail jsonb)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- chain, audit_id, at, prev_hash and row_hash come from the chain trigger
    INSERT INTO apikeys.audit (tenant, key_id, action, db_role, session_role, actor,
                               request_id, client_addr, application_name, txid, detail)
    VALUES (p_tenant, p_key_id, p_action, apikeys._acting_role(), session_user, apikeys._actor(),
            apikeys._request_id(), inet_client_addr(), current_setting('application_name'),
            pg_current_xact_id(), p_detail);
END;
$$;

-- AFTER row trigger on tenant, credential, secret, role_tenant, vault_secret and vault_service.
CREATE FUNCTION apikeys._audit_row_change() RETURNS trigger
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
CREATE TRIGGER audit_tenant AFTER INSERT OR UPDATE OR DELETE ON apikeys.tenant
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
CREATE TRIGGER audit_credential AFTER INSERT OR UPDATE OR DELETE ON apikeys.credential
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
CREATE TRIGGER audit_secret AFTER INSERT OR UPDATE OR DELETE ON apikeys.secret
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
CREATE TRIGGER audit_role_tenant AFTER INSERT OR UPDATE OR DELETE ON apikeys.role_tenant
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
-- ALWAYS: a superuser's change under session_replication_role = replica is
-- audited too (restored and replicated rows pass: apikeys._bulk_loading()).
ALTER TABLE apikeys.tenant ENABLE ALWAYS TRIGGER audit_tenant;
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER audit_credential;
ALTER TABLE apikeys.secret ENABLE ALWAYS TRIGGER audit_secret;
ALTER TABLE apikeys.role_tenant ENABLE ALWAYS TRIGGER audit_role_tenant;

-- TRUNCATE fires no row triggers: it would change keys without an audit row.
CREATE FUNCTION apikeys._refuse_truncate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = format('truncate_not_allowed: TRUNCATE on apikeys.%s is not audited', TG_TABLE_NAME),
        HINT = 'Delete through the apikeys functions (apikey_delete, tenant_delete, ...), which the audit records.';
END;
$$;
CREATE TRIGGER tenant_no_truncate BEFORE TRUNCATE ON apikeys.tenant
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();
CREATE TRIGGER credential_no_truncate BEFORE TRUNCATE ON apikeys.credential
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();
CREATE TRIGGER secret_no_truncate BEFORE TRUNCATE ON apikeys.secret
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();
CREATE TRIGGER role_tenant_no_truncate BEFORE TRUNCATE ON apikeys.role_tenant
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();

-- The audit history a tenant-scoped reader sees of tenant t: from its latest
-- tenant_created row on.  A tenant id can be deleted and created again;
-- the new tenant's roles must not read the old one's history.
CREATE FUNCTION apikeys._audit_since(t text) RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(max(a.audit_id), 0) FROM apikeys.audit a
     WHERE a.chain OPERATOR(pg_catalog.=) t AND a.action OPERATOR(pg_catalog.=) 'tenant_created'
$$;

-- One tenant's chain since the tenant's creation, newest first, before
-- before_id, of one key if key_id is given, at most max_rows (NULL: all): a
-- backward scan of the chain's primary key.
CREATE FUNCTION apikeys._audit_of(t text, before_id bigint, max_rows integer, key_id uuid)
    RETURNS SETOF apikeys.audit
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM apikeys.audit a
     WHERE a.chain OPERATOR(pg_catalog.=) t
       AND a.audit_id OPERATOR(pg_catalog.>=) apikeys._audit_since(t)
       AND a.audit_id OPERATOR(pg_catalog.<) coalesce(before_id, 9223372036854775807)
       AND (_audit_of.key_id IS NULL OR a.key_id OPERATOR(pg_catalog.=) _audit_of.key_id)
     ORDER BY a.audit_id DESC LIMIT max_rows
$$;

-- The chains the caller may audit: every chain for superusers and global
-- auditors, else its tenants'.
CREATE FUNCTION apikeys._audit_chains() RETURNS SETOF text
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text[] := apikeys._visible_tenants('audit');
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

-- Rows of apikeys.audit_log: the audit rows of the tenants the caller may
-- audit, each tenant's since its creation (apikeys.tenants explains why a
-- reader function).
CREATE FUNCTION apikeys_internal._read_audit() RETURNS SETOF apikeys.audit
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 1000
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys._visible_tenants('audit');
BEGIN
    IF v IS NULL THEN
        RETURN QUERY SELECT * FROM apikeys.audit a;
    ELSE
        RETURN QUERY SELECT a.* FROM unnest(v) t(tenant)
                       CROSS JOIN LATERAL apikeys._audit_of(t.tenant, NULL, NULL, NULL) a;
    END IF;
END;
$$;
SELECT apikeys_internal.publish('_read_audit', 'Rows of apikeys.audit_log: the audit rows of the tenants the caller may audit.');
CREATE VIEW apikeys.audit_log WITH (security_invoker = true) AS
SELECT * FROM apikeys._read_audit();
COMMENT ON VIEW apikeys.audit_log IS 'The audit rows the caller may read: its tenants'' since their creation (every row for superusers and global auditors).';

-- One page of a chain, newest first: the rows before before_id (NULL: from
-- the newest), at most max_rows, of one key if key_id is given.  tenant ''
-- is the chain of rows of no tenant; a chain the caller may not audit has
-- no rows for it.
CREATE FUNCTION apikeys_internal.audit_log_page(tenant text, before_id bigint DEFAULT NULL,
                                                max_rows integer DEFAULT 100, key_id uuid DEFAULT NULL)
    RETURNS SETOF apikeys.audit
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys._visible_tenants('audit');
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
        RETURN QUERY SELECT * FROM apikeys._audit_of(tenant, before_id, max_rows, audit_log_page.key_id);
    END IF;
END;
$$;
SELECT apikeys_internal.publish('audit_log_page', 'A page of one tenant''s audit chain, newest first, before before_id (keyset pagination).');

-- Walk every chain the caller may audit: ids consecutive, each prev_hash the
-- previous row's row_hash, each row_hash recomputed from the row.  A chain's
-- first row links to 32 zero bytes, or, after a purge, to the hash that the
-- chain's latest audit_purged row recorded.  The first broken link found
-- (chains in name order) is reported.
CREATE FUNCTION apikeys_internal.audit_check(
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
    scoped boolean := apikeys._visible_tenants('audit') IS NOT NULL;
    since bigint;
BEGIN
    ok := true;
    rows_checked := 0;
    FOR c IN SELECT x FROM apikeys._audit_chains() x LOOP
        next_id := 1;
        next_prev := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
        -- after a purge: start from the anchor, which must hold the whole
        -- newest purged row, hashing to what it says, at least a day older
        -- than the anchor itself (a forged anchor cannot name seconds-old rows)
        SELECT * INTO anchor FROM apikeys.audit p
         WHERE p.chain OPERATOR(pg_catalog.=) c AND p.action OPERATOR(pg_catalog.=) 'audit_purged'
         ORDER BY p.audit_id DESC LIMIT 1;
        IF anchor.audit_id IS NOT NULL THEN
            BEGIN
                purged := jsonb_populate_record(NULL::apikeys.audit, anchor.detail OPERATOR(pg_catalog.->) 'last_purged_row');
            EXCEPTION WHEN others THEN
                purged := NULL;
            END;
            next_id := (anchor.detail OPERATOR(pg_catalog.->>) 'last_purged_id')::bigint OPERATOR(pg_catalog.+) 1;
            next_prev := decode(anchor.detail OPERATOR(pg_catalog.->>) 'last_purged_hash', 'hex');
            IF purged.audit_id IS NULL OR purged.chain IS DISTINCT FROM c
               OR purged.audit_id OPERATOR(pg_catalog.<>) (next_id OPERATOR(pg_catalog.-) 1)
               OR purged.row_hash IS DISTINCT FROM next_prev
               OR apikeys._audit_hash(purged) IS DISTINCT FROM next_prev
               OR NOT (purged.at OPERATOR(pg_catalog.<) (anchor.detail OPERATOR(pg_catalog.->>) 'cutoff')::timestamptz)
               OR NOT ((anchor.detail OPERATOR(pg_catalog.->>) 'cutoff')::timestamptz
                       OPERATOR(pg_catalog.<=) (anchor.at OPERATOR(pg_catalog.-) interval '1 day')) THEN
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
            since := apikeys._audit_since(c);
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
            ELSIF a.row_hash OPERATOR(pg_catalog.<>) apikeys._audit_hash(a) THEN
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
SELECT apikeys_internal.publish('audit_check', 'Verify the audit hash chains the caller may audit; reports the first broken row.');

-- audit_check() that raises: for pg_cron jobs and monitoring, which treat an
-- error as a failure.
CREATE FUNCTION apikeys_internal.audit_verify() RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM apikeys.audit_check();
    IF NOT r.ok THEN
        RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
            MESSAGE = format('audit_chain_broken: chain "%s" row %s: %s', r.first_bad_chain, r.first_bad_id, r.problem),
            DETAIL = format('%s rows checked before the break.', r.rows_checked OPERATOR(pg_catalog.-) 1),
            HINT = 'Compare with the heads stored outside the database (apikeys.audit_head()) and the server log.';
    END IF;
END;
$$;
SELECT apikeys_internal.publish('audit_verify', 'audit_check() that raises audit_chain_broken (XX001) on the first broken row: for scheduled checks.');

-- The newest row of every chain the caller may audit: store these outside
-- the database to detect a rewritten or truncated chain.
CREATE FUNCTION apikeys_internal.audit_head()
    RETURNS TABLE (chain text, audit_id bigint, row_hash text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT c.x, h.audit_id, encode(h.row_hash, 'hex')
      FROM apikeys._audit_chains() c(x)
      CROSS JOIN LATERAL (SELECT a.audit_id, a.row_hash FROM apikeys.audit a
                           WHERE a.chain OPERATOR(pg_catalog.=) c.x
                           ORDER BY a.audit_id DESC LIMIT 1) h
     ORDER BY 1;
END;
$$;
SELECT apikeys_internal.publish('audit_head', 'Newest row and hash of each audit chain the caller may audit: store them outside the database to detect a rewritten chain.');

-- Called by apikeys.audit_purge() (C) with the purge flag set, with the
-- cutoff already checked: for each chain with rows older than the cutoff,
-- append an audit_purged row naming the newest of them, then delete them.
-- The audit_purged row is written first, so it links to the chain's head
-- and the chain stays checkable from its new first row even when every
-- older row goes.
CREATE FUNCTION apikeys._audit_purge_rows(cutoff timestamptz, older_than interval) RETURNS bigint
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
    IF NOT apikeys._audit_purging() THEN
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
    FOR c IN SELECT x FROM apikeys._audit_chains() x LOOP
        SELECT * INTO cut FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.at OPERATOR(pg_catalog.<) cutoff
         ORDER BY a.audit_id DESC LIMIT 1;
        CONTINUE WHEN cut.audit_id IS NULL;
        SELECT count(*) INTO n FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.audit_id OPERATOR(pg_catalog.<=) cut.audit_id;
        -- the anchor carries the whole newest purged row, so a check can prove
        -- that what it names really was hashed, and at least a day old
        PERFORM apikeys._audit_write('audit_purged', nullif(c, ''), NULL, jsonb_build_object(
            'rows', n, 'older_than', older_than, 'cutoff', cutoff, 'last_purged_id', cut.audit_id,
            'last_purged_hash', encode(cut.row_hash, 'hex'), 'last_purged_row', to_jsonb(cut)));
        DELETE FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.audit_id OPERATOR(pg_catalog.<=) cut.audit_id;
        total := total OPERATOR(pg_catalog.+) n;
    END LOOP;
    RETURN total;
END;
$$;

CREATE FUNCTION apikeys_internal.audit_purge(older_than interval DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikeys_audit_purge';
SELECT apikeys_internal.publish('audit_purge', 'Delete audit rows older than older_than (default: apikeys.audit_retention), keeping the chain checkable.');
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
    AS 'MODULE_PATHNAME', 'apikey_create';
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
    AS 'MODULE_PATHNAME', 'apikey_create_many';
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
COMMENT ON FUNCTION apikeys.apikey_verify IS 'Check a presented key; returns a verdict, never raises for a bad key.';

------------------------------------------------------------------------------
-- Key lifecycle (PL/pgSQL)
------------------------------------------------------------------------------

-- Lock the key and return its row, if the acting role may manage its tenant.
-- An unknown key and another tenant's key take the same path to the same
-- error (message, context and all), so neither tells the other apart.
CREATE FUNCTION apikeys._lock_key(p_key_id uuid, p_action text) RETURNS apikeys.credential
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
    IF FOUND AND apikeys._may_manage(k.tenant) THEN
        -- FOR UPDATE only now: a foreign key is never locked (nor waited for)
        SELECT * INTO k FROM apikeys.credential c
         WHERE c.key_id OPERATOR(pg_catalog.=) p_key_id FOR UPDATE;
    ELSE
        k := NULL;
    END IF;
    IF k.key_id IS NULL THEN   -- unknown, foreign, or deleted while we waited
        PERFORM apikeys._deny(p_action, owner_tenant, p_key_id, '42704',
            format('key_not_found: no API key with id %s', p_key_id));
    END IF;
    RETURN k;
END;
$$;

CREATE FUNCTION apikeys._require_not_revoked(k apikeys.credential, p_action text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF k.status OPERATOR(pg_catalog.=) 'revoked' THEN
        PERFORM apikeys._deny(p_action, k.tenant, k.key_id, '55000',
            format('key_revoked: API key %s is revoked', k.key_id),
            'Revocation is permanent; create a new key.');
    END IF;
END;
$$;

CREATE FUNCTION apikeys._require_active_tenant(p_tenant text, p_action text, p_key_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM apikeys.tenant t
     WHERE t.tenant OPERATOR(pg_catalog.=) p_tenant AND t.active;
    IF NOT FOUND THEN
        PERFORM apikeys._deny(p_action, p_tenant, p_key_id, '55000',
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
    k apikeys.credential := apikeys._lock_key(key_id, 'key_revoke');
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
    k apikeys.credential := apikeys._lock_key(key_id, 'key_disable');
BEGIN
    PERFORM apikeys._require_not_revoked(k, 'key_disable');
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
    k apikeys.credential := apikeys._lock_key(key_id, 'key_enable');
BEGIN
    PERFORM apikeys._require_not_revoked(k, 'key_enable');
    PERFORM apikeys._require_active_tenant(k.tenant, 'key_enable', k.key_id);
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
    k apikeys.credential := apikeys._lock_key(key_id, 'key_update');
BEGIN
    PERFORM apikeys._require_not_revoked(k, 'key_update');
    PERFORM apikeys._require_active_tenant(k.tenant, 'key_update', k.key_id);
    -- NULL leaves a field unchanged; expires_at => 'infinity' removes the expiry.
    UPDATE apikeys.credential c SET
        name        = coalesce(apikeys._check_name(apikey_update.name), c.name),
        description = coalesce(apikeys._check_description(apikey_update.description), c.description),
        scopes      = coalesce(apikeys._normalize_scopes(apikey_update.scopes), c.scopes),
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
SELECT apikeys_internal.publish('apikey_update', 'Change name, description, scopes, expiry or metadata of a key; NULL leaves a field as it is.');

CREATE FUNCTION apikeys_internal.apikey_delete(key_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys._lock_key(key_id, 'key_delete');
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
    PERFORM apikeys._authorize(NULL, 'tenant_create');
    IF display_name IS NOT NULL AND char_length(display_name) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_display_name: display_name must be 1 to 200 characters';
    END IF;
    INSERT INTO apikeys.tenant (tenant, display_name)
    VALUES (apikeys._tenant_arg(tenant), coalesce(display_name, tenant))
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
    PERFORM apikeys._authorize(NULL, 'tenant_update');
    PERFORM apikeys._tenant_arg(tenant);   -- before any message echoes it
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
    PERFORM apikeys._authorize(NULL, 'tenant_delete');
    PERFORM apikeys._tenant_arg(tenant);   -- before any message echoes it
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
CREATE FUNCTION apikeys_internal._read_keys()
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
    v text[] := apikeys._visible_tenants('read');
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
SELECT apikeys_internal.publish('_read_keys', 'Rows of apikeys.keys: the keys of the tenants the caller may read.');
CREATE VIEW apikeys.keys WITH (security_invoker = true) AS
SELECT * FROM apikeys._read_keys();
COMMENT ON VIEW apikeys.keys IS 'One row per API key with its current hint; no secret or digest.';
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
-- apikeys._visible_tenants() runs once per query (an InitPlan); NULL means
-- every tenant, hence the coalesce.
CREATE POLICY role_tenant_read ON apikeys.role_tenant FOR SELECT
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro
                    WHERE ro.rolname OPERATOR(pg_catalog.=) role_tenant.role_name
                      AND pg_catalog.pg_has_role(current_user, ro.oid, 'USAGE'))
           OR (SELECT apikeys._visible_tenants('read')) IS NULL);
CREATE POLICY tenant_read ON apikeys.tenant FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys._visible_tenants('read')), ARRAY[tenant])));
CREATE POLICY credential_read ON apikeys.credential FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys._visible_tenants('read')), ARRAY[tenant])));
CREATE POLICY secret_read ON apikeys.secret FOR SELECT
    USING (EXISTS (SELECT 1 FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) secret.key_id));
-- the audit only through a mapping, never through a key-bound transaction
CREATE POLICY audit_read ON apikeys.audit FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys._visible_tenants('audit')), ARRAY[tenant])));

------------------------------------------------------------------------------
-- Tenant-facing readers: each reads the caller's visible tenants' rows only
-- (through the tenant indexes), inside a function, so neither EXPLAIN nor
-- the planner's estimates show anything of the others.  Custom plans: the
-- visible tenants are known when each query is planned.
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal._read_tenants() RETURNS SETOF apikeys.tenant
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 10
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys._visible_tenants('read');
BEGIN
    RETURN QUERY SELECT * FROM apikeys.tenant t
                  WHERE v IS NULL OR t.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;
SELECT apikeys_internal.publish('_read_tenants', 'Rows of apikeys.tenants: the tenants the caller may read.');
CREATE VIEW apikeys.tenants WITH (security_invoker = true) AS
SELECT * FROM apikeys._read_tenants();
COMMENT ON VIEW apikeys.tenants IS 'The tenants the caller may read (all of them for superusers and global roles).';

CREATE FUNCTION apikeys_internal._read_grants() RETURNS SETOF apikeys.role_tenant
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name := apikeys._acting_role();
    all_ boolean := apikeys._visible_tenants('read') IS NULL;
BEGIN
    RETURN QUERY SELECT g.* FROM apikeys.role_tenant g
                  WHERE all_ OR EXISTS (
                        SELECT 1 FROM pg_catalog.pg_roles ro
                         WHERE ro.rolname OPERATOR(pg_catalog.=) g.role_name
                           AND pg_catalog.pg_has_role(r, ro.oid, 'USAGE'));
END;
$$;
SELECT apikeys_internal.publish('_read_grants', 'Rows of apikeys.tenant_grants: the caller''s own tenant mappings (every mapping for superusers and global roles).');
CREATE VIEW apikeys.tenant_grants WITH (security_invoker = true) AS
SELECT * FROM apikeys._read_grants();
COMMENT ON VIEW apikeys.tenant_grants IS 'Which tenants the caller (and the roles it belongs to) manage or audit.';

------------------------------------------------------------------------------
-- Privilege recipes (superuser only)
------------------------------------------------------------------------------

-- The role a grant recipe names: an existing role, never NULL or PUBLIC
-- (GRANT ... TO public would hand the privilege to every role).
CREATE FUNCTION apikeys._check_role(role_name name) RETURNS name
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
CREATE FUNCTION apikeys._check_privilege(privilege text) RETURNS text
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
    PERFORM apikeys._check_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.apikey_verify(text, text[], inet),'
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
END;
$$;
SELECT apikeys_internal.publish('grant_tenant', 'Let a role manage (or only audit) one tenant, or every tenant with tenant => NULL.');

CREATE FUNCTION apikeys_internal.revoke_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys._check_privilege(privilege), apikeys._check_tenant_id(tenant);
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
------------------------------------------------------------------------------
-- Third-party secret vault: other services' keys (OpenAI, Anthropic, Hugging
-- Face, ...), encrypted with pgcrypto under a master key that lives only in
-- the superuser-only setting apikeys.vault_master_key (src/guc.c): never in
-- a table, the audit or an error message.  One active secret per service
-- per owner (tenant, or a role within it); plaintext only for the owner.
------------------------------------------------------------------------------

-- Registry of services and the format their keys must have.  Built-in rows
-- come from this script; rows an admin adds (builtin = false) are dumped.
CREATE TABLE apikeys.vault_service (
    service      text COLLATE "C" PRIMARY KEY CHECK (service ~ '^[a-z][a-z0-9_-]{1,62}$'),
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    -- an anchored POSIX regular expression the secret must match; NULL for an alias
    format       text CHECK (char_length(format) BETWEEN 2 AND 1000 AND format ~ '^\^.*\$$'),
    -- no foreign key (a self-reference makes pg_dump warn about cycles):
    -- vault_service_register/unregister keep aliases pointing at services
    alias_of     text COLLATE "C",
    builtin      boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((format IS NULL) = (alias_of IS NOT NULL))
);
COMMENT ON TABLE apikeys.vault_service IS 'Services whose keys the vault stores, with the format (anchored regex) a key must match; an alias stores under its target.';

INSERT INTO apikeys.vault_service (service, display_name, format, alias_of, builtin) VALUES
    ('openai',      'OpenAI',        '^sk-(?!ant-)[A-Za-z0-9_-]{20,}$', NULL, true),
    ('anthropic',   'Anthropic',     '^sk-ant-[A-Za-z0-9_-]{20,}$',     NULL, true),
    ('claude',      'Anthropic (Claude)', NULL,                         'anthropic', true),
    ('huggingface', 'Hugging Face',  '^hf_[A-Za-z0-9]{30,}$',           NULL, true),
    ('gemini',      'Google Gemini', '^[A-Za-z0-9_.-]{16,}$',           NULL, true),
    ('generic',     'Generic secret', '^[!-~]{16,}$',                   NULL, true);
-- Every secret is also at most 4096 bytes (vault_add).  Regex repetition
-- counts stop at 255, hence the open upper bounds.

CREATE TABLE apikeys.vault_secret (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant       text COLLATE "C" NOT NULL REFERENCES apikeys.tenant (tenant) ON DELETE CASCADE,
    owner_user   text COLLATE "C" CHECK (char_length(owner_user) BETWEEN 1 AND 63),  -- NULL: the tenant
    service      text COLLATE "C" NOT NULL REFERENCES apikeys.vault_service (service),
    name         text NOT NULL CHECK (char_length(name) BETWEEN 3 AND 100),
    ciphertext   bytea NOT NULL,     -- pgp_sym_encrypt(secret, id || ':' || master key), AES-256
    key_fp       text NOT NULL CHECK (key_fp ~ '^[0-9a-f]{16}$'),  -- fingerprint of that master key
    active       boolean NOT NULL DEFAULT true,
    last_used_at timestamptz,        -- last vault_reveal
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX vault_secret_one_active
    ON apikeys.vault_secret (tenant, (coalesce(owner_user, '')), service) WHERE active;
CREATE INDEX vault_secret_tenant_idx ON apikeys.vault_secret (tenant, service, created_at);
COMMENT ON TABLE apikeys.vault_secret IS 'Third-party secrets, encrypted under the vault master key; at most one active per (tenant, owner_user, service). Never readable by tenants.';

SELECT pg_catalog.pg_extension_config_dump('apikeys.vault_service', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('apikeys.vault_secret', '');

CREATE TRIGGER audit_vault_service AFTER INSERT OR UPDATE OR DELETE ON apikeys.vault_service
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
CREATE TRIGGER audit_vault_secret AFTER INSERT OR UPDATE OR DELETE ON apikeys.vault_secret
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
ALTER TABLE apikeys.vault_service ENABLE ALWAYS TRIGGER audit_vault_service;
ALTER TABLE apikeys.vault_secret ENABLE ALWAYS TRIGGER audit_vault_secret;
CREATE TRIGGER vault_service_no_truncate BEFORE TRUNCATE ON apikeys.vault_service
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();
CREATE TRIGGER vault_secret_no_truncate BEFORE TRUNCATE ON apikeys.vault_secret
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();

-- Metadata only: no ciphertext, no key fingerprint; the visible tenants'
-- secrets only, read inside a function (see apikeys.tenants for why).
CREATE FUNCTION apikeys_internal._read_vault_secrets()
    RETURNS TABLE (id uuid, tenant text, owner_user text, service text, name text, active boolean,
                   last_used_at timestamptz, created_at timestamptz, updated_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys._visible_tenants('read');
BEGIN
    RETURN QUERY
    SELECT s.id, s.tenant, s.owner_user, s.service, s.name, s.active, s.last_used_at, s.created_at, s.updated_at
      FROM apikeys.vault_secret s
     WHERE v IS NULL OR s.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;
SELECT apikeys_internal.publish('_read_vault_secrets', 'Rows of apikeys.vault_secrets: metadata of the vault secrets of the tenants the caller may read.');
CREATE VIEW apikeys.vault_secrets WITH (security_invoker = true) AS
SELECT * FROM apikeys._read_vault_secrets();
COMMENT ON VIEW apikeys.vault_secrets IS 'Vault secrets'' metadata (no ciphertext) of the tenants the caller may read.';

ALTER TABLE apikeys.vault_service ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.vault_secret ENABLE ROW LEVEL SECURITY;
CREATE POLICY vault_service_read ON apikeys.vault_service FOR SELECT USING (true);
CREATE POLICY vault_secret_read ON apikeys.vault_secret FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys._visible_tenants('read')), ARRAY[tenant])));

------------------------------------------------------------------------------
-- Internals.  The master keys never reach SQL: src/vault_crypto.c reads them
-- (settings or key file), computes their fingerprints and calls pgcrypto
-- through the function manager, so no statement the executor runs, and so
-- no plan auto_explain could log, ever holds a master key.  A plaintext is
-- held only in plpgsql variables used in simple expressions (assignments,
-- IF, RETURN), which never reach the executor either; and every function
-- that holds one also runs with plan_cache_mode = force_generic_plan, so a
-- statement that used one would show a $n parameter, never the value, in
-- its plan.  The C functions refuse to run unless the current user is a
-- superuser: they work only inside the SECURITY DEFINER entry points below.
------------------------------------------------------------------------------

-- A short, non-reversible fingerprint of a master key (which key encrypted a
-- row); the same as the C code computes.  Neither the extension nor its
-- functions call it (the key would be an argument): it is for superusers who
-- want to know which key a row is under, and for the tests.
CREATE FUNCTION apikeys._vault_fingerprint(master_key text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT encode(substr(sha256('\x6170696b6579732e7661756c743a'::bytea   -- 'apikeys.vault:'
                                OPERATOR(pg_catalog.||) textsend(master_key)), 1, 8), 'hex')
$$;

-- Fingerprints of the configured keys (prev_fp NULL outside a rotation);
-- vault_master_key_missing / vault_master_key_invalid without a usable key.
CREATE FUNCTION apikeys._vault_key_state(OUT cur_fp text, OUT prev_fp text) RETURNS record
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_vault_key_state';

-- Encrypt a secret (pgp_sym_encrypt, AES-256, no compression; passphrase
-- id || ':' || master key) under the current master key.
CREATE FUNCTION apikeys._vault_seal(id uuid, plaintext text, OUT ciphertext bytea, OUT key_fp text) RETURNS record
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_vault_seal';

-- Decrypt a row with whichever configured key encrypted it.  problem:
-- NULL, 'master_key_mismatch' (neither configured key encrypted it) or
-- 'decrypt_failed'; stale: decrypted with the previous master key.
CREATE FUNCTION apikeys._vault_open(id uuid, ciphertext bytea, key_fp text,
                                    OUT plaintext text, OUT problem text, OUT stale boolean) RETURNS record
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_vault_open';

-- A row re-encrypted under the current master key (as it is if it already
-- is; NULLs if the previous key does not open it).  For the rotation: the
-- plaintext never leaves C.
CREATE FUNCTION apikeys._vault_rewrap(id uuid, ciphertext bytea, key_fp text,
                                      OUT ciphertext bytea, OUT key_fp text) RETURNS record
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_vault_rewrap';

-- Serialize changes to one owner's secrets of one service (owner NULL: the
-- tenant) until the end of the transaction.  The lock's tag is one no SQL
-- function can take (not pg_advisory_*), so no role can hold it to block
-- another tenant's vault_add.
CREATE FUNCTION apikeys._vault_lock_slot(tenant text, owner text, service text) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_vault_lock_slot';

-- A service by name (aliases resolved).  Never echoes the caller's input:
-- a secret passed in the wrong argument must not reach an error message.
CREATE FUNCTION apikeys._vault_service(p_service text) RETURNS apikeys.vault_service
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_service;
BEGIN
    SELECT * INTO s FROM apikeys.vault_service v WHERE v.service OPERATOR(pg_catalog.=) lower(p_service);
    IF FOUND AND s.alias_of IS NOT NULL THEN
        SELECT * INTO s FROM apikeys.vault_service v WHERE v.service OPERATOR(pg_catalog.=) s.alias_of;
    END IF;
    IF s.service IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = 'vault_service_not_found: no such vault service',
            HINT = 'apikeys.vault_service lists the services; an admin adds one with apikeys.vault_service_register().';
    END IF;
    RETURN s;
END;
$$;

CREATE FUNCTION apikeys._vault_check_name(p_name text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_name IS NULL OR char_length(p_name) NOT BETWEEN 3 AND 100 OR p_name ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_name: name must be 3 to 100 characters without control characters';
    END IF;
    RETURN p_name;
END;
$$;

-- May the acting role do `need` ('read' or 'manage') on a tenant?  'manage'
-- is apikeys._may_manage(); 'read' is what the readers show (a mapping of
-- either privilege, or the bound tenant).  Answers; never raises.
CREATE FUNCTION apikeys._vault_may(p_tenant text, p_need text)
    RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text[];
BEGIN
    IF p_need OPERATOR(pg_catalog.=) 'manage' THEN
        RETURN apikeys._may_manage(p_tenant);
    END IF;
    v := apikeys._visible_tenants('read');
    RETURN v IS NULL OR p_tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;

-- Refuse a tenant-scoped call the session's role may not make
-- (permission_denied; the tenant is not echoed: it could be a misplaced
-- secret).  For one secret, use apikeys._vault_find instead.
CREATE FUNCTION apikeys._vault_authorize(p_tenant text, p_action text, p_need text)
    RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name := apikeys._acting_role();
BEGIN
    IF NOT apikeys._vault_may(p_tenant, p_need) THEN
        PERFORM apikeys._deny(p_action, NULL, NULL, '42501',
            format('permission_denied: role "%s" may not %s this tenant', r, p_need),
            'A superuser can allow it with apikeys.grant_tenant(role, tenant).');
    END IF;
END;
$$;

-- Find a secret the session's role may `need`, return it (locked FOR
-- UPDATE when p_lock).  A secret that does not exist, one of a tenant the
-- role may not act for, and one deleted while we waited for its lock all
-- end at the one raise point below, so their errors are identical to the
-- byte, CONTEXT included: other tenants' secrets stay unseen.
CREATE FUNCTION apikeys._vault_find(p_id uuid, p_action text, p_need text, p_lock boolean)
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
    visible := FOUND AND apikeys._vault_may(s.tenant, p_need);
    IF visible AND p_lock THEN
        -- locked only once authorized: a foreign row is never waited for
        SELECT * INTO s FROM apikeys.vault_secret v WHERE v.id OPERATOR(pg_catalog.=) p_id FOR UPDATE;
        visible := FOUND;
    END IF;
    IF NOT visible THEN
        PERFORM apikeys._deny(p_action, s.tenant, p_id, '42704',
            format('vault_secret_not_found: no vault secret with id %s', p_id));
    END IF;
    RETURN s;
END;
$$;

------------------------------------------------------------------------------
-- Secrets
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal.vault_add(
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
    r name := apikeys._acting_role();
    su boolean;
    svc apikeys.vault_service;
    sealed record;
    new_id uuid := gen_random_uuid();
    visible boolean;
BEGIN
    su := apikeys._is_superuser(r);
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
        visible := apikeys._may_manage(tenant);
    END IF;
    IF NOT visible THEN
        PERFORM apikeys._deny('vault_add', NULL, NULL, '42501',
            format('permission_denied: role "%s" may not manage this tenant', r));
    END IF;
    PERFORM apikeys._require_active_tenant(tenant, 'vault_add', NULL);
    PERFORM apikeys._vault_check_name(name);
    IF owner_user IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro WHERE ro.rolname OPERATOR(pg_catalog.=) owner_user) THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = 'role_not_found: owner_user must name an existing role';
        END IF;
        IF NOT su AND owner_user OPERATOR(pg_catalog.<>) r::text THEN
            PERFORM apikeys._deny('vault_add', tenant, NULL, '42501',
                format('vault_not_owner: role "%s" may add only secrets it owns itself', r),
                'Pass owner_user => NULL (the tenant) or your own role name.');
        END IF;
    END IF;
    svc := apikeys._vault_service(service);
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
    sealed := apikeys._vault_seal(new_id, secret);

    -- one active secret per owner and service: the new one replaces it
    PERFORM apikeys._vault_lock_slot(tenant, owner_user, svc.service);
    UPDATE apikeys.vault_secret v SET active = false, updated_at = now()
     WHERE v.tenant OPERATOR(pg_catalog.=) vault_add.tenant
       AND v.owner_user IS NOT DISTINCT FROM vault_add.owner_user
       AND v.service OPERATOR(pg_catalog.=) svc.service AND v.active;
    INSERT INTO apikeys.vault_secret (id, tenant, owner_user, service, name, ciphertext, key_fp)
    VALUES (new_id, tenant, owner_user, svc.service, name, sealed.ciphertext, sealed.key_fp);
    RETURN new_id;
END;
$$;
SELECT apikeys_internal.publish('vault_add', 'Store a third-party secret for a tenant (or a role in it); it replaces the owner''s active secret for that service. Returns its id.');

CREATE FUNCTION apikeys_internal.vault_list(tenant text DEFAULT NULL)
    RETURNS SETOF apikeys.vault_secrets
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tenant IS NOT NULL THEN
        PERFORM apikeys._vault_authorize(tenant, 'vault_list', 'read');
    END IF;
    RETURN QUERY
    SELECT v.* FROM apikeys._read_vault_secrets() v
     WHERE vault_list.tenant IS NULL OR v.tenant OPERATOR(pg_catalog.=) vault_list.tenant
     ORDER BY v.tenant, v.service, v.owner_user NULLS FIRST, v.active DESC, v.created_at, v.id;
END;
$$;
SELECT apikeys_internal.publish('vault_list', 'Metadata of the vault secrets of a tenant (NULL: every tenant the role may read); never a secret.');

CREATE FUNCTION apikeys_internal.vault_get(id uuid)
    RETURNS apikeys.vault_secrets
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret := apikeys._vault_find(id, 'vault_get', 'read', false);
    m apikeys.vault_secrets;
BEGIN
    SELECT s.id, s.tenant, s.owner_user, s.service, s.name, s.active, s.last_used_at, s.created_at, s.updated_at
      INTO m;
    RETURN m;
END;
$$;
SELECT apikeys_internal.publish('vault_get', 'Metadata of one vault secret; never the secret.');

CREATE FUNCTION apikeys_internal.vault_update(id uuid, name text DEFAULT NULL, active boolean DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret := apikeys._vault_find(vault_update.id, 'vault_update', 'manage', true);
BEGIN
    IF name IS NOT NULL THEN
        PERFORM apikeys._vault_check_name(name);
    END IF;
    IF name IS NULL AND active IS NULL THEN
        RETURN;
    END IF;
    IF active AND NOT s.active THEN
        -- reactivating replaces the owner's active secret for that service
        PERFORM apikeys._require_active_tenant(s.tenant, 'vault_update', s.id);
        PERFORM apikeys._vault_lock_slot(s.tenant, s.owner_user, s.service);
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
SELECT apikeys_internal.publish('vault_update', 'Rename a vault secret or (de)activate it; activating replaces the active one. NULL leaves a field as it is.');

CREATE FUNCTION apikeys_internal.vault_delete(id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret := apikeys._vault_find(vault_delete.id, 'vault_delete', 'manage', true);
BEGIN
    DELETE FROM apikeys.vault_secret v WHERE v.id OPERATOR(pg_catalog.=) s.id;
END;
$$;
SELECT apikeys_internal.publish('vault_delete', 'Delete a vault secret for good.');

CREATE FUNCTION apikeys_internal.vault_reveal(id uuid) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- the plaintext never a plan constant
AS $$
DECLARE
    s apikeys.vault_secret := apikeys._vault_find(vault_reveal.id, 'vault_reveal', 'manage', false);
    r name := apikeys._acting_role();
    o record;
    detail jsonb;
BEGIN
    IF s.owner_user IS NOT NULL AND s.owner_user OPERATOR(pg_catalog.<>) r::text THEN
        PERFORM apikeys._deny('vault_reveal', s.tenant, s.id, '42501',
            format('vault_not_owner: vault secret %s belongs to another role', s.id),
            'Only its owner_user may reveal it.');
    END IF;
    PERFORM apikeys._require_active_tenant(s.tenant, 'vault_reveal', s.id);
    o := apikeys._vault_open(s.id, s.ciphertext, s.key_fp);   -- o.plaintext only in simple expressions
    IF o.problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
            MESSAGE = format('vault_decrypt_failed: vault secret %s could not be decrypted', s.id),
            HINT = CASE o.problem WHEN 'master_key_mismatch'
                        THEN 'It was encrypted with another master key; a superuser can run apikeys.vault_check().'
                        ELSE 'The ciphertext is corrupt or the master key is wrong; a superuser can run apikeys.vault_check().' END;
    END IF;
    UPDATE apikeys.vault_secret v SET last_used_at = now() WHERE v.id OPERATOR(pg_catalog.=) s.id;
    detail := jsonb_build_object('service', s.service, 'name', s.name, 'owner_user', s.owner_user, 'active', s.active);
    PERFORM apikeys._audit_write('vault_secret_revealed', s.tenant, s.id, detail);
    -- the server log keeps it even if the transaction rolls back
    RAISE LOG USING MESSAGE = 'apikeys_audit_vault_reveal ' || (detail OPERATOR(pg_catalog.||) jsonb_build_object(
        'at', clock_timestamp(), 'tenant', s.tenant, 'id', s.id,
        'db_role', r, 'session_role', session_user, 'actor', apikeys._actor(),
        'request_id', apikeys._request_id(), 'client_addr', inet_client_addr()))::text;
    RETURN o.plaintext;
END;
$$;
SELECT apikeys_internal.publish('vault_reveal', 'The plaintext of a vault secret, for its owner only; every call is audited (vault_secret_revealed).');

CREATE TYPE apikeys.vault_check_result AS (
    id      uuid,
    tenant  text,
    service text,
    name    text,
    ok      boolean,
    problem text   -- NULL, master_key_mismatch, decrypt_failed, invalid_format or stale_master_key
);

CREATE FUNCTION apikeys._vault_check_one(s apikeys.vault_secret) RETURNS apikeys.vault_check_result
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- the plaintext never a plan constant
AS $$
DECLARE
    fmt text := (SELECT x.format FROM apikeys.vault_service x WHERE x.service OPERATOR(pg_catalog.=) s.service);
    o record := apikeys._vault_open(s.id, s.ciphertext, s.key_fp);
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

CREATE FUNCTION apikeys_internal.vault_check(id uuid DEFAULT NULL)
    RETURNS SETOF apikeys.vault_check_result
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret;
BEGIN
    IF id IS NOT NULL THEN
        s := apikeys._vault_find(id, 'vault_check', 'read', false);
        PERFORM apikeys._vault_key_state();   -- vault_master_key_missing
        RETURN NEXT apikeys._vault_check_one(s);
        RETURN;
    END IF;
    PERFORM apikeys._vault_key_state();
    FOR s IN SELECT v.* FROM apikeys.vault_secret v
              WHERE v.id IN (SELECT l.id FROM apikeys.vault_list() l)
              ORDER BY v.tenant, v.service, v.owner_user NULLS FIRST, v.active DESC, v.created_at, v.id LOOP
        RETURN NEXT apikeys._vault_check_one(s);
    END LOOP;
END;
$$;
SELECT apikeys_internal.publish('vault_check', 'Check that vault secrets decrypt under the current master key and still match their service''s format (one secret, or all the role may read).');

------------------------------------------------------------------------------
-- Master key rotation (superuser only)
------------------------------------------------------------------------------

-- Re-encrypt every secret under the new key, in one transaction: from
-- apikeys.vault_master_key_previous (or the key file's second line) to
-- apikeys.vault_master_key (or its first line).  The keys never travel as
-- arguments: a failed statement is logged with its text
-- (log_min_error_statement), and pg_stat_activity shows it.  Secrets already
-- under the new key are skipped; one that neither key opens aborts it all.
CREATE FUNCTION apikeys_internal.vault_rotate_master_key()
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- no fingerprint or ciphertext as a plan constant
AS $$
DECLARE
    r name := apikeys._acting_role();
    s apikeys.vault_secret;
    k record;
    w record;
    n bigint := 0;
BEGIN
    IF NOT coalesce(apikeys._is_superuser(r), false) THEN
        PERFORM apikeys._deny('vault_rotate_master_key', NULL, NULL, '42501',
            format('permission_denied: role "%s" may not rotate the vault master key', r),
            'Only superusers rotate the vault master key.');
    END IF;
    k := apikeys._vault_key_state();   -- checks the current key itself

    LOCK TABLE apikeys.vault_secret IN EXCLUSIVE MODE;
    FOR s IN SELECT * FROM apikeys.vault_secret v WHERE v.key_fp OPERATOR(pg_catalog.<>) k.cur_fp ORDER BY v.id LOOP
        -- decrypted with the previous key and encrypted with the current one
        -- inside C: the plaintext and both keys stay out of SQL
        w := apikeys._vault_rewrap(s.id, s.ciphertext, s.key_fp);
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
    PERFORM apikeys._audit_write('vault_master_key_rotated', NULL, NULL,
        jsonb_build_object('secrets', n));
    RETURN n;
END;
$$;
SELECT apikeys_internal.publish('vault_rotate_master_key', 'Re-encrypt every vault secret under a new master key in one transaction (superuser only): from vault_master_key_previous to vault_master_key (or the key file''s second line to its first).');

------------------------------------------------------------------------------
-- Service registry (superusers and roles that manage every tenant)
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal.vault_service_register(service text, display_name text, format text DEFAULT NULL,
                                               alias_of text DEFAULT NULL)
    RETURNS apikeys.vault_service
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_service;
    target apikeys.vault_service;
BEGIN
    PERFORM apikeys._authorize(NULL, 'vault_service_register');
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
SELECT apikeys_internal.publish('vault_service_register', 'Add or change a vault service: its key format (anchored regex) or the service it is an alias of. Built-in services cannot change.');

CREATE FUNCTION apikeys_internal.vault_service_unregister(service text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_service;
BEGIN
    PERFORM apikeys._authorize(NULL, 'vault_service_unregister');
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
SELECT apikeys_internal.publish('vault_service_unregister', 'Remove a vault service that has no secrets and no aliases. Built-in services stay.');

------------------------------------------------------------------------------
-- Privilege recipe (superuser only)
------------------------------------------------------------------------------

-- What a role needs to use the vault; which tenants it may act for still
-- comes from apikeys.grant_tenant (role_tenant).  'audit': metadata only.
CREATE FUNCTION apikeys_internal.grant_vault(role_name name, privilege text DEFAULT 'manage') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys._check_privilege(privilege), apikeys._check_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT SELECT ON apikeys.vault_service, apikeys.vault_secrets TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.vault_list(text), apikeys.vault_get(uuid),'
                   ' apikeys.vault_check(uuid), apikeys.current_tenant(), apikeys._read_vault_secrets() TO %I', role_name);
    IF privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.vault_add(text, text, text, text, text),'
                       ' apikeys.vault_update(uuid, text, boolean), apikeys.vault_delete(uuid),'
                       ' apikeys.vault_reveal(uuid),'
                       ' apikeys.vault_service_register(text, text, text, text),'
                       ' apikeys.vault_service_unregister(text) TO %I', role_name);
    END IF;
END;
$$;
SELECT apikeys_internal.publish('grant_vault', 'Let a role use the vault functions (manage) or read vault metadata (audit); tenants still come from grant_tenant.');
------------------------------------------------------------------------------
-- Policies enforced by verify: IP allowlist, rate limit, usage cap
------------------------------------------------------------------------------

-- Statement-level and ALWAYS (fires under session_replication_role =
-- replica too): any committed change to key data retires the shared policy
-- cache (src/changes.c).
CREATE FUNCTION apikeys._changed() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'apikeys_changed';
CREATE TRIGGER policy_cache_tenant AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apikeys.tenant
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._changed();
CREATE TRIGGER policy_cache_credential AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apikeys.credential
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._changed();
CREATE TRIGGER policy_cache_secret AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apikeys.secret
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._changed();
ALTER TABLE apikeys.tenant ENABLE ALWAYS TRIGGER policy_cache_tenant;
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER policy_cache_credential;
ALTER TABLE apikeys.secret ENABLE ALWAYS TRIGGER policy_cache_secret;
-- Logical replication's apply worker fires row triggers only: a revoke that
-- arrives on a subscriber must retire its cache too.
CREATE TRIGGER policy_cache_tenant_row AFTER INSERT OR UPDATE OR DELETE ON apikeys.tenant
    FOR EACH ROW EXECUTE FUNCTION apikeys._changed();
CREATE TRIGGER policy_cache_credential_row AFTER INSERT OR UPDATE OR DELETE ON apikeys.credential
    FOR EACH ROW EXECUTE FUNCTION apikeys._changed();
CREATE TRIGGER policy_cache_secret_row AFTER INSERT OR UPDATE OR DELETE ON apikeys.secret
    FOR EACH ROW EXECUTE FUNCTION apikeys._changed();
ALTER TABLE apikeys.tenant ENABLE ALWAYS TRIGGER policy_cache_tenant_row;
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER policy_cache_credential_row;
ALTER TABLE apikeys.secret ENABLE ALWAYS TRIGGER policy_cache_secret_row;

CREATE FUNCTION apikeys_internal.apikey_set_policy(
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
    k apikeys.credential := apikeys._lock_key(key_id, 'key_set_policy');
BEGIN
    PERFORM apikeys._require_not_revoked(k, 'key_set_policy');
    PERFORM apikeys._require_active_tenant(k.tenant, 'key_set_policy', k.key_id);
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
            OR date_part('year', rate_window) OPERATOR(pg_catalog.<>) 0) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_rate_window: rate_window must be between 1 second and 1 day';
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
            OR date_part('year', usage_period) OPERATOR(pg_catalog.<>) 0) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_usage_period: usage_period must be between 1 second and 366 days (in days, not months) and needs a usage_limit';
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
SELECT apikeys_internal.publish('apikey_set_policy', 'Set (replace) a key''s IP allowlist, rate limit and usage cap; NULL removes one. Limits need apikeys in shared_preload_libraries.');

------------------------------------------------------------------------------
-- Observability
------------------------------------------------------------------------------

CREATE FUNCTION apikeys._verification_totals(OUT outcome text, OUT total bigint)
    RETURNS SETOF record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_verification_totals';
-- one key at a time, and only a key the caller can see in apikeys.credential
-- (its RLS; checked in C, src/stats.c): any other id, another tenant's or
-- none, gives the same row of NULLs
CREATE FUNCTION apikeys._pending_usage(INOUT key_id uuid, OUT last_used_at timestamptz,
                                       OUT used bigint, OUT counts bigint[])
    RETURNS record
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'apikeys_pending_usage';
CREATE FUNCTION apikeys._runtime(
    OUT preloaded boolean, OUT shmem_bytes bigint,
    OUT cache_capacity integer, OUT cache_entries bigint, OUT cache_hits bigint,
    OUT cache_misses bigint, OUT cache_evictions bigint,
    OUT tracked_capacity integer, OUT tracked_keys bigint, OUT unflushed_keys bigint,
    OUT tracking_dropped bigint, OUT flushed_rows bigint, OUT flush_errors bigint,
    OUT last_flush_at timestamptz, OUT flush_workers integer, OUT cache_generation bigint)
    RETURNS record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_runtime';

CREATE VIEW apikeys.verifications AS
SELECT outcome, total FROM apikeys._verification_totals();
COMMENT ON VIEW apikeys.verifications IS 'Verifications since server start by outcome, all databases (a Prometheus counter per outcome).';

CREATE VIEW apikeys.runtime AS
SELECT r.*, now() OPERATOR(pg_catalog.-) r.last_flush_at AS flush_lag
  FROM apikeys._runtime() r;
COMMENT ON VIEW apikeys.runtime IS 'Shared memory use, policy cache and usage-flush figures.';

-- Rows of apikeys.key_usage: flushed figures plus what shared memory holds,
-- for the keys of the tenants the caller may read (apikeys.tenants explains
-- why a reader function).
CREATE FUNCTION apikeys_internal._read_key_usage()
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
    v text[] := apikeys._visible_tenants('read');
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
      LEFT JOIN LATERAL apikeys._pending_usage(c.key_id) p ON true
     WHERE v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;
SELECT apikeys_internal.publish('_read_key_usage', 'Rows of apikeys.key_usage: usage of the keys of the tenants the caller may read.');
CREATE VIEW apikeys.key_usage WITH (security_invoker = true) AS
SELECT * FROM apikeys._read_key_usage();
COMMENT ON VIEW apikeys.key_usage IS 'Per key: last use, uses charged against the cap, verifications by outcome (flushed + pending).';

ALTER TABLE apikeys.usage ENABLE ROW LEVEL SECURITY;
CREATE POLICY usage_read ON apikeys.usage FOR SELECT
    USING (EXISTS (SELECT 1 FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) usage.key_id));
------------------------------------------------------------------------------
-- PostgREST: a ready db-pre-request gate (docs/postgrest.md)
--
--   db-pre-request = "apikeys.pre_request"
--
-- PostgREST runs each request as one transaction: set_config() of role,
-- request.method, request.path, request.headers, ... then
-- SELECT "apikeys"."pre_request"(), then the request's query.  The gate reads
-- the key from the headers, verifies it with apikeys.authenticate() (which
-- binds the key's tenant for the rest of the transaction, so RLS policies on
-- apikeys.current_tenant() apply to the request's query), optionally switches
-- to a role mapped from the key, sets X-RateLimit-* response headers, or
-- raises SQLSTATE 'PGRST' with PostgREST's JSON message/detail contract to
-- answer 401, 403, 429 (or 500 for a misconfiguration).  It never writes, so
-- it works in READ ONLY transactions and on hot standbys.
--
-- Configuration lives in three tables that only superusers (the extension
-- owner) can change; nothing in a request (headers, claims, settings) can.
------------------------------------------------------------------------------

-- At most one row; no row means every default.
CREATE TABLE apikeys.postgrest_setting (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- request.headers names (PostgREST lower-cases them), tried in order;
    -- 'authorization' means "Authorization: Bearer <key>"
    key_headers        text[] NOT NULL DEFAULT '{x-api-key,apikey,authorization}'
                       CHECK (cardinality(key_headers) BETWEEN 1 AND 8
                              AND array_ndims(key_headers) = 1
                              AND array_position(key_headers, NULL) IS NULL
                              AND array_to_string(key_headers, ',') ~ '^[a-z0-9-]{1,64}(,[a-z0-9-]{1,64})*$'),
    -- realm of WWW-Authenticate: Bearer realm="..."
    realm              text NOT NULL DEFAULT 'api'
                       CHECK (realm ~ '^[ -~]{1,64}$' AND realm !~ '["\\]'),
    -- requests whose method and path match no apikeys.postgrest_route row
    require_key        boolean NOT NULL DEFAULT true,
    -- X-RateLimit-Limit / -Remaining / -Reset on answers of rate-limited keys
    rate_limit_headers boolean NOT NULL DEFAULT true,
    -- a method that no route lists, on a path that some route lists: false
    -- refuses it (403 apikeys.method_not_allowed); true treats the request as
    -- one that matches no route (require_key decides)
    allow_unlisted_methods boolean NOT NULL DEFAULT false,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE apikeys.postgrest_setting IS 'Settings of apikeys.pre_request() (one row at most; none: defaults). Superuser-only.';

-- Scopes per route.  A request must hold every scope of every route that
-- matches it; a key is optional only if every matching route allows
-- anonymous requests.  A GET route also covers HEAD.
CREATE TABLE apikeys.postgrest_route (
    method          text NOT NULL DEFAULT '*'
                    CHECK (method IN ('*', 'GET', 'HEAD', 'POST', 'PATCH', 'PUT', 'DELETE', 'OPTIONS')),
    path            text COLLATE "C" NOT NULL CHECK (char_length(path) BETWEEN 1 AND 1000),
    match           text NOT NULL DEFAULT 'exact' CHECK (match IN ('exact', 'like', 'regex')),
    required_scopes text[] NOT NULL DEFAULT '{}'
                    CHECK (apikeys._normalize_scopes(required_scopes) IS NOT NULL),
    allow_anonymous boolean NOT NULL DEFAULT false,
    description     text CHECK (char_length(description) <= 2000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (method, path, match),
    -- a bad regular expression fails here, not in a request
    CONSTRAINT postgrest_route_regex_valid CHECK (match <> 'regex' OR ('' ~ path) IS NOT NULL),
    CONSTRAINT postgrest_route_anonymous_without_scopes
        CHECK (NOT (allow_anonymous AND cardinality(required_scopes) > 0))
);
COMMENT ON TABLE apikeys.postgrest_route IS 'Scopes required by apikeys.pre_request() per request.method and request.path (exact, LIKE or regex). Superuser-only.';

-- Role for the request's query, chosen from the key.  Each of tenant, key_id
-- and scope that is not NULL must match (scope: the key holds it); the
-- matching row with the highest priority wins, then the most specific
-- (key, then scope, then tenant), then the role name.  No match: the role
-- PostgREST chose stays.
--
-- A row with neither tenant nor key_id applies to keys of every tenant, and
-- a scope does not narrow that: each tenant chooses its keys' scopes.  Such a
-- row may name only a role that row-level security confines to the key's
-- tenant (apikeys.postgrest_role_confinement() is NULL), checked when the row
-- is written and again by the gate on every use.
CREATE TABLE apikeys.postgrest_role_map (
    tenant     text COLLATE "C" REFERENCES apikeys.tenant (tenant) ON DELETE CASCADE,
    key_id     uuid REFERENCES apikeys.credential (key_id) ON DELETE CASCADE,
    scope      text CHECK (CASE WHEN scope IS NULL THEN true
                                ELSE apikeys._normalize_scopes(ARRAY[scope]) IS NOT NULL END),
    role_name  name NOT NULL,
    priority   integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX postgrest_role_map_uniq
    ON apikeys.postgrest_role_map ((coalesce(tenant, '')), (coalesce(key_id, '00000000-0000-0000-0000-000000000000')),
                                   (coalesce(scope, '')));
COMMENT ON TABLE apikeys.postgrest_role_map IS 'Role apikeys.pre_request() switches to for a key (by key, scope or tenant; all NULL: every key). Superuser-only.';

SELECT pg_catalog.pg_extension_config_dump('apikeys.postgrest_setting', '');
SELECT pg_catalog.pg_extension_config_dump('apikeys.postgrest_route', '');
SELECT pg_catalog.pg_extension_config_dump('apikeys.postgrest_role_map', '');

-- Readable by no tenant role (no GRANT); the gate reads them as their owner.
ALTER TABLE apikeys.postgrest_setting ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.postgrest_route ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.postgrest_role_map ENABLE ROW LEVEL SECURITY;

-- The mapped role must exist when the mapping is made (not checked while
-- pg_restore loads the table: roles are not part of a database dump).
CREATE FUNCTION apikeys._postgrest_role_map_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    why text;
BEGIN
    IF apikeys._bulk_loading() THEN
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
CREATE TRIGGER postgrest_role_map_check BEFORE INSERT OR UPDATE ON apikeys.postgrest_role_map
    FOR EACH ROW EXECUTE FUNCTION apikeys._postgrest_role_map_check();

-- Changes to the gate's configuration are audited like key changes.
CREATE FUNCTION apikeys._postgrest_config_audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o jsonb;
    n jsonb;
    detail jsonb;
BEGIN
    IF apikeys._bulk_loading() THEN
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
    PERFORM apikeys._audit_write(
        TG_TABLE_NAME || CASE TG_OP WHEN 'INSERT' THEN '_added' WHEN 'DELETE' THEN '_removed' ELSE '_changed' END,
        coalesce(n, o) ->> 'tenant', (coalesce(n, o) ->> 'key_id')::uuid, detail);
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_postgrest_setting AFTER INSERT OR UPDATE OR DELETE ON apikeys.postgrest_setting
    FOR EACH ROW EXECUTE FUNCTION apikeys._postgrest_config_audit();
CREATE TRIGGER audit_postgrest_route AFTER INSERT OR UPDATE OR DELETE ON apikeys.postgrest_route
    FOR EACH ROW EXECUTE FUNCTION apikeys._postgrest_config_audit();
CREATE TRIGGER audit_postgrest_role_map AFTER INSERT OR UPDATE OR DELETE ON apikeys.postgrest_role_map
    FOR EACH ROW EXECUTE FUNCTION apikeys._postgrest_config_audit();

-- The path routes are matched against: request.path is the raw path (before
-- percent-decoding, without the query string), while PostgREST routes on the
-- decoded one.  So decode %XX, collapse repeated slashes and drop trailing
-- ones: "/it%65ms/" is "/items".  Invalid UTF-8 after decoding raises 22021
-- (PostgREST: 400).
CREATE FUNCTION apikeys.postgrest_normalize_path(path text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p text := path;
BEGIN
    IF strpos(p, '%') > 0 THEN
        SELECT convert_from(string_agg(
                   CASE WHEN m[1] IS NOT NULL THEN decode(substr(m[1], 2), 'hex')
                        ELSE convert_to(m[2], 'UTF8') END, ''::bytea ORDER BY i), 'UTF8')
          INTO p
          FROM regexp_matches(p, '(%[0-9A-Fa-f]{2})|([^%]+|%)', 'g') WITH ORDINALITY AS t(m, i);
    END IF;
    p := regexp_replace(p, '/{2,}', '/', 'g');
    p := regexp_replace(p, '(.)/+$', '\1');
    IF p = '' THEN
        p := '/';
    END IF;
    RETURN p;
END;
$$;
COMMENT ON FUNCTION apikeys.postgrest_normalize_path IS 'The form of request.path that apikeys.postgrest_route patterns are matched against.';

-- The key presented in request.headers, per apikeys.postgrest_setting.
-- NULL: none.  Values shaped like a JWT (three dot-separated base64url parts,
-- e.g. Supabase's apikey header or PostgREST's own Bearer token) are not API
-- keys and are skipped; an API key never contains a dot.
CREATE FUNCTION apikeys._postgrest_key(headers jsonb, names text[]) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h text;
    v text;
BEGIN
    IF headers IS NULL OR jsonb_typeof(headers) <> 'object' THEN
        RETURN NULL;
    END IF;
    FOREACH h IN ARRAY names LOOP
        v := headers ->> h;
        CONTINUE WHEN v IS NULL;
        IF char_length(v) > 1024 THEN
            RETURN v;          -- far too long for a key: verify says malformed
        END IF;
        IF h = 'authorization' THEN
            -- only the Bearer scheme carries a key
            v := substring(v FROM '^[ \t]*[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+(.*)$');
            CONTINUE WHEN v IS NULL;
        END IF;
        v := btrim(v, E' \t');
        CONTINUE WHEN v = '';
        CONTINUE WHEN v ~ '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$';
        RETURN v;
    END LOOP;
    RETURN NULL;
END;
$$;

-- Does role own, or may it become (SET ROLE) the owner of, a table with
-- row-level security enabled but not forced?  Its queries would skip RLS
-- there.  Answers are cached per backend until pg_class, a role, a role
-- membership or a database changes (src/rls_owner.c): reading pg_class
-- costs about 0.5 ms with a few thousand relations.
CREATE FUNCTION apikeys._role_skips_rls(role oid) RETURNS boolean
    LANGUAGE C STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'apikeys_role_skips_rls';

-- Why role is not confined to one tenant's rows by row-level security (NULL:
-- it is), from the catalogs: a privilege the role holds and PUBLIC does not
-- (what PUBLIC holds, a request gets without any key) on
--   * a table without RLS, a view without security_invoker, a materialized
--     view or a foreign table (their rows are no tenant's);
--   * a table or view: TRUNCATE, TRIGGER or REFERENCES (TRUNCATE empties
--     every tenant's rows; a trigger sees every tenant's writes; a foreign
--     key reads past RLS);
--   * a sequence: UPDATE (setval);
--   * a SECURITY DEFINER function, or any function of apikeys other than the
--     four apikeys.grant_postgrest() grants and the readers behind the views
--     (they run with another role's rights, or verify keys and bind
--     tenants);
--   * a schema: CREATE; the database: CREATE (what the role creates, every
--     tenant's requests share).
-- Schemas pg_catalog, information_schema and pg_toast are not looked at.
-- Run through apikeys._role_confinement_cached() (src/rls_owner.c).
CREATE FUNCTION apikeys._role_confinement_scan(role oid) RETURNS text
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
                                  '_read_audit', '_read_grants', 'audit_log_page'))
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

CREATE FUNCTION apikeys._role_confinement_cached(role oid) RETURNS text
    LANGUAGE C STABLE STRICT PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'apikeys_role_confinement_cached';

-- Why the role named role_name may not be mapped for keys of any tenant
-- (NULL: it may): it is a superuser or BYPASSRLS, it owns (or inherits the
-- owner of) an RLS table without FORCE, it is granted tenants to manage or
-- audit (apikeys.role_tenant), or _role_confinement_scan() above.  What it
-- cannot know: whether the policies of the RLS tables filter on
-- apikeys.current_tenant().  Superuser-only, like the mapping table.
CREATE FUNCTION apikeys.postgrest_role_confinement(role_name name) RETURNS text
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
    ELSIF apikeys._role_skips_rls(r.oid) THEN
        RETURN 'owns, or has the privileges of the owner of, a table with row-level security not forced';
    ELSIF EXISTS (SELECT 1 FROM apikeys.role_tenant g JOIN pg_catalog.pg_roles o ON o.rolname = g.role_name
                   WHERE pg_has_role(r.oid, o.oid, 'USAGE')) THEN
        RETURN 'is granted tenants to manage or audit (apikeys.grant_tenant)';
    END IF;
    RETURN apikeys._role_confinement_cached(r.oid);
END;
$$;
COMMENT ON FUNCTION apikeys.postgrest_role_confinement IS 'Why a role may not be mapped for keys of any tenant in apikeys.postgrest_role_map (NULL: row-level security confines it to the key''s tenant).';

-- Bounds on what the gate reads from PostgREST's settings (docs/postgrest.md,
-- "Bad requests").  Anything longer is a 400 apikeys.bad_request, read no
-- further.
CREATE FUNCTION apikeys._postgrest_limits(OUT max_headers integer, OUT max_header_value integer,
                                          OUT max_path integer, OUT max_method integer)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    -- bytes of request.headers (its JSON text), of one header's value, of
    -- request.path (raw), of request.method
    SELECT 65536, 8192, 8192, 16
$$;

-- The server-log line of a request the gate refused, in the shape of
-- apikeys._deny()'s ("apikeys_audit_denied {json}", action
-- "postgrest_request"), plus http_status, method, path and reason.  Written
-- at LOG, so it outlives the rollback.  Nothing the request sent can stop
-- it: apikeys._actor() and _request_id() read claims and headers that may
-- be anything without ever raising (an unreadable or over-long label reads
-- as absent), method and path are cut to their bounds.  No header value
-- (the key among them) is written.
CREATE FUNCTION apikeys._postgrest_log_denied(p_status integer, p_code text, p_tenant text, p_key_id uuid,
                                              p_method text, p_path text, p_reason text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    actor      text;
    request_id text;
    lim        record := apikeys._postgrest_limits();
BEGIN
    actor := apikeys._actor();
    request_id := apikeys._request_id();
    RAISE LOG USING MESSAGE = 'apikeys_audit_denied ' || jsonb_build_object(
        'at', clock_timestamp(), 'action', 'postgrest_request', 'outcome', 'denied',
        'error', p_code, 'sqlstate', 'PGRST', 'http_status', p_status,
        'tenant', p_tenant, 'key_id', p_key_id,
        'method', left(p_method, lim.max_method), 'path', left(p_path, lim.max_path), 'reason', p_reason,
        'db_role', apikeys._acting_role(), 'session_role', session_user,
        'actor', actor, 'request_id', request_id,
        'client_addr', inet_client_addr(),
        'application_name', current_setting('application_name'),
        'txid', pg_current_xact_id_if_assigned())::text;
END;
$$;

-- The decision, computed as the extension owner: it reads the configuration
-- tables (which the request's roles cannot) and calls authenticate() (which
-- binds the key's tenant in backend memory).  It reads the request only from
-- PostgREST's settings, and only within the bounds above: whatever they
-- hold, the answer is a PGRST one (400 for a request it cannot read), and
-- every refusal leaves its apikeys_audit_denied line.  pre_request() below
-- acts on it as the caller: a SECURITY DEFINER function may not change the
-- role.
CREATE FUNCTION apikeys._postgrest_gate(
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
    lim        record := apikeys._postgrest_limits();
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
                api_key := apikeys._postgrest_key(headers, cfg.key_headers);
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
                    ELSIF apikeys._role_skips_rls(r.oid) THEN
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

    PERFORM apikeys._postgrest_log_denied(status, substr(code, 9), v.tenant, v.key_id,
                                          raw_method, raw_path, reason);
    IF status = 500 THEN
        hdrs := '{}';
    END IF;
    message := json_build_object('code', code, 'message', msg, 'details', details, 'hint', hint)::text;
    detail := json_build_object('status', status, 'headers', hdrs)::text;
END;
$$;

-- The db-pre-request function.  SECURITY INVOKER on purpose: it runs as the
-- role PostgREST switched to (the anonymous role for API-key requests), and
-- only such a function may switch the role again with set_config('role', ...),
-- which PostgreSQL allows only if the connection's login role (PostgREST's
-- authenticator) is a member of the mapped role.
CREATE FUNCTION apikeys.pre_request() RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g record;
    cur text;
    merged jsonb;
BEGIN
    g := apikeys._postgrest_gate();
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
COMMENT ON FUNCTION apikeys.pre_request IS 'PostgREST db-pre-request: verify the request''s API key, bind its tenant, map its role, set X-RateLimit-* headers; else answer 401/403/429 (docs/postgrest.md).';

CREATE FUNCTION apikeys_internal.grant_postgrest(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys._check_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.pre_request(), apikeys._postgrest_gate(),'
                   ' apikeys.current_tenant(), apikeys.current_key_id() TO %I', role_name);
END;
$$;
SELECT apikeys_internal.publish('grant_postgrest', 'Let a PostgREST role (anon, authenticated) run apikeys.pre_request().');
------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC; see the README for GRANT recipes.
------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA apikeys FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA apikeys FROM PUBLIC;
GRANT EXECUTE ON FUNCTION apikeys.current_tenant(), apikeys.current_key_id() TO PUBLIC;
-- The row-level policies call this for any role granted SELECT on a table;
-- it answers only about the caller.
GRANT EXECUTE ON FUNCTION apikeys._visible_tenants(text) TO PUBLIC;
