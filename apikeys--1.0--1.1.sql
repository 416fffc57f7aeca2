/* apikeys--1.0--1.1.sql - upgrade apikeys from 1.0 to 1.1 */

\echo Use "ALTER EXTENSION apikeys UPDATE TO '1.1'" to load this file. \quit

-- Every schema change made after 1.0 is here as well as in src/sql/: after
-- this script a 1.0 database has exactly the schema (objects, definitions,
-- privileges, comments) of a fresh 1.1 install; test/t/upgrade.sh checks it.
-- The library serves both: a C function that 1.0's SQL calls keeps its
-- symbol and its contract, and a changed contract gets a new symbol
-- (apikeys_<name>_1_1), as pg_stat_statements does.

------------------------------------------------------------------------------
-- audit-v2 performance: the audit's row writer, its trigger and its labels
-- in C (src/audit_row.c), the same rows as 1.0's PL/pgSQL; _is_superuser in C
------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION apikeys._is_superuser(r name) RETURNS boolean
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'apikeys_is_superuser_1_1';
CREATE OR REPLACE FUNCTION apikeys._actor() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_actor_1_1';
CREATE OR REPLACE FUNCTION apikeys._request_id() RETURNS text
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'apikeys_request_id_1_1';
DROP FUNCTION apikeys._json_setting(text, text);
CREATE OR REPLACE FUNCTION apikeys._audit_write(p_action text, p_tenant text, p_key_id uuid, p_detail jsonb)
    RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikeys_audit_write_1_1';
CREATE OR REPLACE FUNCTION apikeys._audit_row_change() RETURNS trigger
    LANGUAGE C SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'apikeys_audit_row_change_1_1';
-- inserts of keys and secrets: one statement trigger per statement, the
-- audit rows of all its new rows written set-based (apikey_create_many)
DROP TRIGGER audit_credential ON apikeys.credential;
DROP TRIGGER audit_secret ON apikeys.secret;
CREATE TRIGGER audit_credential AFTER UPDATE OR DELETE ON apikeys.credential
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
CREATE TRIGGER audit_credential_insert AFTER INSERT ON apikeys.credential
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._audit_row_change();
CREATE TRIGGER audit_secret AFTER UPDATE OR DELETE ON apikeys.secret
    FOR EACH ROW EXECUTE FUNCTION apikeys._audit_row_change();
CREATE TRIGGER audit_secret_insert AFTER INSERT ON apikeys.secret
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION apikeys._audit_row_change();
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER audit_credential;
ALTER TABLE apikeys.credential ENABLE ALWAYS TRIGGER audit_credential_insert;
ALTER TABLE apikeys.secret ENABLE ALWAYS TRIGGER audit_secret;
ALTER TABLE apikeys.secret ENABLE ALWAYS TRIGGER audit_secret_insert;
