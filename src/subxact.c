/*
 * subxact.c - run a piece of work in an internal subtransaction, the way
 * PL/pgSQL runs a block with an EXCEPTION clause, from C.
 *
 * Used where an error must not abort the caller (a JSON setting that does
 * not parse, a pgcrypto call that fails on a wrong key) and where what the
 * work leaves behind must not outlive it (the locks parse analysis takes).
 */
#include "apikeys.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

/*
 * Run fn(arg) in an internal subtransaction.  When it returns, the
 * subtransaction is committed (keep) or rolled back (!keep: nothing it did
 * stays, its locks included), and the result is NULL.  When it raises, the
 * subtransaction is rolled back and the error, copied into the caller's
 * memory, is the result: the caller rethrows it (ReThrowError) or drops it
 * (FreeErrorData).  Either way the caller's memory context and resource
 * owner are current again.  fn allocates what it returns in the caller's
 * memory context, which is current when it starts.
 */
ErrorData *
apikeys_subxact_run(void (*fn) (void *arg), void *arg, bool keep)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		if (keep)
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}
