--
-- security_pending_usage: ATTACK.  apikeys_internal._pending_usage(key_id) reads
-- shared memory.  grant_tenant does not grant it (apikeys.key_usage reads
-- it inside its reader), so a tenant role cannot call it at all; and where a
-- DBA grants it (with SELECT on apikeys.credential, as below), a hostile
-- tenant role that calls it with another
-- tenant's key id (known from a log, a support ticket, a guess) gets exactly
-- what it gets for a key that does not exist: a row of NULLs.  No last use,
-- no counts, on the one-by-one path (the first calls of a statement) and on
-- the path that reads the caller's visible keys at once (later calls).
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_pu_acme, regress_pu_globex, regress_pu_nosel;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT current_user AS su \gset

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT key_id AS acme_k, api_key AS acme_key FROM apikeys.apikey_create('acme', 'acme one') \gset
SELECT key_id AS globex_k, api_key AS globex_key FROM apikeys.apikey_create('globex', 'globex one') \gset
SELECT key_id AS globex_capped_k, api_key AS globex_capped_key FROM apikeys.apikey_create('globex', 'globex capped') \gset
SELECT apikeys.apikey_set_policy(:'globex_capped_k', rate_limit => 10, rate_window => '1 hour', usage_limit => 100);
CREATE ROLE regress_pu_acme LOGIN;
CREATE ROLE regress_pu_globex LOGIN;
CREATE ROLE regress_pu_nosel LOGIN;
SELECT apikeys.grant_tenant('regress_pu_acme', 'acme');
SELECT apikeys.grant_tenant('regress_pu_globex', 'globex');
SET ROLE regress_pu_acme;
\set VERBOSITY terse
SELECT apikeys_internal._pending_usage(:'globex_k');   -- not granted by grant_tenant
\set VERBOSITY default
RESET ROLE;
-- what a DBA might grant by hand: the function (and the schema it lives in,
-- which no role may use otherwise) and the table under RLS
GRANT USAGE ON SCHEMA apikeys_internal TO regress_pu_acme, regress_pu_globex, regress_pu_nosel;
GRANT EXECUTE ON FUNCTION apikeys_internal._pending_usage(uuid) TO regress_pu_acme, regress_pu_globex;
GRANT SELECT ON apikeys.credential TO regress_pu_acme, regress_pu_globex;
-- may call the function, but may not read apikeys.credential
GRANT USAGE ON SCHEMA apikeys TO regress_pu_nosel;
GRANT EXECUTE ON FUNCTION apikeys_internal._pending_usage(uuid) TO regress_pu_nosel;

-- the keys are used: shared memory holds their last use and counts
SELECT v.code, count(*) FROM (VALUES (:'acme_key'), (:'globex_key'), (:'globex_key'),
                                     (:'globex_capped_key'), (:'globex_capped_key')) k(key),
       LATERAL apikeys.apikey_verify(k.key) v GROUP BY v.code;
-- what there is to leak, as the superuser sees it
SELECT key_id = :'globex_k' AS is_globex_key, last_used_at IS NOT NULL AS has_last_use
  FROM apikeys_internal._pending_usage(:'globex_k');
SELECT key_id = :'globex_capped_k' AS is_capped_key, last_used_at IS NOT NULL AS has_last_use,
       used AS used_against_cap
  FROM apikeys_internal._pending_usage(:'globex_capped_k');

------------------------------------------------------------------------------
-- The attacker: acme's admin
------------------------------------------------------------------------------
\c - regress_pu_acme
-- its own key: answered
SELECT key_id = :'acme_k' AS own_key, last_used_at IS NOT NULL AS has_last_use
  FROM apikeys_internal._pending_usage(:'acme_k');
-- another tenant's used keys and a random uuid: the same row of NULLs
SELECT 'globex key' AS asked, p.* FROM apikeys_internal._pending_usage(:'globex_k') p
UNION ALL
SELECT 'globex capped key', p.* FROM apikeys_internal._pending_usage(:'globex_capped_k') p
UNION ALL
SELECT 'random uuid', p.* FROM apikeys_internal._pending_usage(gen_random_uuid()) p;
SELECT (SELECT p::text FROM apikeys_internal._pending_usage(:'globex_k') p) AS globex_key,
       (SELECT p::text FROM apikeys_internal._pending_usage(:'globex_capped_k') p) AS globex_capped_key,
       (SELECT p::text FROM apikeys_internal._pending_usage('00000000-0000-4000-8000-000000000000') p) AS unknown_key;
-- many ids in one statement: after the first 16 the visible keys are read at
-- once; other tenants' keys stay hidden on either path, its own key answers
SELECT x.n, x.asked, p.key_id IS NOT NULL AS answered, p.last_used_at IS NOT NULL AS has_last_use,
       p.counts IS NOT NULL AS has_counts
  FROM (SELECT g AS n, CASE WHEN g IN (3, 30) THEN 'globex key'
                            WHEN g IN (5, 35) THEN 'globex capped key'
                            WHEN g IN (7, 37) THEN 'own key'
                            ELSE 'random uuid' END AS asked
          FROM generate_series(1, 40) g) x,
       LATERAL apikeys_internal._pending_usage(CASE x.asked WHEN 'globex key' THEN :'globex_k'::uuid
                                                   WHEN 'globex capped key' THEN :'globex_capped_k'::uuid
                                                   WHEN 'own key' THEN :'acme_k'::uuid
                                                   ELSE gen_random_uuid() END) p
 WHERE x.asked <> 'random uuid' OR p.key_id IS NOT NULL
 ORDER BY x.n;
-- the view: its own key only
SELECT name, valid FROM apikeys.key_usage ORDER BY name;
-- SET and set_config do not widen what it sees
SET row_security = on;
SELECT set_config('request.jwt.claims', '{"tenant": "globex"}', false) IS NOT NULL AS set;
SELECT count(*) AS answered FROM apikeys_internal._pending_usage(:'globex_k') p WHERE p.key_id IS NOT NULL;

------------------------------------------------------------------------------
-- globex's admin sees its own keys
------------------------------------------------------------------------------
\c - regress_pu_globex
SELECT key_id = :'globex_k' AS own_key, last_used_at IS NOT NULL AS has_last_use
  FROM apikeys_internal._pending_usage(:'globex_k');
SELECT name, valid FROM apikeys.key_usage ORDER BY name;

------------------------------------------------------------------------------
-- A role that may call the function but not read apikeys.credential
------------------------------------------------------------------------------
\c - regress_pu_nosel
SELECT p.* FROM apikeys_internal._pending_usage(:'globex_k') p;

\c - :su
SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_pu_acme, regress_pu_globex, regress_pu_nosel;
DROP ROLE regress_pu_acme, regress_pu_globex, regress_pu_nosel;
