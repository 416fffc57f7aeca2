/*
 * verdicts.h - the one list of apikey_verify's verdicts.
 *
 * Everything that depends on the set of verdicts follows from this list:
 * the VerdictCode enum and apikeys_verdict_names (policy.h, verify.c), the
 * outcome counters and apikeys.verifications (stats.c), the columns the
 * flush worker writes to apikeys.usage and their order (flush_writer.c,
 * flush_update.c), and apikeys_internal.verdicts(), through which the SQL
 * side (apikeys.key_usage, the PostgREST gate's HTTP status) reads the same
 * list.  Test policy_verdicts fails when apikeys.usage, key_usage or the
 * gate disagree with it.
 *
 * X(enum, name, counted, http_status)
 *   enum         the C constant; its position is the verdict's code (the
 *                index in _pending_usage's counts array, which 1.0's SQL
 *                reads by position): codes are only ever appended.
 *   name         the code apikey_verify returns; never renamed.
 *   counted      has a count_<name> column in apikeys.usage (and a column
 *                in key_usage), in list order.  Verdicts without a key
 *                (malformed, not_found) have nothing to count against.
 *   http_status  what the PostgREST gate answers.
 *
 * usage_exceeded is also the verdict of a key whose credits are used up
 * (or fewer than the cost): a key has a usage cap or credits, never both,
 * so the key's settings say which, and clients and the gate (429) treat
 * both alike, as a rate limit's refusal is one verdict for every limit.
 */
#ifndef APIKEYS_VERDICTS_H
#define APIKEYS_VERDICTS_H

#define APIKEYS_VERDICTS(X) \
	X(V_VALID,              "valid",              true,  200) \
	X(V_MALFORMED,          "malformed",          false, 401) \
	X(V_NOT_FOUND,          "not_found",          false, 401) \
	X(V_DISABLED,           "disabled",           true,  401) \
	X(V_REVOKED,            "revoked",            true,  401) \
	X(V_EXPIRED,            "expired",            true,  401) \
	X(V_TENANT_INACTIVE,    "tenant_inactive",    true,  403) \
	X(V_IP_NOT_ALLOWED,     "ip_not_allowed",     true,  403) \
	X(V_INSUFFICIENT_SCOPE, "insufficient_scope", true,  403) \
	X(V_RATE_LIMITED,       "rate_limited",       true,  429) \
	X(V_USAGE_EXCEEDED,     "usage_exceeded",     true,  429)

typedef enum VerdictCode
{
#define APIKEYS_VERDICT_ENUM(e, name, counted, http) e,
	APIKEYS_VERDICTS(APIKEYS_VERDICT_ENUM)
#undef APIKEYS_VERDICT_ENUM
	VERDICT_COUNT
} VerdictCode;

/* how many verdicts have a count column in apikeys.usage (a constant) */
#define APIKEYS_VERDICT_ONE_IF_COUNTED(e, name, counted, http) + ((counted) ? 1 : 0)
#define VERDICT_NCOUNTED (0 APIKEYS_VERDICTS(APIKEYS_VERDICT_ONE_IF_COUNTED))

typedef struct VerdictInfo
{
	const char *name;
	bool		counted;
	int			http_status;
} VerdictInfo;

/* indexed by VerdictCode (verify.c) */
extern const VerdictInfo apikeys_verdicts[VERDICT_COUNT];

#endif
