/*
 * shmem.c - size, request and attach apikeys' shared memory (see shmem.h
 * for what lives there and how it is locked).
 *
 * Sizes are fixed at server start by apikeys.cache_entries and
 * apikeys.tracked_keys, so the footprint is bounded: apikeys.runtime shows
 * it.  PostgreSQL 15 moved space requests to shmem_request_hook.
 */
#include "shmem.h"
#include "policy_cache.h"
#include "usage_entry.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/guc.h"

ApikeysShared *apikeys_shared = NULL;
SlotTable	apikeys_policy_table;
SlotTable	apikeys_usage_table;
pg_atomic_uint32 *apikeys_usage_dirty = NULL;
pg_atomic_uint32 *apikeys_usage_urgent = NULL;

int			apikeys_cache_entries = 10000;
int			apikeys_tracked_keys = 50000;
int			apikeys_flush_interval_ms = 1000;
int			apikeys_write_delay_ms = 60000;
double		apikeys_tenant_share = 0.5;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* The bytes all of apikeys' shared state needs, from the sizing settings. */
Size
apikeys_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(ApikeysShared));

	size = add_size(size, slot_table_size(apikeys_cache_entries, sizeof(PolicyCacheEntry)));
	size = add_size(size, slot_table_size(apikeys_tracked_keys, sizeof(UsageEntry)));
	size = add_size(size, mul_size(2 * sizeof(pg_atomic_uint32), slot_sets_for(apikeys_tracked_keys)));
	return size;
}

/* Ask the postmaster for our shared memory and LWLocks (two tables' partitions). */
static void
apikeys_shmem_request(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(apikeys_shmem_size());
	RequestNamedLWLockTranche("apikeys", 2 * SLOT_PARTITIONS);
}

/*
 * Attach to (and, the first time, initialize) the shared root, both slot
 * tables and the usage marks; under AddinShmemInitLock so that only one
 * process initializes them.
 */
static void
apikeys_shmem_startup(void)
{
	bool		found;
	bool		found_table;
	LWLockPadded *locks;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	apikeys_shared = ShmemInitStruct("apikeys", sizeof(ApikeysShared), &found);
	locks = GetNamedLWLockTranche("apikeys");
	if (!found)
	{
		memset(apikeys_shared, 0, sizeof(ApikeysShared));
		pg_atomic_init_u64(&apikeys_shared->generation, 1);
		pg_atomic_init_u64(&apikeys_shared->floor, 0);
		for (int i = 0; i < APIKEYS_INVAL_BUCKETS; i++)
			pg_atomic_init_u64(&apikeys_shared->key_stamps[i], 0);
		pg_atomic_init_u32(&apikeys_shared->commits_in_flight, 0);
		for (int i = 0; i < VERDICT_COUNT; i++)
			pg_atomic_init_u64(&apikeys_shared->outcomes[i], 0);
		pg_atomic_init_u64(&apikeys_shared->cache_hits, 0);
		pg_atomic_init_u64(&apikeys_shared->cache_misses, 0);
		pg_atomic_init_u64(&apikeys_shared->cache_evictions, 0);
		pg_atomic_init_u64(&apikeys_shared->usage_evictions, 0);
		pg_atomic_init_u64(&apikeys_shared->tracking_dropped, 0);
		pg_atomic_init_u64(&apikeys_shared->flushed_rows, 0);
		pg_atomic_init_u64(&apikeys_shared->flush_errors, 0);
		pg_atomic_init_u64(&apikeys_shared->last_flush_at, 0);
		pg_atomic_init_u64(&apikeys_shared->collects, 0);
		SpinLockInit(&apikeys_shared->db_mutex);
		if (!pg_strong_random(apikeys_shared->lock_salt, sizeof(apikeys_shared->lock_salt)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate random bytes for apikeys' lock tags")));
	}

	slot_table_init(&apikeys_policy_table, "apikeys policy cache", apikeys_cache_entries,
					sizeof(PolicyCacheEntry), offsetof(PolicyCacheEntry, key),
					sizeof(PolicyCacheKey), locks, &found_table);
	slot_table_init(&apikeys_usage_table, "apikeys usage", apikeys_tracked_keys,
					sizeof(UsageEntry), offsetof(UsageEntry, key), sizeof(UsageKey),
					locks + SLOT_PARTITIONS, &found_table);
	apikeys_usage_dirty = ShmemInitStruct("apikeys usage marks",
										  mul_size(2 * sizeof(pg_atomic_uint32), apikeys_usage_table.nsets),
										  &found_table);
	apikeys_usage_urgent = apikeys_usage_dirty + apikeys_usage_table.nsets;
	if (!found_table)
		for (uint32 i = 0; i < 2 * apikeys_usage_table.nsets; i++)
			pg_atomic_init_u32(&apikeys_usage_dirty[i], 0);
	LWLockRelease(AddinShmemInitLock);
}

/* At preload: define the sizing settings and install the shared memory hooks. */
void
apikeys_shmem_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;

	DefineCustomIntVariable("apikeys.cache_entries",
							"Secrets whose policies are cached in shared memory.",
							"About 450 bytes each. Misses fall back to two index lookups.",
							&apikeys_cache_entries, 10000, 4, 10000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("apikeys.tracked_keys",
							"Keys whose usage, rate-limit and cap state is kept in shared memory.",
							"About 520 bytes each. Flushed entries are evicted when it is full.",
							&apikeys_tracked_keys, 50000, 100, 10000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("apikeys.flush_interval",
							"How often the background worker writes usage figures to apikeys.usage.",
							NULL,
							&apikeys_flush_interval_ms, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("apikeys.usage_write_delay",
							"How long use counts and last-use times of keys without a usage cap may wait before they are written.",
							"Pending figures are visible at once in apikeys.key_usage; a crash loses at most this much of them. "
							"Keys with a usage cap are written every flush_interval.",
							&apikeys_write_delay_ms, 60000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomRealVariable("apikeys.tenant_share",
							 "Share of each set of the usage table one tenant may hold against other tenants.",
							 "Each key's usage state sits in one of two sets of 8 entries. A tenant's entries beyond "
							 "this share of a set (at least 1 of 8) give way to other tenants' keys, even with unwritten counts, "
							 "and no tenant evicts another's unwritten counts or open rate windows otherwise. 1 switches this off.",
							 &apikeys_tenant_share, 0.5, 0.125, 1.0,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);

#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = apikeys_shmem_request;
#else
	apikeys_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = apikeys_shmem_startup;

	/* flush workers are started on demand (apikeys_flush_worker_wake) */
}
