/*
 * apikeys.h - declarations shared by the apikeys C modules.
 */
#ifndef APIKEYS_H
#define APIKEYS_H

#include "postgres.h"
#include "fmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/array.h"
#include "executor/spi.h"

#include "key_format.h"
#include "verdicts.h"

#define APIKEYS_SCHEMA "apikeys"
#define APIKEYS_INTERNAL_SCHEMA "apikeys_internal"	/* bodies of management functions */
#define APIKEYS_DIGEST_LEN 32

/* Infinite intervals exist from PostgreSQL 17 on. */
#if PG_VERSION_NUM >= 170000
#define INTERVAL_NOT_FINITE_COMPAT(i) INTERVAL_NOT_FINITE(i)
#else
#define INTERVAL_NOT_FINITE_COMPAT(i) false
#endif

/*
 * Functions that never return: PostgreSQL 18 replaced the trailing
 * pg_attribute_noreturn() with the leading specifier pg_noreturn.  Before
 * 18, pg_attribute_noreturn() is __attribute__((noreturn)) (or nothing),
 * which compilers also accept in front of a declaration.
 */
#ifndef pg_noreturn
#define pg_noreturn pg_attribute_noreturn()
#endif

/* RelationGetPrimaryKeyIndex gained deferrable_ok in PostgreSQL 18. */
#if PG_VERSION_NUM >= 180000
#define PRIMARY_KEY_INDEX_COMPAT(rel) RelationGetPrimaryKeyIndex((rel), false)
#else
#define PRIMARY_KEY_INDEX_COMPAT(rel) RelationGetPrimaryKeyIndex(rel)
#endif

/*
 * index_beginscan gained an instrumentation argument in PostgreSQL 18
 * (NULL: no EXPLAIN counters).
 */
#if PG_VERSION_NUM >= 180000
#define INDEX_BEGINSCAN_COMPAT(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), NULL, (nkeys), (norderbys))
#else
#define INDEX_BEGINSCAN_COMPAT(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), (nkeys), (norderbys))
#endif

/*
 * Column numbers of the tables apikey_verify reads without SPI.  They must
 * match apikeys--*.sql; catalog_cache.c checks the names when it loads, so a
 * mismatch is an error, not a misread.
 */
#define Anum_tenant_tenant			1
#define Anum_tenant_active			3

#define Anum_credential_key_id		1
#define Anum_credential_tenant		2
#define Anum_credential_name		3
#define Anum_credential_scopes		6
#define Anum_credential_status		8
#define Anum_credential_expires_at	9
#define Anum_credential_allowed_ips	17
#define Anum_credential_rate_limit	18
#define Anum_credential_rate_window	19
#define Anum_credential_usage_limit	20
#define Anum_credential_usage_period 21

#define Anum_usage_key_id			1
#define Anum_usage_last_used_at		2
#define Anum_usage_used				3
#define Anum_usage_period_start		4
#define Anum_usage_first_count		5	/* a count_<name> per counted verdict (verdicts.h) */
#define Anum_usage_flushed_at		(Anum_usage_first_count + VERDICT_NCOUNTED)
#define Natts_usage					Anum_usage_flushed_at

#define Anum_secret_digest			1
#define Anum_secret_key_id			2
#define Anum_secret_valid_until		5

/* guc.c */
extern char *apikeys_actor;
extern char *apikeys_request_id;
extern char *apikeys_audit_retention;	/* read by audit_purge.c */
extern void apikeys_guc_init(void);
extern void apikeys_guc_reserve(void);

/* catalog_cache.c: OIDs of our tables and the indexes verify scans */
typedef struct ApikeysCatalog
{
	Oid			tenant_rel;
	Oid			tenant_pkey;
	Oid			credential_rel;
	Oid			credential_pkey;
	Oid			secret_rel;
	Oid			secret_pkey;	/* unique index on digest */
	Oid			usage_rel;
	Oid			usage_pkey;
	int16		credential_limits;	/* column "limits" (1.1), 0: none (1.0) */
	int16		credential_credits; /* column "credits" (1.1), 0: none (1.0); credits_at .. credits_refill_day follow it */
	int16		tenant_limits;
} ApikeysCatalog;

extern const ApikeysCatalog *apikeys_catalog(void);
extern void apikeys_catalog_init(void);

/* audit_chain.c */
extern void apikeys_audit_chain_init(void);

/* private_lock.c: an ExclusiveLock to the end of the transaction, on a tag no SQL can form */
#define APIKEYS_LOCK_VAULT_SLOT		0x5641	/* "VA" */
#define APIKEYS_LOCK_AUDIT_CHAIN	0x4155	/* "AU" */
#define APIKEYS_LOCK_KEY_FORMAT		0x4B46	/* "KF": one key shape (legacy_format.c) */
extern void apikeys_private_lock(uint16 kind, const char *data, size_t len);
extern bool apikeys_private_lock_nowait(uint16 kind, const char *data, size_t len, int mode);

/* digest.c */
extern void apikeys_sha256(const char *data, size_t len,
						   uint8 out[APIKEYS_DIGEST_LEN]);

/* secret.c: a fresh secret, its digest and its hint */
typedef struct NewSecret
{
	char		key[KEY_MAX_LEN + 1];
	size_t		key_len;
	size_t		prefix_len;
	char		hint[KEY_HINT_MAX_LEN + 1];
	uint8		digest[APIKEYS_DIGEST_LEN];
} NewSecret;

extern void apikeys_new_secret(const char *prefix, size_t prefix_len,
							   NewSecret *out);
extern void apikeys_wipe_secret(NewSecret *secret);
extern Datum apikeys_issued_key_tuple(FunctionCallInfo fcinfo, Datum key_id,
									  NewSecret *secret, Datum expires_at,
									  bool expires_null, Datum created_at);

/* validate.c: argument checks shared by create, rotate and update */
extern char *apikeys_check_tenant_id(text *tenant);
extern char *apikeys_check_name(text *name);
extern void apikeys_check_description(text *description);
extern ArrayType *apikeys_normalize_scopes(ArrayType *scopes);
extern ArrayType *apikeys_normalize_scopes_ext(ArrayType *scopes, bool allow_wildcard);
extern void apikeys_check_expiry(TimestampTz expires_at);
extern void apikeys_check_metadata(Datum metadata);
extern char *apikeys_check_prefix(text *prefix);

/* create.c: shared with rotate.c (inside SPI_connect) */
extern void apikeys_require_active_tenant(const char *tenant, const char *action,
										 Datum key_id);
extern void apikeys_insert_secret(Datum key_id, NewSecret *secret);
extern void apikeys_new_key_id(pg_uuid_t *u);

/* random_pool.c: strong random bytes, drawn from pg_strong_random() a block at a time */
extern void apikeys_random_bytes(void *buf, size_t n);

/* scope_registry.c: refuse scopes the tenant's registry does not list (inside SPI_connect) */
extern void apikeys_check_scope_registry(const char *tenant, ArrayType *scopes);

/* subxact.c */
extern ErrorData *apikeys_subxact_run(void (*fn) (void *arg), void *arg, bool keep);

/* spi_util.c */
extern void apikeys_spi_run(SPIPlanPtr *plan, const char *sql, int nargs,
							Oid *argtypes, Datum *values, const char *nulls,
							int expected);
pg_noreturn extern void apikeys_spi_deny(const char *action, const char *tenant, Datum key_id,
										 const char *sqlstate, const char *hint, const char *fmt,...)
			pg_attribute_printf(6, 7);
extern void apikeys_spi_authorize(const char *tenant, const char *action, Datum key_id);

/*
 * Where the internal helper name(argtypes) lives: schema apikeys_internal
 * since 1.1, schema apikeys in a database still at 1.0 (the library serves
 * both).  apikeys_helper_version gives APIKEYS_HELPER_1_1 or
 * APIKEYS_HELPER_1_0, an index into a call site's pair of statement texts
 * and kept plans; apikeys_helper_oid the helper's OID (InvalidOid: none).
 * Neither checks permissions (nobody holds USAGE on apikeys_internal) nor
 * raises.
 */
#define APIKEYS_HELPER_1_1 0
#define APIKEYS_HELPER_1_0 1
extern int	apikeys_helper_version(const char *name, int nargs, const Oid *argtypes);
extern Oid	apikeys_helper_oid(const char *name, int nargs, const Oid *argtypes);

#endif							/* APIKEYS_H */
