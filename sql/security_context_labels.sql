--
-- security_context_labels: the actor and request id in audit rows (and in
-- refusals' log lines, test/t/denied_attempts_logged.sh) are stated per
-- transaction, so a pooled connection (PgBouncer in transaction mode) never
-- labels one client's changes with another's.
--
-- Sources, first found wins: the actor/request_id arguments of set_tenant()
-- and authenticate() (bound with the tenant, following savepoints); the
-- apikeys.actor / apikeys.request_id settings when set for this transaction
-- (SET LOCAL, set_config(..., true), a function's SET clause); PostgREST's
-- request.jwt.claims "sub" / request.headers "x-request-id", under the same
-- rule.  A value set for the session (SET, set_config(..., false), ALTER
-- ROLE ... SET) is ignored with a WARNING; so is one over 200 characters.
--
-- The attack: client A sets a session-level actor and commits; client B,
-- next on the same connection, makes a change: B's audit row must not carry
-- A's actor or request id.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_lbl_admin, regress_lbl_app;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT current_user AS su \gset

-- Run a statement; 'ok' or SQLSTATE and message.
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
-- The labels of the newest audit row.
CREATE VIEW pg_temp.last_audit AS
    SELECT action, actor, request_id FROM apikeys.audit ORDER BY at DESC, audit_id DESC LIMIT 1;

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT key_id AS k, api_key AS acme_key FROM apikeys.apikey_create('acme', 'pooled') \gset
CREATE ROLE regress_lbl_admin LOGIN;
SELECT apikeys.grant_tenant('regress_lbl_admin', 'acme');

------------------------------------------------------------------------------
-- The attack: two clients through one pooled connection
------------------------------------------------------------------------------
-- client A
SET apikeys.actor = 'alice';
SET apikeys.request_id = 'req-A';
BEGIN;
SELECT apikeys.apikey_update(:'k', description => 'by A');
COMMIT;
SELECT * FROM pg_temp.last_audit;
-- client B: its own transaction on the same connection
BEGIN;
SELECT apikeys.apikey_update(:'k', description => 'by B');
COMMIT;
SELECT * FROM pg_temp.last_audit;
-- a plain SET inside B's transaction outlives it too: ignored as well
BEGIN;
SET apikeys.actor = 'mallory';
SELECT apikeys.apikey_update(:'k', description => 'by B again');
COMMIT;
SELECT * FROM pg_temp.last_audit;
RESET apikeys.actor;
RESET apikeys.request_id;

------------------------------------------------------------------------------
-- What counts as set for this transaction
------------------------------------------------------------------------------
BEGIN;
SET LOCAL apikeys.actor = 'local-actor';
SELECT set_config('apikeys.request_id', 'local-req', true) IS NOT NULL AS request_id_set;
SELECT apikeys_internal._actor() AS actor, apikeys_internal._request_id() AS request_id;
-- SET after SET LOCAL: the value would outlive the transaction
SET apikeys.actor = 'session-after-local';
SELECT apikeys_internal._actor() AS ignored;
-- SET LOCAL after SET: local again
SET LOCAL apikeys.actor = 'local-again';
SELECT apikeys_internal._actor() AS local_again;
-- a savepoint's SET LOCAL, released: still this transaction's
SAVEPOINT s1;
SET LOCAL apikeys.actor = 'in-savepoint';
RELEASE SAVEPOINT s1;
SELECT apikeys_internal._actor() AS released;
-- rolled back: the value before the savepoint comes back
SAVEPOINT s2;
SET LOCAL apikeys.actor = 'rolled-back';
ROLLBACK TO SAVEPOINT s2;
SELECT apikeys_internal._actor() AS after_rollback;
-- a plain SET inside a savepoint that is released outlives the transaction
SAVEPOINT s3;
SET apikeys.actor = 'session-in-savepoint';
RELEASE SAVEPOINT s3;
SELECT apikeys_internal._actor() AS ignored;
ROLLBACK;
-- (the SETs above were rolled back with the transaction)
SELECT current_setting('apikeys.actor') = '' AS actor_empty;
-- A function's SET clause lasts for the call: it counts.
CREATE FUNCTION pg_temp.as_batch() RETURNS text LANGUAGE sql
    SET apikeys.actor = 'batch-job' AS $$ SELECT apikeys_internal._actor() $$;
SELECT pg_temp.as_batch() AS function_set_clause;
------------------------------------------------------------------------------
-- PostgREST's claims and headers: transaction-local, as PostgREST sets them
------------------------------------------------------------------------------
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub":"jwt-user","role":"authenticated"}', true) IS NOT NULL AS claims,
       set_config('request.headers', '{"x-request-id":"hdr-1"}', true) IS NOT NULL AS headers;
SELECT apikeys_internal._actor() AS actor, apikeys_internal._request_id() AS request_id;
-- apikeys.actor set for the transaction wins over the claim
SET LOCAL apikeys.actor = 'app-user';
SELECT apikeys_internal._actor() AS actor;
ROLLBACK;
-- set for the session: ignored
SELECT set_config('request.jwt.claims', '{"sub":"someone-else"}', false) IS NOT NULL AS claims,
       set_config('request.headers', '{"x-request-id":"stale"}', false) IS NOT NULL AS headers;
BEGIN;
SELECT apikeys.apikey_update(:'k', description => 'stale claims');
COMMIT;
SELECT * FROM pg_temp.last_audit;
RESET request.jwt.claims;
RESET request.headers;

------------------------------------------------------------------------------
-- Per transaction: set_tenant() / authenticate() arguments
------------------------------------------------------------------------------
-- they win over every setting, session or local, and end with the transaction
SET apikeys.actor = 'stale-session';
BEGIN;
SET LOCAL apikeys.request_id = 'local-req';
SELECT apikeys.set_tenant('acme', actor => 'gw-user', request_id => 'gw-req');
SELECT apikeys.apikey_update(:'k', description => 'by the gateway');
SELECT * FROM pg_temp.last_audit;
COMMIT;
RESET apikeys.actor;
SELECT apikeys_internal._actor() AS after_commit, apikeys_internal._request_id() AS after_commit;
-- NULL keeps what the transaction stated; a later call may change one label
BEGIN;
SELECT apikeys.set_tenant('acme', 'first', 'req-1');
SELECT apikeys.set_tenant('acme', actor => 'second');
SELECT apikeys_internal._actor() AS actor, apikeys_internal._request_id() AS request_id;
-- an unstated label falls back to the settings
ROLLBACK;
BEGIN;
SET LOCAL apikeys.request_id = 'local-req';
SELECT apikeys.set_tenant('acme', actor => 'only-actor');
SELECT apikeys_internal._actor() AS actor, apikeys_internal._request_id() AS request_id;
ROLLBACK;
-- authenticate(): the labels bind with a valid key only
BEGIN;
SELECT code FROM apikeys.authenticate('ak_garbage', actor => 'nobody', request_id => 'r0');
SELECT apikeys_internal._actor() AS no_actor, apikeys_internal._request_id() AS no_request_id;
SELECT code FROM apikeys.authenticate(:'acme_key', actor => 'key-user', request_id => 'r1');
SELECT apikeys_internal._actor() AS actor, apikeys_internal._request_id() AS request_id;
-- positional, as the old call form plus two
SELECT code FROM apikeys.authenticate(:'acme_key', NULL, NULL, 'key-user-2');
SELECT apikeys_internal._actor() AS actor, apikeys_internal._request_id() AS request_id;
ROLLBACK;
-- the old call forms still work
BEGIN;
SELECT apikeys.set_tenant('acme');
SELECT code FROM apikeys.authenticate(:'acme_key', '{}', '127.0.0.1');
SELECT apikeys_internal._actor() AS actor;
ROLLBACK;

------------------------------------------------------------------------------
-- Bounded sizes: at most 200 characters, no control characters; errors
-- never echo the value
------------------------------------------------------------------------------
BEGIN;
SELECT pg_temp.try($$SELECT apikeys.set_tenant('acme', actor => repeat('x', 201))$$) AS actor_201,
       pg_temp.try($$SELECT apikeys.set_tenant('acme', actor => repeat('x', 10000000))$$) AS actor_10mb,
       pg_temp.try($$SELECT apikeys.set_tenant('acme', actor => '')$$) AS actor_empty;
SELECT pg_temp.try($$SELECT apikeys.set_tenant('acme', request_id => E'req\n2')$$) AS request_id_newline,
       pg_temp.try($$SELECT apikeys.authenticate('ak_garbage', request_id => repeat('r', 201))$$) AS authenticate_201,
       pg_temp.try($$SELECT apikeys.authenticate(NULL, actor => E'\t')$$) AS authenticate_tab;
SELECT * FROM apikeys.set_tenant('acme', actor => repeat('x', 201));
ROLLBACK;
BEGIN;
-- a refused label binds nothing
SELECT pg_temp.try($$SELECT apikeys.set_tenant('acme', 'ok', repeat('r', 300))$$) AS refused;
SELECT apikeys.current_tenant() AS unbound, apikeys_internal._actor() AS no_actor;
-- 200 characters, multibyte included, are fine
SELECT length(apikeys.set_tenant('acme', repeat('é', 200), repeat('r', 200))) AS tenant_len;
SELECT length(apikeys_internal._actor()) AS actor_len, length(apikeys_internal._request_id()) AS request_id_len;
ROLLBACK;
-- settings over 200 characters (or over 16 kB) are ignored with a WARNING
BEGIN;
SET LOCAL apikeys.actor = 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx';
SELECT length(current_setting('apikeys.actor')) AS set_len, apikeys_internal._actor() AS ignored;
SELECT set_config('apikeys.request_id', repeat('r', 20000), true) IS NOT NULL AS big;
SELECT apikeys_internal._request_id() AS ignored;
SELECT set_config('request.jwt.claims', json_build_object('sub', repeat('s', 300))::text, true) IS NOT NULL AS long_sub;
RESET apikeys.actor;
SELECT apikeys_internal._actor() AS ignored;
SELECT apikeys.apikey_update(:'k', description => 'long labels');
SELECT * FROM pg_temp.last_audit;
ROLLBACK;

------------------------------------------------------------------------------
-- ALTER ROLE ... SET is a session value: ignored (last: \c ends pg_temp)
------------------------------------------------------------------------------
ALTER ROLE regress_lbl_admin SET apikeys.actor = 'role-default';
\c - regress_lbl_admin
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT current_setting('apikeys.actor') AS role_default;
SELECT apikeys.apikey_update(:'k', description => 'role default');
\c - :su
SELECT action, actor, request_id FROM apikeys.audit ORDER BY at DESC, audit_id DESC LIMIT 1;
ALTER ROLE regress_lbl_admin RESET apikeys.actor;

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_lbl_admin;
DROP ROLE regress_lbl_admin;
