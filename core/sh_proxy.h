/* sh_proxy.h -- the PROXY protocol (versions 1 and 2) that a load balancer
** (HAProxy's send-proxy, send-proxy-v2) puts in front of a connection: a
** parser, and a reader that takes the header off an accepted socket before
** anything else reads it. Knows nothing about Lua; see bindings/l_listener.c.
**
** The reader consumes exactly the header's bytes from the kernel (it peeks,
** then takes no more than the header), so what follows it (a TLS
** ClientHello, a request) stays in the socket for whoever reads next. Its
** callback comes from the event loop, never from sh_proxy_start. */
#ifndef SH_PROXY_H
#define SH_PROXY_H

#include <stddef.h>
#include <sys/socket.h>

#include "sh_loop.h"

#define SH_PROXY_V1_MAX 107     /* the longest v1 line, "\r\n" included */
#define SH_PROXY_MAX    2048    /* the longest v2 header taken: 16 + addresses + TLVs */

/* What the balancer said. */
typedef struct sh_proxy_info {
  int version;                  /* 1 or 2 */
  int local;                    /* 1: v2 LOCAL command (the balancer's own
                                ** connection, a health check) */
  int has_addr;                 /* 1: src and dst hold the client's addresses;
                                ** 0: LOCAL, v1 UNKNOWN, v2 family UNSPEC */
  struct sockaddr_storage src;  /* the client (AF_INET, AF_INET6, AF_UNIX) */
  struct sockaddr_storage dst;  /* where it connected to (the balancer) */
  socklen_t srclen, dstlen;
  const unsigned char *tlv;     /* v2: the TLVs' bytes (checked well formed); */
  size_t tlvlen;                /* ... pointing into the parsed buffer */
} sh_proxy_info;

/* Parse the header at the start of p[0..n). Returns its length (> 0) when
** complete, with 'out' filled; 0 when p is a valid beginning and more bytes
** are needed; -1 when it cannot be a valid header, with the reason in 'err'
** ("not a PROXY header", "bad PROXY v1 header", "PROXY v1 header too long",
** "bad PROXY v2 header: ...", "PROXY v2 header too long"). A header longer
** than SH_PROXY_MAX is too long. Bytes after the header are not looked at. */
int sh_proxy_parse(const unsigned char *p, size_t n, sh_proxy_info *out,
                   char *err, size_t errlen);

/* A copy of 'info' and its TLVs in one block (free() it), or NULL when out
** of memory. */
sh_proxy_info *sh_proxy_copy(const sh_proxy_info *info);

typedef struct sh_proxy_rd sh_proxy_rd;

/* The outcome: fd (now the callee's) and the header, err NULL; or fd -1
** (the socket is closed) and err: a parse error above, "no PROXY header in
** time", "closed before a PROXY header" (end of stream first), or a
** strerror text. 'info' and what it points to live only during the call. The reader is freed after
** the call returns: do not cancel it from inside. */
typedef void (*sh_proxy_fn)(int fd, const sh_proxy_info *info, const char *err, void *ctx);

/* Read a PROXY header off 'fd' (non-blocking; now the reader's) within
** 'timeout' seconds (> 0). Returns NULL when out of memory ('fd' is then
** still the caller's). The reader does not keep the loop alive; one left at
** sh_loop_free is freed with its socket, without a call. */
sh_proxy_rd *sh_proxy_start(sh_loop *loop, int fd, double timeout, sh_proxy_fn cb, void *ctx);
/* Give up: close the socket, free the reader, never call back. */
void sh_proxy_cancel(sh_proxy_rd *r);

#endif
