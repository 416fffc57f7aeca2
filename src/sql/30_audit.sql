------------------------------------------------------------------------------
-- Audit: append-only, hash-chained
------------------------------------------------------------------------------

-- One hash chain per tenant (chain = tenant, '' for rows of no tenant);
-- audit_id numbers the rows of one chain.  docs/audit.md explains the design.
CREATE TABLE apikeys.audit (
    chain            text COLLATE "C" NOT NULL,
    audit_id         bigint NOT NULL,
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
    row_hash         bytea NOT NULL,
    PRIMARY KEY (chain, audit_id)
);
CREATE INDEX audit_key_idx ON apikeys.audit (key_id, audit_id) WHERE key_id IS NOT NULL;
CREATE INDEX audit_at_idx ON apikeys.audit (at, audit_id);
SELECT pg_catalog.pg_extension_config_dump('apikeys.audit', '');
COMMENT ON TABLE apikeys.audit IS 'Every change to tenants, keys, secrets, role mappings and the vault. Append-only; one hash chain per tenant, each row hashing the previous one of its chain (audit_check()).';

-- Application actor and request id, in this order: the labels set_tenant()
-- or authenticate() bound to the transaction; apikeys.actor /
-- apikeys.request_id if set for this transaction (SET LOCAL); PostgREST's
-- transaction-local request.jwt.claims "sub" / request.headers
-- "x-request-id".  A value set for the session is ignored with a WARNING (in
-- a pooled connection it may be another client's), and so is one over 200
-- characters.  Nothing here raises: any setting's value, however malformed,
-- reads as absent, so an audit row or a refusal's log line is never lost.

-- In C (src/audit_row.c), shared with the audit triggers.  A JSON setting
-- over 16 kB, or not valid JSON, or not an object, or holding anything jsonb
-- refuses (a \u0000, nesting past the stack limit) reads as absent: its
-- parse catches every error but a cancel (and an assertion failure).
CREATE FUNCTION apikeys_internal._actor() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_actor_1_1';
CREATE FUNCTION apikeys_internal._request_id() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_request_id_1_1';

-- What row_hash must be: SHA-256 of every other column, length-prefixed
-- (src/audit_chain.c; the encoding is in docs/audit.md).
CREATE FUNCTION apikeys_internal._audit_hash(a apikeys.audit) RETURNS bytea
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_audit_hash';

-- BEFORE INSERT: number the row in its chain, link it to the chain's head and
-- hash it, under the chain's lock (src/audit_chain.c).  ALWAYS: also under
-- session_replication_role = replica.
CREATE FUNCTION apikeys_internal._audit_chain() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'apikeys_audit_chain_trigger';
CREATE TRIGGER audit_chain BEFORE INSERT ON apikeys.audit
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_chain();
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_chain;

CREATE FUNCTION apikeys_internal._audit_purging() RETURNS boolean
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'apikeys_audit_purging';
CREATE FUNCTION apikeys_internal._audit_chain_try_lock(chain text) RETURNS boolean
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'apikeys_audit_chain_try_lock';
COMMENT ON FUNCTION apikeys_internal._audit_chain_try_lock(text) IS 'Take an audit chain''s lock without waiting (held to commit); false when another transaction is writing the chain.';

-- SECURITY DEFINER: it must reach _audit_purging() whoever owns the table.
CREATE FUNCTION apikeys_internal._audit_append_only() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' AND apikeys_internal._audit_purging() THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = format('audit_append_only: %s on apikeys.audit is not allowed', TG_OP),
        HINT = 'Old rows leave only through apikeys.audit_purge().';
END;
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON apikeys.audit
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON apikeys.audit
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._audit_append_only();
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_no_truncate;

-- One audit row: the acting role, session_user, the labels, the client
-- address, application_name and the transaction id come from the session;
-- chain, audit_id, at, prev_hash and row_hash from the chain trigger.
CREATE FUNCTION apikeys_internal._audit_write(p_action text, p_tenant text, p_key_id uuid, p_detail jsonb)
    RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikeys_audit_write_1_1';

-- AFTER row trigger on tenant, credential, secret, role_tenant, vault_secret,
-- vault_service and scope (for the inserts of credential and secret, a statement
-- trigger with the new rows): one audit row per changed row, its action named from
-- the table and the change, its detail the row (or what an update changed)
-- without digest, ciphertext or key_fp.  In C (src/audit_row.c, the rules
-- are there): it runs for every row a management statement changes.
CREATE FUNCTION apikeys_internal._audit_row_change() RETURNS trigger
    LANGUAGE C SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikeys_audit_row_change_1_1';
CREATE TRIGGER audit_tenant AFTER INSERT OR UPDATE OR DELETE ON apikeys.tenant
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_row_change();
-- Keys are created in bulk (apikey_create_many): their inserts are audited
-- by a statement trigger that writes the rows of all of a statement's new
-- rows set-based, the same rows as a row trigger would write one by one.
CREATE TRIGGER audit_credential AFTER UPDATE OR DELETE ON apikeys.credential
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_row_change();
CREATE TRIGGER audit_credential_insert AFTER INSERT ON apikeys.credential
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._audit_row_change();
CREATE TRIGGER audit_secret AFTER UPDATE OR DELETE ON apikeys.secret
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_row_change();
CREATE TRIGGER audit_secret_insert AFTER INSERT ON apikeys.secret
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._audit_row_change();
CREATE TRIGGER audit_role_tenant AFTER INSERT OR UPDATE OR DELETE ON apikeys.role_tenant
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_row_change();
-- ALWAYS: a superuser's change under session_replication_role = replica is
-- audited too (restored and replicated rows pass: apikeys_internal._bulk_loading()).
ALTER TABLE apikeys.tenant ENABLE ALWAYS TRIGGER audit_tenant;
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER audit_credential;
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER audit_credential_insert;
ALTER TABLE apikeys.secret ENABLE ALWAYS TRIGGER audit_secret;
ALTER TABLE apikeys.secret ENABLE ALWAYS TRIGGER audit_secret_insert;
ALTER TABLE apikeys.role_tenant ENABLE ALWAYS TRIGGER audit_role_tenant;

-- TRUNCATE fires no row triggers: it would change keys without an audit row.
CREATE FUNCTION apikeys_internal._refuse_truncate() RETURNS trigger
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
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._refuse_truncate();
CREATE TRIGGER credential_no_truncate BEFORE TRUNCATE ON apikeys.credential
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._refuse_truncate();
CREATE TRIGGER secret_no_truncate BEFORE TRUNCATE ON apikeys.secret
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._refuse_truncate();
CREATE TRIGGER role_tenant_no_truncate BEFORE TRUNCATE ON apikeys.role_tenant
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._refuse_truncate();

-- The audit history a tenant-scoped reader sees of tenant t: from its latest
-- tenant_created row on.  A tenant id can be deleted and created again;
-- the new tenant's roles must not read the old one's history.
CREATE FUNCTION apikeys_internal._audit_since(t text) RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(max(a.audit_id), 0) FROM apikeys.audit a
     WHERE a.chain OPERATOR(pg_catalog.=) t AND a.action OPERATOR(pg_catalog.=) 'tenant_created'
$$;

-- One tenant's chain since the tenant's creation, newest first, before
-- before_id, of one key if key_id is given, at most max_rows (NULL: all): a
-- backward scan of the chain's primary key.
CREATE FUNCTION apikeys_internal._audit_of(t text, before_id bigint, max_rows integer, key_id uuid)
    RETURNS SETOF apikeys.audit
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM apikeys.audit a
     WHERE a.chain OPERATOR(pg_catalog.=) t
       AND a.audit_id OPERATOR(pg_catalog.>=) apikeys_internal._audit_since(t)
       AND a.audit_id OPERATOR(pg_catalog.<) coalesce(before_id, 9223372036854775807)
       AND (_audit_of.key_id IS NULL OR a.key_id OPERATOR(pg_catalog.=) _audit_of.key_id)
     ORDER BY a.audit_id DESC LIMIT max_rows
$$;

-- The chains the caller may audit: every chain for superusers and global
-- auditors, else its tenants'.
CREATE FUNCTION apikeys_internal._audit_chains() RETURNS SETOF text
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('audit');
BEGIN
    IF v IS NULL THEN
        -- one index probe per chain, however long the chains
        RETURN QUERY WITH RECURSIVE c(chain) AS (
            (SELECT a.chain FROM apikeys.audit a ORDER BY a.chain LIMIT 1)
            UNION ALL
            SELECT (SELECT a.chain FROM apikeys.audit a WHERE a.chain OPERATOR(pg_catalog.>) c.chain
                     ORDER BY a.chain LIMIT 1)
              FROM c WHERE c.chain IS NOT NULL)
        SELECT c.chain FROM c WHERE c.chain IS NOT NULL;
    ELSE
        RETURN QUERY SELECT t FROM unnest(v) t ORDER BY 1;
    END IF;
END;
$$;

-- Rows of apikeys.audit_log: the audit rows of the tenants the caller may
-- audit, each tenant's since its creation (apikeys.tenants explains why a
-- reader function).
CREATE FUNCTION apikeys_internal.read_audit() RETURNS SETOF apikeys.audit
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 1000
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('audit');
BEGIN
    IF v IS NULL THEN
        RETURN QUERY SELECT * FROM apikeys.audit a;
    ELSE
        RETURN QUERY SELECT a.* FROM unnest(v) t(tenant)
                       CROSS JOIN LATERAL apikeys_internal._audit_of(t.tenant, NULL, NULL, NULL) a;
    END IF;
END;
$$;
SELECT apikeys_internal.publish('read_audit', 'Rows of apikeys.audit_log: the audit rows of the tenants the caller may audit.');
CREATE VIEW apikeys.audit_log WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_audit();
COMMENT ON VIEW apikeys.audit_log IS 'The audit rows the caller may read: its tenants'' since their creation (every row for superusers and global auditors).';

-- One page of a chain, newest first: the rows before before_id (NULL: from
-- the newest), at most max_rows, of one key if key_id is given.  tenant ''
-- is the chain of rows of no tenant; a chain the caller may not audit has
-- no rows for it.
CREATE FUNCTION apikeys_internal.audit_log_page(tenant text, before_id bigint DEFAULT NULL,
                                                max_rows integer DEFAULT 100, key_id uuid DEFAULT NULL)
    RETURNS SETOF apikeys.audit
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('audit');
BEGIN
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_max_rows: max_rows must be between 1 and 10000';
    END IF;
    IF v IS NULL THEN
        RETURN QUERY SELECT * FROM apikeys.audit a
                      WHERE a.chain OPERATOR(pg_catalog.=) coalesce(audit_log_page.tenant, '')
                        AND a.audit_id OPERATOR(pg_catalog.<) coalesce(before_id, 9223372036854775807)
                        AND (audit_log_page.key_id IS NULL OR a.key_id OPERATOR(pg_catalog.=) audit_log_page.key_id)
                      ORDER BY a.audit_id DESC LIMIT max_rows;
    ELSIF tenant OPERATOR(pg_catalog.=) ANY (v) THEN
        RETURN QUERY SELECT * FROM apikeys_internal._audit_of(tenant, before_id, max_rows, audit_log_page.key_id);
    END IF;
END;
$$;
SELECT apikeys_internal.publish('audit_log_page', 'A page of one tenant''s audit chain, newest first, before before_id (keyset pagination).');

-- Walk every chain the caller may audit: ids consecutive, each prev_hash the
-- previous row's row_hash, each row_hash recomputed from the row.  A chain's
-- first row links to 32 zero bytes, or, after a purge, to the hash that the
-- chain's latest audit_purged row recorded.  The first broken link found
-- (chains in name order) is reported.
CREATE FUNCTION apikeys_internal.audit_check(
    OUT ok boolean, OUT rows_checked bigint, OUT first_bad_chain text, OUT first_bad_id bigint, OUT problem text)
    RETURNS record
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text;
    a apikeys.audit;
    anchor apikeys.audit;
    purged apikeys.audit;
    next_id bigint;
    next_prev bytea;
    scoped boolean := apikeys.visible_tenants('audit') IS NOT NULL;
    since bigint;
BEGIN
    ok := true;
    rows_checked := 0;
    FOR c IN SELECT x FROM apikeys_internal._audit_chains() x LOOP
        next_id := 1;
        next_prev := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
        -- after a purge: start from the anchor, which must hold the whole
        -- newest purged row, hashing to what it says, at least a day older
        -- than the anchor itself (a forged anchor cannot name seconds-old rows)
        -- and the anchor dated no later than the check and every row after
        -- it (with 5 minutes for clock steps): an anchor dated a day ahead,
        -- to pass the day rule, is refused until that day comes, and for
        -- ever once a row of that day follows it (a forged row right after
        -- it, dated as far ahead, does not hide the rows after that)
        SELECT * INTO anchor FROM apikeys.audit p
         WHERE p.chain OPERATOR(pg_catalog.=) c AND p.action OPERATOR(pg_catalog.=) 'audit_purged'
         ORDER BY p.audit_id DESC LIMIT 1;
        IF anchor.audit_id IS NOT NULL AND
           (anchor.at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.+) interval '5 minutes') OR
            anchor.at OPERATOR(pg_catalog.>) (SELECT pg_catalog.min(n.at) OPERATOR(pg_catalog.+) interval '5 minutes' FROM apikeys.audit n
                                               WHERE n.chain OPERATOR(pg_catalog.=) c
                                                 AND n.audit_id OPERATOR(pg_catalog.>) anchor.audit_id)) THEN
            ok := false;
            first_bad_chain := c;
            first_bad_id := anchor.audit_id;
            problem := 'the purge anchor is dated after the check or a row that follows it';
            RETURN;
        END IF;
        IF anchor.audit_id IS NOT NULL THEN
            BEGIN
                purged := jsonb_populate_record(NULL::apikeys.audit, anchor.detail OPERATOR(pg_catalog.->) 'last_purged_row');
            EXCEPTION WHEN others THEN
                purged := NULL;
            END;
            next_id := (anchor.detail OPERATOR(pg_catalog.->>) 'last_purged_id')::bigint OPERATOR(pg_catalog.+) 1;
            next_prev := decode(anchor.detail OPERATOR(pg_catalog.->>) 'last_purged_hash', 'hex');
            -- every part must hold (IS NOT TRUE): a missing field is a NULL
            -- comparison, which must not pass for a true one
            IF (purged.audit_id IS NOT NULL AND purged.chain OPERATOR(pg_catalog.=) c
                AND purged.audit_id OPERATOR(pg_catalog.=) (next_id OPERATOR(pg_catalog.-) 1)
                AND purged.row_hash OPERATOR(pg_catalog.=) next_prev
                AND apikeys_internal._audit_hash(purged) OPERATOR(pg_catalog.=) next_prev
                AND purged.at OPERATOR(pg_catalog.<) (anchor.detail OPERATOR(pg_catalog.->>) 'cutoff')::timestamptz
                AND (anchor.detail OPERATOR(pg_catalog.->>) 'cutoff')::timestamptz
                    OPERATOR(pg_catalog.<=) (anchor.at OPERATOR(pg_catalog.-) interval '1 day')) IS NOT TRUE THEN
                ok := false;
                first_bad_chain := c;
                first_bad_id := anchor.audit_id;
                problem := 'the purge anchor does not prove what it purged';
                RETURN;
            END IF;
        END IF;
        -- a one-tenant auditor sees its tenant's chain from the tenant's
        -- latest creation on: a tenant id reused shows nothing of before
        IF scoped THEN
            since := apikeys_internal._audit_since(c);
            IF since OPERATOR(pg_catalog.>) next_id THEN
                next_id := since;
                SELECT x.prev_hash INTO next_prev FROM apikeys.audit x
                 WHERE x.chain OPERATOR(pg_catalog.=) c AND x.audit_id OPERATOR(pg_catalog.=) since;
            END IF;
        END IF;
        FOR a IN SELECT * FROM apikeys.audit x WHERE x.chain OPERATOR(pg_catalog.=) c
                                                 AND x.audit_id OPERATOR(pg_catalog.>=) CASE WHEN scoped THEN next_id ELSE 0 END
                  ORDER BY x.audit_id LOOP
            rows_checked := rows_checked OPERATOR(pg_catalog.+) 1;
            IF a.audit_id OPERATOR(pg_catalog.>) next_id THEN
                problem := format('rows %s to %s are missing', next_id, a.audit_id OPERATOR(pg_catalog.-) 1);
            ELSIF a.audit_id OPERATOR(pg_catalog.<) next_id THEN
                problem := 'the row is older than the chain''s start';
            ELSIF a.prev_hash OPERATOR(pg_catalog.<>) next_prev THEN
                problem := CASE WHEN rows_checked OPERATOR(pg_catalog.=) 1 OR a.audit_id OPERATOR(pg_catalog.=) 1
                                THEN 'first row does not link to the chain start'
                                ELSE 'prev_hash does not match the previous row' END;
            ELSIF a.row_hash OPERATOR(pg_catalog.<>) apikeys_internal._audit_hash(a) THEN
                problem := 'row content does not match its hash';
            END IF;
            IF problem IS NOT NULL THEN
                ok := false;
                first_bad_chain := c;
                first_bad_id := a.audit_id;
                RETURN;
            END IF;
            next_id := a.audit_id OPERATOR(pg_catalog.+) 1;
            next_prev := a.row_hash;
        END LOOP;
    END LOOP;
END;
$$;
SELECT apikeys_internal.publish('audit_check', 'Verify the audit hash chains the caller may audit; reports the first broken row.');

-- audit_check() that raises: for pg_cron jobs and monitoring, which treat an
-- error as a failure.
CREATE FUNCTION apikeys_internal.audit_verify() RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM apikeys.audit_check();
    IF NOT r.ok THEN
        RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
            MESSAGE = format('audit_chain_broken: chain "%s" row %s: %s', r.first_bad_chain, r.first_bad_id, r.problem),
            DETAIL = format('%s rows checked before the break.', r.rows_checked OPERATOR(pg_catalog.-) 1),
            HINT = 'Compare with the heads stored outside the database (apikeys.audit_head()) and the server log.';
    END IF;
END;
$$;
SELECT apikeys_internal.publish('audit_verify', 'audit_check() that raises audit_chain_broken (XX001) on the first broken row: for scheduled checks.');

-- The newest row of every chain the caller may audit: store these outside
-- the database to detect a rewritten or truncated chain.
CREATE FUNCTION apikeys_internal.audit_head()
    RETURNS TABLE (chain text, audit_id bigint, row_hash text, at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT c.x, h.audit_id, encode(h.row_hash, 'hex'), h.at
      FROM apikeys_internal._audit_chains() c(x)
      CROSS JOIN LATERAL (SELECT a.audit_id, a.row_hash, a.at FROM apikeys.audit a
                           WHERE a.chain OPERATOR(pg_catalog.=) c.x
                           ORDER BY a.audit_id DESC LIMIT 1) h
     ORDER BY 1;
END;
$$;
SELECT apikeys_internal.publish('audit_head', 'Newest row, hash and time of each audit chain the caller may audit: store them outside the database to detect a rewritten or shortened chain (audit_head_check).');

-- A head stored from audit_head() earlier, checked against the chain now:
-- the row is still there with that hash and time, or a purge accounts for
-- it (the chain's newest audit_purged row purged up to it or past it, with a
-- cutoff after the row's time, and names its hash if it was the last row
-- purged).  Rows deleted from the end of a chain leave a valid shorter
-- chain, and a forged anchor over them checks too unless it is dated a day
-- ahead (which audit_check() refuses until then): this finds both.  The
-- anchor itself is proved by audit_check().
CREATE FUNCTION apikeys_internal.audit_head_check(chain text, audit_id bigint, row_hash text, at timestamptz,
    OUT ok boolean, OUT problem text)
    RETURNS record
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('audit');
    r apikeys.audit;
    p apikeys.audit;
BEGIN
    IF chain IS NULL OR audit_id IS NULL OR row_hash IS NULL OR at IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_head: chain, audit_id, row_hash and at must not be NULL',
            HINT = 'Pass a row of apikeys.audit_head() as it was stored.';
    END IF;
    IF v IS NOT NULL AND NOT (chain OPERATOR(pg_catalog.=) ANY (v)) THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'not_authorized: you may not audit this chain';
    END IF;
    SELECT * INTO r FROM apikeys.audit a
     WHERE a.chain OPERATOR(pg_catalog.=) audit_head_check.chain
       AND a.audit_id OPERATOR(pg_catalog.=) audit_head_check.audit_id;
    IF FOUND THEN
        ok := encode(r.row_hash, 'hex') OPERATOR(pg_catalog.=) lower(audit_head_check.row_hash)
              AND r.at OPERATOR(pg_catalog.=) audit_head_check.at;
        problem := CASE WHEN NOT ok THEN 'the stored head''s row has another hash or time now' END;
        RETURN;
    END IF;
    SELECT * INTO p FROM apikeys.audit a
     WHERE a.chain OPERATOR(pg_catalog.=) audit_head_check.chain AND a.action OPERATOR(pg_catalog.=) 'audit_purged'
     ORDER BY a.audit_id DESC LIMIT 1;
    ok := coalesce((p.detail OPERATOR(pg_catalog.->>) 'last_purged_id')::bigint OPERATOR(pg_catalog.>=) audit_head_check.audit_id
                   AND (p.detail OPERATOR(pg_catalog.->>) 'cutoff')::timestamptz OPERATOR(pg_catalog.>) audit_head_check.at
                   AND ((p.detail OPERATOR(pg_catalog.->>) 'last_purged_id')::bigint OPERATOR(pg_catalog.>) audit_head_check.audit_id
                        OR p.detail OPERATOR(pg_catalog.->>) 'last_purged_hash' OPERATOR(pg_catalog.=) lower(audit_head_check.row_hash)),
                   false);
    problem := CASE WHEN NOT ok THEN 'the stored head is gone and no purge accounts for it: rows were deleted from the end of the chain' END;
END;
$$;
SELECT apikeys_internal.publish('audit_head_check', 'Check a head stored from audit_head() against the chain now: still there, or purged (else rows were deleted from the end).');

-- Called by apikeys.audit_purge() (C) with the purge flag set, with the
-- cutoff already checked: for each chain with rows older than the cutoff,
-- append an audit_purged row naming the newest of them, then delete them.
-- The audit_purged row is written first, so it links to the chain's head
-- and the chain stays checkable from its new first row even when every
-- older row goes.  A chain whose lock another transaction holds (a writer
-- of that tenant, still open) is left for the next purge, with a warning:
-- waiting for it here, holding the chains already purged until commit,
-- would make their tenants wait for that writer too.
CREATE FUNCTION apikeys_internal._audit_purge_rows(cutoff timestamptz, older_than interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    chk record;
    c text;
    cut apikeys.audit;
    n bigint;
    total bigint := 0;
    busy text[] := '{}';
BEGIN
    IF NOT apikeys_internal._audit_purging() THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'audit_append_only: call apikeys.audit_purge()';
    END IF;
    -- never purge evidence: a broken chain stays until someone looks at it
    SELECT * INTO chk FROM apikeys.audit_check();
    IF NOT chk.ok THEN
        RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
            MESSAGE = format('audit_chain_broken: chain "%s" row %s: %s', chk.first_bad_chain, chk.first_bad_id, chk.problem),
            HINT = 'apikeys.audit_check() shows the first broken row; the purge refuses to delete evidence of tampering.';
    END IF;
    FOR c IN SELECT x FROM apikeys_internal._audit_chains() x LOOP
        SELECT * INTO cut FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.at OPERATOR(pg_catalog.<) cutoff
         ORDER BY a.audit_id DESC LIMIT 1;
        CONTINUE WHEN cut.audit_id IS NULL;
        IF NOT apikeys_internal._audit_chain_try_lock(c) THEN
            busy := busy OPERATOR(pg_catalog.||) c;
            CONTINUE;
        END IF;
        -- read again under the lock: another purge may have committed since
        -- (an anchor naming rows it already deleted would break the chain)
        SELECT * INTO cut FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.at OPERATOR(pg_catalog.<) cutoff
         ORDER BY a.audit_id DESC LIMIT 1;
        CONTINUE WHEN cut.audit_id IS NULL;
        SELECT count(*) INTO n FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.audit_id OPERATOR(pg_catalog.<=) cut.audit_id;
        -- the anchor carries the whole newest purged row, so a check can prove
        -- that what it names really was hashed, and at least a day old
        PERFORM apikeys_internal._audit_write('audit_purged', nullif(c, ''), NULL, jsonb_build_object(
            'rows', n, 'older_than', older_than, 'cutoff', cutoff, 'last_purged_id', cut.audit_id,
            'last_purged_hash', encode(cut.row_hash, 'hex'), 'last_purged_row', to_jsonb(cut)));
        DELETE FROM apikeys.audit a
         WHERE a.chain OPERATOR(pg_catalog.=) c AND a.audit_id OPERATOR(pg_catalog.<=) cut.audit_id;
        total := total OPERATOR(pg_catalog.+) n;
    END LOOP;
    IF cardinality(busy) OPERATOR(pg_catalog.>) 0 THEN
        RAISE WARNING 'audit_purge_busy: % chain(s) being written were left as they are: %', cardinality(busy),
                      array_to_string(ARRAY(SELECT quote_literal(b) FROM unnest(busy) b), ', ')
            USING DETAIL = 'A transaction that wrote to each of them is still open; the purge does not wait for it.',
                  HINT = 'Their old rows go at the next purge.';
    END IF;
    RETURN total;
END;
$$;

CREATE FUNCTION apikeys_internal.audit_purge(older_than interval DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikeys_audit_purge';
SELECT apikeys_internal.publish('audit_purge', 'Delete audit rows older than older_than (default: apikeys.audit_retention), keeping the chain checkable.');
