--
-- core_keyformat: the textual form of issued keys, hints, digests, and
-- that only the digest of a secret is stored.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Run a statement; return 'ok' or its SQLSTATE and message (uuids masked).
CREATE FUNCTION pg_temp.err(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;

SELECT tenant FROM apikeys.tenant_create('kf');

-- Keys issued with the default prefix and two custom ones.
CREATE TEMP TABLE issued AS
SELECT p.prefix AS asked, c.*
  FROM (VALUES ('ak'), ('live'), ('acme_test'), ('a'), ('x9_y8_z7'),
               ('abcdefghijklmnopqrstuvwxyz012345')) p(prefix),
       generate_series(1, 30) i,
       LATERAL apikeys.apikey_create('kf', p.prefix || '-' || i, prefix => p.prefix) c;
-- and with the default prefix
INSERT INTO issued
SELECT NULL, c.*
  FROM generate_series(1, 30) i,
       LATERAL apikeys.apikey_create('kf', 'default-' || i) c;

SELECT coalesce(asked, '(default)') AS asked, count(*) AS keys,
       bool_and(key_prefix = coalesce(asked, 'ak')) AS prefix_ok,
       bool_and(api_key ~ '^[a-z][a-z0-9]*(_[a-z0-9]+)*_[1-9A-HJ-NP-Za-km-z]{50}$') AS regex_ok,
       bool_and(left(api_key, length(key_prefix) + 1) = key_prefix || '_') AS starts_ok,
       bool_and(length(api_key) = length(key_prefix) + 51) AS length_ok,
       bool_and(expires IS NULL) AS no_expiry,
       bool_and(created_at = (SELECT k.created_at FROM apikeys.credential k
                               WHERE k.key_id = issued.key_id)) AS created_ok
  FROM issued GROUP BY asked ORDER BY asked NULLS FIRST;

-- The published regex, and that the tail never uses 0, O, I or l.
SELECT count(*) FILTER (WHERE substr(api_key, length(key_prefix) + 2) ~ '[0OIl]') AS ambiguous_chars,
       count(*) FILTER (WHERE api_key !~ '^[a-z][a-z0-9]*(_[a-z0-9]+)*_[1-9A-HJ-NP-Za-km-z]{50}$') AS not_matching
  FROM issued;

-- Every key, body and digest is distinct.
SELECT count(*) AS keys,
       count(DISTINCT api_key) AS distinct_keys,
       count(DISTINCT substr(api_key, length(key_prefix) + 2)) AS distinct_tails,
       count(DISTINCT key_id) AS distinct_ids
  FROM issued;
SELECT count(*) AS secrets, count(DISTINCT digest) AS distinct_digests FROM apikeys.secret;

-- The hint: prefix, '_', the first 4 chars of the body, '...', the last 4.
SELECT bool_and(hint = key_prefix || '_' || substr(api_key, length(key_prefix) + 2, 4)
                       || '...' || right(api_key, 4)) AS hint_ok,
       bool_and(length(hint) = length(key_prefix) + 12) AS hint_length_ok
  FROM issued;
-- The view shows the same hint, the prefix and the normalized fields.
SELECT bool_and(k.hint = i.hint) AS view_hint_ok,
       bool_and(k.prefix = i.key_prefix) AS view_prefix_ok,
       bool_and(k.tenant = 'kf' AND k.status = 'active' AND k.scopes = '{}'
                AND k.metadata = '{}' AND k.rotation_count = 0
                AND k.rotated_at IS NULL AND k.revoked_at IS NULL
                AND k.secrets_in_grace = 0 AND k.created_by = current_user) AS view_fields_ok
  FROM issued i JOIN apikeys.keys k USING (key_id);

-- The C SHA-256 (src/digest.c) agrees with PostgreSQL's at every key
-- length, 52 to 83 bytes: prefixes of 1 to 32 characters cross the 55/56
-- byte padding edge and the 64-byte block edge.
CREATE TEMP TABLE lengths AS
SELECT c.* FROM generate_series(1, 32) n,
       LATERAL apikeys.apikey_create('kf', 'len-' || n, prefix => 'p' || repeat('0', n - 1)) c;
SELECT count(*) AS lengths, min(length(c.api_key)) AS shortest, max(length(c.api_key)) AS longest,
       bool_and(s.digest = sha256(convert_to(c.api_key, 'UTF8'))) AS digest_is_sha256,
       bool_and((apikeys.apikey_verify(c.api_key)).valid) AS all_verify
  FROM lengths c JOIN apikeys.secret s ON s.key_id = c.key_id;

-- Only the SHA-256 digest of the UTF-8 key is stored, with the hint.
SELECT bool_and(s.digest = sha256(convert_to(i.api_key, 'UTF8'))) AS digest_is_sha256,
       bool_and(s.hint = i.hint) AS stored_hint_ok,
       bool_and(s.valid_until IS NULL) AS current,
       count(*) AS secrets
  FROM issued i JOIN apikeys.secret s USING (key_id);

-- Every issued key verifies.
SELECT v.code, count(*) FROM issued i, LATERAL apikeys.apikey_verify(i.api_key) v
 GROUP BY v.code;
SELECT bool_and(v.key_id = i.key_id AND v.tenant = 'kf' AND v.valid) AS verify_identity_ok
  FROM issued i, LATERAL apikeys.apikey_verify(i.api_key) v;

-- No column of any apikeys table (nor the keys view) holds a key, its
-- random part, or the key's tail.
DO $$
DECLARE
    r regclass;
    n bigint;
    total bigint := 0;
BEGIN
    FOR r IN SELECT c.oid::regclass FROM pg_class c
              WHERE c.relnamespace = 'apikeys'::regnamespace
                AND (c.relkind IN ('r', 'p') OR c.oid = 'apikeys.keys'::regclass)
    LOOP
        EXECUTE format(
            'SELECT count(*) FROM %s t, pg_temp.issued i
              WHERE strpos(t::text, substr(i.api_key, length(i.key_prefix) + 2, 44)) > 0
                 OR strpos(t::text, substr(i.api_key, length(i.key_prefix) + 6)) > 0', r)
            INTO n;
        total := total + n;
    END LOOP;
    RAISE NOTICE 'rows holding a plaintext key: %', total;
END
$$;
-- The view exposes no digest or secret column.
SELECT count(*) AS secret_columns FROM information_schema.columns
 WHERE table_schema = 'apikeys' AND table_name = 'keys'
   AND column_name IN ('digest', 'api_key', 'secret', 'key');

-- Prefix rules (invalid_prefix): 1..32 chars, lower-case [a-z0-9] words
-- joined by single '_', starting with a letter.
SELECT p AS prefix, pg_temp.err(format('SELECT apikeys.apikey_create(%L, %L, prefix => %L)', 'kf', 'bad-prefix', p)) AS result
  FROM unnest(ARRAY[NULL, '', 'Live', 'LIVE', '1ak', '_ak', 'ak_', 'a__b', 'a-b', 'a.b', 'a b', 'ak!',
                    'é', repeat('a', 33), 'abcdefghijklmnopqrstuvwxyz0123456']) p;
-- Nothing was created by the failed calls.
SELECT count(*) AS bad_prefix_keys FROM apikeys.credential WHERE name = 'bad-prefix';
SELECT count(*) AS credentials, (SELECT count(*) FROM apikeys.secret) AS secrets FROM apikeys.credential;

-- The error carries a hint.
SELECT apikeys.apikey_create('kf', 'x', prefix => 'Live');
