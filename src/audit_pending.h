/*
 * audit_pending.h - the audit rows of a management call, held until it
 * returns; a key's first secret joins its key_created row (audit_pending.c).
 */
#ifndef APIKEYS_AUDIT_PENDING_H
#define APIKEYS_AUDIT_PENDING_H

#include "utils/jsonb.h"
#include "utils/uuid.h"

/* The columns of an audit row the writer gives (audit_row.c): the chain trigger adds the rest. */
#define AUDIT_NCOLS 11
#define AUDIT_DETAIL_COL 10		/* detail jsonb, the last of them */

/*
 * At most this many rows are held: holding one more writes those held first
 * (a statement creating more keys than this joins the secrets of the last
 * of them only; apikey_create_many inserts its keys in chunks of this size).
 */
#define AUDIT_HOLD_MAX 10000

/* One held row, as it would have been written when it was held. */
typedef struct HeldRow
{
	Datum		values[AUDIT_NCOLS];
	bool		nulls[AUDIT_NCOLS];
	bool		joinable;		/* a key_created row a secret may still join */
	pg_uuid_t	key_id;			/* its key, when joinable */
	Jsonb	   *secret;			/* the fields of the key's first secret, or NULL */
	SubTransactionId made;		/* the subtransaction that held it */
	SubTransactionId joined;	/* the one that joined its secret */
} HeldRow;

/* Every held row, in the order held; freed with cxt. */
typedef struct HeldRows
{
	int			n;
	HeldRow    *rows;
	MemoryContext cxt;
} HeldRows;

extern void apikeys_audit_pending_init(void);

/*
 * Hold a row (values of the types in types[]): the creation of key key_id,
 * which its first secret may join, or (key_id NULL) any other row, after
 * which no row held before it can be joined.
 */
extern void audit_hold(const pg_uuid_t *key_id, const Oid *types, const Datum *values,
					   const bool *nulls);

/* Is the creation of key_id held, with no secret joined yet? */
extern bool audit_held_unjoined(const pg_uuid_t *key_id);

/* Join secret to the held creation of key_id: false if none waits for one. */
extern bool audit_join_secret(const pg_uuid_t *key_id, Jsonb *secret);

/* How many rows are held. */
extern int	audit_held_count(void);

/* Take every held row out of the store (the caller writes them, then frees cxt). */
extern HeldRows audit_take_held(void);

/*
 * Write every held row, in the order held (audit_row.c): before any other
 * audit row, and when a management call returns.
 */
extern void apikeys_audit_flush_held(void);

#endif
