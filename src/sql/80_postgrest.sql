------------------------------------------------------------------------------
-- PostgREST: a ready db-pre-request gate (docs/postgrest.md)
--
--   db-pre-request = "apikeys.pre_request"
--
-- PostgREST runs each request as one transaction: set_config() of role,
-- request.method, request.path, request.headers, ... then
-- SELECT "apikeys"."pre_request"(), then the request's query.  The gate reads
-- the key from the headers, verifies it with apikeys.authenticate() (which
-- binds the key's tenant for the rest of the transaction, so RLS policies on
-- apikeys.current_tenant() apply to the request's query), optionally switches
-- to a role mapped from the key, sets X-RateLimit-* response headers, or
-- raises SQLSTATE 'PGRST' with PostgREST's JSON message/detail contract to
-- answer 401, 403, 429 (or 500 for a misconfiguration).  It never writes, so
-- it works in READ ONLY transactions and on hot standbys.
--
-- Configuration lives in three tables that only superusers (the extension
-- owner) can change; nothing in a request (headers, claims, settings) can.
------------------------------------------------------------------------------

-- At most one row; no row means every default.
CREATE TABLE apikeys.postgrest_setting (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- request.headers names (PostgREST lower-cases them), tried in order;
    -- 'authorization' means "Authorization: Bearer <key>"
    key_headers        text[] NOT NULL DEFAULT '{x-api-key,apikey,authorization}'
                       CHECK (cardinality(key_headers) BETWEEN 1 AND 8
                              AND array_ndims(key_headers) = 1
                              AND array_position(key_headers, NULL) IS NULL
                              AND array_to_string(key_headers, ',') ~ '^[a-z0-9-]{1,64}(,[a-z0-9-]{1,64})*$'),
    -- realm of WWW-Authenticate: Bearer realm="..."
    realm              text NOT NULL DEFAULT 'api'
                       CHECK (realm ~ '^[ -~]{1,64}$' AND realm !~ '["\\]'),
    -- requests whose method and path match no apikeys.postgrest_route row
    require_key        boolean NOT NULL DEFAULT true,
    -- X-RateLimit-Limit / -Remaining / -Reset on answers of rate-limited keys
    rate_limit_headers boolean NOT NULL DEFAULT true,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE apikeys.postgrest_setting IS 'Settings of apikeys.pre_request() (one row at most; none: defaults). Superuser-only.';

-- Scopes per route.  A request must hold every scope of every route that
-- matches it; a key is optional only if every matching route allows
-- anonymous requests.  A GET route also covers HEAD.
CREATE TABLE apikeys.postgrest_route (
    method          text NOT NULL DEFAULT '*'
                    CHECK (method IN ('*', 'GET', 'HEAD', 'POST', 'PATCH', 'PUT', 'DELETE', 'OPTIONS')),
    path            text COLLATE "C" NOT NULL CHECK (char_length(path) BETWEEN 1 AND 1000),
    match           text NOT NULL DEFAULT 'exact' CHECK (match IN ('exact', 'like', 'regex')),
    required_scopes text[] NOT NULL DEFAULT '{}'
                    CHECK (apikeys._normalize_scopes(required_scopes) IS NOT NULL),
    allow_anonymous boolean NOT NULL DEFAULT false,
    description     text CHECK (char_length(description) <= 2000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (method, path, match),
    -- a bad regular expression fails here, not in a request
    CONSTRAINT postgrest_route_regex_valid CHECK (match <> 'regex' OR ('' ~ path) IS NOT NULL),
    CONSTRAINT postgrest_route_anonymous_without_scopes
        CHECK (NOT (allow_anonymous AND cardinality(required_scopes) > 0))
);
COMMENT ON TABLE apikeys.postgrest_route IS 'Scopes required by apikeys.pre_request() per request.method and request.path (exact, LIKE or regex). Superuser-only.';

-- Role for the request's query, chosen from the key.  Each of tenant, key_id
-- and scope that is not NULL must match (scope: the key holds it); the
-- matching row with the highest priority wins, then the most specific
-- (key, then scope, then tenant), then the role name.  No match: the role
-- PostgREST chose stays.
CREATE TABLE apikeys.postgrest_role_map (
    tenant     text COLLATE "C" REFERENCES apikeys.tenant (tenant) ON DELETE CASCADE,
    key_id     uuid REFERENCES apikeys.credential (key_id) ON DELETE CASCADE,
    scope      text CHECK (CASE WHEN scope IS NULL THEN true
                                ELSE apikeys._normalize_scopes(ARRAY[scope]) IS NOT NULL END),
    role_name  name NOT NULL,
    priority   integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX postgrest_role_map_uniq
    ON apikeys.postgrest_role_map ((coalesce(tenant, '')), (coalesce(key_id, '00000000-0000-0000-0000-000000000000')),
                                   (coalesce(scope, '')));
COMMENT ON TABLE apikeys.postgrest_role_map IS 'Role apikeys.pre_request() switches to for a key (by key, scope or tenant; all NULL: every key). Superuser-only.';

SELECT pg_catalog.pg_extension_config_dump('apikeys.postgrest_setting', '');
SELECT pg_catalog.pg_extension_config_dump('apikeys.postgrest_route', '');
SELECT pg_catalog.pg_extension_config_dump('apikeys.postgrest_role_map', '');

-- Readable by no tenant role (no GRANT); the gate reads them as their owner.
ALTER TABLE apikeys.postgrest_setting ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.postgrest_route ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.postgrest_role_map ENABLE ROW LEVEL SECURITY;

-- The mapped role must exist when the mapping is made (not checked while
-- pg_restore loads the table: roles are not part of a database dump).
CREATE FUNCTION apikeys._postgrest_role_map_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT apikeys._bulk_loading()
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.role_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('role_not_found: role "%s" does not exist', NEW.role_name);
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER postgrest_role_map_check BEFORE INSERT OR UPDATE ON apikeys.postgrest_role_map
    FOR EACH ROW EXECUTE FUNCTION apikeys._postgrest_role_map_check();

-- Changes to the gate's configuration are audited like key changes.
CREATE FUNCTION apikeys._postgrest_config_audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o jsonb;
    n jsonb;
    detail jsonb;
BEGIN
    IF apikeys._bulk_loading() THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN o := to_jsonb(OLD); END IF;
    IF TG_OP <> 'DELETE' THEN n := to_jsonb(NEW); END IF;
    IF TG_OP = 'UPDATE' THEN
        SELECT jsonb_object_agg(e.key, jsonb_build_array(o -> e.key, e.value))
          INTO detail FROM jsonb_each(n) e WHERE (o -> e.key) IS DISTINCT FROM e.value;
        detail := jsonb_build_object('changed', coalesce(detail, '{}'));
    ELSIF TG_OP = 'INSERT' THEN
        detail := jsonb_build_object('new', n);
    ELSE
        detail := jsonb_build_object('old', o);
    END IF;
    PERFORM apikeys._audit_write(
        TG_TABLE_NAME || CASE TG_OP WHEN 'INSERT' THEN '_added' WHEN 'DELETE' THEN '_removed' ELSE '_changed' END,
        coalesce(n, o) ->> 'tenant', (coalesce(n, o) ->> 'key_id')::uuid, detail);
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_postgrest_setting AFTER INSERT OR UPDATE OR DELETE ON apikeys.postgrest_setting
    FOR EACH ROW EXECUTE FUNCTION apikeys._postgrest_config_audit();
CREATE TRIGGER audit_postgrest_route AFTER INSERT OR UPDATE OR DELETE ON apikeys.postgrest_route
    FOR EACH ROW EXECUTE FUNCTION apikeys._postgrest_config_audit();
CREATE TRIGGER audit_postgrest_role_map AFTER INSERT OR UPDATE OR DELETE ON apikeys.postgrest_role_map
    FOR EACH ROW EXECUTE FUNCTION apikeys._postgrest_config_audit();

-- The path routes are matched against: request.path is the raw path (before
-- percent-decoding, without the query string), while PostgREST routes on the
-- decoded one.  So decode %XX, collapse repeated slashes and drop trailing
-- ones: "/it%65ms/" is "/items".  Invalid UTF-8 after decoding raises 22021
-- (PostgREST: 400).
CREATE FUNCTION apikeys.postgrest_normalize_path(path text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p text := path;
BEGIN
    IF strpos(p, '%') > 0 THEN
        SELECT convert_from(string_agg(
                   CASE WHEN m[1] IS NOT NULL THEN decode(substr(m[1], 2), 'hex')
                        ELSE convert_to(m[2], 'UTF8') END, ''::bytea ORDER BY i), 'UTF8')
          INTO p
          FROM regexp_matches(p, '(%[0-9A-Fa-f]{2})|([^%]+|%)', 'g') WITH ORDINALITY AS t(m, i);
    END IF;
    p := regexp_replace(p, '/{2,}', '/', 'g');
    p := regexp_replace(p, '(.)/+$', '\1');
    IF p = '' THEN
        p := '/';
    END IF;
    RETURN p;
END;
$$;
COMMENT ON FUNCTION apikeys.postgrest_normalize_path IS 'The form of request.path that apikeys.postgrest_route patterns are matched against.';

-- The key presented in request.headers, per apikeys.postgrest_setting.
-- NULL: none.  Values shaped like a JWT (three dot-separated base64url parts,
-- e.g. Supabase's apikey header or PostgREST's own Bearer token) are not API
-- keys and are skipped; an API key never contains a dot.
CREATE FUNCTION apikeys._postgrest_key(headers jsonb, names text[]) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h text;
    v text;
BEGIN
    IF headers IS NULL OR jsonb_typeof(headers) <> 'object' THEN
        RETURN NULL;
    END IF;
    FOREACH h IN ARRAY names LOOP
        v := headers ->> h;
        CONTINUE WHEN v IS NULL;
        IF char_length(v) > 1024 THEN
            RETURN v;          -- far too long for a key: verify says malformed
        END IF;
        IF h = 'authorization' THEN
            -- only the Bearer scheme carries a key
            v := substring(v FROM '^[ \t]*[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+(.*)$');
            CONTINUE WHEN v IS NULL;
        END IF;
        v := btrim(v, E' \t');
        CONTINUE WHEN v = '';
        CONTINUE WHEN v ~ '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$';
        RETURN v;
    END LOOP;
    RETURN NULL;
END;
$$;

-- Does role own, or may it become (SET ROLE) the owner of, a table with
-- row-level security enabled but not forced?  Its queries would skip RLS
-- there.  Answers are cached per backend until pg_class, a role, a role
-- membership or a database changes (src/rls_owner.c): reading pg_class
-- costs about 0.5 ms with a few thousand relations.
CREATE FUNCTION apikeys._role_skips_rls(role oid) RETURNS boolean
    LANGUAGE C STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'apikeys_role_skips_rls';

-- The decision, computed as the extension owner: it reads the configuration
-- tables (which the request's roles cannot) and calls authenticate() (which
-- binds the key's tenant in backend memory).  It reads the request only from
-- PostgREST's settings.  pre_request() below acts on it as the caller: a
-- SECURITY DEFINER function may not change the role.
CREATE FUNCTION apikeys._postgrest_gate(
    OUT status           integer,   -- 200: let the request through
    OUT message          text,      -- PGRST error message (JSON)
    OUT detail           text,      -- PGRST error detail (JSON)
    OUT response_headers jsonb,     -- on 200: [{"name": "value"}, ...]
    OUT set_role         name)      -- on 200: role to switch to, or NULL
    RETURNS record
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg        apikeys.postgrest_setting;
    req_method text := upper(coalesce(current_setting('request.method', true), ''));
    req_path   text := apikeys.postgrest_normalize_path(coalesce(current_setting('request.path', true), ''));
    headers    jsonb := nullif(current_setting('request.headers', true), '')::jsonb;
    api_key    text;
    need       text[];
    n_routes   integer;
    anonymous  boolean;
    v          apikeys.verification;
    hdrs       jsonb := '{}';
    rl_hdrs    jsonb := '[]';
    code       text;
    msg        text;
    details    text;
    hint       text;
    wait_s     bigint;
    per        interval;
    r          pg_catalog.pg_roles;
BEGIN
    SELECT * INTO cfg FROM apikeys.postgrest_setting;
    IF NOT FOUND THEN
        cfg := ROW(true, '{x-api-key,apikey,authorization}', 'api', true, true, NULL);
    END IF;

    -- routes that match this request
    WITH m AS (
        SELECT rt.required_scopes, rt.allow_anonymous
          FROM apikeys.postgrest_route rt
         WHERE (rt.method = '*' OR rt.method = req_method OR (rt.method = 'GET' AND req_method = 'HEAD'))
           AND CASE rt.match WHEN 'exact' THEN req_path = rt.path
                             WHEN 'like'  THEN req_path LIKE rt.path
                             ELSE req_path ~ rt.path END)
    SELECT (SELECT count(*) FROM m), (SELECT bool_and(m.allow_anonymous) FROM m),
           array(SELECT DISTINCT s FROM m, unnest(m.required_scopes) s ORDER BY s)
      INTO n_routes, anonymous, need;
    IF n_routes = 0 THEN
        anonymous := NOT cfg.require_key;
    END IF;

    api_key := apikeys._postgrest_key(headers, cfg.key_headers);
    IF api_key IS NULL THEN
        IF anonymous THEN
            status := 200;
            RETURN;
        END IF;
        status := 401;
        code := 'apikeys.missing';
        msg := 'API key required';
        hint := 'Send the API key in one of these headers: '
                || array_to_string(array(SELECT CASE x WHEN 'authorization' THEN 'Authorization: Bearer'
                                                       WHEN 'x-api-key' THEN 'X-API-Key'
                                                       ELSE x END
                                           FROM unnest(cfg.key_headers) WITH ORDINALITY AS u(x, i)
                                          ORDER BY i), ', ') || '.';
        hdrs := jsonb_build_object('WWW-Authenticate', format('Bearer realm="%s"', cfg.realm));
    ELSE
        v := apikeys.authenticate(api_key, CASE WHEN cardinality(need) > 0 THEN need END, NULL);

        IF v.rate_limit IS NOT NULL AND cfg.rate_limit_headers THEN
            rl_hdrs := jsonb_build_array(
                jsonb_build_object('X-RateLimit-Limit', v.rate_limit::text),
                jsonb_build_object('X-RateLimit-Remaining', greatest(v.rate_remaining, 0)::text),
                jsonb_build_object('X-RateLimit-Reset', ceil(extract(epoch FROM v.rate_reset))::bigint::text));
        END IF;

        IF v.valid THEN
            status := 200;
            response_headers := rl_hdrs;
            -- the role mapped from the key, if any
            SELECT m.role_name INTO set_role
              FROM apikeys.postgrest_role_map m
             WHERE (m.tenant IS NULL OR m.tenant = v.tenant)
               AND (m.key_id IS NULL OR m.key_id = v.key_id)
               AND (m.scope IS NULL OR m.scope = ANY (v.scopes))
             ORDER BY m.priority DESC, (m.key_id IS NOT NULL) DESC, (m.scope IS NOT NULL) DESC,
                      (m.tenant IS NOT NULL) DESC, m.role_name
             LIMIT 1;
            IF set_role IS NOT NULL THEN
                SELECT * INTO r FROM pg_catalog.pg_roles x WHERE x.rolname = set_role;
                IF NOT FOUND THEN
                    code := 'apikeys.role_missing';
                    msg := 'The role mapped to this API key does not exist';
                    hint := 'Fix apikeys.postgrest_role_map.';
                ELSIF r.rolsuper OR r.rolbypassrls THEN
                    code := 'apikeys.role_unsafe';
                    msg := 'The role mapped to this API key is a superuser or bypasses row-level security';
                    hint := 'Map keys to ordinary roles in apikeys.postgrest_role_map.';
                ELSIF apikeys._role_skips_rls(r.oid) THEN
                    -- an owner's queries skip RLS unless it is forced: the key's
                    -- tenant binding would not restrict them
                    code := 'apikeys.role_unsafe';
                    msg := 'The role mapped to this API key owns a table whose row-level security does not apply to its owner';
                    hint := 'ALTER TABLE ... FORCE ROW LEVEL SECURITY on the tables that role owns (or inherits), or map keys to a role that owns none.';
                ELSIF NOT pg_has_role(session_user, r.oid, 'MEMBER') THEN
                    code := 'apikeys.role_not_allowed';
                    msg := 'The database connection may not switch to the role mapped to this API key';
                    hint := format('GRANT %I TO %I (as for PostgREST''s own roles).', set_role, session_user);
                END IF;
                IF code IS NOT NULL THEN
                    -- a server misconfiguration, not the client's fault
                    status := 500;
                    response_headers := NULL;
                    set_role := NULL;
                    message := json_build_object('code', code, 'message', msg, 'details', NULL, 'hint', hint)::text;
                    detail := json_build_object('status', status, 'headers', '{}'::json)::text;
                END IF;
            END IF;
            RETURN;
        END IF;

        code := 'apikeys.' || v.code;
        CASE v.code
        WHEN 'malformed' THEN
            status := 401; msg := 'API key is malformed';
        WHEN 'not_found' THEN
            status := 401; msg := 'API key is not valid';
        WHEN 'disabled' THEN
            status := 401; msg := 'API key is disabled';
        WHEN 'revoked' THEN
            status := 401; msg := 'API key has been revoked';
        WHEN 'expired' THEN
            status := 401; msg := 'API key has expired';
        WHEN 'tenant_inactive' THEN
            status := 403; msg := 'The tenant of this API key is inactive';
        WHEN 'ip_not_allowed' THEN
            status := 403; msg := 'Requests from this address are not allowed with this API key';
        WHEN 'insufficient_scope' THEN
            status := 403; msg := 'API key lacks a scope this request requires';
            details := 'Required scopes: ' || array_to_string(need, ' ');
            hdrs := jsonb_build_object('WWW-Authenticate',
                format('Bearer realm="%s", error="insufficient_scope", scope="%s"',
                       cfg.realm, array_to_string(need, ' ')));
        WHEN 'rate_limited' THEN
            status := 429; msg := 'Rate limit exceeded';
            wait_s := greatest(ceil(extract(epoch FROM v.rate_reset - clock_timestamp())), 1);
            hdrs := jsonb_build_object('Retry-After', wait_s::text);
            details := format('At most %s requests per window.', v.rate_limit);
            hint := 'Retry after the number of seconds in the Retry-After header.';
        WHEN 'usage_exceeded' THEN
            status := 429; msg := 'Usage limit exceeded';
            -- periods are aligned to 2000-01-01 UTC, like the C code
            SELECT c.usage_period INTO per FROM apikeys.credential c WHERE c.key_id = v.key_id;
            IF per IS NOT NULL THEN
                wait_s := greatest(ceil(extract(epoch FROM
                    ('2000-01-01 00:00:00+00'::timestamptz
                     + (floor(extract(epoch FROM clock_timestamp() - '2000-01-01 00:00:00+00'::timestamptz)
                              / extract(epoch FROM per)) + 1) * per)
                    - clock_timestamp())), 1);
                hdrs := jsonb_build_object('Retry-After', wait_s::text);
                details := 'The usage cap resets at the end of its period.';
                hint := 'Retry after the number of seconds in the Retry-After header.';
            ELSE
                details := 'The usage cap does not reset.';
            END IF;
        ELSE
            status := 401; msg := 'API key is not valid';
        END CASE;
        IF status = 401 THEN
            hdrs := jsonb_build_object('WWW-Authenticate',
                format('Bearer realm="%s", error="invalid_token"', cfg.realm));
        END IF;
        -- the rate-limit figures, when verify got that far
        SELECT hdrs || coalesce(jsonb_object_agg(e.key, e.value), '{}')
          INTO hdrs FROM jsonb_array_elements(rl_hdrs) a, jsonb_each(a.value) e;
    END IF;

    message := json_build_object('code', code, 'message', msg, 'details', details, 'hint', hint)::text;
    detail := json_build_object('status', status, 'headers', hdrs)::text;
END;
$$;

-- The db-pre-request function.  SECURITY INVOKER on purpose: it runs as the
-- role PostgREST switched to (the anonymous role for API-key requests), and
-- only such a function may switch the role again with set_config('role', ...),
-- which PostgreSQL allows only if the connection's login role (PostgREST's
-- authenticator) is a member of the mapped role.
CREATE FUNCTION apikeys.pre_request() RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g record;
    cur text;
    merged jsonb;
BEGIN
    g := apikeys._postgrest_gate();
    IF g.status <> 200 THEN
        RAISE SQLSTATE 'PGRST' USING MESSAGE = g.message, DETAIL = g.detail;
    END IF;
    IF g.response_headers IS NOT NULL AND jsonb_array_length(g.response_headers) > 0 THEN
        -- keep what an earlier function set (a JSON array of objects)
        cur := nullif(current_setting('response.headers', true), '');
        merged := g.response_headers;
        IF cur IS NOT NULL THEN
            BEGIN
                IF jsonb_typeof(cur::jsonb) = 'array' THEN
                    merged := cur::jsonb || g.response_headers;
                END IF;
            EXCEPTION WHEN invalid_text_representation THEN
                NULL;   -- not JSON: PostgREST would reject it anyway; replace it
            END;
        END IF;
        PERFORM set_config('response.headers', merged::text, true);
    END IF;
    IF g.set_role IS NOT NULL THEN
        PERFORM set_config('role', g.set_role, true);
    END IF;
END;
$$;
COMMENT ON FUNCTION apikeys.pre_request IS 'PostgREST db-pre-request: verify the request''s API key, bind its tenant, map its role, set X-RateLimit-* headers; else answer 401/403/429 (docs/postgrest.md).';

CREATE FUNCTION apikeys_internal.grant_postgrest(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.pre_request(), apikeys._postgrest_gate(),'
                   ' apikeys.current_tenant(), apikeys.current_key_id() TO %I', role_name);
END;
$$;
SELECT apikeys_internal.publish('grant_postgrest', 'Let a PostgREST role (anon, authenticated) run apikeys.pre_request().');
