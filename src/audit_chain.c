/*
 * audit_chain.c - one hash chain per tenant in apikeys.audit.
 *
 * Rows of tenant t form the chain t; rows of no tenant form the chain ''.
 * A BEFORE INSERT trigger numbers each new row within its chain (audit_id
 * 1, 2, 3, ...), links it to the previous row's hash and hashes it.  The
 * design and its reasons are in docs/audit.md.
 *
 * Writers of one chain follow each other: the first row a transaction
 * writes to a chain takes the chain's lock (an advisory lock tag with
 * field4 of ours, which no SQL function can produce, so no role can take
 * or wait on it: private_lock.c) and holds it to the end of the transaction.
 * Writers of different chains never wait for each other.  Once the lock is
 * granted every earlier writer of the chain has committed or aborted, and
 * the head read with the latest snapshot sees them whatever the isolation
 * level.  The head is then kept in this transaction's memory: later rows of
 * the chain, in this statement or the next, cost neither a lock nor a scan.
 * A subtransaction that aborts takes its rows (and perhaps the lock) with
 * it, so every remembered head is forgotten then and read again.
 *
 * The hash covers every column but row_hash, each length-prefixed in a
 * fixed order, timestamps as microseconds: no two rows share an encoding.
 */
#include "apikeys.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_opfamily.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"
#include "utils/xid8.h"

#include "tenant_context.h"

#define AUDIT_HASH_TAG "apikeys-audit-2"
#define CHAIN_MAX (NAMEDATALEN + 16)	/* tenant ids are at most 63 bytes */

/* The columns the hash covers, in the order it covers them. */
static const char *const hashed_columns[] = {
	"chain", "audit_id", "at", "tenant", "key_id", "action", "outcome",
	"db_role", "session_role", "actor", "request_id", "client_addr",
	"application_name", "txid", "detail", "prev_hash"
};
#define N_HASHED lengthof(hashed_columns)

/* A chain this transaction holds the lock of, and its head. */
typedef struct ChainHead
{
	char		chain[CHAIN_MAX];	/* hash key */
	int64		last_id;		/* 0: empty chain */
	uint8		last_hash[APIKEYS_DIGEST_LEN];
} ChainHead;

static HTAB *heads = NULL;		/* in TopTransactionContext, or NULL */

/* Forget every remembered head (transaction end, subtransaction abort). */
static void
forget_heads(void)
{
	heads = NULL;				/* its memory goes with TopTransactionContext */
}

static void
audit_chain_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		forget_heads();
}

static void
audit_chain_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && heads != NULL)
	{
		hash_destroy(heads);
		heads = NULL;
	}
}

void
apikeys_audit_chain_init(void)
{
	RegisterXactCallback(audit_chain_xact_callback, NULL);
	RegisterSubXactCallback(audit_chain_subxact_callback, NULL);
}

/* Attribute number of column name in desc; ERROR if it is missing. */
static AttrNumber
audit_attnum(TupleDesc desc, const char *name)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return i + 1;
	}
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("extension_damaged: apikeys.audit has no column %s", name),
			 errhint("Reinstall the extension or finish its upgrade: ALTER EXTENSION apikeys UPDATE.")));
	return InvalidAttrNumber;	/* not reached */
}

static void
append_u32(StringInfo buf, uint32 v)
{
	unsigned char b[4] = {v >> 24, v >> 16, v >> 8, v};

	appendBinaryStringInfo(buf, (char *) b, 4);
}

static void
append_field(StringInfo buf, const void *data, uint32 len)
{
	append_u32(buf, len);
	appendBinaryStringInfo(buf, data, len);
}

static void
append_int64(StringInfo buf, uint64 v)
{
	unsigned char b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char) (v >> (56 - 8 * i));
	append_field(buf, b, 8);
}

/* One column's bytes: fixed-width types as big-endian integers, the rest as text. */
static void
append_value(StringInfo buf, Oid typid, Datum value, bool isnull)
{
	if (isnull)
	{
		append_u32(buf, 0xFFFFFFFF);
		return;
	}
	switch (typid)
	{
		case INT8OID:
			append_int64(buf, (uint64) DatumGetInt64(value));
			break;
		case TIMESTAMPTZOID:
			append_int64(buf, (uint64) DatumGetTimestampTz(value));
			break;
		case XID8OID:
			append_int64(buf, U64FromFullTransactionId(DatumGetFullTransactionId(value)));
			break;
		case UUIDOID:
			append_field(buf, DatumGetUUIDP(value)->data, UUID_LEN);
			break;
		case NAMEOID:
			append_field(buf, NameStr(*DatumGetName(value)), strlen(NameStr(*DatumGetName(value))));
			break;
		case TEXTOID:
		case BYTEAOID:
			{
				struct varlena *v = PG_DETOAST_DATUM_PACKED(value);

				append_field(buf, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
				break;
			}
		case JSONBOID:
			{
				/* its text form (canonical), as jsonb_out writes it */
				Jsonb	   *j = DatumGetJsonbP(value);
				char	   *s = JsonbToCString(NULL, &j->root, VARSIZE(j));

				append_field(buf, s, strlen(s));
				pfree(s);
				break;
			}
		case INETOID:
			{
				char	   *s = DatumGetCString(DirectFunctionCall1(inet_out, value));

				append_field(buf, s, strlen(s));
				pfree(s);
				break;
			}
		default:
			{
				/* any other type: its text form */
				Oid			out;
				bool		varlena;
				char	   *s;

				getTypeOutputInfo(typid, &out, &varlena);
				s = OidOutputFunctionCall(out, value);
				append_field(buf, s, strlen(s));
				pfree(s);
			}
	}
}

/* Where the columns are in a version of apikeys.audit. */
typedef struct AuditLayout
{
	AttrNumber	hashed[N_HASHED];	/* in hashed_columns order */
	AttrNumber	chain,
				id,
				at,
				prev,
				hash,
				tenant;
} AuditLayout;

/*
 * Attribute number of column name, which must be of type typid: the chain
 * trigger forms and reads these columns as that type (a superuser's ALTER
 * COLUMN ... TYPE made it read a bigint as a bytea pointer).
 */
static AttrNumber
audit_typed_attnum(TupleDesc desc, const char *name, Oid typid)
{
	AttrNumber	att = audit_attnum(desc, name);

	if (TupleDescAttr(desc, att - 1)->atttypid != typid)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension_damaged: apikeys.audit.%s is of type %s, not %s", name,
						format_type_be(TupleDescAttr(desc, att - 1)->atttypid), format_type_be(typid)),
				 errhint("Reinstall the extension: DROP EXTENSION apikeys; CREATE EXTENSION apikeys;")));
	return att;
}

static void
audit_layout(TupleDesc desc, AuditLayout *l)
{
	for (int i = 0; i < (int) N_HASHED; i++)
		l->hashed[i] = audit_attnum(desc, hashed_columns[i]);
	l->chain = audit_typed_attnum(desc, "chain", TEXTOID);
	l->id = audit_typed_attnum(desc, "audit_id", INT8OID);
	l->at = audit_typed_attnum(desc, "at", TIMESTAMPTZOID);
	l->prev = audit_typed_attnum(desc, "prev_hash", BYTEAOID);
	l->hash = audit_typed_attnum(desc, "row_hash", BYTEAOID);
	l->tenant = audit_typed_attnum(desc, "tenant", TEXTOID);
}

/* row_hash of an audit row (its columns deformed): SHA-256 of the tag and the hashed columns. */
static void
audit_values_hash(TupleDesc desc, const AuditLayout *l, Datum *values, bool *nulls,
				  uint8 out[APIKEYS_DIGEST_LEN])
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, AUDIT_HASH_TAG);
	for (int i = 0; i < (int) N_HASHED; i++)
	{
		AttrNumber	att = l->hashed[i];

		append_value(&buf, TupleDescAttr(desc, att - 1)->atttypid, values[att - 1], nulls[att - 1]);
	}
	apikeys_sha256(buf.data, buf.len, out);
	pfree(buf.data);
}

/* What the chain's lock is the lock of (private_lock.c hashes it). */
static void
chain_lock_name(StringInfo buf, const char *chain)
{
	initStringInfo(buf);
	appendBinaryStringInfo(buf, "apikeys.audit.chain", sizeof("apikeys.audit.chain"));
	appendStringInfoString(buf, chain);
}

/* Take the chain's lock: held to the end of the transaction. */
static void
lock_chain(const char *chain)
{
	StringInfoData buf;

	chain_lock_name(&buf, chain);
	apikeys_private_lock(APIKEYS_LOCK_AUDIT_CHAIN, buf.data, buf.len);
	pfree(buf.data);
}

PG_FUNCTION_INFO_V1(apikeys_audit_chain_try_lock);

/*
 * apikeys_internal._audit_chain_try_lock(chain text) RETURNS boolean: take
 * the chain's lock without waiting (held to commit); false when another
 * transaction holds it.  audit_purge() writes to every chain in one
 * transaction: waiting for one chain's writer while holding the chains
 * already purged would make every tenant before it wait for that writer.
 */
Datum
apikeys_audit_chain_try_lock(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	bool		got;

	chain_lock_name(&buf, text_to_cstring(PG_GETARG_TEXT_PP(0)));
	got = apikeys_private_lock_nowait(APIKEYS_LOCK_AUDIT_CHAIN, buf.data, buf.len, ExclusiveLock);
	pfree(buf.data);
	PG_RETURN_BOOL(got);
}

/*
 * The newest row of chain in rel, read with the latest snapshot through the
 * primary key (chain, audit_id); last_id 0 when the chain is empty.  The
 * caller holds the chain's lock.
 */
static void
read_head(Relation rel, const char *chain, ChainHead *head)
{
	/* the table's own primary key, not an index found by name */
	Oid			indexid = PRIMARY_KEY_INDEX_COMPAT(rel);
	Relation	index;
	Snapshot	snapshot;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData key;
	TupleDesc	desc = RelationGetDescr(rel);
	AuditLayout l;
	bool		usable;

	head->last_id = 0;
	memset(head->last_hash, 0, APIKEYS_DIGEST_LEN);
	audit_layout(desc, &l);
	index = OidIsValid(indexid) ? index_open(indexid, AccessShareLock) : NULL;
	/*
	 * A btree on exactly (chain COLLATE "C", audit_id) with the default
	 * operator classes' families (text_ops, integer_ops: fixed OIDs, so no
	 * catalog scan per row): the scan below assumes it (another collation
	 * orders the chains otherwise, and the newest row of one could be
	 * missed).
	 */
	usable = index != NULL && index->rd_rel->relam == BTREE_AM_OID &&
		index->rd_index->indnkeyatts == 2 &&
		index->rd_index->indkey.values[0] == l.chain &&
		index->rd_index->indkey.values[1] == l.id &&
		index->rd_indcollation[0] == C_COLLATION_OID &&
		index->rd_opfamily[0] == TEXT_BTREE_FAM_OID &&
		index->rd_opfamily[1] == INTEGER_BTREE_FAM_OID &&
		heap_attisnull(index->rd_indextuple, Anum_pg_index_indexprs, NULL) &&
		heap_attisnull(index->rd_indextuple, Anum_pg_index_indpred, NULL);
	if (!usable)
	{
		if (index != NULL)
			index_close(index, AccessShareLock);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension_damaged: the primary key of apikeys.audit is not a btree on (chain COLLATE \"C\", audit_id)"),
				 errhint("Reinstall the extension: DROP EXTENSION apikeys; CREATE EXTENSION apikeys;")));
	}
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	slot = table_slot_create(rel, NULL);
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(chain));
	key.sk_collation = C_COLLATION_OID;
	scan = INDEX_BEGINSCAN_COMPAT(rel, index, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	if (index_getnext_slot(scan, BackwardScanDirection, slot))
	{
		bool		id_null,
					hash_null;
		Datum		id = slot_getattr(slot, l.id, &id_null);
		Datum		hash = slot_getattr(slot, l.hash, &hash_null);

		/* a NULL (a superuser dropped NOT NULL) links like a wrong hash: audit_check() reports it */
		head->last_id = id_null ? 0 : DatumGetInt64(id);
		if (!hash_null)
		{
			bytea	   *h = DatumGetByteaPP(hash);

			if (VARSIZE_ANY_EXHDR(h) == APIKEYS_DIGEST_LEN)
				memcpy(head->last_hash, VARDATA_ANY(h), APIKEYS_DIGEST_LEN);
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snapshot);
	index_close(index, AccessShareLock);
}

/* The head of chain, locked and remembered for the rest of the transaction. */
static ChainHead *
chain_head(Relation rel, const char *chain)
{
	ChainHead  *head;
	bool		found;

	if (strlen(chain) >= CHAIN_MAX)
		elog(ERROR, "apikeys: audit chain name too long");
	if (heads == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = CHAIN_MAX;
		ctl.entrysize = sizeof(ChainHead);
		ctl.hcxt = TopTransactionContext;
		heads = hash_create("apikeys audit chain heads", 16, &ctl,
							HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	head = hash_search(heads, chain, HASH_FIND, NULL);
	if (head != NULL)
		return head;

	lock_chain(chain);
	head = hash_search(heads, chain, HASH_ENTER, &found);
	Assert(!found);
	read_head(rel, chain, head);
	return head;
}

/*
 * BEFORE INSERT ON apikeys.audit: chain, number, link and hash the row.
 * Restored rows (pg_restore) keep the fields they carry.
 */
PG_FUNCTION_INFO_V1(apikeys_audit_chain_trigger);
Datum
apikeys_audit_chain_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	tup;
	AuditLayout *l;
	Datum	   *values;
	bool	   *nulls;
	char	   *chain;
	ChainHead  *head;
	bytea	   *prev;
	bytea	   *hash;
	uint8		digest[APIKEYS_DIGEST_LEN];

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event))
		elog(ERROR, "apikeys_audit_chain_trigger: must be a BEFORE INSERT row trigger");
	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	tup = td->tg_trigtuple;

	/* the layout, found once per statement (the table cannot change under it) */
	l = (AuditLayout *) fcinfo->flinfo->fn_extra;
	if (l == NULL)
	{
		l = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(AuditLayout));
		audit_layout(desc, l);
		fcinfo->flinfo->fn_extra = l;
	}

	if (!heap_attisnull(tup, l->hash, desc) && apikeys_is_bulk_loading())
		return PointerGetDatum(tup);	/* pg_restore: history as it was */

	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(tup, desc, values, nulls);

	chain = nulls[l->tenant - 1] ? pstrdup("") : TextDatumGetCString(values[l->tenant - 1]);
	head = chain_head(rel, chain);

	prev = palloc(VARHDRSZ + APIKEYS_DIGEST_LEN);
	SET_VARSIZE(prev, VARHDRSZ + APIKEYS_DIGEST_LEN);
	memcpy(VARDATA(prev), head->last_hash, APIKEYS_DIGEST_LEN);

	values[l->chain - 1] = CStringGetTextDatum(chain);
	nulls[l->chain - 1] = false;
	values[l->id - 1] = Int64GetDatum(head->last_id + 1);
	nulls[l->id - 1] = false;
	values[l->at - 1] = TimestampTzGetDatum(GetCurrentTimestamp());
	nulls[l->at - 1] = false;
	values[l->prev - 1] = PointerGetDatum(prev);
	nulls[l->prev - 1] = false;

	audit_values_hash(desc, l, values, nulls, digest);
	hash = palloc(VARHDRSZ + APIKEYS_DIGEST_LEN);
	SET_VARSIZE(hash, VARHDRSZ + APIKEYS_DIGEST_LEN);
	memcpy(VARDATA(hash), digest, APIKEYS_DIGEST_LEN);
	values[l->hash - 1] = PointerGetDatum(hash);
	nulls[l->hash - 1] = false;

	/* formed once, keeping the identity fields of the tuple the executor gave */
	tup = heap_form_tuple(desc, values, nulls);
	tup->t_data->t_ctid = td->tg_trigtuple->t_data->t_ctid;
	tup->t_self = td->tg_trigtuple->t_self;
	tup->t_tableOid = td->tg_trigtuple->t_tableOid;

	head->last_id++;
	memcpy(head->last_hash, digest, APIKEYS_DIGEST_LEN);
	Assert(head->last_id > 0);
	return PointerGetDatum(tup);
}

/* apikeys_internal._audit_hash(a apikeys.audit) RETURNS bytea: what row_hash must be. */
PG_FUNCTION_INFO_V1(apikeys_audit_hash);
Datum
apikeys_audit_hash(PG_FUNCTION_ARGS)
{
	HeapTupleHeader rec = PG_GETARG_HEAPTUPLEHEADER(0);
	TupleDesc	desc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(rec),
											  HeapTupleHeaderGetTypMod(rec));
	HeapTupleData tup;
	uint8		digest[APIKEYS_DIGEST_LEN];
	bytea	   *result;

	AuditLayout l;
	Datum	   *values = palloc(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc(sizeof(bool) * desc->natts);

	tup.t_len = HeapTupleHeaderGetDatumLength(rec);
	ItemPointerSetInvalid(&tup.t_self);
	tup.t_tableOid = InvalidOid;
	tup.t_data = rec;
	audit_layout(desc, &l);
	heap_deform_tuple(&tup, desc, values, nulls);
	audit_values_hash(desc, &l, values, nulls, digest);
	ReleaseTupleDesc(desc);

	result = palloc(VARHDRSZ + APIKEYS_DIGEST_LEN);
	SET_VARSIZE(result, VARHDRSZ + APIKEYS_DIGEST_LEN);
	memcpy(VARDATA(result), digest, APIKEYS_DIGEST_LEN);
	PG_RETURN_BYTEA_P(result);
}
