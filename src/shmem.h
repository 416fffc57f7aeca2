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
 *   generation  atomic counter bumped after every commit that changed keys,
 *               secrets, tenants or policies; cache entries filled under an
 *               older generation are ignored (policy_cache.c).
 *   counters    atomics, no lock.
 */
#ifndef APIKEYS_SHMEM_H
#define APIKEYS_SHMEM_H

#include "policy.h"

#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/spin.h"

#include "slot_table.h"

#define APIKEYS_MAX_FLUSH_DBS 32

typedef struct FlushDbSlot
{
	Oid			dbid;			/* InvalidOid: free */
	pid_t		worker_pid;		/* 0: none running */
	bool		starting;
} FlushDbSlot;

typedef struct ApikeysShared
{
	pg_atomic_uint64 generation;
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
} ApikeysShared;

extern ApikeysShared *apikeys_shared;	/* NULL when not preloaded */
extern SlotTable apikeys_policy_table;
extern SlotTable apikeys_usage_table;

/* settings (shmem.c) */
extern int	apikeys_cache_entries;
extern int	apikeys_tracked_keys;
extern int	apikeys_flush_interval_ms;

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

/* Is a transaction that changed key data committing right now? */
static inline bool
apikeys_commit_in_flight(void)
{
	return pg_atomic_read_u32(&apikeys_shared->commits_in_flight) != 0;
}
extern void apikeys_changes_init(void);

/* policy_cache.c */
typedef struct PolicyCacheKey
{
	Oid			dbid;
	uint8		digest[APIKEYS_DIGEST_LEN];
} PolicyCacheKey;

#define POLICY_VARDATA 512

typedef struct PolicyCacheEntry
{
	SlotHeader	hdr;
	PolicyCacheKey key;
	uint64		generation;		/* apikeys_shared->generation when filled */
	Oid			credential_rel; /* forget entries of a dropped extension */
	KeyPolicy	policy;			/* pointers in it are meaningless here */
	uint16		tenant_len;
	uint16		name_len;
	uint16		scopes_len;
	char		vardata[POLICY_VARDATA];	/* tenant, name, scopes varlenas */
} PolicyCacheEntry;

extern bool apikeys_cache_lookup(const uint8 *digest, uint64 generation,
								 KeyPolicy *policy);
extern void apikeys_cache_store(const uint8 *digest, uint64 generation,
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
	slock_t		mutex;
	bool		base_loaded;	/* used_base read from apikeys.usage */
	int64		rate_window;	/* index of the current rate window */
	int32		rate_count;		/* successes counted in it */
	int64		usage_period;	/* index of the usage period `used` counts */
	int64		used;			/* uses charged in it (authoritative once loaded) */
	int32		usage_period_s; /* period length, 0: lifetime */
	TimestampTz last_used_at;
	int64		counts_pending[VERDICT_COUNT];
	int64		counts_inflight[VERDICT_COUNT];
	bool		dirty;			/* something to flush */
	bool		flushing;		/* counts in flight: keep until settled */
} UsageEntry;

typedef struct RateVerdict
{
	int32		limit;			/* 0: no rate limit */
	int32		remaining;
	TimestampTz reset;
	int64		usage_remaining;	/* -1: no cap */
} RateVerdict;

extern VerdictCode apikeys_usage_charge(const KeyPolicy *policy, TimestampTz now,
										RateVerdict *rv);
extern void apikeys_usage_count(const KeyPolicy *policy, VerdictCode code,
								TimestampTz now);

/* flush_worker.c */
extern void apikeys_flush_worker_register(void);
extern void apikeys_flush_worker_wake(Oid dbid);
PGDLLEXPORT void apikeys_flush_main(Datum arg);

#endif
