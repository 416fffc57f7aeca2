--
-- policy_credits: credits, a key's remaining uses with an optional refill.
-- apikey_set_credits / _add_ / _subtract_ (every refusal with its SQLSTATE,
-- the audit rows they write, another tenant's admin refused); verify spends
-- them (cost 0 checks, cost n spends n, used up: usage_exceeded), together
-- with the key's named limits and its tenant's, all or nothing; the refill
-- rule (apikeys_internal._credits_state at explicit times, and verify after
-- a refill); apikeys.key_credits and apikeys.key_usage show them, pending
-- charges included, to the tenants' roles only.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys;
DROP ROLE IF EXISTS regress_cr_acme, regress_cr_globex;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never
SET timezone = 'UTC';

CREATE FUNCTION pg_temp.err(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM, '[0-9a-f]{8}-[0-9a-f-]{27}', '<uuid>');
END $$;
-- one verification of key with cost c: code and credits left
CREATE FUNCTION pg_temp.v(key text, c integer DEFAULT 1) RETURNS text LANGUAGE sql AS $$
    SELECT v.code || ' ' || coalesce(v.usage_remaining::text, '-')
      FROM apikeys.apikey_verify(key, NULL, NULL, c) v
$$;
-- n verifications of key with cost c, one per row: how many passed
CREATE FUNCTION pg_temp.run(key text, n integer, c integer DEFAULT 1) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FILTER (WHERE v.valid)
      FROM generate_series(1, n) g,
           LATERAL apikeys.apikey_verify(key, NULL, CASE WHEN g > 0 THEN NULL::inet END, c) v
$$;
-- what apikeys.key_usage says of a key's credits
CREATE FUNCTION pg_temp.u(id uuid) RETURNS text LANGUAGE sql AS $$
    SELECT format('balance %s used %s remaining %s valid %s usage_exceeded %s rate_limited %s',
                  usage_limit, used, usage_remaining, valid, usage_exceeded, rate_limited)
      FROM apikeys.key_usage WHERE key_id = id
$$;
CREATE VIEW pg_temp.lim AS
SELECT scope, name, max_uses, remaining, passed FROM apikeys.last_verify_limits();

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT tenant FROM apikeys.tenant_create('initech');
SELECT key_id AS k1, api_key AS key1 FROM apikeys.apikey_create('acme', 'one') \gset
SELECT key_id AS kcap FROM apikeys.apikey_create('acme', 'capped') \gset
SELECT key_id AS krev FROM apikeys.apikey_create('acme', 'revoked') \gset
SELECT key_id AS kin FROM apikeys.apikey_create('initech', 'inactive') \gset
SELECT key_id AS kg, api_key AS keyg FROM apikeys.apikey_create('globex', 'g') \gset
SELECT apikeys.apikey_set_policy(:'kcap', usage_limit => 10);
SELECT apikeys.apikey_set_credits(:'krev', 5);
SELECT apikeys.apikey_revoke(:'krev');
SELECT apikeys.apikey_set_credits(:'kin', 5);
SELECT active FROM apikeys.tenant_update('initech', active => false);

------------------------------------------------------------------------------
-- What may be set: every refusal, with its SQLSTATE
------------------------------------------------------------------------------
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, -1)', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, NULL, 10, ''1 day'')', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5, 0, ''1 day'')', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5, 10)', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5, refill_interval => ''1 day'')', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5, 10, ''1 day'', 1)', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5, 10, ''0.5 seconds'')', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5, 10, ''1.5 seconds'')', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5, 10, ''1 month'')', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5, 10, ''367 days'')', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5, 10, ''-1 day'')', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5, 10, refill_day => 0)', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5, 10, refill_day => 32)', :'k1'));
-- a key has a usage cap or credits, never both (either way round)
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5)', :'kcap'));
-- a key without credits has none to add or subtract
SELECT pg_temp.err(format('SELECT apikeys.apikey_add_credits(%L, 5)', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_subtract_credits(%L, 5)', :'k1'));
-- revoked keys, inactive tenants, unknown keys
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5)', :'krev'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_add_credits(%L, 5)', :'krev'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_subtract_credits(%L, 1)', :'krev'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 5)', :'kin'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_add_credits(%L, 5)', :'kin'));
SELECT pg_temp.err($$SELECT apikeys.apikey_set_credits('00000000-0000-0000-0000-000000000000', 5)$$);
SELECT pg_temp.err($$SELECT apikeys.apikey_add_credits('00000000-0000-0000-0000-000000000000', 5)$$);
SELECT pg_temp.err($$SELECT apikeys.apikey_set_credits(NULL, 5)$$);
-- nothing of the above changed the key
SELECT credits, credits_refill FROM apikeys.credential WHERE key_id = :'k1';

-- Set: 5 credits
SELECT apikeys.apikey_set_credits(:'k1', 5);
SELECT credits, credits_at = credits_since AS one_write, credits_refill, credits_refill_interval, credits_refill_day
  FROM apikeys.credential WHERE key_id = :'k1';
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_policy(%L, usage_limit => 10)', :'k1'));
-- other limits may still be set
SELECT apikeys.apikey_set_policy(:'k1', rate_limit => 1000);
SELECT pg_temp.err(format('SELECT apikeys.apikey_add_credits(%L, 0)', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_add_credits(%L, -3)', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_add_credits(%L, NULL)', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_subtract_credits(%L, 0)', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_subtract_credits(%L, 6)', :'k1'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_add_credits(%L, 9223372036854775807)', :'k1'));
SELECT credits FROM apikeys.credential WHERE key_id = :'k1';

------------------------------------------------------------------------------
-- Verify spends them: cost 0 checks, cost n spends n, all or nothing
------------------------------------------------------------------------------
SELECT pg_temp.v(:'key1', 0) AS check_only;
SELECT pg_temp.v(:'key1', 1) AS spend_1;
SELECT pg_temp.v(:'key1', 3) AS spend_3;
SELECT pg_temp.v(:'key1', 2) AS cost_2_of_1_left;
SELECT pg_temp.v(:'key1', 1) AS spend_last;
SELECT pg_temp.v(:'key1', 0) AS check_when_out;
SELECT pg_temp.v(:'key1', 1) AS spend_when_out;
-- key_usage: the balance, spent (pending in shared memory or flushed), left
SELECT pg_temp.u(:'k1');
SELECT pg_temp.err(format('SELECT apikeys.apikey_subtract_credits(%L, 1)', :'k1'));

-- A top-up during use: the balance grows, what was spent stays spent
SELECT apikeys.apikey_add_credits(:'k1', 10) AS left_after_add;
SELECT pg_temp.v(:'key1', 3) AS spend_3;
SELECT apikeys.apikey_subtract_credits(:'k1', 2) AS left_after_subtract;
SELECT pg_temp.u(:'k1');
SELECT pg_temp.run(:'key1', 10) AS passed_of_10;
SELECT pg_temp.u(:'k1');
SELECT apikeys.apikey_add_credits(:'k1', 1) AS left_after_add;
SELECT pg_temp.v(:'key1') AS spend_topped_up;

-- Set again: the new balance, spending starts anew
SELECT apikeys.apikey_set_credits(:'k1', 2);
SELECT pg_temp.u(:'k1');
SELECT pg_temp.run(:'key1', 5) AS passed_of_5;
-- once flushed, apikeys.usage holds the spent credits of the period (the
-- worker writes a cap's figures within flush_interval; wait up to 20 s,
-- committing at each look: a snapshot held all along would keep the
-- worker's earlier write in flight, and the entry from being written again)
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        PERFORM 1 FROM apikeys.usage u JOIN apikeys.credential c USING (key_id)
          WHERE c.name = 'one' AND c.tenant = 'acme' AND u.period_start = c.credits_since AND u.used = 2;
        EXIT WHEN FOUND;
        COMMIT;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT u.used, u.period_start = c.credits_since AS period_is_the_set
  FROM apikeys.usage u JOIN apikeys.credential c USING (key_id) WHERE key_id = :'k1';
SELECT pg_temp.u(:'k1');
-- credits NULL removes them: no limit on uses
SELECT apikeys.apikey_set_credits(:'k1', NULL);
SELECT credits, credits_at, credits_since FROM apikeys.credential WHERE key_id = :'k1';
SELECT pg_temp.v(:'key1') AS without_credits;
-- and a usage cap may be set again
SELECT apikeys.apikey_set_policy(:'k1', usage_limit => 3);
SELECT split_part(pg_temp.v(:'key1'), ' ', 1) AS capped_again;
SELECT apikeys.apikey_set_policy(:'k1');

-- 0 credits: set, and refused at once
SELECT key_id AS kz, api_key AS keyz FROM apikeys.apikey_create('acme', 'zero') \gset
SELECT apikeys.apikey_set_credits(:'kz', 0);
SELECT pg_temp.v(:'keyz', 0) AS zero_check, pg_temp.v(:'keyz', 1) AS zero_spend;

------------------------------------------------------------------------------
-- Audit: every change is a key_updated row with the credits before and after
-- (refusals write no row: they go to the server log, apikeys_audit_denied)
------------------------------------------------------------------------------
SELECT action, outcome, detail -> 'changed' -> 'credits' AS credits,
       detail -> 'changed' ? 'credits_at' AS at_changed, detail -> 'changed' ? 'credits_since' AS since_changed,
       detail -> 'changed' -> 'credits_refill' AS refill
  FROM apikeys.audit WHERE key_id = :'k1' AND detail -> 'changed' ? 'credits'
 ORDER BY audit_id;

------------------------------------------------------------------------------
-- Credits with named limits: all or nothing, either way round
------------------------------------------------------------------------------
-- a call a named limit refuses spends no credit
SELECT key_id AS k2, api_key AS key2 FROM apikeys.apikey_create('acme', 'two') \gset
SELECT apikeys.apikey_set_credits(:'k2', 3);
SELECT apikeys.apikey_set_limits(:'k2', ARRAY[('burst', 2, '1 hour')]::apikeys.named_limit[]);
SELECT pg_temp.v(:'key2') AS first, pg_temp.v(:'key2') AS second;
SELECT pg_temp.v(:'key2') AS burst_refuses;
SELECT pg_temp.u(:'k2');
-- a call the credits refuse charges no named limit
SELECT key_id AS k3, api_key AS key3 FROM apikeys.apikey_create('acme', 'three') \gset
SELECT apikeys.apikey_set_credits(:'k3', 1);
SELECT apikeys.apikey_set_limits(:'k3', ARRAY[('burst', 5, '1 hour')]::apikeys.named_limit[]);
SELECT pg_temp.v(:'key3', 2) AS credits_refuse;
SELECT * FROM pg_temp.lim;
SELECT pg_temp.v(:'key3', 1) AS spend_1;
SELECT * FROM pg_temp.lim;
SELECT pg_temp.v(:'key3', 1) AS out;
SELECT * FROM pg_temp.lim;
-- nor its tenant's: the tenant's charge of a call its key's credits refuse is taken back
SELECT apikeys.tenant_set_limits('globex', ARRAY[('all', 10, '1 hour')]::apikeys.named_limit[]);
SELECT apikeys.apikey_set_credits(:'kg', 2);
SELECT pg_temp.v(:'keyg', 2) AS spend_2;
SELECT pg_temp.v(:'keyg', 1) AS out;
SELECT * FROM pg_temp.lim;
SELECT apikeys.apikey_add_credits(:'kg', 20);
SELECT pg_temp.run(:'keyg', 10) AS passed_of_10;
SELECT * FROM pg_temp.lim;
SELECT pg_temp.u(:'kg');

------------------------------------------------------------------------------
-- The refill rule, at explicit times (what verify and key_usage compute)
------------------------------------------------------------------------------
-- _credits_state(credits, credits_at, credits_since, refill, refill_interval,
--                refill_day, now) -> (period_start, balance, next_refill)
CREATE FUNCTION pg_temp.st(credits bigint, at timestamptz, refill bigint, iv interval, day integer,
                           now timestamptz, since timestamptz DEFAULT NULL) RETURNS text LANGUAGE sql AS $$
    SELECT format('start %s balance %s next %s', s.period_start, s.balance, coalesce(s.next_refill::text, '-'))
      FROM apikeys_internal._credits_state(credits, at, coalesce(since, at), refill, iv, day, now) s
$$;
-- no refill: the balance, from the set, for ever
SELECT pg_temp.st(3, '2026-03-10 10:15', NULL, NULL, NULL, '2030-01-01');
-- every hour: the set's hour keeps the balance; each new hour starts with the refill
SELECT pg_temp.st(3, '2026-03-10 10:15', 10, '1 hour', NULL, '2026-03-10 10:59:59.999999');
SELECT pg_temp.st(3, '2026-03-10 10:15', 10, '1 hour', NULL, '2026-03-10 11:00');
SELECT pg_temp.st(3, '2026-03-10 10:15', 10, '1 hour', NULL, '2026-03-10 13:30');
-- a top-up after a refill (credits_at 11:30, set at 10:15) lasts until the next one
SELECT pg_temp.st(25, '2026-03-10 11:30', 10, '1 hour', NULL, '2026-03-10 11:45', '2026-03-10 10:15');
SELECT pg_temp.st(25, '2026-03-10 11:30', 10, '1 hour', NULL, '2026-03-10 12:00', '2026-03-10 10:15');
-- intervals are aligned to 2000-01-01 00:00 UTC (a Saturday): days at midnight UTC, weeks on Saturdays
SELECT pg_temp.st(3, '2026-03-10 10:15', 10, '1 day', NULL, '2026-03-10 23:59:59');
SELECT pg_temp.st(3, '2026-03-10 10:15', 10, '1 day', NULL, '2026-03-11 00:00');
SELECT pg_temp.st(3, '2026-03-10 10:15', 10, '7 days', NULL, '2026-03-12 00:00');
SELECT pg_temp.st(3, '2026-03-10 10:15', 10, '7 days', NULL, '2026-03-14 00:00');
-- on a day of the month, 00:00 UTC
SELECT pg_temp.st(3, '2026-01-10 08:00', 10, NULL, 15, '2026-01-14 23:59:59');
SELECT pg_temp.st(3, '2026-01-10 08:00', 10, NULL, 15, '2026-01-15 00:00');
SELECT pg_temp.st(3, '2025-11-20 08:00', 10, NULL, 15, '2026-01-10 00:00');
SELECT pg_temp.st(3, '2026-12-05 08:00', 10, NULL, 1, '2026-12-31 12:00');
SELECT pg_temp.st(3, '2026-12-05 08:00', 10, NULL, 1, '2027-01-01 00:00');
-- day 31: a shorter month refills on its last day
SELECT pg_temp.st(3, '2026-01-10 08:00', 10, NULL, 31, '2026-01-30 12:00');
SELECT pg_temp.st(3, '2026-01-10 08:00', 10, NULL, 31, '2026-01-31 00:00');
SELECT pg_temp.st(3, '2026-01-10 08:00', 10, NULL, 31, '2026-02-27 23:59:59');
SELECT pg_temp.st(3, '2026-01-10 08:00', 10, NULL, 31, '2026-02-28 00:00');
SELECT pg_temp.st(3, '2026-01-10 08:00', 10, NULL, 31, '2026-04-29 12:00');
SELECT pg_temp.st(3, '2026-01-10 08:00', 10, NULL, 31, '2026-04-30 00:00');
SELECT pg_temp.st(3, '2028-02-01 08:00', 10, NULL, 31, '2028-02-29 00:00');
SELECT pg_temp.st(3, '2028-02-01 08:00', 10, NULL, 30, '2028-02-28 23:59:59');
-- the boundary is UTC whatever the session's time zone
SET timezone = 'America/New_York';
SELECT pg_temp.st(3, '2026-01-10 08:00 UTC', 10, NULL, 31, '2026-01-30 20:00 America/New_York');
SET timezone = 'UTC';
SELECT pg_temp.err($$SELECT apikeys_internal._credits_state(-1, now(), now(), NULL, NULL, NULL, now())$$);
SELECT apikeys_internal._credits_state(NULL, now(), now(), NULL, NULL, NULL, now()) IS NULL AS no_credits;

-- A refill replaces what is left, and spending starts anew: every 3
-- seconds (aligned to 2000-01-01, so to the Unix epoch's seconds too), 2
-- credits.  Each step starts 0.1 s into a 3-second period.
CREATE FUNCTION pg_temp.next_period() RETURNS void LANGUAGE sql AS $$
    SELECT pg_sleep(3.1 - mod(extract(epoch FROM clock_timestamp()), 3))
$$;
SELECT key_id AS k4, api_key AS key4 FROM apikeys.apikey_create('acme', 'four') \gset
SELECT pg_temp.next_period();
SELECT apikeys.apikey_set_credits(:'k4', 1, 2, '3 seconds');
SELECT pg_temp.run(:'key4', 3) AS passed_before_refill;
SELECT pg_temp.u(:'k4');
SELECT pg_temp.next_period();
SELECT pg_temp.u(:'k4');
SELECT pg_temp.run(:'key4', 3) AS passed_after_refill;
-- a top-up adds to the refilled balance, until the next refill
SELECT apikeys.apikey_add_credits(:'k4', 4) AS left_after_add;
SELECT pg_temp.run(:'key4', 5) AS passed_after_add;
SELECT pg_temp.u(:'k4');
SELECT pg_temp.next_period();
SELECT pg_temp.u(:'k4');
SELECT pg_temp.run(:'key4', 5) AS passed_after_next_refill;
-- monthly, on today's day: a set written 40 days back (moved back before
-- any use) had its credits replaced by today's refill, at 00:00 UTC
SELECT key_id AS k5, api_key AS key5 FROM apikeys.apikey_create('acme', 'five') \gset
SELECT apikeys.apikey_set_credits(:'k5', 1, 4, refill_day => extract(day FROM now() AT TIME ZONE 'UTC')::integer);
UPDATE apikeys.credential SET credits_at = credits_at - interval '40 days', credits_since = credits_since - interval '40 days'
 WHERE key_id = :'k5';
SELECT pg_temp.u(:'k5');
SELECT pg_temp.run(:'key5', 6) AS passed_after_refill;
SELECT pg_temp.u(:'k5');

-- apikeys.key_credits: the keys with credits, what is left, the refill
SELECT tenant, name, credits, spent, remaining, refill_amount, refill_interval, refill_day IS NOT NULL AS monthly
  FROM apikeys.key_credits WHERE name <> 'four' ORDER BY tenant, name;
SELECT name, period_start = credits_at AS period_is_the_set, next_refill IS NULL AS no_refill
  FROM apikeys.key_credits WHERE name IN ('two', 'g') ORDER BY name;
-- five: refilled today at 00:00 UTC, next on the same day next month
SELECT period_start = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS five_period_is_today,
       next_refill = (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC' AS five_next_in_a_month
  FROM apikeys.key_credits WHERE name = 'five';
SELECT tenant, name FROM apikeys.key_usage WHERE usage_limit IS NOT NULL EXCEPT SELECT tenant, name FROM apikeys.key_credits;

------------------------------------------------------------------------------
-- Another tenant's admin: every credit function refused as for an unknown
-- key, nothing changed, nothing of acme's keys visible
------------------------------------------------------------------------------
CREATE ROLE regress_cr_acme;
CREATE ROLE regress_cr_globex;
SELECT apikeys.grant_tenant('regress_cr_acme', 'acme');
SELECT apikeys.grant_tenant('regress_cr_globex', 'globex');
SET ROLE regress_cr_globex;
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, 1000000)', :'k2'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_add_credits(%L, 1000000)', :'k2'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_subtract_credits(%L, 1)', :'k2'));
SELECT pg_temp.err(format('SELECT apikeys.apikey_set_credits(%L, NULL)', :'k2'));
SELECT tenant, name, usage_limit, used, usage_remaining FROM apikeys.key_usage ORDER BY name;
SELECT name, credits, spent, remaining FROM apikeys.key_credits ORDER BY name;
SELECT pg_temp.err('SELECT * FROM apikeys.usage');
SELECT pg_temp.err('SELECT credits FROM apikeys.credential');
SELECT pg_temp.err(format('SELECT * FROM apikeys_internal._pending_credits(%L)', :'k2'));
-- its own key it manages
SELECT apikeys.apikey_add_credits(:'kg', 1) AS own_key_left;
RESET ROLE;
SELECT credits FROM apikeys.credential WHERE key_id = :'k2';
-- acme's admin sees acme's credits only
SET ROLE regress_cr_acme;
-- (not 'four': it refills every 3 s, so its figures depend on the clock)
SELECT name, usage_limit, used, usage_remaining FROM apikeys.key_usage WHERE usage_limit IS NOT NULL AND name <> 'four' ORDER BY name;
SELECT name, credits, spent, remaining, refill_amount, refill_interval, refill_day IS NOT NULL AS monthly, next_refill IS NOT NULL AS refills
  FROM apikeys.key_credits WHERE name <> 'four' ORDER BY name;
SELECT apikeys.apikey_add_credits(:'k2', 2) AS acme_admin_adds;
RESET ROLE;
-- globex's admin changed nothing of k2: its only row of the two roles is acme's admin's top-up
SELECT tenant, action, db_role, detail -> 'changed' -> 'credits' AS credits FROM apikeys.audit
 WHERE db_role IN ('regress_cr_globex', 'regress_cr_acme') AND key_id = :'k2' ORDER BY audit_id;

DROP OWNED BY regress_cr_acme, regress_cr_globex;
DROP ROLE regress_cr_acme, regress_cr_globex;
