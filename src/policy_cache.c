/*
 * policy_cache.c - secrets' policies in shared memory, so a verify of a
 * known key costs a lookup in a small set instead of two index probes.
 *
 * Never serves a stale policy:
 *   - every committed UPDATE or DELETE of apikeys.tenant, credential or
 *     secret raises, after the commit became visible, the stamp of the
 *     changed keys (or the floor of all entries) to a new generation
 *     (changes.c); an entry is used only while its own stamp is not older
 *     (apikeys_stamp_current);
 *   - a filler reads the generation BEFORE taking the snapshot it loads the
 *     policy with (policy_load.c uses the latest snapshot), so a commit
 *     racing with the fill leaves the entry stale from the start;
 *   - while such a commit is between becoming visible and raising the
 *     stamps, nobody uses or fills the cache; a transaction that changed key
 *     data itself, and hot standbys (WAL replay runs no triggers), bypass it
 *     (verify.c).
 * Time-dependent checks (expiry, rotation grace) are made at lookup.  A
 * full set replaces its least recently used entry (slot_table.c).
 */
#include "inval_stamps.h"
#include "policy_cache.h"

#include "miscadmin.h"

static void
cache_key(const uint8 *digest, PolicyCacheKey *key)
{
	memset(key, 0, sizeof(*key));
	key->dbid = MyDatabaseId;
	memcpy(key->digest, digest, APIKEYS_DIGEST_LEN);
}

bool
apikeys_cache_lookup(const uint8 *digest, TimestampTz now, KeyPolicy *policy)
{
	PolicyCacheKey key;
	PolicyCacheEntry *entry;
	bool		hit = false;
	Oid			credential_rel = apikeys_catalog()->credential_rel;
	uint32		set,
					hash;
	LWLock	   *lock;

	cache_key(digest, &key);
	hash = slot_hash(&apikeys_policy_table, &key);
	set = slot_set(&apikeys_policy_table, hash);
	lock = slot_lock(&apikeys_policy_table, set);

	LWLockAcquire(lock, LW_SHARED);
	entry = (PolicyCacheEntry *) slot_find(&apikeys_policy_table, hash, &key);
	if (entry && entry->credential_rel == credential_rel)
	{
		memcpy(policy, entry->policy, POLICY_FIXED_LEN);
		hit = apikeys_stamp_current(entry->stamp, &policy->key_id);
	}
	if (hit)
	{
		Size		len = entry->tenant_len + entry->name_len + entry->scopes_len;
		char	   *buf = palloc(len);

		memcpy(buf, entry->vardata, len);
		memcpy(policy->cidrs, entry->vardata + len, entry->cidrs_len);
		policy->tenant = (text *) buf;
		policy->name = (text *) (buf + entry->tenant_len);
		policy->scopes = (ArrayType *) (buf + entry->tenant_len + entry->name_len);
		entry->hdr.last_use = now;	/* a racy hint is fine */
	}
	LWLockRelease(lock);
	pg_atomic_fetch_add_u64(hit ? &apikeys_shared->cache_hits : &apikeys_shared->cache_misses, 1);
	return hit;
}

/* Remember a policy loaded with a snapshot taken after reading `stamp`. */
void
apikeys_cache_store(const uint8 *digest, uint64 stamp, TimestampTz now,
					const KeyPolicy *policy)
{
	PolicyCacheKey key;
	PolicyCacheEntry *entry;
	Size		tlen = INTALIGN(VARSIZE(policy->tenant));
	Size		nlen = INTALIGN(VARSIZE(policy->name));
	Size		slen = VARSIZE(policy->scopes);
	Size		clen = policy->ncidrs > 0 ? policy->ncidrs * sizeof(inet_struct) : 0;
	Oid			credential_rel = apikeys_catalog()->credential_rel;
	bool		evicted;
	uint32		set,
					hash;
	LWLock	   *lock;

	if (tlen + nlen + slen + clen > POLICY_VARDATA)
		return;

	cache_key(digest, &key);
	hash = slot_hash(&apikeys_policy_table, &key);
	set = slot_set(&apikeys_policy_table, hash);
	lock = slot_lock(&apikeys_policy_table, set);

	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (!apikeys_stamp_current(stamp, &policy->key_id))
	{
		LWLockRelease(lock);
		return;					/* changed since the snapshot was taken */
	}
	entry = (PolicyCacheEntry *) slot_find(&apikeys_policy_table, hash, &key);
	if (entry == NULL)
	{
		entry = (PolicyCacheEntry *) slot_claim(&apikeys_policy_table, hash, &key, NULL, &evicted);
		if (evicted)
			pg_atomic_fetch_add_u64(&apikeys_shared->cache_evictions, 1);
	}
	entry->hdr.last_use = now;
	entry->stamp = stamp;
	entry->credential_rel = credential_rel;
	memcpy(entry->policy, policy, POLICY_FIXED_LEN);
	entry->tenant_len = tlen;
	entry->name_len = nlen;
	entry->scopes_len = slen;
	entry->cidrs_len = clen;
	memcpy(entry->vardata, policy->tenant, VARSIZE(policy->tenant));
	memcpy(entry->vardata + tlen, policy->name, VARSIZE(policy->name));
	memcpy(entry->vardata + tlen + nlen, policy->scopes, slen);
	memcpy(entry->vardata + tlen + nlen + slen, policy->cidrs, clen);
	LWLockRelease(lock);
}
