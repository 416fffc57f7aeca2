/* apikeys--1.0--1.1.sql - upgrade apikeys from 1.0 to 1.1 */

\echo Use "ALTER EXTENSION apikeys UPDATE TO '1.1'" to load this file. \quit

-- Every schema change made after 1.0 is here as well as in src/sql/: after
-- this script a 1.0 database has exactly the schema (objects, definitions,
-- privileges, comments) of a fresh 1.1 install; test/t/upgrade.sh checks it.
-- The library serves both: a C function that 1.0's SQL calls keeps its
-- symbol and its contract, and a changed contract gets a new symbol
-- (apikeys_<name>_1_1), as pg_stat_statements does.

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
        -- n: the verdict's position in VerdictCode order (apikeys._pending_usage's counts)
        VALUES (1, 'valid'), (4, 'disabled'), (5, 'revoked'), (6, 'expired'), (7, 'tenant_inactive'),
               (8, 'ip_not_allowed'), (9, 'insufficient_scope'), (10, 'rate_limited'), (11, 'usage_exceeded')),
    k AS (
        SELECT c.tenant, c.key_id,
               ARRAY[0, 0, 0, u.count_disabled, u.count_revoked, u.count_expired, u.count_tenant_inactive,
                     u.count_ip_not_allowed, u.count_insufficient_scope, u.count_rate_limited,
                     u.count_usage_exceeded] AS flushed,
               u.count_valid, p.counts AS pending
          FROM apikeys.credential c
          LEFT JOIN apikeys.usage u ON u.key_id OPERATOR(pg_catalog.=) c.key_id
          LEFT JOIN LATERAL apikeys._pending_usage(c.key_id) p ON true),
    o AS (
        SELECT k.tenant, k.key_id, x.outcome,
               COALESCE(CASE x.n WHEN 1 THEN k.count_valid ELSE k.flushed[x.n] END, 0)
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
    PERFORM apikeys._check_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT SELECT ON apikeys.verifications, apikeys.runtime TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys._verification_totals(), apikeys._runtime(),'
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
    PERFORM apikeys._check_role(role_name);
    EXECUTE format('REVOKE SELECT ON apikeys.verifications, apikeys.runtime FROM %I', role_name);
    EXECUTE format('REVOKE EXECUTE ON FUNCTION apikeys._verification_totals(), apikeys._runtime(),'
                   ' apikeys.monitor_usage(boolean), apikeys.monitor_tenants() FROM %I', role_name);
END;
$$;
SELECT apikeys_internal.publish('revoke_monitor', 'Undo grant_monitor: the monitoring figures'' privileges (USAGE on the schema stays).');
-- publish() revokes PUBLIC's EXECUTE from the bodies; the entry points lose
-- it here (in a fresh install 90_privileges.sql would too, an upgrade has
-- no such step): monitor_usage and monitor_tenants read every tenant.
REVOKE ALL ON FUNCTION apikeys.monitor_usage(boolean), apikeys.monitor_tenants(),
    apikeys.grant_monitor(name), apikeys.revoke_monitor(name) FROM PUBLIC;
