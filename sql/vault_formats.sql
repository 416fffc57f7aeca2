--
-- vault_formats: per-service format validation and the service registry.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE FUNCTION pg_temp.err(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
-- Try to add a secret; 'ok' or the error (with its hint).
CREATE FUNCTION pg_temp.try_add(service text, secret text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text;
    hint text;
BEGIN
    PERFORM apikeys.vault_add('acme', service, 'format test', secret);
    RETURN 'ok';
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ' ' || msg || coalesce(' HINT: ' || nullif(hint, ''), '');
END
$$;

SET apikeys.vault_master_key = 'regress-master-key-0123456789abcdef';
SELECT apikeys.tenant_create('acme') IS NOT NULL;

------------------------------------------------------------------------------
-- Valid secrets of each built-in service
------------------------------------------------------------------------------
SELECT service, left(secret, 12) AS secret_start, pg_temp.try_add(service, secret) AS result FROM (VALUES
    ('openai',      'sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz_0123456789-abc'),
    ('openai',      'sk-AbCdEfGhIjKlMnOpQrStUvWx'),
    ('openai',      'sk-svcacct-AbCdEfGhIjKlMnOpQrSt'),
    ('anthropic',   'sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz_0123456789-AA'),
    ('claude',      'sk-ant-admin01-AbCdEfGhIjKlMnOpQrSt'),
    ('huggingface', 'hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567'),
    ('gemini',      'AIzaSyA-AbCdEfGhIjKlMnOpQrStUvWxYz01234'),
    ('generic',     'any.printable~token/with=base64+chars'),
    ('OpenAI',      'sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123')   -- service names are case-insensitive
) v(service, secret);

------------------------------------------------------------------------------
-- Invalid secrets, per service: vault_invalid_format, never echoing the secret
------------------------------------------------------------------------------
SELECT service, secret, pg_temp.try_add(service, secret) AS result FROM (VALUES
    ('openai',      'sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz'),   -- an Anthropic key is not an OpenAI key
    ('openai',      'sk-short'),
    ('openai',      'pk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz'),
    ('openai',      ' sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz'),
    ('openai',      'sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz '),
    ('openai',      'sk-proj-AbCdEfGhIj KlMnOpQrStUvWxYz'),
    ('openai',      'sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz!'),
    ('openai',      'hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567'),
    ('anthropic',   'sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123'),
    ('anthropic',   'sk-ant-short'),
    ('claude',      'sk-AbCdEfGhIjKlMnOpQrStUvWxYz0123'),
    ('claude',      'sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz' || E'\n'),
    ('huggingface', 'hf_short'),
    ('huggingface', 'hf_AbCdEfGhIjKlMnOpQrStUvWxYz_1234567'),
    ('huggingface', 'HF_AbCdEfGhIjKlMnOpQrStUvWxYz01234567'),
    ('huggingface', 'sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123'),
    ('gemini',      'AIza-short'),
    ('gemini',      'AIzaSyA AbCdEfGhIjKlMnOpQrStUvWxYz01234'),
    ('gemini',      'AIzaSyA/AbCdEfGhIjKlMnOpQrStUvWxYz01234'),
    ('generic',     'fifteen-chars15'),
    ('generic',     'has a space in it ....'),
    ('generic',     'tab' || E'\t' || 'separated-secret'),
    ('generic',     'ünïcödé-is-not-printable-ascii')
) v(service, secret);

-- empty, NULL and too long secrets
SELECT pg_temp.try_add('generic', NULL) AS null_secret, pg_temp.try_add('generic', '') AS empty_secret,
       pg_temp.try_add('generic', repeat('x', 4097)) AS too_long,
       pg_temp.try_add('generic', repeat('é', 2049)) AS too_many_bytes;
-- unknown services: never echoed (it could be a secret passed in the wrong place)
SELECT s AS service, pg_temp.try_add(s, 'sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123') AS result
  FROM unnest(ARRAY['mistral', NULL, '', 'sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123']) s;

-- nothing was stored by the failures
SELECT service, count(*) FROM apikeys.vault_secret GROUP BY service ORDER BY service;

------------------------------------------------------------------------------
-- The registry: admins add services
------------------------------------------------------------------------------
SELECT service, display_name, format, alias_of, builtin
  FROM apikeys.vault_service_register('mistral', 'Mistral AI', '^[A-Za-z0-9]{32}$');
SELECT pg_temp.try_add('mistral', 'AbCdEfGhIjKlMnOpQrStUvWxYz012345') AS mistral_ok,
       pg_temp.try_add('mistral', 'AbCdEfGhIjKlMnOpQrStUvWxYz01234') AS mistral_short;
SELECT service, display_name, format, alias_of, builtin
  FROM apikeys.vault_service_register('le-chat', 'Mistral (Le Chat)', alias_of => 'mistral');
SELECT service FROM apikeys.vault_get(apikeys.vault_add('acme', 'le-chat', 'via alias', 'ZZCdEfGhIjKlMnOpQrStUvWxYz012345'));
-- builtins cannot change
SELECT pg_temp.err($$SELECT apikeys.vault_service_register('openai', 'OpenAI', '^.*$')$$);
SELECT pg_temp.err($$SELECT apikeys.vault_service_unregister('openai')$$);
-- invalid registrations
SELECT pg_temp.err(format('SELECT apikeys.vault_service_register(%L, %L, %L, %L)', s, d, f, a)) AS result
  FROM (VALUES
    ('Bad-Name', 'x', '^x$', NULL),
    ('x', 'x', '^x$', NULL),
    (NULL, 'x', '^x$', NULL),
    ('okname', '', '^x$', NULL),
    ('okname', NULL, '^x$', NULL),
    ('okname', 'x', 'x', NULL),
    ('okname', 'x', '^x', NULL),
    ('okname', 'x', '^(x$', NULL),
    ('okname', 'x', '^x{300}$', NULL),
    ('okname', 'x', NULL, NULL),
    ('okname', 'x', '^x$', 'mistral'),
    ('okname', 'x', NULL, 'nosuch'),
    ('okname', 'x', NULL, 'le-chat'),
    ('okname', 'x', '^' || repeat('x', 1000) || '$', NULL)
  ) v(s, d, f, a);
-- A format cannot change under stored secrets (its own or its aliases'):
-- otherwise vault_check() answers "does the secret match ^a.*$?" and the
-- secret leaks one guess at a time.
SELECT pg_temp.err($$SELECT apikeys.vault_service_register('mistral', 'Mistral AI', '^a.*$')$$) AS format_oracle;
SELECT pg_temp.err($$SELECT apikeys.vault_service_register('mistral', 'Mistral AI', alias_of => 'openai')$$) AS realias;
-- the same format again (a display-name change) is fine
SELECT service, display_name FROM apikeys.vault_service_register('mistral', 'Mistral', '^[A-Za-z0-9]{32}$');
SELECT service, name, ok, problem FROM apikeys.vault_check() ORDER BY service, name;
-- unregister: not while secrets or aliases use it
SELECT pg_temp.err($$SELECT apikeys.vault_service_unregister('mistral')$$);
SELECT pg_temp.err($$SELECT apikeys.vault_service_unregister('nosuch')$$);
SELECT apikeys.vault_service_unregister('le-chat');
SELECT apikeys.vault_delete(id) FROM apikeys.vault_list('acme') WHERE service = 'mistral';
SELECT apikeys.vault_service_unregister('mistral');
SELECT count(*) FROM apikeys.vault_service WHERE NOT builtin;
SELECT action, coalesce(detail -> 'new', detail -> 'old') ->> 'service' AS service, tenant FROM apikeys.audit
 WHERE action LIKE 'vault_service%' ORDER BY audit_id;

------------------------------------------------------------------------------
-- pg_dump keeps the secrets and only the admin-added services
------------------------------------------------------------------------------
SELECT c.relname, x.cond
  FROM pg_extension e, unnest(e.extconfig, e.extcondition) x(oid, cond)
  JOIN pg_class c ON c.oid = x.oid
 WHERE e.extname = 'apikeys' AND c.relname LIKE 'vault%' ORDER BY 1;
