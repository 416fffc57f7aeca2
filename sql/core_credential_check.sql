--
-- core_credential_check: apikeys.credential's CHECK constraint, against rows
-- written around the management functions (a superuser's UPDATE): each rule
-- refuses with 23514 and names itself; the bounds themselves pass; NULL
-- columns pass, as in SQL.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT tenant FROM apikeys.tenant_create('chk');
SELECT key_id AS k FROM apikeys.apikey_create('chk', 'checked') \gset

-- The outcome of one UPDATE of the key's row, rolled back: ok, or the
-- SQLSTATE, the constraint and table the error names, and its message.
CREATE FUNCTION pg_temp.try(k uuid, assignments text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    con text; tab text; sch text;
BEGIN
    EXECUTE format('UPDATE apikeys.credential SET %s WHERE key_id = %L', assignments, k);
    RAISE EXCEPTION USING ERRCODE = 'P0099';
EXCEPTION
    WHEN SQLSTATE 'P0099' THEN RETURN 'ok';
    WHEN others THEN
        GET STACKED DIAGNOSTICS con = CONSTRAINT_NAME, tab = TABLE_NAME, sch = SCHEMA_NAME;
        RETURN format('%s %s.%s.%s: %s', SQLSTATE, sch, tab, con, SQLERRM);
END
$$;

-- one constraint on the table, calling C
SELECT conname, contype FROM pg_constraint
 WHERE conrelid = 'apikeys.credential'::regclass AND contype = 'c';

-- every rule broken, one at a time
SELECT t.rule, pg_temp.try(:'k', t.assignments) AS outcome
  FROM (VALUES
    ('empty name',              $$name = ''$$),
    ('name of 201',             $$name = repeat('n', 201)$$),
    ('name of 201 characters',  $$name = repeat('é', 201)$$),
    ('description of 2001',     $$description = repeat('d', 2001)$$),
    ('prefix with a capital',   $$prefix = 'Live'$$),
    ('prefix with __',          $$prefix = 'a__b'$$),
    ('prefix ending in _',      $$prefix = 'ab_'$$),
    ('prefix from a digit',     $$prefix = '1ab'$$),
    ('prefix of 33',            $$prefix = repeat('p', 33)$$),
    ('empty prefix',            $$prefix = ''$$),
    ('65 scopes',               $$scopes = (SELECT array_agg('s' || g) FROM generate_series(1, 65) g)$$),
    ('metadata an array',       $$metadata = '[1]'$$),
    ('metadata a scalar',       $$metadata = '"x"'$$),
    ('status unknown',          $$status = 'paused'$$),
    ('revoked without time',    $$status = 'revoked'$$),
    ('time without revoked',    $$revoked_at = now()$$),
    ('reason of 2001',          $$revoked_reason = repeat('r', 2001)$$),
    ('no addresses',            $$allowed_ips = '{}'$$),
    ('17 addresses',            $$allowed_ips = (SELECT array_agg(('10.0.0.' || g)::cidr) FROM generate_series(1, 17) g)$$),
    ('rate limit 0',            $$rate_limit = 0, rate_window = '1 minute'$$),
    ('window under 1 s',        $$rate_limit = 5, rate_window = '0.5 seconds'$$),
    ('window over 1 day',       $$rate_limit = 5, rate_window = '1 day 1 second'$$),
    ('window of a month',       $$rate_limit = 5, rate_window = '1 month'$$),
    ('limit without window',    $$rate_limit = 5$$),
    ('window without limit',    $$rate_window = '1 minute'$$),
    ('usage cap 0',             $$usage_limit = 0$$),
    ('usage period 0',          $$usage_period = '0 seconds'$$),
    ('usage period 367 days',   $$usage_period = '367 days'$$),
    ('negative credits',        $$credits = -1$$),
    ('refill 0',                $$credits_refill = 0$$),
    ('refill every 0.5 s',      $$credits_refill_interval = '0.5 seconds'$$),
    ('refill every 13 months',  $$credits_refill_interval = '13 months'$$),
    ('refill day 0',            $$credits_refill_day = 0$$),
    ('refill day 32',           $$credits_refill_day = 32$$)
  ) AS t(rule, assignments);

-- the bounds themselves, and NULLs, pass
SELECT t.rule, pg_temp.try(:'k', t.assignments) AS outcome
  FROM (VALUES
    ('name of 200 characters',  $$name = repeat('é', 200)$$),
    ('description of 2000',     $$description = repeat('d', 2000), revoked_reason = NULL$$),
    ('prefix of 32, inner _',   $$prefix = 'a1_b2_' || repeat('c', 26)$$),
    ('64 scopes',               $$scopes = (SELECT array_agg('s' || g) FROM generate_series(1, 64) g)$$),
    ('revoked with time',       $$status = 'revoked', revoked_at = now(), revoked_reason = repeat('r', 2000)$$),
    ('disabled',                $$status = 'disabled'$$),
    ('16 addresses',            $$allowed_ips = (SELECT array_agg(('10.0.0.' || g)::cidr) FROM generate_series(1, 16) g)$$),
    ('window 1 s and 1 day',    $$rate_limit = 1, rate_window = '1 second'$$),
    ('window of 24 hours',      $$rate_limit = 1, rate_window = '24 hours'$$),
    ('usage period 366 days',   $$usage_limit = 1, usage_period = '366 days'$$),
    ('credits 0',               $$credits = 0, credits_refill = 1, credits_refill_interval = '1 second', credits_refill_day = 31$$),
    ('refill day 1',            $$credits_refill_day = 1, credits_refill_interval = '366 days'$$),
    ('all optional NULL',       $$description = NULL, allowed_ips = NULL, rate_limit = NULL, rate_window = NULL,
                                  usage_limit = NULL, usage_period = NULL, credits = NULL, credits_refill = NULL,
                                  credits_refill_interval = NULL, credits_refill_day = NULL$$)
  ) AS t(rule, assignments);

-- the row is as it was: every attempt above was rolled back
SELECT name, prefix, status, rate_limit FROM apikeys.credential WHERE key_id = :'k';
