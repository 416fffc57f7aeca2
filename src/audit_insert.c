/*
 * audit_insert.c - the direct writer: a batch of new audit rows put into
 * apikeys.audit with one multi-row heap insert and their index entries,
 * without an executor pass per row.
 *
 * A bulk create writes two audit rows per key; through SQL (INSERT ...
 * SELECT FROM unnest) each row costs a projection, a trigger call that
 * deforms and forms the row again, and a heap insert of its own with its
 * own WAL record.  Here each row is formed once, sealed by the same code as
 * the chain trigger (audit_chain_seal), and written with the batch.
 *
 * Used only where nobody could tell the difference: apikeys.audit is a
 * plain table with the columns the extension made (none dropped, no CHECK
 * constraint, no generated column), no rules, no forced row security, and
 * no INSERT trigger but the chain trigger, enabled ALWAYS; and the role may
 * insert into it.  Otherwise the caller writes through SQL, which fails or
 * fires what is there as it always did.  Column defaults are evaluated as
 * the executor would, NOT NULL is enforced with PostgreSQL's error, and the
 * indexes (unique ones included) are maintained by ExecInsertIndexTuples.
 */
#include "apikeys.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "parser/parse_relation.h"
#include "rewrite/rewriteHandler.h"
#include "utils/acl.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "audit_chain.h"

#define AUDIT_NATTS 17			/* apikeys.audit's columns (30_audit.sql) */

/* Is apikeys.audit exactly the table this file writes, with nothing else watching inserts? */
static bool
direct_applies(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TriggerDesc *td = rel->trigdesc;
	Oid			chain_fn;
	bool		chained = false;

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relhasrules ||
		(rel->rd_rel->relrowsecurity && rel->rd_rel->relforcerowsecurity) ||
		desc->natts != AUDIT_NATTS ||
		(desc->constr && (desc->constr->num_check > 0 || desc->constr->has_generated_stored)) ||
		td == NULL)
		return false;
	for (int a = 0; a < desc->natts; a++)
		if (TupleDescAttr(desc, a)->attisdropped)
			return false;
	chain_fn = LookupFuncName(list_make2(makeString("apikeys_internal"), makeString("_audit_chain")),
							  0, NULL, true);
	for (int i = 0; i < td->numtriggers; i++)
	{
		Trigger    *t = &td->triggers[i];

		if (!TRIGGER_FOR_INSERT(t->tgtype))
			continue;
		if (chained || t->tgfoid != chain_fn || !OidIsValid(chain_fn) ||
			!TRIGGER_FOR_BEFORE(t->tgtype) || !TRIGGER_FOR_ROW(t->tgtype) ||
			t->tgenabled != TRIGGER_FIRES_ALWAYS)
			return false;
		chained = true;
	}
	return chained;
}

/*
 * Write n new audit rows: ncols columns named cols, values[c][r] and
 * nulls[c][r] for column c of row r, in row order (the order they are
 * numbered in their chains).  The columns not given are sealed
 * (audit_chain_seal) or take their default.  False when the direct path
 * does not apply: nothing was written, write them through SQL.  The caller
 * runs as a role that may write the audit (SECURITY DEFINER).
 */
bool
apikeys_audit_insert_direct(int n, int ncols, const char *const *cols,
							Datum *const *values, bool *const *nulls)
{
	Oid			nsp = get_namespace_oid("apikeys", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid("audit", nsp) : InvalidOid;
	Relation	rel;
	TupleDesc	desc;
	AuditLayout l;
	AttrNumber	given[AUDIT_NATTS]; /* column c's attribute number */
	ExprState  *defaults[AUDIT_NATTS];	/* by attribute; NULL: given or sealed */
	bool		has_default[AUDIT_NATTS];
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot **slots;
	Datum		vals[AUDIT_NATTS];
	bool		isnull[AUDIT_NATTS];

	Assert(n > 0 && ncols > 0 && ncols < AUDIT_NATTS);
	if (!OidIsValid(relid) || pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK)
		return false;
	rel = table_open(relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	if (!direct_applies(rel))
	{
		table_close(rel, NoLock);
		return false;
	}
	audit_layout(desc, &l);
	memset(has_default, true, sizeof(has_default));
	for (int c = 0; c < ncols; c++)
	{
		given[c] = attnameAttNum(rel, cols[c], false);
		if (given[c] <= 0 || given[c] == l.chain || given[c] == l.id || given[c] == l.at ||
			given[c] == l.prev || given[c] == l.hash)
			elog(ERROR, "apikeys: audit column \"%s\" cannot be written", cols[c]);
		has_default[given[c] - 1] = false;
	}
	has_default[l.chain - 1] = has_default[l.id - 1] = has_default[l.at - 1] =
		has_default[l.prev - 1] = has_default[l.hash - 1] = false;

	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	for (int a = 0; a < desc->natts; a++)
	{
		Node	   *expr = has_default[a] ? build_column_default(rel, a + 1) : NULL;

		defaults[a] = expr ? ExecPrepareExpr((Expr *) expr, estate) : NULL;
	}

	/* form and seal every row, in order */
	slots = palloc(sizeof(TupleTableSlot *) * n);
	for (int r = 0; r < n; r++)
	{
		memset(isnull, true, sizeof(isnull));
		memset(vals, 0, sizeof(vals));
		for (int c = 0; c < ncols; c++)
		{
			vals[given[c] - 1] = values[c][r];
			isnull[given[c] - 1] = nulls[c][r];
		}
		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (defaults[a] == NULL)
				continue;
			vals[a] = ExecEvalExprSwitchContext(defaults[a], GetPerTupleExprContext(estate), &isnull[a]);
			if (!isnull[a])
				vals[a] = datumCopy(vals[a], att->attbyval, att->attlen);
			ResetPerTupleExprContext(estate);
		}
		audit_chain_seal(rel, &l, vals, isnull);
		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (att->attnotnull && isnull[a])
				ereport(ERROR,
						(errcode(ERRCODE_NOT_NULL_VIOLATION),
						 errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
								NameStr(att->attname), RelationGetRelationName(rel)),
						 errtable(rel)));
		}
		slots[r] = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
		ExecStoreHeapTuple(heap_form_tuple(desc, vals, isnull), slots[r], true);
	}

	/* one multi-row heap insert, then each row's index entries */
	table_multi_insert(rel, slots, n, GetCurrentCommandId(true), 0, NULL);
	for (int r = 0; r < n; r++)
	{
		List	   *recheck;

#if PG_VERSION_NUM >= 160000
		recheck = ExecInsertIndexTuples(rri, slots[r], estate, false, false, NULL, NIL, false);
#else
		recheck = ExecInsertIndexTuples(rri, slots[r], estate, false, false, NULL, NIL);
#endif
		Assert(recheck == NIL);	/* no deferred constraint on the audit */
		(void) recheck;
		ResetPerTupleExprContext(estate);
		ExecDropSingleTupleTableSlot(slots[r]);
	}
	pfree(slots);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	/* later statements of the transaction see the rows, as after an INSERT */
	CommandCounterIncrement();
	return true;
}
