--
-- core_key_id: key ids are time-ordered UUIDs (RFC 9562 version 7): the
-- version and variant bits, the time in the first 48 bits (the
-- key's creation to the millisecond), strictly increasing within one backend,
-- and every path that makes a key (create, create_many, import, the column
-- default) makes one.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT tenant FROM apikeys.tenant_create('acme');

-- the milliseconds since 1970 in an id's first 48 bits
CREATE FUNCTION pg_temp.id_ms(u uuid) RETURNS bigint LANGUAGE sql IMMUTABLE
    AS $$ SELECT ('x' || substr(replace(u::text, '-', ''), 1, 12))::bit(48)::bigint $$;
-- the version nibble and the two variant bits
CREATE FUNCTION pg_temp.id_version(u uuid) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT substr(u::text, 15, 1) || '/' || substr(u::text, 20, 1) $$;

-- one key: version 7, variant 10 (8, 9, a or b), its time the call's: at or
-- after created_at (the transaction's start), and not long after
SELECT key_id AS k1 FROM apikeys.apikey_create('acme', 'one') \gset
SELECT substr(pg_temp.id_version(key_id), 1, 1) AS version,
       substr(pg_temp.id_version(key_id), 3, 1) IN ('8', '9', 'a', 'b') AS variant_ok,
       pg_temp.id_ms(key_id) - floor(extract(epoch FROM created_at) * 1000)::bigint BETWEEN 0 AND 10000 AS time_of_the_call
  FROM apikeys.credential WHERE key_id = :'k1';

-- a batch: ids in the order the keys were made, all distinct, all version 7
CREATE TABLE pg_temp.batch AS
    SELECT t.key_id, t.ordinality AS ord FROM apikeys.apikey_create_many('acme',
        ARRAY(SELECT 'device-' || i FROM generate_series(1, 500) i)) WITH ORDINALITY AS t;
SELECT count(*) AS keys,
       count(DISTINCT key_id) AS distinct_ids,
       bool_and(pg_temp.id_version(key_id) LIKE '7/%') AS all_v7,
       bool_and(key_id > :'k1') AS after_the_first
  FROM pg_temp.batch;
SELECT bool_and(prev < key_id) AS strictly_increasing, count(*) AS pairs
  FROM (SELECT key_id, lag(key_id) OVER (ORDER BY ord) AS prev FROM pg_temp.batch) s
 WHERE prev IS NOT NULL;

-- many ids in one statement (more than 4096 per millisecond): still increasing
SELECT bool_and(a < b) AS increasing, count(*) AS pairs
  FROM (SELECT id AS a, lead(id) OVER (ORDER BY n) AS b
          FROM (SELECT n, apikeys_internal._key_id() AS id FROM generate_series(1, 20000) n) g) s
 WHERE b IS NOT NULL;

-- the random part differs between two ids of the same instant
SELECT count(DISTINCT substr(id::text, 20)) AS distinct_tails
  FROM (SELECT apikeys_internal._key_id() AS id FROM generate_series(1, 1000)) g;

-- the column default is the same function
SELECT pg_get_expr(adbin, adrelid) AS key_id_default
  FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
 WHERE d.adrelid = 'apikeys.credential'::regclass AND a.attname = 'key_id';

-- imported keys get one too
SELECT name FROM apikeys.key_format_register('acme', 'tk', 'tk_', 67, 'hex');
SELECT pg_temp.id_version(apikeys.apikey_import('acme', 'tk',
           encode(sha256(convert_to('tk_' || repeat('ab', 32), 'UTF8')), 'hex'), 'legacy')) LIKE '7/%' AS imported_v7;
CREATE TABLE pg_temp.legacy AS
    SELECT encode(sha256(convert_to('tk_' || repeat(to_hex(i % 16), 64), 'UTF8')), 'hex') AS digest, 'bulk-' || i AS name
      FROM generate_series(1, 3) i;
SELECT apikeys.apikey_import_many('acme', 'tk', 'SELECT digest, name FROM pg_temp.legacy') AS bulk_imported;
SELECT count(*) AS bulk_v7 FROM apikeys.credential
 WHERE name LIKE 'bulk-%' AND pg_temp.id_version(key_id) LIKE '7/%';

-- nobody but the extension's functions calls it
SELECT has_function_privilege('public', 'apikeys_internal._key_id()', 'EXECUTE') AS public_may_call;
