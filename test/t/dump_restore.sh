#!/usr/bin/env bash
# test/t/dump_restore.sh - pg_dump -Fc / pg_restore keeps every tenant, key,
# secret, role mapping, scope registry entry and audit row (the extension's
# tables are pg_extension_config_dump tables), and every key verifies with the
# same verdict in the restored database (imported legacy keys included); vault
# secrets reveal the same plaintext with the same master key.
#
# Restore modes ($DUMP_RESTORE_MODES, default "custom single plain"):
#   custom    pg_dump -Fc, pg_restore over one connection
#   single    pg_dump -Fc, pg_restore --single-transaction
#   plain     pg_dump -Fp | psql
#   parallel  pg_dump -Fc, pg_restore -j 4 (test/t/dump_restore_parallel.sh)
#             with session_replication_role = replica, as the README says:
#             pg_dump orders the extension's tables by their foreign keys but
#             does not record that order for a parallel restore, so the
#             foreign-key triggers must not fire while the data loads.
#
# Runs its own cluster (tmp/t_dump, port 54394, unless $DUMP_RESTORE_NAME /
# $DUMP_RESTORE_PORT say otherwise), stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=${DUMP_RESTORE_NAME:-t_dump}
PORT=${DUMP_RESTORE_PORT:-54394}
MODES=${DUMP_RESTORE_MODES:-custom single plain}
DIR=$TMPDIR_APIKEYS/$NAME
DUMP=$TMPDIR_APIKEYS/$NAME.dump
trap 'cluster_stop $NAME || true' EXIT

q() { local db=$1; shift; cluster_psql "$NAME" "$PORT" -d "$db" -q "$@"; }
qa() { local db=$1; shift; cluster_psql "$NAME" "$PORT" -d "$db" -qAt "$@"; }
die() { echo "FAIL: $*" >&2; exit 1; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" \
	"apikeys.vault_master_key = 'dump-test-master-key-0123456789abcdef'"
q postgres -c 'CREATE DATABASE src'

echo "== populating src"
q src >/dev/null <<'SQL'
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme', 'Acme Corp') \g /dev/null
SELECT apikeys.tenant_create('globex', 'Globex') \g /dev/null
SELECT apikeys.tenant_create('initech') \g /dev/null
CREATE ROLE acme_admin;
SELECT apikeys.grant_tenant('acme_admin', 'acme');

-- The plaintext keys live in an ordinary table outside the extension: it is
-- dumped and restored too, so both databases can be checked with one query.
CREATE TABLE public.plain_keys (label text PRIMARY KEY, api_key text NOT NULL, key_id uuid);
CREATE FUNCTION pg_temp.mk(label text, tenant text, scopes text[] DEFAULT '{}', expires timestamptz DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO public.plain_keys
    SELECT label, k.api_key, k.key_id FROM apikeys.apikey_create(tenant, label, scopes, expires) k
$$;
CREATE FUNCTION pg_temp.rot(label text, newlabel text, grace interval)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO public.plain_keys
    SELECT newlabel, r.api_key, r.key_id
      FROM apikeys.apikey_rotate((SELECT key_id FROM public.plain_keys WHERE plain_keys.label = rot.label), grace) r
$$;
CREATE FUNCTION pg_temp.id(label text) RETURNS uuid LANGUAGE sql AS
    $$ SELECT key_id FROM public.plain_keys WHERE plain_keys.label = id.label $$;

SELECT pg_temp.mk('acme_plain', 'acme');
SELECT pg_temp.mk('acme_scoped', 'acme', ARRAY['read', 'write'], now() + interval '30 days');
SELECT pg_temp.mk('acme_revoked', 'acme', ARRAY['read']);
SELECT pg_temp.mk('acme_disabled', 'acme');
SELECT pg_temp.mk('globex_grace', 'globex', ARRAY['billing']);
SELECT pg_temp.rot('globex_grace', 'globex_grace_v2', '1 hour');
SELECT pg_temp.rot('globex_grace_v2', 'globex_grace_v3', '2 hours');
SELECT pg_temp.mk('globex_nograce', 'globex');
SELECT pg_temp.rot('globex_nograce', 'globex_nograce_v2', '0');
SELECT pg_temp.mk('globex_revoked_after_rotate', 'globex');
SELECT pg_temp.rot('globex_revoked_after_rotate', 'globex_revoked_after_rotate_v2', '1 hour');
SELECT pg_temp.mk('initech_inactive', 'initech');
SELECT pg_temp.mk('acme_deleted', 'acme');

SELECT apikeys.apikey_revoke(pg_temp.id('acme_revoked'), 'leaked in a log');
SELECT apikeys.apikey_revoke(pg_temp.id('globex_revoked_after_rotate'));
SELECT apikeys.apikey_disable(pg_temp.id('acme_disabled'));
SELECT apikeys.apikey_delete(pg_temp.id('acme_deleted'));
SELECT apikeys.tenant_update('initech', active => false) \g /dev/null
INSERT INTO public.plain_keys VALUES ('garbage', 'ak_not_a_key', NULL);

-- Scope registries: acme's own and the global one (after the keys above,
-- some of which hold scopes registered nowhere: they keep verifying).
SELECT apikeys.scope_define('acme', 'read', 'Read things') \g /dev/null
SELECT apikeys.scope_define('acme', 'read:*') \g /dev/null
SELECT apikeys.scope_define(NULL, 'billing', 'Billing, for every tenant') \g /dev/null

-- Imported legacy keys (docs/migration.md): a tenant's tk_ format and a
-- global KeyHippo-like one (SHA-512 of the part after a random prefix).
SELECT apikeys.key_format_register('acme', 'tk', 'tk_', 67, 'hex') \g /dev/null
SELECT apikeys.key_format_register(NULL, 'keyhippo', '', 140, 'hex', 'sha512', 12, 'base64') \g /dev/null
CREATE TEMP TABLE legacy AS
SELECT label, 'tk_' || encode(gen_random_bytes(32), 'hex') AS k
  FROM unnest('{legacy_tk,legacy_tk_revoked,legacy_tk_rotated}'::text[]) label;
INSERT INTO public.plain_keys
SELECT l.label, l.k, apikeys.apikey_import('acme', 'tk', encode(digest(l.k, 'sha256'), 'hex'), l.label,
                                           status => CASE WHEN l.label = 'legacy_tk_revoked' THEN 'revoked' END)
  FROM legacy l;
INSERT INTO public.plain_keys
SELECT 'legacy_kh', h || b, apikeys.apikey_import('globex', 'keyhippo', encode(digest(b, 'sha512'), 'hex'), 'kh', head => h)
  FROM (SELECT encode(gen_random_bytes(8), 'base64') h, encode(gen_random_bytes(64), 'hex') b) x;
SELECT pg_temp.rot('legacy_tk_rotated', 'legacy_tk_rotated_v2', '1 hour');

-- Vault secrets: the ciphertexts travel, and decrypt with the same master key.
CREATE TABLE public.plain_vault (id uuid PRIMARY KEY, secret text NOT NULL);
INSERT INTO public.plain_vault
SELECT apikeys.vault_add(t, s, l, p), p
  FROM (VALUES ('acme', 'openai', 'prod', 'sk-proj-AAAAaaaa1111bbbb2222cccc3333'),
               ('globex', 'generic', 'webhook', 'whsec-0123456789')) v(t, s, l, p);
SQL

[ "$(qa src -c "SELECT count(*) || '|' || bool_and(apikeys.vault_reveal(id) = secret) FROM public.plain_vault")" = "2|true" ] ||
	die "vault secrets do not reveal in the source database"

# What each key must verify as, before and after the round trip.
cat >"$DIR/expected_verdicts" <<'EOF'
acme_deleted|not_found
acme_disabled|disabled
acme_plain|valid
acme_revoked|revoked
acme_scoped|valid
garbage|malformed
globex_grace|valid
globex_grace_v2|valid
globex_grace_v3|valid
globex_nograce|not_found
globex_nograce_v2|valid
globex_revoked_after_rotate|not_found
globex_revoked_after_rotate_v2|revoked
initech_inactive|tenant_inactive
legacy_kh|valid
legacy_tk|valid
legacy_tk_revoked|revoked
legacy_tk_rotated|valid
legacy_tk_rotated_v2|valid
EOF

VERDICTS="SELECT label, (apikeys.apikey_verify(api_key)).code FROM public.plain_keys ORDER BY label"
# Everything the round trip must keep, one query per table, in a stable order.
snapshot() {
	local db=$1
	{
		echo "-- tenant";      qa "$db" -c "SELECT * FROM apikeys.tenant ORDER BY tenant"
		echo "-- credential";  qa "$db" -c "SELECT * FROM apikeys.credential ORDER BY key_id"
		echo "-- secret";      qa "$db" -c "SELECT encode(digest, 'hex'), key_id, hint, created_at, valid_until FROM apikeys.secret ORDER BY digest"
		echo "-- keys";        qa "$db" -c "SELECT * FROM apikeys.keys ORDER BY key_id"
		echo "-- role_tenant"; qa "$db" -c "SELECT * FROM apikeys.role_tenant ORDER BY role_name, tenant"
		echo "-- vault";       qa "$db" -c "SELECT id, tenant, service, name, encode(ciphertext, 'hex'), key_fp FROM apikeys.vault_secret ORDER BY id"
		echo "-- verdicts";    qa "$db" -c "$VERDICTS"
		if [ "$(qa "$db" -c "SELECT to_regclass('apikeys.scope') IS NOT NULL")" = t ]; then
			echo "-- scope"; qa "$db" -c "SELECT * FROM apikeys.scope ORDER BY tenant NULLS FIRST, scope"
		fi
		if [ "$(qa "$db" -c "SELECT to_regclass('apikeys.key_format') IS NOT NULL")" = t ]; then
			echo "-- key_format";    qa "$db" -c "SELECT * FROM apikeys.key_format ORDER BY format_id"
			echo "-- secret formats"; qa "$db" -c "SELECT encode(digest, 'hex'), format_id FROM apikeys.secret WHERE format_id IS NOT NULL ORDER BY digest"
		fi
		if [ "$(qa "$db" -c "SELECT to_regclass('apikeys.audit') IS NOT NULL")" = t ]; then
			echo "-- audit"; qa "$db" -c "SELECT audit_id, at, tenant, key_id, action, outcome, db_role, detail, encode(row_hash, 'hex') FROM apikeys.audit ORDER BY chain, audit_id"
		fi
	}
}

qa src -c "$VERDICTS" >"$DIR/src_verdicts"
diff -u "$DIR/expected_verdicts" "$DIR/src_verdicts" || die "verdicts in the source database are not as expected"
snapshot src >"$DIR/src.snapshot"
echo "src: $(grep -c . "$DIR/src.snapshot") snapshot lines"

echo "== pg_dump -Fc src"
rm -f "$DUMP"
"$PGBIN/pg_dump" -h "$DIR" -p "$PORT" -U postgres -Fc -f "$DUMP" src || die "pg_dump failed"
"$PGBIN/pg_restore" -l "$DUMP" >"$DIR/dump.toc"
grep -E 'TABLE DATA|EXTENSION' "$DIR/dump.toc" | sed 's/^/   /'

q postgres -c 'CREATE ROLE acme_admin' 2>/dev/null || true   # roles are global: already there

# check_restored DB: verdicts and every table match the source; the audit
# chain still checks; the database keeps working.
check_restored() {
	local db=$1
	qa "$db" -c "$VERDICTS" >"$DIR/${db}_verdicts"
	diff -u "$DIR/expected_verdicts" "$DIR/${db}_verdicts" || die "$db: verdicts differ from the source's"
	snapshot "$db" >"$DIR/$db.snapshot"
	diff -u "$DIR/src.snapshot" "$DIR/$db.snapshot" || die "$db: restored data differs from the source"
	if [ "$(qa "$db" -c "SELECT to_regprocedure('apikeys.audit_check()') IS NOT NULL")" = t ]; then
		[ "$(qa "$db" -c "SELECT ok FROM apikeys.audit_check()")" = t ] ||
			{ q "$db" -c "SELECT * FROM apikeys.audit_check()"; die "$db: audit chain broken after restore"; }
	fi
	qa "$db" >"$DIR/${db}_after" <<'SQL' || die "$db: using the restored database failed"
SELECT apikeys.apikey_create('acme', 'after_restore') \g /dev/null
CREATE TEMP TABLE r AS
SELECT r.* FROM public.plain_keys p, apikeys.apikey_rotate(p.key_id, '1 hour') r WHERE p.label = 'acme_plain';
SELECT (apikeys.apikey_verify(r.api_key)).code, (apikeys.apikey_verify(p.api_key)).code
  FROM r, public.plain_keys p WHERE p.label = 'acme_plain';
SQL
	[ "$(cat "$DIR/${db}_after")" = "valid|valid" ] ||
		die "$db: rotate after restore: got '$(cat "$DIR/${db}_after")', want valid|valid"
	[ "$(qa "$db" -c "SELECT count(*) || '|' || bool_and(apikeys.vault_reveal(id) = secret) FROM public.plain_vault")" = "2|true" ] ||
		die "$db: vault secrets do not reveal after restore"
	if [ "$(qa "$db" -c "SELECT to_regclass('apikeys.scope') IS NOT NULL")" = t ]; then
		# the restored registries are enforced: acme's and the global one
		got=$(qa "$db" -c "SELECT apikeys.apikey_create('acme', 'x', '{write}')" 2>&1 || true)
		case $got in
		*'invalid_scope: unknown scope "write"'*) ;;
		*) die "$db: the restored scope registry is not enforced: got '$got'" ;;
		esac
		[ "$(qa "$db" -c "SELECT count(*) FROM apikeys.apikey_create('acme', 'y', '{billing,read:*}')")" = 1 ] ||
			die "$db: a registered scope is refused after restore"
	fi
	echo "$db: $(wc -l <"$DIR/${db}_verdicts") verdicts and $(grep -c . "$DIR/$db.snapshot") snapshot lines match; audit chain ok; create/rotate/verify and vault reveal work"
}

restore() {   # restore DB LOG COMMAND...
	local db=$1 log=$2; shift 2
	"$PGBIN/createdb" -h "$DIR" -p "$PORT" -U postgres "$db" || die "createdb $db failed"
	if ! "$@" >"$log" 2>&1; then
		cat "$log"
		die "restore into $db failed (see above)"
	fi
	if grep -q 'ERROR' "$log"; then cat "$log"; die "restore into $db reported errors"; fi
}

n=0
for mode in $MODES; do
	n=$((n + 1))
	case $mode in
	custom)
		echo "== pg_restore into dst (custom format, one connection)"
		restore dst "$DIR/restore.log" "$PGBIN/pg_restore" -h "$DIR" -p "$PORT" -U postgres -d dst --exit-on-error "$DUMP"
		check_restored dst ;;
	single)
		echo "== pg_restore --single-transaction into dst_single"
		restore dst_single "$DIR/restore_single.log" "$PGBIN/pg_restore" -h "$DIR" -p "$PORT" -U postgres -d dst_single --single-transaction --exit-on-error "$DUMP"
		check_restored dst_single ;;
	plain)
		echo "== pg_dump -Fp | psql into dst_plain"
		"$PGBIN/pg_dump" -h "$DIR" -p "$PORT" -U postgres -Fp -f "$DUMP.sql" src || die "pg_dump -Fp failed"
		restore dst_plain "$DIR/restore_plain.log" cluster_psql "$NAME" "$PORT" -d dst_plain -q -f "$DUMP.sql"
		check_restored dst_plain ;;
	parallel)
		echo "== pg_restore -j 4 into dst_parallel"
		PGOPTIONS='-c session_replication_role=replica' \
			restore dst_parallel "$DIR/restore_parallel.log" "$PGBIN/pg_restore" -h "$DIR" -p "$PORT" -U postgres -d dst_parallel -j 4 --exit-on-error "$DUMP"
		check_restored dst_parallel ;;
	*) die "unknown restore mode $mode" ;;
	esac
done

echo "PASS: $n restore(s) ($MODES); $(wc -l <"$DIR/expected_verdicts") keys verify alike; tenants, keys, secrets, role mappings, scope registries and audit rows match"
