#!/usr/bin/env bash
# test/t/two_databases.sh - apikeys in two databases of one cluster:
#   - each database has its own keys: the shared-memory policy cache and
#     usage state never let a key of one database verify in the other, even
#     with the same tenant name;
#   - the same role mapped to a tenant in both databases (grant_tenant);
#   - DROP EXTENSION in one database leaves the other working (verify, the
#     policy cache, management, audit);
#   - the role can then be dropped once its grants are gone in each database
#     (revoke_tenant, DROP OWNED BY);
#   - 40 databases in turn (more than the 32 flush workers that can run at
#     once), each verifying a key and dropped WITH (FORCE): every one gets its
#     usage written, as the slot of an exited worker is freed.
#
# Runs its own cluster (tmp/twodb, port 54397, unless $TWO_DB_NAME /
# $TWO_DB_PORT say otherwise), stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=${TWO_DB_NAME:-twodb}
PORT=${TWO_DB_PORT:-54397}
DIR=$TMPDIR_APIKEYS/$NAME
trap 'cluster_stop $NAME || true' EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
q() { local db=$1; shift; cluster_psql "$NAME" "$PORT" -d "$db" -qAt "$@"; }
qas() { local db=$1 role=$2; shift 2; "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U "$role" -d "$db" -qAt "$@"; }
expect() { [ "$2" = "$3" ] || die "$1: expected '$3', got '$2'"; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "apikeys.flush_interval = '100ms'" "apikeys.usage_write_delay = 0"

echo "== setup: two databases, the same role and tenant name in both"
q postgres -c "CREATE DATABASE db_one" -c "CREATE DATABASE db_two" >/dev/null
q postgres -c "CREATE ROLE regress_two_admin LOGIN" >/dev/null
for db in db_one db_two; do
	q "$db" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme');
SELECT apikeys.grant_tenant('regress_two_admin', 'acme');
SQL
done
K1=$(qas db_one regress_two_admin -c "SELECT key_id || ' ' || api_key FROM apikeys.apikey_create('acme', 'in one')")
K1_ID=${K1%% *} K1_KEY=${K1#* }
K2=$(qas db_two regress_two_admin -c "SELECT key_id || ' ' || api_key FROM apikeys.apikey_create('acme', 'in two')")
K2_ID=${K2%% *} K2_KEY=${K2#* }

echo "== each database verifies its own keys only"
# twice each: the second call is served by the shared policy cache
for i in 1 2; do
	expect "db_one own key ($i)" "$(q db_one -c "SELECT code FROM apikeys.apikey_verify('$K1_KEY')")" valid
	expect "db_two own key ($i)" "$(q db_two -c "SELECT code FROM apikeys.apikey_verify('$K2_KEY')")" valid
	expect "db_one key in db_two ($i)" "$(q db_two -c "SELECT code FROM apikeys.apikey_verify('$K1_KEY')")" not_found
	expect "db_two key in db_one ($i)" "$(q db_one -c "SELECT code FROM apikeys.apikey_verify('$K2_KEY')")" not_found
done
expect "authenticate across databases" \
	"$(q db_two -c "SELECT code || ' ' || coalesce(apikeys.current_tenant(), '-') FROM apikeys.authenticate('$K1_KEY')")" "not_found -"
# a revocation in one database changes nothing in the other
q db_one -c "SELECT apikeys.apikey_revoke('$K1_ID')" >/dev/null
expect "revoked in db_one" "$(q db_one -c "SELECT code FROM apikeys.apikey_verify('$K1_KEY')")" revoked
expect "db_two after db_one's revoke" "$(q db_two -c "SELECT code FROM apikeys.apikey_verify('$K2_KEY')")" valid
# the mapping of one database does not reach the other's keys
qas db_one regress_two_admin -c "SELECT apikeys.apikey_disable('$K2_ID')" >/dev/null 2>&1 \
	&& die "db_two's key id managed from db_one"
expect "db_two key still active" "$(q db_two -c "SELECT status FROM apikeys.keys WHERE key_id = '$K2_ID'")" active

echo "== DROP EXTENSION in db_one; db_two keeps working"
q db_one -c "DROP EXTENSION apikeys" >/dev/null
# (the schema itself stays, empty, as for any extension whose control file
# names its schema; the role's USAGE on it is why db_one needs DROP OWNED BY)
expect "objects gone in db_one" "$(q db_one -c "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'apikeys'::regnamespace) + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'apikeys'::regnamespace)")" 0
for i in 1 2; do
	expect "db_two verify after drop ($i)" "$(q db_two -c "SELECT code FROM apikeys.apikey_verify('$K2_KEY')")" valid
done
R=$(qas db_two regress_two_admin -c "SELECT api_key FROM apikeys.apikey_rotate('$K2_ID')")
expect "old secret after rotate" "$(q db_two -c "SELECT code FROM apikeys.apikey_verify('$K2_KEY')")" not_found
expect "new secret after rotate" "$(q db_two -c "SELECT code FROM apikeys.apikey_verify('$R')")" valid
K3_KEY=$(qas db_two regress_two_admin -c "SELECT api_key FROM apikeys.apikey_create('acme', 'after drop')")
expect "new key in db_two" "$(q db_two -c "SELECT code FROM apikeys.apikey_verify('$K3_KEY')")" valid
# the admin's rows: two keys created (one key_created row each, the secret
# joined), and the rotation's secret_retired, secret_issued and key_rotated
expect "db_two audit" "$(q db_two -c "SELECT (SELECT ok FROM apikeys.audit_check()) || ' ' || count(*) FILTER (WHERE db_role = 'regress_two_admin') FROM apikeys.audit")" "true 5"
# usage tracking still flushes for db_two
sleep 1
expect "usage flushed in db_two" \
	"$(q db_two -c "SELECT count_valid > 0 FROM apikeys.usage WHERE key_id = '$K2_ID'")" t
# and CREATE EXTENSION again in db_one starts empty
q db_one -c "SET client_min_messages = warning" -c "CREATE EXTENSION apikeys" >/dev/null
expect "db_one recreated: empty" "$(q db_one -c "SELECT count(*) FROM apikeys.credential")" 0
expect "db_one recreated: old key" "$(q db_one -c "SELECT code FROM apikeys.apikey_verify('$K1_KEY')")" not_found
expect "db_one recreated: db_two key" "$(q db_one -c "SELECT code FROM apikeys.apikey_verify('$R')")" not_found

echo "== dropping the role"
# still granted things in db_two: DROP ROLE must refuse
q postgres -c "DROP ROLE regress_two_admin" >/dev/null 2>&1 && die "dropped a role that still holds privileges"
q db_two >/dev/null <<'SQL'
SELECT apikeys.revoke_tenant('regress_two_admin', 'acme');
DROP OWNED BY regress_two_admin;
SQL
q db_one -c "DROP OWNED BY regress_two_admin" >/dev/null
q postgres -c "DROP OWNED BY regress_two_admin" -c "DROP ROLE regress_two_admin" >/dev/null
expect "no mapping left in db_two" "$(q db_two -c "SELECT count(*) FROM apikeys.role_tenant")" 0
expect "db_two still verifies" "$(q db_two -c "SELECT code FROM apikeys.apikey_verify('$R')")" valid
expect "keys created by the role keep their created_by" \
	"$(q db_two -c "SELECT count(*) FROM apikeys.keys WHERE created_by = 'regress_two_admin'")" 2

echo "== 40 databases in turn: each gets a flush worker and its usage written"
q postgres >/dev/null <<'SQL'
CREATE DATABASE db_tmpl;
\c db_tmpl
SET client_min_messages = warning;
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme');
CREATE TABLE the_key AS SELECT key_id, api_key FROM apikeys.apikey_create('acme', 'everywhere');
SQL
for i in $(seq 1 40); do
	q postgres -c "CREATE DATABASE db_many_$i TEMPLATE db_tmpl" >/dev/null
	expect "verify in db_many_$i" "$(q db_many_$i -c "SELECT code FROM apikeys.apikey_verify((SELECT api_key FROM the_key))")" valid
	flushed=
	for _ in $(seq 1 100); do
		flushed=$(q db_many_$i -c "SELECT count_valid FROM apikeys.usage")
		[ "$flushed" = 1 ] && break
		sleep 0.1
	done
	expect "usage written in db_many_$i" "$flushed" 1
	q postgres -c "DROP DATABASE db_many_$i WITH (FORCE)" >/dev/null
done
echo "ok: two databases, isolated keys, drop in one keeps the other, role dropped, 40 databases served in turn"
