/* sh_resolve.h -- name resolution that never blocks the loop, on libevent's
** evdns (reads /etc/resolv.conf and /etc/hosts). Knows nothing about Lua.
**
** As everywhere in core/, the callback comes from the loop, never from
** inside sh_resolve_start(), even when the answer is known at once (a
** literal, a hosts-file entry). */
#ifndef SH_RESOLVE_H
#define SH_RESOLVE_H

#include <stddef.h>
#include <sys/socket.h>

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

#endif
