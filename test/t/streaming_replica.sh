#!/usr/bin/env bash
# test/t/streaming_replica.sh - apikey_verify on a hot standby and in READ
# ONLY transactions, and a standby never answers from a stale policy.
#
# A primary (wal_level replica) and a streaming standby made with
# pg_basebackup -R, both preloading apikeys.  Keys are created and changed on
# the primary; after each change has been replayed, the standby must answer
# with the new verdict (standbys bypass the shared policy cache: WAL replay
# fires no trigger, so nothing retires cached entries there):
#   valid -> (rate limit set) valid, then rate_limited in memory
#   valid -> revoked;  valid -> disabled -> valid (enable);
#   valid -> tenant_inactive (tenant deactivated) -> valid (reactivated).
# Verify is also checked in a READ ONLY transaction on the primary.
#
# Own clusters: tmp/t_repl_primary (port 54381), tmp/t_repl_standby (54382);
# stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

PRIMARY=t_repl_primary
PPORT=54381
STANDBY=t_repl_standby
SPORT=54382
PDIR=$TMPDIR_APIKEYS/$PRIMARY
SDIR=$TMPDIR_APIKEYS/$STANDBY

stop_any() {
	local name=$1 dir=$TMPDIR_APIKEYS/$1
	cluster_stop "$name" 2>/dev/null ||
		as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	if [ -f "$dir/data/postmaster.pid" ]; then
		kill -9 -- "$(head -n 1 "$dir/data/postmaster.pid")" 2>/dev/null || true
	fi
}
cleanup() {
	local pids
	pids=$(jobs -p)
	[ -z "$pids" ] || kill -- $pids 2>/dev/null || true
	stop_any "$STANDBY"
	stop_any "$PRIMARY"
}
trap cleanup EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
qp() { cluster_psql "$PRIMARY" "$PPORT" -d postgres -qAt "$@"; }
qs() { cluster_psql "$STANDBY" "$SPORT" -d postgres -qAt "$@"; }

# wait until the standby has replayed everything the primary has written
wait_replay() {
	local lsn i
	lsn=$(qp -c 'SELECT pg_current_wal_lsn()')
	for i in $(seq 1 100); do
		[ "$(qs -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")" = t ] && return 0
		sleep 0.1
	done
	die "standby did not replay up to $lsn within 10 s"
}

# verify_ro Q KEY: the verdict code of KEY inside a READ ONLY transaction
verify_ro() {
	local q=$1 key=$2
	$q -c 'BEGIN READ ONLY' -c "SELECT code FROM apikeys.apikey_verify('$key')" -c 'COMMIT'
}

# expect_code Q KEY CODE WHAT
expect_code() {
	local got
	got=$(verify_ro "$1" "$2")
	[ "$got" = "$3" ] || die "$4: verify gave '$got', expected '$3'"
	ok "$4: $3"
}

cluster_start "$PRIMARY" "$PPORT" "shared_preload_libraries = 'apikeys'" \
	"apikeys.flush_interval = '200ms'" "wal_level = replica" "max_wal_senders = 4" \
	"hot_standby = on"

qp -c 'CREATE EXTENSION apikeys CASCADE' >/dev/null
qp -c "SELECT apikeys.tenant_create('acme')" -c "SELECT apikeys.tenant_create('beta')" >/dev/null
IFS='|' read -r ID1 KEY1 < <(qp -c "SELECT key_id, api_key FROM apikeys.apikey_create('acme', 'to_revoke')")
IFS='|' read -r ID2 KEY2 < <(qp -c "SELECT key_id, api_key FROM apikeys.apikey_create('acme', 'to_disable')")
IFS='|' read -r ID3 KEY3 < <(qp -c "SELECT key_id, api_key FROM apikeys.apikey_create('beta', 'tenant_off')")
[ -n "$KEY1" ] && [ -n "$KEY2" ] && [ -n "$KEY3" ] || die "could not create keys"

echo "== making the standby with pg_basebackup -R"
stop_any "$STANDBY"
as_pg rm -rf "$SDIR"
as_pg mkdir -p "$SDIR"
as_pg "$PGBIN/pg_basebackup" -D "$SDIR/data" -h "$PDIR" -p "$PPORT" -U postgres -R -X stream -c fast \
	>"$SDIR/basebackup.log" 2>&1 || { cat "$SDIR/basebackup.log"; die "pg_basebackup failed"; }
{
	echo "port = $SPORT"
	echo "unix_socket_directories = '$SDIR'"
	echo "hot_standby = on"
} | as_pg tee -a "$SDIR/data/postgresql.conf" >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$SDIR/data" -l "$SDIR/server.log" -w start >/dev/null ||
	{ tail -n 20 "$SDIR/server.log"; die "standby did not start"; }
[ "$(qs -c 'SELECT pg_is_in_recovery()')" = t ] || die "standby is not in recovery"
[ "$(qs -c 'SELECT preloaded FROM apikeys.runtime')" = t ] || die "apikeys is not preloaded on the standby"
wait_replay

echo "== READ ONLY verify on the primary and on the standby"
expect_code qp "$KEY1" valid "primary, READ ONLY"
expect_code qs "$KEY1" valid "standby, READ ONLY"
expect_code qs "$KEY2" valid "standby, second key"
expect_code qs "$KEY3" valid "standby, key of tenant beta"
# the same again: any cache on the standby would now be filled
expect_code qs "$KEY1" valid "standby, again"
got=$(qs -c "SELECT code FROM apikeys.apikey_verify('not-a-key')")
[ "$got" = malformed ] || die "standby: garbage gave '$got'"

echo "== rate limit on the standby (kept in memory)"
qp -c "SELECT apikeys.apikey_set_policy('$ID2', rate_limit => 3, rate_window => '1 day')" >/dev/null
wait_replay
for attempt in 1 2; do
	codes=() resets=()
	for i in 1 2 3 4; do
		IFS='|' read -r c lim r < <(qs -c 'BEGIN READ ONLY' \
			-c "SELECT code, rate_limit, rate_reset FROM apikeys.apikey_verify('$KEY2')" -c 'COMMIT')
		codes+=("$c"); resets+=("$r")
		[ "$lim" = 3 ] || die "standby: rate_limit column is '$lim' after set_policy was replayed, expected 3"
	done
	[ "${resets[0]}" = "${resets[3]}" ] && break
	echo "calls straddled a day boundary; retrying"
done
[ "${codes[*]}" = "valid valid valid rate_limited" ] ||
	die "standby, rate_limit 3: four verifies gave '${codes[*]}', expected 'valid valid valid rate_limited'"
ok "standby, rate_limit 3 per day: valid valid valid rate_limited"
qp -c "SELECT apikeys.apikey_set_policy('$ID2')" >/dev/null    # limits off again
wait_replay
expect_code qs "$KEY2" valid "standby, rate limit removed on the primary"

echo "== revoke on the primary"
expect_code qp "$KEY1" valid "primary before revoke (cache filled)"
qp -c "SELECT apikeys.apikey_revoke('$ID1', 'test')" >/dev/null
expect_code qp "$KEY1" revoked "primary after revoke"
wait_replay
expect_code qs "$KEY1" revoked "standby after revoke replayed"

echo "== disable / enable on the primary"
qp -c "SELECT apikeys.apikey_disable('$ID2')" >/dev/null
wait_replay
expect_code qs "$KEY2" disabled "standby after disable replayed"
expect_code qp "$KEY2" disabled "primary after disable"
qp -c "SELECT apikeys.apikey_enable('$ID2')" >/dev/null
wait_replay
expect_code qs "$KEY2" valid "standby after enable replayed"

echo "== tenant deactivation on the primary"
qp -c "SELECT apikeys.tenant_update('beta', active => false)" >/dev/null
wait_replay
expect_code qs "$KEY3" tenant_inactive "standby after tenant deactivation replayed"
expect_code qp "$KEY3" tenant_inactive "primary after tenant deactivation"
qp -c "SELECT apikeys.tenant_update('beta', active => true)" >/dev/null
wait_replay
expect_code qs "$KEY3" valid "standby after tenant reactivation replayed"
expect_code qs "$KEY1" revoked "standby, revoked key still revoked"

echo "== the standby's usage flushing drops counts quietly"
sleep 0.5
got=$(qs -c 'SELECT flush_errors FROM apikeys.runtime')
[ "$got" = 0 ] || die "standby: apikeys.runtime.flush_errors = $got"
if grep -E 'PANIC|TRAP|terminated by signal|ERROR' "$SDIR/server.log" >/dev/null; then
	grep -E 'PANIC|TRAP|terminated by signal|ERROR' "$SDIR/server.log" | head -n 5
	die "errors in the standby's log"
fi
ok "standby: no flush errors, no errors in its log"
echo "PASS"
