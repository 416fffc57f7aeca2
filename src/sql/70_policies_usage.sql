------------------------------------------------------------------------------
-- Policies enforced by verify: IP allowlist, rate limit, usage cap
------------------------------------------------------------------------------

-- Statement-level and ALWAYS (fires under session_replication_role =
-- replica too): any committed change to key data retires the shared policy
-- cache (src/changes.c).
CREATE FUNCTION apikeys_internal._changed() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'apikeys_changed';
CREATE TRIGGER policy_cache_tenant AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apikeys.tenant
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._changed();
CREATE TRIGGER policy_cache_credential AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apikeys.credential
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._changed();
CREATE TRIGGER policy_cache_secret AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apikeys.secret
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._changed();
ALTER TABLE apikeys.tenant ENABLE ALWAYS TRIGGER policy_cache_tenant;
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER policy_cache_credential;
ALTER TABLE apikeys.secret ENABLE ALWAYS TRIGGER policy_cache_secret;
-- Logical replication's apply worker fires row triggers only: a revoke that
-- arrives on a subscriber must retire its cache too.
CREATE TRIGGER policy_cache_tenant_row AFTER INSERT OR UPDATE OR DELETE ON apikeys.tenant
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._changed();
CREATE TRIGGER policy_cache_credential_row AFTER INSERT OR UPDATE OR DELETE ON apikeys.credential
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._changed();
CREATE TRIGGER policy_cache_secret_row AFTER INSERT OR UPDATE OR DELETE ON apikeys.secret
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._changed();
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
COMMENT ON FUNCTION apikeys.last_verify_limits() IS 'Each limit (key rate_limit, key and tenant named limits, the PostgREST route''s) the last verification of this session checked: what remains, when it resets, which one the rate_* columns report.';

------------------------------------------------------------------------------
-- Observability
------------------------------------------------------------------------------

-- The verdicts apikey_verify can reach, from the library's one list
-- (src/verdicts.h): code (the index in _pending_usage's counts, less one),
-- name, whether apikeys.usage has a count_<name> column, and the PostgREST
-- gate's HTTP status.  The SQL below reads it instead of repeating it;
-- test policy_verdicts checks what must still be spelled out (the columns).
CREATE FUNCTION apikeys_internal.verdicts(OUT code integer, OUT name text, OUT counted boolean,
                                          OUT http_status integer)
    RETURNS SETOF record
    LANGUAGE C STABLE PARALLEL SAFE ROWS 16 AS 'MODULE_PATHNAME', 'apikeys_verdicts_sql';
REVOKE ALL ON FUNCTION apikeys_internal.verdicts() FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal.verdicts() IS 'The verdicts of apikey_verify (code, name, counted in apikeys.usage, HTTP status), from the library''s list.';

CREATE FUNCTION apikeys_internal._verification_totals(OUT outcome text, OUT total bigint)
    RETURNS SETOF record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_verification_totals';
-- one key at a time, and only a key the caller can see in apikeys.credential
-- (its RLS; checked in C, src/stats.c): any other id, another tenant's or
-- none, gives the same row of NULLs
CREATE FUNCTION apikeys_internal._pending_usage(INOUT key_id uuid, OUT last_used_at timestamptz,
                                       OUT used bigint, OUT counts bigint[])
    RETURNS record
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'apikeys_pending_usage';
CREATE FUNCTION apikeys_internal._runtime(
    OUT preloaded boolean, OUT shmem_bytes bigint,
    OUT cache_capacity integer, OUT cache_entries bigint, OUT cache_hits bigint,
    OUT cache_misses bigint, OUT cache_evictions bigint,
    OUT tracked_capacity integer, OUT tracked_keys bigint, OUT unflushed_keys bigint,
    OUT tracking_dropped bigint, OUT flushed_rows bigint, OUT flush_errors bigint,
    OUT last_flush_at timestamptz, OUT flush_workers integer, OUT cache_generation bigint)
    RETURNS record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_runtime';

CREATE VIEW apikeys.verifications AS
SELECT outcome, total FROM apikeys_internal._verification_totals();
COMMENT ON VIEW apikeys.verifications IS 'Verifications since server start by outcome, all databases (a Prometheus counter per outcome).';

CREATE VIEW apikeys.runtime AS
SELECT r.*, clock_timestamp() OPERATOR(pg_catalog.-) r.last_flush_at AS flush_lag
  FROM apikeys_internal._runtime() r;
COMMENT ON VIEW apikeys.runtime IS 'Shared memory use, policy cache and usage-flush figures.';

-- Rows of apikeys.key_usage: flushed figures plus what shared memory holds,
-- for the keys of the tenants the caller may read (apikeys.tenants explains
-- why a reader function).
CREATE FUNCTION apikeys_internal.read_key_usage()
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
SELECT apikeys_internal.publish('read_key_usage', 'Rows of apikeys.key_usage: usage of the keys of the tenants the caller may read.');
CREATE VIEW apikeys.key_usage WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_key_usage();
COMMENT ON VIEW apikeys.key_usage IS 'Per key: last use, uses charged against the cap, verifications by outcome (flushed + pending).';

ALTER TABLE apikeys.usage ENABLE ROW LEVEL SECURITY;
CREATE POLICY usage_read ON apikeys.usage FOR SELECT
    USING (EXISTS (SELECT 1 FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) usage.key_id));

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
