--
-- core_create_many: many keys of one tenant in one call, each secret shown
-- once, audited like apikey_create, with its rules and error codes.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_many_acme;
RESET client_min_messages;
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

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
CREATE TEMP TABLE made AS
SELECT * FROM apikeys.apikey_create_many('acme', ARRAY['device 1', 'device 2', 'device 3'], '{read,telemetry}',
                                         now() + interval '30 days', 'dev');
-- one row per name, in order, each with its own secret in the key format
SELECT name, api_key ~ '^dev_[1-9A-HJ-NP-Za-km-z]+$' AS formatted, hint LIKE 'dev_%' AS hinted FROM made ORDER BY name;
SELECT count(DISTINCT api_key) AS distinct_keys, count(DISTINCT key_id) AS distinct_ids FROM made;
-- each verifies, with the scopes and expiry given
SELECT m.name, v.code, v.scopes, v.expires_at > now() AS expires_later
  FROM made m, LATERAL apikeys.apikey_verify(m.api_key) v ORDER BY m.name;
-- only digests are stored
SELECT count(*) AS stored_plaintexts FROM apikeys.secret s JOIN made m ON position(m.api_key IN s.hint) > 0;
-- audited: key_created and secret_issued for each key, in acme's chain
SELECT action, count(*) FROM apikeys.audit WHERE chain = 'acme' AND key_id IN (SELECT key_id FROM made)
 GROUP BY action ORDER BY action;
SELECT ok FROM apikeys.audit_check();

-- the rules of apikey_create, once for the call
SELECT pg_temp.try($$SELECT * FROM apikeys.apikey_create_many('acme', '{}')$$) AS empty,
       pg_temp.try($$SELECT * FROM apikeys.apikey_create_many('acme', NULL)$$) AS null_names,
       pg_temp.try($$SELECT * FROM apikeys.apikey_create_many('acme', ARRAY['ok', NULL])$$) AS null_name,
       pg_temp.try($$SELECT * FROM apikeys.apikey_create_many('acme', ARRAY['ok', ' padded'])$$) AS bad_name;
SELECT pg_temp.try($$SELECT * FROM apikeys.apikey_create_many('acme', '{{a},{b}}')$$) AS two_dims,
       pg_temp.try($$SELECT * FROM apikeys.apikey_create_many('nosuch', ARRAY['a'])$$) AS unknown_tenant,
       pg_temp.try($$SELECT * FROM apikeys.apikey_create_many('acme', ARRAY['a'], prefix => 'BAD')$$) AS bad_prefix,
       pg_temp.try($$SELECT * FROM apikeys.apikey_create_many('acme', ARRAY['a'], expires_at => now() - interval '1 day')$$) AS past;
-- a failure leaves nothing behind
SELECT count(*) AS acme_keys FROM apikeys.credential WHERE tenant = 'acme';
SELECT apikeys.tenant_update('globex', active => false) IS NOT NULL AS deactivated;
SELECT pg_temp.try($$SELECT * FROM apikeys.apikey_create_many('globex', ARRAY['a'])$$) AS inactive_tenant;

-- a tenant admin may create many for its own tenant only
CREATE ROLE regress_many_acme;
SELECT apikeys.grant_tenant('regress_many_acme', 'acme');
SET ROLE regress_many_acme;
SELECT count(*) AS made_by_admin FROM apikeys.apikey_create_many('acme', ARRAY['a', 'b']);
SELECT pg_temp.try($$SELECT * FROM apikeys.apikey_create_many('globex', ARRAY['a'])$$) AS foreign_tenant;
RESET ROLE;
SELECT DISTINCT created_by FROM apikeys.credential WHERE tenant = 'acme' AND name IN ('a', 'b');   -- the caller, not the definer

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_many_acme;
DROP ROLE regress_many_acme;
