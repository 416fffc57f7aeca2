--
-- scope_registry: per-tenant and global scope registries (scope_define,
-- scope_drop, apikeys.scopes), the check of new scope lists against them
-- (apikey_create, apikey_create_many, apikey_update), wildcard scopes
-- ("read:*") in apikey_verify, and what a registry change does to keys.
--
-- Attacks (globex's admin, hostile): define or drop acme's scopes or the
-- global registry's, read acme's registry through the view, the table, an
-- error's detail or the internal check, or through its own SECURITY DEFINER
-- code run by a superuser.  Each must fail the right way (SQLSTATE and
-- message), reveal nothing of acme's registry, and change nothing.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
DROP SCHEMA IF EXISTS regress_sr_globex CASCADE;
DROP ROLE IF EXISTS regress_sr_acme, regress_sr_globex, regress_sr_global, regress_sr_auditor;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- SQLSTATE, message and detail of a statement's error, or 'ok'
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ' ' || SQLERRM || coalesce(' | ' || nullif(d, ''), '');
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.try(text) TO PUBLIC;
CREATE FUNCTION pg_temp.code(k text, need text[]) RETURNS text LANGUAGE sql AS $$
    SELECT code FROM apikeys.apikey_verify(k, need)
$$;

SELECT tenant FROM apikeys.tenant_create('acme');
SELECT tenant FROM apikeys.tenant_create('globex');
SELECT tenant FROM apikeys.tenant_create('newco');
CREATE ROLE regress_sr_acme;
CREATE ROLE regress_sr_globex;
CREATE ROLE regress_sr_global;
CREATE ROLE regress_sr_auditor;
SELECT apikeys.grant_tenant('regress_sr_acme', 'acme');
SELECT apikeys.grant_tenant('regress_sr_globex', 'globex');
SELECT apikeys.grant_tenant('regress_sr_global', NULL);
SELECT apikeys.grant_tenant('regress_sr_auditor', 'acme', 'audit');

------------------------------------------------------------------------------
-- 1. No registry anywhere: every well-formed scope goes (1.0's behaviour),
--    and wildcards ("read:*") are well-formed.
------------------------------------------------------------------------------
SELECT key_id AS legacy_key, api_key AS legacy_secret
  FROM apikeys.apikey_create('acme', 'legacy', '{legacy,write:buildings}') \gset
SELECT scopes FROM apikeys.keys WHERE key_id = :'legacy_key';
SELECT s, pg_temp.try(format('SELECT apikeys.apikey_create(%L, %L, %L)', 'newco', 'k', s)) AS result
  FROM unnest(ARRAY['{read:*}', '{a:b:*}', '{read*}', '{*}', '{read:*:x}', '{read:**}', '{:*}', '{a*:b}']) s;

------------------------------------------------------------------------------
-- 2. scope_define: arguments, tenants, upserts, the view, the audit
------------------------------------------------------------------------------
SELECT s, pg_temp.try(format('SELECT apikeys.scope_define(%L, %L)', 'acme', s)) AS result
  FROM unnest(ARRAY[NULL, '', 'bad scope', 'read*', '*', 'read:*:x', ':read', repeat('x', 65)]) s;
SELECT pg_temp.try($$SELECT apikeys.scope_define('acme', 'ok', repeat('d', 2001))$$) AS long_description;
SELECT pg_temp.try($$SELECT apikeys.scope_define('Acme!', 'ok')$$) AS bad_tenant;
SELECT pg_temp.try($$SELECT apikeys.scope_define('nosuch', 'ok')$$) AS unknown_tenant;
SELECT count(*) AS entries_after_errors FROM apikeys.scope;

SELECT tenant, scope, description, created_by = current_user AS by_me
  FROM apikeys.scope_define('acme', 'read:buildings', 'Read the building register');
SELECT scope FROM apikeys.scope_define('acme', 'write:buildings', 'Change buildings');
-- redefining with the same description changes nothing and audits nothing;
-- a new description replaces it (scope_updated)
SELECT count(*) AS audit_rows FROM apikeys.audit WHERE chain = 'acme' \gset
SELECT description FROM apikeys.scope_define('acme', 'read:buildings', 'Read the building register');
SELECT count(*) - :audit_rows AS new_audit_rows FROM apikeys.audit WHERE chain = 'acme';
SELECT description FROM apikeys.scope_define('acme', 'read:buildings', 'Read buildings');
SELECT action, detail -> 'new' ->> 'scope' AS new_scope, detail -> 'changed' -> 'description' AS changed
  FROM apikeys.audit WHERE chain = 'acme' AND action LIKE 'scope\_%' ORDER BY audit_id;
SELECT tenant, scope, description FROM apikeys.scopes ORDER BY tenant, scope;

------------------------------------------------------------------------------
-- 3. A tenant registry: unknown scopes are refused with the valid ones listed
------------------------------------------------------------------------------
SELECT pg_temp.try($$SELECT apikeys.apikey_create('acme', 'k', '{read:buildings,delete:buildings}')$$) AS unknown;
SELECT pg_temp.try($$SELECT apikeys.apikey_create('acme', 'k', '{zzz,aaa}')$$) AS first_unknown_sorted;
\set VERBOSITY default
SELECT apikeys.apikey_create('acme', 'k', '{admin}');
SELECT key_id AS reader_key, api_key AS reader_secret
  FROM apikeys.apikey_create('acme', 'reader', '{read:buildings}') \gset
SELECT pg_temp.try($$SELECT apikeys.apikey_create('acme', 'no scopes')$$) AS no_scopes;
-- keys made before the registry keep their scopes and keep verifying
SELECT pg_temp.code(:'legacy_secret', '{legacy}') AS legacy_verifies;
-- another tenant is not restricted by acme's registry
SELECT pg_temp.try($$SELECT apikeys.apikey_create('globex', 'k', '{anything}')$$) AS globex_free;

------------------------------------------------------------------------------
-- 4. The global registry applies to every tenant: newco (no entries of its
--    own) is now restricted to it; acme's valid scopes are its own and the
--    global ones.  Only global admins define global scopes.
------------------------------------------------------------------------------
SET ROLE regress_sr_global;
SELECT tenant IS NULL AS global, scope FROM apikeys.scope_define(NULL, 'profile', 'Read the caller''s profile');
RESET ROLE;
SELECT pg_temp.try($$SELECT apikeys.apikey_create('newco', 'k', '{orders}')$$) AS newco_restricted;
SELECT pg_temp.try($$SELECT apikeys.apikey_create('newco', 'k', '{profile}')$$) AS newco_global_scope;
SELECT pg_temp.try($$SELECT apikeys.apikey_create('acme', 'k', '{profile,read:buildings}')$$) AS acme_union;
SELECT pg_temp.try($$SELECT apikeys.apikey_create('acme', 'k', '{orders}')$$) AS acme_unknown;
SELECT pg_temp.try($$SELECT apikeys.apikey_create('globex', 'k', '{anything}')$$) AS globex_now_restricted;
-- global entries are audited in the chain of no tenant
SELECT chain, tenant, action FROM apikeys.audit WHERE action LIKE 'scope\_%' AND chain = '';

------------------------------------------------------------------------------
-- 5. apikey_create_many: one bad scope refuses the whole batch
------------------------------------------------------------------------------
SELECT count(*) AS keys FROM apikeys.credential \gset
SELECT count(*) AS audit_rows FROM apikeys.audit \gset
SELECT pg_temp.try($$SELECT * FROM apikeys.apikey_create_many('acme', ARRAY['a', 'b', 'c'], '{read:buildings,bogus}')$$) AS batch;
SELECT count(*) - :keys AS keys_created, (SELECT count(*) FROM apikeys.audit) - :audit_rows AS audit_rows_written
  FROM apikeys.credential;
SELECT count(*) AS made FROM apikeys.apikey_create_many('acme', ARRAY['a', 'b'], '{read:buildings,profile}');

------------------------------------------------------------------------------
-- 5b. ATTACK: imports obey the registry too.  Before, apikey_import and
--     apikey_import_rows stored any well-formed scope ("admin",
--     "superpower") in a tenant with a registry: a way around it for
--     whoever may import.  Now the row that holds an unknown scope is
--     named, with the registry's scopes, and nothing of the batch is kept.
------------------------------------------------------------------------------
SELECT (apikeys.key_format_register('acme', 'old', 'old_', 36, 'hex')).name AS registered;
SELECT count(*) AS keys FROM apikeys.credential \gset
SELECT pg_temp.try(format($$SELECT apikeys.apikey_import('acme', 'old', %L, 'imp', ARRAY['admin', 'superpower'])$$,
                          encode(sha256('old_' || repeat('1', 32)::bytea), 'hex'))) AS import_unknown;
SELECT pg_temp.try(format($$SELECT apikeys.apikey_import_rows('acme', 'old', ARRAY[
           ROW(%L, 'one', '{read:buildings}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'a-1', NULL),
           ROW(%L, 'two', '{profile,bogus}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'a-2', NULL)]::apikeys.legacy_key[])$$,
                          encode(sha256('old_' || repeat('2', 32)::bytea), 'hex'),
                          encode(sha256('old_' || repeat('3', 32)::bytea), 'hex'))) AS batch_names_row;
SELECT count(*) - :keys AS keys_kept FROM apikeys.credential;
-- registered scopes (the tenant's and the global ones) import
SELECT apikeys.apikey_import('acme', 'old', encode(sha256('old_' || repeat('4', 32)::bytea), 'hex'),
                             'imported reader', ARRAY['read:buildings', 'profile']) IS NOT NULL AS imported;
SELECT pg_temp.code('old_' || repeat('4', 32), '{read:buildings}') AS imported_verifies;

------------------------------------------------------------------------------
-- 6. apikey_update: the scopes a key gains must be registered; those it
--    keeps need not be (legacy holds "legacy", registered nowhere)
------------------------------------------------------------------------------
SELECT pg_temp.try(format('SELECT apikeys.apikey_update(%L, scopes => %L)', :'legacy_key', '{legacy,bogus}')) AS gain_unknown;
SELECT pg_temp.try(format('SELECT apikeys.apikey_update(%L, scopes => %L)', :'legacy_key', '{legacy,read:buildings,write:buildings}')) AS keep_and_gain;
SELECT scopes FROM apikeys.keys WHERE key_id = :'legacy_key';
SELECT pg_temp.try(format('SELECT apikeys.apikey_update(%L, name => %L)', :'legacy_key', 'renamed')) AS scopes_untouched;
SELECT pg_temp.try(format('SELECT apikeys.apikey_update(%L, scopes => %L)', :'legacy_key', '{write:buildings}')) AS drop_some;
SELECT pg_temp.try(format('SELECT apikeys.apikey_update(%L, scopes => %L)', :'legacy_key', '{write:buildings,legacy}')) AS regain_dropped;
SELECT scopes FROM apikeys.keys WHERE key_id = :'legacy_key';

------------------------------------------------------------------------------
-- 7. The error lists at most 20 valid scopes, and says so
------------------------------------------------------------------------------
SELECT tenant FROM apikeys.tenant_create('bigco');
SELECT count(*) FROM generate_series(1, 25) i, apikeys.scope_define('bigco', format('s%s', lpad(i::text, 2, '0')));
SELECT pg_temp.try($$SELECT apikeys.apikey_create('bigco', 'k', '{bogus}')$$) AS capped;
-- a registry holds at most 1000 scopes; redefining one of them still works
SELECT tenant FROM apikeys.tenant_create('fullco');
SELECT count(*) FROM generate_series(1, 1000) i, apikeys.scope_define('fullco', format('s%s', i));
SELECT pg_temp.try($$SELECT apikeys.scope_define('fullco', 's1001')$$) AS full_registry;
SELECT description FROM apikeys.scope_define('fullco', 's1000', 'still possible');
SELECT count(*) AS fullco_entries FROM apikeys.scopes WHERE tenant = 'fullco';

------------------------------------------------------------------------------
-- 8. Wildcards: a key's "read:*" covers every required "read:..." scope;
--    registry entries match literally
------------------------------------------------------------------------------
SELECT pg_temp.try($$SELECT apikeys.apikey_create('acme', 'k', '{read:*}')$$) AS wildcard_unregistered;
SELECT scope FROM apikeys.scope_define('acme', 'read:*', 'Read everything');
SELECT pg_temp.try($$SELECT apikeys.apikey_create('acme', 'k', '{read:floors}')$$) AS not_covered_by_entry;
SELECT key_id AS wild_key, api_key AS wild_secret
  FROM apikeys.apikey_create('acme', 'wild', '{read:*,write:buildings}') \gset
SELECT need, pg_temp.code(:'wild_secret', need::text[]) AS code
  FROM unnest(ARRAY['{read:buildings}', '{read:floors:eu}', '{read:*}', '{read}', '{read:}', '{reader:x}',
                    '{write:buildings}', '{write:floors}', '{read:x,write:buildings}', '{read:x,write:x}', '{}']) need;
-- an exact key scope still matches exactly, and "read:buildings" is no wildcard
SELECT pg_temp.code(:'reader_secret', '{read:buildings}') AS exact, pg_temp.code(:'reader_secret', '{read:floors}') AS other;

------------------------------------------------------------------------------
-- 9. scope_drop: refused while keys it covers hold the scope (revoked keys
--    do not count), unless force; a dropped scope keeps verifying
------------------------------------------------------------------------------
SELECT pg_temp.try($$SELECT apikeys.scope_drop('acme', 'write:buildings')$$) AS in_use;
SELECT count(*) AS still_defined FROM apikeys.scopes WHERE tenant = 'acme' AND scope = 'write:buildings';
SELECT pg_temp.try($$SELECT apikeys.scope_drop('acme', 'nosuch')$$) AS not_found;
SELECT pg_temp.try($$SELECT apikeys.scope_drop('acme', 'bad scope')$$) AS bad_scope;
SELECT pg_temp.try($$SELECT apikeys.scope_drop(NULL, 'read:buildings')$$) AS not_global;
SELECT apikeys.apikey_revoke(:'wild_key');
SELECT pg_temp.try($$SELECT apikeys.scope_drop('acme', 'read:*')$$) AS only_revoked_hold_it;
SELECT pg_temp.try($$SELECT apikeys.scope_drop('acme', 'write:buildings', force => true)$$) AS forced;
SELECT pg_temp.code(:'legacy_secret', '{write:buildings}') AS dropped_scope_verifies;
SELECT action, detail -> 'old' ->> 'scope' AS scope FROM apikeys.audit
 WHERE chain = 'acme' AND action = 'scope_dropped' ORDER BY audit_id;
-- a tenant entry that the global registry also lists: no key loses it
SELECT scope FROM apikeys.scope_define('acme', 'profile');
SELECT pg_temp.try($$SELECT apikeys.scope_drop('acme', 'profile')$$) AS covered_by_global;
-- a global entry: counts the keys of tenants without an entry of their own
SELECT scope FROM apikeys.scope_define('acme', 'profile');
SELECT count(*) AS created FROM apikeys.apikey_create('newco', 'p', '{profile}');
SELECT pg_temp.try($$SELECT apikeys.scope_drop(NULL, 'profile')$$) AS global_in_use;
SELECT count(apikeys.apikey_delete(key_id)) AS deleted FROM apikeys.keys WHERE tenant = 'newco' AND 'profile' = ANY (scopes);
SELECT pg_temp.try($$SELECT apikeys.scope_drop(NULL, 'profile')$$) AS global_dropped;
SELECT pg_temp.try($$SELECT apikeys.apikey_create('newco', 'k', '{orders}')$$) AS newco_unrestricted_again;

------------------------------------------------------------------------------
-- 10. Attacks by globex's admin on acme's registry and the global one
------------------------------------------------------------------------------
SELECT scope FROM apikeys.scope_define('globex', 'globex:own');
SELECT scope FROM apikeys.scope_define(NULL, 'global:one');
CREATE TEMP TABLE before AS SELECT * FROM apikeys.scope;
SELECT count(*) AS audit_rows FROM apikeys.audit \gset
SELECT key_id AS acme_reader, gen_random_uuid() AS unknown_id FROM apikeys.keys WHERE name = 'reader' \gset
CREATE SCHEMA regress_sr_globex AUTHORIZATION regress_sr_globex;
SET ROLE regress_sr_globex;
-- 10a. define or drop another tenant's scopes: refused as for any other
--      tenant, whether or not the scope exists
SELECT pg_temp.try($$SELECT apikeys.scope_define('acme', 'evil', 'backdoor')$$) AS define_acme;
SELECT pg_temp.try($$SELECT apikeys.scope_drop('acme', 'read:buildings', force => true)$$) AS drop_acme_existing;
SELECT pg_temp.try($$SELECT apikeys.scope_drop('acme', 'nosuch')$$) AS drop_acme_missing;
-- 10b. the global registry is for global admins
SELECT pg_temp.try($$SELECT apikeys.scope_define(NULL, 'evil')$$) AS define_global;
SELECT pg_temp.try($$SELECT apikeys.scope_drop(NULL, 'global:one', force => true)$$) AS drop_global;
-- 10c. read acme's registry: the view shows globex's and the global entries
--      only; the table, the internal check and the reader's body are closed
SELECT tenant, scope FROM apikeys.scopes ORDER BY tenant, scope;
SELECT pg_temp.try($$SELECT * FROM apikeys.scope$$) AS base_table;
SELECT pg_temp.try($$SELECT apikeys_internal.check_scopes('acme', '{bogus}')$$) AS internal_check;
SELECT pg_temp.try($$SELECT * FROM apikeys_internal.read_scopes()$$) AS internal_reader;
-- 10d. make acme's registry list itself in an invalid_scope error: refused
--      before any scope is looked at
SELECT pg_temp.try($$SELECT apikeys.apikey_create('acme', 'k', '{bogus}')$$) AS create_acme;
SELECT pg_temp.try($$SELECT * FROM apikeys.apikey_create_many('acme', ARRAY['k'], '{bogus}')$$) AS create_many_acme;
-- (the same error as for a key that does not exist)
SELECT replace(pg_temp.try(format('SELECT apikeys.apikey_update(%L, scopes => %L)', :'acme_reader', '{bogus}')),
               :'acme_reader', '<id>') AS update_acme,
       replace(pg_temp.try(format('SELECT apikeys.apikey_update(%L, scopes => %L)', :'unknown_id', '{bogus}')),
               :'unknown_id', '<id>') AS update_unknown;
-- 10e. its own SECURITY DEFINER code, run by a superuser, acts as globex's admin
CREATE FUNCTION regress_sr_globex.hook() RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
BEGIN
    PERFORM apikeys.scope_define('acme', 'evil');
    RETURN 'DEFINED AN ACME SCOPE';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
RESET ROLE;
SELECT regress_sr_globex.hook() AS definer_hook;
-- nothing changed, nothing audited
SELECT (SELECT count(*) FROM (SELECT * FROM apikeys.scope EXCEPT SELECT * FROM before) x) AS added,
       (SELECT count(*) FROM (SELECT * FROM before EXCEPT SELECT * FROM apikeys.scope) x) AS removed,
       (SELECT count(*) FROM apikeys.audit) - :audit_rows AS audit_rows_written;
-- acme's own admin and auditor: acme's and the global entries
SET ROLE regress_sr_acme;
SELECT tenant, scope FROM apikeys.scopes ORDER BY tenant, scope;
SELECT pg_temp.try($$SELECT apikeys.scope_define('acme', 'read:floors')$$) AS acme_admin_defines;
SELECT pg_temp.try($$SELECT apikeys.scope_define('globex', 'evil')$$) AS acme_admin_on_globex;
RESET ROLE;
SET ROLE regress_sr_auditor;
SELECT count(*) AS auditor_sees, count(*) FILTER (WHERE tenant = 'globex') AS of_globex FROM apikeys.scopes;
SELECT pg_temp.try($$SELECT apikeys.scope_define('acme', 'x')$$) AS auditor_defines;
RESET ROLE;

------------------------------------------------------------------------------
-- 11. Deleting a tenant deletes its registry (audited); the chains check
------------------------------------------------------------------------------
SELECT apikeys.tenant_delete('bigco');
SELECT count(*) AS bigco_entries FROM apikeys.scope WHERE tenant = 'bigco';
SELECT count(*) AS bigco_drops FROM apikeys.audit WHERE chain = 'bigco' AND action = 'scope_dropped';
SELECT pg_temp.try('TRUNCATE apikeys.scope') AS truncate;
SELECT ok, problem FROM apikeys.audit_check();

DROP SCHEMA regress_sr_globex CASCADE;
DROP OWNED BY regress_sr_acme, regress_sr_globex, regress_sr_global, regress_sr_auditor;
DROP ROLE regress_sr_acme, regress_sr_globex, regress_sr_global, regress_sr_auditor;
