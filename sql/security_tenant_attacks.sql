--
-- security_tenant_attacks: attacks by a hostile tenant admin (globex) on the
-- tenant binding, the vault and the audit.  Each block states the attack and
-- the answer the security model promises; before their fixes, blocks 1, 2,
-- 3 and 4 got the attacker something (see the comments).
--
--   1. A trusted switcher (app_backend) binds its transaction to acme with
--      set_tenant() and calls a SECURITY DEFINER function owned by globex's
--      admin.  The binding belongs to the transaction, not to the role that
--      made it, so globex's code passed apikeys_internal._may_manage('acme'): it
--      created an acme key (and kept its plaintext) and revealed acme's
--      vault secret.  It must be refused as globex's admin.
--   2. vault_add() answers an existing tenant that is not the caller's
--      differently from a tenant that does not exist (message, hint): an
--      oracle on other tenants' names.  The two must read the same.
--   3. A tenant id is reused after tenant_delete(): the new tenant's admin
--      reads the previous tenant's whole audit history (key names,
--      metadata, vault secret names, roles).  It must see only its own.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP SCHEMA IF EXISTS regress_ta_globex CASCADE;
DROP ROLE IF EXISTS regress_ta_acme, regress_ta_globex, regress_ta_app, regress_ta_newco;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SET apikeys.vault_master_key = 'regress-master-key-0123456789abcdef';
SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT apikeys.vault_add('acme', 'openai', 'acme prod', 'sk-proj-Acme1313Acme1313Acme1313Acme') IS NOT NULL AS acme_vault;
CREATE ROLE regress_ta_acme;
CREATE ROLE regress_ta_globex;
CREATE ROLE regress_ta_app;
SELECT apikeys.grant_tenant('regress_ta_acme', 'acme'), apikeys.grant_vault('regress_ta_acme');
SELECT apikeys.grant_tenant('regress_ta_globex', 'globex'), apikeys.grant_vault('regress_ta_globex');
-- the README's trusted switcher
GRANT USAGE ON SCHEMA apikeys TO regress_ta_app;
GRANT EXECUTE ON FUNCTION apikeys.set_tenant(text, text, text) TO regress_ta_app;
CREATE SCHEMA regress_ta_globex AUTHORIZATION regress_ta_globex;
GRANT USAGE ON SCHEMA regress_ta_globex TO regress_ta_app;

------------------------------------------------------------------------------
-- 1. globex's SECURITY DEFINER code run by a trusted switcher bound to acme
------------------------------------------------------------------------------
SET ROLE regress_ta_globex;
CREATE TABLE regress_ta_globex.loot (attack text, got text);
CREATE FUNCTION regress_ta_globex.hook() RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    got text;
BEGIN
    BEGIN
        SELECT api_key INTO got FROM apikeys.apikey_create('acme', 'backdoor', '{admin}');
    EXCEPTION WHEN others THEN got := SQLSTATE || ' ' || SQLERRM;
    END;
    INSERT INTO regress_ta_globex.loot VALUES ('create', CASE WHEN got LIKE 'ak\_%' THEN 'GOT AN ACME KEY' ELSE got END);
    BEGIN
        SELECT string_agg(apikeys.vault_reveal(v.id), ',') INTO got FROM apikeys.vault_secrets v WHERE v.tenant = 'acme';
        got := CASE WHEN got IS NULL THEN 'nothing visible' ELSE 'REVEALED AN ACME SECRET' END;
    EXCEPTION WHEN others THEN got := SQLSTATE || ' ' || regexp_replace(SQLERRM, '[0-9a-f-]{36}', '<id>');
    END;
    INSERT INTO regress_ta_globex.loot VALUES ('vault', got);
END;
$$;
GRANT EXECUTE ON FUNCTION regress_ta_globex.hook() TO regress_ta_app;
RESET ROLE;

SET ROLE regress_ta_app;
BEGIN;
SELECT apikeys.set_tenant('acme');
SELECT regress_ta_globex.hook();
COMMIT;
RESET ROLE;
-- refused as globex's admin; nothing made for acme
SELECT attack, got FROM regress_ta_globex.loot ORDER BY attack;
SELECT count(*) AS acme_backdoor_keys FROM apikeys.credential WHERE tenant = 'acme' AND name = 'backdoor';
SELECT count(*) AS reveals FROM apikeys.audit WHERE action = 'vault_secret_revealed';

------------------------------------------------------------------------------
-- 2. vault_add: a foreign tenant and no tenant read the same
------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    m text; h text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, h = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ' ' || m || coalesce(' HINT: ' || nullif(h, ''), '');
END;
$$;
GRANT EXECUTE ON FUNCTION pg_temp.err(text) TO PUBLIC;
SET ROLE regress_ta_globex;
SELECT pg_temp.err($$SELECT apikeys.vault_add('acme', 'openai', 'probe', 'sk-proj-Probe131Probe131Probe131Pro')$$)
     = pg_temp.err($$SELECT apikeys.vault_add('nosuch', 'openai', 'probe', 'sk-proj-Probe131Probe131Probe131Pro')$$)
       AS same_answer;
SELECT pg_temp.err($$SELECT apikeys.vault_add('nosuch', 'openai', 'probe', 'sk-proj-Probe131Probe131Probe131Pro')$$) AS unknown_tenant;
RESET ROLE;

------------------------------------------------------------------------------
-- 3. a tenant id reused after tenant_delete: the old history stays unseen
------------------------------------------------------------------------------
SELECT key_id AS old_k FROM apikeys.apikey_create('globex', 'old globex key') \gset
SELECT apikeys.apikey_update(:'old_k', metadata => '{"customer_email": "ceo@old-globex.example"}');
SELECT apikeys.tenant_delete('globex', force => true);
SELECT tenant FROM apikeys.tenant_create('globex');
CREATE ROLE regress_ta_newco;
SELECT apikeys.grant_tenant('regress_ta_newco', 'globex');
SET ROLE regress_ta_newco;
SELECT action, detail->'new'->>'role_name' AS role_name FROM apikeys.audit_log ORDER BY audit_id;
SELECT count(*) AS old_rows_in_page FROM apikeys.audit_log_page('globex') WHERE detail::text LIKE '%old-globex%' OR action = 'tenant_deleted';
RESET ROLE;

SET client_min_messages = warning;
DROP SCHEMA regress_ta_globex CASCADE;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_ta_acme, regress_ta_globex, regress_ta_app, regress_ta_newco;
DROP ROLE regress_ta_acme, regress_ta_globex, regress_ta_app, regress_ta_newco;
