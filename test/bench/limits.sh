#!/usr/bin/env bash
# test/bench/limits.sh - the cost of named limits and credits on verify, in
# alternating rounds (not a pass/fail test).
#
#   test/bench/limits.sh                         1,000,000 keys, 5 rounds of 5 s runs
#   BENCH_KEYS=100000 BENCH_ROUNDS=3 BENCH_SECONDS=3 test/bench/limits.sh
#
# One throwaway server (apikeys preloaded), pgbench in prepared mode with 4
# clients.  The keys with odd ids carry one rate limit, those with even ids
# two named limits; key 2 carries three named limits and credits instead.
# None of the limits ever bites.  Each round runs, one after the other and
# each after the same quiet() as test/bench/run.sh:
#   SELECT 1
#   verify of key 1 (one limit), verify of key 2 (three limits + credits)
#   fetch alone: the key's text from bench_keys, random among all keys
#   verify of a random odd key (one limit), of a random even key (two limits)
# starting one run later each round, so that no configuration always
# follows the same one.  A ratio is taken within each round, and the median
# of the rounds is reported: on a shared two-core machine a run drifts by
# 20 % or more from one minute to the next, which swamps the differences
# measured here when runs minutes apart are compared.
source "$(cd "$(dirname "$0")/../.." && pwd)/scripts/lib.sh"
source "$ROOT/test/bench/bench_lib.sh"

KEYS=${BENCH_KEYS:-1000000}
SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-5}
CLIENTS=${BENCH_CLIENTS:-4}
SHARED_BUFFERS=${BENCH_SHARED_BUFFERS:-1GB}
PORT=54390
NAME=bench_limits
DIR=$TMPDIR_APIKEYS/$NAME
HALF=$(( KEYS / 2 ))

ensure_deps
build_install
# every key's policies cached (1.5 x the keys); usage entries: one per key
# and limit (an entry holding an open window is never evicted), 3 x the keys
SLOTS=$(( KEYS * 3 / 2 ))
TRACKED=$(( KEYS * 3 ))
huge_pages_on "$SHARED_BUFFERS" $(( (SLOTS + TRACKED) * 550 ))
say "shared memory: $HUGE"
finish() {
	cluster_stop $NAME
	huge_pages_off
}
trap finish EXIT
cluster_start $NAME $PORT "shared_preload_libraries = 'apikeys'" "shared_buffers = '$SHARED_BUFFERS'" "fsync = on" \
	"max_connections = 50" "apikeys.tenant_share = 1" "apikeys.cache_entries = $SLOTS" \
	"apikeys.tracked_keys = $TRACKED" "max_wal_size = '4GB'" "$HUGE"
psql_b() { cluster_psql $NAME $PORT -q -d postgres "$@"; }

# quiet: every pending usage count written, no autovacuum at work, a
# checkpoint and the CPUs idle, so that no run pays for the one before it
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

# tps SCRIPT: one run after quiet(), prints tps
tps() {
	quiet
	"$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECS" -D nkeys="$KEYS" -D half="$HALF" \
		-h "$DIR" -p $PORT -U postgres -f "$1" postgres 2>&1 | awk '/^tps/ {printf "%.0f", $3}' || true
}

say "loading $KEYS keys"
psql_b <<SQL
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('bench') IS NOT NULL;
CREATE TABLE bench_keys (id int PRIMARY KEY, key_id uuid NOT NULL, k text NOT NULL);
SQL
# real keys through apikey_create_many (audited), two sessions at a time
have=0
while [ "$have" -lt "$KEYS" ]; do
	step=$(( KEYS - have < 200000 ? KEYS - have : 200000 ))
	for part in 0 1; do
		from=$(( have + 1 + part * (step / 2) ))
		count=$(( part == 0 ? step / 2 : step - step / 2 ))
		psql_b -c "INSERT INTO bench_keys (id, key_id, k)
			SELECT $from - 1 + row_number() OVER (), c.key_id, c.api_key
			  FROM apikeys.apikey_create_many('bench', ARRAY(SELECT 'bench ' || g FROM generate_series(1, $count) g)) c" &
	done
	wait
	have=$(( have + step ))
done
say "limits: one on odd keys, two named limits on even keys, three and credits on key 2"
psql_b <<'SQL'
UPDATE apikeys.credential c SET rate_limit = 2000000000, rate_window = '1 second'
  FROM bench_keys b WHERE b.key_id = c.key_id AND b.id % 2 = 1;
UPDATE apikeys.credential c
   SET limits = ARRAY[('second', 2000000000, '1 second'), ('day', 2000000000, '1 day')]::apikeys.named_limit[]
  FROM bench_keys b WHERE b.key_id = c.key_id AND b.id % 2 = 0 AND b.id <> 2;
SELECT apikeys.apikey_set_limits(key_id, ARRAY[('second', 2000000000, '1 second'),
         ('minute', 2000000000, '1 minute'), ('day', 2000000000, '1 day')]::apikeys.named_limit[]),
       apikeys.apikey_set_credits(key_id, 9000000000000000)
  FROM bench_keys WHERE id = 2 \g /dev/null
VACUUM ANALYZE;
SQL

cat >"$DIR/select1.sql" <<'EOF2'
SELECT 1;
EOF2
for i in 1 2; do
	echo "SELECT (apikeys.apikey_verify('$(psql_b -At -c "SELECT k FROM bench_keys WHERE id = $i")')).valid;" >"$DIR/fixed$i.sql"
done
cat >"$DIR/fetch.sql" <<'EOF2'
\set id random(1, :nkeys)
SELECT (SELECT k FROM bench_keys WHERE id = :id) IS NOT NULL;
EOF2
cat >"$DIR/random1.sql" <<'EOF2'
\set id 2 * random(1, :half) - 1
SELECT (apikeys.apikey_verify((SELECT k FROM bench_keys WHERE id = :id))).valid;
EOF2
cat >"$DIR/random2.sql" <<'EOF2'
\set id 2 * random(1, :half)
SELECT (apikeys.apikey_verify((SELECT k FROM bench_keys WHERE id = :id))).valid;
EOF2
chmod a+r "$DIR"/*.sql

# one verify of every key fills the policy cache, as steady traffic would;
# a key refused here (limits_unavailable) would make the runs meaningless
say "warm-up: one verify of each key"
valid=$(psql_b -At -c "SELECT count(*) FROM bench_keys WHERE (apikeys.apikey_verify(k)).valid")
[ "$valid" = "$KEYS" ] || echo "warning: only $valid of $KEYS keys verified valid: these runs are not comparable" >&2
# a short unmeasured run first: the first run after a load is slower
SECS=3 tps "$DIR/random2.sql" >/dev/null

RUNS=(select1 fixed1 fixed2 fetch random1 random2)
declare -A T
say "$ROUNDS rounds of ${#RUNS[@]} runs ($CLIENTS clients, prepared, ${SECS}s each)"
printf '  %-6s' round; printf '%10s' "${RUNS[@]}"; echo
for r in $(seq 1 "$ROUNDS"); do
	for j in $(seq 0 $(( ${#RUNS[@]} - 1 ))); do
		run=${RUNS[$(( (j + r - 1) % ${#RUNS[@]} ))]}
		T[$run,$r]=$(tps "$DIR/$run.sql")
	done
	printf '  %-6s' "$r"; for run in "${RUNS[@]}"; do printf '%10s' "${T[$run,$r]}"; done; echo
done

# ratios A B: the per-round ratios of run A to run B
ratios() {
	local r
	for r in $(seq 1 "$ROUNDS"); do
		awk -v a="${T[$1,$r]}" -v b="${T[$2,$r]}" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.3f\n", a / b }'
	done
}
line() {   # line LABEL A B TARGET
	local rs
	rs=$(ratios "$2" "$3" | tr '\n' ' ')
	# shellcheck disable=SC2086
	printf '  %-48s %6s   %-9s %s\n' "$1" "$(median $rs)" "$4" "$(printf '%.2f ' $rs)"
}
echo
printf '  %-48s %6s   %-9s %s\n' ratio median target "each round"
line "fixed key, one limit / SELECT 1" fixed1 select1 ">= 0.85"
line "fixed key, 3 named limits + credits / SELECT 1" fixed2 select1 ">= 0.85"
line "random key, one limit / fetch alone" random1 fetch ""
line "random key, two named limits / fetch alone" random2 fetch ""
line "two named limits / one limit (random keys)" random2 random1 ">= 0.90"
psql_b -c "SELECT shmem_bytes, cache_capacity, cache_entries, tracked_capacity, tracked_keys, flush_errors FROM apikeys.runtime"
