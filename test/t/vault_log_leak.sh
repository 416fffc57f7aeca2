#!/usr/bin/env bash
# test/t/vault_log_leak.sh - the documented ways to store a vault secret keep
# its plaintext out of the server log at log_statement = 'all' (and
# log_min_duration_statement = 0), on success and on error; the master key,
# read from apikeys.vault_master_key_file and rotated by rewriting that file,
# never reaches the log either.  Negative controls prove the grep would see a
# leak: a plain SQL literal, and extended-protocol parameters when
# log_parameter_max_length is left at its default.
#
# Every session runs with auto_explain (session_preload_libraries) logging
# the verbose, analyzed plan of every nested statement, and a superuser
# session also LOADs it itself: the statements the vault functions run must
# never carry a plaintext or a master key, as a plan constant (plpgsql's
# custom plans and EXECUTE ... USING fold parameters into constants) or
# otherwise.  The whole log is searched for each secret and master key, and
# for their hex and base64 forms.
#
# Documented ways (docs/vault.md, "Storing a secret without logging it"):
#   A  bind the secret as a parameter of the extended protocol (any driver;
#      pgbench -M extended here), with log_parameter_max_length = 0 and
#      plan_cache_mode = force_generic_plan for the role, and from
#      PostgreSQL 16 on auto_explain.log_parameter_max_length = 0 (a
#      superuser sets them with ALTER ROLE app SET ...): the client's own
#      top-level statement is what would show the bound value;
#   B  COPY it into a temporary table (psql \copy from a file, or COPY FROM
#      STDIN), then vault_add(..., (SELECT secret FROM vault_in)).
#
# Runs its own cluster (tmp/vaultlog, port 54398, unless $VAULT_LOG_NAME /
# $VAULT_LOG_PORT say otherwise), stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=${VAULT_LOG_NAME:-vaultlog}
PORT=${VAULT_LOG_PORT:-54398}
DIR=$TMPDIR_APIKEYS/$NAME
LOG=$DIR/server.log
KEYFILE=$DIR/vault.key
WORK=$DIR/client
trap 'cluster_stop $NAME || true' EXIT

die() { echo "FAIL: $*" >&2; exit 1; }
rnd() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "$1"; }
q() { cluster_psql "$NAME" "$PORT" -d postgres -qAt "$@"; }
qapp() { "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U vault_app -d postgres -qAt "$@"; }

# Fresh random values, so a hit in the log can only come from this run.
MASTER1="mk1-$(rnd 40)"
MASTER2="mk2-$(rnd 40)"
S_PARAM="sk-proj-PARAM$(rnd 32)"          # A: parameter, log_parameter_max_length = 0
S_PARAM_BAD="sk-ant-PARAMBAD$(rnd 32)"    # A: error path (not an OpenAI key)
S_COPY="sk-ant-api03-COPY$(rnd 32)"      # B: \copy from a file
S_STDIN="hf_STDIN$(rnd 32)"               # B: COPY FROM STDIN inline
S_COPY_BAD="sk-ant-COPYBAD$(rnd 32)"      # B: error path (not an OpenAI key)
S_TAB="sk-proj-TAB$(rnd 16)	$(rnd 16)"    # B: a tab inside, with the documented delimiter
C_LITERAL="sk-proj-LITERAL$(rnd 32)"      # control: a plain SQL literal
C_PARAM="sk-proj-CPARAM$(rnd 32)"         # control: parameter, default log_parameter_max_length

cluster_start "$NAME" "$PORT" "log_statement = 'all'" "log_min_duration_statement = 0" \
	"shared_preload_libraries = 'apikeys'" "apikeys.vault_master_key_file = '$KEYFILE'" \
	"session_preload_libraries = 'auto_explain'" "auto_explain.log_min_duration = 0" \
	"auto_explain.log_nested_statements = on" "auto_explain.log_verbose = on" \
	"auto_explain.log_analyze = on" "auto_explain.log_triggers = on"
as_pg mkdir -p "$WORK"
printf '%s\n' "$MASTER1" | as_pg tee "$KEYFILE" >/dev/null
as_pg chmod 600 "$KEYFILE"

echo "== setup"
q >/dev/null <<'SQL'
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme');
CREATE ROLE vault_app LOGIN;
SELECT apikeys.grant_tenant('vault_app', 'acme');
SELECT apikeys.grant_vault('vault_app');
-- the documented settings: parameters never reach the log for this role,
-- and its own statements' plans (auto_explain) show $n, never a bound value
ALTER ROLE vault_app SET log_parameter_max_length = 0;
ALTER ROLE vault_app SET plan_cache_mode = force_generic_plan;
SQL
# PostgreSQL 16+: auto_explain prints the bound parameters of the client's
# own statement ("Query Parameters: $1 = '...'") unless told not to.
AUTO_EXPLAIN_PARAMS=$(q -c "SELECT current_setting('server_version_num')::int >= 160000")
if [ "$AUTO_EXPLAIN_PARAMS" = t ]; then
	q -c "ALTER ROLE vault_app SET auto_explain.log_parameter_max_length = 0" >/dev/null
fi

echo "== A: extended-protocol parameter, log_parameter_max_length = 0"
echo "SELECT apikeys.vault_add('acme', 'openai', 'via parameter', :secret);" | as_pg tee "$WORK/add_openai.sql" >/dev/null
as_pg "$PGBIN/pgbench" -n -t 1 -c 1 -M extended -h "$DIR" -p "$PORT" -U vault_app -D secret="$S_PARAM" \
	-f "$WORK/add_openai.sql" postgres >/dev/null 2>&1 || die "pgbench vault_add failed"
[ "$(qapp -c "SELECT apikeys.vault_reveal(id) FROM apikeys.vault_list('acme') WHERE name = 'via parameter'")" = "$S_PARAM" ] \
	|| die "A: round trip"
# error path: an Anthropic key is not an OpenAI key
as_pg "$PGBIN/pgbench" -n -t 1 -c 1 -M extended -h "$DIR" -p "$PORT" -U vault_app -D secret="$S_PARAM_BAD" \
	-f "$WORK/add_openai.sql" postgres >"$WORK/pgbench_bad.out" 2>&1 || true
grep -q vault_invalid_format "$WORK/pgbench_bad.out" || die "A: the invalid secret was not refused"
grep -q vault_invalid_format "$LOG" || die "A: the error did not reach the log"

echo "== B: COPY into a temporary table"
printf '%s\n' "$S_COPY" >"$WORK/anthropic.key"
chmod 644 "$WORK/anthropic.key"
qapp >/dev/null <<SQL
BEGIN;
CREATE TEMP TABLE vault_in (secret text) ON COMMIT DROP;
\\copy vault_in FROM '$WORK/anthropic.key' WITH (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')
SELECT apikeys.vault_add('acme', 'anthropic', 'via copy', (SELECT secret FROM vault_in));
COMMIT;
SQL
[ "$(qapp -c "SELECT apikeys.vault_reveal(id) FROM apikeys.vault_list('acme') WHERE name = 'via copy'")" = "$S_COPY" ] \
	|| die "B: round trip (file)"
qapp >/dev/null <<SQL
BEGIN;
CREATE TEMP TABLE vault_in (secret text) ON COMMIT DROP;
COPY vault_in FROM STDIN WITH (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e');
$S_STDIN
\\.
SELECT apikeys.vault_add('acme', 'huggingface', 'via stdin', (SELECT secret FROM vault_in));
COMMIT;
SQL
[ "$(qapp -c "SELECT apikeys.vault_reveal(id) FROM apikeys.vault_list('acme') WHERE name = 'via stdin'")" = "$S_STDIN" ] \
	|| die "B: round trip (stdin)"
# error paths: a wrong format, and a tab (no COPY parse error with this delimiter)
for bad in "$S_COPY_BAD" "$S_TAB"; do
	printf '%s\n' "$bad" >"$WORK/bad.key"
	if qapp >/dev/null 2>"$WORK/copy_bad.err" <<SQL
BEGIN;
CREATE TEMP TABLE vault_in (secret text) ON COMMIT DROP;
\\copy vault_in FROM '$WORK/bad.key' WITH (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')
SELECT apikeys.vault_add('acme', 'openai', 'bad via copy', (SELECT secret FROM vault_in));
COMMIT;
SQL
	then die "B: an invalid secret was accepted"; fi
	grep -q vault_invalid_format "$WORK/copy_bad.err" || die "B: unexpected error: $(cat "$WORK/copy_bad.err")"
done
rm -f "$WORK/anthropic.key" "$WORK/bad.key"

echo "== rotating the master key by rewriting the key file"
printf '%s\n%s\n' "$MASTER2" "$MASTER1" | as_pg tee "$KEYFILE" >/dev/null
[ "$(q -c 'SELECT apikeys.vault_rotate_master_key()')" = 3 ] || die "rotation count"
printf '%s\n' "$MASTER2" | as_pg tee "$KEYFILE" >/dev/null
[ "$(q -c 'SELECT bool_and(ok) FROM apikeys.vault_check()')" = t ] || die "vault_check after rotation"
[ "$(qapp -c "SELECT apikeys.vault_reveal(id) FROM apikeys.vault_list('acme') WHERE name = 'via copy'")" = "$S_COPY" ] \
	|| die "round trip after rotation"
# a reveal of a missing key file: generic error only
as_pg mv "$KEYFILE" "$KEYFILE.moved"
qapp -c "SELECT apikeys.vault_reveal(id) FROM apikeys.vault_list('acme') WHERE name = 'via copy'" 2>"$WORK/nofile.err" \
	&& die "reveal without the key file"
grep -q vault_master_key_missing "$WORK/nofile.err" || die "missing key file: $(cat "$WORK/nofile.err")"
as_pg mv "$KEYFILE.moved" "$KEYFILE"

echo "== a superuser session that LOADs auto_explain: add, reveal (custom and generic plans), check, rotate"
S_SU="sk-proj-SUPER$(rnd 32)"
S_SU2="sk-proj-SUPERB$(rnd 32)"
MASTER3="mk3-$(rnd 40)"
C_PLAN="sk-proj-CPLAN$(rnd 32)"   # control: a plpgsql variable in a statement of the test's own
printf '%s\n%s\n%s\n' "$S_SU" "$S_SU2" "$C_PLAN" >"$WORK/su.keys"
chmod 644 "$WORK/su.keys"
printf '%s\n%s\n' "$MASTER3" "$MASTER2" | as_pg tee "$KEYFILE.next" >/dev/null
as_pg chmod 600 "$KEYFILE.next"
q >"$WORK/su.out" <<SQL
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_verbose = on;
SET auto_explain.log_analyze = on;
BEGIN;
CREATE TEMP TABLE vault_in (n serial, secret text) ON COMMIT DROP;
\\copy vault_in (secret) FROM '$WORK/su.keys' WITH (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')
-- seven adds of one slot: plpgsql switches from custom to generic plans after five
SELECT count(apikeys.vault_add('acme', 'openai', 'su ' || g, (SELECT secret FROM vault_in WHERE n = 1 + g % 2)))
  FROM generate_series(1, 7) g;
-- control: what auto_explain shows of a variable a statement uses (a constant)
DO \$\$ DECLARE x text := (SELECT secret FROM vault_in WHERE n = 3);
BEGIN PERFORM 1 FROM pg_catalog.pg_class WHERE relname = x; END \$\$;
COMMIT;
SELECT count(apikeys.vault_reveal(id)) FROM apikeys.vault_list('acme'), generate_series(1, 7) WHERE name LIKE 'su %';
SELECT count(*) FROM apikeys.vault_check();
SELECT count(*) FROM apikeys.vault_list('acme') l, apikeys.vault_check(l.id) c WHERE l.name = 'su 7';
\\! mv '$KEYFILE.next' '$KEYFILE'
SELECT apikeys.vault_rotate_master_key() > 0 AS rotated;
SELECT count(apikeys.vault_reveal(id)) FROM apikeys.vault_list('acme'), generate_series(1, 7) WHERE name LIKE 'su %';
SQL
grep -qx t "$WORK/su.out" || die "superuser section: rotation did not happen"
[ "$(q -c "SELECT apikeys.vault_reveal(id) FROM apikeys.vault_list('acme') WHERE name = 'su 7'")" = "$S_SU2" ] \
	|| die "superuser section: round trip"
rm -f "$WORK/su.keys"
# the app role too, many times in one session (its sessions preload auto_explain)
qapp >/dev/null <<SQL
SELECT count(apikeys.vault_reveal(id)) FROM apikeys.vault_list('acme'), generate_series(1, 7) WHERE name IN ('via copy', 'via stdin');
SELECT count(*) FROM apikeys.vault_check();
SQL
grep -q 'Query Text: .*pgp_sym\|Query Text: .*vault_secret' "$LOG" || die "auto_explain logged no nested statement of the vault"

echo "== controls: what the documented ways avoid"
q -c "SELECT apikeys.vault_add('acme', 'openai', 'literal', '$C_LITERAL')" >/dev/null
# the superuser keeps the default log_parameter_max_length (-1: whole values)
as_pg "$PGBIN/pgbench" -n -t 1 -c 1 -M extended -h "$DIR" -p "$PORT" -U postgres -D secret="$C_PARAM" \
	-f "$WORK/add_openai.sql" postgres >/dev/null 2>&1 || die "pgbench control failed"

sleep 0.5   # let the server flush its log
echo "== scanning $LOG"
[ -s "$LOG" ] || die "empty server log"
grep -q 'apikeys.vault_add' "$LOG" || die "log_statement = 'all' logged nothing"
grep -qF -- "$C_LITERAL" "$LOG" || die "control: the SQL literal should be in the log"
grep -qF -- "$C_PARAM" "$LOG" || die "control: the parameter should be in the log at the default log_parameter_max_length"
if [ "$AUTO_EXPLAIN_PARAMS" = t ]; then
	grep -qF -- "Query Parameters: \$1 = '$C_PARAM'" "$LOG" ||
		die "control: auto_explain should show the parameter at the default auto_explain.log_parameter_max_length"
fi
grep -qF -- "$C_PLAN" "$LOG" || die "control: auto_explain should show a plpgsql variable as a plan constant"
S_TAB_PART=${S_TAB%%	*}
# each secret and master key as it is, in hex (bytea constants) and in base64
leaks=0
for s in "$S_PARAM" "$S_PARAM_BAD" "$S_COPY" "$S_STDIN" "$S_COPY_BAD" "$S_TAB_PART" "$S_SU" "$S_SU2" \
		"$MASTER1" "$MASTER2" "$MASTER3"; do
	hex=$(printf '%s' "$s" | od -An -tx1 | tr -d ' \n')
	b64=$(printf '%s' "$s" | base64 -w0 | tr -d '=')
	for form in "$s" "$hex" "$b64"; do
		if grep -qiF -- "$form" "$LOG"; then
			{ grep -niF -- "$form" "$LOG" | head -3 | cut -c1-300 >&2; } || true
			echo "LEAK: a secret reached the server log (${s:0:12}..., as ${form:0:12}...)" >&2
			leaks=$((leaks + 1))
		fi
	done
done
[ $leaks -eq 0 ] || die "$leaks secret form(s) in the server log"
grep -q 'apikeys_audit_vault_reveal' "$LOG" || die "reveals are not in the log"
echo "ok: no vault plaintext or master key in the server log"
