--
-- audit_key_rows: a key made by a management call has one audit row,
-- key_created, its first secret joined to it (detail.secret); a secret
-- added later has its own secret_issued row.  The key_created row is held
-- with every audit row of the call until the call returns, and what keeps
-- that honest: a rolled-back subtransaction takes its held rows with it; a
-- held row written inside a subtransaction that rolls back while its
-- change does not goes back to what is held.
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

-- ATTACK: a superuser's trigger makes an audited change inside an
-- exception block it rolls back, to take the key_created row with it: the
-- rows are held, not written, so the rollback takes only the change's own
-- row, and the key commits with its row.
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
SELECT count(*) FROM apikeys.apikey_create('acme', 'hidden');
SELECT count(*) FROM apikeys.apikey_create_many('acme', '{hidden 1,hidden 2}');
SELECT c.name, array_agg(a.action ORDER BY a.audit_id) AS actions, bool_and(a.detail ? 'secret') AS joined
  FROM apikeys.credential c JOIN apikeys.audit a ON a.key_id = c.key_id
 WHERE c.name LIKE 'hidden%' GROUP BY c.name ORDER BY c.name;
SELECT count(*) AS display_name_changes FROM apikeys.audit WHERE action = 'tenant_updated';
DROP TRIGGER zz_hide_created ON apikeys.credential;

-- ATTACK: the same with the key's secret: a trigger inserts a secret of the
-- new key inside an exception block it rolls back (the secret joined the
-- held row, and is taken off it again)
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
SELECT count(*) FROM apikeys.apikey_create('acme', 'planted');
SELECT a.action, a.detail -> 'secret' ->> 'hint' = s.hint AS its_real_secret, s.hint <> 'planted' AS not_planted
  FROM apikeys.credential c JOIN apikeys.audit a ON a.key_id = c.key_id JOIN apikeys.secret s ON s.key_id = c.key_id
 WHERE c.name = 'planted';
DROP TRIGGER zz_hide_secret ON apikeys.credential;

-- ATTACK: a trigger calls a management function inside an exception block
-- it rolls back: that call writes what is held when it returns, the outer
-- call's key_created row included, and the rollback would take that row
-- while the outer key stays.  The row goes back to what is held and is
-- written when the outer call returns.
CREATE FUNCTION public.hide_by_call() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM apikeys.apikey_create('acme', 'inner');
        RAISE EXCEPTION 'undo';
    EXCEPTION WHEN raise_exception THEN NULL;
    END;
    RETURN NULL;
END $$;
CREATE TRIGGER zz_hide_by_call AFTER INSERT ON apikeys.credential
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION public.hide_by_call();
SELECT count(*) FROM apikeys.apikey_create('acme', 'outer');
BEGIN;
SELECT count(*) FROM apikeys.apikey_create_many('acme', '{outer 1,outer 2}');
COMMIT;
SELECT c.name, array_agg(a.action ORDER BY a.audit_id) AS actions, bool_and(a.detail ? 'secret') AS joined
  FROM apikeys.credential c LEFT JOIN apikeys.audit a ON a.key_id = c.key_id
 WHERE c.name IN ('outer', 'outer 1', 'outer 2', 'inner') GROUP BY c.name ORDER BY c.name;
-- the same, the trigger's call kept: every key its row
CREATE OR REPLACE FUNCTION public.hide_by_call() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM apikeys.apikey_create('acme', 'inner kept');
    EXCEPTION WHEN raise_exception THEN NULL;
    END;
    RETURN NULL;
END $$;
SELECT count(*) FROM apikeys.apikey_create('acme', 'outer kept');
SELECT c.name, array_agg(a.action ORDER BY a.audit_id) AS actions
  FROM apikeys.credential c LEFT JOIN apikeys.audit a ON a.key_id = c.key_id
 WHERE c.name LIKE '% kept' GROUP BY c.name ORDER BY c.name;
DROP TRIGGER zz_hide_by_call ON apikeys.credential;

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
DROP FUNCTION public.hide_by_call();
