/*
 * policy_cache.h - the shared-memory cache of key policies (policy_cache.c),
 * a slot_table.c table.
 *
 * Locking protocol: partition lock shared to look up and copy an entry out,
 * exclusive to fill or evict.  An entry is used only while its stamp is
 * current (inval_stamps.h).
 */
#ifndef APIKEYS_POLICY_CACHE_H
#define APIKEYS_POLICY_CACHE_H

#include "policy.h"
#include "slot_table.h"

typedef struct PolicyCacheKey
{
	Oid			dbid;
	uint8		digest[APIKEYS_DIGEST_LEN];
} PolicyCacheKey;

/*
 * About 450 bytes an entry, so a cache can hold every key of a big
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

extern SlotTable apikeys_policy_table;

extern bool apikeys_cache_lookup(const uint8 *digest, TimestampTz now, KeyPolicy *policy);
extern void apikeys_cache_store(const uint8 *digest, uint64 stamp, TimestampTz now,
								const KeyPolicy *policy);

#endif
