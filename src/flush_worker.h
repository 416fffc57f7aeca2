/*
 * flush_worker.h - the per-database background workers that write usage
 * figures from shared memory to apikeys.usage (flush.h), as the rest of
 * apikeys sees them: their slots in shared memory and their entry points.
 *
 * Locking protocol: ApikeysShared.db_mutex (a spinlock) protects the slots
 * of the databases with a worker (ApikeysShared.dbs).
 */
#ifndef APIKEYS_FLUSH_WORKER_H
#define APIKEYS_FLUSH_WORKER_H

#include "postgres.h"
#include "utils/timestamp.h"

#define APIKEYS_MAX_FLUSH_DBS 32

typedef struct FlushDbSlot
{
	Oid			dbid;			/* InvalidOid: free */
	pid_t		worker_pid;		/* 0: none running */
	bool		starting;
	TimestampTz start_requested;	/* when `starting` was set */
} FlushDbSlot;

extern void apikeys_flush_worker_wake(Oid dbid);
extern void apikeys_flush_worker_hurry(void);
PGDLLEXPORT void apikeys_flush_main(Datum arg);

#endif
