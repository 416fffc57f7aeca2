/*
 * rate_window.c - the sliding-window limit of rate_window.h: check, charge, and the
 * figures reported for it.  Check and charge run under the spinlock of the
 * entry the state lives in; the report is made from a copy, with no lock.
 */
#include "rate_window.h"

/* a slice's length in microseconds (window_s >= 1: a whole number) */
static inline int64
slice_len(int32 window_s)
{
	return (int64) window_s * USECS_PER_SEC / LIMIT_SLICES;
}

void
limit_init(RateState *s)
{
	s->slice = -1;
	s->window_s = 0;
	memset(s->counts, 0, sizeof(s->counts));
}

/*
 * Bring the state to time now (slice `cur` of a window of window_s): slices
 * older than the ring are forgotten.  A window changed while in use keeps
 * every unit counted so far in the current slice: that counts them for a
 * whole new window, more than their due (never fewer, so the bound holds
 * across the change).
 */
static void
advance(RateState *s, int32 window_s, TimestampTz now)
{
	int64		cur = now / slice_len(window_s);

	if (s->slice >= 0 && s->window_s != window_s)
	{
		int64		total = 0;

		for (int i = 0; i < LIMIT_RING; i++)
			total += s->counts[i];
		memset(s->counts, 0, sizeof(s->counts));
		s->counts[cur % LIMIT_RING] = (int32) Min(total, PG_INT32_MAX);
		s->slice = cur;
	}
	s->window_s = window_s;
	if (s->slice < 0 || cur - s->slice >= LIMIT_RING)
		memset(s->counts, 0, sizeof(s->counts));
	else
		for (int64 i = s->slice + 1; i <= cur; i++)
			s->counts[i % LIMIT_RING] = 0;
	/* a clock that went back counts into the newest slice */
	s->slice = Max(s->slice, cur);
}

static int64
units(const RateState *s)
{
	int64		sum = 0;

	for (int i = 0; i < LIMIT_RING; i++)
		sum += s->counts[i];
	return sum;
}

/*
 * Fill report from a state brought to now by limit_check (a copy, taken
 * under the lock), for a call of `cost` that was charged or not: what
 * remains of limit after the units counted, and when that grows enough.
 * For a call not charged (refused, or cost 0): when its cost (at least one
 * unit) would fit; for a charged one: when one more unit would.  That is
 * when the oldest slice whose units must leave does (slice i is counted
 * until slice i + LIMIT_RING begins); nothing counted: the next slice; a
 * need over the limit never fits: when everything counted has gone.
 */
void
limit_report(const RateState *s, int32 limit, int32 cost, bool charged, LimitReport *report)
{
	int32		need = charged ? 1 : Max(cost, 1);
	int64		len = slice_len(s->window_s);
	int64		sum = units(s);
	int64		want = Max((int64) need, limit - sum + 1);	/* free units wanted */

	Assert(s->slice >= 0 && s->window_s > 0 && cost >= 0);
	report->limit = limit;
	report->remaining = (int32) Max(limit - sum, 0);
	if (sum == 0)
	{
		report->reset = (s->slice + 1) * len;
		return;
	}
	report->reset = (s->slice + LIMIT_RING) * len;
	for (int64 i = Max(s->slice - LIMIT_SLICES, 0); i <= s->slice; i++)
	{
		sum -= s->counts[i % LIMIT_RING];
		if (s->counts[i % LIMIT_RING] != 0 && limit - sum >= want)
		{
			report->reset = (i + LIMIT_RING) * len;
			return;
		}
	}
}

/*
 * Would `cost` units pass now?  Brings the state to now.  cost 0 asks
 * whether one unit would, charging nothing.
 */
bool
limit_check(RateState *s, int32 limit, int32 window_s, TimestampTz now, int32 cost)
{
	Assert(limit > 0 && window_s > 0 && cost >= 0);
	advance(s, window_s, now);
	return units(s) + Max(cost, 1) <= limit;
}

/* Charge cost units (after limit_check passed, same spinlock hold). */
void
limit_charge(RateState *s, int32 cost)
{
	Assert(s->slice >= 0 && cost >= 0);
	s->counts[s->slice % LIMIT_RING] += cost;
}

/* Is any unit still counted (evicting the state would forget it)? */
bool
limit_open(const RateState *s, TimestampTz now)
{
	if (s->slice < 0 || s->window_s <= 0 || now / slice_len(s->window_s) - s->slice >= LIMIT_RING)
		return false;
	return units(s) > 0;
}
