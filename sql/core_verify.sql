--
-- core_verify: every verdict code apikey_verify gives today, the fields it
-- returns, scope requirements and the order in which checks apply.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');

SELECT key_id AS k_valid, api_key AS valid_key, now() AS t_valid
  FROM apikeys.apikey_create('acme', 'valid one', scopes => '{write,read,admin/users}',
                             expires_at => now() + interval '1 day') \gset

-- valid: identity, scopes and expiry come back.
SELECT valid, code, key_id = :'k_valid' AS same_key, tenant, name, scopes,
       expires_at = :'t_valid'::timestamptz + interval '1 day' AS expires_ok
  FROM apikeys.apikey_verify(:'valid_key');
-- The result is the apikeys.verification composite.
SELECT pg_typeof(apikeys.apikey_verify(:'valid_key'));
SELECT (apikeys.apikey_verify(:'valid_key')).code;

-- malformed: nothing about any key comes back.
SELECT valid, code, key_id, tenant, name, scopes, expires_at
  FROM apikeys.apikey_verify('not a key');
SELECT valid, code, key_id, tenant, name, scopes, expires_at
  FROM apikeys.apikey_verify(NULL);
SELECT valid, code FROM apikeys.apikey_verify(NULL, NULL, NULL);

-- Required scopes: all must be held; NULL and '{}' require nothing.
SELECT r AS required, v.valid, v.code
  FROM (VALUES (1, NULL::text[]), (2, '{}'), (3, '{read}'), (4, '{read,write}'),
               (5, '{admin/users,write,read}'), (6, '{read,read}'), (7, '{delete}'),
               (8, '{read,delete}'), (9, '{READ}'), (10, '{rea}'), (11, '{""}'),
               (12, '{NULL}'), (13, '{read,NULL}')) x(o, r),
       LATERAL apikeys.apikey_verify(:'valid_key', r) v
 ORDER BY o;
-- insufficient_scope still identifies the key.
SELECT valid, code, key_id = :'k_valid' AS same_key, tenant, scopes
  FROM apikeys.apikey_verify(:'valid_key', '{delete}');
-- A key without scopes satisfies only an empty requirement.
SELECT api_key AS noscope_key FROM apikeys.apikey_create('acme', 'no scopes') \gset
SELECT (apikeys.apikey_verify(:'noscope_key')).code AS no_requirement,
       (apikeys.apikey_verify(:'noscope_key', '{}')).code AS empty_requirement,
       (apikeys.apikey_verify(:'noscope_key', '{read}')).code AS read_required;
-- Named arguments and an (unused) client address.
SELECT code FROM apikeys.apikey_verify(api_key => :'valid_key', required_scopes => '{read}',
                                       client_addr => '192.0.2.1');
SELECT code FROM apikeys.apikey_verify(:'valid_key', client_addr => '2001:db8::1');

-- not_found: a well-formed key that is not (or no longer) issued.
SELECT key_id AS k_gone, api_key AS gone_key FROM apikeys.apikey_create('acme', 'deleted') \gset
SELECT code FROM apikeys.apikey_verify(:'gone_key');
SELECT apikeys.apikey_delete(:'k_gone');
SELECT valid, code, key_id, tenant, name, scopes, expires_at
  FROM apikeys.apikey_verify(:'gone_key');

-- disabled
SELECT key_id AS k_dis, api_key AS dis_key FROM apikeys.apikey_create('acme', 'disabled') \gset
SELECT apikeys.apikey_disable(:'k_dis');
SELECT valid, code, key_id = :'k_dis' AS same_key, name FROM apikeys.apikey_verify(:'dis_key');
SELECT apikeys.apikey_enable(:'k_dis');
SELECT valid, code FROM apikeys.apikey_verify(:'dis_key');

-- revoked
SELECT key_id AS k_rev, api_key AS rev_key FROM apikeys.apikey_create('acme', 'revoked') \gset
SELECT apikeys.apikey_revoke(:'k_rev', 'leaked');
SELECT valid, code, key_id = :'k_rev' AS same_key, name FROM apikeys.apikey_verify(:'rev_key');

-- expired, by the key's expiry (a superuser moves it into the past) ...
SELECT key_id AS k_exp, api_key AS exp_key
  FROM apikeys.apikey_create('acme', 'expired', expires_at => now() + interval '1 hour') \gset
SELECT code FROM apikeys.apikey_verify(:'exp_key');
UPDATE apikeys.credential SET expires_at = now() - interval '1 second' WHERE key_id = :'k_exp';
SELECT valid, code, key_id = :'k_exp' AS same_key, expires_at < now() AS in_past
  FROM apikeys.apikey_verify(:'exp_key');
-- ... by the clock ...
SELECT api_key AS soon_key
  FROM apikeys.apikey_create('acme', 'expires soon', expires_at => now() + interval '1 second') \gset
SELECT pg_sleep(1.2);
SELECT valid, code FROM apikeys.apikey_verify(:'soon_key');
-- ... and by the end of a rotation grace period.
SELECT key_id AS k_gr, api_key AS old_key FROM apikeys.apikey_create('acme', 'grace') \gset
SELECT api_key AS new_key FROM apikeys.apikey_rotate(:'k_gr', interval '1 hour') \gset
SELECT (apikeys.apikey_verify(:'old_key')).code AS old_in_grace,
       (apikeys.apikey_verify(:'new_key')).code AS new_key;
UPDATE apikeys.secret SET valid_until = now() - interval '1 second'
 WHERE key_id = :'k_gr' AND valid_until IS NOT NULL;
SELECT (apikeys.apikey_verify(:'old_key')).code AS old_after_grace,
       (apikeys.apikey_verify(:'new_key')).code AS new_key;

-- tenant_inactive, and back.
SELECT key_id AS k_gl, api_key AS gl_key FROM apikeys.apikey_create('globex', 'globex key') \gset
SELECT active FROM apikeys.tenant_update('globex', active => false);
SELECT valid, code, key_id = :'k_gl' AS same_key, tenant FROM apikeys.apikey_verify(:'gl_key');
SELECT active FROM apikeys.tenant_update('globex', active => true);
SELECT valid, code FROM apikeys.apikey_verify(:'gl_key');

-- Order of the checks: revoked, disabled, tenant_inactive, expired, then scopes.
SELECT key_id AS k_o, api_key AS o_key
  FROM apikeys.apikey_create('globex', 'order', scopes => '{read}',
                             expires_at => now() + interval '1 day') \gset
UPDATE apikeys.credential SET expires_at = now() - interval '1 second' WHERE key_id = :'k_o';
SELECT code AS expired_and_missing_scope FROM apikeys.apikey_verify(:'o_key', '{write}');
SELECT active FROM apikeys.tenant_update('globex', active => false);
SELECT code AS inactive_and_expired FROM apikeys.apikey_verify(:'o_key', '{write}');
SELECT apikeys.apikey_disable(:'k_o');
SELECT code AS disabled_and_inactive FROM apikeys.apikey_verify(:'o_key', '{write}');
SELECT apikeys.apikey_revoke(:'k_o');
SELECT code AS revoked_and_disabled FROM apikeys.apikey_verify(:'o_key', '{write}');
SELECT active FROM apikeys.tenant_update('globex', active => true);

-- Verification changes nothing and works in a read-only transaction.
SELECT updated_at AS upd_before FROM apikeys.credential WHERE key_id = :'k_valid' \gset
BEGIN TRANSACTION READ ONLY;
SELECT code FROM apikeys.apikey_verify(:'valid_key');
SELECT code FROM apikeys.apikey_verify(:'valid_key', '{nope}');
SELECT code FROM apikeys.apikey_verify(:'gone_key');
SELECT code FROM apikeys.apikey_verify('garbage');
COMMIT;
SELECT updated_at = :'upd_before' AS unchanged FROM apikeys.credential WHERE key_id = :'k_valid';

-- Verdicts are transactional: a key revoked in an open transaction is
-- revoked inside it and valid again after rollback.
BEGIN;
SELECT apikeys.apikey_revoke(:'k_valid');
SELECT code FROM apikeys.apikey_verify(:'valid_key');
ROLLBACK;
SELECT code FROM apikeys.apikey_verify(:'valid_key');

-- Many verifications in one statement.
SELECT v.code, count(*)
  FROM generate_series(1, 1000) i,
       LATERAL apikeys.apikey_verify(CASE i % 4 WHEN 0 THEN :'valid_key'
                                               WHEN 1 THEN :'rev_key'
                                               WHEN 2 THEN :'gone_key'
                                               ELSE 'junk' || i END) v
 GROUP BY v.code ORDER BY v.code;
