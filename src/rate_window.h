/*
 * rate_window.h - one rate limit's state and its algorithm: a sliding window of
 * LIMIT_SLICES slices.
 *
 * A limit is (limit, window): at most `limit` units (a verification charges
 * its cost, 1 by default) in any interval of length `window`.  The window is
 * cut into LIMIT_SLICES slices of window / LIMIT_SLICES, aligned to the
 * epoch; the state counts the units charged in each of the last
 * LIMIT_SLICES + 1 slices (the current one and the LIMIT_SLICES before it,
 * which together cover at least the last window).  A charge of `cost` at
 * time t passes when the units of those slices plus cost are at most limit.
 *
 * Exactness: in ANY interval [s, s + window] at most `limit` units pass.
 * Proof: let t be the last charge in the interval, in slice j.  The slices
 * counted at t, j - LIMIT_SLICES .. j, start at start(j) - window <= t -
 * window <= s, so every earlier charge of the interval was counted, and the
 * check let t pass only if they and its cost fit in limit.  No 2x burst at
 * window edges: the fixed windows of 1.0 let 2 x limit through around an
 * edge.  The price: a charge is refused while the last window and up to one
 * slice more (window / LIMIT_SLICES) hold `limit`, so a client at full rate
 * gets between limit x 8/9 and limit per window, never more.
 *
 * Shared memory: sizeof(RateState) = 48 bytes per limit.  Counted exactly
 * under the owning entry's spinlock (usage.c); nothing here locks.
 */
#ifndef APIKEYS_RATE_WINDOW_H
#define APIKEYS_RATE_WINDOW_H

#include "postgres.h"
#include "utils/timestamp.h"

#define LIMIT_SLICES 8
#define LIMIT_RING (LIMIT_SLICES + 1)

typedef struct RateState
{
	int64		slice;			/* the newest slice counted; -1: nothing counted */
	int32		window_s;		/* the window the slices are of */
	int32		counts[LIMIT_RING];	/* units per slice: slice i at i % LIMIT_RING */
} RateState;

/* What one limit says about one call: for the X-RateLimit-* figures. */
typedef struct LimitReport
{
	int32		limit;			/* 0: no limit */
	int32		remaining;		/* units that would still pass now */
	TimestampTz reset;			/* when the next counted unit leaves the window
								 * (refused: when this call's cost would pass) */
} LimitReport;

extern void limit_init(RateState *s);
/*
 * check and charge run under the entry's spinlock and do no more than they
 * must there; the report is made afterwards from a copy of the state
 * (limit_report), so the figures cost no time under the lock.
 */
extern bool limit_check(RateState *s, int32 limit, int32 window_s, TimestampTz now,
						int32 cost);
extern void limit_charge(RateState *s, int32 cost);
extern void limit_report(const RateState *s, int32 limit, int32 cost, bool charged,
						 LimitReport *report);
extern bool limit_open(const RateState *s, TimestampTz now);

#endif
