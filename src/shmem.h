/*
 * shmem.h - the root of apikeys' shared memory (present only when the
 * library is in shared_preload_libraries): the struct the subsystems'
 * shared figures live in, the settings that size it, and its setup
 * (shmem.c).
 *
 * Each subsystem's structs, helpers and locking protocol are in its own
 * header:
 *   inval_stamps.h  generation, floor and key stamps: when a cached policy
 *                   is stale
 *   policy_cache.h  the policy cache table
 *   usage_entry.h   the usage table and its entries
 *   usage.h         per-key limits and counting on the verify path
 *   flush_worker.h  the per-database flush workers and their slots (dbs[])
 * The counters below (outcomes, cache_*, usage_evictions, ...) are atomics,
 * read and bumped with no lock.
 */
#ifndef APIKEYS_SHMEM_H
#define APIKEYS_SHMEM_H

#include "policy.h"
#include "flush_worker.h"

#include "port/atomics.h"
#include "storage/spin.h"

#define APIKEYS_INVAL_BUCKETS 65536	/* power of two; 512 kB */

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
	pg_atomic_uint64 collects;	/* the last collect's number (usage_entry_collect) */
	uint8		lock_salt[16];	/* random per server start: private_lock.c's tags */
	slock_t		db_mutex;		/* protects dbs[] */
	FlushDbSlot dbs[APIKEYS_MAX_FLUSH_DBS];
	pg_atomic_uint64 key_stamps[APIKEYS_INVAL_BUCKETS];	/* last change, by key_id hash */
} ApikeysShared;

extern ApikeysShared *apikeys_shared;	/* NULL when not preloaded */

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

#endif
