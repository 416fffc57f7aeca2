#!/usr/bin/env bash
# test/t/postgrest_denied_logged.sh - every request the PostgREST gate
# refuses leaves exactly one "apikeys_audit_denied {json}" line in the server
# log (action "postgrest_request"), whatever request.headers, request.path,
# request.method and request.jwt.claims hold: a 100000-deep "[", 10 MB
# values, \u0000, text that is not JSON.  What the gate cannot read is a
# PGRST 400 apikeys.bad_request, never an internal error; hostile claims do
# not stop the 401.  The line names the error and HTTP status, leaves out an
# over-long actor (claims' sub), and holds no header value: no key
# plaintext reaches the log.  A request let through logs nothing.
#
# Each case runs PostgREST's statements as the authenticator of
# test/postgrest/schema.sql, in a session whose application_name is the
# case's name, which is how its log line is found.  The lines are read back
# with PostgreSQL's own JSON parser.
#
# Own cluster: tmp/t_pgrst_denied, port 55421.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_pgrst_denied
PORT=55421
DIR=$TMPDIR_APIKEYS/$NAME
LOG=$DIR/server.log
trap 'cluster_stop $NAME || true' EXIT
die() { echo "FAIL: $*" >&2; exit 1; }
q() { cluster_psql "$NAME" "$PORT" -d app -qAt "$@"; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "log_min_messages = warning"
cluster_psql "$NAME" "$PORT" -d postgres -q -c 'CREATE DATABASE app'
q -f "$ROOT/test/postgrest/schema.sql" >"$DIR/schema.out" || die "schema.sql did not load"
ACME=$(sed -n 's/^acme|acme reader|//p' "$DIR/schema.out")
GLOBEX=$(sed -n 's/^globex|globex writer|//p' "$DIR/schema.out")
[ -n "$ACME" ] && [ -n "$GLOBEX" ] || die "schema.sql printed no keys"

# request CASE METHOD PATH HEADERS CLAIMS: SQL expressions for the four
# settings; prints what psql printed (the PGRST error, or "passed").
request() {
	PGAPPNAME=$1 "$PGBIN/psql" -X -qAt -h "$DIR" -p "$PORT" -U authenticator -d app 2>&1 <<SQL
\\set VERBOSITY verbose
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
SELECT set_config('role', 'web_anon', true), set_config('request.jwt.claims', $5, true),
       set_config('request.method', $2, true), set_config('request.path', $3, true),
       set_config('request.headers', $4, true), set_config('request.cookies', '{}', true) \\g /dev/null
SELECT 'passed' FROM "apikeys"."pre_request"();
ROLLBACK;
SQL
}

# case NAME STATUS CODE METHOD PATH HEADERS CLAIMS: the gate answers a PGRST
# error with that status and code (or, for STATUS 200, lets it through).
CASES=()
case_() {
	local name=$1 status=$2 code=$3 out
	out=$(request "$name" "$4" "$5" "$6" "$7")
	if [ "$status" = 200 ]; then
		[ "$out" = passed ] || die "$name: expected to pass, got: ${out:0:300}"
	else
		grep -q "^ERROR:  PGRST: {\"code\" : \"apikeys.$code\"" <<<"$out" ||
			die "$name: expected PGRST apikeys.$code, got: ${out:0:300}"
		grep -q "^DETAIL:  {\"status\" : $status," <<<"$out" || die "$name: expected status $status, got: ${out:0:300}"
		CASES+=("$name $status $code")
	fi
	echo "ok: $name -> $status ${code:-}"
}

K_ACME="jsonb_build_object('x-api-key', '$ACME')::text"
echo "== hostile request.headers"
case_ headers_brackets 400 bad_request "'GET'" "'/items'" "repeat('[', 100000)" "'{}'"
case_ headers_deep 400 bad_request "'GET'" "'/items'" "repeat('[', 60000)" "'{}'"
case_ headers_10mb 400 bad_request "'GET'" "'/items'" "'{\"x-api-key\":\"' || repeat('a', 10000000) || '\"}'" "'{}'"
case_ headers_value_9000 400 bad_request "'GET'" "'/items'" "'{\"cookie\":\"' || repeat('c', 9000) || '\"}'" "'{}'"
case_ headers_nul 400 bad_request "'GET'" "'/items'" "'{\"x-api-key\":\"\\u0000\"}'" "'{}'"
case_ headers_not_json 400 bad_request "'GET'" "'/items'" "'x-api-key: $ACME'" "'{}'"
echo "== hostile request.path and request.method"
case_ path_10mb 400 bad_request "'GET'" "'/' || repeat('p', 10000000)" "$K_ACME" "'{}'"
case_ path_bad_utf8 400 bad_request "'GET'" "'/items%ff'" "$K_ACME" "'{}'"
case_ method_long 400 bad_request "repeat('X', 100)" "'/items'" "$K_ACME" "'{}'"
echo "== hostile request.jwt.claims (the refusal is still a 401)"
case_ claims_nul 401 missing "'GET'" "'/items'" "'{}'" "'{\"sub\":\"\\u0000\"}'"
case_ claims_not_json 401 malformed "'GET'" "'/items'" "'{\"x-api-key\":\"garbage\"}'" "'not json'"
case_ claims_brackets 401 missing "'GET'" "'/items'" "'{}'" "repeat('[', 100000)"
case_ claims_10mb 401 missing "'GET'" "'/items'" "'{}'" "'{\"sub\":\"' || repeat('s', 10000000) || '\"}'"
echo "== ordinary refusals, with a key whose plaintext must stay out of the log"
case_ labelled 401 missing "'GET'" "'/items'" "'{\"x-request-id\":\"req-42\"}'" "'{\"sub\":\"user-7\"}'"
case_ method_not_allowed 403 method_not_allowed "'PUT'" "'/'" "$K_ACME" "'{}'"
case_ insufficient_scope 403 insufficient_scope "'POST'" "'/items'" "$K_ACME" "'{}'"
echo "== control: a request let through, even with hostile claims, logs nothing"
case_ passes 200 "" "'GET'" "'/items'" "$K_ACME" "repeat('[', 100000)"

sleep 0.5   # let the server flush its log
echo "== scanning $LOG"
grep 'apikeys_audit_denied' "$LOG" | sed 's/^.*apikeys_audit_denied //' >"$DIR/denied.json"
[ "$(wc -l <"$DIR/denied.json")" = ${#CASES[@]} ] ||
	die "expected ${#CASES[@]} denied lines, got $(wc -l <"$DIR/denied.json")"
# The lines, parsed by PostgreSQL (each must be a JSON object).
q >/dev/null <<SQL || die "a denied line is not JSON"
CREATE TABLE denied_lines (line text);
\\copy denied_lines FROM '$DIR/denied.json' WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')
CREATE TABLE denied AS SELECT line::jsonb AS j FROM denied_lines;
SQL
for c in "${CASES[@]}"; do
	read -r name status code <<<"$c"
	n=$(q -c "SELECT count(*) FROM denied
	           WHERE j ->> 'application_name' = '$name' AND j ->> 'action' = 'postgrest_request'
	             AND j ->> 'outcome' = 'denied' AND j ->> 'error' = '$code'
	             AND (j ->> 'http_status')::int = $status AND j ->> 'sqlstate' = 'PGRST'
	             AND j ->> 'db_role' = 'web_anon' AND j ->> 'session_role' = 'authenticator'
	             AND j ? 'at' AND j ? 'txid' AND j ? 'client_addr'")
	[ "$n" = 1 ] || die "expected one denied line for $name ($status $code), got $n"
done
echo "ok: one line per refusal, with its error and status"
# the log's fields
[ "$(q -c "SELECT j ->> 'actor' || ' ' || (j ->> 'request_id') FROM denied WHERE j ->> 'application_name' = 'labelled'")" \
	= "user-7 req-42" ] || die "actor and request_id of the labelled line"
[ "$(q -c "SELECT j -> 'actor' FROM denied WHERE j ->> 'application_name' = 'claims_10mb'")" = null ] ||
	die "the 10 MB actor should read as absent"
[ "$(q -c "SELECT count(*) FROM denied WHERE j ->> 'application_name' IN ('claims_nul', 'claims_not_json', 'claims_brackets') AND j -> 'actor' = 'null'")" = 3 ] ||
	die "unreadable claims should log a null actor"
[ "$(q -c "SELECT char_length(j ->> 'path') FROM denied WHERE j ->> 'application_name' = 'path_10mb'")" = 8192 ] ||
	die "the 10 MB path is not cut to 8192 bytes"
[ "$(q -c "SELECT j ->> 'reason' FROM denied WHERE j ->> 'application_name' = 'headers_10mb'")" \
	= "request.headers is longer than 65536 bytes" ] || die "reason of headers_10mb"
[ "$(q -c "SELECT j ->> 'tenant' || ' ' || (j ->> 'key_id' IS NOT NULL) FROM denied WHERE j ->> 'application_name' = 'insufficient_scope'")" \
	= "acme true" ] || die "tenant and key of the insufficient_scope line"
echo "ok: actor, request_id, reason, tenant and key_id as expected, long values cut"
# the log stays small (the 10 MB values are not in it) and holds no key
[ "$(stat -c %s "$LOG")" -lt 1000000 ] || die "the server log holds the 10 MB values ($(stat -c %s "$LOG") bytes)"
for k in "$ACME" "$GLOBEX"; do
	if grep -qF -- "${k#*_}" "$LOG"; then
		die "a key plaintext reached the server log (${k:0:6}...)"
	fi
done
echo "ok: no key plaintext in the log"
echo "PASS"
