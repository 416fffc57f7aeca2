/* apikeys install script (the current version; built from src/sql/) */

\echo Use "CREATE EXTENSION apikeys" to load this file. \quit

-- Nothing in this schema is for PUBLIC unless granted below or by the DBA.
REVOKE ALL ON SCHEMA apikeys FROM PUBLIC;

------------------------------------------------------------------------------
-- Entry points.  A management function's body lives in apikeys_internal
-- (SECURITY DEFINER, never granted to anyone); the apikeys.<name> that users
-- call is a C entry point published from it, which records the role whose
-- code makes the call, refuses security-restricted operations (ANALYZE,
-- VACUUM, CREATE INDEX, REFRESH ...) and calls the body (src/caller.c).
-- Authorization then asks apikeys_internal._acting_role(), never the session.
------------------------------------------------------------------------------

CREATE SCHEMA apikeys_internal;
REVOKE ALL ON SCHEMA apikeys_internal FROM PUBLIC;
COMMENT ON SCHEMA apikeys_internal IS 'Bodies of the apikeys management functions; reached only through their apikeys.* entry points.';

-- Publish apikeys_internal.<name> as apikeys.<name>: same arguments, defaults,
-- result, volatility and parallel safety; the comment goes on the entry point,
-- and on the body with a word saying whose body it is.
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
    EXECUTE format('COMMENT ON FUNCTION %s IS %L', p.oid::regprocedure,
        format('Body of apikeys.%I (reached only through it): %s', name, comment));
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', p.oid::regprocedure);
END;
$$;

-- The role the current management call acts for: the caller of the entry
-- point being run (outside one: the session's current role).
CREATE FUNCTION apikeys_internal._acting_role() RETURNS name
    LANGUAGE C VOLATILE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_acting_role_sql';

------------------------------------------------------------------------------
-- Tables.  Column order of tenant, credential and secret is read by the C
-- verify path (src/apikeys.h); add columns at the end only.
------------------------------------------------------------------------------

-- A named limit (limits v2): at most max_uses uses (each verification
-- charges its cost, 1 by default) in any interval of length per, counted in
-- a sliding window (src/rate_window.h).  Keys (credential.limits) and tenants
-- (tenant.limits, shared by all their keys) hold up to 3 each; set them
-- with apikey_set_limits() and tenant_set_limits().
CREATE TYPE apikeys.named_limit AS (name text, max_uses integer, per interval);
COMMENT ON TYPE apikeys.named_limit IS 'A named rate limit: at most max_uses uses in any interval of length per (1 second to 1 day); name: 1 to 15 of a-z, 0-9, _ . -.';

CREATE TABLE apikeys.tenant (
    tenant       text COLLATE "C" PRIMARY KEY
                 CHECK (tenant ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- named limits shared by all the tenant's keys; tenant_set_limits()
    limits       apikeys.named_limit[] NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE apikeys.tenant IS 'Tenants: every API key belongs to one; an inactive tenant''s keys do not verify.';

-- New key ids: time-ordered UUIDs (version 7), so that the indexes on key_id
-- take new keys on their rightmost page instead of a random one (src/key_id.c).
CREATE FUNCTION apikeys_internal._key_id() RETURNS uuid
    LANGUAGE C VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_key_id';
COMMENT ON FUNCTION apikeys_internal._key_id() IS 'A new key id: a time-ordered UUID (RFC 9562 version 7).';
REVOKE ALL ON FUNCTION apikeys_internal._key_id() FROM PUBLIC;

-- The bounds of a key row's fields (see apikeys.credential), in C: one call
-- instead of eighteen SQL CHECK constraints, which PostgreSQL reads back and
-- plans again for every statement that writes the table.
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

CREATE TABLE apikeys.credential (
    key_id         uuid PRIMARY KEY DEFAULT apikeys_internal._key_id(),
    tenant         text COLLATE "C" NOT NULL REFERENCES apikeys.tenant (tenant),
    name           text NOT NULL,
    description    text,
    prefix         text NOT NULL,
    scopes         text[] NOT NULL DEFAULT '{}',
    metadata       jsonb NOT NULL DEFAULT '{}',
    status         text NOT NULL DEFAULT 'active',
    expires_at     timestamptz,
    created_by     name NOT NULL DEFAULT current_user,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    rotated_at     timestamptz,
    rotation_count integer NOT NULL DEFAULT 0,
    revoked_at     timestamptz,
    revoked_reason text,
    -- policies enforced by apikey_verify (NULL: none); set by apikey_set_policy()
    allowed_ips    cidr[],
    rate_limit     integer,
    rate_window    interval,
    usage_limit    bigint,
    usage_period   interval,
    -- the key's named limits; apikey_set_limits()
    limits         apikeys.named_limit[] NOT NULL DEFAULT '{}',
    -- credits (apikey_set_credits; NULL: none), after the columns above
    credits                 bigint,
    credits_at              timestamptz,
    credits_since           timestamptz,
    credits_refill          bigint,
    credits_refill_interval interval,
    credits_refill_day      integer,
    -- every field's bounds (credential_check.c); an error names the rule
    CONSTRAINT credential_valid CHECK (apikeys_internal.credential_valid(
        name, description, prefix, scopes, metadata, status, revoked_at, revoked_reason,
        allowed_ips, rate_limit, rate_window, usage_limit, usage_period, credits,
        credits_refill, credits_refill_interval, credits_refill_day))
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

CREATE FUNCTION apikeys_internal._check_tenant_id(text) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_tenant_id';
-- the same, for an argument that must name one tenant (NULL is an error)
CREATE FUNCTION apikeys_internal._tenant_arg(text) RETURNS text
    LANGUAGE C IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_tenant_id';
CREATE FUNCTION apikeys_internal._check_name(text) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_name';
CREATE FUNCTION apikeys_internal._check_description(text) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_description';
CREATE FUNCTION apikeys_internal._normalize_scopes(text[]) RETURNS text[]
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_normalize_scopes';
CREATE FUNCTION apikeys_internal._check_expiry(timestamptz) RETURNS timestamptz
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_expiry';
CREATE FUNCTION apikeys_internal._check_metadata(jsonb) RETURNS jsonb
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_metadata';
