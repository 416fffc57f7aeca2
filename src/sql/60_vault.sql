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
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
CREATE TRIGGER audit_vault_secret AFTER INSERT OR UPDATE OR DELETE ON apikeys.vault_secret
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
CREATE TRIGGER vault_service_no_truncate BEFORE TRUNCATE ON apikeys.vault_service
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();
CREATE TRIGGER vault_secret_no_truncate BEFORE TRUNCATE ON apikeys.vault_secret
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._refuse_truncate();

-- Metadata only: no ciphertext, no key fingerprint.
CREATE VIEW apikeys.vault_secrets WITH (security_invoker = true) AS
SELECT v.id, v.tenant, v.owner_user, v.service, v.name, v.active, v.last_used_at, v.created_at, v.updated_at
  FROM apikeys.vault_secret v;
COMMENT ON VIEW apikeys.vault_secrets IS 'Vault secrets'' metadata (no ciphertext), filtered by row-level security.';

ALTER TABLE apikeys.vault_service ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikeys.vault_secret ENABLE ROW LEVEL SECURITY;
CREATE POLICY vault_service_read ON apikeys.vault_service FOR SELECT USING (true);
CREATE POLICY vault_secret_read ON apikeys.vault_secret FOR SELECT
    USING (tenant OPERATOR(pg_catalog.=) apikeys.current_tenant()
           OR tenant IN (SELECT g.tenant FROM apikeys.role_tenant g)
           OR EXISTS (SELECT 1 FROM apikeys.role_tenant g WHERE g.tenant IS NULL));

------------------------------------------------------------------------------
-- Internals.  Whatever touches the master key is SECURITY INVOKER: it works
-- only when called from the SECURITY DEFINER entry points below (run as the
-- superuser who owns the extension); called directly by any other role it
-- fails, because only superusers may read the setting.
------------------------------------------------------------------------------

-- pgcrypto is relocatable: find its schema at run time.
CREATE FUNCTION apikeys._vault_pgcrypto() RETURNS name
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nsp name;
BEGIN
    SELECT n.nspname INTO nsp
      FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
     WHERE e.extname OPERATOR(pg_catalog.=) 'pgcrypto';
    IF nsp IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = 'vault_pgcrypto_missing: the pgcrypto extension is not installed';
    END IF;
    RETURN nsp;
END;
$$;

-- A short, non-reversible fingerprint of a master key (which key encrypted a row).
CREATE FUNCTION apikeys._vault_fingerprint(master_key text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT encode(substr(sha256('\x6170696b6579732e7661756c743a'::bytea   -- 'apikeys.vault:'
                                OPERATOR(pg_catalog.||) textsend(master_key)), 1, 8), 'hex')
$$;

CREATE FUNCTION apikeys._vault_check_master_key(master_key text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF master_key IS NULL OR master_key OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = 'vault_master_key_missing: the vault master key is not set',
            HINT = 'A superuser names a key file in apikeys.vault_master_key_file (see the README).';
    END IF;
    IF char_length(master_key) OPERATOR(pg_catalog.<) 16 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'vault_master_key_invalid: a vault master key must be at least 16 characters',
            HINT = 'Use a random key, e.g. the output of: openssl rand -base64 32';
    END IF;
END;
$$;

-- The configured keys (current and, during a rotation, previous) and their
-- fingerprints: the settings apikeys.vault_master_key[_previous], else the
-- lines of the file named by apikeys.vault_master_key_file.  Superuser
-- context only (the settings are superuser-only, pg_read_file too).
CREATE FUNCTION apikeys._vault_keys(OUT cur text, OUT cur_fp text, OUT prev text, OUT prev_fp text)
    RETURNS record
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    path text;
    lines text[];
    unreadable boolean := false;
BEGIN
    PERFORM apikeys._acting_role();   -- loads the module, which defines the settings
    cur := nullif(current_setting('apikeys.vault_master_key', true), '');
    prev := nullif(current_setting('apikeys.vault_master_key_previous', true), '');
    path := nullif(current_setting('apikeys.vault_master_key_file', true), '');
    IF cur IS NULL AND path IS NOT NULL THEN
        BEGIN
            lines := regexp_split_to_array(pg_read_file(path), E'\r?\n');
        EXCEPTION WHEN OTHERS THEN
            unreadable := true;   -- never pass the error on: it may quote the file
        END;
        IF unreadable THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = 'vault_master_key_missing: the vault master key file cannot be read',
                HINT = 'The server must be able to read the file named by apikeys.vault_master_key_file.';
        END IF;
        cur := nullif(btrim(lines[1], E' \t\r'), '');
        prev := coalesce(prev, nullif(btrim(lines[2], E' \t\r'), ''));
    END IF;
    PERFORM apikeys._vault_check_master_key(cur);
    cur_fp := apikeys._vault_fingerprint(cur);
    prev_fp := apikeys._vault_fingerprint(prev);
END;
$$;

CREATE FUNCTION apikeys._vault_encrypt(p_id uuid, p_secret text, p_master_key text) RETURNS bytea
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q text := format('SELECT %I.pgp_sym_encrypt($1, $2, $3)', apikeys._vault_pgcrypto());
    ct bytea;
    failed boolean := false;
BEGIN
    BEGIN
        EXECUTE q
           INTO ct
          USING p_secret, p_id::text OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) p_master_key,
                'cipher-algo=aes256, compress-algo=0'::text;
    EXCEPTION WHEN OTHERS THEN
        failed := true;   -- never pass pgcrypto's message or context on
    END;
    IF failed OR ct IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'external_routine_invocation_exception',
            MESSAGE = 'vault_encrypt_failed: the secret could not be encrypted';
    END IF;
    RETURN ct;
END;
$$;

-- NULL when the ciphertext does not decrypt (wrong key, corrupt data).
CREATE FUNCTION apikeys._vault_decrypt(p_id uuid, p_ciphertext bytea, p_master_key text) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q text := format('SELECT %I.pgp_sym_decrypt($1, $2, $3)', apikeys._vault_pgcrypto());
    pt text;
BEGIN
    BEGIN
        EXECUTE q INTO pt
          USING p_ciphertext, p_id::text OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) p_master_key,
                'cipher-algo=aes256, compress-algo=0'::text;
    EXCEPTION WHEN OTHERS THEN
        pt := NULL;   -- "Wrong key or corrupt data" and the like: callers report vault_decrypt_failed
    END;
    RETURN pt;
END;
$$;

-- Decrypt a row with whichever configured key encrypted it.  problem:
-- NULL, 'master_key_mismatch' (neither configured key encrypted it) or
-- 'decrypt_failed'; stale: decrypted with apikeys.vault_master_key_previous.
CREATE FUNCTION apikeys._vault_open(s apikeys.vault_secret, OUT plaintext text, OUT problem text, OUT stale boolean)
    RETURNS record
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k record := apikeys._vault_keys();
BEGIN
    stale := false;
    IF s.key_fp OPERATOR(pg_catalog.=) k.cur_fp THEN
        plaintext := apikeys._vault_decrypt(s.id, s.ciphertext, k.cur);
    ELSIF s.key_fp OPERATOR(pg_catalog.=) k.prev_fp THEN
        plaintext := apikeys._vault_decrypt(s.id, s.ciphertext, k.prev);
        stale := true;
    ELSE
        problem := 'master_key_mismatch';
        RETURN;
    END IF;
    IF plaintext IS NULL THEN
        problem := 'decrypt_failed';
    END IF;
END;
$$;

-- A service by name (aliases resolved).  Never echoes the caller's input:
-- a secret passed in the wrong argument must not reach an error message.
CREATE FUNCTION apikeys._vault_service(p_service text) RETURNS apikeys.vault_service
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

CREATE FUNCTION apikeys._vault_check_name(p_name text) RETURNS text
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

-- Is the session's role allowed `need` ('read' or 'manage') on a tenant?
-- 'manage' is exactly apikeys._authorize(); 'read' is what row-level
-- security shows (a mapping of either privilege, or the bound tenant).
-- Refused: for a secret (p_id), vault_secret_not_found, so other tenants'
-- secrets stay unseen; else permission_denied.
CREATE FUNCTION apikeys._vault_authorize(p_tenant text, p_action text, p_id uuid, p_need text)
    RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name := apikeys._acting_role();
BEGIN
    IF p_need OPERATOR(pg_catalog.=) 'manage' THEN
        BEGIN
            PERFORM apikeys._authorize(p_tenant, p_action, p_id);   -- logs a refusal itself
        EXCEPTION WHEN undefined_object THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = format('vault_secret_not_found: no vault secret with id %s', p_id);
        END;
        RETURN;
    END IF;
    IF apikeys._is_superuser(r)
       OR apikeys.current_tenant() OPERATOR(pg_catalog.=) p_tenant
       OR apikeys._role_may(r, p_tenant, 'read') THEN
        RETURN;
    END IF;
    IF p_id IS NOT NULL THEN
        PERFORM apikeys._deny(p_action, p_tenant, p_id, '42704',
            format('vault_secret_not_found: no vault secret with id %s', p_id));
    END IF;
    -- the tenant is not echoed: it could be a misplaced secret
    PERFORM apikeys._deny(p_action, NULL, NULL, '42501',
        format('permission_denied: role "%s" may not read this tenant', r),
        'A superuser can allow it with apikeys.grant_tenant(role, tenant).');
END;
$$;

-- Find a secret, authorize the session's role for its tenant, return it
-- (locked FOR UPDATE when p_lock).  Unknown and foreign secrets read alike.
CREATE FUNCTION apikeys._vault_find(p_id uuid, p_action text, p_need text, p_lock boolean)
    RETURNS apikeys.vault_secret
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret;
BEGIN
    IF p_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'invalid_id: id must not be NULL';
    END IF;
    SELECT * INTO s FROM apikeys.vault_secret v WHERE v.id OPERATOR(pg_catalog.=) p_id;
    IF NOT FOUND THEN
        PERFORM apikeys._deny(p_action, NULL, p_id, '42704',
            format('vault_secret_not_found: no vault secret with id %s', p_id));
    END IF;
    PERFORM apikeys._vault_authorize(s.tenant, p_action, p_id, p_need);
    IF p_lock THEN
        SELECT * INTO s FROM apikeys.vault_secret v WHERE v.id OPERATOR(pg_catalog.=) p_id FOR UPDATE;
        IF NOT FOUND THEN   -- deleted while we waited
            PERFORM apikeys._deny(p_action, NULL, p_id, '42704',
                format('vault_secret_not_found: no vault secret with id %s', p_id));
        END IF;
    END IF;
    RETURN s;
END;
$$;

-- Serialize changes to one owner's secrets of one service.
CREATE FUNCTION apikeys._vault_lock_slot(p_tenant text, p_owner text, p_service text) RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(
        'apikeys.vault' OPERATOR(pg_catalog.||) chr(1) OPERATOR(pg_catalog.||) p_tenant
        OPERATOR(pg_catalog.||) chr(1) OPERATOR(pg_catalog.||) coalesce(p_owner, '')
        OPERATOR(pg_catalog.||) chr(1) OPERATOR(pg_catalog.||) p_service, 0))
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
AS $$
DECLARE
    r name := apikeys._acting_role();
    su boolean;
    svc apikeys.vault_service;
    k record;
    new_id uuid := gen_random_uuid();
BEGIN
    su := apikeys._is_superuser(r);
    -- An unknown tenant is never echoed (it could be a misplaced secret).
    IF tenant IS NULL OR NOT EXISTS (SELECT 1 FROM apikeys.tenant x WHERE x.tenant OPERATOR(pg_catalog.=) vault_add.tenant) THEN
        IF su THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = 'tenant_not_found: no such tenant';
        END IF;
        PERFORM apikeys._deny('vault_add', NULL, NULL, '42501',
            format('permission_denied: role "%s" may not manage this tenant', r));
    END IF;
    PERFORM apikeys._authorize(tenant, 'vault_add');
    PERFORM apikeys._require_active_tenant(tenant, 'vault_add', NULL);
    PERFORM apikeys._vault_check_name(name);
    IF owner_user IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro WHERE ro.rolname OPERATOR(pg_catalog.=) owner_user) THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_object',
                MESSAGE = 'role_not_found: owner_user must name an existing role';
        END IF;
        IF NOT su AND owner_user OPERATOR(pg_catalog.<>) r::text THEN
            PERFORM apikeys._deny('vault_add', tenant, NULL, '42501',
                format('vault_not_owner: role "%s" may add only secrets it owns itself', r),
                'Pass owner_user => NULL (the tenant) or your own role name.');
        END IF;
    END IF;
    svc := apikeys._vault_service(service);
    IF secret IS NULL OR secret OPERATOR(pg_catalog.=) '' OR octet_length(secret) OPERATOR(pg_catalog.>) 4096 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'vault_invalid_secret: secret must be 1 to 4096 bytes';
    END IF;
    IF NOT (secret OPERATOR(pg_catalog.~) svc.format) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('vault_invalid_format: the secret does not have the format of service "%s"', svc.service),
            HINT = format('%s keys match %s', svc.display_name, svc.format);
    END IF;
    k := apikeys._vault_keys();

    -- one active secret per owner and service: the new one replaces it
    PERFORM apikeys._vault_lock_slot(tenant, owner_user, svc.service);
    UPDATE apikeys.vault_secret v SET active = false, updated_at = now()
     WHERE v.tenant OPERATOR(pg_catalog.=) vault_add.tenant
       AND v.owner_user IS NOT DISTINCT FROM vault_add.owner_user
       AND v.service OPERATOR(pg_catalog.=) svc.service AND v.active;
    INSERT INTO apikeys.vault_secret (id, tenant, owner_user, service, name, ciphertext, key_fp)
    VALUES (new_id, tenant, owner_user, svc.service, name,
            apikeys._vault_encrypt(new_id, secret, k.cur), k.cur_fp);
    RETURN new_id;
END;
$$;
SELECT apikeys_internal.publish('vault_add', 'Store a third-party secret for a tenant (or a role in it); it replaces the owner''s active secret for that service. Returns its id.');

CREATE FUNCTION apikeys_internal.vault_list(tenant text DEFAULT NULL)
    RETURNS SETOF apikeys.vault_secrets
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name := apikeys._acting_role();
    su boolean := apikeys._is_superuser(r);
BEGIN
    IF tenant IS NOT NULL THEN
        PERFORM apikeys._vault_authorize(tenant, 'vault_list', NULL, 'read');
    END IF;
    RETURN QUERY
    SELECT v.id, v.tenant, v.owner_user, v.service, v.name, v.active, v.last_used_at, v.created_at, v.updated_at
      FROM apikeys.vault_secret v
     WHERE CASE WHEN vault_list.tenant IS NOT NULL THEN v.tenant OPERATOR(pg_catalog.=) vault_list.tenant
                ELSE su OR v.tenant OPERATOR(pg_catalog.=) apikeys.current_tenant()
                     OR apikeys._role_may(r, v.tenant, 'read') END
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
    s apikeys.vault_secret := apikeys._vault_find(id, 'vault_get', 'read', false);
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
    s apikeys.vault_secret := apikeys._vault_find(vault_update.id, 'vault_update', 'manage', true);
BEGIN
    IF name IS NOT NULL THEN
        PERFORM apikeys._vault_check_name(name);
    END IF;
    IF name IS NULL AND active IS NULL THEN
        RETURN;
    END IF;
    IF active AND NOT s.active THEN
        -- reactivating replaces the owner's active secret for that service
        PERFORM apikeys._require_active_tenant(s.tenant, 'vault_update', s.id);
        PERFORM apikeys._vault_lock_slot(s.tenant, s.owner_user, s.service);
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
    s apikeys.vault_secret := apikeys._vault_find(vault_delete.id, 'vault_delete', 'manage', true);
BEGIN
    DELETE FROM apikeys.vault_secret v WHERE v.id OPERATOR(pg_catalog.=) s.id;
END;
$$;
SELECT apikeys_internal.publish('vault_delete', 'Delete a vault secret for good.');

CREATE FUNCTION apikeys_internal.vault_reveal(id uuid) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s apikeys.vault_secret := apikeys._vault_find(vault_reveal.id, 'vault_reveal', 'manage', false);
    r name := apikeys._acting_role();
    o record;
    detail jsonb;
BEGIN
    IF s.owner_user IS NOT NULL AND s.owner_user OPERATOR(pg_catalog.<>) r::text THEN
        PERFORM apikeys._deny('vault_reveal', s.tenant, s.id, '42501',
            format('vault_not_owner: vault secret %s belongs to another role', s.id),
            'Only its owner_user may reveal it.');
    END IF;
    PERFORM apikeys._require_active_tenant(s.tenant, 'vault_reveal', s.id);
    o := apikeys._vault_open(s);
    IF o.problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
            MESSAGE = format('vault_decrypt_failed: vault secret %s could not be decrypted', s.id),
            HINT = CASE o.problem WHEN 'master_key_mismatch'
                        THEN 'It was encrypted with another master key; a superuser can run apikeys.vault_check().'
                        ELSE 'The ciphertext is corrupt or the master key is wrong; a superuser can run apikeys.vault_check().' END;
    END IF;
    UPDATE apikeys.vault_secret v SET last_used_at = now() WHERE v.id OPERATOR(pg_catalog.=) s.id;
    detail := jsonb_build_object('service', s.service, 'name', s.name, 'owner_user', s.owner_user, 'active', s.active);
    PERFORM apikeys._audit_write('vault_secret_revealed', s.tenant, s.id, detail);
    -- the server log keeps it even if the transaction rolls back
    RAISE LOG USING MESSAGE = 'apikeys_audit_vault_reveal ' || (detail OPERATOR(pg_catalog.||) jsonb_build_object(
        'at', clock_timestamp(), 'tenant', s.tenant, 'id', s.id,
        'db_role', r, 'session_role', session_user, 'actor', apikeys._actor(),
        'request_id', apikeys._request_id(), 'client_addr', inet_client_addr()))::text;
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

CREATE FUNCTION apikeys._vault_check_one(s apikeys.vault_secret) RETURNS apikeys.vault_check_result
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o record := apikeys._vault_open(s);
    res apikeys.vault_check_result;
BEGIN
    res.id := s.id;
    res.tenant := s.tenant;
    res.service := s.service;
    res.name := s.name;
    res.problem := o.problem;
    IF res.problem IS NULL THEN
        IF NOT (o.plaintext OPERATOR(pg_catalog.~)
                (SELECT x.format FROM apikeys.vault_service x WHERE x.service OPERATOR(pg_catalog.=) s.service)) THEN
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
        s := apikeys._vault_find(id, 'vault_check', 'read', false);
        PERFORM apikeys._vault_keys();   -- vault_master_key_missing
        RETURN NEXT apikeys._vault_check_one(s);
        RETURN;
    END IF;
    PERFORM apikeys._vault_keys();
    FOR s IN SELECT v.* FROM apikeys.vault_secret v
              WHERE v.id IN (SELECT l.id FROM apikeys.vault_list() l)
              ORDER BY v.tenant, v.service, v.owner_user NULLS FIRST, v.active DESC, v.created_at, v.id LOOP
        RETURN NEXT apikeys._vault_check_one(s);
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
AS $$
DECLARE
    r name := apikeys._acting_role();
    s apikeys.vault_secret;
    k record;
    o_key text;
    n_key text;
    o_fp text;
    n_fp text;
    pt text;
    n bigint := 0;
BEGIN
    IF NOT coalesce(apikeys._is_superuser(r), false) THEN
        PERFORM apikeys._deny('vault_rotate_master_key', NULL, NULL, '42501',
            format('permission_denied: role "%s" may not rotate the vault master key', r),
            'Only superusers rotate the vault master key.');
    END IF;
    k := apikeys._vault_keys();   -- checks the current key itself
    n_key := k.cur;
    o_key := k.prev;
    n_fp := k.cur_fp;
    o_fp := k.prev_fp;

    LOCK TABLE apikeys.vault_secret IN EXCLUSIVE MODE;
    FOR s IN SELECT * FROM apikeys.vault_secret v WHERE v.key_fp OPERATOR(pg_catalog.<>) n_fp ORDER BY v.id LOOP
        pt := NULL;
        IF s.key_fp OPERATOR(pg_catalog.=) o_fp THEN
            pt := apikeys._vault_decrypt(s.id, s.ciphertext, o_key);
        END IF;
        IF pt IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'data_corrupted',
                MESSAGE = format('vault_decrypt_failed: vault secret %s could not be decrypted with the old master key', s.id),
                HINT = 'Nothing was re-encrypted. apikeys.vault_check() lists the secrets that do not open.';
        END IF;
        UPDATE apikeys.vault_secret v
           SET ciphertext = apikeys._vault_encrypt(s.id, pt, n_key), key_fp = n_fp
         WHERE v.id OPERATOR(pg_catalog.=) s.id;
        n := n OPERATOR(pg_catalog.+) 1;
    END LOOP;
    -- no fingerprints here: they would let an audit reader test key guesses
    PERFORM apikeys._audit_write('vault_master_key_rotated', NULL, NULL,
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
    PERFORM apikeys._authorize(NULL, 'vault_service_register');
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
    PERFORM apikeys._authorize(NULL, 'vault_service_unregister');
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
    IF privilege IS NULL OR privilege NOT IN ('manage', 'audit') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'invalid_privilege: privilege must be ''manage'' or ''audit''';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro WHERE ro.rolname OPERATOR(pg_catalog.=) role_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('role_not_found: role "%s" does not exist', role_name);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA apikeys TO %I', role_name);
    EXECUTE format('GRANT SELECT ON apikeys.vault_service, apikeys.vault_secrets TO %I', role_name);
    EXECUTE format('GRANT SELECT (id, tenant, owner_user, service, name, active, last_used_at, created_at, updated_at)'
                   ' ON apikeys.vault_secret TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION apikeys.vault_list(text), apikeys.vault_get(uuid),'
                   ' apikeys.vault_check(uuid), apikeys.current_tenant() TO %I', role_name);
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
