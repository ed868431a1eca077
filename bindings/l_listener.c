/* l_listener.c -- the "sockhost.listener" object and sockhost.listen():
** accept stream connections and run the handler in a task per connection.
**
** An open listener is anchored in the registry, so a script need not keep
** it: `sockhost.listen(addr, handler)` serves until closed or stopped.
**
** tls:// listeners run the TLS handshake first; only a connection whose
** handshake succeeds gets a conn and a handler task. A failure is logged
** (info) with the peer and the reason, and the socket closed.
**
** Listeners with proxy_protocol read a PROXY header (v1 or v2, core/sh_proxy)
** off each connection before anything else, within proxy_timeout: a
** connection whose header is bad, cut short or late is closed without a
** handler (logged at info, at most PROXY_LOG_LINES lines a second, and
** counted: listener:proxy_refused()). On tls:// the header comes before the
** handshake. The conn keeps what the header said (shl_conn_setproxy). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "../core/sh_log.h"
#include "../core/sh_net.h"
#include "../core/sh_proxy.h"
#include "../core/sh_stream.h"
#include "../core/sh_tls.h"
#include "../core/sh_util.h"
#include "shl.h"

#define DEFAULT_BACKLOG 511
#define BUSY_LINGER 2.0     /* seconds a refused connection may take to get busy_message */
#define PROXY_TIMEOUT 5.0   /* default seconds a PROXY header may take */
#define PROXY_LOG_LINES 10  /* refusals for a PROXY header logged a second, at most */

typedef struct llistener {
  sh_listener *l;         /* NULL once closed */
  shl_host *H;
  int self_ref;           /* anchors the userdata while open */
  int handler_ref;        /* the handler function */
  sh_scheme scheme;
  double timeout;         /* given to each connection; < 0: none */
  double max_line;        /* given to each connection */
  double idle;            /* given to each connection: idle limit, 0: none */
  double line;            /* ... deadline to finish a line, 0: none */
  int max_conns;          /* open connections allowed at once */
  shl_counter *counter;   /* open connections, shared with them */
  int busy_ref;           /* message for those refused at the limit, or LUA_NOREF */
  double refused_at;      /* last time a refusal was logged */
  int refused;            /* refusals since */
  sh_tls_ctx *tls;        /* tls:// listeners: the context, else NULL */
  double hs_timeout;      /* seconds a handshake may take */
  int proxy;              /* a PROXY header comes first */
  double proxy_timeout;   /* ... within this many seconds */
  unsigned long proxy_refused_closed;   /* the count, kept at close */
  unsigned long long accepted;   /* connections accepted (sockhost.stats) */
  unsigned long long refusals;   /* ... refused at max_conns */
  struct llistener *prev, *next; /* in H->listeners while open */
} llistener;

/* The open listeners, for sockhost.stats. */
static void list_add (llistener *ll) {
  ll->prev = NULL;
  ll->next = ll->H->listeners;
  if (ll->next != NULL) ll->next->prev = ll;
  ll->H->listeners = ll;
}

static void list_remove (llistener *ll) {
  if (ll->prev != NULL) ll->prev->next = ll->next;
  else if (ll->H->listeners == ll) ll->H->listeners = ll->next;
  else return;
  if (ll->next != NULL) ll->next->prev = ll->prev;
  ll->prev = ll->next = NULL;
}

static llistener *checklistener (lua_State *L, int arg) {
  return (llistener *)luaL_checkudata(L, arg, LISTENER_MT);
}

static void on_refused (sh_stream *s, int what, void *ctx) {
  (void)s; (void)what; (void)ctx;           /* closed at once: never called */
}

/* At the limit: say so (never blocking; not to a balancer, whose client would
** take it for the service's answer) and close. What the kernel does not
** take at once goes to a closing stream, which flushes it for BUSY_LINGER
** seconds at most. The log gets one line a second at most, with the count. */
static void refuse (llistener *ll, int fd) {
  lua_State *L = ll->H->L;
  double now = sh_now();
  sh_stream *s = NULL;
  if (ll->busy_ref != LUA_NOREF && !ll->proxy) {
    size_t len;
    const char *msg;
    ssize_t sent;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ll->busy_ref);
    msg = lua_tolstring(L, -1, &len);
    sent = send(fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) sent = 0;
    if (sent >= 0 && (size_t)sent < len &&
        (s = sh_stream_new(ll->H->loop, fd, on_refused, NULL)) != NULL) {
      struct iovec iov;
      iov.iov_base = (char *)msg + sent;
      iov.iov_len = len - (size_t)sent;
      if (sh_stream_write(s, &iov, 1, iov.iov_len) < 0) { /* failed: the close below drops it */ }
      sh_stream_close(s, BUSY_LINGER);      /* the stream owns fd now */
    }
    lua_pop(L, 1);
  }
  if (s == NULL) close(fd);
  ll->refused++;
  ll->refusals++;
  ll->H->counts.refused++;
  if (now - ll->refused_at >= 1.0) {
    sh_log(SH_LOG_WARN, "listener: at its limit of %d connections, refused %d",
           ll->max_conns, ll->refused);
    ll->refused_at = now;
    ll->refused = 0;
  }
}

/* What an accepted connection gets from its listener. */
typedef struct conn_conf {
  double timeout, max_line, idle, line;
  shl_counter *counter;
} conn_conf;

/* The conn at the top of L, with its handler below it: set it up and run
** the handler in a task of its own. */
static void start_handler (shl_host *H, lconn *lc, const conn_conf *cc) {
  lua_State *L = H->L;
  shl_task *t;
  shl_conn_settimeout(lc, cc->timeout);
  shl_conn_setmaxline(lc, (size_t)cc->max_line);
  shl_conn_setlimits(lc, cc->idle, cc->line);
  shl_conn_count(lc, cc->counter);
  t = shl_task_new(H->sched, L, 1, lua_gettop(L), 0);   /* handler(conn); owner: conn */
  shl_conn_settask(lc, t);
  t->on_exit = shl_conn_handler_exit;
  t->exit_ctx = lc;
  shl_resume(t, 1);
}

/* ---------------- tls:// : the handshake comes first ---------------- */

typedef struct tls_accept {
  shl_pending node;       /* on the list of handshakes no task owns */
  shl_host *H;
  sh_tls_hs *hs;
  int handler_ref;        /* the listener's handler (its own reference) */
  conn_conf cc;           /* counts the connection while it shakes hands */
  char peer[160];         /* for the log */
  struct sockaddr_storage sa;   /* ... and for the conn (shl_conn_setpeer) */
  socklen_t salen;
  sh_proxy_info *proxy;   /* what a PROXY header said, or NULL */
} tls_accept;

static void tls_accept_free (tls_accept *x) {
  shl_pending_remove(&x->node);
  luaL_unref(x->H->L, LUA_REGISTRYINDEX, x->handler_ref);
  x->cc.counter->live--;
  shl_counter_release(x->cc.counter);
  free(x->proxy);
  free(x);
}

static void tls_accept_cancel (shl_pending *p) {
  tls_accept *x = (tls_accept *)p;
  if (x->hs != NULL) sh_tls_cancel(x->hs);
  x->hs = NULL;
  tls_accept_free(x);
}

static void on_tls_accepted (sh_stream *s, const char *err, void *ctx) {
  tls_accept *x = ctx;
  shl_host *H = x->H;
  lua_State *L = H->L;
  conn_conf cc = x->cc;
  struct sockaddr_storage sa = x->sa;
  socklen_t salen = x->salen;
  sh_proxy_info *proxy;
  lconn *lc;
  x->hs = NULL;
  if (s == NULL) {
    sh_log(SH_LOG_INFO, "tls: handshake with %s failed: %s", x->peer, err);
    tls_accept_free(x);
    return;
  }
  if (H->draining || !lua_checkstack(L, 8)) {
    sh_stream_abort(s);
    tls_accept_free(x);
    return;
  }
  cc.counter->refs++;                    /* kept across the free below */
  proxy = x->proxy;                      /* ... and so is this */
  x->proxy = NULL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, x->handler_ref);
  tls_accept_free(x);
  lc = shl_conn_new_stream(L, H, s);
  if (lc == NULL) {
    lua_pop(L, 1);
    sh_log(SH_LOG_WARN, "listener: cannot set up a connection (out of memory)");
  } else {
    shl_conn_setpeer(lc, (struct sockaddr *)&sa, salen);
    if (proxy != NULL) shl_conn_setproxy(lc, proxy);
    start_handler(H, lc, &cc);
  }
  free(proxy);
  shl_counter_release(cc.counter);
}

/* A TLS handshake on accepted 'fd' from 'peer', for a handler ('handler_ref',
** the caller's reference) with 'cc'; 'proxy': what a PROXY header said, or
** NULL. */
static void tls_accept_start (shl_host *H, int fd, const struct sockaddr *peer, socklen_t len,
                              const conn_conf *cc, int handler_ref, sh_tls_ctx *tls,
                              double hs_timeout, const sh_proxy_info *proxy) {
  tls_accept *x = calloc(1, sizeof *x);
  if (x == NULL) { close(fd); return; }
  if (proxy != NULL && (x->proxy = sh_proxy_copy(proxy)) == NULL) {
    free(x);
    close(fd);
    return;
  }
  x->H = H;
  x->cc = *cc;
  cc->counter->live++;
  cc->counter->refs++;
  if (proxy != NULL && proxy->has_addr)            /* the log names the client */
    sh_addr_format((const struct sockaddr *)&proxy->src, proxy->srclen,
                   proxy->src.ss_family == AF_UNIX ? SH_UNIX : SH_TLS, x->peer, sizeof x->peer);
  else
    sh_addr_format(peer, len, SH_TLS, x->peer, sizeof x->peer);
  if (len <= (socklen_t)sizeof x->sa) {
    memcpy(&x->sa, peer, len);
    x->salen = len;
  }
  lua_rawgeti(H->L, LUA_REGISTRYINDEX, handler_ref);
  x->handler_ref = luaL_ref(H->L, LUA_REGISTRYINDEX);
  shl_pending_add(H->L, &x->node);
  x->node.cancel = tls_accept_cancel;
  x->hs = sh_tls_start(H->loop, tls, fd, NULL, hs_timeout, on_tls_accepted, x);
  if (x->hs == NULL) {
    sh_log(SH_LOG_WARN, "listener: cannot start a TLS handshake (out of memory)");
    tls_accept_free(x);
  }
}

/* A plain connection (the handler's function on top of L, popped): make its
** conn and its task, and start the handler. */
static void plain_accept (shl_host *H, int fd, const struct sockaddr *peer, socklen_t len,
                          const conn_conf *cc, const sh_proxy_info *proxy) {
  lua_State *L = H->L;
  lconn *lc = shl_conn_new(L, H, fd);
  if (lc == NULL) {
    lua_pop(L, 1);
    sh_log(SH_LOG_WARN, "listener: cannot set up a connection (out of memory)");
    return;
  }
  shl_conn_setpeer(lc, peer, len);
  if (proxy != NULL) shl_conn_setproxy(lc, proxy);
  start_handler(H, lc, cc);
}

/* ---------------- proxy_protocol: the PROXY header comes first ---------------- */

typedef struct proxy_accept {
  shl_pending node;       /* on the list of work no task owns */
  shl_host *H;
  sh_proxy_rd *rd;
  int handler_ref;        /* the listener's handler (its own reference) */
  conn_conf cc;           /* counts the connection while its header comes */
  sh_tls_ctx *tls;        /* tls:// listeners: a reference, else NULL */
  double hs_timeout;
  char peer[160];         /* for the log */
  struct sockaddr_storage sa;   /* the balancer's end (shl_conn_setpeer) */
  socklen_t salen;
} proxy_accept;

static void proxy_accept_free (proxy_accept *x) {
  shl_pending_remove(&x->node);
  luaL_unref(x->H->L, LUA_REGISTRYINDEX, x->handler_ref);
  x->cc.counter->live--;
  shl_counter_release(x->cc.counter);
  sh_tls_ctx_free(x->tls);
  free(x);
}

static void proxy_accept_cancel (shl_pending *p) {
  proxy_accept *x = (proxy_accept *)p;
  if (x->rd != NULL) sh_proxy_cancel(x->rd);
  x->rd = NULL;
  proxy_accept_free(x);
}

/* Log a refusal: PROXY_LOG_LINES lines a second at most, then one line with
** how many more there were. Counted in any case. */
static void proxy_refused (shl_counter *c, const char *peer, const char *why) {
  double now = sh_now();
  c->proxy_refused++;
  if (now - c->proxy_log_at >= 1.0) {
    if (c->proxy_unlogged > 0)
      sh_log(SH_LOG_INFO, "listener: %d more connections refused for their PROXY header",
             c->proxy_unlogged);
    c->proxy_log_at = now;
    c->proxy_logged = c->proxy_unlogged = 0;
  }
  if (c->proxy_logged >= PROXY_LOG_LINES) { c->proxy_unlogged++; return; }
  c->proxy_logged++;
  sh_log(SH_LOG_INFO, "listener: %s refused: %s", peer, why);
}

/* The header was read (fd >= 0, info), or the connection refused (err). */
static void on_proxy (int fd, const sh_proxy_info *info, const char *err, void *ctx) {
  proxy_accept *x = ctx;
  shl_host *H = x->H;
  lua_State *L = H->L;
  conn_conf cc = x->cc;
  x->rd = NULL;                          /* it frees itself after this call */
  if (fd < 0) {
    proxy_refused(cc.counter, x->peer, err);
    proxy_accept_free(x);
    return;
  }
  if (H->draining || !lua_checkstack(L, 8)) {
    close(fd);
    proxy_accept_free(x);
    return;
  }
  cc.counter->refs++;                    /* kept across the free below */
  if (x->tls != NULL) {
    tls_accept_start(H, fd, (struct sockaddr *)&x->sa, x->salen, &cc, x->handler_ref, x->tls,
                     x->hs_timeout, info);
    proxy_accept_free(x);
  } else {
    struct sockaddr_storage sa = x->sa;
    socklen_t salen = x->salen;
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->handler_ref);
    proxy_accept_free(x);
    plain_accept(H, fd, (struct sockaddr *)&sa, salen, &cc, info);
  }
  shl_counter_release(cc.counter);
}

static void proxy_accept_start (llistener *ll, int fd, const struct sockaddr *peer, socklen_t len,
                                const conn_conf *cc) {
  shl_host *H = ll->H;
  proxy_accept *x = calloc(1, sizeof *x);
  if (x == NULL) { close(fd); return; }
  x->H = H;
  x->cc = *cc;
  cc->counter->live++;
  cc->counter->refs++;
  x->tls = ll->tls != NULL ? sh_tls_ctx_ref(ll->tls) : NULL;
  x->hs_timeout = ll->hs_timeout;
  sh_addr_format(peer, len, ll->scheme, x->peer, sizeof x->peer);
  if (len <= (socklen_t)sizeof x->sa) {
    memcpy(&x->sa, peer, len);
    x->salen = len;
  }
  lua_rawgeti(H->L, LUA_REGISTRYINDEX, ll->handler_ref);
  x->handler_ref = luaL_ref(H->L, LUA_REGISTRYINDEX);
  shl_pending_add(H->L, &x->node);
  x->node.cancel = proxy_accept_cancel;
  x->rd = sh_proxy_start(H->loop, fd, ll->proxy_timeout, on_proxy, x);
  if (x->rd == NULL) {
    sh_log(SH_LOG_WARN, "listener: cannot read a PROXY header (out of memory)");
    close(fd);
    proxy_accept_free(x);
  }
}

/* A connection arrived: its PROXY header, its handshake, or at once its
** conn and handler. */
static void on_accept (int fd, const struct sockaddr *peer, socklen_t len, void *ctx) {
  llistener *ll = ctx;
  shl_host *H = ll->H;
  lua_State *L = H->L;
  conn_conf cc;
  if (ll->counter->live >= ll->max_conns) {
    if (ll->tls == NULL) { refuse(ll, fd); return; }
    close(fd);                           /* no plaintext busy_message on TLS */
    ll->refusals++;
    H->counts.refused++;
    return;
  }
  ll->accepted++;
  H->counts.accepted++;
  if (!lua_checkstack(L, 8)) { close(fd); return; }
  cc.timeout = ll->timeout;
  cc.max_line = ll->max_line;
  cc.idle = ll->idle;
  cc.line = ll->line;
  cc.counter = ll->counter;
  if (ll->proxy) { proxy_accept_start(ll, fd, peer, len, &cc); return; }
  if (ll->tls != NULL) {
    tls_accept_start(H, fd, peer, len, &cc, ll->handler_ref, ll->tls, ll->hs_timeout, NULL);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, ll->handler_ref);
  plain_accept(H, fd, peer, len, &cc, NULL);
}

static void close_internal (lua_State *L, llistener *ll) {
  if (ll->l != NULL && ll->self_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, ll->self_ref);
    shl_shutdown_register(L, -1, 0);
    lua_pop(L, 1);
  }
  list_remove(ll);
  if (ll->l != NULL) sh_listener_free(ll->l);   /* also removes our socket file */
  ll->l = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, ll->handler_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, ll->self_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, ll->busy_ref);
  ll->handler_ref = ll->self_ref = ll->busy_ref = LUA_NOREF;
  if (ll->counter != NULL) ll->proxy_refused_closed = ll->counter->proxy_refused;
  shl_counter_release(ll->counter);
  ll->counter = NULL;
  sh_tls_ctx_free(ll->tls);               /* handshakes running hold their own */
  ll->tls = NULL;
}

static const char *const listen_opts[] = {
  "backlog", "timeout", "max_line", "reuseport", "ipv6only", "mode",
  "idle_timeout", "line_timeout", "max_conns", "busy_message",
  "cert", "key", "ca", "verify", "alpn", "min_version", "certs", "handshake_timeout",
  "proxy_protocol", "proxy_timeout", NULL
};

/* opts.mode at 'arg': -1 when absent (the file is left as made), else a
** whole number 0..07777 (raises otherwise). */
static int sockmode (lua_State *L, int arg) {
  double m;
  if (lua_isnoneornil(L, arg)) return -1;
  if (lua_getfield(L, arg, "mode") == LUA_TNIL) { lua_pop(L, 1); return -1; }
  lua_pop(L, 1);
  m = shl_optfield(L, arg, "mode", -1);
  luaL_argcheck(L, m >= 0 && m <= 07777, arg, "mode out of range");
  luaL_argcheck(L, m == (double)(int)m, arg, "mode must be an integer");
  return (int)m;
}

/* Socket options from the options table at 'arg' (raises on bad values). */
void shl_sockopts (lua_State *L, int arg, sh_sockopts *o) {
  memset(o, 0, sizeof *o);
  o->backlog = (int)shl_optfield(L, arg, "backlog", DEFAULT_BACKLOG);
  luaL_argcheck(L, o->backlog >= 1 && o->backlog <= 65535, arg, "backlog out of range");
  o->mode = sockmode(L, arg);
  o->ipv6only = -1;
  o->reuseport = shl_gethost(L)->reuseport;
  if (!lua_isnoneornil(L, arg)) {
    if (lua_getfield(L, arg, "reuseport") != LUA_TNIL) o->reuseport = lua_toboolean(L, -1);
    if (lua_getfield(L, arg, "ipv6only") != LUA_TNIL) o->ipv6only = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
}

/* What the tries of listen_on need (shl_try_addrs). */
typedef struct listen_try {
  shl_tries tries;        /* first */
  llistener *ll;
  sh_sockopts o;
} listen_try;

/* One address (sh_try_fn): bind and listen there. */
static int try_listen (const struct sockaddr *sa, socklen_t len, void *ctx,
                       char *err, size_t errlen) {
  listen_try *x = ctx;
  llistener *ll = x->ll;
  ll->l = sh_listener_new(ll->H->loop, sa, len, &x->o, on_accept, ll, err, errlen);
  return ll->l != NULL ? SH_TRY_OK : SH_TRY_FAIL;
}

/* After the tries ('n' as shl_try_addrs returns it): the listener at
** 'self' serves, or nil, err is on top. */
static int listening (lua_State *L, llistener *ll, int self, int handler, int n) {
  if (n != 0) {
    close_internal(L, ll);
    return n;
  }
  lua_pushvalue(L, handler);
  ll->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, self);
  lua_pushvalue(L, -1);
  ll->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  shl_shutdown_register(L, -1, 1);
  list_add(ll);
  return 1;
}

/* The tries for a host name ended: the listener is at 4, the handler at 2. */
static int listen_k (lua_State *L, int status, lua_KContext ctx) {
  llistener *ll = checklistener(L, 4);
  int n = shl_tried(L);
  (void)status; (void)ctx;
  if (n == 0 && ll->H->draining) {        /* shutdown began meanwhile */
    close_internal(L, ll);
    return shl_pushfail(L, "shutting down");
  }
  return listening(L, ll, 4, 2, n);
}

/* opts.proxy_protocol at 'arg': 0 or 1 (raises on a non-boolean). */
static int proxy_protocol (lua_State *L, int arg) {
  int t, on;
  if (lua_isnoneornil(L, arg)) return 0;
  t = lua_getfield(L, arg, "proxy_protocol");
  on = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN) luaL_argerror(L, arg, "proxy_protocol must be a boolean");
  return on;
}

/* Bind and listen on 'a', on each of its addresses in turn until one works
** (a host name is resolved first); push the listener or nil, err. */
static int listen_on (lua_State *L, shl_host *H, const sh_addr *a, int opts, int handler) {
  double max_line, timeout;
  sh_sockopts o;
  llistener *ll;
  listen_try *x;
  int self, n;
  char err[300];
  if (H->draining) return shl_pushfail(L, "shutting down");
  shl_sockopts(L, opts, &o);
  timeout = shl_optfield(L, opts, "timeout", -1);
  max_line = shl_optfield(L, opts, "max_line", H->max_line);
  ll = (llistener *)lua_newuserdatauv(L, sizeof *ll, 0);
  memset(ll, 0, sizeof *ll);
  ll->H = H;
  ll->scheme = a->scheme;
  ll->timeout = timeout < 0 ? -1 : timeout;
  ll->max_line = max_line;
  ll->idle = shl_optfield(L, opts, "idle_timeout", H->idle_timeout);
  ll->line = shl_optfield(L, opts, "line_timeout", H->line_timeout);
  ll->max_conns = (int)shl_optfield(L, opts, "max_conns", H->max_conns);
  ll->proxy = proxy_protocol(L, opts);
  ll->proxy_timeout = shl_optfield(L, opts, "proxy_timeout", PROXY_TIMEOUT);
  ll->self_ref = ll->handler_ref = ll->busy_ref = LUA_NOREF;
  luaL_setmetatable(L, LISTENER_MT);
  ll->counter = calloc(1, sizeof *ll->counter);
  if (ll->counter == NULL) return luaL_error(L, "out of memory");
  ll->counter->refs = 1;
  if (a->scheme == SH_TLS) {
    const char *unused = NULL;
    ll->tls = shl_tls_ctx(L, opts, 1, &unused, &ll->hs_timeout, err, sizeof err);
    if (ll->tls == NULL) {
      close_internal(L, ll);
      return shl_pushfail(L, err);
    }
  }
  if (!lua_isnoneornil(L, opts) && lua_getfield(L, opts, "busy_message") != LUA_TNIL) {
    ll->busy_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  } else if (!lua_isnoneornil(L, opts)) {
    lua_pop(L, 1);
  }
  self = lua_gettop(L);
  x = (listen_try *)lua_newuserdatauv(L, sizeof *x, 0);
  memset(x, 0, sizeof *x);
  x->tries.op = try_listen;
  x->ll = ll;
  x->o = o;
  n = shl_try_addrs(L, a, SOCK_STREAM, &x->tries, 0, listen_k);
  return listening(L, ll, self, handler, n);
}

/* sockhost.listen(addr, handler [, opts]) -> listener, or nil, err. */
int shl_listen (lua_State *L) {
  shl_host *H = shl_gethost(L);
  size_t textlen;
  const char *text = luaL_checklstring(L, 1, &textlen);
  sh_sockopts o;
  sh_addr a;
  char err[300];
  luaL_checktype(L, 2, LUA_TFUNCTION);
  shl_checkoptions(L, 3, listen_opts);
  shl_sockopts(L, 3, &o);                  /* check them before anything happens */
  shl_optfield(L, 3, "timeout", -1);
  luaL_argcheck(L, shl_optfield(L, 3, "max_line", 1) >= 1, 3, "max_line must be positive");
  luaL_argcheck(L, shl_optfield(L, 3, "max_conns", 1) >= 1, 3, "max_conns must be positive");
  luaL_argcheck(L, shl_optfield(L, 3, "idle_timeout", 0) >= 0, 3, "idle_timeout must be >= 0");
  luaL_argcheck(L, shl_optfield(L, 3, "line_timeout", 0) >= 0, 3, "line_timeout must be >= 0");
  luaL_argcheck(L, shl_optfield(L, 3, "proxy_timeout", 1) > 0, 3, "proxy_timeout must be > 0");
  if (!proxy_protocol(L, 3) && !lua_isnoneornil(L, 3) &&
      lua_getfield(L, 3, "proxy_timeout") != LUA_TNIL)
    return luaL_argerror(L, 3, "proxy_timeout needs proxy_protocol");
  if (sh_addr_parse(text, textlen, &a, err, sizeof err) != 0) return luaL_argerror(L, 1, err);
  if (!sh_addr_is_stream(a.scheme))
    return luaL_argerror(L, 1, "stream address expected (tcp://host:port or unix:/path)");
  if (o.mode >= 0 && !sh_addr_has_file(&a))
    return luaL_argerror(L, 3, "mode applies only to a Unix socket file (unix:/path)");
  if (a.scheme != SH_TLS && shl_tls_has_options(L, 3))
    return luaL_argerror(L, 3, "TLS options need a tls:// address");
  lua_settop(L, 3);
  if (!lua_isnil(L, 3) && lua_getfield(L, 3, "busy_message") != LUA_TNIL && !lua_isstring(L, -1))
    return luaL_argerror(L, 3, "busy_message must be a string");
  lua_settop(L, 3);
  if (!a.resolved) shl_checktask(L, "sockhost.listen() on a host name");
  return listen_on(L, H, &a, 3, 2);
}

/* listener:address() -> "tcp://127.0.0.1:40213" (the real port for port 0). */
static int listener_address (lua_State *L) {
  llistener *ll = checklistener(L, 1);
  struct sockaddr_storage ss;
  socklen_t len;
  char buf[160];
  if (ll->l == NULL) return shl_pushfail(L, "closed");
  memset(&ss, 0, sizeof ss);
  if (sh_listener_address(ll->l, &ss, &len) != 0) return shl_pushfail(L, "closed");
  sh_addr_format((struct sockaddr *)&ss, len, ll->scheme, buf, sizeof buf);
  lua_pushstring(L, buf);
  return 1;
}

/* listener:close() -- stop accepting; open connections carry on. */
static int listener_close (lua_State *L) {
  close_internal(L, checklistener(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

static int listener_tostring (lua_State *L) {
  llistener *ll = checklistener(L, 1);
  if (ll->l == NULL || listener_address(L) != 1) lua_pushliteral(L, "sockhost.listener (closed)");
  else lua_pushfstring(L, "sockhost.listener %s", lua_tostring(L, -1));
  return 1;
}

/* listener:proxy_refused() -> n: connections refused for their PROXY
** header since the listener opened (also once closed). */
static int listener_proxy_refused (lua_State *L) {
  llistener *ll = checklistener(L, 1);
  lua_pushinteger(L, ll->counter != NULL ? (lua_Integer)ll->counter->proxy_refused
                                         : (lua_Integer)ll->proxy_refused_closed);
  return 1;
}

void shl_listener_weak (lua_State *L, int idx) {
  llistener *ll = checklistener(L, idx);
  if (ll->l != NULL) sh_listener_weak(ll->l);
}

void shl_listener_stats (lua_State *L, shl_host *H) {
  llistener *ll;
  luaL_checkstack(L, 4, NULL);
  lua_newtable(L);
  for (ll = H->listeners; ll != NULL; ll = ll->next) {
    struct sockaddr_storage ss;
    socklen_t len;
    char buf[160];
    memset(&ss, 0, sizeof ss);
    if (ll->l == NULL || sh_listener_address(ll->l, &ss, &len) != 0) continue;
    sh_addr_format((struct sockaddr *)&ss, len, ll->scheme, buf, sizeof buf);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, ll->counter != NULL ? ll->counter->live : 0);
    lua_setfield(L, -2, "open");
    lua_pushinteger(L, (lua_Integer)ll->accepted);
    lua_setfield(L, -2, "accepted");
    lua_pushinteger(L, (lua_Integer)ll->refusals);
    lua_setfield(L, -2, "refused");
    lua_setfield(L, -2, buf);
  }
}

static const luaL_Reg listener_methods[] = {
  {"address", listener_address}, {"close", listener_close},
  {"proxy_refused", listener_proxy_refused}, {NULL, NULL}
};

static const luaL_Reg listener_meta[] = {
  {"__index", NULL}, {"__gc", listener_close}, {"__close", listener_close},
  {"__tostring", listener_tostring}, {NULL, NULL}
};

void shl_listener_open (lua_State *L) {
  shl_newclass(L, LISTENER_MT, listener_meta, listener_methods);
}
