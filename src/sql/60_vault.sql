------------------------------------------------------------------------------
-- Third-party secret vault: other services' keys (OpenAI, Anthropic, Hugging
-- Face, ...), encrypted with pgcrypto under a master key that lives only in
-- the superuser-only setting apikeys.vault_master_key (src/guc.c): never in
-- a table, the audit or an error message.  One active secret per service
-- per owner (tenant, or a role within it); plaintext only for the owner.
------------------------------------------------------------------------------

-- Registry of services and the format their keys must have.  Built-in rows
-- come from this script; rows an admin adds (builtin = false) are dumped.
CREATE TABLE apikeys.vault_service (
    service      text COLLATE "C" PRIMARY KEY CHECK (service ~ '^[a-z][a-z0-9_-]{1,62}$'),
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    -- an anchored POSIX regular expression the secret must match; NULL for an alias
    format       text CHECK (char_length(format) BETWEEN 2 AND 1000 AND format ~ '^\^.*\$$'),
    -- no foreign key (a self-reference makes pg_dump warn about cycles):
    -- vault_service_register/unregister keep aliases pointing at services
    alias_of     text COLLATE "C",
    builtin      boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((format IS NULL) = (alias_of IS NOT NULL))
);
COMMENT ON TABLE apikeys.vault_service IS 'Services whose keys the vault stores, with the format (anchored regex) a key must match; an alias stores under its target.';

INSERT INTO apikeys.vault_service (service, display_name, format, alias_of, builtin) VALUES
    ('openai',      'OpenAI',        '^sk-(?!ant-)[A-Za-z0-9_-]{20,}$', NULL, true),
    ('anthropic',   'Anthropic',     '^sk-ant-[A-Za-z0-9_-]{20,}$',     NULL, true),
    ('claude',      'Anthropic (Claude)', NULL,                         'anthropic', true),
    ('huggingface', 'Hugging Face',  '^hf_[A-Za-z0-9]{30,}$',           NULL, true),
    ('gemini',      'Google Gemini', '^[A-Za-z0-9_.-]{16,}$',           NULL, true),
    ('generic',     'Generic secret', '^[!-~]{16,}$',                   NULL, true);
-- Every secret is also at most 4096 bytes (vault_add).  Regex repetition
-- counts stop at 255, hence the open upper bounds.

CREATE TABLE apikeys.vault_secret (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant       text COLLATE "C" NOT NULL REFERENCES apikeys.tenant (tenant) ON DELETE CASCADE,
    owner_user   text COLLATE "C" CHECK (char_length(owner_user) BETWEEN 1 AND 63),  -- NULL: the tenant
    service      text COLLATE "C" NOT NULL REFERENCES apikeys.vault_service (service),
    name         text NOT NULL CHECK (char_length(name) BETWEEN 3 AND 100),
    ciphertext   bytea NOT NULL,     -- pgp_sym_encrypt(secret, id || ':' || master key), AES-256
    key_fp       text NOT NULL CHECK (key_fp ~ '^[0-9a-f]{16}$'),  -- fingerprint of that master key
    active       boolean NOT NULL DEFAULT true,
    last_used_at timestamptz,        -- last vault_reveal
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX vault_secret_one_active
    ON apikeys.vault_secret (tenant, (coalesce(owner_user, '')), service) WHERE active;
CREATE INDEX vault_secret_tenant_idx ON apikeys.vault_secret (tenant, service, created_at);
COMMENT ON TABLE apikeys.vault_secret IS 'Third-party secrets, encrypted under the vault master key; at most one active per (tenant, owner_user, service). Never readable by tenants.';

SELECT pg_catalog.pg_extension_config_dump('apikeys.vault_service', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('apikeys.vault_secret', '');

CREATE TRIGGER audit_vault_service AFTER INSERT OR UPDATE OR DELETE ON apikeys.vault_service
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_row_change();
CREATE TRIGGER audit_vault_secret AFTER INSERT OR UPDATE OR DELETE ON apikeys.vault_secret
    FOR EACH ROW EXECUTE FUNCTION apikeys_internal._audit_row_change();
ALTER TABLE apikeys.vault_service ENABLE ALWAYS TRIGGER audit_vault_service;
ALTER TABLE apikeys.vault_secret ENABLE ALWAYS TRIGGER audit_vault_secret;
CREATE TRIGGER vault_service_no_truncate BEFORE TRUNCATE ON apikeys.vault_service
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._refuse_truncate();
CREATE TRIGGER vault_secret_no_truncate BEFORE TRUNCATE ON apikeys.vault_secret
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys_internal._refuse_truncate();

-- Metadata only: no ciphertext, no key fingerprint; the visible tenants'
-- secrets only, read inside a function (see apikeys.tenants for why).
CREATE FUNCTION apikeys_internal.read_vault_secrets()
    RETURNS TABLE (id uuid, tenant text, owner_user text, service text, name text, active boolean,
                   last_used_at timestamptz, created_at timestamptz, updated_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED ROWS 100
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v text[] := apikeys.visible_tenants('read');
BEGIN
    RETURN QUERY
    SELECT s.id, s.tenant, s.owner_user, s.service, s.name, s.active, s.last_used_at, s.created_at, s.updated_at
      FROM apikeys.vault_secret s
     WHERE v IS NULL OR s.tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;
SELECT apikeys_internal.publish('read_vault_secrets', 'Rows of apikeys.vault_secrets: metadata of the vault secrets of the tenants the caller may read.');
CREATE VIEW apikeys.vault_secrets WITH (security_invoker = true) AS
SELECT * FROM apikeys.read_vault_secrets();
COMMENT ON VIEW apikeys.vault_secrets IS 'Vault secrets'' metadata (no ciphertext) of the tenants the caller may read.';

ALTER TABLE apikeys.vault_service ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.vault_secret ENABLE ROW LEVEL SECURITY;
CREATE POLICY vault_service_read ON apikeys.vault_service FOR SELECT USING (true);
CREATE POLICY vault_secret_read ON apikeys.vault_secret FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) ANY (coalesce((SELECT apikeys.visible_tenants('read')), ARRAY[tenant])));

------------------------------------------------------------------------------
-- Internals.  The master keys never reach SQL: src/vault_crypto.c reads them
-- (settings or key file), computes their fingerprints and calls pgcrypto
-- through the function manager, so no statement the executor runs, and so
-- no plan auto_explain could log, ever holds a master key.  A plaintext is
-- held only in plpgsql variables used in simple expressions (assignments,
-- IF, RETURN), which never reach the executor either; and every function
-- that holds one also runs with plan_cache_mode = force_generic_plan, so a
-- statement that used one would show a $n parameter, never the value, in
-- its plan.  The C functions refuse to run unless the current user is a
-- superuser: they work only inside the SECURITY DEFINER entry points below.
------------------------------------------------------------------------------

-- A short, non-reversible fingerprint of a master key (which key encrypted a
-- row); the same as the C code computes.  Neither the extension nor its
-- functions call it (the key would be an argument): it is for superusers who
-- want to know which key a row is under, and for the tests.
CREATE FUNCTION apikeys_internal._vault_fingerprint(master_key text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT encode(substr(sha256('\x6170696b6579732e7661756c743a'::bytea   -- 'apikeys.vault:'
                                OPERATOR(pg_catalog.||) textsend(master_key)), 1, 8), 'hex')
$$;

-- Fingerprints of the configured keys (prev_fp NULL outside a rotation);
-- vault_master_key_missing / vault_master_key_invalid without a usable key.
CREATE FUNCTION apikeys_internal._vault_key_state(OUT cur_fp text, OUT prev_fp text) RETURNS record
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_vault_key_state';

-- Encrypt a secret (pgp_sym_encrypt, AES-256, no compression; passphrase
-- id || ':' || master key) under the current master key.
CREATE FUNCTION apikeys_internal._vault_seal(id uuid, plaintext text, OUT ciphertext bytea, OUT key_fp text) RETURNS record
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_vault_seal';

-- Decrypt a row with whichever configured key encrypted it.  problem:
-- NULL, 'master_key_mismatch' (neither configured key encrypted it) or
-- 'decrypt_failed'; stale: decrypted with the previous master key.
CREATE FUNCTION apikeys_internal._vault_open(id uuid, ciphertext bytea, key_fp text,
                                    OUT plaintext text, OUT problem text, OUT stale boolean) RETURNS record
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_vault_open';

-- A row re-encrypted under the current master key (as it is if it already
-- is; NULLs if the previous key does not open it).  For the rotation: the
-- plaintext never leaves C.
CREATE FUNCTION apikeys_internal._vault_rewrap(id uuid, ciphertext bytea, key_fp text,
                                      OUT ciphertext bytea, OUT key_fp text) RETURNS record
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_vault_rewrap';

-- Serialize changes to one owner's secrets of one service (owner NULL: the
-- tenant) until the end of the transaction.  The lock's tag is one no SQL
-- function can take (not pg_advisory_*), so no role can hold it to block
-- another tenant's vault_add.
CREATE FUNCTION apikeys_internal._vault_lock_slot(tenant text, owner text, service text) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'apikeys_vault_lock_slot';

-- A service by name (aliases resolved).  Never echoes the caller's input:
-- a secret passed in the wrong argument must not reach an error message.
CREATE FUNCTION apikeys_internal._vault_service(p_service text) RETURNS apikeys.vault_service
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_service;
BEGIN
    SELECT * INTO s FROM apikeys.vault_service v WHERE v.service OPERATOR(pg_catalog.=) lower(p_service);
    IF FOUND AND s.alias_of IS NOT NULL THEN
        SELECT * INTO s FROM apikeys.vault_service v WHERE v.service OPERATOR(pg_catalog.=) s.alias_of;
    END IF;
    IF s.service IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = 'vault_service_not_found: no such vault service',
            HINT = 'apikeys.vault_service lists the services; an admin adds one with apikeys.vault_service_register().';
    END IF;
    RETURN s;
END;
$$;

CREATE FUNCTION apikeys_internal._vault_check_name(p_name text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_name IS NULL OR char_length(p_name) NOT BETWEEN 3 AND 100 OR p_name ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_name: name must be 3 to 100 characters without control characters';
    END IF;
    RETURN p_name;
END;
$$;

-- May the acting role do `need` ('read' or 'manage') on a tenant?  'manage'
-- is apikeys_internal._may_manage(); 'read' is what the readers show (a mapping of
-- either privilege, or the bound tenant).  Answers; never raises.
CREATE FUNCTION apikeys_internal._vault_may(p_tenant text, p_need text)
    RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text[];
BEGIN
    IF p_need OPERATOR(pg_catalog.=) 'manage' THEN
        RETURN apikeys_internal._may_manage(p_tenant);
    END IF;
    v := apikeys.visible_tenants('read');
    RETURN v IS NULL OR p_tenant OPERATOR(pg_catalog.=) ANY (v);
END;
$$;

-- Refuse a tenant-scoped call the session's role may not make
-- (permission_denied; the tenant is not echoed: it could be a misplaced
-- secret).  For one secret, use apikeys_internal._vault_find instead.
CREATE FUNCTION apikeys_internal._vault_authorize(p_tenant text, p_action text, p_need text)
    RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name := apikeys_internal._acting_role();
BEGIN
    IF NOT apikeys_internal._vault_may(p_tenant, p_need) THEN
        PERFORM apikeys_internal._deny(p_action, NULL, NULL, '42501',
            format('permission_denied: role "%s" may not %s this tenant', r, p_need),
            'A superuser can allow it with apikeys.grant_tenant(role, tenant).');
    END IF;
END;
$$;

-- Find a secret the session's role may `need`, return it (locked FOR
-- UPDATE when p_lock).  A secret that does not exist, one of a tenant the
-- role may not act for, and one deleted while we waited for its lock all
-- end at the one raise point below, so their errors are identical to the
-- byte, CONTEXT included: other tenants' secrets stay unseen.
CREATE FUNCTION apikeys_internal._vault_find(p_id uuid, p_action text, p_need text, p_lock boolean)
    RETURNS apikeys.vault_secret
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret;
    visible boolean;
BEGIN
    IF p_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'invalid_id: id must not be NULL';
    END IF;
    SELECT * INTO s FROM apikeys.vault_secret v WHERE v.id OPERATOR(pg_catalog.=) p_id;
    visible := FOUND AND apikeys_internal._vault_may(s.tenant, p_need);
    IF visible AND p_lock THEN
        -- locked only once authorized: a foreign row is never waited for
        SELECT * INTO s FROM apikeys.vault_secret v WHERE v.id OPERATOR(pg_catalog.=) p_id FOR UPDATE;
        visible := FOUND;
    END IF;
    IF NOT visible THEN
        PERFORM apikeys_internal._deny(p_action, s.tenant, p_id, '42704',
            format('vault_secret_not_found: no vault secret with id %s', p_id));
    END IF;
    RETURN s;
END;
$$;

------------------------------------------------------------------------------
-- Secrets
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal.vault_add(
    tenant     text,
    service    text,
    name       text,
    secret     text,
    owner_user text DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- the secret never a plan constant
AS $$
DECLARE
    r name := apikeys_internal._acting_role();
    su boolean;
    svc apikeys.vault_service;
    sealed record;
    new_id uuid := gen_random_uuid();
    visible boolean;
BEGIN
    su := apikeys_internal._is_superuser(r);
    -- An unknown tenant and one the role may not manage read the same (and
    -- neither is echoed: it could be a misplaced secret); only a superuser
    -- is told that a tenant does not exist.  Both questions are asked
    -- whatever the answers, so the time taken does not tell them apart
    -- either (asking one only when the other said yes did).
    visible := tenant IS NOT NULL AND coalesce(apikeys_internal._may_manage(tenant), false);
    IF tenant IS NULL OR NOT EXISTS (SELECT 1 FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) vault_add.tenant) THEN
        IF su THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = 'tenant_not_found: no such tenant';
        END IF;
        visible := false;
    END IF;
    IF NOT visible THEN
        PERFORM apikeys_internal._deny('vault_add', NULL, NULL, '42501',
            format('permission_denied: role "%s" may not manage this tenant', r));
    END IF;
    PERFORM apikeys_internal._require_active_tenant(tenant, 'vault_add', NULL);
    PERFORM apikeys_internal._vault_check_name(name);
    IF owner_user IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro WHERE ro.rolname OPERATOR(pg_catalog.=) owner_user) THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = 'role_not_found: owner_user must name an existing role';
        END IF;
        IF NOT su AND owner_user OPERATOR(pg_catalog.<>) r::text THEN
            PERFORM apikeys_internal._deny('vault_add', tenant, NULL, '42501',
                format('vault_not_owner: role "%s" may add only secrets it owns itself', r),
                'Pass owner_user => NULL (the tenant) or your own role name.');
        END IF;
    END IF;
    svc := apikeys_internal._vault_service(service);
    IF secret IS NULL OR secret OPERATOR(pg_catalog.=) '' OR octet_length(secret) OPERATOR(pg_catalog.>) 4096 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'vault_invalid_secret: secret must be 1 to 4096 bytes';
    END IF;
    IF NOT (secret OPERATOR(pg_catalog.~) svc.format) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('vault_invalid_format: the secret does not have the format of service "%s"', svc.service),
            HINT = format('%s keys match %s', svc.display_name, svc.format);
    END IF;
    -- a simple expression: the secret reaches no statement (see Internals)
    sealed := apikeys_internal._vault_seal(new_id, secret);

    -- one active secret per owner and service: the new one replaces it
    PERFORM apikeys_internal._vault_lock_slot(tenant, owner_user, svc.service);
    UPDATE apikeys.vault_secret v SET active = false, updated_at = now()
     WHERE v.tenant OPERATOR(pg_catalog.=) vault_add.tenant
       AND v.owner_user IS NOT DISTINCT FROM vault_add.owner_user
       AND v.service OPERATOR(pg_catalog.=) svc.service AND v.active;
    INSERT INTO apikeys.vault_secret (id, tenant, owner_user, service, name, ciphertext, key_fp)
    VALUES (new_id, tenant, owner_user, svc.service, name, sealed.ciphertext, sealed.key_fp);
    RETURN new_id;
END;
$$;
SELECT apikeys_internal.publish('vault_add', 'Store a third-party secret for a tenant (or a role in it); it replaces the owner''s active secret for that service. Returns its id.');

CREATE FUNCTION apikeys_internal.vault_list(tenant text DEFAULT NULL)
    RETURNS SETOF apikeys.vault_secrets
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tenant IS NOT NULL THEN
        PERFORM apikeys_internal._vault_authorize(tenant, 'vault_list', 'read');
    END IF;
    RETURN QUERY
    SELECT v.* FROM apikeys.read_vault_secrets() v
     WHERE vault_list.tenant IS NULL OR v.tenant OPERATOR(pg_catalog.=) vault_list.tenant
     ORDER BY v.tenant, v.service, v.owner_user NULLS FIRST, v.active DESC, v.created_at, v.id;
END;
$$;
SELECT apikeys_internal.publish('vault_list', 'Metadata of the vault secrets of a tenant (NULL: every tenant the role may read); never a secret.');

CREATE FUNCTION apikeys_internal.vault_get(id uuid)
    RETURNS apikeys.vault_secrets
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret := apikeys_internal._vault_find(id, 'vault_get', 'read', false);
    m apikeys.vault_secrets;
BEGIN
    SELECT s.id, s.tenant, s.owner_user, s.service, s.name, s.active, s.last_used_at, s.created_at, s.updated_at
      INTO m;
    RETURN m;
END;
$$;
SELECT apikeys_internal.publish('vault_get', 'Metadata of one vault secret; never the secret.');

CREATE FUNCTION apikeys_internal.vault_update(id uuid, name text DEFAULT NULL, active boolean DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret := apikeys_internal._vault_find(vault_update.id, 'vault_update', 'manage', true);
BEGIN
    IF name IS NOT NULL THEN
        PERFORM apikeys_internal._vault_check_name(name);
    END IF;
    IF name IS NULL AND active IS NULL THEN
        RETURN;
    END IF;
    IF active AND NOT s.active THEN
        -- reactivating replaces the owner's active secret for that service
        PERFORM apikeys_internal._require_active_tenant(s.tenant, 'vault_update', s.id);
        PERFORM apikeys_internal._vault_lock_slot(s.tenant, s.owner_user, s.service);
        UPDATE apikeys.vault_secret v SET active = false, updated_at = now()
         WHERE v.tenant OPERATOR(pg_catalog.=) s.tenant
           AND v.owner_user IS NOT DISTINCT FROM s.owner_user
           AND v.service OPERATOR(pg_catalog.=) s.service AND v.active
           AND v.id OPERATOR(pg_catalog.<>) s.id;
    END IF;
    UPDATE apikeys.vault_secret v
       SET name = coalesce(vault_update.name, v.name),
           active = coalesce(vault_update.active, v.active),
           updated_at = now()
     WHERE v.id OPERATOR(pg_catalog.=) s.id;
END;
$$;
SELECT apikeys_internal.publish('vault_update', 'Rename a vault secret or (de)activate it; activating replaces the active one. NULL leaves a field as it is.');

CREATE FUNCTION apikeys_internal.vault_delete(id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret := apikeys_internal._vault_find(vault_delete.id, 'vault_delete', 'manage', true);
BEGIN
    DELETE FROM apikeys.vault_secret v WHERE v.id OPERATOR(pg_catalog.=) s.id;
END;
$$;
SELECT apikeys_internal.publish('vault_delete', 'Delete a vault secret for good.');

CREATE FUNCTION apikeys_internal.vault_reveal(id uuid) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- the plaintext never a plan constant
AS $$
DECLARE
    s apikeys.vault_secret := apikeys_internal._vault_find(vault_reveal.id, 'vault_reveal', 'manage', false);
    r name := apikeys_internal._acting_role();
    o record;
    detail jsonb;
BEGIN
    IF s.owner_user IS NOT NULL AND s.owner_user OPERATOR(pg_catalog.<>) r::text THEN
        PERFORM apikeys_internal._deny('vault_reveal', s.tenant, s.id, '42501',
            format('vault_not_owner: vault secret %s belongs to another role', s.id),
            'Only its owner_user may reveal it.');
    END IF;
    PERFORM apikeys_internal._require_active_tenant(s.tenant, 'vault_reveal', s.id);
    o := apikeys_internal._vault_open(s.id, s.ciphertext, s.key_fp);   -- o.plaintext only in simple expressions
    IF o.problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
            MESSAGE = format('vault_decrypt_failed: vault secret %s could not be decrypted', s.id),
            HINT = CASE o.problem WHEN 'master_key_mismatch'
                        THEN 'It was encrypted with another master key; a superuser can run apikeys.vault_check().'
                        ELSE 'The ciphertext is corrupt or the master key is wrong; a superuser can run apikeys.vault_check().' END;
    END IF;
    UPDATE apikeys.vault_secret v SET last_used_at = now() WHERE v.id OPERATOR(pg_catalog.=) s.id;
    detail := jsonb_build_object('service', s.service, 'name', s.name, 'owner_user', s.owner_user, 'active', s.active);
    PERFORM apikeys_internal._audit_write('vault_secret_revealed', s.tenant, s.id, detail);
    -- the server log keeps it even if the transaction rolls back
    RAISE LOG USING MESSAGE = 'apikeys_audit_vault_reveal ' || (detail OPERATOR(pg_catalog.||) jsonb_build_object(
        'at', clock_timestamp(), 'tenant', s.tenant, 'id', s.id,
        'db_role', r, 'session_role', session_user, 'actor', apikeys_internal._actor(),
        'request_id', apikeys_internal._request_id(), 'client_addr', inet_client_addr()))::text;
    RETURN o.plaintext;
END;
$$;
SELECT apikeys_internal.publish('vault_reveal', 'The plaintext of a vault secret, for its owner only; every call is audited (vault_secret_revealed).');

CREATE TYPE apikeys.vault_check_result AS (
    id      uuid,
    tenant  text,
    service text,
    name    text,
    ok      boolean,
    problem text   -- NULL, master_key_mismatch, decrypt_failed, invalid_format or stale_master_key
);

CREATE FUNCTION apikeys_internal._vault_check_one(s apikeys.vault_secret) RETURNS apikeys.vault_check_result
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- the plaintext never a plan constant
AS $$
DECLARE
    fmt text := (SELECT x.format FROM apikeys.vault_service x WHERE x.service OPERATOR(pg_catalog.=) s.service);
    o record := apikeys_internal._vault_open(s.id, s.ciphertext, s.key_fp);
    res apikeys.vault_check_result;
BEGIN
    res.id := s.id;
    res.tenant := s.tenant;
    res.service := s.service;
    res.name := s.name;
    res.problem := o.problem;
    IF res.problem IS NULL THEN
        -- a simple expression (no subquery): the plaintext reaches no statement
        IF NOT (o.plaintext OPERATOR(pg_catalog.~) fmt) THEN
            res.problem := 'invalid_format';
        ELSIF o.stale THEN
            res.problem := 'stale_master_key';
        END IF;
    END IF;
    res.ok := res.problem IS NULL;
    RETURN res;
END;
$$;

CREATE FUNCTION apikeys_internal.vault_check(id uuid DEFAULT NULL)
    RETURNS SETOF apikeys.vault_check_result
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret;
BEGIN
    IF id IS NOT NULL THEN
        s := apikeys_internal._vault_find(id, 'vault_check', 'read', false);
        PERFORM apikeys_internal._vault_key_state();   -- vault_master_key_missing
        RETURN NEXT apikeys_internal._vault_check_one(s);
        RETURN;
    END IF;
    PERFORM apikeys_internal._vault_key_state();
    FOR s IN SELECT v.* FROM apikeys.vault_secret v
              WHERE v.id IN (SELECT l.id FROM apikeys.vault_list() l)
              ORDER BY v.tenant, v.service, v.owner_user NULLS FIRST, v.active DESC, v.created_at, v.id LOOP
        RETURN NEXT apikeys_internal._vault_check_one(s);
    END LOOP;
END;
$$;
SELECT apikeys_internal.publish('vault_check', 'Check that vault secrets decrypt under the current master key and still match their service''s format (one secret, or all the role may read).');

------------------------------------------------------------------------------
-- Master key rotation (superuser only)
------------------------------------------------------------------------------

-- Re-encrypt every secret under the new key, in one transaction: from
-- apikeys.vault_master_key_previous (or the key file's second line) to
-- apikeys.vault_master_key (or its first line).  The keys never travel as
-- arguments: a failed statement is logged with its text
-- (log_min_error_statement), and pg_stat_activity shows it.  Secrets already
-- under the new key are skipped; one that neither key opens aborts it all.
CREATE FUNCTION apikeys_internal.vault_rotate_master_key()
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan   -- no fingerprint or ciphertext as a plan constant
AS $$
DECLARE
    r name := apikeys_internal._acting_role();
    s apikeys.vault_secret;
    k record;
    w record;
    n bigint := 0;
    locked boolean := false;
BEGIN
    IF NOT coalesce(apikeys_internal._is_superuser(r), false) THEN
        PERFORM apikeys_internal._deny('vault_rotate_master_key', NULL, NULL, '42501',
            format('permission_denied: role "%s" may not rotate the vault master key', r),
            'Only superusers rotate the vault master key.');
    END IF;
    k := apikeys_internal._vault_key_state();   -- checks the current key itself

    -- Every secret is rewritten under one lock that keeps writers out.  It is
    -- taken without joining the lock queue: queued behind one tenant's open
    -- vault write, the rotation would make every other tenant's vault
    -- writes queue behind it.  It tries for up to 10 seconds, then refuses.
    FOR i IN 1..100 LOOP
        BEGIN
            LOCK TABLE apikeys.vault_secret IN EXCLUSIVE MODE NOWAIT;
            locked := true;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM pg_catalog.pg_sleep(0.1);
        END;
        EXIT WHEN locked;
    END LOOP;
    IF NOT locked THEN
        RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
            MESSAGE = 'vault_busy: vault secrets were being written throughout the last 10 seconds; nothing was re-encrypted',
            DETAIL = 'The rotation does not wait in line for a writer: that would hold up every tenant''s vault writes behind it.',
            HINT = 'Run it again; pg_stat_activity shows transactions left open after a vault change.';
    END IF;
    FOR s IN SELECT * FROM apikeys.vault_secret v WHERE v.key_fp OPERATOR(pg_catalog.<>) k.cur_fp ORDER BY v.id LOOP
        -- decrypted with the previous key and encrypted with the current one
        -- inside C: the plaintext and both keys stay out of SQL
        w := apikeys_internal._vault_rewrap(s.id, s.ciphertext, s.key_fp);
        IF w.ciphertext IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
                MESSAGE = format('vault_decrypt_failed: vault secret %s could not be decrypted with the old master key', s.id),
                HINT = 'Nothing was re-encrypted. apikeys.vault_check() lists the secrets that do not open.';
        END IF;
        UPDATE apikeys.vault_secret v
           SET ciphertext = w.ciphertext, key_fp = w.key_fp
         WHERE v.id OPERATOR(pg_catalog.=) s.id;
        n := n OPERATOR(pg_catalog.+) 1;
    END LOOP;
    -- no fingerprints here: they would let an audit reader test key guesses
    PERFORM apikeys_internal._audit_write('vault_master_key_rotated', NULL, NULL,
        jsonb_build_object('secrets', n));
    RETURN n;
END;
$$;
SELECT apikeys_internal.publish('vault_rotate_master_key', 'Re-encrypt every vault secret under a new master key in one transaction (superuser only): from vault_master_key_previous to vault_master_key (or the key file''s second line to its first).');

------------------------------------------------------------------------------
-- Service registry (superusers and roles that manage every tenant)
------------------------------------------------------------------------------

CREATE FUNCTION apikeys_internal.vault_service_register(service text, display_name text, format text DEFAULT NULL,
                                               alias_of text DEFAULT NULL)
    RETURNS apikeys.vault_service
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_service;
    target apikeys.vault_service;
BEGIN
    PERFORM apikeys_internal._authorize(NULL, 'vault_service_register');
    IF service IS NULL OR service !~ '^[a-z][a-z0-9_-]{1,62}$' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_service: service must be 2 to 63 characters: a-z first, then a-z, 0-9, _ or -';
    END IF;
    IF display_name IS NULL OR char_length(display_name) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_display_name: display_name must be 1 to 200 characters';
    END IF;
    IF (format IS NULL) OPERATOR(pg_catalog.=) (alias_of IS NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'vault_invalid_pattern: pass either a format or alias_of';
    END IF;
    IF format IS NOT NULL THEN
        IF char_length(format) NOT BETWEEN 2 AND 1000 OR format !~ '^\^.*[$]$' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'vault_invalid_pattern: format must be an anchored regular expression (^...$) of at most 1000 characters';
        END IF;
        BEGIN
            PERFORM '' OPERATOR(pg_catalog.~) format;
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'vault_invalid_pattern: format is not a valid regular expression: ' || SQLERRM;
        END;
    ELSE
        SELECT * INTO target FROM apikeys.vault_service v
         WHERE v.service OPERATOR(pg_catalog.=) vault_service_register.alias_of;
        IF NOT FOUND OR target.alias_of IS NOT NULL OR target.service OPERATOR(pg_catalog.=) vault_service_register.service THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'vault_invalid_pattern: alias_of must name a registered service that is not an alias';
        END IF;
    END IF;
    SELECT * INTO s FROM apikeys.vault_service v WHERE v.service OPERATOR(pg_catalog.=) vault_service_register.service FOR UPDATE;
    IF s.builtin THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('vault_service_builtin: service "%s" is built in and cannot be changed', s.service),
            HINT = 'Register a service under another name.';
    END IF;
    -- A format that changes under stored secrets would make vault_check() an
    -- oracle on them (one regular expression at a time): frozen while in use.
    IF FOUND AND (vault_service_register.format IS DISTINCT FROM s.format
                  OR vault_service_register.alias_of IS DISTINCT FROM s.alias_of)
       AND EXISTS (SELECT 1 FROM apikeys.vault_secret x
                    WHERE x.service OPERATOR(pg_catalog.=) s.service
                       OR x.service IN (SELECT a.service FROM apikeys.vault_service a
                                         WHERE a.alias_of OPERATOR(pg_catalog.=) s.service)) THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = format('vault_service_in_use: service "%s" still has secrets; its format cannot change', s.service),
            HINT = 'Register the new format under another service name, or delete the secrets first.';
    END IF;
    IF FOUND AND EXISTS (SELECT 1 FROM apikeys.vault_service x WHERE x.alias_of OPERATOR(pg_catalog.=) s.service)
       AND vault_service_register.alias_of IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = format('vault_service_in_use: service "%s" has aliases', s.service);
    END IF;
    INSERT INTO apikeys.vault_service AS v (service, display_name, format, alias_of)
    VALUES (vault_service_register.service, vault_service_register.display_name,
            vault_service_register.format, vault_service_register.alias_of)
    ON CONFLICT ON CONSTRAINT vault_service_pkey DO UPDATE
       SET display_name = excluded.display_name, format = excluded.format,
           alias_of = excluded.alias_of, updated_at = now()
    RETURNING * INTO s;
    RETURN s;
END;
$$;
SELECT apikeys_internal.publish('vault_service_register', 'Add or change a vault service: its key format (anchored regex) or the service it is an alias of. Built-in services cannot change.');

CREATE FUNCTION apikeys_internal.vault_service_unregister(service text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_service;
BEGIN
    PERFORM apikeys_internal._authorize(NULL, 'vault_service_unregister');
    SELECT * INTO s FROM apikeys.vault_service v WHERE v.service OPERATOR(pg_catalog.=) vault_service_unregister.service FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = 'vault_service_not_found: no such vault service';
    END IF;
    IF s.builtin THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('vault_service_builtin: service "%s" is built in and cannot be changed', s.service);
    END IF;
    IF EXISTS (SELECT 1 FROM apikeys.vault_secret x WHERE x.service OPERATOR(pg_catalog.=) s.service)
       OR EXISTS (SELECT 1 FROM apikeys.vault_service x WHERE x.alias_of OPERATOR(pg_catalog.=) s.service) THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = format('vault_service_in_use: service "%s" still has secrets or aliases', s.service),
            HINT = 'Delete its secrets (apikeys.vault_delete) and aliases first.';
    END IF;
    DELETE FROM apikeys.vault_service v WHERE v.service OPERATOR(pg_catalog.=) s.service;
END;
$$;
SELECT apikeys_internal.publish('vault_service_unregister', 'Remove a vault service that has no secrets and no aliases. Built-in services stay.');

------------------------------------------------------------------------------
-- Privilege recipe (superuser only)
------------------------------------------------------------------------------

-- What a role needs to use the vault; which tenants it may act for still
-- comes from apikeys.grant_tenant (role_tenant).  'audit': metadata only.
CREATE FUNCTION apikeys_internal.grant_vault(role_name name, privilege text DEFAULT 'manage') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM apikeys_internal._check_privilege(privilege), apikeys_internal._check_role(role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT SELECT ON apikeys.vault_service, apikeys.vault_secrets TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.vault_list(text), apikeys.vault_get(uuid),'
                   ' apikeys.vault_check(uuid), apikeys.current_tenant(), apikeys.read_vault_secrets() TO %I', role_name);
    IF privilege OPERATOR(pg_catalog.=) 'manage' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.vault_add(text, text, text, text, text),'
                       ' apikeys.vault_update(uuid, text, boolean), apikeys.vault_delete(uuid),'
                       ' apikeys.vault_reveal(uuid),'
                       ' apikeys.vault_service_register(text, text, text, text),'
                       ' apikeys.vault_service_unregister(text) TO %I', role_name);
    END IF;
END;
$$;
SELECT apikeys_internal.publish('grant_vault', 'Let a role use the vault functions (manage) or read vault metadata (audit); tenants still come from grant_tenant.');
