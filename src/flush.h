/*
 * flush.h - the flush worker's files and what they share: the worker writes
 * usage figures from shared memory to apikeys.usage.
 *
 * One dynamic background worker per database with tracked keys, started by
 * the first verify that finds none running.  Each turn (flush_interval) it
 * moves the pending counts of its database's dirty entries that are due
 * (see collect) to "in flight", writes them (rows that exist are updated in
 * place, flush_update.c; new ones through INSERT ... ON CONFLICT), and on
 * success forgets the in-flight counts; on failure it puts them back.  It
 * flushes once more on SIGTERM (clean shutdown), and exits after a minute
 * with nothing to do, so it does not hold its database (DROP DATABASE waits
 * for connected workers).  On a hot standby nothing can be written: counts
 * are dropped and only rate limits, kept in memory, apply.
 *
 *   flush_launcher.c  registering and starting the workers, their slots
 *   flush_loop.c      the worker's main loop, signals, timing and turns
 *   flush_writer.c    writing one collected batch (SPI), inside a turn
 *   flush_update.c    its fast path: existing rows updated in place
 * The entries' counts change state through usage_entry.c only.
 */
#ifndef APIKEYS_FLUSH_H
#define APIKEYS_FLUSH_H

#include "shmem.h"
#include "flush_worker.h"
#include "usage_entry.h"
#include "utils/relcache.h"

/*
 * apikeys.usage.period_start of an item's `used`: a cap's period (index x
 * length; NULL for a lifetime cap), or a credits entry's spending start
 * (period_s -1: period is that time).
 */
static inline TimestampTz
apikeys_flush_period_start(const FlushItem *it, bool *isnull)
{
	*isnull = !it->has_used || it->period_s == 0;
	if (it->period_s < 0)
		return (TimestampTz) it->period;
	return it->period * (int64) it->period_s * USECS_PER_SEC;
}

/* outcomes that have a column in apikeys.usage, in column order (flush_writer.c) */
extern const VerdictCode apikeys_flush_counted[];
extern const int apikeys_flush_ncounted;

/* flush_launcher.c: a worker's own slot, taken at start and freed at exit */
extern bool flush_slot_claim(Oid dbid);
extern void flush_slot_release(Oid dbid, TimestampTz now);

/* flush_writer.c: inside the turn's transaction */
typedef enum FlushTarget
{
	TARGET_READY,				/* tables locked: write */
	TARGET_GONE,				/* extension dropped: the counts have no home */
	TARGET_BUSY					/* someone holds a conflicting lock: retry */
} FlushTarget;

extern FlushTarget flush_lock_target(Oid *usage_out, Oid *usage_pkey_out);
extern bool flush_write_batch(Oid usage_rel, Oid usage_pkey, FlushItem *items, int n,
							  int *n_written);

/* flush_update.c */
extern int	apikeys_flush_update_existing(Oid usage_rel, Oid usage_pkey,
										  const FlushItem *items, int n, bool *done,
										  bool *skipped);
extern bool apikeys_flush_key_uncommitted(Relation credential, Oid pkey, const pg_uuid_t *key_id);

#endif
