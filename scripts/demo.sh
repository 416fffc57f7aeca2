#!/usr/bin/env bash
# scripts/demo.sh - install what is missing, build and install apikeys, start a
# throwaway cluster (tmp/demo, port 54390) and walk through the extension in
# psql.  The cluster is left running so you can keep exploring.
#
# Usage: scripts/demo.sh          run the demo (restarts the demo cluster)
#        scripts/demo.sh stop     stop the demo cluster
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=demo
PORT=54390
DB=demo
SOCK=$TMPDIR_APIKEYS/$NAME

case ${1:-run} in
	stop)
		if [ -f "$SOCK/data/postmaster.pid" ]; then
			cluster_stop "$NAME" && say "demo cluster stopped (data left in tmp/$NAME)"
		else
			say "demo cluster is not running"
		fi
		exit 0 ;;
	run) ;;
	*) echo "usage: $0 [stop]" >&2; exit 2 ;;
esac

ensure_deps
if [ "${APIKEYS_SKIP_BUILD:-}" = 1 ]; then say "APIKEYS_SKIP_BUILD=1: using the apikeys already installed"; else build_install; fi
say "starting a throwaway cluster in tmp/$NAME on port $PORT"
# If anything below fails, do not leave a half-made cluster behind.
trap 'cluster_stop "$NAME" || true' EXIT
cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'"
cluster_psql "$NAME" "$PORT" -d postgres -q -c "CREATE DATABASE $DB"

say "demo: every statement is echoed before its result"
cluster_psql "$NAME" "$PORT" -d "$DB" <<'SQL'
\set QUIET on
\set ECHO queries
\pset footer off
\set VERBOSITY terse
\echo
\echo '-- 1. Install the extension (CASCADE brings the extensions it builds on).'
\echo '--    Everything lives in schema apikeys.'
CREATE EXTENSION apikeys CASCADE;


\echo
\echo '-- 2. A tenant.  Every key belongs to one; row-level security keeps tenants apart.'
SELECT tenant, display_name, active FROM apikeys.tenant_create('acme', 'Acme Corp');

\echo
\echo '-- 3. An API key with two scopes.  The secret (api_key) is returned this once;'
\echo '--    only its SHA-256 digest and a short hint are stored.'
\echo '--    The application says who is acting, for this transaction; the audit'
\echo '--    records it next to the database role.'
BEGIN;
SET LOCAL apikeys.actor = 'alice@acme.example';
SELECT key_id, api_key, hint
  FROM apikeys.apikey_create('acme', 'billing-service', ARRAY['invoices_read', 'invoices_write']) \gset
COMMIT;
\echo '   key_id  =' :key_id
\echo '   api_key =' :api_key
\echo '   hint    =' :hint

\echo
\echo '-- 4. Verify it.  apikey_verify never raises for a bad key: it returns a verdict.'
SELECT valid, code, tenant, name, scopes FROM apikeys.apikey_verify(:'api_key');

\echo
\echo '-- 5. Require scopes: one the key has, then one it lacks (insufficient_scope).'
SELECT valid, code FROM apikeys.apikey_verify(:'api_key', ARRAY['invoices_read']);
SELECT valid, code FROM apikeys.apikey_verify(:'api_key', ARRAY['admin']);

\echo
\echo '-- 6. Garbage, and the real key with one character changed: both are malformed,'
\echo '--    decided from the format and checksum alone, without touching a table.'
SELECT valid, code FROM apikeys.apikey_verify('hello, world');
SELECT valid, code FROM apikeys.apikey_verify(
    overlay(:'api_key' placing CASE substr(:'api_key', 10, 1) WHEN 'x' THEN 'y' ELSE 'x' END from 10 for 1));

\echo
\echo '-- 7. Rotate with a one hour grace period: a new secret for the same key_id,'
\echo '--    and the old secret keeps working for an hour so clients can switch over.'
SELECT api_key AS api_key_2, hint AS hint_2 FROM apikeys.apikey_rotate(:'key_id', '1 hour') \gset
\echo '   new api_key =' :api_key_2
SELECT 'original' AS secret, (apikeys.apikey_verify(:'api_key')).code
UNION ALL
SELECT 'rotated (1 hour grace)', (apikeys.apikey_verify(:'api_key_2')).code;

\echo
\echo '-- 8. Rotate again with grace 0 (say, the key leaked): every older secret dies at'
\echo '--    commit, including the original, whose grace hour is cut short.'
SELECT api_key AS api_key_3 FROM apikeys.apikey_rotate(:'key_id', '0') \gset
\echo '   new api_key =' :api_key_3
SELECT 'original (was in its grace hour)' AS secret, (apikeys.apikey_verify(:'api_key')).code
UNION ALL
SELECT 'second (replaced with grace 0)', (apikeys.apikey_verify(:'api_key_2')).code
UNION ALL
SELECT 'third (current)', (apikeys.apikey_verify(:'api_key_3')).code;

\echo
\echo '-- 9. Disable the key (a reversible suspension), then enable it again.'
SELECT apikeys.apikey_disable(:'key_id');
SELECT valid, code FROM apikeys.apikey_verify(:'api_key_3');
SELECT apikeys.apikey_enable(:'key_id');
SELECT valid, code FROM apikeys.apikey_verify(:'api_key_3');

\echo
\echo '-- 10. Revoke it for good.  Revocation is permanent and instant (at commit).'
SELECT apikeys.apikey_revoke(:'key_id', 'demo: leaked in a log file');
SELECT valid, code FROM apikeys.apikey_verify(:'api_key_3');

\echo
\echo '-- 11. What an operator sees: the key with its hint, never a secret or digest.'
\x on
SELECT key_id, tenant, name, hint, scopes, status, rotation_count, rotated_at,
       secrets_in_grace, revoked_at, revoked_reason
  FROM apikeys.keys;
\x off

\set ECHO none
SELECT to_regclass('apikeys.audit') IS NOT NULL AS has_audit \gset
\set ECHO queries
\if :has_audit
\echo
\echo '-- 12. The audit trail: every change, who made it and when (no secret ever enters it).'
SELECT at::time(0) AS at, action, key_id, actor, db_role
  FROM apikeys.audit ORDER BY at, chain, audit_id;
\endif
SQL

trap - EXIT
PSQL_CMD="$PGBIN/psql"
command -v psql >/dev/null && PSQL_CMD=psql
echo
say "the demo cluster is still running"
echo "connect:  $PSQL_CMD -h $SOCK -p $PORT -U postgres -d $DB"
echo "stop it:  $ROOT/scripts/demo.sh stop"
