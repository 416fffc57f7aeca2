#!/usr/bin/env bash
# test/t/audit_rows_as_1_0.sh - the 1.1 audit (its trigger and writer in C)
# writes the rows 1.0's PL/pgSQL wrote.
#
# Every regression file (sql/*.sql) runs twice, against two clusters with
# this library: one whose extension is created as version 1.0 (its
# PL/pgSQL audit functions), one as the current version.  Before each DROP
# EXTENSION in the file and at its end, the audit rows are dumped, with the
# values that differ from run to run (key ids, timestamps, hints, hashes)
# masked.  The dumps must be equal, and so must the number of WARNING and
# ERROR lines each run printed (the labels warn per audit row).
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
conf=("shared_preload_libraries = 'apikeys'" "apikeys.flush_interval = '100ms'" "max_prepared_transactions = 0")
cluster_start t_rows_10 $P10 "${conf[@]}" || exit 1
cluster_start t_rows_11 $P11 "${conf[@]}" || exit 1

# the audit rows, masked (one line per row)
DUMP="SELECT chain, audit_id, tenant, key_id IS NULL AS no_key, action, outcome, db_role, session_role, actor, request_id, client_addr, application_name, regexp_replace(regexp_replace(regexp_replace(regexp_replace(detail::text, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g'), '\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.+-]+\"', '<ts>', 'g'), '\"(hint|last_purged_hash)\": \"[^\"]*\"', '\"\\1\": <h>', 'g'), '\"(row_hash|prev_hash)\": \"[^\"]*\"', '\"\\1\": <h>', 'g') AS detail FROM apikeys.audit ORDER BY chain, audit_id"

fail=0
files=0
for f in "$ROOT"/sql/*.sql; do
	b=$(basename "$f" .sql)
	for v in 10 11; do
		: >"$OUT/$b.$v.audit"
		awk -v dump="$DUMP \\g |cat >> $OUT/$b.$v.audit" -v old=$([ $v = 10 ] && echo 1 || echo 0) '
			/^[ \t]*DROP EXTENSION/ { print dump }
			old && /^[ \t]*CREATE EXTENSION (IF NOT EXISTS )?apikeys( |;)/ { sub(/apikeys/, "apikeys VERSION '"'"'1.0'"'"'") }
			{ print }
			END { print ""; print dump }' "$f" >"$OUT/$b.$v.sql"
	done
	chmod a+rw "$OUT"/*
	"$PGBIN/psql" -X -h "$TMPDIR_APIKEYS/t_rows_10" -p $P10 -U postgres -d postgres -f "$OUT/$b.10.sql" >"$OUT/$b.10.out" 2>&1
	"$PGBIN/psql" -X -h "$TMPDIR_APIKEYS/t_rows_11" -p $P11 -U postgres -d postgres -f "$OUT/$b.11.sql" >"$OUT/$b.11.out" 2>&1
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
	w10=$(grep -c 'WARNING\|ERROR' "$OUT/$b.10.out"); w11=$(grep -c 'WARNING\|ERROR' "$OUT/$b.11.out")
	if [ "$w10" != "$w11" ]; then
		echo "FAIL $b: $w10 WARNING/ERROR lines with 1.0, $w11 with the current version"; fail=1
	fi
done
rows=$(cat "$OUT"/*.11.audit | wc -l)
[ $fail = 0 ] && echo "ok: $files files, $rows audit rows, the same with 1.0's audit and the current one"
exit $fail
