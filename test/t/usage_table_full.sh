#!/usr/bin/env bash
# test/t/usage_table_full.sh - the shared usage table overrun by more keys
# than it holds, with nothing written yet:
#   - tracked_keys = 1000 (1,024 entries) and 3,000 keys verified once each,
#     with flush_interval and usage_write_delay at an hour, so no turn would
#     write them by itself;
#   - uses that found both of their sets full are not counted but reported:
#     every one of the 3,000 uses is either in apikeys.key_usage or in
#     apikeys.runtime.tracking_dropped, never both, never neither;
#   - the worker is woken at once to write the full sets (not an hour
#     later), without losing or doubling a count;
#   - once written, entries make room again: keys whose use was dropped
#     then verify with a rate limit (refused with limits_unavailable only
#     while every entry of their sets is unwritten).
#
# Own cluster: tmp/t_full, port 54385; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_full
PORT=54385
KEYS=3000
trap 'cluster_stop $NAME || true' EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
qa() { cluster_psql "$NAME" "$PORT" -d postgres -qAt "$@"; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "apikeys.tracked_keys = 1000" \
	"apikeys.flush_interval = '1h'" "apikeys.usage_write_delay = '1h'"
qa >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme');
CREATE TABLE k AS SELECT c.key_id, c.api_key FROM generate_series(1, $KEYS) g,
    LATERAL apikeys.apikey_create('acme', 'k' || g) c;
SQL
[ "$(qa -c "SELECT tracked_capacity FROM apikeys.runtime")" = 1024 ] || die "tracked_capacity is not 1024"

echo "== $KEYS keys verified once each"
valid=$(qa -c "SELECT count(*) FILTER (WHERE (apikeys.apikey_verify(api_key)).valid) FROM k")
[ "$valid" = "$KEYS" ] || die "$valid of $KEYS verified valid"
dropped=$(qa -c "SELECT tracking_dropped FROM apikeys.runtime")
[ "$dropped" -gt 0 ] || die "no use dropped: the table was not overrun"
ok "$dropped uses found their sets full"

# every use is counted once: in key_usage (written or pending) or as dropped
counted=$(qa -c "SELECT sum(valid) FROM apikeys.key_usage")
[ $((counted + dropped)) = "$KEYS" ] ||
	die "key_usage counts $counted and $dropped were dropped: $((counted + dropped)) != $KEYS"
ok "each use counted ($counted) or reported dropped ($dropped)"

echo "== the worker writes the full sets now, not after flush_interval (1 h)"
written=0
for _ in $(seq 1 100); do
	written=$(qa -c "SELECT count(*) FROM apikeys.usage")
	[ "$written" -gt 0 ] && break
	sleep 0.1
done
[ "$written" -gt 0 ] || die "nothing written 10 s after the table filled up"
ok "$written rows written at once"
counted=$(qa -c "SELECT sum(valid) FROM apikeys.key_usage")
[ $((counted + dropped)) = "$KEYS" ] || die "after the write: $counted counted, $dropped dropped"
ok "the write neither lost nor doubled a count"

echo "== written entries make room"
# keys whose use was dropped (their sets were full of unwritten entries)
# now get an entry, with a rate limit, by replacing written ones
qa -c "CREATE TABLE d AS SELECT k.key_id, k.api_key FROM k JOIN apikeys.key_usage u USING (key_id)
        WHERE u.valid = 0 LIMIT 50" \
   -c "SELECT apikeys.apikey_set_policy(key_id, rate_limit => 100, rate_window => '1 hour') FROM d" >/dev/null
# written entries are evictable once retired: when no snapshot older than
# their write remains, 10 s at most (an autovacuum may hold one meanwhile);
# until then a verify is refused (limits_unavailable) without being charged
got=$(qa <<'SQL'
CREATE FUNCTION pg_temp.verify_when_room(k text) RETURNS apikeys.verification
LANGUAGE plpgsql AS $f$
BEGIN
    FOR i IN 1..150 LOOP
        BEGIN
            RETURN apikeys.apikey_verify(k);
        EXCEPTION WHEN configuration_limit_exceeded THEN
            PERFORM pg_sleep(0.1);
        END;
    END LOOP;
    RAISE EXCEPTION 'still no room after 15 s';
END $f$;
SELECT count(*) FILTER (WHERE v.code = 'valid' AND v.rate_remaining = 99)
  FROM d, LATERAL pg_temp.verify_when_room(d.api_key) v;
SQL
)
[ "$got" = 50 ] || die "$got of 50 previously dropped keys verified with their rate limit"
ok "50 keys whose use was dropped verify with a rate limit once the sets are written"
echo "ok: usage table overrun: uses counted or reported, full sets written at once"
