--
-- security_explain_side_channel: ATTACK.  A tenant admin runs EXPLAIN
-- (ANALYZE) on everything it can read, with range predicates and planner
-- settings chosen to bisect other tenants' key ids, tenant names and row
-- counts ("Rows Removed by Filter", planner estimates).  It must learn
-- nothing: every plan it can get is byte-identical before and after another
-- tenant adds 300 keys, their audit rows, usage and vault secrets, and
-- ANALYZE refreshes the statistics.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_side_acme;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT count(*) AS tenants FROM (SELECT apikeys.tenant_create(t) FROM unnest('{acme,globex,zeta}'::text[]) t) s;
SELECT count(*) AS acme_keys FROM (SELECT apikeys.apikey_create('acme', 'acme ' || i) FROM generate_series(1, 3) i) s;
SET apikeys.vault_master_key = 'regress-master-key-0123456789abcdef';
SELECT apikeys.vault_add('acme', 'openai', 'acme prod', 'sk-proj-Acme0000Acme0000Acme0000Acme') IS NOT NULL AS acme_secret;
CREATE ROLE regress_side_acme;
SELECT apikeys.grant_tenant('regress_side_acme', 'acme');
SELECT apikeys.grant_tenant('regress_side_acme', 'acme', 'audit');
SELECT apikeys.grant_vault('regress_side_acme');
ANALYZE apikeys.credential, apikeys.secret, apikeys.tenant, apikeys.audit, apikeys.role_tenant,
        apikeys.usage, apikeys.vault_secret;

-- Every probe the attacker runs: EXPLAIN output, or the error.
CREATE TABLE probes (n int PRIMARY KEY, q text);
INSERT INTO probes (n, q) SELECT row_number() OVER (), q FROM (VALUES
    -- the readers it is granted
    ('SELECT * FROM apikeys.keys WHERE key_id BETWEEN ''00000000-0000-0000-0000-000000000000'' AND ''7fffffff-ffff-ffff-ffff-ffffffffffff'''),
    ('SELECT * FROM apikeys.keys WHERE tenant BETWEEN ''b'' AND ''h'''),
    ('SELECT count(*) FROM apikeys.keys'),
    ('SELECT * FROM apikeys.tenants WHERE tenant > ''acme'''),
    ('SELECT * FROM apikeys.audit_log WHERE audit_id BETWEEN 1 AND 100000 ORDER BY audit_id'),
    ('SELECT * FROM apikeys.audit_log WHERE tenant = ''globex'''),
    ('SELECT * FROM apikeys.audit_log_page(''acme'', NULL, 50)'),
    ('SELECT * FROM apikeys.key_usage WHERE key_id > ''00000000-0000-0000-0000-000000000000'''),
    ('SELECT * FROM apikeys.tenant_grants WHERE tenant >= ''a'''),
    ('SELECT * FROM apikeys.vault_secrets WHERE tenant <> ''acme'''),
    ('SELECT * FROM apikeys.vault_list()'),
    -- the tables themselves
    ('SELECT * FROM apikeys.credential WHERE key_id BETWEEN ''00000000-0000-0000-0000-000000000000'' AND ''7fffffff-ffff-ffff-ffff-ffffffffffff'''),
    ('SELECT * FROM apikeys.tenant WHERE tenant BETWEEN ''b'' AND ''h'''),
    ('SELECT * FROM apikeys.audit WHERE audit_id BETWEEN 1 AND 100000'),
    ('SELECT * FROM apikeys.role_tenant WHERE tenant > ''a'''),
    ('SELECT key_id FROM apikeys.secret'),
    ('SELECT * FROM apikeys.usage'),
    ('SELECT id FROM apikeys.vault_secret WHERE tenant > ''a''')
) v(q);
GRANT SELECT ON probes TO regress_side_acme;

-- Run every probe as the attacker, with index scans forced and without.
CREATE FUNCTION pg_temp.run_probes() RETURNS TABLE (n int, settings text, plan text) LANGUAGE plpgsql AS $$
DECLARE
    p record;
    s text;
    line text;
    out_ text;
BEGIN
    FOREACH s IN ARRAY ARRAY['enable_seqscan=on', 'enable_seqscan=off'] LOOP
        PERFORM set_config(split_part(s, '=', 1), split_part(s, '=', 2), true);
        PERFORM set_config('enable_bitmapscan', split_part(s, '=', 2), true);
        FOR p IN SELECT * FROM probes ORDER BY probes.n LOOP
            out_ := '';
            BEGIN
                FOR line IN EXECUTE 'EXPLAIN (ANALYZE, COSTS, TIMING OFF, SUMMARY OFF) ' || p.q LOOP
                    out_ := out_ || line || E'\n';
                END LOOP;
            EXCEPTION WHEN others THEN
                out_ := SQLSTATE || ' ' || SQLERRM;
            END;
            n := p.n; settings := s; plan := out_;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.run_probes() TO regress_side_acme;

SET ROLE regress_side_acme;
CREATE TEMP TABLE before_ AS SELECT * FROM pg_temp.run_probes();
RESET ROLE;

-- globex grows: keys, their audit rows, usage, vault secrets; statistics refreshed
SELECT count(*) AS globex_keys FROM (SELECT apikeys.apikey_create('globex', 'globex ' || i) FROM generate_series(1, 300) i) s;
SELECT count(apikeys.apikey_verify(api_key)) AS verified
  FROM (SELECT (apikeys.apikey_create('zeta', 'zeta ' || i)).api_key FROM generate_series(1, 20) i) s;
SELECT count(apikeys.vault_add('globex', 'generic', 'globex ' || i, 'globex-secret-' || i || '-0123456789')) AS globex_secrets
  FROM generate_series(1, 30) i;
SELECT pg_sleep(0.3);   -- a usage flush (apikeys.flush_interval = 100ms)
ANALYZE apikeys.credential, apikeys.secret, apikeys.tenant, apikeys.audit, apikeys.role_tenant,
        apikeys.usage, apikeys.vault_secret;

SET ROLE regress_side_acme;
CREATE TEMP TABLE after_ AS SELECT * FROM pg_temp.run_probes();
RESET ROLE;

-- Each probe: the same output before and after (what the attacker sees is
-- listed below, once).
SELECT b.n, b.settings, b.plan = a.plan AS identical
  FROM before_ b JOIN after_ a USING (n, settings)
 WHERE b.plan IS DISTINCT FROM a.plan;
SELECT count(*) AS probes, count(*) FILTER (WHERE b.plan = a.plan) AS identical
  FROM before_ b JOIN after_ a USING (n, settings);
-- What the readers show: a function scan of acme's rows, nothing else.
SELECT n, plan FROM after_ WHERE settings = 'enable_seqscan=off' AND n IN (3, 13) ORDER BY n;

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP TABLE probes;
DROP OWNED BY regress_side_acme;
DROP ROLE regress_side_acme;
