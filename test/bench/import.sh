#!/usr/bin/env bash
# test/bench/import.sh - legacy key import and verify (docs/migration.md); not
# a pass/fail test.
#
#   test/bench/import.sh                      1,000,000 legacy keys, as many native, 10 s runs
#   BENCH_LEGACY=200000 BENCH_NATIVE=50000 BENCH_SECONDS=5 test/bench/import.sh
#
# One throwaway server (apikeys preloaded).  It fills a table the way a
# Supabase project's hand-written key table is filled ('tk_' + 64 hex
# characters, SHA-256 hex of the whole key, a visible prefix, metadata),
# registers the format and imports the whole table with one
# apikey_import_many() call (audited: one key_created row per key),
# timed.  Then it creates native keys next to them, verifies every key once
# (the policy cache is warm, as under steady traffic) and runs pgbench
# (prepared, $BENCH_CLIENTS clients) on: a fixed native key, a fixed imported
# key (SHA-256 and SHA-512 formats), a random native key and a random
# imported key, printing the imported/native ratios (target: >= 0.90).
# Last, it times writing the imported keys' rows into bare copies of the
# tables (same columns and indexes; no triggers, constraints or audit): what
# the machine needs for the rows alone.
source "$(cd "$(dirname "$0")/../.." && pwd)/scripts/lib.sh"

LEGACY=${BENCH_LEGACY:-1000000}
NATIVE=${BENCH_NATIVE:-$LEGACY}
SECS=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-4}
PORT=${BENCH_PORT:-54389}
NAME=bench_import
SLOTS=$(( (LEGACY + NATIVE) * 3 / 2 ))

ensure_deps
build_install
trap 'cluster_stop $NAME' EXIT
cluster_start $NAME $PORT "shared_preload_libraries = 'apikeys'" "shared_buffers = '1GB'" "fsync = on" \
	"max_connections = 50" "apikeys.cache_entries = $SLOTS" "apikeys.tracked_keys = $SLOTS" \
	"max_wal_size = '4GB'"
psql_b() { cluster_psql $NAME $PORT -q -d postgres "$@"; }

pgbench_tps() {
	local script=$1; shift
	"$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECS" \
		-h "$TMPDIR_APIKEYS/$NAME" -p $PORT -U postgres "$@" -f "$script" postgres 2>&1 |
		awk '/^tps/ {print $3}' || true
}
script() {   # script NAME SQL: a pgbench script file
	local f="$TMPDIR_APIKEYS/$NAME/$1.sql"
	printf '%s\n' "$2" > "$f"
	echo "$f"
}

say "filling the legacy table ($LEGACY rows)"
psql_b <<SQL
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('bench') IS NOT NULL;
CREATE TABLE public.legacy_keys (
    id bigint PRIMARY KEY, k text NOT NULL, key_hash text NOT NULL, key_prefix text NOT NULL,
    name text NOT NULL, is_active boolean NOT NULL, metadata jsonb NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO public.legacy_keys
SELECT g, k, encode(digest(k, 'sha256'), 'hex'), left(k, 9) || '...', 'legacy ' || g, true,
       jsonb_build_object('plan', 'pro'), now() - interval '1 day'
  FROM (SELECT g, 'tk_' || encode(gen_random_bytes(32), 'hex') AS k FROM generate_series(1, $LEGACY) g) x;
CREATE TABLE public.native_keys (id serial PRIMARY KEY, k text NOT NULL);
VACUUM ANALYZE;
CHECKPOINT;
SQL

say "importing $LEGACY keys in one statement"
IMPORT_MS=$(psql_b -At <<'SQL' | awk '/^Time:/ {print $2}'
SELECT apikeys.key_format_register('bench', 'tk', 'tk_', 67, 'hex') IS NOT NULL;
\timing on
SELECT apikeys.apikey_import_many('bench', 'tk', $$
    SELECT key_hash AS digest, name, key_prefix AS hint, metadata, created_at,
           CASE WHEN is_active THEN 'active' ELSE 'disabled' END AS status, id::text AS source_id
      FROM public.legacy_keys$$);
SQL
)
AUDIT_ROWS=$(psql_b -At -c "SELECT count(*) FROM apikeys.audit WHERE action IN ('key_created', 'secret_issued', 'keys_imported')")
RATE=$(awk -v n="$LEGACY" -v ms="$IMPORT_MS" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
say "imported $LEGACY keys in ${IMPORT_MS} ms: $RATE keys/s ($AUDIT_ROWS audit rows)"

say "creating $NATIVE native keys"
psql_b <<SQL
INSERT INTO public.native_keys (k)
SELECT c.api_key FROM apikeys.apikey_create_many('bench', ARRAY(SELECT 'native ' || g FROM generate_series(1, $NATIVE) g)) c;
-- one KeyHippo-like key (SHA-512 of the part after a 12-character random prefix)
SELECT apikeys.key_format_register(NULL, 'keyhippo', '', 140, 'hex', 'sha512', 12, 'base64') IS NOT NULL;
CREATE TABLE public.kh (k text);
INSERT INTO public.kh SELECT h || b FROM (SELECT encode(gen_random_bytes(8), 'base64') h, encode(gen_random_bytes(64), 'hex') b) x;
SELECT apikeys.apikey_import('bench', 'keyhippo', encode(digest(substr(k, 13), 'sha512'), 'hex'), 'kh', head => left(k, 12)) IS NOT NULL FROM public.kh;
-- the imported keys' strings in a table shaped as native_keys, so that the
-- random runs differ only in the key they verify, not in the row they read
CREATE TABLE public.imported_keys (id serial PRIMARY KEY, k text NOT NULL);
INSERT INTO public.imported_keys (k) SELECT k FROM public.legacy_keys ORDER BY id;
VACUUM ANALYZE;
SQL
say "warm-up: one verify of each key"
psql_b -c "SELECT count(*) FROM public.imported_keys WHERE (apikeys.apikey_verify(k)).valid" \
	-c "SELECT count(*) FROM public.native_keys WHERE (apikeys.apikey_verify(k)).valid" -c "CHECKPOINT"

FIX_N=$(psql_b -At -c "SELECT k FROM public.native_keys WHERE id = 1")
FIX_L=$(psql_b -At -c "SELECT k FROM public.legacy_keys WHERE id = 1")
FIX_K=$(psql_b -At -c "SELECT k FROM public.kh")
S_FN=$(script fixed_native "SELECT (apikeys.apikey_verify('$FIX_N')).valid;")
S_FL=$(script fixed_legacy "SELECT (apikeys.apikey_verify('$FIX_L')).valid;")
S_FK=$(script fixed_keyhippo "SELECT (apikeys.apikey_verify('$FIX_K')).valid;")
S_RN=$(script random_native "\\set id random(1, $NATIVE)
SELECT (apikeys.apikey_verify((SELECT k FROM public.native_keys WHERE id = :id))).valid;")
S_RL=$(script random_legacy "\\set id random(1, $LEGACY)
SELECT (apikeys.apikey_verify((SELECT k FROM public.imported_keys WHERE id = :id))).valid;")
S_BAD=$(script malformed "SELECT (apikeys.apikey_verify('ak_this-is-not-a-key')).valid;")

say "throughput ($CLIENTS clients, prepared, ${SECS}s each; native and imported alternate)"
SECS=3 pgbench_tps "$S_FN" >/dev/null
T_FN=$(pgbench_tps "$S_FN"); T_FL=$(pgbench_tps "$S_FL"); T_FK=$(pgbench_tps "$S_FK")
T_RN=$(pgbench_tps "$S_RN"); T_RL=$(pgbench_tps "$S_RL")
T_FN2=$(pgbench_tps "$S_FN"); T_FL2=$(pgbench_tps "$S_FL")
T_BAD=$(pgbench_tps "$S_BAD")

# Last, so that it cannot change the figures above: what this machine takes
# to write the imported keys' rows with nothing else.  Their credentials,
# secrets and key_created audit rows are set aside (untimed), then copied by
# plain INSERT ... SELECT (timed) into tables with the same columns and
# indexes but no triggers, constraints or checks.  The import's own cost is
# the rest.
say "writing the imported keys' rows into bare copies of the tables"
FLOOR_MS=$(psql_b -At <<'SQL' | awk '/^Time:/ {ms += $2} END {printf "%.0f", ms}'
CREATE TABLE public.src_secret AS SELECT s.* FROM apikeys.secret s
 WHERE s.format_id = (SELECT format_id FROM apikeys.key_format WHERE name = 'tk');
CREATE TABLE public.src_credential AS SELECT c.* FROM apikeys.credential c
 WHERE c.key_id IN (SELECT key_id FROM public.src_secret);
CREATE TABLE public.src_audit AS SELECT a.* FROM apikeys.audit a
 WHERE a.action = 'key_created' AND a.key_id IN (SELECT key_id FROM public.src_secret);
CREATE TABLE public.bare_credential (LIKE apikeys.credential INCLUDING INDEXES);
CREATE TABLE public.bare_secret (LIKE apikeys.secret INCLUDING INDEXES);
CREATE TABLE public.bare_audit (LIKE apikeys.audit INCLUDING INDEXES);
VACUUM ANALYZE public.src_secret, public.src_credential, public.src_audit;
CHECKPOINT;
\timing on
INSERT INTO public.bare_credential SELECT * FROM public.src_credential;
INSERT INTO public.bare_secret SELECT * FROM public.src_secret;
INSERT INTO public.bare_audit SELECT * FROM public.src_audit;
\timing off
DROP TABLE public.bare_credential, public.bare_secret, public.bare_audit,
           public.src_credential, public.src_secret, public.src_audit;
SQL
)
FLOOR_RATE=$(awk -v n="$LEGACY" -v ms="$FLOOR_MS" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
say "bare copies: ${FLOOR_MS} ms: $FLOOR_RATE keys/s"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cat <<TXT

  import of $LEGACY legacy rows (apikey_import_many, audited)   $RATE keys/s   target >= 50000
  the same rows into bare copies of the tables (INSERT ... SELECT)   $FLOOR_RATE keys/s
  import / bare copies                                          $(awk -v a="$RATE" -v b="$FLOOR_RATE" 'BEGIN { printf "%.2f", a / b }')

  run                                             tps
  fixed native key                                $T_FN  / $T_FN2
  fixed imported key (tk_, SHA-256)               $T_FL  / $T_FL2
  fixed imported key (KeyHippo, SHA-512)          $T_FK
  random native key (of $NATIVE)                  $T_RN
  random imported key (of $LEGACY)                $T_RL
  malformed string                                $T_BAD

  ratio                                           value  target
  fixed imported / fixed native                   $(ratio "$(( ${T_FL%.*} + ${T_FL2%.*} ))" "$(( ${T_FN%.*} + ${T_FN2%.*} ))")   >= 0.90
  KeyHippo / fixed native                         $(ratio "$T_FK" "$T_FN")   >= 0.90
  random imported / random native                 $(ratio "$T_RL" "$T_RN")   >= 0.90
TXT
