--
-- core_tenant: tenant_create, tenant_update, tenant_delete, and what a
-- tenant's state does to its keys.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Run a statement; return 'ok' or its SQLSTATE and message (uuids masked).
CREATE FUNCTION pg_temp.err(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;

------------------------------------------------------------------------------
-- tenant_create
------------------------------------------------------------------------------
SELECT tenant, display_name, active, created_at = now() AS created_now, updated_at = now() AS updated_now
  FROM apikeys.tenant_create('acme');
SELECT tenant, display_name, active FROM apikeys.tenant_create('globex', 'Globex Corporation');
SELECT tenant, display_name, active FROM apikeys.tenant_create('a');
SELECT tenant, display_name, active FROM apikeys.tenant_create('0-tenant_with.all-chars');
SELECT length(tenant) FROM apikeys.tenant_create(repeat('t', 63));
SELECT length(display_name) FROM apikeys.tenant_create('long-display', repeat('D', 200));
SELECT tenant, display_name FROM apikeys.tenant_create('unicode', 'Société Générale 🏦');
-- The result is an apikeys.tenant row.
SELECT pg_typeof(apikeys.tenant_create('typed'));
-- invalid_tenant
SELECT t AS tenant, pg_temp.err(format('SELECT apikeys.tenant_create(%L)', t)) AS result
  FROM unnest(ARRAY[NULL, '', 'Acme', 'ACME', '_acme', '-acme', '.acme', 'ac me', 'acme/x', 'acme!',
                    'acmé', 'acme' || chr(10), repeat('a', 64)]) t;
-- invalid_display_name
SELECT pg_temp.err('SELECT apikeys.tenant_create(''named'', '''')') AS empty_display_name,
       pg_temp.err(format('SELECT apikeys.tenant_create(%L, %L)', 'named', repeat('D', 201))) AS display_name_201;
-- tenant_exists
SELECT pg_temp.err('SELECT apikeys.tenant_create(''acme'')') AS duplicate,
       pg_temp.err('SELECT apikeys.tenant_create(''acme'', ''Other Name'')') AS duplicate_other_name;
SELECT display_name FROM apikeys.tenant WHERE tenant = 'acme';
-- As psql shows them, with hints.
SELECT apikeys.tenant_create('acme');
SELECT apikeys.tenant_create('Bad Tenant');
SELECT apikeys.tenant_create(NULL);
SELECT apikeys.tenant_create('named', '');
SELECT tenant FROM apikeys.tenant ORDER BY tenant;

------------------------------------------------------------------------------
-- tenant_update
------------------------------------------------------------------------------
SELECT tenant, display_name, active FROM apikeys.tenant_update('acme', display_name => 'ACME Inc.');
SELECT tenant, display_name, active FROM apikeys.tenant_update('acme');
SELECT tenant, display_name, active FROM apikeys.tenant_update('acme', NULL, NULL);
-- Deactivation: keys verify as tenant_inactive; reactivation restores them.
SELECT key_id AS k1, api_key AS key1 FROM apikeys.apikey_create('acme', 'one', scopes => '{read}') \gset
SELECT key_id AS k2, api_key AS key2 FROM apikeys.apikey_create('acme', 'two') \gset
SELECT api_key AS gkey FROM apikeys.apikey_create('globex', 'globex') \gset
SELECT tenant, display_name, active, updated_at = now() AS updated_now
  FROM apikeys.tenant_update('acme', active => false);
SELECT (apikeys.apikey_verify(:'key1')).code AS key1, (apikeys.apikey_verify(:'key2')).code AS key2,
       (apikeys.apikey_verify(:'key1', '{read}')).code AS key1_scoped,
       (apikeys.apikey_verify(:'gkey')).code AS other_tenant;
SELECT valid, code, tenant, name FROM apikeys.apikey_verify(:'key1');
-- Deactivating twice is fine.
SELECT active FROM apikeys.tenant_update('acme', active => false);
-- No new keys, rotations, enables or updates while inactive.
SELECT pg_temp.err('SELECT apikeys.apikey_create(''acme'', ''three'')') AS create_key,
       pg_temp.err(format('SELECT apikeys.apikey_rotate(%L)', :'k1')) AS rotate_key,
       pg_temp.err(format('SELECT apikeys.apikey_enable(%L)', :'k1')) AS enable_key,
       pg_temp.err(format('SELECT apikeys.apikey_update(%L, name => %L)', :'k1', 'x')) AS update_key;
-- Revoke, disable and delete still work: a DBA can clean up.
SELECT apikeys.apikey_disable(:'k2');
SELECT apikeys.apikey_revoke(:'k2');
SELECT (apikeys.apikey_verify(:'key2')).code AS revoked_while_inactive;
-- Renaming an inactive tenant leaves it inactive.
SELECT tenant, display_name, active FROM apikeys.tenant_update('acme', display_name => 'ACME (suspended)');
SELECT tenant, display_name, active FROM apikeys.tenant_update('acme', active => true);
SELECT (apikeys.apikey_verify(:'key1')).code AS key1, (apikeys.apikey_verify(:'key2')).code AS key2,
       (apikeys.apikey_verify(:'key1', '{read}')).code AS key1_scoped;
-- Transactional: deactivation rolled back never happened.
BEGIN;
SELECT active FROM apikeys.tenant_update('acme', active => false);
SELECT (apikeys.apikey_verify(:'key1')).code AS inside;
ROLLBACK;
SELECT (apikeys.apikey_verify(:'key1')).code AS after_rollback;
-- tenant_not_found, invalid_display_name
SELECT pg_temp.err('SELECT apikeys.tenant_update(''nobody'', active => false)') AS unknown,
       pg_temp.err('SELECT apikeys.tenant_update(NULL, active => false)') AS null_tenant,
       pg_temp.err('SELECT apikeys.tenant_update(''Acme'', active => false)') AS wrong_case;
SELECT pg_temp.err('SELECT apikeys.tenant_update(''acme'', display_name => '''')') AS empty_display_name,
       pg_temp.err(format('SELECT apikeys.tenant_update(%L, %L)', 'acme', repeat('D', 201))) AS display_name_201,
       pg_temp.err(format('SELECT apikeys.tenant_update(%L, %L)', 'nobody', repeat('D', 201))) AS both_wrong;
SELECT display_name, active FROM apikeys.tenant WHERE tenant = 'acme';
SELECT apikeys.tenant_update('nobody', active => true);

------------------------------------------------------------------------------
-- tenant_delete
------------------------------------------------------------------------------
-- tenant_has_keys
SELECT pg_temp.err('SELECT apikeys.tenant_delete(''acme'')') AS has_keys,
       pg_temp.err('SELECT apikeys.tenant_delete(''acme'', false)') AS has_keys_no_force,
       pg_temp.err('SELECT apikeys.tenant_delete(''acme'', NULL)') AS has_keys_null_force;
SELECT count(*) AS acme_keys FROM apikeys.credential WHERE tenant = 'acme';
SELECT apikeys.tenant_delete('acme');
-- tenant_not_found
SELECT pg_temp.err('SELECT apikeys.tenant_delete(''nobody'')') AS unknown,
       pg_temp.err('SELECT apikeys.tenant_delete(''nobody'', true)') AS unknown_forced,
       pg_temp.err('SELECT apikeys.tenant_delete(NULL)') AS null_tenant;
SELECT apikeys.tenant_delete('nobody');
-- A tenant without keys goes without force.
SELECT apikeys.tenant_delete('a');
SELECT count(*) AS a_exists FROM apikeys.tenant WHERE tenant = 'a';
-- A tenant whose keys were all deleted goes too.
SELECT key_id AS gk FROM apikeys.keys WHERE tenant = 'globex' \gset
SELECT apikeys.apikey_delete(:'gk');
SELECT apikeys.tenant_delete('globex');
SELECT (apikeys.apikey_verify(:'gkey')).code AS globex_key;
-- force => true deletes the keys and their secrets with the tenant.
SELECT api_key AS typed_key FROM apikeys.apikey_create('typed', 'bystander') \gset
SELECT api_key AS key1_rotated FROM apikeys.apikey_rotate(:'k1', interval '1 hour') \gset
SELECT apikeys.tenant_delete('acme', force => true);
SELECT (apikeys.apikey_verify(:'key1')).code AS key1, (apikeys.apikey_verify(:'key1_rotated')).code AS key1_rotated,
       (apikeys.apikey_verify(:'key2')).code AS key2;
SELECT (SELECT count(*) FROM apikeys.tenant WHERE tenant = 'acme') AS tenants,
       (SELECT count(*) FROM apikeys.credential WHERE tenant = 'acme') AS credentials,
       (SELECT count(*) FROM apikeys.secret s JOIN apikeys.credential c USING (key_id)
         WHERE c.tenant = 'acme') AS secrets;
-- The name can be used again, for a new tenant with no keys.
SELECT tenant, display_name, active FROM apikeys.tenant_create('acme');
SELECT count(*) AS keys FROM apikeys.keys WHERE tenant = 'acme';
-- Other tenants and their keys are untouched by all this.
SELECT tenant FROM apikeys.tenant ORDER BY tenant;
SELECT (apikeys.apikey_verify(:'typed_key')).code AS other_tenant_key,
       (SELECT count(*) FROM apikeys.secret) AS secrets;
