/* sh_addr.c -- address strings; see sh_addr.h. */
#include "sh_addr.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static const struct { const char *prefix; sh_scheme scheme; } schemes[] = {
  {"tcp://", SH_TCP}, {"udp://", SH_UDP}, {"tls://", SH_TLS},
  {"unixgram:", SH_UNIXGRAM}, {"unix:", SH_UNIX},   /* longest first */
};

void sh_addr_set (sh_addr *a, const struct sockaddr *sa, socklen_t len) {
  memcpy(&a->sa, sa, len);
  a->salen = len;
  a->resolved = 1;
}

size_t sh_addr_host (const struct sockaddr *sa, char *buf, size_t n) {
  char tmp[200];
  const char *p;
  size_t len = sh_addr_format(sa, sizeof(struct sockaddr_storage), SH_TCP, tmp, sizeof tmp);
  (void)len;
  p = tmp + 6;                                    /* after "tcp://" */
  if (*p == '[') p++;
  snprintf(buf, n, "%s", p);
  len = strlen(buf);
  while (len > 0 && buf[len - 1] != ':') len--;   /* drop ":port" */
  if (len > 0) len--;
  if (len > 0 && buf[len - 1] == ']') len--;
  buf[len] = '\0';
  return len;
}

int sh_addr_is_stream (sh_scheme scheme) {
  return scheme == SH_TCP || scheme == SH_UNIX || scheme == SH_TLS;
}

int sh_addr_has_file (const sh_addr *a) {
  return (a->scheme == SH_UNIX || a->scheme == SH_UNIXGRAM) && a->host[0] != '@';
}

/* What a parse reports its failures against. */
typedef struct parse_ctx {
  const char *text;              /* the whole address, as given */
  size_t len;
  char *err;
  size_t errlen;
} parse_ctx;

/* "bad address '<text>': <why>", the text cut at 200 bytes, a NUL in it
** written as "\x00" (a C string would end there, unseen). */
static int fail (const parse_ctx *c, const char *why) {
  size_t i, n = 0, shown = c->len < 200 ? c->len : 200;
  if (c->errlen == 0) return -1;
  n = (size_t)snprintf(c->err, c->errlen, "bad address '");
  for (i = 0; i < shown && n + 5 < c->errlen; i++) {
    if (c->text[i] == '\0') { memcpy(c->err + n, "\\x00", 4); n += 4; }
    else c->err[n++] = c->text[i];
  }
  if (n >= c->errlen) n = c->errlen - 1;
  snprintf(c->err + n, c->errlen - n, "': %s", why);
  return -1;
}

static int parse_unix (const parse_ctx *c, const char *path, sh_addr *a) {
  struct sockaddr_un *un = (struct sockaddr_un *)&a->sa;
  size_t len = strlen(path);
  if (len == 0) return fail(c, "empty path");
  if (path[0] == '@' && len == 1) return fail(c, "empty name");
  if (len >= sizeof un->sun_path) return fail(c, "path too long");
  un->sun_family = AF_UNIX;
  memcpy(un->sun_path, path, len);
  if (path[0] == '@') un->sun_path[0] = '\0';    /* abstract namespace */
  a->salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                         (path[0] == '@' ? 0 : 1));
  snprintf(a->host, sizeof a->host, "%s", path);
  a->port = -1;
  a->resolved = 1;
  return 0;
}

/* Fill 'a->sa' from a literal or "localhost"; leave unresolved otherwise. */
static void resolve_literal (sh_addr *a) {
  struct sockaddr_in *in4 = (struct sockaddr_in *)&a->sa;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->sa;
  const char *h = a->host;
  if (strcmp(h, "localhost") == 0) h = "127.0.0.1";
  else if (strcmp(h, "*") == 0) h = "0.0.0.0";
  if (inet_pton(AF_INET, h, &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons((unsigned short)a->port);
    a->salen = sizeof *in4;
    a->resolved = 1;
  } else if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((unsigned short)a->port);
    a->salen = sizeof *in6;
    a->resolved = 1;
  }
}

/* The interface a zone names: "eth0", or its number "2". Returns 0, or -1
** with the reason in 'why'. */
static int parse_zone (const char *zone, uint32_t *id, const char **why) {
  size_t len = strlen(zone);
  if (len == 0) { *why = "empty zone"; return -1; }
  if (strspn(zone, "0123456789") == len) {
    unsigned long v;
    if (len > 10 || (v = strtoul(zone, NULL, 10)) > 0xffffffffUL) {
      *why = "unknown zone";
      return -1;
    }
    *id = (uint32_t)v;
    return 0;
  }
  if (len >= IF_NAMESIZE || (*id = if_nametoindex(zone)) == 0) {
    *why = "unknown zone";
    return -1;
  }
  return 0;
}

/* The host of "[v6]:port" (in a->host, port set): an IPv6 literal, with a
** zone after '%' if any. */
static int parse_v6 (const parse_ctx *c, sh_addr *a) {
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->sa;
  char ip[sizeof a->host];
  const char *pct = strchr(a->host, '%'), *why;
  size_t n = pct != NULL ? (size_t)(pct - a->host) : strlen(a->host);
  uint32_t scope = 0;
  memcpy(ip, a->host, n);
  ip[n] = '\0';
  if (inet_pton(AF_INET6, ip, &in6->sin6_addr) != 1) return fail(c, "bad IPv6 address");
  if (pct != NULL && parse_zone(pct + 1, &scope, &why) != 0) return fail(c, why);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons((unsigned short)a->port);
  in6->sin6_scope_id = scope;
  a->salen = sizeof *in6;
  a->resolved = 1;
  return 0;
}

static int parse_inet (const parse_ctx *c, const char *rest, sh_addr *a) {
  const char *colon, *hbeg = rest, *hend;
  char *end;
  long port;
  if (rest[0] == '[') {                      /* [v6]:port */
    hbeg = rest + 1;
    hend = strchr(hbeg, ']');
    if (hend == NULL) return fail(c, "missing ']'");
    colon = hend + 1;
    if (*colon != ':') return fail(c, "missing port");
  } else {
    colon = strrchr(rest, ':');
    if (colon == NULL) return fail(c, "missing port");
    hend = colon;
    if (memchr(rest, ':', (size_t)(colon - rest)) != NULL)
      return fail(c, "IPv6 hosts go in brackets");
  }
  if (hend == hbeg) return fail(c, "missing host");
  if ((size_t)(hend - hbeg) >= sizeof a->host) return fail(c, "host too long");
  if (colon[1] < '0' || colon[1] > '9') return fail(c, "bad port");
  port = strtol(colon + 1, &end, 10);
  if (*end != '\0') return fail(c, "bad port");
  if (port < 0 || port > 65535) return fail(c, "port out of range");
  memcpy(a->host, hbeg, (size_t)(hend - hbeg));
  a->host[hend - hbeg] = '\0';
  a->port = (int)port;
  if (rest[0] == '[') return parse_v6(c, a);
  resolve_literal(a);
  return 0;
}

int sh_addr_parse (const char *text, size_t len, sh_addr *a, char *err, size_t errlen) {
  parse_ctx c;
  size_t i;
  c.text = text;
  c.len = len;
  c.err = err;
  c.errlen = errlen;
  memset(a, 0, sizeof *a);
  a->scheme = SH_TCP;
  if (memchr(text, '\0', len) != NULL) return fail(&c, "NUL byte in address");
  for (i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
    size_t n = strlen(schemes[i].prefix);
    if (strncmp(text, schemes[i].prefix, n) == 0) {
      a->scheme = schemes[i].scheme;
      if (a->scheme == SH_UNIX || a->scheme == SH_UNIXGRAM)
        return parse_unix(&c, text + n, a);
      return parse_inet(&c, text + n, a);
    }
  }
  if (strstr(text, "://") != NULL) return fail(&c, "unknown scheme");
  return parse_inet(&c, text, a);
}

static const char *scheme_name (sh_scheme scheme) {
  switch (scheme) {
    case SH_TCP: return "tcp";
    case SH_UDP: return "udp";
    case SH_UNIX: return "unix";
    case SH_TLS: return "tls";
    default: return "unixgram";
  }
}

/* "%eth0" (or "%7" for an interface without a name now) for a scope id;
** "" for none. */
static void format_zone (uint32_t scope, char *buf, size_t n) {
  char name[IF_NAMESIZE];
  if (scope == 0) snprintf(buf, n, "%s", "");
  else if (if_indextoname(scope, name) != NULL) snprintf(buf, n, "%%%s", name);
  else snprintf(buf, n, "%%%lu", (unsigned long)scope);
}

size_t sh_addr_format (const struct sockaddr *sa, socklen_t len, sh_scheme scheme,
                       char *buf, size_t n) {
  char host[INET6_ADDRSTRLEN];
  int w = 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in4->sin_addr, host, sizeof host);
    w = snprintf(buf, n, "%s://%s:%u", scheme_name(scheme), host, ntohs(in4->sin_port));
  } else if (sa->sa_family == AF_INET6 &&
             IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)sa)->sin6_addr)) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof host);   /* as IPv4 */
    w = snprintf(buf, n, "%s://%s:%u", scheme_name(scheme), host, ntohs(in6->sin6_port));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    char zone[IF_NAMESIZE + 2];
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    format_zone(in6->sin6_scope_id, zone, sizeof zone);
    w = snprintf(buf, n, "%s://[%s%s]:%u", scheme_name(scheme), host, zone,
                 ntohs(in6->sin6_port));
  } else if (sa->sa_family == AF_UNIX) {
    const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
    size_t plen = len > offsetof(struct sockaddr_un, sun_path)
                ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    if (plen > 0 && un->sun_path[0] == '\0')     /* abstract: @name */
      w = snprintf(buf, n, "%s:@%.*s", scheme_name(scheme), (int)(plen - 1), un->sun_path + 1);
    else
      w = snprintf(buf, n, "%s:%.*s", scheme_name(scheme), (int)strnlen(un->sun_path, plen),
                   un->sun_path);
  } else {
    w = snprintf(buf, n, "%s:?", scheme_name(scheme));
  }
  if (w < 0) w = 0;
  return (size_t)w < n ? (size_t)w : (n > 0 ? n - 1 : 0);
}
