--
-- audit_direct: the audit rows of a statement that adds many keys are
-- written straight into apikeys.audit, without a call of the chain trigger
-- per row; whenever something on the table could tell the difference (an
-- INSERT trigger of someone else's, the chain trigger not enabled ALWAYS, a
-- CHECK constraint, forced row security) they go through SQL as before.
-- Either way the rows are chained, checked and take the table's defaults.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT tenant FROM apikeys.tenant_create('acme');
SET track_functions = 'all';
SET stats_fetch_consistency = 'none';
-- calls of the chain trigger since the last look
CREATE FUNCTION pg_temp.chain_calls() RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions
     WHERE schemaname = 'apikeys_internal' AND funcname = '_audit_chain' $$;
CREATE TABLE pg_temp.seen (n bigint);
INSERT INTO pg_temp.seen SELECT pg_temp.chain_calls();
CREATE FUNCTION pg_temp.new_calls() RETURNS bigint LANGUAGE sql AS $$
    WITH c AS (SELECT pg_temp.chain_calls() AS n), u AS (UPDATE pg_temp.seen s SET n = c.n FROM c RETURNING s.n)
    SELECT c.n - (SELECT n FROM pg_temp.seen) FROM c $$;
-- flush this backend's function counts at the end of each statement
CREATE FUNCTION pg_temp.flush() RETURNS void LANGUAGE sql AS $$ SELECT pg_stat_force_next_flush() $$;

-- 20 keys: 40 audit rows, no trigger call
SELECT pg_temp.flush();
SELECT count(*) AS created FROM apikeys.apikey_create_many('acme', ARRAY(SELECT 'k' || i FROM generate_series(1, 20) i)), pg_temp.flush();
SELECT pg_temp.new_calls() AS trigger_calls_direct;
SELECT action, count(*), min(outcome) AS outcome, bool_and(chain = 'acme') AS chained
  FROM apikeys.audit WHERE tenant = 'acme' AND action IN ('key_created', 'secret_issued') GROUP BY 1 ORDER BY 1;
-- numbered 1, 2, 3 ... in the chain, the key's row before its secret's
SELECT count(*) = max(audit_id) AND count(DISTINCT audit_id) = count(*) AS consecutive FROM apikeys.audit WHERE chain = 'acme';
SELECT ok, rows_checked, problem FROM apikeys.audit_check();

-- a default changed on the table is taken, as INSERT would take it
ALTER TABLE apikeys.audit ALTER COLUMN outcome SET DEFAULT 'bulk';
SELECT count(*) AS created FROM apikeys.apikey_create_many('acme', '{d1,d2,d3}');
SELECT outcome, count(*) FROM apikeys.audit WHERE action = 'key_created' GROUP BY 1 ORDER BY 1;
ALTER TABLE apikeys.audit ALTER COLUMN outcome SET DEFAULT 'success';

-- a superuser's own INSERT trigger on the audit sees every row: SQL is used
CREATE TABLE pg_temp.watched (action text);
CREATE FUNCTION pg_temp.watch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO pg_temp.watched VALUES (NEW.action); RETURN NEW; END $$;
CREATE TRIGGER watch AFTER INSERT ON apikeys.audit FOR EACH ROW EXECUTE FUNCTION pg_temp.watch();
SELECT pg_temp.flush();
SELECT pg_temp.new_calls() >= 0 AS reset;
SELECT count(*) AS created FROM apikeys.apikey_create_many('acme', ARRAY(SELECT 'w' || i FROM generate_series(1, 5) i)), pg_temp.flush();
SELECT pg_temp.new_calls() AS trigger_calls_watched;
SELECT action, count(*) FROM pg_temp.watched GROUP BY 1 ORDER BY 1;
DROP TRIGGER watch ON apikeys.audit;

-- a CHECK constraint added to the audit is enforced on bulk rows too
\set VERBOSITY terse
ALTER TABLE apikeys.audit ADD CONSTRAINT no_bulk_names CHECK (detail #>> '{new,name}' NOT LIKE 'forbidden%') NOT VALID;
SELECT count(*) FROM apikeys.apikey_create_many('acme', '{forbidden1,forbidden2}');
ALTER TABLE apikeys.audit DROP CONSTRAINT no_bulk_names;

-- the chain trigger only for the origin: under replica it would not fire,
-- and the rows (unchained) are refused as before
ALTER TABLE apikeys.audit ENABLE TRIGGER audit_chain;
BEGIN;
SET LOCAL session_replication_role = replica;
SELECT count(*) FROM apikeys.apikey_create_many('acme', '{r1,r2}');
ROLLBACK;
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_chain;
\set VERBOSITY default

-- direct again: no trigger call, and the chain still checks
SELECT pg_temp.flush();
SELECT pg_temp.new_calls() >= 0 AS reset;
SELECT count(*) AS created FROM apikeys.apikey_create_many('acme', '{e1,e2,e3,e4}'), pg_temp.flush();
SELECT pg_temp.new_calls() AS trigger_calls_direct_again;
SELECT ok, rows_checked, problem FROM apikeys.audit_check();
-- a rolled-back bulk create leaves no row and no gap
BEGIN;
SELECT count(*) FROM apikeys.apikey_create_many('acme', '{x1,x2}');
ROLLBACK;
SELECT count(*) AS created FROM apikeys.apikey_create_many('acme', '{y1,y2}');
SELECT ok, rows_checked, problem FROM apikeys.audit_check();
