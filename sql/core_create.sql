--
-- core_create: apikey_create, its defaults and normalization, and every
-- argument error.
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
-- apikey_create with one argument replaced; the others are valid.
CREATE FUNCTION pg_temp.try_create(tenant text DEFAULT 'acme', name text DEFAULT 'k',
                                   scopes text[] DEFAULT '{}', expires_at timestamptz DEFAULT NULL,
                                   description text DEFAULT NULL, metadata jsonb DEFAULT '{}',
                                   prefix text DEFAULT 'ak') RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM apikeys.apikey_create(tenant, name, scopes, expires_at, description, metadata, prefix);
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

SELECT tenant FROM apikeys.tenant_create('acme');

-- Defaults: no scopes, no expiry, empty metadata, prefix ak.
SELECT key_id AS k1, api_key AS key1, hint AS hint1, created_at AS created1
  FROM apikeys.apikey_create('acme', 'first key') \gset
SELECT tenant, name, description, prefix, scopes, metadata, status, expires_at,
       rotation_count, secrets_in_grace, hint = :'hint1' AS hint_ok,
       created_at = :'created1' AS created_ok, updated_at = created_at AS updated_ok
  FROM apikeys.keys WHERE key_id = :'k1';
SELECT valid, code, key_id = :'k1' AS same_key, tenant, name, scopes, expires_at
  FROM apikeys.apikey_verify(:'key1');

-- Everything given; scopes come back sorted and deduplicated.
SELECT key_id AS k2, api_key AS key2, key_prefix, expires = now() + interval '30 days' AS expires_ok, now() AS t2
  FROM apikeys.apikey_create('acme', 'second key',
                             scopes => ARRAY['orders:write', 'read', 'orders:write', 'admin/users', 'Read', 'read'],
                             expires_at => now() + interval '30 days',
                             description => 'used by the billing job',
                             metadata => '{"team": "billing", "n": 1}',
                             prefix => 'live') \gset
SELECT :'key_prefix' AS key_prefix, :'expires_ok' AS expires_ok;
SELECT name, description, prefix, scopes, metadata, status,
       expires_at = :'t2'::timestamptz + interval '30 days' AS expires_ok
  FROM apikeys.keys WHERE key_id = :'k2';
SELECT valid, code, scopes, expires_at = :'t2'::timestamptz + interval '30 days' AS expires_ok
  FROM apikeys.apikey_verify(:'key2');

-- Explicit NULLs mean the defaults for scopes, expiry, description and metadata.
SELECT key_id AS k3 FROM apikeys.apikey_create('acme', 'nulls', NULL, NULL, NULL, NULL) \gset
SELECT scopes, expires_at, description, metadata, prefix FROM apikeys.keys WHERE key_id = :'k3';

-- Limits that are still accepted.
SELECT pg_temp.try_create(name => repeat('n', 200)) AS name_200,
       pg_temp.try_create(name => repeat('é', 200)) AS name_200_multibyte,
       pg_temp.try_create(name => 'a b') AS name_inner_space,
       pg_temp.try_create(name => 'ключ 🔑') AS name_unicode,
       pg_temp.try_create(description => repeat('d', 2000)) AS description_2000,
       pg_temp.try_create(description => '') AS description_empty,
       pg_temp.try_create(scopes => ARRAY[repeat('s', 64)]) AS scope_64_chars,
       pg_temp.try_create(scopes => (SELECT array_agg('s' || i) FROM generate_series(1, 64) i)) AS scopes_64,
       pg_temp.try_create(scopes => (SELECT array_agg('s'::text) FROM generate_series(1, 64) i)) AS scopes_64_same,
       pg_temp.try_create(scopes => ARRAY['a_b.c:d/e-f', '9', 'Z']) AS scope_chars,
       pg_temp.try_create(expires_at => now() + interval '1 second') AS expires_soon,
       pg_temp.try_create(metadata => '{"a": {"b": [1, 2, null]}}') AS metadata_nested;
SELECT scopes FROM apikeys.credential WHERE scopes @> ARRAY['a_b.c:d/e-f'];
SELECT scopes FROM apikeys.credential WHERE cardinality(scopes) = 1 AND scopes[1] = 's';
SELECT count(*) AS keys_so_far FROM apikeys.credential;

-- invalid_tenant
SELECT t AS tenant, pg_temp.try_create(tenant => t) AS result
  FROM unnest(ARRAY[NULL, '', 'Acme', '_acme', '-acme', '.acme', 'ac me', 'acme!', 'acmé',
                    repeat('a', 64)]) t;
-- tenant_not_found, tenant_inactive
SELECT pg_temp.try_create(tenant => 'nobody') AS unknown_tenant,
       pg_temp.try_create(tenant => repeat('a', 63)) AS unknown_63_chars;
SELECT tenant, active FROM apikeys.tenant_create('sleepy');
SELECT tenant, active FROM apikeys.tenant_update('sleepy', active => false);
SELECT pg_temp.try_create(tenant => 'sleepy') AS inactive_tenant;

-- invalid_name
SELECT n AS name, pg_temp.try_create(name => n) AS result
  FROM unnest(ARRAY[NULL, '', ' ', ' lead', 'trail ', 'tab' || chr(9) || 'in',
                    'new' || chr(10) || 'line', 'del' || chr(127)]) n;
SELECT pg_temp.try_create(name => repeat('n', 201)) AS name_201,
       pg_temp.try_create(name => repeat('é', 201)) AS name_201_multibyte;

-- invalid_description
SELECT pg_temp.try_create(description => repeat('d', 2001)) AS description_2001,
       pg_temp.try_create(description => repeat('é', 2001)) AS description_2001_multibyte;

-- invalid_scope
SELECT s AS scopes, pg_temp.try_create(scopes => s) AS result
  FROM (VALUES (1, ARRAY['read', NULL]), (2, ARRAY[NULL]::text[]), (3, ARRAY['']),
               (4, ARRAY[' read']), (5, ARRAY['read ']), (6, ARRAY['-read']), (7, ARRAY['_read']),
               (8, ARRAY['re ad']), (9, ARRAY['read*']), (10, ARRAY['read,write']),
               (11, ARRAY['rëad']), (12, ARRAY[':read']), (13, ARRAY['read', 'wr!te'])) v(o, s)
 ORDER BY o;
SELECT pg_temp.try_create(scopes => ARRAY[repeat('s', 65)]) AS scope_65_chars,
       pg_temp.try_create(scopes => (SELECT array_agg('s' || i) FROM generate_series(1, 65) i)) AS scopes_65;
SELECT pg_temp.try_create(scopes => '{{read,write},{a,b}}') AS two_dimensional,
       pg_temp.try_create(scopes => '{{read}}') AS two_dimensional_one;

-- invalid_expiry
SELECT pg_temp.try_create(expires_at => now() - interval '1 second') AS past,
       pg_temp.try_create(expires_at => now()) AS now,
       pg_temp.try_create(expires_at => 'infinity') AS infinity,
       pg_temp.try_create(expires_at => '-infinity') AS minus_infinity;

-- invalid_metadata
SELECT m AS metadata, pg_temp.try_create(metadata => m::jsonb) AS result
  FROM unnest(ARRAY['[]', '[{"a": 1}]', '1', '"text"', 'true', 'null']) m;
SELECT pg_temp.try_create(metadata => jsonb_build_object('blob', repeat('x', 9000))) AS too_big,
       pg_temp.try_create(metadata => (SELECT jsonb_object_agg('k' || i, i) FROM generate_series(1, 2000) i)) AS too_many_keys,
       pg_temp.try_create(metadata => jsonb_build_object('blob', repeat('x', 8000))) AS just_fits;

-- invalid_prefix (more in core_keyformat)
SELECT pg_temp.try_create(prefix => NULL) AS null_prefix,
       pg_temp.try_create(prefix => 'Ak') AS upper_prefix;

-- No failed call left anything behind.
SELECT count(*) AS keys_now FROM apikeys.credential;
SELECT count(*) AS credentials_without_secret FROM apikeys.credential c
 WHERE NOT EXISTS (SELECT 1 FROM apikeys.secret s WHERE s.key_id = c.key_id);
SELECT count(*) FILTER (WHERE valid_until IS NULL) AS current_secrets, count(*) AS secrets
  FROM apikeys.secret;

-- Errors as psql shows them, with their hints.
SELECT apikeys.apikey_create('nobody', 'k');
SELECT apikeys.apikey_create('sleepy', 'k');
SELECT apikeys.apikey_create('Acme', 'k');
SELECT apikeys.apikey_create('acme', 'k', expires_at => now() - interval '1 day');
SELECT apikeys.apikey_create('acme', 'k', scopes => '{"bad scope"}');
-- Errors inside a transaction leave it aborted, as usual.
BEGIN;
SELECT key_id AS kt FROM apikeys.apikey_create('acme', 'in transaction') \gset
SELECT name FROM apikeys.credential WHERE key_id = :'kt';
SELECT apikeys.apikey_create('acme', '');
ROLLBACK;
SELECT count(*) AS rolled_back FROM apikeys.credential WHERE name = 'in transaction';
