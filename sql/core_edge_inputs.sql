--
-- core_edge_inputs: whatever is presented, apikey_verify answers with a
-- verdict and never raises; garbage is 'malformed' without a table lookup.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT tenant FROM apikeys.tenant_create('edge');
SELECT key_id AS k, api_key AS key, key_prefix AS p
  FROM apikeys.apikey_create('edge', 'edge key', scopes => '{read}') \gset
SELECT api_key AS live_key FROM apikeys.apikey_create('edge', 'live key', prefix => 'live') \gset
SELECT api_key AS multi_key FROM apikeys.apikey_create('edge', 'multi-word prefix', prefix => 'acme_test') \gset
SELECT (apikeys.apikey_verify(:'key')).code AS key, (apikeys.apikey_verify(:'live_key')).code AS live_key,
       (apikeys.apikey_verify(:'multi_key')).code AS multi_key;

-- Replace the character at position pos of s.
CREATE FUNCTION pg_temp.put(s text, pos int, c text) RETURNS text LANGUAGE sql AS $$
    SELECT overlay(s placing c from pos for 1)
$$;
-- A different alphabet character than the one at pos.
CREATE FUNCTION pg_temp.other(s text, pos int) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN substr(s, pos, 1) = 'a' THEN 'b' ELSE 'a' END
$$;

-- Swap the first two differing neighbours of the body.
CREATE FUNCTION pg_temp.swap(s text) RETURNS text LANGUAGE sql AS $$
    SELECT overlay(s placing substr(s, i + 1, 1) || substr(s, i, 1) from i for 2)
      FROM generate_series(10, length(s) - 1) i
     WHERE substr(s, i, 1) <> substr(s, i + 1, 1)
     ORDER BY i LIMIT 1
$$;

-- Each candidate with the verdict, and whether the verdict came with a key.
CREATE TEMP TABLE candidates (o serial, what text, candidate text);
INSERT INTO candidates (what, candidate) VALUES
  ('NULL', NULL),
  ('empty', ''),
  ('space', ' '),
  ('prefix only', 'ak_'),
  ('underscore only', '_'),
  ('10 MB of a', repeat('a', 10 * 1024 * 1024)),
  ('10 MB key-like', 'ak_' || repeat('a', 10 * 1024 * 1024)),
  ('84 chars', 'ak_' || repeat('a', 81)),
  ('key twice', :'key' || :'key'),
  ('key + space', :'key' || ' '),
  ('space + key', ' ' || :'key'),
  ('key + newline', :'key' || E'\n'),
  ('key + one more char', :'key' || 'a'),
  ('key - last char', left(:'key', -1)),
  ('key - first char', substr(:'key', 2)),
  ('tail only', substr(:'key', 4)),
  ('underscore + tail', substr(:'key', 3)),
  ('body char changed', pg_temp.put(:'key', 10, pg_temp.other(:'key', 10))),
  ('first body char changed', pg_temp.put(:'key', 4, pg_temp.other(:'key', 4))),
  ('checksum char changed', pg_temp.put(:'key', 53, pg_temp.other(:'key', 53))),
  ('two chars swapped', pg_temp.swap(:'key')),
  ('body with 0', pg_temp.put(:'key', 10, '0')),
  ('body with O', pg_temp.put(:'key', 10, 'O')),
  ('body with I', pg_temp.put(:'key', 10, 'I')),
  ('body with l', pg_temp.put(:'key', 10, 'l')),
  ('body with +', pg_temp.put(:'key', 10, '+')),
  ('body with _', pg_temp.put(:'key', 10, '_')),
  ('body with é', pg_temp.put(:'key', 10, 'é')),
  ('two chars as é', overlay(:'key' placing 'é' from 10 for 2)),
  ('body with emoji', overlay(:'key' placing '🔑' from 10 for 4)),
  ('upper-case prefix', 'AK' || substr(:'key', 3)),
  ('prefix changed', 'al' || substr(:'key', 3)),
  ('other valid prefix', 'live' || substr(:'key', 3)),
  ('prefix dropped', 'a' || substr(:'key', 3)),
  ('dash for underscore', 'ak-' || substr(:'key', 4)),
  ('upper-case live prefix', upper(left(:'live_key', 4)) || substr(:'live_key', 5)),
  ('live prefix changed', 'test' || substr(:'live_key', 5)),
  ('acme_test prefix as acme-test', 'acme-test' || substr(:'multi_key', 10)),
  ('acme_test prefix as acme__test', 'acme__test' || substr(:'multi_key', 10)),
  ('acme_test prefix as acme_tesu', 'acme_tesu' || substr(:'multi_key', 10)),
  ('upper-case key', upper(:'key')),
  ('lower-case key', lower(:'key')),
  ('51 base58 chars after ak_', 'ak_' || repeat('2', 51)),
  ('50 base58 chars after ak_', 'ak_' || repeat('2', 50)),
  ('SQL injection', 'ak_''; DROP TABLE apikeys.secret; --'),
  ('hint', (SELECT hint FROM apikeys.keys WHERE key_id = :'k'));

SELECT o, what, length(candidate) AS chars, v.valid, v.code, v.key_id IS NOT NULL AS has_key
  FROM candidates, LATERAL apikeys.apikey_verify(candidate) v ORDER BY o;
-- The same with required scopes.
SELECT count(*) FILTER (WHERE v.code = 'malformed') AS malformed, count(*) AS candidates
  FROM candidates, LATERAL apikeys.apikey_verify(candidate, '{read}') v;

-- Bytes that are not UTF-8 (a binary-coercible cast lets them through).
BEGIN;
CREATE CAST (bytea AS text) WITHOUT FUNCTION;
SELECT what, (apikeys.apikey_verify(b::text)).code
  FROM (VALUES ('0xff 0xfe', '\xfffe'::bytea),
               ('key with 0xff', set_byte(convert_to(:'key', 'UTF8'), 12, 255)),
               ('key with 0x80', set_byte(convert_to(:'key', 'UTF8'), 12, 128)),
               ('key with a NUL byte', set_byte(convert_to(:'key', 'UTF8'), 12, 0)),
               ('key with latin1 e-acute', set_byte(convert_to(:'key', 'UTF8'), 12, 233)),
               ('key + 0xff', convert_to(:'key', 'UTF8') || '\xff'::bytea),
               ('latin1 prefix', '\xe1'::bytea || substr(convert_to(:'key', 'UTF8'), 2)),
               ('the key itself', convert_to(:'key', 'UTF8'))) x(what, b);
ROLLBACK;

-- Nothing of the original key was harmed.
SELECT (apikeys.apikey_verify(:'key')).code AS original, (apikeys.apikey_verify(:'key', '{read}')).code AS scoped;

-- A correctly formatted key that was never issued (or no longer is).
SELECT api_key AS never_key, key_id AS never_id FROM apikeys.apikey_create('edge', 'deleted at once') \gset
SELECT apikeys.apikey_delete(:'never_id');
SELECT (:'never_key') ~ '^[a-z][a-z0-9]*(_[a-z0-9]+)*_[1-9A-HJ-NP-Za-km-z]{50}$' AS well_formed,
       v.valid, v.code, v.key_id IS NULL AS no_key
  FROM apikeys.apikey_verify(:'never_key') v;
-- changing one of its characters makes it malformed, not not_found
SELECT (apikeys.apikey_verify(pg_temp.put(:'never_key', 30, pg_temp.other(:'never_key', 30)))).code;

-- Malformed input is decided without reading any table: the digest index
-- is not scanned.  A well-formed unknown key (never cached) shows that a
-- probe would be counted.
BEGIN;
SELECT pg_stat_get_xact_numscans('apikeys.secret_pkey'::regclass) AS scans0 \gset
SELECT count(*) FILTER (WHERE v.code = 'malformed') AS malformed
  FROM candidates, LATERAL apikeys.apikey_verify(candidate) v WHERE candidate IS DISTINCT FROM :'key';
SELECT pg_stat_get_xact_numscans('apikeys.secret_pkey'::regclass) - :scans0 AS digest_index_scans;
SELECT code FROM apikeys.apikey_verify(:'never_key');
SELECT pg_stat_get_xact_numscans('apikeys.secret_pkey'::regclass) - :scans0 AS digest_index_scans;
COMMIT;

-- Wrong argument types are the type system's business.
SELECT apikeys.apikey_verify('ak_x', 'read');
SELECT apikeys.apikey_verify('ak_x', NULL, 'not an address');
