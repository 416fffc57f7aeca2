/*
 * shmem.h - apikeys' shared memory (present only when the library is in
 * shared_preload_libraries).
 *
 * Locking protocol (both tables are slot_table.c tables, partitioned):
 *   policy cache  partition lock shared to look up and copy an entry out,
 *                 exclusive to fill or evict.
 *   usage table   partition lock shared to find an entry, then the entry's
 *                 spinlock to read or change its counters; exclusive to
 *                 create or evict entries (only flushed ones are evicted).
 *   generation  atomic counter bumped after every commit that changed or
 *               deleted keys, secrets or tenants (new rows need nothing: no
 *               cached policy can refer to them).  The commit then raises
 *               the stamp of the changed keys' buckets (key_stamps, by
 *               key_id hash) to the new generation, or `floor` for tenant
 *               changes, TRUNCATE and big batches.  A cache entry records
 *               the generation read before the snapshot that filled it and
 *               is used only while neither its bucket nor the floor is past
 *               it (policy_cache.c): a change retires its own keys, not the
 *               whole cache.
 *   counters    atomics, no lock.
 */
#ifndef APIKEYS_SHMEM_H
#define APIKEYS_SHMEM_H

#include "policy.h"
#include "rate_window.h"

#include "access/transam.h"
#include "common/hashfn.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/snapmgr.h"

#include "slot_table.h"

#define APIKEYS_MAX_FLUSH_DBS 32
#define APIKEYS_INVAL_BUCKETS 65536	/* power of two; 512 kB */

typedef struct FlushDbSlot
{
	Oid			dbid;			/* InvalidOid: free */
	pid_t		worker_pid;		/* 0: none running */
	bool		starting;
	TimestampTz start_requested;	/* when `starting` was set */
} FlushDbSlot;

typedef struct ApikeysShared
{
	pg_atomic_uint64 generation;
	pg_atomic_uint64 floor;		/* entries stamped before it are stale */
	pg_atomic_uint32 commits_in_flight;	/* key changes between PRE_COMMIT and COMMIT */
	pg_atomic_uint64 outcomes[VERDICT_COUNT];
	pg_atomic_uint64 cache_hits;
	pg_atomic_uint64 cache_misses;
	pg_atomic_uint64 cache_evictions;
	pg_atomic_uint64 usage_evictions;
	pg_atomic_uint64 tracking_dropped;
	pg_atomic_uint64 flushed_rows;
	pg_atomic_uint64 flush_errors;
	pg_atomic_uint64 last_flush_at;	/* TimestampTz, 0: never */
	slock_t		db_mutex;		/* protects dbs[] */
	FlushDbSlot dbs[APIKEYS_MAX_FLUSH_DBS];
	pg_atomic_uint64 key_stamps[APIKEYS_INVAL_BUCKETS];	/* last change, by key_id hash */
} ApikeysShared;

extern ApikeysShared *apikeys_shared;	/* NULL when not preloaded */
extern SlotTable apikeys_policy_table;
extern SlotTable apikeys_usage_table;

/* settings (shmem.c) */
extern int	apikeys_cache_entries;
extern int	apikeys_tracked_keys;
extern int	apikeys_flush_interval_ms;
extern int	apikeys_write_delay_ms;
extern double apikeys_tenant_share;

extern void apikeys_shmem_init(void);
extern Size apikeys_shmem_size(void);

/* Is the shared state usable by this backend right now? */
static inline bool
apikeys_shmem_ready(void)
{
	return apikeys_shared != NULL;
}

/* changes.c: did this transaction change key data (bypass the cache)? */
extern bool apikeys_xact_changed_keys(void);
/* changes.c: it did, past the triggers: retire every policy at its end */
extern void apikeys_changes_note_all(void);

/* trigger_guard.c: hooks that notice key changes the triggers miss */
extern void apikeys_trigger_guard_init(void);

/* Is a transaction that changed key data committing right now? */
static inline bool
apikeys_commit_in_flight(void)
{
	return pg_atomic_read_u32(&apikeys_shared->commits_in_flight) != 0;
}
extern void apikeys_changes_init(void);

static inline pg_atomic_uint64 *
apikeys_key_stamp(const pg_uuid_t *key_id)
{
	return &apikeys_shared->key_stamps[hash_bytes(key_id->data, UUID_LEN) &
									   (APIKEYS_INVAL_BUCKETS - 1)];
}

/* Is what was read under generation `stamp` about key_id still current? */
static inline bool
apikeys_stamp_current(uint64 stamp, const pg_uuid_t *key_id)
{
	return pg_atomic_read_u64(&apikeys_shared->floor) <= stamp &&
		pg_atomic_read_u64(apikeys_key_stamp(key_id)) <= stamp;
}

/* policy_cache.c */
typedef struct PolicyCacheKey
{
	Oid			dbid;
	uint8		digest[APIKEYS_DIGEST_LEN];
} PolicyCacheKey;

/*
 * About 300 bytes an entry, so a cache can hold every key of a big
 * installation: the fixed part of the policy, then its allowlist, tenant,
 * name and scopes packed in vardata.  Policies that do not fit (long names,
 * many scopes or networks) are not cached: they are read from the tables.
 */
#define POLICY_VARDATA 160
#define POLICY_FIXED_LEN offsetof(KeyPolicy, cidrs)

typedef struct PolicyCacheEntry
{
	SlotHeader	hdr;
	PolicyCacheKey key;
	uint64		stamp;			/* generation read before the fill's snapshot */
	Oid			credential_rel; /* forget entries of a dropped extension */
	uint16		cidrs_len;
	uint16		tenant_len;
	uint16		name_len;
	uint16		scopes_len;
	char		policy[POLICY_FIXED_LEN];	/* KeyPolicy up to cidrs */
	char		vardata[POLICY_VARDATA];	/* copied out before use: no alignment */
} PolicyCacheEntry;

extern bool apikeys_cache_lookup(const uint8 *digest, TimestampTz now, KeyPolicy *policy);
extern void apikeys_cache_store(const uint8 *digest, uint64 stamp, TimestampTz now,
								const KeyPolicy *policy);

/* usage.c */
typedef struct UsageKey
{
	Oid			dbid;
	pg_uuid_t	key_id;
} UsageKey;

typedef struct UsageEntry
{
	SlotHeader	hdr;
	UsageKey	key;
	uint32		tenant_hash;	/* the key's tenant (apikeys_tenant_hash), set at claim */
	slock_t		mutex;
	bool		base_loaded;	/* used_base read from apikeys.usage */
	RateState	rate;			/* the key's rate limit (rate_window.h) */
	bool		tenant_limits;	/* a tenant's shared entry: named[] only, never dirty */
	char		named_name[POLICY_MAX_LIMITS][LIMIT_NAME_LEN];	/* "": free */
	RateState	named[POLICY_MAX_LIMITS];	/* the key's (or tenant's) named limits */
	int64		usage_period;	/* index of the usage period `used` counts */
	int64		used;			/* uses charged in it (authoritative once loaded) */
	int32		usage_period_s; /* period length, 0: lifetime, -1: credits (usage_period: a time) */
	TimestampTz last_used_at;
	int64		counts_pending[VERDICT_COUNT];
	int64		counts_inflight[VERDICT_COUNT];
	bool		dirty;			/* something to flush */
	bool		flushing;		/* counts in flight: keep until settled */
	bool		urgent_marked;	/* its bit is set in apikeys_usage_urgent */
	TransactionId inflight_xid; /* the flush that wrote counts_inflight, or invalid */
} UsageEntry;

/*
 * Are an entry's in-flight counts already in apikeys.usage as `snapshot`
 * sees it?  Readers add them otherwise, so a count is seen once whether the
 * reader's snapshot is before, during or after the flush's commit.
 */
static inline bool
apikeys_inflight_visible(TransactionId inflight_xid, Snapshot snapshot)
{
	/* may read the commit log: never call it under the entry's spinlock */
	return TransactionIdIsValid(inflight_xid) &&
		!XidInMVCCSnapshot(inflight_xid, snapshot) &&
		TransactionIdDidCommit(inflight_xid);
}

/*
 * Which ways of each usage set hold unwritten counts (bit w: way w), so the
 * flush worker reads a few bytes per set instead of every entry: any counts
 * (apikeys_usage_dirty, written within usage_write_delay), and those to
 * write at the next turn (apikeys_usage_urgent: a usage cap's count, and the
 * entries of sets that filled up).  Set by verify, cleared by the worker
 * when it takes the counts; a stale bit is dropped then.
 */
extern pg_atomic_uint32 *apikeys_usage_dirty;
extern pg_atomic_uint32 *apikeys_usage_urgent;

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

/* flush_worker.c */
typedef struct FlushItem
{
	UsageKey	key;
	bool		has_used;
	int64		used;
	int64		period;
	int32		period_s;		/* -1: credits, period is a time */
	TimestampTz last_used_at;
	int64		counts[VERDICT_COUNT];
} FlushItem;

/*
 * apikeys.usage.period_start of an item's `used`: a cap's period (index x
 * length; NULL for a lifetime cap), or a credits entry's spending start
 * (period_s -1: period is that time).
 */
static inline TimestampTz
apikeys_flush_period_start(const FlushItem *it, bool *isnull)
{
	*isnull = !it->has_used || it->period_s == 0;
	if (it->period_s < 0)
		return (TimestampTz) it->period;
	return it->period * (int64) it->period_s * USECS_PER_SEC;
}

/* outcomes that have a column in apikeys.usage, in column order */
extern const VerdictCode apikeys_flush_counted[];
extern const int apikeys_flush_ncounted;

extern void apikeys_flush_worker_wake(Oid dbid);
extern void apikeys_flush_worker_hurry(void);
PGDLLEXPORT void apikeys_flush_main(Datum arg);

/* flush_update.c */
extern int	apikeys_flush_update_existing(Oid usage_rel, Oid usage_pkey,
										  const FlushItem *items, int n, bool *done);

#endif
