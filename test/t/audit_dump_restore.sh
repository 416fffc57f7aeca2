#!/usr/bin/env bash
# test/t/audit_dump_restore.sh - per-tenant audit chains, one of them purged,
# survive pg_dump / pg_restore in plain, custom and directory format (the
# directory one dumped and restored with 2 jobs): every chain checks, the
# heads are the source's, new writes continue each chain, and a purge works
# on the restored rows.
#
# Source database: tenants acme, globex, initech, umbrella with keys created,
# rotated, revoked, disabled; a global grant (a row of the tenant-less chain
# '').  Rows are made old by the test, as a superuser with the audit's
# triggers disabled for one transaction: acme's and globex's oldest rows
# 10 days back, initech's oldest rows 3 days back, and those chains re-linked
# and re-hashed from the aged rows on with apikeys_internal._audit_hash (the
# triggers' states are put back exactly as they were, and audit_check()
# must pass on the result before anything else).  Then
# audit_purge('5 days') deletes acme's and globex's aged rows (each chain
# gets its audit_purged row; initech, umbrella and '' are untouched), and
# one more key in acme is created after the purge.
#
# Each restored database: audit_check() ok, the audit table identical to
# the source's (every column), audit_head() equal to the source's; then a
# key created in each tenant and a global grant: every chain's next row is
# head + 1 and links to the head's hash, audit_check() ok; then
# audit_purge('2 days') deletes exactly initech's aged rows, audit_check()
# ok, and initech's chain takes one more key.
#
# Own cluster: tmp/t_audit_dump, port 54312; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_audit_dump
PORT=54312
DIR=$TMPDIR_APIKEYS/$NAME
trap 'cluster_stop $NAME || true' EXIT

q() { local db=$1; shift; cluster_psql "$NAME" "$PORT" -d "$db" -q "$@"; }
qa() { local db=$1; shift; cluster_psql "$NAME" "$PORT" -d "$db" -qAt "$@"; }
die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "max_connections = 40"
q postgres -c 'CREATE DATABASE src'
for r in dump_global dump_auditor_dst_plain dump_auditor_dst_custom dump_auditor_dst_dir; do
	q postgres -c "CREATE ROLE $r"
done

echo "== populating src"
q src >/dev/null <<'SQL'
CREATE EXTENSION apikeys CASCADE;
SELECT count(apikeys.tenant_create(t)) FROM unnest('{acme,globex,initech,umbrella}'::text[]) t;
SELECT apikeys.grant_tenant('dump_global', NULL);
CREATE TABLE public.k (tenant text, name text, key_id uuid);
INSERT INTO public.k
SELECT t, t || ' ' || g, c.key_id
  FROM unnest('{acme,globex,initech,umbrella}'::text[]) t, generate_series(1, 4) g,
       LATERAL apikeys.apikey_create(t, t || ' ' || g) c;
SELECT count(*) FROM public.k, LATERAL apikeys.apikey_rotate(key_id) r WHERE name LIKE '% 1' OR name LIKE '% 2';
SELECT count(apikeys.apikey_revoke(key_id, 'old')) FROM public.k WHERE name LIKE '% 3';
SELECT count(apikeys.apikey_disable(key_id)) FROM public.k WHERE name LIKE '% 4';
SQL

[ "$(qa src -c "SELECT ok FROM apikeys.audit_check()")" = t ] || die "src: audit_check not ok before aging"
[ "$(qa src -c "SELECT string_agg(DISTINCT chain, ',' ORDER BY chain) FROM apikeys.audit")" = ",acme,globex,initech,umbrella" ] ||
	die "src: chains are '$(qa src -c "SELECT string_agg(DISTINCT chain, ',' ORDER BY chain) FROM apikeys.audit")', expected ',acme,globex,initech,umbrella'"

# age CHAIN N DAYS: the chain's rows 1..N move DAYS back; the chain is
# re-linked and re-hashed from row 1 on.  Triggers off for this transaction
# only (their states, ALWAYS included, restored one by one).
age() {
	qa src -v ON_ERROR_STOP=1 >/dev/null <<-SQL
	BEGIN;
	CREATE TEMP TABLE trig ON COMMIT DROP AS
	    SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'apikeys.audit'::regclass AND NOT tgisinternal;
	ALTER TABLE apikeys.audit DISABLE TRIGGER USER;
	UPDATE apikeys.audit SET at = at - interval '$3 days' WHERE chain = '$1' AND audit_id <= $2;
	DO \$\$
	DECLARE
	    r apikeys.audit;
	    prev bytea;
	BEGIN
	    FOR r IN SELECT * FROM apikeys.audit WHERE chain = '$1' ORDER BY audit_id LOOP
	        r.prev_hash := coalesce(prev, r.prev_hash);
	        r.row_hash := apikeys_internal._audit_hash(r);
	        UPDATE apikeys.audit a SET prev_hash = r.prev_hash, row_hash = r.row_hash
	         WHERE a.chain = r.chain AND a.audit_id = r.audit_id;
	        prev := r.row_hash;
	    END LOOP;
	END
	\$\$;
	DO \$\$
	DECLARE t record;
	BEGIN
	    FOR t IN SELECT * FROM trig LOOP
	        EXECUTE format('ALTER TABLE apikeys.audit %s TRIGGER %I',
	                       CASE t.tgenabled WHEN 'A' THEN 'ENABLE ALWAYS' WHEN 'R' THEN 'ENABLE REPLICA'
	                                        WHEN 'O' THEN 'ENABLE' ELSE 'DISABLE' END, t.tgname);
	    END LOOP;
	END
	\$\$;
	SELECT count(*) FROM trig t JOIN pg_trigger p ON p.tgname = t.tgname AND p.tgrelid = 'apikeys.audit'::regclass
	 WHERE p.tgenabled <> t.tgenabled;
	COMMIT;
	SQL
}
triggers_before=$(qa src -c "SELECT string_agg(tgname || '=' || tgenabled::text, ' ' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'apikeys.audit'::regclass AND NOT tgisinternal")
age acme 8 10 || die "aging acme's rows failed"
age globex 5 10 || die "aging globex's rows failed"
age initech 4 3 || die "aging initech's rows failed"
[ "$(qa src -c "SELECT string_agg(tgname || '=' || tgenabled::text, ' ' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'apikeys.audit'::regclass AND NOT tgisinternal")" = "$triggers_before" ] ||
	die "the audit triggers' states changed while aging rows (before: $triggers_before)"
[ "$(qa src -c "SELECT ok FROM apikeys.audit_check()")" = t ] ||
	{ q src -c "SELECT * FROM apikeys.audit_check()"; die "src: audit_check not ok after aging (the test's re-hash disagrees with the extension's)"; }
ok "src: rows aged (acme 1-8 and globex 1-5 by 10 days, initech 1-4 by 3 days), chains re-hashed, audit_check ok"

echo "== audit_purge('5 days') in src"
heads_before_purge=$(qa src -c "SELECT string_agg(chain || ':' || audit_id, ' ' ORDER BY chain) FROM apikeys.audit_head()")
n=$(qa src -c "SELECT apikeys.audit_purge('5 days')")
[ "$n" = 13 ] || die "audit_purge('5 days') deleted $n rows, expected 13 (acme 8, globex 5)"
got=$(qa src -c "SELECT string_agg(chain || ':' || min_id || '-' || max_id || ':' || purged, ' ' ORDER BY chain)
                   FROM (SELECT chain, min(audit_id) AS min_id, max(audit_id) AS max_id,
                                count(*) FILTER (WHERE action = 'audit_purged') AS purged
                           FROM apikeys.audit GROUP BY chain) s")
echo "   chains (first-last:purge rows) before: $heads_before_purge; after: $got"
for c in acme:9 globex:6 initech:1 umbrella:1 :1; do
	case " $got " in *" ${c}-"*) ;; *) die "after the purge, chain ${c%%:*} does not start at row ${c##*:}: $got" ;; esac
done
[ "$(qa src -c "SELECT string_agg(chain, ',' ORDER BY chain) FROM apikeys.audit WHERE action = 'audit_purged'")" = acme,globex ] ||
	die "audit_purged rows are not exactly one in acme and one in globex"
[ "$(qa src -c "SELECT ok FROM apikeys.audit_check()")" = t ] ||
	{ q src -c "SELECT * FROM apikeys.audit_check()"; die "src: audit_check not ok after the purge"; }
qa src -c "SELECT apikeys.apikey_create('acme', 'after purge')" >/dev/null
[ "$(qa src -c "SELECT ok FROM apikeys.audit_check()")" = t ] || die "src: audit_check not ok after a write following the purge"
ok "src: 13 rows purged from acme and globex, one audit_purged row each; a new key; audit_check ok"

AUDIT="SELECT * FROM apikeys.audit ORDER BY chain, audit_id"
HEADS="SELECT chain, audit_id, row_hash FROM apikeys.audit_head() ORDER BY chain"
qa src -c "$AUDIT" >"$DIR/src.audit"
qa src -c "$HEADS" >"$DIR/src.heads"
echo "src: $(wc -l <"$DIR/src.audit") audit rows in $(wc -l <"$DIR/src.heads") chains"

echo "== pg_dump: plain, custom, directory (2 jobs)"
rm -rf "$DIR/dump.sql" "$DIR/dump.custom" "$DIR/dump.dir"
"$PGBIN/pg_dump" -h "$DIR" -p "$PORT" -U postgres -Fp -f "$DIR/dump.sql" src || die "pg_dump -Fp failed"
"$PGBIN/pg_dump" -h "$DIR" -p "$PORT" -U postgres -Fc -f "$DIR/dump.custom" src || die "pg_dump -Fc failed"
"$PGBIN/pg_dump" -h "$DIR" -p "$PORT" -U postgres -Fd -j 2 -f "$DIR/dump.dir" src || die "pg_dump -Fd -j 2 failed"

restore() {   # restore DB LOG COMMAND...
	local db=$1 log=$2; shift 2
	"$PGBIN/createdb" -h "$DIR" -p "$PORT" -U postgres "$db" || die "createdb $db failed"
	if ! "$@" >"$log" 2>&1; then cat "$log"; die "restore into $db failed (see above)"; fi
	if grep -q 'ERROR' "$log"; then cat "$log"; die "restore into $db reported errors"; fi
}
restore dst_plain "$DIR/restore_plain.log" cluster_psql "$NAME" "$PORT" -d dst_plain -q -f "$DIR/dump.sql"
restore dst_custom "$DIR/restore_custom.log" \
	"$PGBIN/pg_restore" -h "$DIR" -p "$PORT" -U postgres -d dst_custom --exit-on-error "$DIR/dump.custom"
# a parallel restore as the README says: foreign-key triggers off while the data loads
PGOPTIONS='-c session_replication_role=replica' restore dst_dir "$DIR/restore_dir.log" \
	"$PGBIN/pg_restore" -h "$DIR" -p "$PORT" -U postgres -d dst_dir -j 2 --exit-on-error "$DIR/dump.dir"

check_restored() {
	local db=$1 c h got
	[ "$(qa "$db" -c "SELECT ok FROM apikeys.audit_check()")" = t ] ||
		{ q "$db" -c "SELECT * FROM apikeys.audit_check()"; die "$db: audit_check not ok after the restore"; }
	qa "$db" -c "$AUDIT" >"$DIR/$db.audit"
	diff -u "$DIR/src.audit" "$DIR/$db.audit" >"$DIR/$db.audit.diff" || { head -n 40 "$DIR/$db.audit.diff"; die "$db: audit rows differ from the source's"; }
	qa "$db" -c "$HEADS" >"$DIR/$db.heads"
	diff -u "$DIR/src.heads" "$DIR/$db.heads" || die "$db: audit_head() differs from the source's"
	ok "$db: audit_check ok, $(wc -l <"$DIR/$db.audit") rows identical to the source's, audit_head() equal"

	# one new row in every chain: head + 1, linked to the head's hash
	qa "$db" >/dev/null <<-SQL || die "$db: writing after the restore failed"
	SELECT count(*) FROM unnest('{acme,globex,initech,umbrella}'::text[]) t, LATERAL apikeys.apikey_create(t, 'after restore') c;
	SELECT apikeys.grant_tenant('dump_auditor_$db', NULL, 'audit');
	SQL
	while IFS='|' read -r c h hash; do
		got=$(qa "$db" -c "SELECT count(*) FROM apikeys.audit WHERE chain = '$c' AND audit_id = $h + 1
		                      AND prev_hash = (SELECT row_hash FROM apikeys.audit WHERE chain = '$c' AND audit_id = $h)
		                      AND encode(prev_hash, 'hex') = '$hash'" </dev/null)
		[ "$got" = 1 ] || die "$db: chain '$c' does not continue from its restored head $h ($hash)"
	done <"$DIR/src.heads"
	[ "$(qa "$db" -c "SELECT ok FROM apikeys.audit_check()")" = t ] ||
		{ q "$db" -c "SELECT * FROM apikeys.audit_check()"; die "$db: audit_check not ok after new writes"; }
	ok "$db: a new write continues every chain from its restored head; audit_check ok"

	# the restored rows purge: initech's four 3-day-old rows
	got=$(qa "$db" -c "SELECT apikeys.audit_purge('2 days')")
	[ "$got" = 4 ] || die "$db: audit_purge('2 days') deleted $got rows, expected initech's 4"
	got=$(qa "$db" -c "SELECT min(audit_id) FROM apikeys.audit WHERE chain = 'initech'")
	[ "$got" = 5 ] || die "$db: initech's chain starts at $got after the purge, expected 5"
	qa "$db" -c "SELECT apikeys.apikey_create('initech', 'after purge')" >/dev/null
	[ "$(qa "$db" -c "SELECT ok FROM apikeys.audit_check()")" = t ] ||
		{ q "$db" -c "SELECT * FROM apikeys.audit_check()"; die "$db: audit_check not ok after purging restored rows"; }
	ok "$db: audit_purge('2 days') took initech's 4 aged rows; a write after it; audit_check ok"
}
for db in dst_plain dst_custom dst_dir; do check_restored "$db"; done
echo "PASS: plain, custom and directory (-j 2) restores keep every chain, its head, and its future"
