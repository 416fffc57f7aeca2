#!/usr/bin/env bash
# test/t/usage_tenant_share.sh - ATTACK: one tenant fills the shared usage
# table with its keys so that another tenant's rate-limited key fails
# (limits_unavailable) or has its rate window reset.
#
# tracked_keys = 100 (512 entries: 64 sets of 8, one set per key here).
# Tenant "hog" (its admin role creates them) has 1,500 rate-limited keys,
# three times the table; tenant "victim" has one key limited to 3 per hour.
#
#   1. no flush worker can run (max_worker_processes = 0), so every entry
#      hog fills keeps its unwritten counts: hog's own keys beyond its room
#      get limits_unavailable (53400), but the victim's key verifies valid
#      three times, then rate_limited, and stays rate_limited while hog
#      verifies all its keys again; apikeys.tenant_share = 1 (the rule off)
#      makes a second victim key fail as before;
#   2. with flush workers: hog verifies its keys round after round while the
#      workers write them and the victim's key sits idle, its entry written
#      and the least recently used of its set: its open rate window is never
#      reset (the old rule evicted it, and the key started a new window).
#
# Own cluster: tmp/t_share, port 55441; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_share
PORT=${TENANT_SHARE_PORT:-55441}
HOG_KEYS=1500
trap 'cluster_stop $NAME || true' EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
qa() { cluster_psql "$NAME" "$PORT" -d postgres -qAt "$@"; }

# setup: the tenants, hog's keys created by hog's admin, the victim's key
setup() {
	qa >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('hog');
SELECT apikeys.tenant_create('victim');
CREATE ROLE regress_hog_admin;
SELECT apikeys.grant_tenant('regress_hog_admin', 'hog');
CREATE TABLE hog_keys (api_key text);
GRANT INSERT ON hog_keys TO regress_hog_admin;
SET ROLE regress_hog_admin;
WITH c AS (SELECT c.key_id, c.api_key FROM generate_series(1, $HOG_KEYS) g,
                  LATERAL apikeys.apikey_create('hog', 'hog ' || g) c),
     p AS (SELECT apikeys.apikey_set_policy(key_id, rate_limit => 1000, rate_window => '1 hour'), api_key FROM c)
INSERT INTO hog_keys SELECT api_key FROM p;
RESET ROLE;
CREATE TABLE victim_keys AS SELECT c.key_id, c.api_key, g AS n FROM generate_series(1, 2) g,
    LATERAL apikeys.apikey_create('victim', 'victim ' || g) c;
SELECT apikeys.apikey_set_policy(key_id, rate_limit => 3, rate_window => '1 hour') FROM victim_keys;
-- every hog key once: "valid|limits_unavailable" (anything else is an error)
CREATE FUNCTION hog_round() RETURNS text LANGUAGE plpgsql AS \$f\$
DECLARE
    k text;
    n_valid int := 0;
    n_unavailable int := 0;
BEGIN
    FOR k IN SELECT api_key FROM hog_keys LOOP
        BEGIN
            IF (apikeys.apikey_verify(k)).valid THEN n_valid := n_valid + 1; END IF;
        EXCEPTION WHEN configuration_limit_exceeded THEN
            IF SQLERRM NOT LIKE 'limits_unavailable: %' THEN RAISE; END IF;
            n_unavailable := n_unavailable + 1;
        END;
    END LOOP;
    RETURN n_valid || '|' || n_unavailable;
END \$f\$;
-- verify victim key n: "code remaining", or the SQLSTATE and message
CREATE FUNCTION victim(n int) RETURNS text LANGUAGE plpgsql AS \$f\$
DECLARE
    v apikeys.verification;
BEGIN
    v := apikeys.apikey_verify((SELECT api_key FROM victim_keys WHERE victim_keys.n = victim.n));
    RETURN v.code || ' ' || v.rate_remaining;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END \$f\$;
SQL
}

echo "== 1. no flush worker: hog's unwritten entries fill the table"
cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "apikeys.tracked_keys = 100" \
	"apikeys.flush_interval = '1h'" "apikeys.usage_write_delay = '1h'" "max_worker_processes = 0"
setup
[ "$(qa -c "SELECT tracked_capacity FROM apikeys.runtime")" = 512 ] || die "tracked_capacity is not 512"
got=$(qa -c "SELECT hog_round()")
IFS='|' read -r valid unavailable <<<"$got"
[ "$unavailable" -gt 0 ] && [ $((valid + unavailable)) = $HOG_KEYS ] ||
	die "hog's first round: $valid valid, $unavailable limits_unavailable: the table did not fill up"
ok "hog filled the table: $valid keys valid, $unavailable refused with limits_unavailable (53400)"

got=$(for i in 1 2 3 4 5; do qa -c "SELECT victim(1)"; done | tr '\n' ',')
[ "$got" = "valid 2,valid 1,valid 0,rate_limited 0,rate_limited 0," ] ||
	die "the victim's key in a table full of hog's entries: $got"
ok "the victim's key verifies valid 3 times, then rate_limited"

got=$(qa -c "SELECT hog_round()")
ok "hog verifies all its keys again: $got (valid|limits_unavailable)"
got=$(qa -c "SELECT victim(1)")
[ "$got" = "rate_limited 0" ] || die "after hog's second round the victim's key says '$got', expected 'rate_limited 0'"
ok "the victim's rate window survived hog's second round"
got=$(qa -c "SELECT valid, rate_limited FROM apikeys.key_usage u JOIN victim_keys USING (key_id) WHERE n = 1")
[ "$got" = "3|3" ] || die "key_usage of the victim's key: $got, expected 3|3 (valid|rate_limited)"
ok "key_usage counts the victim's 3 valid and 3 rate_limited verifications"

# the same table without the rule: a second victim key is refused, as before
[ "$(qa -c "SHOW apikeys.tenant_share")" = 0.5 ] || die "apikeys.tenant_share is not 0.5 by default"
qa -c "ALTER SYSTEM SET apikeys.tenant_share = 1" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 50); do [ "$(qa -c "SHOW apikeys.tenant_share")" = 1 ] && break; sleep 0.1; done
got=$(qa -c "SELECT victim(2)")
case $got in
	"53400 limits_unavailable: "*) ok "with apikeys.tenant_share = 1 a second victim key is refused: 53400" ;;
	*) die "with apikeys.tenant_share = 1 a second victim key says '$got', expected 53400 limits_unavailable" ;;
esac
cluster_stop "$NAME"

echo "== 2. flush workers writing: hog's rounds never reset the victim's window"
cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "apikeys.tracked_keys = 100" \
	"apikeys.flush_interval = '100ms'" "apikeys.usage_write_delay = '1h'"
setup
got=$(qa -c "SELECT hog_round()")
ok "hog's first round: $got (valid|limits_unavailable)"
sleep 0.5
got=$(for i in 1 2 3 4; do qa -c "SELECT victim(1)"; done | tr '\n' ',')
[ "$got" = "valid 2,valid 1,valid 0,rate_limited 0," ] || die "the victim's key while hog's keys are written: $got"
ok "the victim's key verifies valid 3 times, then rate_limited"
# the victim's key is now idle, its entry the least recently used of its set
for round in 2 3 4 5; do
	got=$(qa -c "SELECT hog_round()")
	ok "hog's round $round: $got (valid|limits_unavailable)"
	sleep 0.5
done
v=$(qa -c "SELECT victim(1)")
[ "$v" = "rate_limited 0" ] || die "after hog's rounds the victim's key says '$v', expected 'rate_limited 0': its window was reset"
ok "after hog's rounds the victim's key is still rate_limited"
written=$(qa -c "SELECT count(*) FROM apikeys.usage")
[ "$written" -gt 0 ] || die "the workers wrote nothing"
ok "the workers wrote $written rows meanwhile"
echo "ok: one tenant filling the usage table neither blocks nor resets another tenant's limits"
