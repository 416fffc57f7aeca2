/*
 * usage_entry.h - the usage table (shared memory, a slot_table.c table) and
 * the life of the counts its entries hold, from a verify's count to
 * apikeys.usage (usage_entry.c, which documents the states).
 *
 * Locking protocol: the partition lock of an entry's set shared to find the
 * entry, then the entry's spinlock to read or change its fields; exclusive
 * to create or evict entries (only flushed ones are evicted).  Each function
 * below says which of the two it expects.
 *
 * The fields of an entry's counts' life (counts_pending, counts_inflight,
 * dirty, flushing, urgent_marked, inflight_xid, inflight_collect) and the marks
 * (apikeys_usage_dirty, apikeys_usage_urgent) are changed by usage_entry.c
 * only, and read there only but for the marks, which the flush worker scans
 * to find marked sets.
 */
#ifndef APIKEYS_USAGE_ENTRY_H
#define APIKEYS_USAGE_ENTRY_H

#include "policy.h"
#include "rate_window.h"
#include "slot_table.h"

#include "access/transam.h"
#include "port/atomics.h"
#include "storage/spin.h"
#include "utils/snapshot.h"

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
	/* the counts' life: usage_entry.c's alone */
	int64		counts_pending[VERDICT_COUNT];
	int64		counts_inflight[VERDICT_COUNT];
	bool		dirty;			/* something to flush */
	bool		flushing;		/* counts in flight: keep until settled */
	bool		urgent_marked;	/* its bit is set in apikeys_usage_urgent */
	TransactionId inflight_xid; /* the flush that wrote counts_inflight, or invalid */
	uint64		inflight_collect;	/* the collect that took them (FlushItem.collect) */
} UsageEntry;

extern SlotTable apikeys_usage_table;

/*
 * Which ways of each usage set hold unwritten counts (bit w: way w), so the
 * flush worker reads a few bytes per set instead of every entry: any counts
 * (apikeys_usage_dirty, written within usage_write_delay), and those to
 * write at the next turn (apikeys_usage_urgent: a usage cap's count, and the
 * entries of sets that filled up).  Set by verify, cleared by the worker
 * when it takes the counts; a stale bit is dropped then.  Written through
 * usage_entry.c only.
 */
extern pg_atomic_uint32 *apikeys_usage_dirty;
extern pg_atomic_uint32 *apikeys_usage_urgent;

/* What one entry gives one flush (usage_entry_collect): the figures to write. */
typedef struct FlushItem
{
	UsageKey	key;
	bool		has_used;
	int64		used;
	int64		period;
	int32		period_s;		/* -1: credits, period is a time */
	TimestampTz last_used_at;
	int64		counts[VERDICT_COUNT];
	uint64		collect;		/* this collect's number, unique in the server's life */
} FlushItem;

/*
 * An entry's counts as a reader copied them under the spinlock, to be
 * merged outside it (usage_entry_visible_counts reads the commit log).
 */
typedef struct UsageEntryCounts
{
	int64		pending[VERDICT_COUNT];
	int64		inflight[VERDICT_COUNT];
	TransactionId xid;
} UsageEntryCounts;

/*
 * The life of an entry's counts (usage_entry.c).  Locks each expects:
 *   P  the partition lock of the entry's set, any mode
 *   X  that lock exclusive (then no one holds the entry's spinlock)
 *   S  the entry's spinlock too (the caller changes other fields in the hold)
 * collect, stamp and settle take the spinlock themselves; in_flight reads
 * without it (exact for the database's flush worker, see there).
 */
extern void usage_entry_count(UsageEntry *e, VerdictCode code, bool urgent);	/* P S */
extern bool usage_entry_in_flight(const UsageEntry *e);	/* P */
extern bool usage_entry_collect(UsageEntry *e, FlushItem *it);	/* P */
extern void usage_entry_stamp(UsageEntry *e, const FlushItem *it, TransactionId xid);	/* P */
extern void usage_entry_settle(UsageEntry *e, const FlushItem *it, bool written);	/* P */
extern bool usage_entry_unsettled(const UsageEntry *e);	/* X */
extern bool usage_entry_has_pending(const UsageEntry *e);	/* X */
extern bool usage_entry_evictable(const UsageEntry *e, bool lossy);	/* X */
extern int64 usage_entry_evict(UsageEntry *e);	/* X */
extern void usage_entry_release(UsageEntry *e);	/* X */
extern void usage_entry_read_counts(const UsageEntry *e, UsageEntryCounts *c);	/* P S */
/* no lock: */
extern void usage_entry_visible_counts(const UsageEntryCounts *c, Snapshot snapshot,
									   int64 counts[VERDICT_COUNT]);
extern bool usage_marks_hurry(uint32 set);
extern int64 usage_entries_dirty(void);

#endif
