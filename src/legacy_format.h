/*
 * legacy_format.h - keys in formats registered by users (legacy_format.c).
 */
#ifndef APIKEYS_LEGACY_FORMAT_H
#define APIKEYS_LEGACY_FORMAT_H

#include "apikeys.h"

#define LEGACY_KEY_MAX		256	/* longest registrable key */
#define LEGACY_PREFIX_MAX	33	/* literal prefix: at most 32 characters */

/*
 * The lookup digest of a presented string that is not a native key, if it
 * matches a registered format (no table is read unless the registry
 * changed); false: it matches none, and is malformed.
 */
extern bool apikeys_legacy_digest(Datum key, uint8 digest[APIKEYS_DIGEST_LEN]);

#endif							/* APIKEYS_LEGACY_FORMAT_H */
