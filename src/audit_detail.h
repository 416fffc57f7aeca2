/*
 * audit_detail.h - the audit detail of inserted rows, built in one pass
 * (audit_detail.c).
 */
#ifndef APIKEYS_AUDIT_DETAIL_H
#define APIKEYS_AUDIT_DETAIL_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "utils/jsonb.h"

typedef struct DetailPlan DetailPlan;

/* How to build one table's details, its hidden columns left out. */
extern DetailPlan *audit_detail_plan(TupleDesc desc, int nhidden, const char *const *hidden);

/*
 * {"new": to_jsonb(tuple) - hidden} of one row; and the row's tenant and
 * key id columns (NULL / (Datum) 0 when absent or NULL; the key id a copy).
 */
extern Jsonb *audit_detail_new(DetailPlan *plan, HeapTuple tuple, char **tenant, Datum *key_id);

/* The attribute number of the plan's uuid column "key_id", or InvalidAttrNumber. */
extern AttrNumber audit_detail_key_id_attnum(const DetailPlan *plan);

#endif
