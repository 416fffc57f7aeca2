#!/usr/bin/env bash
# test/t/pgxs_installcheck.sh - `make installcheck`, as a PGXS user types it,
# against the installed extension: pg_regress and pg_isolation_regress each
# start their own temporary instance with the library preloaded
# (test/regress.conf) and pgcrypto loaded before apikeys.  A subset of the
# files keeps it short (scripts/test.sh runs them all); it runs as the
# server user in a copy of the tree, since initdb refuses root.
# Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

copy=$TMPDIR_APIKEYS/t_installcheck
rm -rf "$copy"; mkdir -p "$copy"
tar -C "$ROOT" --exclude=./tmp --exclude='*.o' --exclude='*.bc' --exclude='*.so' -cf - . | tar -C "$copy" -xf -
chown -R "$PGUSER_OS" "$copy"
out=$copy/installcheck.out
if ! (cd "$copy" && as_pg make -s PG_CONFIG="$PGBIN/pg_config" installcheck \
		REGRESS="core_create core_verify" ISOLATION="rotate_verify") >"$out" 2>&1; then
	cat "$out"; cat "$copy"/regression.diffs "$copy"/output_iso/regression.diffs 2>/dev/null | head -n 40
	echo "FAIL: make installcheck failed"; exit 1
fi
cat "$out"
# both drivers ran, against temporary instances, and every test passed
# (PostgreSQL 15 says "creating temporary instance", 16 and later "using temp instance")
[ "$(grep -c -E 'creating temporary instance|using temp instance' "$out")" = 2 ] || { echo "FAIL: not two temporary instances"; exit 1; }
grep -q 'All 2 tests passed' "$out" && grep -q 'All 1 tests passed' "$out" ||
	{ echo "FAIL: not every test passed"; exit 1; }
rm -rf "$copy"
echo "PASS"
