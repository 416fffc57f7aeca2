#!/usr/bin/env bash
# test/t/create_many_tempfile.sh - ATTACK: apikey_create_many() must
# never write a plaintext API key to a temporary file (src/create_many.c:
# "a plaintext never goes to a temporary file").
#
# When its result store was sized by work_mem, 20,000 keys with
# 190-character multi-byte names overflowed it and the whole result,
# plaintexts included, was written to base/pgsql_tmp.  The test keeps the statement open (pg_sleep on the first
# row) and searches every temporary file for the key it returned.
#
# Own cluster: tmp/t_cm_tmp, port 54323; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_cm_tmp
PORT=54323
DIR=$TMPDIR_APIKEYS/$NAME

cleanup() {
	local pids
	pids=$(jobs -p)
	[ -z "$pids" ] || kill -- $pids 2>/dev/null || true
	cluster_stop "$NAME" 2>/dev/null || true
}
trap cleanup EXIT
die() { echo "FAIL: $*" >&2; exit 1; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "log_temp_files = 0"
cluster_psql "$NAME" "$PORT" -q <<'SQL'
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme');
CREATE ROLE adm LOGIN;
SELECT apikeys.grant_tenant('adm', 'acme', 'manage');
SQL

# the tenant admin's own call, at the default work_mem
cluster_psql "$NAME" "$PORT" -At >"$DIR/out" 2>&1 <<'SQL' &
SET ROLE adm;
SELECT api_key, pg_sleep(6)
  FROM apikeys.apikey_create_many('acme',
       (SELECT array_agg(repeat('€', 190) || i) FROM generate_series(1, 20000) i))
 LIMIT 1;
SQL
sleep 4
found=0
for f in "$DIR"/data/base/pgsql_tmp/*; do
	[ -f "$f" ] || continue
	n=$(grep -a -c -E 'ak_[A-Za-z0-9]{20,}' "$f" || true)
	[ "$n" = 0 ] || { echo "temporary file $f holds $n plaintext key lines"; found=1; }
done
wait
key=$(cut -d'|' -f1 "$DIR/out" | grep -E '^ak_' | head -1)
[ -n "$key" ] || die "apikey_create_many returned no key: $(cat "$DIR/out")"
[ "$found" = 0 ] || die "apikey_create_many wrote plaintext API keys to a temporary file"
echo "ok: no plaintext key in any temporary file"
