--
-- security_cache_triggers: a superuser who changes key rows while the
-- _changed triggers do not fire (ALTER TABLE ... DISABLE TRIGGER USER or
-- ALL, a trigger enabled only on origin under session_replication_role =
-- replica, a dropped trigger, COPY and TRUNCATE with them disabled, an
-- ALTER COLUMN ... TYPE ... USING that rewrites the rows) still
-- retires the shared policy cache at commit: a NEW session sees the
-- revoke, the deleted secret and the inactive tenant, never the cached
-- "valid" (src/trigger_guard.c).
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT tenant FROM apikeys.tenant_create('initech');

-- Keys to attack, each verified twice so its policy is cached.
CREATE TABLE public.k (n text PRIMARY KEY, key_id uuid, api_key text);
INSERT INTO public.k
SELECT n, c.key_id, c.api_key
  FROM unnest(ARRAY['user_upd', 'user_del', 'all_upd', 'all_del', 'copy', 'trunc',
                    'origin', 'dropped', 'merge']) n,
       LATERAL apikeys.apikey_create('acme', n) c;
INSERT INTO public.k
SELECT 'globex', c.key_id, c.api_key FROM apikeys.apikey_create('globex', 'g') c;
INSERT INTO public.k
SELECT 'initech', c.key_id, c.api_key FROM apikeys.apikey_create('initech', 'i') c;
GRANT SELECT ON public.k TO PUBLIC;

-- cache_all(): verify every key twice; the cache hits of the second round
-- (every key whose secret exists: its policy was cached by the first)
CREATE FUNCTION public.cache_all() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    h0 bigint;
BEGIN
    PERFORM apikeys.apikey_verify(api_key) FROM public.k;
    SELECT cache_hits INTO h0 FROM apikeys.runtime;
    PERFORM apikeys.apikey_verify(api_key) FROM public.k;
    RETURN (SELECT cache_hits FROM apikeys.runtime) - h0;
END $$;
-- the cache triggers back to ALWAYS (ENABLE TRIGGER USER/ALL makes them origin-only)
CREATE FUNCTION public.restore_always() RETURNS void LANGUAGE plpgsql
    SET client_min_messages = error AS $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenant', 'credential', 'secret'] LOOP
        EXECUTE format('ALTER TABLE apikeys.%I ENABLE TRIGGER ALL', t);
        EXECUTE format('ALTER TABLE apikeys.%I ENABLE ALWAYS TRIGGER %I', t, 'policy_cache_' || t);
        EXECUTE format('ALTER TABLE apikeys.%I ENABLE ALWAYS TRIGGER %I', t, 'policy_cache_' || t || '_row');
    END LOOP;
END $$;
CREATE FUNCTION public.codes() RETURNS TABLE (n text, code text) LANGUAGE sql AS $$
    SELECT k.n, (apikeys.apikey_verify(k.api_key)).code FROM public.k ORDER BY k.n
$$;

SELECT public.cache_all() AS cached;
SELECT * FROM public.codes();
-- COPY goes through a file in the data directory
SELECT setting || '/apikeys_security_cache.data' AS copy_file
  FROM pg_settings WHERE name = 'data_directory' \gset

-- 1. DISABLE TRIGGER USER, revoke by UPDATE, delete a secret, re-enable, commit.
BEGIN;
ALTER TABLE apikeys.credential DISABLE TRIGGER USER;
ALTER TABLE apikeys.secret DISABLE TRIGGER USER;
UPDATE apikeys.credential SET status = 'revoked', revoked_at = now()
 WHERE key_id = (SELECT key_id FROM public.k WHERE n = 'user_upd');
DELETE FROM apikeys.secret WHERE key_id = (SELECT key_id FROM public.k WHERE n = 'user_del');
SELECT public.restore_always();
COMMIT;
\c
SELECT * FROM public.codes() WHERE n IN ('user_upd', 'user_del');

-- 2. DISABLE TRIGGER ALL (foreign keys too), one statement per transaction.
SELECT public.cache_all() AS cached;
ALTER TABLE apikeys.credential DISABLE TRIGGER ALL;
ALTER TABLE apikeys.secret DISABLE TRIGGER ALL;
ALTER TABLE apikeys.tenant DISABLE TRIGGER ALL;
\c
SELECT public.cache_all() AS cached;
UPDATE apikeys.credential SET status = 'revoked', revoked_at = now()
 WHERE key_id = (SELECT key_id FROM public.k WHERE n = 'all_upd');
\c
SELECT * FROM public.codes() WHERE n = 'all_upd';
SELECT public.cache_all() AS cached;
DELETE FROM apikeys.secret WHERE key_id = (SELECT key_id FROM public.k WHERE n = 'all_del');
\c
SELECT * FROM public.codes() WHERE n = 'all_del';
SELECT public.cache_all() AS cached;
UPDATE apikeys.tenant SET active = false WHERE tenant = 'globex';
\c
SELECT * FROM public.codes() WHERE n = 'globex';

-- 3. COPY into apikeys.secret with the triggers disabled: the transaction
-- retires the cache (the next verify of a cached key is a miss), and the
-- copied secret verifies.
SELECT key_id AS copy_key, api_key AS copy_api_key
  FROM apikeys.apikey_create('acme', 'copied') \gset
CREATE TEMP TABLE copied AS SELECT * FROM apikeys.secret WHERE key_id = :'copy_key';
DELETE FROM apikeys.secret WHERE key_id = :'copy_key';
COPY copied TO :'copy_file';
\c
SELECT public.cache_all() AS cached;
SELECT cache_generation AS g0 FROM apikeys.runtime \gset
COPY apikeys.secret FROM :'copy_file';
SELECT cache_generation > :g0 AS cache_retired FROM apikeys.runtime;
SELECT cache_misses AS m0 FROM apikeys.runtime \gset
SELECT (apikeys.apikey_verify(api_key)).code FROM public.k WHERE n = 'copy';
SELECT cache_misses > :m0 AS missed FROM apikeys.runtime;
SELECT code FROM apikeys.apikey_verify(:'copy_api_key');

-- 4. TRUNCATE with the triggers disabled (only then is it reachable: a
-- BEFORE TRUNCATE trigger refuses it otherwise) forgets every secret; the
-- secrets copied back, one with a past valid_until, answer as the rows say.
SELECT public.cache_all() AS cached;
CREATE TEMP TABLE saved AS SELECT * FROM apikeys.secret;
UPDATE saved SET valid_until = now() - interval '1 minute'
 WHERE key_id = (SELECT key_id FROM public.k WHERE n = 'trunc');
COPY saved TO :'copy_file';
TRUNCATE apikeys.secret;
\c
SELECT * FROM public.codes() WHERE n IN ('trunc', 'copy');
COPY apikeys.secret FROM :'copy_file';
\c
SELECT * FROM public.codes() WHERE n IN ('trunc', 'copy');

SELECT public.restore_always();

-- 5. ENABLE TRIGGER USER leaves the cache triggers on origin: they do not
-- fire under session_replication_role = replica.
ALTER TABLE apikeys.credential ENABLE TRIGGER USER;
\c
SELECT public.cache_all() AS cached;
SET session_replication_role = replica;
UPDATE apikeys.credential SET status = 'revoked', revoked_at = now()
 WHERE key_id = (SELECT key_id FROM public.k WHERE n = 'origin');
RESET session_replication_role;
\c
SELECT * FROM public.codes() WHERE n = 'origin';
SELECT public.restore_always();

-- 6. A dropped row trigger: the statement trigger alone notes no key, the
-- write retires everything.
SELECT public.cache_all() AS cached;
DROP TRIGGER policy_cache_credential_row ON apikeys.credential;
\c
SELECT public.cache_all() AS cached;
UPDATE apikeys.credential SET status = 'disabled'
 WHERE key_id = (SELECT key_id FROM public.k WHERE n = 'dropped');
\c
SELECT * FROM public.codes() WHERE n = 'dropped';
CREATE TRIGGER policy_cache_credential_row AFTER INSERT OR UPDATE OR DELETE ON apikeys.credential
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._changed();
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER policy_cache_credential_row;

-- 7. MERGE from a function (SPI) with the triggers disabled.
ALTER TABLE apikeys.tenant DISABLE TRIGGER USER;
\c
SELECT public.cache_all() AS cached;
DO $$
BEGIN
    MERGE INTO apikeys.tenant t USING (VALUES ('initech')) v(tenant) ON t.tenant = v.tenant
      WHEN MATCHED THEN UPDATE SET active = false;
END $$;
SELECT public.restore_always();
\c
SELECT * FROM public.codes() WHERE n = 'initech';

-- 8. ALTER TABLE ... ALTER COLUMN ... TYPE ... USING rewrites the rows with
-- no trigger and no executor: a revoke that way, then a new session.
CREATE TABLE public.k8 AS SELECT c.key_id, c.api_key FROM apikeys.apikey_create('acme', 'rewrite') c;
GRANT SELECT ON public.k8 TO PUBLIC;
SELECT key_id AS k8 FROM public.k8 \gset
SELECT (apikeys.apikey_verify(api_key)).code FROM public.k8;
SELECT cache_hits AS h0 FROM apikeys.runtime \gset
SELECT (apikeys.apikey_verify(api_key)).code, (SELECT cache_hits - :h0 FROM apikeys.runtime) AS cached
  FROM public.k8;
ALTER TABLE apikeys.credential
    ALTER COLUMN status TYPE text USING (CASE WHEN key_id = :'k8' THEN 'revoked' ELSE status END),
    ALTER COLUMN revoked_at TYPE timestamptz USING (CASE WHEN key_id = :'k8' THEN now() ELSE revoked_at END);
\c
-- wanted: key_revoked, as the row says
SELECT (apikeys.apikey_verify(k.api_key)).code, c.status
  FROM public.k8 k JOIN apikeys.credential c USING (key_id);
-- the same through a parent the credential table was attached to: its
-- ALTER TABLE recurses into apikeys.credential
SELECT c.key_id AS k9, c.api_key AS key9 FROM apikeys.apikey_create('acme', 'inherited') c \gset
CREATE TABLE public.p8 (key_id uuid, status text);
ALTER TABLE apikeys.credential INHERIT public.p8;
SELECT (apikeys.apikey_verify(:'key9')).code;
SELECT (apikeys.apikey_verify(:'key9')).code;
ALTER TABLE public.p8 ALTER COLUMN status TYPE text USING (CASE WHEN key_id = :'k9' THEN 'disabled' ELSE status END);
\c
-- wanted: disabled, as the row says
SELECT (apikeys.apikey_verify(:'key9')).code, (SELECT status FROM apikeys.credential WHERE key_id = :'k9');
ALTER TABLE apikeys.credential NO INHERIT public.p8;
DROP TABLE public.p8;
DROP TABLE public.k8;

-- With the triggers back, a revoke retires only its own key (no regression
-- to "everything" for ordinary changes).
SELECT public.cache_all() AS cached;
SELECT cache_generation AS g0 FROM apikeys.runtime \gset
SELECT apikeys.apikey_revoke((SELECT key_id FROM public.k WHERE n = 'merge'));
SELECT cache_hits AS h0 FROM apikeys.runtime \gset
SELECT * FROM public.codes();
SELECT cache_hits - :h0 AS hits, cache_generation - :g0 AS generations FROM apikeys.runtime;

-- 9. What no statement names: a TRUNCATE of a parent apikeys.secret was
-- made to inherit from (it recurses into the secrets, with their TRUNCATE
-- triggers disabled).  A new session's verify answered valid from the
-- cached policy.  Then a table renamed away with an empty one put in its
-- place: verify probed the new table with the old one's index (an error
-- reading a block that does not exist); now extension_damaged says why.
SELECT c.api_key AS key10 FROM apikeys.apikey_create('acme', 'truncated') c \gset
CREATE TABLE public.p9 (digest bytea);
ALTER TABLE apikeys.secret INHERIT public.p9;
ALTER TABLE apikeys.secret DISABLE TRIGGER USER;
\c
SELECT (apikeys.apikey_verify(:'key10')).code;
SELECT cache_hits AS h0 FROM apikeys.runtime \gset
SELECT (apikeys.apikey_verify(:'key10')).code, (SELECT cache_hits - :h0 FROM apikeys.runtime) AS cached;
TRUNCATE public.p9;
\c
-- wanted: not valid (no secret is left)
SELECT (apikeys.apikey_verify(:'key10')).code, (SELECT count(*) FROM apikeys.secret) AS secrets;
ALTER TABLE apikeys.secret NO INHERIT public.p9;
DROP TABLE public.p9;
SELECT public.restore_always();
SELECT c.api_key AS key11 FROM apikeys.apikey_create('acme', 'renamed') c \gset
\c
SELECT (apikeys.apikey_verify(:'key11')).code;
SELECT cache_hits AS h0 FROM apikeys.runtime \gset
SELECT (apikeys.apikey_verify(:'key11')).code, (SELECT cache_hits - :h0 FROM apikeys.runtime) AS cached;
ALTER TABLE apikeys.credential RENAME TO credential_away;
CREATE TABLE apikeys.credential (LIKE apikeys.credential_away INCLUDING ALL);
\c
-- wanted: extension_damaged (apikeys.credential has no rows, nor its index)
SELECT count(*) AS credentials FROM apikeys.credential;
SELECT code = 'valid' AS verified_valid FROM apikeys.apikey_verify(:'key11');
DROP TABLE apikeys.credential;
ALTER TABLE apikeys.credential_away RENAME TO credential;
\c
SELECT (apikeys.apikey_verify(:'key11')).code;

-- 10. A superuser points apikeys.secret at an empty file by writing
-- pg_class itself (no DDL, no utility statement): a new session's verify
-- answered valid from the cached policy.
SELECT c.api_key AS key12 FROM apikeys.apikey_create('acme', 'refiled') c \gset
CREATE TABLE public.empty_secret (LIKE apikeys.secret);
SELECT relfilenode AS secret_file FROM pg_class WHERE oid = 'apikeys.secret'::regclass \gset
\c
SELECT (apikeys.apikey_verify(:'key12')).code;
SELECT cache_hits AS h0 FROM apikeys.runtime \gset
SELECT (apikeys.apikey_verify(:'key12')).code, (SELECT cache_hits - :h0 FROM apikeys.runtime) AS cached;
UPDATE pg_class SET relfilenode = (SELECT relfilenode FROM pg_class WHERE oid = 'public.empty_secret'::regclass)
 WHERE oid = 'apikeys.secret'::regclass;
\c
-- wanted: not valid (apikeys.secret reads an empty file, which its index
-- does not describe: an error)
SELECT count(*) AS secrets FROM apikeys.secret;
CREATE FUNCTION pg_temp.code_or_error(k text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN (apikeys.apikey_verify(k)).code;
EXCEPTION WHEN others THEN
    RETURN 'error ' || SQLSTATE;
END $$;
SELECT pg_temp.code_or_error(:'key12');
UPDATE pg_class SET relfilenode = :secret_file WHERE oid = 'apikeys.secret'::regclass;
\c
SELECT (apikeys.apikey_verify(:'key12')).code;
DROP TABLE public.empty_secret;

-- 11. ATTACH PARTITION of a key table: rows inserted through the
-- partitioned parent reached apikeys.secret without its statement
-- triggers (no secret_issued audit row).  Refused.
CREATE TABLE public.p11 (LIKE apikeys.secret) PARTITION BY LIST (key_id);
ALTER TABLE public.p11 ATTACH PARTITION apikeys.secret DEFAULT;
\set VERBOSITY sqlstate
ALTER TABLE public.p11 ATTACH PARTITION apikeys.secret DEFAULT;
\set VERBOSITY default
DROP TABLE public.p11;

DROP FUNCTION public.restore_always();
DROP FUNCTION public.codes();
DROP FUNCTION public.cache_all();
DROP TABLE public.k;
