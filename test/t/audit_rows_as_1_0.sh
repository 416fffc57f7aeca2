#!/usr/bin/env bash
# test/t/audit_rows_as_1_0.sh - the 1.1 audit (its trigger and writer in C)
# writes the rows 1.0's PL/pgSQL wrote.
#
# One difference is by design: 1.1 joins a created key's first secret to its
# key_created row (detail.secret) where 1.0 wrote a secret_issued row of its
# own.  The dumps below split such a row back into the two 1.0 wrote, and
# compare each chain's rows as a sorted set (1.0 wrote a bulk creation's
# secrets after all its keys, 1.1 each with its key; the order within a
# chain is checked by the regression tests).
# Workloads that call only functions 1.0 has (test/t/populate_keys.sql and
# the one below: every kind of audited change, labels that warn, bulk
# creation) run twice, against two clusters with this library: one whose
# extension is created as version 1.0 (its PL/pgSQL audit functions), one as
# the current version.  At the end the audit rows are dumped, with the
# values that differ from run to run (key ids, timestamps, hints, hashes)
# masked.  The dumps must be equal, and so must the distinct WARNING and
# ERROR lines each run printed (the labels warn per audit row, and 1.1
# writes fewer rows).  (The regression files use names and functions 1.0
# does not have.)
#
# Own clusters: tmp/t_rows_10 and tmp/t_rows_11, ports 54330 and 54331;
# stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
set +e

OUT=$TMPDIR_APIKEYS/t_rows_out
P10=54330
P11=54331
trap 'cluster_stop t_rows_10; cluster_stop t_rows_11' EXIT
rm -rf "$OUT"; mkdir -p "$OUT"; chmod 777 "$OUT"
conf=("shared_preload_libraries = 'apikeys'" "apikeys.flush_interval = '100ms'" "max_prepared_transactions = 0"
	"apikeys.vault_master_key = 'audit-rows-test-master-key-0123456789ab'")
cluster_start t_rows_10 $P10 "${conf[@]}" || exit 1
cluster_start t_rows_11 $P11 "${conf[@]}" || exit 1

# the audit rows, masked (one line per row)
# Columns 1.0's tables gained later (the current version's audit
# rows show them, 1.0's cannot): taken out of the details before comparing.
cluster_psql t_rows_11 $P11 -d postgres -q -c 'CREATE DATABASE cols_10' -c 'CREATE DATABASE cols_11'
cluster_psql t_rows_11 $P11 -d cols_10 -q -c "CREATE EXTENSION apikeys VERSION '1.0' CASCADE" 2>/dev/null
cluster_psql t_rows_11 $P11 -d cols_11 -q -c "CREATE EXTENSION apikeys CASCADE" 2>/dev/null
COLS="SELECT c.relname || '.' || a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
       WHERE c.relnamespace = 'apikeys'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1"
OLDCOLS=$(cluster_psql t_rows_11 $P11 -d cols_10 -qAt -c "$COLS")
NEWCOLS=$(comm -13 <(echo "$OLDCOLS") <(cluster_psql t_rows_11 $P11 -d cols_11 -qAt -c "$COLS") |
	awk -F. -v old="$(echo "$OLDCOLS" | sed 's/\..*//' | sort -u | paste -sd' ' -)" \
		'BEGIN { n = split(old, t, " "); for (i = 1; i <= n; i++) had[t[i]] = 1 } had[$1] { print $2 }' |
	sort -u | paste -sd, -)
echo "columns added since 1.0, left out of the comparison: ${NEWCOLS:-none}"
STRIP="CREATE FUNCTION pg_temp.without_new_columns(d jsonb) RETURNS jsonb LANGUAGE sql AS \$\$
  SELECT jsonb_object_agg(k, CASE WHEN jsonb_typeof(v) = 'object' THEN v - '{${NEWCOLS}}'::text[] ELSE v END)
    FROM jsonb_each(d) e(k, v) \$\$;"
SPLIT="(SELECT a.chain, a.audit_id, a.tenant, a.key_id, e.action, a.outcome, a.db_role, a.session_role, a.actor, a.request_id, a.client_addr, a.application_name, e.detail
  FROM apikeys.audit a, LATERAL (VALUES (1, a.action, a.detail - 'secret'), (2, 'secret_issued', jsonb_build_object('new', a.detail -> 'secret'))) e(n, action, detail)
 WHERE e.n = 1 OR (a.action = 'key_created' AND a.detail ? 'secret')) a"
DUMP="SELECT chain, tenant, key_id IS NULL AS no_key, action, outcome, db_role, session_role, actor, request_id, client_addr, application_name, regexp_replace(regexp_replace(regexp_replace(regexp_replace(pg_temp.without_new_columns(detail)::text, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g'), '\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.+-]+\"', '<ts>', 'g'), '\"(hint|last_purged_hash)\": \"[^\"]*\"', '\"\\1\": <h>', 'g'), '\"(row_hash|prev_hash)\": \"[^\"]*\"', '\"\\1\": <h>', 'g') AS detail FROM $SPLIT ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12"
# every other kind of change 1.0 audits
cat >"$OUT/changes.sql" <<'SQL'
CREATE EXTENSION apikeys CASCADE;
SELECT apikeys.tenant_create('acme', 'Acme');
SELECT apikeys.tenant_create('globex');
CREATE ROLE audit_rows_admin;
SELECT apikeys.grant_tenant('audit_rows_admin', 'acme');
SELECT apikeys.grant_tenant('audit_rows_admin', 'globex', 'audit');
SELECT apikeys.revoke_tenant('audit_rows_admin', 'globex', 'audit');
SELECT count(*) FROM apikeys.apikey_create_many('acme', ARRAY['d1', 'd2', 'd3'], '{read}');
SELECT key_id AS k FROM apikeys.apikey_create('acme', 'one', '{read,write}', description => 'first',
                                              metadata => '{"team": "billing"}') \gset
SELECT apikeys.apikey_update(:'k', name => 'renamed', scopes => '{read}', metadata => '{"team": "ops"}');
SELECT apikeys.apikey_update(:'k', expires_at => now() + interval '1 day');
SELECT apikeys.apikey_rotate(:'k', '1 hour') IS NOT NULL;
SELECT apikeys.apikey_update(:'k', expires_at => 'infinity');
SELECT apikeys.apikey_disable(:'k');
SELECT apikeys.apikey_enable(:'k');
SELECT apikeys.apikey_set_policy(:'k', rate_limit => 5);
SELECT apikeys.apikey_rotate(:'k') IS NOT NULL;
-- labels: set, too long (warns), a session value (warns, ignored)
BEGIN;
SELECT apikeys.set_tenant('acme', actor => 'alice', request_id => 'req-1');
SELECT apikeys.apikey_revoke(:'k', 'leaked');
COMMIT;
SET apikeys.actor = 'session-value';
BEGIN;
SET LOCAL apikeys.request_id = 'req-2';
SELECT count(*) FROM apikeys.apikey_create_many('globex', ARRAY['g1', 'g2']);
COMMIT;
RESET apikeys.actor;
BEGIN;
SELECT set_config('apikeys.actor', repeat('x', 300), true);
SELECT apikeys.apikey_create('globex', 'long label') IS NOT NULL;
COMMIT;
SELECT apikeys.tenant_update('globex', display_name => 'Globex Corp');
SELECT apikeys.tenant_update('globex', active => false);
SELECT apikeys.tenant_update('globex', active => true);
SELECT apikeys.tenant_delete('globex', force => true);
SELECT apikeys.vault_add('acme', 'generic', 'hook', 'whsec-1234567890') AS v \gset
SELECT apikeys.vault_reveal(:'v') IS NOT NULL;
SELECT apikeys.vault_delete(:'v');
SELECT apikeys.revoke_tenant('audit_rows_admin', 'acme');
SQL
{ echo 'CREATE EXTENSION apikeys CASCADE;'; cat "$ROOT/test/t/populate_keys.sql"; } >"$OUT/populate_keys.sql"

fail=0
files=0
for f in "$OUT/populate_keys.sql" "$OUT/changes.sql"; do
	b=$(basename "$f" .sql)
	for v in 10 11; do
		: >"$OUT/$b.$v.audit"
		awk -v dump="$STRIP $DUMP \\g |cat >> $OUT/$b.$v.audit" -v old=$([ $v = 10 ] && echo 1 || echo 0) '
			/^[ \t]*DROP EXTENSION/ { print dump }
			old && /^[ \t]*CREATE EXTENSION (IF NOT EXISTS )?apikeys( |;)/ { sub(/apikeys/, "apikeys VERSION '"'"'1.0'"'"'") }
			{ print }
			END { print ""; print dump }' "$f" >"$OUT/$b.$v.sql"
	done
	chmod a+rw "$OUT"/*
	for v in 10 11; do
		cluster_psql "t_rows_$v" $([ $v = 10 ] && echo $P10 || echo $P11) -d postgres -q -c "CREATE DATABASE w_$b"
		"$PGBIN/psql" -X -h "$TMPDIR_APIKEYS/t_rows_$v" -p $([ $v = 10 ] && echo $P10 || echo $P11) -U postgres -d "w_$b" \
			-v ON_ERROR_STOP=1 -f "$OUT/$b.$v.sql" >"$OUT/$b.$v.out" 2>&1 ||
			{ echo "FAIL $b: the workload failed on $v:"; tail -n 5 "$OUT/$b.$v.out"; fail=1; }
	done
	files=$((files + 1))
	if ! grep -q "VERSION '1.0'" "$OUT/$b.10.sql"; then
		echo "FAIL $b: no CREATE EXTENSION apikeys to run as 1.0"; fail=1; continue
	fi
	if [ ! -s "$OUT/$b.11.audit" ]; then
		echo "FAIL $b: no audit rows dumped"; fail=1; continue
	fi
	if ! cmp -s "$OUT/$b.10.audit" "$OUT/$b.11.audit"; then
		echo "FAIL $b: the audit rows differ:"; diff "$OUT/$b.10.audit" "$OUT/$b.11.audit" | head -20; fail=1
	fi
	w10=$(grep 'WARNING\|ERROR' "$OUT/$b.10.out" | sed 's/^psql:[^:]*://' | sort -u)
	w11=$(grep 'WARNING\|ERROR' "$OUT/$b.11.out" | sed 's/^psql:[^:]*://' | sort -u)
	if [ "$w10" != "$w11" ]; then
		echo "FAIL $b: the WARNING/ERROR lines differ:"; diff <(echo "$w10") <(echo "$w11") | head -10; fail=1
	fi
done
rows=$(cat "$OUT"/*.11.audit | wc -l)
[ "$rows" -gt 60 ] || { echo "FAIL: only $rows audit rows compared"; fail=1; }
[ $fail = 0 ] && echo "ok: $files workloads, $rows audit rows, the same with 1.0's audit and the current one"
exit $fail
