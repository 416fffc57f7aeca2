#!/usr/bin/env bash
# test/t/limits_named_concurrency.sh - named limits (limits v2) hold exactly
# under concurrency: 8 pgbench clients (prepared mode), each transaction on a
# random one of 8 keys of one tenant.
#
#   1. a tenant-wide limit holds across many keys: tenant 'all' 300 an hour,
#      each key 'own' 50 an hour (400 in all): 800 calls, exactly 300 pass.
#   2. costs add up: cost 3, tenant 'all' 100 tokens, each key 60: exactly
#      33 pass (99 tokens); the calls a key refuses give their tenant tokens
#      back, so the tenant's 33 are not fewer.
#   3. mixed costs on one tenant limit of 200: calls of cost 1 and 5; the
#      tokens of the successes add up to at most 200 and more than 195.
#   4. the key's own limit binds when it is the tighter: 'own' 10 per key,
#      tenant 1000: exactly 10 per key.
#   5. a verification that fails after its tenant's limits were charged (its
#      read of the key's stored credits times out on a lock, the error caught
#      by a savepoint) gives the tenant's charge back: three such failures and
#      one success leave 9 of 10 (shared memory does not roll back).
# The windows are an hour long: no call leaves them during a run.
#
# Own cluster: tmp/t_named_limits, port 54388; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_named_limits
PORT=54388
DIR=$TMPDIR_APIKEYS/$NAME
CLIENTS=8
PER_CLIENT=100
TOTAL=$((CLIENTS * PER_CLIENT))

cleanup() {
	cluster_stop "$NAME" 2>/dev/null ||
		as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
qa() { cluster_psql "$NAME" "$PORT" -d postgres -qAt "$@"; }

# run_bench SCRIPT...: $TOTAL transactions from $CLIENTS prepared clients,
# each transaction one of the scripts
run_bench() {
	local args=() f
	for f in "$@"; do args+=(-f "$f"); done
	if ! "$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -t "$PER_CLIENT" \
			"${args[@]}" -h "$DIR" -p "$PORT" -U postgres postgres >"$DIR/pgbench.log" 2>&1; then
		cat "$DIR/pgbench.log"
		die "pgbench failed"
	fi
	grep -q "number of transactions actually processed: $TOTAL/$TOTAL" "$DIR/pgbench.log" ||
		{ cat "$DIR/pgbench.log"; die "pgbench did not process $TOTAL transactions"; }
}

# script NAME TENANT COST: verify a random key of TENANT (table k) with COST,
# and note the verdict in table outcome
script() {
	local f=$DIR/$1.sql
	cat >"$f" <<-SQL
	\set n random(1, 8)
	INSERT INTO outcome SELECT '$2', $3, (apikeys.apikey_verify(k.api_key, NULL, NULL, $3)).valid
	  FROM k WHERE k.tenant = '$2' AND k.n = :n;
	SQL
	chmod a+r "$f"
	echo "$f"
}

# keys TENANT TENANT_LIMITS KEY_LIMITS: a tenant with 8 keys
keys() {
	qa -c "SELECT apikeys.tenant_create('$1')" \
	   -c "SELECT apikeys.tenant_set_limits('$1', $2::apikeys.named_limit[])" \
	   -c "INSERT INTO k SELECT '$1', g, c.key_id, c.api_key
	         FROM generate_series(1, 8) g, LATERAL apikeys.apikey_create('$1', 'key' || g) c" \
	   -c "SELECT apikeys.apikey_set_limits(key_id, $3::apikeys.named_limit[]) FROM k WHERE tenant = '$1'" >/dev/null
}

passed() { qa -c "SELECT count(*) FILTER (WHERE valid) FROM outcome WHERE tenant = '$1'"; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "max_connections = 40"
qa -c 'CREATE EXTENSION apikeys CASCADE' \
   -c 'CREATE TABLE k (tenant text, n integer, key_id uuid, api_key text)' \
   -c 'CREATE TABLE outcome (tenant text, cost integer, valid boolean)' >/dev/null

echo "== 1. tenant 'all' 300/hour over 8 keys of 'own' 50/hour, $TOTAL calls"
keys acme "ARRAY[('all', 300, '1 hour')]" "ARRAY[('own', 50, '1 hour')]"
run_bench "$(script one acme 1)"
got=$(passed acme)
[ "$got" = 300 ] || die "tenant-wide limit 300: $got calls passed"
got=$(qa -c "SELECT count(*) FROM outcome o WHERE tenant = 'acme'")
[ "$got" = $TOTAL ] || die "$got outcomes recorded, expected $TOTAL"
got=$(qa -c "SELECT sum(valid) FROM apikeys.key_usage u JOIN k USING (key_id) WHERE k.tenant = 'acme'")
[ "$got" = 300 ] || die "key_usage counts $got valid for acme's keys, expected 300"
ok "exactly 300 passed, over all 8 keys"

echo "== 2. cost 3: tenant 'all' 100 tokens, each key 60"
keys beta "ARRAY[('all', 100, '1 hour')]" "ARRAY[('own', 60, '1 hour')]"
run_bench "$(script two beta 3)"
got=$(passed beta)
[ "$got" = 33 ] || die "cost 3 against 100 tokens: $got calls passed, expected 33"
ok "exactly 33 passed (99 of 100 tokens)"

echo "== 3. costs 1 and 5 on one tenant limit of 200"
keys gamma "ARRAY[('all', 200, '1 hour')]" "NULL"
run_bench "$(script three_a gamma 1)" "$(script three_b gamma 5)"
got=$(qa -c "SELECT coalesce(sum(cost), 0) FROM outcome WHERE tenant = 'gamma' AND valid")
[ "$got" -le 200 ] && [ "$got" -gt 195 ] || die "mixed costs: the successes charged $got tokens, expected 196..200"
ok "the successes charged $got tokens of 200"

echo "== 4. each key's own limit of 10 under a tenant limit of 1000"
keys delta "ARRAY[('all', 1000, '1 hour')]" "ARRAY[('own', 10, '1 hour')]"
run_bench "$(script four delta 1)"
got=$(qa -c "SELECT sum(u.valid), min(u.valid), max(u.valid) FROM apikeys.key_usage u JOIN k USING (key_id) WHERE k.tenant = 'delta'")
[ "$got" = "80|10|10" ] || die "per-key limit 10 over 8 keys: key_usage sum|min|max = '$got', expected '80|10|10'"
ok "exactly 10 per key"

echo "== 5. failed verifications give their tenant charges back"
keys eps "ARRAY[('all', 10, '1 hour')]" "NULL"
qa -c "SELECT apikeys.apikey_set_credits(key_id, 100) FROM k WHERE tenant = 'eps' AND n = 1" >/dev/null
# the verifying session opens its catalog with a first verification (of a
# key without credits), then has another session take apikeys.usage (\!), so
# its next verification's read of the stored credits waits, and times out
cat >"$DIR/locker.sh" <<-SH
	"$PGBIN/psql" -X -qAt -h "$DIR" -p $PORT -U postgres -d postgres \\
	  -c "BEGIN" -c "LOCK TABLE apikeys.usage IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(3)" -c "COMMIT" >/dev/null &
	for _ in \$(seq 1 100); do
	  [ "\$("$PGBIN/psql" -X -qAt -h "$DIR" -p $PORT -U postgres -d postgres -c "SELECT count(*) FROM pg_locks
	     WHERE relation = 'apikeys.usage'::regclass AND mode = 'AccessExclusiveLock' AND granted")" = 1 ] && exit 0
	  sleep 0.05
	done
	exit 1
SH
got=$(qa -f - 2>&1 <<SQL
SELECT (apikeys.apikey_verify(api_key)).code IS NOT NULL FROM k WHERE tenant = 'delta' AND n = 1;
\\! bash $DIR/locker.sh
SET lock_timeout = '200ms';
DO \$\$
DECLARE
    caught integer := 0;
BEGIN
    FOR i IN 1..3 LOOP
        BEGIN
            PERFORM apikeys.apikey_verify((SELECT api_key FROM k WHERE tenant = 'eps' AND n = 1));
        EXCEPTION WHEN lock_not_available THEN
            caught := caught + 1;
        END;
    END LOOP;
    RAISE NOTICE 'caught %', caught;
END \$\$;
SQL
)
case "$got" in *"caught 3"*) ;; *) die "three verifications under the lock: '$got', expected three lock timeouts caught" ;; esac
# the locker's transaction ends after its sleep
for _ in $(seq 1 100); do
	[ "$(qa -c "SELECT count(*) FROM pg_locks WHERE relation = 'apikeys.usage'::regclass AND mode = 'AccessExclusiveLock'")" = 0 ] && break
	sleep 0.1
done
got=$(qa -c "SELECT (apikeys.apikey_verify(api_key)).code FROM k WHERE tenant = 'eps' AND n = 1" \
	-c "SELECT remaining FROM apikeys.last_verify_limits() WHERE scope = 'tenant'")
[ "$got" = "valid
9" ] || die "after three failed verifications and one success: '$got', expected valid and 9 of the tenant's 10 left"
ok "the failed verifications were given back (9 of 10 left)"

got=$(qa -c "SELECT flush_errors, tracking_dropped FROM apikeys.runtime")
[ "$got" = "0|0" ] || die "apikeys.runtime flush_errors|tracking_dropped = '$got', expected '0|0'"
echo PASS
