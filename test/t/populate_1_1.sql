-- test/t/populate_1_1.sql - what 1.1 added, in use: imported legacy keys
-- (a tenant's tk_ format, SHA-256 of the whole key; a global KeyHippo-like
-- format, SHA-512 of the part after a random base64 head; one imported key
-- revoked), a scope registry, named limits, credits (two spent of ten, all spent, topped up, a monthly refill).  After populate_keys.sql; the
-- verdicts are in test/t/populate_1_1.verdicts.  Used by
-- test/t/upgrade.sh (after ALTER EXTENSION UPDATE) and test/t/pg_upgrade.sh.
\set ON_ERROR_STOP 1
SELECT apikeys.key_format_register('acme', 'tk', 'tk_', 67, 'hex') \g /dev/null
SELECT apikeys.key_format_register(NULL, 'keyhippo', '', 140, 'hex', 'sha512', 12, 'base64') \g /dev/null
CREATE TEMP TABLE legacy AS
SELECT label, 'tk_' || encode(gen_random_bytes(32), 'hex') AS k
  FROM unnest('{legacy_tk,legacy_tk_revoked}'::text[]) label;
INSERT INTO public.plain_keys (label, api_key, key_id)
SELECT l.label, l.k, apikeys.apikey_import('acme', 'tk', encode(digest(l.k, 'sha256'), 'hex'), l.label,
                                           status => CASE WHEN l.label = 'legacy_tk_revoked' THEN 'revoked' END)
  FROM legacy l;
INSERT INTO public.plain_keys (label, api_key, key_id)
SELECT 'legacy_kh', h || b, apikeys.apikey_import('globex', 'keyhippo', encode(digest(b, 'sha512'), 'hex'), 'kh', head => h)
  FROM (SELECT encode(gen_random_bytes(8), 'base64') h, encode(gen_random_bytes(64), 'hex') b) x;
SELECT apikeys.scope_define('acme', 'read', 'Read things') \g /dev/null
SELECT apikeys.scope_define(NULL, 'billing', 'Billing, for every tenant') \g /dev/null
SELECT public.mk('acme_registry', 'acme', ARRAY['read', 'billing']) \g /dev/null
SELECT apikeys.apikey_set_limits(public.id('acme_registry'), ARRAY[('burst', 1, '1 hour')]::apikeys.named_limit[]) \g /dev/null
-- the named limit used up: its one success
SELECT (apikeys.apikey_verify(api_key)).valid FROM public.plain_keys WHERE label = 'acme_registry' \g /dev/null

-- credits: ten, two, one then a top-up of five, a monthly refill of 1000
SELECT public.mk('acme_credits_left', 'acme');
SELECT public.mk('acme_credits_out', 'acme');
SELECT public.mk('acme_credits_topped', 'acme');
SELECT public.mk('acme_credits_refill', 'acme');
SELECT apikeys.apikey_set_credits(public.id('acme_credits_left'), 10);
SELECT apikeys.apikey_set_credits(public.id('acme_credits_out'), 2);
SELECT apikeys.apikey_set_credits(public.id('acme_credits_topped'), 1);
-- a monthly refill of 1000 on the 1st: spent or refilled, 1000 is plenty
SELECT apikeys.apikey_set_credits(public.id('acme_credits_refill'), 1000, 1000, refill_day => 1);

-- spend: 2 of 10, all 2, the 1 then a top-up of 5
DO $$
DECLARE k record;
BEGIN
    FOR k IN SELECT api_key FROM public.plain_keys p, generate_series(1, 2)
              WHERE p.label IN ('acme_credits_left', 'acme_credits_out')
             UNION ALL
             SELECT api_key FROM public.plain_keys p WHERE p.label IN ('acme_credits_topped', 'acme_credits_refill') LOOP
        IF NOT (apikeys.apikey_verify(k.api_key)).valid THEN
            RAISE 'a key with credits was refused before they were spent';
        END IF;
    END LOOP;
    IF (apikeys.apikey_verify((SELECT api_key FROM public.plain_keys WHERE label = 'acme_credits_out'))).valid THEN
        RAISE 'a key whose credits are spent was accepted';
    END IF;
END $$;
SELECT apikeys.apikey_add_credits(public.id('acme_credits_topped'), 5);
