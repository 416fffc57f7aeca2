/*
 * policy.h - what apikey_verify needs to know about one secret, and the
 * verdicts it can reach.  Filled from the tables (policy_load.c) or from the
 * shared-memory cache (policy_cache.c); judged by verify.c.
 */
#ifndef APIKEYS_POLICY_H
#define APIKEYS_POLICY_H

#include "apikeys.h"
#include "utils/inet.h"
#include "utils/rel.h"
#include "utils/snapshot.h"

#include "verdicts.h"

extern const char *const apikeys_verdict_names[VERDICT_COUNT];

#define KEY_STATUS_ACTIVE	0
#define KEY_STATUS_DISABLED	1
#define KEY_STATUS_REVOKED	2

#define POLICY_MAX_CIDRS	16

/*
 * Named limits (apikeys.named_limit): up to POLICY_MAX_LIMITS on a key
 * (credential.limits) and as many on its tenant (tenant.limits), shared by
 * all the tenant's keys.  Each is a sliding window (rate_window.h).
 */
#define POLICY_MAX_LIMITS	3
#define LIMIT_NAME_LEN		16	/* names of at most 15 bytes, NUL-terminated */

typedef struct LimitSpec
{
	char		name[LIMIT_NAME_LEN];
	int32		max_uses;
	int32		window_s;
} LimitSpec;

/*
 * A key's credits (credential.credits ..; apikey_set_credits): a balance of
 * uses written by management functions (set, add, subtract) at `at`, and
 * spent by verify in shared memory.  Spending is counted per period: from
 * `since` (the last set), and anew at each refill, which replaces the
 * balance with `refill` (every refill_s seconds aligned to 2000-01-01 UTC,
 * or on day refill_day of each month, 00:00 UTC, the month's last day when
 * it is shorter).
 */
typedef struct CreditsSpec
{
	int64		credits;		/* balance at `at`; -1: the key has no credits */
	TimestampTz at;				/* when the balance was written */
	TimestampTz since;			/* the last set: spending counts from here */
	int64		refill;			/* 0: no refill */
	int32		refill_s;		/* refill interval in seconds, or 0 */
	int16		refill_day;		/* refill day of the month 1..31, or 0 */
} CreditsSpec;

/* What a key's credits are at a time (apikeys_credits_state). */
typedef struct CreditsState
{
	TimestampTz period_start;	/* uses charged from here on count */
	int64		balance;		/* credits of the period (before its uses) */
	TimestampTz next_refill;	/* DT_NOEND: no refill */
} CreditsState;

extern void apikeys_credits_state(const CreditsSpec *spec, TimestampTz now,
								  CreditsState *st);

typedef struct KeyPolicy
{
	pg_uuid_t	key_id;
	uint8		status;
	bool		tenant_active;
	TimestampTz expires_at;		/* DT_NOEND: never */
	TimestampTz secret_until;	/* DT_NOEND: current secret */
	int32		rate_limit;		/* 0: none */
	int32		rate_window_s;
	int64		usage_limit;	/* 0: none */
	int32		usage_period_s; /* 0: lifetime */
	CreditsSpec credits;		/* credits.credits -1: none (never with usage_limit) */
	int16		nkey_limits;
	int16		ntenant_limits;
	LimitSpec	key_limits[POLICY_MAX_LIMITS];
	LimitSpec	tenant_limits[POLICY_MAX_LIMITS];
	int16		ncidrs;			/* -1: no allowlist */
	inet_struct cidrs[POLICY_MAX_CIDRS];
	/* variable part, in backend memory */
	text	   *tenant;
	text	   *name;
	ArrayType  *scopes;
} KeyPolicy;

/* policy_load.c: read the tables; false when the digest is unknown */
extern bool apikeys_policy_load(const uint8 *digest, KeyPolicy *policy,
								uint64 generation);
extern int32 apikeys_interval_seconds(Datum interval);
extern int	apikeys_load_limits(Datum limits, LimitSpec *out);

/* ip_allow.c */
extern char *apikeys_trusted_proxies;
extern bool apikeys_ip_allowed(const KeyPolicy *policy, const inet *client_arg);
extern HeapTuple apikeys_probe_rel(Relation rel, Oid indexid, RegProcedure eqproc,
								   Datum value, Oid collation, Snapshot snapshot);
extern HeapTuple apikeys_probe_unique(Oid relid, Oid indexid, RegProcedure eqproc,
									  Datum value, Oid collation, Snapshot snapshot,
									  TupleDesc *desc_out, Relation *rel_out);

#endif
