-- test/postgrest/schema.sql - a tenant-isolated API behind PostgREST, guarded
-- by API keys (apikeys.pre_request as db-pre-request).  See docs/postgrest.md.
--
--   psql -v ON_ERROR_STOP=1 -d app -f test/postgrest/schema.sql
--   postgrest test/postgrest/postgrest.conf
--
-- Run as a superuser, in a database where apikeys is not yet installed, with
-- shared_preload_libraries = 'apikeys' (rate limits and usage caps need it).
-- The roles are cluster-wide: drop them before running it again elsewhere.

CREATE EXTENSION IF NOT EXISTS apikeys CASCADE;

-- PostgREST's roles: it logs in as the authenticator, which switches to
-- web_anon for every request (API keys are not JWTs).  The gate then switches
-- to api_user for a valid key, which PostgreSQL allows because the
-- authenticator is a member of both.
CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD 'change-me';
CREATE ROLE web_anon NOLOGIN;
CREATE ROLE api_user NOLOGIN;
GRANT web_anon, api_user TO authenticator;

-- Every role a request runs as may run the gate (web_anon does) and read the
-- tenant binding (api_user's RLS policies do).
SELECT apikeys.grant_postgrest('web_anon');
SELECT apikeys.grant_postgrest('api_user');

-- The API schema (db-schemas = "api").
CREATE SCHEMA api;
GRANT USAGE ON SCHEMA api TO web_anon, api_user;

-- A tenant-isolated table: each row belongs to a tenant, and row-level
-- security shows and accepts only the rows of the tenant bound to the
-- transaction, i.e. the tenant of the request's API key.
CREATE TABLE api.items (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant     text NOT NULL DEFAULT apikeys.current_tenant(),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON api.items (tenant);
ALTER TABLE api.items ENABLE ROW LEVEL SECURITY;
ALTER TABLE api.items FORCE ROW LEVEL SECURITY;   -- its owner too
CREATE POLICY items_tenant ON api.items
    USING (tenant = apikeys.current_tenant())
    WITH CHECK (tenant = apikeys.current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON api.items TO api_user;

-- Who am I?  GET /rpc/whoami
CREATE FUNCTION api.whoami() RETURNS json
    LANGUAGE sql STABLE
AS $$
    SELECT json_build_object('role', current_user, 'tenant', apikeys.current_tenant(),
                             'key_id', apikeys.current_key_id())
$$;
REVOKE EXECUTE ON FUNCTION api.whoami() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api.whoami() TO api_user;

-- Every valid key runs its request as api_user.  A mapping for keys of any
-- tenant like this one is accepted only because row-level security confines
-- api_user to the key's tenant (apikeys.postgrest_role_confinement('api_user')
-- is NULL); a role with more (a table without RLS, TRUNCATE, ...) must be
-- mapped for one tenant or one key.
INSERT INTO apikeys.postgrest_role_map (role_name) VALUES ('api_user');

-- Scopes per route, for every method the path serves: a method that no
-- route lists on a listed path is refused (403 apikeys.method_not_allowed).
-- Paths not listed at all need a valid key, with any scopes.
INSERT INTO apikeys.postgrest_route (method, path, required_scopes, description) VALUES
    ('GET',    '/items', '{items:read}',  'list items (and HEAD)'),
    ('POST',   '/items', '{items:write}', 'create items'),
    ('PATCH',  '/items', '{items:write}', 'update items'),
    ('PUT',    '/items', '{items:write}', 'upsert an item'),
    ('DELETE', '/items', '{items:admin}', 'delete items');
-- The OpenAPI description at / is public.
INSERT INTO apikeys.postgrest_route (method, path, allow_anonymous, description) VALUES
    ('GET', '/', true, 'OpenAPI description');

-- Two tenants with some data and a key each.
SELECT apikeys.tenant_create('acme', 'Acme Corp');
SELECT apikeys.tenant_create('globex', 'Globex');
BEGIN;
SELECT apikeys.set_tenant('acme');
INSERT INTO api.items (name) VALUES ('anvil'), ('rocket skates');
COMMIT;
BEGIN;
SELECT apikeys.set_tenant('globex');
INSERT INTO api.items (name) VALUES ('hammock');
COMMIT;

\echo 'Keys (shown once):'
SELECT 'acme' AS tenant, 'acme reader' AS name, api_key
  FROM apikeys.apikey_create('acme', 'acme reader', '{items:read}')
UNION ALL
SELECT 'globex', 'globex writer', api_key
  FROM apikeys.apikey_create('globex', 'globex writer', '{items:read,items:write}');
