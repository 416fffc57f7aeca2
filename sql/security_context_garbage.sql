--
-- security_context_garbage: whatever a caller puts in request.jwt.claims,
-- request.headers, apikeys.actor or apikeys.request_id, a refused
-- management call fails with its own authorization error (and leaves its
-- apikeys_audit_denied log line: test/t/denied_attempts_logged.sh), and a
-- successful change still writes its audit row.  Garbage reads as absent:
-- a NUL escape, invalid JSON, JSON that is not an object, 10 MB, nesting
-- deeper than the parser's stack.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_garbage_admin;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT current_user AS su \gset

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT key_id AS globex_k FROM apikeys.apikey_create('globex', 'victim') \gset
CREATE ROLE regress_garbage_admin LOGIN;
SELECT apikeys.grant_tenant('regress_garbage_admin', 'acme');

\c - regress_garbage_admin
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT key_id AS acme_k FROM apikeys.apikey_create('acme', 'own') \gset

-- Run a statement; 'ok' or SQLSTATE and message (uuids masked).
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
-- With `setting` set to `value` for this transaction: two refused calls (a
-- foreign key, a foreign tenant), and a change of our own key with the
-- audit rows it wrote and their labels.
CREATE FUNCTION pg_temp.garbage(setting text, value text, foreign_key uuid, own_key uuid)
    RETURNS TABLE (revoke_foreign text, create_foreign text, audit_rows bigint, labels text)
    LANGUAGE plpgsql AS $$
DECLARE
    last bigint := (SELECT max(audit_id) FROM apikeys.audit_log);
BEGIN
    PERFORM set_config(setting, value, true);
    revoke_foreign := pg_temp.try(format('SELECT apikeys.apikey_revoke(%L)', foreign_key));
    create_foreign := pg_temp.try($q$SELECT apikeys.apikey_create('globex', 'planted')$q$);
    PERFORM apikeys.apikey_update(own_key, description => 'with garbage in ' || setting);
    SELECT count(*), string_agg(coalesce(a.actor, '-') || '/' || coalesce(a.request_id, '-'), ',')
      INTO audit_rows, labels
      FROM apikeys.audit_log a WHERE a.audit_id > last;
    PERFORM set_config(setting, '', true);
    RETURN NEXT;
END
$$;

BEGIN;
SELECT * FROM pg_temp.garbage('request.jwt.claims', '{"sub":"\u0000"}', :'globex_k', :'acme_k');
SELECT * FROM pg_temp.garbage('request.jwt.claims', '{"sub":"\ud800"}', :'globex_k', :'acme_k');
SELECT * FROM pg_temp.garbage('request.jwt.claims', 'not json {', :'globex_k', :'acme_k');
SELECT * FROM pg_temp.garbage('request.jwt.claims', '"a string"', :'globex_k', :'acme_k');
SELECT * FROM pg_temp.garbage('request.jwt.claims', '[1, 2, 3]', :'globex_k', :'acme_k');
SELECT * FROM pg_temp.garbage('request.jwt.claims', 'null', :'globex_k', :'acme_k');
SELECT * FROM pg_temp.garbage('request.jwt.claims', repeat('x', 10 * 1024 * 1024), :'globex_k', :'acme_k');
SELECT * FROM pg_temp.garbage('request.headers', repeat('[', 100000), :'globex_k', :'acme_k');
-- within the 16 kB limit: parsed, refused by the parser's stack check or
-- not an object
SELECT * FROM pg_temp.garbage('request.headers', repeat('[', 16000), :'globex_k', :'acme_k');
SELECT * FROM pg_temp.garbage('request.headers', repeat('[', 5000) || repeat(']', 5000), :'globex_k', :'acme_k');
SELECT * FROM pg_temp.garbage('request.headers', '{"x-request-id": {"nested": [1]}}', :'globex_k', :'acme_k');
SELECT * FROM pg_temp.garbage('request.headers', '{"x-request-id": "' || repeat('r', 300) || '"}', :'globex_k', :'acme_k');
SELECT * FROM pg_temp.garbage('apikeys.actor', repeat('a', 10 * 1024 * 1024), :'globex_k', :'acme_k');
SELECT * FROM pg_temp.garbage('apikeys.request_id', repeat('é', 5000), :'globex_k', :'acme_k');
-- control: well-formed values label the row
SELECT * FROM pg_temp.garbage('request.jwt.claims', '{"sub":"jwt-user"}', :'globex_k', :'acme_k');
COMMIT;
-- Set for the session, garbage is ignored before it is read.
SET request.jwt.claims = '{"sub":"\u0000"}';
SELECT * FROM pg_temp.garbage('apikeys.request_id', 'req-ok', :'globex_k', :'acme_k');
RESET request.jwt.claims;
-- Nothing was created or revoked in globex.
\c - :su
SELECT count(*) AS globex_keys, count(*) FILTER (WHERE status = 'active') AS active FROM apikeys.keys WHERE tenant = 'globex';
SELECT ok FROM apikeys.audit_check();

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_garbage_admin;
DROP ROLE regress_garbage_admin;
