--
-- audit_holes: ATTACKS on the audit chain, each of which got through before
-- per-tenant chains:
--   1. audit_purge('-12 mons +361 days') passed the 1-day floor (months
--      were counted as 30 days) and purged rows seconds old;
--   2. a purge that removed every row left a chain that never checked
--      again (and refused every later purge);
--   3. the hash formatted `at` with YYYY, so a superuser could move a row
--      to the same instant BC without changing its hash (and then purge it);
--   4. under session_replication_role = replica a superuser's key changes
--      left no audit row;
--   5. audit_check() never raises, so a scheduled check "succeeded" on a
--      tampered chain: audit_verify() raises.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
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
-- A superuser silencing the audit table's own triggers, and restoring them.
CREATE PROCEDURE pg_temp.triggers(on_ boolean) LANGUAGE plpgsql AS $$
BEGIN
    IF on_ THEN
        ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_chain;
        ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
        ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_no_truncate;
    ELSE
        ALTER TABLE apikeys.audit DISABLE TRIGGER USER;
    END IF;
END
$$;
-- A superuser rewriting history consistently: move a chain's rows from
-- from_id on back `days` days and re-hash the chain (only audit_head() kept
-- outside shows it), as if they were written that much earlier.  A purge
-- anchor moves with the cutoff it records (the row it records stays, as
-- its hash must), so it stays a day younger than its cutoff and no younger
-- than the rows after it.
CREATE PROCEDURE pg_temp.age_chain(c text, days integer, from_id bigint DEFAULT 1) LANGUAGE plpgsql AS $$
DECLARE
    a apikeys.audit;
    prev bytea;
BEGIN
    CALL pg_temp.triggers(false);
    UPDATE apikeys.audit SET at = at - make_interval(days => days),
                             detail = CASE WHEN action = 'audit_purged'
                                           THEN jsonb_set(detail, '{cutoff}', to_jsonb((detail->>'cutoff')::timestamptz - make_interval(days => days)))
                                           ELSE detail END
     WHERE chain = c AND audit_id >= from_id;
    SELECT decode(p.detail->>'last_purged_hash', 'hex') INTO prev FROM apikeys.audit p
     WHERE p.chain = c AND p.action = 'audit_purged' ORDER BY p.audit_id DESC LIMIT 1;
    prev := coalesce(prev, '\x0000000000000000000000000000000000000000000000000000000000000000');
    FOR a IN SELECT * FROM apikeys.audit WHERE chain = c ORDER BY audit_id LOOP
        a.prev_hash := prev;
        a.row_hash := apikeys_internal._audit_hash(a);
        UPDATE apikeys.audit x SET prev_hash = a.prev_hash, row_hash = a.row_hash
         WHERE x.chain = a.chain AND x.audit_id = a.audit_id;
        prev := a.row_hash;
    END LOOP;
    CALL pg_temp.triggers(true);
END
$$;

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT key_id AS k FROM apikeys.apikey_create('acme', 'one') \gset
SELECT count(*) AS rows_before FROM apikeys.audit \gset

------------------------------------------------------------------------------
-- 1. The floor is the instant, not the fields of the interval
------------------------------------------------------------------------------
SELECT pg_temp.try($$SELECT apikeys.audit_purge('-12 mons +361 days')$$) AS months_and_days,
       pg_temp.try($$SELECT apikeys.audit_purge('1 mon -30 days')$$) AS zero_in_disguise,
       pg_temp.try($$SELECT apikeys.audit_purge('23 hours 59 minutes 59 seconds')$$) AS just_under;
SELECT count(*) = :rows_before AS nothing_purged FROM apikeys.audit;
SELECT apikeys.audit_purge('1 mon -29 days') AS one_day_in_disguise_purges_nothing_recent;

------------------------------------------------------------------------------
-- 2. Purging a whole chain leaves it checkable, and purgeable again
------------------------------------------------------------------------------
CALL pg_temp.age_chain('globex', 20);
SELECT ok FROM apikeys.audit_check();
-- heads stored before the purge (audit_head_check): globex's is purged
-- with the rest of its chain, acme's is still there
SELECT audit_id AS g_id, row_hash AS g_hash, at AS g_at FROM apikeys.audit_head() WHERE chain = 'globex' \gset
SELECT audit_id AS a_id, row_hash AS a_hash, at AS a_at FROM apikeys.audit_head() WHERE chain = 'acme' \gset
SELECT apikeys.audit_purge('1 day') AS purged;
SELECT 'globex' AS chain, * FROM apikeys.audit_head_check('globex', :g_id, :'g_hash', :'g_at')
UNION ALL SELECT 'acme', * FROM apikeys.audit_head_check('acme', :a_id, :'a_hash', :'a_at')
UNION ALL SELECT 'acme, another hash', * FROM apikeys.audit_head_check('acme', :a_id, md5('x') || md5('y'), :'a_at')
UNION ALL SELECT 'acme, another time', * FROM apikeys.audit_head_check('acme', :a_id, :'a_hash', :'a_at'::timestamptz - interval '1 second')
UNION ALL SELECT 'globex, a later row', * FROM apikeys.audit_head_check('globex', :g_id + 10, :'g_hash', :'g_at');
SELECT pg_temp.try($$SELECT apikeys.audit_head_check('acme', NULL, 'x', now())$$) AS null_head;
SELECT chain, audit_id, action FROM apikeys.audit WHERE chain = 'globex' ORDER BY audit_id;
SELECT ok, rows_checked, first_bad_chain, problem FROM apikeys.audit_check();
-- the chain goes on, and a second purge of all of it works as well
SELECT key_id AS gk FROM apikeys.apikey_create('globex', 'after the purge') \gset
SELECT ok FROM apikeys.audit_check();
CALL pg_temp.age_chain('globex', 10, 2);
SELECT apikeys.audit_purge('1 day') AS purged_again;
SELECT chain, audit_id, action, (detail->>'last_purged_id')::bigint AS last_purged_id
  FROM apikeys.audit WHERE chain = 'globex' ORDER BY audit_id;
SELECT ok, problem FROM apikeys.audit_check();
-- acme's chain was never touched
SELECT min(audit_id), count(*) FROM apikeys.audit WHERE chain = 'acme';

------------------------------------------------------------------------------
-- 3. Every column is hashed unambiguously: the same instant BC is another row
------------------------------------------------------------------------------
CALL pg_temp.triggers(false);
UPDATE apikeys.audit SET at = (to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || ' BC')::timestamp AT TIME ZONE 'UTC'
 WHERE chain = 'acme' AND audit_id = 2;
CALL pg_temp.triggers(true);
SELECT ok, first_bad_chain, first_bad_id, problem FROM apikeys.audit_check();
-- and the purge, which would now see that row as ancient, refuses
SELECT pg_temp.try($$SELECT apikeys.audit_purge('1 day')$$) AS purge;
SELECT count(*) FROM apikeys.audit WHERE chain = 'acme' AND audit_id = 2;
-- fields cannot borrow from their neighbours either
CALL pg_temp.triggers(false);
UPDATE apikeys.audit SET at = at + interval '2027 years' WHERE chain = 'acme' AND audit_id = 2;  -- back, roughly
UPDATE apikeys.audit a SET at = s.at FROM (SELECT at FROM apikeys.audit WHERE chain = 'acme' AND audit_id = 1) s
 WHERE a.chain = 'acme' AND a.audit_id = 2;
CALL pg_temp.triggers(true);
SELECT ok, first_bad_id, problem FROM apikeys.audit_check();
SELECT a.row_hash = apikeys_internal._audit_hash(a) AS still_own_hash,
       apikeys_internal._audit_hash(a) = apikeys_internal._audit_hash((a.chain, a.audit_id, a.at, a.tenant, a.key_id, a.action || 'x',
           a.outcome, a.db_role, a.session_role, a.actor, a.request_id, a.client_addr, a.application_name, a.txid,
           a.detail, a.prev_hash, a.row_hash)::apikeys.audit) AS action_covered,
       apikeys_internal._audit_hash((a.chain, a.audit_id, a.at, a.tenant, a.key_id, a.action, a.outcome, a.db_role,
           a.session_role, 'ab', 'c', a.client_addr, a.application_name, a.txid, a.detail, a.prev_hash,
           a.row_hash)::apikeys.audit)
         = apikeys_internal._audit_hash((a.chain, a.audit_id, a.at, a.tenant, a.key_id, a.action, a.outcome, a.db_role,
           a.session_role, 'a', 'bc', a.client_addr, a.application_name, a.txid, a.detail, a.prev_hash,
           a.row_hash)::apikeys.audit) AS shifted_boundary_same
  FROM apikeys.audit a WHERE chain = 'acme' AND audit_id = 1;

------------------------------------------------------------------------------
-- 5. audit_verify() raises on the broken chain (4 below needs a good one)
------------------------------------------------------------------------------
SELECT pg_temp.try('SELECT apikeys.audit_verify()') AS verify_broken;
SELECT apikeys.tenant_delete('acme', force => true);
SELECT pg_temp.try('SELECT apikeys.audit_verify()') AS still_broken;   -- deleting the tenant hides nothing
CALL pg_temp.triggers(false);
DELETE FROM apikeys.audit WHERE chain = 'acme';
CALL pg_temp.triggers(true);
SELECT pg_temp.try('SELECT apikeys.audit_verify()') AS verify_ok;

------------------------------------------------------------------------------
-- 4. session_replication_role = replica silences nothing
------------------------------------------------------------------------------
SELECT tenant FROM apikeys.tenant_create('initech');
SET session_replication_role = replica;
SELECT key_id AS rk FROM apikeys.apikey_create('initech', 'made under replica') \gset
SELECT apikeys.apikey_update(:'rk', description => 'updated under replica');
SELECT apikeys.apikey_revoke(:'rk');
UPDATE apikeys.credential SET name = 'renamed by hand' WHERE key_id = :'rk';
SELECT pg_temp.try('UPDATE apikeys.audit SET actor = ''evil''') AS edit_under_replica;
RESET session_replication_role;
SELECT action FROM apikeys.audit WHERE chain = 'initech' ORDER BY audit_id;
SELECT ok FROM apikeys.audit_check();

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
