--
-- policy_limit_window: the rate limit is a sliding window (src/limits.h):
-- no interval of one window's length sees more than rate_limit successes,
-- also across the edges of the epoch-aligned windows 1.0 used (where fixed
-- windows let 2 x rate_limit through), and limits changed while in use
-- never let more through than the old or new limit allows.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys;
RESET client_min_messages;

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT key_id AS k, api_key AS key FROM apikeys.apikey_create('acme', 'window') \gset
SELECT apikeys.apikey_set_policy(:'k', rate_limit => 10, rate_window => '2 seconds');
CREATE TABLE pg_temp.k AS SELECT :'key'::text AS key;

-- The worst case for fixed windows: calls without pause from the middle of a
-- 2-second window (aligned to 2000-01-01, as 1.0's were) for 4.6 seconds.
-- Fixed windows pass 10 at once, then 10 more at the next edge, a second
-- later.  Every call's time and verdict is recorded.
CREATE TEMP TABLE calls (at timestamptz, valid boolean, remaining integer, reset timestamptz);
DO $$
DECLARE
    key text := (SELECT k.key FROM k);
    v apikeys.verification;
    t0 timestamptz;
BEGIN
    -- wait for the middle of a window
    WHILE mod(extract(epoch FROM clock_timestamp() - '2000-01-01 00:00:00+00')::numeric, 2) NOT BETWEEN 1.0 AND 1.1 LOOP
        PERFORM pg_sleep(0.01);
    END LOOP;
    t0 := clock_timestamp();
    WHILE clock_timestamp() < t0 + interval '4.6 seconds' LOOP
        v := apikeys.apikey_verify(key);
        INSERT INTO calls VALUES (clock_timestamp(), v.valid, v.rate_remaining, v.rate_reset);
        PERFORM pg_sleep(0.002);
    END LOOP;
END $$;

-- the bound: at most 10 successes in any closed interval of 2 seconds
SELECT max(n) AS most_in_any_window
  FROM (SELECT (SELECT count(*) FROM calls b
                 WHERE b.valid AND b.at BETWEEN a.at AND a.at + interval '2 seconds') AS n
          FROM calls a WHERE a.valid) w;
-- and not much less: 10 at once, then 10 more once the first have left the
-- window (2 to 2.25 seconds later), then the next 10 up to 2.25 s after that
SELECT count(*) FILTER (WHERE valid) BETWEEN 20 AND 30 AS successes_20_to_30,
       count(*) FILTER (WHERE NOT valid) > 0 AS some_refused
  FROM calls;
-- the first ten pass at once, counting remaining down
SELECT array_agg(remaining ORDER BY at) AS first_ten_remaining
  FROM (SELECT * FROM calls ORDER BY at LIMIT 10) f WHERE valid;
-- a refusal's rate_reset is when a call would pass: 2 to 2.25 s after the
-- first success, and the first success after it comes no earlier
WITH first AS (SELECT min(at) AS t FROM calls WHERE valid),
     refused AS (SELECT * FROM calls WHERE NOT valid ORDER BY at LIMIT 1),
     next_ok AS (SELECT min(c.at) AS t FROM calls c, refused r WHERE c.valid AND c.at > r.at)
SELECT r.reset - f.t BETWEEN interval '2 seconds' AND interval '2.25 seconds' AS reset_in_2_to_2_25_s,
       n.t >= r.reset AS next_success_not_before_reset,
       r.remaining AS refused_remaining
  FROM first f, refused r, next_ok n;

-- limits changed while in use
SELECT key_id AS k2, api_key AS key2 FROM apikeys.apikey_create('acme', 'changed') \gset
SELECT apikeys.apikey_set_policy(:'k2', rate_limit => 10, rate_window => '1 hour');
SELECT count(*) FILTER (WHERE v.valid) AS passed
  FROM generate_series(1, 6) g, LATERAL apikeys.apikey_verify(:'key2', NULL, CASE WHEN g > 0 THEN NULL::inet END) v;
-- a lower limit: the 6 already counted are over it, nothing passes
SELECT apikeys.apikey_set_policy(:'k2', rate_limit => 4, rate_window => '1 hour');
SELECT valid, code, rate_limit, rate_remaining FROM apikeys.apikey_verify(:'key2');
-- a higher one: what is left of it
SELECT apikeys.apikey_set_policy(:'k2', rate_limit => 8, rate_window => '1 hour');
SELECT g, v.valid, v.rate_remaining
  FROM generate_series(1, 3) g, LATERAL apikeys.apikey_verify(:'key2', NULL, CASE WHEN g > 0 THEN NULL::inet END) v
 ORDER BY g;
-- a shorter window: the 8 counted stay counted for a whole new window
-- (never fewer than their due), so a limit of 8 per second still refuses
SELECT apikeys.apikey_set_policy(:'k2', rate_limit => 8, rate_window => '1 second');
SELECT valid, rate_remaining FROM apikeys.apikey_verify(:'key2');
-- and lets calls through once that window has passed
SELECT pg_sleep(1.2);
SELECT valid, rate_remaining FROM apikeys.apikey_verify(:'key2');
