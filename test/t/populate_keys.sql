-- test/t/populate_keys.sql - tenants, keys in every state, limits in use and
-- vault secrets, made with the functions of every released version (1.0 on);
-- the plaintexts go to public.plain_keys, and test/t/populate_keys.verdicts
-- says what each verifies as.  Used by test/t/upgrade.sh and
-- test/t/pg_upgrade.sh after CREATE EXTENSION apikeys.
\set ON_ERROR_STOP 1
SELECT apikeys.tenant_create('acme', 'Acme Corp');
SELECT apikeys.tenant_create('globex', 'Globex');
SELECT apikeys.tenant_create('initech');
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'upgrade_acme_admin') THEN
        CREATE ROLE upgrade_acme_admin;
    END IF;
END $$;
SELECT apikeys.grant_tenant('upgrade_acme_admin', 'acme');

CREATE TABLE public.plain_keys (label text PRIMARY KEY, api_key text NOT NULL, key_id uuid, addr inet);
CREATE FUNCTION public.mk(label text, tenant text, scopes text[] DEFAULT '{}', expires timestamptz DEFAULT NULL)
RETURNS uuid LANGUAGE sql AS $$
    INSERT INTO public.plain_keys
    SELECT label, k.api_key, k.key_id FROM apikeys.apikey_create(tenant, label, scopes, expires) k
    RETURNING key_id
$$;
CREATE FUNCTION public.rot(label text, newlabel text, grace interval)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO public.plain_keys
    SELECT newlabel, r.api_key, r.key_id
      FROM apikeys.apikey_rotate((SELECT key_id FROM public.plain_keys p WHERE p.label = rot.label), grace) r
$$;
CREATE FUNCTION public.id(label text) RETURNS uuid LANGUAGE sql AS
    $$ SELECT key_id FROM public.plain_keys p WHERE p.label = id.label $$;

SELECT public.mk('acme_plain', 'acme');
SELECT public.mk('acme_scoped', 'acme', ARRAY['read', 'write'], now() + interval '30 days');
SELECT public.mk('acme_revoked', 'acme');
SELECT public.mk('acme_disabled', 'acme');
SELECT public.mk('acme_deleted', 'acme');
SELECT public.mk('acme_ip', 'acme');
SELECT public.mk('acme_rate', 'acme');
SELECT public.mk('acme_cap', 'acme');
SELECT public.mk('globex_grace', 'globex', ARRAY['billing']);
SELECT public.rot('globex_grace', 'globex_grace_v2', '1 hour');
SELECT public.mk('globex_nograce', 'globex');
SELECT public.rot('globex_nograce', 'globex_nograce_v2', '0');
SELECT public.mk('initech_inactive', 'initech');
SELECT apikeys.apikey_revoke(public.id('acme_revoked'), 'leaked');
SELECT apikeys.apikey_disable(public.id('acme_disabled'));
SELECT apikeys.apikey_delete(public.id('acme_deleted'));
SELECT apikeys.tenant_update('initech', active => false);
SELECT apikeys.apikey_set_policy(public.id('acme_ip'), allowed_ips => '{10.0.0.0/8}');
SELECT apikeys.apikey_set_policy(public.id('acme_rate'), rate_limit => 2, rate_window => '1 hour');
SELECT apikeys.apikey_set_policy(public.id('acme_cap'), usage_limit => 2, usage_period => '30 days');
INSERT INTO public.plain_keys VALUES ('garbage', 'ak_not_a_key', NULL);
-- the IP-restricted key is also checked from outside its network
INSERT INTO public.plain_keys SELECT 'acme_ip_outside', api_key, key_id, '192.0.2.1' FROM public.plain_keys WHERE label = 'acme_ip';
UPDATE public.plain_keys SET addr = '10.1.2.3' WHERE label = 'acme_ip';

CREATE TABLE public.plain_vault (id uuid PRIMARY KEY, secret text NOT NULL);
INSERT INTO public.plain_vault
SELECT apikeys.vault_add(t, s, l, p), p
  FROM (VALUES ('acme', 'openai', 'prod', 'sk-proj-AAAAaaaa1111bbbb2222cccc3333'),
               ('globex', 'generic', 'webhook', 'whsec-0123456789')) v(t, s, l, p);

-- use the limited keys up: two successes each, then refusals
DO $$
DECLARE k record;
BEGIN
    FOR k IN SELECT api_key FROM public.plain_keys p, generate_series(1, 2)
              WHERE p.label IN ('acme_rate', 'acme_cap') LOOP
        IF NOT (apikeys.apikey_verify(k.api_key)).valid THEN
            RAISE 'a limited key was refused before its limit';
        END IF;
    END LOOP;
END $$;
