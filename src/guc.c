/*
 * guc.c - the extension's settings.
 *
 * apikeys.actor and apikeys.request_id label audit rows with what the
 * application says; any role may set them (they are labels, not identity:
 * the audit also records the database role).  apikeys.audit_retention is
 * superuser-only: letting users shorten it would defeat the audit.
 */
#include "apikeys.h"

#include "utils/guc.h"

#include "policy.h"

char	   *apikeys_actor = NULL;
char	   *apikeys_request_id = NULL;
char	   *apikeys_audit_retention = NULL;

void
apikeys_guc_init(void)
{
	DefineCustomStringVariable("apikeys.actor",
							   "Application-level actor recorded in audit rows.",
							   "Falls back to the \"sub\" claim of request.jwt.claims (PostgREST).",
							   &apikeys_actor, "", PGC_USERSET, 0,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("apikeys.request_id",
							   "Request id recorded in audit rows.",
							   "Falls back to the x-request-id header of request.headers (PostgREST).",
							   &apikeys_request_id, "", PGC_USERSET, 0,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("apikeys.audit_retention",
							   "Age past which apikeys.audit_purge() may delete audit rows; empty keeps them forever.",
							   NULL,
							   &apikeys_audit_retention, "", PGC_SUSET, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("apikeys.trusted_proxies",
							   "Proxies whose x-forwarded-for header (PostgREST request.headers) names the client for IP allowlists.",
							   "Comma-separated CIDRs; \"local\" means Unix-socket connections. Empty: never trust the header.",
							   &apikeys_trusted_proxies, "", PGC_SUSET, 0,
							   NULL, NULL, NULL);

}

/* After every module defined its settings: unknown apikeys.* names are errors. */
void
apikeys_guc_reserve(void)
{
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("apikeys");
#else
	EmitWarningsOnPlaceholders("apikeys");
#endif
}
