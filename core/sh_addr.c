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

/* ---------------- IP literals ---------------- */

size_t sh_ip_parse (const char *text, size_t len, unsigned char out[16]) {
  char buf[SH_IP_TEXT];
  if (len == 0 || len >= sizeof buf || memchr(text, '\0', len) != NULL) return 0;
  memcpy(buf, text, len);
  buf[len] = '\0';
  if (inet_pton(AF_INET, buf, out) == 1) return 4;
  if (inet_pton(AF_INET6, buf, out) == 1) return 16;
  return 0;
}

/* The longest run of zero fields in 'w' (the first of equal ones): its
** length, and its first field in '*start'. */
static int zero_run (const unsigned w[8], int *start) {
  int i, best = 0, cur = 0;
  *start = 0;
  for (i = 0; i < 8; i++) {
    cur = w[i] == 0 ? cur + 1 : 0;
    if (cur > best) { best = cur; *start = i - cur + 1; }
  }
  return best;
}

/* RFC 5952: lower-case hex without leading zeros, the longest run of two
** or more zero fields as "::", an IPv4-mapped address as ::ffff:a.b.c.d. */
static size_t format_v6 (const unsigned char *ip, char *buf) {
  static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  unsigned w[8];
  int i, start, run, n = 0;
  if (memcmp(ip, mapped, sizeof mapped) == 0)
    return (size_t)snprintf(buf, SH_IP_TEXT, "::ffff:%u.%u.%u.%u", ip[12], ip[13], ip[14], ip[15]);
  for (i = 0; i < 8; i++) w[i] = (unsigned)ip[2 * i] << 8 | ip[2 * i + 1];
  run = zero_run(w, &start);
  if (run < 2) start = 8;                /* no "::" */
  for (i = 0; i < 8; i++) {
    if (i == start) {
      n += snprintf(buf + n, SH_IP_TEXT - (size_t)n, "::");
      i += run - 1;
      continue;
    }
    n += snprintf(buf + n, SH_IP_TEXT - (size_t)n, i == 0 || i == start + run ? "%x" : ":%x", w[i]);
  }
  return (size_t)n;
}

size_t sh_ip_format (const unsigned char *ip, size_t len, char *buf) {
  buf[0] = '\0';
  if (len == 4) return (size_t)snprintf(buf, SH_IP_TEXT, "%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]);
  return len == 16 ? format_v6(ip, buf) : 0;
}

/* ---------------- Host names ---------------- */

static int name_char (unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '-' || ch == '_';
}

/* Why 'h' is not a host name, or NULL: labels of 1..63 letters, digits,
** '-' and '_' between dots, 253 bytes at most (one final dot aside), the
** last label not all digits (that is an IPv4 address, and not a good one:
** the caller has tried it as one). */
static const char *name_problem (const char *h) {
  size_t len = strlen(h), label = 0, i;
  int digits = 1;
  if (len > 0 && h[len - 1] == '.') len--;
  if (len == 0 || len > 253) return "bad host name";
  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)h[i];
    if (ch == '.') {
      if (label == 0) return "bad host name";
      label = 0;
      digits = 1;
      continue;
    }
    if (!name_char(ch) || ++label > 63) return "bad host name";
    if (ch < '0' || ch > '9') digits = 0;
  }
  if (label == 0) return "bad host name";
  return digits ? "bad IPv4 address" : NULL;
}

/* Why the host 'h' (NUL-terminated, no brackets) is none, or NULL: an IP
** literal (the caller has refused a ':' outside brackets) or a name. */
static const char *host_problem (const char *h) {
  unsigned char ip[16];
  if (sh_ip_parse(h, strlen(h), ip) != 0) return NULL;
  if (strchr(h, ':') != NULL) return "bad IPv6 address";
  return name_problem(h);
}

int sh_addr_check_name (const char *text, size_t len, char *err, size_t errlen) {
  const char *why;
  if (len == 0) why = "empty name";
  else if (memchr(text, '\0', len) != NULL) why = "NUL byte in name";
  else why = host_problem(text);
  return why == NULL ? 0 : sh_addr_error(text, len, why, err, errlen);
}

/* What a parse reports its failures against. */
typedef struct parse_ctx {
  const char *text;              /* the whole address, as given */
  size_t len;
  char *err;
  size_t errlen;
} parse_ctx;

int sh_addr_error (const char *text, size_t len, const char *why, char *err, size_t errlen) {
  size_t i, n = 0, shown = len < 200 ? len : 200;
  if (errlen == 0) return -1;
  n = (size_t)snprintf(err, errlen, "bad address '");
  for (i = 0; i < shown && n + 5 < errlen; i++) {
    if (text[i] == '\0') { memcpy(err + n, "\\x00", 4); n += 4; }
    else err[n++] = text[i];
  }
  if (n >= errlen) n = errlen - 1;
  snprintf(err + n, errlen - n, "': %s", why);
  return -1;
}

static int fail (const parse_ctx *c, const char *why) {
  return sh_addr_error(c->text, c->len, why, c->err, c->errlen);
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
** zone after '%' if any. The host becomes the literal's canonical text with
** the zone as written after it (a zone parse_zone takes is short: it fits). */
static int parse_v6 (const parse_ctx *c, sh_addr *a) {
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->sa;
  char ip[sizeof a->host];
  const char *pct = strchr(a->host, '%'), *why;
  size_t n = pct != NULL ? (size_t)(pct - a->host) : strlen(a->host);
  size_t zone_len = strlen(a->host + n), k;       /* "%zone", or 0 */
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
  k = sh_ip_format(in6->sin6_addr.s6_addr, 16, ip);
  memmove(a->host + k, a->host + n, zone_len + 1);
  memcpy(a->host, ip, k);
  return 0;
}

static int parse_inet (const parse_ctx *c, const char *rest, sh_addr *a) {
  const char *colon, *hbeg = rest, *hend, *why;
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
  if (strcmp(a->host, "localhost") != 0 && strcmp(a->host, "*") != 0 &&
      (why = host_problem(a->host)) != NULL)
    return fail(c, why);
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

/* What snprintf wrote into n bytes: 'w', cut to fit. */
static size_t clamp (int w, size_t n) {
  if (w < 0) w = 0;
  return (size_t)w < n ? (size_t)w : (n > 0 ? n - 1 : 0);
}

const char *sh_addr_scheme_name (sh_scheme scheme) {
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
  const char *name = sh_addr_scheme_name(scheme);
  char host[SH_IP_TEXT];
  int w = 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
    sh_ip_format((const unsigned char *)&in4->sin_addr, 4, host);
    w = snprintf(buf, n, "%s://%s:%u", name, host, ntohs(in4->sin_port));
  } else if (sa->sa_family == AF_INET6 &&
             IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)sa)->sin6_addr)) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    sh_ip_format(&in6->sin6_addr.s6_addr[12], 4, host);   /* as IPv4 */
    w = snprintf(buf, n, "%s://%s:%u", name, host, ntohs(in6->sin6_port));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    char zone[IF_NAMESIZE + 2];
    sh_ip_format(in6->sin6_addr.s6_addr, 16, host);
    format_zone(in6->sin6_scope_id, zone, sizeof zone);
    w = snprintf(buf, n, "%s://[%s%s]:%u", name, host, zone,
                 ntohs(in6->sin6_port));
  } else if (sa->sa_family == AF_UNIX) {
    const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
    size_t plen = len > offsetof(struct sockaddr_un, sun_path)
                ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    if (plen > 0 && un->sun_path[0] == '\0')     /* abstract: @name */
      w = snprintf(buf, n, "%s:@%.*s", name, (int)(plen - 1), un->sun_path + 1);
    else
      w = snprintf(buf, n, "%s:%.*s", name, (int)strnlen(un->sun_path, plen),
                   un->sun_path);
  } else {
    w = snprintf(buf, n, "%s:?", name);
  }
  return clamp(w, n);
}

size_t sh_addr_text (const sh_addr *a, char *buf, size_t n) {
  const char *name = sh_addr_scheme_name(a->scheme);
  int w;
  if (a->scheme == SH_UNIX || a->scheme == SH_UNIXGRAM)
    w = snprintf(buf, n, "%s:%s", name, a->host);
  else if (strchr(a->host, ':') != NULL)
    w = snprintf(buf, n, "%s://[%s]:%d", name, a->host, a->port);
  else
    w = snprintf(buf, n, "%s://%s:%d", name, a->host, a->port);
  return clamp(w, n);
}
