/*
 * secret.c - mint a new secret and return it to the caller exactly once.
 */
#include "apikeys.h"

#include "access/htup_details.h"
#include "funcapi.h"
#include "utils/builtins.h"

/* Fill *out with a fresh key of the given (already validated) prefix. */
void
apikeys_new_secret(const char *prefix, size_t prefix_len, NewSecret *out)
{
	uint8		body[KEY_BODY_BYTES];

	apikeys_random_bytes(body, sizeof(body));

	out->prefix_len = prefix_len;
	out->key_len = key_format(prefix, prefix_len, body, out->key);
	explicit_bzero(body, sizeof(body));
	key_hint(out->key, out->key_len, prefix_len, out->hint);
	apikeys_sha256(out->key, out->key_len, out->digest);
}

/* Forget the plaintext held in C memory once it has been copied out. */
void
apikeys_wipe_secret(NewSecret *secret)
{
	explicit_bzero(secret->key, sizeof(secret->key));
}

/*
 * The row create and rotate return:
 * (key_id uuid, api_key text, hint text, prefix text, expires_at timestamptz,
 *  created_at timestamptz).
 */
Datum
apikeys_issued_key_tuple(FunctionCallInfo fcinfo, Datum key_id,
						 NewSecret *secret, Datum expires_at,
						 bool expires_null, Datum created_at)
{
	TupleDesc	desc;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};
	HeapTuple	tuple;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	desc = BlessTupleDesc(desc);

	values[0] = key_id;
	values[1] = PointerGetDatum(cstring_to_text_with_len(secret->key, secret->key_len));
	values[2] = CStringGetTextDatum(secret->hint);
	values[3] = PointerGetDatum(cstring_to_text_with_len(secret->key, secret->prefix_len));
	values[4] = expires_at;
	nulls[4] = expires_null;
	values[5] = created_at;
	apikeys_wipe_secret(secret);

	tuple = heap_form_tuple(desc, values, nulls);
	return HeapTupleGetDatum(tuple);
}
