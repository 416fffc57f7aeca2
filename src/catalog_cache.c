/*
 * catalog_cache.c - OIDs of the apikeys tables and of the indexes that
 * apikey_verify scans directly.
 *
 * Looked up by name once per backend and forgotten on any relcache
 * invalidation of one of them (DROP/CREATE EXTENSION, ALTER TABLE, REINDEX),
 * so verify pays no catalog lookups on the hot path.  The column layout is
 * checked at load time against the Anum_* constants in apikeys.h.
 */
#include "apikeys.h"

#include "access/table.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

static ApikeysCatalog catalog;
static bool catalog_valid = false;

static void
catalog_invalidate(Datum arg, Oid relid)
{
	if (!catalog_valid)
		return;
	if (relid == InvalidOid ||
		relid == catalog.tenant_rel || relid == catalog.tenant_pkey ||
		relid == catalog.credential_rel || relid == catalog.credential_pkey ||
		relid == catalog.secret_rel || relid == catalog.secret_pkey ||
		relid == catalog.usage_rel || relid == catalog.usage_pkey)
		catalog_valid = false;
}

void
apikeys_catalog_init(void)
{
	CacheRegisterRelcacheCallback(catalog_invalidate, (Datum) 0);
}

static Oid
lookup_rel(Oid nsp, const char *name)
{
	Oid			relid = get_relname_relid(name, nsp);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension_damaged: relation apikeys.%s is missing", name),
				 errhint("Reinstall the extension: DROP EXTENSION apikeys; CREATE EXTENSION apikeys;")));
	return relid;
}

/*
 * The index name of table relid, which must be an index of it: a table
 * renamed away with another put in its place leaves the old one's index
 * under the old name, and probing one table with another's index reads
 * nonexistent blocks.
 */
static Oid
lookup_index(Oid nsp, const char *name, Oid relid)
{
	Oid			indexid = lookup_rel(nsp, name);

	if (IndexGetRelation(indexid, true) != relid)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension_damaged: apikeys.%s is not an index of the table it is named for", name),
				 errhint("Reinstall the extension: DROP EXTENSION apikeys; CREATE EXTENSION apikeys;")));
	return indexid;
}

static void
check_column(Oid relid, AttrNumber attnum, const char *expected)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	bool		ok = attnum <= desc->natts &&
		!TupleDescAttr(desc, attnum - 1)->attisdropped &&
		strcmp(NameStr(TupleDescAttr(desc, attnum - 1)->attname), expected) == 0;
	char	   *relname = pstrdup(RelationGetRelationName(rel));

	table_close(rel, AccessShareLock);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension_damaged: column %d of apikeys.%s is not \"%s\"",
						attnum, relname, expected),
				 errhint("The SQL objects and the loaded library disagree; run ALTER EXTENSION apikeys UPDATE.")));
}

const ApikeysCatalog *
apikeys_catalog(void)
{
	Oid			nsp;

	if (catalog_valid)
		return &catalog;

	nsp = get_namespace_oid(APIKEYS_SCHEMA, true);
	if (!OidIsValid(nsp))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension_not_installed: schema apikeys does not exist"),
				 errhint("Run CREATE EXTENSION apikeys in this database.")));

	catalog.tenant_rel = lookup_rel(nsp, "tenant");
	catalog.tenant_pkey = lookup_index(nsp, "tenant_pkey", catalog.tenant_rel);
	catalog.credential_rel = lookup_rel(nsp, "credential");
	catalog.credential_pkey = lookup_index(nsp, "credential_pkey", catalog.credential_rel);
	catalog.secret_rel = lookup_rel(nsp, "secret");
	catalog.secret_pkey = lookup_index(nsp, "secret_pkey", catalog.secret_rel);
	catalog.usage_rel = lookup_rel(nsp, "usage");
	catalog.usage_pkey = lookup_index(nsp, "usage_pkey", catalog.usage_rel);

	check_column(catalog.tenant_rel, Anum_tenant_tenant, "tenant");
	check_column(catalog.tenant_rel, Anum_tenant_active, "active");
	check_column(catalog.credential_rel, Anum_credential_key_id, "key_id");
	check_column(catalog.credential_rel, Anum_credential_tenant, "tenant");
	check_column(catalog.credential_rel, Anum_credential_name, "name");
	check_column(catalog.credential_rel, Anum_credential_scopes, "scopes");
	check_column(catalog.credential_rel, Anum_credential_status, "status");
	check_column(catalog.credential_rel, Anum_credential_expires_at, "expires_at");
	check_column(catalog.credential_rel, Anum_credential_allowed_ips, "allowed_ips");
	check_column(catalog.credential_rel, Anum_credential_rate_limit, "rate_limit");
	check_column(catalog.credential_rel, Anum_credential_rate_window, "rate_window");
	check_column(catalog.credential_rel, Anum_credential_usage_limit, "usage_limit");
	check_column(catalog.credential_rel, Anum_credential_usage_period, "usage_period");
	check_column(catalog.usage_rel, Anum_usage_key_id, "key_id");
	check_column(catalog.usage_rel, Anum_usage_used, "used");
	check_column(catalog.usage_rel, Anum_usage_period_start, "period_start");
	check_column(catalog.secret_rel, Anum_secret_digest, "digest");
	check_column(catalog.secret_rel, Anum_secret_key_id, "key_id");
	check_column(catalog.secret_rel, Anum_secret_valid_until, "valid_until");
	/* named limits (1.1): found by name; the 1.0 schema has none */
	catalog.credential_limits = get_attnum(catalog.credential_rel, "limits");
	catalog.tenant_limits = get_attnum(catalog.tenant_rel, "limits");
	catalog.credential_credits = get_attnum(catalog.credential_rel, "credits");

	catalog_valid = true;
	return &catalog;
}
