--
-- security_argument_bounds: every entry point validates and bounds its
-- arguments before any message echoes them (a 100 MB tenant id must not
-- reach the error or the server log), and the grant recipes refuse NULL,
-- unknown roles and PUBLIC.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_bounds_admin, regress_bounds_nobody;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- SQLSTATE, message (cut at 120 characters) and the full error's length.
CREATE FUNCTION pg_temp.try(sql text, arg text DEFAULT NULL) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    m text; d text; h text; c text;
BEGIN
    EXECUTE sql USING arg;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT, c = PG_EXCEPTION_CONTEXT;
    RETURN SQLSTATE || ' ' || left(m, 120) || ' [' ||
           CASE WHEN length(concat(m, d, h, c)) < 1000 THEN 'short' ELSE 'LONG: ' || length(concat(m, d, h, c)) END || ']';
END
$$;

SELECT tenant FROM apikeys.tenant_create('acme');
CREATE ROLE regress_bounds_admin;
CREATE ROLE regress_bounds_nobody;
CREATE TEMP TABLE huge AS SELECT repeat('x', 10 * 1024 * 1024) AS v;

-- A 10 MB tenant id: refused by its shape, not echoed.
SELECT pg_temp.try('SELECT apikeys.tenant_update($1, display_name => ''y'')', v) AS tenant_update,
       pg_temp.try('SELECT apikeys.tenant_delete($1)', v) AS tenant_delete FROM huge;
SELECT pg_temp.try('SELECT apikeys.grant_tenant(''regress_bounds_admin'', $1)', v) AS grant_tenant,
       pg_temp.try('SELECT apikeys.revoke_tenant(''regress_bounds_admin'', $1)', v) AS revoke_tenant FROM huge;
SELECT pg_temp.try('SELECT apikeys.tenant_create($1)', v) AS tenant_create,
       pg_temp.try('SELECT apikeys.apikey_create($1, ''n'')', v) AS apikey_create FROM huge;
SELECT pg_temp.try('SELECT apikeys.revoke_tenant(''regress_bounds_admin'', ''acme'', $1)', v) AS revoke_privilege,
       pg_temp.try('SELECT apikeys.grant_tenant(''regress_bounds_admin'', ''acme'', $1)', v) AS grant_privilege FROM huge;
-- NULL and malformed tenant ids
SELECT pg_temp.try('SELECT apikeys.tenant_update(NULL, active => false)') AS update_null,
       pg_temp.try('SELECT apikeys.tenant_delete(NULL)') AS delete_null;
SELECT pg_temp.try('SELECT apikeys.tenant_update(''Acme Corp'', active => false)') AS update_bad,
       pg_temp.try('SELECT apikeys.revoke_tenant(''regress_bounds_admin'', ''a b'')') AS revoke_bad;
-- A long role name is cut to NAMEDATALEN by the type, and not found.
SELECT pg_temp.try('SELECT apikeys.grant_tenant($1, ''acme'')', v) AS grant_role FROM huge;

------------------------------------------------------------------------------
-- grant_verifier: NULL, unknown roles and PUBLIC are refused with a code
------------------------------------------------------------------------------
SELECT pg_temp.try('SELECT apikeys.grant_verifier(NULL)') AS null_role;
SELECT pg_temp.try('SELECT apikeys.grant_verifier(''regress_no_such_role'')') AS unknown_role;
SELECT pg_temp.try('SELECT apikeys.grant_verifier(''public'')') AS public_lower;
SELECT pg_temp.try('SELECT apikeys.grant_verifier(''PUBLIC'')') AS public_upper;
SELECT pg_temp.try('SELECT apikeys.grant_tenant(''public'', ''acme'')') AS grant_tenant_public;
-- after all that, a role with no grant still cannot verify
SELECT has_function_privilege('regress_bounds_nobody', 'apikeys.apikey_verify(text, text[], inet)', 'EXECUTE') AS nobody_verifies,
       has_schema_privilege('regress_bounds_nobody', 'apikeys', 'USAGE') AS nobody_uses_schema;
SELECT apikeys.grant_verifier('regress_bounds_admin');
SELECT has_function_privilege('regress_bounds_admin', 'apikeys.apikey_verify(text, text[], inet)', 'EXECUTE') AS admin_verifies;

------------------------------------------------------------------------------
-- apikey_set_policy: a two-dimensional allowlist is invalid_allowed_ips
------------------------------------------------------------------------------
SELECT key_id AS k FROM apikeys.apikey_create('acme', 'k') \gset
SELECT pg_temp.try(format('SELECT apikeys.apikey_set_policy(%L, allowed_ips => ''{{10.0.0.0/8},{11.0.0.0/8}}'')', :'k')) AS two_dims;
SELECT pg_temp.try(format('SELECT apikeys.apikey_set_policy(%L, allowed_ips => ''{{10.0.0.0/8,11.0.0.0/8}}'')', :'k')) AS one_row_matrix;
SELECT pg_temp.try(format('SELECT apikeys.apikey_set_policy(%L, allowed_ips => ''{10.0.0.0/8,NULL}'')', :'k')) AS with_null;
SELECT pg_temp.try(format('SELECT apikeys.apikey_set_policy(%L, allowed_ips => ''{10.0.0.0/8,11.0.0.0/8}'')', :'k')) AS fine;
SELECT allowed_ips FROM apikeys.keys WHERE key_id = :'k';

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_bounds_admin, regress_bounds_nobody;
DROP ROLE regress_bounds_admin, regress_bounds_nobody;
