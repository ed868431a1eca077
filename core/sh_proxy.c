/* sh_proxy.c -- the PROXY protocol header, versions 1 (a text line) and 2
** (binary), as HAProxy's proxy-protocol.txt describes them; see sh_proxy.h. */
#include "sh_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "sh_util.h"

static const unsigned char V1_PREFIX[] = "PROXY ";
#define V1_PREFIX_LEN 6
static const unsigned char V2_SIG[12] = {
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};
#define V2_HEAD 16              /* signature, version and command, family, length */
#define V2_INET_LEN 12          /* two IPv4 addresses, two ports */
#define V2_INET6_LEN 36
#define V2_UNIX_LEN 216         /* two 108-byte paths */
#define V2_UNIX_PATH 108

static int fail (char *err, size_t errlen, const char *why) {
  snprintf(err, errlen, "%s", why);
  return -1;
}

/* ---------------- Version 1: "PROXY TCP4 src dst sport dport\r\n" ---------------- */

/* The next space-separated word of line[*pos..end) into w (NUL-ended, at
** most wmax - 1 bytes); 'last': the word ends the line, else a single space
** follows it. Returns 0, or -1. */
static int v1_word (const unsigned char *line, size_t end, size_t *pos, char *w, size_t wmax,
                    int last) {
  size_t i = *pos, k = 0;
  while (i < end && line[i] != ' ') {
    if (k + 1 >= wmax) return -1;
    w[k++] = (char)line[i++];
  }
  w[k] = '\0';
  if (k == 0) return -1;
  if (last ? i != end : (i >= end || line[i] != ' ')) return -1;
  *pos = last ? i : i + 1;
  return 0;
}

/* A port: 0..65535 in decimal, without a sign or leading zeros. */
static int v1_port (const char *w, uint16_t *port) {
  unsigned long v = 0;
  size_t i, n = strlen(w);
  if (n == 0 || n > 5 || (n > 1 && w[0] == '0')) return -1;
  for (i = 0; i < n; i++) {
    if (w[i] < '0' || w[i] > '9') return -1;
    v = v * 10 + (unsigned long)(w[i] - '0');
  }
  if (v > 65535) return -1;
  *port = (uint16_t)v;
  return 0;
}

/* An address of 'family' and a port into a socket address. */
static int v1_addr (int family, const char *host, const char *port,
                    struct sockaddr_storage *ss, socklen_t *len) {
  uint16_t p;
  memset(ss, 0, sizeof *ss);
  if (v1_port(port, &p) != 0) return -1;
  if (family == AF_INET) {
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) != 1) return -1;
    in4->sin_family = AF_INET;
    in4->sin_port = htons(p);
    *len = sizeof *in4;
  } else {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) return -1;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(p);
    *len = sizeof *in6;
  }
  return 0;
}

/* The complete line p[0..end) (without its "\r\n"). */
static int v1_line (const unsigned char *p, size_t end, sh_proxy_info *out) {
  char proto[8], src[48], dst[48], sport[8], dport[8];
  size_t pos = V1_PREFIX_LEN;
  int family;
  if (end - pos >= 7 && memcmp(p + pos, "UNKNOWN", 7) == 0 &&
      (end - pos == 7 || p[pos + 7] == ' '))
    return 0;                                   /* the rest is to be ignored */
  if (v1_word(p, end, &pos, proto, sizeof proto, 0) != 0) return -1;
  if (strcmp(proto, "TCP4") == 0) family = AF_INET;
  else if (strcmp(proto, "TCP6") == 0) family = AF_INET6;
  else return -1;
  if (v1_word(p, end, &pos, src, sizeof src, 0) != 0 ||
      v1_word(p, end, &pos, dst, sizeof dst, 0) != 0 ||
      v1_word(p, end, &pos, sport, sizeof sport, 0) != 0 ||
      v1_word(p, end, &pos, dport, sizeof dport, 1) != 0)
    return -1;
  if (v1_addr(family, src, sport, &out->src, &out->srclen) != 0 ||
      v1_addr(family, dst, dport, &out->dst, &out->dstlen) != 0)
    return -1;
  out->has_addr = 1;
  return 0;
}

static int parse_v1 (const unsigned char *p, size_t n, sh_proxy_info *out,
                     char *err, size_t errlen) {
  size_t i;
  for (i = V1_PREFIX_LEN; i < n; i++) {
    if (i >= SH_PROXY_V1_MAX - 1) return fail(err, errlen, "PROXY v1 header too long");
    if (p[i] == '\r') {
      if (i + 1 == n) return 0;                 /* the "\n" may come */
      out->version = 1;
      if (p[i + 1] != '\n' || v1_line(p, i, out) != 0) break;
      return (int)(i + 2);
    }
    if (p[i] < 0x20 || p[i] > 0x7e) break;      /* text only */
  }
  if (i < n) return fail(err, errlen, "bad PROXY v1 header");
  return 0;
}

/* ---------------- Version 2: binary ---------------- */

/* A v2 UNIX address: a 108-byte path, NUL-padded (a first NUL: abstract). */
static void v2_unix (const unsigned char *path, struct sockaddr_storage *ss, socklen_t *len) {
  struct sockaddr_un *un = (struct sockaddr_un *)ss;
  size_t plen = V2_UNIX_PATH;
  memset(ss, 0, sizeof *ss);
  un->sun_family = AF_UNIX;
  if (path[0] != '\0') {
    plen = strnlen((const char *)path, V2_UNIX_PATH < sizeof un->sun_path
                                       ? V2_UNIX_PATH : sizeof un->sun_path);
  } else {
    while (plen > 1 && path[plen - 1] == '\0') plen--;
  }
  if (plen > sizeof un->sun_path) plen = sizeof un->sun_path;
  memcpy(un->sun_path, path, plen);
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
}

static void v2_inet (const unsigned char *a, int six, sh_proxy_info *out) {
  size_t alen = six ? 16 : 4;
  const unsigned char *sport = a + 2 * alen, *dport = sport + 2;
  memset(&out->src, 0, sizeof out->src);
  memset(&out->dst, 0, sizeof out->dst);
  if (six) {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src, *d = (struct sockaddr_in6 *)&out->dst;
    s->sin6_family = d->sin6_family = AF_INET6;
    memcpy(&s->sin6_addr, a, 16);
    memcpy(&d->sin6_addr, a + 16, 16);
    memcpy(&s->sin6_port, sport, 2);
    memcpy(&d->sin6_port, dport, 2);
    out->srclen = out->dstlen = sizeof *s;
  } else {
    struct sockaddr_in *s = (struct sockaddr_in *)&out->src, *d = (struct sockaddr_in *)&out->dst;
    s->sin_family = d->sin_family = AF_INET;
    memcpy(&s->sin_addr, a, 4);
    memcpy(&d->sin_addr, a + 4, 4);
    memcpy(&s->sin_port, sport, 2);
    memcpy(&d->sin_port, dport, 2);
    out->srclen = out->dstlen = sizeof *s;
  }
}

/* TLVs: type, 16-bit length, value; they must fill t[0..n) exactly. */
static int v2_tlvs_ok (const unsigned char *t, size_t n) {
  size_t i = 0;
  while (i < n) {
    size_t vlen;
    if (n - i < 3) return 0;
    vlen = ((size_t)t[i + 1] << 8) | t[i + 2];
    if (n - i - 3 < vlen) return 0;
    i += 3 + vlen;
  }
  return 1;
}

static int parse_v2 (const unsigned char *p, size_t n, sh_proxy_info *out,
                     char *err, size_t errlen) {
  unsigned ver, cmd, fam, proto;
  size_t body, need, alen = 0;
  if (n < V2_HEAD) {                           /* check what is there */
    if (n > 12 && (p[12] >> 4) != 2) return fail(err, errlen, "bad PROXY v2 header: version");
    return 0;
  }
  ver = p[12] >> 4;
  cmd = p[12] & 0x0f;
  fam = p[13] >> 4;
  proto = p[13] & 0x0f;
  body = ((size_t)p[14] << 8) | p[15];
  if (ver != 2) return fail(err, errlen, "bad PROXY v2 header: version");
  if (cmd > 1) return fail(err, errlen, "bad PROXY v2 header: command");
  if (fam > 3 || proto > 2) return fail(err, errlen, "bad PROXY v2 header: address family");
  if (V2_HEAD + body > SH_PROXY_MAX) return fail(err, errlen, "PROXY v2 header too long");
  need = V2_HEAD + body;
  if (n < need) return 0;
  out->version = 2;
  out->local = cmd == 0;
  if (out->local || fam == 0) return (int)need;  /* no addresses to take */
  if (proto == 2) return fail(err, errlen, "bad PROXY v2 header: a datagram connection");
  alen = fam == 1 ? V2_INET_LEN : fam == 2 ? V2_INET6_LEN : V2_UNIX_LEN;
  if (body < alen) return fail(err, errlen, "bad PROXY v2 header: addresses truncated");
  if (fam == 3) {
    v2_unix(p + V2_HEAD, &out->src, &out->srclen);
    v2_unix(p + V2_HEAD + V2_UNIX_PATH, &out->dst, &out->dstlen);
  } else {
    v2_inet(p + V2_HEAD, fam == 2, out);
  }
  if (!v2_tlvs_ok(p + V2_HEAD + alen, body - alen))
    return fail(err, errlen, "bad PROXY v2 header: TLVs");
  out->tlv = p + V2_HEAD + alen;
  out->tlvlen = body - alen;
  out->has_addr = 1;
  return (int)need;
}

int sh_proxy_parse (const unsigned char *p, size_t n, sh_proxy_info *out,
                    char *err, size_t errlen) {
  size_t k;
  memset(out, 0, sizeof *out);
  if (n == 0) return 0;
  if (p[0] == 'P') {
    k = n < V1_PREFIX_LEN ? n : V1_PREFIX_LEN;
    if (memcmp(p, V1_PREFIX, k) != 0) return fail(err, errlen, "not a PROXY header");
    return k < V1_PREFIX_LEN ? 0 : parse_v1(p, n, out, err, errlen);
  }
  k = n < sizeof V2_SIG ? n : sizeof V2_SIG;
  if (memcmp(p, V2_SIG, k) != 0) return fail(err, errlen, "not a PROXY header");
  return parse_v2(p, n, out, err, errlen);
}

sh_proxy_info *sh_proxy_copy (const sh_proxy_info *info) {
  sh_proxy_info *p = malloc(sizeof *p + info->tlvlen);
  if (p == NULL) return NULL;
  *p = *info;
  if (info->tlvlen > 0) memcpy(p + 1, info->tlv, info->tlvlen);
  p->tlv = (const unsigned char *)(p + 1);
  return p;
}

/* ---------------- The reader ---------------- */

struct sh_proxy_rd {
  sh_loop_item item;          /* first: freed with the loop if still reading */
  sh_loop *loop;
  int fd;
  struct event *rev;          /* readable */
  struct event *timer;        /* the deadline */
  sh_proxy_fn cb;
  void *ctx;
  size_t len;                 /* header bytes taken from the socket so far */
  size_t take;                /* bytes known to be the header's, not yet taken */
  size_t total;               /* the header's length once known, else 0 */
  unsigned char buf[SH_PROXY_MAX];
};

static void rd_free (sh_proxy_rd *r) {
  sh_loop_untrack(r->loop, &r->item);
  if (r->rev != NULL) event_free(r->rev);
  if (r->timer != NULL) event_free(r->timer);
  free(r);
}

static void rd_destroy (sh_loop_item *item) {
  sh_proxy_rd *r = (sh_proxy_rd *)item;
  if (r->fd >= 0) close(r->fd);
  rd_free(r);
}

/* The end: tell the owner (fd -1 and err on failure), then free. */
static void rd_done (sh_proxy_rd *r, const sh_proxy_info *info, const char *err) {
  int fd = r->fd;
  r->fd = -1;
  event_del(r->rev);
  event_del(r->timer);
  if (err != NULL) {
    close(fd);
    fd = -1;
  }
  r->cb(fd, info, err, r->ctx);
  rd_free(r);
}

static void on_timeout (evutil_socket_t fd, short what, void *arg) {
  (void)fd; (void)what;
  rd_done(arg, NULL, "no PROXY header in time");
}

/* How many of the bytes there are the header's: peek, parse what we have
** with them. Returns 0 (r->take and r->total set), or -1 after rd_done. */
static int rd_look (sh_proxy_rd *r) {
  sh_proxy_info info;
  char err[64];
  ssize_t got = recv(r->fd, r->buf + r->len, sizeof r->buf - r->len, MSG_PEEK);
  int n;
  if (got < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    rd_done(r, NULL, sh_strerror(errno));
    return -1;
  }
  if (got == 0) { rd_done(r, NULL, "closed before a PROXY header"); return -1; }
  n = sh_proxy_parse(r->buf, r->len + (size_t)got, &info, err, sizeof err);
  if (n < 0) { rd_done(r, NULL, err); return -1; }
  r->total = (size_t)n;                         /* 0: not known yet */
  r->take = n > 0 ? (size_t)n - r->len : (size_t)got;
  return 0;
}

/* Readable: find out how many bytes are the header's (rd_look), then take
** those only; what follows the header stays in the socket. Bytes known to
** be the header's are taken on a later call if the kernel says EAGAIN now. */
static void on_readable (evutil_socket_t fd, short what, void *arg) {
  sh_proxy_rd *r = arg;
  sh_proxy_info info;
  char err[64];
  ssize_t took;
  (void)fd; (void)what;
  if (r->take == 0 && (rd_look(r) != 0 || r->take == 0)) return;
  took = recv(r->fd, r->buf + r->len, r->take, 0);
  if (took < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    rd_done(r, NULL, sh_strerror(errno));
    return;
  }
  if (took == 0) { rd_done(r, NULL, "closed before a PROXY header"); return; }
  r->len += (size_t)took;
  r->take -= (size_t)took;
  if (r->take > 0 || r->total == 0 || r->len < r->total) return;
  if (sh_proxy_parse(r->buf, r->len, &info, err, sizeof err) != (int)r->len)
    rd_done(r, NULL, "bad PROXY header");       /* cannot be: parsed before */
  else
    rd_done(r, &info, NULL);
}

sh_proxy_rd *sh_proxy_start (sh_loop *loop, int fd, double timeout, sh_proxy_fn cb, void *ctx) {
  struct event_base *base = sh_loop_base(loop);
  struct timeval tv;
  sh_proxy_rd *r = calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  r->loop = loop;
  r->fd = fd;
  r->cb = cb;
  r->ctx = ctx;
  r->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, r);
  r->timer = evtimer_new(base, on_timeout, r);
  if (r->rev == NULL || r->timer == NULL) {
    if (r->rev != NULL) event_free(r->rev);
    if (r->timer != NULL) event_free(r->timer);
    free(r);
    return NULL;
  }
  tv.tv_sec = (time_t)timeout;
  tv.tv_usec = (suseconds_t)((timeout - (double)tv.tv_sec) * 1e6);
  event_add(r->rev, NULL);
  event_add(r->timer, &tv);
  r->item.destroy = rd_destroy;
  sh_loop_track(loop, &r->item);
  return r;
}

void sh_proxy_cancel (sh_proxy_rd *r) {
  rd_destroy(&r->item);
}
