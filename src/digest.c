/*
 * digest.c - SHA-256 of a presented key, the only form a secret is stored in,
 * and of the audit chain's rows.
 *
 * Keys carry 256 random bits, so a fast unsalted hash is enough: there is no
 * dictionary to attack.  A key is at most KEY_MAX_LEN (83) bytes, two SHA-256
 * blocks.  This plain FIPS 180-4 implementation works on the stack: through
 * pg_cryptohash, OpenSSL 3 allocates a context, fetches the algorithm and
 * registers a resource owner entry on every call, which cost more than the
 * hash itself on the verify path.  On x86-64 processors with the SHA
 * extensions the blocks go through those instructions instead (about 10 x
 * faster), once they gave the portable code's result on test inputs.  The
 * regression tests check the result against PostgreSQL's sha256().
 */
#include "apikeys.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define APIKEYS_SHA_NI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint32 k256[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};

#define ROTR(x, n)	(((x) >> (n)) | ((x) << (32 - (n))))

/* Compress nblocks 64-byte blocks at p into h: one block at a time, in C. */
static void
sha256_blocks_portable(uint32 h[8], const uint8 *p, size_t nblocks)
{
	for (; nblocks > 0; nblocks--, p += 64)
	{
		uint32		w[64];
		uint32		a = h[0], b = h[1], c = h[2], d = h[3],
					e = h[4], f = h[5], g = h[6], hh = h[7];

		for (int i = 0; i < 16; i++)
			w[i] = ((uint32) p[4 * i] << 24) | ((uint32) p[4 * i + 1] << 16) |
				((uint32) p[4 * i + 2] << 8) | (uint32) p[4 * i + 3];
		for (int i = 16; i < 64; i++)
		{
			uint32		s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
			uint32		s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);

			w[i] = w[i - 16] + s0 + w[i - 7] + s1;
		}
		for (int i = 0; i < 64; i++)
		{
			uint32		t1 = hh + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) +
				((e & f) ^ (~e & g)) + k256[i] + w[i];
			uint32		t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) +
				((a & b) ^ (a & c) ^ (b & c));

			hh = g;
			g = f;
			f = e;
			e = d + t1;
			d = c;
			c = b;
			b = a;
			a = t1 + t2;
		}
		h[0] += a;
		h[1] += b;
		h[2] += c;
		h[3] += d;
		h[4] += e;
		h[5] += f;
		h[6] += g;
		h[7] += hh;
		explicit_bzero(w, sizeof(w));	/* the schedule holds the message */
	}
}

#ifdef APIKEYS_SHA_NI
/*
 * The same with the SHA extensions: four rounds per pair of sha256rnds2,
 * the message schedule by sha256msg1/msg2.  The state is kept as the
 * instructions want it, ABEF and CDGH, and put back in order at the end.
 */
__attribute__((target("sha,sse4.1,ssse3")))
static void
sha256_blocks_ni(uint32 h[8], const uint8 *p, size_t nblocks)
{
	const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
	__m128i		tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *) &h[0]), 0xB1);	/* CDAB */
	__m128i		st1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *) &h[4]), 0x1B);	/* EFGH */
	__m128i		st0 = _mm_alignr_epi8(tmp, st1, 8);	/* ABEF */

	st1 = _mm_blend_epi16(st1, tmp, 0xF0);	/* CDGH */
	for (; nblocks > 0; nblocks--, p += 64)
	{
		__m128i		abef = st0,
					cdgh = st1;
		__m128i		w[16];

		for (int i = 0; i < 16; i++)
		{
			__m128i		m;

			if (i < 4)
				w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) (p + 16 * i)), bswap);
			else
				w[i] = _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32(w[i - 4], w[i - 3]),
														  _mm_alignr_epi8(w[i - 1], w[i - 2], 4)),
											w[i - 1]);
			m = _mm_add_epi32(w[i], _mm_loadu_si128((const __m128i *) &k256[4 * i]));
			st1 = _mm_sha256rnds2_epu32(st1, st0, m);
			st0 = _mm_sha256rnds2_epu32(st0, st1, _mm_shuffle_epi32(m, 0x0E));
		}
		st0 = _mm_add_epi32(st0, abef);
		st1 = _mm_add_epi32(st1, cdgh);
		explicit_bzero(w, sizeof(w));
	}
	tmp = _mm_shuffle_epi32(st0, 0x1B);	/* FEBA */
	st1 = _mm_shuffle_epi32(st1, 0xB1);	/* DCHG */
	_mm_storeu_si128((__m128i *) &h[0], _mm_blend_epi16(tmp, st1, 0xF0));	/* DCBA */
	_mm_storeu_si128((__m128i *) &h[4], _mm_alignr_epi8(st1, tmp, 8));	/* HGFE */
}

/* Does this processor have the SHA extensions, and SSSE3 and SSE4.1 they come with? */
static bool
cpu_has_sha(void)
{
	unsigned int a, b, c, d;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1))
		return false;
	return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1U << 29)) != 0;
}
#endif

typedef void (*sha256_blocks_fn) (uint32 h[8], const uint8 *p, size_t nblocks);

static sha256_blocks_fn sha256_blocks_chosen = NULL;

/*
 * The block function of this processor: the SHA instructions only when they
 * compress test blocks (three, all byte values) to what the portable code
 * does, so a processor or emulator that reports them without doing them
 * right (a valgrind too old for them hides them) costs speed, never a
 * wrong digest.
 */
static sha256_blocks_fn
sha256_blocks_choose(void)
{
#ifdef APIKEYS_SHA_NI
	if (cpu_has_sha())
	{
		uint8		test[192];
		uint32		h1[8] = {1, 2, 3, 4, 5, 6, 7, 8};
		uint32		h2[8] = {1, 2, 3, 4, 5, 6, 7, 8};

		for (int i = 0; i < (int) sizeof(test); i++)
			test[i] = (uint8) (i * 167 + 13);
		sha256_blocks_portable(h1, test, 3);
		sha256_blocks_ni(h2, test, 3);
		if (memcmp(h1, h2, sizeof(h1)) == 0)
			return sha256_blocks_ni;
	}
#endif
	return sha256_blocks_portable;
}

/* Compress nblocks blocks at p into h, with the function chosen once per process. */
static inline void
sha256_blocks(uint32 h[8], const uint8 *p, size_t nblocks)
{
	if (unlikely(sha256_blocks_chosen == NULL))
		sha256_blocks_chosen = sha256_blocks_choose();
	sha256_blocks_chosen(h, p, nblocks);
}

/* SHA-256 of data[0..len) into out (FIPS 180-4). */
void
apikeys_sha256(const char *data, size_t len, uint8 out[APIKEYS_DIGEST_LEN])
{
	uint32		h[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
	};
	uint8		block[64];
	size_t		done;
	size_t		rest;
	uint64		bits = (uint64) len * 8;

	done = len - len % 64;
	if (done > 0)
		sha256_blocks(h, (const uint8 *) data, done / 64);

	/* the tail, a 1 bit, zeros, and the length in bits: one or two blocks */
	rest = len - done;
	memset(block, 0, sizeof(block));
	memcpy(block, data + done, rest);
	block[rest] = 0x80;
	if (rest >= 56)
	{
		sha256_blocks(h, block, 1);
		memset(block, 0, sizeof(block));
	}
	for (int i = 0; i < 8; i++)
		block[63 - i] = (uint8) (bits >> (8 * i));
	sha256_blocks(h, block, 1);
	explicit_bzero(block, sizeof(block));	/* held part of a secret */

	for (int i = 0; i < 8; i++)
	{
		out[4 * i] = (uint8) (h[i] >> 24);
		out[4 * i + 1] = (uint8) (h[i] >> 16);
		out[4 * i + 2] = (uint8) (h[i] >> 8);
		out[4 * i + 3] = (uint8) h[i];
	}
}
