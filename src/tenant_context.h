/* tenant_context.h - the tenant a transaction acts for (tenant_context.c) */
#ifndef APIKEYS_TENANT_CONTEXT_H
#define APIKEYS_TENANT_CONTEXT_H

#define TENANT_ID_MAX 63

typedef enum TenantSource
{
	TENANT_SOURCE_NONE = 0,
	TENANT_SOURCE_TRUSTED,		/* apikeys.set_tenant() */
	TENANT_SOURCE_KEY			/* apikeys.authenticate() with a valid key */
} TenantSource;

extern void apikeys_tenant_context_init(void);
extern const char *apikeys_binding_for_caller(bool trusted_only);

/* pg_restore loading one of our tables (rows keep their audit fields) */
extern bool apikeys_is_bulk_loading(void);
/* the actor or request id set_tenant()/authenticate() bound, or NULL */
extern const char *apikeys_context_label(bool request_id);

/* a setting's value if set for this transaction (apikeys._transaction_setting) */
extern char *apikeys_transaction_setting_value(const char *name, int max_bytes);

extern void apikeys_bind_tenant_from_key(text *tenant, const pg_uuid_t *key_id);

#endif
