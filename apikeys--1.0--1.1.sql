/* apikeys--1.0--1.1.sql - upgrade apikeys from 1.0 to 1.1 */

\echo Use "ALTER EXTENSION apikeys UPDATE TO '1.1'" to load this file. \quit

-- Every schema change made after 1.0 is here as well as in src/sql/: after
-- this script a 1.0 database has exactly the schema (objects, definitions,
-- privileges, comments) of a fresh 1.1 install; test/t/upgrade.sh checks it.
-- The library serves both: a C function that 1.0's SQL calls keeps its
-- symbol and its contract, and a changed contract gets a new symbol
-- (apikeys_<name>_1_1), as pg_stat_statements does.

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

CREATE OR REPLACE FUNCTION apikeys_internal._read_key_usage()
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
      LEFT JOIN LATERAL apikeys._pending_usage(c.key_id) p ON true
     WHERE v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;

CREATE OR REPLACE FUNCTION apikeys._postgrest_gate(
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

    PERFORM apikeys._postgrest_log_denied(status, substr(code, 9), v.tenant, v.key_id,
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
SELECT * FROM apikeys._read_tenants();

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
    k apikeys.credential := apikeys._lock_key(key_id, 'key_set_limits');
    v apikeys.named_limit[];
BEGIN
    PERFORM apikeys._require_not_revoked(k, 'key_set_limits');
    PERFORM apikeys._require_active_tenant(k.tenant, 'key_set_limits', k.key_id);
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
    PERFORM apikeys._authorize(NULL, 'tenant_set_limits');
    PERFORM apikeys._tenant_arg(tenant);   -- before any message echoes it
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
    PERFORM apikeys._check_role(role_name);
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
