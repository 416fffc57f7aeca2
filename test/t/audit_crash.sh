#!/usr/bin/env bash
# test/t/audit_crash.sh - a crash under management load loses no audit row of
# a committed change, and the chains go on after the restart.
#
# 8 pgbench clients run the management load of test/t/audit_load.bash
# (create, rotate, update, revoke over nine tenants, one hot; each call
# logged in public.ops in its own transaction) with a per-transaction log.
# Once at least 300 calls committed, and pgbench still running, the server
# is stopped with pg_ctl -m immediate (a crash: no shutdown checkpoint, the
# in-flight transactions die), then started again (crash recovery).  Then:
#   - every transaction pgbench saw commit, per script, is in public.ops
#     (and at most one per client more: a commit whose answer was lost);
#   - the audit holds exactly the committed changes (audit_load.bash's
#     audit_consistency: audit_check() ok, chains numbered and linked, one
#     key_created per key, rotations, updates and revocations counted);
#   - a second load of 6 clients x 30 transactions after the restart
#     commits fully, every chain written by it continues from its head
#     before (ids go on from there), and the same checks pass again.
#
# Own cluster: tmp/t_audit_crash, port 54311; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/audit_load.bash"

NAME=t_audit_crash
PORT=54311
DIR=$TMPDIR_APIKEYS/$NAME
CLIENTS=8
MIN_COMMITTED=300

cleanup() {
	local pids
	pids=$(jobs -p)
	[ -z "$pids" ] || kill -- $pids 2>/dev/null || true
	cluster_stop "$NAME" 2>/dev/null ||
		as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
	if [ -f "$DIR/data/postmaster.pid" ]; then
		kill -9 -- "$(head -n 1 "$DIR/data/postmaster.pid")" 2>/dev/null || true
	fi
}
trap cleanup EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
qa() { cluster_psql "$NAME" "$PORT" -d postgres -qAt "$@"; }
pg_ctl_do() { as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w "$@" >/dev/null; }

check_consistent() {
	local problems
	problems=$(audit_consistency) || die "$1: the consistency query failed"
	[ -z "$problems" ] || { echo "$problems" | head -n 30; die "$1: $(echo "$problems" | wc -l) audit inconsistencies (above)"; }
	ok "$1: audit_check ok over $(qa -c "SELECT rows_checked FROM apikeys.audit_check()") rows; every committed call audited exactly once"
}

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "max_connections = 40" \
	"restart_after_crash = on"
audit_load_setup
SCRIPTS=$(audit_load_scripts)
# a checkpoint now, so that recovery replays only the load
qa -c CHECKPOINT

echo "== load of $CLIENTS clients, crash once $MIN_COMMITTED calls committed"
rm -f "$DIR"/pgbench_log*
# shellcheck disable=SC2086  # $SCRIPTS is a list of -f arguments
"$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T 60 -l --log-prefix="$DIR/pgbench_log" $SCRIPTS \
	-h "$DIR" -p "$PORT" -U postgres postgres >"$DIR/pgbench.log" 2>&1 &
BENCH=$!
committed=0
for i in $(seq 1 300); do   # 30 s at most
	committed=$(qa -c "SELECT count(*) FROM public.ops")
	[ "$committed" -ge $MIN_COMMITTED ] && break
	kill -0 $BENCH 2>/dev/null || { cat "$DIR/pgbench.log"; die "pgbench ended before the crash"; }
	sleep 0.1
done
[ "$committed" -ge $MIN_COMMITTED ] || die "only $committed calls committed after 30 s"
kill -0 $BENCH 2>/dev/null || { cat "$DIR/pgbench.log"; die "pgbench ended before the crash"; }
pg_ctl_do -m immediate stop
ok "crashed (pg_ctl -m immediate) with pgbench running, $committed calls seen committed just before"

# pgbench's clients lose their connections and stop; the rest of its run is void
for i in $(seq 1 150); do kill -0 $BENCH 2>/dev/null || break; sleep 0.1; done
kill -0 $BENCH 2>/dev/null && die "pgbench still running 15 s after the crash"
wait $BENCH || true
[ "$(grep -c '^number of transactions actually processed' "$DIR/pgbench.log")" = 1 ] || { cat "$DIR/pgbench.log"; die "pgbench did not report"; }

pg_ctl_do start
grep -q 'database system was interrupted\|was not properly shut down' "$DIR/server.log" ||
	die "the server log shows no crash recovery"
ok "restarted after crash recovery"

# what pgbench saw commit, per script (4th field of its log: the script
# number; a completed transaction has its latency as 3rd field)
acked=$(cat "$DIR"/pgbench_log* | awk '$3 ~ /^[0-9]+$/ { n[$4]++ } END { printf "%d %d %d %d\n", n[0], n[1], n[2], n[3] }')
ops=$(ops_counts)
read -r -a A <<<"$acked"
read -r -a O <<<"$ops"
extra=0
for i in 0 1 2 3; do
	[ "${O[$i]}" -ge "${A[$i]}" ] || die "pgbench saw ${A[$i]} commits of script $i, public.ops has ${O[$i]}: acknowledged commits were lost"
	extra=$((extra + O[i] - A[i]))
done
[ $extra -le $CLIENTS ] || die "public.ops has $extra calls more than pgbench saw commit, with $CLIENTS clients"
ok "every acknowledged call survived: pgbench saw '$acked' (create rotate update revoke), public.ops holds '$ops'"

check_consistent "after the crash"

echo "== load after the restart: the chains continue"
before=$(qa -c "SELECT string_agg(chain || ':' || audit_id, ' ' ORDER BY chain) FROM apikeys.audit_head()")
n_before=$(qa -c "SELECT count(*) FROM public.ops")
# shellcheck disable=SC2086
if ! "$PGBIN/pgbench" -n -M prepared -c 6 -j 2 -t 30 $SCRIPTS \
		-h "$DIR" -p "$PORT" -U postgres postgres >"$DIR/pgbench2.log" 2>&1; then
	cat "$DIR/pgbench2.log"; die "pgbench after the restart failed"
fi
grep -q "number of transactions actually processed: 180/180" "$DIR/pgbench2.log" ||
	{ cat "$DIR/pgbench2.log"; die "pgbench after the restart did not process 180 transactions"; }
[ $(( $(qa -c "SELECT count(*) FROM public.ops") - n_before )) -eq 180 ] || die "public.ops did not grow by 180"
check_consistent "after the restart and 180 more calls"
# every chain written after the restart goes on from its head before: the
# first row after it is head + 1 and links to the head's hash (the walk in
# audit_consistency checks the link; here: it was written after the crash)
moved=$(qa -c "SELECT count(*) FROM apikeys.audit_head() h
                 JOIN (SELECT * FROM unnest(string_to_array('$before', ' ')) x) b
                   ON split_part(b.x, ':', 1) = h.chain
                WHERE h.audit_id > split_part(b.x, ':', 2)::bigint")
[ "$moved" -ge 1 ] || die "no chain grew after the restart (heads before: $before)"
ok "$moved chains went on after the restart (heads before: $before; after: $(chain_heads))"
echo "PASS"
