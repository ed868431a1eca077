/* sh_net.h -- listening and connecting stream sockets (TCP and Unix).
** Knows nothing about Lua; see bindings/l_listener.c and bindings/l_conn.c.
**
** As with streams, callbacks come only from the event loop. */
#ifndef SH_NET_H
#define SH_NET_H

#include <stddef.h>
#include <sys/socket.h>

#include "sh_loop.h"

/* ---------------- Listener ---------------- */

typedef struct sh_listener sh_listener;

/* A new connection: 'fd' is non-blocking and now belongs to the callee. */
typedef void (*sh_accept_fn)(int fd, const struct sockaddr *peer, socklen_t len,
                             void *ctx);

/* Bind and listen. Returns NULL on failure with *err set to an errno value.
** The listener holds a loop reference until freed. */
sh_listener *sh_listener_new(sh_loop *loop, const struct sockaddr *sa, socklen_t len,
                             int backlog, sh_accept_fn cb, void *ctx, int *err);
/* The bound address (port 0 becomes the real port). */
int sh_listener_address(sh_listener *l, struct sockaddr_storage *ss, socklen_t *len);
/* Stop listening and close the socket. Safe from inside the callback. */
void sh_listener_free(sh_listener *l);

/* ---------------- Connector ---------------- */

typedef struct sh_connect sh_connect;

/* The outcome: a connected non-blocking 'fd' (now the callee's) and err 0,
** or fd -1 and an errno value. The request is freed before the call. */
typedef void (*sh_connect_fn)(int fd, int err, void *ctx);

/* Start connecting. Returns NULL with *err set when it fails at once. */
sh_connect *sh_connect_start(sh_loop *loop, const struct sockaddr *sa, socklen_t len,
                             sh_connect_fn cb, void *ctx, int *err);
/* Give up: close the socket, free the request, never call back. */
void sh_connect_cancel(sh_connect *c);

#endif
