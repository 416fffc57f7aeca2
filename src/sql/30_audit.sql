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

-- Application actor and request id, in this order: the labels set_tenant()
-- or authenticate() bound to the transaction; apikeys.actor /
-- apikeys.request_id if set for this transaction (SET LOCAL); PostgREST's
-- transaction-local request.jwt.claims "sub" / request.headers
-- "x-request-id".  A value set for the session is ignored with a WARNING (in
-- a pooled connection it may be another client's), and so is one over 200
-- characters.  Nothing here raises: any setting's value, however malformed,
-- reads as absent, so an audit row or a refusal's log line is never lost.

-- Field `field` of the JSON object in setting `name`.  Values over 16 kB, or
-- not valid JSON, or not an object, or holding anything jsonb refuses (a
-- \u0000, nesting past the stack limit), read as absent: WHEN OTHERS catches
-- every error but query_canceled (and assert_failure).
CREATE FUNCTION apikeys._json_setting(name text, field text) RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN nullif(apikeys._transaction_setting(name, 16384)::jsonb OPERATOR(pg_catalog.->>) field, '');
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END;
$$;
CREATE FUNCTION apikeys._actor() RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := coalesce(apikeys._context_actor(),
                       apikeys._transaction_setting('apikeys.actor', 16384),
                       apikeys._json_setting('request.jwt.claims', 'sub'));
BEGIN
    IF length(v) OPERATOR(pg_catalog.>) 200 THEN
        RAISE WARNING 'apikeys_setting_ignored: the actor is longer than 200 characters';
        RETURN NULL;
    END IF;
    RETURN v;
END;
$$;
CREATE FUNCTION apikeys._request_id() RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := coalesce(apikeys._context_request_id(),
                       apikeys._transaction_setting('apikeys.request_id', 16384),
                       apikeys._json_setting('request.headers', 'x-request-id'));
BEGIN
    IF length(v) OPERATOR(pg_catalog.>) 200 THEN
        RAISE WARNING 'apikeys_setting_ignored: the request id is longer than 200 characters';
        RETURN NULL;
    END IF;
    RETURN v;
END;
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

-- The head of the chain, read with the latest snapshot (src/audit_chain.c).
CREATE FUNCTION apikeys._audit_last(OUT audit_id bigint, OUT row_hash bytea)
    RETURNS record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_audit_last';

-- BEFORE INSERT: number the row and chain it to the previous one.  The table
-- lock serializes audit writers until commit, so ids follow commit order.
CREATE FUNCTION apikeys._audit_chain() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last_id bigint;
    last_hash bytea;
BEGIN
    IF apikeys._bulk_loading() AND NEW.row_hash IS NOT NULL THEN
        RETURN NEW;   -- pg_restore: keep history as it was
    END IF;
    -- normally taken already by _audit_write, before this INSERT's own lock
    LOCK TABLE apikeys.audit IN SHARE ROW EXCLUSIVE MODE;
    SELECT l.audit_id, l.row_hash INTO last_id, last_hash FROM apikeys._audit_last() l;
    NEW.audit_id := coalesce(last_id, 0) OPERATOR(pg_catalog.+) 1;
    NEW.at := clock_timestamp();
    NEW.prev_hash := coalesce(last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
    NEW.row_hash := apikeys._audit_hash(NEW);
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_chain BEFORE INSERT ON apikeys.audit
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_chain();

CREATE FUNCTION apikeys._audit_purging() RETURNS boolean
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_audit_purging';

-- SECURITY DEFINER: it must reach _audit_purging() whoever owns the table.
CREATE FUNCTION apikeys._audit_append_only() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
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
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The writers' lock first: taken inside the INSERT (after its ROW
    -- EXCLUSIVE lock) it would be a lock upgrade, and two writers deadlock.
    LOCK TABLE apikeys.audit IN SHARE ROW EXCLUSIVE MODE;
    INSERT INTO apikeys.audit (tenant, key_id, action, db_role, session_role, actor,
                               request_id, client_addr, application_name, txid, detail,
                               prev_hash, row_hash)
    VALUES (p_tenant, p_key_id, p_action, apikeys._acting_role(), session_user, apikeys._actor(),
            apikeys._request_id(), inet_client_addr(), current_setting('application_name'),
            pg_current_xact_id(), p_detail, '', '');
END;
$$;

-- AFTER row trigger on tenant, credential, secret, role_tenant, vault_secret and vault_service.
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
    -- never a digest, a vault ciphertext or a master-key fingerprint (a
    -- fingerprint lets a reader test guesses of the master key offline)
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN o := to_jsonb(OLD) OPERATOR(pg_catalog.-) '{digest,ciphertext,key_fp}'::text[]; END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN n := to_jsonb(NEW) OPERATOR(pg_catalog.-) '{digest,ciphertext,key_fp}'::text[]; END IF;
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
    ELSIF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'vault_secret' THEN
        k := (r OPERATOR(pg_catalog.->>) 'id')::uuid;   -- the vault secret's id
        IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE'
           AND (to_jsonb(OLD) OPERATOR(pg_catalog.-) 'last_used_at') OPERATOR(pg_catalog.=) (to_jsonb(NEW) OPERATOR(pg_catalog.-) 'last_used_at') THEN
            RETURN NULL;   -- only last_used_at: vault_reveal writes vault_secret_revealed itself
        END IF;
        act := CASE TG_OP WHEN 'INSERT' THEN 'vault_secret_added' WHEN 'DELETE' THEN 'vault_secret_deleted'
               ELSE CASE WHEN (o OPERATOR(pg_catalog.->) 'active') OPERATOR(pg_catalog.<>) (n OPERATOR(pg_catalog.->) 'active') THEN
                             CASE WHEN (n OPERATOR(pg_catalog.->>) 'active')::boolean THEN 'vault_secret_activated'
                                  ELSE 'vault_secret_deactivated' END
                         WHEN (to_jsonb(OLD) OPERATOR(pg_catalog.->) 'key_fp') OPERATOR(pg_catalog.<>) (to_jsonb(NEW) OPERATOR(pg_catalog.->) 'key_fp') THEN 'vault_secret_reencrypted'
                         ELSE 'vault_secret_updated' END END;
    ELSIF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'vault_service' THEN
        act := CASE TG_OP WHEN 'INSERT' THEN 'vault_service_registered' WHEN 'DELETE' THEN 'vault_service_unregistered'
               ELSE 'vault_service_updated' END;
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

-- TRUNCATE fires no row triggers: it would change keys without an audit row.
CREATE FUNCTION apikeys._refuse_truncate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = format('truncate_not_allowed: TRUNCATE on apikeys.%s is not audited', TG_TABLE_NAME),
        HINT = 'Delete through the apikeys functions (apikey_delete, tenant_delete, ...), which the audit records.';
END;
$$;
CREATE TRIGGER tenant_no_truncate BEFORE TRUNCATE ON apikeys.tenant
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();
CREATE TRIGGER credential_no_truncate BEFORE TRUNCATE ON apikeys.credential
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();
CREATE TRIGGER secret_no_truncate BEFORE TRUNCATE ON apikeys.secret
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();
CREATE TRIGGER role_tenant_no_truncate BEFORE TRUNCATE ON apikeys.role_tenant
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();

-- The audit history a tenant-scoped reader sees of tenant t: from its latest
-- tenant_created row on.  A tenant id can be deleted and created again;
-- the new tenant's roles must not read the old one's history.
CREATE FUNCTION apikeys._audit_since(t text) RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(max(a.audit_id), 0) FROM apikeys.audit a
     WHERE a.tenant OPERATOR(pg_catalog.=) t AND a.action OPERATOR(pg_catalog.=) 'tenant_created'
$$;

-- Rows of apikeys.audit_log: the audit rows of the tenants the caller may
-- audit, each tenant's since its creation (apikeys.tenants explains why a
-- reader function).
CREATE FUNCTION apikeys_internal._read_audit() RETURNS SETOF apikeys.audit
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 1000
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys._visible_tenants('audit');
BEGIN
    IF v IS NULL THEN
        RETURN QUERY SELECT * FROM apikeys.audit a;
    ELSE
        RETURN QUERY SELECT a.* FROM unnest(v) t(tenant)
                       CROSS JOIN LATERAL apikeys._audit_of(t.tenant, NULL, NULL, NULL) a;
    END IF;
END;
$$;

-- One tenant's audit since its creation, newest first, before before_id, of
-- one key if key_id is given, at most max_rows (NULL: all): a backward scan
-- of the tenant's index, however big the other tenants' history.
CREATE FUNCTION apikeys._audit_of(t text, before_id bigint, max_rows integer, key_id uuid)
    RETURNS SETOF apikeys.audit
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM apikeys.audit a
     WHERE a.tenant OPERATOR(pg_catalog.=) t
       AND a.audit_id OPERATOR(pg_catalog.>=) apikeys._audit_since(t)
       AND a.audit_id OPERATOR(pg_catalog.<) coalesce(before_id, 9223372036854775807)
       AND (_audit_of.key_id IS NULL OR a.key_id OPERATOR(pg_catalog.=) _audit_of.key_id)
     ORDER BY a.audit_id DESC LIMIT max_rows
$$;
SELECT apikeys_internal.publish('_read_audit', 'Rows of apikeys.audit_log: the audit rows of the tenants the caller may audit.');
CREATE VIEW apikeys.audit_log WITH (security_invoker = true) AS
SELECT * FROM apikeys._read_audit();
COMMENT ON VIEW apikeys.audit_log IS 'The audit rows the caller may read: its tenants'' since their creation (every row for superusers and global auditors).';

-- One page of apikeys.audit_log, newest first: the rows before before_id
-- (all rows when NULL), at most max_rows, of one key if key_id is given.
CREATE FUNCTION apikeys_internal.audit_log_page(before_id bigint DEFAULT NULL, max_rows integer DEFAULT 100,
                                                key_id uuid DEFAULT NULL)
    RETURNS SETOF apikeys.audit
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys._visible_tenants('audit');
BEGIN
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_max_rows: max_rows must be between 1 and 10000';
    END IF;
    IF v IS NULL THEN
        RETURN QUERY SELECT * FROM apikeys.audit a
                      WHERE a.audit_id OPERATOR(pg_catalog.<) coalesce(before_id, 9223372036854775807)
                        AND (audit_log_page.key_id IS NULL OR a.key_id OPERATOR(pg_catalog.=) audit_log_page.key_id)
                      ORDER BY a.audit_id DESC LIMIT max_rows;
    ELSE
        RETURN QUERY SELECT a.* FROM unnest(v) t(tenant)
                       CROSS JOIN LATERAL apikeys._audit_of(t.tenant, before_id, max_rows, audit_log_page.key_id) a
                      ORDER BY a.audit_id DESC LIMIT max_rows;
    END IF;
END;
$$;
SELECT apikeys_internal.publish('audit_log_page', 'A page of the audit rows the caller may read, newest first, before before_id (keyset pagination).');

-- Walk the chain: ids consecutive, each prev_hash the previous row_hash, each
-- row_hash recomputed from the row.  The first row links to zeros, or, after
-- a purge, to the hash the audit_purged row recorded.  A caller who may audit
-- only some tenants cannot see the rows between theirs: for it, each of its
-- tenants' rows is checked against its own hash, and nothing is said about
-- any other row.
CREATE FUNCTION apikeys_internal.audit_check(
    OUT ok boolean, OUT rows_checked bigint, OUT first_bad_id bigint, OUT problem text)
    RETURNS record
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a apikeys.audit;
    prev apikeys.audit;
    anchor bytea;
    anchor_id bigint;
    v text[] := apikeys._visible_tenants('audit');
BEGIN
    ok := true;
    rows_checked := 0;
    IF v IS NOT NULL THEN
        FOR a IN SELECT * FROM apikeys._read_audit() x ORDER BY x.audit_id LOOP
            rows_checked := rows_checked OPERATOR(pg_catalog.+) 1;
            IF a.row_hash OPERATOR(pg_catalog.<>) apikeys._audit_hash(a) THEN
                ok := false;
                first_bad_id := a.audit_id;
                problem := 'row content does not match its hash';
                RETURN;
            END IF;
        END LOOP;
        RETURN;
    END IF;
    SELECT decode(p.detail OPERATOR(pg_catalog.->>) 'last_purged_hash', 'hex'),
           (p.detail OPERATOR(pg_catalog.->>) 'last_purged_id')::bigint
      INTO anchor, anchor_id
      FROM apikeys.audit p WHERE p.action OPERATOR(pg_catalog.=) 'audit_purged'
     ORDER BY p.audit_id DESC LIMIT 1;
    FOR a IN SELECT * FROM apikeys.audit x ORDER BY x.audit_id LOOP
        rows_checked := rows_checked OPERATOR(pg_catalog.+) 1;
        IF prev.audit_id IS NULL THEN
            IF a.prev_hash OPERATOR(pg_catalog.<>) coalesce(anchor, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) THEN
                problem := 'first row does not link to the chain start';
            ELSIF a.audit_id OPERATOR(pg_catalog.<>) (coalesce(anchor_id, 0) OPERATOR(pg_catalog.+) 1) THEN
                problem := format('rows %s to %s are missing', coalesce(anchor_id, 0) OPERATOR(pg_catalog.+) 1,
                                  a.audit_id OPERATOR(pg_catalog.-) 1);
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
SELECT apikeys_internal.publish('audit_check', 'Verify the audit hash chain; reports the first broken row.');

CREATE FUNCTION apikeys_internal.audit_head(OUT audit_id bigint, OUT row_hash text)
    RETURNS record
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
    -- the whole chain's head, or the newest row of the caller's tenants
    SELECT a.audit_id, encode(a.row_hash, 'hex') INTO audit_id, row_hash
      FROM apikeys.audit_log_page(NULL, 1) a;
END;
$$;
SELECT apikeys_internal.publish('audit_head', 'Newest audit row and its hash: store it outside the database to detect a rewritten chain.');

-- Called by apikeys.audit_purge() (C) with the purge flag set.
CREATE FUNCTION apikeys._audit_purge_rows(older_than interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cut apikeys.audit;
    chain record;
    n bigint;
BEGIN
    IF NOT apikeys._audit_purging() THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'audit_append_only: call apikeys.audit_purge()';
    END IF;
    LOCK TABLE apikeys.audit IN SHARE ROW EXCLUSIVE MODE;
    -- never purge evidence: a broken chain stays until someone looks at it
    SELECT c.ok, c.first_bad_id, c.problem INTO chain FROM apikeys.audit_check() c;
    IF NOT chain.ok THEN
        RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
            MESSAGE = format('audit_chain_broken: audit row %s: %s', chain.first_bad_id, chain.problem),
            HINT = 'apikeys.audit_check() shows the first broken row; the purge refuses to delete evidence of tampering.';
    END IF;
    -- purge a prefix of the chain: everything up to the newest row old enough
    SELECT * INTO cut FROM apikeys.audit a
     WHERE a.at OPERATOR(pg_catalog.<) (now() OPERATOR(pg_catalog.-) older_than)
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

CREATE FUNCTION apikeys_internal.audit_purge(older_than interval DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikeys_audit_purge';
SELECT apikeys_internal.publish('audit_purge', 'Delete audit rows older than older_than (default: apikeys.audit_retention), keeping the chain checkable.');
