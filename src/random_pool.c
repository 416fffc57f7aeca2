/*
 * random_pool.c - random bytes for new secrets and key ids, drawn from
 * pg_strong_random() a block at a time.
 *
 * pg_strong_random() costs the same fixed overhead (OpenSSL's locks and
 * checks) for 8 bytes as for a kilobyte; one bulk creation asks for 40
 * bytes per key.  The pool keeps at most one block of unused bytes in the
 * backend's memory, wipes each byte it hands out, and belongs to the
 * process that filled it: a process forked with a filled pool (none does
 * today) starts a new one instead of repeating its parent's bytes.
 */
#include "apikeys.h"

#include "miscadmin.h"

#define POOL_BYTES 1024

static uint8 pool[POOL_BYTES];
static size_t pool_used = POOL_BYTES;	/* bytes already handed out */
static int	pool_pid = 0;		/* the process that filled it */

/* Fill buf with n cryptographically strong random bytes. */
void
apikeys_random_bytes(void *buf, size_t n)
{
	uint8	   *out = buf;

	if (pool_pid != MyProcPid)
		pool_used = POOL_BYTES;	/* not ours: never reuse a parent's bytes */
	while (n > 0)
	{
		size_t		take;

		if (pool_used == POOL_BYTES)
		{
			if (!pg_strong_random(pool, POOL_BYTES))
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("internal_error: could not generate random bytes"),
						 errdetail("pg_strong_random() failed.")));
			pool_used = 0;
			pool_pid = MyProcPid;
		}
		take = Min(n, POOL_BYTES - pool_used);
		memcpy(out, pool + pool_used, take);
		explicit_bzero(pool + pool_used, take);
		pool_used += take;
		out += take;
		n -= take;
	}
}
