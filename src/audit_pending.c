/*
 * audit_pending.c - the audit rows of a management call, held until it
 * returns; a key's first secret joins its key_created row.
 *
 * Inside a management call (an entry point, caller.c) the audit triggers do
 * not write their rows at once but hold them here, each as it would have
 * been written.  audit_row.c writes what is held, in the order held, when
 * the entry point returns, before any row written directly (_audit_write),
 * and whenever more than AUDIT_HOLD_MAX rows would be held.  So the chain's
 * lock (audit_chain.c), which a transaction holds from its first row to its
 * commit, is taken at the end of the call rather than at its first change,
 * and another writer of the same tenant waits that much less.
 *
 * A key is made by two inserts: its credential row, then its first secret.
 * The secret's insert joins its fields (never the digest) to the held
 * key_created row instead of holding a secret_issued row of its own, so a
 * created key costs one audit row, not two.  Only rows held since the last
 * row of another kind can be joined, so a joined row says nothing the rows
 * after it do not already imply.
 *
 * A subtransaction that aborts takes its rows with it: what it held is
 * dropped and the secrets it joined are taken off again.  A row written in
 * a subtransaction younger than the one that held it (a trigger called a
 * management function inside an exception block, and that call wrote what
 * was held when it returned) would be rolled back without its change if
 * that subtransaction aborts: a copy is kept, and goes back to the store
 * then.  A transaction that would commit or prepare with a row still held
 * fails: no change can commit without its audit row.
 */
#include "apikeys.h"

#include "access/xact.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "audit_pending.h"

/* The held row of one key, by key id. */
typedef struct HeldKey
{
	pg_uuid_t	key_id;			/* hash key */
	int			index;			/* into held_rows */
} HeldKey;

static MemoryContext held_cxt = NULL;	/* under TopTransactionContext */
static HTAB *held_keys = NULL;
static HeldRow *held_rows = NULL;
static int	held_n = 0;
static int	held_cap = 0;

static const Oid *held_types = NULL;	/* the columns' types (audit_row.c's) */

/*
 * Copies of the rows written inside a subtransaction younger than the one
 * that held them, and that writer: if it aborts, the rows go back to the
 * store (pending_subxact_callback).  Kept for the transaction.
 */
typedef struct LateRow
{
	HeldRow		row;
	SubTransactionId written;
} LateRow;

static MemoryContext late_cxt = NULL;	/* under TopTransactionContext */
static LateRow *late = NULL;
static int	late_n = 0;
static int	late_cap = 0;

/* Forget the store (its memory is freed with its context, by the caller or the transaction). */
static void
held_forget(void)
{
	held_cxt = NULL;
	held_keys = NULL;
	held_rows = NULL;
	held_n = held_cap = 0;
}

/*
 * Transaction end.  Committing (or preparing) with a row held would commit
 * a key without its audit row: refuse.  Otherwise the store goes with the
 * transaction's memory.
 */
static void
pending_xact_callback(XactEvent event, void *arg)
{
	if ((event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PRE_PREPARE) && held_n > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("audit_rows_lost: changes of this transaction would commit without their audit rows"),
				 errdetail("%d audit row(s) were held and never written.", held_n)));
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		held_forget();
		late_cxt = NULL;
		late = NULL;
		late_n = late_cap = 0;
	}
}

/* A copy of row r in cxt, its values and secret included. */
static void
copy_row(HeldRow *to, const HeldRow *r, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);

	*to = *r;
	for (int i = 0; i < AUDIT_NCOLS; i++)
	{
		int16		typlen;
		bool		typbyval;

		if (r->nulls[i])
			continue;
		get_typlenbyval(held_types[i], &typlen, &typbyval);
		to->values[i] = datumCopy(r->values[i], typbyval, typlen);
	}
	if (r->secret != NULL)
	{
		to->secret = palloc(VARSIZE(r->secret));
		memcpy(to->secret, r->secret, VARSIZE(r->secret));
	}
	MemoryContextSwitchTo(old);
}

/* The store's memory, made when first needed. */
static void
held_ensure(void)
{
	if (held_cxt == NULL)
		held_cxt = AllocSetContextCreate(TopTransactionContext, "apikeys held audit rows",
										 ALLOCSET_DEFAULT_SIZES);
}

/*
 * A subtransaction's abort.  Rows it (or a subtransaction of it) held are a
 * tail of the store, since subtransaction ids only grow: drop them, and take
 * off the secrets it joined to older rows.  Rows it wrote that older ones
 * held (their changes stay) are rolled back with it: they go back to the
 * store, ahead of what it holds, to be written again.
 */
static void
pending_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	int			restored = 0;
	int			kept = 0;

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	while (held_n > 0 && held_rows[held_n - 1].made >= mySubid)
	{
		HeldRow    *r = &held_rows[held_n - 1];

		if (r->joinable && held_keys != NULL)
			hash_search(held_keys, &r->key_id, HASH_REMOVE, NULL);
		r->secret = NULL;
		held_n--;
	}
	for (int i = 0; i < late_n; i++)
		restored += late[i].written >= mySubid && late[i].row.made < mySubid;
	if (restored > 0)
	{
		HeldRow    *rows;
		int			n = 0;

		held_ensure();
		rows = MemoryContextAlloc(held_cxt, sizeof(HeldRow) * (restored + held_n + 1));
		for (int i = 0; i < late_n; i++)
		{
			if (late[i].written >= mySubid && late[i].row.made < mySubid)
			{
				rows[n] = late[i].row;	/* its memory is late_cxt's, kept to the end */
				rows[n].joinable = false;
				n++;
			}
		}
		Assert(n == restored);
		for (int i = 0; i < held_n; i++)
			rows[n++] = held_rows[i];
		held_rows = rows;
		held_n = held_cap = n;
		/* the rows moved: nothing held before now is joined any more */
		if (held_keys != NULL)
		{
			hash_destroy(held_keys);
			held_keys = NULL;
		}
		for (int i = 0; i < held_n; i++)
			held_rows[i].joinable = false;
	}
	/* what it wrote is settled now: written again, or gone with its change */
	for (int i = 0; i < late_n; i++)
	{
		if (late[i].written < mySubid)
			late[kept++] = late[i];
	}
	late_n = kept;
	for (int i = 0; i < held_n; i++)
	{
		if (held_rows[i].secret != NULL && held_rows[i].joined >= mySubid)
		{
			held_rows[i].secret = NULL;
			held_rows[i].joined = InvalidSubTransactionId;
		}
	}
}

void
apikeys_audit_pending_init(void)
{
	RegisterXactCallback(pending_xact_callback, NULL);
	RegisterSubXactCallback(pending_subxact_callback, NULL);
}

void
audit_hold(const pg_uuid_t *key_id, const Oid *types, const Datum *values, const bool *nulls)
{
	MemoryContext old;
	HeldKey    *k;
	HeldRow    *r;
	bool		found;

	held_ensure();
	held_types = types;
	if (key_id == NULL && held_keys != NULL)
	{
		/* a row of another kind: what was held before it can no longer be joined */
		hash_destroy(held_keys);
		held_keys = NULL;
	}
	if (key_id != NULL && held_keys == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(pg_uuid_t);
		ctl.entrysize = sizeof(HeldKey);
		ctl.hcxt = held_cxt;
		held_keys = hash_create("apikeys held audit keys", 1024, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	old = MemoryContextSwitchTo(held_cxt);
	if (held_n == held_cap)
	{
		held_cap = held_cap == 0 ? 64 : held_cap * 2;
		held_rows = held_rows == NULL ? palloc(sizeof(HeldRow) * held_cap)
			: repalloc_huge(held_rows, sizeof(HeldRow) * held_cap);
	}
	r = &held_rows[held_n];
	for (int i = 0; i < AUDIT_NCOLS; i++)
	{
		int16		typlen;
		bool		typbyval;

		r->nulls[i] = nulls[i];
		if (nulls[i])
		{
			r->values[i] = (Datum) 0;
			continue;
		}
		get_typlenbyval(types[i], &typlen, &typbyval);
		r->values[i] = datumCopy(values[i], typbyval, typlen);
	}
	r->joinable = key_id != NULL;
	if (key_id != NULL)
		r->key_id = *key_id;
	r->secret = NULL;
	r->made = GetCurrentSubTransactionId();
	r->joined = InvalidSubTransactionId;
	if (key_id != NULL)
	{
		k = hash_search(held_keys, key_id, HASH_ENTER, &found);
		/* key ids are unique: a second creation of one key in a call is a bug */
		if (found)
			elog(ERROR, "apikeys: the creation of one key was audited twice");
		k->index = held_n;
	}
	held_n++;
	MemoryContextSwitchTo(old);
	Assert(held_n <= held_cap);
}

bool
audit_held_unjoined(const pg_uuid_t *key_id)
{
	HeldKey    *k;

	if (held_n == 0 || held_keys == NULL)
		return false;
	k = hash_search(held_keys, key_id, HASH_FIND, NULL);
	return k != NULL && held_rows[k->index].secret == NULL;
}

bool
audit_join_secret(const pg_uuid_t *key_id, Jsonb *secret)
{
	HeldKey    *k;
	HeldRow    *r;

	if (held_n == 0 || held_keys == NULL)
		return false;
	k = hash_search(held_keys, key_id, HASH_FIND, NULL);
	if (k == NULL)
		return false;
	Assert(k->index < held_n);
	r = &held_rows[k->index];
	if (r->secret != NULL)
		return false;			/* a second secret has a row of its own */
	r->secret = (Jsonb *) MemoryContextAlloc(held_cxt, VARSIZE(secret));
	memcpy(r->secret, secret, VARSIZE(secret));
	r->joined = GetCurrentSubTransactionId();
	return true;
}

int
audit_held_count(void)
{
	return held_n;
}

HeldRows
audit_take_held(void)
{
	HeldRows	taken = {held_n, held_rows, held_cxt};
	SubTransactionId now = GetCurrentSubTransactionId();
	SubTransactionId oldest = now;

	for (int i = 0; i < held_n; i++)
		oldest = Min(oldest, held_rows[i].made);
	if (oldest < now)
	{
		/* written younger than held: keep a copy (pending_subxact_callback) */
		if (late_cxt == NULL)
			late_cxt = AllocSetContextCreate(TopTransactionContext, "apikeys audit rows written late",
											 ALLOCSET_DEFAULT_SIZES);
		for (int i = 0; i < held_n; i++)
		{
			if (held_rows[i].made >= now)
				continue;
			if (late_n == late_cap)
			{
				late_cap = late_cap == 0 ? 64 : late_cap * 2;
				late = late == NULL ? MemoryContextAlloc(late_cxt, sizeof(LateRow) * late_cap)
					: repalloc_huge(late, sizeof(LateRow) * late_cap);
			}
			copy_row(&late[late_n].row, &held_rows[i], late_cxt);
			late[late_n].written = now;
			late_n++;
		}
	}
	held_forget();
	return taken;
}
