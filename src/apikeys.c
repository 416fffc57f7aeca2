/*
 * apikeys.c - module entry point.  Each concern lives in its own file;
 * _PG_init only asks each to set itself up.
 */
#include "apikeys.h"

#include "audit_pending.h"
#include "caller.h"
#include "shmem.h"
#include "inval_stamps.h"
#include "tenant_context.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	apikeys_guc_init();
	apikeys_catalog_init();
	apikeys_caller_init();
	apikeys_audit_chain_init();
	apikeys_audit_pending_init();
	apikeys_tenant_context_init();
	apikeys_changes_init();
	apikeys_trigger_guard_init();
	apikeys_shmem_init();
	apikeys_guc_reserve();
}
