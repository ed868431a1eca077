/* sh_resolve.h -- name resolution that never blocks the loop: a stub
** resolver of our own on the loop's events (libevent 2.1's evdns gives up on
** a truncated answer, and holds every look-up past its 64 in flight behind
** those a silent server keeps). Knows nothing about Lua.
**
** A name is looked for in the hosts file first (/etc/hosts, or the file
** given), then asked of the name servers (/etc/resolv.conf's, or those
** given) over UDP: an A and an AAAA question at once, for each name of the
** search list in turn (resolv.conf's "search" and "ndots"). A truncated
** answer (the TC bit) is asked again over TCP. A question goes to the
** servers in turn, 'attempts' rounds, each try limited to 'timeout' seconds
** (resolv.conf's "options timeout: attempts:", or 5 s and 2).
**
** At most 'max_inflight' questions are out at once; the others wait their
** turn first come, first served, and a question whose try ran out of time
** goes to the back of that line before its next try. So a question a
** server never answers holds a place for one try's timeout at a time, and
** one behind it waits at most that long for each full round of places.
**
** As everywhere in core/, the callback comes from the loop, never from
** inside sh_resolve_start(), even when the answer is known at once (a
** literal, a hosts-file entry).
**
** sh_try_start is the one way an address string's addresses are found and
** used: it resolves a parsed address if need be and tries an operation
** (connect, bind and listen, ...) on each address in turn. */
#ifndef SH_RESOLVE_H
#define SH_RESOLVE_H

#include <stddef.h>
#include <sys/socket.h>

#include "sh_addr.h"
#include "sh_loop.h"

#define SH_MAX_ADDRS 16          /* addresses kept per answer */

typedef struct sh_addrlist {
  int n;
  struct sockaddr_storage sa[SH_MAX_ADDRS];
  socklen_t len[SH_MAX_ADDRS];
} sh_addrlist;

typedef struct sh_resolver sh_resolver;
typedef struct sh_resolve sh_resolve;

/* The answer: err 0 and the addresses (port set), or an error text such as
** "name not found". 'list' is only valid during the call. */
typedef void (*sh_resolve_fn)(const char *err, const sh_addrlist *list, void *ctx);

/* How a resolver is set up; zeros (and NULLs) mean the defaults. */
typedef struct sh_resolver_conf {
  const char *hosts;              /* a hosts file instead of /etc/hosts */
  const char *const *nameservers; /* NULL-terminated "ip", "ip:port" or
                                  ** "[ip6]:port", instead of resolv.conf's (and
                                  ** its search list and options); an empty
                                  ** list: the hosts file only */
  double timeout;                 /* seconds per try (default 5, or resolv.conf's) */
  int attempts;                   /* rounds over the servers (default 2, or resolv.conf's) */
  int max_inflight;               /* questions out at once (SH_RESOLVE_INFLIGHT) */
} sh_resolver_conf;

#define SH_RESOLVE_INFLIGHT 4096      /* default max_inflight */
#define SH_RESOLVE_MAX_INFLIGHT 16384 /* its upper bound (a quarter of the ids) */
#define SH_RESOLVE_MAX_ATTEMPTS 10
#define SH_RESOLVE_MAX_TIMEOUT 60.0
#define SH_RESOLVE_MAX_SERVERS 16
#define SH_RESOLVE_TCP 32             /* TCP connections at once (after TC) */
#define SH_RESOLVE_SKEW 1.0           /* once A or AAAA has addresses, seconds
                                      ** the other gets before the answer goes
                                      ** without it */

/* A resolver on 'loop' (NULL conf: all defaults). Returns NULL with a
** message in 'err' ("bad name server 'x'", "cannot read hosts file 'p'",
** "out of memory"). */
sh_resolver *sh_resolver_new(sh_loop *loop, const sh_resolver_conf *conf,
                             char *err, size_t errlen);
/* Free at once (its sockets closed). Look-ups still going on are answered
** "cancelled", from the loop; an answer already due is still given. */
void sh_resolver_free(sh_resolver *r);

/* Resolve 'host' for a socket of 'socktype' (SOCK_STREAM, SOCK_DGRAM),
** filling in 'port'. The answer comes through 'cb' from the loop: the
** addresses (hosts-file order; from servers the A records, then the AAAA),
** or "name not found", "no address" (the name has no A or AAAA records),
** "timeout" (every try ran out of time), "temporary failure" (the servers
** answered SERVFAIL), "name server failure" (they refused, or answered
** nothing usable), "cancelled" (the resolver was freed). Returns NULL
** (errno set) only when out of memory. */
sh_resolve *sh_resolve_start(sh_resolver *r, const char *host, int port, int socktype,
                             sh_resolve_fn cb, void *ctx);
/* Give up: never call back. Frees everything at once (its place in flight
** goes to the next question waiting). */
void sh_resolve_cancel(sh_resolve *q);

/* ---------------- Trying each address ---------------- */

typedef struct sh_try sh_try;

/* How a try ends (an operation's result, and sh_try_start's). */
enum { SH_TRY_FAIL = -1, SH_TRY_OK = 0, SH_TRY_LATER = 1 };

/* One try at one address: SH_TRY_OK when it worked, SH_TRY_FAIL when it
** failed (why in 'err', e.g. "address in use"; the next address gets its
** turn), or SH_TRY_LATER when it goes on in the background: it then ends
** with sh_try_result. */
typedef int (*sh_try_fn)(const struct sockaddr *sa, socklen_t len, void *ctx,
                         char *err, size_t errlen);
/* The end of tries that went on from the loop: 'err' NULL when one worked,
** else the last one's error or "cannot resolve 'host': why". The walk is
** freed before the call. */
typedef void (*sh_tried_fn)(const char *err, void *ctx);

/* Try 'op' on each address of 'a' until one works: a literal or a Unix path
** at once, a host name once 'r' has resolved it for 'socktype' (r may be
** NULL for a resolved 'a'). Returns SH_TRY_OK or SH_TRY_FAIL (the last
** error, or "out of memory", in 'err') when the tries ended at once, and
** 'cb' is never called; or SH_TRY_LATER with '*tp' set, the end to come
** through 'cb' from the loop. */
int sh_try_start(sh_resolver *r, const sh_addr *a, int socktype, sh_try_fn op,
                 sh_tried_fn cb, void *ctx, sh_try **tp, char *err, size_t errlen);
/* A try that went on in the background ended: 'err' NULL when it worked
** (the end: 'cb' is called), else the next address is tried. */
void sh_try_result(sh_try *t, const char *err);
/* Give up: never call back. A try going on in the background is the
** owner's to stop. */
void sh_try_cancel(sh_try *t);

#endif
