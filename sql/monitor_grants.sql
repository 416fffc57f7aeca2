--
-- monitor_grants: apikeys.grant_monitor / revoke_monitor and what a
-- monitoring role may read: the figures (verifications, runtime,
-- monitor_usage, monitor_tenants), never a table.  Error paths show their
-- SQLSTATE.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_monitor;
DROP ROLE IF EXISTS regress_monitor_other;
DROP ROLE IF EXISTS regress_monitor_admin;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never
-- Run a statement; return 'ok' or its SQLSTATE and message.
CREATE FUNCTION pg_temp.err(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

CREATE ROLE regress_monitor;
CREATE ROLE regress_monitor_other;
CREATE ROLE regress_monitor_admin;
SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT apikeys.grant_tenant('regress_monitor_admin', NULL);
SELECT key_id AS k_valid, api_key AS s_valid FROM apikeys.apikey_create('acme', 'valid') \gset
SELECT key_id AS k_revoked, api_key AS s_revoked FROM apikeys.apikey_create('acme', 'revoked') \gset
SELECT key_id AS k_expired, api_key AS s_expired FROM apikeys.apikey_create('globex', 'expired') \gset
SELECT key_id AS k_disabled FROM apikeys.apikey_create('globex', 'disabled') \gset
SELECT apikeys.apikey_revoke(:'k_revoked', 'test');
SELECT apikeys.apikey_disable(:'k_disabled');
UPDATE apikeys.credential SET expires_at = now() - interval '1 hour' WHERE key_id = :'k_expired';
SELECT (apikeys.apikey_verify(:'s_valid')).code FROM generate_series(1, 3);
SELECT (apikeys.apikey_verify(:'s_revoked')).code FROM generate_series(1, 2);
SELECT (apikeys.apikey_verify(:'s_expired')).code;

\echo '-- grant_monitor: superusers only (EXECUTE is not granted to anyone)'
SET ROLE regress_monitor_admin;
SELECT pg_temp.err($$SELECT apikeys.grant_monitor('regress_monitor')$$);
SELECT pg_temp.err($$SELECT apikeys.revoke_monitor('regress_monitor')$$);
RESET ROLE;
\echo '-- a role given EXECUTE on grant_monitor still lacks what it needs (as grant_verifier)'
GRANT EXECUTE ON FUNCTION apikeys.grant_monitor(name) TO regress_monitor_admin;
SET ROLE regress_monitor_admin;
SELECT pg_temp.err($$SELECT apikeys.grant_monitor('regress_monitor_other')$$);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION apikeys.grant_monitor(name) FROM regress_monitor_admin;
SELECT has_function_privilege('regress_monitor_other', 'apikeys.monitor_usage(boolean)', 'EXECUTE') AS other_may_read;
\echo '-- bad role names'
SELECT pg_temp.err($$SELECT apikeys.grant_monitor(NULL)$$);
SELECT pg_temp.err($$SELECT apikeys.grant_monitor('regress_no_such_role')$$);
SELECT pg_temp.err($$SELECT apikeys.grant_monitor('public')$$);
SELECT pg_temp.err($$SELECT apikeys.revoke_monitor(NULL)$$);
SELECT pg_temp.err($$SELECT apikeys.revoke_monitor('regress_no_such_role')$$);

\echo '-- before the grant: nothing'
SET ROLE regress_monitor;
SELECT pg_temp.err($$SELECT * FROM apikeys.verifications$$);
SELECT pg_temp.err($$SELECT * FROM apikeys.monitor_usage()$$);
RESET ROLE;
\echo '-- nor for a role with USAGE on the schema (a verifier)'
SELECT apikeys.grant_verifier('regress_monitor_other');
SET ROLE regress_monitor_other;
SELECT pg_temp.err($$SELECT * FROM apikeys.monitor_usage()$$);
SELECT pg_temp.err($$SELECT * FROM apikeys.monitor_tenants()$$);
SELECT pg_temp.err($$SELECT * FROM apikeys.runtime$$);
SELECT pg_temp.err($$SELECT apikeys.grant_monitor('regress_monitor_other')$$);
RESET ROLE;

SELECT apikeys.grant_monitor('regress_monitor');
-- twice is harmless
SELECT apikeys.grant_monitor('regress_monitor');

\echo '-- the monitoring role reads the figures'
SET ROLE regress_monitor;
SELECT count(*) AS outcomes, count(*) FILTER (WHERE total >= 0) AS counted FROM apikeys.verifications;
SELECT preloaded, shmem_bytes > 0 AS has_shmem, flush_lag IS NULL OR flush_lag >= '0' AS lag_ok FROM apikeys.runtime;
SELECT tenant, key_id IS NULL AS per_tenant, outcome, total
  FROM apikeys.monitor_usage() WHERE total > 0 OR outcome IN ('valid', 'disabled');
SELECT tenant, CASE key_id WHEN :'k_valid' THEN 'valid' WHEN :'k_revoked' THEN 'revoked'
                           WHEN :'k_expired' THEN 'expired' END AS key, outcome, total
  FROM apikeys.monitor_usage(per_key => true) ORDER BY 1, 2, 3;
SELECT pg_temp.err($$SELECT * FROM apikeys.monitor_usage(NULL)$$);
SELECT tenant, active, keys_active, keys_disabled, keys_revoked, keys_expired,
       audit_head_id > 0 AS has_audit_head, audit_head_at <= now() AS head_at_ok
  FROM apikeys.monitor_tenants();
\echo '-- ... and no table, view of keys or management function'
SELECT pg_temp.err($$SELECT 1 FROM apikeys.credential LIMIT 1$$);
SELECT pg_temp.err($$SELECT 1 FROM apikeys.usage LIMIT 1$$);
SELECT pg_temp.err($$SELECT 1 FROM apikeys.audit LIMIT 1$$);
SELECT pg_temp.err($$SELECT 1 FROM apikeys.tenant LIMIT 1$$);
SELECT pg_temp.err($$SELECT 1 FROM apikeys.key_usage LIMIT 1$$);
SELECT pg_temp.err($$SELECT * FROM apikeys.audit_head()$$);
SELECT pg_temp.err($$SELECT apikeys.grant_monitor('regress_monitor_other')$$);
SELECT pg_temp.err($$SELECT apikeys.apikey_revoke('$$ || :'k_valid' || $$', 'monitor')$$);
RESET ROLE;
SELECT c.relname, has_table_privilege('regress_monitor', c.oid, 'SELECT') AS may_select
  FROM pg_class c WHERE c.relnamespace = 'apikeys'::regnamespace AND c.relkind IN ('r', 'v')
   AND has_table_privilege('regress_monitor', c.oid, 'SELECT') ORDER BY 1;

\echo '-- revoke_monitor takes it all back'
SELECT apikeys.revoke_monitor('regress_monitor');
SET ROLE regress_monitor;
SELECT pg_temp.err($$SELECT * FROM apikeys.verifications$$);
SELECT pg_temp.err($$SELECT * FROM apikeys.runtime$$);
SELECT pg_temp.err($$SELECT * FROM apikeys.monitor_usage()$$);
SELECT pg_temp.err($$SELECT * FROM apikeys.monitor_tenants()$$);
RESET ROLE;

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_monitor, regress_monitor_other, regress_monitor_admin;
DROP ROLE regress_monitor;
DROP ROLE regress_monitor_other;
DROP ROLE regress_monitor_admin;
