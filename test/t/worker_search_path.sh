#!/usr/bin/env bash
# test/t/worker_search_path.sh - a database owner's search_path does not reach
# the usage flush worker.
#
# The flush worker connects to each database as the bootstrap superuser and
# so takes the database's settings (ALTER DATABASE ... SET), which its owner
# may change without being a superuser.  The attack: the owner of a database
# (not a superuser) creates schema evil with domains named like the types
# the flush statement names (int8, timestamptz, uuid), whose CHECK calls a
# function that makes the owner a superuser when a superuser runs it, and
# sets the database's search_path to "evil, pg_catalog" (pg_catalog named
# last: evil's names come first).  A key is verified, so that its counts
# are flushed.  The flush must still write the counts, and no evil code may
# run: evil.calls stays empty and the owner is no superuser.
#
# Own cluster: tmp/t_worker_sp, port 54414; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_worker_sp
PORT=54414
DIR=$TMPDIR_APIKEYS/$NAME

cleanup() {
	cluster_stop "$NAME" 2>/dev/null ||
		as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
qa() { local db=$1; shift; cluster_psql "$NAME" "$PORT" -d "$db" -qAt "$@"; }

cluster_start "$NAME" "$PORT" \
	"shared_preload_libraries = 'apikeys'" \
	"apikeys.flush_interval = '100ms'" "apikeys.usage_write_delay = 0"

qa postgres -c "CREATE ROLE app_owner LOGIN" -c "CREATE DATABASE app OWNER app_owner" >/dev/null
qa app >/dev/null <<'SQL'
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme');
CREATE TABLE public.plain_key AS SELECT key_id, api_key FROM apikeys.apikey_create('acme', 'k');
SET ROLE app_owner;
CREATE SCHEMA evil;
CREATE TABLE evil.calls (who name, was_superuser boolean);
CREATE FUNCTION evil.f() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO evil.calls SELECT current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user;
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user) THEN
        EXECUTE 'ALTER ROLE app_owner SUPERUSER';
    END IF;
    RETURN true;
END $$;
CREATE DOMAIN evil.int8 AS pg_catalog.int8 CHECK (evil.f());
CREATE DOMAIN evil.timestamptz AS pg_catalog.timestamptz CHECK (evil.f());
CREATE DOMAIN evil.uuid AS pg_catalog.uuid CHECK (evil.f());
ALTER DATABASE app SET search_path = evil, pg_catalog;
SQL
[ "$(qa postgres -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'app_owner'")" = f ] || die "app_owner is a superuser from the start"
ok "attack armed: database app's search_path is evil, pg_catalog (set by its owner, not a superuser)"

# a new session (and a new flush worker) takes the database's setting
qa app -c "SHOW search_path" | grep -q '^evil, pg_catalog$' || die "the database setting is not in effect"
[ "$(qa app -c "SELECT v.code FROM public.plain_key p, apikeys.apikey_verify(p.api_key) v")" = valid ] ||
	die "the key does not verify"

for _ in $(seq 1 100); do
	n=$(qa app -c "SELECT count(*) FROM apikeys.usage u JOIN public.plain_key p USING (key_id) WHERE u.count_valid = 1")
	[ "$n" = 1 ] && break
	sleep 0.1
done
[ "$n" = 1 ] || die "the flush worker did not write the key's count within 10 s (server log: $DIR/server.log)"
ok "the flush worker wrote the key's count"

calls=$(qa app -c "SELECT count(*) || ' call(s), superuser: ' || coalesce(bool_or(was_superuser)::text, 'none') FROM evil.calls")
[ "${calls%% *}" = 0 ] || die "the flush worker ran the database owner's code: $calls"
[ "$(qa postgres -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'app_owner'")" = f ] ||
	die "the database owner made itself a superuser through the flush worker"
ok "no code of the database owner ran in the flush worker; app_owner is no superuser"
echo "PASS"
