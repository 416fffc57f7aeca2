/*
 * inval_stamps.h - when a cached policy is stale: the generation, the floor
 * and the key stamps in shared memory (changes.c raises them, trigger_guard.c
 * catches the changes the triggers miss, policy_cache.c and verify.c read
 * them).
 *
 * Locking protocol: generation is an atomic counter bumped after every
 * commit that changed or deleted keys, secrets or tenants (new rows need
 * nothing: no cached policy can refer to them).  The commit then raises the
 * stamp of the changed keys' buckets (key_stamps, by key_id hash) to the new
 * generation, or `floor` for tenant changes, TRUNCATE and big batches.  A
 * cache entry records the generation read before the snapshot that filled
 * it and is used only while neither its bucket nor the floor is past it
 * (policy_cache.c): a change retires its own keys, not the whole cache.
 */
#ifndef APIKEYS_INVAL_STAMPS_H
#define APIKEYS_INVAL_STAMPS_H

#include "shmem.h"

#include "common/hashfn.h"

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

/*
 * The stamp of key_id's bucket: keys share buckets, so a change retires the
 * few cached policies of its bucket with its own, and the table stays fixed.
 */
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

#endif
