--
-- import_legacy: keys issued before apikeys.  Three legacy tables, filled
-- exactly the way their systems fill them, are registered, imported and
-- verified; then every error of the registry and the import, half-way
-- failures, rotation away from a legacy secret, the registry's cache, and
-- a hostile tenant admin's attempts on another tenant.
--
--   tk        'tk_' + 64 hex (32 random bytes), SHA-256 hex of the whole key
--             (a Supabase table: visible prefix, is_active, last_used_at,
--             created_by, metadata)
--   kpg       'kpg_live_' + 64 hex, SHA-256 of the whole key (stored here in
--             base64), permissions, a per-minute rate limit, expires_at,
--             organization_id
--   keyhippo  a random base64 prefix (12 characters) + 128 hex, SHA-512 hex
--             of the 128-character part; expires_at, is_revoked
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP TABLE IF EXISTS public.tk_keys, public.kpg_keys, public.kh_keys;
DROP ROLE IF EXISTS regress_il_acme, regress_il_globex;
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
-- The same key with its character at position pos replaced by c.
CREATE FUNCTION pg_temp.poke(k text, pos integer, c text) RETURNS text LANGUAGE sql AS $$
    SELECT overlay(k PLACING c FROM pos FOR 1)
$$;
-- A character of the key's alphabet that differs from position pos's.
CREATE FUNCTION pg_temp.other(k text, pos integer) RETURNS text LANGUAGE sql AS $$
    SELECT CASE substr(k, pos, 1) WHEN 'a' THEN 'b' ELSE 'a' END
$$;

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
CREATE ROLE regress_il_acme;
CREATE ROLE regress_il_globex;
SELECT apikeys.grant_tenant('regress_il_acme', 'acme');
SELECT apikeys.grant_tenant('regress_il_globex', 'globex');

------------------------------------------------------------------------------
-- The three legacy tables, as their systems write them.  The plaintext is
-- kept here (column plain) only so the test can present the keys.
------------------------------------------------------------------------------
CREATE TABLE public.tk_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), plain text, key_hash text, key_prefix text,
    name text, description text, is_active boolean, last_used_at timestamptz,
    created_by uuid, metadata jsonb, created_at timestamptz);
INSERT INTO public.tk_keys (plain, name, description, is_active, last_used_at, created_by, metadata, created_at)
SELECT 'tk_' || encode(gen_random_bytes(32), 'hex'), 'tk key ' || i, CASE WHEN i = 1 THEN 'the first' END,
       i <> 4, CASE WHEN i = 2 THEN now() - interval '1 day' END, gen_random_uuid(),
       jsonb_build_object('plan', 'pro', 'n', i), now() - i * interval '1 day'
  FROM generate_series(1, 5) i;
UPDATE public.tk_keys SET key_hash = encode(digest(plain, 'sha256'), 'hex'), key_prefix = left(plain, 9) || '...';

CREATE TABLE public.kpg_keys (
    id serial PRIMARY KEY, plain text, key_hash text, permissions text[], rate_limit_per_minute integer,
    expires_at timestamptz, organization_id uuid, created_at timestamptz DEFAULT now());
INSERT INTO public.kpg_keys (plain, permissions, rate_limit_per_minute, expires_at, organization_id)
SELECT 'kpg_live_' || encode(gen_random_bytes(32), 'hex'),
       CASE WHEN i = 1 THEN '{read}'::text[] ELSE '{read,write}'::text[] END, 2,
       CASE WHEN i = 3 THEN now() - interval '1 hour' ELSE now() + interval '30 days' END,
       'a0b1c2d3-0000-4000-8000-000000000001'
  FROM generate_series(1, 3) i;
UPDATE public.kpg_keys SET key_hash = encode(digest(plain, 'sha256'), 'base64');

CREATE TABLE public.kh_keys (
    id serial PRIMARY KEY, prefix text, body text, key_hash text, expires_at timestamptz, is_revoked boolean);
INSERT INTO public.kh_keys (prefix, body, expires_at, is_revoked)
SELECT encode(gen_random_bytes(8), 'base64'), encode(gen_random_bytes(64), 'hex'), NULL, i = 2
  FROM generate_series(1, 3) i;
UPDATE public.kh_keys SET key_hash = encode(digest(body, 'sha512'), 'hex');
SELECT length(prefix) AS kh_prefix_len, length(body) AS kh_body_len FROM public.kh_keys LIMIT 1;

-- verify's own SHA-512 agrees with pgcrypto's, at every length a key may have
SELECT count(*) AS sha512_mismatches FROM generate_series(1, 300) n, LATERAL (SELECT gen_random_bytes(n) b OFFSET 0) x
 WHERE apikeys_internal._sha512(x.b) <> digest(x.b, 'sha512');
SELECT apikeys_internal._sha512('') = digest('', 'sha512') AS sha512_empty;

------------------------------------------------------------------------------
-- Register the formats
------------------------------------------------------------------------------
SELECT tenant, name, prefix, key_length, alphabet, digest, digest_offset, native_prefix
  FROM apikeys.key_format_register('acme', 'tk', 'tk_', 67, 'hex', description => 'Supabase table keys');
SELECT tenant, name, prefix, key_length, alphabet, digest, digest_offset, native_prefix
  FROM apikeys.key_format_register('acme', 'kpg', 'kpg_live_', 73, 'hex');
-- no literal prefix: a global format (superuser or global admin)
SELECT tenant, name, prefix, key_length, alphabet, head_alphabet, digest, digest_offset, native_prefix
  FROM apikeys.key_format_register(NULL, 'keyhippo', '', 140, 'hex', 'sha512', digest_offset => 12,
                                   head_alphabet => 'base64', native_prefix => 'kh');
SELECT chain, action, detail->'new'->>'name' AS format FROM apikeys.audit
 WHERE action = 'key_format_registered' ORDER BY chain, audit_id;

-- Before the import, keys of a registered format are well-formed but unknown.
SELECT (apikeys.apikey_verify(plain)).code AS before_import FROM public.tk_keys LIMIT 1;

------------------------------------------------------------------------------
-- Import each table in one statement
------------------------------------------------------------------------------
SELECT count(*) AS audit_before FROM apikeys.audit \gset
SELECT apikeys.apikey_import_many('acme', 'tk', $$
    SELECT key_hash AS digest, name, description, key_prefix AS hint,
           CASE WHEN is_active THEN 'active' ELSE 'disabled' END AS status,
           metadata || jsonb_build_object('legacy_id', id, 'created_by', created_by) AS metadata,
           created_at, last_used_at, id::text AS source_id
      FROM public.tk_keys ORDER BY created_at DESC$$) AS tk_imported;
SELECT apikeys.apikey_import_many('acme', 'kpg', $$
    SELECT key_hash AS digest, 'kpg ' || id AS name, permissions AS scopes,
           rate_limit_per_minute AS rate_limit, interval '1 minute' AS rate_window,
           expires_at, created_at, jsonb_build_object('organization_id', organization_id) AS metadata,
           id::text AS source_id
      FROM public.kpg_keys ORDER BY id$$, digest_encoding => 'base64') AS kpg_imported;
SELECT apikeys.apikey_import_many('acme', 'keyhippo', $$
    SELECT key_hash AS digest, prefix AS head, 'kh ' || id AS name, expires_at,
           CASE WHEN is_revoked THEN 'revoked' END AS status,
           left(prefix, 4) || '...' || right(body, 4) AS hint
      FROM public.kh_keys ORDER BY id$$) AS kh_imported;
-- two audit rows per key (key_created, secret_issued), in the tenant's
-- chain, and one keys_imported row per batch
SELECT action, count(*) FROM apikeys.audit WHERE audit_id > 0 AND chain = 'acme'
   AND action IN ('key_created', 'secret_issued', 'keys_imported') GROUP BY action ORDER BY action;
SELECT detail - 'format_id' AS detail, detail ? 'format_id' AS has_format_id FROM apikeys.audit WHERE action = 'keys_imported' ORDER BY audit_id;
SELECT count(*) - :audit_before AS new_audit_rows FROM apikeys.audit;
-- never a digest in the audit
SELECT count(*) AS audit_rows_with_digest FROM apikeys.audit a
 WHERE EXISTS (SELECT 1 FROM public.tk_keys t WHERE strpos(a.detail::text, t.key_hash) > 0)
    OR EXISTS (SELECT 1 FROM public.kh_keys t WHERE strpos(a.detail::text, t.key_hash) > 0)
    OR EXISTS (SELECT 1 FROM apikeys.secret s WHERE strpos(a.detail::text, encode(s.digest, 'hex')) > 0);
SELECT ok, problem FROM apikeys.audit_check();

-- What apikeys keeps
SELECT k.name, k.prefix,
       CASE WHEN k.name LIKE 'tk%' THEN k.hint = (SELECT t.key_prefix FROM public.tk_keys t WHERE t.name = k.name)
            WHEN k.name LIKE 'kh%' THEN k.hint = (SELECT left(h.prefix, 4) || '...' || right(h.body, 4) FROM public.kh_keys h WHERE 'kh ' || h.id = k.name)
            ELSE k.hint = 'kpg_live_...' END AS hint_kept, k.status, k.scopes, k.rate_limit, k.rate_window, k.expires_at IS NOT NULL AS expires,
       k.metadata ? 'legacy_id' AS has_legacy_id
  FROM apikeys.keys k ORDER BY k.name;
SELECT k.name, u.last_used_at IS NOT NULL AS last_used
  FROM apikeys.keys k JOIN apikeys.key_usage u USING (key_id) WHERE k.name LIKE 'tk%' ORDER BY k.name;
SELECT format, count(*) FROM apikeys.legacy_keys GROUP BY format ORDER BY format;
SELECT tenant, name, secrets FROM apikeys.key_formats ORDER BY name;

------------------------------------------------------------------------------
-- Verify: valid, with their identity; status and expiry come along
------------------------------------------------------------------------------
SELECT t.name, v.code, v.tenant, v.name = t.name AS same_name
  FROM public.tk_keys t, apikeys.apikey_verify(t.plain) v ORDER BY t.name;
SELECT 'kpg ' || p.id AS name, v.code, v.scopes FROM public.kpg_keys p, apikeys.apikey_verify(p.plain) v ORDER BY p.id;
SELECT 'kh ' || h.id AS name, v.code FROM public.kh_keys h, apikeys.apikey_verify(h.prefix || h.body) v ORDER BY h.id;
-- scopes, rate limits: as for any key
SELECT plain AS kpg1 FROM public.kpg_keys WHERE id = 1 \gset
SELECT code FROM apikeys.apikey_verify(:'kpg1', required_scopes => '{write}');
SELECT code, rate_limit FROM apikeys.apikey_verify(:'kpg1', required_scopes => '{read}');
SELECT 'tk_' || encode(gen_random_bytes(32), 'hex') AS limited \gset
SELECT apikeys.apikey_import('acme', 'tk', encode(digest(:'limited', 'sha256'), 'hex'), 'limited',
                             rate_limit => 1, rate_window => '1 day') IS NOT NULL AS imported;
SELECT code, rate_limit, rate_remaining FROM apikeys.apikey_verify(:'limited');
SELECT code, rate_limit, rate_remaining FROM apikeys.apikey_verify(:'limited');
SELECT apikeys.apikey_set_policy(key_id, allowed_ips => '{10.0.0.0/8}') FROM apikeys.keys WHERE name = 'limited';
SELECT code FROM apikeys.apikey_verify(:'limited', client_addr => '192.168.1.1');
-- authenticate binds the tenant as for a native key
BEGIN;
SELECT code FROM apikeys.authenticate((SELECT plain FROM public.kpg_keys WHERE id = 2), required_scopes => '{}');
SELECT apikeys.current_tenant();
ROLLBACK;

-- One character changed: another key of the same format (not_found), or no
-- format at all (malformed).
SELECT plain AS tk1 FROM public.tk_keys WHERE name = 'tk key 1' \gset
SELECT prefix || body AS kh1 FROM public.kh_keys WHERE id = 1 \gset
SELECT (apikeys.apikey_verify(pg_temp.poke(:'tk1', 67, pg_temp.other(:'tk1', 67)))).code AS tk_last_char,
       (apikeys.apikey_verify(pg_temp.poke(:'tk1', 10, pg_temp.other(:'tk1', 10)))).code AS tk_middle_char,
       (apikeys.apikey_verify(pg_temp.poke(:'tk1', 10, 'G'))).code AS tk_out_of_alphabet,
       (apikeys.apikey_verify(pg_temp.poke(:'tk1', 2, 'x'))).code AS tk_prefix_changed,
       (apikeys.apikey_verify(left(:'tk1', 66))).code AS tk_one_short,
       (apikeys.apikey_verify(:'tk1' || 'a')).code AS tk_one_long,
       (apikeys.apikey_verify(upper(:'tk1'))).code AS tk_upper_case;
SELECT (apikeys.apikey_verify(pg_temp.poke(:'kh1', 140, pg_temp.other(:'kh1', 140)))).code AS kh_body_changed,
       (apikeys.apikey_verify(pg_temp.poke(:'kh1', 1, CASE substr(:'kh1', 1, 1) WHEN 'Q' THEN 'R' ELSE 'Q' END))).code AS kh_prefix_changed,
       (apikeys.apikey_verify(pg_temp.poke(:'kh1', 13, 'Z'))).code AS kh_body_not_hex;
-- the same digest under another format does not verify: the lookup digest is bound to the format
SELECT name FROM apikeys.key_format_register('acme', 'tk_upper', 'TK_', 67, 'hex');
SELECT apikeys.apikey_import('acme', 'tk_upper', key_hash, 'same digest, other format') IS NOT NULL AS imported
  FROM public.tk_keys WHERE name = 'tk key 1';
SELECT (apikeys.apikey_verify('TK_' || substr(:'tk1', 4))).code AS other_format_same_digest;

-- Revoke and rotate an imported key like any other
SELECT key_id AS tk5 FROM apikeys.keys WHERE name = 'tk key 5' \gset
SELECT plain AS tk5_plain FROM public.tk_keys WHERE name = 'tk key 5' \gset
SELECT apikeys.apikey_revoke(:'tk5', 'leaked');
SELECT code FROM apikeys.apikey_verify(:'tk5_plain');

------------------------------------------------------------------------------
-- Rotation: a native key under the same key_id; the legacy secret keeps
-- its grace, then dies
------------------------------------------------------------------------------
SELECT key_id AS tk1_id FROM apikeys.keys WHERE name = 'tk key 1' \gset
SELECT api_key AS tk1_native, key_id = :'tk1_id' AS same_key, key_prefix
  FROM apikeys.apikey_rotate(:'tk1_id', interval '1 hour') \gset
SELECT :'same_key' AS same_key, :'key_prefix' AS key_prefix, :'tk1_native' ~ '^tk_[1-9A-HJ-NP-Za-km-z]{50}$' AS native_shape;
SELECT (apikeys.apikey_verify(:'tk1')).code AS legacy_in_grace, (apikeys.apikey_verify(:'tk1_native')).code AS native;
SELECT format, valid_until IS NOT NULL AS in_grace FROM apikeys.legacy_keys WHERE key_id = :'tk1_id';
SELECT api_key AS tk1_native2 FROM apikeys.apikey_rotate(:'tk1_id') \gset
SELECT (apikeys.apikey_verify(:'tk1')).code AS legacy_after_grace_0, (apikeys.apikey_verify(:'tk1_native2')).code AS native;
SELECT count(*) AS legacy_secrets_left FROM apikeys.legacy_keys WHERE key_id = :'tk1_id';

------------------------------------------------------------------------------
-- Retiring a format: refused while a secret of it can verify
------------------------------------------------------------------------------
SELECT pg_temp.err($$SELECT apikeys.key_format_drop('acme', 'kpg')$$) AS drop_in_use;
SELECT count(*) AS rotated FROM apikeys.keys k, apikeys.apikey_rotate(k.key_id)
 WHERE k.key_id IN (SELECT key_id FROM apikeys.legacy_keys WHERE format = 'kpg') AND k.status <> 'revoked'
   AND (k.expires_at IS NULL OR k.expires_at > now());
SELECT pg_temp.err($$SELECT apikeys.key_format_drop('acme', 'kpg')$$) AS drop_with_expired_key;
SELECT apikeys.apikey_delete(key_id) FROM apikeys.legacy_keys WHERE format = 'kpg';
SELECT pg_temp.err($$SELECT apikeys.key_format_drop('acme', 'kpg')$$) AS drop_unused;
SELECT action, detail->'old'->>'name' AS format FROM apikeys.audit WHERE action = 'key_format_dropped';
-- gone from this backend's registry at once: kpg keys are malformed again
SELECT (apikeys.apikey_verify(plain)).code AS kpg_after_drop FROM public.kpg_keys WHERE id = 1;
-- a registration rolled back leaves nothing behind in the registry
BEGIN;
SELECT name FROM apikeys.key_format_register('acme', 'kpg', 'kpg_live_', 73, 'hex');
SELECT (apikeys.apikey_verify(plain)).code AS kpg_in_txn FROM public.kpg_keys WHERE id = 1;
ROLLBACK;
SELECT (apikeys.apikey_verify(plain)).code AS kpg_after_rollback FROM public.kpg_keys WHERE id = 1;

------------------------------------------------------------------------------
-- Half-way failures leave nothing behind and name the row
------------------------------------------------------------------------------
SELECT count(*) AS keys_before FROM apikeys.credential \gset
SELECT count(*) AS audit_before FROM apikeys.audit \gset
CREATE TEMP TABLE batch AS
SELECT i, 'tk_' || encode(gen_random_bytes(32), 'hex') AS plain FROM generate_series(1, 25000) i;
-- row 3 repeats row 1's digest
SELECT pg_temp.err($$SELECT apikeys.apikey_import_many('acme', 'tk', 'SELECT encode(digest(CASE WHEN i = 3 THEN b1.plain ELSE b.plain END, ''sha256''), ''hex'') AS digest, ''b '' || i AS name, ''src-'' || i AS source_id FROM pg_temp.batch b, (SELECT plain FROM pg_temp.batch WHERE i = 1) b1 ORDER BY i')$$) AS dup_in_batch;
-- row 20001 (in the third batch of 10,000) is a key imported already
SELECT pg_temp.err($$SELECT apikeys.apikey_import_many('acme', 'tk', 'SELECT encode(digest(CASE WHEN i = 20001 THEN (SELECT plain FROM public.tk_keys WHERE name = ''tk key 2'') ELSE plain END, ''sha256''), ''hex'') AS digest, ''b '' || i AS name FROM pg_temp.batch ORDER BY i')$$) AS dup_known;
-- a bad row in the middle
SELECT pg_temp.err($$SELECT apikeys.apikey_import_many('acme', 'tk', 'SELECT encode(digest(plain, ''sha256''), ''hex'') AS digest, ''b '' || i AS name, CASE WHEN i = 12345 THEN ''suspended'' END AS status, ''src-'' || i AS source_id FROM pg_temp.batch ORDER BY i')$$) AS bad_status;
SELECT pg_temp.err($$SELECT apikeys.apikey_import_many('acme', 'tk', 'SELECT CASE WHEN i = 7 THEN left(encode(digest(plain, ''sha256''), ''hex''), 63) ELSE encode(digest(plain, ''sha256''), ''hex'') END AS digest, ''b '' || i AS name FROM pg_temp.batch WHERE i < 10 ORDER BY i')$$) AS bad_digest;
SELECT pg_temp.err($$SELECT apikeys.apikey_import_many('acme', 'tk', 'SELECT encode(digest(plain, ''sha256''), ''hex'') AS digest, CASE WHEN i <> 2 THEN ''b '' || i END AS name FROM pg_temp.batch WHERE i < 10 ORDER BY i')$$) AS null_name;
SELECT count(*) - :keys_before AS keys_left_behind FROM apikeys.credential;
SELECT count(*) - :audit_before AS audit_rows_left_behind FROM apikeys.audit;
-- the whole batch then imports
SELECT apikeys.apikey_import_many('acme', 'tk', $$SELECT encode(digest(plain, 'sha256'), 'hex') AS digest, 'b ' || i AS name FROM pg_temp.batch$$) AS batch_imported;
SELECT count(*) AS valid FROM pg_temp.batch b, apikeys.apikey_verify(b.plain) v WHERE v.valid AND b.i % 1000 = 0;

------------------------------------------------------------------------------
-- Every error, with its SQLSTATE
------------------------------------------------------------------------------
SELECT encode(digest('tk_' || repeat('ab', 32), 'sha256'), 'hex') AS dig \gset
SELECT pg_temp.err(q) FROM (VALUES
    -- registry
    ($$SELECT apikeys.key_format_register('acme', 'Bad-Name', 'xx_', 40, 'hex')$$),
    ($$SELECT apikeys.key_format_register('acme', NULL, 'xx_', 40, 'hex')$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', 'x x_', 40, 'hex')$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', NULL, 40, 'hex')$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', 'x_', 40, 'hex')$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', 'xx_', 15, 'hex')$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', 'xx_', 257, 'hex')$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', 'xx_', 40, 'hexadecimal')$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', 'xx_', 40, 'hex', head_alphabet => 'morse')$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', 'xx_', 40, 'hex', 'md5')$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', 'xx_', 40, 'hex', digest_offset => 2)$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', 'xx_', 40, 'hex', digest_offset => 30)$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', 'xx_', 40, 'hex', head_alphabet => 'base64')$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', 'xx_', 40, 'hex', native_prefix => 'XX')$$),
    ($$SELECT apikeys.key_format_register('acme', 'x1', 'xx_', 40, 'hex', description => repeat('d', 2001))$$),
    ($$SELECT apikeys.key_format_register('nope', 'x1', 'xx_', 40, 'hex')$$),
    ($$SELECT apikeys.key_format_register('Bad Tenant', 'x1', 'xx_', 40, 'hex')$$),
    ($$SELECT apikeys.key_format_register('acme', 'tk', 'zz_', 67, 'hex')$$),
    ($$SELECT apikeys.key_format_register('acme', 'tk2', 'tk_a', 67, 'hex')$$),
    ($$SELECT apikeys.key_format_register('acme', 'tk3', 'tk', 67, 'alnum')$$),
    ($$SELECT apikeys.key_format_register(NULL, 'anything67', '', 67, 'base64url')$$),
    ($$SELECT apikeys.key_format_register(NULL, 'alnum67', '', 67, 'alnum')$$),
    ($$SELECT apikeys.key_format_drop('acme', 'nope')$$),
    ($$SELECT apikeys.key_format_drop('acme', 'keyhippo')$$),
    -- import
    ($$SELECT apikeys.apikey_import('acme', 'nope', '00', 'x')$$),
    ($$SELECT apikeys.apikey_import('acme', NULL, '00', 'x')$$),
    ($$SELECT apikeys.apikey_import('nope', 'tk', '00', 'x')$$),
    ($$SELECT apikeys.apikey_import(NULL, 'tk', '00', 'x')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', NULL, 'x')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', 'zz' || right(:'dig', 62), 'x')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', left(:'dig', 62), 'x')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', encode(decode(:'dig', 'hex'), 'base64'), 'x')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', digest_encoding => 'base64')$$),
    ($$SELECT apikeys.apikey_import('acme', 'keyhippo', :'dig', 'x')$$),
    ($$SELECT apikeys.apikey_import('acme', 'keyhippo', repeat('00', 64), 'x')$$),
    ($$SELECT apikeys.apikey_import('acme', 'keyhippo', repeat('00', 64), 'x', head => 'short')$$),
    ($$SELECT apikeys.apikey_import('acme', 'keyhippo', repeat('00', 64), 'x', head => 'AAAA#AAAAAAA')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', head => 'tk_')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', digest_encoding => 'base32')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', NULL)$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', ' x')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', scopes => '{"bad scope"}')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', metadata => '[1]')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', status => 'suspended')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', expires_at => '-infinity')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', created_at => now() + interval '1 day')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', status => 'revoked', revoked_at => 'infinity')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', hint => '')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', hint => E'a\nb')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', rate_limit => 0)$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', rate_window => '1 minute')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', rate_limit => 5, rate_window => '2 days')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', :'dig', 'x', last_used_at => now() + interval '1 hour')$$),
    ($$SELECT apikeys.apikey_import('acme', 'tk', key_hash, 'x') FROM public.tk_keys WHERE name = 'tk key 3'$$),
    ($$SELECT apikeys.apikey_import_rows('acme', 'tk', ARRAY[ARRAY[NULL::apikeys.legacy_key]])$$),
    ($$SELECT apikeys.apikey_import_rows('acme', 'tk', '{}', first_row => 0)$$),
    ($$SELECT apikeys.apikey_import_many('acme', 'tk', NULL)$$),
    ($$SELECT apikeys.apikey_import_many('acme', 'tk', 'SELECT 1 AS digest, 2 AS scope')$$),
    ($$SELECT apikeys.apikey_import_many('acme', 'tk', 'SELECT 1; SELECT 2')$$)
) t(q0), LATERAL (SELECT replace(q0, ':''dig''', quote_literal(:'dig')) AS q) r;
-- an inactive tenant takes no import
SELECT active FROM apikeys.tenant_update('globex', active => false);
SELECT pg_temp.err($$SELECT apikeys.apikey_import('globex', 'keyhippo', repeat('00', 64), 'x', head => 'AAAAAAAAAAA=')$$) AS inactive_tenant;
SELECT active FROM apikeys.tenant_update('globex', active => true);
-- the import of nothing is authorized and checked like any other
SELECT apikeys.apikey_import_many('acme', 'tk', 'SELECT NULL::text AS digest WHERE false') AS nothing;

------------------------------------------------------------------------------
-- Attacks by globex's admin on acme
------------------------------------------------------------------------------
SET ROLE regress_il_globex;
SELECT pg_temp.err(q) FROM (VALUES
    -- import into acme, register or drop acme's formats, register global ones
    ($$SELECT apikeys.apikey_import('acme', 'tk', repeat('00', 32), 'backdoor')$$),
    ($$SELECT apikeys.apikey_import_many('acme', 'tk', 'SELECT repeat(''00'', 32) AS digest, ''backdoor'' AS name')$$),
    ($$SELECT apikeys.apikey_import_rows('acme', 'tk', ARRAY[ROW(repeat('00', 32), 'backdoor', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::apikeys.legacy_key])$$),
    ($$SELECT apikeys.key_format_register('acme', 'mine', 'gx_', 40, 'hex')$$),
    ($$SELECT apikeys.key_format_drop('acme', 'tk')$$),
    ($$SELECT apikeys.key_format_register(NULL, 'everyone', 'ev_', 40, 'hex')$$),
    ($$SELECT apikeys.key_format_drop(NULL, 'keyhippo')$$),
    -- acme's format is not globex's to import with
    ($$SELECT apikeys.apikey_import('globex', 'tk', repeat('00', 32), 'x')$$),
    -- a format shadowing acme's keys is refused, without naming acme's
    ($$SELECT apikeys.key_format_register('globex', 'steal', 'tk_', 67, 'hex_any')$$),
    -- the bulk query runs as globex's admin: acme's tables stay unreadable
    ($$SELECT apikeys.apikey_import_many('globex', 'keyhippo', 'SELECT key_hash AS digest, name FROM public.tk_keys')$$),
    ($$SELECT apikeys.apikey_import_many('globex', 'keyhippo', 'SELECT encode(digest, ''hex'') AS digest, ''x'' AS name FROM apikeys.secret')$$),
    ($$SELECT apikeys.apikey_import_many('globex', 'keyhippo', 'SELECT prefix AS digest, ''x'' AS name FROM apikeys.key_format')$$)
) t(q);
-- globex sees its own and global formats only, and none of acme's keys
SELECT tenant, name, secrets FROM apikeys.key_formats ORDER BY name;
SELECT count(*) AS acme_legacy_keys_seen FROM apikeys.legacy_keys;
-- its own format and import work
SELECT name FROM apikeys.key_format_register('globex', 'gx', 'gx_live_', 40, 'alnum');
SELECT apikeys.apikey_import('globex', 'gx', encode(digest('gx_live_' || repeat('Ab', 16), 'sha256'), 'hex'), 'gx key') IS NOT NULL AS imported;
SELECT code, tenant FROM apikeys.apikey_verify('gx_live_' || repeat('Ab', 16));
RESET ROLE;
-- nothing of acme's changed or was created by globex
SELECT count(*) AS backdoors FROM apikeys.credential WHERE name = 'backdoor';
SELECT tenant, name FROM apikeys.key_format ORDER BY tenant NULLS FIRST, name;
-- the refusals were logged, not audited
SELECT count(*) AS audited_refusals FROM apikeys.audit WHERE outcome <> 'success';

-- the tenant admin of acme manages acme's formats
SET ROLE regress_il_acme;
SELECT name FROM apikeys.key_format_register('acme', 'ac', 'acme_', 30, 'base58');
SELECT apikeys.key_format_drop('acme', 'ac');
-- at most 16 formats per tenant
SELECT count(*) AS acme_formats FROM apikeys.key_formats WHERE tenant = 'acme';
SELECT count(apikeys.key_format_register('acme', 'lim' || l, 'lim' || l || '_', 40, 'hex'))
  FROM generate_series(1, 16 - (SELECT count(*)::integer FROM apikeys.key_formats WHERE tenant = 'acme')) l;
SELECT pg_temp.err($$SELECT apikeys.key_format_register('acme', 'one_more', 'more_', 40, 'hex')$$) AS seventeenth;
SELECT apikeys.key_format_drop('acme', name) FROM apikeys.key_formats WHERE tenant = 'acme' AND name LIKE 'lim%';
-- and at most 16 registrations per transaction (each keeps its shape until
-- the transaction ends): registering and dropping over and over is refused
BEGIN;
SELECT count(*) FROM generate_series(1, 16) l,
       LATERAL (SELECT apikeys.key_format_register('acme', 'churn', 'ch' || l || '_', 40, 'hex'),
                       apikeys.key_format_drop('acme', 'churn')) x;
SELECT pg_temp.err($$SELECT apikeys.key_format_register('acme', 'churn', 'churn_', 40, 'hex')$$) AS seventeenth_in_one_transaction;
ROLLBACK;
SELECT pg_temp.err($$SELECT apikeys.key_format_register(NULL, 'glob', 'gl_', 30, 'hex')$$) AS acme_global;
RESET ROLE;

-- ATTACK: a tenant's legacy table whose columns carry the tenant's code.
-- (a) a column of the tenant's own type, whose cast to json (what the import
-- converts rows with) the tenant wrote: imported by a superuser, the cast ran
-- as the superuser.  Refused before any row is read; the tenant's code never
-- runs.  (b) a row-level policy calling the tenant's code, imported by a
-- global admin the policy applies to: refused (row_security is off in the
-- import), the policy never runs.
CREATE SCHEMA il_acme AUTHORIZATION regress_il_acme;
CREATE ROLE regress_il_global;
SELECT apikeys.grant_tenant('regress_il_global', NULL);
SET ROLE regress_il_acme;
CREATE TABLE il_acme.ran (who name, super boolean);
GRANT INSERT ON il_acme.ran TO PUBLIC;
GRANT USAGE ON SCHEMA il_acme TO PUBLIC;
CREATE FUNCTION il_acme.spy() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO il_acme.ran SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    RETURN true;
END $$;
CREATE TYPE il_acme.label AS ENUM ('legacy one');
CREATE FUNCTION il_acme.label_json(il_acme.label) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    PERFORM il_acme.spy();
    RETURN to_json($1::text);
END $$;
CREATE CAST (il_acme.label AS json) WITH FUNCTION il_acme.label_json(il_acme.label);
CREATE TABLE il_acme.api_keys (id int, key_hash text, label il_acme.label);
INSERT INTO il_acme.api_keys VALUES (1, encode(digest('tk_' || repeat('c', 64), 'sha256'), 'hex'), 'legacy one');
CREATE TABLE il_acme.rls_keys (id int, key_hash text);
INSERT INTO il_acme.rls_keys VALUES (2, encode(digest('tk_' || repeat('d', 64), 'sha256'), 'hex'));
ALTER TABLE il_acme.rls_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY watch ON il_acme.rls_keys USING (il_acme.spy());
GRANT SELECT ON il_acme.api_keys, il_acme.rls_keys TO PUBLIC;
RESET ROLE;
SELECT pg_temp.err($$SELECT apikeys.apikey_import_many('acme', 'tk',
    'SELECT key_hash AS digest, label AS name, id::text AS source_id FROM il_acme.api_keys')$$) AS own_type;
SELECT * FROM apikeys.import_query_columns('SELECT key_hash AS digest, label AS name FROM il_acme.api_keys');
-- the same type inside a built-in pseudo-type (record, anyarray): to_jsonb
-- of the record called the tenant's cast all the same
SELECT pg_temp.err($$SELECT apikeys.apikey_import_many('acme', 'tk',
    'SELECT key_hash AS digest, ''wrapped'' AS name, ROW(label) AS metadata FROM il_acme.api_keys')$$) AS own_type_in_a_record;
SELECT * FROM apikeys.import_query_columns('SELECT ROW(label) AS metadata, ROW(1, ''x'') AS plain_record, ARRAY[1] AS ints, ''{}''::text[] AS scopes, histogram_bounds AS stats FROM il_acme.api_keys, pg_stats LIMIT 0');
SET ROLE regress_il_global;
SELECT pg_temp.err($$SELECT apikeys.apikey_import_many('acme', 'tk',
    'SELECT key_hash AS digest, ''rls'' AS name FROM il_acme.rls_keys')$$) AS policy;
RESET ROLE;
SELECT count(*) AS tenant_code_ran FROM il_acme.ran;
-- the importer converts the column in its query, where it can be read
SELECT apikeys.apikey_import_many('acme', 'tk',
    'SELECT key_hash AS digest, label::text AS name, id::text AS source_id FROM il_acme.api_keys') AS imported;
SELECT (apikeys.apikey_verify('tk_' || repeat('c', 64))).code, count(*) AS tenant_code_ran FROM il_acme.ran;
DROP SCHEMA il_acme CASCADE;

-- ATTACK: import_query_columns is anyone's, and parse analysis locks every
-- table a query names, before any privilege check.  A verifier role (the
-- least a role can be granted) held ROW EXCLUSIVE on apikeys.vault_secret
-- (a DELETE ... RETURNING) and ROW SHARE on apikeys.credential (FOR
-- UPDATE) until its transaction ended: enough to stall a vault master key
-- rotation and every tenant's vault writes queued behind it.  Now no lock
-- outlives the call, and the answer is the same.
CREATE ROLE regress_il_nobody;
SELECT apikeys.grant_verifier('regress_il_nobody');
SET ROLE regress_il_nobody;
BEGIN;
SELECT * FROM apikeys.import_query_columns('DELETE FROM apikeys.vault_secret RETURNING id');
SELECT * FROM apikeys.import_query_columns('SELECT key_id FROM apikeys.credential FOR UPDATE');
SELECT pg_temp.err($$SELECT * FROM apikeys.import_query_columns('SELECT nope FROM apikeys.audit')$$) AS bad_column;
SELECT l.relation::regclass AS locked, l.mode FROM pg_locks l
 WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation'
   AND l.relation IN ('apikeys.vault_secret'::regclass, 'apikeys.credential'::regclass, 'apikeys.audit'::regclass)
 ORDER BY 1, 2;
-- and the role still reads none of them
SELECT pg_temp.err('SELECT count(*) FROM apikeys.vault_secret') AS read_vault;
ROLLBACK;
RESET ROLE;
DROP OWNED BY regress_il_nobody;
DROP ROLE regress_il_nobody;

-- Scopes are checked against the registry per batch, 64 at a time (the
-- most one key may hold): a batch whose keys hold 70 different scopes
-- between them imports (the first version checked them as one list and
-- refused: "a key may carry at most 64 scopes")
SELECT apikeys.apikey_import_rows('acme', 'tk', ARRAY(
    SELECT ROW(encode(sha256(convert_to('tk_f' || lpad(to_hex(i), 63, '0'), 'UTF8')), 'hex'), 'scoped ' || i,
               ARRAY['project:' || i, 'read'], NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::apikeys.legacy_key
      FROM generate_series(1, 70) i)) AS imported_with_70_scopes;
SELECT (apikeys.apikey_verify('tk_f' || lpad(to_hex(70), 63, '0'), '{project:70}')).code AS seventieth;

SELECT ok, problem FROM apikeys.audit_check();

DROP TABLE public.tk_keys, public.kpg_keys, public.kh_keys;
SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_il_acme, regress_il_globex, regress_il_global;
DROP ROLE regress_il_acme, regress_il_globex, regress_il_global;
