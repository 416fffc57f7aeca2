/*
 * random_pool.c - random bytes for new secrets and key ids, drawn from
 * pg_strong_random() a block at a time.
 *
 * pg_strong_random() costs the same fixed overhead (OpenSSL's locks and
 * checks) for 8 bytes as for a kilobyte; one bulk creation asks for 40
 * bytes per key.  The unused bytes of a block are the next keys' secrets,
 * so they never outlive the transaction that drew them: the pool is wiped
 * at its end (commit, abort or prepare), and a pooled connection's next
 * client, another tenant perhaps, starts from fresh bytes.  Each byte is
 * wiped as it is handed out.  The pool belongs to the process that filled
 * it (getpid(), not MyProcPid, which a process forked inside a backend
 * keeps): a forked child starts a new one instead of repeating its
 * parent's bytes.
 */
#include "apikeys.h"

#include <unistd.h>

#include "access/xact.h"

#define POOL_BYTES 1024

static uint8 pool[POOL_BYTES];
static size_t pool_used = POOL_BYTES;	/* bytes already handed out */
static pid_t pool_pid = 0;		/* the process that filled it */
static bool pool_callback = false;

/* Forget the unused bytes (transaction end). */
static void
pool_wipe(XactEvent event, void *arg)
{
	if (pool_used == POOL_BYTES)
		return;
	explicit_bzero(pool, sizeof(pool));
	pool_used = POOL_BYTES;
}

/* Fill buf with n cryptographically strong random bytes. */
void
apikeys_random_bytes(void *buf, size_t n)
{
	uint8	   *out = buf;
	pid_t		me = getpid();

	if (pool_pid != me)
		pool_used = POOL_BYTES;	/* not ours: never reuse a parent's bytes */
	if (!pool_callback)
	{
		RegisterXactCallback(pool_wipe, NULL);
		pool_callback = true;
	}
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
			pool_pid = me;
		}
		take = Min(n, POOL_BYTES - pool_used);
		memcpy(out, pool + pool_used, take);
		explicit_bzero(pool + pool_used, take);
		pool_used += take;
		out += take;
		n -= take;
	}
}
