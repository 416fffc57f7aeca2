#!/usr/bin/env bash
# test/t/dropped_database.sh - usage entries of a database dropped before
# they were written do not hold the shared usage table:
#   - max_worker_processes = 0: database "gone" gets no flush worker, so
#     its uses stay unwritten, and they fill the whole table (tracked_keys
#     = 100: 512 entries);
#   - after DROP DATABASE gone, verifies in postgres find their sets full
#     of the dropped database's entries: those are freed, and every use is
#     tracked (none dropped), with rate limits enforced.  50 keys in 64
#     sets of 8: more than 8 of them in one set (which no freeing can help)
#     is practically impossible; with 100 it happens in about 0.2 % of runs.
#
# Own cluster: tmp/t_dropdb, port 54386; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_dropdb
PORT=54386
trap 'cluster_stop $NAME || true' EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
q() { local db=$1; shift; cluster_psql "$NAME" "$PORT" -d "$db" -qAt "$@"; }
setup() {
	q "$1" >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme');
CREATE TABLE k AS SELECT c.key_id, c.api_key FROM generate_series(1, $2) g,
    LATERAL apikeys.apikey_create('acme', 'k' || g) c;
SQL
}
dropped() { q postgres -c "SELECT tracking_dropped FROM apikeys.runtime"; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "apikeys.tracked_keys = 100" \
	"max_worker_processes = 0" "max_logical_replication_workers = 0" \
	"apikeys.flush_interval = '1h'" "apikeys.usage_write_delay = '1h'"
setup postgres 50
q postgres -c "CREATE DATABASE gone" >/dev/null
setup gone 1000
[ "$(q postgres -c "SELECT tracked_capacity FROM apikeys.runtime")" = 512 ] || die "tracked_capacity is not 512"

echo "== database gone fills the table, with no worker to write it"
valid=$(q gone -c "SELECT count(*) FILTER (WHERE (apikeys.apikey_verify(api_key)).valid) FROM k")
[ "$valid" = 1000 ] || die "$valid of 1000 keys verified in gone"
[ "$(q gone -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'apikeys usage flush'")" = 0 ] ||
	die "a flush worker runs: the test needs none"
tracked=$(q gone -c "SELECT count(*) FROM apikeys.key_usage WHERE valid > 0")
[ "$tracked" -ge 500 ] || die "only $tracked of gone's keys are tracked: the table is not full of them"
ok "$tracked of gone's keys hold the table, unwritten"

echo "== dropped, its entries make room"
q postgres -c "DROP DATABASE gone" >/dev/null
before=$(dropped)
q postgres -c "SELECT apikeys.apikey_set_policy(key_id, rate_limit => 1, rate_window => '1 hour') FROM k" >/dev/null
codes=$(q postgres -c "SELECT string_agg(code, ',' ORDER BY code) FROM (
          SELECT (apikeys.apikey_verify(api_key)).code FROM k UNION ALL
          SELECT (apikeys.apikey_verify(api_key)).code FROM k) v GROUP BY code") ||
	die "verify in postgres failed: the table is still full of the dropped database's entries"
after=$(dropped)
[ "$after" = "$before" ] || die "$((after - before)) uses dropped after the DROP (table still full)"
[ "$(q postgres -c "SELECT count(*) FROM apikeys.key_usage WHERE valid = 1 AND rate_limited = 1")" = 50 ] ||
	die "the 50 keys are not each counted once valid, once rate limited (codes: $codes)"
ok "50 keys tracked, each valid once then rate_limited: no use dropped"
echo "ok: a dropped database's unwritten usage entries are freed when their ways are needed"
