#!/usr/bin/env bash
# test/t/worker_exit.sh - a flush worker ended by an error (here a cancel,
# pg_cancel_backend: outside a turn's transaction the worker has no error
# handler, so the error ends it) leaves nothing stuck:
#   - a batch it had written but not yet retired (an older snapshot was
#     still open) is settled: the key's later uses are written by the next
#     worker, not kept in memory for ever;
#   - counts still waiting when it ends are written by a successor it
#     starts itself, with no further verify in the database to start one.
#
# Own cluster: tmp/t_wexit, port 54387; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_wexit
PORT=54387
BG=
trap '[ -z "$BG" ] || kill $BG 2>/dev/null; cluster_stop $NAME || true' EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
qa() { cluster_psql "$NAME" "$PORT" -d postgres -qAt "$@"; }
worker_pid() { qa -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'apikeys usage flush'"; }
written() { qa -c "SELECT coalesce(sum(count_valid), 0) FROM apikeys.usage"; }
verify() {
	[ "$(qa -c "SELECT count(*) FILTER (WHERE (apikeys.apikey_verify('$KEY')).valid) FROM generate_series(1, $1)")" = "$1" ] ||
		die "the key did not verify $1 times"
}
# wait_for WHAT CMD VALUE: poll CMD for 15 s until it prints VALUE
wait_for() {
	local got
	for _ in $(seq 1 150); do
		got=$(eval "$2")
		[ "$got" = "$3" ] && return 0
		sleep 0.1
	done
	die "$1: $got after 15 s, expected $3"
}
# cancel_worker: cancel the running worker and wait for it to be gone
cancel_worker() {
	local pid
	pid=$(worker_pid)
	[ -n "$pid" ] || die "no flush worker running"
	qa -c "SELECT pg_cancel_backend($pid)" >/dev/null
	for _ in $(seq 1 100); do
		qa -c "SELECT 1 FROM pg_stat_activity WHERE pid = $pid" | grep -q 1 || return 0
		sleep 0.1
	done
	die "worker $pid still running 10 s after its cancel"
}

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" \
	"apikeys.flush_interval = '1s'" "apikeys.usage_write_delay = 0"
KEY=$(qa <<'SQL' | tail -1
SET client_min_messages = warning;
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme') IS NOT NULL;
SELECT api_key FROM apikeys.apikey_create('acme', 'k');
SQL
)

echo "== a batch written but not retired when the worker ends"
# an open snapshot older than the write keeps the batch from being retired
# (readers with that snapshot still add its counts; up to 10 s)
cluster_psql "$NAME" "$PORT" -d postgres -qAt \
	-c "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1; SELECT pg_sleep(30); COMMIT" >/dev/null 2>&1 &
BG=$!
wait_for "the old snapshot" \
	"qa -c \"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND backend_xmin IS NOT NULL AND pid <> pg_backend_pid()\"" 1
verify 3
wait_for "uses written" written 3
sleep 1		# a worker cancelled younger than 1 s has its successor wait that long
cancel_worker
ok "worker cancelled with a written batch waiting to be retired"
qa -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()" >/dev/null
wait $BG 2>/dev/null || true
BG=
verify 2
wait_for "uses after the cancel written" written 5
ok "the key's later uses are written by the next worker"
[ "$(qa -c "SELECT valid FROM apikeys.key_usage")" = 5 ] || die "key_usage does not count 5 uses"
ok "key_usage counts each use once"

echo "== counts waiting when the worker ends"
qa -c "ALTER SYSTEM SET apikeys.flush_interval = '1h'" \
   -c "ALTER SYSTEM SET apikeys.usage_write_delay = '1h'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 2		# the worker's turn with the old interval, then an hour's wait
verify 4
sleep 1
[ "$(written)" = 5 ] || die "uses written before the cancel: the test needs them pending"
[ "$(qa -c "SELECT valid FROM apikeys.key_usage")" = 9 ] || die "key_usage does not count 9 uses"
old=$(worker_pid)
cancel_worker
# no verify from here on: only the cancelled worker can start a successor
wait_for "pending uses written by a successor" written 9
new=$(worker_pid)
[ -n "$new" ] && [ "$new" != "$old" ] || die "no successor worker (was $old, now '$new')"
ok "a successor worker ($new) wrote the 4 pending uses"
grep -q "canceling statement due to user request" "$TMPDIR_APIKEYS/$NAME/server.log" ||
	die "the server log does not show the worker's cancel"
echo "ok: a flush worker ended by an error leaves no count stuck or unwritten"
