/* caller.h - the role a management call acts for (caller.c) */
#ifndef APIKEYS_CALLER_H
#define APIKEYS_CALLER_H

extern void apikeys_caller_init(void);

/* The role the current management call is authorized as. */
extern Oid	apikeys_acting_role(void);

/* The acting role, and whether its code ran inside a SECURITY DEFINER function. */
extern void apikeys_caller(Oid *role, bool *in_definer);

/* True while a management entry point is running. */
extern bool apikeys_in_entry_point(void);

/* ERROR (logged as a denied attempt) inside a security-restricted operation. */
extern void apikeys_refuse_restricted(const char *what);

#endif
