/*
 * usage.c - per-key state in shared memory: rate-limit windows, usage caps
 * and use counts, all without writing to disk on the verify path.
 *
 * Rate limit: a sliding window (rate_window.h): at most rate_limit successes in
 * any interval of rate_window, counted exactly under the entry's spinlock.
 * Usage cap: `used` counts charged uses in the current period (periods
 * aligned to the epoch, or the key's lifetime); it starts from
 * apikeys.usage and the flush worker writes it back every turn.  A crash
 * loses what was charged since the last flush (at most apikeys.flush_interval
 * of traffic): those uses can be spent again.  Counts per outcome and last
 * use are added to apikeys.usage by the flush worker within
 * apikeys.usage_write_delay (sooner when a set fills up), so a key in steady
 * use costs one row write per delay, not one per turn.
 *
 * Tenants share the table fairly: each entry records its key's tenant (a
 * hash), and a tenant's entries beyond apikeys.tenant_share of a set give
 * way to other tenants' keys (claim_entry), so one tenant's many keys cannot
 * make another tenant's limits unavailable or reset its rate windows.
 */
#include "shmem.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "miscadmin.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

/*
 * Which entry a new key takes when both of its sets are full (slot_choose
 * ranks; higher goes first, the least recently used among equals).  Each
 * tenant (apikeys_tenant_hash) may hold `share` = tenant_share x SLOT_WAYS
 * ways of a set (at least 1) against other tenants:
 *
 *   - an entry with nothing unwritten and no open rate window may go for
 *     anyone (nothing is lost: its figures are in apikeys.usage); first
 *     those of the claimant at or over its share and of tenants over theirs;
 *   - an entry with an open rate window but nothing unwritten goes only for
 *     its own tenant's keys or when its tenant is over its share: evicting
 *     it lets the key start its window over;
 *   - an entry with unwritten counts, or whose written counts are still in
 *     flight, goes only when its tenant is over its share of that set and
 *     the claimant is under its own: its unwritten counts (and, for a key
 *     with a cap, uses charged since the last flush, at most flush_interval
 *     of them) are lost and reported in runtime.tracking_dropped; an entry
 *     whose flush has not committed yet never goes.
 *
 * So a tenant filling the table with keys takes its own entries or fails
 * itself (limits_unavailable), and never blocks or resets the keys of a
 * tenant within its share: another tenant is refused only when the key's
 * sets are full of entries of tenants each within their share.
 */
#define RANK_KEEP		0		/* may not go */
#define RANK_LOSSY		1		/* unwritten counts of a tenant over its share */
#define RANK_IN_FLIGHT	2		/* written (committed) but not yet retired, same */
#define RANK_OPEN		3		/* written, rate window open: own or over share */
#define RANK_IDLE		4		/* written, no open window */
#define RANK_IDLE_YIELD 5		/* the same, of the claimant at its share or a tenant over it */

/* how many ways of a set a tenant may hold against others (1..SLOT_WAYS) */
static int
share_ways(void)
{
	int			ways = (int) (apikeys_tenant_share * SLOT_WAYS + 1e-9);

	return Max(Min(ways, SLOT_WAYS), 1);
}

/*
 * Has the flush that took this entry's counts committed (they are in
 * apikeys.usage)?  Reads the commit log: partition lock held, entry's
 * spinlock not (no one else holds it under the exclusive lock).
 */
static bool
flush_committed(const UsageEntry *e)
{
	return TransactionIdIsValid(e->inflight_xid) && TransactionIdDidCommit(e->inflight_xid);
}

/*
 * Rank every way of the key's sets for a claim by tenant `tenant` (see
 * above); lossy: whether entries with unwritten counts may be ranked.
 */
static void
rank_ways(uint32 hash, uint32 tenant, TimestampTz now, bool lossy,
		  uint8 ranks[2 * SLOT_WAYS])
{
	uint32		sets[2];
	int			nsets = slot_sets_of(&apikeys_usage_table, hash, sets);
	int			share = share_ways();

	memset(ranks, RANK_KEEP, 2 * SLOT_WAYS);
	for (int i = 0; i < nsets; i++)
	{
		const UsageEntry *e[SLOT_WAYS];
		int			held[SLOT_WAYS];	/* ways of the set held by way w's tenant */
		int			mine = 0;

		for (int w = 0; w < SLOT_WAYS; w++)
			e[w] = (const UsageEntry *) slot_entry(&apikeys_usage_table, sets[i], w);
		for (int w = 0; w < SLOT_WAYS; w++)
		{
			held[w] = 0;
			if (!e[w]->hdr.used)
				continue;
			for (int v = 0; v < SLOT_WAYS; v++)
				held[w] += e[v]->hdr.used && e[v]->tenant_hash == e[w]->tenant_hash;
			if (e[w]->tenant_hash == tenant)
				mine++;
		}
		for (int w = 0; w < SLOT_WAYS; w++)
		{
			bool		own = e[w]->tenant_hash == tenant;
			bool		reclaim = !own && held[w] > share && mine < share;
			bool		open = limit_open(&e[w]->rate, now);
			uint8		rank;

			if (!e[w]->hdr.used)
				continue;		/* free ways go first anyway (slot_choose) */
			if (e[w]->flushing)
				rank = reclaim && (lossy || !e[w]->dirty) && flush_committed(e[w]) ?
					(e[w]->dirty ? RANK_LOSSY : RANK_IN_FLIGHT) : RANK_KEEP;
			else if (e[w]->dirty)
				rank = reclaim && lossy ? RANK_LOSSY : RANK_KEEP;
			else if (open)
				rank = own || reclaim ? RANK_OPEN : RANK_KEEP;
			else
				rank = reclaim || (own && mine >= share) ? RANK_IDLE_YIELD : RANK_IDLE;
			ranks[i * SLOT_WAYS + w] = rank;
		}
	}
}

/*
 * Take the entry rank_ways picks for key (partition lock exclusive), or
 * NULL.  Counts an eviction; an evicted entry's unwritten counts (only when
 * lossy) are lost: they are added to tracking_dropped and its marks cleared.
 */
static UsageEntry *
claim_entry(uint32 hash, const UsageKey *key, uint32 tenant, TimestampTz now, bool lossy)
{
	uint8		ranks[2 * SLOT_WAYS];
	UsageEntry *e;

	rank_ways(hash, tenant, now, lossy, ranks);
	e = (UsageEntry *) slot_choose(&apikeys_usage_table, hash, ranks);
	if (e == NULL)
		return NULL;
	if (e->hdr.used)
	{
		Size		idx = slot_index(&apikeys_usage_table, &e->hdr);
		uint32		bit = 1U << (idx % SLOT_WAYS);
		int64		lost = 0;

		pg_atomic_fetch_add_u64(&apikeys_shared->usage_evictions, 1);
		if (e->dirty)
		{
			for (int i = 0; i < VERDICT_COUNT; i++)
				lost += e->counts_pending[i];
			pg_atomic_fetch_add_u64(&apikeys_shared->tracking_dropped, lost);
			pg_atomic_fetch_and_u32(&apikeys_usage_dirty[idx / SLOT_WAYS], ~bit);
			pg_atomic_fetch_and_u32(&apikeys_usage_urgent[idx / SLOT_WAYS], ~bit);
		}
	}
	slot_take(&apikeys_usage_table, hash, key, &e->hdr);
	e->tenant_hash = tenant;
	SpinLockInit(&e->mutex);
	limit_init(&e->rate);
	e->usage_period = -1;
	return e;
}

/*
 * The databases whose entries fill the key's two sets (partition lock held):
 * at most 2 x SLOT_WAYS, usually one.
 */
static int
full_sets_databases(uint32 hash, Oid *dbids)
{
	uint32		sets[2];
	int			nsets = slot_sets_of(&apikeys_usage_table, hash, sets);
	int			n = 0;

	for (int i = 0; i < nsets; i++)
		for (int w = 0; w < SLOT_WAYS; w++)
		{
			const UsageEntry *e = (const UsageEntry *) slot_entry(&apikeys_usage_table, sets[i], w);
			int			k = 0;

			if (!e->hdr.used)
				continue;
			while (k < n && dbids[k] != e->key.dbid)
				k++;
			if (k == n)
				dbids[n++] = e->key.dbid;
		}
	return n;
}

/*
 * Unwritten entries of a database dropped meanwhile (its worker never ran,
 * or could not write before the drop) would hold their ways for ever:
 * free them.  Removes those databases from dbids; true if any was freed.
 */
static bool
forget_dropped_databases(uint32 hash, Oid *dbids, int *ndbs)
{
	uint32		sets[2];
	int			nsets = slot_sets_of(&apikeys_usage_table, hash, sets);
	LWLock	   *lock = slot_lock(&apikeys_usage_table, sets[0]);
	bool		freed = false;
	int			kept = 0;
	int			k;

	/* the usual case, one database filling its own sets: no catalog work */
	for (k = 0; k < *ndbs && dbids[k] == MyDatabaseId; k++)
		;
	if (k == *ndbs)
		return false;

	/*
	 * A database created during this statement must be seen: its entries
	 * are live.  Its creation committed before any of them existed.
	 */
	AcceptInvalidationMessages();
	InvalidateCatalogSnapshot();
	for (k = 0; k < *ndbs; k++)
	{
		if (dbids[k] == MyDatabaseId ||
			SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dbids[k])))
		{
			dbids[kept++] = dbids[k];
			continue;
		}
		LWLockAcquire(lock, LW_EXCLUSIVE);
		for (int i = 0; i < nsets; i++)
			for (int w = 0; w < SLOT_WAYS; w++)
			{
				UsageEntry *e = (UsageEntry *) slot_entry(&apikeys_usage_table, sets[i], w);
				uint32		bit = 1U << w;

				if (!e->hdr.used || e->key.dbid != dbids[k] || e->flushing)
					continue;
				slot_release(&apikeys_usage_table, &e->hdr);
				pg_atomic_fetch_and_u32(&apikeys_usage_dirty[sets[i]], ~bit);
				pg_atomic_fetch_and_u32(&apikeys_usage_urgent[sets[i]], ~bit);
				freed = true;
			}
		LWLockRelease(lock);
	}
	*ndbs = kept;
	return freed;
}

/*
 * The key's two sets are full of unwritten entries of the databases dbids:
 * have those written at the workers' next turn, and wake the workers,
 * unless an earlier call did so already.  Writing everything instead would
 * cost the worker seconds for a handful of entries.  A database may have no
 * worker running (it exited, or is still starting): it gets one, which
 * writes urgent sets at its first turn.
 */
static void
hurry_sets(uint32 hash, const Oid *dbids, int ndbs)
{
	uint32		sets[2];
	int			nsets = slot_sets_of(&apikeys_usage_table, hash, sets);
	bool		news = false;

	for (int i = 0; i < nsets; i++)
	{
		uint32		dirty = pg_atomic_read_u32(&apikeys_usage_dirty[sets[i]]);
		uint32		before = pg_atomic_fetch_or_u32(&apikeys_usage_urgent[sets[i]], dirty);

		news |= (dirty & ~before) != 0;
	}
	if (news)
		apikeys_flush_worker_hurry();
	for (int i = 0; i < ndbs; i++)
		apikeys_flush_worker_wake(dbids[i]);
}

/*
 * Find or create the entry of a key and return it with its partition lock
 * held (*lock; the caller releases it), so it cannot be evicted while in use.
 * NULL, with no lock held, when no entry of the key's two sets may go for it
 * (claim_entry).  Only a new key pays for the tenant hash and the ranking.
 */
static UsageEntry *
usage_entry(const KeyPolicy *p, TimestampTz now, LWLock **lock)
{
	UsageKey	key;
	UsageEntry *entry;
	uint32		set,
					hash;
	bool		forgot = false;
	bool		lossy = false;

	memset(&key, 0, sizeof(key));
	key.dbid = MyDatabaseId;
	memcpy(&key.key_id, &p->key_id, sizeof(pg_uuid_t));
	hash = slot_hash(&apikeys_usage_table, &key);
	set = slot_set(&apikeys_usage_table, hash);
	*lock = slot_lock(&apikeys_usage_table, set);

	LWLockAcquire(*lock, LW_SHARED);
	entry = (UsageEntry *) slot_find(&apikeys_usage_table, hash, &key);
	if (entry)
		return entry;
	LWLockRelease(*lock);

retry:
	LWLockAcquire(*lock, LW_EXCLUSIVE);
	entry = (UsageEntry *) slot_find(&apikeys_usage_table, hash, &key);
	if (entry == NULL)
		entry = claim_entry(hash, &key, apikeys_tenant_hash(MyDatabaseId, p->tenant), now, lossy);
	if (entry == NULL)
	{
		Oid			dbids[2 * SLOT_WAYS];
		int			ndbs = full_sets_databases(hash, dbids);

		LWLockRelease(*lock);
		/* dropped databases' entries go first, losing nothing anyone reads */
		if (!forgot)
		{
			forgot = true;
			if (forget_dropped_databases(hash, dbids, &ndbs))
				goto retry;
		}
		/* then the unwritten counts of a tenant over its share */
		if (!lossy)
		{
			lossy = true;
			goto retry;
		}
		pg_atomic_fetch_add_u64(&apikeys_shared->tracking_dropped, 1);
		hurry_sets(hash, dbids, ndbs);
	}
	return entry;
}

static int64
period_index(int32 period_s, TimestampTz t)
{
	return period_s > 0 ? t / ((int64) period_s * USECS_PER_SEC) : 0;
}

/* uses already charged in this period, from apikeys.usage */
static int64
load_used(const KeyPolicy *p, int64 period)
{
	const ApikeysCatalog *cat = apikeys_catalog();
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	tuple;
	bool		isnull;
	int64		used = 0;

	tuple = apikeys_probe_unique(cat->usage_rel, cat->usage_pkey, F_UUID_EQ,
								 UUIDPGetDatum(&p->key_id), InvalidOid,
								 GetLatestSnapshot(), &desc, &rel);
	if (tuple)
	{
		Datum		start = heap_getattr(tuple, Anum_usage_period_start, desc, &isnull);

		if (p->usage_period_s == 0 ||
			(!isnull && period_index(p->usage_period_s, DatumGetTimestampTz(start)) == period))
		{
			Datum		d = heap_getattr(tuple, Anum_usage_used, desc, &isnull);

			used = isnull ? 0 : DatumGetInt64(d);
		}
	}
	table_close(rel, AccessShareLock);
	return used;
}

static void
count_locked(UsageEntry *e, VerdictCode code, TimestampTz now)
{
	Size		idx = slot_index(&apikeys_usage_table, &e->hdr);
	uint32		bit = 1U << (idx % SLOT_WAYS);

	e->counts_pending[code]++;
	if (code == V_VALID)
		e->last_used_at = now;
	if (!e->dirty)
		pg_atomic_fetch_or_u32(&apikeys_usage_dirty[idx / SLOT_WAYS], bit);
	if (e->base_loaded && !e->urgent_marked)
	{
		pg_atomic_fetch_or_u32(&apikeys_usage_urgent[idx / SLOT_WAYS], bit);
		e->urgent_marked = true;
	}
	e->dirty = true;
}

/*
 * A key with limits found no entry: refuse it rather than answer without
 * enforcing them.  53400 (configuration_limit_exceeded): the table sized by
 * apikeys.tracked_keys (and apikeys.tenant_share) is full, as PostgreSQL
 * reports a full replication slot array; the full sets are being written,
 * so a retry may succeed.
 */
static void
no_room_for_limits(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("limits_unavailable: no room to track this key's limits in shared memory"),
			 errdetail("Every entry this key may use holds unwritten counts or an open rate window that may not be evicted for it (apikeys.tenant_share)."),
			 errhint("Raise apikeys.tracked_keys.")));
}

VerdictCode
apikeys_usage_charge(const KeyPolicy *p, TimestampTz now, RateVerdict *rv)
{
	UsageEntry *e;
	LWLock	   *lock;
	VerdictCode code = V_VALID;
	LimitReport lr;
	int64		period = period_index(p->usage_period_s, now);
	int64		base = 0;

	rv->limit = p->rate_limit;
	rv->remaining = 0;
	rv->reset = 0;
	rv->usage_remaining = -1;

	if (!apikeys_shmem_ready())
	{
		if (p->rate_limit > 0 || p->usage_limit > 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("limits_unavailable: this key has a rate limit or usage cap, but apikeys is not loaded through shared_preload_libraries"),
					 errdetail("Limits are kept in shared memory; without it they cannot be enforced."),
					 errhint("Add apikeys to shared_preload_libraries in postgresql.conf and restart the server.")));
		return V_VALID;
	}

	e = usage_entry(p, now, &lock);
	if (e == NULL)
	{
		if (p->rate_limit > 0 || p->usage_limit > 0)
			no_room_for_limits();
		return V_VALID;
	}

	/* read the stored use count once per entry and period, outside locks */
	if (p->usage_limit > 0)
	{
		bool		need;

		SpinLockAcquire(&e->mutex);
		need = !e->base_loaded || e->usage_period != period;
		SpinLockRelease(&e->mutex);
		if (need)
		{
			LWLockRelease(lock);
			base = load_used(p, period);
			if ((e = usage_entry(p, now, &lock)) == NULL)
				no_room_for_limits();
		}
	}

	SpinLockAcquire(&e->mutex);
	if (p->usage_limit > 0 && (!e->base_loaded || e->usage_period != period))
	{
		/* a new period starts from zero; a first look starts from the table */
		e->used = (e->base_loaded && e->usage_period != period) ? 0 : base;
		e->usage_period = period;
		e->usage_period_s = p->usage_period_s;
		e->base_loaded = true;
	}
	if (p->rate_limit > 0 &&
		!limit_check(&e->rate, p->rate_limit, p->rate_window_s, now, 1, &lr))
		code = V_RATE_LIMITED;
	if (code == V_VALID && p->usage_limit > 0)
	{
		if (e->used >= p->usage_limit)
			code = V_USAGE_EXCEEDED;
		else
			e->used++;
	}
	if (p->rate_limit > 0)
	{
		/* the window counts successes only: a call over the cap is not one */
		if (code == V_VALID)
			limit_charge(&e->rate, p->rate_limit, now, 1, &lr);
		rv->remaining = lr.remaining;
		rv->reset = lr.reset;
	}
	if (p->usage_limit > 0)
		rv->usage_remaining = Max(p->usage_limit - e->used, 0);
	count_locked(e, code, now);
	e->hdr.last_use = now;
	SpinLockRelease(&e->mutex);
	LWLockRelease(lock);

	apikeys_flush_worker_wake(MyDatabaseId);
	return code;
}

void
apikeys_usage_count(const KeyPolicy *p, VerdictCode code, TimestampTz now)
{
	UsageEntry *e;
	LWLock	   *lock;

	if (!apikeys_shmem_ready() || (e = usage_entry(p, now, &lock)) == NULL)
		return;
	SpinLockAcquire(&e->mutex);
	count_locked(e, code, now);
	e->hdr.last_use = now;
	SpinLockRelease(&e->mutex);
	LWLockRelease(lock);
	apikeys_flush_worker_wake(MyDatabaseId);
}
