#!/usr/bin/env bash
# test/t/usage_sets_balanced.sh - keys spread over both of their usage sets:
#   - 20,000 keys, each with a rate limit (an open window keeps an entry),
#     in a usage table of 30,208 entries (2 / 3 full), all verified in one
#     statement, so nothing is written or evicted in between;
#   - at most 5 keys are refused with limits_unavailable
#     (configuration_limit_exceeded).  A claim that took the home set while
#     it had room filled home sets as a Poisson draw does, and left both
#     sets of some keys full (72 to 78 of the 20,000 refused); the less
#     loaded of the two sets refuses 0, at times 1;
#   - a key verified again finds its entry wherever it went: its window
#     counts both uses.
#
# Own cluster: tmp/t_balanced, port 54386; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_balanced
PORT=54386
KEYS=20000
trap 'cluster_stop $NAME || true' EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
qa() { cluster_psql "$NAME" "$PORT" -d postgres -qAt "$@"; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "apikeys.tracked_keys = 30000" \
	"apikeys.cache_entries = 40000" "apikeys.tenant_share = 1"
qa >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme');
CREATE TABLE k AS SELECT c.key_id, c.api_key
  FROM apikeys.apikey_create_many('acme', ARRAY(SELECT 'k' || g FROM generate_series(1, $KEYS) g)) c;
UPDATE apikeys.credential SET rate_limit = 1000, rate_window = '1 hour';
SQL
[ "$(qa -c "SELECT tracked_capacity FROM apikeys.runtime")" = 30208 ] || die "tracked_capacity is not 30208"

echo "== $KEYS keys with a rate limit verified in one statement"
got=$(qa <<'SQL'
CREATE TABLE refused (api_key text PRIMARY KEY);
CREATE FUNCTION pg_temp.verify_all() RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    valid int := 0;
    refused int := 0;
    r record;
BEGIN
    FOR r IN SELECT api_key FROM k LOOP
        BEGIN
            IF (apikeys.apikey_verify(r.api_key)).valid THEN
                valid := valid + 1;
            END IF;
        EXCEPTION WHEN configuration_limit_exceeded THEN
            refused := refused + 1;
            INSERT INTO refused VALUES (r.api_key);
        END;
    END LOOP;
    RETURN valid || ' ' || refused;
END $f$;
SELECT pg_temp.verify_all();
SQL
)
read -r valid refused <<<"$got"
[ $((valid + refused)) = "$KEYS" ] || die "valid and refused: $got (want $KEYS in all)"
[ "$refused" -le 5 ] || die "$refused of $KEYS keys refused (want at most 5)"
ok "$valid keys got an entry, $refused refused"

echo "== verified again, each key finds its entry"
again=$(qa -c "SELECT count(*) FILTER (WHERE v.rate_remaining = 998)
                FROM k, LATERAL apikeys.apikey_verify(k.api_key) v
               WHERE k.api_key NOT IN (SELECT api_key FROM refused)")
[ "$again" = "$valid" ] || die "$again of the $valid keys verified had both uses in their window"
ok "both uses counted in every key's window"
echo "ok: usage sets balanced: at most 5 of $KEYS keys refused at 2 / 3 full"
