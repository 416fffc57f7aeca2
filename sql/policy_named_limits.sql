--
-- policy_named_limits: limits v2.  Named limits on a key and on its tenant
-- (shared by all its keys), each a sliding window (src/rate_window.h);
-- verify checks every limit that applies and charges them only when all
-- pass, reports each (apikeys.last_verify_limits()) and the tightest in the
-- rate_* columns; apikey_verify(key, scopes, addr, cost) charges cost.
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
-- n verifications of key with cost c, one per row: how many passed
CREATE FUNCTION pg_temp.run(key text, n integer, c integer DEFAULT 1) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FILTER (WHERE v.valid)
      FROM generate_series(1, n) g,
           LATERAL apikeys.apikey_verify(key, NULL, CASE WHEN g > 0 THEN NULL::inet END, c) v
$$;
CREATE VIEW pg_temp.lim AS
SELECT scope, name, max_uses, remaining, passed, tightest FROM apikeys.last_verify_limits();

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT key_id AS k1, api_key AS key1 FROM apikeys.apikey_create('acme', 'one') \gset
SELECT key_id AS k2, api_key AS key2 FROM apikeys.apikey_create('acme', 'two') \gset
SELECT key_id AS kg, api_key AS keyg FROM apikeys.apikey_create('globex', 'g') \gset

-- what may be stored
SELECT pg_temp.err(format($$SELECT apikeys.apikey_set_limits(%L, ARRAY[('Bad', 1, '1 hour')]::apikeys.named_limit[])$$, :'k1'));
SELECT pg_temp.err(format($$SELECT apikeys.apikey_set_limits(%L, ARRAY[('sixteen_chars_xx', 1, '1 hour')]::apikeys.named_limit[])$$, :'k1'));
SELECT pg_temp.err(format($$SELECT apikeys.apikey_set_limits(%L, ARRAY[(NULL, 1, '1 hour')]::apikeys.named_limit[])$$, :'k1'));
SELECT pg_temp.err(format($$SELECT apikeys.apikey_set_limits(%L, ARRAY[('a', 0, '1 hour')]::apikeys.named_limit[])$$, :'k1'));
SELECT pg_temp.err(format($$SELECT apikeys.apikey_set_limits(%L, ARRAY[('a', 1, '2 days')]::apikeys.named_limit[])$$, :'k1'));
SELECT pg_temp.err(format($$SELECT apikeys.apikey_set_limits(%L, ARRAY[('a', 1, '1.5 seconds')]::apikeys.named_limit[])$$, :'k1'));
SELECT pg_temp.err(format($$SELECT apikeys.apikey_set_limits(%L, ARRAY[('a', 1, '1 hour'), ('a', 2, '1 day')]::apikeys.named_limit[])$$, :'k1'));
SELECT pg_temp.err(format($$SELECT apikeys.apikey_set_limits(%L, ARRAY[('a', 1, '1 hour'), ('b', 1, '1 hour'), ('c', 1, '1 hour'), ('d', 1, '1 hour')]::apikeys.named_limit[])$$, :'k1'));
SELECT pg_temp.err($$SELECT apikeys.apikey_set_limits('00000000-0000-0000-0000-000000000000', '{}')$$);
SELECT pg_temp.err($$SELECT apikeys.tenant_set_limits('nosuch', '{}')$$);
SELECT pg_temp.err($$SELECT apikeys.tenant_set_limits('acme', ARRAY[('x', -1, '1 hour')]::apikeys.named_limit[])$$);
SELECT pg_temp.err(format('SELECT apikeys.apikey_verify(%L, NULL, NULL, -1)', :'key1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_verify(%L, NULL, NULL, NULL)', :'key1'));
-- a bad cost is the caller's error even with a bad key
SELECT pg_temp.err($$SELECT apikeys.apikey_verify('garbage', NULL, NULL, -1)$$);

-- A key's limits: each is checked, the tightest is reported
SELECT apikeys.apikey_set_limits(:'k1', ARRAY[('burst', 3, '10 seconds'), ('hourly', 5, '1 hour')]::apikeys.named_limit[]);
SELECT limits FROM apikeys.credential WHERE key_id = :'k1';
SELECT g, v.valid, v.code, v.rate_limit, v.rate_remaining
  FROM generate_series(1, 4) g, LATERAL apikeys.apikey_verify(:'key1', NULL, CASE WHEN g > 0 THEN NULL::inet END) v ORDER BY g;
SELECT * FROM pg_temp.lim;
-- the refused call charged nothing: hourly still has 2
SELECT valid, code, rate_limit, rate_remaining FROM apikeys.apikey_verify(:'key1', NULL, NULL, 0);
SELECT * FROM pg_temp.lim;

-- A tenant's limit is shared by all its keys, and holds whatever each key has
SELECT apikeys.tenant_set_limits('acme', ARRAY[('all', 4, '1 hour')]::apikeys.named_limit[]);
SELECT limits FROM apikeys.tenants WHERE tenant = 'acme';
SELECT pg_temp.run(:'key2', 3) AS key2_passed;
SELECT * FROM pg_temp.lim;
SELECT pg_temp.run(:'key2', 3) AS key2_passed_more;
SELECT valid, code, rate_limit, rate_remaining FROM apikeys.apikey_verify(:'key2');
SELECT * FROM pg_temp.lim;
-- another tenant's keys are not touched
SELECT apikeys.tenant_set_limits('globex', ARRAY[('all', 2, '1 hour')]::apikeys.named_limit[]);
SELECT pg_temp.run(:'keyg', 3) AS globex_passed;
-- key1 is refused by burst (3 used, 10 s) before the tenant is charged for
-- good: the tenant's charge of a refused call is taken back
SELECT apikeys.tenant_set_limits('acme', ARRAY[('all', 100, '1 hour')]::apikeys.named_limit[]);
SELECT code FROM apikeys.apikey_verify(:'key1');
SELECT * FROM pg_temp.lim;
SELECT code FROM apikeys.apikey_verify(:'key1');
SELECT * FROM pg_temp.lim;

-- Name clash: a key limit and a tenant limit of the same name are two
-- limits, both apply; the tighter decides.  So a key limit can never loosen
-- its tenant's.
SELECT key_id AS k3, api_key AS key3 FROM apikeys.apikey_create('acme', 'three') \gset
SELECT apikeys.tenant_set_limits('acme', ARRAY[('req', 2, '1 hour')]::apikeys.named_limit[]);
SELECT apikeys.apikey_set_limits(:'k3', ARRAY[('req', 1000, '1 hour')]::apikeys.named_limit[]);
SELECT pg_temp.run(:'key3', 5) AS tenant_req_wins;
SELECT * FROM pg_temp.lim;
SELECT apikeys.tenant_set_limits('acme', ARRAY[('req', 1000, '1 hour')]::apikeys.named_limit[]);
SELECT apikeys.apikey_set_limits(:'k3', ARRAY[('req', 4, '1 hour')]::apikeys.named_limit[]);
SELECT pg_temp.run(:'key3', 5) AS key_req_wins;    -- 2 used already: 2 more
SELECT * FROM pg_temp.lim;
-- ... and a tenant manager cannot lift the tenant's limits, only set its keys'
SELECT apikeys.tenant_set_limits('acme', ARRAY[('req', 2, '1 hour')]::apikeys.named_limit[]);
CREATE ROLE regress_nl_admin;
SELECT apikeys.grant_tenant('regress_nl_admin', 'acme');
SET ROLE regress_nl_admin;
SELECT pg_temp.err($$SELECT apikeys.tenant_set_limits('acme', NULL)$$);
SELECT apikeys.apikey_set_limits(:'k3', ARRAY[('req', 1000000, '1 day')]::apikeys.named_limit[]);
SELECT key_id AS k4, api_key AS key4 FROM apikeys.apikey_create('acme', 'four') \gset
RESET ROLE;
SELECT pg_temp.run(:'key4', 5) AS new_key_still_held_by_tenant;   -- the tenant's req: 2 an hour
SELECT pg_temp.run(:'key3', 5) AS loosened_key_still_held;
SELECT limits FROM apikeys.tenants WHERE tenant = 'acme';

-- Cost: charged to every limit; 0 checks only; more than a limit never passes
SELECT apikeys.tenant_set_limits('acme', NULL);
SELECT key_id AS k5, api_key AS key5 FROM apikeys.apikey_create('acme', 'costly') \gset
SELECT apikeys.apikey_set_limits(:'k5', ARRAY[('tokens', 10, '1 hour')]::apikeys.named_limit[]);
SELECT apikeys.apikey_set_policy(:'k5', rate_limit => 100, rate_window => '1 hour', usage_limit => 12);
SELECT valid, code, rate_limit, rate_remaining, usage_remaining FROM apikeys.apikey_verify(:'key5', NULL, NULL, 4);
SELECT valid, code, rate_limit, rate_remaining, usage_remaining FROM apikeys.apikey_verify(:'key5', NULL, NULL, 0);
SELECT valid, code, rate_limit, rate_remaining, usage_remaining FROM apikeys.apikey_verify(:'key5', NULL, NULL, 0);
SELECT * FROM pg_temp.lim;
SELECT valid, code, rate_limit, rate_remaining, usage_remaining FROM apikeys.apikey_verify(:'key5', NULL, NULL, 7);
SELECT valid, code, rate_limit, rate_remaining, usage_remaining FROM apikeys.apikey_verify(:'key5', NULL, NULL, 6);
SELECT valid, code, rate_limit, rate_remaining, usage_remaining FROM apikeys.apikey_verify(:'key5', NULL, NULL, 11);
-- the usage cap counts cost too: 10 of 12 used, the windows have room
SELECT apikeys.apikey_set_limits(:'k5', NULL);
SELECT valid, code, rate_remaining, usage_remaining FROM apikeys.apikey_verify(:'key5', NULL, NULL, 3);
SELECT valid, code, rate_remaining, usage_remaining FROM apikeys.apikey_verify(:'key5', NULL, NULL, 2);
SELECT used FROM apikeys.key_usage WHERE key_id = :'k5';
-- one row's expansion is one call with its cost
SELECT key_id AS k6, api_key AS key6 FROM apikeys.apikey_create('acme', 'star') \gset
SELECT apikeys.apikey_set_limits(:'k6', ARRAY[('tokens', 10, '1 hour')]::apikeys.named_limit[]);
SELECT (apikeys.apikey_verify(:'key6', NULL, NULL, 3)).valid, (apikeys.apikey_verify(:'key6', NULL, NULL, 3)).rate_remaining;
SELECT rate_remaining FROM apikeys.apikey_verify(:'key6', NULL, NULL, 0);

-- Limits changed while in use: a lower limit counts what was charged
SELECT apikeys.apikey_set_limits(:'k6', ARRAY[('tokens', 2, '1 hour')]::apikeys.named_limit[]);
SELECT valid, code, rate_remaining FROM apikeys.apikey_verify(:'key6');
-- a renamed limit starts from nothing (it is another limit)
SELECT apikeys.apikey_set_limits(:'k6', ARRAY[('tokens2', 2, '1 hour')]::apikeys.named_limit[]);
SELECT pg_temp.run(:'key6', 3) AS renamed_passed;

-- no limits, no rows; a bad key checks none
SELECT key_id AS k7, api_key AS key7 FROM apikeys.apikey_create('acme', 'plain') \gset
SELECT valid, rate_limit FROM apikeys.apikey_verify(:'key7');
SELECT count(*) FROM pg_temp.lim;
SELECT code FROM apikeys.apikey_verify(:'key6');
SELECT count(*) > 0 AS rows_before FROM pg_temp.lim;
SELECT code FROM apikeys.apikey_verify('garbage');
SELECT count(*) AS rows_after_bad_key FROM pg_temp.lim;

-- grant_verifier lets a role use the new functions
CREATE ROLE regress_nl_verifier;
SELECT apikeys.grant_verifier('regress_nl_verifier');
SET ROLE regress_nl_verifier;
SELECT code FROM apikeys.apikey_verify(:'key7', NULL, NULL, 0);
SELECT count(*) FROM apikeys.last_verify_limits();
RESET ROLE;

-- ATTACK: last_verify_limits() answered whoever asked next in the session:
-- after SET ROLE (or for the next client of a pooled connection), another
-- tenant's admin read the names and counts of the limits of the key just
-- verified.  Now only the role that verified sees them.
SELECT code FROM apikeys.apikey_verify(:'key6');
SELECT count(*) > 0 AS verifier_sees_its_rows FROM apikeys.last_verify_limits();
CREATE ROLE regress_nl_other;
SELECT apikeys.grant_tenant('regress_nl_other', 'globex');
SET ROLE regress_nl_other;
SELECT count(*) AS other_role_sees FROM apikeys.last_verify_limits();
RESET ROLE;
SELECT count(*) > 0 AS verifier_still_sees FROM apikeys.last_verify_limits();
DROP OWNED BY regress_nl_other;
DROP ROLE regress_nl_other;
SELECT apikeys.revoke_tenant('regress_nl_admin', 'acme');
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA apikeys FROM regress_nl_admin, regress_nl_verifier;
REVOKE ALL ON ALL TABLES IN SCHEMA apikeys FROM regress_nl_admin, regress_nl_verifier;
REVOKE ALL ON SCHEMA apikeys FROM regress_nl_admin, regress_nl_verifier;
DROP ROLE regress_nl_admin;
DROP ROLE regress_nl_verifier;
