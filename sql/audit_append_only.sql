--
-- audit_append_only: nobody updates, deletes or truncates apikeys.audit
-- (superuser and owner included) except apikeys.audit_purge(); every change
-- is recorded with the right action, role, actor and request id and never a
-- secret or a digest; a superuser's tampering (triggers bypassed with
-- session_replication_role = replica) is reported by audit_check().
--
-- Refused management attempts roll back with their transaction, so they are
-- not rows here: they go to the server log as "apikeys_audit_denied {json}"
-- lines (test/t/denied_attempts_logged.sh checks them).
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_audit_admin, regress_audit_owner;
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
SELECT session_user AS su \gset

CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
-- Audit rows as the test prints them: no ids, times or hashes; the
-- superuser running the test shows as (superuser).
CREATE VIEW pg_temp.audit_rows AS
SELECT a.audit_id, a.tenant, a.action, a.outcome,
       CASE WHEN a.db_role = session_user THEN '(superuser)' ELSE a.db_role END AS db_role,
       CASE WHEN a.session_role = session_user THEN '(superuser)' ELSE a.session_role END AS session_role,
       a.actor, a.request_id, a.key_id IS NOT NULL AS has_key_id
  FROM apikeys.audit a;

CREATE ROLE regress_audit_admin;
CREATE ROLE regress_audit_owner;
SELECT tenant FROM apikeys.tenant_create('acme');
SELECT apikeys.grant_tenant('regress_audit_admin', 'acme');

------------------------------------------------------------------------------
-- A lifecycle, labelled by apikeys.actor / apikeys.request_id (set for the
-- transaction: session values are ignored, see security_context_labels)
------------------------------------------------------------------------------
BEGIN;
SET LOCAL apikeys.actor = 'alice@example.com';
SET LOCAL apikeys.request_id = 'req-0001';
SET LOCAL ROLE regress_audit_admin;
SELECT key_id AS k, api_key AS key1 FROM apikeys.apikey_create('acme', 'lifecycle', '{read}') \gset
SELECT api_key AS key2 FROM apikeys.apikey_rotate(:'k', '1 hour') \gset
COMMIT;
-- each transaction states its labels
BEGIN;
SET LOCAL apikeys.actor = 'alice@example.com';
SET LOCAL apikeys.request_id = 'req-0001';
SET LOCAL ROLE regress_audit_admin;
SELECT apikeys.apikey_update(:'k', name => 'renamed', scopes => '{read,write}');
SELECT apikeys.apikey_disable(:'k');
SELECT apikeys.apikey_enable(:'k');
SELECT apikeys.apikey_revoke(:'k', 'compromised');
SELECT key_id AS k2, api_key AS key3 FROM apikeys.apikey_create('acme', 'short-lived') \gset
SELECT apikeys.apikey_delete(:'k2');
COMMIT;
-- PostgREST's GUCs (transaction-local, as PostgREST sets them) are the
-- fallback when apikeys.actor / request_id are not set.
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub":"jwt-user-42","role":"authenticated"}', true) IS NOT NULL AS claims,
       set_config('request.headers', '{"x-request-id":"hdr-req-7"}', true) IS NOT NULL AS headers;
SELECT tenant FROM apikeys.tenant_update('acme', display_name => 'ACME');
SELECT tenant FROM apikeys.tenant_update('acme', active => false);
SELECT tenant FROM apikeys.tenant_update('acme', active => true);
-- ... and apikeys.actor / request_id win when both are set.
SET LOCAL apikeys.actor = 'bob';
SET LOCAL apikeys.request_id = 'req-0002';
SELECT tenant FROM apikeys.tenant_create('doomed');
SELECT apikeys.tenant_delete('doomed');
SELECT apikeys.revoke_tenant('regress_audit_admin', 'acme');
SELECT apikeys.grant_tenant('regress_audit_admin', 'acme');
COMMIT;

SELECT * FROM pg_temp.audit_rows ORDER BY audit_id;
-- Rows of the lifecycle key carry its key_id and tenant.
SELECT action FROM apikeys.audit WHERE key_id = :'k' ORDER BY audit_id;
-- What changed, for an update: old and new values, nothing else.
SELECT (detail->'changed') - 'updated_at' AS changed, detail->'changed'->'updated_at'->>0 < detail->'changed'->'updated_at'->>1 AS updated_at_moved
  FROM apikeys.audit WHERE key_id = :'k' AND action = 'key_updated' ORDER BY audit_id LIMIT 1;
SELECT detail->'changed'->'status' AS status, detail->'changed'->'revoked_reason' AS reason
  FROM apikeys.audit WHERE action = 'key_revoked';

-- No plaintext key and no digest of one, in any encoding, anywhere in a row.
CREATE TEMP TABLE plain (k text);
INSERT INTO plain VALUES (:'key1'), (:'key2'), (:'key3');
CREATE TEMP TABLE secrets_seen AS
SELECT p.k, s.form
  FROM plain p,
       LATERAL (VALUES (p.k), (substr(p.k, 4)),
                       (encode(sha256(convert_to(p.k, 'UTF8')), 'hex')),
                       (encode(sha256(convert_to(p.k, 'UTF8')), 'base64')),
                       (encode(sha256(convert_to(p.k, 'UTF8')), 'escape'))) AS s(form);
SELECT count(*) AS forms_checked,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM apikeys.audit a
                                       WHERE position(x.form IN a::text) > 0
                                          OR position(x.form IN a.detail::text) > 0)) AS forms_found
  FROM secrets_seen x;
-- The digests stored right now are not in the audit either (as bytea or hex).
SELECT count(*) AS stored_digests,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM apikeys.audit a
                                       WHERE position(encode(s.digest, 'hex') IN a::text) > 0
                                          OR position(s.digest IN a.prev_hash) > 0)) AS in_audit
  FROM apikeys.secret s;
-- secret rows are audited without their digest column.
SELECT count(*) AS secret_rows, count(*) FILTER (WHERE detail::text LIKE '%digest%') AS with_digest
  FROM apikeys.audit WHERE action LIKE 'secret_%';
SELECT ok, rows_checked, first_bad_id, problem FROM apikeys.audit_check();

------------------------------------------------------------------------------
-- Append-only: superuser
------------------------------------------------------------------------------
SELECT pg_temp.try('UPDATE apikeys.audit SET actor = ''evil'' WHERE audit_id = 3') AS su_update,
       pg_temp.try('DELETE FROM apikeys.audit WHERE audit_id = 3') AS su_delete,
       pg_temp.try('TRUNCATE apikeys.audit') AS su_truncate;
-- As psql shows them.
UPDATE apikeys.audit SET actor = 'evil';
DELETE FROM apikeys.audit;
TRUNCATE apikeys.audit;
-- TRUNCATE ... CASCADE, ONLY, and DELETE through a CTE fare no better.
SELECT pg_temp.try('TRUNCATE ONLY apikeys.audit CASCADE') AS su_truncate_cascade,
       pg_temp.try('WITH d AS (DELETE FROM apikeys.audit RETURNING 1) SELECT count(*) FROM d') AS su_cte_delete;
-- An upsert aimed at row 1 cannot overwrite it: the chain trigger numbers
-- every inserted row itself, so the superuser's row is appended (and chained).
INSERT INTO apikeys.audit (chain, audit_id, tenant, action, db_role, session_role, prev_hash, row_hash)
VALUES ('acme', 1, 'acme', 'superuser_note', 'x', 'x', '', '') ON CONFLICT (chain, audit_id) DO UPDATE SET actor = 'evil'
RETURNING audit_id, action, actor;
SELECT audit_id, action, actor FROM apikeys.audit WHERE chain = 'acme' AND audit_id = 1;
-- The purge helper refuses to run outside audit_purge().
SELECT pg_temp.try('SELECT apikeys_internal._audit_purge_rows(now() - interval ''1 day'', ''1 day'')') AS purge_rows_direct;

------------------------------------------------------------------------------
-- Append-only: a non-superuser owner of the table
------------------------------------------------------------------------------
ALTER TABLE apikeys.audit OWNER TO regress_audit_owner;
GRANT USAGE ON SCHEMA apikeys TO regress_audit_owner;
SET ROLE regress_audit_owner;
SELECT pg_temp.try('UPDATE apikeys.audit SET actor = ''evil''') AS owner_update,
       pg_temp.try('DELETE FROM apikeys.audit') AS owner_delete,
       pg_temp.try('TRUNCATE apikeys.audit') AS owner_truncate;
RESET ROLE;
ALTER TABLE apikeys.audit OWNER TO :"su";

------------------------------------------------------------------------------
-- Append-only: a tenant role
------------------------------------------------------------------------------
SET ROLE regress_audit_admin;
SELECT count(*) > 0 AS reads_acme FROM apikeys.audit_log;
SELECT pg_temp.try('UPDATE apikeys.audit SET actor = ''evil''') AS tenant_update,
       pg_temp.try('DELETE FROM apikeys.audit') AS tenant_delete,
       pg_temp.try('TRUNCATE apikeys.audit') AS tenant_truncate,
       pg_temp.try('INSERT INTO apikeys.audit (audit_id, action, db_role, session_role, prev_hash, row_hash)'
                   ' VALUES (1000, ''x'', ''x'', ''x'', '''', '''')') AS tenant_insert;
SELECT pg_temp.try('SELECT apikeys.audit_purge(''1 year'')') AS tenant_purge,
       pg_temp.try('SELECT apikeys_internal._audit_write(''key_created'', ''acme'', NULL, ''{}'')') AS tenant_audit_write;
SET apikeys.audit_retention = '1 day';
SELECT pg_temp.try('SET apikeys.audit_retention = ''1 day''') AS tenant_set_retention,
       pg_temp.try('SELECT set_config(''apikeys.audit_retention'', ''1 day'', false)') AS tenant_set_config;
RESET ROLE;

------------------------------------------------------------------------------
-- TRUNCATE of the audited tables fires no row trigger: refused for the
-- owner too; a tenant role has no TRUNCATE privilege at all.
------------------------------------------------------------------------------
SELECT t, pg_temp.try(format('TRUNCATE apikeys.%I CASCADE', t)) AS owner_truncate
  FROM unnest(ARRAY['tenant', 'credential', 'secret', 'role_tenant', 'vault_secret', 'vault_service']) t;
SET ROLE regress_audit_admin;
SELECT t, pg_temp.try(format('TRUNCATE apikeys.%I', t)) AS tenant_truncate
  FROM unnest(ARRAY['tenant', 'credential', 'secret', 'role_tenant']) t;
RESET ROLE;
SELECT count(*) > 0 AS keys_still_there FROM apikeys.credential;

------------------------------------------------------------------------------
-- Attack: make a change look like pg_restore's COPY so the triggers skip it
-- (a COPY ... TO with " FROM stdin" in a literal, a comment, or both).
------------------------------------------------------------------------------
SELECT key_id AS k3 FROM apikeys.apikey_create('acme', 'copy-disguise') \gset
SELECT max(audit_id) AS before_copy FROM apikeys.audit WHERE chain = 'acme' \gset
SET ROLE regress_audit_admin;
COPY (SELECT apikeys.apikey_update(:'k3', description => ' FROM stdin')) TO STDOUT;
COPY (SELECT apikeys.apikey_disable(:'k3')) TO STDOUT; -- FROM stdin
copy (SELECT apikeys.apikey_enable(:'k3')) TO STDOUT; -- copy apikeys.tenant FROM stdin
COPY (SELECT apikeys.apikey_revoke(:'k3', ' FROM stdin')) TO STDOUT;
RESET ROLE;
-- every change is audited all the same
SELECT action, db_role = 'regress_audit_admin' AS by_admin
  FROM apikeys.audit WHERE chain = 'acme' AND audit_id > :before_copy ORDER BY audit_id;
SELECT ok FROM apikeys.audit_check();

------------------------------------------------------------------------------
-- audit_purge: at least 1 day, default from apikeys.audit_retention
------------------------------------------------------------------------------
SELECT count(*) AS rows_before, max(audit_id) FILTER (WHERE chain = 'acme') AS last_before FROM apikeys.audit \gset
SELECT apikeys.audit_purge('1 hour');
SELECT apikeys.audit_purge('23 hours 59 minutes');
SELECT apikeys.audit_purge('-1 year');
SHOW apikeys.audit_retention;
SELECT apikeys.audit_purge();
SELECT apikeys.audit_purge(NULL);
SET apikeys.audit_retention = '1 hour';
SELECT apikeys.audit_purge();
SET apikeys.audit_retention = 'forever';
SELECT apikeys.audit_purge();
-- Nothing is a day old yet: nothing purged, nothing written.
SELECT apikeys.audit_purge('1 day') AS purged;
SET apikeys.audit_retention = '1 day';
SELECT apikeys.audit_purge() AS purged;
SELECT count(*) = :rows_before AS same_count, max(audit_id) FILTER (WHERE chain = 'acme') = :last_before AS same_last FROM apikeys.audit;

------------------------------------------------------------------------------
-- Tampering by a superuser is detected
------------------------------------------------------------------------------
CREATE TEMP TABLE saved AS SELECT * FROM apikeys.audit;
SELECT * FROM apikeys.audit_head() WHERE chain = 'acme' \gset head_
-- an edited row
CALL pg_temp.tamper(true);
UPDATE apikeys.audit SET actor = 'evil' WHERE chain = 'acme' AND audit_id = 3;
CALL pg_temp.tamper(false);
SELECT ok, rows_checked, first_bad_id, problem FROM apikeys.audit_check();
-- the retention routine never deletes evidence of tampering
SELECT pg_temp.try('SELECT apikeys.audit_purge(''1 day'')') AS purge_broken_chain;
SELECT count(*) = :rows_before AS nothing_purged FROM apikeys.audit;
CALL pg_temp.tamper(true);
UPDATE apikeys.audit a SET actor = s.actor FROM saved s WHERE a.chain = 'acme' AND a.audit_id = 3 AND s.chain = 'acme' AND s.audit_id = 3;
CALL pg_temp.tamper(false);
SELECT ok, first_bad_id FROM apikeys.audit_check();
-- an edited detail of a later row
CALL pg_temp.tamper(true);
UPDATE apikeys.audit SET detail = '{}' WHERE chain = 'acme' AND audit_id = 10;
CALL pg_temp.tamper(false);
SELECT ok, rows_checked, first_bad_id, problem FROM apikeys.audit_check();
CALL pg_temp.tamper(true);
UPDATE apikeys.audit a SET detail = s.detail FROM saved s WHERE a.chain = 'acme' AND a.audit_id = 10 AND s.chain = 'acme' AND s.audit_id = 10;
CALL pg_temp.tamper(false);
-- a deleted middle row
CALL pg_temp.tamper(true);
DELETE FROM apikeys.audit WHERE chain = 'acme' AND audit_id = 5;
CALL pg_temp.tamper(false);
SELECT ok, rows_checked, first_bad_id, problem FROM apikeys.audit_check();
-- a row re-hashed after its edit breaks the link of the next one
CALL pg_temp.tamper(true);
INSERT INTO apikeys.audit SELECT * FROM saved WHERE chain = 'acme' AND audit_id = 5;
UPDATE apikeys.audit SET actor = 'evil' WHERE chain = 'acme' AND audit_id = 7;
UPDATE apikeys.audit a SET row_hash = apikeys_internal._audit_hash(a) WHERE chain = 'acme' AND audit_id = 7;
CALL pg_temp.tamper(false);
SELECT ok, rows_checked, first_bad_id, problem FROM apikeys.audit_check();
-- the first row unlinked from the chain start
CALL pg_temp.tamper(true);
UPDATE apikeys.audit a SET actor = s.actor, row_hash = s.row_hash FROM saved s WHERE a.chain = 'acme' AND a.audit_id = 7 AND s.chain = 'acme' AND s.audit_id = 7;
DELETE FROM apikeys.audit WHERE chain = 'acme' AND audit_id = 1;
CALL pg_temp.tamper(false);
SELECT ok, rows_checked, first_bad_id, problem FROM apikeys.audit_check();
CALL pg_temp.tamper(true);
INSERT INTO apikeys.audit SELECT * FROM saved WHERE chain = 'acme' AND audit_id = 1;
CALL pg_temp.tamper(false);
SELECT ok, rows_checked = :rows_before AS all_rows, first_bad_id FROM apikeys.audit_check();
-- Dropping the newest row keeps the chain consistent: that is what
-- audit_head(), kept outside the database, is for.
CALL pg_temp.tamper(true);
DELETE FROM apikeys.audit WHERE chain = 'acme' AND audit_id = :last_before;
CALL pg_temp.tamper(false);
SELECT ok, first_bad_id FROM apikeys.audit_check();
SELECT audit_id = :head_audit_id AS same_head_id, row_hash = :'head_row_hash' AS same_head_hash FROM apikeys.audit_head() WHERE chain = 'acme';
CALL pg_temp.tamper(true);
INSERT INTO apikeys.audit SELECT * FROM saved WHERE chain = 'acme' AND audit_id = :last_before;
CALL pg_temp.tamper(false);
SELECT audit_id = :head_audit_id AS same_head_id, row_hash = :'head_row_hash' AS same_head_hash FROM apikeys.audit_head() WHERE chain = 'acme';
SELECT ok FROM apikeys.audit_check();

------------------------------------------------------------------------------
-- audit_purge of old rows keeps the chain checkable
------------------------------------------------------------------------------
-- Age the first 6 rows by 10 days and re-hash the whole chain (a superuser
-- rewriting history consistently; only audit_head() shows it).
CALL pg_temp.tamper(true);
UPDATE apikeys.audit SET at = at - interval '10 days' WHERE chain = 'acme' AND audit_id <= 6;
DO $$
DECLARE
    a apikeys.audit;
    prev bytea;
    last_chain text;
BEGIN
    FOR a IN SELECT * FROM apikeys.audit ORDER BY chain, audit_id LOOP
        IF a.chain IS DISTINCT FROM last_chain THEN
            prev := '\x0000000000000000000000000000000000000000000000000000000000000000';
            last_chain := a.chain;
        END IF;
        a.prev_hash := prev;
        a.row_hash := apikeys_internal._audit_hash(a);
        UPDATE apikeys.audit x SET prev_hash = a.prev_hash, row_hash = a.row_hash
         WHERE x.chain = a.chain AND x.audit_id = a.audit_id;
        prev := a.row_hash;
    END LOOP;
END
$$;
CALL pg_temp.tamper(false);
SELECT ok, rows_checked = :rows_before AS all_rows FROM apikeys.audit_check();
SELECT row_hash = :'head_row_hash' AS same_head_hash FROM apikeys.audit_head() WHERE chain = 'acme';
SELECT apikeys.audit_purge('11 days') AS purged_none;
SELECT apikeys.audit_purge() AS purged;
SELECT min(audit_id) FILTER (WHERE chain = 'acme') AS first_left, count(*) AS rows_left FROM apikeys.audit;
SELECT action, CASE WHEN db_role = session_user THEN '(superuser)' ELSE db_role END AS db_role, tenant,
       detail - 'last_purged_hash' - 'cutoff' - 'last_purged_row' AS detail,
       detail->>'last_purged_hash' ~ '^[0-9a-f]{64}$' AS has_anchor
  FROM apikeys.audit WHERE action = 'audit_purged';
SELECT ok, rows_checked, first_bad_id, problem FROM apikeys.audit_check();
SELECT apikeys.audit_purge('1 day') AS purged_again;
-- Tampering after a purge is still found; so is a forged anchor.
CALL pg_temp.tamper(true);
UPDATE apikeys.audit SET actor = 'evil' WHERE chain = 'acme' AND audit_id = 8;
CALL pg_temp.tamper(false);
SELECT ok, first_bad_id, problem FROM apikeys.audit_check();
SELECT pg_temp.try('SELECT apikeys.audit_purge(''1 day'')') AS purge_broken_chain;
CALL pg_temp.tamper(true);
UPDATE apikeys.audit a SET actor = s.actor FROM saved s WHERE a.chain = 'acme' AND a.audit_id = 8 AND s.chain = 'acme' AND s.audit_id = 8;
CALL pg_temp.tamper(false);
-- the oldest rows left after a purge deleted by hand: a gap after the anchor
CALL pg_temp.tamper(true);
DELETE FROM apikeys.audit WHERE chain = 'acme' AND audit_id = 7;
CALL pg_temp.tamper(false);
SELECT ok, first_bad_id, problem FROM apikeys.audit_check();
CALL pg_temp.tamper(true);
INSERT INTO apikeys.audit SELECT * FROM saved WHERE chain = 'acme' AND audit_id = 7;
UPDATE apikeys.audit SET detail = jsonb_set(detail, '{last_purged_hash}', to_jsonb(repeat('0', 64)))
 WHERE action = 'audit_purged';
CALL pg_temp.tamper(false);
SELECT ok, first_bad_id, problem FROM apikeys.audit_check();

RESET apikeys.audit_retention;
SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_audit_admin, regress_audit_owner;
DROP ROLE regress_audit_admin, regress_audit_owner;
