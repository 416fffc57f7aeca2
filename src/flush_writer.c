/*
 * flush_writer.c - write one collected batch of usage figures to
 * apikeys.usage, inside the caller's transaction (flush_loop.c): lock the
 * tables without waiting, update the rows that exist in place
 * (flush_update.c), insert or update the rest through SQL (INSERT ... ON
 * CONFLICT).
 */
#include "flush.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

/* the verdicts with a column in apikeys.usage, in column order (verdicts.h) */
const VerdictCode apikeys_flush_counted[] = {
#define COUNTED_CODE_IF(e, name, counted, http) IF_COUNTED_##counted(e)
#define IF_COUNTED_true(e) e,
#define IF_COUNTED_false(e)
	APIKEYS_VERDICTS(COUNTED_CODE_IF)
#undef COUNTED_CODE_IF
#undef IF_COUNTED_true
#undef IF_COUNTED_false
};
const int	apikeys_flush_ncounted = lengthof(apikeys_flush_counted);
StaticAssertDecl(lengthof(apikeys_flush_counted) == VERDICT_NCOUNTED,
				 "counted verdicts disagree");

/*
 * One statement per batch: one unique-index probe per key (ON CONFLICT).
 * Keys are unique within a batch (one shared entry per key).  used is NULL
 * for keys without a usage cap: the stored figure is then left alone.
 * Rows of keys deleted meanwhile are skipped.  The count columns, one per
 * counted verdict in list order, come from verdicts.h; the statement is
 * built once per worker.  Every name and type is qualified: the worker also
 * pins search_path (apikeys_flush_main).
 */
#define FLUSH_NARGS (4 + VERDICT_NCOUNTED)

static const char *
flush_sql(void)
{
	static char *sql = NULL;
	StringInfoData cols,
				unnests,
				aliases,
				sets;
	int			c = 0;

	if (sql != NULL)
		return sql;
	initStringInfo(&cols);
	initStringInfo(&unnests);
	initStringInfo(&aliases);
	initStringInfo(&sets);
	for (int v = 0; v < VERDICT_COUNT; v++)
	{
		const char *name = apikeys_verdicts[v].name;

		if (!apikeys_verdicts[v].counted)
			continue;
		c++;
		appendStringInfo(&cols, ", count_%s", name);
		appendStringInfo(&unnests, ", pg_catalog.unnest($%d::pg_catalog.int8[])", 4 + c);
		appendStringInfo(&aliases, ", c%d", c);
		appendStringInfo(&sets, "   count_%s = u.count_%s OPERATOR(pg_catalog.+) excluded.count_%s,",
						 name, name, name);
	}
	Assert(c == VERDICT_NCOUNTED);
	sql = MemoryContextStrdup(TopMemoryContext, psprintf(
		"INSERT INTO apikeys.usage AS u (key_id, last_used_at, used, period_start%s)"
		" SELECT t.* FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.uuid[]), pg_catalog.unnest($2::pg_catalog.timestamptz[]),"
		"       pg_catalog.unnest($3::pg_catalog.int8[]), pg_catalog.unnest($4::pg_catalog.timestamptz[])%s)"
		"       AS t(k, l, ug, ps%s)"
		"  WHERE EXISTS (SELECT 1 FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) t.k)"
		" ON CONFLICT (key_id) DO UPDATE SET"
		"   last_used_at = GREATEST(u.last_used_at, excluded.last_used_at),"
		"   used = COALESCE(excluded.used, u.used),"
		"   period_start = CASE WHEN excluded.used IS NULL THEN u.period_start ELSE excluded.period_start END,"
		"%s"
		"   flushed_at = pg_catalog.now()",
		cols.data, unnests.data, aliases.data, sets.data));
	pfree(cols.data);
	pfree(unnests.data);
	pfree(aliases.data);
	pfree(sets.data);
	return sql;
}

/* A bigint[] argument of the flush statement (nulls: NULL for none). */
static ArrayType *
int8_array(Datum *values, bool *nulls, int n)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};

	return construct_md_array(values, nulls, 1, dims, lbs, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

/* Insert or update the rows of items through SQL; true on success. */
static bool
write_batch_sql(FlushItem *items, int n)
{
	Oid			argtypes[FLUSH_NARGS];
	Datum		args[FLUSH_NARGS];
	Datum	   *keys = palloc(sizeof(Datum) * n);
	Datum	   *last = palloc(sizeof(Datum) * n);
	Datum	   *used = palloc(sizeof(Datum) * n);
	Datum	   *pstart = palloc(sizeof(Datum) * n);
	bool	   *last_null = palloc(sizeof(bool) * n);
	bool	   *used_null = palloc(sizeof(bool) * n);
	bool	   *pstart_null = palloc(sizeof(bool) * n);
	Datum	   *counts = palloc(sizeof(Datum) * n);
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			rc;

	for (int k = 0; k < n; k++)
	{
		keys[k] = UUIDPGetDatum(&items[k].key.key_id);
		last[k] = TimestampTzGetDatum(items[k].last_used_at);
		last_null[k] = items[k].last_used_at == 0;
		used[k] = Int64GetDatum(items[k].used);
		used_null[k] = !items[k].has_used;
		pstart[k] = TimestampTzGetDatum(apikeys_flush_period_start(&items[k], &pstart_null[k]));
	}
	argtypes[0] = UUIDARRAYOID;
	args[0] = PointerGetDatum(construct_array(keys, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	argtypes[1] = TIMESTAMPTZARRAYOID;
	args[1] = PointerGetDatum(construct_md_array(last, last_null, 1, dims, lbs, TIMESTAMPTZOID, 8,
												 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	argtypes[2] = INT8ARRAYOID;
	args[2] = PointerGetDatum(int8_array(used, used_null, n));
	argtypes[3] = TIMESTAMPTZARRAYOID;
	args[3] = PointerGetDatum(construct_md_array(pstart, pstart_null, 1, dims, lbs, TIMESTAMPTZOID, 8,
												 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	for (int c = 0; c < apikeys_flush_ncounted; c++)
	{
		for (int k = 0; k < n; k++)
			counts[k] = Int64GetDatum(items[k].counts[apikeys_flush_counted[c]]);
		argtypes[4 + c] = INT8ARRAYOID;
		args[4 + c] = PointerGetDatum(int8_array(counts, NULL, n));
		counts = palloc(sizeof(Datum) * n);
	}

	rc = SPI_execute_with_args(flush_sql(), FLUSH_NARGS, argtypes, args, NULL, false, 0);
	return rc == SPI_OK_INSERT;
}

/*
 * Write one batch inside the caller's transaction: rows that exist are
 * updated in place (flush_update.c), the rest go through SQL.  The items
 * whose row another transaction holds, or whose key another transaction is
 * still creating, are skipped: they are moved to the end, after the
 * *n_written written ones, to be written at a later turn.
 */
bool
flush_write_batch(Oid usage_rel, Oid usage_pkey, FlushItem *items, int n, int *n_written)
{
	bool	   *done = palloc(sizeof(bool) * n);
	bool	   *skipped = palloc(sizeof(bool) * n);
	int			updated PG_USED_FOR_ASSERTS_ONLY =
		apikeys_flush_update_existing(usage_rel, usage_pkey, items, n, done, skipped);
	FlushItem  *rest = palloc(sizeof(FlushItem) * n);
	FlushItem  *held = palloc(sizeof(FlushItem) * n);
	int			m = 0,
				h = 0;
	Relation	credential = NULL;	/* opened for the first item without a row */
	Oid			credential_pkey = InvalidOid;

	for (int k = 0; k < n; k++)
	{
		Assert(!(done[k] && skipped[k]));
		/* no row yet: the key itself may not be committed yet */
		if (!done[k] && !skipped[k])
		{
			if (credential == NULL)
			{
				/* locked by flush_lock_target: it cannot have gone */
				credential = table_open(get_relname_relid("credential", get_rel_namespace(usage_rel)),
										AccessShareLock);
				credential_pkey = PRIMARY_KEY_INDEX_COMPAT(credential);
			}
			if (OidIsValid(credential_pkey) &&
				apikeys_flush_key_uncommitted(credential, credential_pkey, &items[k].key.key_id))
				skipped[k] = true;
		}
		if (skipped[k])
			held[h++] = items[k];
		else if (!done[k])
			rest[m++] = items[k];
	}
	if (credential != NULL)
		table_close(credential, AccessShareLock);
	Assert(updated + m + h == n);
	/* written first (in place, then through SQL), the held ones last */
	if (h > 0)
	{
		int			w = 0;

		for (int k = 0; k < n; k++)
			if (done[k])
				items[w++] = items[k];
		memcpy(items + w, rest, sizeof(FlushItem) * m);
		memcpy(items + w + m, held, sizeof(FlushItem) * h);
	}
	*n_written = n - h;
	return m == 0 || write_batch_sql(rest, m);
}

/*
 * Lock the relations the flush touches, without waiting.  The
 * worker must never queue behind DROP EXTENSION (or ALTER, TRUNCATE...):
 * DROP locks the extension's objects one by one in catalog order, so a
 * waiting worker holding one of them deadlocks it.  Once all are locked
 * nothing else the statement needs can be taken away, and the existence
 * check after the lock sees a DROP that committed meanwhile.
 */
FlushTarget
flush_lock_target(Oid *usage_out, Oid *usage_pkey_out)
{
	Oid			nsp,
				usage,
				usage_pkey,
				credential;

	if (!OidIsValid(get_extension_oid("apikeys", true)) ||
		!OidIsValid(nsp = get_namespace_oid(APIKEYS_SCHEMA, true)) ||
		!OidIsValid(usage = get_relname_relid("usage", nsp)) ||
		!OidIsValid(usage_pkey = get_relname_relid("usage_pkey", nsp)) ||
		!OidIsValid(credential = get_relname_relid("credential", nsp)))
		return TARGET_GONE;
	if (!ConditionalLockRelationOid(usage, RowExclusiveLock) ||
		!ConditionalLockRelationOid(usage_pkey, RowExclusiveLock) ||
		!ConditionalLockRelationOid(credential, AccessShareLock))
		return TARGET_BUSY;		/* locks go at the transaction's end */
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(usage)) ||
		!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(usage_pkey)) ||
		!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(credential)))
		return TARGET_GONE;
	*usage_out = usage;
	*usage_pkey_out = usage_pkey;
	return TARGET_READY;
}
