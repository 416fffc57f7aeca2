/*
 * fuzz_key_format.c - libFuzzer target for src/key_format.c (plain C).
 *
 * Build (scripts/test.sh does this):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         test/fuzz/fuzz_key_format.c src/key_format.c -o fuzz_key_format
 *
 * Invariants checked on every input:
 *   1. key_parse on arbitrary bytes (in an exact-size heap buffer, so ASan
 *      catches any read past len) never crashes; when it says KEY_OK the key
 *      has the documented shape and key_hint produces a well-formed hint.
 *   2. key_format, for a prefix and body derived from the input, yields a key
 *      of the documented shape that parses KEY_OK with the same prefix length.
 *   3. Replacing any one character of a good key with a different byte never
 *      yields KEY_OK (the CRC-32C checksum catches every single-byte change).
 */
#include "key_format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
			abort(); \
		} \
	} while (0)

static const char alphabet[] =
"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

static int
is_b58(unsigned char c)
{
	return c != '\0' && strchr(alphabet, c) != NULL;
}

/* Parse a copy of key[0..len) held in a heap buffer of exactly len bytes. */
static KeyParseResult
parse_exact(const char *key, size_t len, size_t *plen)
{
	char	   *buf = malloc(len ? len : 1);
	KeyParseResult r;

	CHECK(buf != NULL);
	if (len)
		memcpy(buf, key, len);
	/* for len 0, pass a pointer to a freed-size-0-like region: ASan flags any read */
	r = key_parse(len ? buf : buf + 1, len, plen);
	free(buf);
	return r;
}

/* Shape of a KEY_OK key: <prefix>_<50 base58 chars>, prefix valid. */
static void
check_shape(const char *key, size_t len, size_t plen)
{
	CHECK(plen >= 1 && plen <= KEY_PREFIX_MAX);
	CHECK(len == plen + 1 + KEY_TAIL_CHARS);
	CHECK(key[plen] == '_');
	CHECK(key_prefix_valid(key, plen));
	for (size_t i = plen + 1; i < len; i++)
		CHECK(is_b58((unsigned char) key[i]));
}

static void
check_hint(const char *key, size_t len, size_t plen)
{
	char	   *hint = malloc(KEY_HINT_MAX_LEN + 1);
	size_t		hlen;

	CHECK(hint != NULL);
	hlen = key_hint(key, len, plen, hint);
	CHECK(hlen == plen + 1 + KEY_HINT_CHARS + 3 + KEY_HINT_CHARS);
	CHECK(hlen <= KEY_HINT_MAX_LEN);
	CHECK(hint[hlen] == '\0');
	CHECK(strlen(hint) == hlen);
	CHECK(memcmp(hint, key, plen + 1 + KEY_HINT_CHARS) == 0);
	CHECK(memcmp(hint + plen + 1 + KEY_HINT_CHARS, "...", 3) == 0);
	CHECK(memcmp(hint + hlen - KEY_HINT_CHARS, key + len - KEY_HINT_CHARS, KEY_HINT_CHARS) == 0);
	free(hint);
}

/* Build a valid prefix (1..32 chars) from fuzz bytes. */
static size_t
make_prefix(const uint8_t *data, size_t size, char *out)
{
	static const char word[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	size_t		n = size ? (size_t) (data[0] % KEY_PREFIX_MAX) + 1 : 2;
	size_t		len = 0;

	for (size_t i = 0; i < n; i++)
	{
		uint8_t		b = (i + 1 < size) ? data[i + 1] : (uint8_t) (i * 7);
		char		c;

		if (len == 0)
			c = 'a' + b % 26;
		else if (b % 9 == 0 && out[len - 1] != '_' && i + 1 < n)
			c = '_';
		else
			c = word[b % 36];
		out[len++] = c;
	}
	if (out[len - 1] == '_')
		out[len - 1] = 'z';
	out[len] = '\0';
	return len;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* CRC-32C check value */
	CHECK(key_crc32c((const uint8_t *) "123456789", 9) == 0xE3069283u);
	CHECK(key_crc32c_portable((const uint8_t *) "123456789", 9) == 0xE3069283u);
	/* base58 of the largest and smallest bodies, both ways */
	{
		uint8_t		ones[KEY_BODY_BYTES],
					zeros[KEY_BODY_BYTES] = {0};
		char		a[KEY_BODY_CHARS],
					b[KEY_BODY_CHARS];

		memset(ones, 0xFF, sizeof(ones));
		key_base58(ones, KEY_BODY_BYTES, a, KEY_BODY_CHARS);
		key_base58_portable(ones, KEY_BODY_BYTES, b, KEY_BODY_CHARS);
		CHECK(memcmp(a, b, KEY_BODY_CHARS) == 0);
		key_base58(zeros, KEY_BODY_BYTES, a, KEY_BODY_CHARS);
		CHECK(memcmp(a, "11111111111111111111111111111111111111111111", KEY_BODY_CHARS) == 0);
		for (int i = 0; i < KEY_BODY_BYTES; i++)
			zeros[i] = (uint8_t) i;	/* 0x00 0x01 ... 0x1f, as Python's int.from_bytes gives it */
		key_base58(zeros, KEY_BODY_BYTES, a, KEY_BODY_CHARS);
		CHECK(memcmp(a, "111thX6LZfHDZZKUs92febYZhYRcXddmzfzF2NvTkPNE", KEY_BODY_CHARS) == 0);
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t		plen = 0;
	KeyParseResult r;

	/* 0. the fast CRC (SSE 4.2 where there is one) agrees with the table's */
	CHECK(key_crc32c(data, size) == key_crc32c_portable(data, size));
	/* the fast base58 (five digits a pass) agrees with the plain one, for a body and a checksum */
	if (size >= KEY_BODY_BYTES)
	{
		char		fast[KEY_BODY_CHARS],
					plain[KEY_BODY_CHARS];

		key_base58(data, KEY_BODY_BYTES, fast, KEY_BODY_CHARS);
		key_base58_portable(data, KEY_BODY_BYTES, plain, KEY_BODY_CHARS);
		CHECK(memcmp(fast, plain, KEY_BODY_CHARS) == 0);
	}
	if (size >= 4)
	{
		char		fast[KEY_CHECKSUM_CHARS],
					plain[KEY_CHECKSUM_CHARS];

		key_base58(data, 4, fast, KEY_CHECKSUM_CHARS);
		key_base58_portable(data, 4, plain, KEY_CHECKSUM_CHARS);
		CHECK(memcmp(fast, plain, KEY_CHECKSUM_CHARS) == 0);
	}

	/* 1. arbitrary bytes */
	r = parse_exact((const char *) data, size, &plen);
	CHECK(r >= KEY_OK && r <= KEY_BAD_CHECKSUM);
	if (r == KEY_OK)
	{
		check_shape((const char *) data, size, plen);
		check_hint((const char *) data, size, plen);
	}
	if (size < 1 + 1 + KEY_TAIL_CHARS || size > KEY_MAX_LEN)
		CHECK(r == KEY_BAD_LENGTH);

	/* 2. format from a derived prefix and body */
	{
		char		prefix[KEY_PREFIX_MAX + 1];
		uint8_t		body[KEY_BODY_BYTES];
		char	   *out = malloc(KEY_MAX_LEN + 1);	/* exactly what the API requires */
		char	   *key;
		size_t		prefix_len = make_prefix(data, size, prefix);
		size_t		len, plen2 = 0;

		CHECK(out != NULL);
		CHECK(key_prefix_valid(prefix, prefix_len));
		for (size_t i = 0; i < KEY_BODY_BYTES; i++)
			body[i] = (size > 0) ? data[(i + prefix_len) % size] ^ (uint8_t) (i * 31) : 0;
		if (size > 0 && data[size - 1] & 1)
			memset(body, data[size - 1] & 2 ? 0xFF : 0x00, sizeof(body));	/* extremes */

		len = key_format(prefix, prefix_len, body, out);
		CHECK(len == prefix_len + 1 + KEY_TAIL_CHARS);
		CHECK(out[len] == '\0' && strlen(out) == len);
		CHECK(memcmp(out, prefix, prefix_len) == 0);

		key = malloc(len);	/* exact size: no terminator */
		CHECK(key != NULL);
		memcpy(key, out, len);
		CHECK(key_parse(key, len, &plen2) == KEY_OK);
		CHECK(plen2 == prefix_len);
		check_shape(key, len, plen2);
		check_hint(key, len, plen2);

		/* deterministic */
		{
			char	   *again = malloc(KEY_MAX_LEN + 1);

			CHECK(again != NULL);
			CHECK(key_format(prefix, prefix_len, body, again) == len);
			CHECK(memcmp(again, out, len + 1) == 0);
			free(again);
		}

		/* 3. every single-character change is rejected */
		for (size_t i = 0; i < len; i++)
		{
			char		orig = key[i];
			uint8_t		pick = (size > 0) ? data[(i * 13 + 5) % size] : (uint8_t) i;
			char		repl[3];

			repl[0] = (char) pick;						/* any byte */
			repl[1] = alphabet[pick % 58];				/* a plausible base58 char */
			repl[2] = (char) (orig ^ (1 << (pick % 8)));	/* a one-bit flip */
			for (int j = 0; j < 3; j++)
			{
				KeyParseResult r2;

				key[i] = repl[j];
				r2 = key_parse(key, len, NULL);
				if (repl[j] == orig)
					CHECK(r2 == KEY_OK);
				else
					CHECK(r2 != KEY_OK);
			}
			key[i] = orig;
		}

		/* truncation and extension never parse */
		if (len > 0)
			CHECK(key_parse(key, len - 1, NULL) != KEY_OK);
		{
			char	   *longer = malloc(len + 1);

			CHECK(longer != NULL);
			memcpy(longer, key, len);
			longer[len] = (size > 0) ? alphabet[data[0] % 58] : '1';
			CHECK(key_parse(longer, len + 1, NULL) != KEY_OK);
			free(longer);
		}

		free(key);
		free(out);
	}
	return 0;
}
