/*
 * key_id.c - new key ids: time-ordered UUIDs (RFC 9562 version 7).
 *
 * A key id is an identifier, not a secret, and is indexed in credential,
 * secret and audit.  A random (version 4) id puts every new key on a random
 * leaf page of each of those indexes; an id that grows with time puts it on
 * the rightmost one, which btree inserts without a descent once it is
 * cached, and keeps one batch's keys on a few pages.  The layout: 48 bits
 * of Unix time in milliseconds, the version, 12 bits of the millisecond's
 * fraction, the variant, 62 random bits (RFC 9562, method 3).  Ids made by
 * one backend strictly increase, even within one clock tick or when the
 * clock steps back.  The id shows when the key was made (and which keys
 * one call made) to whoever is shown it, a verifier too: the README's
 * side channels say so.
 */
#include "apikeys.h"

#include "utils/timestamp.h"
#include "utils/uuid.h"

/* The last id's time in units of 1/4096 ms since the Unix epoch, per backend. */
static uint64 last_ticks = 0;

/* Fill u with a new key id. */
void
apikeys_new_key_id(pg_uuid_t *u)
{
	TimestampTz now = GetCurrentTimestamp();
	/* microseconds since 1970, as 1/4096 ms: ms in the high bits, fraction in the low 12 */
	uint64		us = (uint64) (now + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
	uint64		ticks = (us / 1000) << 12 | ((us % 1000) * 4096 / 1000);
	uint64		ms;

	if (ticks <= last_ticks)
		ticks = last_ticks + 1;	/* same tick, or the clock went back */
	last_ticks = ticks;
	ms = ticks >> 12;
	Assert(ms < ((uint64) 1 << 48));

	apikeys_random_bytes(u->data + 8, UUID_LEN - 8);
	for (int i = 0; i < 6; i++)
		u->data[i] = (uint8) (ms >> (40 - 8 * i));
	u->data[6] = 0x70 | (uint8) ((ticks >> 8) & 0x0f);	/* version 7 */
	u->data[7] = (uint8) (ticks & 0xff);
	u->data[8] = (u->data[8] & 0x3f) | 0x80;	/* variant 10 */
}

/* apikeys_internal._key_id(): a new key id, for SQL (the column default, imports). */
PG_FUNCTION_INFO_V1(apikeys_key_id);
Datum
apikeys_key_id(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

	apikeys_new_key_id(u);
	PG_RETURN_UUID_P(u);
}
