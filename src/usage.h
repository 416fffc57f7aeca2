/*
 * usage.h - per-key limits and use counts in shared memory (usage.c): what
 * verify asks of them, and what the last verification said about each.
 */
#ifndef APIKEYS_USAGE_H
#define APIKEYS_USAGE_H

#include "policy.h"
#include "rate_window.h"

#include "common/hashfn.h"

typedef struct RateVerdict
{
	int32		limit;			/* 0: no rate limit */
	int32		remaining;
	TimestampTz reset;
	int64		usage_remaining;	/* -1: no cap */
} RateVerdict;

/*
 * Who owns a usage entry, for the per-tenant share of each set (usage.c):
 * a hash of the database and the tenant id, computed from the policy in
 * hand (no lookup).  Two tenants whose hashes collide (about one pair in
 * 4 billion) share one share.
 */
static inline uint32
apikeys_tenant_hash(Oid dbid, const text *tenant)
{
	return hash_combine(murmurhash32(dbid),
						hash_bytes((const unsigned char *) VARDATA_ANY(tenant),
								   VARSIZE_ANY_EXHDR(tenant)));
}

extern VerdictCode apikeys_usage_charge(const KeyPolicy *policy, TimestampTz now,
										int32 cost, RateVerdict *rv);

/* One limit the last verification checked (apikeys.last_verify_limits()). */
typedef struct LimitRow
{
	const char *scope;			/* "key", "tenant" or "route" */
	char		name[LIMIT_NAME_LEN];
	bool		passed;
	bool		tightest;		/* the one in the rate_* columns */
	LimitReport report;
} LimitRow;

extern int	apikeys_last_limits(const LimitRow **rows);
extern void apikeys_usage_set_route(const LimitSpec *specs, int n, const char *route,
									size_t route_len);
extern void apikeys_last_limits_reset(void);
extern void apikeys_usage_count(const KeyPolicy *policy, VerdictCode code,
								TimestampTz now);

#endif
