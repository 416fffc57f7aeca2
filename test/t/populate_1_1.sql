-- test/t/populate_1_1.sql - keys with what version 1.1 added (credits),
-- after test/t/populate_keys.sql (its helpers public.mk and public.id, its
-- table public.plain_keys): test/t/populate_1_1.verdicts says what each
-- verifies as.  Used by test/t/pg_upgrade.sh (the credits spent must
-- survive it) and test/t/upgrade.sh (after ALTER EXTENSION UPDATE).
\set ON_ERROR_STOP 1
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
