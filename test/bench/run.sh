#!/usr/bin/env bash
# test/bench/run.sh - the apikeys benchmark (not a pass/fail test).
#
#   test/bench/run.sh            1,000,000 keys, 10 s per run
#   BENCH_KEYS=100000 BENCH_SECONDS=5 test/bench/run.sh
#   BENCH_SIZES="1000 100000 1000000 10000000" BENCH_LATENCY_ONLY=1 \
#       BENCH_SHARED_BUFFERS=6GB test/bench/run.sh    # latency by size only
#   BENCH_HUGE_PAGES=0 test/bench/run.sh     # 4 kB pages (default: 2 MB when root)
#
# One throwaway server (apikeys preloaded), pgbench in prepared mode with 4
# clients, one run each, printing transactions per second and the ratios
# SPEC.md sets targets for.  Verify is called as (apikey_verify(...)).valid:
# a function in FROM is materialized through a tuplestore, which costs more
# than the verification itself.  All keys are one tenant's, so
# apikeys.tenant_share = 1 lets it hold the whole usage table (with limits on
# every key, the default half would refuse keys as limits_unavailable).
source "$(cd "$(dirname "$0")/../.." && pwd)/scripts/lib.sh"
source "$ROOT/test/bench/bench_lib.sh"

KEYS=${BENCH_KEYS:-1000000}
SECS=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-4}
SIZES=${BENCH_SIZES:-"1000 100000 $KEYS"}
SHARED_BUFFERS=${BENCH_SHARED_BUFFERS:-1GB}
PORT=54388
NAME=bench
BENCH_DIR="$ROOT/test/bench"

ensure_deps
build_install
# The policy cache is sized for every key to stay in shared memory (1.5 x
# the keys).  The usage table gets 3 x the keys: the last runs put a limit
# on every key, and an entry holding an open window is never evicted, so
# 1.5 x left some keys without one (limits_unavailable).
SLOTS=$(( KEYS * 3 / 2 ))
TRACKED=$(( KEYS * 3 ))
# Huge pages, as PostgreSQL recommends for a shared memory this size (about
# 550 B per cache slot and per usage entry: apikeys.runtime.shmem_bytes).
huge_pages_on "$SHARED_BUFFERS" $(( (SLOTS + TRACKED) * 550 ))
say "shared memory: $HUGE"
finish() {
	cluster_stop $NAME
	huge_pages_off
}
trap finish EXIT
cluster_start $NAME $PORT "shared_preload_libraries = 'apikeys'" "shared_buffers = '$SHARED_BUFFERS'" "fsync = on" \
	"max_connections = 50" "apikeys.tenant_share = 1" "apikeys.cache_entries = $SLOTS" "apikeys.tracked_keys = $TRACKED" "$HUGE"
psql_b() { cluster_psql $NAME $PORT -q -d postgres "$@"; }

# pgbench_tps SCRIPT [extra args]: one run, prints tps
pgbench_tps() {
	local script=$1; shift
	quiet
	"$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECS" \
		-h "$TMPDIR_APIKEYS/$NAME" -p $PORT -U postgres "$@" -f "$script" postgres 2>&1 |
		awk '/^tps/ {print $3}' || true
}
pgbench_lat() {
	local script=$1; shift
	"$PGBIN/pgbench" -n -M prepared -c 1 -j 1 -T "$SECS" \
		-h "$TMPDIR_APIKEYS/$NAME" -p $PORT -U postgres "$@" -f "$script" postgres 2>&1 |
		awk '/^latency average/ {print $4}' || true
}

say "loading keys"
psql_b <<SQL
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('bench') IS NOT NULL;
CREATE TABLE bench_keys (id serial PRIMARY KEY, k text NOT NULL);
CREATE TABLE bench_rotate (id serial PRIMARY KEY, key_id uuid NOT NULL);
\i $BENCH_DIR/handwritten.sql.setup
SQL

# grow_to N: real keys through apikey_create_many (audited, in batches),
# mirrored in the hand-written table.  Two sessions share each step (the
# machine has two cores).
have=0
create_keys() {
	psql_b <<SQL
INSERT INTO bench_keys (k)
SELECT c.api_key FROM apikeys.apikey_create_many('bench', ARRAY(SELECT 'bench ' || g FROM generate_series(1, $1) g)) c;
SQL
}
grow_to() {
	local n=$1
	while [ "$have" -lt "$n" ]; do
		local step=$(( n - have < 200000 ? n - have : 200000 ))
		create_keys $(( step / 2 )) & local first=$!
		create_keys $(( step - step / 2 ))
		wait $first
		psql_b -c "INSERT INTO bench_hw_keys (key_hash, tenant)
			SELECT encode(digest(k, 'sha256'), 'hex'), 'bench' FROM bench_keys WHERE id > $have"
		have=$(( have + step ))
	done
	psql_b -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
}

# quiet: every pending usage count written (write delay 0 until then, then
# back to the default), no autovacuum at work, and a checkpoint, so that no
# run pays for the writes of the one before it (the usage worker's, the
# hand-written UPDATEs', or the vacuum they call for)
quiet() {
	psql_b -c "ALTER SYSTEM SET apikeys.usage_write_delay = 0" -c "SELECT pg_reload_conf()" >/dev/null
	for i in $(seq 1 300); do
		[ "$(psql_b -At -c "SELECT unflushed_keys FROM apikeys.runtime")" = 0 ] && break
		sleep 1
	done
	for i in $(seq 1 300); do
		[ "$(psql_b -At -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" = 0 ] && break
		sleep 1
	done
	psql_b -c "ALTER SYSTEM RESET apikeys.usage_write_delay" -c "SELECT pg_reload_conf()" -c "CHECKPOINT" >/dev/null
	idle_machine
}

fixed_script() {
	local key=$1 f="$TMPDIR_APIKEYS/$NAME/verify_fixed.sql"
	echo "SELECT (apikeys.apikey_verify('$key')).valid;" > "$f"
	echo "$f"
}

say "latency of a random-key verify by table size (1 client, ms per call)"
declare -A LAT
for size in $SIZES; do
	grow_to "$size"
	LAT[$size]=$(pgbench_lat "$BENCH_DIR/verify_random.sql" -D nkeys="$size")
	printf '  %10s keys: verify %s ms\n' "$size" "${LAT[$size]}"
done
[ -n "${BENCH_LATENCY_ONLY:-}" ] && exit 0
grow_to "$KEYS"

# the fixed key: tracking on (always, when preloaded) and a rate limit that never bites
FIXED=$(psql_b -At -c "SELECT k FROM bench_keys WHERE id = 1")
psql_b -c "SELECT apikeys.apikey_set_policy(key_id, rate_limit => 2000000000, rate_window => '1 second') FROM apikeys.apikey_verify('$FIXED')" >/dev/null
# the fixed key with three named limits (limits v2) and credits, none of
# which bites either
FIXED3=$(psql_b -At -c "SELECT k FROM bench_keys WHERE id = 2")
psql_b -c "SELECT apikeys.apikey_set_limits(key_id, ARRAY[('second', 2000000000, '1 second'),
             ('minute', 2000000000, '1 minute'), ('day', 2000000000, '1 day')]::apikeys.named_limit[]),
                  apikeys.apikey_set_credits(key_id, 9000000000000000)
           FROM apikeys.apikey_verify('$FIXED3')" >/dev/null
psql_b -c "INSERT INTO bench_rotate (key_id) SELECT c.key_id FROM generate_series(1, 1000) g, LATERAL apikeys.apikey_create('bench', 'rot ' || g) c" >/dev/null

# Warm-up: one verify of every key fills the policy cache, as steady traffic
# would; its million counts are written before measuring.
say "warm-up: one verify of each key"
psql_b -c "SELECT count(*) FROM bench_keys WHERE (apikeys.apikey_verify(k)).valid" >/dev/null
quiet

say "throughput ($CLIENTS clients, prepared, ${SECS}s each)"
# a short unmeasured run first: the first run after the warm-up's writes and
# checkpoint is consistently slower, whatever it runs
SECS=3 pgbench_tps "$BENCH_DIR/select1.sql" >/dev/null
# (5) right after (1): both are a few microseconds of server time, so a
# drift of the machine between distant runs would swamp their difference
T_SELECT1=$(pgbench_tps "$BENCH_DIR/select1.sql")
T_BAD=$(pgbench_tps "$BENCH_DIR/malformed.sql")
T_FIXED=$(pgbench_tps "$(fixed_script "$FIXED")")
T_FIXED3=$(pgbench_tps "$(fixed_script "$FIXED3")")
T_RANDOM=$(pgbench_tps "$BENCH_DIR/verify_random.sql" -D nkeys="$KEYS")
T_FETCH=$(pgbench_tps "$BENCH_DIR/fetch_random.sql" -D nkeys="$KEYS")
T_HW=$(pgbench_tps "$BENCH_DIR/handwritten.sql" -D nkeys="$KEYS")
T_HWRO=$(pgbench_tps "$BENCH_DIR/handwritten_ro.sql" -D nkeys="$KEYS")
T_CREATE=$(pgbench_tps "$BENCH_DIR/create.sql")
T_ROTATE=$(pgbench_tps "$BENCH_DIR/rotate.sql")

# (3) again with limits on every key: one (a rate limit, as in 1.0), then two
# named limits; each change goes through the triggers (audited, cached
# policies retired) and a warm-up loads the new policies.  Fetch alone is run
# again next to them so that the two ratios come from neighbouring runs.
with_limits() {
	psql_b -c "UPDATE apikeys.credential SET $1 WHERE tenant = 'bench'" >/dev/null
	# the runs before left unwritten counts in entries that may not be
	# evicted until written: write them first, so that the new policies'
	# entries find room (as they would once the write delay has passed)
	quiet
	local valid
	valid=$(psql_b -At -c "SELECT count(*) FROM bench_keys WHERE (apikeys.apikey_verify(k)).valid")
	# a key refused in the warm-up (limits_unavailable) would make the run invalid
	[ "$valid" = "$KEYS" ] || echo "warning: only $valid of $KEYS keys verified valid with limits ($1): this run is not comparable" >&2
	pgbench_tps "$BENCH_DIR/verify_random.sql" -D nkeys="$KEYS"
}
say "random keys with one limit, then two named limits"
T_RANDOM1=$(with_limits "rate_limit = 2000000000, rate_window = '1 second'")
T_FETCH1=$(pgbench_tps "$BENCH_DIR/fetch_random.sql" -D nkeys="$KEYS")
T_RANDOM2=$(with_limits "rate_limit = NULL, rate_window = NULL,
	limits = ARRAY[('second', 2000000000, '1 second'), ('day', 2000000000, '1 day')]::apikeys.named_limit[]")
T_FETCH2=$(pgbench_tps "$BENCH_DIR/fetch_random.sql" -D nkeys="$KEYS")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cat <<TXT

  run                                            tps
  (1) SELECT 1                               $T_SELECT1
  (2) verify, fixed key, tracking+rate limit $T_FIXED
      the same, 3 named limits and credits   $T_FIXED3
  (3) verify, random of $KEYS keys        $T_RANDOM
      the same fetch alone                   $T_FETCH
      (3), every key with one rate limit     $T_RANDOM1
      the same fetch alone, next to it       $T_FETCH1
      (3), every key with two named limits   $T_RANDOM2
      the same fetch alone, next to it       $T_FETCH2
  (4) hand-written PL/pgSQL + UPDATE         $T_HW
      hand-written without the UPDATE        $T_HWRO
  (5) malformed key                          $T_BAD
      apikey_create (audited)                $T_CREATE
      apikey_rotate (audited, grace 0)       $T_ROTATE

  ratio                                   value  target
  (2) / (1)                               $(ratio "$T_FIXED" "$T_SELECT1")   >= 0.85
  (2, 3 named limits, credits) / (1)      $(ratio "$T_FIXED3" "$T_SELECT1")   >= 0.85
  (3) / hand-written with UPDATE          $(ratio "$T_RANDOM" "$T_HW")   >= 6
  (3) / hand-written without UPDATE       $(ratio "$T_RANDOM" "$T_HWRO")   >= 1.5
  (3) / fetch alone                       $(ratio "$T_RANDOM" "$T_FETCH")
  (3, one limit) / fetch alone            $(ratio "$T_RANDOM1" "$T_FETCH1")
  (3, two named limits) / fetch alone     $(ratio "$T_RANDOM2" "$T_FETCH2")   >= 0.9 x the one-limit ratio
  fetch alone / hand-written w/o UPDATE   $(ratio "$T_FETCH" "$T_HWRO")   (ceiling of the 1.5 ratio)
  (5) / (1)                               $(ratio "$T_BAD" "$T_SELECT1")   >= 0.95
TXT
psql_b -c "SELECT shmem_bytes, cache_capacity, cache_entries, cache_hits, cache_misses, tracked_capacity, tracked_keys, flushed_rows, flush_errors FROM apikeys.runtime"
