#!/usr/bin/env bash
# test/bench/audit_cost.sh - what the audit costs per row (not a pass/fail
# test; indicative on a busy machine).
#
#   test/bench/audit_cost.sh
#   BENCH_PORT=55110 BENCH_BULK_KEYS=20000 BENCH_SECONDS=5 test/bench/audit_cost.sh
#
# One throwaway server (fsync off: this measures CPU, not the disk), then:
#   - apikey_create_many of BENCH_BULK_KEYS (20,000) keys, audited, and again
#     with the audit triggers of credential and secret disabled: keys/s of
#     each and the audit's cost per audit row (two rows per key), in µs;
#   - UPDATE of the description of those keys (one key_updated row each),
#     audited and not: the cost per audit row of an update;
#   - pgbench (prepared, 1 client, BENCH_SECONDS) of apikey_create, and the
#     time per call of each function it reaches (track_functions = all).
source "$(cd "$(dirname "$0")/../.." && pwd)/scripts/lib.sh"

SECS=${BENCH_SECONDS:-5}
BULK=${BENCH_BULK_KEYS:-20000}
PORT=${BENCH_PORT:-54388}
NAME=bench_audit
DIR=$TMPDIR_APIKEYS/$NAME

ensure_deps
[ -n "${APIKEYS_SKIP_BUILD:-}" ] || build_install
trap 'cluster_stop $NAME' EXIT
cluster_start $NAME $PORT "shared_preload_libraries = 'apikeys'" "track_functions = all" \
	"shared_buffers = '256MB'" "max_wal_size = '4GB'" "autovacuum = off"
psql_b() { cluster_psql $NAME $PORT -q -d postgres "$@"; }

psql_b <<SQL
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('on') \g /dev/null
SELECT apikeys.tenant_create('off') \g /dev/null
SELECT apikeys.tenant_create('b1') \g /dev/null
SQL

# toggle HOW: ALTER TABLE ... HOW TRIGGER for every audit trigger of credential and secret
toggle() {
	echo "SELECT format('ALTER TABLE %s $1 TRIGGER %I', tgrelid::regclass, tgname) FROM pg_trigger
	       WHERE tgrelid IN ('apikeys.credential'::regclass, 'apikeys.secret'::regclass) AND tgname LIKE 'audit%' \\gexec"
}

# ms MODE SQL: run SQL once, print its duration in ms (audited or not)
ms() {
	local mode=$1 sql=$2
	psql_b -At <<SQL | awk '/^Time:/ {print $2}'
\o /dev/null
$( [ "$mode" = off ] && echo "$(toggle DISABLE)" )
CHECKPOINT;
\timing on
$sql
\timing off
$( [ "$mode" = off ] && echo "$(toggle 'ENABLE ALWAYS')" )
SQL
}

c_on=$(ms on "SELECT count(*) FROM apikeys.apikey_create_many('on', ARRAY(SELECT 'k ' || g FROM generate_series(1, $BULK) g));")
c_off=$(ms off "SELECT count(*) FROM apikeys.apikey_create_many('off', ARRAY(SELECT 'k ' || g FROM generate_series(1, $BULK) g));")
u_on=$(ms on "UPDATE apikeys.credential SET description = 'x' WHERE tenant = 'on';")
u_off=$(ms off "UPDATE apikeys.credential SET description = 'x' WHERE tenant = 'off';")
rows=$(psql_b -At -c "SELECT count(*) FROM apikeys.audit WHERE chain = 'on'")
awk -v n="$BULK" -v con="$c_on" -v coff="$c_off" -v uon="$u_on" -v uoff="$u_off" -v rows="$rows" 'BEGIN {
	printf "  create_many %d keys: audited %.0f ms = %.0f keys/s; unaudited %.0f ms = %.0f keys/s\n", n, con, n * 1000 / con, coff, n * 1000 / coff
	printf "  audit cost per row: create_many %.1f us (2 rows per key), update %.1f us (1 row per key)\n", (con - coff) * 1000 / (2 * n), (uon - uoff) * 1000 / n
	printf "  audit rows of the audited tenant: %d (want %d)\n", rows, 3 * n + 1 }'

cat >"$DIR/create.sql" <<'EOF2'
SELECT key_id FROM apikeys.apikey_create('b1', 'bench');
EOF2
chmod a+r "$DIR"/create.sql
psql_b -c "SELECT pg_stat_reset()"
out=$("$PGBIN/pgbench" -n -M prepared -c 1 -j 1 -T "$SECS" -h "$DIR" -p $PORT -U postgres -f "$DIR/create.sql" postgres 2>&1)
awk '/^tps/ {printf "  apikey_create, 1 client: %.0f tps (%.3f ms per call)\n", $3, 1000 / $3}' <<<"$out"
sleep 1   # the statistics reach the collector
psql_b -c "SELECT schemaname || '.' || funcname AS function, calls, round((self_time / calls * 1000)::numeric, 1) AS self_us,
                  round((total_time / calls * 1000)::numeric, 1) AS total_us
             FROM pg_stat_user_functions WHERE calls > 0 ORDER BY total_time DESC LIMIT 20"
