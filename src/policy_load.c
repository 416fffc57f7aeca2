/*
 * policy_load.c - read one secret's policy straight from the tables: a probe
 * of the unique digest index on apikeys.secret, then of the primary keys of
 * apikeys.credential and apikeys.tenant.  No SPI, no planner, no permission
 * or RLS checks (EXECUTE on verify is the privilege).
 *
 * generation: the shared cache generation read before this call (0: do not
 * cache), under which tenants' active flags may be remembered.
 *
 * The scans use the latest snapshot, not the statement's: a key revoked by a
 * transaction that has committed is refused even inside an older REPEATABLE
 * READ transaction, and the shared cache (policy_cache.c) relies on it.
 */
#include "policy.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/*
 * Probe the unique index indexid of an open relation for the row whose
 * first index column equals value; a copy of it, or NULL.
 */
HeapTuple
apikeys_probe_rel(Relation rel, Oid indexid, RegProcedure eqproc, Datum value,
				  Oid collation, Snapshot snapshot)
{
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tuple;

	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   collation, eqproc, value);
	scan = systable_beginscan(rel, indexid, true, snapshot, 1, &skey);
	tuple = systable_getnext(scan);
	if (tuple)
		tuple = heap_copytuple(tuple);
	systable_endscan(scan);
	return tuple;
}

/* The same, opening relid (AccessShareLock); the caller closes *rel_out. */
HeapTuple
apikeys_probe_unique(Oid relid, Oid indexid, RegProcedure eqproc, Datum value,
			 Oid collation, Snapshot snapshot, TupleDesc *desc_out, Relation *rel_out)
{
	Relation	rel = table_open(relid, AccessShareLock);

	*desc_out = RelationGetDescr(rel);
	*rel_out = rel;
	return apikeys_probe_rel(rel, indexid, eqproc, value, collation, snapshot);
}

int32
apikeys_interval_seconds(Datum d)
{
	Interval   *iv = DatumGetIntervalP(d);
	int64		s = iv->time / USECS_PER_SEC + (int64) iv->day * SECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * SECS_PER_DAY;

	/*
	 * A fraction of a second counts as a whole one (1.9 s is 2 s, never 1):
	 * the functions take whole seconds only, but a 1.0 key may hold a
	 * fraction, and its window must not be enforced shorter than it says.
	 */
	if (iv->time % USECS_PER_SEC > 0)
		s++;
	return (int32) Max(Min(s, PG_INT32_MAX), 1);
}

/*
 * A key's credits (1.1): columns credits, credits_at, credits_since,
 * credits_refill, credits_refill_interval, credits_refill_day, in this
 * order from attnum `first`.  credits NULL: none (out->credits stays -1).
 */
static void
load_credits(HeapTuple tuple, TupleDesc desc, AttrNumber first, CreditsSpec *out)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, first, desc, &isnull);

	if (isnull || desc->natts < first + 5)
		return;
	out->credits = DatumGetInt64(d);
	d = heap_getattr(tuple, first + 1, desc, &isnull);
	out->at = isnull ? DT_NOBEGIN : DatumGetTimestampTz(d);
	d = heap_getattr(tuple, first + 2, desc, &isnull);
	out->since = isnull ? DT_NOBEGIN : DatumGetTimestampTz(d);
	d = heap_getattr(tuple, first + 3, desc, &isnull);
	out->refill = isnull ? 0 : DatumGetInt64(d);
	d = heap_getattr(tuple, first + 4, desc, &isnull);
	out->refill_s = isnull ? 0 : apikeys_interval_seconds(d);
	d = heap_getattr(tuple, first + 5, desc, &isnull);
	out->refill_day = isnull ? 0 : (int16) DatumGetInt32(d);
	if (out->refill_s == 0 && out->refill_day == 0)
		out->refill = 0;
}

static void
load_cidrs(Datum d, KeyPolicy *p)
{
	ArrayType  *arr = DatumGetArrayTypeP(d);
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(arr, CIDROID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	p->ncidrs = 0;
	for (int i = 0; i < n && p->ncidrs < POLICY_MAX_CIDRS; i++)
	{
		inet	   *c;

		if (nulls[i])
			continue;
		c = DatumGetInetPP(elems[i]);
		memcpy(&p->cidrs[p->ncidrs++], VARDATA_ANY(c), Min(VARSIZE_ANY_EXHDR(c), sizeof(inet_struct)));
	}
}

/*
 * Parse an apikeys.named_limit[] (name text, max_uses integer, per
 * interval) into out (at most POLICY_MAX_LIMITS); returns how many.  The
 * management functions check what they store (apikeys_internal.check_limits);
 * here anything else (NULL parts, a long name, a window outside 1 second to
 * 1 day) is skipped rather than misread.  A limit over the maximum count
 * cannot be stored either.
 */
int
apikeys_load_limits(Datum d, LimitSpec *out)
{
	ArrayType  *arr = DatumGetArrayTypeP(d);
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				k = 0;
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(ARR_ELEMTYPE(arr), &typlen, &typbyval, &typalign);
	deconstruct_array(arr, ARR_ELEMTYPE(arr), typlen, typbyval, typalign, &elems, &nulls, &n);
	for (int i = 0; i < n && k < POLICY_MAX_LIMITS; i++)
	{
		HeapTupleHeader t;
		bool		isnull[3];
		Datum		name,
					max_uses,
					per;
		text	   *nm;

		if (nulls[i])
			continue;
		t = DatumGetHeapTupleHeader(elems[i]);
		name = GetAttributeByNum(t, 1, &isnull[0]);
		max_uses = GetAttributeByNum(t, 2, &isnull[1]);
		per = GetAttributeByNum(t, 3, &isnull[2]);
		if (isnull[0] || isnull[1] || isnull[2])
			continue;
		nm = DatumGetTextPP(name);
		if (VARSIZE_ANY_EXHDR(nm) == 0 || VARSIZE_ANY_EXHDR(nm) >= LIMIT_NAME_LEN ||
			DatumGetInt32(max_uses) <= 0)
			continue;
		memset(out[k].name, 0, LIMIT_NAME_LEN);
		memcpy(out[k].name, VARDATA_ANY(nm), VARSIZE_ANY_EXHDR(nm));
		out[k].max_uses = DatumGetInt32(max_uses);
		out[k].window_s = apikeys_interval_seconds(per);
		if (out[k].window_s > SECS_PER_DAY)
			continue;
		k++;
	}
	return k;
}

/*
 * Tenants' active flags, per backend, kept while the shared generation is
 * the one read before the snapshots they were loaded with.  (Not "while the
 * floor is not past it": a tenant change bumps the generation before it
 * raises the floor, and a flag read in between would be stored in the shared
 * cache under the new generation.)
 */
typedef struct TenantCacheEntry
{
	char		tenant[NAMEDATALEN + 16];
	bool		active;
	int16		nlimits;
	LimitSpec	limits[POLICY_MAX_LIMITS];
} TenantCacheEntry;

static HTAB *tenant_cache = NULL;
static uint64 tenant_cache_generation = 0;

/* The tenant's active flag, and its named limits into p (tenant.limits). */
static bool
tenant_active(text *tenant, Snapshot snapshot, uint64 generation, KeyPolicy *p)
{
	const ApikeysCatalog *cat = apikeys_catalog();
	char		key[NAMEDATALEN + 16];
	TenantCacheEntry *entry = NULL;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	tuple;
	bool		isnull;
	bool		active;
	size_t		len = VARSIZE_ANY_EXHDR(tenant);

	if (generation != 0 && len < sizeof(key))
	{
		if (tenant_cache == NULL || tenant_cache_generation != generation)
		{
			HASHCTL		info;

			if (tenant_cache)
				hash_destroy(tenant_cache);
			memset(&info, 0, sizeof(info));
			info.keysize = sizeof(key);
			info.entrysize = sizeof(TenantCacheEntry);
			info.hcxt = TopMemoryContext;
			tenant_cache = hash_create("apikeys tenants", 64, &info,
									   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
			tenant_cache_generation = generation;
		}
		memset(key, 0, sizeof(key));
		memcpy(key, VARDATA_ANY(tenant), len);
		entry = hash_search(tenant_cache, key, HASH_FIND, NULL);
		if (entry)
		{
			p->ntenant_limits = entry->nlimits;
			memcpy(p->tenant_limits, entry->limits, sizeof(entry->limits));
			return entry->active;
		}
	}

	tuple = apikeys_probe_unique(cat->tenant_rel, cat->tenant_pkey, F_TEXTEQ,
								 PointerGetDatum(tenant), C_COLLATION_OID, snapshot, &desc, &rel);
	active = tuple != NULL &&
		DatumGetBool(heap_getattr(tuple, Anum_tenant_active, desc, &isnull));
	p->ntenant_limits = 0;
	if (tuple != NULL && cat->tenant_limits > 0)
	{
		Datum		d = heap_getattr(tuple, cat->tenant_limits, desc, &isnull);

		if (!isnull)
			p->ntenant_limits = apikeys_load_limits(d, p->tenant_limits);
	}
	table_close(rel, AccessShareLock);

	if (generation != 0 && len < sizeof(key) && hash_get_num_entries(tenant_cache) < 10000)
	{
		entry = hash_search(tenant_cache, key, HASH_ENTER, NULL);
		entry->active = active;
		entry->nlimits = p->ntenant_limits;
		memcpy(entry->limits, p->tenant_limits, sizeof(entry->limits));
	}
	return active;
}

bool
apikeys_policy_load(const uint8 *digest, KeyPolicy *p, uint64 generation)
{
	const ApikeysCatalog *cat = apikeys_catalog();
	Snapshot	snapshot = GetLatestSnapshot();
	uint8		dig[VARHDRSZ + APIKEYS_DIGEST_LEN];
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	tuple;
	bool		isnull;
	Datum		d;
	text	   *status;

	SET_VARSIZE(dig, VARHDRSZ + APIKEYS_DIGEST_LEN);
	memcpy(dig + VARHDRSZ, digest, APIKEYS_DIGEST_LEN);

	tuple = apikeys_probe_unique(cat->secret_rel, cat->secret_pkey, F_BYTEAEQ,
						 PointerGetDatum(dig), InvalidOid, snapshot, &desc, &rel);
	if (tuple == NULL)
	{
		table_close(rel, AccessShareLock);
		return false;
	}
	memcpy(&p->key_id, DatumGetUUIDP(heap_getattr(tuple, Anum_secret_key_id, desc, &isnull)),
		   sizeof(pg_uuid_t));
	d = heap_getattr(tuple, Anum_secret_valid_until, desc, &isnull);
	p->secret_until = isnull ? DT_NOEND : DatumGetTimestampTz(d);
	table_close(rel, AccessShareLock);

	tuple = apikeys_probe_unique(cat->credential_rel, cat->credential_pkey, F_UUID_EQ,
						 UUIDPGetDatum(&p->key_id), InvalidOid, snapshot, &desc, &rel);
	if (tuple == NULL)
	{
		/* a secret without its credential cannot exist (foreign key) */
		table_close(rel, AccessShareLock);
		return false;
	}
	p->tenant = DatumGetTextP(heap_getattr(tuple, Anum_credential_tenant, desc, &isnull));
	p->name = DatumGetTextP(heap_getattr(tuple, Anum_credential_name, desc, &isnull));
	p->scopes = DatumGetArrayTypeP(heap_getattr(tuple, Anum_credential_scopes, desc, &isnull));
	d = heap_getattr(tuple, Anum_credential_expires_at, desc, &isnull);
	p->expires_at = isnull ? DT_NOEND : DatumGetTimestampTz(d);
	status = DatumGetTextPP(heap_getattr(tuple, Anum_credential_status, desc, &isnull));
	if (VARSIZE_ANY_EXHDR(status) == 7 && memcmp(VARDATA_ANY(status), "revoked", 7) == 0)
		p->status = KEY_STATUS_REVOKED;
	else if (VARSIZE_ANY_EXHDR(status) == 8 && memcmp(VARDATA_ANY(status), "disabled", 8) == 0)
		p->status = KEY_STATUS_DISABLED;
	else
		p->status = KEY_STATUS_ACTIVE;

	d = heap_getattr(tuple, Anum_credential_allowed_ips, desc, &isnull);
	p->ncidrs = -1;
	if (!isnull)
		load_cidrs(d, p);
	d = heap_getattr(tuple, Anum_credential_rate_limit, desc, &isnull);
	p->rate_limit = isnull ? 0 : DatumGetInt32(d);
	d = heap_getattr(tuple, Anum_credential_rate_window, desc, &isnull);
	p->rate_window_s = isnull ? 0 : apikeys_interval_seconds(d);
	if (p->rate_window_s == 0)
		p->rate_limit = 0;
	d = heap_getattr(tuple, Anum_credential_usage_limit, desc, &isnull);
	p->usage_limit = isnull ? 0 : DatumGetInt64(d);
	d = heap_getattr(tuple, Anum_credential_usage_period, desc, &isnull);
	p->usage_period_s = isnull ? 0 : apikeys_interval_seconds(d);
	p->nkey_limits = 0;
	memset(p->key_limits, 0, sizeof(p->key_limits));
	memset(p->tenant_limits, 0, sizeof(p->tenant_limits));
	if (cat->credential_limits > 0)
	{
		d = heap_getattr(tuple, cat->credential_limits, desc, &isnull);
		if (!isnull)
			p->nkey_limits = apikeys_load_limits(d, p->key_limits);
	}
	memset(&p->credits, 0, sizeof(p->credits));
	p->credits.credits = -1;
	if (cat->credential_credits > 0)
		load_credits(tuple, desc, cat->credential_credits, &p->credits);
	table_close(rel, AccessShareLock);

	p->tenant_active = tenant_active(p->tenant, snapshot, generation, p);
	return true;
}
