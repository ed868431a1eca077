/* sh_resolve.h -- name resolution that never blocks the loop, on libevent's
** evdns (reads /etc/resolv.conf and /etc/hosts). Knows nothing about Lua.
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

/* A resolver. 'hosts' replaces /etc/hosts when not NULL; 'nameservers'
** (NULL-terminated, "ip" or "ip:port") replace /etc/resolv.conf's when not
** NULL (an empty list: answer from the hosts file only). */
sh_resolver *sh_resolver_new(sh_loop *loop, const char *hosts, const char *const *nameservers,
                             char *err, size_t errlen);
/* Free; pending requests are answered "cancelled" first. */
void sh_resolver_free(sh_resolver *r);

/* Resolve 'host' for a socket of 'socktype' (SOCK_STREAM, SOCK_DGRAM),
** filling in 'port'. Returns NULL (errno set) only when out of memory. */
sh_resolve *sh_resolve_start(sh_resolver *r, const char *host, int port, int socktype,
                             sh_resolve_fn cb, void *ctx);
/* Give up: never call back. */
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
