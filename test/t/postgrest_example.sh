#!/usr/bin/env bash
# test/t/postgrest_example.sh - the PostgREST example of docs/postgrest.md
# (test/postgrest/schema.sql) loads as written, and PostgREST's request
# sequence, replayed over libpq as its authenticator, sees only the key's
# tenant: GET as each tenant, a POST without the scope, a request without a
# key.  Own cluster: tmp/t_pgrst_example, port 54397.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_pgrst_example
PORT=54397
trap 'cluster_stop $NAME || true' EXIT
die() { echo "FAIL: $*" >&2; exit 1; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'"
cluster_psql "$NAME" "$PORT" -d postgres -q -c 'CREATE DATABASE app'
cluster_psql "$NAME" "$PORT" -d app -qAt -f "$ROOT/test/postgrest/schema.sql" >"$TMPDIR_APIKEYS/$NAME/schema.out" ||
	die "schema.sql did not load"
ACME=$(sed -n 's/^acme|acme reader|//p' "$TMPDIR_APIKEYS/$NAME/schema.out")
GLOBEX=$(sed -n 's/^globex|globex writer|//p' "$TMPDIR_APIKEYS/$NAME/schema.out")
[ -n "$ACME" ] && [ -n "$GLOBEX" ] || die "schema.sql printed no keys"

# request METHOD PATH HEADERS_JSON QUERY: PostgREST's statements, as the
# authenticator; prints the query's rows, or "SQLSTATE|message|detail".
request() {
	local method=$1 path=$2 headers=$3 query=$4 mode=READ\ ONLY
	[ "$method" = GET ] || mode=READ\ WRITE
	"$PGBIN/psql" -X -qAt -h "$TMPDIR_APIKEYS/$NAME" -p "$PORT" -U authenticator -d app \
		-v method="$method" -v path="$path" -v headers="$headers" 2>&1 <<SQL
\\set VERBOSITY verbose
BEGIN ISOLATION LEVEL READ COMMITTED $mode;
SELECT set_config('search_path', '"api", "public"', true), set_config('role', 'web_anon', true),
       set_config('request.jwt.claims', '{"role":"web_anon"}', true), set_config('request.method', :'method', true),
       set_config('request.path', :'path', true), set_config('request.headers', :'headers', true),
       set_config('request.cookies', '{}', true) \\g /dev/null
SELECT "apikeys"."pre_request"() \\g /dev/null
$query
ROLLBACK;
SQL
}

out=$(request GET /items "{\"x-api-key\":\"$ACME\"}" "SELECT string_agg(name, ',' ORDER BY name) FROM api.items;")
[ "$out" = "anvil,rocket skates" ] || die "GET /items as acme: got '$out'"
echo "ok: GET /items with acme's key sees acme's rows only"

out=$(request GET /items "{\"x-api-key\":\"$GLOBEX\"}" "SELECT string_agg(name, ',' ORDER BY name) FROM api.items;")
[ "$out" = "hammock" ] || die "GET /items as globex: got '$out'"
echo "ok: GET /items with globex's key sees globex's rows only"

out=$(request POST /items "{\"x-api-key\":\"$GLOBEX\"}" "INSERT INTO api.items (name) VALUES ('bucket') RETURNING tenant, current_user;")
[ "$out" = "globex|api_user" ] || die "POST /items as globex: got '$out'"
echo "ok: POST /items with a writer key inserts as api_user for globex"

out=$(request POST /items "{\"x-api-key\":\"$ACME\"}" "INSERT INTO api.items (name) VALUES ('x');")
grep -q 'ERROR:  PGRST: {"code" : "apikeys.insufficient_scope"' <<<"$out" || die "POST without the scope: got '$out'"
grep -q '"status" : 403' <<<"$out" || die "POST without the scope: not a 403: '$out'"
echo "ok: POST /items with a read-only key is a 403 insufficient_scope"

out=$(request GET /items '{"accept":"*/*"}' "SELECT count(*) FROM api.items;")
grep -q '"status" : 401' <<<"$out" || die "GET without a key: got '$out'"
echo "ok: GET /items without a key is a 401"

out=$(request GET / '{"accept":"*/*"}' "SELECT current_user;")
[ "$out" = "web_anon" ] || die "GET / (anonymous route): got '$out'"
echo "ok: the anonymous route lets a keyless request through as web_anon"
# every method of /items is listed: a read-only key cannot DELETE or PUT, and
# a method no route lists is refused
for m in DELETE PUT PATCH; do
	out=$(request $m /items "{\"x-api-key\":\"$ACME\"}" "DELETE FROM api.items;")
	grep -q '"status" : 403' <<<"$out" && grep -q 'apikeys.insufficient_scope' <<<"$out" ||
		die "$m /items with a read-only key: got '$out'"
done
out=$(request OPTIONS /items "{\"x-api-key\":\"$GLOBEX\"}" "SELECT 1;")
grep -q 'apikeys.method_not_allowed' <<<"$out" || die "OPTIONS /items (no route lists it): got '$out'"
[ "$(cluster_psql "$NAME" "$PORT" -d app -qAt -c "SELECT string_agg(name, ',' ORDER BY name) FROM api.items")" = \
	"anvil,hammock,rocket skates" ] || die "the refused requests changed api.items"
echo "ok: read-only keys cannot DELETE, PUT or PATCH /items; OPTIONS /items is refused"

# the example's mapping for every key names a role RLS confines to the tenant
[ "$(cluster_psql "$NAME" "$PORT" -d app -qAt -c "SELECT coalesce(apikeys.postgrest_role_confinement('api_user'), 'confined')")" \
	= confined ] || die "api_user is not confined"
echo "ok: api_user is confined to the key's tenant"
echo "PASS"
