/* sh_net.c -- listeners on evconnlistener, non-blocking connects; see
** sh_net.h. */
#include "sh_net.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sh_util.h"

#define ACCEPT_BACKOFF 0.1   /* seconds to pause accepting after EMFILE etc. */

static void set_nodelay (int fd, int family) {
  int one = 1;
  if (family == AF_INET || family == AF_INET6)
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ====================== Listener ====================== */

struct sh_listener {
  sh_loop *loop;
  struct evconnlistener *lev;
  struct event *backoff;      /* re-enables accepting after an error */
  int family;
  sh_accept_fn cb;
  void *ctx;
};

static void on_accept (struct evconnlistener *lev, evutil_socket_t fd,
                       struct sockaddr *sa, int len, void *arg) {
  sh_listener *l = arg;
  (void)lev;
  set_nodelay(fd, l->family);
  l->cb(fd, sa, (socklen_t)len, l->ctx);
}

static void on_backoff (evutil_socket_t fd, short what, void *arg) {
  sh_listener *l = arg;
  (void)fd; (void)what;
  evconnlistener_enable(l->lev);
}

/* Accept failed (out of descriptors, say): pause instead of spinning. */
static void on_accept_error (struct evconnlistener *lev, void *arg) {
  sh_listener *l = arg;
  struct timeval tv = sh_timeval(ACCEPT_BACKOFF);
  int e = EVUTIL_SOCKET_ERROR();
  if (e == EINTR || e == ECONNABORTED || e == EAGAIN) return;
  evconnlistener_disable(lev);
  evtimer_add(l->backoff, &tv);
}

sh_listener *sh_listener_new (sh_loop *loop, const struct sockaddr *sa, socklen_t len,
                              int backlog, sh_accept_fn cb, void *ctx, int *err) {
  struct event_base *base = sh_loop_base(loop);
  sh_listener *l = calloc(1, sizeof *l);
  unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;
  if (l == NULL) { *err = ENOMEM; return NULL; }
  if (sa->sa_family != AF_UNIX) flags |= LEV_OPT_REUSEABLE;
  l->loop = loop;
  l->family = sa->sa_family;
  l->cb = cb;
  l->ctx = ctx;
  l->backoff = evtimer_new(base, on_backoff, l);
  errno = 0;
  if (l->backoff != NULL)
    l->lev = evconnlistener_new_bind(base, on_accept, l, flags, backlog, sa, (int)len);
  if (l->lev == NULL) {
    *err = errno != 0 ? errno : ENOMEM;
    if (l->backoff) event_free(l->backoff);
    free(l);
    return NULL;
  }
  evconnlistener_set_error_cb(l->lev, on_accept_error);
  sh_loop_ref(loop);
  return l;
}

int sh_listener_address (sh_listener *l, struct sockaddr_storage *ss, socklen_t *len) {
  *len = sizeof *ss;
  return getsockname(evconnlistener_get_fd(l->lev), (struct sockaddr *)ss, len);
}

void sh_listener_free (sh_listener *l) {
  evconnlistener_free(l->lev);
  event_free(l->backoff);
  sh_loop_unref(l->loop);
  free(l);
}

/* ====================== Connector ====================== */

struct sh_connect {
  struct event *ev;    /* writable: the connect finished */
  int fd;
  int family;
  sh_connect_fn cb;
  void *ctx;
};

static void on_connected (evutil_socket_t fd, short what, void *arg) {
  sh_connect *c = arg;
  sh_connect_fn cb = c->cb;
  void *ctx = c->ctx;
  int err = 0;
  socklen_t len = sizeof err;
  (void)what;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  event_free(c->ev);
  free(c);
  if (err != 0) { close(fd); cb(-1, err, ctx); return; }
  cb(fd, 0, ctx);
}

sh_connect *sh_connect_start (sh_loop *loop, const struct sockaddr *sa, socklen_t len,
                              sh_connect_fn cb, void *ctx, int *err) {
  sh_connect *c;
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int r;
  if (fd < 0) { *err = errno; return NULL; }
  set_nodelay(fd, sa->sa_family);
  do r = connect(fd, sa, len); while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EINPROGRESS && errno != EAGAIN) {
    *err = errno;
    close(fd);
    return NULL;
  }
  c = calloc(1, sizeof *c);
  if (c != NULL) c->ev = event_new(sh_loop_base(loop), fd, EV_WRITE, on_connected, c);
  if (c == NULL || c->ev == NULL || event_add(c->ev, NULL) != 0) {
    if (c && c->ev) event_free(c->ev);
    free(c);
    close(fd);
    *err = ENOMEM;
    return NULL;
  }
  c->fd = fd;
  c->cb = cb;
  c->ctx = ctx;
  return c;
}

void sh_connect_cancel (sh_connect *c) {
  event_free(c->ev);
  close(c->fd);
  free(c);
}
