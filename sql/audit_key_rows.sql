--
-- audit_key_rows: a key made by a management call has one audit row,
-- key_created, its first secret joined to it (detail.secret); a secret
-- added later has its own secret_issued row.  The key_created row is held
-- until the secret joins it, and what keeps that honest: a rolled-back
-- subtransaction takes its held rows with it; a held row written inside a
-- subtransaction that rolls back while its key does not fails the commit
-- (audit_rows_lost) rather than commit a key without its row.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT tenant FROM apikeys.tenant_create('acme');

-- every key a row: one, many, an imported one
SELECT count(*) AS one FROM apikeys.apikey_create('acme', 'one');
SELECT count(*) AS many FROM apikeys.apikey_create_many('acme', '{m1,m2,m3}');
SELECT name FROM apikeys.key_format_register('acme', 'tk', 'tk_', 67, 'hex');
SELECT apikeys.apikey_import('acme', 'tk', encode(sha256('tk_imported'::bytea), 'hex'), 'imported', hint => 'tk_imp...') IS NOT NULL AS imported;
SELECT c.name, count(a.*) AS rows, min(a.action) AS action,
       bool_and(a.detail -> 'secret' ->> 'hint' = s.hint) AS secret_joined,
       bool_and(a.detail -> 'secret' ->> 'key_id' = c.key_id::text) AS its_own
  FROM apikeys.credential c JOIN apikeys.secret s USING (key_id)
  LEFT JOIN apikeys.audit a ON a.key_id = c.key_id
 GROUP BY c.name ORDER BY c.name;

-- many keys: held 10,000 at a time (memory stays bounded); apikey_create_many
-- inserts chunks of that size, so every key still has one row
SELECT count(*) AS many FROM apikeys.apikey_create_many('acme', ARRAY(SELECT 'bulk ' || i FROM generate_series(1, 25001) i));
SELECT count(*) AS keys, count(a.*) AS rows, count(*) FILTER (WHERE a.detail ? 'secret') AS joined
  FROM apikeys.credential c LEFT JOIN apikeys.audit a ON a.key_id = c.key_id WHERE c.name LIKE 'bulk %';
-- one statement importing more than that: the first rows are written
-- before their secrets come, which then have rows of their own
SELECT apikeys.apikey_import_rows('acme', 'tk', ARRAY(
    SELECT ROW(encode(sha256(convert_to('tk_' || i, 'UTF8')), 'hex'), 'imp ' || i, '{}', NULL, '{}', NULL, NULL,
               'active', NULL, NULL, NULL, NULL, NULL, NULL, NULL)::apikeys.legacy_key
      FROM generate_series(1, 10005) i)) AS imported;
SELECT count(DISTINCT c.key_id) AS keys,
       count(*) FILTER (WHERE a.action = 'key_created') AS created_rows,
       count(*) FILTER (WHERE a.action = 'key_created' AND a.detail ? 'secret')
       + count(*) FILTER (WHERE a.action = 'secret_issued') AS secrets_audited
  FROM apikeys.credential c JOIN apikeys.audit a ON a.key_id = c.key_id WHERE c.name LIKE 'imp %';

-- a rotation adds a secret to an existing key: rows of its own, as before
SELECT count(*) AS rotated FROM apikeys.apikey_rotate((SELECT key_id FROM apikeys.credential WHERE name = 'one'));
SELECT action FROM apikeys.audit
 WHERE key_id = (SELECT key_id FROM apikeys.credential WHERE name = 'one') ORDER BY audit_id;

-- two management calls in one transaction: each key its row, in order
BEGIN;
SELECT count(*) AS first FROM apikeys.apikey_create('acme', 'tx 1');
SELECT count(*) AS second FROM apikeys.apikey_create('acme', 'tx 2');
-- written when each call returned: visible before commit
SELECT detail -> 'new' ->> 'name' AS name FROM apikeys.audit
 WHERE action = 'key_created' AND detail -> 'new' ->> 'name' LIKE 'tx %' ORDER BY audit_id;
COMMIT;

-- a call rolled back by an exception block: neither the key nor its row
DO $$
BEGIN
    BEGIN
        PERFORM apikeys.apikey_create('acme', 'rolled back');
        RAISE EXCEPTION 'undo';
    EXCEPTION WHEN raise_exception THEN NULL;
    END;
    PERFORM apikeys.apikey_create('acme', 'kept');
END $$;
SELECT name, (SELECT count(*) FROM apikeys.audit a WHERE a.key_id = c.key_id) AS rows
  FROM apikeys.credential c WHERE name IN ('rolled back', 'kept');
SELECT count(*) AS rows_of_rolled_back FROM apikeys.audit WHERE detail -> 'new' ->> 'name' = 'rolled back';

-- an import that fails half-way keeps nothing, rows included
SELECT apikeys.apikey_import_rows('acme', 'tk', ARRAY[
    ROW(encode(sha256('tk_a'::bytea), 'hex'), 'a', '{}', NULL, '{}', NULL, NULL, 'active', NULL, NULL, NULL, NULL, NULL, NULL, NULL)::apikeys.legacy_key,
    ROW('not hex', 'b', '{}', NULL, '{}', NULL, NULL, 'active', NULL, NULL, NULL, NULL, NULL, NULL, NULL)::apikeys.legacy_key]);
SELECT count(*) AS rows_of_failed_import FROM apikeys.audit WHERE detail -> 'new' ->> 'name' IN ('a', 'b');

-- ATTACK: a superuser's trigger writes an audit row (so the held
-- key_created row is written first) inside an exception block it rolls
-- back: the row would be gone while the key stays.  The commit fails.
CREATE FUNCTION public.hide_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        UPDATE apikeys.tenant SET display_name = display_name || '.' WHERE tenant = 'acme';
        RAISE EXCEPTION 'undo';
    EXCEPTION WHEN raise_exception THEN NULL;
    END;
    RETURN NULL;
END $$;
CREATE TRIGGER zz_hide_created AFTER INSERT ON apikeys.credential
    FOR EACH STATEMENT EXECUTE FUNCTION public.hide_created();
\set VERBOSITY sqlstate
SELECT count(*) FROM apikeys.apikey_create('acme', 'hidden');
\set VERBOSITY default
SELECT count(*) FROM apikeys.apikey_create('acme', 'hidden');
SELECT count(*) AS hidden_keys FROM apikeys.credential WHERE name = 'hidden';
-- the same trigger in a transaction that goes on: the commit is refused
BEGIN;
SELECT count(*) FROM apikeys.apikey_create_many('acme', '{hidden 1,hidden 2}');
COMMIT;
SELECT count(*) AS hidden_keys FROM apikeys.credential WHERE name LIKE 'hidden%';
DROP TRIGGER zz_hide_created ON apikeys.credential;

-- ATTACK: the same with the key's secret: a trigger inserts a key's
-- secret inside an exception block it rolls back
CREATE FUNCTION public.hide_secret() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        INSERT INTO apikeys.secret (digest, key_id, hint)
        SELECT sha256(convert_to(n.key_id::text, 'UTF8')), n.key_id, 'planted' FROM new_rows n;
        RAISE EXCEPTION 'undo';
    EXCEPTION WHEN raise_exception THEN NULL;
    END;
    RETURN NULL;
END $$;
CREATE TRIGGER zz_hide_secret AFTER INSERT ON apikeys.credential
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.hide_secret();
\set VERBOSITY sqlstate
SELECT count(*) FROM apikeys.apikey_create('acme', 'planted');
\set VERBOSITY default
SELECT count(*) AS planted_keys FROM apikeys.credential WHERE name = 'planted';
DROP TRIGGER zz_hide_secret ON apikeys.credential;

-- a secret a superuser inserts by hand has its own row, whatever the key
INSERT INTO apikeys.secret (digest, key_id, hint, valid_until)
SELECT sha256('by hand'), key_id, 'by hand', now() + interval '1 day' FROM apikeys.credential WHERE name = 'kept';
SELECT action, detail -> 'new' ->> 'hint' AS hint FROM apikeys.audit
 WHERE key_id = (SELECT key_id FROM apikeys.credential WHERE name = 'kept') ORDER BY audit_id;

-- so is a key a superuser inserts by hand, outside any management call
INSERT INTO apikeys.credential (tenant, name, prefix) VALUES ('acme', 'by hand', 'ak');
SELECT action, detail ? 'secret' AS joined FROM apikeys.audit
 WHERE key_id = (SELECT key_id FROM apikeys.credential WHERE name = 'by hand');

-- every key has its key_created row; the chain checks
SELECT count(*) AS keys_without_row FROM apikeys.credential c
 WHERE NOT EXISTS (SELECT 1 FROM apikeys.audit a WHERE a.key_id = c.key_id AND a.action = 'key_created');
SELECT ok, rows_checked = (SELECT count(*) FROM apikeys.audit) AS every_row FROM apikeys.audit_check();
DROP FUNCTION public.hide_created();
DROP FUNCTION public.hide_secret();
