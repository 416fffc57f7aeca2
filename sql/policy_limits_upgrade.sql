--
-- policy_limits_upgrade: the library serves the 1.0 SQL (no named limits,
-- apikey_verify with three arguments, key_usage reading counts by position)
-- and, after ALTER EXTENSION UPDATE, the 1.1 SQL, with the limits state of
-- keys in use carried over.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys VERSION '1.0';
RESET client_min_messages;

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT key_id AS k, api_key AS key FROM apikeys.apikey_create('acme', 'old') \gset
SELECT apikeys.apikey_set_policy(:'k', rate_limit => 3, rate_window => '1 hour', usage_limit => 100);
-- 1.0: one row's (f(k)).* is one call here too (the library's memo)
SELECT (apikeys.apikey_verify(:'key')).*  \gset v_
SELECT :'v_valid' AS valid, :'v_rate_remaining' AS rate_remaining, :'v_usage_remaining' AS usage_remaining;
SELECT g, v.code, v.rate_remaining
  FROM generate_series(1, 3) g, LATERAL apikeys.apikey_verify(:'key', NULL, CASE WHEN g > 0 THEN NULL::inet END) v
 ORDER BY g;
SELECT valid, rate_limited, used, usage_remaining FROM apikeys.key_usage WHERE key_id = :'k';
SELECT count(*) AS v_1_1_functions FROM pg_proc
 WHERE proname IN ('apikey_set_limits', 'last_verify_limits') AND pronamespace = 'apikeys'::regnamespace;

ALTER EXTENSION apikeys UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'apikeys';
-- the window holds across the update: 3 used of 3
SELECT valid, code, rate_remaining FROM apikeys.apikey_verify(:'key');
SELECT valid, code, rate_remaining FROM apikeys.apikey_verify(:'key', NULL, NULL, 0);
SELECT valid, rate_limited, used, usage_remaining FROM apikeys.key_usage WHERE key_id = :'k';
-- and 1.1's functions work on the upgraded schema
SELECT limits FROM apikeys.credential WHERE key_id = :'k';
SELECT apikeys.apikey_set_policy(:'k', usage_limit => 100);
SELECT apikeys.apikey_set_limits(:'k', ARRAY[('two', 2, '1 hour')]::apikeys.named_limit[]);
SELECT apikeys.tenant_set_limits('acme', ARRAY[('all', 1, '1 hour')]::apikeys.named_limit[]);
SELECT valid, code, rate_limit, rate_remaining FROM apikeys.apikey_verify(:'key');
SELECT valid, code, rate_limit, rate_remaining FROM apikeys.apikey_verify(:'key');
SELECT scope, name, max_uses, remaining, passed, tightest FROM apikeys.last_verify_limits();
