--
-- postgrest_route_limits: a PostgREST route's own limits, per key, charged by
-- apikeys.pre_request() with the key's and tenant's limits, all or nothing.
--
-- The README example: what hand-written gateways limit per endpoint and key,
--   POST /api/v1/chantiers  100 a day
--   GET  /api/v1/stats      1000 an hour
-- replayed as PostgREST sends it (set_config of role, request.method,
-- request.path, request.headers, then pre_request(), as the authenticator),
-- with exact counts, the 429's Retry-After and X-RateLimit-* headers, other
-- routes and other keys unaffected, the most specific route's limits, cost,
-- what a change of a route's limits does to its state, the error paths, and
-- a hostile tenant's attempts.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_rl_authenticator, regress_rl_anon, regress_rl_tenant;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT current_user AS su \gset

CREATE ROLE regress_rl_authenticator LOGIN NOINHERIT;
CREATE ROLE regress_rl_anon NOLOGIN;
CREATE ROLE regress_rl_tenant LOGIN;          -- globex's administrator
GRANT regress_rl_anon TO regress_rl_authenticator;
SELECT apikeys.grant_postgrest('regress_rl_anon');

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT apikeys.grant_tenant('regress_rl_tenant', 'globex', 'manage');
SELECT api_key AS a_key FROM apikeys.apikey_create('acme', 'acme a', '{chantiers:read,chantiers:write}') \gset
SELECT api_key AS b_key FROM apikeys.apikey_create('acme', 'acme b', '{chantiers:read,chantiers:write}') \gset
SELECT key_id AS c_id, api_key AS c_key FROM apikeys.apikey_create('acme', 'acme c', '{chantiers:read,chantiers:write}') \gset
SELECT api_key AS g_key FROM apikeys.apikey_create('globex', 'globex g', '{chantiers:read,chantiers:write}') \gset
-- key c has a limit of its own, tighter than the route's
SELECT apikeys.apikey_set_limits(:'c_id', ARRAY[('own', 10, '1 hour')]::apikeys.named_limit[]);
-- key d: a limit of its own, for the check-only route
SELECT key_id AS d_id, api_key AS d_key FROM apikeys.apikey_create('acme', 'acme d', '{chantiers:read,chantiers:write}') \gset
SELECT apikeys.apikey_set_limits(:'d_id', ARRAY[('own', 2, '1 hour')]::apikeys.named_limit[]);
-- initech: a tenant limit, and key i with every other kind of limit (its
-- own named limit, a rate limit, a usage cap), to see that a refusal
-- charges none of them
SELECT tenant FROM apikeys.tenant_create('initech');
SELECT apikeys.tenant_set_limits('initech', ARRAY[('t', 30, '1 hour')]::apikeys.named_limit[]);
SELECT key_id AS i_id, api_key AS i_key FROM apikeys.apikey_create('initech', 'initech i', '{chantiers:read,chantiers:write}') \gset
SELECT apikeys.apikey_set_limits(:'i_id', ARRAY[('own', 100, '1 hour')]::apikeys.named_limit[]);
SELECT apikeys.apikey_set_policy(:'i_id', rate_limit => 100, rate_window => '1 hour', usage_limit => 100);

-- The routes: every method the API serves is listed.
INSERT INTO apikeys.postgrest_route (method, path, match, required_scopes) VALUES
    ('POST', '/api/v1/chantiers', 'exact', '{chantiers:write}'),
    ('GET',  '/api/v1/chantiers', 'exact', '{chantiers:read}'),
    ('GET',  '/api/v1/stats',     'exact', '{chantiers:read}'),
    ('GET',  '/api/v1/%',         'like',  '{}'),
    ('POST', '/api/v1/exports',   'exact', '{chantiers:read}'),
    ('GET',  '/api/v1/quota',     'exact', '{chantiers:read}');

------------------------------------------------------------------------------
-- Configuration: postgrest_route_set_limits(method, path, limits, cost, match)
------------------------------------------------------------------------------
SELECT method, path, match, limits, cost
  FROM apikeys.postgrest_route_set_limits('POST', '/api/v1/chantiers', ARRAY[('create', 100, '1 day')]::apikeys.named_limit[]);
SELECT method, path, match, limits, cost
  FROM apikeys.postgrest_route_set_limits('get', '/api/v1/stats', ARRAY[('stats', 1000, '1 hour')]::apikeys.named_limit[]);
-- a catch-all for reads: less specific than the exact routes
SELECT method, path, match, limits, cost
  FROM apikeys.postgrest_route_set_limits('GET', '/api/v1/%', ARRAY[('reads', 5000, '1 hour')]::apikeys.named_limit[],
                                          match => 'like');
-- an expensive route: each request charges 10
SELECT method, path, match, limits, cost
  FROM apikeys.postgrest_route_set_limits('POST', '/api/v1/exports', ARRAY[('exports', 25, '1 hour')]::apikeys.named_limit[], 10);
-- a route that checks its limits and the key's without charging them
SELECT method, path, match, limits, cost
  FROM apikeys.postgrest_route_set_limits('GET', '/api/v1/quota', ARRAY[('peek', 5, '1 hour')]::apikeys.named_limit[], 0);
-- each change is audited (who, and the old and new values)
SELECT action, db_role = current_user AS by_me, detail -> 'changed' AS changed
  FROM apikeys.audit WHERE action = 'postgrest_route_changed' ORDER BY audit_id;

-- Error paths: nothing is changed.
SELECT apikeys.postgrest_route_set_limits('POST', '/api/v1/nowhere', ARRAY[('create', 100, '1 day')]::apikeys.named_limit[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT apikeys.postgrest_route_set_limits('POST', '/api/v1/chantiers', ARRAY[('create', 100, '1 day')]::apikeys.named_limit[], match => 'regex');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT apikeys.postgrest_route_set_limits('POST', '/api/v1/chantiers', ARRAY[('Create!', 100, '1 day')]::apikeys.named_limit[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT apikeys.postgrest_route_set_limits('POST', '/api/v1/chantiers', ARRAY[('create', 0, '1 day')]::apikeys.named_limit[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT apikeys.postgrest_route_set_limits('POST', '/api/v1/chantiers', ARRAY[('create', 100, '2 days')]::apikeys.named_limit[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT apikeys.postgrest_route_set_limits('POST', '/api/v1/chantiers', ARRAY[('a', 1, '1 day'), ('b', 1, '1 day'), ('c', 1, '1 day'), ('d', 1, '1 day')]::apikeys.named_limit[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT apikeys.postgrest_route_set_limits('POST', '/api/v1/chantiers', ARRAY[('a', 1, '1 day'), ('a', 2, '1 day')]::apikeys.named_limit[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT apikeys.postgrest_route_set_limits('POST', '/api/v1/chantiers', ARRAY[('create', 100, '1 day')]::apikeys.named_limit[], -1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT apikeys.postgrest_route_set_limits('POST', '/api/v1/chantiers', ARRAY[('create', 100, '1 day')]::apikeys.named_limit[], NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- a cost that a route limit can never hold
SELECT apikeys.postgrest_route_set_limits('POST', '/api/v1/exports', ARRAY[('exports', 5, '1 hour')]::apikeys.named_limit[], 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- the table checks the same when written directly
INSERT INTO apikeys.postgrest_route (method, path, limits) VALUES ('PUT', '/api/v1/x', ARRAY[('x', 1, '1 month')]::apikeys.named_limit[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
INSERT INTO apikeys.postgrest_route (method, path, cost) VALUES ('PUT', '/api/v1/x', -5);
\set VERBOSITY default
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT method, path, match, limits, cost FROM apikeys.postgrest_route ORDER BY path, method;
SELECT count(*) AS route_changes FROM apikeys.audit WHERE action LIKE 'postgrest_route%';

------------------------------------------------------------------------------
-- A hostile tenant administrator: may not change routes, nor read them.
------------------------------------------------------------------------------
\c - regress_rl_tenant
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT apikeys.postgrest_route_set_limits('POST', '/api/v1/chantiers', ARRAY[('create', 1000000, '1 day')]::apikeys.named_limit[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT apikeys.postgrest_route_set_limits('POST', '/api/v1/chantiers', NULL, 0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
UPDATE apikeys.postgrest_route SET limits = '{}', cost = 0;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
INSERT INTO apikeys.postgrest_route (method, path, limits) VALUES ('POST', '/api/v1/chantiers2', '{}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM apikeys.postgrest_route;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- nor charge or read route state past the gate (terse: the error's
-- position would show the key)
\set VERBOSITY terse
SELECT apikeys_internal._authenticate_route(:'g_key', NULL, NULL, 'POST exact /api/v1/chantiers',
                                            ARRAY[('create', 100, '1 day')]::apikeys.named_limit[], 0);
\set VERBOSITY default
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM apikeys.postgrest_gate();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
\c - :su
SELECT method, path, limits, cost FROM apikeys.postgrest_route WHERE path = '/api/v1/chantiers' ORDER BY method;
SELECT count(*) AS route_changes FROM apikeys.audit WHERE action LIKE 'postgrest_route%';

------------------------------------------------------------------------------
-- PostgREST's connection
------------------------------------------------------------------------------
-- One request as PostgREST sends it (pre_request() after the set_config()s):
-- status, the PGRST error's detail (status and headers), the response
-- headers the gate set, and "status limit=X-RateLimit-Limit
-- remaining=X-RateLimit-Remaining" (of the 200's headers, or the 429's).
-- n: the request's number in a series (LATERAL ... pgrst(..., i)), so that
-- each row makes a request: a function scan whose arguments do not change
-- is run once and its result reused for every row.
SELECT $helpers$
CREATE FUNCTION pg_temp.pgrst(method text, path text, key text, n integer DEFAULT 0,
                              OUT status int, OUT detail jsonb, OUT response_headers jsonb, OUT figures text)
    LANGUAGE plpgsql AS $$
DECLARE
    d text;
    h jsonb;
BEGIN
    PERFORM set_config('search_path', '"api"', true), set_config('role', 'regress_rl_anon', true),
            set_config('request.jwt.claims', '{"role":"regress_rl_anon"}', true),
            set_config('request.method', method, true), set_config('request.path', path, true),
            set_config('request.headers', jsonb_build_object('accept', '*/*', 'x-api-key', key)::text, true),
            set_config('request.cookies', '{}', true), set_config('response.headers', '', true);
    BEGIN
        PERFORM "apikeys"."pre_request"();
        status := 200;
    EXCEPTION WHEN SQLSTATE 'PGRST' THEN
        GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
        detail := d::jsonb;
        status := (detail ->> 'status')::int;
    END;
    SELECT jsonb_object_agg(e.key, e.value) INTO response_headers
      FROM jsonb_array_elements(nullif(current_setting('response.headers', true), '')::jsonb) a, jsonb_each(a.value) e;
    h := coalesce(response_headers, detail -> 'headers');
    figures := format('%s limit=%s remaining=%s', status, h ->> 'X-RateLimit-Limit', h ->> 'X-RateLimit-Remaining');
    PERFORM set_config('role', 'regress_rl_authenticator', true);
END
$$;
$helpers$ AS helpers \gset
-- What is left of each limit of a key, read as the gate would charge it
-- but with cost 0 (checks only): "verdict: scope/name=remaining ...
-- usage_remaining=N", route limits given by the route's identity ("method
-- match path") and limits.  Superuser only (apikeys_internal).
SELECT $su_helpers$
CREATE FUNCTION pg_temp.left_of(key text, route text DEFAULT NULL, route_limits apikeys.named_limit[] DEFAULT NULL)
    RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v apikeys.verification;
BEGIN
    v := apikeys_internal._authenticate_route(key, NULL, NULL, route, route_limits, 0);
    RETURN v.code || ': ' || (SELECT string_agg(format('%s/%s=%s', l.scope, l.name, l.remaining), ' '
                                                ORDER BY l.scope, l.name)
                                FROM apikeys.last_verify_limits() l)
           || coalesce(' usage_remaining=' || v.usage_remaining, '');
END
$$;
$su_helpers$ AS su_helpers \gset
\c - regress_rl_authenticator
\set VERBOSITY default
\set SHOW_CONTEXT never
:helpers

-- POST /api/v1/chantiers, key a: 100 creates pass, X-RateLimit-Remaining
-- counting down from 99 to 0.
BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE;
SELECT count(*) AS creates, bool_and(r.status = 200) AS all_passed,
       bool_and(r.response_headers ->> 'X-RateLimit-Limit' = '100') AS limit_100,
       bool_and((r.response_headers ->> 'X-RateLimit-Remaining')::int = 100 - i) AS remaining_100_minus_i
  FROM generate_series(1, 100) i, LATERAL pg_temp.pgrst('POST', '/api/v1/chantiers', :'a_key', i) r;
COMMIT;
-- The 101st create of the day, replayed statement by statement: PGRST 429
-- with Retry-After and the refusing limit's X-RateLimit-* (the clock's
-- values are checked below).
BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE;
select set_config('search_path', '"api"', true), set_config('role', 'regress_rl_anon', true), set_config('request.jwt.claims', '{"role":"regress_rl_anon"}', true), set_config('request.method', 'POST', true), set_config('request.path', '/api/v1/chantiers', true), set_config('request.headers', format('{"content-type":"application/json","x-api-key":"%s"}', :'a_key'), true), set_config('request.cookies', '{}', true) \gset
\set VERBOSITY sqlstate
select "apikeys"."pre_request"();
\set VERBOSITY default
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT :'LAST_ERROR_MESSAGE'::jsonb AS message;
-- Retry-After is when a create passes again: when the slice of the first
-- creates leaves the sliding window (a day in eighths; a slice is counted
-- for a window and up to one slice more: from 21 to 27 hours from now,
-- depending on where in their slice the creates fell); X-RateLimit-Reset
-- is that moment.
BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE;
SELECT r.status, r.figures, jsonb_object_keys(r.detail -> 'headers') AS headers
  FROM pg_temp.pgrst('POST', '/api/v1/chantiers', :'a_key') r ORDER BY 3;
SELECT r.status,
       (r.detail -> 'headers' ->> 'Retry-After')::int BETWEEN 21 * 3600 - 5 AND 27 * 3600 AS retry_after_21_to_27_hours,
       abs((r.detail -> 'headers' ->> 'X-RateLimit-Reset')::bigint - extract(epoch FROM clock_timestamp())
           - (r.detail -> 'headers' ->> 'Retry-After')::int) <= 2 AS reset_is_retry_after_from_now
  FROM pg_temp.pgrst('POST', '/api/v1/chantiers', :'a_key') r;
COMMIT;
-- Key b of the same tenant, and globex's key, have budgets of their own.
BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE;
SELECT r.figures FROM pg_temp.pgrst('POST', '/api/v1/chantiers', :'b_key') r;
COMMIT;
BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE;
SELECT r.figures FROM pg_temp.pgrst('POST', '/api/v1/chantiers', :'g_key') r;
COMMIT;
-- Other routes are unaffected for key a: GET /api/v1/chantiers charges the
-- catch-all's 'reads', GET /api/v1/stats its own 'stats' only (the most
-- specific route that has limits), HEAD is GET's route.
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
SELECT r.figures FROM pg_temp.pgrst('GET', '/api/v1/chantiers', :'a_key') r;
SELECT r.figures FROM pg_temp.pgrst('GET', '/api/v1/stats', :'a_key') r;
SELECT r.figures FROM pg_temp.pgrst('HEAD', '/api/v1/stats', :'a_key') r;
SELECT r.figures FROM pg_temp.pgrst('GET', '/api/v1/chantiers', :'a_key') r;
COMMIT;

-- GET /api/v1/stats, key a: 998 more reads pass (1000 in the hour), the
-- 1001st is refused with 429.
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
SELECT count(*) AS reads, bool_and(r.status = 200) AS all_passed,
       bool_and((r.response_headers ->> 'X-RateLimit-Remaining')::int = 998 - i) AS remaining_998_minus_i
  FROM generate_series(1, 998) i, LATERAL pg_temp.pgrst('GET', '/api/v1/stats', :'a_key', i) r;
COMMIT;
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
SELECT r.status, r.figures, r.detail -> 'headers' ? 'WWW-Authenticate' AS www_authenticate,
       (r.detail -> 'headers' ->> 'Retry-After')::int BETWEEN 3150 - 5 AND 4050 AS retry_after_52_to_68_minutes,
       abs((r.detail -> 'headers' ->> 'X-RateLimit-Reset')::bigint - extract(epoch FROM clock_timestamp())
           - (r.detail -> 'headers' ->> 'Retry-After')::int) <= 2 AS reset_is_retry_after_from_now
  FROM pg_temp.pgrst('GET', '/api/v1/stats', :'a_key') r;
-- the stats reads, refused or not, never charged the catch-all's 'reads'
-- (one route's limits per request): one more read of chantiers is its 3rd
SELECT r.figures FROM pg_temp.pgrst('GET', '/api/v1/chantiers', :'a_key') r;
COMMIT;
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
select set_config('search_path', '"api"', true), set_config('role', 'regress_rl_anon', true), set_config('request.jwt.claims', '{"role":"regress_rl_anon"}', true), set_config('request.method', 'GET', true), set_config('request.path', '/api/v1/stats', true), set_config('request.headers', format('{"accept":"*/*","x-api-key":"%s"}', :'a_key'), true), set_config('request.cookies', '{}', true) \gset
\set VERBOSITY sqlstate
select "apikeys"."pre_request"();
\set VERBOSITY default
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT :'LAST_ERROR_MESSAGE'::jsonb AS message;
-- key b reads stats from its own budget
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
SELECT r.figures FROM pg_temp.pgrst('GET', '/api/v1/stats', :'b_key') r;
COMMIT;

-- All or nothing with the key's own limits: key c's 'own' (10 an hour) is
-- tighter than 'create', so its figures are the headers; the 11th request
-- is refused by 'own' and charges no route limit.
BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE;
-- (MATERIALIZED: every request is made, then some are shown)
WITH requests AS MATERIALIZED (
    SELECT i, r.figures, r.detail ->> 'status' AS refused
      FROM generate_series(1, 11) i, LATERAL pg_temp.pgrst('POST', '/api/v1/chantiers', :'c_key', i) r)
SELECT * FROM requests WHERE i IN (1, 9, 10, 11) ORDER BY i;
COMMIT;

-- Cost: POST /api/v1/exports charges 10 of 'exports' (25 an hour): two
-- pass, the third is refused.
BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE;
SELECT i, r.figures
  FROM generate_series(1, 3) i, LATERAL pg_temp.pgrst('POST', '/api/v1/exports', :'b_key', i) r ORDER BY i;
COMMIT;

------------------------------------------------------------------------------
-- A route's limits change: a limit that keeps its name keeps its state
------------------------------------------------------------------------------
\c - :su
\set VERBOSITY default
\set SHOW_CONTEXT never
-- key c without its own limit: 'create' counted its 10 creates only
SELECT apikeys.apikey_set_limits(:'c_id', NULL);
-- 'stats' of 1001: key a's 1000 reads still count, one more passes
SELECT limits FROM apikeys.postgrest_route_set_limits('GET', '/api/v1/stats', ARRAY[('stats', 1001, '1 hour')]::apikeys.named_limit[]);
\c - regress_rl_authenticator
\set VERBOSITY default
\set SHOW_CONTEXT never
:helpers
BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE;
SELECT r.figures FROM pg_temp.pgrst('POST', '/api/v1/chantiers', :'c_key') r;
COMMIT;
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
SELECT i, r.figures FROM generate_series(1, 2) i, LATERAL pg_temp.pgrst('GET', '/api/v1/stats', :'a_key', i) r ORDER BY i;
COMMIT;
\c - :su
\set VERBOSITY default
\set SHOW_CONTEXT never
-- a new name starts from nothing; no limits: the route charges nothing
SELECT limits FROM apikeys.postgrest_route_set_limits('GET', '/api/v1/stats', ARRAY[('stats2', 1000, '1 hour')]::apikeys.named_limit[]);
SELECT limits, cost FROM apikeys.postgrest_route_set_limits('POST', '/api/v1/chantiers', NULL);
SELECT detail -> 'changed' AS changed FROM apikeys.audit WHERE action = 'postgrest_route_changed'
 ORDER BY audit_id DESC LIMIT 1;
\c - regress_rl_authenticator
\set VERBOSITY default
\set SHOW_CONTEXT never
:helpers
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
SELECT r.figures FROM pg_temp.pgrst('GET', '/api/v1/stats', :'a_key') r;
COMMIT;
BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE;
SELECT r.figures FROM pg_temp.pgrst('POST', '/api/v1/chantiers', :'a_key') r;
COMMIT;

------------------------------------------------------------------------------
-- Cost 0: the route checks, charges nothing
------------------------------------------------------------------------------
-- GET /api/v1/quota (cost 0) checks key d's 'own' (2 an hour) and its own
-- 'peek' and charges neither; nor the catch-all's 'reads' (only the most
-- specific route's limits apply).
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
SELECT i, r.figures FROM generate_series(1, 3) i, LATERAL pg_temp.pgrst('GET', '/api/v1/quota', :'d_key', i) r ORDER BY i;
COMMIT;
-- two creates (a route without limits now) spend 'own'; then the check-only
-- route refuses too: no unit is left
BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE;
SELECT i, r.figures FROM generate_series(1, 2) i, LATERAL pg_temp.pgrst('POST', '/api/v1/chantiers', :'d_key', i) r ORDER BY i;
COMMIT;
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
SELECT r.figures, r.detail -> 'headers' ? 'Retry-After' AS retry_after
  FROM pg_temp.pgrst('GET', '/api/v1/quota', :'d_key') r;
COMMIT;

------------------------------------------------------------------------------
-- A refused request charges nothing, anywhere
------------------------------------------------------------------------------
-- Key i (initech: tenant limit 't' 30 an hour; own 'own' 100 an hour, rate
-- limit 100 an hour, usage cap 100): POST /api/v1/exports costs 10 of
-- each, and of 'exports' (25 an hour): two pass, the third is refused by
-- 'exports' (5 left) although every other limit has room.
BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE;
SELECT i, r.figures FROM generate_series(1, 3) i, LATERAL pg_temp.pgrst('POST', '/api/v1/exports', :'i_key', i) r ORDER BY i;
COMMIT;
-- GET /api/v1/stats ('stats2', 1000 an hour) costs 1: ten pass, the
-- eleventh is refused by the tenant's 't' (10 were left).
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
WITH requests AS MATERIALIZED (
    SELECT i, r.figures FROM generate_series(1, 11) i, LATERAL pg_temp.pgrst('GET', '/api/v1/stats', :'i_key', i) r)
SELECT * FROM requests WHERE i IN (1, 10, 11) ORDER BY i;
COMMIT;

\c - :su
\set VERBOSITY default
\set SHOW_CONTEXT never
:helpers
:su_helpers
-- key d: 'peek' and 'reads' were never charged, 'own' by the two creates only
SELECT pg_temp.left_of(:'d_key', 'GET exact /api/v1/quota', ARRAY[('peek', 5, '1 hour')]::apikeys.named_limit[]);
SELECT pg_temp.left_of(:'d_key', 'GET like /api/v1/%', ARRAY[('reads', 5000, '1 hour')]::apikeys.named_limit[]);
-- key i: 20 of each of its limits (two exports, 't' 10 left after them),
-- 'exports' 5; then 10 reads: 't' 0, the rest 10 fewer, 'stats2' 990.  The
-- refused export and the refused read charged nothing.  ('t' raised first,
-- keeping its state, so that the route limits are checked too: they are
-- only when the tenant's pass.)
SELECT apikeys.tenant_set_limits('initech', ARRAY[('t', 1000, '1 hour')]::apikeys.named_limit[]);
SELECT pg_temp.left_of(:'i_key', 'POST exact /api/v1/exports', ARRAY[('exports', 25, '1 hour')]::apikeys.named_limit[]);
SELECT pg_temp.left_of(:'i_key', 'GET exact /api/v1/stats', ARRAY[('stats2', 1000, '1 hour')]::apikeys.named_limit[]);
-- the gate's entry point refuses what the gate never passes: route limits
-- without their route, a cost that is NULL or negative
SELECT apikeys_internal._authenticate_route(:'i_key', NULL, NULL, NULL, ARRAY[('x', 1, '1 hour')]::apikeys.named_limit[], 1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT apikeys_internal._authenticate_route(:'i_key', NULL, NULL, 'GET exact /x', NULL, -1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT apikeys_internal._authenticate_route(:'i_key', NULL, NULL, 'GET exact /x', NULL, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

------------------------------------------------------------------------------
-- Which route's limits: the most specific matching route that has limits
-- (or a cost): exact, then like, then regex; then the request's method,
-- then GET for HEAD, then *; then the longest pattern.
------------------------------------------------------------------------------
INSERT INTO apikeys.postgrest_route (method, path, match, limits) VALUES
    ('GET',  '/api/v2/items/1',        'exact', ARRAY[('exact', 11, '1 hour')]::apikeys.named_limit[]),
    ('GET',  '/api/v2/items/%',        'like',  ARRAY[('like', 22, '1 hour')]::apikeys.named_limit[]),
    ('GET',  '/api/v2/items/2%',       'like',  ARRAY[('like_longer', 23, '1 hour')]::apikeys.named_limit[]),
    ('GET',  '^/api/v2/items/[0-9]+$', 'regex', ARRAY[('regex', 33, '1 hour')]::apikeys.named_limit[]),
    ('*',    '/api/v2/m',              'exact', ARRAY[('any', 44, '1 hour')]::apikeys.named_limit[]),
    ('GET',  '/api/v2/m',              'exact', ARRAY[('get', 55, '1 hour')]::apikeys.named_limit[]),
    ('HEAD', '/api/v2/m',              'exact', ARRAY[('head', 66, '1 hour')]::apikeys.named_limit[]),
    ('POST', '/api/v2/%',              'like',  ARRAY[('post_like', 77, '1 hour')]::apikeys.named_limit[]);
-- (requests as PostgREST's connection makes them, from this session)
SELECT v.method, v.path, r.figures
  FROM (VALUES (1, 'GET', '/api/v2/items/1'),    -- exact over like and regex
               (2, 'GET', '/api/v2/items/2'),    -- like over regex, the longer like
               (3, 'GET', '/api/v2/items/3'),    -- like over regex
               (4, 'HEAD', '/api/v2/m'),         -- its own method over GET and *
               (5, 'GET', '/api/v2/m'),
               (6, 'DELETE', '/api/v2/m'),       -- *
               (7, 'POST', '/api/v2/m'),         -- an exact * over a like POST
               (8, 'POST', '/api/v2/n')) v(n, method, path),
       LATERAL pg_temp.pgrst(v.method, v.path, :'g_key', v.n) r
 ORDER BY v.n;
-- without the exact and like routes' limits, the regex's; without HEAD's,
-- GET's; without GET's, *'s; a path only a route without limits matches
-- charges no route limit
SELECT limits FROM apikeys.postgrest_route_set_limits('GET', '/api/v2/items/1', NULL);
SELECT limits FROM apikeys.postgrest_route_set_limits('GET', '/api/v2/items/%', NULL, match => 'like');
SELECT limits FROM apikeys.postgrest_route_set_limits('GET', '/api/v2/items/2%', NULL, match => 'like');
SELECT limits FROM apikeys.postgrest_route_set_limits('HEAD', '/api/v2/m', NULL);
SELECT v.method, v.path, r.figures
  FROM (VALUES (1, 'GET', '/api/v2/items/1'), (2, 'GET', '/api/v2/items/2'), (3, 'HEAD', '/api/v2/m'),
               (4, 'GET', '/api/v2/items/x')) v(n, method, path),
       LATERAL pg_temp.pgrst(v.method, v.path, :'g_key', v.n) r
 ORDER BY v.n;
SELECT limits FROM apikeys.postgrest_route_set_limits('GET', '/api/v2/m', NULL);
SELECT v.method, v.path, r.figures
  FROM (VALUES (1, 'HEAD', '/api/v2/m'), (2, 'GET', '/api/v2/m')) v(n, method, path),
       LATERAL pg_temp.pgrst(v.method, v.path, :'g_key', v.n) r
 ORDER BY v.n;
-- a specific route with only a cost (no limits) is the route charged, so
-- it shadows a catch-all's limits: its requests charge no route limit
INSERT INTO apikeys.postgrest_route (method, path, match, limits) VALUES
    ('GET', '/api/v3/%', 'like', ARRAY[('catch_all', 5, '1 hour')]::apikeys.named_limit[]);
INSERT INTO apikeys.postgrest_route (method, path, match, cost) VALUES ('GET', '/api/v3/cheap', 'exact', 0);
SELECT v.method, v.path, r.figures
  FROM (VALUES (1, 'GET', '/api/v3/other'), (2, 'GET', '/api/v3/cheap'), (3, 'GET', '/api/v3/cheap'),
               (4, 'GET', '/api/v3/other')) v(n, method, path),
       LATERAL pg_temp.pgrst(v.method, v.path, :'g_key', v.n) r
 ORDER BY v.n;
-- with a cost of 1 and no limits the specific route is no longer chosen:
-- the catch-all's limit counts its requests
UPDATE apikeys.postgrest_route SET cost = 1 WHERE path = '/api/v3/cheap';
SELECT v.method, v.path, r.figures
  FROM (VALUES (1, 'GET', '/api/v3/cheap')) v(n, method, path),
       LATERAL pg_temp.pgrst(v.method, v.path, :'g_key', v.n) r;

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_rl_authenticator, regress_rl_anon, regress_rl_tenant;
DROP ROLE regress_rl_authenticator, regress_rl_anon, regress_rl_tenant;
