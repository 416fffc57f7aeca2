--
-- policy_limits: IP allowlists, rate limits, usage caps, usage tracking and
-- the observability views (the library is preloaded: test/regress.conf).
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE FUNCTION pg_temp.err(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM, '[0-9a-f]{8}-[0-9a-f-]{27}', '<uuid>');
END $$;

-- Wait (up to 60 s: valgrind is slow) until a key has nothing unwritten.
CREATE FUNCTION pg_temp.wait_flushed(k uuid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..1200 LOOP
        IF NOT EXISTS (SELECT 1 FROM apikeys.key_usage u WHERE u.key_id = k AND u.has_unflushed) THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN false;
END $$;

SELECT preloaded FROM apikeys.runtime;
SELECT tenant FROM apikeys.tenant_create('acme');
SELECT key_id AS k, api_key AS key FROM apikeys.apikey_create('acme', 'limited') \gset

-- set_policy errors
SELECT pg_temp.err($$SELECT apikeys.apikey_set_policy(NULL)$$);
SELECT pg_temp.err($$SELECT apikeys.apikey_set_policy('00000000-0000-0000-0000-000000000000')$$);
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, allowed_ips => %L)', :'k', '{}'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, allowed_ips => %L)', :'k', '{10.0.0.0/8,NULL}'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, allowed_ips => array_fill(%L::cidr, ARRAY[17]))', :'k', '10.0.0.0/8'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, rate_limit => 0)', :'k'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, rate_limit => -5)', :'k'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, rate_limit => 5, rate_window => %L)', :'k', '0.5 seconds'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, rate_limit => 5, rate_window => %L)', :'k', '2 days'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, rate_limit => 5, rate_window => NULL)', :'k'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, usage_limit => 0)', :'k'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, usage_period => %L)', :'k', '1 day'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, usage_limit => 5, usage_period => %L)', :'k', '1 month'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, rate_limit => 5, rate_window => %L)', :'k', '1.9 seconds'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, usage_limit => 5, usage_period => %L)', :'k', '1 hour 0.5 seconds'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, cidr => NULL)', :'k'));
-- a fractional window a 1.0 key may hold (written here by hand) is enforced
-- as the next whole second, never the one below: 1.5 s is 2 s
CREATE TABLE pg_temp.frac AS SELECT key_id, api_key FROM apikeys.apikey_create('acme', 'fractional window');
UPDATE apikeys.credential SET rate_limit = 1, rate_window = '1.5 seconds' WHERE key_id = (SELECT key_id FROM pg_temp.frac);
SELECT v.code, extract(epoch FROM v.rate_reset - clock_timestamp()) BETWEEN 1.5 AND 2.5 AS resets_in_2s
  FROM pg_temp.frac f, LATERAL apikeys.apikey_verify(f.api_key) v;
SELECT (apikeys.apikey_verify(api_key)).code AS second_call FROM pg_temp.frac;
SELECT apikeys.apikey_delete(key_id) FROM pg_temp.frac;

-- IP allowlist: IPv4 and IPv6 networks; the argument names the client
SELECT apikeys.apikey_set_policy(:'k', allowed_ips => '{10.0.0.0/8,192.168.1.7/32,2001:db8::/32}');
SELECT a AS client, v.code
  FROM (VALUES (1, '10.1.2.3'::inet), (2, '10.255.255.255'), (3, '11.0.0.1'),
               (4, '192.168.1.7'), (5, '192.168.1.8'), (6, '2001:db8::1'),
               (7, '2001:db9::1'), (8, '::ffff:10.1.2.3'), (9, '::1')) x(o, a),
       LATERAL apikeys.apikey_verify(:'key', NULL, a) v ORDER BY o;
-- no client_addr and a Unix-socket connection: the address is unknown
SELECT code FROM apikeys.apikey_verify(:'key');
-- x-forwarded-for counts only from a trusted proxy ("local": Unix sockets)
SELECT set_config('request.headers', '{"x-forwarded-for":"10.9.9.9, 172.16.0.1"}', false) IS NOT NULL;
SELECT code FROM apikeys.apikey_verify(:'key');
SET apikeys.trusted_proxies = 'local';
SELECT code FROM apikeys.apikey_verify(:'key');
-- the last address is the one the trusted proxy appended
SELECT set_config('request.headers', '{"x-forwarded-for":"172.16.0.1, 10.9.9.9"}', false) IS NOT NULL;
SELECT code FROM apikeys.apikey_verify(:'key');
SELECT set_config('request.headers', '{"x-forwarded-for":"8.8.8.8"}', false) IS NOT NULL;
SELECT code FROM apikeys.apikey_verify(:'key');
SELECT set_config('request.headers', '{"x-forwarded-for":"garbage"}', false) IS NOT NULL;
SELECT code FROM apikeys.apikey_verify(:'key');
RESET apikeys.trusted_proxies;
RESET request.headers;
-- trusted_proxies is for superusers only
CREATE ROLE regress_limits_user;
SET ROLE regress_limits_user;
SET apikeys.trusted_proxies = 'local';
RESET ROLE;
DROP ROLE regress_limits_user;

-- Rate limit: exactly rate_limit successes per window, figures for headers;
-- rate_reset is when the first use leaves the sliding window: the end of
-- the eighth of a window (aligned to 2000-01-01) it fell in, plus a window
SELECT apikeys.apikey_set_policy(:'k', rate_limit => 3, rate_window => '1 hour');
SELECT g AS call, v.valid, v.code, v.rate_limit, v.rate_remaining,
       v.rate_reset = '2000-01-01 00:00:00+00'::timestamptz
                      + (floor(extract(epoch FROM now() - '2000-01-01 00:00:00+00') / 450) + 9) * interval '450 seconds'
       AS resets_when_first_use_leaves,
       v.usage_remaining
  FROM generate_series(1, 5) g, LATERAL apikeys.apikey_verify(CASE WHEN g > 0 THEN :'key' END, NULL, NULL) v;

-- Usage cap: charged only when every other check passed
SELECT apikeys.apikey_set_policy(:'k', usage_limit => 4);
SELECT apikeys.apikey_update(:'k', scopes => '{read}');
SELECT code, usage_remaining FROM apikeys.apikey_verify(:'key', '{write}');  -- refused: not charged
SELECT g AS call, v.code, v.usage_remaining, v.rate_limit
  FROM generate_series(1, 6) g, LATERAL apikeys.apikey_verify(CASE WHEN g > 0 THEN :'key' END, '{read}', NULL) v;

-- key_usage merges flushed and pending figures
SELECT name, usage_limit, used, usage_remaining, valid, insufficient_scope, usage_exceeded,
       last_used_at IS NOT NULL AS used_recently
  FROM apikeys.key_usage;
-- the flush worker writes them to apikeys.usage (a capped key's every turn:
-- flush_interval is 100ms here)
SELECT pg_temp.wait_flushed(:'k');
SELECT used, count_valid, count_insufficient_scope, count_usage_exceeded, count_rate_limited,
       count_ip_not_allowed
  FROM apikeys.usage WHERE key_id = :'k';
SELECT used, valid, has_unflushed FROM apikeys.key_usage;

-- Removing the limits: NULL everywhere
SELECT apikeys.apikey_set_policy(:'k');
SELECT code, rate_limit, rate_remaining, rate_reset, usage_remaining FROM apikeys.apikey_verify(:'key', NULL, '1.2.3.4');
SELECT allowed_ips, rate_limit, rate_window, usage_limit, usage_period FROM apikeys.keys;

-- A periodic cap starts again each period (periods aligned to 2000-01-01 UTC)
SELECT key_id AS k2, api_key AS key2 FROM apikeys.apikey_create('acme', 'periodic') \gset
SELECT apikeys.apikey_set_policy(:'k2', usage_limit => 2, usage_period => '1 day');
SELECT code FROM generate_series(1, 3) g, LATERAL apikeys.apikey_verify(CASE WHEN g > 0 THEN :'key2' END, NULL, NULL) v;
SELECT pg_temp.wait_flushed(:'k2');
SELECT used, period_start = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS current_day
  FROM apikeys.usage WHERE key_id = :'k2';

-- Policies are revoked with the key and refused for revoked keys
SELECT apikeys.apikey_revoke(:'k2');
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, rate_limit => 1)', :'k2'));

-- The cache never serves a revoked key: revoke, then verify at once
SELECT key_id AS k3, api_key AS key3 FROM apikeys.apikey_create('acme', 'cached') \gset
SELECT code FROM apikeys.apikey_verify(:'key3');
SELECT code FROM apikeys.apikey_verify(:'key3');   -- from the cache
SELECT apikeys.apikey_revoke(:'k3');
SELECT code FROM apikeys.apikey_verify(:'key3');
-- inside the revoking transaction, before and after the revoke
SELECT key_id AS k4, api_key AS key4 FROM apikeys.apikey_create('acme', 'in transaction') \gset
SELECT code FROM apikeys.apikey_verify(:'key4');
BEGIN;
SELECT apikeys.apikey_disable(:'k4');
SELECT code FROM apikeys.apikey_verify(:'key4');
ROLLBACK;
SELECT code FROM apikeys.apikey_verify(:'key4');
-- a superuser's direct UPDATE, even with triggers off, retires the cache too
SET session_replication_role = replica;
UPDATE apikeys.credential SET status = 'disabled' WHERE key_id = :'k4';
RESET session_replication_role;
SELECT code FROM apikeys.apikey_verify(:'key4');
-- a change retires the cached policies of the keys it touched, not the others:
-- creating a key retires nothing, revoking one leaves its neighbour cached
SELECT key_id AS kc1, api_key AS keyc1 FROM apikeys.apikey_create('acme', 'cached 1') \gset
SELECT key_id AS kc2, api_key AS keyc2 FROM apikeys.apikey_create('acme', 'cached 2') \gset
SELECT code FROM apikeys.apikey_verify(:'keyc1') UNION ALL SELECT code FROM apikeys.apikey_verify(:'keyc2');
SELECT cache_hits AS hits0, cache_misses AS misses0, cache_generation AS gen0 FROM apikeys.runtime \gset
SELECT key_id IS NOT NULL AS created FROM apikeys.apikey_create('acme', 'newcomer');
SELECT apikeys.apikey_revoke(:'kc1');
SELECT code FROM apikeys.apikey_verify(:'keyc1');
SELECT code FROM apikeys.apikey_verify(:'keyc2');
SELECT code FROM apikeys.apikey_verify(:'keyc2');
SELECT cache_hits - :hits0 AS hits, cache_misses - :misses0 AS misses,
       cache_generation - :gen0 AS generations FROM apikeys.runtime;
-- a tenant change retires every policy (each holds its tenant's active flag)
SELECT apikeys.tenant_update('acme', active => false) IS NOT NULL AS updated;
SELECT code FROM apikeys.apikey_verify(:'keyc2');
SELECT apikeys.tenant_update('acme', active => true) IS NOT NULL AS updated;
SELECT code FROM apikeys.apikey_verify(:'keyc2');
-- PREPARE TRANSACTION of a key change is refused (its commit would be unseen)
BEGIN;
SELECT apikeys.apikey_enable(:'k4');
PREPARE TRANSACTION 'apikeys_p1';

-- verifications and runtime views
SELECT outcome FROM apikeys.verifications ORDER BY outcome;
SELECT total > 0 AS counted FROM apikeys.verifications WHERE outcome IN ('valid', 'ip_not_allowed', 'rate_limited', 'usage_exceeded') ORDER BY outcome;
SELECT preloaded, shmem_bytes > 0 AS has_shmem, cache_capacity >= 10000 AS cache_cap,
       tracked_capacity >= 50000 AS tracked_cap, flush_errors, flush_workers >= 0 AS workers
  FROM apikeys.runtime;

-- A reader sees each count once, whether its snapshot is taken before, during
-- or after the flush that writes it: here a REPEATABLE READ snapshot older
-- than the flush still counts the uses the flush moved to apikeys.usage.
SELECT key_id AS kr, api_key AS keyr FROM apikeys.apikey_create('acme', 'read while flushing') \gset
SELECT apikeys.apikey_set_policy(:'kr', usage_limit => 100);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT valid, used FROM apikeys.key_usage WHERE key_id = :'kr';
SELECT code, count(*) FROM generate_series(1, 3) g, LATERAL apikeys.apikey_verify(CASE WHEN g > 0 THEN :'keyr' END) v GROUP BY code;
SELECT pg_sleep(0.5);   -- the worker writes a capped key every turn (100ms here)
SELECT valid, used FROM apikeys.key_usage WHERE key_id = :'kr';
COMMIT;
SELECT pg_temp.wait_flushed(:'kr');
SELECT valid, used FROM apikeys.key_usage WHERE key_id = :'kr';
SELECT count_valid, used FROM apikeys.usage WHERE key_id = :'kr';
