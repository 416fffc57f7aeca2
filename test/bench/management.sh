#!/usr/bin/env bash
# test/bench/management.sh - key-management throughput by client count (not
# a pass/fail test).
#
#   test/bench/management.sh
#   BENCH_SECONDS=5 BENCH_CLIENT_COUNTS="1 4 16" BENCH_BULK_KEYS=10000 test/bench/management.sh
#
# One throwaway server (apikeys preloaded, fsync = on: every commit is
# flushed, as in production), pgbench in prepared mode, one run per client
# count (1, 2, 4, 8, 16) of BENCH_SECONDS (10) each, for:
#   apikey_create   in a random one of 8 tenants (\set t random(1, 8))
#   apikey_rotate   a random one of 2,000 keys spread over the 8 tenants
#   apikey_revoke   fresh keys (never revoked before), shuffled over the 8
#                   tenants, one per call drawn from a sequence; the pool is
#                   refilled before each run with twice what the rotate run
#                   at that client count managed, and a run that exhausts it
#                   is flagged
# printing tps per client count and the ratios 4/1, 8/4 and 16/4 (how
# management scales with clients: with one audit chain per tenant, writers
# of different tenants do not wait for each other).  Then one statement
# creating BENCH_BULK_KEYS (100,000) keys in one tenant with
# apikeys.apikey_create_many (keys/s, and the audit rows counted after:
# one key_created per key, its secret joined); skipped with a message on
# code without apikey_create_many.  Each run starts after quiet(): no
# autovacuum at work, a checkpoint, the CPUs idle (as test/bench/run.sh;
# BENCH_IDLE_WAIT=0 skips waiting for idle CPUs on a shared machine).
# BENCH_WAL=1 also prints, per run, the WAL each transaction wrote and how
# its commits were flushed (pg_stat_wal, with track_wal_io_timing on):
# records, bytes and full-page images per transaction, WAL syncs per
# transaction (below 1: commits flushed together) and milliseconds per sync.
# BENCH_WAITS=1 also samples pg_stat_activity every 20 ms during each run
# and prints the commonest wait events (Lock:advisory is a chain's lock:
# writers of one tenant waiting for each other).
source "$(cd "$(dirname "$0")/../.." && pwd)/scripts/lib.sh"
source "$ROOT/test/bench/bench_lib.sh"

SECS=${BENCH_SECONDS:-10}
COUNTS=${BENCH_CLIENT_COUNTS:-"1 2 4 8 16"}
BULK=${BENCH_BULK_KEYS:-100000}
NROT=2000
PORT=54389
NAME=bench_mgmt
DIR=$TMPDIR_APIKEYS/$NAME

ensure_deps
build_install
trap 'cluster_stop $NAME' EXIT
WAL_TIMING="track_wal_io_timing = $([ "${BENCH_WAL:-0}" = 1 ] && echo on || echo off)"
cluster_start $NAME $PORT "shared_preload_libraries = 'apikeys'" "fsync = on" "synchronous_commit = on" "$WAL_TIMING" \
	"shared_buffers = '512MB'" "max_connections = 40" "max_wal_size = '4GB'"
psql_b() { cluster_psql $NAME $PORT -q -d postgres "$@"; }

say "setup: 8 tenants, $NROT keys to rotate"
psql_b <<SQL
CREATE EXTENSION apikeys CASCADE;
SELECT count(apikeys.tenant_create('b' || i)) FROM generate_series(1, 8) i \g /dev/null
SELECT apikeys.tenant_create('bulk') \g /dev/null
CREATE TABLE bench_rotate (id int PRIMARY KEY, key_id uuid NOT NULL);
INSERT INTO bench_rotate
SELECT g, c.key_id FROM generate_series(1, $NROT) g, LATERAL apikeys.apikey_create('b' || (g % 8 + 1), 'rot ' || g) c;
CREATE TABLE bench_revoke (id bigint PRIMARY KEY, key_id uuid NOT NULL);
CREATE SEQUENCE bench_revoke_seq;
VACUUM ANALYZE;
SQL

cat >"$DIR/create.sql" <<'EOF'
\set t random(1, 8)
SELECT key_id FROM apikeys.apikey_create('b' || :t::int, 'bench');
EOF
cat >"$DIR/rotate.sql" <<EOF
\set id random(1, $NROT)
SELECT key_id FROM apikeys.apikey_rotate((SELECT key_id FROM bench_rotate WHERE id = :id::int));
EOF
# the next fresh key of the pool (an InitPlan: nextval once per call)
cat >"$DIR/revoke.sql" <<'EOF'
SELECT apikeys.apikey_revoke(r.key_id) FROM bench_revoke r WHERE r.id = (SELECT nextval('bench_revoke_seq'));
EOF
chmod a+r "$DIR"/*.sql

# refill_revoke N: at least N unused keys in the revoke pool, shuffled over
# the 8 tenants
refill_revoke() {
	local next have
	next=$(psql_b -At -c "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM bench_revoke_seq")
	have=$(psql_b -At -c "SELECT coalesce(max(id), 0) FROM bench_revoke")
	[ $((have - next + 1)) -ge "$1" ] && return 0
	psql_b -c "INSERT INTO bench_revoke
	           SELECT $have + row_number() OVER (ORDER BY random()), c.key_id
	             FROM generate_series(1, $(( $1 - (have - next + 1) ))) g,
	                  LATERAL apikeys.apikey_create('b' || (g % 8 + 1), 'revoke me') c" -c "VACUUM ANALYZE bench_revoke"
}

# quiet: no autovacuum at work, a checkpoint, and the CPUs idle, so that no
# run pays for the writes of the one before it
quiet() {
	for i in $(seq 1 300); do
		[ "$(psql_b -At -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" = 0 ] && break
		sleep 1
	done
	psql_b -c "CHECKPOINT"
	idle_machine
}
# sample_waits SECONDS OUT: what the pgbench backends wait on, every 20 ms
# for SECONDS (one line per active backend and sample; CPU: not waiting)
sample_waits() {
	local end=$(( $(date +%s) + $1 ))
	while [ "$(date +%s)" -lt "$end" ]; do
		psql_b -At -c "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity
		               WHERE application_name = 'pgbench' AND state = 'active'" || true
		sleep 0.02
	done >"$2"
}
# pgbench_tps SCRIPT CLIENTS: one run, prints tps ("failed" if pgbench failed);
# with BENCH_WAITS=1 also the run's commonest wait events, with BENCH_WAL=1
# its WAL per transaction, on stderr
pgbench_tps() {
	local out sampler=
	quiet
	if [ "${BENCH_WAITS:-0}" = 1 ]; then
		sample_waits $(( SECS - 2 )) "$DIR/waits" &
		sampler=$!
	fi
	[ "${BENCH_WAL:-0}" = 1 ] && psql_b -c "SELECT pg_stat_reset_shared('wal')" >/dev/null
	out=$("$PGBIN/pgbench" -n -M prepared -c "$2" -j "$2" -T "$SECS" \
		-h "$DIR" -p $PORT -U postgres -f "$1" postgres 2>&1)
	if [ "${BENCH_WAL:-0}" = 1 ] && grep -q '^number of transactions actually processed' <<<"$out"; then
		local n
		n=$(awk -F': ' '/^number of transactions actually processed/ {split($2, a, "/"); print a[1]}' <<<"$out")
		psql_b -At -c "SELECT format('    %s, %s clients, WAL per transaction: %s records, %s bytes, %s full pages, %s syncs, %s ms per sync',
		                      '$(basename "$1" .sql)', $2, round(wal_records::numeric / $n, 1), round(wal_bytes / $n),
		                      round(wal_fpi::numeric / $n, 2), round(wal_sync::numeric / $n, 2),
		                      round((wal_sync_time / nullif(wal_sync, 0))::numeric, 3)) FROM pg_stat_wal" >&2
	fi
	if [ -n "$sampler" ]; then
		wait "$sampler"
		printf '    %s, %s clients, waits (samples of backends): %s\n' "$(basename "$1" .sql)" "$2" \
			"$(sort "$DIR/waits" | uniq -c | sort -rn | head -n 5 | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1}')" >&2
	fi
	if ! grep -q '^tps' <<<"$out" || grep -q 'aborted' <<<"$out"; then
		echo "$out" | tail -n 5 >&2
		echo failed
		return
	fi
	awk '/^tps/ {printf "%.0f", $3}' <<<"$out"
}

declare -A TPS
say "throughput (prepared, ${SECS}s per run, fsync on)"
# a short unmeasured run first: the first run after the setup is slower
SECS=3 pgbench_tps "$DIR/create.sql" 4 >/dev/null
for c in $COUNTS; do
	TPS[create,$c]=$(pgbench_tps "$DIR/create.sql" "$c")
	TPS[rotate,$c]=$(pgbench_tps "$DIR/rotate.sql" "$c")
	rot=${TPS[rotate,$c]}; [ "$rot" = failed ] && rot=2000
	refill_revoke $(( rot * SECS * 2 + 1000 ))
	TPS[revoke,$c]=$(pgbench_tps "$DIR/revoke.sql" "$c")
	used=$(psql_b -At -c "SELECT last_value FROM bench_revoke_seq")
	pool=$(psql_b -At -c "SELECT max(id) FROM bench_revoke")
	[ "$used" -le "$pool" ] || TPS[revoke,$c]="${TPS[revoke,$c]}(pool ran out)"
	printf '  %2s clients: create %s  rotate %s  revoke %s tps\n' "$c" "${TPS[create,$c]}" "${TPS[rotate,$c]}" "${TPS[revoke,$c]}"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else printf "-" }'; }
echo
printf '  %-8s' clients; for op in create rotate revoke; do printf '%12s' "$op"; done; echo
for c in $COUNTS; do
	printf '  %-8s' "$c"; for op in create rotate revoke; do printf '%12s' "${TPS[$op,$c]}"; done; echo
done
for r in "4 1" "8 4" "16 4"; do
	set -- $r
	[ -n "${TPS[create,$1]:-}" ] && [ -n "${TPS[create,$2]:-}" ] || continue
	printf '  %-8s' "$1/$2"
	for op in create rotate revoke; do printf '%12s' "$(ratio "${TPS[$op,$1]}" "${TPS[$op,$2]}")"; done; echo
done

echo
if [ "$(psql_b -At -c "SELECT to_regproc('apikeys.apikey_create_many') IS NOT NULL")" != t ]; then
	echo "  apikey_create_many: skipped (this code has no apikeys.apikey_create_many)"
	exit 0
fi
say "one statement: apikey_create_many of $BULK keys in one tenant"
quiet
t0=$(date +%s.%N)
n=$(psql_b -At -c "SELECT count(*) FROM apikeys.apikey_create_many('bulk', ARRAY(SELECT 'bulk ' || g FROM generate_series(1, $BULK) g))")
t1=$(date +%s.%N)
audited=$(psql_b -At -c "SELECT count(*) FILTER (WHERE action = 'key_created') || ' key_created, ' ||
                                count(*) FILTER (WHERE action = 'key_created' AND detail ? 'secret') || ' with their secret'
                           FROM apikeys.audit WHERE tenant = 'bulk'")
awk -v n="$n" -v a="$t0" -v b="$t1" -v aud="$audited" -v want="$BULK" 'BEGIN {
	printf "  apikey_create_many: %d keys in %.2f s = %.0f keys/s; audit rows: %s (want %d each)\n", n, b - a, n / (b - a), aud, want }'
