#!/usr/bin/env bash
# test/t/postgres_exporter.sh - the real postgres_exporter (Debian's
# prometheus-postgres-exporter) with contrib/postgres_exporter/*.yaml,
# connected as a role given apikeys.grant_monitor() and nothing else:
#   - a known number of verifications of each of the 11 outcomes, then the
#     flush (apikeys.flush_interval) is awaited, and /metrics (curl) shows
#     exactly those counts: cluster-wide (apikeys_verifications_total), per
#     tenant and, with the per-key file, per key; keys by state per tenant;
#     the flush figures (flush_errors 0, unflushed_keys 0, flush_lag in
#     seconds);
#   - the monitoring role has no SELECT on any table;
#   - with --auto-discover-databases and a second database using apikeys,
#     the cluster-wide series appear once (master: true) and the tenant
#     series once per database (datname label);
#   - the base file has no per-key series.
#
# Own cluster: tmp/t_exporter, port 55120; the exporter listens on
# 127.0.0.1:55121.  Both are stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_exporter
PORT=${EXPORTER_PG_PORT:-55120}
WEB_PORT=${EXPORTER_WEB_PORT:-55121}
DIR=$TMPDIR_APIKEYS/$NAME
EXPORTER=/usr/bin/prometheus-postgres-exporter
QUERIES=${EXPORTER_QUERIES:-$ROOT/contrib/postgres_exporter/apikeys_queries.yaml}
QUERIES_KEYS=$ROOT/contrib/postgres_exporter/apikeys_queries_per_key.yaml
EXPORTER_PID=

die() { echo "FAIL: $*" >&2; [ -f "$DIR/exporter.log" ] && tail -n 20 "$DIR/exporter.log" >&2; exit 1; }
ok() { echo "ok: $*"; }
q() { cluster_psql "$NAME" "$PORT" -d "${DB:-postgres}" -qAt "$@"; }
expect() { [ "$2" = "$3" ] || die "$1: expected '$3', got '$2'"; }

[ -x "$EXPORTER" ] || skip "prometheus-postgres-exporter is not installed (the archive has no such package for this system)"
command -v curl >/dev/null || die "curl is missing (scripts/lib.sh ensure_deps installs it)"

stop_exporter() {
	if [ -n "$EXPORTER_PID" ]; then
		kill "$EXPORTER_PID" 2>/dev/null || true
		wait "$EXPORTER_PID" 2>/dev/null || true
		EXPORTER_PID=
	fi
}
trap 'stop_exporter; cluster_stop $NAME || true' EXIT

# start_exporter QUERY_FILE [flags...]: the exporter as the monitoring role
start_exporter() {
	local file=$1; shift
	stop_exporter
	# a client: it runs as this user, so that $! is the exporter itself
	DATA_SOURCE_NAME="host=$DIR port=$PORT user=regress_monitor dbname=postgres sslmode=disable" \
		"$EXPORTER" --web.listen-address="127.0.0.1:$WEB_PORT" --extend.query-path="$file" \
		--disable-settings-metrics "$@" >"$DIR/exporter.log" 2>&1 &
	EXPORTER_PID=$!
	for _ in $(seq 100); do
		curl -sf "http://127.0.0.1:$WEB_PORT/metrics" >/dev/null 2>&1 && return 0
		kill -0 "$EXPORTER_PID" 2>/dev/null || die "the exporter exited"
		sleep 0.1
	done
	# a 500 names the problem, e.g. the same series collected twice
	curl -s "http://127.0.0.1:$WEB_PORT/metrics" 2>&1 | head -n 5 >&2
	die "the exporter does not answer /metrics on 127.0.0.1:$WEB_PORT"
}
scrape() { curl -sf "http://127.0.0.1:$WEB_PORT/metrics" >"$DIR/metrics.txt" || die "scrape failed"; }
# metric NAME LABEL_MATCHERS...: the value of the one series of NAME whose
# labels include every name="value" given (other labels, e.g. server, may
# be there too); "none" if there is none, "many" if more than one.
metric() {
	local name=$1; shift
	awk -v name="$name" -v want="$*" '
		BEGIN { n = split(want, w, " ") }
		$0 !~ /^#/ {
			split($0, parts, " "); series = parts[1]; value = parts[2]
			base = series; sub(/\{.*/, "", base)
			if (base != name) next
			for (i = 1; i <= n; i++) if (index(series, w[i]) == 0) next
			found++; v = value
		}
		END { if (found == 0) print "none"; else if (found > 1) print "many"; else print v }' "$DIR/metrics.txt"
}
count_series() { grep -c "^$1[{ ]" "$DIR/metrics.txt" || true; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" \
	"apikeys.flush_interval = '100ms'" "apikeys.usage_write_delay = 0"

echo "== setup: tenants, keys of every state, the monitoring role"
q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme');
SELECT apikeys.tenant_create('globex');
SELECT apikeys.tenant_create('dormant');
CREATE ROLE regress_monitor LOGIN;
SELECT apikeys.grant_monitor('regress_monitor');
CREATE TABLE k (name text PRIMARY KEY, key_id uuid, api_key text);
INSERT INTO k SELECT 'valid', key_id, api_key FROM apikeys.apikey_create('acme', 'valid');
INSERT INTO k SELECT 'revoked', key_id, api_key FROM apikeys.apikey_create('acme', 'revoked');
INSERT INTO k SELECT 'scoped', key_id, api_key FROM apikeys.apikey_create('acme', 'scoped', scopes => '{read}');
INSERT INTO k SELECT 'ip', key_id, api_key FROM apikeys.apikey_create('acme', 'ip');
INSERT INTO k SELECT 'expired', key_id, api_key FROM apikeys.apikey_create('globex', 'expired');
INSERT INTO k SELECT 'disabled', key_id, api_key FROM apikeys.apikey_create('globex', 'disabled');
INSERT INTO k SELECT 'rate', key_id, api_key FROM apikeys.apikey_create('globex', 'rate');
INSERT INTO k SELECT 'capped', key_id, api_key FROM apikeys.apikey_create('globex', 'capped');
INSERT INTO k SELECT 'deleted', key_id, api_key FROM apikeys.apikey_create('globex', 'deleted');
INSERT INTO k SELECT 'dormant', key_id, api_key FROM apikeys.apikey_create('dormant', 'dormant');
SELECT apikeys.apikey_revoke(key_id, 'test') FROM k WHERE name = 'revoked';
SELECT apikeys.apikey_disable(key_id) FROM k WHERE name = 'disabled';
SELECT apikeys.apikey_delete(key_id) FROM k WHERE name = 'deleted';
SELECT apikeys.apikey_set_policy(key_id, allowed_ips => '{10.0.0.0/8}') FROM k WHERE name = 'ip';
SELECT apikeys.apikey_set_policy(key_id, rate_limit => 2, rate_window => '1 hour') FROM k WHERE name = 'rate';
SELECT apikeys.apikey_set_policy(key_id, usage_limit => 1) FROM k WHERE name = 'capped';
UPDATE apikeys.credential SET expires_at = now() - interval '1 hour'
 WHERE key_id = (SELECT key_id FROM k WHERE name = 'expired');
SELECT apikeys.tenant_update('dormant', active => false);
-- verify key NAME n times (required scopes, client address), the outcomes
CREATE FUNCTION v(kname text, n int, scopes text[] DEFAULT NULL, addr inet DEFAULT NULL) RETURNS text
LANGUAGE sql AS $$
    SELECT string_agg(DISTINCT (apikeys.apikey_verify(coalesce((SELECT api_key FROM k WHERE name = kname), kname),
                                                      scopes, addr)).code, ',')
      FROM generate_series(1, n)
$$;
SQL
expect "the monitoring role reads no table" \
	"$(q -c "SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'apikeys'::regnamespace AND c.relkind = 'r'
	           AND has_table_privilege('regress_monitor', c.oid, 'SELECT')")" 0

echo "== verifications: a known number of each outcome"
# outcome            count  how
# valid                  8  valid x5, rate x2 (within its limit), capped x1 (its cap)
# malformed              3  garbage
# not_found              2  a deleted key
# disabled               1
# revoked                4
# expired                2
# tenant_inactive        1  a key of the deactivated tenant
# ip_not_allowed         2  client 192.0.2.1, allowed 10.0.0.0/8
# insufficient_scope     3  scope read, write required
# rate_limited           3  rate: 5 in an hour, limit 2
# usage_exceeded         2  capped: 3, cap 1
expect valid "$(q -c "SELECT v('valid', 5)")" valid
expect rate "$(q -c "SELECT v('rate', 2)")" valid
expect rate_limited "$(q -c "SELECT v('rate', 3)")" rate_limited
expect capped "$(q -c "SELECT v('capped', 1)")" valid
expect usage_exceeded "$(q -c "SELECT v('capped', 2)")" usage_exceeded
expect malformed "$(q -c "SELECT v('not a key', 3)")" malformed
expect not_found "$(q -c "SELECT v('deleted', 2)")" not_found
expect disabled "$(q -c "SELECT v('disabled', 1)")" disabled
expect revoked "$(q -c "SELECT v('revoked', 4)")" revoked
expect expired "$(q -c "SELECT v('expired', 2)")" expired
expect tenant_inactive "$(q -c "SELECT v('dormant', 1)")" tenant_inactive
expect ip_not_allowed "$(q -c "SELECT v('ip', 2, NULL, '192.0.2.1')")" ip_not_allowed
expect insufficient_scope "$(q -c "SELECT v('scoped', 3, '{write}')")" insufficient_scope
declare -A WANT=([valid]=8 [malformed]=3 [not_found]=2 [disabled]=1 [revoked]=4 [expired]=2
	[tenant_inactive]=1 [ip_not_allowed]=2 [insufficient_scope]=3 [rate_limited]=3 [usage_exceeded]=2)

echo "== waiting for the flush worker to write every key"
for _ in $(seq 150); do
	[ "$(q -c "SELECT unflushed_keys = 0 AND flushed_rows > 0 FROM apikeys.runtime")" = t ] &&
		[ "$(q -c "SELECT count(*) FROM apikeys.usage")" -ge 9 ] && break
	sleep 0.2
done
expect "flushed" "$(q -c "SELECT unflushed_keys FROM apikeys.runtime")" 0
FLUSHED_ROWS=$(q -c "SELECT flushed_rows FROM apikeys.runtime")

echo "== the exporter with apikeys_queries.yaml"
start_exporter "$QUERIES"
scrape
for o in "${!WANT[@]}"; do
	expect "apikeys_verifications_total{outcome=$o}" \
		"$(metric apikeys_verifications_total "outcome=\"$o\"")" "${WANT[$o]}"
done
expect "outcomes exported" "$(count_series apikeys_verifications_total)" 11
ok "apikeys_verifications_total: the 11 outcomes, exact counts"

# per tenant: acme valid 5, revoked 4, ip_not_allowed 2, insufficient_scope 3;
# globex valid 3, disabled 1, expired 2, rate_limited 3, usage_exceeded 2
# (not_found and malformed name no key); dormant tenant_inactive 1
tv() { metric apikeys_tenant_verifications_total "datname=\"postgres\"" "tenant=\"$1\"" "outcome=\"$2\""; }
expect "acme valid" "$(tv acme valid)" 5
expect "acme revoked" "$(tv acme revoked)" 4
expect "acme ip_not_allowed" "$(tv acme ip_not_allowed)" 2
expect "acme insufficient_scope" "$(tv acme insufficient_scope)" 3
expect "acme expired (none)" "$(tv acme expired)" 0
expect "globex valid" "$(tv globex valid)" 3
expect "globex disabled" "$(tv globex disabled)" 1
expect "globex expired" "$(tv globex expired)" 2
expect "globex rate_limited" "$(tv globex rate_limited)" 3
expect "globex usage_exceeded" "$(tv globex usage_exceeded)" 2
expect "dormant tenant_inactive" "$(tv dormant tenant_inactive)" 1
# 3 tenants x 9 outcomes that name a key
expect "tenant series" "$(count_series apikeys_tenant_verifications_total)" 27
ok "apikeys_tenant_verifications_total: every tenant and outcome, exact counts"

tk() { metric "apikeys_tenant_$2" "tenant=\"$1\""; }
expect "acme active keys" "$(tk acme keys_active)" 3          # valid, scoped, ip
expect "acme revoked keys" "$(tk acme keys_revoked)" 1
expect "globex active keys" "$(tk globex keys_active)" 2      # rate, capped
expect "globex disabled keys" "$(tk globex keys_disabled)" 1
expect "globex expired keys" "$(tk globex keys_expired)" 1
expect "dormant inactive" "$(tk dormant active)" 0
expect "acme active" "$(tk acme active)" 1
expect "acme audit head" "$(tk acme audit_head_id)" \
	"$(q -c "SELECT max(audit_id) FROM apikeys.audit WHERE chain = 'acme'")"
ok "apikeys_tenant_*: keys by state, audit head"

expect "flush_errors" "$(metric apikeys_runtime_flush_errors)" 0
expect "unflushed_keys" "$(metric apikeys_runtime_unflushed_keys)" 0
expect "preloaded" "$(metric apikeys_runtime_preloaded)" 1
rows=$(metric apikeys_runtime_flushed_rows)
[ "$rows" -ge "$FLUSHED_ROWS" ] 2>/dev/null || die "flushed_rows: $rows < $FLUSHED_ROWS"
lag=$(metric apikeys_runtime_flush_lag_seconds)
awk -v l="$lag" 'BEGIN { exit !(l + 0 == l && l >= 0 && l < 60) }' || die "flush_lag_seconds: '$lag' is not seconds"
expect "per-key series in the base file" "$(count_series apikeys_key_verifications_total)" 0
grep -q 'apikeys' "$DIR/exporter.log" && grep -i 'error' "$DIR/exporter.log" | grep -i apikeys && die "the exporter logged errors for apikeys queries"
ok "apikeys_runtime_*: flush state, lag in seconds; no per-key series"

echo "== the exporter with apikeys_queries_per_key.yaml"
start_exporter "$QUERIES_KEYS"
scrape
kv() { metric apikeys_key_verifications_total "key_id=\"$(q -c "SELECT key_id FROM k WHERE name = '$1'")\"" "outcome=\"$2\""; }
expect "key valid" "$(kv valid valid)" 5
expect "key rate valid" "$(kv rate valid)" 2
expect "key rate rate_limited" "$(kv rate rate_limited)" 3
expect "key capped usage_exceeded" "$(kv capped usage_exceeded)" 2
expect "key revoked" "$(kv revoked revoked)" 4
expect "key scoped" "$(kv scoped insufficient_scope)" 3
expect "key dormant" "$(kv dormant tenant_inactive)" 1
expect "key valid has no revoked series" "$(kv valid revoked)" none
# one series per key and outcome it has had: valid 1, revoked 1, scoped 1,
# ip 1, expired 1, disabled 1, rate 2, capped 2, dormant 1 (deleted: gone)
expect "per-key series" "$(count_series apikeys_key_verifications_total)" 11
expect "cluster-wide still there" "$(metric apikeys_verifications_total 'outcome="valid"')" 8
ok "apikeys_key_verifications_total: exact per-key counts"

echo "== a second database: cluster-wide series once, tenant series per database"
q -c "CREATE DATABASE db_two" >/dev/null
DB=db_two q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('initech');
SELECT apikeys.grant_monitor('regress_monitor');
SELECT count(apikeys.apikey_verify((SELECT api_key FROM apikeys.apikey_create('initech', 'k')))) FROM generate_series(1, 1);
SQL
start_exporter "$QUERIES" --auto-discover-databases --exclude-databases=template0,template1
scrape
expect "valid, once for the cluster" "$(metric apikeys_verifications_total 'outcome="valid"')" 9
expect "cluster-wide outcomes" "$(count_series apikeys_verifications_total)" 11
expect "runtime once" "$(count_series apikeys_runtime_flush_errors)" 1
expect "initech in db_two" "$(metric apikeys_tenant_verifications_total 'datname="db_two"' 'tenant="initech"' 'outcome="valid"')" 1
expect "acme in postgres" "$(tv acme valid)" 5
expect "tenant series, both databases" "$(count_series apikeys_tenant_verifications_total)" 36
ok "with --auto-discover-databases: cluster-wide once, per database by datname"

stop_exporter
echo "PASS"
