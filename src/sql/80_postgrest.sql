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
    -- a method that no route lists, on a path that some route lists: false
    -- refuses it (403 apikeys.method_not_allowed); true treats the request as
    -- one that matches no route (require_key decides)
    allow_unlisted_methods boolean NOT NULL DEFAULT false,
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
                    CHECK (apikeys_internal._normalize_scopes(required_scopes) IS NOT NULL),
    allow_anonymous boolean NOT NULL DEFAULT false,
    description     text CHECK (char_length(description) <= 2000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- 1.1: the route's own limits, per key (postgrest_route_set_limits),
    -- and what a request charges to every limit it meets
    limits          apikeys.named_limit[] NOT NULL DEFAULT '{}'
                    CHECK (apikeys_internal.check_limits(limits) IS NOT NULL),
    cost            integer NOT NULL DEFAULT 1 CHECK (cost BETWEEN 0 AND 1000000),
    PRIMARY KEY (method, path, match),
    -- a bad regular expression fails here, not in a request
    CONSTRAINT postgrest_route_regex_valid CHECK (match <> 'regex' OR ('' ~ path) IS NOT NULL),
    CONSTRAINT postgrest_route_anonymous_without_scopes
        CHECK (NOT (allow_anonymous AND cardinality(required_scopes) > 0))
);
COMMENT ON TABLE apikeys.postgrest_route IS 'Scopes required by apikeys.pre_request() per request.method and request.path (exact, LIKE or regex), and the route''s own limits (per key) and cost. Superuser-only.';

-- Role for the request's query, chosen from the key.  Each of tenant, key_id
-- and scope that is not NULL must match (scope: the key holds it); the
-- matching row with the highest priority wins, then the most specific
-- (key, then scope, then tenant), then the role name.  No match: the role
-- PostgREST chose stays.
--
-- A row with neither tenant nor key_id applies to keys of every tenant, and
-- a scope does not narrow that: each tenant chooses its keys' scopes.  Such a
-- row may name only a role that row-level security confines to the key's
-- tenant (apikeys.postgrest_role_confinement() is NULL), checked when the row
-- is written and again by the gate on every use.
CREATE TABLE apikeys.postgrest_role_map (
    tenant     text COLLATE "C" REFERENCES apikeys.tenant (tenant) ON DELETE CASCADE,
    key_id     uuid REFERENCES apikeys.credential (key_id) ON DELETE CASCADE,
    scope      text CHECK (CASE WHEN scope IS NULL THEN true
                                ELSE apikeys_internal._normalize_scopes(ARRAY[scope]) IS NOT NULL END),
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
CREATE FUNCTION apikeys_internal._postgrest_role_map_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    why text;
BEGIN
    IF apikeys_internal._bulk_loading() THEN
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.role_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('role_not_found: role "%s" does not exist', NEW.role_name);
    END IF;
    IF NEW.tenant IS NULL AND NEW.key_id IS NULL THEN
        why := apikeys.postgrest_role_confinement(NEW.role_name);
        IF why IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = format('role_not_confined: a mapping for keys of any tenant may not name role "%s": it %s',
                                 NEW.role_name, why),
                HINT = 'Set the mapping''s tenant or key_id, or confine the role (docs/postgrest.md, "Roles from keys").';
        END IF;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER postgrest_role_map_check BEFORE INSERT OR UPDATE ON apikeys.postgrest_role_map
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._postgrest_role_map_check();

-- Changes to the gate's configuration are audited like key changes.
CREATE FUNCTION apikeys_internal._postgrest_config_audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o jsonb;
    n jsonb;
    detail jsonb;
BEGIN
    IF apikeys_internal._bulk_loading() THEN
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
    PERFORM apikeys_internal._audit_write(
        TG_TABLE_NAME || CASE TG_OP WHEN 'INSERT' THEN '_added' WHEN 'DELETE' THEN '_removed' ELSE '_changed' END,
        coalesce(n, o) ->> 'tenant', (coalesce(n, o) ->> 'key_id')::uuid, detail);
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_postgrest_setting AFTER INSERT OR UPDATE OR DELETE ON apikeys.postgrest_setting
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._postgrest_config_audit();
CREATE TRIGGER audit_postgrest_route AFTER INSERT OR UPDATE OR DELETE ON apikeys.postgrest_route
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._postgrest_config_audit();
CREATE TRIGGER audit_postgrest_role_map AFTER INSERT OR UPDATE OR DELETE ON apikeys.postgrest_role_map
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._postgrest_config_audit();

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
CREATE FUNCTION apikeys_internal._postgrest_key(headers jsonb, names text[]) RETURNS text
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
CREATE FUNCTION apikeys_internal._role_skips_rls(role oid) RETURNS boolean
    LANGUAGE C STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'apikeys_role_skips_rls';

-- Why role is not confined to one tenant's rows by row-level security (NULL:
-- it is), from the catalogs: a privilege the role holds and PUBLIC does not
-- (what PUBLIC holds, a request gets without any key) on
--   * a table without RLS, a view without security_invoker, a materialized
--     view or a foreign table (their rows are no tenant's);
--   * a table or view: TRUNCATE, TRIGGER or REFERENCES (TRUNCATE empties
--     every tenant's rows; a trigger sees every tenant's writes; a foreign
--     key reads past RLS);
--   * a sequence: UPDATE (setval);
--   * a SECURITY DEFINER function, or any function of apikeys or
--     apikeys_internal other than the four apikeys.grant_postgrest() grants
--     and the readers behind the views (they run with another role's rights,
--     or verify keys and bind tenants);
--   * a schema: CREATE; the database: CREATE (what the role creates, every
--     tenant's requests share).
-- Schemas pg_catalog, information_schema and pg_toast are not looked at.
-- Run through apikeys_internal._role_confinement_cached() (src/rls_owner.c).
CREATE FUNCTION apikeys_internal._role_confinement_scan(role oid) RETURNS text
    LANGUAGE sql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
WITH rel AS (
    SELECT c.oid, c.relkind, c.relrowsecurity,
           c.relkind = 'v' AND EXISTS (SELECT 1 FROM pg_options_to_table(c.reloptions) o
                                        WHERE o.option_name = 'security_invoker' AND o.option_value::boolean)
               AS invoker_view
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
), extra AS (
    -- the privileges role holds on each relation beyond PUBLIC's
    SELECT rel.*,
           CASE WHEN rel.relkind = 'S' THEN
               array(SELECT p FROM unnest('{UPDATE}'::text[]) p
                      WHERE has_sequence_privilege(role, rel.oid, p)
                        AND NOT has_sequence_privilege('public', rel.oid, p))
           ELSE
               array(SELECT p FROM unnest('{SELECT,INSERT,UPDATE,REFERENCES}'::text[]) p
                      WHERE has_any_column_privilege(role, rel.oid, p)
                        AND NOT has_any_column_privilege('public', rel.oid, p))
               || array(SELECT p FROM unnest('{DELETE,TRUNCATE,TRIGGER}'::text[]) p
                         WHERE has_table_privilege(role, rel.oid, p)
                           AND NOT has_table_privilege('public', rel.oid, p))
           END AS privs
      FROM rel
), reasons AS (
    SELECT 1 AS o, format('holds %s on %s %s, whose rows row-level security does not confine',
                          array_to_string(e.privs, ', '),
                          CASE e.relkind WHEN 'v' THEN 'view (without security_invoker)'
                                         WHEN 'm' THEN 'materialized view'
                                         WHEN 'f' THEN 'foreign table'
                                         ELSE 'table (without row-level security)' END,
                          e.oid::regclass) AS why
      FROM extra e
     WHERE cardinality(e.privs) > 0 AND e.relkind <> 'S'
       AND NOT (e.relkind IN ('r', 'p') AND e.relrowsecurity) AND NOT e.invoker_view
    UNION ALL
    SELECT 2, format('holds %s on %s, which row-level security does not restrict',
                     array_to_string(array(SELECT p FROM unnest(e.privs) p
                                            WHERE p IN ('TRUNCATE', 'TRIGGER', 'REFERENCES')), ', '),
                     e.oid::regclass)
      FROM extra e
     WHERE e.privs && '{TRUNCATE,TRIGGER,REFERENCES}' AND e.relkind <> 'S'
    UNION ALL
    SELECT 3, format('holds UPDATE (setval) on sequence %s', e.oid::regclass)
      FROM extra e
     WHERE e.relkind = 'S' AND cardinality(e.privs) > 0
    UNION ALL
    SELECT 4, format('may execute %s %s, which PUBLIC may not',
                     CASE WHEN p.prosecdef THEN 'SECURITY DEFINER function' ELSE 'function' END,
                     p.oid::regprocedure)
      FROM pg_proc p
     WHERE (p.prosecdef OR p.pronamespace IN ('apikeys'::regnamespace, 'apikeys_internal'::regnamespace))
       AND p.oid NOT IN ('apikeys.pre_request()'::regprocedure, 'apikeys.postgrest_gate()'::regprocedure,
                         'apikeys.current_tenant()'::regprocedure, 'apikeys.current_key_id()'::regprocedure)
       -- the readers behind the views answer only about the caller's own tenants
       AND NOT (p.pronamespace = 'apikeys'::regnamespace
                AND p.proname IN ('read_keys', 'read_tenants', 'read_key_usage', 'read_vault_secrets',
                                  'read_audit', 'read_grants', 'audit_log_page', 'read_scopes',
                                  'read_key_formats', 'read_legacy_keys', 'read_key_credits'))
       AND has_function_privilege(role, p.oid, 'EXECUTE')
       AND NOT has_function_privilege('public', p.oid, 'EXECUTE')
    UNION ALL
    SELECT 5, format('may create objects in schema %s, which PUBLIC may not', n.oid::regnamespace)
      FROM pg_namespace n
     WHERE n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
       AND has_schema_privilege(role, n.oid, 'CREATE')
       AND NOT has_schema_privilege('public', n.oid, 'CREATE')
    UNION ALL
    SELECT 6, 'may create schemas in this database, which PUBLIC may not'
     WHERE has_database_privilege(role, current_database(), 'CREATE')
       AND NOT has_database_privilege('public', current_database(), 'CREATE')
)
SELECT why FROM reasons ORDER BY o, why LIMIT 1
$$;

CREATE FUNCTION apikeys_internal._role_confinement_cached(role oid) RETURNS text
    LANGUAGE C STABLE STRICT PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'apikeys_role_confinement_cached';

-- Why the role named role_name may not be mapped for keys of any tenant
-- (NULL: it may): it is a superuser or BYPASSRLS, it owns (or inherits the
-- owner of) an RLS table without FORCE, it is granted tenants to manage or
-- audit (apikeys.role_tenant), or _role_confinement_scan() above.  What it
-- cannot know: whether the policies of the RLS tables filter on
-- apikeys.current_tenant().  Superuser-only, like the mapping table.
CREATE FUNCTION apikeys.postgrest_role_confinement(role_name name) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pg_catalog.pg_roles;
BEGIN
    SELECT * INTO r FROM pg_catalog.pg_roles x WHERE x.rolname = role_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('role_not_found: role "%s" does not exist', role_name);
    END IF;
    IF r.rolsuper THEN
        RETURN 'is a superuser';
    ELSIF r.rolbypassrls THEN
        RETURN 'bypasses row-level security (BYPASSRLS)';
    ELSIF apikeys_internal._role_skips_rls(r.oid) THEN
        RETURN 'owns, or has the privileges of the owner of, a table with row-level security not forced';
    ELSIF EXISTS (SELECT 1 FROM apikeys.role_tenant g JOIN pg_catalog.pg_roles o ON o.rolname = g.role_name
                   WHERE pg_has_role(r.oid, o.oid, 'USAGE')) THEN
        RETURN 'is granted tenants to manage or audit (apikeys.grant_tenant)';
    END IF;
    RETURN apikeys_internal._role_confinement_cached(r.oid);
END;
$$;
COMMENT ON FUNCTION apikeys.postgrest_role_confinement IS 'Why a role may not be mapped for keys of any tenant in apikeys.postgrest_role_map (NULL: row-level security confines it to the key''s tenant).';

-- authenticate() for the gate, charging cost (0: check only) to the key's
-- and tenant's limits and to the route's limits, kept per key and route
-- (route: the route's identity, "method match path"), in one
-- all-or-nothing pass (src/usage.c, "Route limits").  Not granted to anyone.
CREATE FUNCTION apikeys_internal._authenticate_route(api_key text, required_scopes text[], client_addr inet,
                                                     route text, route_limits apikeys.named_limit[],
                                                     cost integer)
    RETURNS apikeys.verification
    LANGUAGE C VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'apikeys_authenticate_route_1_1';
COMMENT ON FUNCTION apikeys_internal._authenticate_route IS 'apikeys.authenticate() with a cost and a PostgREST route''s own limits (per key and route), charged all or nothing with the key''s and tenant''s (the gate''s).';

-- Set (replace) a route's limits and cost.  Superuser-only, like the route
-- table (SECURITY INVOKER: the caller must be able to update it); the change
-- is audited by the table's trigger (postgrest_route_changed).  A limit
-- that keeps its name keeps its state (a new per or max_uses applies to
-- what was counted), a new name starts from nothing, a removed one is
-- forgotten.
CREATE FUNCTION apikeys.postgrest_route_set_limits(method text, path text, limits apikeys.named_limit[],
                                                   cost integer DEFAULT 1, match text DEFAULT 'exact')
    RETURNS apikeys.postgrest_route
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v         apikeys.named_limit[];
    rt        apikeys.postgrest_route;
    too_small record;
BEGIN
    IF cost IS NULL OR cost < 0 OR cost > 1000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_cost: cost must be from 0 to 1000000',
            HINT = '0 checks the limits without charging them; the default is 1.';
    END IF;
    v := apikeys_internal.check_limits(limits);
    -- a cost no route limit could ever hold would refuse every request
    SELECT x.name, x.max_uses INTO too_small FROM unnest(v) x
     WHERE x.max_uses < postgrest_route_set_limits.cost ORDER BY x.max_uses LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('invalid_cost: cost %s is more than route limit "%s" allows (%s): every request would be refused',
                             cost, too_small.name, too_small.max_uses),
            HINT = 'Lower the cost or raise the limit''s max_uses.';
    END IF;
    UPDATE apikeys.postgrest_route x
       SET limits = v, cost = postgrest_route_set_limits.cost
     WHERE x.method = upper(postgrest_route_set_limits.method)
       AND x.path = postgrest_route_set_limits.path
       AND x.match = postgrest_route_set_limits.match
    RETURNING * INTO rt;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('route_not_found: no route %s %s (%s) in apikeys.postgrest_route',
                             upper(left(postgrest_route_set_limits.method, 16)),
                             left(postgrest_route_set_limits.path, 200),
                             left(postgrest_route_set_limits.match, 16)),
            HINT = 'Add the route first: INSERT INTO apikeys.postgrest_route (method, path, ...).';
    END IF;
    RETURN rt;
END;
$$;
COMMENT ON FUNCTION apikeys.postgrest_route_set_limits IS 'Set (replace) a PostgREST route''s own limits (up to 3 of (name, max_uses, per), per key; NULL removes them) and its cost. Superuser-only; audited.';

-- Bounds on what the gate reads from PostgREST's settings (docs/postgrest.md,
-- "Bad requests").  Anything longer is a 400 apikeys.bad_request, read no
-- further.
CREATE FUNCTION apikeys_internal._postgrest_limits(OUT max_headers integer, OUT max_header_value integer,
                                          OUT max_path integer, OUT max_method integer)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    -- bytes of request.headers (its JSON text), of one header's value, of
    -- request.path (raw), of request.method
    SELECT 65536, 8192, 8192, 16
$$;

-- The server-log line of a request the gate refused, in the shape of
-- apikeys_internal._deny()'s ("apikeys_audit_denied {json}", action
-- "postgrest_request"), plus http_status, method, path and reason.  Written
-- at LOG, so it outlives the rollback.  Nothing the request sent can stop
-- it: apikeys_internal._actor() and _request_id() read claims and headers that may
-- be anything without ever raising (an unreadable or over-long label reads
-- as absent), method and path are cut to their bounds.  No header value
-- (the key among them) is written.
CREATE FUNCTION apikeys_internal._postgrest_log_denied(p_status integer, p_code text, p_tenant text, p_key_id uuid,
                                              p_method text, p_path text, p_reason text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    actor      text;
    request_id text;
    lim        record := apikeys_internal._postgrest_limits();
BEGIN
    actor := apikeys_internal._actor();
    request_id := apikeys_internal._request_id();
    RAISE LOG USING MESSAGE = 'apikeys_audit_denied ' || jsonb_build_object(
        'at', clock_timestamp(), 'action', 'postgrest_request', 'outcome', 'denied',
        'error', p_code, 'sqlstate', 'PGRST', 'http_status', p_status,
        'tenant', p_tenant, 'key_id', p_key_id,
        'method', left(p_method, lim.max_method), 'path', left(p_path, lim.max_path), 'reason', p_reason,
        'db_role', apikeys_internal._acting_role(), 'session_role', session_user,
        'actor', actor, 'request_id', request_id,
        'client_addr', inet_client_addr(),
        'application_name', current_setting('application_name'),
        'txid', pg_current_xact_id_if_assigned())::text;
END;
$$;

-- The decision, computed as the extension owner: it reads the configuration
-- tables (which the request's roles cannot) and calls authenticate() (which
-- binds the key's tenant in backend memory).  It reads the request only from
-- PostgREST's settings, and only within the bounds above: whatever they
-- hold, the answer is a PGRST one (400 for a request it cannot read), and
-- every refusal leaves its apikeys_audit_denied line.  pre_request() below
-- acts on it as the caller: a SECURITY DEFINER function may not change the
-- role.
CREATE FUNCTION apikeys.postgrest_gate(
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
    lim        record := apikeys_internal._postgrest_limits();
    raw_method text := coalesce(current_setting('request.method', true), '');
    raw_path   text := coalesce(current_setting('request.path', true), '');
    raw_hdrs   text := nullif(current_setting('request.headers', true), '');
    stage      text;
    bad        text;        -- why the request cannot be read (400)
    req_method text;
    req_path   text;
    headers    jsonb;
    api_key    text;
    need       text[];
    n_routes   integer;
    path_known boolean;
    anonymous  boolean;
    any_tenant boolean;
    v          apikeys.verification;
    hdrs       jsonb := '{}';
    rl_hdrs    jsonb := '[]';
    code       text;
    msg        text;
    details    text;
    hint       text;
    reason     text;        -- for the log line only
    wait_s     bigint;
    per        interval;
    r          pg_catalog.pg_roles;
    route_id   text;        -- the route whose limits and cost apply, or NULL
    route_lims apikeys.named_limit[];
    route_cost integer;
    lim_scope  text;
    lim_name   text;
    lim_per    text;
BEGIN
    SELECT * INTO cfg FROM apikeys.postgrest_setting;
    IF NOT FOUND THEN
        cfg := ROW(true, '{x-api-key,apikey,authorization}', 'api', true, true, false, NULL);
    END IF;

    -- Read the request: bounded, and any error in it (bad JSON, nesting too
    -- deep, \u0000, invalid UTF-8 once percent-decoded, ...) is a 400.
    BEGIN
        stage := 'request.method';
        IF octet_length(raw_method) > lim.max_method OR raw_method !~ '^[A-Za-z]*$' THEN
            bad := format('request.method is not an HTTP method (letters only, at most %s)', lim.max_method);
        ELSIF octet_length(raw_path) > lim.max_path THEN
            bad := format('request.path is longer than %s bytes', lim.max_path);
        ELSIF octet_length(raw_hdrs) > lim.max_headers THEN
            bad := format('request.headers is longer than %s bytes', lim.max_headers);
        ELSE
            req_method := upper(raw_method);
            stage := 'request.path';
            req_path := apikeys.postgrest_normalize_path(raw_path);
            stage := 'request.headers';
            headers := raw_hdrs::jsonb;
            IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
                bad := 'request.headers is not a JSON object';
            ELSIF EXISTS (SELECT 1 FROM jsonb_each(headers) e WHERE jsonb_typeof(e.value) NOT IN ('string', 'null')) THEN
                bad := 'request.headers has a value that is not a string';   -- (null: no such header)
            ELSIF EXISTS (SELECT 1 FROM jsonb_each_text(headers) e WHERE octet_length(e.value) > lim.max_header_value) THEN
                bad := format('a header value is longer than %s bytes', lim.max_header_value);
            ELSE
                -- routes that match this request, and whether any matches its path
                stage := 'routes';
                WITH p AS (
                    SELECT rt.method, rt.required_scopes, rt.allow_anonymous
                      FROM apikeys.postgrest_route rt
                     WHERE CASE rt.match WHEN 'exact' THEN req_path = rt.path
                                         WHEN 'like'  THEN req_path LIKE rt.path
                                         ELSE req_path ~ rt.path END),
                m AS (
                    SELECT p.* FROM p
                     WHERE p.method = '*' OR p.method = req_method OR (p.method = 'GET' AND req_method = 'HEAD'))
                SELECT (SELECT count(*) FROM m), (SELECT bool_and(m.allow_anonymous) FROM m),
                       array(SELECT DISTINCT s FROM m, unnest(m.required_scopes) s ORDER BY s),
                       EXISTS (SELECT 1 FROM p)
                  INTO n_routes, anonymous, need, path_known;
                -- the most specific matching route that sets limits or a
                -- cost: exact, then like, then regex; its own method, then
                -- GET for HEAD, then *; the longest pattern; then by name
                SELECT rt.method || ' ' || rt.match || ' ' || rt.path, rt.limits, rt.cost
                  INTO route_id, route_lims, route_cost
                  FROM apikeys.postgrest_route rt
                 WHERE (cardinality(rt.limits) > 0 OR rt.cost <> 1)
                   AND (rt.method = '*' OR rt.method = req_method OR (rt.method = 'GET' AND req_method = 'HEAD'))
                   AND CASE rt.match WHEN 'exact' THEN req_path = rt.path
                                     WHEN 'like'  THEN req_path LIKE rt.path
                                     ELSE req_path ~ rt.path END
                 ORDER BY array_position('{exact,like,regex}'::text[], rt.match),
                          array_position(ARRAY[req_method, 'GET', '*'], rt.method),
                          char_length(rt.path) DESC, rt.path
                 LIMIT 1;
                stage := 'key';
                api_key := apikeys_internal._postgrest_key(headers, cfg.key_headers);
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        bad := CASE stage
               WHEN 'request.path' THEN 'request.path is not valid UTF-8 once percent-decoded'
               WHEN 'request.headers' THEN 'request.headers is not valid JSON'
               WHEN 'routes' THEN 'request.path cannot be matched against the routes'
               ELSE 'the API key header cannot be read' END;
        reason := SQLSTATE || ' ' || left(SQLERRM, 200);
    END;

    IF bad IS NOT NULL THEN
        status := 400;
        code := 'apikeys.bad_request';
        msg := 'The request cannot be read';
        details := bad;
        reason := coalesce(reason, bad);
    ELSIF n_routes = 0 AND path_known AND NOT cfg.allow_unlisted_methods THEN
        -- routes list this path for other methods only: refused whoever asks
        status := 403;
        code := 'apikeys.method_not_allowed';
        msg := 'This method is not allowed on this path';
        hint := 'apikeys.postgrest_route lists this path for other methods only.';
    ELSE
        IF n_routes = 0 THEN
            anonymous := NOT cfg.require_key;
        END IF;

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
            -- the key's, its tenant's and the route's limits, all or nothing
            v := apikeys_internal._authenticate_route(api_key, CASE WHEN cardinality(need) > 0 THEN need END,
                                                      NULL, route_id, route_lims, coalesce(route_cost, 1));

            IF v.rate_limit IS NOT NULL AND cfg.rate_limit_headers THEN
                rl_hdrs := jsonb_build_array(
                    jsonb_build_object('X-RateLimit-Limit', v.rate_limit::text),
                    jsonb_build_object('X-RateLimit-Remaining', greatest(v.rate_remaining, 0)::text),
                    jsonb_build_object('X-RateLimit-Reset', ceil(extract(epoch FROM v.rate_reset))::bigint::text));
            END IF;

            IF v.valid THEN
                -- the role mapped from the key, if any
                SELECT m.role_name, (m.tenant IS NULL AND m.key_id IS NULL) INTO set_role, any_tenant
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
                    ELSIF apikeys_internal._role_skips_rls(r.oid) THEN
                        -- an owner's queries skip RLS unless it is forced: the key's
                        -- tenant binding would not restrict them
                        code := 'apikeys.role_unsafe';
                        msg := 'The role mapped to this API key owns a table whose row-level security does not apply to its owner';
                        hint := 'ALTER TABLE ... FORCE ROW LEVEL SECURITY on the tables that role owns (or inherits), or map keys to a role that owns none.';
                    ELSIF any_tenant AND apikeys.postgrest_role_confinement(set_role) IS NOT NULL THEN
                        -- a row for keys of any tenant (whose scopes each tenant
                        -- chooses) may name only a role RLS confines to the tenant
                        reason := apikeys.postgrest_role_confinement(set_role);
                        code := 'apikeys.role_unsafe';
                        msg := 'The role mapped to this API key by a mapping for every tenant is not confined to the key''s tenant';
                        hint := 'Set the mapping''s tenant or key_id in apikeys.postgrest_role_map, or see apikeys.postgrest_role_confinement().';
                    ELSIF NOT pg_has_role(session_user, r.oid, 'MEMBER') THEN
                        code := 'apikeys.role_not_allowed';
                        msg := 'The database connection may not switch to the role mapped to this API key';
                        hint := format('GRANT %I TO %I (as for PostgREST''s own roles).', set_role, session_user);
                    END IF;
                END IF;
                IF code IS NULL THEN
                    status := 200;
                    response_headers := rl_hdrs;
                    RETURN;
                END IF;
                -- a server misconfiguration, not the client's fault
                status := 500;
                reason := format('role %s: %s', set_role, coalesce(reason, code));
                set_role := NULL;
            ELSE
                code := 'apikeys.' || v.code;
                -- the status from the library's list (src/verdicts.h); 401 for
                -- a code it does not know
                status := coalesce((SELECT d.http_status FROM apikeys_internal.verdicts() d
                                     WHERE d.name = v.code), 401);
                CASE v.code
                WHEN 'malformed' THEN
                    msg := 'API key is malformed';
                WHEN 'not_found' THEN
                    msg := 'API key is not valid';
                WHEN 'disabled' THEN
                    msg := 'API key is disabled';
                WHEN 'revoked' THEN
                    msg := 'API key has been revoked';
                WHEN 'expired' THEN
                    msg := 'API key has expired';
                WHEN 'tenant_inactive' THEN
                    msg := 'The tenant of this API key is inactive';
                WHEN 'ip_not_allowed' THEN
                    msg := 'Requests from this address are not allowed with this API key';
                WHEN 'insufficient_scope' THEN
                    msg := 'API key lacks a scope this request requires';
                    details := 'Required scopes: ' || array_to_string(need, ' ');
                    hdrs := jsonb_build_object('WWW-Authenticate',
                        format('Bearer realm="%s", error="insufficient_scope", scope="%s"',
                               cfg.realm, array_to_string(need, ' ')));
                WHEN 'rate_limited' THEN
                    msg := 'Rate limit exceeded';
                    wait_s := greatest(ceil(extract(epoch FROM v.rate_reset - clock_timestamp())), 1);
                    hdrs := jsonb_build_object('Retry-After', wait_s::text);
                    SELECT l.scope, l.name INTO lim_scope, lim_name
                      FROM apikeys.last_verify_limits() l WHERE l.tightest;
                    IF lim_scope = 'route' THEN
                        -- the route's limit that refused, its window in
                        -- words whatever the session's IntervalStyle
                        SELECT CASE WHEN s % 3600 = 0 THEN (s / 3600) || ' h'
                                    WHEN s % 60 = 0 THEN (s / 60) || ' min'
                                    ELSE s || ' s' END
                          INTO lim_per
                          FROM (SELECT extract(epoch FROM x.per)::bigint AS s
                                  FROM unnest(route_lims) x WHERE x.name = lim_name) w;
                        details := format('At most %s requests per %s on this route (route limit "%s").',
                                          v.rate_limit, lim_per, lim_name);
                    ELSE
                        details := format('At most %s requests per window.', v.rate_limit);
                    END IF;
                    hint := 'Retry after the number of seconds in the Retry-After header.';
                WHEN 'usage_exceeded' THEN
                    msg := 'Usage limit exceeded';
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
                    msg := 'API key is not valid';
                END CASE;
                IF status = 401 THEN
                    hdrs := jsonb_build_object('WWW-Authenticate',
                        format('Bearer realm="%s", error="invalid_token"', cfg.realm));
                END IF;
                -- the rate-limit figures, when verify got that far
                SELECT hdrs || coalesce(jsonb_object_agg(e.key, e.value), '{}')
                  INTO hdrs FROM jsonb_array_elements(rl_hdrs) a, jsonb_each(a.value) e;
            END IF;
        END IF;
    END IF;

    PERFORM apikeys_internal._postgrest_log_denied(status, substr(code, 9), v.tenant, v.key_id,
                                          raw_method, raw_path, reason);
    IF status = 500 THEN
        hdrs := '{}';
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
    g := apikeys.postgrest_gate();
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
            EXCEPTION WHEN OTHERS THEN
                NULL;   -- not JSON (or nested too deep): PostgREST would reject it anyway; replace it
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
    PERFORM apikeys_internal._check_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.pre_request(), apikeys.postgrest_gate(),'
                   ' apikeys.current_tenant(), apikeys.current_key_id() TO %I', role_name);
END;
$$;
SELECT apikeys_internal.publish('grant_postgrest', 'Let a PostgREST role (anon, authenticated) run apikeys.pre_request().');
