/* apikeys--1.0.sql - API key management inside PostgreSQL */

\echo Use "CREATE EXTENSION apikeys" to load this file. \quit

-- Nothing in this schema is for PUBLIC unless granted below or by the DBA.
REVOKE ALL ON SCHEMA apikeys FROM PUBLIC;

------------------------------------------------------------------------------
-- Tables.  Column order of tenant, credential and secret is read by the C
-- verify path (src/apikeys.h); add columns at the end only.
------------------------------------------------------------------------------

CREATE TABLE apikeys.tenant (
    tenant       text COLLATE "C" PRIMARY KEY
                 CHECK (tenant ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE apikeys.tenant IS 'Tenants: every API key belongs to one; an inactive tenant''s keys do not verify.';

CREATE TABLE apikeys.credential (
    key_id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant         text COLLATE "C" NOT NULL REFERENCES apikeys.tenant (tenant),
    name           text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description    text CHECK (char_length(description) <= 2000),
    prefix         text NOT NULL CHECK (prefix ~ '^[a-z][a-z0-9]*(_[a-z0-9]+)*$' AND length(prefix) <= 32),
    scopes         text[] NOT NULL DEFAULT '{}' CHECK (cardinality(scopes) <= 64),
    metadata       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'revoked')),
    expires_at     timestamptz,
    created_by     name NOT NULL DEFAULT current_user,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    rotated_at     timestamptz,
    rotation_count integer NOT NULL DEFAULT 0,
    revoked_at     timestamptz,
    revoked_reason text CHECK (char_length(revoked_reason) <= 2000),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX credential_tenant_idx ON apikeys.credential (tenant, created_at);
COMMENT ON TABLE apikeys.credential IS 'API keys: the identity (key_id) that survives rotation, with name, scopes, expiry and status.';

CREATE TABLE apikeys.secret (
    digest      bytea PRIMARY KEY CHECK (octet_length(digest) = 32),
    key_id      uuid NOT NULL REFERENCES apikeys.credential (key_id) ON DELETE CASCADE,
    hint        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    valid_until timestamptz   -- NULL: the current secret; else in its rotation grace
);
CREATE UNIQUE INDEX secret_one_current ON apikeys.secret (key_id) WHERE valid_until IS NULL;
CREATE INDEX secret_key_id_idx ON apikeys.secret (key_id);
COMMENT ON TABLE apikeys.secret IS 'SHA-256 digests of the secrets of each key: one current, others in rotation grace. Never readable by tenants.';

-- pg_dump keeps the user data of an extension's tables only when asked.
SELECT pg_catalog.pg_extension_config_dump('apikeys.tenant', '');
SELECT pg_catalog.pg_extension_config_dump('apikeys.credential', '');
SELECT pg_catalog.pg_extension_config_dump('apikeys.secret', '');

------------------------------------------------------------------------------
-- Types
------------------------------------------------------------------------------

CREATE TYPE apikeys.verification AS (
    valid      boolean,
    code       text,
    key_id     uuid,
    tenant     text,
    name       text,
    scopes     text[],
    expires_at timestamptz
);
COMMENT ON TYPE apikeys.verification IS 'Result of apikey_verify: valid, a verdict code, and the key''s identity when it was found.';

------------------------------------------------------------------------------
-- Validators (C), shared by the C and PL/pgSQL management functions
------------------------------------------------------------------------------

CREATE FUNCTION apikeys._check_tenant_id(text) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_tenant_id';
CREATE FUNCTION apikeys._check_name(text) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_name';
CREATE FUNCTION apikeys._check_description(text) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_description';
CREATE FUNCTION apikeys._normalize_scopes(text[]) RETURNS text[]
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_normalize_scopes';
CREATE FUNCTION apikeys._check_expiry(timestamptz) RETURNS timestamptz
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_expiry';
CREATE FUNCTION apikeys._check_metadata(jsonb) RETURNS jsonb
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_sql_check_metadata';

------------------------------------------------------------------------------
-- Tenancy: who may act for which tenant
------------------------------------------------------------------------------

-- Roles mapped to tenants.  tenant NULL: every tenant (a global admin).
-- 'manage' may create/rotate/revoke/... keys and read them and their audit;
-- 'audit' may only read keys and audit rows.
CREATE TABLE apikeys.role_tenant (
    role_name  name NOT NULL,
    tenant     text COLLATE "C" REFERENCES apikeys.tenant (tenant) ON DELETE CASCADE,
    privilege  text NOT NULL CHECK (privilege IN ('manage', 'audit')),
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by name NOT NULL DEFAULT current_user
);
CREATE UNIQUE INDEX role_tenant_uniq ON apikeys.role_tenant (role_name, (coalesce(tenant, '')), privilege);
SELECT pg_catalog.pg_extension_config_dump('apikeys.role_tenant', '');
COMMENT ON TABLE apikeys.role_tenant IS 'Which roles manage or audit which tenants (tenant NULL: all). Maintained by grant_tenant()/revoke_tenant().';

CREATE FUNCTION apikeys.current_tenant() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_current_tenant';
COMMENT ON FUNCTION apikeys.current_tenant IS 'Tenant this transaction is bound to (set_tenant or authenticate), or NULL. Not settable by SET/set_config.';
CREATE FUNCTION apikeys.current_key_id() RETURNS uuid
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_current_key_id';
COMMENT ON FUNCTION apikeys.current_key_id IS 'Key that authenticate() accepted in this transaction, or NULL.';
CREATE FUNCTION apikeys.set_tenant(tenant text) RETURNS text
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_set_tenant';
COMMENT ON FUNCTION apikeys.set_tenant IS 'Bind this transaction to a tenant. Grant EXECUTE only to roles trusted to switch tenants.';
CREATE FUNCTION apikeys._context_source() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_context_source';
CREATE FUNCTION apikeys._session_role() RETURNS name
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_session_role';
CREATE FUNCTION apikeys._bulk_loading() RETURNS boolean
    LANGUAGE C VOLATILE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_bulk_loading';

CREATE FUNCTION apikeys.authenticate(
    api_key         text,
    required_scopes text[] DEFAULT NULL,
    client_addr     inet DEFAULT NULL)
    RETURNS apikeys.verification
    LANGUAGE C VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'apikeys_authenticate';
COMMENT ON FUNCTION apikeys.authenticate IS 'apikey_verify, and on a valid key bind its tenant to this transaction (RLS then shows that tenant only).';

-- Does role r hold `need` ('read', 'audit' or 'manage') on tenant t through role_tenant?
CREATE FUNCTION apikeys._role_may(r name, t text, need text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1
          FROM apikeys.role_tenant g
          JOIN pg_catalog.pg_roles ro ON ro.rolname OPERATOR(pg_catalog.=) g.role_name
         WHERE (g.tenant IS NULL OR g.tenant OPERATOR(pg_catalog.=) t)
           AND (need OPERATOR(pg_catalog.<>) 'manage' OR g.privilege OPERATOR(pg_catalog.=) 'manage')
           AND pg_catalog.pg_has_role(r, ro.oid, 'USAGE'))
$$;

-- Record a refused management attempt in the server log (it survives the
-- rollback that the error causes), then raise.
CREATE FUNCTION apikeys._deny(p_action text, p_tenant text, p_key_id uuid,
                              p_sqlstate text, p_message text, p_hint text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE LOG USING MESSAGE = 'apikeys_audit_denied ' || jsonb_build_object(
        'at', clock_timestamp(), 'action', p_action, 'outcome', 'denied',
        'error', split_part(p_message, ':', 1), 'sqlstate', p_sqlstate,
        'tenant', p_tenant, 'key_id', p_key_id,
        'db_role', apikeys._session_role(), 'session_role', session_user,
        'actor', apikeys._actor(), 'request_id', apikeys._request_id(),
        'client_addr', inet_client_addr(),
        'application_name', current_setting('application_name'),
        'txid', pg_current_xact_id_if_assigned())::text;
    IF p_hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message;
    END IF;
    RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message, HINT = p_hint;
END;
$$;

-- Management calls act for the session's current role (login role or SET
-- ROLE): a superuser, a role mapped to the tenant with 'manage' (or to every
-- tenant), or a transaction bound to the tenant by set_tenant().  A refused
-- key-scoped call reads as key_not_found so other tenants' keys stay unseen.
CREATE FUNCTION apikeys._authorize(p_tenant text, p_action text, p_key_id uuid DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name := apikeys._session_role();
BEGIN
    IF (SELECT ro.rolsuper FROM pg_catalog.pg_roles ro WHERE ro.rolname OPERATOR(pg_catalog.=) r) THEN
        RETURN;
    END IF;
    IF p_tenant IS NOT NULL THEN
        IF apikeys._context_source() OPERATOR(pg_catalog.=) 'trusted'
           AND apikeys.current_tenant() OPERATOR(pg_catalog.=) p_tenant THEN
            RETURN;
        END IF;
        IF apikeys._role_may(r, p_tenant, 'manage') THEN
            RETURN;
        END IF;
    ELSIF EXISTS (SELECT 1 FROM apikeys.role_tenant g
                    JOIN pg_catalog.pg_roles ro ON ro.rolname OPERATOR(pg_catalog.=) g.role_name
                   WHERE g.tenant IS NULL AND g.privilege OPERATOR(pg_catalog.=) 'manage'
                     AND pg_catalog.pg_has_role(r, ro.oid, 'USAGE')) THEN
        RETURN;
    END IF;
    IF p_key_id IS NOT NULL THEN
        PERFORM apikeys._deny(p_action, p_tenant, p_key_id, '42704',
            format('key_not_found: no API key with id %s', p_key_id));
    ELSIF p_tenant IS NULL THEN
        PERFORM apikeys._deny(p_action, NULL, NULL, '42501',
            format('permission_denied: role "%s" may not manage tenants', r),
            'Tenants are managed by superusers and roles granted apikeys.grant_tenant(role, NULL).');
    ELSE
        PERFORM apikeys._deny(p_action, p_tenant, NULL, '42501',
            format('permission_denied: role "%s" may not manage tenant "%s"', r, p_tenant),
            'A superuser can allow it with apikeys.grant_tenant(role, tenant).');
    END IF;
END;
$$;

------------------------------------------------------------------------------
-- Audit: append-only, hash-chained
------------------------------------------------------------------------------

CREATE TABLE apikeys.audit (
    audit_id         bigint PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    tenant           text COLLATE "C",
    key_id           uuid,
    action           text NOT NULL,
    outcome          text NOT NULL DEFAULT 'success',
    db_role          name NOT NULL,
    session_role     name NOT NULL,
    actor            text,
    request_id       text,
    client_addr      inet,
    application_name text,
    txid             xid8,
    detail           jsonb NOT NULL DEFAULT '{}',
    prev_hash        bytea NOT NULL,
    row_hash         bytea NOT NULL
);
CREATE INDEX audit_tenant_idx ON apikeys.audit (tenant, audit_id);
CREATE INDEX audit_key_idx ON apikeys.audit (key_id, audit_id) WHERE key_id IS NOT NULL;
CREATE INDEX audit_at_idx ON apikeys.audit (at, audit_id);
SELECT pg_catalog.pg_extension_config_dump('apikeys.audit', '');
COMMENT ON TABLE apikeys.audit IS 'Every change to tenants, keys, secrets and role mappings. Append-only; each row hashes the previous one (audit_check()).';

-- Application actor and request id: settings first, then PostgREST's GUCs.
CREATE FUNCTION apikeys._actor() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(nullif(current_setting('apikeys.actor', true), ''),
                    nullif(current_setting('request.jwt.claims', true), '')::jsonb OPERATOR(pg_catalog.->>) 'sub')
$$;
CREATE FUNCTION apikeys._request_id() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(nullif(current_setting('apikeys.request_id', true), ''),
                    nullif(current_setting('request.headers', true), '')::jsonb OPERATOR(pg_catalog.->>) 'x-request-id')
$$;

CREATE FUNCTION apikeys._audit_hash(a apikeys.audit) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(a.prev_hash OPERATOR(pg_catalog.||) convert_to(jsonb_build_array(
        a.audit_id, to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
        a.tenant, a.key_id, a.action, a.outcome, a.db_role, a.session_role, a.actor,
        a.request_id, a.client_addr, a.application_name, a.txid, a.detail)::text, 'UTF8'))
$$;

-- BEFORE INSERT: number the row and chain it to the previous one.  The table
-- lock serializes audit writers until commit, so ids follow commit order.
CREATE FUNCTION apikeys._audit_chain() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last apikeys.audit;
BEGIN
    IF apikeys._bulk_loading() AND NEW.row_hash IS NOT NULL THEN
        RETURN NEW;   -- pg_restore: keep history as it was
    END IF;
    LOCK TABLE apikeys.audit IN SHARE ROW EXCLUSIVE MODE;
    SELECT * INTO last FROM apikeys.audit a ORDER BY a.audit_id DESC LIMIT 1;
    NEW.audit_id := coalesce(last.audit_id, 0) OPERATOR(pg_catalog.+) 1;
    NEW.at := clock_timestamp();
    NEW.prev_hash := coalesce(last.row_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
    NEW.row_hash := apikeys._audit_hash(NEW);
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_chain BEFORE INSERT ON apikeys.audit
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_chain();

CREATE FUNCTION apikeys._audit_purging() RETURNS boolean
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_audit_purging';

CREATE FUNCTION apikeys._audit_append_only() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' AND apikeys._audit_purging() THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = format('audit_append_only: %s on apikeys.audit is not allowed', TG_OP),
        HINT = 'Old rows leave only through apikeys.audit_purge().';
END;
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON apikeys.audit
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON apikeys.audit
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._audit_append_only();

CREATE FUNCTION apikeys._audit_write(p_action text, p_tenant text, p_key_id uuid, p_detail jsonb)
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO apikeys.audit (tenant, key_id, action, db_role, session_role, actor,
                               request_id, client_addr, application_name, txid, detail,
                               prev_hash, row_hash)
    VALUES (p_tenant, p_key_id, p_action, apikeys._session_role(), session_user, apikeys._actor(),
            apikeys._request_id(), inet_client_addr(), current_setting('application_name'),
            pg_current_xact_id(), p_detail, '', '')
$$;

-- AFTER row trigger on tenant, credential, secret and role_tenant.
CREATE FUNCTION apikeys._audit_row_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o jsonb;
    n jsonb;
    r jsonb;
    t text;
    k uuid;
    act text;
    detail jsonb;
BEGIN
    IF apikeys._bulk_loading() THEN
        RETURN NULL;   -- pg_restore: these rows' history is in the restored audit
    END IF;
    -- never a digest in the audit
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN o := to_jsonb(OLD) OPERATOR(pg_catalog.-) 'digest'; END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN n := to_jsonb(NEW) OPERATOR(pg_catalog.-) 'digest'; END IF;
    r := coalesce(n, o);
    t := r OPERATOR(pg_catalog.->>) 'tenant';
    k := (r OPERATOR(pg_catalog.->>) 'key_id')::uuid;

    IF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'tenant' THEN
        act := CASE TG_OP WHEN 'INSERT' THEN 'tenant_created' WHEN 'DELETE' THEN 'tenant_deleted'
               ELSE CASE WHEN (o OPERATOR(pg_catalog.->) 'active') OPERATOR(pg_catalog.=) (n OPERATOR(pg_catalog.->) 'active') THEN 'tenant_updated'
                         WHEN (n OPERATOR(pg_catalog.->>) 'active')::boolean THEN 'tenant_activated'
                         ELSE 'tenant_deactivated' END END;
    ELSIF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'credential' THEN
        act := CASE TG_OP WHEN 'INSERT' THEN 'key_created' WHEN 'DELETE' THEN 'key_deleted'
               ELSE CASE WHEN (o OPERATOR(pg_catalog.->>) 'status') OPERATOR(pg_catalog.<>) (n OPERATOR(pg_catalog.->>) 'status') THEN
                             CASE n OPERATOR(pg_catalog.->>) 'status' WHEN 'revoked' THEN 'key_revoked'
                                  WHEN 'disabled' THEN 'key_disabled' ELSE 'key_enabled' END
                         WHEN (o OPERATOR(pg_catalog.->) 'rotation_count') OPERATOR(pg_catalog.<>) (n OPERATOR(pg_catalog.->) 'rotation_count') THEN 'key_rotated'
                         ELSE 'key_updated' END END;
    ELSIF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'secret' THEN
        SELECT c.tenant INTO t FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) k;
        IF NOT FOUND THEN
            RETURN NULL;   -- removed with its key: key_deleted says it
        END IF;
        act := CASE TG_OP WHEN 'INSERT' THEN 'secret_issued' WHEN 'DELETE' THEN 'secret_retired'
               ELSE 'secret_grace_set' END;
    ELSE
        act := CASE TG_OP WHEN 'INSERT' THEN 'role_granted' WHEN 'DELETE' THEN 'role_revoked'
               ELSE 'role_updated' END;
    END IF;

    IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
        SELECT jsonb_object_agg(e.key, jsonb_build_array(o OPERATOR(pg_catalog.->) e.key, e.value))
          INTO detail
          FROM jsonb_each(n) e
         WHERE (o OPERATOR(pg_catalog.->) e.key) IS DISTINCT FROM e.value;
        detail := jsonb_build_object('changed', coalesce(detail, '{}'));
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        detail := jsonb_build_object('new', n);
    ELSE
        detail := jsonb_build_object('old', o);
    END IF;
    PERFORM apikeys._audit_write(act, t, k, detail);
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_tenant AFTER INSERT OR UPDATE OR DELETE ON apikeys.tenant
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
CREATE TRIGGER audit_credential AFTER INSERT OR UPDATE OR DELETE ON apikeys.credential
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
CREATE TRIGGER audit_secret AFTER INSERT OR UPDATE OR DELETE ON apikeys.secret
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
CREATE TRIGGER audit_role_tenant AFTER INSERT OR UPDATE OR DELETE ON apikeys.role_tenant
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();

-- Walk the chain: ids consecutive, each prev_hash the previous row_hash, each
-- row_hash recomputed from the row.  The first row links to zeros, or, after
-- a purge, to the hash the audit_purged row recorded.
CREATE FUNCTION apikeys.audit_check(
    OUT ok boolean, OUT rows_checked bigint, OUT first_bad_id bigint, OUT problem text)
    RETURNS record
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a apikeys.audit;
    prev apikeys.audit;
    anchor bytea;
BEGIN
    ok := true;
    rows_checked := 0;
    SELECT decode(p.detail OPERATOR(pg_catalog.->>) 'last_purged_hash', 'hex') INTO anchor
      FROM apikeys.audit p WHERE p.action OPERATOR(pg_catalog.=) 'audit_purged'
     ORDER BY p.audit_id DESC LIMIT 1;
    FOR a IN SELECT * FROM apikeys.audit x ORDER BY x.audit_id LOOP
        rows_checked := rows_checked OPERATOR(pg_catalog.+) 1;
        IF prev.audit_id IS NULL THEN
            IF a.prev_hash OPERATOR(pg_catalog.<>) coalesce(anchor, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) THEN
                problem := 'first row does not link to the chain start'; 
            END IF;
        ELSIF a.audit_id OPERATOR(pg_catalog.<>) (prev.audit_id OPERATOR(pg_catalog.+) 1) THEN
            problem := format('rows %s to %s are missing', prev.audit_id OPERATOR(pg_catalog.+) 1, a.audit_id OPERATOR(pg_catalog.-) 1);
        ELSIF a.prev_hash OPERATOR(pg_catalog.<>) prev.row_hash THEN
            problem := 'prev_hash does not match the previous row';
        END IF;
        IF problem IS NULL AND a.row_hash OPERATOR(pg_catalog.<>) apikeys._audit_hash(a) THEN
            problem := 'row content does not match its hash';
        END IF;
        IF problem IS NOT NULL THEN
            ok := false;
            first_bad_id := a.audit_id;
            RETURN;
        END IF;
        prev := a;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION apikeys.audit_check IS 'Verify the audit hash chain; reports the first broken row.';

CREATE FUNCTION apikeys.audit_head(OUT audit_id bigint, OUT row_hash text)
    RETURNS record
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.audit_id, encode(a.row_hash, 'hex') FROM apikeys.audit a ORDER BY a.audit_id DESC LIMIT 1
$$;
COMMENT ON FUNCTION apikeys.audit_head IS 'Newest audit row and its hash: store it outside the database to detect a rewritten chain.';

-- Called by apikeys.audit_purge() (C) with the purge flag set.
CREATE FUNCTION apikeys._audit_purge_rows(older_than interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cut apikeys.audit;
    n bigint;
BEGIN
    IF NOT apikeys._audit_purging() THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'audit_append_only: call apikeys.audit_purge()';
    END IF;
    LOCK TABLE apikeys.audit IN SHARE ROW EXCLUSIVE MODE;
    -- purge a prefix of the chain: everything up to the newest row old enough
    SELECT * INTO cut FROM apikeys.audit a
     WHERE a.at OPERATOR(pg_catalog.<) now() OPERATOR(pg_catalog.-) older_than
     ORDER BY a.audit_id DESC LIMIT 1;
    IF cut.audit_id IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM apikeys.audit a WHERE a.audit_id OPERATOR(pg_catalog.<=) cut.audit_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM apikeys._audit_write('audit_purged', NULL, NULL, jsonb_build_object(
        'rows', n, 'older_than', older_than, 'last_purged_id', cut.audit_id,
        'last_purged_hash', encode(cut.row_hash, 'hex')));
    RETURN n;
END;
$$;

CREATE FUNCTION apikeys.audit_purge(older_than interval DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikeys_audit_purge';
COMMENT ON FUNCTION apikeys.audit_purge IS 'Delete audit rows older than older_than (default: apikeys.audit_retention), keeping the chain checkable.';

------------------------------------------------------------------------------
-- Row-level security
------------------------------------------------------------------------------

ALTER TABLE apikeys.tenant ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.credential ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.secret ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.role_tenant ENABLE ROW LEVEL SECURITY;

-- Reads only: every write goes through the SECURITY DEFINER functions.
-- A role sees the tenants it is mapped to in role_tenant (whose own policy
-- shows each role only its mappings), or the tenant its transaction is bound
-- to.  No function call per row: the subqueries become hashed subplans.
CREATE POLICY role_tenant_read ON apikeys.role_tenant FOR SELECT
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro
                    WHERE ro.rolname OPERATOR(pg_catalog.=) role_tenant.role_name
                      AND pg_catalog.pg_has_role(current_user, ro.oid, 'USAGE')));
CREATE POLICY tenant_read ON apikeys.tenant FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) apikeys.current_tenant()
           OR tenant IN (SELECT g.tenant FROM apikeys.role_tenant g)
           OR EXISTS (SELECT 1 FROM apikeys.role_tenant g WHERE g.tenant IS NULL));
CREATE POLICY credential_read ON apikeys.credential FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) apikeys.current_tenant()
           OR tenant IN (SELECT g.tenant FROM apikeys.role_tenant g)
           OR EXISTS (SELECT 1 FROM apikeys.role_tenant g WHERE g.tenant IS NULL));
CREATE POLICY secret_read ON apikeys.secret FOR SELECT
    USING (EXISTS (SELECT 1 FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) secret.key_id));
-- the audit only through a mapping, never through a key-bound transaction
CREATE POLICY audit_read ON apikeys.audit FOR SELECT
    USING (tenant IN (SELECT g.tenant FROM apikeys.role_tenant g)
           OR (tenant IS NOT NULL AND EXISTS (SELECT 1 FROM apikeys.role_tenant g WHERE g.tenant IS NULL)));

------------------------------------------------------------------------------
-- Privilege recipes (superuser only)
------------------------------------------------------------------------------

CREATE FUNCTION apikeys.grant_verifier(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.apikey_verify(text, text[], inet),'
                   ' apikeys.authenticate(text, text[], inet), apikeys.current_tenant(),'
                   ' apikeys.current_key_id() TO %I', role_name);
END;
$$;
COMMENT ON FUNCTION apikeys.grant_verifier IS 'Let a role verify keys (apikey_verify, authenticate).';

CREATE FUNCTION apikeys.grant_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF privilege IS NULL OR privilege NOT IN ('manage', 'audit') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_privilege: privilege must be ''manage'' or ''audit''';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro WHERE ro.rolname OPERATOR(pg_catalog.=) role_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('role_not_found: role "%s" does not exist', role_name);
    END IF;
    IF tenant IS NOT NULL AND NOT EXISTS (SELECT 1 FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) grant_tenant.tenant) THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('tenant_not_found: tenant "%s" does not exist', tenant);
    END IF;
    INSERT INTO apikeys.role_tenant (role_name, tenant, privilege)
    VALUES (grant_tenant.role_name, grant_tenant.tenant, grant_tenant.privilege)
    ON CONFLICT DO NOTHING;
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT SELECT ON apikeys.tenant, apikeys.credential, apikeys.keys, apikeys.audit, apikeys.role_tenant TO %I', role_name);
    EXECUTE format('GRANT SELECT (key_id, hint, created_at, valid_until) ON apikeys.secret TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.current_tenant(), apikeys.current_key_id() TO %I', role_name);
    IF privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION'
            ' apikeys.apikey_create(text, text, text[], timestamptz, text, jsonb, text),'
            ' apikeys.apikey_rotate(uuid, interval), apikeys.apikey_revoke(uuid, text),'
            ' apikeys.apikey_disable(uuid), apikeys.apikey_enable(uuid),'
            ' apikeys.apikey_update(uuid, text, text, text[], timestamptz, jsonb),'
            ' apikeys.apikey_delete(uuid), apikeys.apikey_verify(text, text[], inet) TO %I', role_name);
    END IF;
    IF tenant IS NULL AND privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.tenant_create(text, text),'
            ' apikeys.tenant_update(text, text, boolean), apikeys.tenant_delete(text, boolean) TO %I', role_name);
    END IF;
    IF privilege OPERATOR(pg_catalog.=) 'audit' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.audit_check(), apikeys.audit_head() TO %I', role_name);
    END IF;
END;
$$;
COMMENT ON FUNCTION apikeys.grant_tenant IS 'Let a role manage (or only audit) one tenant, or every tenant with tenant => NULL.';

CREATE FUNCTION apikeys.revoke_tenant(role_name name, tenant text, privilege text DEFAULT 'manage') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM apikeys.role_tenant g
     WHERE g.role_name OPERATOR(pg_catalog.=) revoke_tenant.role_name
       AND g.tenant IS NOT DISTINCT FROM revoke_tenant.tenant
       AND g.privilege OPERATOR(pg_catalog.=) revoke_tenant.privilege;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('grant_not_found: role "%s" holds no %s grant on %s', role_name, privilege,
                             coalesce('tenant "' || tenant || '"', 'every tenant'));
    END IF;
END;
$$;
COMMENT ON FUNCTION apikeys.revoke_tenant IS 'Undo grant_tenant (the mapping; SQL privileges stay, harmless without it).';

------------------------------------------------------------------------------
-- Keys: create, rotate, verify (C)
------------------------------------------------------------------------------

CREATE FUNCTION apikeys.apikey_create(
    tenant      text,
    name        text,
    scopes      text[] DEFAULT '{}',
    expires_at  timestamptz DEFAULT NULL,
    description text DEFAULT NULL,
    metadata    jsonb DEFAULT '{}',
    prefix      text DEFAULT 'ak',
    OUT key_id     uuid,
    OUT api_key    text,
    OUT hint       text,
    OUT key_prefix text,
    OUT expires    timestamptz,
    OUT created_at timestamptz)
    RETURNS record
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikey_create';
COMMENT ON FUNCTION apikeys.apikey_create IS 'Create an API key; the returned api_key is shown once and never stored.';

CREATE FUNCTION apikeys.apikey_rotate(
    key_id uuid,
    grace  interval DEFAULT '0',
    OUT key_id     uuid,
    OUT api_key    text,
    OUT hint       text,
    OUT key_prefix text,
    OUT expires    timestamptz,
    OUT created_at timestamptz)
    RETURNS record
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikey_rotate';
COMMENT ON FUNCTION apikeys.apikey_rotate IS 'Issue a new secret for a key; the old one dies at commit (grace 0) or after the grace period.';

CREATE FUNCTION apikeys.apikey_verify(
    api_key         text,
    required_scopes text[] DEFAULT NULL,
    client_addr     inet DEFAULT NULL)
    RETURNS apikeys.verification
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'apikey_verify';
COMMENT ON FUNCTION apikeys.apikey_verify IS 'Check a presented key; returns a verdict, never raises for a bad key.';

------------------------------------------------------------------------------
-- Key lifecycle (PL/pgSQL)
------------------------------------------------------------------------------

-- Authorize the session's role for the key's tenant, then lock the key and
-- return its row.  Unknown and foreign keys both read as key_not_found.
CREATE FUNCTION apikeys._lock_key(p_key_id uuid, p_action text) RETURNS apikeys.credential
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential;
BEGIN
    IF p_key_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'invalid_key_id: key_id must not be NULL';
    END IF;
    SELECT * INTO k FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) p_key_id;
    IF NOT FOUND THEN
        PERFORM apikeys._deny(p_action, NULL, p_key_id, '42704',
            format('key_not_found: no API key with id %s', p_key_id));
    END IF;
    PERFORM apikeys._authorize(k.tenant, p_action, p_key_id);
    SELECT * INTO k FROM apikeys.credential c
     WHERE c.key_id OPERATOR(pg_catalog.=) p_key_id FOR UPDATE;
    IF NOT FOUND THEN   -- deleted while we waited
        PERFORM apikeys._deny(p_action, NULL, p_key_id, '42704',
            format('key_not_found: no API key with id %s', p_key_id));
    END IF;
    RETURN k;
END;
$$;

CREATE FUNCTION apikeys._require_not_revoked(k apikeys.credential, p_action text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF k.status OPERATOR(pg_catalog.=) 'revoked' THEN
        PERFORM apikeys._deny(p_action, k.tenant, k.key_id, '55000',
            format('key_revoked: API key %s is revoked', k.key_id),
            'Revocation is permanent; create a new key.');
    END IF;
END;
$$;

CREATE FUNCTION apikeys._require_active_tenant(p_tenant text, p_action text, p_key_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM apikeys.tenant t
     WHERE t.tenant OPERATOR(pg_catalog.=) p_tenant AND t.active;
    IF NOT FOUND THEN
        PERFORM apikeys._deny(p_action, p_tenant, p_key_id, '55000',
            format('tenant_inactive: tenant "%s" is inactive', p_tenant),
            'Reactivate it with apikeys.tenant_update(tenant, active => true).');
    END IF;
END;
$$;

CREATE FUNCTION apikeys.apikey_revoke(key_id uuid, reason text DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys._lock_key(key_id, 'key_revoke');
BEGIN
    IF char_length(reason) > 2000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_reason: reason must be at most 2000 characters';
    END IF;
    -- Revoking twice is a no-op: the first time and reason stand.
    IF k.status OPERATOR(pg_catalog.<>) 'revoked' THEN
        UPDATE apikeys.credential c
           SET status = 'revoked', revoked_at = now(), revoked_reason = reason, updated_at = now()
         WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
        -- Secrets still in rotation grace die with the key.
        DELETE FROM apikeys.secret s
         WHERE s.key_id OPERATOR(pg_catalog.=) k.key_id AND s.valid_until IS NOT NULL;
    END IF;
END;
$$;
COMMENT ON FUNCTION apikeys.apikey_revoke IS 'Revoke a key for good: it verifies as revoked from commit on.';

CREATE FUNCTION apikeys.apikey_disable(key_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys._lock_key(key_id, 'key_disable');
BEGIN
    PERFORM apikeys._require_not_revoked(k, 'key_disable');
    IF k.status OPERATOR(pg_catalog.=) 'active' THEN
        UPDATE apikeys.credential c SET status = 'disabled', updated_at = now()
         WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
    END IF;
END;
$$;
COMMENT ON FUNCTION apikeys.apikey_disable IS 'Suspend a key (verifies as disabled) until apikey_enable.';

CREATE FUNCTION apikeys.apikey_enable(key_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys._lock_key(key_id, 'key_enable');
BEGIN
    PERFORM apikeys._require_not_revoked(k, 'key_enable');
    PERFORM apikeys._require_active_tenant(k.tenant, 'key_enable', k.key_id);
    IF k.status OPERATOR(pg_catalog.=) 'disabled' THEN
        UPDATE apikeys.credential c SET status = 'active', updated_at = now()
         WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
    END IF;
END;
$$;
COMMENT ON FUNCTION apikeys.apikey_enable IS 'Re-enable a disabled key.';

CREATE FUNCTION apikeys.apikey_update(
    key_id      uuid,
    name        text DEFAULT NULL,
    description text DEFAULT NULL,
    scopes      text[] DEFAULT NULL,
    expires_at  timestamptz DEFAULT NULL,
    metadata    jsonb DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys._lock_key(key_id, 'key_update');
BEGIN
    PERFORM apikeys._require_not_revoked(k, 'key_update');
    PERFORM apikeys._require_active_tenant(k.tenant, 'key_update', k.key_id);
    -- NULL leaves a field unchanged; expires_at => 'infinity' removes the expiry.
    UPDATE apikeys.credential c SET
        name        = coalesce(apikeys._check_name(apikey_update.name), c.name),
        description = coalesce(apikeys._check_description(apikey_update.description), c.description),
        scopes      = coalesce(apikeys._normalize_scopes(apikey_update.scopes), c.scopes),
        expires_at  = CASE WHEN apikey_update.expires_at IS NULL THEN c.expires_at
                           WHEN apikey_update.expires_at OPERATOR(pg_catalog.=) 'infinity' THEN NULL
                           ELSE apikeys._check_expiry(apikey_update.expires_at) END,
        metadata    = coalesce(apikeys._check_metadata(apikey_update.metadata), c.metadata),
        updated_at  = now()
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
    -- Rotation grace never outlives the key.
    UPDATE apikeys.secret s
       SET valid_until = least(s.valid_until, c.expires_at)
      FROM apikeys.credential c
     WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id AND s.key_id OPERATOR(pg_catalog.=) c.key_id
       AND s.valid_until IS NOT NULL AND c.expires_at IS NOT NULL;
END;
$$;
COMMENT ON FUNCTION apikeys.apikey_update IS 'Change name, description, scopes, expiry or metadata of a key; NULL leaves a field as it is.';

CREATE FUNCTION apikeys.apikey_delete(key_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k apikeys.credential := apikeys._lock_key(key_id, 'key_delete');
BEGIN
    DELETE FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) k.key_id;
END;
$$;
COMMENT ON FUNCTION apikeys.apikey_delete IS 'Delete a key and all its secrets; it verifies as not_found from commit on.';

------------------------------------------------------------------------------
-- Tenants
------------------------------------------------------------------------------

CREATE FUNCTION apikeys.tenant_create(tenant text, display_name text DEFAULT NULL)
    RETURNS apikeys.tenant
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t apikeys.tenant;
BEGIN
    PERFORM apikeys._authorize(NULL, 'tenant_create');
    IF display_name IS NOT NULL AND char_length(display_name) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_display_name: display_name must be 1 to 200 characters';
    END IF;
    INSERT INTO apikeys.tenant (tenant, display_name)
    VALUES (apikeys._check_tenant_id(tenant), coalesce(display_name, tenant))
    ON CONFLICT DO NOTHING
    RETURNING * INTO t;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = format('tenant_exists: tenant "%s" already exists', tenant);
    END IF;
    RETURN t;
END;
$$;
COMMENT ON FUNCTION apikeys.tenant_create IS 'Create a tenant.';

CREATE FUNCTION apikeys.tenant_update(tenant text, display_name text DEFAULT NULL, active boolean DEFAULT NULL)
    RETURNS apikeys.tenant
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t apikeys.tenant;
BEGIN
    PERFORM apikeys._authorize(NULL, 'tenant_update');
    IF display_name IS NOT NULL AND char_length(display_name) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_display_name: display_name must be 1 to 200 characters';
    END IF;
    UPDATE apikeys.tenant x SET
        display_name = coalesce(tenant_update.display_name, x.display_name),
        active       = coalesce(tenant_update.active, x.active),
        updated_at   = now()
     WHERE x.tenant OPERATOR(pg_catalog.=) tenant_update.tenant
    RETURNING * INTO t;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('tenant_not_found: tenant "%s" does not exist', tenant);
    END IF;
    RETURN t;
END;
$$;
COMMENT ON FUNCTION apikeys.tenant_update IS 'Rename, deactivate (keys verify as tenant_inactive) or reactivate a tenant.';

CREATE FUNCTION apikeys.tenant_delete(tenant text, force boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM apikeys._authorize(NULL, 'tenant_delete');
    PERFORM 1 FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) tenant_delete.tenant FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('tenant_not_found: tenant "%s" does not exist', tenant);
    END IF;
    SELECT count(*) INTO n FROM apikeys.credential c WHERE c.tenant OPERATOR(pg_catalog.=) tenant_delete.tenant;
    IF n OPERATOR(pg_catalog.>) 0 AND NOT force THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = format('tenant_has_keys: tenant "%s" still has %s API keys', tenant, n),
            HINT = 'Delete its keys first, or call tenant_delete(tenant, force => true).';
    END IF;
    DELETE FROM apikeys.credential c WHERE c.tenant OPERATOR(pg_catalog.=) tenant_delete.tenant;
    DELETE FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) tenant_delete.tenant;
END;
$$;
COMMENT ON FUNCTION apikeys.tenant_delete IS 'Delete a tenant; with force => true its keys too.';

------------------------------------------------------------------------------
-- Views (never a digest)
------------------------------------------------------------------------------

CREATE VIEW apikeys.keys WITH (security_invoker = true) AS
SELECT c.key_id, c.tenant, c.name, c.description, c.prefix,
       (SELECT s.hint FROM apikeys.secret s
         WHERE s.key_id OPERATOR(pg_catalog.=) c.key_id AND s.valid_until IS NULL) AS hint,
       c.scopes, c.metadata, c.status, c.expires_at,
       c.created_by, c.created_at, c.updated_at, c.rotated_at, c.rotation_count,
       c.revoked_at, c.revoked_reason,
       (SELECT count(*) FROM apikeys.secret s
         WHERE s.key_id OPERATOR(pg_catalog.=) c.key_id AND s.valid_until IS NOT NULL
           AND s.valid_until OPERATOR(pg_catalog.>) now()) AS secrets_in_grace
  FROM apikeys.credential c;
COMMENT ON VIEW apikeys.keys IS 'One row per API key with its current hint; no secret or digest.';

------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC; see the README for GRANT recipes.
------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA apikeys FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA apikeys FROM PUBLIC;
GRANT EXECUTE ON FUNCTION apikeys.current_tenant(), apikeys.current_key_id() TO PUBLIC;
-- The row-level policies read these for any role granted SELECT on a table;
-- each answers only about the caller.
GRANT SELECT ON apikeys.role_tenant TO PUBLIC;
