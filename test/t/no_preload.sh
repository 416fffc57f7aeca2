#!/usr/bin/env bash
# test/t/no_preload.sh - apikeys without shared_preload_libraries.
#
# Keys without limits verify as usual (no shared memory needed); a key with a
# rate limit, a usage cap or credits cannot be enforced, so apikey_verify raises
# SQLSTATE 55000 (object_not_in_prerequisite_state) with a message starting
# "limits_unavailable:" instead of answering valid.  apikeys.runtime shows
# preloaded = f.
#
# Own cluster: tmp/t_nopreload, port 54384; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_nopreload
PORT=54384
DIR=$TMPDIR_APIKEYS/$NAME

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

# expect_limits_unavailable KEY WHAT: verify raises 55000 limits_unavailable:
expect_limits_unavailable() {
	local key=$1 what=$2 out
	# 1. as the client sees it (psql, VERBOSITY verbose prints the SQLSTATE)
	if out=$(qa -v VERBOSITY=verbose -c "SELECT code FROM apikeys.apikey_verify('$key')" 2>&1); then
		die "$what: verify did not raise (got '$out')"
	fi
	grep -q '^ERROR:  55000: limits_unavailable: ' <<<"$out" ||
		die "$what: expected 'ERROR:  55000: limits_unavailable: ...', got: $out"
	# 2. caught by SQLSTATE in PL/pgSQL
	out=$(qa -c "DO \$\$
		DECLARE c text;
		BEGIN
		    SELECT code INTO c FROM apikeys.apikey_verify('$key');
		    RAISE NOTICE 'no error: %', c;
		EXCEPTION WHEN SQLSTATE '55000' THEN
		    RAISE NOTICE 'caught %', split_part(SQLERRM, ':', 1);
		END \$\$" 2>&1)
	[ "$out" = "NOTICE:  caught limits_unavailable" ] || die "$what: DO block says: $out"
	ok "$what: SQLSTATE 55000 limits_unavailable"
}

cluster_start "$NAME" "$PORT"   # no shared_preload_libraries
[ -z "$(qa -c 'SHOW shared_preload_libraries')" ] || die "shared_preload_libraries is set"
qa -c 'CREATE EXTENSION apikeys CASCADE' >/dev/null 2>&1 || die "CREATE EXTENSION failed without preload"
qa -c "SELECT apikeys.tenant_create('acme')" >/dev/null

IFS='|' read -r ID_PLAIN KEY_PLAIN < <(qa -c "SELECT key_id, api_key FROM apikeys.apikey_create('acme', 'plain')")
IFS='|' read -r ID_IP KEY_IP < <(qa -c "SELECT key_id, api_key FROM apikeys.apikey_create('acme', 'ip_only')")
IFS='|' read -r ID_RATE KEY_RATE < <(qa -c "SELECT key_id, api_key FROM apikeys.apikey_create('acme', 'rated')")
IFS='|' read -r ID_CAP KEY_CAP < <(qa -c "SELECT key_id, api_key FROM apikeys.apikey_create('acme', 'capped')")
qa -c "SELECT apikeys.apikey_set_policy('$ID_IP', allowed_ips => '{10.0.0.0/8}')" >/dev/null
qa -c "SELECT apikeys.apikey_set_policy('$ID_RATE', rate_limit => 10)" >/dev/null
qa -c "SELECT apikeys.apikey_set_policy('$ID_CAP', usage_limit => 10)" >/dev/null
IFS='|' read -r ID_CRED KEY_CRED < <(qa -c "SELECT key_id, api_key FROM apikeys.apikey_create('acme', 'credits')")
qa -c "SELECT apikeys.apikey_set_credits('$ID_CRED', 10)" >/dev/null

got=$(qa -c 'SELECT preloaded FROM apikeys.runtime')
[ "$got" = f ] || die "apikeys.runtime.preloaded = '$got', expected f"
ok "apikeys.runtime: preloaded = f"

for i in 1 2 3; do
	got=$(qa -c "SELECT code FROM apikeys.apikey_verify('$KEY_PLAIN')")
	[ "$got" = valid ] || die "plain key, verify $i: '$got', expected valid"
done
got=$(qa -c 'BEGIN READ ONLY' -c "SELECT code FROM apikeys.apikey_verify('$KEY_PLAIN')" -c 'COMMIT')
[ "$got" = valid ] || die "plain key in READ ONLY: '$got'"
ok "plain key: valid (also READ ONLY)"

got=$(qa -c "SELECT code FROM apikeys.apikey_verify('$KEY_IP', NULL, '10.1.2.3')")
[ "$got" = valid ] || die "IP-only key from an allowed address: '$got'"
got=$(qa -c "SELECT code FROM apikeys.apikey_verify('$KEY_IP', NULL, '192.168.1.1')")
[ "$got" = ip_not_allowed ] || die "IP-only key from another address: '$got'"
ok "IP allowlist (no shared memory needed): valid / ip_not_allowed"

expect_limits_unavailable "$KEY_RATE" "rate-limited key"
expect_limits_unavailable "$KEY_CAP" "usage-capped key"
expect_limits_unavailable "$KEY_CRED" "key with credits"
got=$(qa -c "SELECT credits || '|' || spent || '|' || remaining FROM apikeys.key_credits WHERE key_id = '$ID_CRED'")
[ "$got" = "10|0|10" ] || die "key_credits without preload: '$got', expected 10|0|10"
ok "key_credits without preload: 10 credits, none spent"

# a rejection decided before the limits still answers (no error)
qa -c "SELECT apikeys.apikey_disable('$ID_RATE')" >/dev/null
got=$(qa -c "SELECT code FROM apikeys.apikey_verify('$KEY_RATE')")
[ "$got" = disabled ] || die "disabled rate-limited key: '$got', expected disabled"
ok "disabled rate-limited key: disabled (no error)"

# removing the limits makes the key usable again
qa -c "SELECT apikeys.apikey_set_policy('$ID_CAP')" >/dev/null
got=$(qa -c "SELECT code FROM apikeys.apikey_verify('$KEY_CAP')")
[ "$got" = valid ] || die "key after its cap was removed: '$got', expected valid"
ok "key after its cap was removed: valid"

got=$(qa -c "SELECT count(*) FROM apikeys.key_usage")
[ "$got" = 5 ] || die "apikeys.key_usage has $got rows, expected 5"
got=$(qa -c "SELECT coalesce(sum(total), 0) FROM apikeys.verifications")
[ "$got" = 0 ] || die "apikeys.verifications totals $got without shared memory, expected 0"
ok "apikeys.key_usage and apikeys.verifications readable"
echo "PASS"
