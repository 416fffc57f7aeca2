------------------------------------------------------------------------------
-- Comments: what \d+, \df+ and \dn+ show a DBA.  Every schema, table, view,
-- column, type and function of the extension has one (sql/catalog_tidy.sql
-- fails otherwise); the entry points get theirs from publish(), which also
-- comments their bodies.  This file is appended unchanged to
-- apikeys--1.0--1.1.sql, so an upgraded 1.0 reads like a fresh install.
------------------------------------------------------------------------------

COMMENT ON SCHEMA apikeys IS 'API keys, tenants, audit and vault: the functions and views users call (\df apikeys.*); GRANT recipes: apikeys.grant_tenant/grant_verifier/grant_vault/grant_postgrest.';

COMMENT ON FUNCTION apikeys_internal.publish(text, text) IS 'Install time only: create the C entry point apikeys.<name> for body apikeys_internal.<name>, comment both, revoke it from PUBLIC.';
COMMENT ON FUNCTION apikeys.postgrest_gate() IS 'The decision of apikeys.pre_request(), computed as the extension owner: status, PGRST message/detail, response headers, role to switch to. Granted by grant_postgrest.';

------------------------------------------------------------------------------
-- Internal helpers (schema apikeys_internal: no role may use it, and no
-- function in it is granted to PUBLIC)
------------------------------------------------------------------------------

-- identity and tenancy
COMMENT ON FUNCTION apikeys_internal._acting_role() IS 'The role the running management call acts for: the caller of its entry point (outside one, the session''s current role).';
COMMENT ON FUNCTION apikeys_internal._binding_for_caller(boolean) IS 'The tenant this transaction''s binding lets the acting role act for (set_tenant() bindings only when trusted_only), or NULL.';
COMMENT ON FUNCTION apikeys_internal._context_source() IS 'How this transaction is bound to a tenant: none, trusted (set_tenant) or key (authenticate).';
COMMENT ON FUNCTION apikeys_internal._context_actor() IS 'The actor label set_tenant()/authenticate() bound to this transaction, or NULL.';
COMMENT ON FUNCTION apikeys_internal._context_request_id() IS 'The request id label set_tenant()/authenticate() bound to this transaction, or NULL.';
COMMENT ON FUNCTION apikeys_internal._transaction_setting(text, integer) IS 'A setting''s value if set for this transaction only and at most max_bytes long; else NULL (a WARNING when a value was ignored).';
COMMENT ON FUNCTION apikeys_internal._bulk_loading() IS 'Is this a restore or replication apply (rows whose history is already in the audit)?';
COMMENT ON FUNCTION apikeys_internal._is_superuser(name) IS 'pg_roles.rolsuper of a role; NULL if there is no such role.';
COMMENT ON FUNCTION apikeys_internal._role_may(name, text, text) IS 'Does a role hold read, audit or manage on a tenant (NULL: every tenant) through apikeys.role_tenant?';
COMMENT ON FUNCTION apikeys_internal._may_manage(text) IS 'May the acting role manage this tenant (NULL: manage tenants)? Answers, never raises.';
COMMENT ON FUNCTION apikeys_internal._authorize(text, text, uuid) IS 'Raise permission_denied (or key_not_found, given a key id) and log it unless the acting role may manage the tenant.';
COMMENT ON FUNCTION apikeys_internal._deny(text, text, uuid, text, text, text) IS 'Log a refused management call (apikeys_audit_denied line, outlives the rollback), then raise the given SQLSTATE and message.';

-- argument validators (C)
COMMENT ON FUNCTION apikeys_internal._check_tenant_id(text) IS 'A valid tenant id, or invalid_tenant (STRICT: NULL passes as NULL).';
COMMENT ON FUNCTION apikeys_internal._tenant_arg(text) IS 'A valid tenant id, or invalid_tenant; NULL is an error too.';
COMMENT ON FUNCTION apikeys_internal._check_name(text) IS 'A valid key name (1 to 200 characters, no control characters or outer spaces), or invalid_name.';
COMMENT ON FUNCTION apikeys_internal._check_description(text) IS 'A valid key description (at most 2000 characters), or invalid_description.';
COMMENT ON FUNCTION apikeys_internal._normalize_scopes(text[]) IS 'Scopes checked, sorted and de-duplicated, or invalid_scope; also the CHECK of the PostgREST tables'' scopes.';
COMMENT ON FUNCTION apikeys_internal._check_expiry(timestamp with time zone) IS 'A valid expiry (finite, in the future), or invalid_expiry.';
COMMENT ON FUNCTION apikeys_internal._check_metadata(jsonb) IS 'Valid key metadata (a JSON object of at most 8 kB), or invalid_metadata.';
COMMENT ON FUNCTION apikeys_internal._check_role(name) IS 'The existing role a grant recipe names; never NULL or PUBLIC.';
COMMENT ON FUNCTION apikeys_internal._check_privilege(text) IS 'The privilege a tenant grant names: manage or audit.';

-- audit labels and audit writing
COMMENT ON FUNCTION apikeys_internal._actor() IS 'The actor for audit rows and refusals: the bound label, apikeys.actor, or PostgREST''s JWT sub (at most 200 characters).';
COMMENT ON FUNCTION apikeys_internal._request_id() IS 'The request id for audit rows and refusals: the bound label, apikeys.request_id, or PostgREST''s X-Request-Id (at most 200 characters).';
COMMENT ON FUNCTION apikeys_internal._audit_hash(apikeys.audit) IS 'What an audit row''s row_hash must be: SHA-256 of its other columns, length-prefixed (docs/audit.md).';
COMMENT ON FUNCTION apikeys_internal._audit_chain() IS 'Trigger (BEFORE INSERT, ALWAYS) on apikeys.audit: number the row in its chain, link it to the chain''s head and hash it.';
COMMENT ON FUNCTION apikeys_internal._audit_purging() IS 'Is apikeys.audit_purge() running in this backend (the only time audit rows may be deleted)?';
COMMENT ON FUNCTION apikeys_internal._audit_append_only() IS 'Trigger on apikeys.audit: refuse UPDATE, DELETE and TRUNCATE (audit_append_only) except audit_purge''s deletes.';
COMMENT ON FUNCTION apikeys_internal._audit_write(text, text, uuid, jsonb) IS 'Append one audit row for the acting role, with the session''s labels.';
COMMENT ON FUNCTION apikeys_internal._audit_row_change() IS 'Trigger (AFTER row, ALWAYS): audit a change to tenants, keys, secrets, role mappings or the vault; never a digest, ciphertext or fingerprint.';
COMMENT ON FUNCTION apikeys_internal._refuse_truncate() IS 'Trigger: refuse TRUNCATE of an audited table (truncate_not_allowed); delete through the functions instead.';
COMMENT ON FUNCTION apikeys_internal._audit_since(text) IS 'The first audit_id a tenant-scoped reader sees of a tenant''s chain: its latest tenant_created row.';
COMMENT ON FUNCTION apikeys_internal._audit_of(text, bigint, integer, uuid) IS 'A tenant''s audit chain since its creation, newest first: before before_id, of one key if given, at most max_rows.';
COMMENT ON FUNCTION apikeys_internal._audit_chains() IS 'The audit chains the acting role may audit (every chain for superusers and global auditors).';
COMMENT ON FUNCTION apikeys_internal._audit_purge_rows(timestamp with time zone, interval) IS 'The work of apikeys.audit_purge(): per chain, append an audit_purged anchor, then delete the rows older than the cutoff.';

-- keys
COMMENT ON FUNCTION apikeys_internal._lock_key(uuid, text) IS 'Lock and return a key the acting role may manage; unknown and foreign keys raise the same key_not_found.';
COMMENT ON FUNCTION apikeys_internal._require_not_revoked(apikeys.credential, text) IS 'Raise key_revoked (and log it) for a revoked key.';
COMMENT ON FUNCTION apikeys_internal._require_active_tenant(text, text, uuid) IS 'Raise tenant_inactive (and log it) unless the tenant is active.';

-- vault
COMMENT ON FUNCTION apikeys_internal._vault_fingerprint(text) IS 'Fingerprint of a vault master key (the key_fp of the rows it encrypts): for superusers and tests; nothing calls it with a real key.';
COMMENT ON FUNCTION apikeys_internal._vault_key_state() IS 'Fingerprints of the configured master keys (current, previous); raises without a usable key. Superuser code only.';
COMMENT ON FUNCTION apikeys_internal._vault_seal(uuid, text) IS 'Encrypt a vault secret under the current master key (in C: the key never reaches SQL). Superuser code only.';
COMMENT ON FUNCTION apikeys_internal._vault_open(uuid, bytea, text) IS 'Decrypt a vault row with whichever configured master key encrypted it; problem and stale say how it went. Superuser code only.';
COMMENT ON FUNCTION apikeys_internal._vault_rewrap(uuid, bytea, text) IS 'A vault row re-encrypted under the current master key, the plaintext never leaving C. Superuser code only.';
COMMENT ON FUNCTION apikeys_internal._vault_lock_slot(text, text, text) IS 'Serialize changes to one owner''s secrets of one service until transaction end (a lock no SQL can take). Superuser code only.';
COMMENT ON FUNCTION apikeys_internal._vault_service(text) IS 'A vault service by name, aliases resolved; vault_service_not_found never echoes the input.';
COMMENT ON FUNCTION apikeys_internal._vault_check_name(text) IS 'A valid vault secret name (3 to 100 characters, no control characters), or invalid_name.';
COMMENT ON FUNCTION apikeys_internal._vault_may(text, text) IS 'May the acting role read or manage this tenant''s vault? Answers, never raises.';
COMMENT ON FUNCTION apikeys_internal._vault_authorize(text, text, text) IS 'Raise permission_denied (and log it) unless the acting role may read or manage the tenant''s vault; the tenant is not echoed.';
COMMENT ON FUNCTION apikeys_internal._vault_find(uuid, text, text, boolean) IS 'A vault secret the acting role may read or manage (locked if asked); others'' and unknown ids raise the same vault_secret_not_found.';
COMMENT ON FUNCTION apikeys_internal._vault_check_one(apikeys.vault_secret) IS 'vault_check() for one row: does it decrypt, match its service''s format, and is it under the current master key?';

-- policies, usage and observability
COMMENT ON FUNCTION apikeys_internal._changed() IS 'Trigger (ALWAYS, statement and row) on tenant, credential and secret: a committed change retires the shared policy cache.';
COMMENT ON FUNCTION apikeys_internal._verification_totals() IS 'Verifications since server start by outcome, all databases (the rows of apikeys.verifications).';
COMMENT ON FUNCTION apikeys_internal._pending_usage(uuid) IS 'What shared memory holds for one key not yet flushed (last use, uses charged, counts); NULLs for a key the caller cannot see in apikeys.credential.';
COMMENT ON FUNCTION apikeys_internal._runtime() IS 'Shared memory, policy cache and usage-flush figures (the row of apikeys.runtime).';

-- PostgREST
COMMENT ON FUNCTION apikeys_internal._postgrest_role_map_check() IS 'Trigger on apikeys.postgrest_role_map: the role must exist, and a mapping for every tenant may name only a confined role.';
COMMENT ON FUNCTION apikeys_internal._postgrest_config_audit() IS 'Trigger: audit changes to the PostgREST gate''s configuration tables.';
COMMENT ON FUNCTION apikeys_internal._postgrest_key(jsonb, text[]) IS 'The API key in PostgREST''s request.headers, per the configured header names (JWT-shaped values skipped), or NULL.';
COMMENT ON FUNCTION apikeys_internal._role_skips_rls(oid) IS 'Does the role own, or may it become the owner of, a table whose row-level security is enabled but not forced? Cached per backend.';
COMMENT ON FUNCTION apikeys_internal._role_confinement_scan(oid) IS 'Why row-level security does not confine a role to one tenant''s rows, from the catalogs (NULL: it does).';
COMMENT ON FUNCTION apikeys_internal._role_confinement_cached(oid) IS '_role_confinement_scan(), cached per backend until the catalogs it reads change.';
COMMENT ON FUNCTION apikeys_internal._postgrest_limits() IS 'Bounds on what the PostgREST gate reads from the request (headers, one header value, path, method), in bytes.';
COMMENT ON FUNCTION apikeys_internal._postgrest_log_denied(integer, text, text, uuid, text, text, text) IS 'Log a request the PostgREST gate refused (apikeys_audit_denied line, outlives the rollback); never a header value.';

------------------------------------------------------------------------------
-- Types
------------------------------------------------------------------------------

COMMENT ON TYPE apikeys.vault_check_result IS 'One row of apikeys.vault_check(): a vault secret and whether it decrypts and matches its service''s format.';

COMMENT ON COLUMN apikeys.verification.valid IS 'true when code = ''valid''.';
COMMENT ON COLUMN apikeys.verification.code IS 'The verdict: valid, malformed, not_found, disabled, revoked, expired, tenant_inactive, ip_not_allowed, insufficient_scope, rate_limited, usage_exceeded.';
COMMENT ON COLUMN apikeys.verification.key_id IS 'The key, when its digest is known (NULL for malformed and not_found).';
COMMENT ON COLUMN apikeys.verification.tenant IS 'The key''s tenant, when the key is known.';
COMMENT ON COLUMN apikeys.verification.name IS 'The key''s name, when the key is known.';
COMMENT ON COLUMN apikeys.verification.scopes IS 'The key''s scopes, when the key is known.';
COMMENT ON COLUMN apikeys.verification.expires_at IS 'The key''s expiry (NULL: none), when the key is known.';
COMMENT ON COLUMN apikeys.verification.rate_limit IS 'Requests allowed per rate window (X-RateLimit-Limit); NULL without a rate limit.';
COMMENT ON COLUMN apikeys.verification.rate_remaining IS 'Requests left in this window after this call (X-RateLimit-Remaining); NULL without a rate limit.';
COMMENT ON COLUMN apikeys.verification.rate_reset IS 'When the rate window ends (X-RateLimit-Reset); NULL without a rate limit.';
COMMENT ON COLUMN apikeys.verification.usage_remaining IS 'Uses left under the usage cap; NULL without one.';

COMMENT ON COLUMN apikeys.vault_check_result.id IS 'The vault secret.';
COMMENT ON COLUMN apikeys.vault_check_result.tenant IS 'Its tenant.';
COMMENT ON COLUMN apikeys.vault_check_result.service IS 'Its service.';
COMMENT ON COLUMN apikeys.vault_check_result.name IS 'Its name.';
COMMENT ON COLUMN apikeys.vault_check_result.ok IS 'true when problem is NULL.';
COMMENT ON COLUMN apikeys.vault_check_result.problem IS 'NULL, master_key_mismatch, decrypt_failed, invalid_format or stale_master_key.';

------------------------------------------------------------------------------
-- Table columns
------------------------------------------------------------------------------

COMMENT ON COLUMN apikeys.tenant.tenant IS 'Tenant id: 1 to 63 of [a-z0-9_.-], starting with [a-z0-9].';
COMMENT ON COLUMN apikeys.tenant.display_name IS 'Human-readable name (1 to 200 characters).';
COMMENT ON COLUMN apikeys.tenant.active IS 'false: the tenant''s keys verify as tenant_inactive and cannot be created or changed.';
COMMENT ON COLUMN apikeys.tenant.created_at IS 'When the tenant was created.';
COMMENT ON COLUMN apikeys.tenant.updated_at IS 'When the tenant was last changed.';

COMMENT ON COLUMN apikeys.credential.key_id IS 'The key''s identity; it survives rotation.';
COMMENT ON COLUMN apikeys.credential.tenant IS 'The tenant the key belongs to.';
COMMENT ON COLUMN apikeys.credential.name IS 'Name (1 to 200 characters).';
COMMENT ON COLUMN apikeys.credential.description IS 'Free text (at most 2000 characters), or NULL.';
COMMENT ON COLUMN apikeys.credential.prefix IS 'The key''s prefix, the part of the key before its body (e.g. ak, live).';
COMMENT ON COLUMN apikeys.credential.scopes IS 'Scopes the key holds (sorted, unique, at most 64).';
COMMENT ON COLUMN apikeys.credential.metadata IS 'A JSON object for the application.';
COMMENT ON COLUMN apikeys.credential.status IS 'active, disabled or revoked (revocation is permanent).';
COMMENT ON COLUMN apikeys.credential.expires_at IS 'When the key stops verifying (expired); NULL: never.';
COMMENT ON COLUMN apikeys.credential.created_by IS 'The role whose call created the key (the acting role).';
COMMENT ON COLUMN apikeys.credential.created_at IS 'When the key was created.';
COMMENT ON COLUMN apikeys.credential.updated_at IS 'When the key was last changed.';
COMMENT ON COLUMN apikeys.credential.rotated_at IS 'When a secret was last issued by apikey_rotate; NULL: never rotated.';
COMMENT ON COLUMN apikeys.credential.rotation_count IS 'How many times the key was rotated.';
COMMENT ON COLUMN apikeys.credential.revoked_at IS 'When the key was revoked; NULL unless status is revoked.';
COMMENT ON COLUMN apikeys.credential.revoked_reason IS 'The reason given to apikey_revoke, or NULL.';
COMMENT ON COLUMN apikeys.credential.allowed_ips IS 'Networks the key verifies from (1 to 16); NULL: any address. Set by apikey_set_policy.';
COMMENT ON COLUMN apikeys.credential.rate_limit IS 'Verifications allowed per rate_window; NULL: no rate limit. Set by apikey_set_policy.';
COMMENT ON COLUMN apikeys.credential.rate_window IS 'The rate limit''s window (1 second to 1 day); NULL exactly when rate_limit is.';
COMMENT ON COLUMN apikeys.credential.usage_limit IS 'Successful verifications allowed in total or per usage_period; NULL: no cap. Set by apikey_set_policy.';
COMMENT ON COLUMN apikeys.credential.usage_period IS 'The usage cap''s period (1 second to 366 days); NULL: the cap is for the key''s lifetime.';

COMMENT ON COLUMN apikeys.secret.digest IS 'SHA-256 of the API key (the key itself is never stored).';
COMMENT ON COLUMN apikeys.secret.key_id IS 'The key this secret belongs to.';
COMMENT ON COLUMN apikeys.secret.hint IS 'Prefix, first 4 and last 4 characters of the API key, to recognize it.';
COMMENT ON COLUMN apikeys.secret.created_at IS 'When the secret was issued.';
COMMENT ON COLUMN apikeys.secret.valid_until IS 'NULL: the key''s current secret; else the end of its rotation grace.';

COMMENT ON COLUMN apikeys.usage.key_id IS 'The key (no foreign key: a flush never fails on a key just deleted).';
COMMENT ON COLUMN apikeys.usage.last_used_at IS 'Last verification of the key, as of the last flush.';
COMMENT ON COLUMN apikeys.usage.used IS 'Uses charged against the usage cap in the current period; NULL: no cap tracked.';
COMMENT ON COLUMN apikeys.usage.period_start IS 'Start of the usage cap''s current period; NULL: the cap is for the key''s lifetime.';
COMMENT ON COLUMN apikeys.usage.count_valid IS 'Verifications with verdict valid.';
COMMENT ON COLUMN apikeys.usage.count_disabled IS 'Verifications with verdict disabled.';
COMMENT ON COLUMN apikeys.usage.count_revoked IS 'Verifications with verdict revoked.';
COMMENT ON COLUMN apikeys.usage.count_expired IS 'Verifications with verdict expired.';
COMMENT ON COLUMN apikeys.usage.count_tenant_inactive IS 'Verifications with verdict tenant_inactive.';
COMMENT ON COLUMN apikeys.usage.count_ip_not_allowed IS 'Verifications with verdict ip_not_allowed.';
COMMENT ON COLUMN apikeys.usage.count_insufficient_scope IS 'Verifications with verdict insufficient_scope.';
COMMENT ON COLUMN apikeys.usage.count_rate_limited IS 'Verifications with verdict rate_limited.';
COMMENT ON COLUMN apikeys.usage.count_usage_exceeded IS 'Verifications with verdict usage_exceeded.';
COMMENT ON COLUMN apikeys.usage.flushed_at IS 'When the row was last written by the flush worker.';

COMMENT ON COLUMN apikeys.role_tenant.role_name IS 'The role mapped (and the roles that have its privileges).';
COMMENT ON COLUMN apikeys.role_tenant.tenant IS 'The tenant; NULL: every tenant (a global admin or auditor).';
COMMENT ON COLUMN apikeys.role_tenant.privilege IS 'manage (keys and their audit) or audit (read only).';
COMMENT ON COLUMN apikeys.role_tenant.granted_at IS 'When grant_tenant made the mapping.';
COMMENT ON COLUMN apikeys.role_tenant.granted_by IS 'The role that made the mapping.';

COMMENT ON COLUMN apikeys.audit.chain IS 'The hash chain: the row''s tenant, '''' for rows of no tenant.';
COMMENT ON COLUMN apikeys.audit.audit_id IS 'Position in the chain: 1, 2, 3, ... without gaps (until a purge).';
COMMENT ON COLUMN apikeys.audit.at IS 'When the row was written (clock_timestamp()).';
COMMENT ON COLUMN apikeys.audit.tenant IS 'The tenant the change concerns, or NULL.';
COMMENT ON COLUMN apikeys.audit.key_id IS 'The API key (or vault secret) the change concerns, or NULL.';
COMMENT ON COLUMN apikeys.audit.action IS 'What happened: key_created, key_revoked, tenant_updated, role_granted, vault_secret_revealed, audit_purged, ...';
COMMENT ON COLUMN apikeys.audit.outcome IS 'success (refusals go to the server log, not here: they roll back).';
COMMENT ON COLUMN apikeys.audit.db_role IS 'The acting role: the role whose code made the management call.';
COMMENT ON COLUMN apikeys.audit.session_role IS 'session_user of the connection.';
COMMENT ON COLUMN apikeys.audit.actor IS 'Application actor: set_tenant/authenticate label, apikeys.actor, or PostgREST''s JWT sub.';
COMMENT ON COLUMN apikeys.audit.request_id IS 'Request id: set_tenant/authenticate label, apikeys.request_id, or PostgREST''s X-Request-Id.';
COMMENT ON COLUMN apikeys.audit.client_addr IS 'inet_client_addr() of the connection.';
COMMENT ON COLUMN apikeys.audit.application_name IS 'application_name of the connection.';
COMMENT ON COLUMN apikeys.audit.txid IS 'The writing transaction''s id.';
COMMENT ON COLUMN apikeys.audit.detail IS 'The change: new row, old row, or changed columns as [old, new]; never a digest, ciphertext or fingerprint.';
COMMENT ON COLUMN apikeys.audit.prev_hash IS 'row_hash of the chain''s previous row (32 zero bytes for the first).';
COMMENT ON COLUMN apikeys.audit.row_hash IS 'SHA-256 over the row''s other columns (apikeys_internal._audit_hash); audit_check() recomputes it.';

COMMENT ON COLUMN apikeys.vault_service.service IS 'Service name (2 to 63 of a-z, 0-9, _, -, starting with a letter).';
COMMENT ON COLUMN apikeys.vault_service.display_name IS 'Human-readable name (1 to 200 characters).';
COMMENT ON COLUMN apikeys.vault_service.format IS 'Anchored regular expression a secret of the service must match; NULL for an alias.';
COMMENT ON COLUMN apikeys.vault_service.alias_of IS 'The service this one is an alias of (its secrets are stored under it), or NULL.';
COMMENT ON COLUMN apikeys.vault_service.builtin IS 'true for the services the extension ships, which cannot change.';
COMMENT ON COLUMN apikeys.vault_service.created_at IS 'When the service was registered.';
COMMENT ON COLUMN apikeys.vault_service.updated_at IS 'When the service was last changed.';

COMMENT ON COLUMN apikeys.vault_secret.id IS 'The vault secret''s id.';
COMMENT ON COLUMN apikeys.vault_secret.tenant IS 'The tenant that owns the secret.';
COMMENT ON COLUMN apikeys.vault_secret.owner_user IS 'The role within the tenant that owns it (only it may reveal it); NULL: the tenant.';
COMMENT ON COLUMN apikeys.vault_secret.service IS 'The service the secret is for.';
COMMENT ON COLUMN apikeys.vault_secret.name IS 'Name (3 to 100 characters).';
COMMENT ON COLUMN apikeys.vault_secret.ciphertext IS 'The secret, encrypted with pgp_sym_encrypt (AES-256) under id and the master key.';
COMMENT ON COLUMN apikeys.vault_secret.key_fp IS 'Fingerprint of the master key that encrypted it.';
COMMENT ON COLUMN apikeys.vault_secret.active IS 'At most one active secret per tenant, owner_user and service.';
COMMENT ON COLUMN apikeys.vault_secret.last_used_at IS 'Last vault_reveal of the secret, or NULL.';
COMMENT ON COLUMN apikeys.vault_secret.created_at IS 'When the secret was added.';
COMMENT ON COLUMN apikeys.vault_secret.updated_at IS 'When the secret was last changed.';

COMMENT ON COLUMN apikeys.postgrest_setting.singleton IS 'Always true: the table holds one row at most.';
COMMENT ON COLUMN apikeys.postgrest_setting.key_headers IS 'request.headers names tried in order for the key; authorization means "Authorization: Bearer <key>".';
COMMENT ON COLUMN apikeys.postgrest_setting.realm IS 'Realm of the WWW-Authenticate: Bearer header.';
COMMENT ON COLUMN apikeys.postgrest_setting.require_key IS 'Whether requests that match no route need a key.';
COMMENT ON COLUMN apikeys.postgrest_setting.rate_limit_headers IS 'Whether answers for rate-limited keys carry X-RateLimit-* headers.';
COMMENT ON COLUMN apikeys.postgrest_setting.allow_unlisted_methods IS 'false: a method no route lists, on a path some route lists, is refused (403); true: require_key decides.';
COMMENT ON COLUMN apikeys.postgrest_setting.updated_at IS 'When the settings were last changed.';

COMMENT ON COLUMN apikeys.postgrest_route.method IS 'HTTP method, or * for every method (a GET route also covers HEAD).';
COMMENT ON COLUMN apikeys.postgrest_route.path IS 'Pattern for the normalized request.path (apikeys.postgrest_normalize_path).';
COMMENT ON COLUMN apikeys.postgrest_route.match IS 'How path matches: exact, like or regex.';
COMMENT ON COLUMN apikeys.postgrest_route.required_scopes IS 'Scopes a key must hold for a matching request.';
COMMENT ON COLUMN apikeys.postgrest_route.allow_anonymous IS 'Whether a matching request may come without a key (only without required scopes).';
COMMENT ON COLUMN apikeys.postgrest_route.description IS 'Free text (at most 2000 characters), or NULL.';
COMMENT ON COLUMN apikeys.postgrest_route.created_at IS 'When the route was added.';
COMMENT ON COLUMN apikeys.postgrest_route.limits IS 'The route''s own limits, up to 3 of (name, max_uses, per), each kept per key (apikeys.postgrest_route_set_limits).';
COMMENT ON COLUMN apikeys.postgrest_route.cost IS 'Units a request charges to each limit it meets (key, tenant, route) and to the usage cap; 0 checks only.';

COMMENT ON COLUMN apikeys.postgrest_role_map.tenant IS 'Keys of this tenant only; NULL: any tenant.';
COMMENT ON COLUMN apikeys.postgrest_role_map.key_id IS 'This key only; NULL: any key.';
COMMENT ON COLUMN apikeys.postgrest_role_map.scope IS 'Keys holding this scope only; NULL: any scopes.';
COMMENT ON COLUMN apikeys.postgrest_role_map.role_name IS 'The role the request''s query runs as.';
COMMENT ON COLUMN apikeys.postgrest_role_map.priority IS 'Among matching rows the highest wins (then key, scope, tenant rows, then role name).';
COMMENT ON COLUMN apikeys.postgrest_role_map.created_at IS 'When the mapping was added.';

------------------------------------------------------------------------------
-- View columns.  Those the views take from a table say what the table's
-- column says (copied below); the others are written here.
------------------------------------------------------------------------------

COMMENT ON COLUMN apikeys.keys.hint IS 'Hint of the key''s current secret: prefix, first 4 and last 4 characters.';
COMMENT ON COLUMN apikeys.keys.secrets_in_grace IS 'Older secrets still verifying in their rotation grace.';

COMMENT ON COLUMN apikeys.key_usage.key_id IS 'The key.';
COMMENT ON COLUMN apikeys.key_usage.tenant IS 'The key''s tenant.';
COMMENT ON COLUMN apikeys.key_usage.name IS 'The key''s name.';
COMMENT ON COLUMN apikeys.key_usage.last_used_at IS 'Last verification of the key (flushed or still in shared memory).';
COMMENT ON COLUMN apikeys.key_usage.usage_limit IS 'The key''s usage cap; NULL: none.';
COMMENT ON COLUMN apikeys.key_usage.used IS 'Uses charged against the cap in the current period.';
COMMENT ON COLUMN apikeys.key_usage.usage_remaining IS 'Uses left under the cap; NULL without one.';
COMMENT ON COLUMN apikeys.key_usage.valid IS 'Verifications with verdict valid (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.disabled IS 'Verifications with verdict disabled (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.revoked IS 'Verifications with verdict revoked (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.expired IS 'Verifications with verdict expired (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.tenant_inactive IS 'Verifications with verdict tenant_inactive (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.ip_not_allowed IS 'Verifications with verdict ip_not_allowed (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.insufficient_scope IS 'Verifications with verdict insufficient_scope (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.rate_limited IS 'Verifications with verdict rate_limited (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.usage_exceeded IS 'Verifications with verdict usage_exceeded (flushed + pending).';
COMMENT ON COLUMN apikeys.key_usage.flushed_at IS 'When the flush worker last wrote the key''s figures; NULL: never.';
COMMENT ON COLUMN apikeys.key_usage.has_unflushed IS 'Whether shared memory holds counts not yet written to apikeys.usage.';

COMMENT ON COLUMN apikeys.verifications.outcome IS 'The verdict code.';
COMMENT ON COLUMN apikeys.verifications.total IS 'Verifications with that verdict since server start, all databases.';

COMMENT ON COLUMN apikeys.runtime.preloaded IS 'Whether apikeys is in shared_preload_libraries (without it: no cache, no limits, no usage counts).';
COMMENT ON COLUMN apikeys.runtime.shmem_bytes IS 'Shared memory the extension holds.';
COMMENT ON COLUMN apikeys.runtime.cache_capacity IS 'Entries the policy cache can hold (apikeys.cache_entries, rounded to whole sets).';
COMMENT ON COLUMN apikeys.runtime.cache_entries IS 'Entries the policy cache holds now.';
COMMENT ON COLUMN apikeys.runtime.cache_hits IS 'Verifications answered from the policy cache since server start.';
COMMENT ON COLUMN apikeys.runtime.cache_misses IS 'Verifications that had to read the tables since server start.';
COMMENT ON COLUMN apikeys.runtime.cache_evictions IS 'Cache entries dropped for room since server start.';
COMMENT ON COLUMN apikeys.runtime.tracked_capacity IS 'Keys whose usage shared memory can track (apikeys.tracked_keys, rounded to whole sets).';
COMMENT ON COLUMN apikeys.runtime.tracked_keys IS 'Keys whose usage shared memory tracks now.';
COMMENT ON COLUMN apikeys.runtime.unflushed_keys IS 'Keys with figures not yet written to apikeys.usage.';
COMMENT ON COLUMN apikeys.runtime.tracking_dropped IS 'Uses not counted because usage tracking was full, since server start.';
COMMENT ON COLUMN apikeys.runtime.flushed_rows IS 'Rows the flush workers wrote since server start.';
COMMENT ON COLUMN apikeys.runtime.flush_errors IS 'Flushes that failed since server start (alert when it rises).';
COMMENT ON COLUMN apikeys.runtime.last_flush_at IS 'When a flush worker last wrote anything; NULL: never.';
COMMENT ON COLUMN apikeys.runtime.flush_workers IS 'Flush workers running now.';
COMMENT ON COLUMN apikeys.runtime.cache_generation IS 'Times the whole policy cache was retired (a tenant change, a TRUNCATE, ...) since server start.';
COMMENT ON COLUMN apikeys.runtime.flush_lag IS 'now() - last_flush_at (alert when it grows past apikeys.usage_write_delay while keys are in use).';

-- The views that show a table's rows: each column the table has, the
-- table's comment (keys: credential; tenants: tenant; tenant_grants:
-- role_tenant; audit_log: audit; vault_secrets: vault_secret).
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT v.view, a.attname, d.description
          FROM (VALUES ('apikeys.keys'::regclass, 'apikeys.credential'::regclass),
                       ('apikeys.tenants', 'apikeys.tenant'),
                       ('apikeys.tenant_grants', 'apikeys.role_tenant'),
                       ('apikeys.audit_log', 'apikeys.audit'),
                       ('apikeys.vault_secrets', 'apikeys.vault_secret')) v(view, tab)
          JOIN pg_catalog.pg_attribute va ON va.attrelid OPERATOR(pg_catalog.=) v.view AND va.attnum OPERATOR(pg_catalog.>) 0
          JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) v.tab AND a.attname OPERATOR(pg_catalog.=) va.attname
          JOIN pg_catalog.pg_description d ON d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
                                          AND d.objoid OPERATOR(pg_catalog.=) v.tab AND d.objsubid OPERATOR(pg_catalog.=) a.attnum
         ORDER BY 1, 2
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON COLUMN %s.%I IS %L', c.view, c.attname, c.description);
    END LOOP;
END;
$$;

-- Named limits (1.1)
COMMENT ON COLUMN apikeys.named_limit.name IS 'The limit''s name (reported by last_verify_limits()); a key limit and a tenant limit of one name are two limits.';
COMMENT ON COLUMN apikeys.named_limit.max_uses IS 'At most this many units (a verification costs 1, or its cost) in any interval of length per.';
COMMENT ON COLUMN apikeys.named_limit.per IS 'The sliding window''s length (1 second to 1 day).';
COMMENT ON COLUMN apikeys.credential.limits IS 'The key''s named limits (up to 3), set by apikey_set_limits().';
COMMENT ON COLUMN apikeys.tenant.limits IS 'The tenant''s named limits (up to 3), shared by all its keys, set by tenant_set_limits().';
COMMENT ON COLUMN apikeys.tenants.limits IS 'The tenant''s named limits (up to 3), shared by all its keys, set by tenant_set_limits().';
