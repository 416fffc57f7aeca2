--
-- security_context_savepoints: the tenant binding (and the key and labels
-- that go with it) follows savepoints at any depth: ROLLBACK TO restores
-- exactly the binding in force when the savepoint was set, RELEASE keeps
-- the binding made under it.
--
-- The attack: with one level remembered, ROLLBACK TO an outer savepoint
-- over two levels of changes left the transaction unbound, and a key of
-- another tenant could then bind that tenant in a transaction that had
-- acted for the first one.  Here it must fail with tenant_context_conflict.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_ctx_app, regress_ctx_gateway;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT current_user AS su \gset

SELECT tenant FROM apikeys.tenant_create('a');
SELECT tenant FROM apikeys.tenant_create('b');
SELECT tenant FROM apikeys.tenant_create('c');
SELECT tenant FROM apikeys.tenant_create('z');
SELECT key_id AS a1, api_key AS a1_key FROM apikeys.apikey_create('a', 'a one') \gset
SELECT key_id AS a2, api_key AS a2_key FROM apikeys.apikey_create('a', 'a two') \gset
SELECT key_id AS z1, api_key AS z1_key FROM apikeys.apikey_create('z', 'z one') \gset
CREATE ROLE regress_ctx_app LOGIN;        -- verifies keys, like PostgREST's `authenticated`
CREATE ROLE regress_ctx_gateway LOGIN;    -- trusted to switch tenants
SELECT apikeys.grant_verifier('regress_ctx_app');
SELECT apikeys.grant_verifier('regress_ctx_gateway');
GRANT EXECUTE ON FUNCTION apikeys.set_tenant(text, text, text) TO regress_ctx_gateway;
GRANT SELECT ON apikeys.keys, apikeys.credential TO regress_ctx_app, regress_ctx_gateway;
GRANT EXECUTE ON FUNCTION apikeys.read_keys() TO regress_ctx_app, regress_ctx_gateway;

-- The whole binding: tenant, source, key, actor, request id.
CREATE FUNCTION pg_temp.ctx() RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(' ', coalesce(apikeys.current_tenant(), '(none)'), apikeys_internal._context_source(),
                     CASE WHEN apikeys.current_key_id() IS NULL THEN 'no-key'
                          ELSE (SELECT 'key:' || name FROM apikeys.credential WHERE key_id = apikeys.current_key_id()) END,
                     'actor:' || coalesce(apikeys_internal._context_actor(), '-'),
                     'request:' || coalesce(apikeys_internal._context_request_id(), '-'))
$$;

------------------------------------------------------------------------------
-- Three levels of set_tenant (the superuser; the gateway's attack is below)
------------------------------------------------------------------------------
BEGIN;
SELECT apikeys.set_tenant('a');
SAVEPOINT s1;
SELECT apikeys.set_tenant('b');
SAVEPOINT s2;
SELECT apikeys.set_tenant('c');
SELECT pg_temp.ctx() AS at_c;
ROLLBACK TO SAVEPOINT s2;
SELECT pg_temp.ctx() AS back_to_b;
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.ctx() AS back_to_a;
-- the savepoints are still there, and work again
SELECT apikeys.set_tenant('c');
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.ctx() AS again_a;
COMMIT;
SELECT pg_temp.ctx() AS after_commit;

-- Straight from the third level to the first.
BEGIN;
SELECT apikeys.set_tenant('a');
SAVEPOINT s1;
SELECT apikeys.set_tenant('b');
SAVEPOINT s2;
SELECT apikeys.set_tenant('c');
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.ctx() AS from_c_to_a;
ROLLBACK;

-- Levels that change nothing are skipped over; two changes in one level
-- restore what the level started with.
BEGIN;
SELECT apikeys.set_tenant('a');
SAVEPOINT s1;
SAVEPOINT s2;
SELECT apikeys.set_tenant('b');
SELECT apikeys.set_tenant('c');
SAVEPOINT s3;
SAVEPOINT s4;
ROLLBACK TO SAVEPOINT s3;
SELECT pg_temp.ctx() AS still_c;
ROLLBACK TO SAVEPOINT s2;
SELECT pg_temp.ctx() AS back_to_a;
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.ctx() AS still_a;
ROLLBACK;

------------------------------------------------------------------------------
-- RELEASE
------------------------------------------------------------------------------
-- RELEASE of the innermost keeps its binding; the outer rollback undoes both.
BEGIN;
SELECT apikeys.set_tenant('a');
SAVEPOINT s1;
SELECT apikeys.set_tenant('b');
SAVEPOINT s2;
SELECT apikeys.set_tenant('c');
RELEASE SAVEPOINT s2;
SELECT pg_temp.ctx() AS released_c;
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.ctx() AS back_to_a;
ROLLBACK;
-- RELEASE of an outer savepoint releases the inner ones: the binding
-- becomes the transaction's, which a later savepoint's rollback keeps.
BEGIN;
SELECT apikeys.set_tenant('a');
SAVEPOINT s1;
SELECT apikeys.set_tenant('b');
SAVEPOINT s2;
SELECT apikeys.set_tenant('c');
RELEASE SAVEPOINT s1;
SELECT pg_temp.ctx() AS released_c;
SAVEPOINT s3;
SELECT apikeys.set_tenant('b');
ROLLBACK TO SAVEPOINT s3;
SELECT pg_temp.ctx() AS still_c;
ROLLBACK;
-- A level with no change of its own, released over a changed one: the
-- rollback of the outer savepoint still finds the first binding.
BEGIN;
SELECT apikeys.set_tenant('a');
SAVEPOINT s1;
SAVEPOINT s2;
SELECT apikeys.set_tenant('c');
RELEASE SAVEPOINT s2;
SELECT pg_temp.ctx() AS released_c;
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.ctx() AS back_to_a;
ROLLBACK;
-- Released into a parent that had changed it too: the parent's rollback
-- restores what the parent started with, not the parent's own binding.
BEGIN;
SELECT apikeys.set_tenant('a');
SAVEPOINT s1;
SELECT apikeys.set_tenant('b');
SAVEPOINT s2;
SELECT apikeys.set_tenant('c');
RELEASE SAVEPOINT s2;
SAVEPOINT s3;
SELECT apikeys.set_tenant('z');
ROLLBACK TO SAVEPOINT s3;
SELECT pg_temp.ctx() AS still_c;
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.ctx() AS back_to_a;
ROLLBACK;

------------------------------------------------------------------------------
-- Bindings made after the first savepoint; keys and labels follow too
------------------------------------------------------------------------------
BEGIN;
SAVEPOINT s1;
SELECT apikeys.set_tenant('a', actor => 'alice', request_id => 'req-1');
SAVEPOINT s2;
SELECT apikeys.set_tenant('a', actor => 'bob');              -- request id kept
SAVEPOINT s3;
SELECT code FROM apikeys.authenticate(:'a1_key', request_id => 'req-3');
SELECT pg_temp.ctx() AS three_levels;
ROLLBACK TO SAVEPOINT s3;
SELECT pg_temp.ctx() AS bob_no_key;
ROLLBACK TO SAVEPOINT s2;
SELECT pg_temp.ctx() AS alice;
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.ctx() AS unbound;
ROLLBACK;
-- set_tenant, then a key in a savepoint: the key goes with the savepoint,
-- the trusted binding stays.
BEGIN;
SELECT apikeys.set_tenant('a');
SAVEPOINT s1;
SELECT code FROM apikeys.authenticate(:'a1_key');
SELECT pg_temp.ctx() AS trusted_with_key;
SAVEPOINT s2;
SELECT code FROM apikeys.authenticate(:'a2_key', actor => 'carol');
RELEASE SAVEPOINT s2;
SELECT pg_temp.ctx() AS key_a2_released;
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.ctx() AS trusted_no_key;
ROLLBACK;

------------------------------------------------------------------------------
-- Fifty levels
------------------------------------------------------------------------------
BEGIN;
SELECT apikeys.set_tenant('t0');
\o /dev/null
SELECT s FROM generate_series(1, 50) i,
       LATERAL (VALUES (format('SAVEPOINT s%s', i)),
                       (format('SELECT apikeys.set_tenant(%L)', 't' || i))) v(s) \gexec
\o
SELECT pg_temp.ctx() AS level_50;
ROLLBACK TO SAVEPOINT s37;
SELECT pg_temp.ctx() AS before_s37;
RELEASE SAVEPOINT s20;
SELECT pg_temp.ctx() AS s20_released;
ROLLBACK TO SAVEPOINT s19;
SELECT pg_temp.ctx() AS before_s19;
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.ctx() AS before_s1;
COMMIT;

------------------------------------------------------------------------------
-- PL/pgSQL exception blocks are subtransactions too
------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.nest(depth int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM apikeys.set_tenant('n' || depth);
    IF depth < 5 THEN
        BEGIN
            PERFORM pg_temp.nest(depth + 1);
            RAISE EXCEPTION 'undo';
        EXCEPTION WHEN raise_exception THEN
            NULL;
        END;
    END IF;
END
$$;
BEGIN;
SELECT apikeys.set_tenant('a');
SELECT pg_temp.nest(1);
SELECT pg_temp.ctx() AS n1_kept;
ROLLBACK;

------------------------------------------------------------------------------
-- The attack by a verifier: two levels of key bindings, ROLLBACK TO the
-- first savepoint, then a key of tenant z
------------------------------------------------------------------------------
\c - regress_ctx_app
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
CREATE FUNCTION pg_temp.ctx() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(apikeys.current_tenant(), '(none)') || ' ' ||
           CASE WHEN apikeys.current_key_id() IS NULL THEN 'no-key'
                ELSE coalesce((SELECT 'key:' || name FROM apikeys.keys WHERE key_id = apikeys.current_key_id()), 'key:(not visible)') END
$$;
BEGIN;
SELECT code FROM apikeys.authenticate(:'a1_key');
SAVEPOINT s1;
SELECT code FROM apikeys.authenticate(:'a2_key');
SAVEPOINT s2;
SELECT code FROM apikeys.authenticate(:'a1_key');
SELECT pg_temp.ctx() AS level_2;
ROLLBACK TO SAVEPOINT s2;
SELECT pg_temp.ctx() AS back_to_a2;
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.ctx() AS back_to_a1;
SELECT pg_temp.try(format('SELECT apikeys.authenticate(%L)', :'z1_key')) AS authenticate_z;
SELECT * FROM apikeys.authenticate(:'z1_key');
ROLLBACK;
BEGIN;
SELECT code FROM apikeys.authenticate(:'a1_key');
SAVEPOINT s1;
SELECT code FROM apikeys.authenticate(:'a2_key');
SAVEPOINT s2;
SELECT code FROM apikeys.authenticate(:'a1_key');
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.try(format('SELECT apikeys.authenticate(%L)', :'z1_key')) AS authenticate_z;
SELECT pg_temp.ctx() AS still_a1, count(*) FILTER (WHERE tenant = 'z') AS z_keys_seen FROM apikeys.keys;
ROLLBACK;
-- A binding made after the savepoint goes with it: then z may bind (the
-- transaction no longer acted for a).
BEGIN;
SAVEPOINT s1;
SELECT code FROM apikeys.authenticate(:'a1_key');
SAVEPOINT s2;
SELECT code FROM apikeys.authenticate(:'a2_key');
RELEASE SAVEPOINT s2;
SELECT pg_temp.ctx() AS a2_released;
ROLLBACK TO SAVEPOINT s1;
SELECT pg_temp.ctx() AS unbound;
SELECT code, tenant FROM apikeys.authenticate(:'z1_key');
ROLLBACK;

------------------------------------------------------------------------------
-- The attack by the gateway: set_tenant a, b, c at three levels
------------------------------------------------------------------------------
\c - regress_ctx_gateway
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
BEGIN;
SELECT apikeys.set_tenant('a');
SAVEPOINT s1;
SELECT apikeys.set_tenant('b');
SAVEPOINT s2;
SELECT apikeys.set_tenant('c');
ROLLBACK TO SAVEPOINT s1;
SELECT apikeys.current_tenant() AS back_to_a;
SELECT pg_temp.try(format('SELECT apikeys.authenticate(%L)', :'z1_key')) AS authenticate_z;
SELECT apikeys.current_tenant() AS still_a, apikeys.current_key_id() AS no_key,
       count(*) FILTER (WHERE tenant = 'z') AS z_keys_seen FROM apikeys.keys;
ROLLBACK;

\c - :su
SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_ctx_app, regress_ctx_gateway;
DROP ROLE regress_ctx_app, regress_ctx_gateway;
