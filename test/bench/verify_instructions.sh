#!/usr/bin/env bash
# test/bench/verify_instructions.sh - instructions per apikey_verify, counted
# by callgrind (not a pass/fail test; repeatable, unlike timings on a shared
# machine).
#
#   test/bench/verify_instructions.sh
#
# A throwaway cluster with three keys of one tenant: no limit, one rate
# limit, three named limits and credits (none of them ever bites).  The
# server is then stopped and each key is verified in a single-user server
# under valgrind's callgrind, in one statement over generate_series, 2,000
# times and 12,000 times; (instructions of the second - of the first) /
# 10,000 is one verification's cost, start-up and the statement's own cost
# cancelled out.  SELECT 1 in the same statement shape is the baseline.
# valgrind does not emulate the SHA extensions, so SHA-256 runs portable
# here: about 4,400 of each verify's instructions, far fewer on hardware.
source "$(cd "$(dirname "$0")/../.." && pwd)/scripts/lib.sh"

NAME=bench_instr
PORT=54391
DIR=$TMPDIR_APIKEYS/$NAME

ensure_deps
build_install
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
trap 'cluster_stop $NAME 2>/dev/null; rm -f "$DIR"/cg.*' EXIT
cluster_start $NAME $PORT "shared_preload_libraries = 'apikeys'"
cluster_psql $NAME $PORT -q -d postgres <<'SQL'
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('instr') IS NOT NULL;
CREATE TABLE k (id int PRIMARY KEY, key_id uuid, k text);
INSERT INTO k SELECT g, c.key_id, c.api_key FROM generate_series(0, 2) g, LATERAL apikeys.apikey_create('instr', 'k' || g) c;
SELECT apikeys.apikey_set_policy(key_id, rate_limit => 2000000000, rate_window => '1 second') FROM k WHERE id = 1 \g /dev/null
SELECT apikeys.apikey_set_limits(key_id, ARRAY[('second', 2000000000, '1 second'),
         ('minute', 2000000000, '1 minute'), ('day', 2000000000, '1 day')]::apikeys.named_limit[]),
       apikeys.apikey_set_credits(key_id, 9000000000000000) FROM k WHERE id = 2 \g /dev/null
SQL
KEY0=$(cluster_psql $NAME $PORT -At -d postgres -c "SELECT k FROM k WHERE id = 0")
KEY1=$(cluster_psql $NAME $PORT -At -d postgres -c "SELECT k FROM k WHERE id = 1")
KEY2=$(cluster_psql $NAME $PORT -At -d postgres -c "SELECT k FROM k WHERE id = 2")
cluster_stop $NAME

# instructions EXPR N: callgrind's total for one single-user statement
# evaluating EXPR for N rows
instructions() {
	local f="$DIR/cg.$$"
	echo "SELECT count(*) FROM generate_series(1, $2) g WHERE $1;" >"$f.sql"
	chown postgres "$f.sql" 2>/dev/null || true
	as_pg valgrind --tool=callgrind --callgrind-out-file="$f.out" "$PGBIN/postgres" --single \
		-D "$DIR/data" -c shared_preload_libraries=apikeys postgres <"$f.sql" >/dev/null 2>&1
	callgrind_annotate "$f.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
	rm -f "$f.out" "$f.sql"
}
per_call() {   # per_call LABEL EXPR
	local a b
	a=$(instructions "$2" 2000)
	b=$(instructions "$2" 12000)
	printf '  %-42s %8d instructions per call\n' "$1" $(( (b - a) / 10000 ))
}
say "instructions per call (callgrind, single-user server)"
per_call "(SELECT 1) = 1" "(SELECT 1) = 1"
per_call "verify, no limit" "(apikeys.apikey_verify('$KEY0')).valid"
per_call "verify, one rate limit" "(apikeys.apikey_verify('$KEY1')).valid"
per_call "verify, 3 named limits + credits" "(apikeys.apikey_verify('$KEY2')).valid"
