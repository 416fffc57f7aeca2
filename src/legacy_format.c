/*
 * legacy_format.c - keys issued before apikeys, in formats registered in
 * apikeys.key_format (src/sql/45_legacy.sql, docs/migration.md).
 *
 * A format is a literal prefix, a total length and the alphabet of the
 * characters after the prefix (optionally another alphabet for a random
 * "head" before digest_offset), and a digest: SHA-256 or SHA-512 of the key
 * from digest_offset on (0: the whole key).  Registration refuses two
 * formats that one string could match (apikeys_internal.key_format_register),
 * so a presented key matches at most one format and costs one digest.
 *
 * Such a key's secret lives in apikeys.secret like a native one, under a
 * lookup digest bound to its format:
 *
 *   SHA-256("apikeys-legacy-1" || format_id (16 bytes) || legacy digest
 *           || the key's first digest_offset characters)
 *
 * so the native verify path (policy cache, index probes, limits, usage)
 * serves it unchanged, a native digest (SHA-256 of a key text, which never
 * contains '-') can never equal one, and a digest imported under one
 * format never verifies a key of another.
 *
 * apikey_verify calls apikeys_legacy_digest() only for a string that is not
 * a native key.  The registry is read once per backend and kept until a
 * relcache invalidation of apikeys.key_format, which a statement trigger
 * sends at the commit of every change to it (apikeys_key_format_changed);
 * pending invalidations are accepted on each call, so no table is read per
 * call.  Without the table (the 1.0 schema) no format is registered and
 * every non-native string stays malformed.
 */
#include "apikeys.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/heapam.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "common/base64.h"
#include "common/sha2.h"
#include "storage/lockdefs.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "access/detoast.h"

#include "legacy_format.h"

#define LEGACY_TAG		"apikeys-legacy-1"
#define LEGACY_TAG_LEN	16

/* The alphabets a format may name; every one contains the digits 1-9. */
typedef struct Alphabet
{
	const char *name;
	const char *chars;
} Alphabet;

static const Alphabet alphabets[] = {
	{"hex", "0123456789abcdef"},
	{"HEX", "0123456789ABCDEF"},
	{"hex_any", "0123456789abcdefABCDEF"},
	{"base64", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="},
	{"base64url", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="},
	{"base58", "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"},
	{"alnum", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"},
};
#define N_ALPHABETS lengthof(alphabets)

/* One registered format, as matched per call. */
typedef struct LegacyFormat
{
	pg_uuid_t	format_id;
	int			key_length;
	int			prefix_len;
	char		prefix[LEGACY_PREFIX_MAX];
	int			digest_offset;
	bool		sha512;
	int8		head;			/* alphabet index before digest_offset, -1: body's */
	int8		body;			/* alphabet index of the rest */
	int			next;			/* next format of the same length, -1: none */
} LegacyFormat;

static bool alphabet_table[N_ALPHABETS][256];
static bool alphabet_ready = false;

static MemoryContext registry_cxt = NULL;
static LegacyFormat *registry = NULL;
static int	registry_count = 0;
static int	by_length[LEGACY_KEY_MAX + 1];	/* first format of each length */
static bool registry_valid = false;
static bool callback_registered = false;
static Oid	registry_relid = InvalidOid;

/* An alphabet by name: its index, or -1. */
static int
alphabet_index(const char *name)
{
	for (int i = 0; i < (int) N_ALPHABETS; i++)
		if (strcmp(alphabets[i].name, name) == 0)
			return i;
	return -1;
}

static void
alphabets_init(void)
{
	if (alphabet_ready)
		return;
	for (int i = 0; i < (int) N_ALPHABETS; i++)
		for (const char *c = alphabets[i].chars; *c; c++)
			alphabet_table[i][(unsigned char) *c] = true;
	alphabet_ready = true;
}

/* Relcache invalidation: of apikeys.key_format, or of everything. */
static void
registry_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == registry_relid || !OidIsValid(registry_relid))
		registry_valid = false;
}

/* Text column `name` of a registry row as a C string, or NULL. */
static char *
column_cstring(HeapTuple tuple, TupleDesc desc, const char *name)
{
	int			attnum = SPI_fnumber(desc, name);
	bool		isnull;
	Datum		d;

	if (attnum <= 0)
		elog(ERROR, "apikeys.key_format has no column %s", name);
	d = heap_getattr(tuple, attnum, desc, &isnull);
	return isnull ? NULL : TextDatumGetCString(d);
}

static Datum
column_datum(HeapTuple tuple, TupleDesc desc, const char *name, bool *isnull)
{
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "apikeys.key_format has no column %s", name);
	return heap_getattr(tuple, attnum, desc, isnull);
}

static void registry_read(void);

/*
 * (Re)read the registry with the latest snapshot.  Marked valid before the
 * read: an invalidation that arrives while reading makes the next call read
 * again; a read that fails leaves it invalid.
 */
static void
registry_load(void)
{
	PG_TRY();
	{
		registry_read();
	}
	PG_CATCH();
	{
		registry_valid = false;
		registry_count = 0;
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* registry_load's work.  Rows that break the table's own checks are skipped. */
static void
registry_read(void)
{
	Oid			nsp;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	int			capacity = 16;

	alphabets_init();
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(registry_invalidate, (Datum) 0);
		callback_registered = true;
	}
	if (registry_cxt == NULL)
		registry_cxt = AllocSetContextCreate(TopMemoryContext, "apikeys legacy formats",
											 ALLOCSET_SMALL_SIZES);
	MemoryContextReset(registry_cxt);
	registry = NULL;
	registry_count = 0;
	for (int i = 0; i <= LEGACY_KEY_MAX; i++)
		by_length[i] = -1;
	registry_valid = true;

	nsp = get_namespace_oid(APIKEYS_SCHEMA, true);
	registry_relid = OidIsValid(nsp) ? get_relname_relid("key_format", nsp) : InvalidOid;
	if (!OidIsValid(registry_relid))
		return;					/* the 1.0 schema, or no extension here */

	registry = MemoryContextAlloc(registry_cxt, sizeof(LegacyFormat) * capacity);
	rel = table_open(registry_relid, AccessShareLock);
	scan = table_beginscan(rel, GetLatestSnapshot(), 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		TupleDesc	desc = RelationGetDescr(rel);
		LegacyFormat f;
		bool		isnull;
		Datum		id = column_datum(tuple, desc, "format_id", &isnull);
		char	   *prefix = column_cstring(tuple, desc, "prefix");
		char	   *digest = column_cstring(tuple, desc, "digest");
		char	   *body = column_cstring(tuple, desc, "alphabet");
		char	   *head = column_cstring(tuple, desc, "head_alphabet");

		memset(&f, 0, sizeof(f));
		if (isnull || prefix == NULL || digest == NULL || body == NULL)
			continue;
		memcpy(&f.format_id, DatumGetUUIDP(id), sizeof(pg_uuid_t));
		f.key_length = DatumGetInt32(column_datum(tuple, desc, "key_length", &isnull));
		f.digest_offset = DatumGetInt32(column_datum(tuple, desc, "digest_offset", &isnull));
		f.prefix_len = strlen(prefix);
		f.sha512 = strcmp(digest, "sha512") == 0;
		f.body = alphabet_index(body);
		f.head = head ? alphabet_index(head) : -1;
		if (f.key_length < 1 || f.key_length > LEGACY_KEY_MAX ||
			f.prefix_len >= LEGACY_PREFIX_MAX || f.prefix_len >= f.key_length ||
			f.digest_offset < 0 || f.digest_offset >= f.key_length || f.body < 0 ||
			(head != NULL && f.head < 0))
			continue;
		memcpy(f.prefix, prefix, f.prefix_len);
		if (registry_count == capacity)
		{
			capacity *= 2;
			registry = repalloc(registry, sizeof(LegacyFormat) * capacity);
		}
		f.next = by_length[f.key_length];
		by_length[f.key_length] = registry_count;
		registry[registry_count++] = f;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
}

/* Does key (exactly f->key_length bytes) have format f? */
static bool
format_matches(const LegacyFormat *f, const unsigned char *key)
{
	const bool *head = alphabet_table[f->head >= 0 ? f->head : f->body];
	const bool *body = alphabet_table[f->body];
	int			i;

	if (memcmp(key, f->prefix, f->prefix_len) != 0)
		return false;
	for (i = f->prefix_len; i < f->digest_offset; i++)
		if (!head[key[i]])
			return false;
	for (; i < f->key_length; i++)
		if (!body[key[i]])
			return false;
	return true;
}

/*
 * The lookup digest of a legacy digest stored under format_id, bound to the
 * key's characters the digest leaves out (head: its first digest_offset
 * characters), so that a key with another head does not verify.
 */
static void
lookup_digest(const pg_uuid_t *format_id, const uint8 *legacy, size_t len,
			  const char *head, size_t head_len, uint8 out[APIKEYS_DIGEST_LEN])
{
	char		buf[LEGACY_TAG_LEN + UUID_LEN + PG_SHA512_DIGEST_LENGTH + LEGACY_KEY_MAX];

	Assert(len <= PG_SHA512_DIGEST_LENGTH && head_len <= LEGACY_KEY_MAX);
	memcpy(buf, LEGACY_TAG, LEGACY_TAG_LEN);
	memcpy(buf + LEGACY_TAG_LEN, format_id->data, UUID_LEN);
	memcpy(buf + LEGACY_TAG_LEN + UUID_LEN, legacy, len);
	memcpy(buf + LEGACY_TAG_LEN + UUID_LEN + len, head, head_len);
	apikeys_sha256(buf, LEGACY_TAG_LEN + UUID_LEN + len + head_len, out);
	explicit_bzero(buf, sizeof(buf));
}

/*
 * SHA-512 (FIPS 180-4) on the stack, as digest.c does SHA-256: through
 * pg_cryptohash, OpenSSL 3 allocates a context and registers a resource
 * owner entry per call, which cost a quarter of a verify.  A legacy key is
 * at most LEGACY_KEY_MAX (256) bytes: three 128-byte blocks.  The regression
 * tests check it against pgcrypto's digest(..., 'sha512').
 */
static const uint64 k512[80] = {
	UINT64CONST(0x428a2f98d728ae22), UINT64CONST(0x7137449123ef65cd), UINT64CONST(0xb5c0fbcfec4d3b2f), UINT64CONST(0xe9b5dba58189dbbc),
	UINT64CONST(0x3956c25bf348b538), UINT64CONST(0x59f111f1b605d019), UINT64CONST(0x923f82a4af194f9b), UINT64CONST(0xab1c5ed5da6d8118),
	UINT64CONST(0xd807aa98a3030242), UINT64CONST(0x12835b0145706fbe), UINT64CONST(0x243185be4ee4b28c), UINT64CONST(0x550c7dc3d5ffb4e2),
	UINT64CONST(0x72be5d74f27b896f), UINT64CONST(0x80deb1fe3b1696b1), UINT64CONST(0x9bdc06a725c71235), UINT64CONST(0xc19bf174cf692694),
	UINT64CONST(0xe49b69c19ef14ad2), UINT64CONST(0xefbe4786384f25e3), UINT64CONST(0x0fc19dc68b8cd5b5), UINT64CONST(0x240ca1cc77ac9c65),
	UINT64CONST(0x2de92c6f592b0275), UINT64CONST(0x4a7484aa6ea6e483), UINT64CONST(0x5cb0a9dcbd41fbd4), UINT64CONST(0x76f988da831153b5),
	UINT64CONST(0x983e5152ee66dfab), UINT64CONST(0xa831c66d2db43210), UINT64CONST(0xb00327c898fb213f), UINT64CONST(0xbf597fc7beef0ee4),
	UINT64CONST(0xc6e00bf33da88fc2), UINT64CONST(0xd5a79147930aa725), UINT64CONST(0x06ca6351e003826f), UINT64CONST(0x142929670a0e6e70),
	UINT64CONST(0x27b70a8546d22ffc), UINT64CONST(0x2e1b21385c26c926), UINT64CONST(0x4d2c6dfc5ac42aed), UINT64CONST(0x53380d139d95b3df),
	UINT64CONST(0x650a73548baf63de), UINT64CONST(0x766a0abb3c77b2a8), UINT64CONST(0x81c2c92e47edaee6), UINT64CONST(0x92722c851482353b),
	UINT64CONST(0xa2bfe8a14cf10364), UINT64CONST(0xa81a664bbc423001), UINT64CONST(0xc24b8b70d0f89791), UINT64CONST(0xc76c51a30654be30),
	UINT64CONST(0xd192e819d6ef5218), UINT64CONST(0xd69906245565a910), UINT64CONST(0xf40e35855771202a), UINT64CONST(0x106aa07032bbd1b8),
	UINT64CONST(0x19a4c116b8d2d0c8), UINT64CONST(0x1e376c085141ab53), UINT64CONST(0x2748774cdf8eeb99), UINT64CONST(0x34b0bcb5e19b48a8),
	UINT64CONST(0x391c0cb3c5c95a63), UINT64CONST(0x4ed8aa4ae3418acb), UINT64CONST(0x5b9cca4f7763e373), UINT64CONST(0x682e6ff3d6b2b8a3),
	UINT64CONST(0x748f82ee5defb2fc), UINT64CONST(0x78a5636f43172f60), UINT64CONST(0x84c87814a1f0ab72), UINT64CONST(0x8cc702081a6439ec),
	UINT64CONST(0x90befffa23631e28), UINT64CONST(0xa4506cebde82bde9), UINT64CONST(0xbef9a3f7b2c67915), UINT64CONST(0xc67178f2e372532b),
	UINT64CONST(0xca273eceea26619c), UINT64CONST(0xd186b8c721c0c207), UINT64CONST(0xeada7dd6cde0eb1e), UINT64CONST(0xf57d4f7fee6ed178),
	UINT64CONST(0x06f067aa72176fba), UINT64CONST(0x0a637dc5a2c898a6), UINT64CONST(0x113f9804bef90dae), UINT64CONST(0x1b710b35131c471b),
	UINT64CONST(0x28db77f523047d84), UINT64CONST(0x32caab7b40c72493), UINT64CONST(0x3c9ebe0a15c9bebc), UINT64CONST(0x431d67c49c100d4c),
	UINT64CONST(0x4cc5d4becb3e42b6), UINT64CONST(0x597f299cfc657e2a), UINT64CONST(0x5fcb6fab3ad6faec), UINT64CONST(0x6c44198c4a475817)
};

#define ROTR64(x, n)	(((x) >> (n)) | ((x) << (64 - (n))))

static void
sha512_block(uint64 h[8], const uint8 *p)
{
	uint64		w[80];
	uint64		a = h[0], b = h[1], c = h[2], d = h[3],
				e = h[4], f = h[5], g = h[6], hh = h[7];

	for (int i = 0; i < 16; i++)
	{
		w[i] = 0;
		for (int j = 0; j < 8; j++)
			w[i] = (w[i] << 8) | p[8 * i + j];
	}
	for (int i = 16; i < 80; i++)
	{
		uint64		s0 = ROTR64(w[i - 15], 1) ^ ROTR64(w[i - 15], 8) ^ (w[i - 15] >> 7);
		uint64		s1 = ROTR64(w[i - 2], 19) ^ ROTR64(w[i - 2], 61) ^ (w[i - 2] >> 6);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	for (int i = 0; i < 80; i++)
	{
		uint64		t1 = hh + (ROTR64(e, 14) ^ ROTR64(e, 18) ^ ROTR64(e, 41)) +
			((e & f) ^ (~e & g)) + k512[i] + w[i];
		uint64		t2 = (ROTR64(a, 28) ^ ROTR64(a, 34) ^ ROTR64(a, 39)) +
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
}

static void
sha512(const char *data, size_t len, uint8 out[PG_SHA512_DIGEST_LENGTH])
{
	uint64		h[8] = {
		UINT64CONST(0x6a09e667f3bcc908), UINT64CONST(0xbb67ae8584caa73b),
		UINT64CONST(0x3c6ef372fe94f82b), UINT64CONST(0xa54ff53a5f1d36f1),
		UINT64CONST(0x510e527fade682d1), UINT64CONST(0x9b05688c2b3e6c1f),
		UINT64CONST(0x1f83d9abfb41bd6b), UINT64CONST(0x5be0cd19137e2179)
	};
	uint8		block[128];
	size_t		done = 0;
	size_t		rest;
	uint64		bits = (uint64) len * 8;

	for (; len - done >= 128; done += 128)
		sha512_block(h, (const uint8 *) data + done);

	/* the tail, a 1 bit, zeros, and the 128-bit length (high half zero) */
	rest = len - done;
	memset(block, 0, sizeof(block));
	memcpy(block, data + done, rest);
	block[rest] = 0x80;
	if (rest >= 112)
	{
		sha512_block(h, block);
		memset(block, 0, sizeof(block));
	}
	for (int i = 0; i < 8; i++)
		block[127 - i] = (uint8) (bits >> (8 * i));
	sha512_block(h, block);
	explicit_bzero(block, sizeof(block));	/* held part of a secret */

	for (int i = 0; i < 8; i++)
		for (int j = 0; j < 8; j++)
			out[8 * i + j] = (uint8) (h[i] >> (56 - 8 * j));
}

/* apikeys_internal._sha512(bytea) -> bytea: the above, for the regression tests. */
PG_FUNCTION_INFO_V1(apikeys_sha512_sql);
Datum
apikeys_sha512_sql(PG_FUNCTION_ARGS)
{
	bytea	   *in = PG_GETARG_BYTEA_PP(0);
	bytea	   *out = palloc(VARHDRSZ + PG_SHA512_DIGEST_LENGTH);

	SET_VARSIZE(out, VARHDRSZ + PG_SHA512_DIGEST_LENGTH);
	sha512(VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in), (uint8 *) VARDATA(out));
	PG_RETURN_BYTEA_P(out);
}

bool
apikeys_legacy_digest(Datum arg, uint8 digest[APIKEYS_DIGEST_LEN])
{
	text	   *key;
	size_t		len;
	int			i;

	/* a registry change committed by another backend is seen at once */
	AcceptInvalidationMessages();
	if (!registry_valid)
		registry_load();
	if (registry_count == 0 ||
		toast_raw_datum_size(arg) > VARHDRSZ + LEGACY_KEY_MAX)
		return false;

	key = DatumGetTextPP(arg);
	len = VARSIZE_ANY_EXHDR(key);
	if (len > LEGACY_KEY_MAX)
		return false;
	for (i = by_length[len]; i >= 0; i = registry[i].next)
		if (format_matches(&registry[i], (const unsigned char *) VARDATA_ANY(key)))
			break;
	if (i < 0)
		return false;

	{
		const LegacyFormat *f = &registry[i];
		uint8		legacy[PG_SHA512_DIGEST_LENGTH];
		const char *part = VARDATA_ANY(key) + f->digest_offset;
		size_t		part_len = len - f->digest_offset;

		if (f->sha512)
			sha512(part, part_len, legacy);
		else
			apikeys_sha256(part, part_len, legacy);
		lookup_digest(&f->format_id, legacy,
					  f->sha512 ? PG_SHA512_DIGEST_LENGTH : PG_SHA256_DIGEST_LENGTH,
					  VARDATA_ANY(key), f->digest_offset, digest);
		explicit_bzero(legacy, sizeof(legacy));
	}
	return true;
}

/*
 * apikeys_internal._key_format_alphabet(name) -> text: the characters of an
 * alphabet, NULL for an unknown name.  The SQL side (validation, overlap
 * checks) asks here, so the alphabets are defined once.
 */
PG_FUNCTION_INFO_V1(apikeys_key_format_alphabet);
Datum
apikeys_key_format_alphabet(PG_FUNCTION_ARGS)
{
	int			i = alphabet_index(text_to_cstring(PG_GETARG_TEXT_PP(0)));

	if (i < 0)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(alphabets[i].chars));
}

/* Decode one hex digit; -1 if it is none. */
static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * apikeys_internal._legacy_digest(format_id uuid, digest text, stored text,
 * encoding text, head text) -> bytea: the lookup digest of a digest a legacy
 * system stored (hex or base64 of a SHA-256 or SHA-512), as apikey_verify
 * computes it for a key of that format whose first digest_offset characters
 * are head (checked by the caller).  Raises invalid_digest (22023) when the
 * stored value does not decode to a digest of the format's length.
 */
PG_FUNCTION_INFO_V1(apikeys_legacy_digest_sql);
Datum
apikeys_legacy_digest_sql(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *format_id;
	char	   *alg;
	text	   *stored;
	char	   *encoding;
	size_t		want;
	const char *s;
	int			slen;
	uint8		raw[PG_SHA512_DIGEST_LENGTH + 4];
	int			got = -1;
	bytea	   *out;

	text	   *head;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(3) || PG_ARGISNULL(4))
		elog(ERROR, "apikeys_internal._legacy_digest: NULL format or head");
	head = PG_GETARG_TEXT_PP(4);
	if (VARSIZE_ANY_EXHDR(head) > LEGACY_KEY_MAX)
		elog(ERROR, "apikeys_internal._legacy_digest: head too long");
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_digest: digest must not be NULL")));
	format_id = PG_GETARG_UUID_P(0);
	alg = text_to_cstring(PG_GETARG_TEXT_PP(1));
	stored = PG_GETARG_TEXT_PP(2);
	encoding = text_to_cstring(PG_GETARG_TEXT_PP(3));
	want = strcmp(alg, "sha512") == 0 ? PG_SHA512_DIGEST_LENGTH : PG_SHA256_DIGEST_LENGTH;
	s = VARDATA_ANY(stored);
	slen = VARSIZE_ANY_EXHDR(stored);

	if (strcmp(encoding, "hex") == 0)
	{
		if (slen == (int) want * 2)
		{
			got = want;
			for (int i = 0; i < (int) want && got >= 0; i++)
			{
				int			hi = hex_digit(s[2 * i]),
							lo = hex_digit(s[2 * i + 1]);

				if (hi < 0 || lo < 0)
					got = -1;
				else
					raw[i] = (uint8) (hi << 4 | lo);
			}
		}
	}
	else if (strcmp(encoding, "base64") == 0)
	{
		if (slen == (int) ((want + 2) / 3 * 4) && pg_b64_dec_len(slen) <= (int) sizeof(raw))
		{
			/* PostgreSQL 18 decodes into uint8, earlier versions into char */
#if PG_VERSION_NUM >= 180000
			got = pg_b64_decode(s, slen, raw, sizeof(raw));
#else
			got = pg_b64_decode(s, slen, (char *) raw, sizeof(raw));
#endif
		}
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_encoding: digest_encoding must be hex or base64")));
	if (got != (int) want)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid_digest: digest is not the %s encoding of a %s digest (%d bytes)",
						encoding, alg, (int) want),
				 errhint("A %s digest is %d hex digits or %d base64 characters.",
						 alg, (int) want * 2, (int) ((want + 2) / 3 * 4))));

	out = palloc(VARHDRSZ + APIKEYS_DIGEST_LEN);
	SET_VARSIZE(out, VARHDRSZ + APIKEYS_DIGEST_LEN);
	lookup_digest(format_id, raw, want, VARDATA_ANY(head), VARSIZE_ANY_EXHDR(head),
				  (uint8 *) VARDATA(out));
	PG_RETURN_BYTEA_P(out);
}

/*
 * Statement trigger on apikeys.key_format: every backend forgets its
 * registry when this transaction commits (and nothing happens if it aborts).
 */
PG_FUNCTION_INFO_V1(apikeys_key_format_changed);
Datum
apikeys_key_format_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "apikeys_key_format_changed: not called as a trigger");
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);
}

/*
 * apikeys_internal._lock_key_shape(key_length integer, prefix text): the
 * locks that make two registrations that could overlap check one after the
 * other, taken without waiting (an ERROR when another transaction holds one):
 * a registration never waits for another tenant's open transaction.  Two
 * formats of one length can overlap only when their literal prefixes agree
 * on their common part, so formats whose prefixes have 3 characters or more
 * (every tenant's) lock (length, the first 3) exclusively and the length
 * shared; a shorter prefix (a global format's) locks the length
 * exclusively.  Only the extension can form these tags (private_lock.c).
 */
/*
 * apikeys_internal._lock_format_tenant(tenant text): one registration at a
 * time per tenant (so that two of its transactions cannot both count its
 * formats below the limit), taken without waiting: a tenant's concurrent
 * registrations fail with format_registration_busy; other tenants are not
 * concerned.
 */
PG_FUNCTION_INFO_V1(apikeys_lock_format_tenant);
Datum
apikeys_lock_format_tenant(PG_FUNCTION_ARGS)
{
	text	   *tenant = PG_GETARG_TEXT_PP(0);
	StringInfoData buf;
	bool		ok;

	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, "apikeys.key_format.tenant", sizeof("apikeys.key_format.tenant"));
	appendBinaryStringInfo(&buf, VARDATA_ANY(tenant), VARSIZE_ANY_EXHDR(tenant));
	ok = apikeys_private_lock_nowait(APIKEYS_LOCK_KEY_FORMAT, buf.data, buf.len, ExclusiveLock);
	pfree(buf.data);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("format_registration_busy: another transaction is registering a format for this tenant"),
				 errdetail("A tenant's registrations are checked against its format limit one at a time."),
				 errhint("Retry when that transaction has ended.")));
	PG_RETURN_VOID();
}

#define SHAPE_LOCKS_PER_XACT 16	/* the formats a tenant may have */

static int	shape_locks = 0;		/* taken by this transaction */
static bool shape_callback = false;

/* Transaction end: the shape locks are gone. */
static void
shape_locks_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		shape_locks = 0;
}

PG_FUNCTION_INFO_V1(apikeys_lock_key_shape);
Datum
apikeys_lock_key_shape(PG_FUNCTION_ARGS)
{
	int32		len = PG_GETARG_INT32(0);
	text	   *prefix = PG_GETARG_TEXT_PP(1);
	int			plen = VARSIZE_ANY_EXHDR(prefix);
	char		shape[sizeof(int32) + 3];
	bool		ok;

	/*
	 * A transaction that registers and drops formats over and over would
	 * hold a shape lock for each, and so keep other tenants from those
	 * shapes while it stays open: as many registrations per transaction as
	 * a tenant may have formats.
	 */
	if (!shape_callback)
	{
		RegisterXactCallback(shape_locks_xact_callback, NULL);
		shape_callback = true;
	}
	if (shape_locks >= SHAPE_LOCKS_PER_XACT)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("format_limit: at most %d format registrations per transaction", SHAPE_LOCKS_PER_XACT),
				 errdetail("Each registration keeps its key shape from other registrations until the transaction ends."),
				 errhint("Commit, then register the next formats.")));
	shape_locks++;

	/*
	 * The overlap and limit checks that follow these locks read the formats
	 * with the statement's snapshot: under REPEATABLE READ or SERIALIZABLE
	 * that is the transaction's first one, which may predate formats other
	 * transactions registered and committed since, and the checks would
	 * pass two overlapping formats.  Only a fresh snapshot per statement
	 * (READ COMMITTED) sees everything committed before the locks.
	 */
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("format_registration_isolation: key formats can only be registered in READ COMMITTED transactions"),
				 errdetail("A REPEATABLE READ or SERIALIZABLE transaction would check the registration against formats as they were when it began."),
				 errhint("Register the format in a READ COMMITTED transaction (the default).")));

	memcpy(shape, &len, sizeof(len));
	if (plen >= 3)
	{
		memcpy(shape + sizeof(len), VARDATA_ANY(prefix), 3);
		ok = apikeys_private_lock_nowait(APIKEYS_LOCK_KEY_FORMAT, shape, sizeof(len), ShareLock) &&
			apikeys_private_lock_nowait(APIKEYS_LOCK_KEY_FORMAT, shape, sizeof(shape), ExclusiveLock);
	}
	else
		ok = apikeys_private_lock_nowait(APIKEYS_LOCK_KEY_FORMAT, shape, sizeof(len), ExclusiveLock);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("format_registration_busy: another transaction is registering a format of keys of this length and prefix"),
				 errdetail("Registrations of formats that could overlap are checked one at a time."),
				 errhint("Retry when that transaction has ended.")));
	PG_RETURN_VOID();
}
