#!/usr/bin/env bash
# test/t/default_privileges.sh - default privileges of the installing role
# give no role anything on the extension's objects, fresh or upgraded.
#
# The superuser who runs CREATE EXTENSION (or ALTER EXTENSION UPDATE) has
# ALTER DEFAULT PRIVILEGES ... GRANT ALL ... TO app_rw, as DBAs do for their
# application roles.  Every object the script creates would then be app_rw's
# too: TRIGGER on apikeys.credential lets app_rw, once mapped to a tenant,
# put a trigger of its own there, which apikey_create's definer code (a
# superuser) runs: app_rw makes itself a superuser.  After the install and
# after the update from every released version, app_rw must hold nothing on
# the extension's schemas, tables, views, sequences and functions beyond
# PUBLIC, and the trigger must be refused (42501), nothing run.
#
# Own cluster: tmp/t_default_privs, port 54413; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_default_privs
PORT=54413

trap 'cluster_stop $NAME || true' EXIT
die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
qa() { local db=$1; shift; cluster_psql "$NAME" "$PORT" -d "$db" -qAt "$@"; }

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'"
qa postgres -c "CREATE ROLE app_rw" >/dev/null

# What app_rw holds on the extension's objects that PUBLIC does not.
HELD="SELECT string_agg(o, ', ' ORDER BY o) FROM (
    SELECT format('%s %s', p, c.oid::regclass) AS o
      FROM pg_class c, unnest('{SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER}'::text[]) p
     WHERE c.relnamespace IN ('apikeys'::regnamespace, 'apikeys_internal'::regnamespace)
       AND CASE WHEN c.relkind IN ('r', 'v', 'm', 'p', 'f')
                THEN has_table_privilege('app_rw', c.oid, p) AND NOT has_table_privilege('public', c.oid, p) END
    UNION ALL
    SELECT format('USAGE %s', c.oid::regclass)
      FROM pg_class c
     WHERE c.relnamespace IN ('apikeys'::regnamespace, 'apikeys_internal'::regnamespace)
       AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege('app_rw', c.oid, 'USAGE') END
    UNION ALL
    SELECT format('EXECUTE %s', f.oid::regprocedure)
      FROM pg_proc f
     WHERE f.pronamespace IN ('apikeys'::regnamespace, 'apikeys_internal'::regnamespace)
       AND has_function_privilege('app_rw', f.oid, 'EXECUTE') AND NOT has_function_privilege('public', f.oid, 'EXECUTE')
    UNION ALL
    SELECT format('%s ON SCHEMA %s', p, n.nspname)
      FROM pg_namespace n, unnest('{USAGE,CREATE}'::text[]) p
     WHERE n.nspname IN ('apikeys', 'apikeys_internal') AND has_schema_privilege('app_rw', n.oid, p)
) x"

# The attack, as app_rw mapped to acme: a trigger of its own on apikeys.credential.
ATTACK=$(cat <<'SQL'
SELECT apikeys.tenant_create('acme') IS NOT NULL;
SELECT apikeys.grant_tenant('app_rw', 'acme');
CREATE SCHEMA app_rw AUTHORIZATION app_rw;
SET ROLE app_rw;
CREATE FUNCTION app_rw.f() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE app_rw SUPERUSER';
    END IF;
    RETURN NULL;
END $f$;
DO $d$
BEGIN
    CREATE TRIGGER backdoor AFTER INSERT ON apikeys.credential FOR EACH ROW EXECUTE FUNCTION app_rw.f();
    RAISE NOTICE 'attack: trigger created';
EXCEPTION WHEN others THEN
    RAISE NOTICE 'attack: % %', SQLSTATE, SQLERRM;
END $d$;
SELECT count(*) FROM apikeys.apikey_create('acme', 'k');
RESET ROLE;
SQL
)

check_db() {
	local db=$1 what=$2 held out
	held=$(qa "$db" -c "$HELD")
	[ -z "$held" ] || die "$what: app_rw holds $held"
	ok "$what: app_rw holds nothing on the extension's objects"
	out=$(qa "$db" -c "$ATTACK" 2>&1) || die "$what: the attack script failed: $out"
	echo "$out" | grep -q 'NOTICE:  attack: 42501 permission denied for table credential' ||
		die "$what: the trigger on apikeys.credential was not refused with 42501: $out"
	[ "$(qa "$db" -c "SELECT count(*) FROM pg_trigger WHERE tgname = 'backdoor'")" = 0 ] || die "$what: the trigger exists"
	[ "$(qa postgres -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'app_rw'")" = f ] ||
		die "$what: app_rw made itself a superuser"
	ok "$what: app_rw's trigger refused (42501), app_rw is no superuser"
	qa "$db" -c "DROP EXTENSION apikeys CASCADE" -c "DROP SCHEMA app_rw CASCADE" >/dev/null 2>&1 || true
}

DEFAULTS="ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO app_rw;
          ALTER DEFAULT PRIVILEGES GRANT ALL ON SEQUENCES TO app_rw;
          ALTER DEFAULT PRIVILEGES GRANT ALL ON FUNCTIONS TO app_rw;
          ALTER DEFAULT PRIVILEGES GRANT ALL ON SCHEMAS TO app_rw;"

qa postgres -c "CREATE DATABASE fresh" >/dev/null
qa fresh -c "$DEFAULTS" -c "CREATE EXTENSION apikeys CASCADE" >/dev/null 2>&1 || die "CREATE EXTENSION failed"
check_db fresh "fresh install"

for released in "$ROOT"/released/apikeys--*.sql; do
	FROM=${released##*/apikeys--}; FROM=${FROM%.sql}
	qa postgres -c "CREATE DATABASE \"up_$FROM\"" >/dev/null
	qa "up_$FROM" -c "$DEFAULTS" -c "CREATE EXTENSION apikeys VERSION '$FROM' CASCADE" \
		-c "ALTER EXTENSION apikeys UPDATE" >/dev/null 2>&1 || die "installing $FROM and updating failed"
	check_db "up_$FROM" "updated from $FROM"
done
echo "PASS"
