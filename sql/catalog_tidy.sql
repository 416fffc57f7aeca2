--
-- catalog_tidy: what a DBA sees in psql.  Every schema, table, view, column,
-- type and function of the extension has a comment; no internal helper
-- (a function named _*) is left in schema apikeys (\df apikeys.* lists what
-- users call); schema apikeys_internal and its functions are usable by no
-- role but their owner, PUBLIC included.  Checked on a fresh install and on
-- 1.0 upgraded with ALTER EXTENSION apikeys UPDATE.  Each check lists the
-- offending objects: any row is a failure.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP ROLE IF EXISTS regress_tidy_admin;
RESET client_min_messages;
-- (the views below name schemas by name: the extension is dropped and
-- created again, and its schema apikeys_internal with it)

-- The extension's user-visible objects: its schemas (apikeys, created by
-- CREATE EXTENSION, is not a member), and its member tables, views, types,
-- functions, and the columns of its tables, views and composite types.
CREATE TEMP VIEW ext_objects AS
WITH ext AS (
    SELECT e.oid, e.extnamespace FROM pg_catalog.pg_extension e WHERE e.extname = 'apikeys'
), members AS (
    SELECT d.classid, d.objid FROM pg_catalog.pg_depend d, ext
     WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext.oid
       AND d.deptype = 'e'
)
SELECT 'schema' AS kind, n.nspname::text AS schema, n.nspname::text AS name,
       'pg_catalog.pg_namespace'::regclass AS classoid, n.oid AS objoid, 0 AS objsubid
  FROM pg_catalog.pg_namespace n
 WHERE n.oid IN (SELECT extnamespace FROM ext)
    OR n.oid IN (SELECT objid FROM members WHERE classid = 'pg_catalog.pg_namespace'::regclass)
UNION ALL
SELECT CASE c.relkind WHEN 'r' THEN 'table' ELSE 'view' END, c.relnamespace::regnamespace::text,
       c.oid::regclass::text, 'pg_catalog.pg_class'::regclass, c.oid, 0
  FROM members m JOIN pg_catalog.pg_class c ON m.classid = 'pg_catalog.pg_class'::regclass AND c.oid = m.objid
 WHERE c.relkind IN ('r', 'v')
UNION ALL
SELECT 'type', t.typnamespace::regnamespace::text, t.oid::regtype::text, 'pg_catalog.pg_type'::regclass, t.oid, 0
  FROM members m JOIN pg_catalog.pg_type t ON m.classid = 'pg_catalog.pg_type'::regclass AND t.oid = m.objid
 -- the types CREATE TYPE made: not a table's or view's row type, nor an
 -- array type made with its element (PostgreSQL 17 records those as members)
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = t.typrelid AND r.relkind <> 'c')
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.oid = t.typelem AND e.typarray = t.oid)
UNION ALL
SELECT 'function', p.pronamespace::regnamespace::text, p.oid::regprocedure::text,
       'pg_catalog.pg_proc'::regclass, p.oid, 0
  FROM members m JOIN pg_catalog.pg_proc p ON m.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = m.objid
UNION ALL
SELECT 'column', c.relnamespace::regnamespace::text,
       pg_catalog.format('%s.%I', coalesce(t.oid::regtype::text, c.oid::regclass::text), a.attname),
       'pg_catalog.pg_class'::regclass, c.oid, a.attnum
  FROM members m
  LEFT JOIN pg_catalog.pg_type t ON m.classid = 'pg_catalog.pg_type'::regclass AND t.oid = m.objid
                                AND t.typtype = 'c'
  JOIN pg_catalog.pg_class c ON c.oid = CASE WHEN t.oid IS NOT NULL THEN t.typrelid
                                            WHEN m.classid = 'pg_catalog.pg_class'::regclass THEN m.objid END
                            AND c.relkind IN ('r', 'v', 'c')
                            AND (t.oid IS NULL OR c.relkind = 'c')
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped;

-- 1. objects without a comment
CREATE TEMP VIEW uncommented AS
SELECT o.kind, o.name FROM ext_objects o
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_description d
                    WHERE d.classoid = o.classoid AND d.objoid = o.objoid AND d.objsubid = o.objsubid
                      AND btrim(d.description) <> '');

-- 2. internal helpers (_*) left in schema apikeys
CREATE TEMP VIEW helpers_in_apikeys AS
SELECT p.oid::regprocedure AS function FROM pg_catalog.pg_proc p
 WHERE p.pronamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'apikeys')
   AND p.proname LIKE '\_%';

-- 3. privileges on schema apikeys_internal and its functions held by
-- anyone but the owner (PUBLIC is grantee 0)
CREATE TEMP VIEW internal_grants AS
SELECT 'schema apikeys_internal' AS object,
       CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee, a.privilege_type
  FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a
 WHERE n.nspname = 'apikeys_internal' AND a.grantee <> n.nspowner
UNION ALL
SELECT p.oid::regprocedure::text,
       CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type
  FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
 WHERE p.pronamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'apikeys_internal')
   AND a.grantee <> p.proowner;

-- what the checks look at, so that a check cannot pass by seeing nothing
CREATE TEMP VIEW counts AS
SELECT kind, schema, count(*) AS objects FROM ext_objects GROUP BY 1, 2 ORDER BY 1, 2;

------------------------------------------------------------------------------
-- A fresh install
------------------------------------------------------------------------------
SELECT * FROM counts;
SELECT * FROM uncommented ORDER BY 1, 2;
SELECT * FROM helpers_in_apikeys ORDER BY 1::text;
SELECT * FROM internal_grants ORDER BY 1, 2;
-- the checks see what they must: a PUBLIC grant, a helper in apikeys and a
-- missing comment are each found
BEGIN;
GRANT USAGE ON SCHEMA apikeys_internal TO PUBLIC;
GRANT EXECUTE ON FUNCTION apikeys_internal._deny(text, text, uuid, text, text, text) TO PUBLIC;
ALTER FUNCTION apikeys_internal._actor() SET SCHEMA apikeys;
COMMENT ON COLUMN apikeys.keys.hint IS NULL;
COMMENT ON FUNCTION apikeys.audit_check() IS '';
SELECT * FROM uncommented ORDER BY 1, 2;
SELECT * FROM helpers_in_apikeys ORDER BY 1::text;
SELECT * FROM internal_grants ORDER BY 1, 2;
ROLLBACK;
-- the roles a tenant is managed by reach no internal helper by name
CREATE ROLE regress_tidy_admin;
SELECT apikeys.tenant_create('acme') IS NOT NULL AS created;
SELECT apikeys.grant_tenant('regress_tidy_admin', 'acme');
SET ROLE regress_tidy_admin;
\set VERBOSITY terse
SELECT apikeys_internal._acting_role();
\set VERBOSITY default
SELECT tenant AS tenants_readable FROM apikeys.tenants;
RESET ROLE;
DROP OWNED BY regress_tidy_admin;
DROP ROLE regress_tidy_admin;

------------------------------------------------------------------------------
-- 1.0 upgraded: the same answers
------------------------------------------------------------------------------
SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
CREATE EXTENSION apikeys VERSION '1.0' CASCADE;
RESET client_min_messages;
SELECT count(*) AS helpers_in_apikeys_at_1_0 FROM helpers_in_apikeys;
ALTER EXTENSION apikeys UPDATE;
SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'apikeys';
SELECT * FROM counts;
SELECT * FROM uncommented ORDER BY 1, 2;
SELECT * FROM helpers_in_apikeys ORDER BY 1::text;
SELECT * FROM internal_grants ORDER BY 1, 2;

SET client_min_messages = warning;
DROP EXTENSION apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
RESET client_min_messages;
