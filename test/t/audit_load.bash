# test/t/audit_load.bash - sourced by test/t/audit_concurrency.sh and
# test/t/audit_crash.sh (not a test itself: scripts/test.sh runs *.sh only).
#
# A key-management load over nine tenants and the checks that every change
# it committed is audited exactly once, in its tenant's chain.
#
#   tenants t0 .. t8; t0 is the hot tenant (half of all transactions), the
#   other half picks one of t1 .. t8 at random.
#   public.pool: per tenant, 20 'rot' keys (rotated and updated) and 20
#   'rev' keys (revoked; a second revoke is a no-op that writes nothing).
#   public.ops: one row per management call, written in the same transaction
#   as the call: the committed calls, whatever pgbench saw.
#   Four pgbench scripts, equal weights: create, rotate, update, revoke.
#
# Needs: qa (psql -qAt on the test database), $DIR (the cluster's directory).

# audit_load_setup: extension, tenants, key pools, the ops table
audit_load_setup() {
	qa >/dev/null <<-'SQL'
	CREATE EXTENSION apikeys CASCADE;
	SELECT count(apikeys.tenant_create('t' || i)) FROM generate_series(0, 8) i;
	CREATE TABLE public.pool (tenant text, kind text, n int, key_id uuid NOT NULL, PRIMARY KEY (tenant, kind, n));
	INSERT INTO public.pool
	SELECT 't' || i, kind, n, c.key_id
	  FROM generate_series(0, 8) i, unnest('{rot,rev}'::text[]) kind, generate_series(1, 20) n,
	       LATERAL apikeys.apikey_create('t' || i, kind || ' ' || n) c;
	CREATE TABLE public.ops (id bigserial PRIMARY KEY, tenant text NOT NULL, op text NOT NULL, key_id uuid NOT NULL);
	SQL
}

# audit_load_scripts: writes $DIR/load_{create,rotate,update,revoke}.sql;
# prints the -f arguments for pgbench (script numbers 0..3 in this order)
audit_load_scripts() {
	local head='\set r random(1, 16)
\set ti 0
\if :r <= 8
\set ti :r
\endif
\set k random(1, 20)'
	cat >"$DIR/load_create.sql" <<-EOF
	$head
	BEGIN;
	INSERT INTO public.ops (tenant, op, key_id)
	SELECT 't' || :ti::int, 'create', c.key_id FROM apikeys.apikey_create('t' || :ti::int, 'new ' || :client_id::int) c;
	END;
	EOF
	cat >"$DIR/load_rotate.sql" <<-EOF
	$head
	BEGIN;
	SELECT count(r.api_key) FROM public.pool p, LATERAL apikeys.apikey_rotate(p.key_id) r
	 WHERE p.tenant = 't' || :ti::int AND p.kind = 'rot' AND p.n = :k::int;
	INSERT INTO public.ops (tenant, op, key_id)
	SELECT tenant, 'rotate', key_id FROM public.pool WHERE tenant = 't' || :ti::int AND kind = 'rot' AND n = :k::int;
	END;
	EOF
	cat >"$DIR/load_update.sql" <<-EOF
	$head
	BEGIN;
	SELECT apikeys.apikey_update(key_id, description => 'client ' || :client_id::int || ' at ' || clock_timestamp())
	  FROM public.pool WHERE tenant = 't' || :ti::int AND kind = 'rot' AND n = :k::int;
	INSERT INTO public.ops (tenant, op, key_id)
	SELECT tenant, 'update', key_id FROM public.pool WHERE tenant = 't' || :ti::int AND kind = 'rot' AND n = :k::int;
	END;
	EOF
	cat >"$DIR/load_revoke.sql" <<-EOF
	$head
	BEGIN;
	SELECT apikeys.apikey_revoke(key_id, 'load test')
	  FROM public.pool WHERE tenant = 't' || :ti::int AND kind = 'rev' AND n = :k::int;
	INSERT INTO public.ops (tenant, op, key_id)
	SELECT tenant, 'revoke', key_id FROM public.pool WHERE tenant = 't' || :ti::int AND kind = 'rev' AND n = :k::int;
	END;
	EOF
	chmod a+r "$DIR"/load_*.sql
	echo "-f $DIR/load_create.sql -f $DIR/load_rotate.sql -f $DIR/load_update.sql -f $DIR/load_revoke.sql"
}

# pgbench_script_counts LOG: "create rotate update revoke" transaction counts
# from pgbench's per-script summary ("SQL script N: ...", " - K transactions")
pgbench_script_counts() {
	awk '/^SQL script [0-9]+:/ { s = $3 + 0 }
	     /^ - [0-9]+ transactions/ { n[s] = $2 }
	     END { printf "%d %d %d %d\n", n[1], n[2], n[3], n[4] }' "$1"
}

# ops_counts: the same four counts from public.ops (what committed)
ops_counts() {
	qa -c "SELECT count(*) FILTER (WHERE op = 'create') || ' ' || count(*) FILTER (WHERE op = 'rotate') || ' ' ||
	              count(*) FILTER (WHERE op = 'update') || ' ' || count(*) FILTER (WHERE op = 'revoke') FROM public.ops"
}

# audit_consistency: prints one line per problem (nothing when all is well):
# audit_check() not ok or not counting every row; a chain that is not
# 1, 2, 3, ... linked by prev_hash; a row outside its tenant's chain; a key
# without exactly one key_created row (or one without its key); a
# rotation_count other than its key_rotated rows and its rotate calls;
# secrets issued (secret_issued rows, and key_created rows their key's
# first secret joined) / secret_retired rows other than 1 + rotations /
# rotations;
# key_updated rows other than the update calls; a revoke call whose key is
# not revoked, or a key_revoked row count other than 1 for revoked keys and
# 0 for the others; created keys other than the create calls.
audit_consistency() {
	qa <<-'SQL'
	WITH chk AS (SELECT * FROM apikeys.audit_check()),
	walk AS (
	    SELECT chain, audit_id, tenant,
	           audit_id = row_number() OVER w AS numbered,
	           prev_hash = coalesce(lag(row_hash) OVER w, decode(repeat('00', 32), 'hex')) AS linked
	      FROM apikeys.audit WINDOW w AS (PARTITION BY chain ORDER BY audit_id)),
	per_key AS (
	    SELECT c.key_id, c.tenant, c.name, c.status, c.rotation_count,
	           count(*) FILTER (WHERE a.action = 'key_created') AS created,
	           count(*) FILTER (WHERE a.action = 'key_rotated') AS rotated,
	           count(*) FILTER (WHERE a.action = 'key_updated') AS updated,
	           count(*) FILTER (WHERE a.action = 'key_revoked') AS revoked,
	           count(*) FILTER (WHERE a.action = 'secret_issued' OR (a.action = 'key_created' AND a.detail ? 'secret')) AS issued,
	           count(*) FILTER (WHERE a.action = 'secret_retired') AS retired,
	           count(*) FILTER (WHERE a.audit_id IS NOT NULL AND a.chain IS DISTINCT FROM c.tenant) AS foreign_chain,
	           (SELECT count(*) FROM public.ops o WHERE o.key_id = c.key_id AND o.op = 'create') AS op_create,
	           (SELECT count(*) FROM public.ops o WHERE o.key_id = c.key_id AND o.op = 'rotate') AS op_rotate,
	           (SELECT count(*) FROM public.ops o WHERE o.key_id = c.key_id AND o.op = 'update') AS op_update,
	           (SELECT count(*) FROM public.ops o WHERE o.key_id = c.key_id AND o.op = 'revoke') AS op_revoke
	      FROM apikeys.credential c LEFT JOIN apikeys.audit a ON a.key_id = c.key_id
	     GROUP BY c.key_id)
	SELECT format('audit_check: ok %s, rows_checked %s of %s, first bad %s/%s: %s', ok, rows_checked,
	              (SELECT count(*) FROM apikeys.audit), first_bad_chain, first_bad_id, problem)
	  FROM chk WHERE NOT ok OR rows_checked <> (SELECT count(*) FROM apikeys.audit)
	UNION ALL
	SELECT format('chain %L row %s: %s', chain, audit_id,
	              CASE WHEN NOT numbered THEN 'not numbered in sequence' WHEN NOT linked THEN 'prev_hash is not the previous row_hash'
	                   ELSE format('tenant %L in another chain', tenant) END)
	  FROM walk WHERE NOT numbered OR NOT linked OR coalesce(tenant, '') <> chain
	UNION ALL
	SELECT format('key_created row %s/%s for a key that does not exist', a.chain, a.audit_id)
	  FROM apikeys.audit a WHERE a.action = 'key_created'
	   AND NOT EXISTS (SELECT FROM apikeys.credential c WHERE c.key_id = a.key_id)
	UNION ALL
	SELECT format('key %s (%s %s): %s', key_id, tenant, name, p) FROM per_key,
	       LATERAL (VALUES
	           (CASE WHEN created <> 1 THEN format('%s key_created rows', created) END),
	           (CASE WHEN foreign_chain <> 0 THEN format('%s audit rows outside chain %L', foreign_chain, tenant) END),
	           (CASE WHEN rotated <> rotation_count OR op_rotate <> rotation_count
	                 THEN format('rotation_count %s, %s key_rotated rows, %s rotate calls', rotation_count, rotated, op_rotate) END),
	           (CASE WHEN issued <> 1 + rotation_count OR retired <> rotation_count
	                 THEN format('%s secrets issued and %s secret_retired rows for %s rotations', issued, retired, rotation_count) END),
	           (CASE WHEN updated <> op_update THEN format('%s key_updated rows, %s update calls', updated, op_update) END),
	           (CASE WHEN (op_revoke > 0) <> (status = 'revoked') OR revoked <> (status = 'revoked')::int
	                 THEN format('status %s, %s key_revoked rows, %s revoke calls', status, revoked, op_revoke) END),
	           (CASE WHEN (name LIKE 'new %') <> (op_create = 1) OR op_create > 1
	                 THEN format('%s create calls', op_create) END)) v(p)
	 WHERE p IS NOT NULL
	UNION ALL
	SELECT format('create call %s: key %s does not exist', o.id, o.key_id)
	  FROM public.ops o WHERE o.op = 'create' AND NOT EXISTS (SELECT FROM apikeys.credential c WHERE c.key_id = o.key_id);
	SQL
}

# chain_heads: "chain:audit_id ..." of every chain, by chain
chain_heads() {
	qa -c "SELECT string_agg(chain || ':' || audit_id, ' ' ORDER BY chain) FROM apikeys.audit_head()"
}
