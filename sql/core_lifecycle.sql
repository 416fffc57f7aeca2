--
-- core_lifecycle: apikey_revoke, apikey_disable, apikey_enable,
-- apikey_update, apikey_delete, and the errors of every key function.
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

SELECT tenant FROM apikeys.tenant_create('acme');

------------------------------------------------------------------------------
-- revoke
------------------------------------------------------------------------------
SELECT key_id AS kr, api_key AS kr_key FROM apikeys.apikey_create('acme', 'to revoke') \gset
SELECT api_key AS kr_key2 FROM apikeys.apikey_rotate(:'kr', interval '1 hour') \gset
SELECT apikeys.apikey_revoke(:'kr', 'leaked in a log') AS revoked, now() AS t_rev \gset
SELECT status, revoked_at = :'t_rev' AS revoked_at_ok, revoked_reason, secrets_in_grace
  FROM apikeys.keys WHERE key_id = :'kr';
-- Both secrets are revoked; the one in grace is gone.
SELECT (apikeys.apikey_verify(:'kr_key')).code AS old_secret,
       (apikeys.apikey_verify(:'kr_key2')).code AS current_secret;
SELECT count(*) AS secrets_left FROM apikeys.secret WHERE key_id = :'kr';
-- Revoking again is a no-op: the first time and reason stand.
SELECT revoked_at AS first_revoked_at FROM apikeys.credential WHERE key_id = :'kr' \gset
SELECT apikeys.apikey_revoke(:'kr', 'another reason');
SELECT apikeys.apikey_revoke(:'kr');
SELECT status, revoked_at = :'first_revoked_at' AS same_time, revoked_reason
  FROM apikeys.keys WHERE key_id = :'kr';
-- Without a reason; a 2000-character reason is accepted.
SELECT key_id AS kr2 FROM apikeys.apikey_create('acme', 'revoke without reason') \gset
SELECT apikeys.apikey_revoke(:'kr2');
SELECT status, revoked_reason IS NULL AS no_reason FROM apikeys.keys WHERE key_id = :'kr2';
SELECT key_id AS kr3 FROM apikeys.apikey_create('acme', 'long reason') \gset
SELECT apikeys.apikey_revoke(:'kr3', repeat('r', 2000));
SELECT status, length(revoked_reason) FROM apikeys.keys WHERE key_id = :'kr3';
-- A disabled key can be revoked.
SELECT key_id AS kr4, api_key AS kr4_key FROM apikeys.apikey_create('acme', 'disabled then revoked') \gset
SELECT apikeys.apikey_disable(:'kr4');
SELECT apikeys.apikey_revoke(:'kr4', 'done');
SELECT status, (apikeys.apikey_verify(:'kr4_key')).code FROM apikeys.keys WHERE key_id = :'kr4';
-- invalid_reason
SELECT key_id AS kr5, api_key AS kr5_key FROM apikeys.apikey_create('acme', 'reason too long') \gset
SELECT pg_temp.err(format('SELECT apikeys.apikey_revoke(%L, %L)', :'kr5', repeat('r', 2001))) AS reason_2001;
SELECT status, (apikeys.apikey_verify(:'kr5_key')).code FROM apikeys.keys WHERE key_id = :'kr5';
SELECT apikeys.apikey_revoke(:'kr5', repeat('r', 2001));

------------------------------------------------------------------------------
-- disable / enable
------------------------------------------------------------------------------
SELECT key_id AS kd, api_key AS kd_key FROM apikeys.apikey_create('acme', 'to disable') \gset
SELECT apikeys.apikey_disable(:'kd');
SELECT status, (apikeys.apikey_verify(:'kd_key')).code FROM apikeys.keys WHERE key_id = :'kd';
-- Disabling a disabled key changes nothing.
SELECT updated_at AS kd_updated FROM apikeys.credential WHERE key_id = :'kd' \gset
SELECT apikeys.apikey_disable(:'kd');
SELECT status, updated_at = :'kd_updated' AS untouched FROM apikeys.keys WHERE key_id = :'kd';
SELECT apikeys.apikey_enable(:'kd');
SELECT status, (apikeys.apikey_verify(:'kd_key')).code FROM apikeys.keys WHERE key_id = :'kd';
-- Enabling an active key changes nothing.
SELECT updated_at AS kd_updated FROM apikeys.credential WHERE key_id = :'kd' \gset
SELECT apikeys.apikey_enable(:'kd');
SELECT status, updated_at = :'kd_updated' AS untouched FROM apikeys.keys WHERE key_id = :'kd';
-- Disable and enable do not touch secrets or expiry.
SELECT api_key AS kd_key2 FROM apikeys.apikey_rotate(:'kd', interval '1 hour') \gset
SELECT apikeys.apikey_disable(:'kd');
SELECT (apikeys.apikey_verify(:'kd_key')).code AS old_secret, (apikeys.apikey_verify(:'kd_key2')).code AS new_secret;
SELECT apikeys.apikey_enable(:'kd');
SELECT (apikeys.apikey_verify(:'kd_key')).code AS old_secret, (apikeys.apikey_verify(:'kd_key2')).code AS new_secret;
-- key_revoked
SELECT pg_temp.err(format('SELECT apikeys.apikey_disable(%L)', :'kr')) AS disable_revoked,
       pg_temp.err(format('SELECT apikeys.apikey_enable(%L)', :'kr')) AS enable_revoked;
-- On an inactive tenant a key can be disabled but not enabled.
SELECT tenant FROM apikeys.tenant_create('sleepy');
SELECT key_id AS ks, api_key AS ks_key FROM apikeys.apikey_create('sleepy', 'sleepy key') \gset
SELECT key_id AS ks2 FROM apikeys.apikey_create('sleepy', 'sleepy key 2') \gset
SELECT apikeys.apikey_disable(:'ks2');
SELECT active FROM apikeys.tenant_update('sleepy', active => false);
SELECT pg_temp.err(format('SELECT apikeys.apikey_disable(%L)', :'ks')) AS disable_on_inactive,
       pg_temp.err(format('SELECT apikeys.apikey_enable(%L)', :'ks')) AS enable_on_inactive,
       pg_temp.err(format('SELECT apikeys.apikey_enable(%L)', :'ks2')) AS enable_disabled_on_inactive;
SELECT name, status FROM apikeys.keys WHERE tenant = 'sleepy' ORDER BY name;
SELECT apikeys.apikey_enable(:'ks2');

------------------------------------------------------------------------------
-- update
------------------------------------------------------------------------------
SELECT key_id AS ku, api_key AS ku_key, now() AS t_u0
  FROM apikeys.apikey_create('acme', 'to update', scopes => '{read}', description => 'before',
                             metadata => '{"v": 1}', expires_at => now() + interval '1 day') \gset
-- Nothing given: nothing but updated_at changes.
SELECT apikeys.apikey_update(:'ku');
SELECT name, description, scopes, metadata, expires_at = :'t_u0'::timestamptz + interval '1 day' AS expiry_kept
  FROM apikeys.keys WHERE key_id = :'ku';
SELECT apikeys.apikey_update(:'ku', name => 'updated', description => 'after',
                             scopes => '{write,read,write,admin}', metadata => '{"v": 2}',
                             expires_at => now() + interval '7 days') AS updated, now() AS t_u1 \gset
SELECT name, description, scopes, metadata, expires_at = :'t_u1'::timestamptz + interval '7 days' AS expiry_set
  FROM apikeys.keys WHERE key_id = :'ku';
SELECT valid, code, name, scopes, expires_at = :'t_u1'::timestamptz + interval '7 days' AS expiry_ok
  FROM apikeys.apikey_verify(:'ku_key', '{admin,write}');
-- One field at a time; the others stay.
SELECT apikeys.apikey_update(:'ku', scopes => '{}');
SELECT name, description, scopes, metadata FROM apikeys.keys WHERE key_id = :'ku';
SELECT (apikeys.apikey_verify(:'ku_key', '{read}')).code AS read_after_scopes_cleared;
SELECT apikeys.apikey_update(:'ku', metadata => '{}');
SELECT name, description, scopes, metadata FROM apikeys.keys WHERE key_id = :'ku';
SELECT apikeys.apikey_update(:'ku', description => '');
SELECT name, description, scopes, metadata FROM apikeys.keys WHERE key_id = :'ku';
-- 'infinity' removes the expiry.
SELECT apikeys.apikey_update(:'ku', expires_at => 'infinity');
SELECT expires_at FROM apikeys.keys WHERE key_id = :'ku';
SELECT code, expires_at FROM apikeys.apikey_verify(:'ku_key');
-- An expired key comes back with a new expiry.
UPDATE apikeys.credential SET expires_at = now() - interval '1 second' WHERE key_id = :'ku';
SELECT (apikeys.apikey_verify(:'ku_key')).code AS expired;
SELECT apikeys.apikey_update(:'ku', expires_at => now() + interval '1 hour');
SELECT (apikeys.apikey_verify(:'ku_key')).code AS extended;
-- Shortening the expiry shortens a running grace period as well.
SELECT api_key AS ku_key2 FROM apikeys.apikey_rotate(:'ku', interval '50 minutes') \gset
SELECT apikeys.apikey_update(:'ku', expires_at => now() + interval '10 minutes');
SELECT s.valid_until = c.expires_at AS grace_capped
  FROM apikeys.secret s JOIN apikeys.credential c USING (key_id)
 WHERE s.key_id = :'ku' AND s.valid_until IS NOT NULL;
-- A disabled key can be updated and stays disabled.
SELECT apikeys.apikey_disable(:'ku');
SELECT apikeys.apikey_update(:'ku', name => 'disabled but renamed');
SELECT name, status FROM apikeys.keys WHERE key_id = :'ku';
SELECT apikeys.apikey_enable(:'ku');
-- Argument errors; none of them changes anything.
SELECT updated_at AS ku_updated FROM apikeys.credential WHERE key_id = :'ku' \gset
SELECT a AS argument, pg_temp.err(format('SELECT apikeys.apikey_update(%L, %s)', :'ku', a)) AS result
  FROM unnest(ARRAY[
    'name => ''''', 'name => '' x''', 'name => ''x ''', 'name => repeat(''n'', 201)',
    'name => E''a\nb''',
    'description => repeat(''d'', 2001)',
    'scopes => ARRAY[''read'', NULL]', 'scopes => ''{"bad scope"}''', 'scopes => ARRAY[repeat(''s'', 65)]',
    'scopes => (SELECT array_agg(''s'' || i) FROM generate_series(1, 65) i)', 'scopes => ''{{a},{b}}''',
    'expires_at => now() - interval ''1 second''', 'expires_at => now()', 'expires_at => ''-infinity''',
    'metadata => ''[]''', 'metadata => ''1''', 'metadata => jsonb_build_object(''x'', repeat(''x'', 9000))',
    'name => ''fine'', scopes => ''{"bad scope"}'''
  ]) a;
SELECT name, updated_at = :'ku_updated' AS untouched FROM apikeys.keys WHERE key_id = :'ku';
-- key_revoked, tenant_inactive
SELECT pg_temp.err(format('SELECT apikeys.apikey_update(%L, name => %L)', :'kr', 'new name')) AS update_revoked,
       pg_temp.err(format('SELECT apikeys.apikey_update(%L, name => %L)', :'ks', 'new name')) AS update_on_inactive;

------------------------------------------------------------------------------
-- delete
------------------------------------------------------------------------------
SELECT key_id AS kx, api_key AS kx_key FROM apikeys.apikey_create('acme', 'to delete') \gset
SELECT api_key AS kx_key2 FROM apikeys.apikey_rotate(:'kx', interval '1 hour') \gset
SELECT apikeys.apikey_delete(:'kx');
SELECT (apikeys.apikey_verify(:'kx_key')).code AS old_secret, (apikeys.apikey_verify(:'kx_key2')).code AS current_secret;
SELECT (SELECT count(*) FROM apikeys.credential WHERE key_id = :'kx') AS credentials,
       (SELECT count(*) FROM apikeys.secret WHERE key_id = :'kx') AS secrets,
       (SELECT count(*) FROM apikeys.keys WHERE key_id = :'kx') AS in_view;
SELECT pg_temp.err(format('SELECT apikeys.apikey_delete(%L)', :'kx')) AS delete_twice;
-- Revoked, disabled, and inactive-tenant keys can be deleted.
SELECT apikeys.apikey_delete(:'kr');
SELECT apikeys.apikey_delete(:'ks2');
SELECT apikeys.apikey_delete(:'ks');
SELECT count(*) AS sleepy_keys FROM apikeys.credential WHERE tenant = 'sleepy';
-- Delete is transactional.
BEGIN;
SELECT apikeys.apikey_delete(:'kd');
SELECT (apikeys.apikey_verify(:'kd_key2')).code AS inside;
ROLLBACK;
SELECT (apikeys.apikey_verify(:'kd_key2')).code AS after_rollback;

------------------------------------------------------------------------------
-- invalid_key_id and key_not_found, for every key function
------------------------------------------------------------------------------
SELECT f AS call,
       pg_temp.err(format(f, 'NULL')) AS null_key_id,
       pg_temp.err(format(f, '''00000000-0000-0000-0000-000000000000''')) AS unknown_key_id,
       pg_temp.err(format(f, quote_literal(:'kx'))) AS deleted_key_id
  FROM unnest(ARRAY[
    'SELECT apikeys.apikey_rotate(%s)',
    'SELECT apikeys.apikey_rotate(%s, ''1 hour'')',
    'SELECT apikeys.apikey_revoke(%s)',
    'SELECT apikeys.apikey_revoke(%s, ''why'')',
    'SELECT apikeys.apikey_disable(%s)',
    'SELECT apikeys.apikey_enable(%s)',
    'SELECT apikeys.apikey_update(%s)',
    'SELECT apikeys.apikey_update(%s, name => ''x'')',
    'SELECT apikeys.apikey_delete(%s)'
  ]) f;
-- Not a uuid at all: the type input rejects it.
SELECT apikeys.apikey_revoke('not-a-uuid');

-- As psql shows them.
SELECT apikeys.apikey_disable(NULL);
SELECT apikeys.apikey_update(NULL, name => 'x');
\set VERBOSITY terse
SELECT apikeys.apikey_enable('00000000-0000-0000-0000-000000000000');
\set VERBOSITY default
SELECT apikeys.apikey_delete('00000000-0000-0000-0000-000000000000');

-- What is left.
SELECT name, status FROM apikeys.keys ORDER BY name;
