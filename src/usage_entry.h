/*
 * usage_entry.h - the usage table (shared memory, a slot_table.c table):
 * per-key limit state and the counts on their way to apikeys.usage.
 *
 * Locking protocol: the partition lock of an entry's set shared to find the
 * entry, then the entry's spinlock to read or change its counters;
 * exclusive to create or evict entries (only flushed ones are evicted).
 */
#ifndef APIKEYS_USAGE_ENTRY_H
#define APIKEYS_USAGE_ENTRY_H

#include "policy.h"
#include "rate_window.h"
#include "slot_table.h"

#include "access/transam.h"
#include "port/atomics.h"
#include "storage/spin.h"
#include "utils/snapmgr.h"

typedef struct UsageKey
{
	Oid			dbid;
	pg_uuid_t	key_id;
} UsageKey;

typedef struct UsageEntry
{
	SlotHeader	hdr;
	UsageKey	key;
	uint32		tenant_hash;	/* the key's tenant (apikeys_tenant_hash), set at claim */
	slock_t		mutex;
	bool		base_loaded;	/* used_base read from apikeys.usage */
	RateState	rate;			/* the key's rate limit (rate_window.h) */
	bool		tenant_limits;	/* a tenant's shared entry: named[] only, never dirty */
	char		named_name[POLICY_MAX_LIMITS][LIMIT_NAME_LEN];	/* "": free */
	RateState	named[POLICY_MAX_LIMITS];	/* the key's (or tenant's) named limits */
	int64		usage_period;	/* index of the usage period `used` counts */
	int64		used;			/* uses charged in it (authoritative once loaded) */
	int32		usage_period_s; /* period length, 0: lifetime, -1: credits (usage_period: a time) */
	TimestampTz last_used_at;
	int64		counts_pending[VERDICT_COUNT];
	int64		counts_inflight[VERDICT_COUNT];
	bool		dirty;			/* something to flush */
	bool		flushing;		/* counts in flight: keep until settled */
	bool		urgent_marked;	/* its bit is set in apikeys_usage_urgent */
	TransactionId inflight_xid; /* the flush that wrote counts_inflight, or invalid */
} UsageEntry;

extern SlotTable apikeys_usage_table;

/*
 * Which ways of each usage set hold unwritten counts (bit w: way w), so the
 * flush worker reads a few bytes per set instead of every entry: any counts
 * (apikeys_usage_dirty, written within usage_write_delay), and those to
 * write at the next turn (apikeys_usage_urgent: a usage cap's count, and the
 * entries of sets that filled up).  Set by verify, cleared by the worker
 * when it takes the counts; a stale bit is dropped then.
 */
extern pg_atomic_uint32 *apikeys_usage_dirty;
extern pg_atomic_uint32 *apikeys_usage_urgent;

/*
 * Are an entry's in-flight counts already in apikeys.usage as `snapshot`
 * sees it?  Readers add them otherwise, so a count is seen once whether the
 * reader's snapshot is before, during or after the flush's commit.
 */
static inline bool
apikeys_inflight_visible(TransactionId inflight_xid, Snapshot snapshot)
{
	/* may read the commit log: never call it under the entry's spinlock */
	return TransactionIdIsValid(inflight_xid) &&
		!XidInMVCCSnapshot(inflight_xid, snapshot) &&
		TransactionIdDidCommit(inflight_xid);
}

/* What one entry gives one flush: the figures to write. */
typedef struct FlushItem
{
	UsageKey	key;
	bool		has_used;
	int64		used;
	int64		period;
	int32		period_s;		/* -1: credits, period is a time */
	TimestampTz last_used_at;
	int64		counts[VERDICT_COUNT];
} FlushItem;

#endif
