#!/usr/bin/env bash
# test/t/flush_held_row.sh - ATTACK: a tenant admin holds its own key's
# apikeys.usage row in an open transaction (BEGIN; apikey_delete(...); and
# wait), so that the flush worker, which writes every tenant's counts in one
# transaction, waits on that row each turn until its lock_timeout and fails
# the whole batch: another tenant's counts (uses, credits spent) are never
# written while the transaction stays open, a crash then gives the spent
# credits back, and the unwritten entries cannot give way to others.
#
#   1. tenant "hold" has a key with credits whose usage row exists; its admin
#      deletes the key in a transaction left open for 8 s;
#   2. meanwhile tenant "other"'s key (credits 5) is verified 3 times, and the
#      held key once more: within 3 s apikeys.usage holds the 3 uses and the
#      credits spent of "other"'s key, and apikeys.runtime.flush_errors has
#      not moved (the held row is skipped, not waited for);
#   3. once the transaction rolls back, the held key's use is written too;
#   4. a key verified in the transaction that creates it, left open past a
#      flush turn: the flush wrote only rows of keys its snapshot saw and
#      dropped that key's count for good (under load this lost the counts of
#      any key verified right after its creation).  It is held now: after the
#      commit the count is written; a key whose transaction rolls back leaves
#      no row and no flush error.
#
# Own cluster: tmp/t_held_row, port 54415; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_held_row
PORT=54415
trap 'cluster_stop $NAME || true' EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
qa() { cluster_psql "$NAME" "$PORT" -d postgres -qAt "$@"; }

# wait_for SQL EXPECTED SECONDS: until SQL returns EXPECTED; its last value
wait_for() {
	local got i
	for i in $(seq 1 $(($3 * 10))); do
		got=$(qa -c "$1")
		[ "$got" = "$2" ] && break
		sleep 0.1
	done
	echo "$got"
}

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" \
	"apikeys.flush_interval = '100ms'" "apikeys.usage_write_delay = 0"
qa -c 'CREATE EXTENSION apikeys CASCADE' \
   -c "SELECT apikeys.tenant_create('hold'), apikeys.tenant_create('other')" \
   -c 'CREATE ROLE hold_admin LOGIN' \
   -c "SELECT apikeys.grant_tenant('hold_admin', 'hold')" \
   -c 'CREATE TABLE k (n text PRIMARY KEY, key_id uuid, api_key text)' \
   -c "INSERT INTO k SELECT 'held', key_id, api_key FROM apikeys.apikey_create('hold', 'held')" \
   -c "INSERT INTO k SELECT 'other', key_id, api_key FROM apikeys.apikey_create('other', 'victim')" \
   -c "SELECT apikeys.apikey_set_credits(key_id, 100) FROM k WHERE n = 'held'" \
   -c "SELECT apikeys.apikey_set_credits(key_id, 5) FROM k WHERE n = 'other'" >/dev/null
HELD=$(qa -c "SELECT key_id FROM k WHERE n = 'held'")
OTHER=$(qa -c "SELECT key_id FROM k WHERE n = 'other'")

echo "== 1. the held key's usage row exists, then its admin holds it"
qa -c "SELECT (apikeys.apikey_verify(api_key)).code FROM k WHERE n = 'held'" >/dev/null
got=$(wait_for "SELECT count_valid FROM apikeys.usage WHERE key_id = '$HELD'" 1 5)
[ "$got" = 1 ] || die "the held key's first use was not written: count_valid '$got'"
errors0=$(qa -c "SELECT flush_errors FROM apikeys.runtime")
cluster_psql "$NAME" "$PORT" -d postgres -U hold_admin -qAt -c "BEGIN" \
	-c "SELECT apikeys.apikey_delete('$HELD')" -c "SELECT pg_sleep(8)" -c "ROLLBACK" >/dev/null &
holder=$!
got=$(wait_for "SELECT count(*) FROM pg_stat_activity WHERE usename = 'hold_admin' AND query LIKE '%pg_sleep%'" 1 5)
[ "$got" = 1 ] || die "the holding transaction did not start"
ok "hold_admin holds the row of its key"

echo "== 2. the other tenant's uses are written meanwhile"
qa -c "SELECT (apikeys.apikey_verify(api_key)).code FROM k WHERE n = 'held'" >/dev/null
got=$(qa -c "SELECT string_agg((apikeys.apikey_verify(api_key)).code, ' ') FROM k, generate_series(1, 3) WHERE n = 'other'")
[ "$got" = "valid valid valid" ] || die "the other tenant's key: '$got'"
got=$(wait_for "SELECT count_valid, used FROM apikeys.usage WHERE key_id = '$OTHER'" "3|3" 3)
[ "$got" = "3|3" ] ||
	die "3 s into the hold, apikeys.usage has '$got' (count_valid|used) for the other tenant's key, expected 3|3"
errors1=$(qa -c "SELECT flush_errors FROM apikeys.runtime")
[ "$errors1" = "$errors0" ] || die "flush_errors went from $errors0 to $errors1 while the row was held"
[ "$(qa -c "SELECT count_valid FROM apikeys.usage WHERE key_id = '$HELD'")" = 1 ] ||
	die "the held row changed while it was held"
ok "the other tenant's 3 uses and credits written, no flush error"

echo "== 3. the held key's use is written once the transaction ends"
wait "$holder"
got=$(wait_for "SELECT count_valid FROM apikeys.usage WHERE key_id = '$HELD'" 2 5)
[ "$got" = 2 ] || die "after the rollback the held key's count_valid is '$got', expected 2"
ok "the held key's second use written after the rollback"

echo "== 4. a key verified in the transaction that creates it, open past a flush turn"
errors0=$(qa -c "SELECT flush_errors FROM apikeys.runtime")
NEW=$(qa -c "BEGIN" -c "CREATE TEMP TABLE nk AS SELECT key_id, api_key FROM apikeys.apikey_create('other', 'new')" \
	-c "SELECT (apikeys.apikey_verify(api_key)).code FROM nk" -c "SELECT pg_sleep(1.5)" \
	-c "SELECT key_id FROM nk" -c "COMMIT" | tail -n 1)
got=$(wait_for "SELECT count_valid FROM apikeys.usage WHERE key_id = '$NEW'" 1 3)
[ "$got" = 1 ] || die "the use of a key verified before its creation committed was lost: count_valid '$got'"
GONE=$(qa -c "BEGIN" -c "CREATE TEMP TABLE nk AS SELECT key_id, api_key FROM apikeys.apikey_create('other', 'never')" \
	-c "SELECT (apikeys.apikey_verify(api_key)).code FROM nk" -c "SELECT pg_sleep(0.5)" \
	-c "SELECT key_id FROM nk" -c "ROLLBACK" | tail -n 1)
sleep 1
[ "$(qa -c "SELECT count(*) FROM apikeys.usage WHERE key_id = '$GONE'")" = 0 ] || die "a rolled-back key got a usage row"
errors1=$(qa -c "SELECT flush_errors FROM apikeys.runtime")
[ "$errors1" = "$errors0" ] || die "flush_errors went from $errors0 to $errors1"
ok "the use was written after the commit; a rolled-back key left nothing"
echo PASS
