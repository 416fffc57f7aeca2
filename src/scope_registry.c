/*
 * scope_registry.c - the scope registry: which scopes new scope lists may
 * hold (apikeys.scope, managed by apikeys.scope_define()/scope_drop()).
 *
 * The valid scopes of tenant t are t's own entries plus the global ones
 * (tenant NULL).  When t has none and the global registry is empty, t is
 * unrestricted: any well-formed scope goes.  Entries match literally: a key
 * may hold "read:*" only if "read:*" itself is registered, and registering
 * "read:*" does not make "read:orders" valid.
 *
 * The registry governs what is written (apikey_create, apikey_create_many,
 * apikey_update of scopes, and whatever else calls
 * apikeys_internal.check_scopes()), never what verifies: apikey_verify does
 * not read it, so a registry change never invalidates a key by itself.
 * scope_drop() refuses while a key that the entry covers still holds the
 * scope; the entries a new scope list uses are locked FOR KEY SHARE until
 * commit, so a concurrent drop waits for it and then counts its key.
 *
 * Cost when the tenant has no registry: nothing for a key without scopes,
 * else one index probe (scope_registry_idx).
 */
#include "apikeys.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"

/* The error detail lists at most this many valid scopes. */
#define REGISTRY_DETAIL_MAX 20

static SPIPlanPtr exists_plan = NULL;
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr unknown_plan = NULL;

/* The registry entries that apply to tenant $1: its own and the global ones. */
#define APPLIES "COALESCE(s.tenant, '') OPERATOR(pg_catalog.=) ANY (ARRAY['', $1])"

/*
 * Refuse (22023 invalid_scope) a scope list, already normalized (sorted, no
 * duplicates), that holds a scope tenant's registry does not list; lock the
 * entries it uses.  The caller has authorized the acting role for tenant
 * (the error lists the tenant's valid scopes) and is inside SPI_connect.
 */
void
apikeys_check_scope_registry(const char *tenant, ArrayType *scopes)
{
	Oid			argtypes[2] = {TEXTOID, TEXTARRAYOID};
	Datum		values[2];
	int			n;

	Assert(tenant != NULL && scopes != NULL);
	n = ArrayGetNItems(ARR_NDIM(scopes), ARR_DIMS(scopes));
	if (n == 0)
		return;					/* nothing to check: no probe at all */
	values[0] = CStringGetTextDatum(tenant);
	values[1] = PointerGetDatum(scopes);

	/* a concurrent registry change can make a step disagree with the one before: ask again */
	for (;;)
	{
		bool		isnull;
		int64		found,
					total;
		char	   *unknown,
				   *list;

		CHECK_FOR_INTERRUPTS();
		/* 1. the one probe a tenant without a registry pays */
		apikeys_spi_run(&exists_plan,
						"SELECT 1 FROM apikeys.scope s WHERE " APPLIES " LIMIT 1",
						1, argtypes, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			return;				/* unrestricted */

		/* 2. every scope registered?  Lock the entries used until commit. */
		apikeys_spi_run(&lock_plan,
						"SELECT pg_catalog.count(DISTINCT x.scope) FROM"
						" (SELECT s.scope FROM apikeys.scope s WHERE " APPLIES
						"   AND s.scope OPERATOR(pg_catalog.=) ANY ($2) FOR KEY SHARE OF s) x",
						2, argtypes, values, NULL, SPI_OK_SELECT);
		found = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (found == n)
			return;

		/* 3. the first unknown scope, and the valid ones for the message */
		apikeys_spi_run(&unknown_plan,
						"SELECT (SELECT u.x FROM pg_catalog.unnest($2) u(x)"
						"         WHERE NOT EXISTS (SELECT 1 FROM apikeys.scope s WHERE " APPLIES
						"                            AND s.scope OPERATOR(pg_catalog.=) u.x)"
						"         ORDER BY u.x COLLATE \"C\" LIMIT 1),"
						"       (SELECT pg_catalog.string_agg(v.scope, ', ' ORDER BY v.scope) FROM"
						"         (SELECT DISTINCT s.scope FROM apikeys.scope s WHERE " APPLIES
						"           ORDER BY s.scope LIMIT " CppAsString2(REGISTRY_DETAIL_MAX) ") v),"
						"       (SELECT pg_catalog.count(DISTINCT s.scope) FROM apikeys.scope s WHERE " APPLIES ")",
						2, argtypes, values, NULL, SPI_OK_SELECT);
		unknown = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		list = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		total = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
		if (unknown == NULL || total == 0)
			continue;			/* the registry changed under us */
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_scope: unknown scope \"%s\"", unknown),
				 total > REGISTRY_DETAIL_MAX ?
				 errdetail("Valid scopes (the first %d of " INT64_FORMAT "): %s.",
						   REGISTRY_DETAIL_MAX, total, list) :
				 errdetail("Valid scopes: %s.", list),
				 errhint("Tenant \"%s\" accepts only the scopes of its registry and the global one (apikeys.scopes); apikeys.scope_define() adds one.",
						 tenant)));
	}
}

/* Is t among the n texts of elems? */
static bool
text_among(text *t, Datum *elems, bool *nulls, int n)
{
	for (int i = 0; i < n; i++)
	{
		text	   *e = DatumGetTextPP(elems[i]);

		if (!nulls[i] && VARSIZE_ANY_EXHDR(e) == VARSIZE_ANY_EXHDR(t) &&
			memcmp(VARDATA_ANY(e), VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)) == 0)
			return true;
	}
	return false;
}

/*
 * apikeys_internal.check_scopes(tenant, scopes, kept) (1.1): the scope list
 * normalized (sorted, de-duplicated, wildcards allowed; NULL is '{}'), its
 * scopes checked against tenant's registry and their entries locked until
 * commit.  Scopes also in kept (those a key already holds, for an update)
 * are not checked: a registry change never forces a key to drop a scope.
 * Not granted to anyone: callers authorize the acting role for tenant first.
 */
PG_FUNCTION_INFO_V1(apikeys_sql_check_scopes_1_1);
Datum
apikeys_sql_check_scopes_1_1(PG_FUNCTION_ARGS)
{
	char	   *tenant = apikeys_check_tenant_id(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	ArrayType  *scopes = apikeys_normalize_scopes_ext(PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1), true);
	ArrayType  *check = scopes;

	if (!PG_ARGISNULL(2))
	{
		ArrayType  *kept = PG_GETARG_ARRAYTYPE_P(2);
		Datum	   *elems,
				   *kelems;
		bool	   *nulls,
				   *knulls;
		int			n,
					nk,
					m = 0;

		deconstruct_array(scopes, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		deconstruct_array(kept, TEXTOID, -1, false, TYPALIGN_INT, &kelems, &knulls, &nk);
		for (int i = 0; i < n; i++)
			if (!text_among(DatumGetTextPP(elems[i]), kelems, knulls, nk))
				elems[m++] = elems[i];
		/* still sorted and distinct: a subsequence of the normalized list */
		check = m == 0 ? construct_empty_array(TEXTOID) :
			construct_array(elems, m, TEXTOID, -1, false, TYPALIGN_INT);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	apikeys_check_scope_registry(tenant, check);
	SPI_finish();
	PG_RETURN_ARRAYTYPE_P(scopes);
}
