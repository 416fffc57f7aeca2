/*
 * policy_cache.c - secrets' policies in shared memory, so a verify of a
 * known key costs a lookup in a small set instead of three index probes.
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
 * Time-dependent checks (expiry, rotation grace) are made at lookup.  A
 * full set replaces its least recently used entry (slot_table.c).
 */
#include "shmem.h"

#include "miscadmin.h"

static void
cache_key(const uint8 *digest, PolicyCacheKey *key)
{
	memset(key, 0, sizeof(*key));
	key->dbid = MyDatabaseId;
	memcpy(key->digest, digest, APIKEYS_DIGEST_LEN);
}

bool
apikeys_cache_lookup(const uint8 *digest, uint64 generation, KeyPolicy *policy)
{
	PolicyCacheKey key;
	PolicyCacheEntry *entry;
	bool		hit = false;
	Oid			credential_rel = apikeys_catalog()->credential_rel;
	uint32		set;
	LWLock	   *lock;

	cache_key(digest, &key);
	set = slot_set_of(&apikeys_policy_table, &key);
	lock = slot_lock(&apikeys_policy_table, set);

	LWLockAcquire(lock, LW_SHARED);
	entry = (PolicyCacheEntry *) slot_find(&apikeys_policy_table, set, &key);
	if (entry && entry->generation == generation &&
		entry->credential_rel == credential_rel)
	{
		Size		len = entry->tenant_len + entry->name_len + entry->scopes_len;
		char	   *buf = palloc(len);

		memcpy(policy, &entry->policy, offsetof(KeyPolicy, tenant));
		memcpy(buf, entry->vardata, len);
		policy->tenant = (text *) buf;
		policy->name = (text *) (buf + entry->tenant_len);
		policy->scopes = (ArrayType *) (buf + entry->tenant_len + entry->name_len);
		entry->hdr.last_use = GetCurrentTimestamp();	/* a racy hint is fine */
		hit = true;
	}
	LWLockRelease(lock);
	pg_atomic_fetch_add_u64(hit ? &apikeys_shared->cache_hits : &apikeys_shared->cache_misses, 1);
	return hit;
}

void
apikeys_cache_store(const uint8 *digest, uint64 generation, const KeyPolicy *policy)
{
	PolicyCacheKey key;
	PolicyCacheEntry *entry;
	Size		tlen = INTALIGN(VARSIZE(policy->tenant));
	Size		nlen = INTALIGN(VARSIZE(policy->name));
	Size		slen = VARSIZE(policy->scopes);
	Oid			credential_rel = apikeys_catalog()->credential_rel;
	bool		evicted;
	uint32		set;
	LWLock	   *lock;

	/* policies with big names or many scopes are not cached */
	if (tlen + nlen + slen > POLICY_VARDATA)
		return;

	cache_key(digest, &key);
	set = slot_set_of(&apikeys_policy_table, &key);
	lock = slot_lock(&apikeys_policy_table, set);

	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (pg_atomic_read_u64(&apikeys_shared->generation) != generation)
	{
		LWLockRelease(lock);
		return;					/* already outdated */
	}
	entry = (PolicyCacheEntry *) slot_find(&apikeys_policy_table, set, &key);
	if (entry == NULL)
	{
		entry = (PolicyCacheEntry *) slot_claim(&apikeys_policy_table, set, &key, NULL, &evicted);
		if (evicted)
			pg_atomic_fetch_add_u64(&apikeys_shared->cache_evictions, 1);
	}
	entry->hdr.last_use = GetCurrentTimestamp();
	entry->generation = generation;
	entry->credential_rel = credential_rel;
	memcpy(&entry->policy, policy, offsetof(KeyPolicy, tenant));
	entry->tenant_len = tlen;
	entry->name_len = nlen;
	entry->scopes_len = slen;
	memcpy(entry->vardata, policy->tenant, VARSIZE(policy->tenant));
	memcpy(entry->vardata + tlen, policy->name, VARSIZE(policy->name));
	memcpy(entry->vardata + tlen + nlen, policy->scopes, slen);
	LWLockRelease(lock);
}
