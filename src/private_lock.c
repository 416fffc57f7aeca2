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
 *
 * The salt is drawn again at every start, so a transaction holding these
 * locks must not outlive the server: PREPARE TRANSACTION is refused once
 * one was taken (a prepared transaction keeps its locks, under the old
 * salt's tags, across a restart, where they would order nothing).
 */
#include "shmem.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/lock.h"

static bool xact_took_lock = false;	/* this transaction took one */
static bool xact_callback_set = false;

/* PREPARE of a transaction that took a private lock: refused. */
static void
private_lock_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (xact_took_lock)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("prepare_not_supported: cannot PREPARE a transaction that wrote audit rows or registered a key format"),
						 errdetail("The locks that keep audit chains and format registrations in order do not survive a restart, and a prepared transaction does."),
						 errhint("Commit apikeys changes directly, outside two-phase commit.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			xact_took_lock = false;
			break;
		default:
			break;
	}
}

/* Remember that this transaction takes a private lock. */
static void
note_lock_taken(void)
{
	if (!xact_callback_set)
	{
		RegisterXactCallback(private_lock_xact_callback, NULL);
		xact_callback_set = true;
	}
	xact_took_lock = true;
}

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

	note_lock_taken();
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
	note_lock_taken();
	private_tag(&tag, kind, data, len);
	return LockAcquire(&tag, mode, false, true) != LOCKACQUIRE_NOT_AVAIL;
}
