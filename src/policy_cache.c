/*
 * policy_cache.c - secrets' policies in shared memory, so a verify of a
 * known key costs a hash lookup instead of three index probes.
 *
 * Never serves a stale policy:
 *   - every change to apikeys.tenant, credential or secret, committed by
 *     anyone, bumps apikeys_shared->generation after the commit became
 *     visible (changes.c); an entry is used only while its generation is the
 *     current one;
 *   - a filler reads the generation BEFORE taking the snapshot it loads the
 *     policy with (policy_load.c uses the latest snapshot), so a commit
 *     racing with the fill leaves the entry under an old generation;
 *   - a transaction that changed key data itself, and hot standbys (WAL
 *     replay runs no triggers), bypass the cache (verify.c).
 * Time-dependent checks (expiry, rotation grace) are made at lookup.
 * When the table is full an arbitrary entry is evicted.
 */
#include "shmem.h"

#include "miscadmin.h"
#include "utils/hsearch.h"

bool
apikeys_cache_lookup(const uint8 *digest, uint64 generation, KeyPolicy *policy)
{
	PolicyCacheKey key;
	PolicyCacheEntry *entry;
	bool		hit = false;
	Oid			credential_rel = apikeys_catalog()->credential_rel;

	memset(&key, 0, sizeof(key));
	key.dbid = MyDatabaseId;
	memcpy(key.digest, digest, APIKEYS_DIGEST_LEN);

	LWLockAcquire(apikeys_shared->cache_lock, LW_SHARED);
	entry = hash_search(apikeys_policy_hash, &key, HASH_FIND, NULL);
	if (entry && entry->generation == generation &&
		entry->credential_rel == credential_rel)
	{
		char	   *buf = palloc(entry->tenant_len + entry->name_len + entry->scopes_len);

		memcpy(policy, &entry->policy, offsetof(KeyPolicy, tenant));
		memcpy(buf, entry->vardata, entry->tenant_len + entry->name_len + entry->scopes_len);
		policy->tenant = (text *) buf;
		policy->name = (text *) (buf + entry->tenant_len);
		policy->scopes = (ArrayType *) (buf + entry->tenant_len + entry->name_len);
		hit = true;
	}
	LWLockRelease(apikeys_shared->cache_lock);
	pg_atomic_fetch_add_u64(hit ? &apikeys_shared->cache_hits : &apikeys_shared->cache_misses, 1);
	return hit;
}

void
apikeys_cache_store(const uint8 *digest, uint64 generation, const KeyPolicy *policy)
{
	PolicyCacheKey key;
	PolicyCacheEntry *entry;
	Size		tlen = INTALIGN(VARSIZE_ANY(policy->tenant));
	Size		nlen = INTALIGN(VARSIZE_ANY(policy->name));
	Size		slen = VARSIZE(policy->scopes);
	bool		found;
	Oid			credential_rel = apikeys_catalog()->credential_rel;

	/* short varlenas would need re-heading; big policies are not cached */
	if (VARATT_IS_SHORT(policy->tenant) || VARATT_IS_SHORT(policy->name) ||
		VARATT_IS_EXTENDED(policy->scopes) || tlen + nlen + slen > POLICY_VARDATA)
		return;
	if (apikeys_cache_entries == 0)
		return;

	memset(&key, 0, sizeof(key));
	key.dbid = MyDatabaseId;
	memcpy(key.digest, digest, APIKEYS_DIGEST_LEN);

	LWLockAcquire(apikeys_shared->cache_lock, LW_EXCLUSIVE);
	if (pg_atomic_read_u64(&apikeys_shared->generation) != generation)
	{
		LWLockRelease(apikeys_shared->cache_lock);
		return;					/* already outdated */
	}
	entry = hash_search(apikeys_policy_hash, &key, HASH_ENTER_NULL, &found);
	if (entry == NULL)
	{
		HASH_SEQ_STATUS scan;
		PolicyCacheEntry *victim;

		hash_seq_init(&scan, apikeys_policy_hash);
		victim = hash_seq_search(&scan);
		if (victim)
		{
			hash_seq_term(&scan);
			hash_search(apikeys_policy_hash, &victim->key, HASH_REMOVE, NULL);
			pg_atomic_fetch_add_u64(&apikeys_shared->cache_evictions, 1);
		}
		entry = hash_search(apikeys_policy_hash, &key, HASH_ENTER_NULL, &found);
	}
	if (entry)
	{
		entry->generation = generation;
		entry->credential_rel = credential_rel;
		memcpy(&entry->policy, policy, offsetof(KeyPolicy, tenant));
		entry->tenant_len = tlen;
		entry->name_len = nlen;
		entry->scopes_len = slen;
		memcpy(entry->vardata, policy->tenant, VARSIZE(policy->tenant));
		memcpy(entry->vardata + tlen, policy->name, VARSIZE(policy->name));
		memcpy(entry->vardata + tlen + nlen, policy->scopes, slen);
	}
	LWLockRelease(apikeys_shared->cache_lock);
}
