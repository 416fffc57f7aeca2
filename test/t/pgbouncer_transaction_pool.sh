#!/usr/bin/env bash
# test/t/pgbouncer_transaction_pool.sh - apikeys behind PgBouncer in
# transaction pooling mode (Debian's pgbouncer), 8 pgbench clients sharing a
# pool of 3 server connections, each client acting for its own tenant:
#   - every transaction first checks that it starts unbound (no tenant, key,
#     actor or request id), then binds its tenant one of three ways
#     (set_tenant with labels; authenticate with its tenant's key and labels;
#     SET LOCAL labels and set_tenant), makes an audited change where it can
#     and checks that what it sees, and the audit rows its own change wrote,
#     are its own (tenant, key, actor, request id); autocommit statements
#     check that they see no tenant.  Violations (recorded by the checks)
#     must be 0, the number of checks and of audit rows exact, and every
#     audit row of the run must carry the actor and request id of the client
#     whose tenant it names;
#   - the same with the extended protocol (pgbench -M extended) and, with
#     PgBouncer >= 1.21 and max_prepared_statements > 0, with protocol-level
#     prepared statements (-M prepared); older PgBouncer: that part says so
#     and is not run;
#   - what does NOT work through a transaction pool (one server connection,
#     pool_size = 1, two clients one after the other): a session SET, a
#     session advisory lock and LISTEN outlive the client that made them and
#     reach the next one; a session SET of apikeys.actor is ignored (WARNING)
#     and labels nothing.
#
# Own cluster: tmp/t_bouncer, port 55122 (unix socket); PgBouncer on
# 127.0.0.1:55123.  Both are stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_bouncer
PORT=${BOUNCER_PG_PORT:-55122}
BPORT=${BOUNCER_PORT:-55123}
DIR=$TMPDIR_APIKEYS/$NAME
PGBOUNCER=/usr/sbin/pgbouncer
CLIENTS=8
POOL=3
TX_PER_CLIENT=${BOUNCER_TX:-100}

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
q() { cluster_psql "$NAME" "$PORT" -d postgres -qAt "$@"; }
# through PgBouncer, as the application's role, to pool DB (postgres: 3
# connections; single: 1)
qb() { local db=$1; shift; "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$BPORT" -U app -d "$db" -qAt "$@"; }
expect() { [ "$2" = "$3" ] || die "$1: expected '$3', got '$2'"; }

[ -x "$PGBOUNCER" ] || skip "pgbouncer is not installed (the archive has no such package for this system)"
stop_bouncer() {
	local pid
	pid=$(cat "$DIR/pgbouncer.pid" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	rm -f "$DIR/pgbouncer.pid"
}
trap 'stop_bouncer; cluster_stop $NAME || true' EXIT

BOUNCER_VERSION=$("$PGBOUNCER" --version | sed -n 's/^PgBouncer \([0-9][0-9.]*\).*/\1/p' | head -n 1)
# protocol-level prepared statements: PgBouncer 1.21 and later
if printf '%s\n' 1.21 "$BOUNCER_VERSION" | sort -V -C; then PREPARED=1; else PREPARED=0; fi
echo "PgBouncer $BOUNCER_VERSION (protocol-level prepared statements: $([ $PREPARED = 1 ] && echo yes || echo no))"

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys'" "max_connections = 40"

echo "== setup: $CLIENTS tenants t0..t$((CLIENTS - 1)) with a key each; the role app; the checks"
q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION apikeys CASCADE;
CREATE ROLE app LOGIN;
-- app: a trusted tenant switcher (set_tenant) and a verifier (authenticate)
GRANT USAGE ON SCHEMA apikeys TO app;
GRANT EXECUTE ON FUNCTION apikeys.set_tenant(text, text, text) TO app;
SELECT apikeys.grant_verifier('app');
GRANT EXECUTE ON FUNCTION apikeys.apikey_update(uuid, text, text, text[], timestamptz, jsonb) TO app;
CREATE TABLE app_keys (tenant text PRIMARY KEY, key_id uuid, api_key text);
SELECT apikeys.tenant_create('t' || g) FROM generate_series(0, $CLIENTS - 1) g;
INSERT INTO app_keys SELECT 't' || g, c.key_id, c.api_key
  FROM generate_series(0, $CLIENTS - 1) g, LATERAL apikeys.apikey_create('t' || g, 'app key') c;
GRANT SELECT ON app_keys TO app;
CREATE TABLE violations (at timestamptz DEFAULT clock_timestamp(), client int, run int, kind text, saw text);
CREATE SEQUENCE probes;
-- probe(kind, client, run, rid): record a violation unless the transaction
-- sees what client's own transaction must see.  kind none: no binding, no
-- labels; bound: its tenant by set_tenant, its labels, and every audit row
-- this transaction wrote carries them (at least one); key: its tenant and
-- its key by authenticate, its labels.
CREATE FUNCTION probe(kind text, client int, run int, rid bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS \$\$
DECLARE
    t text := 't' || client;
    lab text := concat_ws('|', 'actor-' || client, 'req-' || client || '-' || run || '-' || rid);
    saw text := concat_ws('|', coalesce(apikeys.current_tenant(), '-'), coalesce(apikeys_internal._context_source(), '-'),
                               coalesce(apikeys.current_key_id()::text, '-'),
                               coalesce(apikeys_internal._actor(), '-'), coalesce(apikeys_internal._request_id(), '-'));
    want text;
    rows text;
BEGIN
    PERFORM nextval('probes');
    want := CASE kind WHEN 'none' THEN '-|none|-|-|-'
                      WHEN 'bound' THEN concat_ws('|', t, 'trusted', '-', lab)
                      WHEN 'key' THEN concat_ws('|', t, 'key', (SELECT key_id FROM app_keys WHERE tenant = t), lab) END;
    IF kind = 'bound' THEN
        SELECT string_agg(concat_ws('|', a.tenant, a.actor, a.request_id), ',') INTO rows
          FROM apikeys.audit a WHERE a.txid = pg_current_xact_id();
        IF rows IS NULL OR EXISTS (SELECT 1 FROM apikeys.audit a WHERE a.txid = pg_current_xact_id()
                                     AND concat_ws('|', a.tenant, a.actor, a.request_id) <> concat_ws('|', t, lab)) THEN
            saw := saw || ' audit ' || coalesce(rows, 'none');
            want := want || ' (audit)';
        END IF;
    END IF;
    IF saw IS DISTINCT FROM want THEN
        INSERT INTO violations (client, run, kind, saw) VALUES (client, run, kind, saw);
    END IF;
END \$\$;
SQL

echo "== PgBouncer: transaction pooling, pool_size $POOL for $CLIENTS clients"
{
	echo "[databases]"
	echo "postgres = host=$DIR port=$PORT dbname=postgres pool_size=$POOL"
	echo "single = host=$DIR port=$PORT dbname=postgres pool_size=1"
	echo "[pgbouncer]"
	echo "listen_addr = 127.0.0.1"
	echo "listen_port = $BPORT"
	echo "unix_socket_dir ="
	echo "auth_type = trust"
	echo "auth_file = $DIR/userlist.txt"
	echo "pool_mode = transaction"
	echo "max_client_conn = 100"
	echo "default_pool_size = $POOL"
	echo "logfile = $DIR/pgbouncer.log"
	echo "pidfile = $DIR/pgbouncer.pid"
	[ $PREPARED = 0 ] || echo "max_prepared_statements = 100"
} | as_pg tee "$DIR/pgbouncer.ini" >/dev/null
echo '"app" ""' | as_pg tee "$DIR/userlist.txt" >/dev/null
as_pg "$PGBOUNCER" -d "$DIR/pgbouncer.ini" || die "pgbouncer did not start"
for _ in $(seq 50); do qb postgres -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
expect "through PgBouncer" "$(qb postgres -c "SELECT current_user")" app

# the pgbench scripts: a (weight 2) set_tenant with labels, b authenticate
# with labels, c SET LOCAL labels then set_tenant, d autocommit
as_pg tee "$DIR/a.sql" >/dev/null <<'EOF2'
\set rid random(1, 1000000000)
BEGIN;
SELECT probe('none', :client_id, :run, :rid);
SELECT apikeys.set_tenant('t' || :client_id, 'actor-' || :client_id, 'req-' || :client_id || '-' || :run || '-' || :rid);
SELECT apikeys.apikey_update((SELECT key_id FROM app_keys WHERE tenant = 't' || :client_id), description => 'r' || :rid);
SELECT probe('bound', :client_id, :run, :rid);
END;
EOF2
as_pg tee "$DIR/b.sql" >/dev/null <<'EOF2'
\set rid random(1, 1000000000)
BEGIN;
SELECT probe('none', :client_id, :run, :rid);
SELECT code FROM apikeys.authenticate((SELECT api_key FROM app_keys WHERE tenant = 't' || :client_id), NULL, NULL,
                                      'actor-' || :client_id, 'req-' || :client_id || '-' || :run || '-' || :rid);
SELECT probe('key', :client_id, :run, :rid);
END;
EOF2
as_pg tee "$DIR/c.sql" >/dev/null <<'EOF2'
\set rid random(1, 1000000000)
BEGIN;
SELECT probe('none', :client_id, :run, :rid);
SELECT set_config('apikeys.actor', 'actor-' || :client_id, true), set_config('apikeys.request_id', 'req-' || :client_id || '-' || :run || '-' || :rid, true);
SELECT apikeys.set_tenant('t' || :client_id);
SELECT apikeys.apikey_update((SELECT key_id FROM app_keys WHERE tenant = 't' || :client_id), description => 'r' || :rid);
SELECT probe('bound', :client_id, :run, :rid);
END;
EOF2
as_pg tee "$DIR/d.sql" >/dev/null <<'EOF2'
\set rid random(1, 1000000000)
SELECT probe('none', :client_id, :run, :rid);
EOF2

# script_tx LOG N: transactions pgbench ran of script N (1-based)
script_tx() {
	awk -v n="$2" '/^SQL script [0-9]+:/ { cur = $3 + 0 }
		cur == n && / transactions \(/ { sub(/^ *- */, ""); print $1 + 0; exit }' "$1"
}

# run_pgbench RUN MODE (RUN: a number, in the request ids): the workload
# through PgBouncer, then every check.  One pgbench thread per client: with
# -M prepared pgbench prepares a statement synchronously, and a thread
# blocked waiting for a server connection that another of its own clients
# holds (mid-transaction) would never get one.
run_pgbench() {
	local run=$1 mode=$2 log=$DIR/pgbench-$1.log before after a b c d n
	before=$(q -c "SELECT last_value + (CASE WHEN is_called THEN 0 ELSE -1 END) FROM probes")
	if ! "$PGBIN/pgbench" -n -h 127.0.0.1 -p "$BPORT" -U app -c $CLIENTS -j $CLIENTS -t "$TX_PER_CLIENT" -M "$mode" \
			-D run="$run" -f "$DIR/a.sql@2" -f "$DIR/b.sql@1" -f "$DIR/c.sql@1" -f "$DIR/d.sql@1" postgres >"$log" 2>&1; then
		tail -n 20 "$log" >&2; die "pgbench -M $mode failed"
	fi
	grep -q "number of transactions actually processed: $((CLIENTS * TX_PER_CLIENT))/$((CLIENTS * TX_PER_CLIENT))" "$log" ||
		{ cat "$log" >&2; die "pgbench -M $mode: not every transaction ran"; }
	a=$(script_tx "$log" 1) b=$(script_tx "$log" 2) c=$(script_tx "$log" 3) d=$(script_tx "$log" 4)
	expect "-M $mode: transactions by script" "$((a + b + c + d))" $((CLIENTS * TX_PER_CLIENT))
	[ "$a" -gt 0 ] && [ "$b" -gt 0 ] && [ "$c" -gt 0 ] && [ "$d" -gt 0 ] || die "-M $mode: a script never ran ($a $b $c $d)"
	expect "-M $mode: violations" "$(q -c "SELECT count(*) FROM violations WHERE run = $run")" 0
	after=$(q -c "SELECT last_value FROM probes")
	expect "-M $mode: checks made" "$((after - before))" $((2 * a + 2 * b + 2 * c + d))
	# every audit row of the run: key_updated, one per a and c transaction,
	# labelled with the client whose tenant it names
	n=$(q -c "SELECT count(*) || ' ' || count(*) FILTER (WHERE action <> 'key_updated'
	             OR tenant IS DISTINCT FROM 't' || split_part(request_id, '-', 2)
	             OR actor IS DISTINCT FROM 'actor-' || split_part(request_id, '-', 2))
	            FROM apikeys.audit WHERE request_id LIKE 'req-%' AND split_part(request_id, '-', 3) = '$run'")
	expect "-M $mode: audit rows, mismatched" "$n" "$((a + c)) 0"
	expect "-M $mode: unlabelled audit rows" \
		"$(q -c "SELECT count(*) FROM apikeys.audit WHERE action = 'key_updated' AND (actor IS NULL OR request_id IS NULL)")" 0
	expect "-M $mode: server connections used (pool_size $POOL)" \
		"$(q -c "SELECT count(*) <= $POOL FROM pg_stat_activity WHERE usename = 'app'")" t
	ok "-M $mode: $((CLIENTS * TX_PER_CLIENT)) transactions ($a set_tenant, $b authenticate, $c SET LOCAL, $d autocommit) over <= $POOL server connections: 0 violations, $((after - before)) checks, $((a + c)) audit rows each with its own client's labels"
}

# the checks can fail: unbound, "bound" is a violation; bound by
# set_tenant, "none" and "key" are
qb postgres -c "SELECT probe('bound', 0, 0, 1)" >/dev/null
qb postgres -c "BEGIN" -c "SELECT apikeys.set_tenant('t0', 'actor-0', 'req-0-0-2')" \
	-c "SELECT probe('none', 0, 0, 2), probe('key', 0, 0, 2), probe('bound', 0, 0, 2)" -c "COMMIT" >/dev/null
expect "violations the checks see" "$(q -c "SELECT string_agg(kind, ',' ORDER BY at) FROM violations WHERE run = 0")" "bound,none,key,bound"
q -c "DELETE FROM violations"

run_pgbench 1 simple
run_pgbench 2 extended
if [ $PREPARED = 1 ]; then
	run_pgbench 3 prepared
	grep -q '^query mode: prepared' "$DIR/pgbench-3.log" || die "pgbench did not run in prepared mode"
else
	echo "NOTE: PgBouncer $BOUNCER_VERSION < 1.21 has no protocol-level prepared statements (max_prepared_statements): pgbench -M prepared not run"
fi

echo "== what a transaction pool does not keep apart (pool 'single': one server connection)"
# a session SET reaches the next client of the server connection
qb single -c "SET myapp.flag = 'set by client A'"
expect "session SET leaks to the next client" "$(qb single -c "SELECT current_setting('myapp.flag', true)")" "set by client A"
# a session advisory lock outlives its client, and the next one can release it
qb single -c "SELECT pg_advisory_lock(4242)" >/dev/null
expect "advisory lock held after its client left" \
	"$(q -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted")" 1
expect "another client releases it" "$(qb single -c "SELECT pg_advisory_unlock(4242)" 2>&1)" t
# LISTEN: the next client's session listens on the first one's channel
# (and PgBouncer delivers notifications to no one in particular)
qb single -c "LISTEN apikeys_pool_demo"
expect "LISTEN outlives its client" "$(qb single -c "SELECT pg_listening_channels()")" apikeys_pool_demo
ok "session SET, advisory locks and LISTEN outlive their client in a transaction pool"
# apikeys.actor set for the session: ignored with a WARNING, labels nothing
qb single -c "SET apikeys.actor = 'client A'"
out=$(qb single 2>&1 <<'SQL'
BEGIN;
SELECT apikeys.set_tenant('t0', NULL, 'req-session-actor');
SELECT apikeys.apikey_update((SELECT key_id FROM app_keys WHERE tenant = 't0'), description => 'session actor');
COMMIT;
SQL
)
echo "$out" | grep -q 'apikeys_setting_ignored' || die "no apikeys_setting_ignored WARNING: $out"
expect "a session apikeys.actor labels nothing" \
	"$(q -c "SELECT count(*) || ' ' || count(actor) FROM apikeys.audit WHERE request_id = 'req-session-actor'")" "1 0"
ok "a session SET apikeys.actor is ignored (WARNING) and labels no audit row"

stop_bouncer
echo "PASS"
