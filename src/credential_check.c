/*
 * credential_check.c - apikeys.credential's one CHECK constraint: the
 * bounds of every field of a key row, in C.
 *
 * The management functions check their arguments first and say what is
 * wrong (validate.c and the PL/pgSQL bodies); this is the table's second
 * line, against a row written some other way.  It used to be eighteen SQL
 * CHECK constraints, whose expressions PostgreSQL reads back from the
 * catalog and plans again for every statement that writes the table: that
 * was one seventh of the time of an apikey_create.  One function call with
 * the columns as arguments is read and planned much faster, and an error
 * still names the rule that failed, by the name its SQL constraint had.
 *
 * As in SQL, a rule whose columns are NULL holds (NOT NULL is the columns'
 * own constraint).
 */
#include "apikeys.h"
#include "key_format.h"
#include "validate.h"

#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/* The arguments of apikeys_internal.credential_valid, in order. */
enum
{
	A_NAME, A_DESCRIPTION, A_PREFIX, A_SCOPES, A_METADATA, A_STATUS,
	A_REVOKED_AT, A_REVOKED_REASON, A_ALLOWED_IPS, A_RATE_LIMIT, A_RATE_WINDOW,
	A_USAGE_LIMIT, A_USAGE_PERIOD, A_CREDITS, A_CREDITS_REFILL,
	A_CREDITS_REFILL_INTERVAL, A_CREDITS_REFILL_DAY, A_NARGS
};

/* Refuse the row: rule is the name of the constraint it breaks. */
static void
violated(const char *rule, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("new row for relation \"credential\" violates check constraint \"%s\"", rule),
			 errdetail("%s", what),
			 errhint("Change keys through the apikeys functions, which check their arguments."),
			 err_generic_string(PG_DIAG_SCHEMA_NAME, "apikeys"),
			 err_generic_string(PG_DIAG_TABLE_NAME, "credential"),
			 err_generic_string(PG_DIAG_CONSTRAINT_NAME, rule)));
}

/* Characters in a text of at most max characters?  Bytes bound them from above. */
static bool
chars_at_most(Datum d, int max)
{
	text	   *t = DatumGetTextPP(d);
	int			bytes = VARSIZE_ANY_EXHDR(t);

	return bytes <= max || pg_mbstrlen_with_len(VARDATA_ANY(t), bytes) <= max;
}

/* Elements of an array, all dimensions (SQL's cardinality). */
static int
cardinality_of(Datum d)
{
	ArrayType  *a = DatumGetArrayTypeP(d);

	return ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));
}

/* Is the interval d within [lo, hi], compared as SQL compares intervals? */
static bool
interval_within(Datum d, const Interval *lo, const Interval *hi)
{
	return DatumGetInt32(DirectFunctionCall2(interval_cmp, d, IntervalPGetDatum(lo))) >= 0 &&
		DatumGetInt32(DirectFunctionCall2(interval_cmp, d, IntervalPGetDatum(hi))) <= 0;
}

/* Is text d the C string s? */
static bool
text_is(Datum d, const char *s)
{
	text	   *t = DatumGetTextPP(d);
	size_t		len = strlen(s);

	return VARSIZE_ANY_EXHDR(t) == len && memcmp(VARDATA_ANY(t), s, len) == 0;
}

PG_FUNCTION_INFO_V1(apikeys_credential_valid);

/*
 * apikeys_internal.credential_valid(name, description, prefix, scopes,
 * metadata, status, revoked_at, revoked_reason, allowed_ips, rate_limit,
 * rate_window, usage_limit, usage_period, credits, credits_refill,
 * credits_refill_interval, credits_refill_day): true, or an error naming
 * the rule the row breaks.  Not strict: most columns may be NULL.
 */
Datum
apikeys_credential_valid(PG_FUNCTION_ARGS)
{
	static const Interval one_second = {.time = USECS_PER_SEC};
	static const Interval one_day = {.day = 1};
	static const Interval days_366 = {.day = 366};

#define HAS(a) (!PG_ARGISNULL(a))
	Assert(PG_NARGS() == A_NARGS);

	if (HAS(A_NAME) && (VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(A_NAME)) == 0 ||
						!chars_at_most(PG_GETARG_DATUM(A_NAME), NAME_MAX_CHARS)))
		violated("credential_name_check", "A name has 1 to 200 characters.");
	if (HAS(A_DESCRIPTION) && !chars_at_most(PG_GETARG_DATUM(A_DESCRIPTION), DESCRIPTION_MAX_CHARS))
		violated("credential_description_check", "A description has at most 2000 characters.");
	if (HAS(A_PREFIX))
	{
		text	   *prefix = PG_GETARG_TEXT_PP(A_PREFIX);

		if (!key_prefix_valid(VARDATA_ANY(prefix), VARSIZE_ANY_EXHDR(prefix)))
			violated("credential_prefix_check",
					 "A prefix is 1 to 32 of a-z, 0-9 and single inner underscores, starting with a letter.");
	}
	if (HAS(A_SCOPES) && cardinality_of(PG_GETARG_DATUM(A_SCOPES)) > SCOPES_MAX)
		violated("credential_scopes_check", "A key has at most 64 scopes.");
	if (HAS(A_METADATA) && !jsonb_is_object(PG_GETARG_JSONB_P(A_METADATA)))
		violated("credential_metadata_check", "Metadata is a JSON object.");
	if (HAS(A_STATUS))
	{
		Datum		status = PG_GETARG_DATUM(A_STATUS);
		bool		revoked = text_is(status, "revoked");

		if (!revoked && !text_is(status, "active") && !text_is(status, "disabled"))
			violated("credential_status_check", "A status is active, disabled or revoked.");
		if (revoked != HAS(A_REVOKED_AT))
			violated("credential_check", "A key has a revocation time exactly when it is revoked.");
	}
	if (HAS(A_REVOKED_REASON) && !chars_at_most(PG_GETARG_DATUM(A_REVOKED_REASON), REVOKED_REASON_MAX_CHARS))
		violated("credential_revoked_reason_check", "A revocation reason has at most 2000 characters.");
	if (HAS(A_ALLOWED_IPS))
	{
		int			n = cardinality_of(PG_GETARG_DATUM(A_ALLOWED_IPS));

		if (n < 1 || n > ALLOWED_IPS_MAX)
			violated("credential_allowed_ips_check", "An address list has 1 to 16 entries (NULL: any address).");
	}
	if (HAS(A_RATE_LIMIT) && PG_GETARG_INT32(A_RATE_LIMIT) <= 0)
		violated("credential_rate_limit_check", "A rate limit is positive.");
	if (HAS(A_RATE_WINDOW) && !interval_within(PG_GETARG_DATUM(A_RATE_WINDOW), &one_second, &one_day))
		violated("credential_rate_window_check", "A rate window is 1 second to 1 day.");
	if (HAS(A_RATE_LIMIT) != HAS(A_RATE_WINDOW))
		violated("credential_check1", "A rate limit and its window are set together.");
	if (HAS(A_USAGE_LIMIT) && PG_GETARG_INT64(A_USAGE_LIMIT) <= 0)
		violated("credential_usage_limit_check", "A usage cap is positive.");
	if (HAS(A_USAGE_PERIOD) && !interval_within(PG_GETARG_DATUM(A_USAGE_PERIOD), &one_second, &days_366))
		violated("credential_usage_period_check", "A usage period is 1 second to 366 days.");
	if (HAS(A_CREDITS) && PG_GETARG_INT64(A_CREDITS) < 0)
		violated("credential_credits_check", "Credits are not negative.");
	if (HAS(A_CREDITS_REFILL) && PG_GETARG_INT64(A_CREDITS_REFILL) <= 0)
		violated("credential_credits_refill_check", "A refill is positive.");
	if (HAS(A_CREDITS_REFILL_INTERVAL) &&
		!interval_within(PG_GETARG_DATUM(A_CREDITS_REFILL_INTERVAL), &one_second, &days_366))
		violated("credential_credits_refill_interval_check", "A refill interval is 1 second to 366 days.");
	if (HAS(A_CREDITS_REFILL_DAY) &&
		(PG_GETARG_INT32(A_CREDITS_REFILL_DAY) < 1 || PG_GETARG_INT32(A_CREDITS_REFILL_DAY) > 31))
		violated("credential_credits_refill_day_check", "A refill day is 1 to 31.");
#undef HAS
	PG_RETURN_BOOL(true);
}
