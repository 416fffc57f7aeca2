--
-- audit_detail_bulk: the detail of every key_created and secret_issued row
-- written for an INSERT (one key, many keys, imports) is exactly
-- jsonb_build_object('new', to_jsonb(row) - 'digest'), as text: the same
-- values, the same key order, the same escapes, so the same chain hash.
-- A key made by a management call has one row: its first secret joins its
-- key_created row as jsonb_build_object('new', to_jsonb(credential),
-- 'secret', to_jsonb(secret) - 'digest'); a secret inserted later has a
-- secret_issued row of its own.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');

-- one key with every kind of value: nested metadata, escapes, unicode
SELECT count(*) AS one FROM apikeys.apikey_create('acme', E'quote " backslash \\ é 🔑',
    scopes => ARRAY['write', 'read:x', 'read:*'], expires_at => '2031-02-03 04:05:06.789+00',
    description => E'line\nbreak "q" \\',
    metadata => '{"n": 1.50, "big": 12345678901234567890, "t": true, "nil": null, "a": [1, "x", {"k": []}], "s": "é"}',
    prefix => 'dev');
-- many keys in one statement, with scopes and an expiry
SELECT count(*) AS many FROM apikeys.apikey_create_many('acme',
    ARRAY(SELECT 'device ' || i FROM generate_series(1, 300) i),
    scopes => '{telemetry:write,config:read}', expires_at => '2030-01-01 00:00:00+00', prefix => 'dev');
SELECT count(*) AS many_plain FROM apikeys.apikey_create_many('globex', '{a,b,c}');
-- an import fills more columns at insert (status, metadata, created_at, limits)
SELECT name FROM apikeys.key_format_register('acme', 'tk', 'tk_', 67, 'hex');
CREATE TABLE pg_temp.legacy AS
    SELECT encode(sha256(convert_to('tk_' || md5(i::text) || md5((i + 1000)::text), 'UTF8')), 'hex') AS digest,
           'legacy ' || i AS name, CASE WHEN i % 2 = 0 THEN E'old \"key\" ' || i END AS description,
           CASE i % 3 WHEN 0 THEN 'disabled' WHEN 1 THEN 'revoked' END AS status,
           jsonb_build_object('legacy_id', i, 'owner', 'u' || i) AS metadata,
           timestamptz '2024-05-06 07:08:09.123456+00' + i * interval '1 hour' AS created_at,
           CASE WHEN i % 4 = 0 THEN 10 * i END AS rate_limit,
           CASE WHEN i % 4 = 0 THEN interval '1 minute' END AS rate_window,
           ARRAY['read', 'x' || i] AS scopes
      FROM generate_series(1, 50) i;
SELECT apikeys.apikey_import_many('acme', 'tk',
    'SELECT digest, name, description, status, metadata, created_at, rate_limit, rate_window, scopes FROM pg_temp.legacy') AS imported;

-- a secret inserted by hand, outside any management call: a row of its own
INSERT INTO apikeys.secret (digest, key_id, hint, valid_until)
SELECT sha256('by hand'), key_id, E'by "hand" é', '2031-01-01 00:00:00+00' FROM apikeys.credential WHERE name = 'device 7';

-- every insert's row: its detail is to_jsonb's, as text
SELECT a.action, count(*) AS rows,
       count(*) FILTER (WHERE a.detail::text IS DISTINCT FROM
           jsonb_build_object('new', to_jsonb(c) - 'digest', 'secret', to_jsonb(s) - 'digest')::text) AS differing,
       -- the joined row is made by copying the two objects (audit_row.c, jb_pair): the layout's size too
       count(*) FILTER (WHERE pg_column_size(a.detail) <> pg_column_size(
           jsonb_build_object('new', to_jsonb(c) - 'digest', 'secret', to_jsonb(s) - 'digest'))) AS other_size
  FROM apikeys.audit a JOIN apikeys.credential c USING (key_id)
  JOIN apikeys.secret s ON s.key_id = c.key_id AND s.hint <> E'by "hand" é'
 WHERE a.action = 'key_created'
 GROUP BY a.action;
SELECT a.action, count(*) AS rows,
       count(*) FILTER (WHERE a.detail::text IS DISTINCT FROM
           jsonb_build_object('new', to_jsonb(s) - 'digest')::text) AS differing,
       count(*) FILTER (WHERE a.tenant IS DISTINCT FROM c.tenant) AS wrong_tenant
  FROM apikeys.audit a JOIN apikeys.secret s ON s.key_id = a.key_id AND s.hint = a.detail -> 'new' ->> 'hint'
  JOIN apikeys.credential c ON c.key_id = a.key_id
 WHERE a.action = 'secret_issued'
 GROUP BY a.action;
-- the digest is in no detail; every other column is
SELECT count(*) AS with_digest FROM apikeys.audit
 WHERE action IN ('key_created', 'secret_issued') AND (detail -> 'new' ? 'digest' OR detail -> 'secret' ? 'digest');
SELECT a.action, min(n) = max(n) AS same_keys, min(n) AS keys, min(ns) = max(ns) AS same_secret_keys, min(ns) AS secret_keys
  FROM (SELECT a.action, (SELECT count(*) FROM jsonb_object_keys(a.detail -> 'new')) AS n,
               (SELECT count(*) FROM jsonb_object_keys(coalesce(a.detail -> 'secret', '{}'))) AS ns
          FROM apikeys.audit a WHERE a.action IN ('key_created', 'secret_issued')) a
 GROUP BY a.action ORDER BY a.action;
SELECT count(*) - 1 AS secret_columns_but_digest FROM pg_attribute
 WHERE attrelid = 'apikeys.secret'::regclass AND attnum > 0 AND NOT attisdropped;
SELECT ok, rows_checked = (SELECT count(*) FROM apikeys.audit) AS every_row FROM apikeys.audit_check();
