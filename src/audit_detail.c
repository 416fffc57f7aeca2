/*
 * audit_detail.c - the audit detail of inserted rows, built in one pass.
 *
 * The detail of an inserted credential or secret is
 * jsonb_build_object('new', to_jsonb(NEW) - hidden columns), as apikeys 1.0
 * wrote it.  Building that literally converts every column, sorts the keys,
 * builds the row's jsonb, then builds it twice more (without the hidden
 * columns, then wrapped): most of the cost of auditing a bulk insert.
 * Here a plan made once per statement knows each column's name, its place
 * in jsonb's key order and how to_jsonb converts its type, and each row is
 * pushed once into the wrapped object.  The values are to_jsonb's own:
 * booleans, integers (as numeric_in reads their text), date/time values
 * (JsonEncodeDateTime), jsonb (its tokens), text-like types (their output
 * function) and one-dimensional text arrays are converted the way to_jsonb
 * converts them; every other type, and any array that is not an empty or
 * one-dimensional text array, goes through to_jsonb itself.  The same
 * jsonb results, so the same text and the same chain hash
 * (sql/audit_detail_bulk.sql compares them with to_jsonb's for every row).
 */
#include "apikeys.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "nodes/makefuncs.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/uuid.h"

#include "audit_detail.h"

/* How one column's value becomes jsonb (to_jsonb's categories, in part). */
typedef enum DetailKind
{
	DETAIL_BOOL,				/* true / false */
	DETAIL_INTEGER,				/* int2, int4, int8: a number */
	DETAIL_DATETIME,			/* date, timestamp, timestamptz: JsonEncodeDateTime */
	DETAIL_JSONB,				/* the value itself */
	DETAIL_STRING,				/* the output function's text */
	DETAIL_ARRAY,				/* [] or text elements, else as DETAIL_OTHER */
	DETAIL_OTHER				/* to_jsonb(value) */
} DetailKind;

typedef struct DetailColumn
{
	int			index;			/* in the tuple's values, from 0 */
	const char *name;
	int			name_len;
	DetailKind	kind;
	Oid			typid;
	FmgrInfo	out;			/* DETAIL_INTEGER, DETAIL_STRING */
	FmgrInfo	to_jsonb;		/* DETAIL_ARRAY, DETAIL_OTHER */
} DetailColumn;

struct DetailPlan
{
	TupleDesc	desc;
	int			ncols;
	DetailColumn *cols;			/* in jsonb's key order */
	int			tenant_index;	/* -1: no text column "tenant" */
	int			key_id_index;	/* -1: no uuid column "key_id" */
	Datum	   *values;			/* one row, deformed */
	bool	   *nulls;
};

/* jsonb's key order: shorter first, then bytewise (lengthCompareJsonbStringValue). */
static int
key_order(const void *a, const void *b)
{
	const DetailColumn *x = a;
	const DetailColumn *y = b;

	if (x->name_len != y->name_len)
		return x->name_len < y->name_len ? -1 : 1;
	return memcmp(x->name, y->name, x->name_len);
}

/* The kind of a column of type typid. */
static DetailKind
detail_kind(Oid typid)
{
	switch (typid)
	{
		case BOOLOID:
			return DETAIL_BOOL;
		case INT2OID:
		case INT4OID:
		case INT8OID:
			return DETAIL_INTEGER;
		case DATEOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return DETAIL_DATETIME;
		case JSONBOID:
			return DETAIL_JSONB;
		case TEXTOID:
		case VARCHAROID:
		case NAMEOID:
		case UUIDOID:
		case INTERVALOID:
		case INETOID:
		case CIDROID:
		case BYTEAOID:
			return DETAIL_STRING;
		default:
			return OidIsValid(get_element_type(typid)) ? DETAIL_ARRAY : DETAIL_OTHER;
	}
}

/* to_jsonb(anyelement), told that its argument is of type typid. */
static void
to_jsonb_for(Oid typid, int32 typmod, Oid collation, FmgrInfo *f)
{
	fmgr_info(F_TO_JSONB, f);
	f->fn_expr = (Node *) makeFuncExpr(F_TO_JSONB, JSONBOID,
									   list_make1(makeNullConst(typid, typmod, collation)),
									   InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
}

DetailPlan *
audit_detail_plan(TupleDesc desc, int nhidden, const char *const *hidden)
{
	DetailPlan *plan = palloc0(sizeof(DetailPlan));

	plan->desc = desc;
	plan->cols = palloc0(sizeof(DetailColumn) * desc->natts);
	plan->tenant_index = plan->key_id_index = -1;
	plan->values = palloc(sizeof(Datum) * desc->natts);
	plan->nulls = palloc(sizeof(bool) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *name = NameStr(att->attname);
		DetailColumn *c;
		bool		shown = true;

		if (att->attisdropped)
			continue;
		if (strcmp(name, "tenant") == 0 && att->atttypid == TEXTOID)
			plan->tenant_index = i;
		if (strcmp(name, "key_id") == 0 && att->atttypid == UUIDOID)
			plan->key_id_index = i;
		for (int h = 0; h < nhidden; h++)
			shown = shown && strcmp(name, hidden[h]) != 0;
		if (!shown)
			continue;
		c = &plan->cols[plan->ncols++];
		c->index = i;
		c->name = name;
		c->name_len = strlen(name);
		c->typid = att->atttypid;
		c->kind = detail_kind(att->atttypid);
		if (c->kind == DETAIL_INTEGER || c->kind == DETAIL_STRING)
		{
			Oid			out;
			bool		varlena;

			getTypeOutputInfo(att->atttypid, &out, &varlena);
			fmgr_info(out, &c->out);
		}
		if (c->kind == DETAIL_ARRAY || c->kind == DETAIL_OTHER)
			to_jsonb_for(att->atttypid, att->atttypmod, att->attcollation, &c->to_jsonb);
	}
	/* pushed in jsonb's order, the object's sort finds them sorted at once */
	qsort(plan->cols, plan->ncols, sizeof(DetailColumn), key_order);
	return plan;
}

/* A string value, as to_jsonb makes one (refusing what jsonb cannot hold). */
static void
jbv_string(JsonbValue *v, char *s, int len)
{
	if (len > JENTRY_OFFLENMASK)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("string too long to represent as jsonb string"),
				 errdetail("Due to an implementation restriction, jsonb strings cannot exceed %d bytes.",
						   JENTRY_OFFLENMASK)));
	v->type = jbvString;
	v->val.string.val = s;
	v->val.string.len = len;
}

/* Push jsonb j as one value (its tokens, or its scalar). */
static void
push_jsonb(JsonbParseState **st, Jsonb *j)
{
	JsonbValue	v;

	v.type = jbvBinary;
	v.val.binary.data = &j->root;
	v.val.binary.len = VARSIZE(j) - VARHDRSZ;
	pushJsonbValue(st, WJB_VALUE, &v);
}

/*
 * Push one-dimensional text array a as to_jsonb has it (strings, nulls);
 * false, pushing nothing, for any other array but an empty one.
 */
static bool
push_text_array(JsonbParseState **st, ArrayType *a)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n = ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));

	if (n > 0 && (ARR_NDIM(a) != 1 || ARR_ELEMTYPE(a) != TEXTOID))
		return false;
	pushJsonbValue(st, WJB_BEGIN_ARRAY, NULL);
	if (n > 0)
		deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		JsonbValue	v;

		if (nulls[i])
			v.type = jbvNull;
		else
		{
			text	   *t = DatumGetTextPP(elems[i]);

			jbv_string(&v, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
		}
		pushJsonbValue(st, WJB_ELEM, &v);
	}
	pushJsonbValue(st, WJB_END_ARRAY, NULL);
	return true;
}

/* Push the value of column c, not NULL. */
static void
push_value(JsonbParseState **st, DetailColumn *c, Datum value)
{
	JsonbValue	v;

	switch (c->kind)
	{
		case DETAIL_BOOL:
			v.type = jbvBool;
			v.val.boolean = DatumGetBool(value);
			break;
		case DETAIL_INTEGER:
			/* integers' text never holds 'N' or 'n': always a number */
			v.type = jbvNumeric;
			v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																CStringGetDatum(OutputFunctionCall(&c->out, value)),
																ObjectIdGetDatum(InvalidOid),
																Int32GetDatum(-1)));
			break;
		case DETAIL_DATETIME:
			{
				char	   *s = JsonEncodeDateTime(NULL, value, c->typid, NULL);

				jbv_string(&v, s, strlen(s));
				break;
			}
		case DETAIL_JSONB:
			push_jsonb(st, DatumGetJsonbP(value));
			return;
		case DETAIL_STRING:
			if (c->typid == TEXTOID || c->typid == VARCHAROID)
			{
				text	   *t = DatumGetTextPP(value);

				jbv_string(&v, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
			}
			else
			{
				char	   *s = OutputFunctionCall(&c->out, value);

				jbv_string(&v, s, strlen(s));
			}
			break;
		case DETAIL_ARRAY:
			if (push_text_array(st, DatumGetArrayTypeP(value)))
				return;
			/* FALLTHROUGH */
		case DETAIL_OTHER:
			push_jsonb(st, DatumGetJsonbP(FunctionCall1(&c->to_jsonb, value)));
			return;
	}
	pushJsonbValue(st, WJB_VALUE, &v);
}

Jsonb *
audit_detail_new(DetailPlan *plan, HeapTuple tuple, char **tenant, Datum *key_id)
{
	JsonbParseState *st = NULL;
	JsonbValue	k;
	Datum	   *values = plan->values;
	bool	   *nulls = plan->nulls;

	heap_deform_tuple(tuple, plan->desc, values, nulls);
	*tenant = NULL;
	*key_id = (Datum) 0;
	if (plan->tenant_index >= 0 && !nulls[plan->tenant_index])
		*tenant = TextDatumGetCString(values[plan->tenant_index]);
	if (plan->key_id_index >= 0 && !nulls[plan->key_id_index])
	{
		pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

		*u = *DatumGetUUIDP(values[plan->key_id_index]);
		*key_id = UUIDPGetDatum(u);
	}

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jbv_string(&k, "new", 3);
	pushJsonbValue(&st, WJB_KEY, &k);
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < plan->ncols; i++)
	{
		DetailColumn *c = &plan->cols[i];

		Assert(i == 0 || key_order(&plan->cols[i - 1], c) < 0);
		jbv_string(&k, (char *) c->name, c->name_len);
		pushJsonbValue(&st, WJB_KEY, &k);
		if (nulls[c->index])
		{
			JsonbValue	v;

			v.type = jbvNull;
			pushJsonbValue(&st, WJB_VALUE, &v);
		}
		else
			push_value(&st, c, values[c->index]);
	}
	pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* Where the plan's key_id column is: the secrets' batch reads it before the details. */
AttrNumber
audit_detail_key_id_attnum(const DetailPlan *plan)
{
	return plan->key_id_index >= 0 ? plan->key_id_index + 1 : InvalidAttrNumber;
}
