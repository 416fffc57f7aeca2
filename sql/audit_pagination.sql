--
-- audit_pagination: the keyset queries a UI or an exporter pages the audit
-- with (by tenant, by key, by time, newest or oldest first) are index scans
-- on apikeys.audit's indexes, with no sort and no full scan.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_pg_auditor;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- A superuser silencing the audit's own triggers (they fire ALWAYS, so
-- session_replication_role = replica no longer does it), and restoring them.
CREATE PROCEDURE pg_temp.tamper(on_ boolean) LANGUAGE plpgsql AS $$
BEGIN
    IF on_ THEN
        ALTER TABLE apikeys.audit DISABLE TRIGGER USER;
    ELSE
        ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_chain;
        ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
        ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_no_truncate;
    END IF;
END
$$;

-- Some history: 10 tenants; acme is a small one among big ones, as in a
-- real multi-tenant audit (the plans below are chosen on that shape).
SELECT count(*) AS tenants FROM (
    SELECT apikeys.tenant_create(t)
      FROM unnest(ARRAY['acme', 'globex', 'initech', 'umbrella', 'hooli', 'stark',
                        'wayne', 'wonka', 'tyrell', 'cyberdyne']) t) s;
SELECT count(*) AS keys FROM (
    SELECT apikeys.apikey_create(t.tenant, 'key ' || i)
      FROM apikeys.tenant t, generate_series(1, CASE WHEN t.tenant = 'acme' THEN 4 ELSE 40 END) i) s;
SELECT count(apikeys.apikey_update(key_id, description => 'touched')) AS updated FROM apikeys.keys;
SELECT key_id AS k FROM apikeys.keys WHERE tenant = 'acme' AND name = 'key 2' \gset
ANALYZE apikeys.audit;
SET enable_seqscan = off;
SET enable_bitmapscan = off;

-- By tenant (its chain), newest first, next page after audit_id 1000.
EXPLAIN (COSTS OFF)
SELECT * FROM apikeys.audit
 WHERE chain = 'acme' AND audit_id < 1000
 ORDER BY audit_id DESC LIMIT 50;
-- By tenant, oldest first.
EXPLAIN (COSTS OFF)
SELECT * FROM apikeys.audit
 WHERE chain = 'acme' AND audit_id > 10
 ORDER BY audit_id LIMIT 50;
-- By key.
EXPLAIN (COSTS OFF)
SELECT * FROM apikeys.audit
 WHERE key_id = '00000000-0000-0000-0000-000000000001' AND audit_id < 1000
 ORDER BY audit_id DESC LIMIT 50;
-- By time, oldest first from a point in time, next page after (at, audit_id).
EXPLAIN (COSTS OFF)
SELECT * FROM apikeys.audit
 WHERE at >= '2024-01-01 00:00:00+00'
 ORDER BY at, audit_id LIMIT 50;
EXPLAIN (COSTS OFF)
SELECT * FROM apikeys.audit
 WHERE (at, audit_id) > ('2024-01-01 00:00:00+00', 1000)
 ORDER BY at, audit_id LIMIT 50;
-- By time, newest first.
EXPLAIN (COSTS OFF)
SELECT * FROM apikeys.audit
 WHERE at < '2030-01-01 00:00:00+00'
 ORDER BY at DESC, audit_id DESC LIMIT 50;
-- One chain, newest first (the primary key), the chain of rows of no tenant too.
EXPLAIN (COSTS OFF)
SELECT * FROM apikeys.audit WHERE chain = '' AND audit_id < 1000 ORDER BY audit_id DESC LIMIT 50;

-- An auditor of acme reads apikeys.audit_log (a function scan: nothing of
-- the other tenants' rows is scanned for it, nor shown by EXPLAIN) and
-- pages it with apikeys.audit_log_page().
CREATE ROLE regress_pg_auditor;
SELECT apikeys.grant_tenant('regress_pg_auditor', 'acme', 'audit');
SELECT key_id AS globex_k FROM apikeys.keys WHERE tenant = 'globex' LIMIT 1 \gset
SET ROLE regress_pg_auditor;
EXPLAIN (COSTS OFF)
SELECT * FROM apikeys.audit_log
 WHERE chain = 'acme' AND audit_id < 1000
 ORDER BY audit_id DESC LIMIT 50;
SELECT count(*) AS acme_rows, count(*) FILTER (WHERE tenant <> 'acme') AS others FROM apikeys.audit_log;
SELECT count(*) AS direct FROM apikeys.audit;

-- The pages themselves are right: walking acme's audit 7 rows at a time,
-- newest first, visits each of its rows once, in order.
WITH RECURSIVE pages(n, last_id, ids) AS (
    SELECT 0, 9223372036854775807::bigint, ARRAY[]::bigint[]
  UNION ALL
    SELECT p.n + 1, pg.min_id, p.ids || pg.ids
      FROM pages p,
           LATERAL (SELECT min(audit_id) AS min_id, array_agg(audit_id ORDER BY audit_id DESC) AS ids
                      FROM apikeys.audit_log_page('acme', p.last_id, 7) x) pg
     WHERE pg.min_id IS NOT NULL)
SELECT max(n) AS pages,
       (SELECT ids FROM pages ORDER BY n DESC LIMIT 1)
         = (SELECT array_agg(audit_id ORDER BY audit_id DESC) FROM apikeys.audit_log) AS all_in_order
  FROM pages;
-- Same for one key: its rows, newest first.
SELECT array_agg(action ORDER BY audit_id) AS key_history FROM apikeys.audit_log_page('acme', key_id => :'k') s;
SELECT count(*) AS globex_key_rows FROM apikeys.audit_log_page('globex', key_id => :'globex_k');
SELECT count(*) AS three FROM apikeys.audit_log_page('acme', NULL, 3);
-- Its audit_check() covers its own rows only (each against its hash), and
-- audit_head() is its newest row: nothing about the other tenants' rows.
SELECT ok, rows_checked, first_bad_id, problem FROM apikeys.audit_check();
SELECT audit_id AS acme_head_id, row_hash AS acme_head_hash FROM apikeys.audit_head() \gset
RESET ROLE;
SELECT :'acme_head_id' = (SELECT max(audit_id) FROM apikeys.audit WHERE tenant = 'acme')::text AS head_is_acmes_newest,
       :'acme_head_hash' = (SELECT encode(row_hash, 'hex') FROM apikeys.audit WHERE chain = 'acme' AND audit_id = :acme_head_id) AS hash_matches,
       (SELECT count(*) FROM apikeys.audit WHERE tenant = 'acme') AS acme_rows;
-- A broken acme row is found by acme's auditor; a broken globex row is not
-- its business (the superuser's full check finds both).
CALL pg_temp.tamper(true);   -- a superuser silencing the triggers
UPDATE apikeys.audit SET actor = 'tampered' WHERE chain = 'globex' AND audit_id = 1;
CALL pg_temp.tamper(false);
SET ROLE regress_pg_auditor;
SELECT ok, rows_checked FROM apikeys.audit_check();
RESET ROLE;
SELECT ok, problem FROM apikeys.audit_check();
CALL pg_temp.tamper(true);
UPDATE apikeys.audit SET actor = 'tampered' WHERE chain = 'acme' AND audit_id = :acme_head_id;
CALL pg_temp.tamper(false);
SET ROLE regress_pg_auditor;
SELECT ok, first_bad_id = :acme_head_id AS at_acme_head, problem FROM apikeys.audit_check();
RESET ROLE;
-- The page size is bounded.
SELECT apikeys.audit_log_page('acme', NULL, 0);
SELECT apikeys.audit_log_page('acme', NULL, 100000);

RESET enable_seqscan;
RESET enable_bitmapscan;
SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_pg_auditor;
DROP ROLE regress_pg_auditor;
