/*
 * trigger_guard.c - notice changes to key data that apikeys_internal._changed()
 * does not see, so they still retire the shared policy cache.
 *
 * The cache trusts the ALWAYS triggers on apikeys.tenant, credential and
 * secret (changes.c).  A superuser can write past them: ALTER TABLE ...
 * DISABLE TRIGGER (USER, ALL or by name), ENABLE TRIGGER USER/ALL (which
 * leaves them origin-only: silent under session_replication_role =
 * replica), DROP TRIGGER; then UPDATE, DELETE, MERGE, INSERT, COPY FROM or
 * TRUNCATE.  Two hooks mark such a transaction as changing "everything"
 * (apikeys_changes_note_all), so its end retires every cached policy by the
 * trigger path's own protocol:
 *
 *   ExecutorStart   a plan with result relations that writes one of the
 *                   three tables while its _changed row trigger would not
 *                   fire for INSERT, UPDATE and DELETE (relcache trigdesc;
 *                   the same rule as trigger.c's TriggerEnabled).  Plans
 *                   without result relations (apikey_verify, every read)
 *                   return after one pointer test; writes compare OIDs.
 *                   A write to a system catalog (UPDATE pg_class by hand)
 *                   counts as changing everything.
 *   ProcessUtility  TRUNCATE of one of them; any ALTER TABLE of one (ENABLE/
 *                   DISABLE TRIGGER, or ALTER COLUMN ... TYPE ... USING,
 *                   which rewrites its rows past every trigger and the
 *                   executor), CREATE TRIGGER and DROP TRIGGER on one (the
 *                   simple safe rule: whatever the triggers missed while
 *                   they were changed, e.g. logical replication's apply
 *                   worker, which runs no executor hooks, is retired when
 *                   they are changed back, and a WARNING says so when they
 *                   are left not ALWAYS); COPY FROM into one while the
 *                   trigger would not fire; and any other statement after
 *                   which a table's name leads to another table or its rows
 *                   live in another file (a TRUNCATE through a parent it was
 *                   made to inherit from, a rename and a new table in its
 *                   place, VACUUM FULL): the statements above are only the
 *                   ways known to reach them, this is the net under them.
 *                   ATTACH PARTITION of one of them is refused.
 *
 * The OIDs of the tables and of apikeys_internal._changed are looked up (never
 * raising: the library may be preloaded in databases without the
 * extension) once and forgotten on a relcache invalidation of a table or
 * any change to pg_namespace or pg_proc.
 *
 * Without shared memory (not preloaded) there is no cache: both hooks only
 * chain.
 */
#include "inval_stamps.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "commands/extension.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "parser/parsetree.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#define N_KEY_RELS 3

static const char *const key_rel_names[N_KEY_RELS] = {"tenant", "credential", "secret"};

/* What the hooks compare against, per backend. */
typedef struct GuardCatalog
{
	bool		valid;			/* else look up again before use */
	Oid			rels[N_KEY_RELS];	/* InvalidOid: no such table */
	Oid			changed_fn;		/* apikeys_internal._changed(), or InvalidOid */
} GuardCatalog;

static GuardCatalog guard;

static ExecutorStart_hook_type prev_executor_start = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;

/* Relcache invalidation: forget the OIDs when one of our tables changes. */
static void
guard_relcache_invalidate(Datum arg, Oid relid)
{
	if (!guard.valid)
		return;
	if (relid == InvalidOid)
		guard.valid = false;
	for (int i = 0; i < N_KEY_RELS; i++)
		if (relid == guard.rels[i])
			guard.valid = false;
}

/* pg_namespace or pg_proc changed: the schema or the function may be new. */
static void
guard_syscache_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	guard.valid = false;
}

/* Is fn still the C function apikeys_changed of this library? */
static bool
changed_fn_is_ours(Oid fn)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	bool		ours = false;

	if (HeapTupleIsValid(tup))
	{
		Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(tup);
		bool		isnull;
		Datum		src = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosrc, &isnull);

		ours = proc->prolang == ClanguageId && !isnull &&
			strcmp(TextDatumGetCString(src), "apikeys_changed") == 0;
		ReleaseSysCache(tup);
	}
	return ours;
}

/*
 * The OIDs, looked up when not known.  Kept only when complete (or when the
 * schema is absent, which a pg_namespace invalidation ends), so a database
 * in the middle of CREATE EXTENSION is asked again at the next write.
 */
static const GuardCatalog *
guard_catalog(void)
{
	Oid			nsp;
	bool		complete = true;

	if (guard.valid)
		return &guard;

	memset(&guard, 0, sizeof(guard));
	nsp = get_namespace_oid(APIKEYS_SCHEMA, true);
	if (OidIsValid(nsp))
	{
		for (int i = 0; i < N_KEY_RELS; i++)
		{
			guard.rels[i] = get_relname_relid(key_rel_names[i], nsp);
			complete &= OidIsValid(guard.rels[i]);
		}
		guard.changed_fn = apikeys_helper_oid("_changed", 0, NULL);
		complete &= OidIsValid(guard.changed_fn);
		/*
		 * Only our C function counts: a superuser's CREATE OR REPLACE keeps
		 * the OID with another body, and the triggers would fire for nothing.
		 */
		if (OidIsValid(guard.changed_fn) && !changed_fn_is_ours(guard.changed_fn))
			guard.changed_fn = InvalidOid;
	}
	guard.valid = complete;
	return &guard;
}

/* Is relid apikeys.tenant, credential or secret? */
static inline bool
is_key_rel(const GuardCatalog *cat, Oid relid)
{
	if (!OidIsValid(relid))
		return false;
	for (int i = 0; i < N_KEY_RELS; i++)
		if (relid == cat->rels[i])
			return true;
	return false;
}

/* The OID of a name if it is one of our tables (resolved as the command will), else InvalidOid. */
static Oid
key_rangevar(RangeVar *rv)
{
	const GuardCatalog *cat = guard_catalog();
	Oid			relid = RangeVarGetRelid(rv, NoLock, true);

	return is_key_rel(cat, relid) ? relid : InvalidOid;
}

/*
 * An ALTER TABLE of a table that has one of ours among its inheritors (a
 * parent someone attached it to) recurses into it: the key table it
 * reaches, else InvalidOid.
 */
static Oid
key_rel_below(RangeVar *rv)
{
	const GuardCatalog *cat = guard_catalog();
	Oid			relid = RangeVarGetRelid(rv, NoLock, true);
	List	   *below;
	ListCell   *lc;
	Oid			found = InvalidOid;

	if (!OidIsValid(relid) || !rv->inh || !has_subclass(relid))
		return InvalidOid;
	below = find_all_inheritors(relid, NoLock, NULL);
	foreach(lc, below)
		if (is_key_rel(cat, lfirst_oid(lc)))
			found = lfirst_oid(lc);
	list_free(below);
	return found;
}

/*
 * Would trigger t fire now (trigger.c's TriggerEnabled rule), or, with
 * always_only, in every session and in logical replication's apply worker?
 */
static inline bool
trigger_fires_now(const Trigger *t, bool always_only)
{
	if (always_only)
		return t->tgenabled == TRIGGER_FIRES_ALWAYS;
	if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
		return t->tgenabled == TRIGGER_FIRES_ALWAYS ||
			t->tgenabled == TRIGGER_FIRES_ON_REPLICA;
	return t->tgenabled == TRIGGER_FIRES_ALWAYS ||
		t->tgenabled == TRIGGER_FIRES_ON_ORIGIN;
}

/*
 * Would apikeys_internal._changed() see every row written to rel now: an enabled
 * row trigger (no WHEN, no column list) for each of INSERT, UPDATE and
 * DELETE?  An INSERT ... ON CONFLICT and a MERGE need more than one event,
 * so all three are asked of every write.  always_only: see trigger_fires_now;
 * then the statement trigger for TRUNCATE is asked too.
 */
static bool
changes_tracked(Relation rel, Oid changed_fn, bool always_only)
{
	TriggerDesc *td = rel->trigdesc;
	int16		seen = 0;
	const int16 all = TRIGGER_TYPE_INSERT | TRIGGER_TYPE_UPDATE | TRIGGER_TYPE_DELETE;

	if (td == NULL || !OidIsValid(changed_fn))
		return false;
	for (int i = 0; i < td->numtriggers; i++)
	{
		const Trigger *t = &td->triggers[i];

		if (t->tgfoid != changed_fn || t->tgqual != NULL || t->tgnattr != 0 ||
			!trigger_fires_now(t, always_only))
			continue;
		if (TRIGGER_FOR_ROW(t->tgtype))
			seen |= t->tgtype & all;
		else
			seen |= t->tgtype & TRIGGER_TYPE_TRUNCATE;
	}
	/* the apply worker also replicates TRUNCATE, which fires statement triggers */
	return always_only ? seen == (all | TRIGGER_TYPE_TRUNCATE) : (seen & all) == all;
}

/*
 * Check a write plan's result relations (the executor holds their locks).
 * A write to a system catalog (a superuser's UPDATE pg_class, which can
 * point a table at another file or another name without any DDL) retires
 * everything too.
 */
static void
check_write_plan(PlannedStmt *stmt)
{
	const GuardCatalog *cat = guard_catalog();
	ListCell   *lc;

	foreach(lc, stmt->resultRelations)
	{
		RangeTblEntry *rte = rt_fetch(lfirst_int(lc), stmt->rtable);
		Relation	rel;
		bool		tracked;

		if (IsCatalogRelationOid(rte->relid))
		{
			apikeys_changes_note_all();
			return;
		}
		if (!is_key_rel(cat, rte->relid))
			continue;
		rel = relation_open(rte->relid, NoLock);
		tracked = changes_tracked(rel, cat->changed_fn, false);
		relation_close(rel, NoLock);
		if (!tracked)
		{
			apikeys_changes_note_all();
			return;
		}
	}
}

/* ExecutorStart: chain, then look at plans that write. */
static void
guard_executor_start(QueryDesc *queryDesc, int eflags)
{
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);

	/* reads, apikey_verify among them, stop at the first test */
	if (queryDesc->plannedstmt->resultRelations == NIL ||
		(eflags & EXEC_FLAG_EXPLAIN_ONLY) || !apikeys_shmem_ready())
		return;
	check_write_plan(queryDesc->plannedstmt);
}

/* Does an ALTER TABLE change whether triggers fire? */
static bool
alters_triggers(AlterTableStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		switch (cmd->subtype)
		{
			case AT_EnableTrig:
			case AT_EnableAlwaysTrig:
			case AT_EnableReplicaTrig:
			case AT_DisableTrig:
			case AT_EnableTrigAll:
			case AT_DisableTrigAll:
			case AT_EnableTrigUser:
			case AT_DisableTrigUser:
				return true;
			default:
				break;
		}
	}
	return false;
}

/*
 * Utility statements that change our tables or their triggers, before they
 * run: the table concerned (the first one for TRUNCATE), else InvalidOid.
 * *trigger_ddl: it changes triggers (to check them afterwards).
 */
static Oid
utility_key_rel(Node *parsetree, bool *trigger_ddl)
{
	ListCell   *lc;
	Oid			relid;

	*trigger_ddl = true;
	switch (nodeTag(parsetree))
	{
		case T_TruncateStmt:
			*trigger_ddl = false;
			foreach(lc, ((TruncateStmt *) parsetree)->relations)
				if (OidIsValid(relid = key_rangevar(lfirst_node(RangeVar, lc))))
					return relid;
			return InvalidOid;
		case T_AlterTableStmt:
			{
				AlterTableStmt *stmt = (AlterTableStmt *) parsetree;

				/*
				 * every ALTER TABLE: besides trigger changes, a column's
				 * TYPE ... USING (or a DROP and ADD of a column) rewrites
				 * the rows with no trigger and no executor
				 */
				*trigger_ddl = alters_triggers(stmt);
				if (OidIsValid(relid = key_rangevar(stmt->relation)))
					return relid;
				return key_rel_below(stmt->relation);
			}
		case T_CreateTrigStmt:
			return key_rangevar(((CreateTrigStmt *) parsetree)->relation);
		case T_DropStmt:
			{
				DropStmt   *stmt = (DropStmt *) parsetree;

				if (stmt->removeType != OBJECT_TRIGGER)
					return InvalidOid;
				/* each object: the table's qualified name, then the trigger's */
				foreach(lc, stmt->objects)
				{
					List	   *names = lfirst_node(List, lc);

					if (list_length(names) >= 2 &&
						OidIsValid(relid = key_rangevar(makeRangeVarFromNameList(list_copy_head(names,
																								 list_length(names) - 1)))))
						return relid;
				}
				return InvalidOid;
			}
		default:
			return InvalidOid;
	}
}

/*
 * After trigger DDL on one of our tables: warn when its changes are no
 * longer seen everywhere.  This library notices SQL writes past the
 * triggers, but not logical replication's apply worker (no executor hooks),
 * which only ALWAYS triggers see.  Not during CREATE EXTENSION, whose script
 * enables them one by one.
 */
static void
warn_if_not_always(Oid relid)
{
	Relation	rel;
	bool		tracked;
	char	   *relname;

	if (creating_extension)
		return;
	CommandCounterIncrement();	/* see the DDL's own catalog change */
	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		return;
	tracked = changes_tracked(rel, guard_catalog()->changed_fn, true);
	relname = pstrdup(RelationGetRelationName(rel));
	relation_close(rel, AccessShareLock);
	if (!tracked)
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("cache_triggers_not_always: the policy cache trigger of apikeys.%s is not ENABLE ALWAYS",
						relname),
				 errdetail("Writes by SQL still retire the policy cache; changes applied by logical replication do not until the trigger is restored."),
				 errhint("ALTER TABLE apikeys.%s ENABLE ALWAYS TRIGGER policy_cache_%s_row; ALTER TABLE apikeys.%s ENABLE ALWAYS TRIGGER policy_cache_%s;",
						 relname, relname, relname, relname)));
}

/* After a COPY FROM: did it write one of our tables past the trigger? */
static bool
copy_missed_trigger(CopyStmt *stmt)
{
	const GuardCatalog *cat;
	Oid			relid;
	Relation	rel;
	bool		tracked;

	if (!stmt->is_from || stmt->relation == NULL)
		return false;
	cat = guard_catalog();
	relid = RangeVarGetRelid(stmt->relation, NoLock, true);
	if (!is_key_rel(cat, relid))
		return false;
	/* COPY FROM holds RowExclusiveLock: no ALTER TABLE in between */
	rel = relation_open(relid, AccessShareLock);
	tracked = changes_tracked(rel, cat->changed_fn, false);
	relation_close(rel, AccessShareLock);
	return !tracked;
}

/* What the name of each of our tables stands for: its OID and its file. */
typedef struct KeyRelIdentity
{
	Oid			relid[N_KEY_RELS];	/* InvalidOid: no such table */
	Oid			filenode[N_KEY_RELS];
} KeyRelIdentity;

/* The identity of our tables now (syscache lookups; never raises). */
static void
key_rel_identity(KeyRelIdentity *id)
{
	Oid			nsp = get_namespace_oid(APIKEYS_SCHEMA, true);

	for (int i = 0; i < N_KEY_RELS; i++)
	{
		HeapTuple	tup;

		id->relid[i] = OidIsValid(nsp) ? get_relname_relid(key_rel_names[i], nsp) : InvalidOid;
		id->filenode[i] = InvalidOid;
		if (!OidIsValid(id->relid[i]))
			continue;
		tup = SearchSysCache1(RELOID, ObjectIdGetDatum(id->relid[i]));
		if (HeapTupleIsValid(tup))
		{
			id->filenode[i] = ((Form_pg_class) GETSTRUCT(tup))->relfilenode;
			ReleaseSysCache(tup);
		}
	}
}

/*
 * Statements that cannot replace or rewrite a table, asked about often
 * (every transaction has two; poolers and drivers send SET and SHOW): not
 * watched by the identity check.
 */
static bool
never_rewrites(Node *parsetree)
{
	switch (nodeTag(parsetree))
	{
		case T_TransactionStmt:
		case T_VariableSetStmt:
		case T_VariableShowStmt:
		case T_DiscardStmt:
		case T_ListenStmt:
		case T_UnlistenStmt:
		case T_NotifyStmt:
		case T_DeallocateStmt:
		case T_PrepareStmt:
			return true;
		default:
			return false;
	}
}

/*
 * ALTER TABLE ... ATTACH PARTITION of one of our tables: refused.  Rows
 * inserted through the partitioned parent would be routed into it with
 * none of its statement triggers (the audit of inserts) firing, and the
 * parent's plans do not name it.
 */
static void
refuse_key_partition(Node *parsetree)
{
	ListCell   *lc;

	if (!IsA(parsetree, AlterTableStmt))
		return;
	foreach(lc, ((AlterTableStmt *) parsetree)->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);
		Oid			relid;

		if (cmd->subtype != AT_AttachPartition)
			continue;
		relid = key_rangevar(((PartitionCmd *) cmd->def)->name);
		if (OidIsValid(relid))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("key_table_partition: apikeys.%s cannot become a partition", get_rel_name(relid)),
					 errdetail("Rows routed into it through a partitioned table would not be audited.")));
	}
}

/* ProcessUtility: mark before the statements above, check them after. */
static void
guard_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					  ProcessUtilityContext context, ParamListInfo params,
					  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	bool		watch = apikeys_shmem_ready() && IsTransactionState();
	bool		trigger_ddl = false;
	Oid			relid = InvalidOid;
	bool		check_identity = watch && !never_rewrites(parsetree);
	KeyRelIdentity before;

	if (watch)
		refuse_key_partition(parsetree);
	if (watch && OidIsValid(relid = utility_key_rel(parsetree, &trigger_ddl)))
		apikeys_changes_note_all();
	if (check_identity)
		key_rel_identity(&before);

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);

	if (OidIsValid(relid) && trigger_ddl)
		warn_if_not_always(relid);
	if (watch && IsA(parsetree, CopyStmt) && copy_missed_trigger((CopyStmt *) parsetree))
		apikeys_changes_note_all();
	/* a statement that ended the transaction (VACUUM, CALL) has its own */
	if (check_identity && IsTransactionState())
	{
		KeyRelIdentity after;

		key_rel_identity(&after);
		if (memcmp(&before, &after, sizeof(before)) != 0)
			apikeys_changes_note_all();
	}
}

/* _PG_init: install both hooks (chained) and the invalidation callbacks. */
void
apikeys_trigger_guard_init(void)
{
	CacheRegisterRelcacheCallback(guard_relcache_invalidate, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, guard_syscache_invalidate, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, guard_syscache_invalidate, (Datum) 0);

	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = guard_executor_start;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = guard_process_utility;
}
