/*
 * validate.h - the bounds of a key's fields, shared by the argument checks
 * of the management functions (validate.c) and the table's own check
 * (credential_check.c), so the two cannot drift apart.
 */
#ifndef APIKEYS_VALIDATE_H
#define APIKEYS_VALIDATE_H

#define NAME_MAX_CHARS			200
#define DESCRIPTION_MAX_CHARS	2000
#define REVOKED_REASON_MAX_CHARS 2000
#define SCOPE_MAX_CHARS			64
#define SCOPES_MAX				64
#define ALLOWED_IPS_MAX			16
#define TENANT_MAX_CHARS		63
#define METADATA_MAX_BYTES		8192

#include "utils/jsonb.h"

/* Is jb a JSON object (what a key's metadata must be)?  A scalar's root is an array. */
static inline bool
jsonb_is_object(const Jsonb *jb)
{
	return JB_ROOT_IS_OBJECT(jb) && !JB_ROOT_IS_SCALAR(jb);
}

#endif							/* APIKEYS_VALIDATE_H */
