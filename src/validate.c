/*
 * validate.c - argument checks for the management functions.
 *
 * Every failure is a 22023 (invalid_parameter_value) whose message starts
 * with a stable snake_case code; the README lists them.  The same rules are
 * repeated as CHECK constraints on the tables, as a second line.
 */
#include "apikeys.h"
#include "validate.h"

#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "fmgr.h"


static void
invalid(const char *code, const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s: %s", code, detail),
			 hint ? errhint("%s", hint) : 0));
}

static bool
has_control_chars(const char *s, int len)
{
	for (int i = 0; i < len; i++)
		if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
			return true;
	return false;
}

/* tenant ids: 1..63 of [a-z0-9_.-], starting with [a-z0-9] */
char *
apikeys_check_tenant_id(text *tenant)
{
	const char *s;
	int			len;

	if (tenant == NULL)
		invalid("invalid_tenant", "tenant must not be NULL", NULL);
	s = VARDATA_ANY(tenant);
	len = VARSIZE_ANY_EXHDR(tenant);
	if (len < 1 || len > TENANT_MAX_CHARS)
		invalid("invalid_tenant", "tenant must be 1 to 63 characters",
				"Use lower-case letters, digits, '_', '.' and '-'.");
	for (int i = 0; i < len; i++)
	{
		char		c = s[i];
		bool		alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-')))
			invalid("invalid_tenant",
					"tenant must start with [a-z0-9] and contain only [a-z0-9_.-]",
					"Use lower-case letters, digits, '_', '.' and '-'.");
	}
	return text_to_cstring(tenant);
}

char *
apikeys_check_name(text *name)
{
	char	   *s;
	int			chars;

	if (name == NULL)
		invalid("invalid_name", "name must not be NULL", NULL);
	s = text_to_cstring(name);
	chars = pg_mbstrlen(s);
	if (chars < 1 || chars > NAME_MAX_CHARS)
		invalid("invalid_name", "name must be 1 to 200 characters", NULL);
	if (has_control_chars(s, strlen(s)))
		invalid("invalid_name", "name must not contain control characters", NULL);
	if (s[0] == ' ' || s[strlen(s) - 1] == ' ')
		invalid("invalid_name", "name must not start or end with a space", NULL);
	return s;
}

void
apikeys_check_description(text *description)
{
	if (description == NULL)
		return;
	if (pg_mbstrlen_with_len(VARDATA_ANY(description),
							 VARSIZE_ANY_EXHDR(description)) > DESCRIPTION_MAX_CHARS)
		invalid("invalid_description", "description must be at most 2000 characters", NULL);
}

/*
 * One scope: 1..64 of letters, digits and _.:/-, starting with a letter or
 * digit.  With allow_wildcard (the 1.1 functions), a final '*' right after a
 * ':' is allowed too ("read:*": every scope under "read:", see verify.c).
 */
static void
check_scope(const char *s, int len, bool allow_wildcard)
{
	if (len < 1 || len > SCOPE_MAX_CHARS)
		invalid("invalid_scope", "each scope must be 1 to 64 characters", NULL);
	for (int i = 0; i < len; i++)
	{
		char		c = s[i];
		bool		alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9');

		if (c == '*' && allow_wildcard)
		{
			if (i != len - 1 || i < 2 || s[i - 1] != ':')
				invalid("invalid_scope",
						"a wildcard '*' may only end a scope, right after a ':'",
						"Example: read:* covers read:orders and read:users.");
			continue;
		}
		if (!alnum && (i == 0 || strchr("_.:/-", c) == NULL || c == '\0'))
			invalid("invalid_scope",
					"scopes must start with a letter or digit and contain only letters, digits and _.:/-",
					"Example scopes: read, orders:write, admin/users.");
	}
}

static int
scope_cmp(const void *a, const void *b)
{
	text	   *ta = DatumGetTextPP(*(const Datum *) a);
	text	   *tb = DatumGetTextPP(*(const Datum *) b);
	int			la = VARSIZE_ANY_EXHDR(ta),
				lb = VARSIZE_ANY_EXHDR(tb);
	int			c = memcmp(VARDATA_ANY(ta), VARDATA_ANY(tb), Min(la, lb));

	return c != 0 ? c : (la > lb) - (la < lb);
}

/* Check every scope; return them sorted and without duplicates. */
ArrayType *
apikeys_normalize_scopes(ArrayType *scopes)
{
	return apikeys_normalize_scopes_ext(scopes, false);
}

/* apikeys_normalize_scopes(), with wildcards ("read:*") allowed if asked. */
ArrayType *
apikeys_normalize_scopes_ext(ArrayType *scopes, bool allow_wildcard)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				kept = 0;

	if (scopes == NULL)
		return construct_empty_array(TEXTOID);
	if (ARR_NDIM(scopes) > 1)
		invalid("invalid_scope", "scopes must be a one-dimensional array", NULL);
	deconstruct_array(scopes, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n > SCOPES_MAX)
		invalid("invalid_scope", "a key may carry at most 64 scopes", NULL);
	for (int i = 0; i < n; i++)
	{
		text	   *t;

		if (nulls[i])
			invalid("invalid_scope", "scopes must not contain NULL", NULL);
		t = DatumGetTextPP(elems[i]);
		check_scope(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), allow_wildcard);
		elems[i] = PointerGetDatum(t);
	}
	if (n == 0)
		return construct_empty_array(TEXTOID);
	qsort(elems, n, sizeof(Datum), scope_cmp);
	for (int i = 0; i < n; i++)
		if (kept == 0 || scope_cmp(&elems[kept - 1], &elems[i]) != 0)
			elems[kept++] = elems[i];
	return construct_array(elems, kept, TEXTOID, -1, false, TYPALIGN_INT);
}

void
apikeys_check_expiry(TimestampTz expires_at)
{
	if (TIMESTAMP_NOT_FINITE(expires_at) || expires_at <= GetCurrentTransactionStartTimestamp())
		invalid("invalid_expiry", "expires_at must be a finite time in the future",
				"Pass NULL for a key that never expires.");
}

void
apikeys_check_metadata(Datum metadata)
{
	Jsonb	   *jb = DatumGetJsonbP(metadata);

	if (!jsonb_is_object(jb))
		invalid("invalid_metadata", "metadata must be a JSON object", NULL);
	if (VARSIZE(jb) > METADATA_MAX_BYTES)
		invalid("invalid_metadata", "metadata must be at most 8 kB", NULL);
}

char *
apikeys_check_prefix(text *prefix)
{
	if (prefix == NULL ||
		!key_prefix_valid(VARDATA_ANY(prefix), VARSIZE_ANY_EXHDR(prefix)))
		invalid("invalid_prefix",
				"prefix must be 1 to 32 characters: lower-case words of [a-z0-9] joined by single '_', starting with a letter",
				"Examples: ak, live, test, acme_live.");
	return text_to_cstring(prefix);
}

/*
 * SQL-callable forms (STRICT: NULL means "not given"), used by the
 * PL/pgSQL management functions so both languages apply one set of rules.
 */
PG_FUNCTION_INFO_V1(apikeys_sql_check_tenant_id);
Datum
apikeys_sql_check_tenant_id(PG_FUNCTION_ARGS)
{
	/* declared STRICT as _check_tenant_id, not as _tenant_arg */
	apikeys_check_tenant_id(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

PG_FUNCTION_INFO_V1(apikeys_sql_check_name);
Datum
apikeys_sql_check_name(PG_FUNCTION_ARGS)
{
	apikeys_check_name(PG_GETARG_TEXT_PP(0));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

PG_FUNCTION_INFO_V1(apikeys_sql_check_description);
Datum
apikeys_sql_check_description(PG_FUNCTION_ARGS)
{
	apikeys_check_description(PG_GETARG_TEXT_PP(0));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

PG_FUNCTION_INFO_V1(apikeys_sql_normalize_scopes);
Datum
apikeys_sql_normalize_scopes(PG_FUNCTION_ARGS)
{
	PG_RETURN_ARRAYTYPE_P(apikeys_normalize_scopes(PG_GETARG_ARRAYTYPE_P(0)));
}

/*
 * apikeys_internal._check_scope(scope) (1.1): one registry entry's scope,
 * wildcards allowed; NULL is an error.
 */
PG_FUNCTION_INFO_V1(apikeys_sql_check_scope_1_1);
Datum
apikeys_sql_check_scope_1_1(PG_FUNCTION_ARGS)
{
	text	   *t;

	if (PG_ARGISNULL(0))
		invalid("invalid_scope", "scope must not be NULL", NULL);
	t = PG_GETARG_TEXT_PP(0);
	check_scope(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), true);
	PG_RETURN_TEXT_P(t);
}

PG_FUNCTION_INFO_V1(apikeys_sql_check_expiry);
Datum
apikeys_sql_check_expiry(PG_FUNCTION_ARGS)
{
	apikeys_check_expiry(PG_GETARG_TIMESTAMPTZ(0));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

PG_FUNCTION_INFO_V1(apikeys_sql_check_metadata);
Datum
apikeys_sql_check_metadata(PG_FUNCTION_ARGS)
{
	apikeys_check_metadata(PG_GETARG_DATUM(0));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}
