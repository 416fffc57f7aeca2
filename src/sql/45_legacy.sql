------------------------------------------------------------------------------
-- Legacy key formats and key import (1.1; docs/migration.md)
--
-- Keys that users issued before apikeys keep working: a format registered
-- here describes their shape (literal prefix, length, alphabet) and the
-- digest the old system stored; apikey_import* moves those digests into
-- apikeys.secret under a lookup digest bound to the format (SHA-256 of
-- "apikeys-legacy-1", the format id and the legacy digest: src/legacy_format.c),
-- and apikey_verify serves them like native keys.
------------------------------------------------------------------------------

CREATE TABLE apikeys.key_format (
    format_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant        text COLLATE "C",   -- NULL: every tenant (no foreign key: see key_format_tenant_deleted)
    name          text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    prefix        text NOT NULL CHECK (prefix ~ '^[!-~]{0,32}$'),
    key_length    integer NOT NULL CHECK (key_length BETWEEN 16 AND 256 AND key_length > length(prefix)),
    alphabet      text NOT NULL,
    head_alphabet text,
    digest        text NOT NULL CHECK (digest IN ('sha256', 'sha512')),
    digest_offset integer NOT NULL DEFAULT 0 CHECK (digest_offset >= 0 AND digest_offset < key_length),
    native_prefix text NOT NULL CHECK (native_prefix ~ '^[a-z][a-z0-9]*(_[a-z0-9]+)*$' AND length(native_prefix) <= 32),
    description   text CHECK (char_length(description) <= 2000),
    created_by    name NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (tenant, name)
);
COMMENT ON TABLE apikeys.key_format IS 'Formats of keys issued before apikeys (legacy keys): shape and stored digest; keys of one format verify through it.';

-- Which format a secret was imported under: apikeys.secret.format_id (NULL
-- for a native secret).  A column of the secret's own row, so an import
-- writes one row per secret and the link goes with the secret (rotated away,
-- deleted, truncated).  No foreign key: a check per imported row would cost
-- more than the rest of its row, and key_format_drop() refuses while a
-- secret of the format can still verify (then deletes the rest).  The
-- lookup digest embeds the format, so a secret whose format is gone can
-- never match a presented key again.
ALTER TABLE apikeys.secret ADD COLUMN format_id uuid;
CREATE INDEX secret_format_idx ON apikeys.secret (format_id) WHERE format_id IS NOT NULL;
COMMENT ON COLUMN apikeys.secret.format_id IS 'The legacy format an imported secret verifies through (apikeys.key_format); NULL: a native secret.';

SELECT pg_catalog.pg_extension_config_dump('apikeys.key_format', '');
ALTER TABLE apikeys.key_format ENABLE ROW LEVEL SECURITY;
CREATE POLICY key_format_read ON apikeys.key_format FOR SELECT
    USING (tenant IS NULL
           OR tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys.visible_tenants('read')), ARRAY[tenant])));

CREATE TYPE apikeys.legacy_key AS (
    digest       text,          -- the digest the old system stored (hex or base64)
    name         text,
    scopes       text[],
    expires_at   timestamptz,   -- may be past: the key imports as expired
    metadata     jsonb,
    created_at   timestamptz,   -- NULL: now
    hint         text,          -- the visible part shown to users (NULL: the format's prefix and '...')
    status       text,          -- active (NULL), disabled or revoked
    revoked_at   timestamptz,   -- for status revoked (NULL: now)
    description  text,
    rate_limit   integer,
    rate_window  interval,      -- NULL with a rate_limit: 1 minute
    last_used_at timestamptz,
    source_id    text,          -- names the row in errors; not stored
    head         text           -- the key's first digest_offset characters when the digest leaves
                                -- them out and they are not the literal prefix (KeyHippo's prefix)
);
COMMENT ON TYPE apikeys.legacy_key IS 'One key to import: its stored digest and what apikeys keeps about it (apikey_import_rows, apikey_import_many).';

------------------------------------------------------------------------------
-- C helpers (src/legacy_format.c)
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal._key_format_alphabet(name text) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_key_format_alphabet';
COMMENT ON FUNCTION apikeys_internal._key_format_alphabet(text) IS 'The characters of a key-format alphabet (hex, HEX, hex_any, base64, base64url, base58, alnum); NULL for another name.';

CREATE FUNCTION apikeys_internal._legacy_digest(format_id uuid, digest text, stored text, encoding text, head text) RETURNS bytea
    LANGUAGE C IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_legacy_digest_sql';
COMMENT ON FUNCTION apikeys_internal._legacy_digest(uuid, text, text, text, text) IS 'The lookup digest apikey_verify computes for a key of format format_id starting with head whose legacy system stored `stored` (hex or base64).';

CREATE FUNCTION apikeys_internal._sha512(bytea) RETURNS bytea
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sha512_sql';
COMMENT ON FUNCTION apikeys_internal._sha512(bytea) IS 'The SHA-512 apikey_verify computes for SHA-512 formats (for tests).';

CREATE FUNCTION apikeys_internal._lock_key_shape(integer, text) RETURNS void
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'apikeys_lock_key_shape';
COMMENT ON FUNCTION apikeys_internal._lock_key_shape(integer, text) IS 'Serialize registrations of formats that could overlap (one key length and prefix), until commit, without waiting: format_registration_busy.';
CREATE FUNCTION apikeys_internal._lock_format_tenant(text) RETURNS void
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'apikeys_lock_format_tenant';
COMMENT ON FUNCTION apikeys_internal._lock_format_tenant(text) IS 'Serialize one tenant''s format registrations (its format limit), until commit, without waiting: format_registration_busy.';

CREATE FUNCTION apikeys_internal._key_format_changed() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'apikeys_key_format_changed';
COMMENT ON FUNCTION apikeys_internal._key_format_changed() IS 'Statement trigger: every backend rereads the format registry after this commit.';
CREATE TRIGGER key_format_changed AFTER INSERT OR UPDATE OR DELETE ON apikeys.key_format
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._key_format_changed();
ALTER TABLE apikeys.key_format ENABLE ALWAYS TRIGGER key_format_changed;

CREATE TRIGGER key_format_no_truncate BEFORE TRUNCATE ON apikeys.key_format
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._refuse_truncate();

-- Audit of the registry: key_format_registered / key_format_dropped, in the
-- format's tenant's chain ('' for a global format).
CREATE FUNCTION apikeys_internal._audit_key_format() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF apikeys_internal._bulk_loading() THEN
        RETURN NULL;   -- pg_restore: the restored audit has the history
    END IF;
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        PERFORM apikeys_internal._audit_write('key_format_registered', NEW.tenant, NULL,
                                     jsonb_build_object('new', to_jsonb(NEW)));
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        PERFORM apikeys_internal._audit_write('key_format_dropped', OLD.tenant, NULL,
                                     jsonb_build_object('old', to_jsonb(OLD)));
    ELSE
        PERFORM apikeys_internal._audit_write('key_format_updated', NEW.tenant, NULL,
                                     jsonb_build_object('old', to_jsonb(OLD), 'new', to_jsonb(NEW)));
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._audit_key_format() IS 'Row trigger: audit every change to apikeys.key_format.';
CREATE TRIGGER audit_key_format AFTER INSERT OR UPDATE OR DELETE ON apikeys.key_format
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_key_format();
ALTER TABLE apikeys.key_format ENABLE ALWAYS TRIGGER audit_key_format;

-- A deleted tenant's formats go with it (a tenant id created again must not
-- inherit them); its keys, and so their secrets, are gone already.
CREATE FUNCTION apikeys_internal._key_format_tenant_deleted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM apikeys.key_format g WHERE g.tenant OPERATOR(pg_catalog.=) OLD.tenant;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._key_format_tenant_deleted() IS 'Row trigger on apikeys.tenant: drop a deleted tenant''s key formats.';
CREATE TRIGGER key_format_tenant_deleted AFTER DELETE ON apikeys.tenant
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._key_format_tenant_deleted();

------------------------------------------------------------------------------
-- Registering and dropping formats
------------------------------------------------------------------------------

-- The characters position i (1-based) of a key of format f may hold: one
-- literal character, or an alphabet's characters.
CREATE FUNCTION apikeys_internal._key_format_chars(f apikeys.key_format, i integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN i OPERATOR(pg_catalog.<=) length(f.prefix) THEN substr(f.prefix, i, 1)
                WHEN i OPERATOR(pg_catalog.<=) f.digest_offset AND f.head_alphabet IS NOT NULL
                    THEN apikeys_internal._key_format_alphabet(f.head_alphabet)
                ELSE apikeys_internal._key_format_alphabet(f.alphabet) END
$$;
COMMENT ON FUNCTION apikeys_internal._key_format_chars(apikeys.key_format, integer) IS 'The characters a key of format f may hold at position i.';

-- Could one string match both formats?  Only at equal lengths, and only if
-- every position admits a common character.  Past both literal prefixes
-- that always holds (all alphabets share the digits 1-9), so only the
-- positions of the longer prefix are compared.
CREATE FUNCTION apikeys_internal._key_formats_overlap(a apikeys.key_format, b apikeys.key_format) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.key_length OPERATOR(pg_catalog.=) b.key_length AND NOT EXISTS (
        SELECT 1
          FROM generate_series(1, greatest(length(a.prefix), length(b.prefix))) i,
               LATERAL (SELECT apikeys_internal._key_format_chars(a, i) AS x,
                               apikeys_internal._key_format_chars(b, i) AS y) c
         WHERE CASE WHEN length(c.x) OPERATOR(pg_catalog.=) 1 THEN strpos(c.y, c.x) OPERATOR(pg_catalog.=) 0
                    WHEN length(c.y) OPERATOR(pg_catalog.=) 1 THEN strpos(c.x, c.y) OPERATOR(pg_catalog.=) 0
                    ELSE false END)
$$;
COMMENT ON FUNCTION apikeys_internal._key_formats_overlap(apikeys.key_format, apikeys.key_format) IS 'Could one string match both formats?';

CREATE FUNCTION apikeys_internal._format_invalid(msg text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'invalid_format: ' || msg;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._format_invalid(text) IS 'Raise invalid_format (22023).';

CREATE FUNCTION apikeys_internal.key_format_register(
    tenant        text,
    name          text,
    prefix        text,
    key_length    integer,
    alphabet      text,
    digest        text DEFAULT 'sha256',
    digest_offset integer DEFAULT 0,
    head_alphabet text DEFAULT NULL,
    native_prefix text DEFAULT NULL,
    description   text DEFAULT NULL)
    RETURNS apikeys.key_format
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f apikeys.key_format;
    other apikeys.key_format;
BEGIN
    PERFORM apikeys_internal._check_tenant_id(tenant);   -- NULL: a global format
    PERFORM apikeys_internal._authorize(tenant, 'key_format_register');
    -- the tenant row held (FOR KEY SHARE) to commit: a tenant_delete that
    -- ran meanwhile would miss this format and leave it to a tenant later
    -- created under the same id
    IF tenant IS NOT NULL THEN
        PERFORM 1 FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) key_format_register.tenant FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = format('tenant_not_found: tenant "%s" does not exist', tenant);
        END IF;
    END IF;
    IF name IS NULL OR name OPERATOR(pg_catalog.!~) '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_format_name: a format name is 1 to 63 of [a-z0-9_], starting with a letter';
    END IF;
    IF prefix IS NULL OR prefix OPERATOR(pg_catalog.!~) '^[!-~]{0,32}$' THEN
        PERFORM apikeys_internal._format_invalid('prefix must be 0 to 32 printable ASCII characters without spaces');
    END IF;
    IF tenant IS NOT NULL AND length(prefix) OPERATOR(pg_catalog.<) 3 THEN
        PERFORM apikeys_internal._format_invalid('a tenant''s format needs a literal prefix of at least 3 characters');
    END IF;
    IF key_length IS NULL OR key_length NOT BETWEEN 16 AND 256 OR key_length OPERATOR(pg_catalog.<=) length(prefix) THEN
        PERFORM apikeys_internal._format_invalid('key_length must be 16 to 256 and longer than the prefix');
    END IF;
    IF apikeys_internal._key_format_alphabet(alphabet) IS NULL
       OR (head_alphabet IS NOT NULL AND apikeys_internal._key_format_alphabet(head_alphabet) IS NULL) THEN
        PERFORM apikeys_internal._format_invalid('alphabets are hex, HEX, hex_any, base64, base64url, base58 or alnum');
    END IF;
    IF digest IS NULL OR digest NOT IN ('sha256', 'sha512') THEN
        PERFORM apikeys_internal._format_invalid('digest must be sha256 or sha512');
    END IF;
    IF digest_offset IS NULL OR (digest_offset OPERATOR(pg_catalog.<>) 0
           AND (digest_offset OPERATOR(pg_catalog.<) length(prefix)
                OR digest_offset OPERATOR(pg_catalog.>) (key_length OPERATOR(pg_catalog.-) 16))) THEN
        PERFORM apikeys_internal._format_invalid('digest_offset must be 0 (the whole key) or from the prefix''s length to key_length - 16');
    END IF;
    IF head_alphabet IS NOT NULL AND digest_offset OPERATOR(pg_catalog.<=) length(prefix) THEN
        PERFORM apikeys_internal._format_invalid('head_alphabet needs a digest_offset past the prefix');
    END IF;
    IF native_prefix IS NOT NULL AND (native_prefix OPERATOR(pg_catalog.!~) '^[a-z][a-z0-9]*(_[a-z0-9]+)*$'
                                      OR length(native_prefix) OPERATOR(pg_catalog.>) 32) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_prefix: native_prefix must be 1 to 32 characters: [a-z0-9] words joined by single underscores, starting with a letter';
    END IF;
    PERFORM apikeys_internal._check_description(description);

    f.format_id := gen_random_uuid();
    f.tenant := tenant;
    f.name := name;
    f.prefix := prefix;
    f.key_length := key_length;
    f.alphabet := alphabet;
    f.head_alphabet := head_alphabet;
    f.digest := digest;
    f.digest_offset := digest_offset;
    -- rotation issues native keys with this prefix: the legacy one when it is one
    f.native_prefix := coalesce(native_prefix,
        CASE WHEN rtrim(prefix, '_') OPERATOR(pg_catalog.~) '^[a-z][a-z0-9]*(_[a-z0-9]+)*$'
                  AND length(rtrim(prefix, '_')) OPERATOR(pg_catalog.<=) 32
             THEN rtrim(prefix, '_') ELSE 'ak' END);
    f.description := description;
    f.created_by := apikeys_internal._acting_role();
    f.created_at := now();

    -- one registration per key shape at a time, never waiting for another
    -- transaction: the overlap check holds at commit
    PERFORM apikeys_internal._lock_key_shape(key_length, prefix);
    -- a tenant's formats are few: each holds a shape others cannot register
    -- (counted under the tenant's registration lock: two of its
    -- transactions cannot both see room for one more)
    IF tenant IS NOT NULL THEN
        PERFORM apikeys_internal._lock_format_tenant(tenant);
    END IF;
    IF tenant IS NOT NULL AND (SELECT count(*) FROM apikeys.key_format g
                                WHERE g.tenant OPERATOR(pg_catalog.=) f.tenant) OPERATOR(pg_catalog.>=) 16 THEN
        RAISE EXCEPTION USING ERRCODE = 'program_limit_exceeded',
            MESSAGE = format('format_limit: tenant "%s" has 16 formats, the most a tenant may have', tenant),
            HINT = 'Drop a format whose keys are gone (apikeys.key_format_drop) first.';
    END IF;
    IF EXISTS (SELECT 1 FROM apikeys.key_format g
                WHERE g.tenant IS NOT DISTINCT FROM f.tenant AND g.name OPERATOR(pg_catalog.=) f.name) THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = format('format_exists: format "%s" is already registered%s', name,
                             CASE WHEN tenant IS NULL THEN ' globally' ELSE format(' for tenant "%s"', tenant) END);
    END IF;
    SELECT * INTO other FROM apikeys.key_format g
     WHERE g.key_length OPERATOR(pg_catalog.=) f.key_length AND apikeys_internal._key_formats_overlap(g, f)
     ORDER BY g.created_at LIMIT 1;
    IF FOUND THEN
        -- another tenant's format is not named
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = CASE WHEN other.tenant IS NULL OR other.tenant OPERATOR(pg_catalog.=) f.tenant
                           THEN format('format_overlaps: a key could match both this format and format "%s"', other.name)
                           ELSE 'format_overlaps: a key could match both this format and a format of another tenant' END,
            HINT = 'Formats are matched by prefix, length and alphabet across all tenants; one key must match at most one.';
    END IF;
    INSERT INTO apikeys.key_format VALUES (f.*) RETURNING * INTO f;
    RETURN f;
END;
$$;
SELECT apikeys_internal.publish('key_format_register', 'Register the format of keys issued before apikeys (tenant => NULL: for every tenant), so that they can be imported and verified.');

-- The format `name` that tenant t may import into: its own, else a global one.
CREATE FUNCTION apikeys_internal._format_for(t text, format_name text, p_action text) RETURNS apikeys.key_format
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f apikeys.key_format;
BEGIN
    SELECT * INTO f FROM apikeys.key_format g
     WHERE g.name OPERATOR(pg_catalog.=) format_name
       AND (g.tenant OPERATOR(pg_catalog.=) t OR g.tenant IS NULL)
     ORDER BY g.tenant NULLS LAST LIMIT 1;
    IF NOT FOUND THEN
        PERFORM apikeys_internal._deny(p_action, t, NULL, '42704',
            format('format_not_found: no key format "%s" for tenant "%s"', format_name, t),
            'Register it with apikeys.key_format_register(tenant, name, ...).');
    END IF;
    RETURN f;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._format_for(text, text, text) IS 'The format a tenant imports under that name: its own, else a global one; format_not_found otherwise.';

CREATE FUNCTION apikeys_internal.key_format_drop(tenant text, name text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f apikeys.key_format;
    n bigint;
BEGIN
    PERFORM apikeys_internal._check_tenant_id(tenant);   -- NULL: a global format
    PERFORM apikeys_internal._authorize(tenant, 'key_format_drop');
    SELECT * INTO f FROM apikeys.key_format g
     WHERE g.tenant IS NOT DISTINCT FROM key_format_drop.tenant AND g.name OPERATOR(pg_catalog.=) key_format_drop.name
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM apikeys_internal._deny('key_format_drop', tenant, NULL, '42704',
            format('format_not_found: no key format "%s" %s', name,
                   CASE WHEN tenant IS NULL THEN 'registered globally' ELSE format('for tenant "%s"', tenant) END));
    END IF;
    -- secrets whose rotation grace is over can never verify again
    DELETE FROM apikeys.secret s
     WHERE s.format_id OPERATOR(pg_catalog.=) f.format_id AND s.valid_until OPERATOR(pg_catalog.<=) now();
    SELECT count(*) INTO n FROM apikeys.secret s WHERE s.format_id OPERATOR(pg_catalog.=) f.format_id;
    IF n OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = format('format_in_use: %s secrets of format "%s" can still verify', n, name),
            HINT = 'Rotate those keys (apikeys.apikey_rotate) or delete them; apikeys.legacy_keys lists them.';
    END IF;
    DELETE FROM apikeys.key_format g WHERE g.format_id OPERATOR(pg_catalog.=) f.format_id;
END;
$$;
SELECT apikeys_internal.publish('key_format_drop', 'Drop a key format once no secret of it can verify (expired grace secrets are deleted first).');

------------------------------------------------------------------------------
-- Import
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal._import_fail(sqlstate text, msg text) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = msg;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._import_fail(text, text) IS 'Raise msg with sqlstate (an expression''s error branch).';

-- One import row checked and normalized, or an error.  Plain SQL without
-- SET: inlined into the set-based INSERT of apikeys_internal._import_keys.
CREATE FUNCTION apikeys_internal._import_values(k apikeys.legacy_key, f apikeys.key_format, enc text)
    RETURNS TABLE (name text, description text, scopes text[], metadata jsonb, status text,
                   expires_at timestamptz, created_at timestamptz, revoked_at timestamptz,
                   rate_limit integer, rate_window interval, hint text, digest bytea,
                   last_used_at timestamptz)
    LANGUAGE sql STABLE
AS $$
    SELECT apikeys_internal._check_name(coalesce(k.name, '')),
           apikeys_internal._check_description(k.description),
           apikeys_internal._normalize_scopes(coalesce(k.scopes, '{}')),
           apikeys_internal._check_metadata(coalesce(k.metadata, '{}')),
           CASE WHEN k.status IS NULL THEN 'active'
                WHEN k.status OPERATOR(pg_catalog.=) ANY ('{active,disabled,revoked}'::text[]) THEN k.status
                ELSE apikeys_internal._import_fail('22023', 'invalid_status: status must be active, disabled or revoked') END,
           CASE WHEN k.expires_at IS NULL OR k.expires_at OPERATOR(pg_catalog.=) 'infinity' THEN NULL
                WHEN pg_catalog.isfinite(k.expires_at) THEN k.expires_at
                ELSE apikeys_internal._import_fail('22023', 'invalid_expiry: expires_at must be a finite time (a past one imports the key as expired)')::timestamptz END,
           CASE WHEN k.created_at IS NULL THEN pg_catalog.now()
                WHEN pg_catalog.isfinite(k.created_at) AND k.created_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN k.created_at
                ELSE apikeys_internal._import_fail('22023', 'invalid_created_at: created_at must be a finite time, not in the future')::timestamptz END,
           CASE WHEN k.status IS DISTINCT FROM 'revoked' THEN NULL
                WHEN k.revoked_at IS NULL THEN pg_catalog.now()
                WHEN pg_catalog.isfinite(k.revoked_at) AND k.revoked_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN k.revoked_at
                ELSE apikeys_internal._import_fail('22023', 'invalid_revoked_at: revoked_at must be a finite time, not in the future')::timestamptz END,
           CASE WHEN k.rate_limit IS NULL OR k.rate_limit OPERATOR(pg_catalog.>) 0 THEN k.rate_limit
                ELSE apikeys_internal._import_fail('22023', 'invalid_rate_limit: rate_limit must be positive')::integer END,
           CASE WHEN k.rate_limit IS NULL AND k.rate_window IS NULL THEN NULL
                WHEN k.rate_limit IS NULL THEN apikeys_internal._import_fail('22023', 'invalid_rate_window: rate_window needs a rate_limit')::interval
                WHEN k.rate_window IS NULL THEN interval '1 minute'
                WHEN k.rate_window OPERATOR(pg_catalog.>=) '1 second' AND k.rate_window OPERATOR(pg_catalog.<=) '1 day'
                     AND date_part('month', k.rate_window) OPERATOR(pg_catalog.=) 0
                     AND date_part('year', k.rate_window) OPERATOR(pg_catalog.=) 0
                     AND extract(epoch FROM k.rate_window) OPERATOR(pg_catalog.=) trunc(extract(epoch FROM k.rate_window)) THEN k.rate_window
                ELSE apikeys_internal._import_fail('22023', 'invalid_rate_window: rate_window must be whole seconds from 1 second to 1 day')::interval END,
           CASE WHEN k.hint IS NULL THEN f.prefix OPERATOR(pg_catalog.||) '...'
                WHEN char_length(k.hint) BETWEEN 1 AND 64 AND k.hint OPERATOR(pg_catalog.!~) '[[:cntrl:]]' THEN k.hint
                ELSE apikeys_internal._import_fail('22023', 'invalid_hint: hint must be 1 to 64 characters without control characters') END,
           apikeys_internal._legacy_digest(f.format_id, f.digest, k.digest, enc, h.head),
           CASE WHEN k.last_used_at IS NULL OR (pg_catalog.isfinite(k.last_used_at) AND k.last_used_at OPERATOR(pg_catalog.<=) pg_catalog.now()) THEN k.last_used_at
                ELSE apikeys_internal._import_fail('22023', 'invalid_last_used_at: last_used_at must be a finite time, not in the future')::timestamptz END
      FROM (SELECT CASE
                WHEN f.digest_offset OPERATOR(pg_catalog.=) 0 AND k.head IS NULL THEN ''
                WHEN f.digest_offset OPERATOR(pg_catalog.=) 0
                    THEN apikeys_internal._import_fail('22023', 'invalid_head: the format digests the whole key; head must be NULL')
                WHEN k.head IS NULL AND f.digest_offset OPERATOR(pg_catalog.=) length(f.prefix) THEN f.prefix
                WHEN length(k.head) OPERATOR(pg_catalog.=) f.digest_offset
                     AND left(k.head, length(f.prefix)) OPERATOR(pg_catalog.=) f.prefix
                     AND ltrim(substr(k.head, length(f.prefix) OPERATOR(pg_catalog.+) 1),
                               apikeys_internal._key_format_alphabet(coalesce(f.head_alphabet, f.alphabet))) OPERATOR(pg_catalog.=) ''
                    THEN k.head
                ELSE apikeys_internal._import_fail('22023', 'invalid_head: head must be the key''s first digest_offset characters, in the format''s shape') END AS head) h
$$;
COMMENT ON FUNCTION apikeys_internal._import_values(apikeys.legacy_key, apikeys.key_format, text) IS 'One import row, checked and normalized (raises on a bad field).';

-- The first row of a failed import batch and its error: rows are checked
-- one by one in order (a subtransaction each: this runs only after a
-- failure), then digests seen twice or known already.  NULL if no row is
-- at fault (the failure was something else).
CREATE FUNCTION apikeys_internal._import_first_bad(p_tenant text, p_keys apikeys.legacy_key[], f apikeys.key_format, enc text,
    OUT ord bigint, OUT err_state text, OUT err_message text, OUT err_detail text, OUT err_hint text)
    RETURNS record
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.legacy_key;
    i bigint := 0;
    dup bigint;
    twice bigint;
BEGIN
    FOREACH k IN ARRAY p_keys LOOP
        i := i OPERATOR(pg_catalog.+) 1;
        BEGIN
            -- every column: unused ones would not be computed (nor checked)
            PERFORM x.* FROM apikeys_internal._import_values(k, f, enc) x;
            PERFORM apikeys_internal.check_scopes(p_tenant, k.scopes);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT,
                                    err_detail = PG_EXCEPTION_DETAIL, err_hint = PG_EXCEPTION_HINT;
            ord := i;
            RETURN;
        END;
    END LOOP;
    SELECT d.ord, d.first INTO dup, twice
      FROM (SELECT v.ord, v.digest,
                   min(v.ord) OVER (PARTITION BY v.digest) AS first
              FROM (SELECT row_number() OVER () AS ord, x.digest
                      FROM unnest(p_keys) u, LATERAL apikeys_internal._import_values(u, f, enc) x) v) d
     WHERE d.first OPERATOR(pg_catalog.<) d.ord
        OR EXISTS (SELECT 1 FROM apikeys.secret s WHERE s.digest OPERATOR(pg_catalog.=) d.digest)
     ORDER BY d.ord LIMIT 1;
    IF FOUND THEN
        ord := dup;
        err_state := '23505';
        err_message := CASE WHEN twice OPERATOR(pg_catalog.<) dup
                        THEN format('duplicate_digest: the digest of this row is also in row %s', twice)
                        ELSE 'duplicate_digest: a key with this digest exists already' END;
    END IF;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._import_first_bad(text, apikeys.legacy_key[], apikeys.key_format, text) IS 'The first failing row of an import batch, with its error.';

-- Import p_keys into tenant p_tenant under format p_format: one key per row,
-- all or nothing.  A failure names its row (p_first_row numbers the first).
-- Audit: the triggers' key_created and secret_issued rows for each key, and
-- one keys_imported row for the call (format, count, first row).
CREATE FUNCTION apikeys_internal._import_keys(p_tenant text, p_format text, p_keys apikeys.legacy_key[],
                                              p_first_row bigint, p_encoding text)
    RETURNS uuid[]
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f apikeys.key_format;
    n integer := coalesce(cardinality(p_keys), 0);
    ids uuid[];
    bad record;
    src text;
    e_state text;
    e_msg text;
    e_detail text;
    e_hint text;
BEGIN
    PERFORM apikeys_internal._tenant_arg(p_tenant);
    PERFORM apikeys_internal._authorize(p_tenant, 'key_import');
    IF p_format IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_format_name: format must not be NULL';
    END IF;
    f := apikeys_internal._format_for(p_tenant, p_format, 'key_import');
    PERFORM 1 FROM apikeys.tenant t WHERE t.tenant OPERATOR(pg_catalog.=) p_tenant AND t.active FOR SHARE;
    IF NOT FOUND THEN
        PERFORM apikeys_internal._require_active_tenant(p_tenant, 'key_import', NULL);
    END IF;
    IF p_encoding IS NULL OR p_encoding NOT IN ('hex', 'base64') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_encoding: digest_encoding must be hex or base64';
    END IF;
    IF array_ndims(p_keys) OPERATOR(pg_catalog.>) 1 OR n OPERATOR(pg_catalog.>) 1000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_import: keys must be a one-dimensional array of at most 1000000 rows';
    END IF;
    IF n OPERATOR(pg_catalog.=) 0 THEN
        RETURN '{}';
    END IF;
    ids := ARRAY(SELECT apikeys_internal._key_id() FROM generate_series(1, n));

    BEGIN
        -- the tenant's scope registry holds for imported keys as for created
        -- ones: the batch's distinct scopes checked together, 64 at a time
        -- (the most one list may hold); the row that holds an unknown one
        -- is found below, on failure
        PERFORM apikeys_internal.check_scopes(p_tenant, pg_catalog.array_agg(d.x))
           FROM (SELECT u.x, (pg_catalog.dense_rank() OVER (ORDER BY u.x) OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog./) 64 AS chunk
                   FROM (SELECT DISTINCT x FROM unnest(p_keys) k, unnest(k.scopes) x WHERE x IS NOT NULL) u) d
          GROUP BY d.chunk;
        -- one statement: credentials (the main insert) first, then their
        -- secrets (with their format) and last uses, so each key's secret
        -- joins its key_created audit row
        WITH v AS MATERIALIZED (
            SELECT ids[u.ord] AS key_id, x.*
              FROM (SELECT k, row_number() OVER () AS ord FROM unnest(p_keys) k) u,
                   LATERAL apikeys_internal._import_values(u.k, f, p_encoding) x),
        s AS (
            INSERT INTO apikeys.secret (digest, key_id, hint, created_at, format_id)
            SELECT v.digest, v.key_id, v.hint, v.created_at, f.format_id FROM v),
        lu AS (
            INSERT INTO apikeys.usage (key_id, last_used_at)
            SELECT v.key_id, v.last_used_at FROM v WHERE v.last_used_at IS NOT NULL)
        INSERT INTO apikeys.credential (key_id, tenant, name, description, prefix, scopes, metadata,
                                        status, expires_at, created_by, created_at, updated_at,
                                        revoked_at, rate_limit, rate_window)
        SELECT v.key_id, p_tenant, v.name, v.description, f.native_prefix, v.scopes, v.metadata,
               v.status, v.expires_at, apikeys_internal._acting_role(), v.created_at, now(),
               v.revoked_at, v.rate_limit, v.rate_window
          FROM v;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT,
                                e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
        bad := apikeys_internal._import_first_bad(p_tenant, p_keys, f, p_encoding);
        IF bad.ord IS NOT NULL THEN
            -- the row's own error, naming the row
            src := (p_keys[bad.ord]).source_id;
            e_state := bad.err_state;
            e_msg := format('%s (import row %s%s)', bad.err_message,
                            p_first_row OPERATOR(pg_catalog.+) bad.ord OPERATOR(pg_catalog.-) 1,
                            CASE WHEN src IS NULL THEN '' ELSE format(', source_id %s', quote_literal(left(src, 100))) END);
            e_detail := coalesce(bad.err_detail, 'Nothing of this import was kept.');
            e_hint := bad.err_hint;
        ELSIF e_state OPERATOR(pg_catalog.=) '23505' THEN
            -- a concurrent import won the race: never echo the index's detail (a digest)
            e_msg := 'duplicate_digest: a key of this import was imported by a concurrent transaction';
            e_detail := 'Nothing of this import was kept.';
            e_hint := 'Run the import again: the row will be named.';
        END IF;
        IF e_hint IS NULL OR e_hint OPERATOR(pg_catalog.=) '' THEN
            RAISE EXCEPTION USING ERRCODE = e_state, MESSAGE = e_msg, DETAIL = coalesce(e_detail, '');
        END IF;
        RAISE EXCEPTION USING ERRCODE = e_state, MESSAGE = e_msg, DETAIL = coalesce(e_detail, ''), HINT = e_hint;
    END;
    -- what the rows above do not say: that these keys were imported, under which format
    PERFORM apikeys_internal._audit_write('keys_imported', p_tenant, NULL,
        jsonb_build_object('format', f.name, 'format_id', f.format_id, 'format_tenant', f.tenant,
                           'keys', n, 'first_row', p_first_row));
    RETURN ids;
END;
$$;
COMMENT ON FUNCTION apikeys_internal._import_keys(text, text, apikeys.legacy_key[], bigint, text) IS 'Import legacy keys into a tenant, all or nothing; errors name their row.';

CREATE FUNCTION apikeys_internal.apikey_import(
    tenant          text,
    format          text,
    digest          text,
    name            text,
    scopes          text[] DEFAULT '{}',
    expires_at      timestamptz DEFAULT NULL,
    metadata        jsonb DEFAULT '{}',
    created_at      timestamptz DEFAULT NULL,
    hint            text DEFAULT NULL,
    status          text DEFAULT 'active',
    revoked_at      timestamptz DEFAULT NULL,
    description     text DEFAULT NULL,
    rate_limit      integer DEFAULT NULL,
    rate_window     interval DEFAULT NULL,
    last_used_at    timestamptz DEFAULT NULL,
    digest_encoding text DEFAULT 'hex',
    head            text DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (apikeys_internal._import_keys(tenant, format,
        ARRAY[ROW(digest, name, scopes, expires_at, metadata, created_at, hint, status, revoked_at,
                  description, rate_limit, rate_window, last_used_at, NULL, head)::apikeys.legacy_key],
        1, digest_encoding))[1];
END;
$$;
SELECT apikeys_internal.publish('apikey_import', 'Import one key issued before apikeys, by the digest its old system stored; returns its key_id.');

CREATE FUNCTION apikeys_internal.apikey_import_rows(
    tenant          text,
    format          text,
    keys            apikeys.legacy_key[],
    digest_encoding text DEFAULT 'hex',
    first_row       bigint DEFAULT 1)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF first_row IS NULL OR first_row OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_import: first_row must be at least 1';
    END IF;
    RETURN coalesce(cardinality(apikeys_internal._import_keys(tenant, format, keys, first_row, digest_encoding)), 0);
END;
$$;
SELECT apikeys_internal.publish('apikey_import_rows', 'Import an array of legacy keys (up to 1,000,000), all or nothing; returns how many.');

-- The columns an import query returns (parse analysis only: nothing runs),
-- and whether each type is built in (src/import_query.c).  Callable by
-- anyone: it says only what the caller's own query would return.
CREATE FUNCTION apikeys.import_query_columns(query text, OUT name text, OUT type text, OUT built_in boolean)
    RETURNS SETOF record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_import_columns';
COMMENT ON FUNCTION apikeys.import_query_columns(text) IS 'The result columns of a query for apikey_import_many (parse analysis only), and whether each type is built in (apikey_import_many imports only those).';

-- The bulk form.  Not an entry point of its own but a SECURITY INVOKER
-- function: the query runs with the caller's rights and search_path, as if
-- the caller ran it, and only its rows reach the apikey_import_rows entry
-- point (which authorizes and audits), 10,000 at a time.  Its columns are
-- matched to apikeys.legacy_key by name; an unknown one is an error.
CREATE FUNCTION apikeys.apikey_import_many(
    tenant          text,
    format          text,
    query           text,
    digest_encoding text DEFAULT 'hex')
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    -- a row-level policy of the queried table would run its owner's code as
    -- the caller: such a table is refused instead (an error, no policy run)
    SET row_security = off
AS $$
DECLARE
    batch apikeys.legacy_key[] := '{}';
    j jsonb;
    total bigint := 0;
    first bigint := 1;
    extra text;
BEGIN
    IF query IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_import: query must not be NULL';
    END IF;
    -- a value of a type some role created is converted by that role's casts,
    -- as the caller (src/import_query.c): only built-in types are read
    SELECT pg_catalog.string_agg(pg_catalog.format('%s (%s)', pg_catalog.quote_ident(c.name), c.type), ', ')
      INTO extra FROM apikeys.import_query_columns(query) c WHERE NOT c.built_in;
    IF extra IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_import: the query has columns of types that are not built in: ' OPERATOR(pg_catalog.||) extra,
            DETAIL = 'A value of a type some role created is converted by that role''s casts, which would run with your rights.',
            HINT = 'Convert each in the query to a built-in type (for example label::text AS name), after checking with \dC that no role''s cast function would run.';
    END IF;
    FOR j IN EXECUTE 'SELECT pg_catalog.to_jsonb(q) FROM (' OPERATOR(pg_catalog.||) query OPERATOR(pg_catalog.||) E'\n) q' LOOP
        IF total OPERATOR(pg_catalog.=) 0 AND pg_catalog.cardinality(batch) OPERATOR(pg_catalog.=) 0 THEN
            SELECT pg_catalog.string_agg(pg_catalog.quote_ident(c), ', ') INTO extra
              FROM pg_catalog.jsonb_object_keys(j) c
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                WHERE a.attrelid OPERATOR(pg_catalog.=) 'apikeys.legacy_key'::pg_catalog.regclass
                                  AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
                                  AND a.attname::text OPERATOR(pg_catalog.=) c);
            IF extra IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = 'invalid_import: the query has columns apikeys.legacy_key does not: ' OPERATOR(pg_catalog.||) extra,
                    HINT = 'Name the columns digest, name, scopes, expires_at, metadata, created_at, hint, status, revoked_at, description, rate_limit, rate_window, last_used_at, source_id, head.';
            END IF;
        END IF;
        batch := pg_catalog.array_append(batch, pg_catalog.jsonb_populate_record(NULL::apikeys.legacy_key, j));
        IF pg_catalog.cardinality(batch) OPERATOR(pg_catalog.>=) 10000 THEN
            total := total OPERATOR(pg_catalog.+) apikeys.apikey_import_rows(tenant, format, batch, digest_encoding, first);
            first := total OPERATOR(pg_catalog.+) 1;
            batch := '{}';
        END IF;
    END LOOP;
    IF pg_catalog.cardinality(batch) OPERATOR(pg_catalog.>) 0 OR total OPERATOR(pg_catalog.=) 0 THEN
        total := total OPERATOR(pg_catalog.+) apikeys.apikey_import_rows(tenant, format, batch, digest_encoding, first);
    END IF;
    RETURN total;
END;
$$;
COMMENT ON FUNCTION apikeys.apikey_import_many(text, text, text, text) IS 'Import every row of a query (run with the caller''s rights; columns named as in apikeys.legacy_key), all or nothing; returns how many.';

------------------------------------------------------------------------------
-- Readers
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal.read_key_formats()
    RETURNS TABLE (tenant text, name text, prefix text, key_length integer, alphabet text,
                   head_alphabet text, digest text, digest_offset integer, native_prefix text,
                   description text, created_by name, created_at timestamptz, secrets bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 10
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
BEGIN
    RETURN QUERY
    SELECT g.tenant, g.name, g.prefix, g.key_length, g.alphabet, g.head_alphabet, g.digest,
           g.digest_offset, g.native_prefix, g.description, g.created_by, g.created_at,
           (SELECT count(*) FROM apikeys.secret s
              JOIN apikeys.credential c ON c.key_id OPERATOR(pg_catalog.=) s.key_id
             WHERE s.format_id OPERATOR(pg_catalog.=) g.format_id
               AND (v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v)))
      FROM apikeys.key_format g
     WHERE g.tenant IS NULL OR v IS NULL OR g.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;
SELECT apikeys_internal.publish('read_key_formats', 'Rows of apikeys.key_formats: global formats and those of the tenants the caller may read.');
CREATE VIEW apikeys.key_formats WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_key_formats();
COMMENT ON VIEW apikeys.key_formats IS 'Registered legacy key formats the caller may use, with how many of its secrets each still verifies.';

CREATE FUNCTION apikeys_internal.read_legacy_keys()
    RETURNS TABLE (key_id uuid, tenant text, format text, hint text, status text, valid_until timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
BEGIN
    RETURN QUERY
    SELECT c.key_id, c.tenant, g.name, s.hint, c.status, s.valid_until
      FROM apikeys.credential c
      JOIN apikeys.secret s ON s.key_id OPERATOR(pg_catalog.=) c.key_id
      JOIN apikeys.key_format g ON g.format_id OPERATOR(pg_catalog.=) s.format_id
     WHERE v IS NULL OR c.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;
SELECT apikeys_internal.publish('read_legacy_keys', 'Rows of apikeys.legacy_keys: the legacy secrets of the tenants the caller may read.');
CREATE VIEW apikeys.legacy_keys WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_legacy_keys();
COMMENT ON VIEW apikeys.legacy_keys IS 'Keys that still verify with a legacy secret (imported, not yet rotated away), with the secret''s format.';
-- Column comments (the views' columns say the same as the table's).
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT * FROM (VALUES
            ('tenant',        'The tenant whose keys have this format; NULL: a global format, usable for every tenant (registered by a global admin).'),
            ('name',          'The format''s name, unique per tenant (and among global formats).'),
            ('prefix',        'The literal text every key of the format starts with (may be empty for a global format).'),
            ('key_length',    'The length of every key of the format, prefix included.'),
            ('alphabet',      'The characters of the key after its prefix (or after its head): hex, HEX, hex_any, base64, base64url, base58 or alnum.'),
            ('head_alphabet', 'The alphabet of a random head between the prefix and digest_offset (KeyHippo''s prefix); NULL: none.'),
            ('digest',        'What the old system stored: sha256 or sha512 of the key from digest_offset on.'),
            ('digest_offset', 'Where the digested part starts (0: the whole key).'),
            ('native_prefix', 'The prefix of the native keys apikey_rotate issues in place of this format''s keys.'),
            ('description',   'What the format is, for people.'),
            ('created_by',    'The role that registered the format.'),
            ('created_at',    'When the format was registered.')) AS v(col, txt)
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON COLUMN apikeys.key_format.%I IS %L', c.col, c.txt);
        EXECUTE pg_catalog.format('COMMENT ON COLUMN apikeys.key_formats.%I IS %L', c.col, c.txt);
    END LOOP;
END;
$$;
COMMENT ON COLUMN apikeys.key_format.format_id IS 'The format''s id; imported secrets refer to it (apikeys.secret.format_id).';
COMMENT ON COLUMN apikeys.key_formats.secrets IS 'How many secrets of the caller''s tenants still verify through the format.';
COMMENT ON COLUMN apikeys.legacy_keys.key_id IS 'The key that still has a legacy secret.';
COMMENT ON COLUMN apikeys.legacy_keys.tenant IS 'The key''s tenant.';
COMMENT ON COLUMN apikeys.legacy_keys.format IS 'The name of the legacy secret''s format.';
COMMENT ON COLUMN apikeys.legacy_keys.hint IS 'The visible part of the legacy key.';
COMMENT ON COLUMN apikeys.legacy_keys.status IS 'The key''s status (active, disabled, revoked).';
COMMENT ON COLUMN apikeys.legacy_keys.valid_until IS 'When the legacy secret stops verifying (rotated with grace); NULL: while the key lives.';
COMMENT ON COLUMN apikeys.legacy_key.digest IS 'The digest the old system stored, in hex or base64.';
COMMENT ON COLUMN apikeys.legacy_key.name IS 'The key''s name.';
COMMENT ON COLUMN apikeys.legacy_key.scopes IS 'The key''s scopes (checked against the tenant''s scope registry).';
COMMENT ON COLUMN apikeys.legacy_key.expires_at IS 'When the key expires; a past time imports it as expired.';
COMMENT ON COLUMN apikeys.legacy_key.metadata IS 'The key''s metadata (a JSON object).';
COMMENT ON COLUMN apikeys.legacy_key.created_at IS 'When the old system created the key (NULL: now).';
COMMENT ON COLUMN apikeys.legacy_key.hint IS 'The visible part the old system showed (NULL: the format''s prefix and "...").';
COMMENT ON COLUMN apikeys.legacy_key.status IS 'active (NULL), disabled or revoked.';
COMMENT ON COLUMN apikeys.legacy_key.revoked_at IS 'When a revoked key was revoked (NULL: now).';
COMMENT ON COLUMN apikeys.legacy_key.description IS 'The key''s description.';
COMMENT ON COLUMN apikeys.legacy_key.rate_limit IS 'A rate limit to keep (per rate_window).';
COMMENT ON COLUMN apikeys.legacy_key.rate_window IS 'The rate limit''s window (NULL with a rate_limit: 1 minute).';
COMMENT ON COLUMN apikeys.legacy_key.last_used_at IS 'When the old system last saw the key used.';
COMMENT ON COLUMN apikeys.legacy_key.source_id IS 'The row''s id in the old table, named in errors; not stored.';
COMMENT ON COLUMN apikeys.legacy_key.head IS 'The key''s first digest_offset characters, when the digest leaves them out and they are not the literal prefix (KeyHippo''s random prefix).';
