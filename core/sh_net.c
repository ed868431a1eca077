/* sh_net.c -- listeners on evconnlistener, non-blocking connects; see
** sh_net.h. */
#include "sh_net.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "sh_inherit.h"
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
  sh_sockfile file;           /* our socket file, if any */
  int weak;                   /* holds no reference on the loop */
  int held;                   /* waits for sh_listener_release_held */
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

static unsigned long backoffs;   /* pauses of accepting, in all */

/* Accept failed (out of descriptors, say): pause instead of spinning. */
static void on_accept_error (struct evconnlistener *lev, void *arg) {
  sh_listener *l = arg;
  struct timeval tv = sh_timeval(ACCEPT_BACKOFF);
  int e = EVUTIL_SOCKET_ERROR();
  if (e == EINTR || e == ECONNABORTED || e == EAGAIN) return;
  evconnlistener_disable(lev);
  evtimer_add(l->backoff, &tv);
  backoffs++;
}

unsigned long sh_net_backoffs (void) { return backoffs; }

void sh_listener_weak (sh_listener *l) {
  if (l->weak) return;
  l->weak = 1;
  sh_loop_unref(l->loop);
}

/* Does a live socket hold the Unix socket file at 'sa'? Asked with a socket
** of the type 'fd' has, since that is the kind a stale file would be
** replaced for. Only "connection refused" (no socket bound to that file)
** or "no such file" means nobody: a connection, a full backlog, a socket of
** the other type (EPROTOTYPE), a refusal of permission all mean somebody.
** Returns 1 (live), 0 (stale), or -1 with errno when it cannot tell. */
static int unix_socket_live (int fd, const struct sockaddr *sa, socklen_t len) {
  int type, r, probe, e;
  socklen_t tlen = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0) return -1;
  probe = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) return -1;
  do r = connect(probe, sa, len); while (r < 0 && errno == EINTR);
  e = errno;
  close(probe);
  return r == 0 || (e != ECONNREFUSED && e != ENOENT);
}

/* Bind, replacing a stale Unix socket file left by a dead process, but
** never a file that is not a socket nor one that a live process holds. */
static int bind_socket (int fd, const struct sockaddr *sa, socklen_t len, const char *path,
                        char *err, size_t errlen) {
  struct stat st;
  int live;
  if (bind(fd, sa, len) == 0) return 0;
  if (errno != EADDRINUSE || path[0] == '\0') {
    snprintf(err, errlen, "%s", sh_strerror(errno));
    return -1;
  }
  if (lstat(path, &st) != 0) {
    snprintf(err, errlen, "%s", sh_strerror(EADDRINUSE));
    return -1;
  }
  if (!S_ISSOCK(st.st_mode)) {
    snprintf(err, errlen, "address in use: '%.200s' is not a socket", path);
    return -1;
  }
  if ((live = unix_socket_live(fd, sa, len)) != 0) {
    if (live > 0) snprintf(err, errlen, "address in use: a live process serves '%.200s'", path);
    else snprintf(err, errlen, "%s", sh_strerror(errno));
    return -1;
  }
  if ((unlink(path) != 0 && errno != ENOENT) || bind(fd, sa, len) != 0) {
    snprintf(err, errlen, "%s", sh_strerror(errno));
    return -1;
  }
  return 0;
}

int sh_socket_options (int fd, int family, const sh_sockopts *o, char *err, size_t errlen) {
  int one = 1;
  if (family == AF_INET || family == AF_INET6)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (o->reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    snprintf(err, errlen, "reuseport: %s", sh_strerror(errno));
    return -1;
  }
  if (family == AF_INET6 && o->ipv6only >= 0) {
    int v = o->ipv6only != 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof v) != 0) {
      snprintf(err, errlen, "ipv6only: %s", sh_strerror(errno));
      return -1;
    }
  }
  return 0;
}

void sh_sockfile_remove (sh_sockfile *f) {
  struct stat st;
  if (f->path[0] != '\0' && lstat(f->path, &st) == 0 && st.st_dev == f->dev &&
      st.st_ino == f->ino)
    unlink(f->path);                       /* still our socket file */
  f->path[0] = '\0';
}

/* The file of a Unix address with a path, into 'f' (path "" for others). */
static void sockfile_name (const struct sockaddr *sa, sh_sockfile *f) {
  const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
  memset(f, 0, sizeof *f);
  if (sa->sa_family == AF_UNIX && un->sun_path[0] != '\0')
    snprintf(f->path, sizeof f->path, "%.*s", (int)sizeof un->sun_path, un->sun_path);
}

void sh_sockfile_adopt (const struct sockaddr *sa, sh_sockfile *f) {
  struct stat st;
  sockfile_name(sa, f);
  if (f->path[0] == '\0') return;
  if (lstat(f->path, &st) != 0) { f->path[0] = '\0'; return; }
  f->dev = st.st_dev;
  f->ino = st.st_ino;
}

int sh_socket_bind (int fd, const struct sockaddr *sa, socklen_t len, const sh_sockopts *o,
                    sh_sockfile *f, char *err, size_t errlen) {
  struct stat st;
  sockfile_name(sa, f);
  if (bind_socket(fd, sa, len, f->path, err, errlen) != 0) {
    f->path[0] = '\0';
    return -1;
  }
  if (f->path[0] == '\0') return 0;
  if (lstat(f->path, &st) != 0) {          /* gone already: nothing to remove later */
    f->path[0] = '\0';
    return 0;
  }
  f->dev = st.st_dev;
  f->ino = st.st_ino;
  if (o->mode >= 0 && chmod(f->path, (mode_t)o->mode) != 0) {
    snprintf(err, errlen, "mode: %s", sh_strerror(errno));
    sh_sockfile_remove(f);
    return -1;
  }
  return 0;
}

/* The listeners waiting for sh_listener_release_held. */
static sh_listener *held[SH_INHERIT_MAX];
static int nheld;

static void hold (sh_listener *l) {
  if (nheld < SH_INHERIT_MAX) held[nheld++] = l;
  else evconnlistener_enable(l->lev);        /* cannot wait: accept now */
}

static void unhold (sh_listener *l) {
  int i;
  for (i = 0; i < nheld; i++)
    if (held[i] == l) { held[i] = held[--nheld]; return; }
}

void sh_listener_release_held (void) {
  while (nheld > 0) {
    sh_listener *l = held[--nheld];
    l->held = 0;
    evconnlistener_enable(l->lev);
  }
}

sh_listener *sh_listener_new (sh_loop *loop, const struct sockaddr *sa, socklen_t len,
                              const sh_sockopts *o, sh_accept_fn cb, void *ctx,
                              char *err, size_t errlen) {
  struct event_base *base = sh_loop_base(loop);
  sh_listener *l = calloc(1, sizeof *l);
  int fd = -1;
  if (l == NULL) { snprintf(err, errlen, "out of memory"); return NULL; }
  l->loop = loop;
  l->family = sa->sa_family;
  l->cb = cb;
  l->ctx = ctx;
  if ((fd = sh_inherit_take(sa, len, SOCK_STREAM)) >= 0) {
    sh_sockfile_adopt(sa, &l->file);         /* already bound and listening */
    l->held = sh_inherit_holding();
  } else {
    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { snprintf(err, errlen, "%s", sh_strerror(errno)); goto fail; }
    if (sh_socket_options(fd, sa->sa_family, o, err, errlen) != 0) goto fail;
    if (sh_socket_bind(fd, sa, len, o, &l->file, err, errlen) != 0) goto fail;
    if (listen(fd, o->backlog > 0 ? o->backlog : 511) != 0) {
      snprintf(err, errlen, "%s", sh_strerror(errno));
      goto fail;
    }
  }
  l->backoff = evtimer_new(base, on_backoff, l);
  if (l->backoff != NULL)
    l->lev = evconnlistener_new(base, on_accept, l,
                                LEV_OPT_CLOSE_ON_FREE | (l->held ? LEV_OPT_DISABLED : 0), 0, fd);
  if (l->lev == NULL) { snprintf(err, errlen, "out of memory"); goto fail; }
  evconnlistener_set_error_cb(l->lev, on_accept_error);
  if (l->held) hold(l);
  sh_inherit_track(fd);
  sh_loop_ref(loop);
  return l;
fail:
  if (fd >= 0) close(fd);
  sh_sockfile_remove(&l->file);
  if (l->backoff) event_free(l->backoff);
  free(l);
  return NULL;
}

int sh_listener_address (sh_listener *l, struct sockaddr_storage *ss, socklen_t *len) {
  *len = sizeof *ss;
  return getsockname(evconnlistener_get_fd(l->lev), (struct sockaddr *)ss, len);
}

void sh_listener_free (sh_listener *l) {
  unhold(l);
  sh_inherit_untrack(evconnlistener_get_fd(l->lev));
  evconnlistener_free(l->lev);
  event_free(l->backoff);
  if (!sh_inherit_handed_over()) sh_sockfile_remove(&l->file);   /* else the next one's */
  if (!l->weak) sh_loop_unref(l->loop);
  free(l);
}

/* ====================== Connector ====================== */

struct sh_connect {
  sh_loop *loop;
  struct event *ev;      /* writable: the attempt in flight finished */
  struct event *done;    /* reports a failure from the loop */
  sh_try *tries;         /* the addresses being tried, or NULL */
  int fd;                /* socket of the attempt in flight, or -1 */
  sh_connect_fn cb;
  void *ctx;
  char err[320];         /* the failure text */
};

static void connect_free (sh_connect *c) {
  if (c->ev) event_free(c->ev);
  if (c->done) event_free(c->done);
  if (c->fd >= 0) close(c->fd);
  if (c->tries) sh_try_cancel(c->tries);
  free(c);
}

/* Deliver the outcome and free the request. */
static void report (sh_connect *c, int fd) {
  sh_connect_fn cb = c->cb;
  void *ctx = c->ctx;
  char err[sizeof c->err];
  memcpy(err, c->err, sizeof err);
  c->fd = -1;
  connect_free(c);
  cb(fd, fd >= 0 ? NULL : err, ctx);
}

static void on_done (evutil_socket_t fd, short what, void *arg) {
  (void)fd; (void)what;
  report(arg, -1);
}

static void on_connected (evutil_socket_t fd, short what, void *arg) {
  sh_connect *c = arg;
  int err = 0;
  socklen_t len = sizeof err;
  (void)what;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  event_free(c->ev);
  c->ev = NULL;
  if (err != 0) {
    close(c->fd);
    c->fd = -1;
  }
  sh_try_result(c->tries, err == 0 ? NULL : sh_strerror(err));   /* the next, or the end */
}

static int connect_failed (char *err, size_t errlen, int e) {
  snprintf(err, errlen, "%s", sh_strerror(e));
  return SH_TRY_FAIL;
}

/* One address (sh_try_fn): start connecting; the outcome comes to
** on_connected. */
static int try_connect (const struct sockaddr *sa, socklen_t len, void *ctx,
                        char *err, size_t errlen) {
  sh_connect *c = ctx;
  int r, e, fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return connect_failed(err, errlen, errno);
  set_nodelay(fd, sa->sa_family);
  do r = connect(fd, sa, len); while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EINPROGRESS) {     /* EAGAIN: a full Unix backlog */
    e = errno;
    close(fd);
    return connect_failed(err, errlen, e);
  }
  c->ev = event_new(sh_loop_base(c->loop), fd, EV_WRITE, on_connected, c);
  if (c->ev == NULL || event_add(c->ev, NULL) != 0) {
    if (c->ev) event_free(c->ev);
    c->ev = NULL;
    close(fd);
    return connect_failed(err, errlen, ENOMEM);
  }
  c->fd = fd;
  return SH_TRY_LATER;
}

/* The end of the tries: connected on c->fd, or failed. */
static void on_tried (const char *err, void *ctx) {
  sh_connect *c = ctx;
  c->tries = NULL;
  if (err != NULL) snprintf(c->err, sizeof c->err, "%s", err);
  report(c, err == NULL ? c->fd : -1);
}

sh_connect *sh_connect_start (sh_loop *loop, sh_resolver *r, const sh_addr *a,
                              sh_connect_fn cb, void *ctx) {
  sh_connect *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->loop = loop;
  c->fd = -1;
  c->cb = cb;
  c->ctx = ctx;
  c->done = event_new(sh_loop_base(loop), -1, 0, on_done, c);
  if (c->done == NULL) { free(c); return NULL; }
  if (sh_try_start(r, a, SOCK_STREAM, try_connect, on_tried, c, &c->tries, c->err,
                   sizeof c->err) == SH_TRY_FAIL)
    event_active(c->done, EV_TIMEOUT, 0);  /* never a call back from here */
  return c;
}

void sh_connect_cancel (sh_connect *c) {
  connect_free(c);
}
