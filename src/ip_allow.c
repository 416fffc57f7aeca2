/*
 * ip_allow.c - the per-key IP allowlist.
 *
 * The client address is, in order: the client_addr argument; the first
 * x-forwarded-for address of PostgREST's request.headers, but only when the
 * connection itself comes from one of apikeys.trusted_proxies (a
 * superuser-only list of CIDRs, "local" for Unix sockets); else the
 * connection's own address.  Unknown address + allowlist = not allowed.
 * Addresses are parsed with inet_pton, so header garbage never raises.
 */
#include "policy.h"

#include <arpa/inet.h>

#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"

char	   *apikeys_trusted_proxies = NULL;

static bool
cidr_contains(const inet_struct *net, const inet_struct *addr)
{
	int			bits = net->bits;
	int			bytes = bits / 8;

	if (net->family != addr->family)
		return false;
	if (memcmp(net->ipaddr, addr->ipaddr, bytes) != 0)
		return false;
	if (bits % 8)
	{
		unsigned char mask = (unsigned char) (0xFF << (8 - bits % 8));

		if ((net->ipaddr[bytes] & mask) != (addr->ipaddr[bytes] & mask))
			return false;
	}
	return true;
}

/* "addr" or "addr/bits" (len bytes, not NUL-terminated) into *out */
static bool
parse_addr(const char *s, size_t len, inet_struct *out)
{
	char		buf[64];
	char	   *slash;
	int			maxbits;

	while (len > 0 && (*s == ' ' || *s == '['))
		s++, len--;
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == ']'))
		len--;
	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, buf, out->ipaddr) == 1)
	{
		out->family = PGSQL_AF_INET;
		maxbits = 32;
	}
	else if (inet_pton(AF_INET6, buf, out->ipaddr) == 1)
	{
		out->family = PGSQL_AF_INET6;
		maxbits = 128;
	}
	else
		return false;
	out->bits = maxbits;
	if (slash)
	{
		char	   *end;
		long		bits = strtol(slash + 1, &end, 10);

		if (*end != '\0' || bits < 0 || bits > maxbits)
			return false;
		out->bits = (unsigned char) bits;
	}
	return true;
}

/* the connection's address; false for Unix sockets and background processes */
static bool
connection_addr(inet_struct *out)
{
	LOCAL_FCINFO(fcinfo, 0);
	Datum		d;
	inet	   *in;

	InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
	d = inet_client_addr(fcinfo);
	if (fcinfo->isnull)
		return false;
	in = DatumGetInetPP(d);
	memset(out, 0, sizeof(*out));
	memcpy(out, VARDATA_ANY(in), Min(VARSIZE_ANY_EXHDR(in), sizeof(inet_struct)));
	return true;
}

/* Is the connection one of apikeys.trusted_proxies? */
static bool
from_trusted_proxy(void)
{
	const char *p = apikeys_trusted_proxies;
	inet_struct conn;
	bool		have_conn;

	if (p == NULL || *p == '\0')
		return false;
	have_conn = connection_addr(&conn);
	while (*p)
	{
		const char *end = strchr(p, ',');
		size_t		len = end ? (size_t) (end - p) : strlen(p);
		inet_struct net;

		while (len > 0 && *p == ' ')
			p++, len--;
		if (len >= 5 && strncmp(p, "local", 5) == 0)
		{
			if (!have_conn && MyProcPort != NULL)
				return true;
		}
		else if (have_conn && parse_addr(p, len, &net) && cidr_contains(&net, &conn))
			return true;
		p = end ? end + 1 : p + len;
	}
	return false;
}

/*
 * The client as the trusted proxy saw it: the LAST address of
 * request.headers' x-forwarded-for.  Each proxy appends the address it was
 * connected from, so every entry left of the last one was written by
 * whoever sent the request and proves nothing.
 *
 * PostgREST emits compact JSON with lower-cased names.  A match counts only
 * in key position (after '{' or ','): inside a value the quotes would be
 * escaped.  Anything unexpected reads as "no address" (refused).
 */
static bool
forwarded_addr(inet_struct *out)
{
	static const char key[] = "\"x-forwarded-for\"";
	const char *headers = GetConfigOption("request.headers", true, false);
	const char *v,
			   *end,
			   *last;

	if (headers == NULL || *headers == '\0')
		return false;
	for (v = strstr(headers, key); v != NULL; v = strstr(v + 1, key))
	{
		const char *before = v;

		while (before > headers && (before[-1] == ' ' || before[-1] == '\n'))
			before--;
		if (before > headers && (before[-1] == '{' || before[-1] == ','))
			break;
	}
	if (v == NULL)
		return false;
	v += sizeof(key) - 1;
	while (*v == ' ')
		v++;
	if (*v++ != ':')
		return false;
	while (*v == ' ')
		v++;
	if (*v++ != '"')
		return false;
	end = v;
	while (*end && *end != '"' && *end != '\\')
		end++;
	if (*end != '"')
		return false;
	last = end;
	while (last > v && last[-1] != ',')
		last--;
	while (last < end && *last == ' ')
		last++;
	return parse_addr(last, end - last, out);
}

bool
apikeys_ip_allowed(const KeyPolicy *p, const inet *client_arg)
{
	inet_struct addr;
	bool		known;

	if (p->ncidrs < 0)
		return true;
	if (client_arg)
	{
		memset(&addr, 0, sizeof(addr));
		memcpy(&addr, VARDATA_ANY(client_arg),
			   Min(VARSIZE_ANY_EXHDR(client_arg), sizeof(inet_struct)));
		known = true;
	}
	else if (from_trusted_proxy() && forwarded_addr(&addr))
		known = true;
	else
		known = connection_addr(&addr);
	if (!known)
		return false;
	for (int i = 0; i < p->ncidrs; i++)
		if (cidr_contains(&p->cidrs[i], &addr))
			return true;
	return false;
}
