--
-- vault_error_identity: for a hostile role, another tenant's secret and a
-- secret that does not exist give the same error, byte for byte with the id
-- masked, SQLSTATE, detail, hint and CONTEXT included, from every function
-- that takes a vault id: both take one code path to one raise point.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_vid_acme, regress_vid_globex, regress_vid_globex_audit, regress_vid_nobody;
RESET client_min_messages;

SET apikeys.vault_master_key = 'regress-master-key-0123456789abcdef';
SELECT apikeys.tenant_create('acme') IS NOT NULL AS acme, apikeys.tenant_create('globex') IS NOT NULL AS globex;
CREATE ROLE regress_vid_acme;
CREATE ROLE regress_vid_globex;         -- manages another tenant
CREATE ROLE regress_vid_globex_audit;   -- audits another tenant
CREATE ROLE regress_vid_nobody;         -- the vault functions, no tenant
SELECT apikeys.grant_tenant('regress_vid_acme', 'acme'), apikeys.grant_vault('regress_vid_acme');
SELECT apikeys.grant_tenant('regress_vid_globex', 'globex'), apikeys.grant_vault('regress_vid_globex');
SELECT apikeys.grant_tenant('regress_vid_globex_audit', 'globex', 'audit'), apikeys.grant_vault('regress_vid_globex_audit', 'audit');
SELECT apikeys.grant_vault('regress_vid_nobody');

-- acme's real secret, under a fixed id so this file can show its errors
-- (the id is part of the passphrase: sealed for that id)
INSERT INTO apikeys.vault_secret (id, tenant, service, name, ciphertext, key_fp)
SELECT '00000000-0000-4000-8000-00000000acfe', 'acme', 'openai', 'acme prod', s.ciphertext, s.key_fp
  FROM apikeys_internal._vault_seal('00000000-0000-4000-8000-00000000acfe', 'sk-proj-Acme1111Acme1111Acme1111Acme') s;

-- The error of `call` for id, with the id replaced by <id>: SQLSTATE,
-- message, detail, hint and context ('ok' if there is none).
CREATE FUNCTION pg_temp.err(call text, id uuid) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; m text; d text; h text; c text;
BEGIN
    EXECUTE format('SELECT apikeys.%s', format(call, quote_literal(id)));
    RETURN 'ok';
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL,
                            h = PG_EXCEPTION_HINT, c = PG_EXCEPTION_CONTEXT;
    RETURN replace(concat_ws(E'\n', st, m, 'DETAIL: ' || d, 'HINT: ' || h, 'CONTEXT: ' || c), id::text, '<id>');
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.err(text, uuid) TO PUBLIC;
CREATE TEMP TABLE calls (call text PRIMARY KEY);
INSERT INTO calls VALUES ('vault_reveal(%s)'), ('vault_get(%s)'), ('vault_check(%s)'),
    ('vault_update(%s, name => ''hijacked'')'), ('vault_update(%s, active => true)'),
    ('vault_update(%s, active => false)'), ('vault_delete(%s)');
GRANT SELECT ON calls TO PUBLIC;

-- Every hostile role, every call: the foreign secret's error equals the
-- unknown one's.  Each runs the calls in the same order in one statement
-- (plpgsql's CONTEXT for a repeated call in one transaction differs from a
-- first call's, whatever the id), so only the id differs between the two.
CREATE TEMP TABLE results (role name, call text, which text, err text);
GRANT ALL ON results TO PUBLIC;
CREATE VIEW pg_temp.compared AS
SELECT f.role, f.call, f.err = u.err AS identical, f.err LIKE '42704%' AS not_found,
       split_part(f.err, E'\n', 2) AS message
  FROM results f JOIN results u USING (role, call)
 WHERE f.which = 'foreign' AND u.which = 'unknown';
GRANT SELECT ON pg_temp.compared TO PUBLIC;
SET ROLE regress_vid_globex;
INSERT INTO results SELECT current_user, call, 'foreign', pg_temp.err(call, '00000000-0000-4000-8000-00000000acfe') FROM (SELECT call FROM calls ORDER BY call) c;
INSERT INTO results SELECT current_user, call, 'unknown', pg_temp.err(call, gen_random_uuid()) FROM (SELECT call FROM calls ORDER BY call) c;
SET ROLE regress_vid_globex_audit;
INSERT INTO results SELECT current_user, call, 'foreign', pg_temp.err(call, '00000000-0000-4000-8000-00000000acfe') FROM (SELECT call FROM calls ORDER BY call) c;
INSERT INTO results SELECT current_user, call, 'unknown', pg_temp.err(call, gen_random_uuid()) FROM (SELECT call FROM calls ORDER BY call) c;
SET ROLE regress_vid_nobody;
INSERT INTO results SELECT current_user, call, 'foreign', pg_temp.err(call, '00000000-0000-4000-8000-00000000acfe') FROM (SELECT call FROM calls ORDER BY call) c;
INSERT INTO results SELECT current_user, call, 'unknown', pg_temp.err(call, gen_random_uuid()) FROM (SELECT call FROM calls ORDER BY call) c;
RESET ROLE;
SELECT * FROM pg_temp.compared ORDER BY role, call;

-- The same as psql shows it, in full: another tenant's secret, then an id
-- that does not exist.
\set VERBOSITY default
\set SHOW_CONTEXT always
SET ROLE regress_vid_globex;
SELECT apikeys.vault_reveal('00000000-0000-4000-8000-00000000acfe');
SELECT apikeys.vault_reveal('00000000-0000-4000-8000-0000000dead0');
SELECT apikeys.vault_delete('00000000-0000-4000-8000-00000000acfe');
SELECT apikeys.vault_delete('00000000-0000-4000-8000-0000000dead0');
RESET ROLE;
SET ROLE regress_vid_globex_audit;
SELECT * FROM apikeys.vault_get('00000000-0000-4000-8000-00000000acfe');
SELECT * FROM apikeys.vault_get('00000000-0000-4000-8000-0000000dead0');
RESET ROLE;
\set VERBOSITY default
\set SHOW_CONTEXT errors

-- Nothing was changed or revealed; the owner still gets its secret.
SELECT name, active, last_used_at IS NULL AS never_revealed FROM apikeys.vault_secret;
SET ROLE regress_vid_acme;
SELECT apikeys.vault_reveal('00000000-0000-4000-8000-00000000acfe') = 'sk-proj-Acme1111Acme1111Acme1111Acme' AS owner_reveals;
RESET ROLE;

-- vault_list and the view: no hostile role sees acme's row.
CREATE VIEW pg_temp.seen AS
SELECT current_user AS role,
       (SELECT count(*) FROM apikeys.vault_list() l WHERE l.tenant = 'acme') AS listed,
       (SELECT count(*) FROM apikeys.vault_secrets v WHERE v.tenant = 'acme') AS in_view,
       (SELECT count(*) FROM apikeys.vault_check() k WHERE k.tenant = 'acme') AS checked;
GRANT SELECT ON pg_temp.seen TO PUBLIC;
SET ROLE regress_vid_globex;
SELECT * FROM pg_temp.seen;
RESET ROLE;
SET ROLE regress_vid_globex_audit;
SELECT * FROM pg_temp.seen;
RESET ROLE;
SET ROLE regress_vid_nobody;
SELECT * FROM pg_temp.seen;
RESET ROLE;
SET ROLE regress_vid_acme;
SELECT * FROM pg_temp.seen;   -- the owner's tenant does see it
RESET ROLE;

-- ATTACK: vault_add answered an unknown tenant and another tenant's with
-- the same error, but asked whether the caller may manage the tenant only
-- when it existed: about 6 times slower for a real tenant, so one call told
-- whether a tenant id exists.  Now both questions are asked either way:
-- the same function calls (counted with track_functions) for both.
SET track_functions = 'all';
CREATE FUNCTION pg_temp.manage_checks(t text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    before bigint;
BEGIN
    SELECT coalesce(sum(calls), 0) INTO before FROM pg_stat_xact_user_functions
     WHERE schemaname = 'apikeys_internal' AND funcname = '_may_manage';
    BEGIN
        PERFORM apikeys.vault_add(t, 'openai', 'probe', 'sk-proj-Probe111Probe111Probe111');
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    RETURN (SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions
             WHERE schemaname = 'apikeys_internal' AND funcname = '_may_manage') - before;
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.manage_checks(text) TO PUBLIC;
SET ROLE regress_vid_globex;
SELECT t AS tenant, pg_temp.manage_checks(t) AS may_manage_calls
  FROM unnest(ARRAY['acme', 'no-such-tenant']) t;
RESET ROLE;
RESET track_functions;

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
DROP OWNED BY regress_vid_acme, regress_vid_globex, regress_vid_globex_audit, regress_vid_nobody;
DROP ROLE regress_vid_acme, regress_vid_globex, regress_vid_globex_audit, regress_vid_nobody;
