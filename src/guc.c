/*
 * guc.c - the extension's settings.
 *
 * apikeys.actor and apikeys.request_id label audit rows with what the
 * application says; any role may set them (they are labels, not identity:
 * the audit also records the database role).  apikeys.audit_retention is
 * superuser-only: letting users shorten it would defeat the audit.
 */
#include "apikeys.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "policy.h"

char	   *apikeys_actor = NULL;
char	   *apikeys_request_id = NULL;
char	   *apikeys_audit_retention = NULL;
static char *apikeys_vault_master_key = NULL;
static char *apikeys_vault_master_key_previous = NULL;
static char *apikeys_vault_master_key_file = NULL;

/* Loaded by shared_preload_libraries: no backend ever saw a placeholder. */
static bool apikeys_preloaded = false;

/*
 * The vault master keys (src/sql/60_vault.sql) are superuser-only and hidden
 * from SHOW ALL and pg_settings.  Refuse values stored where every role can
 * read them (ALTER ROLE/DATABASE ... SET and function SET clauses live in
 * world-readable catalogs), and values from the server configuration unless
 * the module was preloaded: until a backend loads the module, such a value
 * sits in a placeholder setting that any role can SHOW.  The messages never
 * contain the value.
 */
static bool
check_vault_master_key(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	switch (source)
	{
		case PGC_S_TEST:
		case PGC_S_GLOBAL:
		case PGC_S_DATABASE:
		case PGC_S_USER:
		case PGC_S_DATABASE_USER:
			GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
			GUC_check_errmsg("vault_master_key_unsafe: a vault master key must not be stored in the system catalogs, which every role can read");
			GUC_check_errhint("Name a key file outside the data directory in apikeys.vault_master_key_file (see docs/vault.md).");
			return false;
		case PGC_S_DYNAMIC_DEFAULT:
		case PGC_S_ENV_VAR:
		case PGC_S_FILE:
		case PGC_S_ARGV:
			if (!apikeys_preloaded)
			{
				GUC_check_errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE);
				GUC_check_errmsg("vault_master_key_unsafe: the vault master key in the server configuration is ignored because apikeys is not in shared_preload_libraries");
				GUC_check_errhint("Without preloading, every role can read the value before the module is loaded.");
				return false;
			}
			return true;
		default:
			return true;
	}
}

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
	apikeys_preloaded = process_shared_preload_libraries_in_progress;
	DefineCustomStringVariable("apikeys.vault_master_key",
							   "Master key of the third-party secret vault.",
							   "Superuser-only; set it in postgresql.conf with apikeys in shared_preload_libraries.",
							   &apikeys_vault_master_key, "", PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   check_vault_master_key, NULL, NULL);
	DefineCustomStringVariable("apikeys.vault_master_key_previous",
							   "Previous vault master key, still accepted for decryption while apikeys.vault_rotate_master_key() re-encrypts.",
							   NULL,
							   &apikeys_vault_master_key_previous, "", PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   check_vault_master_key, NULL, NULL);
	DefineCustomStringVariable("apikeys.vault_master_key_file",
							   "File holding the vault master key (first line) and, during a rotation, the previous key (second line).",
							   "Read by the server at each use; used when apikeys.vault_master_key is empty.",
							   &apikeys_vault_master_key_file, "", PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
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
