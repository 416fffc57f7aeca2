--
-- security_caller_identity: management calls are authorized as the role whose
-- code makes them, and never work inside a security-restricted operation.
--
-- The attacker is a tenant admin (acme) who owns a schema.  Its code runs in a
-- superuser's session in three ways: an index expression that ANALYZE (or
-- autovacuum, test/t/caller_autovacuum.sh) evaluates, a materialized view
-- that REFRESH evaluates, and SECURITY DEFINER functions and triggers that
-- the superuser calls.  Each tries to create a key for globex, revoke a
-- globex key, or read globex's vault; each must be refused (or limited to
-- acme's own rights), with nothing created, changed or revealed.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP SCHEMA IF EXISTS regress_acme_app CASCADE;
DROP ROLE IF EXISTS regress_caller_acme;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT key_id AS globex_k FROM apikeys.apikey_create('globex', 'globex production') \gset
SET apikeys.vault_master_key = 'regress-master-key-0123456789abcdef';
SELECT apikeys.vault_add('globex', 'openai', 'globex prod', 'sk-proj-Globex00Globex00Globex00Globex') AS globex_v \gset

CREATE ROLE regress_caller_acme;
SELECT apikeys.grant_tenant('regress_caller_acme', 'acme');
SELECT apikeys.grant_vault('regress_caller_acme');
CREATE SCHEMA regress_acme_app AUTHORIZATION regress_caller_acme;

-- The tenant admin's payload: try each attack, keep what it got (or the error).
SET ROLE regress_caller_acme;
CREATE TABLE regress_acme_app.loot (attack text, got text);
CREATE TABLE regress_acme_app.armed (on_ boolean);
INSERT INTO regress_acme_app.armed VALUES (false);
CREATE FUNCTION regress_acme_app.payload(attack text) RETURNS text
    LANGUAGE plpgsql SECURITY INVOKER
AS $$
DECLARE
    got text;
BEGIN
    IF NOT (SELECT on_ FROM regress_acme_app.armed) THEN
        RETURN 'idle';
    END IF;
    BEGIN
        IF attack LIKE '%create' THEN
            SELECT api_key INTO got FROM apikeys.apikey_create('globex', 'backdoor', '{admin}');
        ELSIF attack LIKE '%revoke' THEN
            PERFORM apikeys.apikey_revoke(current_setting('regress.globex_k')::uuid, 'backdoor');
            got := 'revoked';
        ELSIF attack LIKE '%vault' THEN
            SELECT string_agg(apikeys.vault_reveal(v.id), ',') INTO got
              FROM apikeys.vault_list('globex') v;
        ELSIF attack LIKE '%own' THEN
            SELECT key_id::text INTO got FROM apikeys.apikey_create('acme', 'made by ' || attack);
            got := 'created';
        END IF;
    EXCEPTION WHEN others THEN
        got := SQLSTATE || ' ' || SQLERRM;
    END;
    INSERT INTO regress_acme_app.loot VALUES (attack, coalesce(got, '(nothing)'));
    RETURN attack;
END;
$$;
CREATE FUNCTION regress_acme_app.idx(attack text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$ SELECT regress_acme_app.payload(attack) $$;
CREATE TABLE regress_acme_app.t (attack text);
INSERT INTO regress_acme_app.t VALUES ('analyze create'), ('analyze revoke'), ('analyze vault');
CREATE INDEX ON regress_acme_app.t (regress_acme_app.idx(attack));
CREATE MATERIALIZED VIEW regress_acme_app.mv AS
    SELECT regress_acme_app.payload(a) FROM unnest('{refresh create,refresh revoke,refresh vault}'::text[]) a;
-- SECURITY DEFINER: inside it PostgreSQL runs as the tenant admin, so must apikeys
CREATE FUNCTION regress_acme_app.helpful(attack text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN regress_acme_app.payload(attack); END $$;
CREATE FUNCTION regress_acme_app.on_insert() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ BEGIN PERFORM regress_acme_app.payload(NEW.attack); RETURN NEW; END $$;
CREATE TABLE regress_acme_app.inbox (attack text);
CREATE TRIGGER on_insert BEFORE INSERT ON regress_acme_app.inbox
    FOR EACH ROW EXECUTE FUNCTION regress_acme_app.on_insert();
GRANT INSERT ON regress_acme_app.inbox TO PUBLIC;
GRANT USAGE ON SCHEMA regress_acme_app TO PUBLIC;
UPDATE regress_acme_app.armed SET on_ = true;
RESET ROLE;

------------------------------------------------------------------------------
-- The superuser goes about its business in the same session
------------------------------------------------------------------------------
SELECT set_config('regress.globex_k', :'globex_k', false) IS NOT NULL AS set;
ANALYZE regress_acme_app.t;
REFRESH MATERIALIZED VIEW regress_acme_app.mv;
SELECT regress_acme_app.helpful('definer create');
SELECT regress_acme_app.helpful('definer revoke');
SELECT regress_acme_app.helpful('definer vault');
SELECT regress_acme_app.helpful('definer own');
INSERT INTO regress_acme_app.inbox VALUES ('trigger create'), ('trigger revoke'), ('trigger vault'), ('trigger own');

-- What the attacker got: refusals only (and acme's own key from definer code).
SELECT attack, regexp_replace(got, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g') AS got
  FROM regress_acme_app.loot ORDER BY attack;

-- Nothing was created for globex, its key still verifies, its vault untouched.
SELECT name, status FROM apikeys.keys WHERE tenant = 'globex' ORDER BY name;
SELECT count(*) AS acme_keys, array_agg(DISTINCT created_by) AS created_by
  FROM apikeys.keys WHERE tenant = 'acme';
-- The audit blames the tenant admin for the keys its code made, not the superuser.
SELECT action, tenant, db_role, session_role = current_user AS session_is_superuser
  FROM apikeys.audit WHERE action = 'key_created' AND tenant = 'acme' ORDER BY audit_id;
-- And no key_created / key_revoked for globex after the setup.
SELECT action, count(*) FROM apikeys.audit
 WHERE tenant = 'globex' AND action IN ('key_created', 'key_revoked') GROUP BY action ORDER BY action;

------------------------------------------------------------------------------
-- The bodies in apikeys_internal are out of every tenant's reach
------------------------------------------------------------------------------
SET ROLE regress_caller_acme;
SELECT apikeys_internal.apikey_create('globex', 'direct');
SELECT apikeys_internal.apikey_revoke('00000000-0000-4000-8000-000000000000');
SELECT apikeys_internal._acting_role();
RESET ROLE;
SELECT apikeys_internal._acting_role() = current_user AS acting_role_is_me;

------------------------------------------------------------------------------
-- set_tenant and authenticate bind nothing inside a restricted operation
------------------------------------------------------------------------------
SET ROLE regress_caller_acme;
CREATE FUNCTION regress_acme_app.bind(t text) RETURNS text
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (SELECT on_ FROM regress_acme_app.armed) THEN RETURN t; END IF;
    BEGIN
        PERFORM apikeys.authenticate(t);
        INSERT INTO regress_acme_app.loot VALUES ('analyze authenticate', 'bound ' || apikeys.current_tenant());
    EXCEPTION WHEN others THEN
        INSERT INTO regress_acme_app.loot VALUES ('analyze authenticate', SQLSTATE || ' ' || SQLERRM);
    END;
    RETURN t;
END $$;
CREATE FUNCTION regress_acme_app.bind_idx(t text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$ SELECT regress_acme_app.bind(t) $$;
CREATE TABLE regress_acme_app.t2 (k text);
RESET ROLE;
SELECT apikeys.grant_verifier('regress_caller_acme');
SELECT api_key AS acme_key FROM apikeys.apikey_create('acme', 'acme key') \gset
SET ROLE regress_caller_acme;
INSERT INTO regress_acme_app.t2 VALUES (:'acme_key');
UPDATE regress_acme_app.armed SET on_ = false;
CREATE INDEX ON regress_acme_app.t2 (regress_acme_app.bind_idx(k));
UPDATE regress_acme_app.armed SET on_ = true;
RESET ROLE;
BEGIN;
ANALYZE regress_acme_app.t2;
SELECT apikeys.current_tenant() AS bound_after_analyze;
COMMIT;
SELECT got FROM regress_acme_app.loot WHERE attack = 'analyze authenticate';

SET client_min_messages = warning;
DROP SCHEMA regress_acme_app CASCADE;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_caller_acme;
DROP ROLE regress_caller_acme;
