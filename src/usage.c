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
 * of traffic): those uses can be spent again.  Credits (policy.h
 * CreditsSpec) are charged the same way: a cap whose period starts at the
 * last set or refill and whose size is the period's balance, so they have
 * the cap's crash rule; the balance itself is a table row, written only by
 * apikey_set_credits, _add_ and _subtract_.  Counts per outcome and last
 * use are added to apikeys.usage by the flush worker within
 * apikeys.usage_write_delay (sooner when a set fills up), so a key in steady
 * use costs one row write per delay, not one per turn.
 *
 * A PostgREST route's limits (apikeys.postgrest_route.limits) are counted per
 * key and route in an entry of their own ("Route limits" below).
 *
 * Tenants share the table fairly: each entry records its key's tenant (a
 * hash), and a tenant's entries beyond apikeys.tenant_share of a set give
 * way to other tenants' keys (claim_entry), so one tenant's many keys cannot
 * make another tenant's limits unavailable or reset its rate windows.
 */
#include "shmem.h"
#include "usage.h"
#include "usage_entry.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "miscadmin.h"
#include "utils/datetime.h"
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

/* Does the entry count uses in a window still open (rate_window.h)? */
static bool
entry_open(const UsageEntry *e, TimestampTz now)
{
	if (limit_open(&e->rate, now))
		return true;
	for (int i = 0; i < POLICY_MAX_LIMITS; i++)
		if (e->named_name[i][0] != '\0' && limit_open(&e->named[i], now))
			return true;
	return false;
}

/* how many ways of a set a tenant may hold against others (1..SLOT_WAYS) */
static int
share_ways(void)
{
	int			ways = (int) (apikeys_tenant_share * SLOT_WAYS + 1e-9);

	return Max(Min(ways, SLOT_WAYS), 1);
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
			bool		open = entry_open(e[w], now);
			uint8		rank;

			if (!e[w]->hdr.used)
				continue;		/* free ways go first anyway (slot_choose) */
			if (usage_entry_unsettled(e[w]))
				rank = reclaim && usage_entry_evictable(e[w], lossy) ?
					(usage_entry_has_pending(e[w]) ? RANK_LOSSY : RANK_IN_FLIGHT) : RANK_KEEP;
			else if (open && e[w]->tenant_limits)
				rank = RANK_KEEP;	/* a tenant's shared window: never reset */
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
		int64		lost;

		pg_atomic_fetch_add_u64(&apikeys_shared->usage_evictions, 1);
		lost = usage_entry_evict(e);
		if (lost > 0)
			pg_atomic_fetch_add_u64(&apikeys_shared->tracking_dropped, lost);
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

				if (!e->hdr.used || e->key.dbid != dbids[k] || usage_entry_in_flight(e))
					continue;
				usage_entry_release(e);
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
		news |= usage_marks_hurry(sets[i]);
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
usage_entry_of(const UsageKey *keyp, const text *tenant, bool tenant_limits,
			   TimestampTz now, LWLock **lock)
{
	UsageKey	key = *keyp;
	UsageEntry *entry;
	uint32		set,
					hash;
	bool		forgot = false;
	bool		lossy = false;

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
	{
		entry = claim_entry(hash, &key, apikeys_tenant_hash(MyDatabaseId, tenant), now, lossy);
		if (entry)
			entry->tenant_limits = tenant_limits;
	}
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

/* The entry of the key of policy p (see usage_entry_of). */
static UsageEntry *
usage_entry(const KeyPolicy *p, TimestampTz now, LWLock **lock)
{
	UsageKey	key;

	memset(&key, 0, sizeof(key));
	key.dbid = MyDatabaseId;
	memcpy(&key.key_id, &p->key_id, sizeof(pg_uuid_t));
	return usage_entry_of(&key, p->tenant, false, now, lock);
}

/*
 * The entry holding the named limits of p's tenant, shared by all its keys:
 * keyed on an id made from the tenant's name and the extension's instance
 * (SHA-256), with the variant
 * bits zero, which no key id has (key_id.c makes RFC 9562 ids), so
 * it never meets a key's entry.
 */
static UsageEntry *
tenant_entry(const KeyPolicy *p, TimestampTz now, LWLock **lock)
{
	/* the last tenant's id, per backend: a tenant's keys come in runs */
	static char last_tenant[NAMEDATALEN + 16];
	static size_t last_len = 0;
	static Oid	last_rel = InvalidOid;
	static UsageKey key;
	size_t		len = VARSIZE_ANY_EXHDR(p->tenant);
	Oid			rel = apikeys_catalog()->credential_rel;

	if (len >= sizeof(last_tenant) || len != last_len || key.dbid != MyDatabaseId ||
		rel != last_rel || memcmp(last_tenant, VARDATA_ANY(p->tenant), len) != 0)
	{
		uint8		digest[APIKEYS_DIGEST_LEN];
		StringInfoData buf;

		/*
		 * The extension's instance (its table's OID) is part of the id: a
		 * tenant of a new CREATE EXTENSION starts from nothing, as its keys
		 * do.  A tenant deleted and created again by the same name keeps
		 * its windows (counted in them, never fewer).
		 */
		initStringInfo(&buf);
		appendStringInfo(&buf, "apikeys tenant limits:%u:", rel);
		appendBinaryStringInfo(&buf, VARDATA_ANY(p->tenant), len);
		apikeys_sha256(buf.data, buf.len, digest);
		pfree(buf.data);
		memset(&key, 0, sizeof(key));
		key.dbid = MyDatabaseId;
		memcpy(key.key_id.data, digest, UUID_LEN);
		key.key_id.data[8] &= 0x3f;		/* variant 0: never a generated key id */
		last_len = 0;
		last_rel = rel;
		if (len < sizeof(last_tenant))
		{
			memcpy(last_tenant, VARDATA_ANY(p->tenant), len);
			last_len = len;
		}
	}
	return usage_entry_of(&key, p->tenant, true, now, lock);
}

/*
 * The usage period holding t for periods of period_s seconds aligned to the
 * epoch (0: a lifetime cap, one period), so entries and rows compare periods
 * by index.
 */
static int64
period_index(int32 period_s, TimestampTz t)
{
	return period_s > 0 ? t / ((int64) period_s * USECS_PER_SEC) : 0;
}

/* days in month m (1..12) of year y */
static int
month_days(int y, int m)
{
	return day_tab[isleap(y)][m - 1];
}

/* day `day` (clamped to the month's length) of month m of year y, 00:00 UTC */
static TimestampTz
month_day(int y, int m, int day)
{
	while (m < 1)
		m += 12, y--;
	while (m > 12)
		m -= 12, y++;
	return (TimestampTz) (date2j(y, m, Min(day, month_days(y, m))) - POSTGRES_EPOCH_JDATE) *
		USECS_PER_DAY;
}

/*
 * What a key's credits are at `now` (policy.h): the start of the refill
 * period holding now (DT_NOBEGIN without refill), the period's spending
 * start (that or the last set, whichever is later), its balance (the
 * refill amount once a refill passed since the balance was written), and
 * the next refill.  The one definition: verify charges by it and the SQL
 * functions and views read it (apikeys_internal._credits_state).
 */
void
apikeys_credits_state(const CreditsSpec *c, TimestampTz now, CreditsState *st)
{
	TimestampTz boundary = DT_NOBEGIN;

	Assert(c->credits >= 0);
	Assert(c->refill >= 0 && c->refill_s >= 0 && c->refill_day >= 0 && c->refill_day <= 31);
	st->next_refill = DT_NOEND;
	if (c->refill > 0 && c->refill_s > 0)
	{
		int64		len = (int64) c->refill_s * USECS_PER_SEC;
		int64		q = now / len - (now % len < 0 ? 1 : 0);	/* floor */

		boundary = q * len;
		st->next_refill = boundary + len;
	}
	else if (c->refill > 0 && c->refill_day > 0 &&
			 !TIMESTAMP_NOT_FINITE(now))
	{
		struct pg_tm tm;
		fsec_t		fsec;

		if (timestamp2tm(now, NULL, &tm, &fsec, NULL, NULL) == 0)
		{
			boundary = month_day(tm.tm_year, tm.tm_mon, c->refill_day);
			if (boundary > now)
			{
				st->next_refill = boundary;
				boundary = month_day(tm.tm_year, tm.tm_mon - 1, c->refill_day);
			}
			else
				st->next_refill = month_day(tm.tm_year, tm.tm_mon + 1, c->refill_day);
		}
	}
	st->period_start = Max(boundary, c->since);
	st->balance = (c->refill > 0 && boundary > c->at) ? c->refill : c->credits;
}

/*
 * uses already charged in this period, from apikeys.usage; for credits,
 * `period` is the spending start (the row's period_start must be it)
 */
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

		if (p->credits.credits >= 0 ?
			(!isnull && DatumGetTimestampTz(start) == period) :
			(p->usage_period_s == 0 ||
			 (!isnull && period_index(p->usage_period_s, DatumGetTimestampTz(start)) == period)))
		{
			Datum		d = heap_getattr(tuple, Anum_usage_used, desc, &isnull);

			used = isnull ? 0 : DatumGetInt64(d);
		}
	}
	table_close(rel, AccessShareLock);
	return used;
}

/*
 * Count a verdict in e for apikeys.usage (spinlock held): a key with a
 * usage cap's figure (base_loaded) is written at the next turn, since its
 * `used` is what a crash would lose.
 */
static void
count_locked(UsageEntry *e, VerdictCode code, TimestampTz now)
{
	if (code == V_VALID)
		e->last_used_at = now;
	usage_entry_count(e, code, e->base_loaded);
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

/*
 * What the last verification in this backend said about each limit it
 * checked (apikeys.last_verify_limits()): the key's rate limit, its named
 * limits, its tenant's, the PostgREST route's.  Reset by every verification that gets this far.
 * They are shown only to the role that verified (last_role): after SET ROLE,
 * or to the next client of a pooled connection under another role, a
 * verification's limit names and counts are another tenant's business.
 */
static LimitRow last_rows[1 + 3 * POLICY_MAX_LIMITS];
static int	last_nrows = 0;
static Oid	last_role = InvalidOid;

/*
 * The last verification's limit rows, for apikeys.last_verify_limits()
 * (stats.c): none unless the current role is the one that verified.
 */
int
apikeys_last_limits(const LimitRow **rows)
{
	*rows = last_rows;
	return GetUserId() == last_role ? last_nrows : 0;
}

/* A verification begins, as the current role: it has checked no limit yet. */
void
apikeys_last_limits_reset(void)
{
	last_nrows = 0;
	last_role = GetUserId();
}

/* the key's rate limit (apikey_set_policy), by name, NUL-padded */
static const char rate_limit_name[LIMIT_NAME_LEN] = "rate_limit";

/*
 * What a row's report is made from once the spinlock is released
 * (rows_finish): the limit's state as the hold left it, and its name.
 */
typedef struct LimitSnap
{
	RateState	state;
	int32		limit;
	int32		cost;			/* the call's */
	bool		charged;		/* cost was charged to it */
	const char *name;			/* LIMIT_NAME_LEN bytes, NUL-padded */
} LimitSnap;

static LimitSnap last_snaps[lengthof(last_rows)];

/*
 * Note one limit checked by this verification (apikeys.last_verify_limits()),
 * under the spinlock of the entry holding state: a copy of the state only,
 * the row is finished by rows_finish after the lock is released.
 */
static void
add_row(const char *scope, const char *name, bool passed, const RateState *state,
		int32 limit, int32 cost, bool charged)
{
	LimitRow   *row = &last_rows[last_nrows];
	LimitSnap  *snap = &last_snaps[last_nrows++];

	Assert(last_nrows <= lengthof(last_rows));
	row->scope = scope;
	row->passed = passed;
	row->tightest = false;
	snap->state = *state;
	snap->limit = limit;
	snap->cost = cost;
	snap->charged = charged;
	snap->name = name;
}

/*
 * Finish the rows added since row `from`, outside any lock: their names and
 * their figures (rate_window.h's limit_report, the costly part).
 */
static void
rows_finish(int from)
{
	Assert(from >= 0 && from <= last_nrows);
	for (int i = from; i < last_nrows; i++)
	{
		memcpy(last_rows[i].name, last_snaps[i].name, LIMIT_NAME_LEN);
		limit_report(&last_snaps[i].state, last_snaps[i].limit, last_snaps[i].cost,
					 last_snaps[i].charged, &last_rows[i].report);
	}
}

/*
 * The state of named limit spec in entry e (spinlock held): the one that
 * has its name, else one whose name is no longer among specs[0..n) (a
 * removed limit; a new name starts from nothing).
 */
static RateState *
named_state(UsageEntry *e, const LimitSpec *specs, int n, int i)
{
	int			j;

	for (j = 0; j < POLICY_MAX_LIMITS; j++)
		if (strncmp(e->named_name[j], specs[i].name, LIMIT_NAME_LEN) == 0)
			return &e->named[j];
	for (j = 0; j < POLICY_MAX_LIMITS; j++)
	{
		bool		wanted = false;

		for (int k = 0; k < n && !wanted; k++)
			wanted = strncmp(e->named_name[j], specs[k].name, LIMIT_NAME_LEN) == 0;
		if (!wanted)
			break;
	}
	Assert(j < POLICY_MAX_LIMITS);	/* n <= POLICY_MAX_LIMITS */
	memcpy(e->named_name[j], specs[i].name, LIMIT_NAME_LEN);
	limit_init(&e->named[j]);
	return &e->named[j];
}

/*
 * Check the named limits specs[0..n) in e for cost (spinlock held), and
 * charge them all if all pass and charge is set; one row each (finished by
 * the caller's rows_finish once the lock is released).  *slices: the slice
 * each was charged in, for a refund.
 */
static bool
check_named(UsageEntry *e, const LimitSpec *specs, int n, const char *scope,
			TimestampTz now, int32 cost, bool charge, int64 *slices)
{
	RateState  *st[POLICY_MAX_LIMITS];
	bool		ok[POLICY_MAX_LIMITS];
	bool		all = true;

	for (int i = 0; i < n; i++)
	{
		st[i] = named_state(e, specs, n, i);
		ok[i] = limit_check(st[i], specs[i].max_uses, specs[i].window_s, now, cost);
		all &= ok[i];
	}
	for (int i = 0; i < n; i++)
	{
		bool		charged = all && charge;

		if (charged)
		{
			limit_charge(st[i], cost);
			if (slices)
				slices[i] = st[i]->slice;
		}
		add_row(scope, specs[i].name, ok[i], st[i], specs[i].max_uses, cost, charged);
	}
	return all;
}

/*
 * Check and charge the tenant's named limits of p (its shared entry, one
 * spinlock hold).  False: one refused, nothing charged.  *charged: charges
 * were made, to be refunded (refund_tenant) if the key's own checks refuse.
 */
static bool
charge_tenant(const KeyPolicy *p, TimestampTz now, int32 cost, int64 *slices, bool *charged)
{
	UsageEntry *e;
	LWLock	   *lock;
	bool		ok;
	int			from = last_nrows;

	*charged = false;
	if ((e = tenant_entry(p, now, &lock)) == NULL)
		no_room_for_limits();
	SpinLockAcquire(&e->mutex);
	ok = check_named(e, p->tenant_limits, p->ntenant_limits, "tenant", now, cost,
					 cost > 0, slices);
	e->hdr.last_use = now;
	SpinLockRelease(&e->mutex);
	LWLockRelease(lock);
	rows_finish(from);
	*charged = ok && cost > 0;
	return ok;
}

/*
 * Take back the tenant charges of a call its key's checks refused, from the
 * slices they went to (charges that left the window meanwhile are gone
 * anyway).  Between the charge and the refund other calls saw them: they
 * may have been refused for it, never let through.
 */
static void
refund_tenant(const KeyPolicy *p, TimestampTz now, int32 cost, const int64 *slices)
{
	UsageEntry *e;
	LWLock	   *lock;

	if ((e = tenant_entry(p, now, &lock)) == NULL)
		return;
	SpinLockAcquire(&e->mutex);
	for (int i = 0; i < p->ntenant_limits; i++)
	{
		RateState  *st = named_state(e, p->tenant_limits, p->ntenant_limits, i);
		int32	   *c = &st->counts[slices[i] % LIMIT_RING];

		if (slices[i] >= 0 && st->slice - slices[i] < LIMIT_RING && *c >= cost)
			*c -= cost;
	}
	SpinLockRelease(&e->mutex);
	LWLockRelease(lock);
	/* the rows say what is left once the refund is made */
	for (int i = 0; i < last_nrows; i++)
		if (strcmp(last_rows[i].scope, "tenant") == 0)
			last_rows[i].report.remaining = Min(last_rows[i].report.remaining + cost,
												last_rows[i].report.limit);
}

/*
 * Route limits (apikeys.postgrest_route.limits, 1.1): the limits a PostgREST
 * route charges per key, set by apikeys_authenticate_route_1_1 for the one
 * verification it makes and cleared after it, error or not.  Their state is
 * an entry of its own per key and route, keyed on an id made from the
 * extension's instance, the key id and the route's identity (SHA-256,
 * variant bits zero like the tenant entries, so it never meets a key's
 * entry), held like a key's entry (its tenant's share, evictable by the
 * tenant's own keys once written); it is never counted or flushed.
 */
static LimitSpec route_specs[POLICY_MAX_LIMITS];
static int	route_nspecs = 0;
static uint8 route_digest[APIKEYS_DIGEST_LEN];	/* SHA-256 of the route's identity */

/* The route limits of the next verification (n = 0: none). */
void
apikeys_usage_set_route(const LimitSpec *specs, int n, const char *route, size_t route_len)
{
	Assert(n >= 0 && n <= POLICY_MAX_LIMITS);
	Assert(n == 0 || route != NULL);
	route_nspecs = n;
	if (n == 0)
		return;
	memcpy(route_specs, specs, n * sizeof(LimitSpec));
	apikeys_sha256(route, route_len, route_digest);
}

/* The entry of the route limits of p's key (see usage_entry_of). */
static UsageEntry *
route_entry(const KeyPolicy *p, TimestampTz now, LWLock **lock)
{
	uint8		digest[APIKEYS_DIGEST_LEN];
	StringInfoData buf;
	UsageKey	key;

	initStringInfo(&buf);
	appendStringInfo(&buf, "apikeys route limits:%u:", apikeys_catalog()->credential_rel);
	appendBinaryStringInfo(&buf, (const char *) p->key_id.data, UUID_LEN);
	appendBinaryStringInfo(&buf, (const char *) route_digest, sizeof(route_digest));
	apikeys_sha256(buf.data, buf.len, digest);
	pfree(buf.data);
	memset(&key, 0, sizeof(key));
	key.dbid = MyDatabaseId;
	memcpy(key.key_id.data, digest, UUID_LEN);
	key.key_id.data[8] &= 0x3f;		/* variant 0: never a generated key id */
	return usage_entry_of(&key, p->tenant, false, now, lock);
}

/*
 * Check and charge the route limits for p's key (one spinlock hold), as
 * charge_tenant does.  False: one refused, nothing charged; *no_room: no
 * entry could be had for them.
 */
static bool
charge_route(const KeyPolicy *p, TimestampTz now, int32 cost, int64 *slices, bool *charged,
			 bool *no_room)
{
	UsageEntry *e;
	LWLock	   *lock;
	bool		ok;
	int			from = last_nrows;

	Assert(route_nspecs > 0);
	*charged = false;
	*no_room = false;
	if ((e = route_entry(p, now, &lock)) == NULL)
	{
		*no_room = true;
		return false;
	}
	SpinLockAcquire(&e->mutex);
	ok = check_named(e, route_specs, route_nspecs, "route", now, cost, cost > 0, slices);
	e->hdr.last_use = now;
	SpinLockRelease(&e->mutex);
	LWLockRelease(lock);
	rows_finish(from);
	*charged = ok && cost > 0;
	return ok;
}

/* Take back the route charges of a refused call (as refund_tenant). */
static void
refund_route(const KeyPolicy *p, TimestampTz now, int32 cost, const int64 *slices)
{
	UsageEntry *e;
	LWLock	   *lock;

	if ((e = route_entry(p, now, &lock)) == NULL)
		return;
	SpinLockAcquire(&e->mutex);
	for (int i = 0; i < route_nspecs; i++)
	{
		RateState  *st = named_state(e, route_specs, route_nspecs, i);
		int32	   *c = &st->counts[slices[i] % LIMIT_RING];

		if (slices[i] >= 0 && st->slice - slices[i] < LIMIT_RING && *c >= cost)
			*c -= cost;
	}
	SpinLockRelease(&e->mutex);
	LWLockRelease(lock);
	for (int i = 0; i < last_nrows; i++)
		if (strcmp(last_rows[i].scope, "route") == 0)
			last_rows[i].report.remaining = Min(last_rows[i].report.remaining + cost,
												last_rows[i].report.limit);
}

/*
 * The tightest of the limits checked, for today's rate_* columns and the
 * X-RateLimit-* headers: a refusing limit (the one that frees last: only
 * then does the call pass), else the one with the fewest remaining.
 */
static void
pick_tightest(RateVerdict *rv)
{
	LimitRow   *best = NULL;

	for (int i = 0; i < last_nrows; i++)
	{
		LimitRow   *r = &last_rows[i];

		if (best == NULL ||
			(!r->passed && (best->passed || r->report.reset > best->report.reset)) ||
			(r->passed && best->passed && r->report.remaining < best->report.remaining))
			best = r;
	}
	if (best == NULL)
		return;
	best->tightest = true;
	rv->limit = best->report.limit;
	rv->remaining = best->report.remaining;
	rv->reset = best->report.reset;
}

/*
 * Whether e (spinlock held, or a racy first look) already counts a later
 * period of the same kind than `period`: a call whose clock read is older
 * than another backend's (it read the clock, then spent time on its
 * arguments) must spend in the entry's period, never take it back to an
 * earlier one, which would start that earlier period anew from zero and
 * then the later one again: a fresh cap each time.
 */
static bool
entry_period_later(const UsageEntry *e, bool credits, int32 period_s, int64 period)
{
	if (!e->base_loaded || e->usage_period <= period)
		return false;
	return credits ? e->usage_period_s < 0 : (period_s > 0 && e->usage_period_s == period_s);
}

/*
 * load_used, taking back the tenant's and the route's charges (made before
 * it) when reading the table fails (a lock timeout, a cancel): shared memory
 * does not roll back, so an error caught by a savepoint would otherwise leave
 * them spent for a call that was never answered.  No LWLock is held here.
 */
static int64
load_used_or_refund(const KeyPolicy *p, int64 period, TimestampTz now, int32 cost,
					bool tenant_charged, const int64 *tenant_slices,
					bool route_charged, const int64 *route_slices)
{
	int64		used = 0;

	PG_TRY();
	{
		used = load_used(p, period);
	}
	PG_CATCH();
	{
		if (tenant_charged)
			refund_tenant(p, now, cost, tenant_slices);
		if (route_charged)
			refund_route(p, now, cost, route_slices);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return used;
}

/*
 * The limits of a key whose other checks passed: its tenant's named limits
 * (shared entry), then under its own entry's spinlock its rate limit, named
 * limits and usage cap; charged cost (0: checked only) only when all pass.
 * Counts the verdict.
 */
VerdictCode
apikeys_usage_charge(const KeyPolicy *p, TimestampTz now, int32 cost, RateVerdict *rv)
{
	UsageEntry *e;
	LWLock	   *lock;
	VerdictCode code = V_VALID;
	int			from;
	int64		period = period_index(p->usage_period_s, now);
	int64		cap = p->usage_limit;	/* uses of this period, 0: uncounted */
	int32		period_s = p->usage_period_s;	/* -1: credits (period: a time) */
	int64		base = 0;
	int64		tenant_slices[POLICY_MAX_LIMITS];
	bool		tenant_charged = false;
	int64		route_slices[POLICY_MAX_LIMITS];
	bool		route_charged = false;
	bool		route_no_room;
	bool		rate_ok = true;
	bool		cap_ok;
	bool		credits = p->credits.credits >= 0;
	bool		has_limits = p->rate_limit > 0 || p->usage_limit > 0 || credits ||
		p->nkey_limits > 0 || p->ntenant_limits > 0 || route_nspecs > 0;

	Assert(cost >= 0);
	if (credits)
	{
		/*
		 * Credits are a cap whose period is the spending period (from the
		 * last set or refill) and whose size is the balance: same charging,
		 * flushing and crash rule as a cap.  A balance of 0 is refused as a
		 * cap of 0 would be.
		 */
		CreditsState cs;

		apikeys_credits_state(&p->credits, now, &cs);
		period = cs.period_start;
		cap = cs.balance;
		period_s = -1;
	}
	rv->limit = 0;
	rv->remaining = 0;
	rv->reset = 0;
	rv->usage_remaining = -1;
	last_nrows = 0;

	if (!apikeys_shmem_ready())
	{
		if (has_limits)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("limits_unavailable: this key has limits (rate limit, usage cap, credits or named limits), but apikeys is not loaded through shared_preload_libraries"),
					 errdetail("Limits are kept in shared memory; without it they cannot be enforced."),
					 errhint("Add apikeys to shared_preload_libraries in postgresql.conf and restart the server.")));
		return V_VALID;
	}

	if (p->ntenant_limits > 0 &&
		!charge_tenant(p, now, cost, tenant_slices, &tenant_charged))
		code = V_RATE_LIMITED;

	/* the route's limits: charged only if the tenant's passed */
	if (route_nspecs > 0 && code == V_VALID &&
		!charge_route(p, now, cost, route_slices, &route_charged, &route_no_room))
	{
		if (route_no_room)
		{
			/* no entry for them: take back the tenant's charges, then refuse */
			if (tenant_charged)
				refund_tenant(p, now, cost, tenant_slices);
			no_room_for_limits();
		}
		code = V_RATE_LIMITED;
		if (tenant_charged)
		{
			refund_tenant(p, now, cost, tenant_slices);
			tenant_charged = false;
		}
	}

	e = usage_entry(p, now, &lock);
	if (e == NULL)
	{
		if (has_limits)
		{
			if (tenant_charged)
				refund_tenant(p, now, cost, tenant_slices);
			if (route_charged)
				refund_route(p, now, cost, route_slices);
			no_room_for_limits();
		}
		return code;
	}

	/* read the stored use count once per entry and period, outside locks */
	if (p->usage_limit > 0 || credits)
	{
		bool		need;

		SpinLockAcquire(&e->mutex);
		need = (!e->base_loaded || e->usage_period != period ||
				(e->usage_period_s < 0) != credits) &&
			!entry_period_later(e, credits, period_s, period);
		SpinLockRelease(&e->mutex);
		if (need)
		{
			LWLockRelease(lock);
			base = load_used_or_refund(p, period, now, cost, tenant_charged, tenant_slices,
									   route_charged, route_slices);
			if ((e = usage_entry(p, now, &lock)) == NULL)
			{
				if (tenant_charged)
					refund_tenant(p, now, cost, tenant_slices);
				if (route_charged)
					refund_route(p, now, cost, route_slices);
				no_room_for_limits();
			}
		}
	}

	from = last_nrows;
	SpinLockAcquire(&e->mutex);
	if (entry_period_later(e, credits, period_s, period))
	{
		/*
		 * Another backend already charges in a later period: a new period
		 * or refill it reached first (its clock read came later), or a
		 * credits set this backend's policy does not see yet.  Spend in the
		 * entry's period, with its cap or that period's balance.
		 */
		if (credits)
		{
			CreditsState later;

			apikeys_credits_state(&p->credits, (TimestampTz) e->usage_period, &later);
			cap = later.balance;
		}
		period = e->usage_period;
	}
	else if ((p->usage_limit > 0 || credits) &&
			 (!e->base_loaded || e->usage_period != period ||
			  (e->usage_period_s < 0) != credits))
	{
		/*
		 * a new period of the same kind starts from zero; a first look (or a
		 * key that changed between cap and credits) starts from the table
		 */
		e->used = (e->base_loaded && e->usage_period != period &&
				   (e->usage_period_s < 0) == credits) ? 0 : base;
		e->usage_period = period;
		e->usage_period_s = period_s;
		e->base_loaded = true;
	}
	if (p->rate_limit > 0)
	{
		rate_ok = limit_check(&e->rate, p->rate_limit, p->rate_window_s, now, cost);
		if (!rate_ok && code == V_VALID)
			code = V_RATE_LIMITED;
	}
	/* a call over the cap is not a success: the windows are not charged */
	cap_ok = (p->usage_limit <= 0 && !credits) || e->used + Max(cost, 1) <= cap;
	/* the named limits last: they charge themselves if all else passed */
	if (p->nkey_limits > 0 &&
		!check_named(e, p->key_limits, p->nkey_limits, "key", now, cost,
					 code == V_VALID && cap_ok && cost > 0, NULL) &&
		code == V_VALID)
		code = V_RATE_LIMITED;
	if (code == V_VALID && !cap_ok)
		code = V_USAGE_EXCEEDED;
	if (code == V_VALID && cost > 0)
	{
		/* every check passed: charge the rest, and say what is left */
		e->used += (p->usage_limit > 0 || credits) ? cost : 0;
		if (p->rate_limit > 0)
			limit_charge(&e->rate, cost);
	}
	if (p->rate_limit > 0)
		add_row("key", rate_limit_name, rate_ok, &e->rate, p->rate_limit, cost,
				code == V_VALID && cost > 0);
	if (p->usage_limit > 0 || credits)
		rv->usage_remaining = Max(cap - e->used, 0);
	count_locked(e, code, now);
	e->hdr.last_use = now;
	SpinLockRelease(&e->mutex);
	LWLockRelease(lock);
	rows_finish(from);

	if (code != V_VALID && tenant_charged)
		refund_tenant(p, now, cost, tenant_slices);
	if (code != V_VALID && route_charged)
		refund_route(p, now, cost, route_slices);
	pick_tightest(rv);
	apikeys_flush_worker_wake(MyDatabaseId);
	return code;
}

/*
 * Count a verdict reached before the limits (a refused key, a bad scope) for
 * apikeys.usage, so a key's refusals are counted as its successes are.
 */
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
