/* sh_dgram.h -- datagram sockets (UDP over IPv4/IPv6, Unix datagrams).
** Knows nothing about Lua; see bindings/l_udp.c.
**
** Datagrams are whole: nothing is buffered here, a receive takes exactly one
** datagram and says whether it was cut to fit. A socket bound to a wildcard
** address learns the local address each datagram arrived on, so a reply can
** leave from that same address. Callbacks come only from the loop. */
#ifndef SH_DGRAM_H
#define SH_DGRAM_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "sh_loop.h"
#include "sh_net.h"

#define SH_DGRAM_MAX 65536     /* a receive buffer that fits any datagram */

typedef struct sh_dgram sh_dgram;

enum { SH_DGRAM_READ = 1, SH_DGRAM_WRITE = 2 };
typedef void (*sh_dgram_fn)(sh_dgram *d, int what, void *ctx);

/* What came with a datagram. */
typedef struct sh_dgram_msg {
  struct sockaddr_storage from;   /* the sender */
  socklen_t fromlen;
  struct sockaddr_storage local;  /* where it arrived (wildcard sockets) */
  int has_local;
  int truncated;                  /* longer than the buffer: cut */
} sh_dgram_msg;

/* A socket of 'family' (AF_INET, AF_INET6, AF_UNIX), bound to 'sa' unless
** NULL (an unbound Unix socket is given an abstract name so that it can be
** answered). NULL on failure, with a message in 'err'. */
sh_dgram *sh_dgram_open(sh_loop *loop, int family, const struct sockaddr *sa, socklen_t len,
                        const sh_sockopts *o, sh_dgram_fn cb, void *ctx,
                        char *err, size_t errlen);
/* Start reading on the sockets taken from a reload while
** sh_inherit_holding(): they wait until the new generation serves. */
void sh_dgram_release_held(void);
/* Which events to report; none by default. */
void sh_dgram_watch(sh_dgram *d, int what);
int sh_dgram_family(const sh_dgram *d);
int sh_dgram_fd(const sh_dgram *d);
/* The owner's context, or NULL once freed from inside a callback. */
void *sh_dgram_ctx(const sh_dgram *d);

/* Receive one datagram. Returns its length (at most 'len'), or -1 with errno
** (EAGAIN: nothing waiting). */
ssize_t sh_dgram_recv(sh_dgram *d, void *buf, size_t len, sh_dgram_msg *m);
/* Send one datagram to 'to' (NULL when connected), from local address
** 'src' when not NULL. Returns the length, or -1 with errno. */
ssize_t sh_dgram_send(sh_dgram *d, const void *buf, size_t len, const struct sockaddr *to,
                      socklen_t tolen, const struct sockaddr_storage *src);
int sh_dgram_connect(sh_dgram *d, const struct sockaddr *sa, socklen_t len);

/* Socket options: "broadcast", "ttl" (multicast), "loop" (multicast
** loopback), "rcvbuf", "sndbuf". Returns 0, or -1 with errno. */
int sh_dgram_setopt(sh_dgram *d, const char *name, int value);
/* Join (join=1) or leave a multicast group, on the interface with address
** 'iface' (NULL: the default). Returns 0, or -1 with errno. */
int sh_dgram_membership(sh_dgram *d, int join, const struct sockaddr *group,
                        const struct sockaddr *iface);

/* Close. Safe from inside the callback. */
void sh_dgram_free(sh_dgram *d);

#endif
