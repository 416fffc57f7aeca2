------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC; see the README for GRANT recipes.
------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA apikeys FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA apikeys FROM PUBLIC;
-- The bodies and helpers are reached only through the entry points and our
-- own code (by OID, or as the extension owner): no one gets EXECUTE.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA apikeys_internal FROM PUBLIC;
GRANT EXECUTE ON FUNCTION apikeys.current_tenant(), apikeys.current_key_id() TO PUBLIC;
-- The row-level policies call this for any role granted SELECT on a table;
-- it answers only about the caller.
GRANT EXECUTE ON FUNCTION apikeys.visible_tenants(text) TO PUBLIC;
-- apikey_import_many (invoker code) asks it about its caller's own query.
GRANT EXECUTE ON FUNCTION apikeys.import_query_columns(text) TO PUBLIC;

-- Default privileges (ALTER DEFAULT PRIVILEGES) of the role running this
-- script, or of the extension's owner, give other roles the objects the
-- script creates: CREATE on the schemas, TRIGGER on the tables (a trigger
-- of theirs would run as the definer code that writes them, a superuser),
-- EXECUTE on the bodies.  Roles get privileges from the grant recipes only:
-- take back what such defaults gave, from every object of the extension
-- (PUBLIC's are dealt with above).  A role that also had a recipe's grants
-- loses them (WARNING): run its recipe again.
DO $$
DECLARE
    r name;
BEGIN
    FOR r IN
        SELECT DISTINCT pg_catalog.pg_get_userbyid(a.grantee)
          FROM pg_catalog.pg_default_acl d, pg_catalog.aclexplode(d.defaclacl) a
         WHERE d.defaclrole IN (SELECT e.extowner FROM pg_catalog.pg_extension e
                                 WHERE e.extname OPERATOR(pg_catalog.=) 'apikeys'
                                UNION ALL
                                SELECT u.oid FROM pg_catalog.pg_roles u
                                 WHERE u.rolname OPERATOR(pg_catalog.=) current_user)
           AND d.defaclnamespace IN (0, 'apikeys'::regnamespace, 'apikeys_internal'::regnamespace)
           AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) d.defaclrole
    LOOP
        RAISE WARNING 'apikeys_default_privileges: revoked from role "%" what default privileges gave it on the extension''s objects', r
            USING HINT = 'If that role was granted apikeys.grant_tenant(), grant_verifier(), grant_vault() or grant_postgrest(), run it again.';
        EXECUTE format('REVOKE ALL ON SCHEMA apikeys, apikeys_internal FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA apikeys, apikeys_internal FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA apikeys, apikeys_internal FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA apikeys, apikeys_internal FROM %I', r);
    END LOOP;
END;
$$;
