#!/usr/bin/env bash
# test/t/credits_concurrency.sh - credits hold exactly under concurrency:
# 8 pgbench clients (prepared mode), 800 verifications per step.
#
#   1. one key with 300 credits: exactly 300 pass, and key_usage says 300
#      spent, 0 left.
#   2. cost 3 against 100 credits: exactly 33 pass (99 credits), 1 left.
#   3. 8 keys of 50 credits each under a tenant limit of 300 an hour (400
#      credits in all): exactly 300 pass, and the keys' spent credits add up
#      to 300 (a call the tenant refuses spends no credit).
#   4. top-ups during use: a key with 100 credits; one script in ten adds
#      a credit instead of verifying (about 80 in all, so the credits run out
#      while top-ups go on).  Successes never exceed 100 plus what was added,
#      and key_usage's spent + left = balance = 100 + added.
#
# Own cluster: tmp/t_credits, port 54389; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_credits
PORT=54389
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

# run_bench SCRIPT[@WEIGHT]...: $TOTAL transactions from $CLIENTS prepared
# clients, each transaction one of the scripts
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

# script NAME TENANT COST NKEYS: verify a random one of TENANT's NKEYS keys
# (table k) with COST, and note the verdict in table outcome
script() {
	local f=$DIR/$1.sql
	cat >"$f" <<-SQL
	\set n random(1, $4)
	INSERT INTO outcome SELECT '$2', $3, (apikeys.apikey_verify(k.api_key, NULL, NULL, $3)).valid
	  FROM k WHERE k.tenant = '$2' AND k.n = :n;
	SQL
	chmod a+r "$f"
	echo "$f"
}

# keys TENANT N CREDITS: a tenant with N keys of CREDITS credits each
keys() {
	qa -c "SELECT apikeys.tenant_create('$1')" \
	   -c "INSERT INTO k SELECT '$1', g, c.key_id, c.api_key
	         FROM generate_series(1, $2) g, LATERAL apikeys.apikey_create('$1', 'key' || g) c" \
	   -c "SELECT apikeys.apikey_set_credits(key_id, $3) FROM k WHERE tenant = '$1'" >/dev/null
}

passed() { qa -c "SELECT count(*) FILTER (WHERE valid) FROM outcome WHERE tenant = '$1'"; }
# the tenant's keys in key_usage: sum of balance|spent|left
usage() {
	qa -c "SELECT sum(u.usage_limit) || '|' || sum(u.used) || '|' || sum(u.usage_remaining)
	         FROM apikeys.key_usage u JOIN k USING (key_id) WHERE k.tenant = '$1'"
}

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "max_connections = 40"
qa -c 'CREATE EXTENSION apikeys CASCADE' \
   -c 'CREATE TABLE k (tenant text, n integer, key_id uuid, api_key text)' \
   -c 'CREATE TABLE outcome (tenant text, cost integer, valid boolean)' \
   -c 'CREATE TABLE added (amount bigint)' >/dev/null

echo "== 1. one key, 300 credits, $TOTAL calls"
keys acme 1 300
run_bench "$(script one acme 1 1)"
got=$(passed acme)
[ "$got" = 300 ] || die "300 credits: $got calls passed"
[ "$(usage acme)" = "300|300|0" ] || die "key_usage balance|spent|left = '$(usage acme)', expected 300|300|0"
ok "exactly 300 passed; 300 spent, 0 left"

echo "== 2. cost 3, 100 credits"
keys beta 1 100
run_bench "$(script two beta 3 1)"
got=$(passed beta)
[ "$got" = 33 ] || die "cost 3 against 100 credits: $got calls passed, expected 33"
[ "$(usage beta)" = "100|99|1" ] || die "key_usage balance|spent|left = '$(usage beta)', expected 100|99|1"
ok "exactly 33 passed (99 of 100 credits)"

echo "== 3. 8 keys of 50 credits under a tenant limit of 300 an hour"
keys gamma 8 50
qa -c "SELECT apikeys.tenant_set_limits('gamma', ARRAY[('all', 300, '1 hour')]::apikeys.named_limit[])" >/dev/null
run_bench "$(script three gamma 1 8)"
got=$(passed gamma)
[ "$got" = 300 ] || die "tenant limit 300 over 400 credits: $got calls passed"
[ "$(usage gamma)" = "400|300|100" ] || die "key_usage balance|spent|left = '$(usage gamma)', expected 400|300|100"
ok "exactly 300 passed; the keys spent 300 credits, 100 left"

echo "== 4. top-ups of 1 during use of 100 credits"
keys delta 1 100
topup=$DIR/topup.sql
cat >"$topup" <<-SQL
INSERT INTO added SELECT 1 FROM k WHERE k.tenant = 'delta' AND apikeys.apikey_add_credits(k.key_id, 1) IS NOT NULL;
SQL
chmod a+r "$topup"
run_bench "$(script four delta 1 1)@9" "$topup@1"
got=$(passed delta)
added=$(qa -c "SELECT coalesce(sum(amount), 0) FROM added")
[ "$added" -gt 0 ] || die "no top-up ran"
[ "$got" -le $((100 + added)) ] || die "$got calls passed with 100 credits and $added added"
IFS='|' read -r balance spent left < <(usage delta)
[ "$balance" = $((100 + added)) ] || die "balance is $balance after 100 and $added added"
[ "$spent" = "$got" ] || die "key_usage says $spent spent, $got calls passed"
[ "$left" = $((balance - spent)) ] || die "key_usage says $left left of $balance with $spent spent"
ok "$got passed of 100 + $added credits; spent $spent, left $left"

# the spent credits reach apikeys.usage
for i in $(seq 1 40); do
	[ "$(qa -c "SELECT sum(u.used) FROM apikeys.usage u JOIN k USING (key_id)")" = $((300 + 99 + 300 + got)) ] && break
	sleep 0.1
done
got_stored=$(qa -c "SELECT sum(u.used) FROM apikeys.usage u JOIN k USING (key_id)")
[ "$got_stored" = $((300 + 99 + 300 + got)) ] || die "apikeys.usage holds $got_stored spent credits, expected $((300 + 99 + 300 + got))"
ok "apikeys.usage holds every spent credit"

got=$(qa -c "SELECT flush_errors, tracking_dropped FROM apikeys.runtime")
[ "$got" = "0|0" ] || die "apikeys.runtime flush_errors|tracking_dropped = '$got', expected '0|0'"
echo PASS
