--
-- audit_encoding: row_hash of fixed rows.  The hash encoding
-- (docs/audit.md) is a contract: rows written by any version must check
-- with every later one, so these values never change.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS apikeys CASCADE;
CREATE EXTENSION apikeys CASCADE;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT r.what, encode(apikeys_internal._audit_hash(r.a), 'hex') AS row_hash
  FROM (VALUES
    ('every column', ROW('acme', 7, '2026-01-02 03:04:05.678901+00', 'acme',
         '0b6c3e5e-3f0a-4c39-9a4e-1d2b3c4d5e6f', 'key_rotated', 'success', 'alice', 'postgres',
         'ops@example.com', 'req-1', '192.0.2.1/24', 'psql', '12345',
         '{"changed": {"rotation_count": [0, 1], "rotated_at": [null, "2026-01-02T03:04:05+00:00"]}}',
         '\x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff',
         '\x')::apikeys.audit),
    ('nulls and the chain of no tenant', ROW('', 1, '1999-12-31 23:59:59.999999+00', NULL, NULL,
         'role_granted', 'success', 'postgres', 'postgres', NULL, NULL, NULL, '', NULL,
         '{}', '\x0000000000000000000000000000000000000000000000000000000000000000',
         '\x')::apikeys.audit),
    ('multibyte text and nested json', ROW('t-ü', 9223372036854775807, 'infinity', 't-ü', NULL,
         'vault_secret_added', 'failure', 'rôle', 'postgres', 'ünï', 'x', '2001:db8::1', 'app ✓', '0',
         '{"new": {"b": [1, 2.50, {"c": "\u00e9"}], "a": true}}', '\x01', '\x')::apikeys.audit)
  ) r(what, a)
 ORDER BY 1;
