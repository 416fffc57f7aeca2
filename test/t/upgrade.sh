#!/usr/bin/env bash
# test/t/upgrade.sh - ALTER EXTENSION apikeys UPDATE from every released
# version (released/apikeys--X.sql) to the current one (apikeys.control):
#
#  (a) the upgraded schema equals a fresh install of the current version:
#      pg_dump --schema-only --binary-upgrade (which, unlike a plain dump,
#      writes every member object of the extension with its privileges,
#      initial privileges and comment) of both databases, OIDs and xids
#      taken out, must be identical, and so must the extension's
#      configuration tables and their dump conditions;
#  (b) every key made before the upgrade verifies as before, policies
#      included (IP allowlist, rate limit and usage cap state), and vault
#      secrets still reveal;
#  (c) the audit chains still check, before and after new changes, and
#      audit_verify() does not raise;
#  (d) while the upgrade is pending, the new library serves the old SQL: the
#      released version's functions create, verify, rotate, revoke, reveal
#      and check with the library built from this tree.
#
# Runs its own cluster (tmp/t_upgrade, port 54410), stopped on exit.
# Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_upgrade
PORT=54410
DIR=$TMPDIR_APIKEYS/$NAME
CURRENT=$(sed -n "s/^default_version *= *'\(.*\)'.*/\1/p" "$ROOT/apikeys.control")
trap 'cluster_stop $NAME || true' EXIT

q() { local db=$1; shift; cluster_psql "$NAME" "$PORT" -d "$db" -q "$@"; }
qa() { local db=$1; shift; cluster_psql "$NAME" "$PORT" -d "$db" -qAt "$@"; }
die() { echo "FAIL: $*" >&2; exit 1; }

# The extension's schema as pg_dump sees it, without what differs between
# any two databases (OIDs, relfilenodes, frozen xids, the dump's nonce, the
# stored default of rows older than an added column: how the rows are
# stored, not the schema), and
# the order in which configuration tables were registered ($CONFIG compares
# them and their conditions).
schema_of() {
	as_pg "$PGBIN/pg_dump" -h "$DIR" -p "$PORT" -U postgres --schema-only --binary-upgrade "$1" |
		grep -v -E '^\\(un)?restrict |binary_upgrade_set_next_|binary_upgrade_set_missing_value|^-- set missing value' |
		sed -E -e "s/(binary_upgrade_create_empty_extension\('apikeys', 'apikeys', false, '[^']*', )'\{[0-9,]*\}', '[^']*'/\1'{configuration tables}', '{their conditions}'/" \
			-e "s/relfrozenxid = '[0-9]+', relminmxid = '[0-9]+'/relfrozenxid = X, relminmxid = X/" \
			-e "s/WHERE oid = '[0-9]+'/WHERE oid = N/" | cat -s
}
CONFIG="SELECT c::regclass, cond FROM pg_extension e,
               unnest(e.extconfig, e.extcondition) AS u(c, cond)
         WHERE e.extname = 'apikeys' ORDER BY c::regclass::text"

# What every key verifies as (test/t/populate_keys.verdicts: labels are in
# public.plain_keys, which test/t/populate_keys.sql fills).
VERDICTS="SELECT label, v.code FROM public.plain_keys p,
                 LATERAL apikeys.apikey_verify(p.api_key, client_addr => p.addr) v ORDER BY label"

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" \
	"apikeys.vault_master_key = 'upgrade-test-master-key-0123456789abcdef'" \
	"apikeys.flush_interval = '100ms'"

for released in "$ROOT"/released/apikeys--*.sql; do
	FROM=${released##*/apikeys--}; FROM=${FROM%.sql}
	echo "== from $FROM to $CURRENT"
	for db in up bare fresh; do q postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"; done

	# -- a database of the released version, in use ------------------------
	q up -c "CREATE EXTENSION apikeys VERSION '$FROM' CASCADE" -f "$ROOT/test/t/populate_keys.sql" >/dev/null ||
		die "populating the $FROM database failed"

	# (d) the old SQL on the new library: every verdict, and each kind of change
	qa up -c "$VERDICTS" >"$DIR/verdicts_old" || die "verify failed on $FROM's SQL"
	diff -u "$ROOT/test/t/populate_keys.verdicts" "$DIR/verdicts_old" || die "verdicts differ on $FROM's SQL with the new library"
	q up >/dev/null <<-'SQL' || die "$FROM's management functions failed with the new library"
	SELECT public.mk('acme_before_upgrade', 'acme', ARRAY['read']);
	SELECT public.rot('acme_before_upgrade', 'acme_before_upgrade_v2', '1 hour');
	SELECT apikeys.apikey_revoke(public.id('acme_before_upgrade_v2'));
	SQL
	got=$(qa up -c "SELECT string_agg(v.code, ',' ORDER BY label) FROM public.plain_keys p, LATERAL apikeys.apikey_verify(p.api_key) v WHERE label LIKE 'acme_before_upgrade%'")
	[ "$got" = "not_found,revoked" ] || die "a key rotated then revoked on $FROM's SQL: $got, not not_found,revoked (revoking drops the grace secret)"
	[ "$(qa up -c "SELECT count(*) || '|' || bool_and(apikeys.vault_reveal(id) = secret) FROM public.plain_vault")" = "2|true" ] ||
		die "vault secrets do not reveal on $FROM's SQL"
	[ "$(qa up -c "SELECT ok FROM apikeys.audit_check()")" = t ] || die "audit_check() fails on $FROM's SQL"
	AUDIT_STATE="SELECT count(*) || '|' || md5(string_agg(encode(row_hash, 'hex'), ',' ORDER BY chain, audit_id)) FROM apikeys.audit"
	audit_before=$(qa up -c "$AUDIT_STATE")
	audit_rows_before=${audit_before%%|*}

	# -- the upgrade ---------------------------------------------------------
	q up -c "ALTER EXTENSION apikeys UPDATE" || die "ALTER EXTENSION apikeys UPDATE from $FROM failed"
	[ "$(qa up -c "SELECT extversion FROM pg_extension WHERE extname = 'apikeys'")" = "$CURRENT" ] ||
		die "after the update from $FROM the extension is not at $CURRENT"
	[ "$(qa up -c "$AUDIT_STATE")" = "$audit_before" ] || die "the upgrade changed the audit rows"

	# (b) the same verdicts, limits included; vault; new changes work
	qa up -c "$VERDICTS" | grep -v -E '^(acme_before_upgrade|legacy_|acme_registry)' >"$DIR/verdicts_new" || die "verify failed after the upgrade"
	diff -u "$ROOT/test/t/populate_keys.verdicts" "$DIR/verdicts_new" || die "verdicts changed across the upgrade from $FROM"
	[ "$(qa up -c "SELECT count(*) || '|' || bool_and(apikeys.vault_reveal(id) = secret) FROM public.plain_vault")" = "2|true" ] ||
		die "vault secrets do not reveal after the upgrade"

	# the README's step 3: mapped roles get the new version's privileges
	q up -c "SELECT apikeys.grant_tenant(role_name, tenant, privilege) FROM apikeys.role_tenant" >/dev/null ||
		die "granting the mapped roles again failed"
	got=$(qa up -c "SET ROLE upgrade_acme_admin" -c "SELECT count(*) FROM apikeys.keys" -c "SELECT count(*) FROM apikeys.scopes") ||
		die "a role mapped before the upgrade cannot read the views after step 3"

	# what the current version added, in use in the upgraded database:
	# imported legacy keys, a scope registry, named limits, credits
	q up -f "$ROOT/test/t/populate_1_1.sql" >/dev/null || die "1.1's features fail after the upgrade"
	qa up -c "$VERDICTS" | grep -E '^(legacy_|acme_registry|acme_credits_)' | LC_ALL=C sort -t"|" -k1,1 >"$DIR/verdicts_1_1" ||
		die "verify of 1.1's keys failed"
	diff -u "$ROOT/test/t/populate_1_1.verdicts" "$DIR/verdicts_1_1" || die "1.1's keys verify wrongly after the upgrade"

	# (c) the chains check, and keep checking once changed again
	[ "$(qa up -c "SELECT ok FROM apikeys.audit_check()")" = t ] || die "audit_check() fails after the upgrade"
	q up >/dev/null <<-'SQL' || die "management fails after the upgrade"
	SELECT public.mk('acme_after_upgrade', 'acme');
	SELECT public.rot('acme_plain', 'acme_plain_v2', '1 hour');
	SELECT apikeys.apikey_revoke(public.id('acme_scoped'));
	SELECT apikeys.audit_verify();
	SQL
	got=$(qa up -c "SELECT string_agg(v.code, ',' ORDER BY label) FROM public.plain_keys p, LATERAL apikeys.apikey_verify(p.api_key) v WHERE label IN ('acme_after_upgrade', 'acme_plain', 'acme_plain_v2', 'acme_scoped')")
	[ "$got" = "valid,valid,valid,revoked" ] || die "keys changed after the upgrade verify as $got, not valid,valid,valid,revoked"
	[ "$(qa up -c "SELECT count(*) > $audit_rows_before FROM apikeys.audit")" = t ] || die "changes after the upgrade are not audited"
	[ "$(qa up -c "SELECT ok::text || '|' || (rows_checked = (SELECT count(*) FROM apikeys.audit)) FROM apikeys.audit_check()")" = "true|true" ] ||
		die "the audit does not check every row after new changes"

	# (a) the upgraded schema is a fresh install's
	q bare -c "CREATE EXTENSION apikeys VERSION '$FROM' CASCADE" -c "ALTER EXTENSION apikeys UPDATE" >/dev/null ||
		die "could not update an empty $FROM install"
	q fresh -c "CREATE EXTENSION apikeys CASCADE" >/dev/null || die "could not install $CURRENT"
	schema_of bare >"$DIR/schema_upgraded.sql"
	schema_of fresh >"$DIR/schema_fresh.sql"
	[ "$(grep -c 'ALTER EXTENSION apikeys ADD' "$DIR/schema_fresh.sql")" -gt 100 ] ||
		die "the schema dump does not list the extension's members"
	diff -u "$DIR/schema_fresh.sql" "$DIR/schema_upgraded.sql" >"$DIR/schema.diff" || {
		head -n 60 "$DIR/schema.diff"
		die "the schema after ALTER EXTENSION UPDATE from $FROM differs from a fresh $CURRENT install (above: - fresh, + upgraded)"
	}
	[ "$(qa bare -c "$CONFIG")" = "$(qa fresh -c "$CONFIG")" ] ||
		die "the extension's configuration tables differ after the update from $FROM"
	echo "ok: from $FROM: schema identical ($(grep -c 'ALTER EXTENSION apikeys ADD' "$DIR/schema_fresh.sql") members), verdicts, vault and audit kept"
done
echo "PASS"
