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
