/*
 * vault_crypto.c - the vault's master keys, its pgcrypto calls and its slot
 * locks (src/sql/60_vault.sql).
 *
 * Secrets and master keys never travel through an SQL statement here: a
 * statement the executor runs can be logged with its plan (auto_explain
 * with log_nested_statements and log_verbose), and plpgsql's custom plans
 * and EXECUTE ... USING fold parameters into plan constants, so the old SQL
 * code wrote the master key and the plaintext into the server log.  This
 * file reads the keys from the settings or the key file itself, and calls
 * pgcrypto's functions through the function manager, never the executor.
 * The SQL side holds a plaintext only in plpgsql variables that it uses in
 * simple expressions (which never reach the executor either), and never
 * holds a master key at all.
 *
 * Every function here is for the vault's SECURITY DEFINER entry points
 * (owned by the superuser who created the extension): none is granted to
 * PUBLIC, and each refuses to run unless the current user is a superuser.
 */
#include "apikeys.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/rel.h"

/* Master keys shorter than this (in characters) are refused. */
#define VAULT_MIN_KEY_CHARS 16
/* The key file is read up to this size; a key is its first line. */
#define VAULT_KEY_FILE_MAX 65536
/* Hex characters of a key fingerprint (64 bits), as vault_secret.key_fp. */
#define VAULT_FP_HEX 16


/* pgcrypto options: AES-256, no compression (compression leaks length). */
static const char vault_pgp_options[] = "cipher-algo=aes256, compress-algo=0";

/* The configured master keys.  prev is NULL outside a rotation. */
typedef struct VaultKeys
{
	char	   *cur;
	char	   *prev;
	char		cur_fp[VAULT_FP_HEX + 1];
	char		prev_fp[VAULT_FP_HEX + 1];
} VaultKeys;

/* Refuse any caller that is not running as a superuser (see the header). */
static void
vault_require_superuser(void)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission_denied: the vault internals run only inside the apikeys vault functions")));
}

/* A palloc'd copy of s[0..len) without leading and trailing blanks, or NULL if empty. */
static char *
vault_trimmed(const char *s, size_t len)
{
	while (len > 0 && (*s == ' ' || *s == '\t' || *s == '\r'))
		s++, len--;
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r'))
		len--;
	return len > 0 ? pnstrdup(s, len) : NULL;
}

/* Overwrite and free a key or passphrase (NULL is fine). */
static void
vault_wipe(char *s)
{
	if (s != NULL)
	{
		explicit_bzero(s, strlen(s));
		pfree(s);
	}
}

/* Forget the keys once they are no longer needed. */
static void
vault_forget_keys(VaultKeys *k)
{
	vault_wipe(k->cur);
	vault_wipe(k->prev);
	k->cur = k->prev = NULL;
}

/*
 * Fingerprint of a master key: the first 8 bytes of
 * SHA-256('apikeys.vault:' || key), in hex.  apikeys_internal._vault_fingerprint(text)
 * computes the same in SQL, for superusers and the tests.
 */
static void
vault_fingerprint(const char *key, char out[VAULT_FP_HEX + 1])
{
	static const char label[] = "apikeys.vault:";
	static const char hexdig[] = "0123456789abcdef";
	size_t		keylen = strlen(key);
	size_t		len = sizeof(label) - 1 + keylen;
	char	   *buf = palloc(len);
	uint8		digest[APIKEYS_DIGEST_LEN];
	int			i;

	memcpy(buf, label, sizeof(label) - 1);
	memcpy(buf + sizeof(label) - 1, key, keylen);
	apikeys_sha256(buf, len, digest);
	explicit_bzero(buf, len);
	pfree(buf);
	for (i = 0; i < VAULT_FP_HEX / 2; i++)
	{
		out[2 * i] = hexdig[digest[i] >> 4];
		out[2 * i + 1] = hexdig[digest[i] & 0xf];
	}
	out[VAULT_FP_HEX] = '\0';
	explicit_bzero(digest, sizeof(digest));
}

/*
 * Read the key file: its first line into *cur, its second into *prev (each
 * NULL when blank).  Any failure is reported without the file's contents
 * and without the operating system's message.
 */
static void
vault_read_key_file(const char *path, char **cur, char **prev)
{
	FILE	   *f;
	char	   *buf = palloc(VAULT_KEY_FILE_MAX + 1);
	size_t		n;
	bool		failed;
	char	   *nl;
	char	   *line2;

	f = AllocateFile(path, "r");
	failed = (f == NULL);
	if (!failed)
	{
		n = fread(buf, 1, VAULT_KEY_FILE_MAX, f);
		failed = ferror(f) != 0;
		FreeFile(f);
	}
	if (failed)
	{
		pfree(buf);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("vault_master_key_missing: the vault master key file cannot be read"),
				 errhint("The server must be able to read the file named by apikeys.vault_master_key_file.")));
	}
	buf[n] = '\0';
	nl = strchr(buf, '\n');
	*cur = vault_trimmed(buf, nl ? (size_t) (nl - buf) : strlen(buf));
	*prev = NULL;
	if (nl != NULL)
	{
		line2 = nl + 1;
		nl = strchr(line2, '\n');
		*prev = vault_trimmed(line2, nl ? (size_t) (nl - line2) : strlen(line2));
	}
	explicit_bzero(buf, VAULT_KEY_FILE_MAX + 1);
	pfree(buf);
}

/*
 * The configured keys: the settings apikeys.vault_master_key[_previous],
 * else the lines of the file named by apikeys.vault_master_key_file (the
 * previous-key setting wins over the file's second line).  Raises
 * vault_master_key_missing or vault_master_key_invalid.
 */
static void
vault_load_keys(VaultKeys *k)
{
	const char *s;
	char	   *file_prev = NULL;

	vault_require_superuser();
	memset(k, 0, sizeof(*k));
	s = GetConfigOption("apikeys.vault_master_key", true, false);
	k->cur = (s && s[0]) ? pstrdup(s) : NULL;
	s = GetConfigOption("apikeys.vault_master_key_previous", true, false);
	k->prev = (s && s[0]) ? pstrdup(s) : NULL;
	s = GetConfigOption("apikeys.vault_master_key_file", true, false);
	if (k->cur == NULL && s && s[0])
	{
		vault_read_key_file(s, &k->cur, &file_prev);
		if (k->prev == NULL)
			k->prev = file_prev;
		else
			vault_wipe(file_prev);
	}
	if (k->cur == NULL)
	{
		vault_forget_keys(k);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("vault_master_key_missing: the vault master key is not set"),
				 errhint("A superuser names a key file in apikeys.vault_master_key_file (see the README).")));
	}
	if (pg_mbstrlen(k->cur) < VAULT_MIN_KEY_CHARS)
	{
		vault_forget_keys(k);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("vault_master_key_invalid: a vault master key must be at least %d characters",
						VAULT_MIN_KEY_CHARS),
				 errhint("Use a random key, e.g. the output of: openssl rand -base64 32")));
	}
	vault_fingerprint(k->cur, k->cur_fp);
	if (k->prev != NULL)
		vault_fingerprint(k->prev, k->prev_fp);
}

/* Schema of the pgcrypto extension (it is relocatable). */
static Oid
vault_pgcrypto_schema(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			nsp = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("pgcrypto"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (!OidIsValid(nsp))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("vault_pgcrypto_missing: the pgcrypto extension is not installed")));
	return nsp;
}

/* OID of pgcrypto's fname(argtype1, text, text). */
static Oid
vault_pgcrypto_func(const char *fname, Oid argtype1)
{
	Oid			argtypes[3] = {argtype1, TEXTOID, TEXTOID};
	char	   *nspname = get_namespace_name(vault_pgcrypto_schema());
	Oid			fn;

	Assert(nspname != NULL);
	fn = LookupFuncName(list_make2(makeString(nspname), makeString(pstrdup(fname))),
						3, argtypes, true);
	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("vault_pgcrypto_missing: pgcrypto has no function %s", fname)));
	return fn;
}

/* The passphrase of a secret: its id, ':', the master key (caller wipes it). */
static char *
vault_passphrase(Datum id, const char *key)
{
	char	   *idtext = DatumGetCString(DirectFunctionCall1(uuid_out, id));
	char	   *p = psprintf("%s:%s", idtext, key);

	pfree(idtext);
	return p;
}

/* What pgcrypto_in_subxact is given and answers. */
typedef struct PgcryptoCall
{
	Oid			fn;
	Datum		arg;
	text	   *pass;
	Datum		result;
} PgcryptoCall;

/* The pgcrypto call itself (may raise). */
static void
pgcrypto_in_subxact(void *arg)
{
	PgcryptoCall *c = (PgcryptoCall *) arg;

	c->result = OidFunctionCall3(c->fn, c->arg, PointerGetDatum(c->pass),
								 CStringGetTextDatum(vault_pgp_options));
}

/*
 * Call pgcrypto's fn(arg, passphrase, options) through the function manager
 * (no executor, so nothing to log), inside a subtransaction: a pgcrypto
 * error ("Wrong key or corrupt data" and the like) is discarded unseen and
 * reported as *failed; only a query cancel passes through.  The passphrase
 * text is wiped afterwards.  Returns the result, or 0 when *failed.
 */
static Datum
vault_pgcrypto_call(Oid fn, Datum arg, const char *passphrase, bool *failed)
{
	PgcryptoCall c = {fn, arg, cstring_to_text(passphrase), (Datum) 0};
	ErrorData  *edata = apikeys_subxact_run(pgcrypto_in_subxact, &c, true);

	explicit_bzero(VARDATA(c.pass), VARSIZE(c.pass) - VARHDRSZ);
	pfree(c.pass);
	*failed = edata != NULL;
	if (edata == NULL)
		return c.result;
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		ReThrowError(edata);	/* its message quotes nothing of ours */
	FreeErrorData(edata);
	return (Datum) 0;
}

/* Encrypt plaintext for secret id under key; raises vault_encrypt_failed. */
static bytea *
vault_encrypt(Datum id, text *plaintext, const char *key)
{
	char	   *pass = vault_passphrase(id, key);
	bool		failed;
	Datum		ct;

	ct = vault_pgcrypto_call(vault_pgcrypto_func("pgp_sym_encrypt", TEXTOID),
							 PointerGetDatum(plaintext), pass, &failed);
	vault_wipe(pass);
	if (failed || ct == (Datum) 0)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				 errmsg("vault_encrypt_failed: the secret could not be encrypted")));
	return DatumGetByteaPP(ct);
}

/* Decrypt ciphertext of secret id with key; NULL when it does not open. */
static text *
vault_decrypt(Datum id, bytea *ciphertext, const char *key)
{
	char	   *pass = vault_passphrase(id, key);
	bool		failed;
	Datum		pt;

	pt = vault_pgcrypto_call(vault_pgcrypto_func("pgp_sym_decrypt", BYTEAOID),
							 PointerGetDatum(ciphertext), pass, &failed);
	vault_wipe(pass);
	return failed ? NULL : DatumGetTextPP(pt);
}

/* Build the function's composite result from values/nulls. */
static Datum
vault_result(FunctionCallInfo fcinfo, Datum *values, bool *nulls)
{
	TupleDesc	desc;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	desc = BlessTupleDesc(desc);
	return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}

/*
 * apikeys_internal._vault_key_state(OUT cur_fp text, OUT prev_fp text): the
 * fingerprints of the configured keys (prev_fp NULL outside a rotation);
 * raises vault_master_key_missing / _invalid when no usable key is set.
 */
PG_FUNCTION_INFO_V1(apikeys_vault_key_state);
Datum
apikeys_vault_key_state(PG_FUNCTION_ARGS)
{
	VaultKeys	k;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	vault_load_keys(&k);
	values[0] = CStringGetTextDatum(k.cur_fp);
	nulls[1] = (k.prev == NULL);
	values[1] = nulls[1] ? (Datum) 0 : CStringGetTextDatum(k.prev_fp);
	vault_forget_keys(&k);
	PG_RETURN_DATUM(vault_result(fcinfo, values, nulls));
}

/*
 * apikeys_internal._vault_seal(id uuid, plaintext text, OUT ciphertext bytea,
 * OUT key_fp text): encrypt a secret under the current master key.
 */
PG_FUNCTION_INFO_V1(apikeys_vault_seal);
Datum
apikeys_vault_seal(PG_FUNCTION_ARGS)
{
	VaultKeys	k;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	vault_load_keys(&k);
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		elog(ERROR, "_vault_seal: id and plaintext must not be NULL");
	values[0] = PointerGetDatum(vault_encrypt(PG_GETARG_DATUM(0), PG_GETARG_TEXT_PP(1), k.cur));
	values[1] = CStringGetTextDatum(k.cur_fp);
	vault_forget_keys(&k);
	PG_RETURN_DATUM(vault_result(fcinfo, values, nulls));
}

/*
 * apikeys_internal._vault_open(id uuid, ciphertext bytea, key_fp text,
 * OUT plaintext text, OUT problem text, OUT stale boolean): decrypt a row
 * with whichever configured key encrypted it.  problem: NULL,
 * 'master_key_mismatch' (neither configured key did) or 'decrypt_failed';
 * stale: it opened with the previous key.
 */
PG_FUNCTION_INFO_V1(apikeys_vault_open);
Datum
apikeys_vault_open(PG_FUNCTION_ARGS)
{
	VaultKeys	k;
	Datum		values[3] = {0, 0, BoolGetDatum(false)};
	bool		nulls[3] = {true, true, false};
	const char *fp;
	const char *key = NULL;
	text	   *pt = NULL;

	vault_load_keys(&k);
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		elog(ERROR, "_vault_open: id, ciphertext and key_fp must not be NULL");
	fp = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (strcmp(fp, k.cur_fp) == 0)
		key = k.cur;
	else if (k.prev != NULL && strcmp(fp, k.prev_fp) == 0)
	{
		key = k.prev;
		values[2] = BoolGetDatum(true);
	}
	if (key != NULL)
		pt = vault_decrypt(PG_GETARG_DATUM(0), PG_GETARG_BYTEA_PP(1), key);
	vault_forget_keys(&k);
	if (pt != NULL)
	{
		values[0] = PointerGetDatum(pt);
		nulls[0] = false;
	}
	else
	{
		values[1] = CStringGetTextDatum(key == NULL ? "master_key_mismatch" : "decrypt_failed");
		nulls[1] = false;
	}
	PG_RETURN_DATUM(vault_result(fcinfo, values, nulls));
}

/*
 * apikeys_internal._vault_rewrap(id uuid, ciphertext bytea, key_fp text,
 * OUT ciphertext bytea, OUT key_fp text): a row's secret re-encrypted under
 * the current master key, for vault_rotate_master_key().  The row as it is
 * when it is already under the current key; NULLs when it was not under the
 * previous key or does not open with it.  The plaintext stays in here.
 */
PG_FUNCTION_INFO_V1(apikeys_vault_rewrap);
Datum
apikeys_vault_rewrap(PG_FUNCTION_ARGS)
{
	VaultKeys	k;
	Datum		values[2] = {0, 0};
	bool		nulls[2] = {true, true};
	const char *fp;
	text	   *pt = NULL;

	vault_load_keys(&k);
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		elog(ERROR, "_vault_rewrap: id, ciphertext and key_fp must not be NULL");
	fp = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (strcmp(fp, k.cur_fp) == 0)
	{
		values[0] = PG_GETARG_DATUM(1);
		nulls[0] = false;
	}
	else if (k.prev != NULL && strcmp(fp, k.prev_fp) == 0)
	{
		pt = vault_decrypt(PG_GETARG_DATUM(0), PG_GETARG_BYTEA_PP(1), k.prev);
		if (pt != NULL)
		{
			values[0] = PointerGetDatum(vault_encrypt(PG_GETARG_DATUM(0), pt, k.cur));
			nulls[0] = false;
			explicit_bzero(VARDATA_ANY(pt), VARSIZE_ANY_EXHDR(pt));
		}
	}
	if (!nulls[0])
	{
		values[1] = CStringGetTextDatum(k.cur_fp);
		nulls[1] = false;
	}
	vault_forget_keys(&k);
	PG_RETURN_DATUM(vault_result(fcinfo, values, nulls));
}

/*
 * apikeys_internal._vault_lock_slot(tenant text, owner text, service text): take,
 * until the end of the transaction, the exclusive lock of one owner's slot
 * for one service (owner NULL: the tenant itself), a lock no SQL function
 * can take or wait for (private_lock.c): a tenant cannot block another
 * tenant's vault_add by computing its slot's key.  A hash collision of two
 * slots is a needless wait, never a wrong answer: the unique index
 * vault_secret_one_active still decides.
 */
PG_FUNCTION_INFO_V1(apikeys_vault_lock_slot);
Datum
apikeys_vault_lock_slot(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	text	   *t;

	vault_require_superuser();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		elog(ERROR, "_vault_lock_slot: tenant and service must not be NULL");

	/* "apikeys.vault.slot" \0 tenant \0 owner-or-empty \0 service */
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, "apikeys.vault.slot", sizeof("apikeys.vault.slot"));
	t = PG_GETARG_TEXT_PP(0);
	appendBinaryStringInfo(&buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	appendStringInfoChar(&buf, '\0');
	if (!PG_ARGISNULL(1))
	{
		t = PG_GETARG_TEXT_PP(1);
		appendBinaryStringInfo(&buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	}
	appendStringInfoChar(&buf, '\0');
	t = PG_GETARG_TEXT_PP(2);
	appendBinaryStringInfo(&buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	apikeys_private_lock(APIKEYS_LOCK_VAULT_SLOT, buf.data, buf.len);
	pfree(buf.data);
	PG_RETURN_VOID();
}
