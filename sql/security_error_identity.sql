--
-- security_error_identity: another tenant's key and a key that does not exist
-- give byte-identical errors (SQLSTATE, message, detail, hint and every
-- CONTEXT line), through every key-scoped management function, so a tenant
-- cannot probe for other tenants' key ids.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_ident_acme;
RESET client_min_messages;
\set VERBOSITY verbose
\set SHOW_CONTEXT always

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT key_id AS globex_k FROM apikeys.apikey_create('globex', 'globex production') \gset
CREATE ROLE regress_ident_acme;
SELECT apikeys.grant_tenant('regress_ident_acme', 'acme');

-- Everything an error carries, with the key id replaced by <id> (and this
-- session's temporary schema pg_temp_N, whose number the server picks, by
-- pg_temp).
CREATE FUNCTION pg_temp.err(sql text, id uuid) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; m text; d text; h text; c text;
BEGIN
    EXECUTE format(sql, id);
    RETURN 'ok';
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL,
                            h = PG_EXCEPTION_HINT, c = PG_EXCEPTION_CONTEXT;
    RETURN regexp_replace(replace(concat_ws(E'\n', st, m, d, h, c), id::text, '<id>'),
                          'pg_temp_[0-9]+\.', 'pg_temp.', 'g');
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.err(text, uuid) TO regress_ident_acme;

SET ROLE regress_ident_acme;
CREATE TEMP TABLE calls (sql text);
INSERT INTO calls VALUES
    ('SELECT apikeys.apikey_revoke(%L)'), ('SELECT apikeys.apikey_rotate(%L)'),
    ('SELECT apikeys.apikey_rotate(%L, ''1 hour'')'),
    ('SELECT apikeys.apikey_disable(%L)'), ('SELECT apikeys.apikey_enable(%L)'),
    ('SELECT apikeys.apikey_update(%L, name => ''x'')'), ('SELECT apikeys.apikey_delete(%L)'),
    ('SELECT apikeys.apikey_set_policy(%L, rate_limit => 5)');
-- PL/pgSQL reports one CONTEXT line more for an expression's first run in a
-- transaction (before its simple-expression cache holds it), whatever the
-- argument: warm every call up in the same transaction first, so the two
-- errors compared below differ only by the key they name.
BEGIN;
SELECT count(pg_temp.err(c.sql, gen_random_uuid())) AS warmed_up FROM calls c;
-- One row per call: the foreign key's error equals the unknown key's.
SELECT c.sql, f = u AS identical, f LIKE '42704%key_not_found%' AS key_not_found
  FROM calls c,
       LATERAL pg_temp.err(c.sql, :'globex_k') f,
       LATERAL pg_temp.err(c.sql, gen_random_uuid()) u
 ORDER BY c.sql;
COMMIT;
-- What both look like, once
SELECT pg_temp.err('SELECT apikeys.apikey_revoke(%L)', :'globex_k');
SELECT pg_temp.err('SELECT apikeys.apikey_rotate(%L)', :'globex_k');
RESET ROLE;

-- The globex key is untouched.
SELECT status, rotation_count FROM apikeys.keys WHERE key_id = :'globex_k';

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_ident_acme;
DROP ROLE regress_ident_acme;
