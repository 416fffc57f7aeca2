--
-- security_search_path: SECURITY DEFINER functions pin search_path, and
-- nothing a tenant role can create (functions, operators, tables, temporary
-- tables) changes what the extension does.  Every hostile object raises a
-- NOTICE 'HIJACKED ...' and logs itself in a table, and returns a wrong
-- answer; none may run while the extension works.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP SCHEMA IF EXISTS regress_evil CASCADE;
DROP ROLE IF EXISTS regress_sp_admin;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT current_user AS su \gset

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT key_id AS globex_k, api_key AS globex_key FROM apikeys.apikey_create('globex', 'globex key') \gset
CREATE ROLE regress_sp_admin LOGIN;
SELECT apikeys.grant_tenant('regress_sp_admin', 'acme', 'manage');
SELECT apikeys.grant_tenant('regress_sp_admin', 'acme', 'audit');
SELECT apikeys.grant_verifier('regress_sp_admin');
-- The worst case: the role owns a schema and may also create in public.
CREATE SCHEMA regress_evil AUTHORIZATION regress_sp_admin;
GRANT CREATE ON SCHEMA public TO regress_sp_admin;

------------------------------------------------------------------------------
-- The tenant role plants its objects
------------------------------------------------------------------------------
\c - regress_sp_admin
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
SELECT pg_temp.try('SELECT 1');   -- plan its expressions with a clean search_path
CREATE TABLE regress_evil.hijack_log (what text);
GRANT INSERT ON regress_evil.hijack_log TO PUBLIC;
-- Functions shadowing pg_catalog and pgcrypto ones, in its schema and in public.
DO $$
DECLARE
    f text[];
BEGIN
    FOREACH f SLICE 1 IN ARRAY ARRAY[
        -- name, arguments, result type, wrong answer
        ['digest', 'text, text', 'bytea', '''\x00''::bytea'],
        ['digest', 'bytea, text', 'bytea', '''\x00''::bytea'],
        ['sha256', 'bytea', 'bytea', '''\x00''::bytea'],
        ['sha256', 'text', 'bytea', '''\x00''::bytea'],
        ['now', '', 'timestamptz', '''2000-01-01''::timestamptz'],
        ['clock_timestamp', '', 'timestamptz', '''2000-01-01''::timestamptz'],
        ['statement_timestamp', '', 'timestamptz', '''2000-01-01''::timestamptz'],
        ['gen_random_uuid', '', 'uuid', '''00000000-0000-0000-0000-000000000000''::uuid'],
        ['"coalesce"', 'text, text', 'text', '''HIJACKED'''],
        ['"nullif"', 'text, text', 'text', '''HIJACKED'''],
        ['format', 'text', 'text', '''HIJACKED'''],
        ['format', 'text, text', 'text', '''HIJACKED'''],
        ['format', 'text, uuid', 'text', '''HIJACKED'''],
        ['format', 'text, name', 'text', '''HIJACKED'''],
        ['format', 'text, name, text', 'text', '''HIJACKED'''],
        ['current_setting', 'text', 'text', '''HIJACKED'''],
        ['current_setting', 'text, boolean', 'text', '''{"sub":"HIJACKED"}'''],
        ['to_jsonb', 'anyelement', 'jsonb', '''{}''::jsonb'],
        ['encode', 'bytea, text', 'text', '''HIJACKED'''],
        ['decode', 'text, text', 'bytea', '''\x00''::bytea'],
        ['convert_to', 'text, name', 'bytea', '''\x00''::bytea'],
        ['char_length', 'text', 'integer', '1'],
        ['cardinality', 'anyarray', 'integer', '1'],
        ['split_part', 'text, text, integer', 'text', '''HIJACKED'''],
        ['lower', 'text', 'text', '''hijacked'''],
        ['upper', 'text', 'text', '''HIJACKED'''],
        ['to_char', 'timestamp, text', 'text', '''HIJACKED'''],
        ['inet_client_addr', '', 'inet', '''6.6.6.6''::inet'],
        ['pg_current_xact_id', '', 'xid8', '''0''::xid8'],
        ['pg_has_role', 'name, oid, text', 'boolean', 'true'],
        ['pg_has_role', 'name, name, text', 'boolean', 'true'],
        ['jsonb_typeof', 'jsonb', 'text', '''object'''],
        ['array_position', 'anycompatiblearray, anycompatible', 'integer', 'NULL'],
        ['"least"', 'timestamptz, timestamptz', 'timestamptz', '''2000-01-01''::timestamptz'],
        -- operator implementations
        ['eq_text', 'text, text', 'boolean', 'true'],
        ['ne_text', 'text, text', 'boolean', 'false'],
        ['eq_uuid', 'uuid, uuid', 'boolean', 'true'],
        ['eq_bytea', 'bytea, bytea', 'boolean', 'true'],
        ['ne_bytea', 'bytea, bytea', 'boolean', 'false'],
        ['eq_name', 'name, name', 'boolean', 'true'],
        ['cat_bytea', 'bytea, bytea', 'bytea', '''\x00''::bytea'],
        ['get_text', 'jsonb, text', 'text', '''HIJACKED'''],
        ['get_jsonb', 'jsonb, text', 'jsonb', '''"HIJACKED"''::jsonb'],
        ['minus_keys', 'jsonb, text[]', 'jsonb', '''{}''::jsonb'],
        ['plus_int8', 'bigint, bigint', 'bigint', '1'],
        ['lt_tstz', 'timestamptz, timestamptz', 'boolean', 'true'],
        ['gt_tstz', 'timestamptz, timestamptz', 'boolean', 'true'],
        ['lt_interval', 'interval, interval', 'boolean', 'false']]
    LOOP
        EXECUTE format($f$
            CREATE FUNCTION regress_evil.%1$s(%2$s) RETURNS %3$s LANGUAGE plpgsql AS $b$
            BEGIN
                RAISE NOTICE 'HIJACKED %1$s(%2$s)';
                INSERT INTO regress_evil.hijack_log VALUES ('%1$s(%2$s)');
                RETURN %4$s;
            END $b$ $f$, f[1], f[2], f[3], f[4]);
        -- (pgcrypto's digest and gen_random_uuid already live in public)
        IF f[1] IN ('sha256', 'now', 'clock_timestamp') THEN
            EXECUTE format($f$
                CREATE FUNCTION public.%1$s(%2$s) RETURNS %3$s LANGUAGE plpgsql AS $b$
                BEGIN
                    RAISE NOTICE 'HIJACKED public.%1$s(%2$s)';
                    INSERT INTO regress_evil.hijack_log VALUES ('public.%1$s(%2$s)');
                    RETURN %4$s;
                END $b$ $f$, f[1], f[2], f[3], f[4]);
        END IF;
    END LOOP;
END
$$;
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.eq_text);
CREATE OPERATOR regress_evil.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.ne_text);
CREATE OPERATOR regress_evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = regress_evil.eq_uuid);
CREATE OPERATOR regress_evil.= (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = regress_evil.eq_bytea);
CREATE OPERATOR regress_evil.<> (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = regress_evil.ne_bytea);
CREATE OPERATOR regress_evil.= (LEFTARG = name, RIGHTARG = name, FUNCTION = regress_evil.eq_name);
CREATE OPERATOR regress_evil.|| (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = regress_evil.cat_bytea);
CREATE OPERATOR regress_evil.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = regress_evil.get_text);
CREATE OPERATOR regress_evil.-> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = regress_evil.get_jsonb);
CREATE OPERATOR regress_evil.- (LEFTARG = jsonb, RIGHTARG = text[], FUNCTION = regress_evil.minus_keys);
CREATE OPERATOR regress_evil.+ (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = regress_evil.plus_int8);
CREATE OPERATOR regress_evil.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = regress_evil.lt_tstz);
CREATE OPERATOR regress_evil.> (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = regress_evil.gt_tstz);
CREATE OPERATOR regress_evil.< (LEFTARG = interval, RIGHTARG = interval, FUNCTION = regress_evil.lt_interval);
-- Tables named like the extension's, in its schema and as temporary tables.
CREATE TABLE regress_evil.tenant (tenant text, display_name text, active boolean);
INSERT INTO regress_evil.tenant VALUES ('acme', 'evil', false), ('globex', 'evil', true);
CREATE TABLE regress_evil.credential (key_id uuid, tenant text, name text, status text);
CREATE TABLE regress_evil.secret (digest bytea, key_id uuid, hint text);
CREATE TABLE regress_evil.audit (audit_id bigint);
CREATE TABLE regress_evil.role_tenant (role_name name, tenant text, privilege text);
INSERT INTO regress_evil.role_tenant VALUES ('regress_sp_admin', NULL, 'manage');
CREATE TEMP TABLE credential (key_id uuid);
CREATE TEMP TABLE tenant (tenant text);
CREATE TEMP TABLE role_tenant (role_name name, tenant text, privilege text);
INSERT INTO pg_temp.role_tenant VALUES ('regress_sp_admin', NULL, 'manage');
-- Nothing can be planted in the extension's schema.
CREATE FUNCTION apikeys.current_tenant(x int) RETURNS text LANGUAGE sql AS 'SELECT ''globex''';
CREATE TABLE apikeys.evil (x int);
CREATE OR REPLACE FUNCTION apikeys_internal._role_may(r name, t text, need text) RETURNS boolean
    LANGUAGE sql AS 'SELECT true';

-- Its own schema first, ahead of pg_catalog.
SET search_path = regress_evil, public, pg_catalog;
-- Control: the hostile objects are live for unqualified calls ...
SELECT 'a'::text = 'b'::text AS text_eq, now() AS now;
SELECT count(*) AS control_calls FROM regress_evil.hijack_log;
TRUNCATE regress_evil.hijack_log;

------------------------------------------------------------------------------
-- ... but never inside the extension
------------------------------------------------------------------------------
SELECT key_id AS k1, api_key AS key1, hint AS hint1 FROM apikeys.apikey_create('acme', 'one', '{read}') \gset
SELECT key_id AS k2, api_key AS key2 FROM apikeys.apikey_create('acme', 'two', description => 'd', metadata => '{"a":1}') \gset
SELECT valid, code, tenant, name, scopes FROM apikeys.apikey_verify(:'key1');
SELECT valid, code FROM apikeys.apikey_verify(:'key1', '{write}');
SELECT valid, code FROM apikeys.apikey_verify('ak_not_a_key');
SELECT api_key AS key1_new FROM apikeys.apikey_rotate(:'k1') \gset
SELECT (apikeys.apikey_verify(:'key1')).code AS old_secret, (apikeys.apikey_verify(:'key1_new')).code AS new_secret;
SELECT apikeys.apikey_update(:'k1', name => 'one renamed', scopes => '{read,write}');
SELECT apikeys.apikey_disable(:'k1');
SELECT (apikeys.apikey_verify(:'key1_new')).code AS disabled;
SELECT apikeys.apikey_enable(:'k1');
SELECT (apikeys.apikey_verify(:'key1_new', '{write}')).code AS enabled;
SELECT apikeys.apikey_set_policy(:'k1', rate_limit => 100);
SELECT apikeys.apikey_revoke(:'k2', 'no longer needed');
SELECT (apikeys.apikey_verify(:'key2')).code AS revoked;
SELECT apikeys.apikey_delete(:'k2');
SELECT (apikeys.apikey_verify(:'key2')).code AS deleted;
-- Still refused where it must be refused (the hostile =, pg_has_role and
-- role_tenant tables do not grant globex).
SELECT pg_temp.try('SELECT apikeys.apikey_disable(' || quote_literal(:'globex_k') || ')') AS disable_globex;
SELECT apikeys.apikey_create('globex', 'planted');
-- The tenant binding is unaffected.
BEGIN;
SELECT code, tenant FROM apikeys.authenticate(:'key1_new');
SELECT apikeys.current_tenant();
SELECT name FROM apikeys.keys;
SELECT code FROM apikeys.authenticate(:'globex_key');
ROLLBACK;
SELECT ok, rows_checked > 0 AS has_rows, first_bad_id, problem FROM apikeys.audit_check();
-- Nothing ran.
SELECT count(*) AS hijacked_calls FROM regress_evil.hijack_log;
RESET search_path;
-- What it sees through RLS: its own tenant only.
SELECT name, status, hint = :'hint1' AS first_hint, scopes FROM apikeys.keys ORDER BY name;
SELECT tenant FROM apikeys.tenants;

------------------------------------------------------------------------------
-- A superuser whose search_path was poisoned
------------------------------------------------------------------------------
\c - :su
\set VERBOSITY default
\set SHOW_CONTEXT never
SET search_path = regress_evil, public, pg_catalog;
SELECT tenant, display_name, active FROM apikeys.tenant_create('initech');
SELECT tenant, active FROM apikeys.tenant_update('initech', active => false);
SELECT apikeys.apikey_create('initech', 'x');
SELECT tenant, active FROM apikeys.tenant_update('initech', active => true);
SELECT apikeys.grant_tenant('regress_sp_admin', 'initech');
SELECT apikeys.revoke_tenant('regress_sp_admin', 'initech');
SELECT key_id AS k3, api_key AS key3 FROM apikeys.apikey_create('initech', 'three') \gset
SELECT code, tenant FROM apikeys.apikey_verify(:'key3');
SELECT apikeys.tenant_delete('initech');
SELECT apikeys.tenant_delete('initech', force => true);
SELECT (apikeys.apikey_verify(:'key3')).code AS after_tenant_delete;
SELECT apikeys.audit_purge('1 hour');
SELECT apikeys.audit_purge('1 day');
SELECT ok, first_bad_id, problem FROM apikeys.audit_check();
SELECT count(*) AS hijacked_calls FROM regress_evil.hijack_log;
RESET search_path;

-- The audit, read with a clean search_path: right actions, roles and tenants.
SELECT tenant, action, CASE WHEN db_role = current_user THEN '(superuser)' ELSE db_role END AS db_role,
       actor, request_id, client_addr
  FROM apikeys.audit ORDER BY at, chain, audit_id;
SELECT count(*) AS hijacked_calls FROM regress_evil.hijack_log;
SELECT proname FROM pg_proc WHERE pronamespace = 'apikeys'::regnamespace AND proowner = 'regress_sp_admin'::regrole;

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
DROP SCHEMA regress_evil CASCADE;
REVOKE CREATE ON SCHEMA public FROM regress_sp_admin;
DROP FUNCTION public.sha256(bytea), public.sha256(text), public.now(), public.clock_timestamp();
RESET client_min_messages;
DROP OWNED BY regress_sp_admin;
DROP ROLE regress_sp_admin;
