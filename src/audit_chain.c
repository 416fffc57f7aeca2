/*
 * audit_chain.c - the head of the audit hash chain, read for a new row.
 *
 * Audit writers hold SHARE ROW EXCLUSIVE on apikeys.audit until commit, so
 * once a writer has the lock every earlier writer has committed.  Reading the
 * head with the transaction's snapshot would miss them under REPEATABLE READ
 * or SERIALIZABLE (a duplicate audit_id, a fork in the chain); the latest
 * snapshot sees them, whatever the isolation level.
 */
#include "apikeys.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/* apikeys._audit_last(OUT audit_id bigint, OUT row_hash bytea): NULLs when empty */
PG_FUNCTION_INFO_V1(apikeys_audit_last);
Datum
apikeys_audit_last(PG_FUNCTION_ARGS)
{
	Oid			nsp = get_namespace_oid(APIKEYS_SCHEMA, false);
	Oid			relid = get_relname_relid("audit", nsp);
	Oid			indexid = get_relname_relid("audit_pkey", nsp);
	Relation	rel,
				index;
	Snapshot	snapshot;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	TupleDesc	desc;
	Datum		values[2] = {0, 0};
	bool		nulls[2] = {true, true};

	if (!OidIsValid(relid) || !OidIsValid(indexid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension_damaged: apikeys.audit or its primary key is missing"),
				 errhint("Reinstall the extension: DROP EXTENSION apikeys; CREATE EXTENSION apikeys;")));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	rel = table_open(relid, AccessShareLock);
	index = index_open(indexid, AccessShareLock);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	slot = table_slot_create(rel, NULL);
	scan = INDEX_BEGINSCAN_COMPAT(rel, index, snapshot, 0, 0);
	index_rescan(scan, NULL, 0, NULL, 0);
	if (index_getnext_slot(scan, BackwardScanDirection, slot))
	{
		int			hash_att = -1;
		TupleDesc	rdesc = RelationGetDescr(rel);

		for (int i = 0; i < rdesc->natts; i++)
			if (!TupleDescAttr(rdesc, i)->attisdropped &&
				strcmp(NameStr(TupleDescAttr(rdesc, i)->attname), "row_hash") == 0)
				hash_att = i + 1;
		if (hash_att < 0)
			elog(ERROR, "apikeys.audit has no row_hash column");
		values[0] = slot_getattr(slot, 1, &nulls[0]);
		values[1] = slot_getattr(slot, hash_att, &nulls[1]);
		if (!nulls[1])
			values[1] = PointerGetDatum(PG_DETOAST_DATUM_COPY(values[1]));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snapshot);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
