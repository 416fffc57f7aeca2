--
-- security_tenant_isolation: a tenant role, or a role that runs arbitrary SQL
-- but is not trusted to switch tenants (PostgREST's `authenticated`), cannot
-- see or change another tenant's keys, secrets, tenants or audit rows,
-- whatever it does with SET, set_config, claims, headers or SET ROLE.
--
-- Attackers log in as themselves (\c), so SET ROLE and SET SESSION
-- AUTHORIZATION are checked against a non-superuser session user.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_acme_admin, regress_globex_admin, regress_app,
                    regress_auditor, regress_gateway;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT current_user AS su \gset

-- Run a statement; 'ok' or SQLSTATE and message (uuids masked).
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;

------------------------------------------------------------------------------
-- Setup: two tenants with keys; roles
------------------------------------------------------------------------------
SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT key_id AS acme_k1, api_key AS acme_key1 FROM apikeys.apikey_create('acme', 'acme one') \gset
SELECT key_id AS acme_k2, api_key AS acme_key2 FROM apikeys.apikey_create('acme', 'acme two') \gset
SELECT key_id AS globex_k1, api_key AS globex_key1 FROM apikeys.apikey_create('globex', 'globex one') \gset
SELECT key_id AS globex_k2, api_key AS globex_key2 FROM apikeys.apikey_create('globex', 'globex two') \gset

CREATE ROLE regress_acme_admin LOGIN;
CREATE ROLE regress_globex_admin LOGIN;
CREATE ROLE regress_app LOGIN;        -- like PostgREST's `authenticated`
CREATE ROLE regress_auditor LOGIN;
CREATE ROLE regress_gateway LOGIN;    -- trusted to switch tenants
SELECT apikeys.grant_tenant('regress_acme_admin', 'acme');
SELECT apikeys.grant_tenant('regress_globex_admin', 'globex');
SELECT apikeys.grant_tenant('regress_auditor', 'acme', 'audit');
SELECT apikeys.grant_verifier('regress_app');
-- The app may read the keys view, but only what RLS lets through.
GRANT SELECT ON apikeys.keys, apikeys.credential, apikeys.tenant, apikeys.audit TO regress_app;
GRANT SELECT (key_id, hint, created_at, valid_until) ON apikeys.secret TO regress_app;
GRANT EXECUTE ON FUNCTION apikeys.read_keys() TO regress_app, regress_gateway;
-- The gateway: a verifier plus set_tenant (the trust gate) and key management.
SELECT apikeys.grant_verifier('regress_gateway');
GRANT EXECUTE ON FUNCTION apikeys.set_tenant(text, text, text),
    apikeys.apikey_create(text, text, text[], timestamptz, text, jsonb, text),
    apikeys.apikey_disable(uuid), apikeys.apikey_enable(uuid) TO regress_gateway;
GRANT SELECT ON apikeys.keys, apikeys.credential TO regress_gateway;
GRANT SELECT (key_id, hint, created_at, valid_until) ON apikeys.secret TO regress_gateway;

------------------------------------------------------------------------------
-- The acme admin, logged in as itself
------------------------------------------------------------------------------
\c - regress_acme_admin
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
SELECT session_user, current_user, apikeys.current_tenant();

-- Reads: only acme, everywhere (through the views; the tables are not granted).
SELECT tenant, name, status, hint IS NOT NULL AS has_hint FROM apikeys.keys ORDER BY name;
SELECT tenant, count(*) FROM apikeys.keys GROUP BY tenant ORDER BY tenant;
SELECT tenant FROM apikeys.tenants ORDER BY tenant;
SELECT tenant, count(*) > 0 AS has_rows FROM apikeys.audit_log GROUP BY tenant ORDER BY tenant;
SELECT role_name, tenant, privilege FROM apikeys.tenant_grants ORDER BY 1, 2;
SELECT tenant, count(*) FROM apikeys.key_usage GROUP BY tenant ORDER BY tenant;
SELECT pg_temp.try('SELECT 1 FROM apikeys.credential') AS credential,
       pg_temp.try('SELECT 1 FROM apikeys.tenant') AS tenant,
       pg_temp.try('SELECT 1 FROM apikeys.audit') AS audit,
       pg_temp.try('SELECT 1 FROM apikeys.role_tenant') AS role_tenant,
       pg_temp.try('SELECT 1 FROM apikeys.usage') AS usage,
       pg_temp.try('SELECT hint FROM apikeys.secret') AS secret;
-- Guessing globex's key ids does not help.
SELECT count(*) AS globex_by_id FROM apikeys.keys WHERE key_id IN (:'globex_k1', :'globex_k2');
SELECT count(*) AS globex_audit_by_id FROM apikeys.audit_log WHERE key_id = :'globex_k1';
-- A leaky function in WHERE sees only rows RLS already let through.
CREATE FUNCTION pg_temp.leak(t text, n text) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS $$
BEGIN
    RAISE NOTICE 'leak: % %', t, n;
    RETURN true;
END
$$;
SELECT count(*) FROM apikeys.keys WHERE pg_temp.leak(tenant, name);
SELECT count(*) FROM apikeys.tenants WHERE pg_temp.leak(tenant, display_name);

-- Management of a globex key: key_not_found, exactly like an unknown key.
SELECT pg_temp.try(format('SELECT apikeys.apikey_rotate(%L)', :'globex_k1')) AS rotate,
       pg_temp.try(format('SELECT apikeys.apikey_rotate(%L, %L)', :'globex_k1', '1 hour')) AS rotate_grace;
SELECT pg_temp.try(format('SELECT apikeys.apikey_revoke(%L, %L)', :'globex_k1', 'mine now')) AS revoke;
SELECT pg_temp.try(format('SELECT apikeys.apikey_disable(%L)', :'globex_k1')) AS disable;
SELECT pg_temp.try(format('SELECT apikeys.apikey_enable(%L)', :'globex_k1')) AS enable;
SELECT pg_temp.try(format('SELECT apikeys.apikey_update(%L, name => %L)', :'globex_k1', 'pwned')) AS update;
SELECT pg_temp.try(format('SELECT apikeys.apikey_delete(%L)', :'globex_k1')) AS delete;
SELECT pg_temp.try(format('SELECT apikeys.apikey_set_policy(%L, rate_limit => 1)', :'globex_k1')) AS set_policy;
SELECT pg_temp.try(format('SELECT apikeys.apikey_delete(%L)', gen_random_uuid())) AS delete_unknown;
-- Creating in globex: permission_denied.
SELECT pg_temp.try('SELECT apikeys.apikey_create(''globex'', ''planted'')') AS create_in_globex;
-- Its own tenant works.
SELECT pg_temp.try(format('SELECT apikeys.apikey_update(%L, description => %L)', :'acme_k2', 'by acme admin')) AS update_own;
SELECT pg_temp.try('SELECT apikeys.apikey_create(''acme'', ''acme three'')') AS create_own;

-- Direct writes to the tables: no privilege at all (not even for acme rows).
SELECT pg_temp.try(format('UPDATE apikeys.credential SET tenant = %L WHERE key_id = %L', 'acme', :'globex_k1')) AS upd_credential,
       pg_temp.try(format('UPDATE apikeys.credential SET name = %L WHERE key_id = %L', 'x', :'acme_k1')) AS upd_own_credential,
       pg_temp.try('DELETE FROM apikeys.credential') AS del_credential,
       pg_temp.try('INSERT INTO apikeys.credential (tenant, name, prefix) VALUES (''globex'', ''x'', ''ak'')') AS ins_credential;
SELECT pg_temp.try('UPDATE apikeys.secret SET valid_until = now()') AS upd_secret,
       pg_temp.try('DELETE FROM apikeys.secret') AS del_secret,
       pg_temp.try(format('INSERT INTO apikeys.secret (digest, key_id, hint) VALUES (sha256(%L), %L, %L)',
                          'x', :'globex_k1', 'x')) AS ins_secret;
SELECT pg_temp.try('UPDATE apikeys.tenant SET active = false') AS upd_tenant,
       pg_temp.try('DELETE FROM apikeys.tenant') AS del_tenant,
       pg_temp.try('INSERT INTO apikeys.tenant (tenant, display_name) VALUES (''evil'', ''x'')') AS ins_tenant;
SELECT pg_temp.try('INSERT INTO apikeys.role_tenant (role_name, tenant, privilege) VALUES (current_user, ''globex'', ''manage'')') AS ins_role_tenant,
       pg_temp.try('INSERT INTO apikeys.role_tenant (role_name, tenant, privilege) VALUES (current_user, NULL, ''manage'')') AS ins_role_global,
       pg_temp.try('UPDATE apikeys.role_tenant SET tenant = NULL') AS upd_role_tenant,
       pg_temp.try('TRUNCATE apikeys.credential') AS truncate_credential;
-- Digests: not readable, not even its own.
SELECT pg_temp.try('SELECT digest FROM apikeys.secret') AS digest,
       pg_temp.try('SELECT * FROM apikeys.secret') AS star,
       pg_temp.try('SELECT s FROM apikeys.secret s') AS whole_row,
       pg_temp.try('SELECT count(*) FROM apikeys.secret WHERE digest IS NOT NULL') AS in_where;
COPY apikeys.secret (digest) TO STDOUT;
COPY (SELECT key_id, hint FROM apikeys.secret LIMIT 0) TO STDOUT;
-- Functions it was not granted.
SELECT pg_temp.try('SELECT apikeys.set_tenant(''globex'')') AS set_tenant,
       pg_temp.try('SELECT apikeys.tenant_create(''evil'')') AS tenant_create,
       pg_temp.try('SELECT apikeys.tenant_update(''globex'', active => false)') AS tenant_update,
       pg_temp.try('SELECT apikeys.tenant_delete(''globex'', true)') AS tenant_delete;
SELECT pg_temp.try('SELECT apikeys.grant_tenant(current_user, ''globex'')') AS grant_tenant,
       pg_temp.try('SELECT apikeys.revoke_tenant(''regress_globex_admin'', ''globex'')') AS revoke_tenant,
       pg_temp.try('SELECT apikeys.grant_verifier(current_user)') AS grant_verifier,
       pg_temp.try('SELECT apikeys.authenticate(NULL)') AS authenticate;
-- Internal SECURITY DEFINER helpers are not callable.
SELECT pg_temp.try('SELECT apikeys_internal._authorize(''globex'', ''x'')') AS _authorize,
       pg_temp.try('SELECT apikeys_internal._audit_write(''key_created'', ''globex'', NULL, ''{}'')') AS _audit_write,
       pg_temp.try('SELECT apikeys_internal._audit_purge_rows(now(), ''1 day'')') AS _audit_purge_rows,
       pg_temp.try('SELECT apikeys.audit_purge(''1 day'')') AS audit_purge;

-- Forging the tenant context.
SET apikeys.tenant = 'globex';
SELECT set_config('apikeys.tenant', 'globex', false);
SELECT pg_temp.try('SET apikeys.current_tenant = ''globex''') AS set_current_tenant;
SELECT set_config('request.jwt.claims', '{"tenant":"globex","sub":"x","role":"regress_globex_admin"}', true) IS NOT NULL AS claims_set,
       set_config('request.jwt.claim.tenant', 'globex', false) IS NOT NULL AS claim_set,
       set_config('request.headers', '{"x-tenant":"globex","x-request-id":"r1"}', false) IS NOT NULL AS headers_set;
SELECT apikeys.current_tenant() AS after_forging;
SELECT tenant, count(*) FROM apikeys.keys GROUP BY tenant ORDER BY tenant;
SELECT pg_temp.try(format('SELECT apikeys.apikey_revoke(%L)', :'globex_k1')) AS revoke_after_forging;
BEGIN;
SELECT set_config('request.jwt.claims', '{"tenant":"globex"}', true) IS NOT NULL AS claims_set_local;
SELECT apikeys.current_tenant() AS in_transaction;
SELECT count(*) AS globex_keys FROM apikeys.keys WHERE tenant = 'globex';
SELECT pg_temp.try('SELECT apikeys.apikey_create(''globex'', ''planted'')') AS create_in_globex;
COMMIT;
RESET ALL;
SELECT apikeys.current_tenant() AS after_reset_all;
-- Not a member of the globex admin role.
SET ROLE regress_globex_admin;
SET SESSION AUTHORIZATION regress_globex_admin;
SELECT pg_temp.try('SET LOCAL ROLE regress_globex_admin') AS set_local_role;
SELECT session_user, current_user, apikeys.current_tenant();
SELECT tenant, count(*) FROM apikeys.keys GROUP BY tenant ORDER BY tenant;

------------------------------------------------------------------------------
-- The auditor of acme: reads acme, manages nothing
------------------------------------------------------------------------------
\c - regress_auditor
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
SELECT tenant, name FROM apikeys.keys ORDER BY name;
SELECT DISTINCT tenant FROM apikeys.audit_log ORDER BY tenant;
SELECT ok FROM apikeys.audit_check();
SELECT pg_temp.try(format('SELECT apikeys.apikey_revoke(%L)', :'acme_k1')) AS revoke_acme,
       pg_temp.try('SELECT apikeys.apikey_create(''acme'', ''by auditor'')') AS create_acme;
\c - :su
-- Even with EXECUTE granted directly, an 'audit' mapping does not allow managing.
GRANT EXECUTE ON FUNCTION apikeys.apikey_revoke(uuid, text),
    apikeys.apikey_create(text, text, text[], timestamptz, text, jsonb, text) TO regress_auditor;
\c - regress_auditor
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
SELECT pg_temp.try(format('SELECT apikeys.apikey_revoke(%L)', :'acme_k1')) AS revoke_acme,
       pg_temp.try('SELECT apikeys.apikey_create(''acme'', ''by auditor'')') AS create_acme;

------------------------------------------------------------------------------
-- The app (PostgREST `authenticated`): only authenticate() binds a tenant
------------------------------------------------------------------------------
\c - regress_app
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
-- Unbound: nothing visible.
SELECT apikeys.current_tenant(), apikeys.current_key_id();
SELECT count(*) AS keys FROM apikeys.keys;
SELECT count(*) AS tenants FROM apikeys.tenant;
SELECT count(*) AS audit FROM apikeys.audit;
-- Claims and headers as PostgREST would set them change nothing.
BEGIN;
SELECT set_config('request.jwt.claims', '{"tenant":"globex","sub":"x"}', true) IS NOT NULL AS claims,
       set_config('request.headers', format('{"x-tenant":"globex","x-api-key":"%s"}', :'globex_key1'), true) IS NOT NULL AS headers,
       set_config('role', 'regress_app', true) AS role;
SELECT apikeys.current_tenant(), count(*) AS keys FROM apikeys.keys;
SET apikeys.tenant = 'globex';
ROLLBACK;
-- authenticate() with acme's key binds acme for the transaction.
BEGIN;
SELECT valid, code, tenant, name FROM apikeys.authenticate(:'acme_key1');
SELECT apikeys.current_tenant(), apikeys.current_key_id() = :'acme_k1' AS key_is_acme_k1;
SELECT tenant, name FROM apikeys.keys ORDER BY name;
SELECT tenant FROM apikeys.tenant;
SELECT count(*) AS secrets FROM apikeys.secret;
-- never the audit through a key, never a digest, no management
SELECT count(*) AS audit FROM apikeys.audit;
SELECT pg_temp.try('SELECT digest FROM apikeys.secret') AS digest,
       pg_temp.try(format('SELECT apikeys.apikey_revoke(%L)', :'acme_k2')) AS revoke_own_tenant,
       pg_temp.try('SELECT apikeys.set_tenant(''globex'')') AS set_tenant;
-- A globex key cannot switch the binding: tenant_context_conflict.
SELECT pg_temp.try(format('SELECT apikeys.authenticate(%L)', :'globex_key1')) AS authenticate_globex;
SELECT * FROM apikeys.authenticate(:'globex_key1');
ROLLBACK;
BEGIN;
SELECT code FROM apikeys.authenticate(:'acme_key1');
SELECT pg_temp.try(format('SELECT apikeys.authenticate(%L)', :'globex_key1')) AS authenticate_globex;
SELECT apikeys.current_tenant() AS still_acme;
-- Another acme key is fine (same tenant); apikey_verify never binds.
SELECT code, tenant FROM apikeys.authenticate(:'acme_key2');
SELECT apikeys.current_key_id() = :'acme_k2' AS key_is_acme_k2;
SELECT code, tenant FROM apikeys.apikey_verify(:'globex_key1');
-- An invalid key does not bind or unbind anything.
SELECT code FROM apikeys.authenticate('ak_garbage');
SELECT apikeys.current_tenant() AS still_acme;
-- Rolling back to a savepoint does not release the binding to acme.
SAVEPOINT s;
SELECT code FROM apikeys.authenticate(:'acme_key1');
ROLLBACK TO SAVEPOINT s;
SELECT apikeys.current_tenant() AS still_acme;
SELECT pg_temp.try(format('SELECT apikeys.authenticate(%L)', :'globex_key1')) AS authenticate_globex;
RESET ALL;
SELECT set_config('request.jwt.claims', '{"tenant":"globex"}', true) IS NOT NULL AS claims;
SELECT apikeys.current_tenant() AS still_acme, count(*) FILTER (WHERE tenant = 'globex') AS globex_keys
  FROM apikeys.keys;
COMMIT;
-- A binding made after a savepoint is undone by ROLLBACK TO it, like any
-- other change; RELEASE keeps it.
BEGIN;
SAVEPOINT s;
SELECT code FROM apikeys.authenticate(:'acme_key1');
ROLLBACK TO SAVEPOINT s;
SELECT apikeys.current_tenant() AS unbound, apikeys.current_key_id() AS no_key, count(*) AS keys FROM apikeys.keys;
SAVEPOINT t;
SELECT code, tenant FROM apikeys.authenticate(:'globex_key1');
RELEASE SAVEPOINT t;
SELECT apikeys.current_tenant() AS globex, apikeys.current_key_id() = :'globex_k1' AS key_is_globex_k1;
ROLLBACK;
-- The binding ends at COMMIT ...
SELECT apikeys.current_tenant(), apikeys.current_key_id(), count(*) AS keys FROM apikeys.keys;
-- ... and then a globex key binds globex (one request per transaction).
BEGIN;
SELECT code, tenant FROM apikeys.authenticate(:'globex_key2');
SELECT tenant, name FROM apikeys.keys ORDER BY name;
ROLLBACK;
SELECT apikeys.current_tenant() AS after_rollback;
-- Outside a transaction block the binding lasts for the statement only.
SELECT (apikeys.authenticate(:'acme_key1')).tenant AS bound, apikeys.current_tenant() AS same_statement;
SELECT apikeys.current_tenant() AS next_statement;
-- A revoked key binds nothing.
\c - :su
SELECT apikeys.apikey_revoke(:'globex_k2');
\c - regress_app
\set VERBOSITY default
\set SHOW_CONTEXT never
BEGIN;
SELECT valid, code, tenant FROM apikeys.authenticate(:'globex_key2');
SELECT apikeys.current_tenant() AS after_revoked_key, count(*) AS keys FROM apikeys.keys;
ROLLBACK;

------------------------------------------------------------------------------
-- The gateway, trusted with set_tenant
------------------------------------------------------------------------------
\c - regress_gateway
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
-- Unbound: no rights.
SELECT count(*) AS keys FROM apikeys.keys;
SELECT pg_temp.try(format('SELECT apikeys.apikey_disable(%L)', :'globex_k1')) AS disable_unbound,
       pg_temp.try('SELECT apikeys.apikey_create(''globex'', ''by gateway'')') AS create_unbound;
BEGIN;
SELECT apikeys.set_tenant('globex');
SELECT apikeys.current_tenant();
SELECT tenant, name, status FROM apikeys.keys ORDER BY name;
SELECT pg_temp.try(format('SELECT apikeys.apikey_disable(%L)', :'globex_k1')) AS disable_globex,
       pg_temp.try('SELECT apikeys.apikey_create(''globex'', ''by gateway'')') AS create_globex;
-- Bound to globex, acme stays out of reach.
SELECT pg_temp.try(format('SELECT apikeys.apikey_disable(%L)', :'acme_k1')) AS disable_acme,
       pg_temp.try('SELECT apikeys.apikey_create(''acme'', ''by gateway'')') AS create_acme;
-- A key of another tenant cannot move a trusted binding either.
SELECT pg_temp.try(format('SELECT apikeys.authenticate(%L)', :'acme_key1')) AS authenticate_acme;
SELECT tenant, name, status FROM apikeys.keys ORDER BY name;
COMMIT;
-- After COMMIT the gateway is back to no rights.
SELECT apikeys.current_tenant() AS after_commit, count(*) AS keys FROM apikeys.keys;
SELECT pg_temp.try(format('SELECT apikeys.apikey_enable(%L)', :'globex_k1')) AS enable_after_commit,
       pg_temp.try('SELECT apikeys.apikey_create(''globex'', ''after commit'')') AS create_after_commit;
-- set_tenant outside a transaction block only lasts for its statement.
SELECT apikeys.set_tenant('globex');
SELECT pg_temp.try(format('SELECT apikeys.apikey_enable(%L)', :'globex_k1')) AS enable_next_statement;
-- Binding ends at ROLLBACK too.
BEGIN;
SELECT apikeys.set_tenant('acme');
ROLLBACK;
SELECT apikeys.current_tenant() AS after_rollback;

------------------------------------------------------------------------------
-- What happened, seen by the superuser
------------------------------------------------------------------------------
\c - :su
-- created_by is the calling role, not the functions' owner.
SELECT tenant, name, status, CASE WHEN created_by = current_user THEN '(superuser)' ELSE created_by END AS created_by,
       description FROM apikeys.keys ORDER BY tenant, name;
SELECT tenant, action, db_role FROM apikeys.audit
 WHERE db_role <> current_user ORDER BY at, chain, audit_id;
SELECT ok, problem FROM apikeys.audit_check();

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_acme_admin, regress_globex_admin, regress_app, regress_auditor, regress_gateway;
DROP ROLE regress_acme_admin, regress_globex_admin, regress_app, regress_auditor, regress_gateway;
