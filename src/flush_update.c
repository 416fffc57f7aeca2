/*
 * flush_update.c - the flush worker's fast path: add a batch's figures to
 * the apikeys.usage rows that already exist, in place.
 *
 * Every key used during a turn gets its row rewritten at the end of the
 * turn, so with many keys in use this is most of what the worker does.
 * Through SQL (INSERT ... ON CONFLICT DO UPDATE) each row costs an executor
 * pass over unnested arrays, a speculative-insertion probe, a row lock and a
 * new index entry; here it is one index probe and one heap update, HOT when
 * the page has room (the table is created with fillfactor 70 for that).
 *
 * A row that another transaction holds (an open apikey_delete, an UPDATE by
 * hand) is not waited for: its key is skipped this turn and keeps its counts
 * for the next one, so one tenant's open transaction cannot stop every
 * other tenant's counts from being written (a wait would end in the
 * worker's lock_timeout and fail the whole batch, every turn).
 *
 * Used only where nobody could tell the difference: the table has no
 * triggers, rules or CHECK constraints and no index but its primary key, and
 * its columns are the ones this file knows.  Otherwise, and for keys without a row yet, the SQL
 * statement does the work (flush_writer.c).
 */
#include "flush.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/pg_type.h"
#include "nodes/execnodes.h"
#include "storage/bufmgr.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"

/* Is the table exactly what this file writes, with nothing watching it? */
static bool
fast_path_applies(Relation rel, Relation index, IndexInfo *ii)
{
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *indexes;
	bool		only_pkey;

	if (rel->rd_rel->relhastriggers || rel->rd_rel->relhasrules ||
		rel->rd_rel->relkind != RELKIND_RELATION || desc->natts != Natts_usage ||
		(desc->constr && desc->constr->num_check > 0))
		return false;
	indexes = RelationGetIndexList(rel);
	only_pkey = list_length(indexes) == 1 && linitial_oid(indexes) == RelationGetRelid(index);
	list_free(indexes);
	if (!only_pkey || ii->ii_NumIndexAttrs != 1 ||
		ii->ii_IndexAttrNumbers[0] != Anum_usage_key_id ||
		ii->ii_Expressions != NIL || ii->ii_Predicate != NIL)
		return false;
	for (int a = 1; a <= Natts_usage; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a - 1);
		Oid			want = a == Anum_usage_key_id ? UUIDOID :
			(a == Anum_usage_last_used_at || a == Anum_usage_period_start ||
			 a == Anum_usage_flushed_at) ? TIMESTAMPTZOID : INT8OID;

		if (att->attisdropped || att->atttypid != want)
			return false;
	}
	return true;
}

/* The new row: the same arithmetic as the SQL statement's DO UPDATE. */
static HeapTuple
updated_row(HeapTuple old, TupleDesc desc, const FlushItem *it, TimestampTz now)
{
	Datum		values[Natts_usage];
	bool		nulls[Natts_usage];
	HeapTuple	tup;

	heap_deform_tuple(old, desc, values, nulls);
	if (it->last_used_at != 0 &&
		(nulls[Anum_usage_last_used_at - 1] ||
		 DatumGetTimestampTz(values[Anum_usage_last_used_at - 1]) < it->last_used_at))
	{
		values[Anum_usage_last_used_at - 1] = TimestampTzGetDatum(it->last_used_at);
		nulls[Anum_usage_last_used_at - 1] = false;
	}
	if (it->has_used)
	{
		values[Anum_usage_used - 1] = Int64GetDatum(it->used);
		nulls[Anum_usage_used - 1] = false;
		values[Anum_usage_period_start - 1] =
			TimestampTzGetDatum(apikeys_flush_period_start(it, &nulls[Anum_usage_period_start - 1]));
	}
	for (int c = 0; c < apikeys_flush_ncounted; c++)
	{
		int			col = Anum_usage_first_count - 1 + c;

		values[col] = Int64GetDatum(DatumGetInt64(values[col]) +
									it->counts[apikeys_flush_counted[c]]);
	}
	values[Anum_usage_flushed_at - 1] = TimestampTzGetDatum(now);
	nulls[Anum_usage_flushed_at - 1] = false;
	tup = heap_form_tuple(desc, values, nulls);
	tup->t_self = old->t_self;
	return tup;
}

/*
 * Replace a usage row in place of its old version; a version that is not
 * heap-only needs its own entry in the key index.
 */
static void
update_row(Relation rel, Relation index, IndexInfo *ii, HeapTuple old, HeapTuple tup)
{
	bool		need_index;
	Datum		key[1];
	bool		key_null[1] = {false};

#if PG_VERSION_NUM >= 160000
	TU_UpdateIndexes upd;

	simple_heap_update(rel, &old->t_self, tup, &upd);
	need_index = upd == TU_All;
#else
	simple_heap_update(rel, &old->t_self, tup);
	need_index = !HeapTupleIsHeapOnly(tup);
#endif
	if (!need_index)
		return;
	/* a new version off the HOT chain needs its own index entry */
	key[0] = heap_getattr(tup, Anum_usage_key_id, RelationGetDescr(rel), &key_null[0]);
#if PG_VERSION_NUM >= 140000
	index_insert(index, key, key_null, &tup->t_self, rel, UNIQUE_CHECK_YES, true, ii);
#else
	index_insert(index, key, key_null, &tup->t_self, rel, UNIQUE_CHECK_YES, ii);
#endif
}

/*
 * Is the usage row at tid free to update, with no other transaction
 * holding it (a lock, an update or delete in progress)?  The same test
 * heap_update makes before it would wait (HeapTupleSatisfiesUpdate), made
 * under a share lock of the buffer and written nowhere: a row that another
 * transaction takes between this test and the update is waited for once
 * (that turn fails and is retried), and skipped from the next turn on.
 */
static bool
row_free(Relation rel, ItemPointer tid)
{
	Buffer		buffer = ReadBuffer(rel, ItemPointerGetBlockNumber(tid));
	Page		page;
	ItemId		lp;
	HeapTupleData tuple;
	bool		free_now = false;

	LockBuffer(buffer, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buffer);
	lp = PageGetItemId(page, ItemPointerGetOffsetNumber(tid));
	if (ItemIdIsNormal(lp))
	{
		tuple.t_data = (HeapTupleHeader) PageGetItem(page, lp);
		tuple.t_len = ItemIdGetLength(lp);
		tuple.t_self = *tid;
		tuple.t_tableOid = RelationGetRelid(rel);
		free_now = HeapTupleSatisfiesUpdate(&tuple, GetCurrentCommandId(false), buffer) == TM_Ok;
	}
	UnlockReleaseBuffer(buffer);
	return free_now;
}

/*
 * Update the rows of the items that have one; done[k] tells which, and
 * skipped[k] which have a row another transaction holds (left alone).
 * Returns how many were updated; 0 with nothing done when the fast path
 * does not apply.  The caller holds RowExclusiveLock on the table and its
 * index, inside a transaction.
 */
int
apikeys_flush_update_existing(Oid usage_rel, Oid usage_pkey, const FlushItem *items,
							  int n, bool *done, bool *skipped)
{
	Relation	rel = table_open(usage_rel, RowExclusiveLock);
	Relation	index = index_open(usage_pkey, RowExclusiveLock);
	IndexInfo  *ii = BuildIndexInfo(index);
	TupleDesc	desc = RelationGetDescr(rel);
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	int			updated = 0;

	memset(done, 0, sizeof(bool) * n);
	memset(skipped, 0, sizeof(bool) * n);
	if (fast_path_applies(rel, index, ii))
	{
		for (int k = 0; k < n; k++)
		{
			/* the newest committed row: an older one would fail the update */
			HeapTuple	old = apikeys_probe_rel(rel, usage_pkey, F_UUID_EQ,
												UUIDPGetDatum(&items[k].key.key_id),
												InvalidOid, GetLatestSnapshot());

			if (old == NULL)
				continue;
			if (!row_free(rel, &old->t_self))
			{
				skipped[k] = true;
				continue;
			}
			update_row(rel, index, ii, old, updated_row(old, desc, &items[k], now));
			done[k] = true;
			updated++;
		}
		if (updated > 0)
			CommandCounterIncrement();
	}
	index_close(index, RowExclusiveLock);
	table_close(rel, RowExclusiveLock);
	return updated;
}

/*
 * Is key_id's credential row not committed yet, but being inserted by a
 * transaction still in progress (a key verified in the transaction that
 * creates or imports it)?  The SQL path writes only the rows of keys its
 * snapshot sees, and would drop that key's counts for good; the caller
 * holds them for a later turn instead.  A key whose transaction aborts is
 * found by neither snapshot later, and its counts are dropped then.
 * credential is open and locked by the caller (flush_lock_target's lock);
 * pkey is its primary key.
 */
bool
apikeys_flush_key_uncommitted(Relation credential, Oid pkey, const pg_uuid_t *key_id)
{
	HeapTuple	tup;
	bool		uncommitted = false;

	Assert(OidIsValid(pkey));
	tup = apikeys_probe_rel(credential, pkey, F_UUID_EQ, UUIDPGetDatum(key_id), InvalidOid, GetLatestSnapshot());
	if (tup == NULL)
	{
		SnapshotData dirty;

		InitDirtySnapshot(dirty);
		tup = apikeys_probe_rel(credential, pkey, F_UUID_EQ, UUIDPGetDatum(key_id), InvalidOid, &dirty);
		uncommitted = tup != NULL;
	}
	if (tup != NULL)
		heap_freetuple(tup);
	return uncommitted;
}
