/*
 * flush.h - what the flush worker's files share among themselves: how a
 * collected entry's figures map to apikeys.usage's columns, and the fast
 * path that updates existing rows (flush_update.c).
 */
#ifndef APIKEYS_FLUSH_H
#define APIKEYS_FLUSH_H

#include "shmem.h"
#include "flush_worker.h"
#include "usage_entry.h"

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

/* outcomes that have a column in apikeys.usage, in column order */
extern const VerdictCode apikeys_flush_counted[];
extern const int apikeys_flush_ncounted;

/* flush_update.c */
extern int	apikeys_flush_update_existing(Oid usage_rel, Oid usage_pkey,
										  const FlushItem *items, int n, bool *done);

#endif
