#!/usr/bin/env bash
# test/t/caller_autovacuum.sh - a tenant admin's code run by autovacuum gains nothing.
#
# The attack needs no human: acme's admin puts an expression index on its own
# table whose function calls apikeys.apikey_create('globex', ...) and
# apikeys.vault_reveal() on globex's secrets.  Autovacuum analyzes the table
# within seconds, evaluating the index expression as a superuser process.
# Each call must be refused inside the security-restricted operation, leave
# an apikeys_audit_denied line in the server log, and create or reveal
# nothing.
#
# Own cluster: tmp/t_caller_av, port 54386; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_caller_av
PORT=54386
DIR=$TMPDIR_APIKEYS/$NAME

cleanup() {
	cluster_stop "$NAME" 2>/dev/null ||
		as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
qa() { cluster_psql "$NAME" "$PORT" -d postgres -qAt "$@"; }

cluster_start "$NAME" "$PORT" \
	"shared_preload_libraries = 'apikeys'" \
	"autovacuum_naptime = 1" \
	"log_min_messages = log" \
	"apikeys.vault_master_key = 'caller-av-master-key-0123456789abcdef'"

qa <<'SQL' >/dev/null
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme'), apikeys.tenant_create('globex');
SELECT apikeys.vault_add('globex', 'openai', 'globex prod', 'sk-proj-GlobexAVGlobexAVGlobexAVGlobex');
CREATE ROLE acme_admin;
SELECT apikeys.grant_tenant('acme_admin', 'acme');
SELECT apikeys.grant_vault('acme_admin');
CREATE SCHEMA acme_app AUTHORIZATION acme_admin;
SET ROLE acme_admin;
CREATE TABLE acme_app.loot (attack text, got text);
CREATE TABLE acme_app.armed (on_ boolean);
INSERT INTO acme_app.armed VALUES (false);
CREATE FUNCTION acme_app.payload(x int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE got text;
BEGIN
    IF NOT (SELECT on_ FROM acme_app.armed) THEN RETURN x; END IF;
    BEGIN
        SELECT api_key INTO got FROM apikeys.apikey_create('globex', 'backdoor', '{admin}');
    EXCEPTION WHEN others THEN got := SQLSTATE || ' ' || SQLERRM;
    END;
    INSERT INTO acme_app.loot VALUES ('create', got);
    BEGIN
        SELECT string_agg(apikeys.vault_reveal(v.id), ',') INTO got FROM apikeys.vault_list('globex') v;
    EXCEPTION WHEN others THEN got := SQLSTATE || ' ' || SQLERRM;
    END;
    INSERT INTO acme_app.loot VALUES ('vault', got);
    RETURN x;
END $$;
CREATE FUNCTION acme_app.idx(x int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT acme_app.payload(x) $$;
CREATE TABLE acme_app.t (x int) WITH (autovacuum_analyze_threshold = 1, autovacuum_analyze_scale_factor = 0);
CREATE INDEX ON acme_app.t (acme_app.idx(x));
INSERT INTO acme_app.t SELECT generate_series(1, 50);
UPDATE acme_app.armed SET on_ = true;
SQL
ok "attack armed; waiting for autovacuum to analyze acme_app.t"

for _ in $(seq 1 120); do
	n=$(qa -c "SELECT count(*) FROM acme_app.loot")
	[ "$n" -ge 2 ] && break
	sleep 0.5
done
[ "$n" -ge 2 ] || die "autovacuum did not analyze acme_app.t within 60 s"
ok "autovacuum ran the payload ($n attempts)"

bad=$(qa -c "SELECT attack || ': ' || got FROM acme_app.loot
              WHERE got NOT LIKE '42501 permission_denied: apikeys.% cannot run inside a security-restricted operation'")
[ -z "$bad" ] || die "an attempt was not refused as expected: $bad"
ok "every attempt refused with 42501 permission_denied (security-restricted operation)"

n=$(qa -c "SELECT count(*) FROM apikeys.credential WHERE tenant = 'globex'")
[ "$n" = 0 ] || die "a globex key exists ($n)"
qa -c "SELECT got FROM acme_app.loot" | grep -q 'sk-proj-' && die "the vault plaintext reached the attacker"
ok "no globex key created, no plaintext revealed"

grep -q 'apikeys_audit_denied .*"action": "apikeys.apikey_create"' "$DIR/server.log" ||
	die "no apikeys_audit_denied line for the refused apikey_create in the server log"
grep -q 'apikeys_audit_denied .*"action": "apikeys.vault_list"' "$DIR/server.log" ||
	die "no apikeys_audit_denied line for the refused vault_list in the server log"
ok "each refusal left its apikeys_audit_denied line"
