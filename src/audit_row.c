/*
 * audit_row.c - the audit rows of changes, written in C.
 *
 * apikeys_internal._audit_row_change() is the AFTER ROW trigger on tenant,
 * credential, secret, role_tenant, vault_secret and vault_service: for each
 * changed row it writes one row to apikeys.audit (action, tenant, key id and
 * a jsonb detail of the change) in the same transaction.  apikeys_internal._audit_write()
 * writes one audit row for SQL callers (vault_reveal, the purge anchor,
 * PostgREST refusals), and apikeys_internal._actor() / _request_id() give
 * the labels the rows carry.  All of them share the code below, so a
 * trigger's row and a written row are built the same way.
 *
 * This is the PL/pgSQL of apikeys 1.0 translated expression by expression
 * (the same jsonb operations, in the same order, with the same NULL rules),
 * so the rows are byte for byte what it wrote: docs/audit.md ("Writing a
 * row") says why it is in C.  The row is inserted through one plan kept
 * for the backend, so the chain trigger (audit_chain.c), the append-only
 * triggers and the constraints of apikeys.audit see it as any other insert.
 * Inside a management call the triggers' rows are held until it returns,
 * and a created key's first secret joins its key_created row
 * (audit_pending.c).
 */
#include "apikeys.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/tuplestore.h"
#include "utils/xid8.h"

#include "audit_detail.h"
#include "audit_pending.h"
#include "caller.h"
#include "tenant_context.h"

/* Labels longer than this many characters are ignored with a WARNING. */
#define LABEL_MAX_CHARS 200
/* Settings longer than this many bytes are not read at all. */
#define SETTING_MAX_BYTES 16384

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr key_tenant_plan = NULL;

/* ---------------------------------------------------------------- jsonb */

/* j -> key: the value as jsonb, or NULL when j is not an object or lacks key. */
static Jsonb *
jb_get(Jsonb *j, const char *key)
{
	JsonbValue	v;

	if (j == NULL || !JB_ROOT_IS_OBJECT(j) ||
		getKeyJsonValueFromContainer(&j->root, key, strlen(key), &v) == NULL)
		return NULL;
	return JsonbValueToJsonb(&v);
}

/* v as the text ->> gives: NULL for JSON null, strings unquoted. */
static char *
jbv_text(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return NULL;
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   PointerGetDatum(v->val.numeric)));
		case jbvBinary:
			{
				StringInfoData s;

				initStringInfo(&s);
				return JsonbToCString(&s, v->val.binary.data, v->val.binary.len);
			}
		default:
			elog(ERROR, "apikeys: unexpected jsonb value type %d", (int) v->type);
	}
	return NULL;				/* not reached */
}

/* j ->> key: NULL when j is not an object, lacks key, or holds JSON null. */
static char *
jb_get_text(Jsonb *j, const char *key)
{
	JsonbValue	v;

	if (j == NULL || !JB_ROOT_IS_OBJECT(j) ||
		getKeyJsonValueFromContainer(&j->root, key, strlen(key), &v) == NULL)
		return NULL;
	return jbv_text(&v);
}

/* a = b as SQL has it: NULL (-1) when either is NULL, else 1 or 0. */
static int
jb_eq(Jsonb *a, Jsonb *b)
{
	if (a == NULL || b == NULL)
		return -1;
	return compareJsonbContainers(&a->root, &b->root) == 0;
}

/*
 * Are two values of objects equal as jsonb = jsonb has them (scalars of one
 * type and value, numerics by value, containers by compareJsonbContainers)?
 * Comparing the values where they lie spares wrapping each one in a jsonb.
 */
static bool
jbv_equal(JsonbValue *a, JsonbValue *b)
{
	if (a->type == jbvBinary && b->type == jbvBinary)
		return compareJsonbContainers(a->val.binary.data, b->val.binary.data) == 0;
	if (a->type != b->type)
		return false;
	switch (a->type)
	{
		case jbvNull:
			return true;
		case jbvBool:
			return a->val.boolean == b->val.boolean;
		case jbvString:
			return a->val.string.len == b->val.string.len &&
				memcmp(a->val.string.val, b->val.string.val, a->val.string.len) == 0;
		case jbvNumeric:
			return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(a->val.numeric),
													 NumericGetDatum(b->val.numeric))) == 0;
		default:
			elog(ERROR, "apikeys: unexpected jsonb value type %d", (int) a->type);
	}
	return false;				/* not reached */
}

/* a <> b as SQL has it: true only when both are there and differ. */
static bool
jb_differ(Jsonb *a, Jsonb *b)
{
	return jb_eq(a, b) == 0;
}

/* a = b for two texts, SQL-style: -1 when either is NULL. */
static int
text_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return -1;
	return strcmp(a, b) == 0;
}

/* (s)::boolean IS TRUE, for the text of a jsonb boolean. */
static bool
text_true(const char *s)
{
	return s != NULL && DatumGetBool(DirectFunctionCall1(boolin, CStringGetDatum(s)));
}

/* to_jsonb(row): the same function SQL calls, told that its argument is a record. */
static Jsonb *
row_to_jsonb(HeapTuple tuple, TupleDesc desc)
{
	static FmgrInfo to_jsonb_info;
	static bool initialized = false;

	if (!initialized)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		fmgr_info_cxt(F_TO_JSONB, &to_jsonb_info, TopMemoryContext);
		/* to_jsonb(anyelement) asks its call expression for the argument's type */
		to_jsonb_info.fn_expr = (Node *)
			makeFuncExpr(F_TO_JSONB, JSONBOID,
						 list_make1(makeNullConst(RECORDOID, -1, InvalidOid)),
						 InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
		MemoryContextSwitchTo(old);
		initialized = true;
	}
	return DatumGetJsonbP(FunctionCall1(&to_jsonb_info, heap_copy_tuple_as_datum(tuple, desc)));
}

/*
 * j - keys (the jsonb - text[] operator).  When j holds none of them, j
 * itself: the operator would build the same value again.
 */
static Jsonb *
jb_minus(Jsonb *j, int nkeys, const char *const *keys)
{
	Datum		elems[3];
	bool		any = false;

	Assert(nkeys <= (int) lengthof(elems));
	for (int i = 0; i < nkeys && !any; i++)
	{
		JsonbValue	v;

		any = JB_ROOT_IS_OBJECT(j) &&
			getKeyJsonValueFromContainer(&j->root, keys[i], strlen(keys[i]), &v) != NULL;
	}
	if (!any)
		return j;
	for (int i = 0; i < nkeys; i++)
		elems[i] = CStringGetTextDatum(keys[i]);
	return DatumGetJsonbP(DirectFunctionCall2(jsonb_delete_array, JsonbPGetDatum(j),
											  PointerGetDatum(construct_array(elems, nkeys, TEXTOID, -1, false, TYPALIGN_INT))));
}

/* A JsonbValue that stands for the whole of j. */
static void
jbv_binary(Jsonb *j, JsonbValue *v)
{
	v->type = jbvBinary;
	v->val.binary.data = &j->root;
	v->val.binary.len = VARSIZE(j) - VARHDRSZ;
}

static void
jbv_key(const char *key, JsonbValue *v)
{
	v->type = jbvString;
	v->val.string.val = (char *) key;
	v->val.string.len = strlen(key);
}

/*
 * {k1: c1, k2: c2} for object containers c1 and c2 (len1, len2 bytes), k1
 * before k2 in jsonb's key order (shorter first, then bytewise): the bytes
 * convertToJsonb() would give (utils/jsonb.h), made by copying the two
 * containers under a new root instead of unpacking and packing them again.
 */
static Jsonb *
jb_pair(const char *k1, JsonbContainer *c1, uint32 len1, const char *k2, JsonbContainer *c2, uint32 len2)
{
	uint32		l1 = strlen(k1),
				l2 = strlen(k2);
	/* the varlena header, the root's header, its four JEntries, then the keys */
	uint32		data = VARHDRSZ + sizeof(uint32) + 4 * sizeof(JEntry);
	uint32		keys_end = data + l1 + l2;
	uint32		v1 = INTALIGN(keys_end);	/* a container starts int-aligned */
	uint32		v2 = INTALIGN(v1 + len1);
	uint32		total = v2 + len2;
	char	   *out = palloc0(total);
	JEntry	   *e = (JEntry *) (out + VARHDRSZ + sizeof(uint32));

	Assert(l1 < l2 || (l1 == l2 && memcmp(k1, k2, l1) < 0));
	Assert((c1->header & JB_FOBJECT) && (c2->header & JB_FOBJECT));
	SET_VARSIZE(out, total);
	*(uint32 *) (out + VARHDRSZ) = 2 | JB_FOBJECT;
	/* child 0 holds its end offset (as every JB_OFFSET_STRIDE'th), the others their lengths */
	e[0] = JENTRY_ISSTRING | JENTRY_HAS_OFF | l1;
	e[1] = JENTRY_ISSTRING | l2;
	/* a value's length counts the padding before it */
	e[2] = JENTRY_ISCONTAINER | (v1 + len1 - keys_end);
	e[3] = JENTRY_ISCONTAINER | (total - (v1 + len1));
	memcpy(out + data, k1, l1);
	memcpy(out + data + l1, k2, l2);
	memcpy(out + v1, c1, len1);
	memcpy(out + v2, c2, len2);
	return (Jsonb *) out;
}

/* {key: j}, as jsonb_build_object(key, j). */
static Jsonb *
jb_wrap(const char *key, Jsonb *j)
{
	JsonbParseState *st = NULL;
	JsonbValue	k,
				v;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jbv_key(key, &k);
	pushJsonbValue(&st, WJB_KEY, &k);
	jbv_binary(j, &v);
	pushJsonbValue(&st, WJB_VALUE, &v);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/*
 * What an update changed:
 *   jsonb_build_object('changed', coalesce(
 *       (SELECT jsonb_object_agg(e.key, jsonb_build_array(o -> e.key, e.value))
 *          FROM jsonb_each(n) e WHERE (o -> e.key) IS DISTINCT FROM e.value), '{}'))
 */
static Jsonb *
jb_changes(Jsonb *o, Jsonb *n)
{
	JsonbParseState *st = NULL;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	k,
				v;

	Assert(JB_ROOT_IS_OBJECT(o) && JB_ROOT_IS_OBJECT(n));
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jbv_key("changed", &k);
	pushJsonbValue(&st, WJB_KEY, &k);
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	it = JsonbIteratorInit(&n->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		JsonbValue	old;
		bool		had;

		if (tok != WJB_KEY)
			continue;			/* WJB_BEGIN_OBJECT, WJB_END_OBJECT */
		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);
		had = getKeyJsonValueFromContainer(&o->root, k.val.string.val, k.val.string.len, &old) != NULL;
		if (had && jbv_equal(&old, &v))
			continue;			/* not distinct */
		pushJsonbValue(&st, WJB_KEY, &k);
		pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
		if (!had)
			old.type = jbvNull;
		pushJsonbValue(&st, WJB_ELEM, &old);
		pushJsonbValue(&st, WJB_ELEM, &v);
		pushJsonbValue(&st, WJB_END_ARRAY, NULL);
	}
	pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* --------------------------------------------------------------- labels */

/* What parse_json_field is given and answers. */
typedef struct JsonField
{
	const char *value;
	const char *field;
	char	   *result;
} JsonField;

/* Parse j->value as jsonb and take its text field j->field (may raise). */
static void
parse_json_field(void *arg)
{
	JsonField  *j = (JsonField *) arg;
	Jsonb	   *doc = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(j->value)));
	char	   *s = jb_get_text(doc, j->field);

	j->result = (s != NULL && s[0] != '\0') ? s : NULL;
}

/*
 * Field `field` of the JSON object in setting `name` (1.0's apikeys._json_setting):
 * NULL when the setting is absent, empty, not valid JSON, not an object or
 * holding anything jsonb refuses; the parse runs in a subtransaction that
 * catches every error but a cancel (and an assertion failure), as
 * PL/pgSQL's WHEN OTHERS does.
 */
static char *
json_setting(const char *name, const char *field)
{
	JsonField	j = {apikeys_transaction_setting_value(name, SETTING_MAX_BYTES), field, NULL};
	ErrorData  *edata;

	if (j.value == NULL)
		return NULL;			/* the usual case: no subtransaction for nothing */
	edata = apikeys_subxact_run(parse_json_field, &j, true);
	if (edata == NULL)
		return j.result;
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		edata->sqlerrcode == ERRCODE_ASSERT_FAILURE)
		ReThrowError(edata);
	FreeErrorData(edata);
	return NULL;
}

/*
 * The actor (or, with request_id, the request id) of this transaction's
 * audit rows: the label set_tenant() or authenticate() bound; else
 * apikeys.actor / apikeys.request_id if set for this transaction; else
 * PostgREST's request.jwt.claims "sub" / request.headers "x-request-id".
 * Longer than 200 characters: NULL with a WARNING.  Never raises.
 */
static char *
audit_label(bool request_id)
{
	const char *bound = apikeys_context_label(request_id);
	char	   *v;

	if (bound != NULL)
		v = pstrdup(bound);
	else
	{
		v = apikeys_transaction_setting_value(request_id ? "apikeys.request_id" : "apikeys.actor",
											  SETTING_MAX_BYTES);
		if (v == NULL)
			v = request_id ? json_setting("request.headers", "x-request-id")
				: json_setting("request.jwt.claims", "sub");
	}
	if (v != NULL && pg_mbstrlen(v) > LABEL_MAX_CHARS)
	{
		ereport(WARNING,
				(errmsg("apikeys_setting_ignored: the %s is longer than %d characters",
						request_id ? "request id" : "actor", LABEL_MAX_CHARS)));
		return NULL;
	}
	return v;
}

/* apikeys_internal._actor(): the actor of this transaction's audit rows, or NULL. */
PG_FUNCTION_INFO_V1(apikeys_actor_1_1);
Datum
apikeys_actor_1_1(PG_FUNCTION_ARGS)
{
	char	   *v = audit_label(false);

	if (v == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(v));
}

/* apikeys_internal._request_id(): the request id of this transaction's audit rows, or NULL. */
PG_FUNCTION_INFO_V1(apikeys_request_id_1_1);
Datum
apikeys_request_id_1_1(PG_FUNCTION_ARGS)
{
	char	   *v = audit_label(true);

	if (v == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(v));
}

/* ---------------------------------------------------------------- write */

/* The columns written, in this order; the chain trigger adds the rest. */
static const Oid audit_types[AUDIT_NCOLS] = {
	TEXTOID, UUIDOID, TEXTOID, NAMEOID, NAMEOID, TEXTOID,
	TEXTOID, INETOID, TEXTOID, XID8OID, JSONBOID
};
#define AUDIT_COLUMNS "tenant, key_id, action, db_role, session_role, actor," \
	" request_id, client_addr, application_name, txid, detail"

/*
 * The actions of an inserted key and secret, named once: audit_change()
 * (one row) and inserted_change() (a statement's rows) write the same.
 */
static const char action_key_created[] = "key_created";
static const char action_secret_issued[] = "secret_issued";

/* What one change writes: an action, a tenant, a key id and a detail. */
typedef struct AuditChange
{
	const char *action;
	const char *tenant;			/* NULL: the chain of no tenant */
	Datum		key_id;			/* (Datum) 0: none */
	Jsonb	   *detail;
} AuditChange;

static Datum
text_or_null(const char *s, bool *null)
{
	*null = (s == NULL);
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

static Datum
name_datum(const char *s)
{
	Name		n = (Name) palloc0(NAMEDATALEN);

	namestrcpy(n, s);
	return NameGetDatum(n);
}

/*
 * The columns of one audit row: the change's (an action or detail that is
 * NULL makes the insert fail), then the ones apikeys 1.0's _audit_write()
 * took from the session, in its order (the labels' WARNINGs come actor
 * first): the acting role, session_user, the labels, inet_client_addr(),
 * application_name and the transaction's id.
 */
static void
audit_values(const AuditChange *c, Datum *values, bool *nulls)
{
	LOCAL_FCINFO(addr, 0);

	values[0] = text_or_null(c->tenant, &nulls[0]);
	values[1] = c->key_id;
	nulls[1] = (c->key_id == (Datum) 0);
	values[2] = text_or_null(c->action, &nulls[2]);
	values[3] = name_datum(GetUserNameFromId(apikeys_acting_role(), false));
	nulls[3] = false;
	values[4] = name_datum(GetUserNameFromId(GetSessionUserId(), false));
	nulls[4] = false;
	values[5] = text_or_null(audit_label(false), &nulls[5]);
	values[6] = text_or_null(audit_label(true), &nulls[6]);
	InitFunctionCallInfoData(*addr, NULL, 0, InvalidOid, NULL, NULL);
	values[7] = inet_client_addr(addr);
	nulls[7] = addr->isnull;
	values[8] = CStringGetTextDatum(GetConfigOptionByName("application_name", NULL, false));
	nulls[8] = false;
	values[9] = FullTransactionIdGetDatum(GetTopFullTransactionId());
	nulls[9] = false;
	values[10] = c->detail ? JsonbPGetDatum(c->detail) : (Datum) 0;
	nulls[10] = (c->detail == NULL);
}

/*
 * Write one audit row (its columns' values) through a plan kept for the
 * backend, after what is held.  The caller runs as the table's owner
 * (SECURITY DEFINER).
 */
static void
insert_values(const Datum *values, const bool *isnull)
{
	char		nulls[AUDIT_NCOLS];

	apikeys_audit_flush_held();
	for (int i = 0; i < AUDIT_NCOLS; i++)
		nulls[i] = isnull[i] ? 'n' : ' ';
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	apikeys_spi_run(&insert_plan,
					"INSERT INTO apikeys.audit (" AUDIT_COLUMNS ")"
					" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
					AUDIT_NCOLS, (Oid *) audit_types, (Datum *) values, nulls, SPI_OK_INSERT);
	SPI_finish();
}

/* Write the audit row of change c. */
static void
audit_insert(const AuditChange *c)
{
	Datum		values[AUDIT_NCOLS];
	bool		isnull[AUDIT_NCOLS];

	audit_values(c, values, isnull);
	insert_values(values, isnull);
}

/*
 * Audit rows of one statement, written set-based: a batch of rows is one
 * INSERT ... SELECT FROM unnest(one array per column), in the order the
 * rows were added, so the chain trigger numbers them as it would have
 * numbered them one by one.
 */
#define AUDIT_BATCH_ROWS 1000

typedef struct AuditBatch
{
	int			n;
	int			cap;			/* at most AUDIT_BATCH_ROWS */
	Datum	   *values[AUDIT_NCOLS];	/* [column][row] */
	bool	   *nulls[AUDIT_NCOLS];
	MemoryContext cxt;			/* the batch's values; reset when written */
} AuditBatch;

static SPIPlanPtr batch_plan = NULL;

/* An empty batch for count rows (at most AUDIT_BATCH_ROWS at a time). */
static void
batch_init(AuditBatch *b, int64 count)
{
	b->n = 0;
	b->cap = (int) Min(count, AUDIT_BATCH_ROWS);
	for (int i = 0; i < AUDIT_NCOLS; i++)
	{
		b->values[i] = palloc(sizeof(Datum) * b->cap);
		b->nulls[i] = palloc(sizeof(bool) * b->cap);
	}
	b->cxt = AllocSetContextCreate(CurrentMemoryContext, "apikeys audit batch",
								   ALLOCSET_DEFAULT_SIZES);
}

/* Write the batch's rows, after what is held. */
static void
batch_write(AuditBatch *b)
{
	Oid			array_types[AUDIT_NCOLS];
	Datum		arrays[AUDIT_NCOLS];
	int			dims[1] = {b->n};
	int			lbs[1] = {1};
	MemoryContext old;

	if (b->n == 0)
		return;
	apikeys_audit_flush_held();
	old = MemoryContextSwitchTo(b->cxt);
	for (int i = 0; i < AUDIT_NCOLS; i++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(audit_types[i], &typlen, &typbyval, &typalign);
		array_types[i] = get_array_type(audit_types[i]);
		arrays[i] = PointerGetDatum(construct_md_array(b->values[i], b->nulls[i], 1, dims, lbs,
													   audit_types[i], typlen, typbyval, typalign));
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	apikeys_spi_run(&batch_plan,
					"INSERT INTO apikeys.audit (" AUDIT_COLUMNS ")"
					" SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
					" pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
					" pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
					" pg_catalog.unnest($9), pg_catalog.unnest($10), pg_catalog.unnest($11))",
					AUDIT_NCOLS, array_types, arrays, NULL, SPI_OK_INSERT);
	Assert(SPI_processed == (uint64) b->n);
	SPI_finish();
	MemoryContextSwitchTo(old);
	MemoryContextReset(b->cxt);
	b->n = 0;
}

/* Add a row of values (kept by the caller until the batch is written). */
static void
batch_add_values(AuditBatch *b, const Datum *values, const bool *nulls)
{
	for (int i = 0; i < AUDIT_NCOLS; i++)
	{
		b->values[i][b->n] = values[i];
		b->nulls[i][b->n] = nulls[i];
	}
	if (++b->n == b->cap)
		batch_write(b);
}

/* Add the row of change c (its values built in the batch's memory). */
static void
batch_add(AuditBatch *b, const AuditChange *c)
{
	Datum		values[AUDIT_NCOLS];
	bool		nulls[AUDIT_NCOLS];

	audit_values(c, values, nulls);
	batch_add_values(b, values, nulls);
}

/* True while the held rows are written: what writes them must not wait for them. */
static bool flushing_held = false;

/*
 * Write every held key_created row (audit_pending.c), in the order held: a
 * row whose key's first secret joined it gets that secret's fields in its
 * detail ({"new": the key, "secret": the secret}).
 */
void
apikeys_audit_flush_held(void)
{
	HeldRows	held;

	if (flushing_held || audit_held_count() == 0)
		return;
	held = audit_take_held();
	flushing_held = true;
	PG_TRY();
	{
		AuditBatch	b;

		batch_init(&b, held.n);
		for (int i = 0; i < held.n; i++)
		{
			HeldRow    *r = &held.rows[i];
			/* built in the batch's memory, freed with each batch written */
			MemoryContext old = MemoryContextSwitchTo(b.cxt);

			Assert(!r->nulls[AUDIT_DETAIL_COL]);
			if (r->secret != NULL)
			{
				Jsonb	   *d = DatumGetJsonbP(r->values[AUDIT_DETAIL_COL]);
				JsonbValue	key;

				/* {"new": the key, "secret": the secret}: the key's object copied as it is */
				if (getKeyJsonValueFromContainer(&d->root, "new", 3, &key) == NULL || key.type != jbvBinary ||
					!JsonContainerIsObject(key.val.binary.data))
					elog(ERROR, "apikeys: a held key_created row without its key");
				r->values[AUDIT_DETAIL_COL] =
					JsonbPGetDatum(jb_pair("new", key.val.binary.data, key.val.binary.len,
										   "secret", &r->secret->root, VARSIZE(r->secret) - VARHDRSZ));
			}
			MemoryContextSwitchTo(old);
			if (held.n == 1)
				insert_values(r->values, r->nulls);
			else
				batch_add_values(&b, r->values, r->nulls);
		}
		batch_write(&b);
		MemoryContextDelete(b.cxt);
	}
	PG_FINALLY();
	{
		flushing_held = false;
	}
	PG_END_TRY();
	MemoryContextDelete(held.cxt);
}

/*
 * apikeys_internal._audit_write(p_action text, p_tenant text, p_key_id uuid,
 * p_detail jsonb): one audit row (SECURITY DEFINER).
 */
PG_FUNCTION_INFO_V1(apikeys_audit_write_1_1);
Datum
apikeys_audit_write_1_1(PG_FUNCTION_ARGS)
{
	AuditChange c;

	c.action = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	c.tenant = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	c.key_id = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	c.detail = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	audit_insert(&c);
	PG_RETURN_VOID();
}

/* -------------------------------------------------------------- trigger */

/*
 * The tenants of the keys of the secrets one INSERT statement added, read
 * with one query before their audit rows are built (audit_inserted), or
 * NULL.  Nothing changes credential while they are used: the audit rows
 * written meanwhile touch apikeys.audit only.
 */
typedef struct KeyTenant
{
	pg_uuid_t	key_id;			/* hash key */
	char	   *tenant;
} KeyTenant;

static SPIPlanPtr key_tenants_plan = NULL;

/*
 * The tenants of the keys in ids (a uuid[]), by key id.  Handed to the
 * lookups of one statement's rows only: a trigger on apikeys.audit that
 * inserts a secret while those rows are written finds its own key's tenant
 * (a table kept for the backend made that secret's key unknown: no row).
 */
static HTAB *
load_key_tenants(Datum ids)
{
	HTAB	   *key_tenants;
	HASHCTL		ctl;
	Oid			types[1] = {UUIDARRAYOID};
	Datum		values[1] = {ids};
	MemoryContext cxt = CurrentMemoryContext;

	ctl.keysize = sizeof(pg_uuid_t);
	ctl.entrysize = sizeof(KeyTenant);
	ctl.hcxt = cxt;
	key_tenants = hash_create("apikeys audit key tenants", 1024, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	apikeys_spi_run(&key_tenants_plan,
					"SELECT c.key_id, c.tenant FROM apikeys.credential c"
					" WHERE c.key_id OPERATOR(pg_catalog.=) ANY ($1)",
					1, types, values, NULL, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		k = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		char	   *t = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		KeyTenant  *e = hash_search(key_tenants, DatumGetUUIDP(k), HASH_ENTER, NULL);

		e->tenant = t ? MemoryContextStrdup(cxt, t) : NULL;
	}
	SPI_finish();
	return key_tenants;
}

/*
 * The tenant of key k (SELECT c.tenant FROM apikeys.credential c WHERE
 * c.key_id = k), from key_tenants when given (load_key_tenants); false if
 * there is no such key.
 */
static bool
key_tenant(Datum k, HTAB *key_tenants, char **tenant)
{
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {k};
	MemoryContext cxt = CurrentMemoryContext;
	bool		found;

	*tenant = NULL;
	if (k == (Datum) 0)
		return false;			/* key_id = NULL finds nothing */
	if (key_tenants != NULL)
	{
		KeyTenant  *e = hash_search(key_tenants, DatumGetUUIDP(k), HASH_FIND, NULL);

		*tenant = e ? pstrdup(e->tenant) : NULL;
		return e != NULL;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	apikeys_spi_run(&key_tenant_plan,
					"SELECT c.tenant FROM apikeys.credential c WHERE c.key_id OPERATOR(pg_catalog.=) $1",
					1, types, values, NULL, SPI_OK_SELECT);
	found = SPI_processed > 0;
	if (found)
	{
		char	   *t = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		*tenant = t ? MemoryContextStrdup(cxt, t) : NULL;
	}
	SPI_finish();
	return found;
}

/* Columns never in a detail: a digest, a vault ciphertext, a master-key fingerprint. */
static const char *const hidden[] = {"digest", "ciphertext", "key_fp"};

/*
 * The audit row of one change to a row of table (desc its columns): ins,
 * upd or del, old (not for an insert) and new (not for a delete) the row's
 * versions.  False when the change writes no row: a secret gone with its
 * key, a vault secret's last_used_at.  A digest, a vault ciphertext or a
 * master-key fingerprint never goes into the detail (a fingerprint lets a
 * reader test guesses of the master key offline).
 */
static bool
audit_change(const char *table, TupleDesc desc, bool ins, bool del,
			 HeapTuple oldtup, HeapTuple newtup, AuditChange *c)
{
	bool		upd = !ins && !del;
	Jsonb	   *fo = NULL,		/* to_jsonb(OLD), to_jsonb(NEW) */
			   *fn = NULL,
			   *o = NULL,		/* the same without the hidden fields */
			   *n = NULL,
			   *r;
	char	   *kt;
	const char *act;

	c->key_id = (Datum) 0;
	if (!ins)
	{
		fo = row_to_jsonb(oldtup, desc);
		o = jb_minus(fo, lengthof(hidden), hidden);
	}
	if (!del)
	{
		fn = row_to_jsonb(newtup, desc);
		n = jb_minus(fn, lengthof(hidden), hidden);
	}
	r = n ? n : o;
	c->tenant = jb_get_text(r, "tenant");
	kt = jb_get_text(r, "key_id");
	if (kt != NULL)
		c->key_id = DirectFunctionCall1(uuid_in, CStringGetDatum(kt));

	if (strcmp(table, "tenant") == 0)
		act = ins ? "tenant_created" : del ? "tenant_deleted"
			: jb_eq(jb_get(o, "active"), jb_get(n, "active")) == 1 ? "tenant_updated"
			: text_true(jb_get_text(n, "active")) ? "tenant_activated"
			: "tenant_deactivated";
	else if (strcmp(table, "credential") == 0)
	{
		if (ins)
			act = action_key_created;
		else if (del)
			act = "key_deleted";
		else
		{
			char	   *ns = jb_get_text(n, "status");

			if (text_eq(jb_get_text(o, "status"), ns) == 0)
				act = text_eq(ns, "revoked") == 1 ? "key_revoked"
					: text_eq(ns, "disabled") == 1 ? "key_disabled" : "key_enabled";
			else if (jb_differ(jb_get(o, "rotation_count"), jb_get(n, "rotation_count")))
				act = "key_rotated";
			else
				act = "key_updated";
		}
	}
	else if (strcmp(table, "secret") == 0)
	{
		char	   *t;

		if (!key_tenant(c->key_id, NULL, &t))
			return false;		/* removed with its key: key_deleted says it */
		c->tenant = t;
		act = ins ? action_secret_issued : del ? "secret_retired" : "secret_grace_set";
	}
	else if (strcmp(table, "vault_secret") == 0)
	{
		static const char *const used[] = {"last_used_at"};
		char	   *id = jb_get_text(r, "id");	/* the vault secret's id */

		c->key_id = id ? DirectFunctionCall1(uuid_in, CStringGetDatum(id)) : (Datum) 0;
		if (upd && jb_eq(jb_minus(fo, 1, used), jb_minus(fn, 1, used)) == 1)
			return false;		/* only last_used_at: vault_reveal writes its row */
		act = ins ? "vault_secret_added" : del ? "vault_secret_deleted"
			: jb_differ(jb_get(o, "active"), jb_get(n, "active"))
			? (text_true(jb_get_text(n, "active")) ? "vault_secret_activated" : "vault_secret_deactivated")
			: jb_differ(jb_get(fo, "key_fp"), jb_get(fn, "key_fp")) ? "vault_secret_reencrypted"
			: "vault_secret_updated";
	}
	else if (strcmp(table, "vault_service") == 0)
		act = ins ? "vault_service_registered" : del ? "vault_service_unregistered"
			: "vault_service_updated";
	else if (strcmp(table, "scope") == 0)
		act = ins ? "scope_defined" : del ? "scope_dropped" : "scope_updated";
	else
		act = ins ? "role_granted" : del ? "role_revoked" : "role_updated";

	c->action = act;
	c->detail = upd ? jb_changes(o, n) : ins ? jb_wrap("new", n) : jb_wrap("old", o);
	return true;
}

/*
 * The audit row of a credential or secret one INSERT statement added, as
 * audit_change() makes it for an insert, its detail built by plan (made for
 * the table's columns with the hidden ones left out), a secret's tenant
 * from key_tenants when given.  False for a secret whose key is gone.
 */
static bool
inserted_change(DetailPlan *plan, bool secret, HeapTuple tuple, HTAB *key_tenants, AuditChange *c)
{
	char	   *tenant;

	c->detail = audit_detail_new(plan, tuple, &tenant, &c->key_id);
	c->tenant = tenant;
	c->action = secret ? action_secret_issued : action_key_created;
	return !secret || key_tenant(c->key_id, key_tenants, (char **) &c->tenant);
}

/*
 * Hold (audit_pending.c) the row of change c, made inside a management call:
 * created says it is a key_created row its key's first secret may join.
 * False (write it now) outside a management call.
 */
static bool
hold_change(const AuditChange *c, bool created)
{
	Datum		values[AUDIT_NCOLS];
	bool		nulls[AUDIT_NCOLS];

	if (!apikeys_in_entry_point() || flushing_held)
		return false;
	if (audit_held_count() >= AUDIT_HOLD_MAX)
		apikeys_audit_flush_held();		/* memory stays bounded */
	audit_values(c, values, nulls);
	audit_hold(created && c->key_id != (Datum) 0 && c->detail != NULL ? DatumGetUUIDP(c->key_id) : NULL,
			   audit_types, values, nulls);
	return true;
}

/*
 * Join the secret row tuple to its key's held key_created row: true when it
 * did (the secret then writes no row of its own).
 */
static bool
join_secret(DetailPlan *plan, HeapTuple tuple)
{
	char	   *tenant;
	Datum		key_id;
	Jsonb	   *detail = audit_detail_new(plan, tuple, &tenant, &key_id);

	return key_id != (Datum) 0 && audit_join_secret(DatumGetUUIDP(key_id), jb_get(detail, "new"));
}

/*
 * The audit rows of the rows one INSERT statement added (its transition
 * table, in the order they were added): one row alone as the row trigger
 * writes it, more in batches.  Inside a management call the rows are
 * held instead (audit_pending.c), and a secret of a key whose key_created
 * row is held joins it (the first secret of each key); the other secrets'
 * keys' tenants are read at once.  Only credential and secret have this
 * trigger.
 */
static void
audit_inserted(TriggerData *td)
{
	Tuplestorestate *rows = td->tg_newtable;
	int64		count = tuplestore_tuple_count(rows);
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	const char *table = RelationGetRelationName(td->tg_relation);
	bool		secret = strcmp(table, "secret") == 0;
	DetailPlan *plan;
	TupleTableSlot *slot;
	AuditBatch	b;
	int			ptr;

	if (!secret && strcmp(table, "credential") != 0)
		elog(ERROR, "apikeys_audit_row_change: no statement trigger is made for apikeys.%s", table);
	if (count == 0)
		return;
	plan = audit_detail_plan(desc, lengthof(hidden), hidden);
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	/* a read pointer of our own (other triggers may read the same table), rewound */
	ptr = tuplestore_alloc_read_pointer(rows, EXEC_FLAG_REWIND);
	tuplestore_select_read_pointer(rows, ptr);
	tuplestore_rescan(rows);
	if (count == 1)
	{
		bool		should_free;
		AuditChange c;
		HeapTuple	tuple;

		if (!tuplestore_gettupleslot(rows, true, false, slot))
			elog(ERROR, "apikeys: transition table row missing");
		tuple = ExecFetchSlotHeapTuple(slot, false, &should_free);
		if (!(secret && audit_held_count() > 0 && join_secret(plan, tuple)) &&
			inserted_change(plan, secret, tuple, NULL, &c) && !hold_change(&c, !secret))
			audit_insert(&c);
	}
	else
	{
		bool	   *joined = secret ? palloc0(sizeof(bool) * count) : NULL;

		batch_init(&b, count);
		{
			int64		row = 0;
			HTAB	   *tenants = NULL;	/* of the secrets' keys, read at once */

			if (secret)
			{
				/* join what can be joined; read the tenants of the others' keys at once */
				Datum	   *ids = palloc(sizeof(Datum) * count);
				pg_uuid_t  *copies = palloc(sizeof(pg_uuid_t) * count);
				int			n = 0;
				AttrNumber	att = audit_detail_key_id_attnum(plan);

				for (row = 0; tuplestore_gettupleslot(rows, true, false, slot); row++)
				{
					MemoryContext old = MemoryContextSwitchTo(b.cxt);
					bool		isnull;
					bool		should_free;
					Datum		k = att != InvalidAttrNumber ? slot_getattr(slot, att, &isnull) : (Datum) 0;

					if (att == InvalidAttrNumber)
						isnull = true;
					joined[row] = !isnull && audit_held_unjoined(DatumGetUUIDP(k)) &&
						join_secret(plan, ExecFetchSlotHeapTuple(slot, false, &should_free));
					MemoryContextSwitchTo(old);
					MemoryContextReset(b.cxt);
					if (isnull || joined[row])
						continue;
					copies[n] = *DatumGetUUIDP(k);
					ids[n] = UUIDPGetDatum(&copies[n]);
					n++;
				}
				if (n > 0)
					tenants = load_key_tenants(PointerGetDatum(construct_array(ids, n, UUIDOID, UUID_LEN,
																			   false, TYPALIGN_CHAR)));
				tuplestore_rescan(rows);
			}
			for (row = 0; tuplestore_gettupleslot(rows, true, false, slot); row++)
			{
				MemoryContext old;
				bool		should_free;
				AuditChange c;

				CHECK_FOR_INTERRUPTS();
				if (secret && joined[row])
					continue;
				old = MemoryContextSwitchTo(b.cxt);
				if (inserted_change(plan, secret, ExecFetchSlotHeapTuple(slot, false, &should_free), tenants, &c) &&
					!hold_change(&c, !secret))
					batch_add(&b, &c);
				MemoryContextSwitchTo(old);
				if (b.n == 0)
					MemoryContextReset(b.cxt);	/* nothing of it is batched */
			}
			batch_write(&b);	/* outside a management call (nothing held) */
		}
		MemoryContextDelete(b.cxt);
	}
	tuplestore_select_read_pointer(rows, 0);	/* the default one */
	ExecDropSingleTupleTableSlot(slot);
}

/*
 * The audit trigger of tenant, credential, secret, role_tenant,
 * vault_secret and vault_service: AFTER UPDATE OR DELETE FOR EACH ROW,
 * one audit row per changed row; and AFTER INSERT FOR EACH STATEMENT with
 * the statement's new rows as a transition table, one audit row per added
 * row, set-based (the same rows as the row trigger wrote for each: only
 * the way they reach the table differs).  Rows restored by pg_restore pass
 * (their history is in the restored audit).
 */
PG_FUNCTION_INFO_V1(apikeys_audit_row_change_1_1);
Datum
apikeys_audit_row_change_1_1(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	AuditChange c;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event))
		elog(ERROR, "apikeys_audit_row_change: must be an AFTER trigger");
	if (apikeys_is_bulk_loading())
		return PointerGetDatum(NULL);	/* pg_restore: their history is in the restored audit */

	if (TRIGGER_FIRED_FOR_STATEMENT(td->tg_event))
	{
		if (!TRIGGER_FIRED_BY_INSERT(td->tg_event) || td->tg_newtable == NULL)
			elog(ERROR, "apikeys_audit_row_change: a statement trigger must be AFTER INSERT REFERENCING NEW TABLE");
		audit_inserted(td);
		return PointerGetDatum(NULL);
	}
	if (audit_change(RelationGetRelationName(td->tg_relation), RelationGetDescr(td->tg_relation),
					 TRIGGER_FIRED_BY_INSERT(td->tg_event), TRIGGER_FIRED_BY_DELETE(td->tg_event),
					 td->tg_trigtuple,
					 TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple,
					 &c) &&
		!hold_change(&c, false))
		audit_insert(&c);
	return PointerGetDatum(NULL);
}
