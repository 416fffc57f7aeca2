#!/usr/bin/env bash
# test/t/denied_attempts_logged.sh - refused management attempts roll back
# with their transaction, so they cannot be rows of apikeys.audit; each one
# leaves exactly one "apikeys_audit_denied {json}" line in the server log,
# with action, tenant, key_id, db_role (the SET ROLE / login role) and error.
# No API key plaintext reaches the log, not even for keys created in the
# transactions that the refusals rolled back.
#
# Cases: rotate of another tenant's key (key_not_found), create in an
# inactive tenant (tenant_inactive), revoke of an unknown key (key_not_found,
# labelled with SET LOCAL apikeys.actor / request_id), a refusal labelled by
# authenticate(..., actor, request_id), and, as a control, a successful
# lifecycle that must log nothing.
#
# Attacks:
#  - pooled connection: client A sets apikeys.actor / request_id for the
#    session and commits; client B, next on the same connection, is refused:
#    B's line must not carry A's labels;
#  - garbage settings: request.jwt.claims / request.headers / apikeys.actor
#    holding a \u0000 escape, invalid JSON, non-object JSON, 10 MB, 100,000
#    '[' or nesting past the parser's stack: the client still gets the
#    authorization error (not a JSON error) and the refusal is still logged
#    with its error code.  Each case is told apart by its application_name.
#
# The log's JSON lines are read with the cluster's own jsonb (no jq needed).
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
SELECT apikeys.grant_verifier('regress_acme_admin');
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

echo "== denied: revoke of an unknown key (SET ROLE by a superuser session, labels for the transaction)"
out=$(q 2>&1 <<SQL
BEGIN;
SET LOCAL apikeys.actor = 'ops@example.com';
SET LOCAL apikeys.request_id = 'req-denied-3';
SET LOCAL ROLE regress_acme_admin;
SELECT apikeys.apikey_revoke('$UNKNOWN_ID', 'guess');
SQL
) && die "revoked an unknown key"
grep -q 'key_not_found' <<<"$out" || die "revoke of an unknown key: $out"

echo "== denied: rotate of another tenant's key, labelled by authenticate(..., actor, request_id)"
out=$(PGAPPNAME=labelled qas regress_acme_admin 2>&1 <<SQL
BEGIN;
SELECT code FROM apikeys.authenticate('$ACME_KEY', actor => 'key-actor', request_id => 'req-key-7');
SELECT apikeys.apikey_rotate('$GLOBEX_ID');
SQL
) || true
grep -q 'key_not_found' <<<"$out" || die "rotate after authenticate: $out"

echo "== attack: pooled connection, client A's session labels, client B refused"
out=$(PGAPPNAME=pooled qas regress_acme_admin 2>&1 <<SQL
-- client A
SET apikeys.actor = 'alice-A';
SET apikeys.request_id = 'req-A';
BEGIN;
SELECT apikeys.apikey_update('$ACME_ID', description => 'by A');
COMMIT;
-- client B, same connection
BEGIN;
SELECT apikeys.apikey_revoke('$GLOBEX_ID');
ROLLBACK;
SQL
) || true
grep -q 'key_not_found' <<<"$out" || die "pooled client B: $out"
grep -q 'apikeys_setting_ignored' <<<"$out" || die "pooled client B: no warning about the session labels: $out"

# garbage NAME SETTING VALUE_SQL [session]: with SETTING set to the value of
# the SQL expression (for the transaction, or with "session" for the
# session), a refused revoke of globex's key must fail with key_not_found.
GARBAGE=()
garbage() {
	local name=$1 setting=$2 value=$3 scope=${4:-transaction} out
	local set="SELECT set_config('$setting', $value, true) IS NOT NULL AS set;" before=""
	[ "$scope" = session ] && before="SELECT set_config('$setting', $value, false) IS NOT NULL AS set;" set=""
	GARBAGE+=("$name")
	out=$(PGAPPNAME="garbage-$name" qas regress_acme_admin 2>&1 <<SQL
\\set VERBOSITY verbose
$before
BEGIN;
$set
SELECT apikeys.apikey_revoke('$GLOBEX_ID');
ROLLBACK;
SQL
)
	grep -q 'ERROR:  42704: key_not_found: no API key with id' <<<"$out" \
		|| die "garbage $name: the refusal is not the authorization error: $(head -c 2000 <<<"$out")"
	[ "$(grep -c '^ERROR:' <<<"$out")" = 1 ] || die "garbage $name: more than one error: $(head -c 2000 <<<"$out")"
}
echo "== attack: garbage in settings and headers"
garbage claims_nul          request.jwt.claims "'{\"sub\":\"\\u0000\"}'"
garbage claims_nul_session  request.jwt.claims "'{\"sub\":\"\\u0000\"}'" session
garbage claims_surrogate    request.jwt.claims "'{\"sub\":\"\\ud800\"}'"
garbage claims_invalid      request.jwt.claims "'not json {'"
garbage claims_string       request.jwt.claims "'\"just a string\"'"
garbage claims_10mb         request.jwt.claims "repeat('x', 10 * 1024 * 1024)"
garbage claims_deep         request.jwt.claims "repeat('[', 16000)"
garbage headers_brackets    request.headers    "repeat('[', 100000)"
garbage headers_brackets_session request.headers "repeat('[', 100000)" session
garbage headers_array       request.headers    "'[1, 2, 3]'"
garbage headers_nested      request.headers    "repeat('[', 5000) || repeat(']', 5000)"
garbage headers_10mb        request.headers    "'{\"x-request-id\": \"' || repeat('r', 10 * 1024 * 1024) || '\"}'"
garbage actor_10mb          apikeys.actor      "repeat('a', 10 * 1024 * 1024)"
garbage request_id_long     apikeys.request_id "repeat('r', 201)"

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
cut -c 1-400 "$DIR/denied.json"
N_EXPECTED=$((5 + ${#GARBAGE[@]}))
[ "$(wc -l <"$DIR/denied.json")" = "$N_EXPECTED" ] \
	|| die "expected $N_EXPECTED denied lines, got $(wc -l <"$DIR/denied.json")"
# load them as jsonb: a line that is not JSON fails the load
q >/dev/null 2>&1 <<SQL || die "a denied line is not JSON"
CREATE TABLE denied_log (n serial, j jsonb NOT NULL);
\\copy denied_log (j) FROM '$DIR/denied.json' WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')
SQL
# jsonq SQL: run a query over denied_log(j); variables by -v
jsonq() { q "$@"; }

# one(action, tenant, key_id, db_role, error, sqlstate [, application_name]):
# exactly one such line
one() {
	local n
	n=$(jsonq -v a="$1" -v t="$2" -v k="$3" -v r="$4" -v e="$5" -v s="$6" -v app="${7:-}" <<'SQL'
SELECT count(*) FROM denied_log
 WHERE j->>'action' = :'a' AND coalesce(j->>'tenant', '') = :'t' AND coalesce(j->>'key_id', '') = :'k'
   AND j->>'db_role' = :'r' AND j->>'error' = :'e' AND j->>'sqlstate' = :'s' AND j->>'outcome' = 'denied'
   AND (:'app' = '' OR j->>'application_name' = :'app')
SQL
)
	[ "$n" = 1 ] || die "expected one denied line for $1 $2 $3 $4 $5 $6 ${7:-}, got $n"
}
# labels APPLICATION_NAME ACTION: "session_role actor request_id" of that line
labels() {
	jsonq -v app="$1" -v a="$2" <<'SQL'
SELECT concat_ws(' ', j->>'session_role', coalesce(j->>'actor', '-'), coalesce(j->>'request_id', '-'))
  FROM denied_log WHERE j->>'application_name' = :'app' AND j->>'action' = :'a'
SQL
}
one key_rotate globex "$GLOBEX_ID" regress_acme_admin key_not_found 42704 psql
one key_create sleepy "" regress_sleepy_admin tenant_inactive 55000
one key_revoke "" "$UNKNOWN_ID" regress_acme_admin key_not_found 42704 psql
# who: the session user and the labels of the SET ROLE case
[ "$(labels psql key_revoke)" = "postgres ops@example.com req-denied-3" ] \
	|| die "session_role/actor/request_id of the revoke line: $(labels psql key_revoke)"
[ "$(jsonq -c "SELECT j->>'session_role' FROM denied_log WHERE j->>'action' = 'key_create'")" = regress_sleepy_admin ] \
	|| die "session_role of the create line"
# labels bound by authenticate()
one key_rotate globex "$GLOBEX_ID" regress_acme_admin key_not_found 42704 labelled
[ "$(labels labelled key_rotate)" = "regress_acme_admin key-actor req-key-7" ] \
	|| die "labels of the authenticate() case: $(labels labelled key_rotate)"
# the pooled connection: B's line carries none of A's labels
one key_revoke globex "$GLOBEX_ID" regress_acme_admin key_not_found 42704 pooled
[ "$(labels pooled key_revoke)" = "regress_acme_admin - -" ] \
	|| die "client B's refusal carries client A's labels: $(labels pooled key_revoke)"
# garbage: each refusal logged, with its error code, and no label
for g in "${GARBAGE[@]}"; do
	one key_revoke globex "$GLOBEX_ID" regress_acme_admin key_not_found 42704 "garbage-$g"
	[ "$(labels "garbage-$g" key_revoke)" = "regress_acme_admin - -" ] \
		|| die "garbage $g: labels $(labels "garbage-$g" key_revoke)"
done
# every line has a timestamp, and the keys every consumer needs
[ "$(jsonq -c "SELECT count(*) FROM denied_log WHERE NOT (j ? 'at' AND j ? 'txid' AND j ? 'client_addr' AND j ? 'application_name' AND j ? 'actor' AND j ? 'request_id')")" = 0 ] \
	|| die "a denied line lacks a field"
# no line is longer than its fields allow: garbage never reaches the log
[ "$(awk 'length > 2000' "$DIR/denied.json" | wc -l)" = 0 ] || die "a denied line is over 2000 bytes"

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
echo "ok: $N_EXPECTED denied attempts, $N_EXPECTED log lines (${#GARBAGE[@]} with garbage settings), no key plaintext or digest in the log"
