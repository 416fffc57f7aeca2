/*
 * audit_chain.h - sealing new rows of apikeys.audit into their chain
 * (audit_chain.c), for the chain trigger and the direct writer
 * (audit_insert.c).
 */
#ifndef APIKEYS_AUDIT_CHAIN_H
#define APIKEYS_AUDIT_CHAIN_H

#include "postgres.h"
#include "utils/rel.h"

#define AUDIT_N_HASHED 16		/* the columns row_hash covers */

/* Where the columns are in a version of apikeys.audit. */
typedef struct AuditLayout
{
	AttrNumber	hashed[AUDIT_N_HASHED];	/* in the order the hash covers them */
	AttrNumber	chain,
				id,
				at,
				prev,
				hash,
				tenant;
} AuditLayout;

extern void audit_layout(TupleDesc desc, AuditLayout *l);
extern void audit_chain_seal(Relation rel, const AuditLayout *l, Datum *values, bool *nulls);

/* audit_insert.c: a batch of new rows without the executor, when nothing could tell */
extern bool apikeys_audit_insert_direct(int n, int ncols, const char *const *cols,
										Datum *const *values, bool *const *nulls);

#endif
