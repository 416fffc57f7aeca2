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
#include "shmem.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/hsearch.h"
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

	return (int32) Max(Min(s, PG_INT32_MAX), 1);
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
} TenantCacheEntry;

static HTAB *tenant_cache = NULL;
static uint64 tenant_cache_generation = 0;

static bool
tenant_active(text *tenant, Snapshot snapshot, uint64 generation)
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
			return entry->active;
	}

	tuple = apikeys_probe_unique(cat->tenant_rel, cat->tenant_pkey, F_TEXTEQ,
								 PointerGetDatum(tenant), C_COLLATION_OID, snapshot, &desc, &rel);
	active = tuple != NULL &&
		DatumGetBool(heap_getattr(tuple, Anum_tenant_active, desc, &isnull));
	table_close(rel, AccessShareLock);

	if (generation != 0 && len < sizeof(key) && hash_get_num_entries(tenant_cache) < 10000)
	{
		entry = hash_search(tenant_cache, key, HASH_ENTER, NULL);
		entry->active = active;
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
	table_close(rel, AccessShareLock);

	p->tenant_active = tenant_active(p->tenant, snapshot, generation);
	return true;
}
