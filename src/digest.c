/*
 * digest.c - SHA-256 of a presented key, the only form a secret is stored in.
 *
 * Keys carry 256 random bits, so a fast unsalted hash is enough: there is no
 * dictionary to attack.  PostgreSQL's own implementation (OpenSSL when the
 * server was built with it) is used; its API changed in 14 and 15.
 */
#include "apikeys.h"

#if PG_VERSION_NUM >= 140000
#include "common/cryptohash.h"
#endif
#include "common/sha2.h"

void
apikeys_sha256(const char *data, size_t len, uint8 out[APIKEYS_DIGEST_LEN])
{
#if PG_VERSION_NUM >= 140000
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (ctx == NULL ||
		pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) data, len) < 0 ||
#if PG_VERSION_NUM >= 150000
		pg_cryptohash_final(ctx, out, APIKEYS_DIGEST_LEN) < 0
#else
		pg_cryptohash_final(ctx, out) < 0
#endif
		)
	{
		pg_cryptohash_free(ctx);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("internal_error: could not compute SHA-256 digest")));
	}
	pg_cryptohash_free(ctx);
#else
	pg_sha256_ctx ctx;

	pg_sha256_init(&ctx);
	pg_sha256_update(&ctx, (const uint8 *) data, len);
	pg_sha256_final(&ctx, out);
#endif
}
