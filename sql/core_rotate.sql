--
-- core_rotate: apikey_rotate keeps the credential, replaces its secret,
-- honours grace periods and fails cleanly.
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
-- Secrets of a key: how many, how many current, how many in grace.
CREATE FUNCTION pg_temp.secrets(k uuid, OUT total bigint, OUT current bigint, OUT in_grace bigint)
LANGUAGE sql AS $$
    SELECT count(*), count(*) FILTER (WHERE valid_until IS NULL),
           count(*) FILTER (WHERE valid_until > now())
      FROM apikeys.secret WHERE key_id = k
$$;

SELECT tenant FROM apikeys.tenant_create('acme');

SELECT key_id AS k, api_key AS key0, hint AS hint0, now() AS t0
  FROM apikeys.apikey_create('acme', 'rotating', scopes => '{write,read}',
                             expires_at => now() + interval '10 days',
                             description => 'rotates', metadata => '{"env": "prod"}',
                             prefix => 'live') \gset

-- grace 0 (the default): the old secret is gone at once.
SELECT key_id = :'k' AS same_key_id, api_key <> :'key0' AS new_secret,
       api_key ~ '^live_[1-9A-HJ-NP-Za-km-z]{50}$' AS format_ok, key_prefix,
       hint <> :'hint0' AS new_hint,
       hint = 'live_' || substr(api_key, 6, 4) || '...' || right(api_key, 4) AS hint_ok,
       expires = :'t0'::timestamptz + interval '10 days' AS expires_kept, created_at = now() AS rotated_now
  FROM apikeys.apikey_rotate(:'k') \gset
SELECT :'same_key_id', :'new_secret', :'format_ok', :'key_prefix', :'new_hint', :'hint_ok',
       :'expires_kept', :'rotated_now';
SELECT api_key AS key1 FROM apikeys.apikey_rotate(:'k', interval '0') \gset
SELECT (apikeys.apikey_verify(:'key0')).code AS first_key,
       (apikeys.apikey_verify(:'key1')).code AS second_key;
SELECT * FROM pg_temp.secrets(:'k');
-- Everything but the secret carried over; the counter moved.
SELECT name, description, prefix, scopes, metadata, status,
       expires_at = :'t0'::timestamptz + interval '10 days' AS expires_kept,
       rotation_count, rotated_at IS NOT NULL AS rotated, secrets_in_grace,
       hint = 'live_' || substr(:'key1', 6, 4) || '...' || right(:'key1', 4) AS view_hint_ok
  FROM apikeys.keys WHERE key_id = :'k';
SELECT valid, code, key_id = :'k' AS same_key, name, scopes
  FROM apikeys.apikey_verify(:'key1', '{read,write}');
SELECT digest = sha256(convert_to(:'key1', 'UTF8')) AS digest_ok FROM apikeys.secret WHERE key_id = :'k';

-- grace > 0: the old secret verifies until the grace ends.
SELECT api_key AS key2, now() AS t2 FROM apikeys.apikey_rotate(:'k', interval '1 hour') \gset
SELECT (apikeys.apikey_verify(:'key1')).code AS old_key,
       (apikeys.apikey_verify(:'key2')).code AS new_key;
SELECT * FROM pg_temp.secrets(:'k');
SELECT valid_until = :'t2'::timestamptz + interval '1 hour' AS grace_ends_ok
  FROM apikeys.secret WHERE key_id = :'k' AND valid_until IS NOT NULL;
SELECT rotation_count, secrets_in_grace,
       hint = 'live_' || substr(:'key2', 6, 4) || '...' || right(:'key2', 4) AS hint_is_new
  FROM apikeys.keys WHERE key_id = :'k';
-- The old secret, in grace, still carries the key's identity and scopes.
SELECT valid, code, key_id = :'k' AS same_key, scopes FROM apikeys.apikey_verify(:'key1', '{read}');

-- Rotating again with grace: still exactly one current secret.
SELECT api_key AS key3 FROM apikeys.apikey_rotate(:'k', interval '2 hours') \gset
SELECT (apikeys.apikey_verify(:'key1')).code AS key1, (apikeys.apikey_verify(:'key2')).code AS key2,
       (apikeys.apikey_verify(:'key3')).code AS key3;
SELECT * FROM pg_temp.secrets(:'k');
-- A second current secret is impossible (secret_one_current).
SELECT pg_temp.err(format(
    'INSERT INTO apikeys.secret (digest, key_id, hint) VALUES (sha256(%L), %L, %L)', 'x', :'k', 'h')) AS second_current;
-- Rotating twice in one transaction keeps one current secret as well.
BEGIN;
SELECT api_key AS key4 FROM apikeys.apikey_rotate(:'k', interval '1 hour') \gset
SELECT api_key AS key5 FROM apikeys.apikey_rotate(:'k', interval '1 hour') \gset
SELECT * FROM pg_temp.secrets(:'k');
COMMIT;
SELECT (apikeys.apikey_verify(:'key4')).code AS key4, (apikeys.apikey_verify(:'key5')).code AS key5;
SELECT rotation_count FROM apikeys.keys WHERE key_id = :'k';

-- Ended grace periods are purged by the next rotation; grace 0 kills all.
UPDATE apikeys.secret SET valid_until = now() - interval '1 second'
 WHERE key_id = :'k' AND valid_until IS NOT NULL AND digest = sha256(convert_to(:'key1', 'UTF8'));
SELECT (apikeys.apikey_verify(:'key1')).code AS key1_after_grace;
SELECT api_key AS key6 FROM apikeys.apikey_rotate(:'k', interval '1 minute') \gset
SELECT * FROM pg_temp.secrets(:'k');
SELECT (apikeys.apikey_verify(:'key1')).code AS key1_purged;
SELECT api_key AS key7 FROM apikeys.apikey_rotate(:'k', '0') \gset
SELECT * FROM pg_temp.secrets(:'k');
SELECT k AS which, (apikeys.apikey_verify(v)).code
  FROM (VALUES ('key0', :'key0'), ('key2', :'key2'), ('key3', :'key3'), ('key5', :'key5'),
               ('key6', :'key6'), ('key7', :'key7')) x(k, v);
SELECT rotation_count FROM apikeys.keys WHERE key_id = :'k';

-- The grace never runs past the key's own expiry.
SELECT key_id AS ke, api_key AS ke_old, now() AS t_ke
  FROM apikeys.apikey_create('acme', 'short-lived', expires_at => now() + interval '1 hour') \gset
SELECT api_key AS ke_new FROM apikeys.apikey_rotate(:'ke', interval '1 day') \gset
SELECT s.valid_until = c.expires_at AS capped_at_expiry, s.valid_until = :'t_ke'::timestamptz + interval '1 hour' AS one_hour
  FROM apikeys.secret s JOIN apikeys.credential c USING (key_id)
 WHERE s.key_id = :'ke' AND s.valid_until IS NOT NULL;
SELECT (apikeys.apikey_verify(:'ke_old')).code AS old_key, (apikeys.apikey_verify(:'ke_new')).code AS new_key;
-- A grace shorter than the remaining life is kept as asked.
SELECT api_key AS ke_newer, now() AS t_ke2 FROM apikeys.apikey_rotate(:'ke', interval '5 minutes') \gset
SELECT valid_until = :'t_ke2'::timestamptz + interval '5 minutes' AS five_minutes
  FROM apikeys.secret WHERE key_id = :'ke' AND digest = sha256(convert_to(:'ke_new', 'UTF8'));

-- Rotation is atomic: rolled back, nothing changed.
SELECT key_id AS kr, api_key AS kr_key FROM apikeys.apikey_create('acme', 'rollback') \gset
BEGIN;
SELECT api_key AS kr_new FROM apikeys.apikey_rotate(:'kr') \gset
SELECT (apikeys.apikey_verify(:'kr_key')).code AS old_inside, (apikeys.apikey_verify(:'kr_new')).code AS new_inside;
ROLLBACK;
SELECT (apikeys.apikey_verify(:'kr_key')).code AS old_after, (apikeys.apikey_verify(:'kr_new')).code AS new_after;
SELECT rotation_count, rotated_at FROM apikeys.keys WHERE key_id = :'kr';

-- A disabled key can be rotated; the new secret is disabled too.
SELECT key_id AS kd FROM apikeys.apikey_create('acme', 'disabled') \gset
SELECT apikeys.apikey_disable(:'kd');
SELECT api_key AS kd_new FROM apikeys.apikey_rotate(:'kd') \gset
SELECT (apikeys.apikey_verify(:'kd_new')).code AS while_disabled;
SELECT apikeys.apikey_enable(:'kd');
SELECT (apikeys.apikey_verify(:'kd_new')).code AS enabled;

-- Errors.
-- invalid_key_id, invalid_grace
SELECT pg_temp.err('SELECT apikeys.apikey_rotate(NULL)') AS null_key_id,
       pg_temp.err(format('SELECT apikeys.apikey_rotate(%L, NULL)', :'k')) AS null_grace;
SELECT g AS grace, pg_temp.err(format('SELECT apikeys.apikey_rotate(%L, %L)', :'k', g)) AS result
  FROM unnest(ARRAY['-1 second', '-1 day', '-1 mon', '-1 microsecond']) g;
-- key_not_found
SELECT pg_temp.err('SELECT apikeys.apikey_rotate(''00000000-0000-0000-0000-000000000000'')') AS unknown,
       pg_temp.err(format('SELECT apikeys.apikey_rotate(%L)', gen_random_uuid())) AS random_uuid;
-- key_revoked
SELECT key_id AS kv FROM apikeys.apikey_create('acme', 'revoked') \gset
SELECT apikeys.apikey_revoke(:'kv');
SELECT pg_temp.err(format('SELECT apikeys.apikey_rotate(%L)', :'kv')) AS revoked,
       pg_temp.err(format('SELECT apikeys.apikey_rotate(%L, %L)', :'kv', '1 hour')) AS revoked_grace;
-- key_expired
SELECT key_id AS kx, api_key AS kx_key FROM apikeys.apikey_create('acme', 'expired', expires_at => now() + interval '1 day') \gset
UPDATE apikeys.credential SET expires_at = now() - interval '1 minute' WHERE key_id = :'kx';
SELECT pg_temp.err(format('SELECT apikeys.apikey_rotate(%L)', :'kx')) AS expired;
-- after extending it, rotation works again
SELECT apikeys.apikey_update(:'kx', expires_at => now() + interval '1 day');
SELECT pg_temp.err(format('SELECT apikeys.apikey_rotate(%L)', :'kx')) AS extended;
-- tenant_inactive
SELECT tenant FROM apikeys.tenant_create('sleepy');
SELECT key_id AS ks, api_key AS ks_key FROM apikeys.apikey_create('sleepy', 'sleepy key') \gset
SELECT active FROM apikeys.tenant_update('sleepy', active => false);
SELECT pg_temp.err(format('SELECT apikeys.apikey_rotate(%L)', :'ks')) AS inactive_tenant;
SELECT active FROM apikeys.tenant_update('sleepy', active => true);
SELECT (apikeys.apikey_verify(:'ks_key')).code AS still_the_old_secret;
-- Failed rotations left no trace.
SELECT name, rotation_count, (SELECT count(*) FROM apikeys.secret s WHERE s.key_id = k.key_id) AS secrets
  FROM apikeys.keys k WHERE key_id IN (:'kv', :'ks') ORDER BY name;
-- As psql shows them: terse, then with the hint.
\set VERBOSITY terse
SELECT apikeys.apikey_rotate(NULL);
SELECT apikeys.apikey_rotate(:'k', NULL);
SELECT apikeys.apikey_rotate(:'k', '-1 hour');
\set VERBOSITY default
SELECT apikeys.apikey_rotate(:'k', NULL);
