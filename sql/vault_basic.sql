--
-- vault_basic: the third-party secret vault's round trip, listing,
-- replacement of the active secret, update, delete and audit.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
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

-- pgcrypto came along (requires = 'pgcrypto')
SELECT e.extname, d.deptype
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
 WHERE d.classid = 'pg_extension'::regclass
   AND d.objid = (SELECT oid FROM pg_extension WHERE extname = 'apikeys')
   AND d.refclassid = 'pg_extension'::regclass;

-- The master key: a superuser-only setting (postgresql.conf in production).
SET apikeys.vault_master_key = 'regress-master-key-0123456789abcdef';

SELECT service, display_name, format, alias_of, builtin FROM apikeys.vault_service ORDER BY service;

SELECT apikeys.tenant_create('acme') IS NOT NULL AS acme, apikeys.tenant_create('globex') IS NOT NULL AS globex;

------------------------------------------------------------------------------
-- Round trip
------------------------------------------------------------------------------
SELECT apikeys.vault_add('acme', 'openai', 'production', 'sk-proj-AAAAaaaa1111bbbb2222cccc3333') AS openai1 \gset
SELECT pg_typeof(:'openai1'::uuid);
SELECT apikeys.vault_reveal(:'openai1') = 'sk-proj-AAAAaaaa1111bbbb2222cccc3333' AS round_trip;
-- unicode and every printable character survive (generic service)
SELECT apikeys.vault_add('globex', 'generic', 'webhook signing', 'tok!"#$%&''()*+,-./:;<=>?@[\]^_`{|}~end') AS generic1 \gset
SELECT apikeys.vault_reveal(:'generic1') = 'tok!"#$%&''()*+,-./:;<=>?@[\]^_`{|}~end' AS round_trip_printable;
-- the longest secret (4096 bytes)
SELECT apikeys.vault_add('globex', 'generic', 'long one', repeat('x', 4096)) AS long1 \gset
SELECT apikeys.vault_reveal(:'long1') = repeat('x', 4096) AS round_trip_long;

-- Stored: ciphertext (never the plaintext) and the master key's fingerprint.
SELECT position(convert_to('sk-proj-AAAAaaaa1111bbbb2222cccc3333', 'UTF8') IN ciphertext) = 0 AS no_plaintext,
       octet_length(ciphertext) > 36 AS has_ciphertext,
       key_fp = apikeys_internal._vault_fingerprint(current_setting('apikeys.vault_master_key')) AS fp_current,
       key_fp ~ '^[0-9a-f]{16}$' AS fp_shape
  FROM apikeys.vault_secret WHERE id = :'openai1';
-- Two secrets with the same plaintext get different ciphertexts (salted).
SELECT apikeys.vault_add('globex', 'openai', 'same plaintext', 'sk-proj-AAAAaaaa1111bbbb2222cccc3333') AS same1 \gset
SELECT a.ciphertext <> b.ciphertext AS distinct_ciphertexts
  FROM apikeys.vault_secret a, apikeys.vault_secret b WHERE a.id = :'openai1' AND b.id = :'same1';

------------------------------------------------------------------------------
-- list and get: metadata only
------------------------------------------------------------------------------
SELECT attname FROM pg_attribute
 WHERE attrelid = 'apikeys.vault_secrets'::regclass AND attnum > 0 ORDER BY attnum;
SELECT pg_get_function_result('apikeys.vault_list(text)'::regprocedure),
       pg_get_function_result('apikeys.vault_get(uuid)'::regprocedure);
SELECT tenant, owner_user, service, name, active, last_used_at IS NOT NULL AS used,
       created_at <= updated_at AS times_ok
  FROM apikeys.vault_list('acme');
SELECT tenant, service, name, active FROM apikeys.vault_list();
SELECT tenant, service, name, active, last_used_at IS NOT NULL AS used FROM apikeys.vault_get(:'openai1');
SELECT pg_temp.err(format('SELECT apikeys.vault_get(%L)', '00000000-0000-0000-0000-000000000000'));
SELECT pg_temp.err('SELECT apikeys.vault_get(NULL)');
SELECT pg_temp.err('SELECT apikeys.vault_reveal(NULL)');
SELECT count(*) FROM apikeys.vault_list('nosuchtenant');

------------------------------------------------------------------------------
-- One active secret per owner and service: adding replaces it
------------------------------------------------------------------------------
SELECT apikeys.vault_add('acme', 'openai', 'production v2', 'sk-proj-BBBBbbbb2222cccc3333dddd4444') AS openai2 \gset
SELECT name, active FROM apikeys.vault_list('acme') ORDER BY created_at;
SELECT apikeys.vault_reveal(:'openai2') = 'sk-proj-BBBBbbbb2222cccc3333dddd4444' AS new_active,
       apikeys.vault_reveal(:'openai1') = 'sk-proj-AAAAaaaa1111bbbb2222cccc3333' AS old_still_readable;
-- other services, other tenants and user-owned secrets are separate slots
SELECT apikeys.vault_add('acme', 'claude', 'assistant', 'sk-ant-api03-CCCCcccc3333dddd4444eeee') AS claude1 \gset
SELECT apikeys.vault_add('acme', 'huggingface', 'models', 'hf_DDDDdddd4444eeee5555ffff6666gggg77') AS hf1 \gset
CREATE ROLE regress_vault_owner;
SELECT apikeys.vault_add('acme', 'openai', 'my own key', 'sk-proj-EEEEeeee5555ffff6666gggg7777', owner_user => 'regress_vault_owner') AS own1 \gset
SELECT tenant, owner_user, service, name, active FROM apikeys.vault_list();
-- 'claude' is an alias: stored under anthropic, and replaces an anthropic key
SELECT apikeys.vault_add('acme', 'anthropic', 'assistant v2', 'sk-ant-api03-FFFFffff6666gggg7777hhhh') AS claude2 \gset
SELECT service, name, active FROM apikeys.vault_list('acme') WHERE service = 'anthropic' ORDER BY created_at;
-- the index enforces it even for direct writes
SELECT pg_temp.err(format($q$INSERT INTO apikeys.vault_secret (tenant, service, name, ciphertext, key_fp)
                             VALUES ('acme', 'openai', 'direct', '\x00', '0000000000000000')$q$));
SELECT indexdef FROM pg_indexes WHERE indexname = 'vault_secret_one_active';

------------------------------------------------------------------------------
-- update
------------------------------------------------------------------------------
SELECT apikeys.vault_update(:'openai2', name => 'production (current)');
SELECT name, active FROM apikeys.vault_get(:'openai2');
-- reactivating an old secret replaces the active one
SELECT apikeys.vault_update(:'openai1', active => true);
SELECT name, active FROM apikeys.vault_list('acme') WHERE service = 'openai' AND owner_user IS NULL ORDER BY created_at;
SELECT apikeys.vault_update(:'openai1', active => false);
SELECT count(*) FILTER (WHERE active) AS active FROM apikeys.vault_list('acme') WHERE service = 'openai' AND owner_user IS NULL;
-- nothing to change: a no-op
SELECT apikeys.vault_update(:'openai1');
SELECT n AS name, pg_temp.err(format('SELECT apikeys.vault_update(%L, name => %L)', :'openai2', n)) AS result
  FROM unnest(ARRAY['ab', '', repeat('n', 101), E'tab\there', E'line\nbreak']) n;
-- 100 characters is fine
SELECT length(name) FROM apikeys.vault_get(apikeys.vault_add('acme', 'gemini', repeat('n', 100), 'AIzaSyA-1234567890abcdefghijklmnopqrstu'));
SELECT pg_temp.err(format('SELECT apikeys.vault_add(%L, %L, %L, %L)', 'acme', 'openai', n, 'sk-proj-BBBBbbbb2222cccc3333dddd4444')) AS add_bad_name
  FROM unnest(ARRAY[NULL, 'xy', repeat('n', 101)]) n;

------------------------------------------------------------------------------
-- reveal records last use; delete
------------------------------------------------------------------------------
SELECT last_used_at IS NOT NULL AS used FROM apikeys.vault_get(:'openai2');
SELECT last_used_at IS NULL AS never_used FROM apikeys.vault_get(:'hf1');
SELECT apikeys.vault_delete(:'hf1');
SELECT pg_temp.err(format('SELECT apikeys.vault_reveal(%L)', :'hf1'));
SELECT pg_temp.err(format('SELECT apikeys.vault_delete(%L)', :'hf1'));
SELECT count(*) FROM apikeys.vault_list('acme') WHERE service = 'huggingface';

------------------------------------------------------------------------------
-- inactive tenants: no new secrets, no reveal; metadata and delete still work
------------------------------------------------------------------------------
SELECT active FROM apikeys.tenant_update('globex', active => false);
SELECT pg_temp.err(format('SELECT apikeys.vault_reveal(%L)', :'generic1'));
SELECT pg_temp.err($$SELECT apikeys.vault_add('globex', 'openai', 'blocked', 'sk-proj-GGGGgggg7777hhhh8888iiii9999')$$);
SELECT name FROM apikeys.vault_get(:'generic1');
SELECT active FROM apikeys.tenant_update('globex', active => true);
-- deleting a tenant deletes its vault secrets
SELECT apikeys.tenant_create('initech') IS NOT NULL;
SELECT apikeys.vault_add('initech', 'generic', 'to be deleted', 'initech-token-0123456789') IS NOT NULL;
SELECT apikeys.tenant_delete('initech');
SELECT count(*) FROM apikeys.vault_secret WHERE tenant = 'initech';

------------------------------------------------------------------------------
-- audit: every change, every reveal; never a ciphertext or a plaintext
------------------------------------------------------------------------------
SELECT tenant, action, key_id = :'openai1' AS is_openai1, detail ? 'new' AS has_new,
       detail -> 'changed' ?| ARRAY['ciphertext'] AS ciphertext_changed
  FROM apikeys.audit WHERE action LIKE 'vault%' AND tenant = 'acme' ORDER BY audit_id;
SELECT detail FROM apikeys.audit WHERE action = 'vault_secret_revealed' AND key_id = :'openai2' ORDER BY audit_id LIMIT 1;
SELECT DISTINCT jsonb_object_keys(detail -> 'new') AS keys_in_added FROM apikeys.audit
 WHERE action = 'vault_secret_added' ORDER BY 1;
SELECT count(*) AS leaks FROM apikeys.audit a, apikeys.vault_secret v
 WHERE a.detail::text LIKE '%' || encode(v.ciphertext, 'hex') || '%'
    OR a.detail::text LIKE '%' || encode(v.ciphertext, 'base64') || '%'
    OR a.detail::text LIKE '%sk-proj-%' OR a.detail::text LIKE '%sk-ant-%' OR a.detail::text LIKE '%hf\_%'
    OR a.detail::text LIKE '%regress-master-key%';
SELECT ok FROM apikeys.audit_check();

DROP ROLE regress_vault_owner;
