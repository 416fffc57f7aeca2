/*
 * key_format.h - the textual form of an apikeys secret.
 *
 *   <prefix>_<body><checksum>
 *
 * prefix   1..32 chars, [a-z0-9] words joined by single '_', starting with a
 *          letter (e.g. "ak", "live", "acme_test").
 * body     44 base58 chars: 32 bytes (256 bits) from a cryptographic source,
 *          encoded big-endian with a fixed width.
 * checksum 6 base58 chars: CRC-32C of "<prefix>_<body>", fixed width.
 *
 * The whole key matches KEY_FORMAT_REGEX.  This file is plain C (no
 * PostgreSQL headers) so the fuzz target can link it on its own.
 */
#ifndef APIKEYS_KEY_FORMAT_H
#define APIKEYS_KEY_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define KEY_PREFIX_MAX		32
#define KEY_BODY_BYTES		32
#define KEY_BODY_CHARS		44	/* ceil(256 / log2(58)) */
#define KEY_CHECKSUM_CHARS	6	/* ceil(32 / log2(58)) */
#define KEY_TAIL_CHARS		(KEY_BODY_CHARS + KEY_CHECKSUM_CHARS)
#define KEY_MAX_LEN			(KEY_PREFIX_MAX + 1 + KEY_TAIL_CHARS)
#define KEY_HINT_CHARS		4	/* visible chars at each end of the tail */
#define KEY_HINT_MAX_LEN	(KEY_PREFIX_MAX + 1 + KEY_HINT_CHARS + 3 + KEY_HINT_CHARS)

#define KEY_BASE58_CLASS	"[1-9A-HJ-NP-Za-km-z]"
#define KEY_FORMAT_REGEX \
	"^[a-z][a-z0-9]*(_[a-z0-9]+)*_" KEY_BASE58_CLASS "{50}$"

typedef enum KeyParseResult
{
	KEY_OK = 0,
	KEY_BAD_LENGTH,
	KEY_BAD_PREFIX,
	KEY_BAD_ALPHABET,
	KEY_BAD_CHECKSUM
} KeyParseResult;

/* Is prefix (len bytes) a valid key prefix? */
extern bool key_prefix_valid(const char *prefix, size_t len);

/*
 * Check a candidate key without touching anything but its bytes.  On KEY_OK,
 * *prefix_len receives the length of the prefix.
 */
extern KeyParseResult key_parse(const char *key, size_t len, size_t *prefix_len);

/*
 * Format a key from a valid prefix and 32 random bytes into out, which must
 * hold KEY_MAX_LEN + 1 bytes.  Returns the key length.
 */
extern size_t key_format(const char *prefix, size_t prefix_len,
						 const uint8_t body[KEY_BODY_BYTES], char *out);

/*
 * The visible hint of a well-formed key: "<prefix>_<first4>...<last4>"
 * (three ASCII dots).  out must hold KEY_HINT_MAX_LEN + 1 bytes.
 */
extern size_t key_hint(const char *key, size_t len, size_t prefix_len, char *out);

/*
 * CRC-32C (Castagnoli), as used by the checksum; exposed for tests, with the
 * portable form the fast one (SSE 4.2, chosen when the processor has it)
 * must agree with.
 */
extern uint32_t key_crc32c(const uint8_t *data, size_t len);
extern uint32_t key_crc32c_portable(const uint8_t *data, size_t len);

/*
 * Fixed-width big-endian base58 of inlen (at most KEY_BODY_BYTES) bytes in
 * width characters; exposed for tests, with the plain byte-at-a-time form
 * the fast one must agree with.
 */
extern void key_base58(const uint8_t *in, size_t inlen, char *out, size_t width);
extern void key_base58_portable(const uint8_t *in, size_t inlen, char *out, size_t width);

#endif							/* APIKEYS_KEY_FORMAT_H */
