/*
 * private_lock.c - transaction locks that only the extension can take.
 *
 * A lock whose tag a role can compute is a lock a role can hold, so no
 * SQL-visible lock (pg_advisory_lock and friends) may serialize another
 * tenant's work.  These are advisory lock tags whose field4 is a value of
 * ours: PostgreSQL's SQL advisory functions only ever use 1 and 2 there, so
 * no SQL function can take, wait for or release them.  Fields 2 and 3 hold
 * 64 bits of SHA-256 of what is locked (a vault slot, an audit chain), so
 * two things share a lock only by a hash collision: a needless wait, never
 * a wrong answer.
 *
 * pg_locks shows every lock to every role, so the hash is salted with bytes
 * drawn at server start (shared memory): otherwise anyone could hash a
 * guessed tenant name and watch pg_locks for the audit chain lock of that
 * tenant, learning that it exists and when it is changed.  Without the
 * library preloaded there is no shared memory, and the tags are unsalted.
 */
#include "shmem.h"

#include "miscadmin.h"
#include "storage/lock.h"

/* The tag of (kind, data): 64 bits of its salted SHA-256, and kind. */
static void
private_tag(LOCKTAG *tag, uint16 kind, const char *data, size_t len)
{
	uint8		digest[APIKEYS_DIGEST_LEN];

	Assert(kind != 1 && kind != 2);
	if (apikeys_shmem_ready())
	{
		size_t		salt = sizeof(apikeys_shared->lock_salt);
		char	   *buf = palloc(salt + len);

		memcpy(buf, apikeys_shared->lock_salt, salt);
		memcpy(buf + salt, data, len);
		apikeys_sha256(buf, salt + len, digest);
		pfree(buf);
	}
	else
		apikeys_sha256(data, len, digest);
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId,
						 ((uint32) digest[0] << 24) | ((uint32) digest[1] << 16) |
						 ((uint32) digest[2] << 8) | digest[3],
						 ((uint32) digest[4] << 24) | ((uint32) digest[5] << 16) |
						 ((uint32) digest[6] << 8) | digest[7],
						 kind);
}

/* Take the lock of (kind, data) exclusively, waiting: held to commit. */
void
apikeys_private_lock(uint16 kind, const char *data, size_t len)
{
	LOCKTAG		tag;

	private_tag(&tag, kind, data, len);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * Take the lock of (kind, data) in mode (ShareLock or ExclusiveLock)
 * without waiting: false when another transaction holds it in a
 * conflicting mode.  Held to commit.
 */
bool
apikeys_private_lock_nowait(uint16 kind, const char *data, size_t len, int mode)
{
	LOCKTAG		tag;

	Assert(mode == ShareLock || mode == ExclusiveLock);
	private_tag(&tag, kind, data, len);
	return LockAcquire(&tag, mode, false, true) != LOCKACQUIRE_NOT_AVAIL;
}
