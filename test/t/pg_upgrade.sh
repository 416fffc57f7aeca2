#!/usr/bin/env bash
# test/t/pg_upgrade.sh - pg_upgrade (same major version, copy mode) of a
# cluster whose database uses apikeys (imported legacy keys, scope
# registries, named limits and credits included): afterwards every key
# verifies as before (usage caps and credits included; rate windows, kept in
# shared memory only, start afresh as after any restart), the credits'
# balance, spent and left are unchanged, vault secrets reveal, the audit
# chains check with the same head, and management works on.
#
# Runs its own clusters (tmp/t_pgup_old, tmp/t_pgup_new, ports 54411 and
# 54412), stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

OLD=t_pgup_old OLD_PORT=54411
NEW=t_pgup_new NEW_PORT=54412
SETTINGS=("shared_preload_libraries = 'apikeys'"
	"apikeys.vault_master_key = 'pg-upgrade-test-master-key-0123456789ab'"
	"apikeys.flush_interval = '100ms'")
trap 'cluster_stop $OLD || true; cluster_stop $NEW || true' EXIT

qa() { local name=$1 port=$2; shift 2; cluster_psql "$name" "$port" -d keys -qAt "$@"; }
die() { echo "FAIL: $*" >&2; exit 1; }
VERDICTS="SELECT label, v.code FROM public.plain_keys p,
                 LATERAL apikeys.apikey_verify(p.api_key, client_addr => p.addr) v ORDER BY label"
# the audit is compared before anything reveals a secret (that is audited)
AUDIT="SELECT (SELECT ok FROM apikeys.audit_check()),
              (SELECT string_agg(chain || ':' || audit_id || ':' || row_hash, ',' ORDER BY chain) FROM apikeys.audit_head())"
VAULT="SELECT count(*) || '|' || bool_and(apikeys.vault_reveal(id) = secret) FROM public.plain_vault"
CREDITS="SELECT string_agg(p.label || ':' || u.usage_limit || '|' || u.used || '|' || u.usage_remaining, ' ' ORDER BY p.label)
           FROM public.plain_keys p JOIN apikeys.key_usage u USING (key_id) WHERE p.label LIKE 'acme\_credits\_%'"
# what populate_keys.sql and populate_1_1.sql's keys verify as, in one order

cluster_start "$OLD" "$OLD_PORT" "${SETTINGS[@]}"
cluster_psql "$OLD" "$OLD_PORT" -q -c 'CREATE DATABASE keys'
cluster_psql "$OLD" "$OLD_PORT" -d keys -q -c 'CREATE EXTENSION apikeys CASCADE' \
	-f "$ROOT/test/t/populate_keys.sql" -f "$ROOT/test/t/populate_1_1.sql" >/dev/null || die "populating the old cluster failed"
sleep 0.5   # let the flush worker write the usage counts
qa "$OLD" "$OLD_PORT" -c "$VERDICTS" | LC_ALL=C sort -t"|" -k1,1 >"$TMPDIR_APIKEYS/$OLD/verdicts" || die "verify failed before"
LC_ALL=C sort -t"|" -k1,1 "$ROOT/test/t/populate_keys.verdicts" "$ROOT/test/t/populate_1_1.verdicts" >"$TMPDIR_APIKEYS/$OLD/expected_verdicts"
diff -u "$TMPDIR_APIKEYS/$OLD/expected_verdicts" "$TMPDIR_APIKEYS/$OLD/verdicts" || die "unexpected verdicts before the upgrade"
credits_before=$(qa "$OLD" "$OLD_PORT" -c "$CREDITS")
[ -n "$credits_before" ] || die "no credits in key_usage before the upgrade"
[ "$(qa "$OLD" "$OLD_PORT" -c "$VAULT")" = "2|true" ] || die "vault secrets do not reveal before"
audit_before=$(qa "$OLD" "$OLD_PORT" -c "$AUDIT") || die "no audit state before"
cluster_stop "$OLD"

# the new cluster: initdb'd and configured like the old one, never started
cluster_start "$NEW" "$NEW_PORT" "${SETTINGS[@]}"
cluster_stop "$NEW"
work=$TMPDIR_APIKEYS/t_pgup_work
rm -rf "$work"; as_pg mkdir -p "$work"
(cd "$work" && as_pg "$PGBIN/pg_upgrade" -b "$PGBIN" -B "$PGBIN" \
	-d "$TMPDIR_APIKEYS/$OLD/data" -D "$TMPDIR_APIKEYS/$NEW/data" \
	-p "$OLD_PORT" -P "$NEW_PORT" -s "$work" -U postgres) >"$work/pg_upgrade.out" 2>&1 || {
	tail -n 30 "$work/pg_upgrade.out"; die "pg_upgrade failed"; }
grep -q 'Upgrade Complete' "$work/pg_upgrade.out" || die "pg_upgrade did not complete"

as_pg "$PGBIN/pg_ctl" -D "$TMPDIR_APIKEYS/$NEW/data" -l "$TMPDIR_APIKEYS/$NEW/server.log" -w start >/dev/null ||
	die "the upgraded cluster does not start"
credits_after=$(qa "$NEW" "$NEW_PORT" -c "$CREDITS")
[ "$credits_after" = "$credits_before" ] ||
	die "credits (balance|spent|left) changed across pg_upgrade: $credits_after (before: $credits_before)"
echo "ok: credits kept: $credits_after"
qa "$NEW" "$NEW_PORT" -c "$VERDICTS" | LC_ALL=C sort -t"|" -k1,1 >"$TMPDIR_APIKEYS/$NEW/verdicts" || die "verify failed after pg_upgrade"
# caps and credits live on in apikeys.usage (acme_cap, acme_credits_out
# stay refused); rate windows are shared memory only and start afresh, as
# after any restart
sed -E 's/^(acme_rate|acme_registry)\|rate_limited$/\1|valid/' "$TMPDIR_APIKEYS/$OLD/expected_verdicts" >"$TMPDIR_APIKEYS/$NEW/expected_verdicts"
diff -u "$TMPDIR_APIKEYS/$NEW/expected_verdicts" "$TMPDIR_APIKEYS/$NEW/verdicts" || die "verdicts changed across pg_upgrade"
audit_after=$(qa "$NEW" "$NEW_PORT" -c "$AUDIT")
[ "$audit_after" = "$audit_before" ] || die "audit check or head differ after pg_upgrade: $audit_after (before: $audit_before)"
[ "$(qa "$NEW" "$NEW_PORT" -c "$VAULT")" = "2|true" ] || die "vault secrets do not reveal after pg_upgrade"
qa "$NEW" "$NEW_PORT" >/dev/null <<'SQL' || die "management fails after pg_upgrade"
SELECT public.mk('acme_after_pg_upgrade', 'acme');
SELECT apikeys.apikey_revoke(public.id('acme_plain'));
SELECT apikeys.audit_verify();
SQL
[ "$(qa "$NEW" "$NEW_PORT" -c "SELECT string_agg(v.code, ',' ORDER BY label) FROM public.plain_keys p, LATERAL apikeys.apikey_verify(p.api_key) v WHERE label IN ('acme_after_pg_upgrade', 'acme_plain')")" = "valid,revoked" ] ||
	die "keys changed after pg_upgrade do not verify as expected"
echo "PASS"
