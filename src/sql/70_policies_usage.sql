------------------------------------------------------------------------------
-- Policies enforced by verify: IP allowlist, rate limit, usage cap
------------------------------------------------------------------------------

-- Statement-level and ALWAYS (fires under session_replication_role =
-- replica too): any committed change to key data retires the shared policy
-- cache (src/changes.c).
CREATE FUNCTION apikeys_internal._changed() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'apikeys_changed';
CREATE TRIGGER policy_cache_tenant AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apikeys.tenant
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._changed();
CREATE TRIGGER policy_cache_credential AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apikeys.credential
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._changed();
CREATE TRIGGER policy_cache_secret AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apikeys.secret
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._changed();
ALTER TABLE apikeys.tenant ENABLE ALWAYS TRIGGER policy_cache_tenant;
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER policy_cache_credential;
ALTER TABLE apikeys.secret ENABLE ALWAYS TRIGGER policy_cache_secret;
-- Logical replication's apply worker fires row triggers only: a revoke that
-- arrives on a subscriber must retire its cache too.
CREATE TRIGGER policy_cache_tenant_row AFTER INSERT OR UPDATE OR DELETE ON apikeys.tenant
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._changed();
CREATE TRIGGER policy_cache_credential_row AFTER INSERT OR UPDATE OR DELETE ON apikeys.credential
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._changed();
CREATE TRIGGER policy_cache_secret_row AFTER INSERT OR UPDATE OR DELETE ON apikeys.secret
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._changed();
ALTER TABLE apikeys.tenant ENABLE ALWAYS TRIGGER policy_cache_tenant_row;
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER policy_cache_credential_row;
ALTER TABLE apikeys.secret ENABLE ALWAYS TRIGGER policy_cache_secret_row;

CREATE FUNCTION apikeys_internal.apikey_set_policy(
    key_id       uuid,
    allowed_ips  cidr[] DEFAULT NULL,
    rate_limit   integer DEFAULT NULL,
    rate_window  interval DEFAULT '1 minute',
    usage_limit  bigint DEFAULT NULL,
    usage_period interval DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_set_policy');
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, 'key_set_policy');
    PERFORM apikeys_internal._require_active_tenant(k.tenant, 'key_set_policy', k.key_id);
    -- one dimension first: array_position() refuses a multidimensional array
    IF allowed_ips IS NOT NULL AND (array_ndims(allowed_ips) OPERATOR(pg_catalog.>) 1
                                    OR cardinality(allowed_ips) NOT BETWEEN 1 AND 16
                                    OR CASE WHEN array_ndims(allowed_ips) OPERATOR(pg_catalog.>) 1 THEN true
                                            ELSE array_position(allowed_ips, NULL) IS NOT NULL END) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_allowed_ips: allowed_ips must be a one-dimensional array of 1 to 16 networks and no NULL',
            HINT = 'Pass NULL to allow every address.';
    END IF;
    IF rate_limit IS NOT NULL AND rate_limit OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_rate_limit: rate_limit must be positive',
            HINT = 'Pass NULL for no rate limit.';
    END IF;
    IF rate_limit IS NOT NULL AND (rate_window IS NULL
            OR rate_window OPERATOR(pg_catalog.<) '1 second'
            OR rate_window OPERATOR(pg_catalog.>) '1 day'
            OR date_part('month', rate_window) OPERATOR(pg_catalog.<>) 0
            OR date_part('year', rate_window) OPERATOR(pg_catalog.<>) 0
            OR extract(epoch FROM rate_window) OPERATOR(pg_catalog.<>) trunc(extract(epoch FROM rate_window))) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_rate_window: rate_window must be whole seconds from 1 second to 1 day';
    END IF;
    IF usage_limit IS NOT NULL AND usage_limit OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_usage_limit: usage_limit must be positive',
            HINT = 'Pass NULL for no usage cap.';
    END IF;
    IF usage_period IS NOT NULL AND (usage_limit IS NULL
            OR usage_period OPERATOR(pg_catalog.<) '1 second'
            OR usage_period OPERATOR(pg_catalog.>) '366 days'
            OR date_part('month', usage_period) OPERATOR(pg_catalog.<>) 0
            OR date_part('year', usage_period) OPERATOR(pg_catalog.<>) 0
            OR extract(epoch FROM usage_period) OPERATOR(pg_catalog.<>) trunc(extract(epoch FROM usage_period))) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_usage_period: usage_period must be whole seconds from 1 second to 366 days (in days, not months) and needs a usage_limit';
    END IF;
    IF usage_limit IS NOT NULL AND k.credits IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('credits_conflict: key %s has credits', k.key_id),
            HINT = 'A key has credits or a usage cap: remove the credits with apikey_set_credits(key_id, NULL) first.';
    END IF;
    UPDATE apikeys.credential c SET
        allowed_ips  = apikey_set_policy.allowed_ips,
        rate_limit   = apikey_set_policy.rate_limit,
        rate_window  = CASE WHEN apikey_set_policy.rate_limit IS NULL THEN NULL ELSE apikey_set_policy.rate_window END,
        usage_limit  = apikey_set_policy.usage_limit,
        usage_period = apikey_set_policy.usage_period,
        updated_at   = now()
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
END;
$$;
SELECT apikeys_internal.publish('apikey_set_policy', 'Set (replace) a key''s IP allowlist, rate limit and usage cap; NULL removes one. Limits need apikeys in shared_preload_libraries.');

-- Named limits (limits v2).  A list of apikeys.named_limit as stored:
-- at most 3, one-dimensional, names unique (1 to 15 of a-z, 0-9, _ . -,
-- starting with a letter or digit), max_uses positive, per a whole number
-- of seconds from 1 second to 1 day; NULL or empty: none (stored as '{}').
CREATE FUNCTION apikeys_internal.check_limits(limits apikeys.named_limit[])
    RETURNS apikeys.named_limit[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l apikeys.named_limit;
BEGIN
    IF limits IS NULL OR cardinality(limits) OPERATOR(pg_catalog.=) 0 THEN
        RETURN '{}';
    END IF;
    IF array_ndims(limits) OPERATOR(pg_catalog.>) 1 OR cardinality(limits) OPERATOR(pg_catalog.>) 3 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_limits: at most 3 named limits, in a one-dimensional array';
    END IF;
    FOREACH l IN ARRAY limits LOOP
        IF l.name IS NULL OR l.name OPERATOR(pg_catalog.!~) '^[a-z0-9][a-z0-9_.-]{0,14}$' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = format('invalid_limit_name: %s is not a limit name', coalesce(quote_literal(left(l.name, 40)), 'NULL')),
                HINT = '1 to 15 characters of a-z, 0-9, _ . -, starting with a letter or digit.';
        END IF;
        IF l.max_uses IS NULL OR l.max_uses OPERATOR(pg_catalog.<=) 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = format('invalid_limit: max_uses of limit "%s" must be positive', l.name);
        END IF;
        IF l.per IS NULL OR l.per OPERATOR(pg_catalog.<) '1 second' OR l.per OPERATOR(pg_catalog.>) '1 day'
           OR date_part('month', l.per) OPERATOR(pg_catalog.<>) 0 OR date_part('year', l.per) OPERATOR(pg_catalog.<>) 0
           OR extract(epoch FROM l.per) OPERATOR(pg_catalog.<>) trunc(extract(epoch FROM l.per)) THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = format('invalid_limit_window: per of limit "%s" must be whole seconds from 1 second to 1 day', l.name);
        END IF;
    END LOOP;
    IF (SELECT count(DISTINCT x.name) FROM unnest(limits) x) OPERATOR(pg_catalog.<>) cardinality(limits) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_limits: two limits have the same name';
    END IF;
    RETURN limits;
END;
$$;
REVOKE ALL ON FUNCTION apikeys_internal.check_limits(apikeys.named_limit[]) FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal.check_limits(apikeys.named_limit[]) IS 'Check a list of named limits as apikey_set_limits and tenant_set_limits store it (''{}'' for none).';

CREATE FUNCTION apikeys_internal.apikey_set_limits(key_id uuid, limits apikeys.named_limit[])
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_set_limits');
    v apikeys.named_limit[];
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, 'key_set_limits');
    PERFORM apikeys_internal._require_active_tenant(k.tenant, 'key_set_limits', k.key_id);
    v := apikeys_internal.check_limits(limits);
    UPDATE apikeys.credential c SET limits = v, updated_at = now()
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
END;
$$;
SELECT apikeys_internal.publish('apikey_set_limits', 'Set (replace) a key''s named limits, up to 3 of (name, max_uses, per); NULL removes them. They add to its tenant''s limits, never replace them.');

CREATE FUNCTION apikeys_internal.tenant_set_limits(tenant text, limits apikeys.named_limit[])
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v apikeys.named_limit[];
BEGIN
    PERFORM apikeys_internal._authorize(NULL, 'tenant_set_limits');
    PERFORM apikeys_internal._tenant_arg(tenant);   -- before any message echoes it
    v := apikeys_internal.check_limits(limits);
    UPDATE apikeys.tenant x SET limits = v, updated_at = now()
     WHERE x.tenant OPERATOR(pg_catalog.=) tenant_set_limits.tenant;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('tenant_not_found: tenant "%s" does not exist', tenant);
    END IF;
END;
$$;
SELECT apikeys_internal.publish('tenant_set_limits', 'Set (replace) a tenant''s named limits, shared by all its keys: up to 3 of (name, max_uses, per); NULL removes them. Global administrators only.');

------------------------------------------------------------------------------
-- Credits: remaining uses of a key, with an optional refill (Unkey-style).
-- The balance (credential.credits, as of credits_at) belongs to the tables:
-- set, add and subtract are transactional row updates (audited as
-- key_updated).  What verify spends belongs to shared memory, counted as a
-- usage cap's uses are (apikeys.usage.used, period_start = the spending
-- start: the last set, or the last refill), so a top-up never races a
-- charge: remaining = balance - spent.  A refill replaces the balance with
-- the refill amount and starts a new spending period.  A key has credits or
-- a usage cap, never both; used up, verify answers usage_exceeded for both
-- (src/verdicts.h).
------------------------------------------------------------------------------
CREATE FUNCTION apikeys_internal._credits_state(credits bigint, credits_at timestamptz,
        credits_since timestamptz, refill bigint, refill_interval interval, refill_day integer,
        now timestamptz, OUT period_start timestamptz, OUT balance bigint, OUT next_refill timestamptz)
    RETURNS record
    LANGUAGE C IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_credits_state_sql';
REVOKE ALL ON FUNCTION apikeys_internal._credits_state(bigint, timestamptz, timestamptz, bigint, interval, integer, timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal._credits_state(bigint, timestamptz, timestamptz, bigint, interval, integer, timestamptz) IS 'A key''s credits at a time, as verify computes them: start of the spending period, balance of the period, next refill (NULL: none).';

CREATE FUNCTION apikeys_internal._pending_credits(INOUT key_id uuid, OUT used bigint, OUT period_start timestamptz)
    RETURNS record
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'apikeys_pending_credits';
REVOKE ALL ON FUNCTION apikeys_internal._pending_credits(uuid) FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal._pending_credits(uuid) IS 'Credits a key spent as shared memory holds them (used) and the spending period they count in; NULLs without an entry or for a key the caller cannot see.';

-- A key's credits at time t (the caller's one clock read): balance of the
-- period, spent in it (shared memory if it holds the period, else the
-- flushed row), remaining, next refill; no row for a key without credits.
CREATE FUNCTION apikeys_internal._credits_now(k apikeys.credential, t timestamptz, OUT balance bigint, OUT spent bigint,
        OUT remaining bigint, OUT period_start timestamptz, OUT next_refill timestamptz)
    RETURNS record
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.balance, x.spent, GREATEST(s.balance OPERATOR(pg_catalog.-) x.spent, 0),
           s.period_start, s.next_refill
      FROM apikeys_internal._credits_state(k.credits, k.credits_at, k.credits_since, k.credits_refill,
                                           k.credits_refill_interval, k.credits_refill_day, t) s
     CROSS JOIN LATERAL (
        SELECT CASE WHEN p.period_start OPERATOR(pg_catalog.=) s.period_start THEN p.used
                    WHEN p.period_start OPERATOR(pg_catalog.>) s.period_start THEN 0
                    ELSE COALESCE((SELECT u.used FROM apikeys.usage u
                                    WHERE u.key_id OPERATOR(pg_catalog.=) k.key_id
                                      AND u.period_start OPERATOR(pg_catalog.=) s.period_start), 0)
               END AS spent
          FROM (SELECT NULL) one
          LEFT JOIN apikeys_internal._pending_credits(k.key_id) p ON true) x
     WHERE k.credits IS NOT NULL
$$;
REVOKE ALL ON FUNCTION apikeys_internal._credits_now(apikeys.credential, timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal._credits_now(apikeys.credential, timestamptz) IS 'A key''s credits at a time (balance, spent, remaining, period start, next refill), pending charges included; no row without credits.';

CREATE FUNCTION apikeys_internal.apikey_set_credits(
    key_id          uuid,
    credits         bigint,
    refill_amount   bigint DEFAULT NULL,
    refill_interval interval DEFAULT NULL,
    refill_day      integer DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, 'key_set_credits');
    t timestamptz := clock_timestamp();
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, 'key_set_credits');
    PERFORM apikeys_internal._require_active_tenant(k.tenant, 'key_set_credits', k.key_id);
    IF credits IS NULL AND (refill_amount IS NOT NULL OR refill_interval IS NOT NULL OR refill_day IS NOT NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_refill: a refill needs credits',
            HINT = 'Pass credits NULL alone to remove the key''s credits.';
    END IF;
    IF credits OPERATOR(pg_catalog.<) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_credits: credits must be 0 or more';
    END IF;
    IF refill_amount IS NOT NULL AND refill_amount OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_refill_amount: refill_amount must be positive';
    END IF;
    IF (refill_amount IS NULL) OPERATOR(pg_catalog.<>) (refill_interval IS NULL AND refill_day IS NULL)
       OR (refill_interval IS NOT NULL AND refill_day IS NOT NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_refill: a refill takes a refill_amount and exactly one of refill_interval, refill_day';
    END IF;
    IF refill_interval IS NOT NULL AND (refill_interval OPERATOR(pg_catalog.<) '1 second'
            OR refill_interval OPERATOR(pg_catalog.>) '366 days'
            OR date_part('month', refill_interval) OPERATOR(pg_catalog.<>) 0
            OR date_part('year', refill_interval) OPERATOR(pg_catalog.<>) 0
            OR extract(epoch FROM refill_interval) OPERATOR(pg_catalog.<>) trunc(extract(epoch FROM refill_interval))) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_refill_interval: refill_interval must be whole seconds from 1 second to 366 days (in days, not months)',
            HINT = 'For a monthly refill pass refill_day.';
    END IF;
    IF refill_day IS NOT NULL AND refill_day NOT BETWEEN 1 AND 31 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_refill_day: refill_day must be between 1 and 31',
            HINT = 'A month shorter than refill_day refills on its last day.';
    END IF;
    IF credits IS NOT NULL AND k.usage_limit IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('credits_conflict: key %s has a usage cap', k.key_id),
            HINT = 'A key has credits or a usage cap: remove the cap with apikey_set_policy first (a cap per period is credits that refill).';
    END IF;
    UPDATE apikeys.credential c SET
        credits                 = apikey_set_credits.credits,
        credits_at              = CASE WHEN apikey_set_credits.credits IS NOT NULL THEN t END,
        credits_since           = CASE WHEN apikey_set_credits.credits IS NOT NULL THEN t END,
        credits_refill          = apikey_set_credits.refill_amount,
        credits_refill_interval = apikey_set_credits.refill_interval,
        credits_refill_day      = apikey_set_credits.refill_day,
        updated_at              = now()
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
END;
$$;
SELECT apikeys_internal.publish('apikey_set_credits', 'Set (replace) a key''s credits: remaining uses, with an optional refill (refill_amount every refill_interval, or on refill_day of each month) that replaces the remaining uses; credits NULL removes them. Spending starts anew.');

-- add (amount > 0) or subtract (amount < 0) credits of key k, now
CREATE FUNCTION apikeys_internal._change_credits(key_id uuid, amount bigint, action text)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys_internal._lock_key(key_id, action);
    t timestamptz := clock_timestamp();
    n record;
BEGIN
    PERFORM apikeys_internal._require_not_revoked(k, action);
    PERFORM apikeys_internal._require_active_tenant(k.tenant, action, k.key_id);
    IF amount IS NULL OR amount OPERATOR(pg_catalog.=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_credits: amount must be positive';
    END IF;
    IF k.credits IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('credits_not_set: key %s has no credits', k.key_id),
            HINT = 'Give it credits with apikey_set_credits first.';
    END IF;
    -- the row is locked: the balance read here is the latest, and stays so;
    -- it is the balance at t, when the new one is written (a refill after
    -- t replaces it)
    n := apikeys_internal._credits_now(k, t);
    IF amount OPERATOR(pg_catalog.>) 0 AND amount OPERATOR(pg_catalog.>) (9223372036854775807 OPERATOR(pg_catalog.-) n.balance) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('invalid_credits: key %s would have more than 9223372036854775807 credits', k.key_id);
    END IF;
    IF amount OPERATOR(pg_catalog.<) 0 AND (OPERATOR(pg_catalog.-) amount) OPERATOR(pg_catalog.>) n.remaining THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('insufficient_credits: key %s has %s credits left, cannot subtract %s',
                             k.key_id, n.remaining, OPERATOR(pg_catalog.-) amount),
            HINT = 'Subtract at most the remaining credits, or set them with apikey_set_credits.';
    END IF;
    -- the period's balance (a refill since the last write included) plus the change
    UPDATE apikeys.credential c SET
        credits    = n.balance OPERATOR(pg_catalog.+) amount,
        credits_at = t,
        updated_at = now()
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
    RETURN n.remaining OPERATOR(pg_catalog.+) amount;
END;
$$;
REVOKE ALL ON FUNCTION apikeys_internal._change_credits(uuid, bigint, text) FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal._change_credits(uuid, bigint, text) IS 'Add (amount > 0) or subtract (amount < 0) credits of a key under its row lock; returns the credits left (pending charges counted).';

CREATE FUNCTION apikeys_internal.apikey_add_credits(key_id uuid, amount bigint)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF amount OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_credits: amount must be positive';
    END IF;
    RETURN apikeys_internal._change_credits(key_id, amount, 'key_add_credits');
END;
$$;
SELECT apikeys_internal.publish('apikey_add_credits', 'Add credits to a key (a top-up, until the next refill replaces them); returns the credits left.');

CREATE FUNCTION apikeys_internal.apikey_subtract_credits(key_id uuid, amount bigint)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF amount OPERATOR(pg_catalog.<=) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_credits: amount must be positive';
    END IF;
    RETURN apikeys_internal._change_credits(key_id, OPERATOR(pg_catalog.-) amount, 'key_subtract_credits');
END;
$$;
SELECT apikeys_internal.publish('apikey_subtract_credits', 'Subtract credits from a key, at most those left (insufficient_credits otherwise); returns the credits left.');

-- Rows of apikeys.key_credits: the visible tenants' keys with credits, what
-- is left of them now (pending charges included) and their refill
-- (apikeys.tenants explains why a reader function).
CREATE FUNCTION apikeys_internal.read_key_credits()
    RETURNS TABLE (key_id uuid, tenant text, name text, credits bigint, spent bigint, remaining bigint,
                   period_start timestamptz, next_refill timestamptz, refill_amount bigint,
                   refill_interval interval, refill_day integer, credits_at timestamptz)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
    t timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    SELECT c.key_id, c.tenant, c.name, cr.balance, cr.spent, cr.remaining, cr.period_start, cr.next_refill,
           c.credits_refill, c.credits_refill_interval, c.credits_refill_day, c.credits_at
      FROM apikeys.credential c
     CROSS JOIN LATERAL apikeys_internal._credits_now(c, t) cr
     WHERE c.credits IS NOT NULL AND (v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v));
END;
$$;
SELECT apikeys_internal.publish('read_key_credits', 'Rows of apikeys.key_credits: the keys with credits of the tenants the caller may read.');
CREATE VIEW apikeys.key_credits WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_key_credits();
COMMENT ON VIEW apikeys.key_credits IS 'Per key with credits: the credits of the current refill period, spent, left (pending charges included), the refill.';
COMMENT ON COLUMN apikeys.key_credits.key_id IS 'The key.';
COMMENT ON COLUMN apikeys.key_credits.tenant IS 'The key''s tenant.';
COMMENT ON COLUMN apikeys.key_credits.name IS 'The key''s name.';
COMMENT ON COLUMN apikeys.key_credits.credits IS 'Credits of the current period: as last set, added or subtracted, or the refill amount once a refill came after that.';
COMMENT ON COLUMN apikeys.key_credits.spent IS 'Credits verifications spent in the current period (flushed or still in shared memory).';
COMMENT ON COLUMN apikeys.key_credits.remaining IS 'Credits left: credits - spent, at least 0.';
COMMENT ON COLUMN apikeys.key_credits.period_start IS 'Start of the current period: the last set, or the last refill after it.';
COMMENT ON COLUMN apikeys.key_credits.next_refill IS 'When the next refill replaces what is left; NULL: no refill.';
COMMENT ON COLUMN apikeys.key_credits.refill_amount IS 'Credits a refill gives; NULL: no refill.';
COMMENT ON COLUMN apikeys.key_credits.refill_interval IS 'Refill every interval (aligned to 2000-01-01 UTC); NULL: monthly or none.';
COMMENT ON COLUMN apikeys.key_credits.refill_day IS 'Refill on this day of each month at 00:00 UTC (a shorter month: its last day); NULL: by interval or none.';
COMMENT ON COLUMN apikeys.key_credits.credits_at IS 'When the credits were last set, added or subtracted.';

COMMENT ON COLUMN apikeys.credential.credits IS 'Credits: the balance of remaining uses as of credits_at (before the uses since); NULL: none. apikey_set_credits.';
COMMENT ON COLUMN apikeys.credential.credits_at IS 'When the credits balance was last written (set, add, subtract); a refill after it replaces the balance.';
COMMENT ON COLUMN apikeys.credential.credits_since IS 'When the credits were last set: uses count against them from here (and anew from each refill).';
COMMENT ON COLUMN apikeys.credential.credits_refill IS 'Credits a refill sets the balance to; NULL: no refill.';
COMMENT ON COLUMN apikeys.credential.credits_refill_interval IS 'Refill every interval (aligned to 2000-01-01 UTC); NULL: monthly or none.';
COMMENT ON COLUMN apikeys.credential.credits_refill_day IS 'Refill on this day of each month at 00:00 UTC (a shorter month: its last day); NULL: by interval or none.';

-- The limits the last apikey_verify or authenticate of this session checked.
CREATE FUNCTION apikeys.last_verify_limits(OUT scope text, OUT name text, OUT max_uses integer,
                                           OUT remaining integer, OUT reset timestamptz,
                                           OUT passed boolean, OUT tightest boolean)
    RETURNS SETOF record
    LANGUAGE C VOLATILE PARALLEL RESTRICTED ROWS 7 AS 'MODULE_PATHNAME', 'apikeys_last_verify_limits';
COMMENT ON FUNCTION apikeys.last_verify_limits() IS 'Each limit (key rate_limit, key and tenant named limits, the PostgREST route''s) the last verification of this session checked: what remains, when it resets, which one the rate_* columns report.';

------------------------------------------------------------------------------
-- Observability
------------------------------------------------------------------------------

-- The verdicts apikey_verify can reach, from the library's one list
-- (src/verdicts.h): code (the index in _pending_usage's counts, less one),
-- name, whether apikeys.usage has a count_<name> column, and the PostgREST
-- gate's HTTP status.  The SQL below reads it instead of repeating it;
-- test policy_verdicts checks what must still be spelled out (the columns).
CREATE FUNCTION apikeys_internal.verdicts(OUT code integer, OUT name text, OUT counted boolean,
                                          OUT http_status integer)
    RETURNS SETOF record
    LANGUAGE C STABLE PARALLEL SAFE ROWS 16 AS 'MODULE_PATHNAME', 'apikeys_verdicts_sql';
REVOKE ALL ON FUNCTION apikeys_internal.verdicts() FROM PUBLIC;
COMMENT ON FUNCTION apikeys_internal.verdicts() IS 'The verdicts of apikey_verify (code, name, counted in apikeys.usage, HTTP status), from the library''s list.';

CREATE FUNCTION apikeys_internal._verification_totals(OUT outcome text, OUT total bigint)
    RETURNS SETOF record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_verification_totals';
-- one key at a time, and only a key the caller can see in apikeys.credential
-- (its RLS; checked in C, src/stats.c): any other id, another tenant's or
-- none, gives the same row of NULLs
CREATE FUNCTION apikeys_internal._pending_usage(INOUT key_id uuid, OUT last_used_at timestamptz,
                                       OUT used bigint, OUT counts bigint[])
    RETURNS record
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'apikeys_pending_usage';
CREATE FUNCTION apikeys_internal._runtime(
    OUT preloaded boolean, OUT shmem_bytes bigint,
    OUT cache_capacity integer, OUT cache_entries bigint, OUT cache_hits bigint,
    OUT cache_misses bigint, OUT cache_evictions bigint,
    OUT tracked_capacity integer, OUT tracked_keys bigint, OUT unflushed_keys bigint,
    OUT tracking_dropped bigint, OUT flushed_rows bigint, OUT flush_errors bigint,
    OUT last_flush_at timestamptz, OUT flush_workers integer, OUT cache_generation bigint)
    RETURNS record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_runtime';

CREATE VIEW apikeys.verifications AS
SELECT outcome, total FROM apikeys_internal._verification_totals();
COMMENT ON VIEW apikeys.verifications IS 'Verifications since server start by outcome, all databases (a Prometheus counter per outcome).';

CREATE VIEW apikeys.runtime AS
SELECT r.*, clock_timestamp() OPERATOR(pg_catalog.-) r.last_flush_at AS flush_lag
  FROM apikeys_internal._runtime() r;
COMMENT ON VIEW apikeys.runtime IS 'Shared memory use, policy cache and usage-flush figures.';

-- Rows of apikeys.key_usage: flushed figures plus what shared memory holds,
-- for the keys of the tenants the caller may read (apikeys.tenants explains
-- why a reader function).
CREATE FUNCTION apikeys_internal.read_key_usage()
    RETURNS TABLE (key_id uuid, tenant text, name text, last_used_at timestamptz, usage_limit bigint,
                   used bigint, usage_remaining bigint, valid bigint, disabled bigint, revoked bigint,
                   expired bigint, tenant_inactive bigint, ip_not_allowed bigint,
                   insufficient_scope bigint, rate_limited bigint, usage_exceeded bigint,
                   flushed_at timestamptz, has_unflushed boolean)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
    -- each verdict's index in _pending_usage's counts, from the library's
    -- list (a constant once the plan is made: force_custom_plan)
    ix jsonb := (SELECT jsonb_object_agg(d.name, d.code OPERATOR(pg_catalog.+) 1)
                   FROM apikeys_internal.verdicts() d);
BEGIN
    RETURN QUERY
    SELECT c.key_id, c.tenant, c.name,
           GREATEST(u.last_used_at, p.last_used_at) AS last_used_at,
           -- credits: the balance of the period (used + usage_remaining)
           COALESCE(c.usage_limit, cr.balance) AS usage_limit,
           CASE WHEN c.credits IS NOT NULL THEN cr.spent ELSE COALESCE(p.used, u.used, 0) END AS used,
           CASE WHEN c.usage_limit IS NOT NULL
                THEN GREATEST(c.usage_limit OPERATOR(pg_catalog.-) COALESCE(p.used, u.used, 0), 0)
                ELSE cr.remaining END AS usage_remaining,
           COALESCE(u.count_valid, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'valid')::integer], 0) AS valid,
           COALESCE(u.count_disabled, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'disabled')::integer], 0) AS disabled,
           COALESCE(u.count_revoked, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'revoked')::integer], 0) AS revoked,
           COALESCE(u.count_expired, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'expired')::integer], 0) AS expired,
           COALESCE(u.count_tenant_inactive, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'tenant_inactive')::integer], 0) AS tenant_inactive,
           COALESCE(u.count_ip_not_allowed, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'ip_not_allowed')::integer], 0) AS ip_not_allowed,
           COALESCE(u.count_insufficient_scope, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'insufficient_scope')::integer], 0) AS insufficient_scope,
           COALESCE(u.count_rate_limited, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'rate_limited')::integer], 0) AS rate_limited,
           COALESCE(u.count_usage_exceeded, 0) OPERATOR(pg_catalog.+) COALESCE(p.counts[(ix OPERATOR(pg_catalog.->>) 'usage_exceeded')::integer], 0) AS usage_exceeded,
           u.flushed_at,
           p.key_id IS NOT NULL AND (p.counts OPERATOR(pg_catalog.<>) array_fill(0::bigint, ARRAY[cardinality(p.counts)])) AS has_unflushed
      FROM apikeys.credential c
      LEFT JOIN apikeys.usage u ON u.key_id OPERATOR(pg_catalog.=) c.key_id
      LEFT JOIN LATERAL apikeys_internal._pending_usage(c.key_id) p ON true
      -- only keys with credits pay for the call (a one-time filter)
      LEFT JOIN LATERAL (SELECT * FROM apikeys_internal._credits_now(c, clock_timestamp()) n
                          WHERE c.credits IS NOT NULL) cr ON true
     WHERE v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;
SELECT apikeys_internal.publish('read_key_usage', 'Rows of apikeys.key_usage: usage of the keys of the tenants the caller may read.');
CREATE VIEW apikeys.key_usage WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_key_usage();
COMMENT ON VIEW apikeys.key_usage IS 'Per key: last use, uses charged against the cap, verifications by outcome (flushed + pending).';

ALTER TABLE apikeys.usage ENABLE ROW LEVEL SECURITY;
CREATE POLICY usage_read ON apikeys.usage FOR SELECT
    USING (EXISTS (SELECT 1 FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) usage.key_id));

------------------------------------------------------------------------------
-- Monitoring (docs/monitoring.md): what a metrics collector such as
-- postgres_exporter reads.  A monitoring role gets EXECUTE on these readers
-- and on the shared-memory figures behind apikeys.verifications and
-- apikeys.runtime (apikeys.grant_monitor), never SELECT on a table: it sees
-- tenant ids, key ids and counts, no name, scope, metadata or secret.
------------------------------------------------------------------------------

-- Verifications by outcome, per tenant (every tenant and outcome, zeros
-- included) or per key (per_key: only the outcomes a key has had), flushed
-- plus pending, as apikeys.key_usage counts them.  Outcomes that name no key
-- (malformed, not_found) are in apikeys.verifications only.
CREATE FUNCTION apikeys_internal.monitor_usage(per_key boolean DEFAULT false)
    RETURNS TABLE (tenant text, key_id uuid, outcome text, total bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF per_key IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'invalid_per_key: per_key must be true or false';
    END IF;
    RETURN QUERY
    WITH outcomes (n, outcome) AS (
        -- every verdict that names a key, from the library's list; n: its
        -- index in apikeys_internal._pending_usage's counts
        SELECT d.code OPERATOR(pg_catalog.+) 1, d.name FROM apikeys_internal.verdicts() d WHERE d.counted),
    k AS (
        SELECT c.tenant, c.key_id, to_jsonb(u) AS flushed, p.counts AS pending
          FROM apikeys.credential c
          LEFT JOIN apikeys.usage u ON u.key_id OPERATOR(pg_catalog.=) c.key_id
          LEFT JOIN LATERAL apikeys_internal._pending_usage(c.key_id) p ON true),
    o AS (
        SELECT k.tenant, k.key_id, x.outcome,
               COALESCE((k.flushed OPERATOR(pg_catalog.->>) ('count_' OPERATOR(pg_catalog.||) x.outcome))::bigint, 0)
               OPERATOR(pg_catalog.+) COALESCE(k.pending[x.n], 0) AS total
          FROM k CROSS JOIN outcomes x)
    SELECT o.tenant, o.key_id, o.outcome, o.total
      FROM o
     WHERE per_key AND o.total OPERATOR(pg_catalog.>) 0
    UNION ALL
    SELECT t.tenant, NULL::uuid, x.outcome, COALESCE(sum(o.total), 0)::bigint
      FROM apikeys.tenant t
     CROSS JOIN outcomes x
      LEFT JOIN o ON o.tenant OPERATOR(pg_catalog.=) t.tenant AND o.outcome OPERATOR(pg_catalog.=) x.outcome
     WHERE NOT per_key
     GROUP BY t.tenant, x.n, x.outcome
     ORDER BY 1, 2, 3;
END;
$$;
SELECT apikeys_internal.publish('monitor_usage', 'For monitoring roles: verifications by outcome per tenant, or per key (per_key => true; nonzero outcomes only), flushed plus pending.');

-- One row per tenant: whether it is active, its keys by state, and its audit
-- chain's head (newest row id and time; an index probe each).
CREATE FUNCTION apikeys_internal.monitor_tenants()
    RETURNS TABLE (tenant text, active boolean, keys_active bigint, keys_disabled bigint,
                   keys_revoked bigint, keys_expired bigint, audit_head_id bigint, audit_head_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT t.tenant, t.active,
           count(c.key_id) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'active'
                                     AND (c.expires_at IS NULL OR c.expires_at OPERATOR(pg_catalog.>) now())),
           count(c.key_id) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'disabled'
                                     AND (c.expires_at IS NULL OR c.expires_at OPERATOR(pg_catalog.>) now())),
           count(c.key_id) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'revoked'),
           count(c.key_id) FILTER (WHERE c.status OPERATOR(pg_catalog.<>) 'revoked'
                                     AND c.expires_at OPERATOR(pg_catalog.<=) now()),
           h.audit_id, h.at
      FROM apikeys.tenant t
      LEFT JOIN apikeys.credential c ON c.tenant OPERATOR(pg_catalog.=) t.tenant
      LEFT JOIN LATERAL (SELECT a.audit_id, a.at FROM apikeys.audit a
                          WHERE a.chain OPERATOR(pg_catalog.=) t.tenant
                          ORDER BY a.audit_id DESC LIMIT 1) h ON true
     GROUP BY t.tenant, t.active, h.audit_id, h.at
     ORDER BY 1;
END;
$$;
SELECT apikeys_internal.publish('monitor_tenants', 'For monitoring roles: per tenant, whether it is active, its keys by state (active, disabled, revoked, expired) and its audit chain''s head.');

-- Not SECURITY DEFINER, as grant_verifier: the GRANTs need the rights of
-- the caller (the extension's owner or a superuser).
CREATE FUNCTION apikeys_internal.grant_monitor(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys_internal._check_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT SELECT ON apikeys.verifications, apikeys.runtime TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys_internal._verification_totals(), apikeys_internal._runtime(),'
                   ' apikeys.monitor_usage(boolean), apikeys.monitor_tenants() TO %I', role_name);
END;
$$;
SELECT apikeys_internal.publish('grant_monitor', 'Let a role read the monitoring figures (verifications, runtime, monitor_usage, monitor_tenants) without any table access.');

-- Undo grant_monitor (USAGE on the schema stays: other grants may need it).
CREATE FUNCTION apikeys_internal.revoke_monitor(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys_internal._check_role(role_name);
    EXECUTE format('REVOKE SELECT ON apikeys.verifications, apikeys.runtime FROM %I', role_name);
    EXECUTE format('REVOKE EXECUTE ON FUNCTION apikeys_internal._verification_totals(), apikeys_internal._runtime(),'
                   ' apikeys.monitor_usage(boolean), apikeys.monitor_tenants() FROM %I', role_name);
END;
$$;
SELECT apikeys_internal.publish('revoke_monitor', 'Undo grant_monitor: the monitoring figures'' privileges (USAGE on the schema stays).');
-- publish() revokes PUBLIC's EXECUTE from the bodies; the entry points lose
-- it here (in a fresh install 90_privileges.sql would too, an upgrade has
-- no such step): monitor_usage and monitor_tenants read every tenant.
REVOKE ALL ON FUNCTION apikeys.monitor_usage(boolean), apikeys.monitor_tenants(),
    apikeys.grant_monitor(name), apikeys.revoke_monitor(name) FROM PUBLIC;
