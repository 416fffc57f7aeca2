/*
 * key_format.c - encode, check and hint apikeys secrets (see key_format.h).
 *
 * Everything here is constant-size work on at most KEY_MAX_LEN bytes, so
 * apikey_verify can reject garbage before it touches a table.
 */
#include "key_format.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KEY_CRC32C_SSE42 1
#include <cpuid.h>
#include <nmmintrin.h>
#endif

static const char base58_alphabet[] =
"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/* -1 for bytes outside the alphabet */
static int8_t
base58_digit(unsigned char c)
{
	static int8_t table[256];
	static bool ready = false;

	if (!ready)
	{
		memset(table, -1, sizeof(table));
		for (int i = 0; i < 58; i++)
			table[(unsigned char) base58_alphabet[i]] = (int8_t) i;
		ready = true;
	}
	return table[c];
}

/*
 * Fixed-width big-endian base58, the plain way: repeatedly divide the byte
 * string by 58, writing remainders from the right.  width must be large
 * enough that the quotient reaches zero (44 chars for 32 bytes, 6 for 4).
 * The reference the fast form below is checked against (fuzz target).
 */
void
key_base58_portable(const uint8_t *in, size_t inlen, char *out, size_t width)
{
	uint8_t		num[KEY_BODY_BYTES];

	memcpy(num, in, inlen);
	for (size_t pos = width; pos > 0; pos--)
	{
		unsigned int rem = 0;

		for (size_t i = 0; i < inlen; i++)
		{
			unsigned int cur = (rem << 8) | num[i];

			num[i] = (uint8_t) (cur / 58);
			rem = cur % 58;
		}
		out[pos - 1] = base58_alphabet[rem];
	}
}

/* 58^5, the largest power of 58 below 2^32 */
#define B58_POW5 656356768u

/*
 * The same digits, five at a time: the number as 32-bit limbs divided by
 * 58^5 per pass (9 passes of 8 limbs for a key body instead of 44 of 32
 * bytes), each remainder giving five digits.  Digit j is floor(n / 58^j)
 * mod 58 either way, so the output is the portable form's.
 */
void
key_base58(const uint8_t *in, size_t inlen, char *out, size_t width)
{
	uint32_t	limb[KEY_BODY_BYTES / 4];
	size_t		nl = (inlen + 3) / 4;
	size_t		first = inlen - 4 * (nl - 1);	/* bytes in the top limb */
	size_t		pos = width;

	for (size_t l = 0, b = 0; l < nl; l++)
	{
		uint32_t	v = 0;

		for (size_t k = 0; k < (l == 0 ? first : 4); k++)
			v = (v << 8) | in[b++];
		limb[l] = v;
	}
	while (pos > 0)
	{
		uint64_t	rem = 0;

		for (size_t l = 0; l < nl; l++)
		{
			uint64_t	cur = (rem << 32) | limb[l];

			limb[l] = (uint32_t) (cur / B58_POW5);
			rem = cur % B58_POW5;
		}
		for (int k = 0; k < 5 && pos > 0; k++)
		{
			out[--pos] = base58_alphabet[rem % 58];
			rem /= 58;
		}
	}
}

/* CRC-32C a byte at a time through a table: any processor. */
uint32_t
key_crc32c_portable(const uint8_t *data, size_t len)
{
	static uint32_t table[256];
	static bool ready = false;
	uint32_t	crc = 0xFFFFFFFFu;

	if (!ready)
	{
		for (uint32_t i = 0; i < 256; i++)
		{
			uint32_t	c = i;

			for (int k = 0; k < 8; k++)
				c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
			table[i] = c;
		}
		ready = true;
	}
	for (size_t i = 0; i < len; i++)
		crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
	return crc ^ 0xFFFFFFFFu;
}

#ifdef KEY_CRC32C_SSE42
/* CRC-32C eight bytes at a time with SSE 4.2's crc32 instruction (same polynomial). */
__attribute__((target("sse4.2")))
static uint32_t
key_crc32c_sse42(const uint8_t *data, size_t len)
{
	uint64_t	crc = 0xFFFFFFFFu;
	size_t		i = 0;

	for (; i + 8 <= len; i += 8)
	{
		uint64_t	word;

		memcpy(&word, data + i, 8);
		crc = _mm_crc32_u64(crc, word);
	}
	for (; i < len; i++)
		crc = _mm_crc32_u8((uint32_t) crc, data[i]);
	return (uint32_t) crc ^ 0xFFFFFFFFu;
}
#endif

/*
 * CRC-32C of data: with SSE 4.2 when the processor has it (the checksum of
 * every verify), else through the table.  Chosen on first use.
 */
uint32_t
key_crc32c(const uint8_t *data, size_t len)
{
	static uint32_t (*chosen) (const uint8_t *, size_t) = NULL;

	if (chosen == NULL)
	{
		chosen = key_crc32c_portable;
#ifdef KEY_CRC32C_SSE42
		{
			unsigned int a, b, c, d;

			if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2))
				chosen = key_crc32c_sse42;
		}
#endif
	}
	return chosen(data, len);
}

static void
checksum_chars(const char *key, size_t len, char out[KEY_CHECKSUM_CHARS])
{
	uint32_t	crc = key_crc32c((const uint8_t *) key, len);
	uint8_t		be[4] = {crc >> 24, crc >> 16, crc >> 8, crc};

	key_base58(be, 4, out, KEY_CHECKSUM_CHARS);
}

bool
key_prefix_valid(const char *prefix, size_t len)
{
	if (len == 0 || len > KEY_PREFIX_MAX)
		return false;
	if (prefix[0] < 'a' || prefix[0] > 'z')
		return false;
	if (prefix[len - 1] == '_')
		return false;
	for (size_t i = 0; i < len; i++)
	{
		char		c = prefix[i];

		if (c == '_')
		{
			if (prefix[i - 1] == '_')
				return false;
		}
		else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
			return false;
	}
	return true;
}

KeyParseResult
key_parse(const char *key, size_t len, size_t *prefix_len)
{
	size_t		plen;
	char		expect[KEY_CHECKSUM_CHARS];
	unsigned char diff = 0;

	if (len < 1 + 1 + KEY_TAIL_CHARS || len > KEY_MAX_LEN)
		return KEY_BAD_LENGTH;
	plen = len - KEY_TAIL_CHARS - 1;
	if (key[plen] != '_' || !key_prefix_valid(key, plen))
		return KEY_BAD_PREFIX;
	for (size_t i = plen + 1; i < len; i++)
		if (base58_digit((unsigned char) key[i]) < 0)
			return KEY_BAD_ALPHABET;

	checksum_chars(key, len - KEY_CHECKSUM_CHARS, expect);
	for (int i = 0; i < KEY_CHECKSUM_CHARS; i++)
		diff |= (unsigned char) (expect[i] ^ key[len - KEY_CHECKSUM_CHARS + i]);
	if (diff != 0)
		return KEY_BAD_CHECKSUM;

	if (prefix_len)
		*prefix_len = plen;
	return KEY_OK;
}

size_t
key_format(const char *prefix, size_t prefix_len,
		   const uint8_t body[KEY_BODY_BYTES], char *out)
{
	size_t		pos = 0;

	memcpy(out, prefix, prefix_len);
	pos = prefix_len;
	out[pos++] = '_';
	key_base58(body, KEY_BODY_BYTES, out + pos, KEY_BODY_CHARS);
	pos += KEY_BODY_CHARS;
	checksum_chars(out, pos, out + pos);
	pos += KEY_CHECKSUM_CHARS;
	out[pos] = '\0';
	return pos;
}

size_t
key_hint(const char *key, size_t len, size_t prefix_len, char *out)
{
	size_t		pos = prefix_len + 1;

	memcpy(out, key, pos);
	memcpy(out + pos, key + prefix_len + 1, KEY_HINT_CHARS);
	pos += KEY_HINT_CHARS;
	memcpy(out + pos, "...", 3);
	pos += 3;
	memcpy(out + pos, key + len - KEY_HINT_CHARS, KEY_HINT_CHARS);
	pos += KEY_HINT_CHARS;
	out[pos] = '\0';
	return pos;
}
