--
-- vault_security: owners only, the master key out of every role's reach,
-- wrong master key, corrupted ciphertext, master key rotation, and no
-- plaintext or master key in the audit or in any error message.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_vault_acme, regress_vault_globex, regress_vault_alice,
                    regress_vault_auditor, regress_vault_nobody;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Every plaintext and master key this test uses: none may ever appear in an
-- error message, detail, hint or context, nor in the audit.
CREATE TEMP TABLE sensitive (s text PRIMARY KEY);
INSERT INTO sensitive VALUES
    ('regress-master-key-0123456789abcdef'), ('another-master-key-0123456789abcdef'),
    ('rotated-master-key-0123456789abcdef'), ('third-master-key-0123456789abcdef'),
    ('sk-proj-Acme1111Acme1111Acme1111Acme'), ('sk-proj-Globex22Globex22Globex22Globex'),
    ('sk-proj-Alice333Alice333Alice333Alice'), ('sk-ant-api03-Acme4444Acme4444Acme4444'),
    ('sk-ant-NOTANOPENAIKEY-5555555555555555'), ('hf_Corrupt66Corrupt66Corrupt66Corrupt6'),
    ('hf_Corrupt77Corrupt77Corrupt77Corrupt7'), ('hf_Corrupt88Corrupt88Corrupt88Corrupt8'),
    ('generic-Corrupt99-Corrupt99-Corrupt99'), ('fourth-master-key-0123456789abcdef');
GRANT SELECT ON sensitive TO PUBLIC;

-- Run sql (with $1 = arg); 'ok' or SQLSTATE + message, uuids masked, and
-- LEAK! if any part of the error holds a sensitive string.  PostgreSQL 15's
-- "must be superuser or have privileges of pg_read_all_settings to examine"
-- reads as 16's "permission denied to examine" (same 42501, same setting).
CREATE FUNCTION pg_temp.try(sql text, arg text DEFAULT NULL) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    m text; d text; h text; c text;
BEGIN
    EXECUTE sql USING arg;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT, c = PG_EXCEPTION_CONTEXT;
    -- the outermost context line quotes this function's own statement: not the extension's doing
    c := regexp_replace(c, '^(.*)SQL statement ".*$', '\1');
    RETURN SQLSTATE || ' ' || regexp_replace(regexp_replace(m,
                '^must be superuser or have privileges of pg_read_all_settings to examine ', 'permission denied to examine '),
                '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g')
        || CASE WHEN EXISTS (SELECT 1 FROM pg_temp.sensitive x
                              WHERE position(x.s IN concat_ws(' ', m, d, h, c)) > 0) THEN ' LEAK!' ELSE '' END;
END
$$;
-- Audit rows holding a sensitive string or a ciphertext.
CREATE FUNCTION pg_temp.audit_leaks() RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM apikeys.audit a
     WHERE EXISTS (SELECT 1 FROM pg_temp.sensitive x WHERE position(x.s IN a::text) > 0)
        OR EXISTS (SELECT 1 FROM apikeys.vault_secret v
                    WHERE position(encode(v.ciphertext, 'hex') IN a::text) > 0
                       OR position(encode(v.ciphertext, 'base64') IN a::text) > 0)
$$;

SET apikeys.vault_master_key = 'regress-master-key-0123456789abcdef';
SELECT apikeys.tenant_create('acme') IS NOT NULL AS acme, apikeys.tenant_create('globex') IS NOT NULL AS globex;
CREATE ROLE regress_vault_acme;
CREATE ROLE regress_vault_globex;
CREATE ROLE regress_vault_alice;
CREATE ROLE regress_vault_auditor;
CREATE ROLE regress_vault_nobody;
SELECT apikeys.grant_tenant('regress_vault_acme', 'acme'), apikeys.grant_vault('regress_vault_acme');
SELECT apikeys.grant_tenant('regress_vault_globex', 'globex'), apikeys.grant_vault('regress_vault_globex');
SELECT apikeys.grant_tenant('regress_vault_alice', 'acme'), apikeys.grant_vault('regress_vault_alice');
SELECT apikeys.grant_tenant('regress_vault_auditor', 'acme', 'audit'), apikeys.grant_vault('regress_vault_auditor', 'audit');
SELECT apikeys.grant_vault('regress_vault_nobody');
SELECT pg_temp.try($$SELECT apikeys.grant_vault('regress_vault_nobody', 'everything')$$) AS bad_privilege,
       pg_temp.try($$SELECT apikeys.grant_vault('regress_vault_nosuch')$$) AS bad_role;

------------------------------------------------------------------------------
-- Owners: a tenant's managers (and, for owner_user secrets, that role only)
------------------------------------------------------------------------------
SET ROLE regress_vault_acme;
SELECT apikeys.vault_add('acme', 'openai', 'acme prod', 'sk-proj-Acme1111Acme1111Acme1111Acme') AS acme1 \gset
SELECT apikeys.vault_add('acme', 'claude', 'acme claude', 'sk-ant-api03-Acme4444Acme4444Acme4444') AS acme2 \gset
RESET ROLE;
SET ROLE regress_vault_globex;
SELECT apikeys.vault_add('globex', 'openai', 'globex prod', 'sk-proj-Globex22Globex22Globex22Globex') AS globex1 \gset
SELECT apikeys.vault_reveal(:'globex1') = 'sk-proj-Globex22Globex22Globex22Globex' AS own_round_trip;
-- wrong owner: another tenant's secret does not exist for globex
SELECT regexp_replace(f, '[0-9a-f-]{36}', '<uuid>') AS f, pg_temp.try(format('SELECT apikeys.%s', f)) AS result FROM unnest(ARRAY[
    format('vault_reveal(%L)', :'acme1'),
    format('vault_get(%L)', :'acme1'),
    format('vault_check(%L)', :'acme1'),
    format('vault_update(%L, name => %L)', :'acme1', 'hijacked'),
    format('vault_update(%L, active => false)', :'acme1'),
    format('vault_delete(%L)', :'acme1'),
    format('vault_list(%L)', 'acme'),
    format('vault_add(%L, %L, %L, $1)', 'acme', 'openai', 'planted')]) f;
SELECT pg_temp.try($$SELECT apikeys.vault_add('acme', 'openai', 'planted', $1)$$, 'sk-proj-Globex22Globex22Globex22Globex') AS add_foreign;
SELECT tenant, service, name FROM apikeys.vault_list();
SELECT tenant, service, name FROM apikeys.vault_secrets;
SELECT pg_temp.try('SELECT tenant, name FROM apikeys.vault_secret') AS table_itself;   -- the view, not the table
SELECT tenant, ok FROM apikeys.vault_check();
-- never the ciphertext, never a write
SELECT pg_temp.try('SELECT ciphertext FROM apikeys.vault_secret') AS read_ciphertext;
SELECT pg_temp.try('SELECT key_fp FROM apikeys.vault_secret') AS read_key_fp;
SELECT pg_temp.try('SELECT * FROM apikeys.vault_secret') AS read_all_columns;
SELECT pg_temp.try($$UPDATE apikeys.vault_secret SET active = false$$) AS direct_update;
SELECT pg_temp.try($$DELETE FROM apikeys.vault_secret$$) AS direct_delete;
SELECT pg_temp.try($$INSERT INTO apikeys.vault_service (service, display_name, format) VALUES ('x1', 'x', '^x$')$$) AS direct_service;
SELECT pg_temp.try($$SELECT apikeys.vault_service_register('evil', 'Evil', '^.*$')$$) AS register_service;
-- never the master key: SHOW, current_setting, SET, pg_settings, internals
SELECT pg_temp.try('SHOW apikeys.vault_master_key') AS show_key;
SELECT pg_temp.try($$SELECT current_setting('apikeys.vault_master_key')$$) AS current_setting;
SELECT pg_temp.try($$SELECT current_setting('apikeys.vault_master_key_previous')$$) AS previous;
SELECT pg_temp.try($$SELECT set_config('apikeys.vault_master_key', 'mine-mine-mine-mine-mine', false)$$) AS set_key;
SELECT count(*) AS in_pg_settings FROM pg_settings WHERE name LIKE 'apikeys.vault%';
-- (the internals live in schema apikeys_internal, which no role may use)
SELECT regexp_replace(f, '[0-9a-f-]{36}', '<uuid>') AS f,
       pg_temp.try(format('SELECT %s.%s', CASE WHEN f LIKE '\_%' THEN 'apikeys_internal' ELSE 'apikeys' END, f)) AS result
  FROM unnest(ARRAY[
    '_vault_key_state()', format('_vault_seal(%L, %L)', :'acme1', 'x'),
    format('_vault_open(%L, %L, %L)', :'acme1', '\x00', '0123456789abcdef'),
    format('_vault_rewrap(%L, %L, %L)', :'acme1', '\x00', '0123456789abcdef'),
    $$_vault_lock_slot('acme', NULL, 'openai')$$, $$_vault_fingerprint('x')$$,
    format('_vault_find(%L, %L, %L, false)', :'acme1', 'x', 'read'),
    'vault_rotate_master_key()']) f;
RESET ROLE;
-- Even a role granted EXECUTE on the internals (and USAGE on their schema)
-- cannot use them: they refuse any caller that is not running as a superuser.
GRANT USAGE ON SCHEMA apikeys_internal TO regress_vault_globex;
GRANT EXECUTE ON FUNCTION apikeys_internal._vault_key_state(), apikeys_internal._vault_seal(uuid, text),
    apikeys_internal._vault_open(uuid, bytea, text), apikeys_internal._vault_rewrap(uuid, bytea, text),
    apikeys_internal._vault_lock_slot(text, text, text) TO regress_vault_globex;
GRANT SELECT ON apikeys.vault_secret TO regress_vault_globex;
SET ROLE regress_vault_globex;
SELECT regexp_replace(f, '[0-9a-f-]{36}', '<uuid>') AS f, pg_temp.try(format('SELECT apikeys_internal.%s', f)) AS result FROM unnest(ARRAY[
    '_vault_key_state()', format('_vault_seal(%L, %L)', :'globex1', 'x'),
    format('_vault_open(v.id, v.ciphertext, v.key_fp) FROM apikeys.vault_secret v WHERE v.id = %L', :'globex1'),
    format('_vault_rewrap(v.id, v.ciphertext, v.key_fp) FROM apikeys.vault_secret v WHERE v.id = %L', :'globex1'),
    $$_vault_lock_slot('acme', NULL, 'openai')$$]) f;
RESET ROLE;
REVOKE EXECUTE ON FUNCTION apikeys_internal._vault_key_state(), apikeys_internal._vault_seal(uuid, text),
    apikeys_internal._vault_open(uuid, bytea, text), apikeys_internal._vault_rewrap(uuid, bytea, text),
    apikeys_internal._vault_lock_slot(text, text, text) FROM regress_vault_globex;
REVOKE SELECT ON apikeys.vault_secret FROM regress_vault_globex;
REVOKE USAGE ON SCHEMA apikeys_internal FROM regress_vault_globex;
SELECT apikeys.grant_vault('regress_vault_globex');   -- its column grants back

-- An auditor of acme sees metadata, never plaintext, changes nothing.
SET ROLE regress_vault_auditor;
SELECT tenant, service, name FROM apikeys.vault_list();
SELECT name FROM apikeys.vault_get(:'acme1');
SELECT ok FROM apikeys.vault_check(:'acme1');
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'acme1')) AS reveal,
       pg_temp.try(format('SELECT apikeys.vault_delete(%L)', :'acme1')) AS delete;
RESET ROLE;
-- A role with the vault functions but no tenant sees nothing.
SET ROLE regress_vault_nobody;
SELECT count(*) FROM apikeys.vault_list();
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'acme1')) AS reveal,
       pg_temp.try($$SELECT apikeys.vault_add('acme', 'openai', 'x-name', $1)$$, 'sk-proj-Acme1111Acme1111Acme1111Acme') AS add,
       pg_temp.try($$SELECT apikeys.vault_add($1, 'openai', 'x-name', 'sk-proj-Acme1111Acme1111Acme1111Acme')$$, 'nosuchtenant') AS add_unknown_tenant;
RESET ROLE;

-- owner_user: a role's own secret within its tenant
SET ROLE regress_vault_alice;
SELECT apikeys.vault_add('acme', 'openai', 'alice personal', 'sk-proj-Alice333Alice333Alice333Alice',
                         owner_user => 'regress_vault_alice') AS alice1 \gset
SELECT apikeys.vault_reveal(:'alice1') = 'sk-proj-Alice333Alice333Alice333Alice' AS alice_reveals;
SELECT pg_temp.try($$SELECT apikeys.vault_add('acme', 'openai', 'for someone else', 'sk-proj-Alice333Alice333Alice333Alice',
                                               owner_user => 'regress_vault_acme')$$) AS add_for_other;
RESET ROLE;
SET ROLE regress_vault_acme;
-- the tenant's managers see it and may delete it, but cannot read it
SELECT owner_user, service, name, active FROM apikeys.vault_list('acme');
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'alice1')) AS manager_reveal;
RESET ROLE;
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'alice1')) AS superuser_reveal;
SELECT pg_temp.try($$SELECT apikeys.vault_add('acme', 'openai', 'x-name', 'sk-proj-Alice333Alice333Alice333Alice', owner_user => $1)$$,
                   'regress_vault_nosuch') AS unknown_owner;

-- the audit: each tenant's role sees its own vault history
SET ROLE regress_vault_acme;
SELECT DISTINCT tenant FROM apikeys.audit_log WHERE action LIKE 'vault%';
SELECT action, db_role FROM apikeys.audit_log WHERE action = 'vault_secret_revealed' ORDER BY audit_id;
RESET ROLE;
SET ROLE regress_vault_globex;
SELECT DISTINCT tenant FROM apikeys.audit_log WHERE action LIKE 'vault%';
RESET ROLE;

------------------------------------------------------------------------------
-- The master key may not live in the (world-readable) catalogs
------------------------------------------------------------------------------
SELECT pg_temp.try($$ALTER ROLE regress_vault_acme SET apikeys.vault_master_key = 'rotated-master-key-0123456789abcdef'$$) AS alter_role;
SELECT pg_temp.try(format('ALTER DATABASE %I SET apikeys.vault_master_key = %L', current_database(),
                          'rotated-master-key-0123456789abcdef')) AS alter_database;
SELECT pg_temp.try($$ALTER ROLE ALL SET apikeys.vault_master_key_previous = 'rotated-master-key-0123456789abcdef'$$) AS alter_role_all;
SELECT pg_temp.try($$CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql
                     SET apikeys.vault_master_key = 'rotated-master-key-0123456789abcdef' AS 'SELECT 1'$$) AS function_set;
SELECT count(*) AS stored FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') LIKE '%vault%';
-- the keys are hidden from SHOW ALL and pg_settings even for superusers (the file name is not)
SELECT name FROM pg_settings WHERE name LIKE 'apikeys.vault%';
SELECT pg_temp.try('SHOW apikeys.vault_master_key') AS superuser_show;

------------------------------------------------------------------------------
-- Missing, short and wrong master keys
------------------------------------------------------------------------------
RESET apikeys.vault_master_key;
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'acme1')) AS reveal,
       pg_temp.try($$SELECT apikeys.vault_add('acme', 'openai', 'no key', $1)$$, 'sk-proj-Acme1111Acme1111Acme1111Acme') AS add,
       pg_temp.try('SELECT apikeys.vault_check()') AS check;
SELECT count(*) AS list_needs_no_key FROM apikeys.vault_list();
SET apikeys.vault_master_key = 'too-short';
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'acme1')) AS short_key;
-- wrong key: the fingerprint tells
SET apikeys.vault_master_key = 'another-master-key-0123456789abcdef';
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'acme1')) AS wrong_key;
SELECT tenant, name, ok, problem FROM apikeys.vault_check();
-- wrong key behind a matching fingerprint: pgcrypto refuses, and says nothing more
UPDATE apikeys.vault_secret SET key_fp = apikeys_internal._vault_fingerprint('another-master-key-0123456789abcdef') WHERE id = :'acme1';
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'acme1')) AS wrong_key_same_fp;
SELECT problem FROM apikeys.vault_check(:'acme1');
UPDATE apikeys.vault_secret SET key_fp = apikeys_internal._vault_fingerprint('regress-master-key-0123456789abcdef') WHERE id = :'acme1';
SET apikeys.vault_master_key = 'regress-master-key-0123456789abcdef';
SELECT apikeys.vault_reveal(:'acme1') = 'sk-proj-Acme1111Acme1111Acme1111Acme' AS right_key_again;

------------------------------------------------------------------------------
-- Corrupted ciphertext
------------------------------------------------------------------------------
SELECT apikeys.vault_add('globex', 'huggingface', 'flipped byte', 'hf_Corrupt66Corrupt66Corrupt66Corrupt6') AS c1 \gset
SELECT apikeys.vault_add('globex', 'huggingface', 'truncated', 'hf_Corrupt77Corrupt77Corrupt77Corrupt7', owner_user => 'regress_vault_globex') AS c2 \gset
SELECT apikeys.vault_add('acme', 'huggingface', 'moved here', 'hf_Corrupt88Corrupt88Corrupt88Corrupt8') AS c3 \gset
SELECT apikeys.vault_add('acme', 'generic', 'garbage', 'generic-Corrupt99-Corrupt99-Corrupt99') AS c4 \gset
UPDATE apikeys.vault_secret SET ciphertext = set_byte(ciphertext, octet_length(ciphertext) / 2,
                                                     get_byte(ciphertext, octet_length(ciphertext) / 2) # 1) WHERE id = :'c1';
UPDATE apikeys.vault_secret SET ciphertext = substr(ciphertext, 1, octet_length(ciphertext) - 5) WHERE id = :'c2';
-- a ciphertext is bound to its row: copied into another row it does not open
UPDATE apikeys.vault_secret SET ciphertext = (SELECT ciphertext FROM apikeys.vault_secret WHERE id = :'acme2') WHERE id = :'c3';
UPDATE apikeys.vault_secret SET ciphertext = '\xc30d04090302deadbeef' WHERE id = :'c4';
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'c1')) AS flipped,
       pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'c3')) AS moved,
       pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'c4')) AS garbage;
SET ROLE regress_vault_globex;
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'c2')) AS truncated;
RESET ROLE;
SELECT tenant, name, ok, problem FROM apikeys.vault_check() ORDER BY tenant, name;
-- a failed reveal is not audited as a reveal, and does not touch last_used_at
SELECT count(*) FROM apikeys.audit WHERE action = 'vault_secret_revealed' AND key_id IN (:'c1', :'c2', :'c3', :'c4');
SELECT count(*) FROM apikeys.vault_secret WHERE id IN (:'c1', :'c2', :'c3', :'c4') AND last_used_at IS NOT NULL;

------------------------------------------------------------------------------
-- Master key rotation: all or nothing, in one transaction
------------------------------------------------------------------------------
SET ROLE regress_vault_acme;
SELECT pg_temp.try($$SELECT apikeys.vault_rotate_master_key()$$) AS tenant_rotates;
RESET ROLE;
-- the keys come from the settings (or the key file), never from arguments
SELECT pg_temp.try($$SELECT apikeys.vault_rotate_master_key('regress-master-key-0123456789abcdef', 'rotated-master-key-0123456789abcdef')$$) AS keys_as_arguments;
SET apikeys.vault_master_key = 'rotated-master-key-0123456789abcdef';
-- no previous key: the secrets under the old one do not open
SELECT pg_temp.try($$SELECT apikeys.vault_rotate_master_key()$$) AS no_previous_key;
SET apikeys.vault_master_key = 'short';
SELECT pg_temp.try($$SELECT apikeys.vault_rotate_master_key()$$) AS short_new_key;
SET apikeys.vault_master_key = 'rotated-master-key-0123456789abcdef';
SET apikeys.vault_master_key_previous = 'regress-master-key-0123456789abcdef';
-- the corrupt secrets abort it: nothing is re-encrypted
SELECT pg_temp.try($$SELECT apikeys.vault_rotate_master_key()$$) AS with_corrupt;
SELECT count(DISTINCT key_fp) AS key_fps FROM apikeys.vault_secret;
SET apikeys.vault_master_key = 'regress-master-key-0123456789abcdef';
SELECT apikeys.vault_delete(x) FROM unnest(ARRAY[:'c1', :'c2', :'c3', :'c4']::uuid[]) x;
-- a wrong previous key aborts it too
SET apikeys.vault_master_key = 'rotated-master-key-0123456789abcdef';
SET apikeys.vault_master_key_previous = 'third-master-key-0123456789abcdef';
SELECT pg_temp.try($$SELECT apikeys.vault_rotate_master_key()$$) AS wrong_old_key;
SET apikeys.vault_master_key_previous = 'regress-master-key-0123456789abcdef';
SELECT apikeys.vault_rotate_master_key() AS reencrypted;
SELECT count(DISTINCT key_fp) AS key_fps,
       bool_and(key_fp = apikeys_internal._vault_fingerprint('rotated-master-key-0123456789abcdef')) AS all_new
  FROM apikeys.vault_secret;
RESET apikeys.vault_master_key_previous;
SET apikeys.vault_master_key = 'regress-master-key-0123456789abcdef';
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'acme1')) AS old_setting;
SET apikeys.vault_master_key = 'rotated-master-key-0123456789abcdef';
SELECT apikeys.vault_reveal(:'acme1') = 'sk-proj-Acme1111Acme1111Acme1111Acme' AS after_rotation;
SELECT bool_and(ok) FROM apikeys.vault_check();
-- again: nothing left to do
SET apikeys.vault_master_key_previous = 'regress-master-key-0123456789abcdef';
SELECT apikeys.vault_rotate_master_key() AS nothing_left;
RESET apikeys.vault_master_key_previous;
-- the settings way: new key in vault_master_key, old one in vault_master_key_previous
SET apikeys.vault_master_key = 'third-master-key-0123456789abcdef';
SET apikeys.vault_master_key_previous = 'rotated-master-key-0123456789abcdef';
-- meanwhile every secret still opens (with the previous key) and new ones use the new key
SELECT apikeys.vault_reveal(:'globex1') = 'sk-proj-Globex22Globex22Globex22Globex' AS previous_key_opens;
SELECT tenant, name, ok, problem FROM apikeys.vault_check() ORDER BY tenant, name;
SELECT apikeys.vault_rotate_master_key() AS reencrypted;
SELECT tenant, name, ok, problem FROM apikeys.vault_check() ORDER BY tenant, name;
RESET apikeys.vault_master_key_previous;
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'alice1')) AS still_alice_only;
SELECT action, detail ?| ARRAY['ciphertext'] AS has_ciphertext, detail::text ~ 'key_fp' AS shows_key_fp
  FROM apikeys.audit WHERE action IN ('vault_secret_reencrypted', 'vault_master_key_rotated')
 ORDER BY at DESC, audit_id DESC LIMIT 2;
SELECT count(*) FILTER (WHERE action = 'vault_secret_reencrypted') AS reencrypted,
       count(*) FILTER (WHERE action = 'vault_master_key_rotated') AS rotations
  FROM apikeys.audit;
SELECT detail ? 'secrets' AS has_count, detail::text ~ '_fp' AS has_fp, tenant IS NULL AS global
  FROM apikeys.audit WHERE action = 'vault_master_key_rotated' ORDER BY at DESC LIMIT 1;

------------------------------------------------------------------------------
-- The key file: first line the key, second line (during a rotation) the
-- previous key; used when apikeys.vault_master_key is empty
------------------------------------------------------------------------------
SELECT current_setting('data_directory') || '/regress_vault.key' AS keyfile \gset
COPY (SELECT 'third-master-key-0123456789abcdef') TO :'keyfile';
RESET apikeys.vault_master_key;
SET apikeys.vault_master_key_file = :'keyfile';
SELECT apikeys.vault_reveal(:'globex1') = 'sk-proj-Globex22Globex22Globex22Globex' AS key_from_file;
-- rotate: write the new key above the old one; no reload, no key in any statement
COPY (SELECT k FROM (VALUES (1, 'fourth-master-key-0123456789abcdef'), (2, 'third-master-key-0123456789abcdef')) v(n, k) ORDER BY n) TO :'keyfile';
SELECT DISTINCT problem FROM apikeys.vault_check();
SELECT apikeys.vault_rotate_master_key() AS reencrypted;
COPY (SELECT 'fourth-master-key-0123456789abcdef') TO :'keyfile';
SELECT bool_and(ok) AS all_ok, count(*) FROM apikeys.vault_check();
SELECT apikeys.vault_reveal(:'globex1') = 'sk-proj-Globex22Globex22Globex22Globex' AS after_file_rotation;
-- the setting wins over the file
SET apikeys.vault_master_key = 'third-master-key-0123456789abcdef';
SELECT DISTINCT problem FROM apikeys.vault_check();
RESET apikeys.vault_master_key;
-- an unreadable file: no path, no content in the error
SET apikeys.vault_master_key_file = '/nonexistent/regress_vault.key';
SELECT pg_temp.try(format('SELECT apikeys.vault_reveal(%L)', :'globex1')) AS unreadable_file;
-- not a setting tenants can touch
SET ROLE regress_vault_globex;
SELECT pg_temp.try($$SET apikeys.vault_master_key_file = '/tmp/mine'$$) AS set_file,
       pg_temp.try('SHOW apikeys.vault_master_key_file') AS show_file;
RESET ROLE;
RESET apikeys.vault_master_key_file;
SET apikeys.vault_master_key = 'fourth-master-key-0123456789abcdef';

------------------------------------------------------------------------------
-- No plaintext or master key in any error message
------------------------------------------------------------------------------
-- the detector works: PostgreSQL itself echoes a bad integer, for instance
SELECT pg_temp.try('SELECT $1::int', 'sk-proj-Acme1111Acme1111Acme1111Acme') AS control;
-- a secret given in the wrong argument is never echoed back
SELECT who, what, pg_temp.try(sql, 'sk-proj-Acme1111Acme1111Acme1111Acme') AS result FROM (VALUES
    ('superuser', 'as tenant',     $$SELECT apikeys.vault_add($1, 'openai', 'x-name', 'sk-proj-Acme1111Acme1111Acme1111Acme')$$),
    ('superuser', 'as service',    $$SELECT apikeys.vault_add('acme', $1, 'x-name', 'sk-proj-Acme1111Acme1111Acme1111Acme')$$),
    ('superuser', 'as owner_user', $$SELECT apikeys.vault_add('acme', 'openai', 'x-name', 'sk-proj-Acme1111Acme1111Acme1111Acme', $1)$$),
    ('superuser', 'as name, swapped', $$SELECT apikeys.vault_add('acme', 'openai', $1, 'x-name')$$),
    ('superuser', 'wrong service', $$SELECT apikeys.vault_add('acme', 'anthropic', 'x-name', $1)$$),
    ('superuser', 'as list tenant', $$SELECT apikeys.vault_list($1)$$),
    ('superuser', 'as service name', $$SELECT apikeys.vault_service_register($1, 'x', '^x$')$$),
    ('superuser', 'as format',     $$SELECT apikeys.vault_service_register('leak', 'x', $1)$$)
) v(who, what, sql);
SELECT pg_temp.try($$SELECT apikeys.vault_add('acme', 'openai', 'x-name', $1)$$, 'sk-ant-NOTANOPENAIKEY-5555555555555555') AS anthropic_as_openai;
SET ROLE regress_vault_globex;
SELECT what, pg_temp.try(sql, 'sk-proj-Acme1111Acme1111Acme1111Acme') AS result FROM (VALUES
    ('as tenant',     $$SELECT apikeys.vault_add($1, 'openai', 'x-name', 'sk-proj-Globex22Globex22Globex22Globex')$$),
    ('as service',    $$SELECT apikeys.vault_add('globex', $1, 'x-name', 'sk-proj-Globex22Globex22Globex22Globex')$$),
    ('as owner_user', $$SELECT apikeys.vault_add('globex', 'openai', 'x-name', 'sk-proj-Globex22Globex22Globex22Globex', $1)$$),
    ('wrong format',  $$SELECT apikeys.vault_add('globex', 'huggingface', 'x-name', $1)$$),
    ('as list tenant', $$SELECT apikeys.vault_list($1)$$),
    ('as new name',   format('SELECT apikeys.vault_update(%L, name => $1 || E''\n'')', :'globex1')),
    ('foreign tenant', $$SELECT apikeys.vault_add('acme', 'openai', 'x-name', $1)$$)
) v(what, sql);
RESET ROLE;
-- wrong and missing master keys, in every function
SET apikeys.vault_master_key = 'another-master-key-0123456789abcdef';
SELECT regexp_replace(f, '[0-9a-f-]{36}', '<uuid>') AS f, pg_temp.try(format('SELECT apikeys.%s', f)) AS result FROM unnest(ARRAY[
    format('vault_reveal(%L)', :'acme1'), format('vault_check(%L)', :'acme1'),
    $$vault_rotate_master_key()$$]) f;
RESET apikeys.vault_master_key;
SELECT regexp_replace(f, '[0-9a-f-]{36}', '<uuid>') AS f, pg_temp.try(format('SELECT apikeys.%s', f)) AS result FROM unnest(ARRAY[
    format('vault_reveal(%L)', :'acme1'), format('vault_check(%L)', :'acme1'), 'vault_rotate_master_key()',
    $$vault_add('acme', 'openai', 'x-name', 'sk-proj-Acme1111Acme1111Acme1111Acme')$$]) f;

-- and none in the audit
SELECT pg_temp.audit_leaks() AS audit_leaks;
SELECT ok FROM apikeys.audit_check();

RESET ROLE;
SELECT apikeys.revoke_tenant(r, t, p) FROM (VALUES
    ('regress_vault_acme', 'acme', 'manage'), ('regress_vault_globex', 'globex', 'manage'),
    ('regress_vault_alice', 'acme', 'manage'), ('regress_vault_auditor', 'acme', 'audit')) v(r, t, p) \g /dev/null
SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
DROP OWNED BY regress_vault_acme, regress_vault_globex, regress_vault_alice, regress_vault_auditor, regress_vault_nobody;
DROP ROLE regress_vault_acme, regress_vault_globex, regress_vault_alice, regress_vault_auditor, regress_vault_nobody;
RESET client_min_messages;
