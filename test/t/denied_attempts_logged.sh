#!/usr/bin/env bash
# test/t/denied_attempts_logged.sh - refused management attempts roll back
# with their transaction, so they cannot be rows of apikeys.audit; each one
# leaves exactly one "apikeys_audit_denied {json}" line in the server log,
# with action, tenant, key_id, db_role (the SET ROLE / login role) and error.
# No API key plaintext reaches the log, not even for keys created in the
# transactions that the refusals rolled back.
#
# Cases: rotate of another tenant's key (key_not_found), create in an
# inactive tenant (tenant_inactive), revoke of an unknown key (key_not_found),
# and, as a control, a successful lifecycle that must log nothing.
#
# Runs its own cluster (tmp/deniedlog, port 54396, unless $DENIED_LOG_NAME /
# $DENIED_LOG_PORT say otherwise), stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=${DENIED_LOG_NAME:-deniedlog}
PORT=${DENIED_LOG_PORT:-54396}
DIR=$TMPDIR_APIKEYS/$NAME
LOG=$DIR/server.log
trap 'cluster_stop $NAME || true' EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
q() { cluster_psql "$NAME" "$PORT" -d postgres -qAt "$@"; }
# as a login role (the psql session's own user, not SET ROLE)
qas() { local role=$1; shift; "$PGBIN/psql" -X -h "$DIR" -p "$PORT" -U "$role" -d postgres -qAt "$@"; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "log_min_messages = warning"

echo "== setup"
q >/dev/null <<'SQL'
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme');
SELECT apikeys.tenant_create('globex');
SELECT apikeys.tenant_create('sleepy');
CREATE ROLE regress_acme_admin LOGIN;
CREATE ROLE regress_sleepy_admin LOGIN;
SELECT apikeys.grant_tenant('regress_acme_admin', 'acme');
SELECT apikeys.grant_tenant('regress_sleepy_admin', 'sleepy');
SQL
# Keys whose plaintext must never reach the log.
GLOBEX=$(q -c "SELECT key_id || ' ' || api_key FROM apikeys.apikey_create('globex', 'victim')")
GLOBEX_ID=${GLOBEX%% *} GLOBEX_KEY=${GLOBEX#* }
ACME=$(qas regress_acme_admin -c "SELECT key_id || ' ' || api_key FROM apikeys.apikey_create('acme', 'own')")
ACME_ID=${ACME%% *} ACME_KEY=${ACME#* }
UNKNOWN_ID=$(q -c "SELECT gen_random_uuid()")
KEYS=("$GLOBEX_KEY" "$ACME_KEY")
q -c "SELECT apikeys.tenant_update('sleepy', active => false)" >/dev/null

echo "== control: a successful lifecycle logs nothing"
qas regress_acme_admin >/dev/null <<SQL
SELECT apikeys.apikey_rotate('$ACME_ID', '1 hour');
SELECT apikeys.apikey_update('$ACME_ID', name => 'renamed');
SELECT apikeys.apikey_disable('$ACME_ID');
SELECT apikeys.apikey_enable('$ACME_ID');
SELECT (apikeys.apikey_verify(api_key)).code FROM apikeys.apikey_create('acme', 'second');
SQL
grep -q 'apikeys_audit_denied' "$LOG" && die "a successful call was logged as denied"

echo "== denied: rotate of another tenant's key (in a transaction that created a key)"
out=$(qas regress_acme_admin 2>&1 <<SQL
BEGIN;
SELECT api_key FROM apikeys.apikey_create('acme', 'rolled back');
SELECT apikeys.apikey_rotate('$GLOBEX_ID');
COMMIT;
SQL
) || true
ROLLED_BACK_KEY=$(printf '%s\n' "$out" | grep -E '^[a-z][a-z0-9_]*_[0-9A-Za-z]{40,}$' | head -n 1)
[ -n "$ROLLED_BACK_KEY" ] || die "no key created before the refusal: $out"
KEYS+=("$ROLLED_BACK_KEY")
grep -q 'key_not_found' <<<"$out" || die "rotate of a foreign key: $out"

echo "== denied: create in an inactive tenant (login role regress_sleepy_admin)"
out=$(qas regress_sleepy_admin -c "SELECT apikeys.apikey_create('sleepy', 'nope')" 2>&1) && die "created in an inactive tenant"
grep -q 'tenant_inactive' <<<"$out" || die "create in an inactive tenant: $out"

echo "== denied: revoke of an unknown key (SET ROLE by a superuser session)"
out=$(q 2>&1 <<SQL
SET apikeys.actor = 'ops@example.com';
SET apikeys.request_id = 'req-denied-3';
SET ROLE regress_acme_admin;
SELECT apikeys.apikey_revoke('$UNKNOWN_ID', 'guess');
SQL
) && die "revoked an unknown key"
grep -q 'key_not_found' <<<"$out" || die "revoke of an unknown key: $out"

# the refusals rolled back: nothing of them in the audit table
n=$(q -c "SELECT count(*) FROM apikeys.audit WHERE outcome <> 'success' OR key_id = '$UNKNOWN_ID' OR (key_id = '$GLOBEX_ID' AND action <> 'key_created' AND action <> 'secret_issued')")
[ "$n" = 0 ] || die "refused attempts left $n audit rows"
[ "$(q -c "SELECT count(*) FROM apikeys.keys WHERE name IN ('rolled back', 'nope')")" = 0 ] || die "partial state"

# control: the log does hold the text of failing statements, so the scan
# below would find a key passed that way
CONTROL="ak_LOGCONTROL$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
q -c "SELECT 1 / 0, '$CONTROL'" >/dev/null 2>&1 && die "control statement did not fail"

sleep 0.5   # let the server flush its log
echo "== scanning $LOG"
grep 'apikeys_audit_denied' "$LOG" | sed 's/^.*apikeys_audit_denied //' >"$DIR/denied.json"
cat "$DIR/denied.json"
[ "$(wc -l <"$DIR/denied.json")" = 3 ] || die "expected 3 denied lines, got $(wc -l <"$DIR/denied.json")"
jq -e . "$DIR/denied.json" >/dev/null || die "a denied line is not JSON"

# one(action, tenant, key_id, db_role, error, sqlstate): exactly one such line
one() {
	local n
	n=$(jq -c --arg a "$1" --arg t "$2" --arg k "$3" --arg r "$4" --arg e "$5" --arg s "$6" \
		'select(.action == $a and (.tenant // "") == $t and (.key_id // "") == $k
		        and .db_role == $r and .error == $e and .sqlstate == $s and .outcome == "denied")' \
		"$DIR/denied.json" | wc -l)
	[ "$n" = 1 ] || die "expected one denied line for $1 $2 $3 $4 $5 $6, got $n"
}
one key_rotate globex "$GLOBEX_ID" regress_acme_admin key_not_found 42704
one key_create sleepy "" regress_sleepy_admin tenant_inactive 55000
one key_revoke "" "$UNKNOWN_ID" regress_acme_admin key_not_found 42704
# who: the session user and the labels of the SET ROLE case
[ "$(jq -r 'select(.action == "key_revoke") | [.session_role, .actor, .request_id] | join(" ")' "$DIR/denied.json")" \
	= "postgres ops@example.com req-denied-3" ] || die "session_role/actor/request_id of the revoke line"
[ "$(jq -r 'select(.action == "key_create") | .session_role' "$DIR/denied.json")" = regress_sleepy_admin ] \
	|| die "session_role of the create line"
# every line has a timestamp, and the keys every consumer needs
jq -e -s 'all(.[]; has("at") and has("txid") and has("client_addr") and has("application_name"))' \
	"$DIR/denied.json" >/dev/null || die "a denied line lacks a field"

grep -qF -- "$CONTROL" "$LOG" || die "control: a failing statement's text should be in the log"
# No key plaintext (nor its body without the prefix) anywhere in the log.
for k in "${KEYS[@]}"; do
	[ -n "$k" ] || die "empty key"
	if grep -qF -- "$k" "$LOG" || grep -qF -- "${k#*_}" "$LOG"; then
		grep -nF -- "${k#*_}" "$LOG" | head -3 >&2
		die "a key plaintext reached the server log (${k:0:6}...)"
	fi
done
# and no digest of one
for k in "${KEYS[@]}"; do
	d=$(printf '%s' "$k" | sha256sum | cut -d' ' -f1)
	grep -qi -- "$d" "$LOG" && die "a key digest reached the server log"
done
echo "ok: 3 denied attempts, 3 log lines, no key plaintext or digest in the log"
