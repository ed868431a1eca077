/* sh_net.h -- listening and connecting stream sockets (TCP and Unix).
** Knows nothing about Lua; see bindings/l_listener.c and bindings/l_conn.c.
**
** As with streams, callbacks come only from the event loop. */
#ifndef SH_NET_H
#define SH_NET_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include "sh_addr.h"
#include "sh_loop.h"
#include "sh_resolve.h"

/* ---------------- Socket set-up, shared with datagrams ---------------- */

typedef struct sh_sockopts {
  int backlog;       /* listen backlog; <= 0: 511 */
  int reuseport;     /* SO_REUSEPORT */
  int ipv6only;      /* IPV6_V6ONLY: 0, 1, or -1 for the system default */
  int mode;          /* permissions of a Unix socket file; -1: leave them */
} sh_sockopts;

/* The Unix socket file a bind made, and its identity (device and inode),
** so that it is removed only while it is still that file. */
typedef struct sh_sockfile {
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];   /* "": none */
  dev_t dev;
  ino_t ino;
} sh_sockfile;

/* Options to set before bind. Returns 0, or -1 with a message in 'err'. */
int sh_socket_options(int fd, int family, const sh_sockopts *o, char *err, size_t errlen);
/* Bind, then apply 'mode'. A Unix socket file already at the path is
** replaced only when stale: a socket file nobody has bound (a probe of the
** socket's own type hears "connection refused"); never a file that is not a
** socket ("address in use: '/path' is not a socket"), never one any process
** still holds, whatever its type ("address in use: a live process serves
** '/path'"). The file made goes to 'f' (path "" for other kinds: IP,
** abstract names). Returns 0, or -1 with a message in 'err' and no file
** left behind. */
int sh_socket_bind(int fd, const struct sockaddr *sa, socklen_t len, const sh_sockopts *o,
                   sh_sockfile *f, char *err, size_t errlen);
/* Take the Unix socket file of 'sa' (bound by another process that handed
** the socket over) into 'f' as if bound here; path "" for other kinds. */
void sh_sockfile_adopt(const struct sockaddr *sa, sh_sockfile *f);
/* Remove the file in 'f' if it is still the one bound (same device and
** inode: never a file put there since); then 'f' names none. */
void sh_sockfile_remove(sh_sockfile *f);

/* ---------------- Listener ---------------- */

typedef struct sh_listener sh_listener;

/* A new connection: 'fd' is non-blocking and now belongs to the callee. */
typedef void (*sh_accept_fn)(int fd, const struct sockaddr *peer, socklen_t len,
                             void *ctx);

/* Bind and listen. Returns NULL on failure with a message in 'err'
** ("address in use", ...). The listener holds a loop reference until freed;
** freeing it removes the Unix socket file it made. */
sh_listener *sh_listener_new(sh_loop *loop, const struct sockaddr *sa, socklen_t len,
                             const sh_sockopts *o, sh_accept_fn cb, void *ctx,
                             char *err, size_t errlen);
/* The bound address (port 0 becomes the real port). */
int sh_listener_address(sh_listener *l, struct sockaddr_storage *ss, socklen_t *len);
/* Start accepting on the listeners that took a socket from a reload while
** sh_inherit_holding(): they wait until the new generation serves. */
void sh_listener_release_held(void);
/* Stop listening and close the socket. Safe from inside the callback. */
void sh_listener_free(sh_listener *l);
/* How many times accepting paused after an error (out of descriptors), in
** all the process's listeners. */
unsigned long sh_net_backoffs(void);
/* The listener no longer keeps the loop running (the admin console's). */
void sh_listener_weak(sh_listener *l);

/* ---------------- Connector ---------------- */

typedef struct sh_connect sh_connect;

/* The outcome: a connected non-blocking 'fd' (now the callee's) and err
** NULL, or fd -1 and a short text: "connection refused", "cannot resolve
** 'host': name not found", ... The request is freed before the call. */
typedef void (*sh_connect_fn)(int fd, const char *err, void *ctx);

/* Connect to 'a'. A host name is resolved first with 'r', and each of its
** addresses is tried in turn until one answers (sh_try_start). Returns NULL
** only when out of memory; every other outcome comes through 'cb'. */
sh_connect *sh_connect_start(sh_loop *loop, sh_resolver *r, const sh_addr *a,
                             sh_connect_fn cb, void *ctx);
/* Give up: close the socket, free the request, never call back. */
void sh_connect_cancel(sh_connect *c);

#endif
