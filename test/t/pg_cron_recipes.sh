#!/usr/bin/env bash
# test/t/pg_cron_recipes.sh - the pg_cron recipes of docs/scheduling.md
# (Debian's postgresql-NN-cron), in a cluster preloading apikeys and
# pg_cron:
#   - the audit purge (apikeys.audit_purge('30 days'), a superuser's job)
#     deletes the rows past the retention and leaves an audit_purged anchor;
#   - the head export (a job of the auditor role audit_keeper) appends
#     apikeys.audit_head() to a table audit_keeper owns, which the
#     extension's roles cannot write;
#   - the chain check (apikeys.audit_verify(), audit_keeper's job) succeeds
#     on an intact chain; after a superuser rewrites an audit row with the
#     append-only guard disabled (as sql/audit_holes.sql), its next run FAILS
#     and cron.job_run_details shows status failed with audit_chain_broken,
#     and the purge job fails too (it never deletes evidence).
# Jobs run every second with pg_cron >= 1.5 ('1 seconds'); with an older
# pg_cron every minute ('* * * * *'), so the test then takes 1 to 3 minutes.
#
# Own cluster: tmp/t_cron, port 55124; stopped on exit.  Exit 0 = pass.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

NAME=t_cron
PORT=${CRON_PORT:-55124}

die() { echo "FAIL: $*" >&2; q -c "SELECT jobid, status, return_message FROM cron.job_run_details ORDER BY runid" >&2 2>/dev/null; exit 1; }
ok() { echo "ok: $*"; }
q() { cluster_psql "$NAME" "$PORT" -d postgres -qAt "$@"; }
expect() { [ "$2" = "$3" ] || die "$1: expected '$3', got '$2'"; }

[ -f "/usr/lib/postgresql/$PGVER/lib/pg_cron.so" ] ||
	skip "pg_cron for PostgreSQL $PGVER is not installed (the archive has no postgresql-$PGVER-cron)"
trap 'cluster_stop $NAME || true' EXIT

cluster_start "$NAME" "$PORT" "shared_preload_libraries = 'apikeys,pg_cron'" \
	"cron.database_name = 'postgres'" "cron.use_background_workers = on" "max_worker_processes = 20"

echo "== setup: audit rows 40 days old in chain acme (history rewritten consistently), the auditor role"
q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION apikeys CASCADE;
CREATE EXTENSION pg_cron;
SELECT apikeys.tenant_create('acme');
SELECT apikeys.apikey_create('acme', 'k' || g) FROM generate_series(1, 3) g;
-- the rows written so far, moved 40 days back and re-hashed: the chain stays
-- intact (the way sql/audit_holes.sql ages a chain)
DO $$
DECLARE
    a apikeys.audit;
    prev bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
BEGIN
    ALTER TABLE apikeys.audit DISABLE TRIGGER USER;
    UPDATE apikeys.audit SET at = at - interval '40 days' WHERE chain = 'acme';
    FOR a IN SELECT * FROM apikeys.audit WHERE chain = 'acme' ORDER BY audit_id LOOP
        a.prev_hash := prev;
        a.row_hash := apikeys_internal._audit_hash(a);
        UPDATE apikeys.audit x SET prev_hash = a.prev_hash, row_hash = a.row_hash
         WHERE x.chain = a.chain AND x.audit_id = a.audit_id;
        prev := a.row_hash;
    END LOOP;
    ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_chain;
    ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
    ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_no_truncate;
END $$;
-- and a recent one
SELECT apikeys.apikey_create('acme', 'recent');
-- the auditor: reads every chain (audit grant), owns the heads table, runs its jobs
CREATE ROLE audit_keeper LOGIN;
SELECT apikeys.grant_tenant('audit_keeper', NULL, 'audit');
GRANT USAGE ON SCHEMA cron TO audit_keeper;
CREATE SCHEMA audit_keeper AUTHORIZATION audit_keeper;
SET ROLE audit_keeper;
CREATE TABLE audit_keeper.heads (
    taken_at timestamptz NOT NULL DEFAULT now(),
    chain    text NOT NULL,
    audit_id bigint NOT NULL,
    row_hash text NOT NULL,
    at       timestamptz NOT NULL);
RESET ROLE;
SQL
expect "chain intact after aging" "$(q -c "SELECT ok FROM apikeys.audit_check()")" t
OLD=$(q -c "SELECT count(*) FROM apikeys.audit WHERE chain = 'acme' AND at < now() - interval '30 days'")
[ "$OLD" -ge 4 ] || die "expected old rows, got $OLD"

# the schedule: every second where pg_cron takes seconds (1.5+)
if q -c "SELECT cron.unschedule(cron.schedule('probe', '1 seconds', 'SELECT 1'))" >/dev/null 2>&1; then
	EVERY='1 seconds' WAIT=30
else
	EVERY='* * * * *' WAIT=150
	echo "NOTE: pg_cron $(q -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'") takes no seconds: jobs run every minute"
fi

echo "== the jobs (every '$EVERY')"
q >/dev/null <<SQL
SELECT cron.schedule('apikeys-audit-purge', '$EVERY', \$\$SELECT apikeys.audit_purge('30 days')\$\$);
SET ROLE audit_keeper;
SELECT cron.schedule('apikeys-audit-head', '$EVERY',
    \$\$INSERT INTO audit_keeper.heads (chain, audit_id, row_hash, at) SELECT chain, audit_id, row_hash, at FROM apikeys.audit_head()\$\$);
SELECT cron.schedule('apikeys-audit-verify', '$EVERY', \$\$SELECT apikeys.audit_verify()\$\$);
RESET ROLE;
SQL

# runs JOB STATUS [SINCE_RUNID]: the job's runs with that status after SINCE_RUNID
runs() {
	q -c "SELECT count(*) FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	       WHERE j.jobname = '$1' AND d.status = '$2' AND d.runid > ${3:-0}"
}
# wait_run JOB STATUS [SINCE_RUNID]: until the job has such a run
wait_run() {
	for _ in $(seq $((WAIT * 5))); do
		[ "$(runs "$@")" -gt 0 ] && return 0
		sleep 0.2
	done
	die "job $1: no $2 run within $WAIT s"
}

wait_run apikeys-audit-purge succeeded
wait_run apikeys-audit-head succeeded
wait_run apikeys-audit-verify succeeded
expect "purge: rows past the retention" \
	"$(q -c "SELECT count(*) FROM apikeys.audit WHERE chain = 'acme' AND at < now() - interval '30 days'")" 0
expect "purge: its anchor" \
	"$(q -c "SELECT (detail->>'rows')::int FROM apikeys.audit WHERE chain = 'acme' AND action = 'audit_purged'")" "$OLD"
expect "chain intact after the purge" "$(q -c "SELECT ok FROM apikeys.audit_check()")" t
expect "purge job ran as" "$(q -c "SELECT DISTINCT j.username FROM cron.job j WHERE j.jobname = 'apikeys-audit-purge'")" postgres
ok "purge job: $OLD rows older than 30 days deleted, anchored"
# the export of a run after the purge's anchor has acme's current head
for _ in $(seq $((WAIT * 5))); do
	[ "$(q -c "SELECT count(*) > 0 FROM audit_keeper.heads h JOIN apikeys.audit_head() a USING (chain, audit_id, row_hash) WHERE chain = 'acme'")" = t ] && break
	sleep 0.2
done
expect "head export: acme's current head" \
	"$(q -c "SELECT count(*) > 0 FROM audit_keeper.heads h JOIN apikeys.audit_head() a USING (chain, audit_id, row_hash) WHERE chain = 'acme'")" t
expect "head export: every chain each run" \
	"$(q -c "SELECT bool_and(n = (SELECT count(*) FROM apikeys.audit_head())) FROM (SELECT count(*) n FROM audit_keeper.heads GROUP BY taken_at) x")" t
expect "heads table: owned by audit_keeper, no grants" \
	"$(q -c "SELECT tableowner || ' ' || coalesce((SELECT relacl::text FROM pg_class WHERE oid = 'audit_keeper.heads'::regclass), 'none') FROM pg_tables WHERE tablename = 'heads'")" "audit_keeper none"
expect "head check: every stored head accounted for (docs/scheduling.md's query)" \
	"$(q -U audit_keeper -c "SELECT bool_and(c.ok) FROM (SELECT DISTINCT ON (chain) * FROM audit_keeper.heads ORDER BY chain, taken_at DESC) h,
	                          LATERAL apikeys.audit_head_check(h.chain, h.audit_id, h.row_hash, h.at) c")" t
ok "head export job: audit_head() rows in audit_keeper.heads"

echo "== tampering: a superuser rewrites an audit row with the guard disabled"
LAST=$(q -c "SELECT coalesce(max(runid), 0) FROM cron.job_run_details")
q >/dev/null <<'SQL'
ALTER TABLE apikeys.audit DISABLE TRIGGER USER;
UPDATE apikeys.audit SET actor = 'mallory'
 WHERE chain = 'acme' AND audit_id = (SELECT max(audit_id) FROM apikeys.audit WHERE chain = 'acme' AND action = 'key_created');
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_chain;
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_append_only;
ALTER TABLE apikeys.audit ENABLE ALWAYS TRIGGER audit_no_truncate;
SQL
BAD=$(q -c "SELECT first_bad_id FROM apikeys.audit_check()")
wait_run apikeys-audit-verify failed "$LAST"
msg=$(q -c "SELECT d.return_message FROM cron.job_run_details d JOIN cron.job j USING (jobid)
             WHERE j.jobname = 'apikeys-audit-verify' AND d.status = 'failed' ORDER BY d.runid LIMIT 1")
case $msg in
	*"audit_chain_broken: chain \"acme\" row $BAD: row content does not match its hash"*) ;;
	*) die "verify job's failure message: '$msg'" ;;
esac
expect "no verify run succeeded after the tampering" "$(runs apikeys-audit-verify succeeded "$(q -c "SELECT min(runid) FROM cron.job_run_details d JOIN cron.job j USING (jobid) WHERE j.jobname = 'apikeys-audit-verify' AND d.status = 'failed'")")" 0
ok "verify job failed: $msg"
wait_run apikeys-audit-purge failed "$LAST"
q -c "SELECT d.return_message FROM cron.job_run_details d JOIN cron.job j USING (jobid)
       WHERE j.jobname = 'apikeys-audit-purge' AND d.status = 'failed' LIMIT 1" | grep -q 'audit_chain_broken' ||
	die "the purge job failed for another reason"
ok "purge job refuses to delete evidence on a broken chain"

q -c "SELECT cron.unschedule(jobid) FROM cron.job" >/dev/null
echo "PASS"
