/* l_udp.c -- the "sockhost.udp" object: datagram sockets, UDP (udp://) and
** Unix datagrams (unixgram:), and sockhost.udp().
**
** Two ways to receive: call recvfrom()/recv() from a task (one reader at a
** time, "busy" otherwise), or give sockhost.udp() a handler, which then runs
** in a task of its own for each datagram. Datagrams are whole; one cut to fit
** a smaller read size is reported as "truncated", never passed off as whole.
**
** A socket bound to a wildcard address remembers, for the last few peers,
** the local address their datagrams arrived on, and answers them from it. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <netinet/in.h>

#include "../core/sh_dgram.h"
#include "../core/sh_util.h"
#include "shl.h"

#define UDP_MT "sockhost.udp"
#define REPLY_SLOTS 16       /* peers whose arrival address is remembered */
#define HANDLER_BATCH 64     /* datagrams handled per wake-up */
#define FROM_SLOTS 64        /* senders whose address string is kept */

typedef struct lfrom {
  struct sockaddr_storage sa;   /* a sender ... */
  socklen_t len;
  int ref;                      /* ... and its address string (registry), or 0 */
  const char *text;             /* that string's bytes: while 'ref' anchors it, no
                                ** other string can have this address */
} lfrom;

/* Slot in the 'by_text' index for a string's address. */
#define TEXT_SLOT(p) ((unsigned)(((uintptr_t)(p) >> 4) % FROM_SLOTS))

typedef struct lreply {
  struct sockaddr_storage peer;
  socklen_t len;
  struct sockaddr_storage local;
} lreply;

typedef struct ludp {
  sh_dgram *d;           /* NULL when closed or not made yet (unbound client) */
  shl_host *H;
  shl_waitq readers;     /* the task parked in recvfrom()/recv() (one) */
  shl_waitq writers;     /* writers waiting for room in the kernel, in turn */
  int handler_ref;       /* handler mode: the function; the loop is held */
  int self_ref;          /* anchors the object while a handler is installed */
  double timeout;        /* seconds for each blocking call; < 0: none */
  double wdeadline;      /* when the head writer's wait ends; < 0: never */
  double wbackoff;       /* head writer at a Unix datagram peer: next retry in */
  size_t rmax;           /* reader: largest datagram it takes whole */
  int rfrom;             /* reader: recvfrom (1) or recv (0) */
  int closed;
  int connected;
  sh_scheme scheme;      /* SH_UDP or SH_UNIXGRAM */
  unsigned next_reply;   /* ring position in 'replies' */
  lreply replies[REPLY_SLOTS];
  lfrom *froms;          /* FROM_SLOTS cached 'from' strings, made on demand */
  unsigned char by_text[FROM_SLOTS];   /* string address -> slot in 'froms' + 1 */
  char cache_text[128];  /* the last destination string sendto() parsed ... */
  struct sockaddr_storage cache_sa;  /* ... and its address */
  socklen_t cache_salen;
} ludp;

static ludp *checkudp (lua_State *L, int arg) {
  return (ludp *)luaL_checkudata(L, arg, UDP_MT);
}

static void update_watch (ludp *u) {
  int w = 0;
  if (u->d == NULL) return;
  if (u->readers.head != NULL || u->handler_ref != LUA_NOREF) w |= SH_DGRAM_READ;
  /* A full Unix datagram peer does not make our socket unwritable: polling
  ** would spin, so those senders retry on a timer instead. */
  if (u->writers.head != NULL && sh_dgram_family(u->d) != AF_UNIX) w |= SH_DGRAM_WRITE;
  sh_dgram_watch(u->d, w);
}

/* ====================== Addresses ====================== */

/* Push the sender's address string. Formatting one costs more than the rest
** of a datagram's trip, and a socket mostly hears the same few peers, so the
** strings are kept in a small direct-mapped cache. */
static void push_from (lua_State *L, ludp *u, const sh_dgram_msg *m) {
  char buf[160];
  const unsigned char *p = (const unsigned char *)&m->from;
  unsigned h = 0;
  socklen_t i;
  lfrom *f;
  if (u->froms == NULL) u->froms = calloc(FROM_SLOTS, sizeof *u->froms);
  if (u->froms == NULL || m->fromlen > sizeof f->sa) {
    sh_addr_format((const struct sockaddr *)&m->from, m->fromlen, u->scheme, buf, sizeof buf);
    lua_pushstring(L, buf);
    return;
  }
  for (i = 0; i < m->fromlen; i++) h = h * 31 + p[i];
  f = &u->froms[h % FROM_SLOTS];
  if (f->ref > 0 && f->len == m->fromlen && memcmp(&f->sa, &m->from, m->fromlen) == 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, f->ref);
    return;
  }
  sh_addr_format((const struct sockaddr *)&m->from, m->fromlen, u->scheme, buf, sizeof buf);
  lua_pushstring(L, buf);
  if (f->ref > 0) luaL_unref(L, LUA_REGISTRYINDEX, f->ref);
  lua_pushvalue(L, -1);
  f->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  f->text = lua_tostring(L, -1);
  memcpy(&f->sa, &m->from, m->fromlen);
  f->len = m->fromlen;
  u->by_text[TEXT_SLOT(f->text)] = (unsigned char)(f - u->froms + 1);
}

/* sendto() back to a 'from' string we made: its address, without parsing. */
static int cached_destination (ludp *u, const char *text, sh_addr *a) {
  unsigned slot;
  lfrom *f;
  if (u->froms == NULL || (slot = u->by_text[TEXT_SLOT(text)]) == 0) return 0;
  f = &u->froms[slot - 1];
  if (f->ref <= 0 || f->text != text) return 0;
  memcpy(&a->sa, &f->sa, f->len);
  a->salen = f->len;
  a->resolved = 1;
  return 1;
}

static void free_froms (lua_State *L, ludp *u) {
  int i;
  if (u->froms == NULL) return;
  for (i = 0; i < FROM_SLOTS; i++)
    if (u->froms[i].ref > 0) luaL_unref(L, LUA_REGISTRYINDEX, u->froms[i].ref);
  free(u->froms);
  u->froms = NULL;
  memset(u->by_text, 0, sizeof u->by_text);
}

/* The peer as sendto() will see it: a v4-mapped IPv6 address as IPv4, since
** that is how 'from' strings write it. */
static socklen_t normal_peer (const struct sockaddr *sa, socklen_t len,
                              struct sockaddr_storage *out) {
  const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
  if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
    struct sockaddr_in *in4 = (struct sockaddr_in *)out;
    memset(in4, 0, sizeof *in4);
    in4->sin_family = AF_INET;
    in4->sin_port = in6->sin6_port;
    memcpy(&in4->sin_addr, &in6->sin6_addr.s6_addr[12], 4);
    return sizeof *in4;
  }
  memcpy(out, sa, len);
  return len;
}

static socklen_t peer_key (const sh_dgram_msg *m, struct sockaddr_storage *out) {
  return normal_peer((const struct sockaddr *)&m->from, m->fromlen, out);
}

static void remember_local (ludp *u, const sh_dgram_msg *m) {
  struct sockaddr_storage key;
  socklen_t klen;
  lreply *r;
  unsigned i;
  if (!m->has_local) return;
  klen = peer_key(m, &key);
  for (i = 0; i < REPLY_SLOTS; i++) {
    r = &u->replies[i];
    if (r->len == klen && memcmp(&r->peer, &key, klen) == 0) {
      r->local = m->local;
      return;
    }
  }
  r = &u->replies[u->next_reply++ % REPLY_SLOTS];
  memcpy(&r->peer, &key, klen);
  r->len = klen;
  r->local = m->local;
}

/* The local address to answer 'to' from, or NULL. */
static const struct sockaddr_storage *reply_source (ludp *u, const struct sockaddr *to,
                                                    socklen_t len) {
  struct sockaddr_storage key;
  unsigned i;
  if (u->next_reply == 0) return NULL;    /* not a wildcard socket */
  len = normal_peer(to, len, &key);
  for (i = 0; i < REPLY_SLOTS; i++) {
    lreply *r = &u->replies[i];
    if (r->len == len && memcmp(&r->peer, &key, len) == 0) return &r->local;
  }
  return NULL;
}

/* "bad address '<text>': not a datagram address" into 'err'; returns it. */
static const char *not_datagram (const char *text, size_t len, char *err, size_t errlen) {
  sh_addr_error(text, len, "not a datagram address", err, errlen);
  return err;
}

/* A destination refused: nil, err pushed; -1. */
static int bad_destination (lua_State *L, const char *err) {
  shl_pushfail(L, err);
  return -1;
}

/* Parse a destination (cached: a socket usually answers the same few).
** Returns 0 with 'a' resolved; 1 on a host name, 'a' unresolved; -1 on a
** bad or stream address, with nil, err pushed. */
static int destination (lua_State *L, ludp *u, int arg, sh_addr *a) {
  size_t len;
  const char *text = luaL_checklstring(L, arg, &len);
  char err[300];
  if (cached_destination(u, text, a)) return 0;
  if (len < sizeof u->cache_text && u->cache_salen > 0 && memcmp(text, u->cache_text, len + 1) == 0) {
    memcpy(&a->sa, &u->cache_sa, u->cache_salen);
    a->salen = u->cache_salen;
    a->resolved = 1;
    return 0;
  }
  if (sh_addr_parse(text, len, a, err, sizeof err) != 0) return bad_destination(L, err);
  if (sh_addr_is_stream(a->scheme))
    return bad_destination(L, not_datagram(text, len, err, sizeof err));
  if (!a->resolved) return 1;
  if (len < sizeof u->cache_text) {
    memcpy(u->cache_text, text, len + 1);
    memcpy(&u->cache_sa, &a->sa, a->salen);
    u->cache_salen = a->salen;
  }
  return 0;
}

/* ====================== Receiving ====================== */

/* Receive one datagram and push the reader's results; -1 (nothing pushed)
** if none is waiting. */
static int try_recv (lua_State *L, ludp *u) {
  sh_dgram_msg m;
  unsigned char *buf = u->H->dgram_buf;
  ssize_t n = sh_dgram_recv(u->d, buf, SH_DGRAM_MAX, &m);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
    return shl_pushfail(L, sh_strerror(errno));
  }
  remember_local(u, &m);
  if (m.truncated || (size_t)n > u->rmax) {      /* never a cut datagram as whole */
    luaL_pushfail(L);
    lua_pushliteral(L, "truncated");
    lua_pushlstring(L, (const char *)buf, (size_t)n < u->rmax ? (size_t)n : u->rmax);
    if (!u->rfrom) return 3;
    push_from(L, u, &m);
    return 4;
  }
  lua_pushlstring(L, (const char *)buf, (size_t)n);
  if (!u->rfrom) return 1;
  push_from(L, u, &m);
  return 2;
}

static int recv_timeout (void *obj, shl_task *t, int cancel) {
  ludp *u = obj;
  shl_waitq_remove(&u->readers, t);
  if (cancel) return 0;
  update_watch(u);
  return shl_pushfail(t->co, "timeout");
}

static int do_recv (lua_State *L, int from) {
  ludp *u = checkudp(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, SH_DGRAM_MAX);
  shl_task *t;
  int n;
  luaL_argcheck(L, max > 0, 2, "max must be positive");
  if (u->closed) return shl_pushfail(L, "closed");
  if (u->handler_ref != LUA_NOREF) return luaL_error(L, "this socket has a handler");
  if (u->d == NULL) return shl_pushfail(L, "not bound");
  if (u->readers.head != NULL) return shl_pushfail(L, "busy");
  u->rmax = (size_t)max;
  u->rfrom = from;
  lua_settop(L, 1);
  if ((n = try_recv(L, u)) >= 0) return n;
  t = shl_checktask(L, from ? "udp:recvfrom()" : "udp:recv()");
  shl_waitq_push(&u->readers, t);
  update_watch(u);
  return shl_wait(L, &u->readers, t, SHL_WAIT_RECV, u->timeout, recv_timeout, u, 0, NULL);
}

/* udp:recvfrom([max]) -> data, from; nil, "truncated", partial, from when
** the datagram was longer than max; nil, err. */
static int udp_recvfrom (lua_State *L) { return do_recv(L, 1); }
/* udp:recv([max]) -> data (for connected sockets; the sender is dropped). */
static int udp_recv (lua_State *L) { return do_recv(L, 0); }

/* Handler mode: a task per datagram, handler(sock, data, from). */
static void run_handlers (ludp *u) {
  shl_host *H = u->H;
  lua_State *L = H->L;
  sh_dgram *d = u->d;
  int i;
  for (i = 0; i < HANDLER_BATCH; i++) {
    sh_dgram_msg m;
    ssize_t n = sh_dgram_recv(d, H->dgram_buf, SH_DGRAM_MAX, &m);
    if (n < 0) return;
    remember_local(u, &m);
    if (!lua_checkstack(L, 6)) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->handler_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->self_ref);
    lua_pushlstring(L, (const char *)H->dgram_buf, (size_t)n);
    push_from(L, u, &m);
    shl_resume(shl_task_new(H->sched, L, 3, lua_gettop(L) - 2, 0), 3);
    if (sh_dgram_ctx(d) != u || u->handler_ref == LUA_NOREF) return;   /* closed */
  }
}

static void on_dgram (sh_dgram *d, int what, void *ctx) {
  ludp *u = ctx;
  if (what & SH_DGRAM_READ) {
    if (u->handler_ref != LUA_NOREF) {
      run_handlers(u);
    } else if (u->readers.head != NULL) {
      shl_task *t = u->readers.head;
      int n;
      lua_checkstack(t->co, 4);
      if ((n = try_recv(t->co, u)) >= 0) {
        shl_waitq_pop(&u->readers);
        update_watch(u);
        shl_unpark(t);
        shl_resume(t, n);
      }
    }
    if ((u = sh_dgram_ctx(d)) == NULL) return;   /* closed meanwhile */
  }
  if ((what & SH_DGRAM_WRITE) && u->writers.head != NULL &&
      u->writers.head->state == TASK_PARKED) {
    shl_task *t = u->writers.head;
    shl_unpark(t);
    shl_resume(t, 0);                   /* it retries its send */
  }
}

/* ====================== Sending ====================== */

static void new_head (ludp *u) {
  u->wdeadline = u->timeout >= 0 ? sh_now() + u->timeout : -1;
  u->wbackoff = 0.001;
}

static void writer_done (ludp *u, lua_State *L) {
  shl_task *t = u->writers.head;
  if (t == NULL || t->co != L) return;
  shl_waitq_pop(&u->writers);
  if (u->writers.head != NULL) new_head(u);
  shl_waitq_wake_head(&u->writers);      /* the next one's turn */
  update_watch(u);
}

/* The head writer's retry timer at a full Unix datagram peer: try again
** (nothing pushed; the send itself reports a timeout once it is due). */
static int send_retry (void *obj, shl_task *t, int cancel);

static int send_timeout (void *obj, shl_task *t, int cancel) {
  ludp *u = obj;
  if (shl_waitq_remove(&u->writers, t) == 1 && u->writers.head != NULL && !cancel) {
    new_head(u);
    shl_waitq_wake_head(&u->writers);
  }
  if (cancel) return 0;
  update_watch(u);
  return shl_pushfail(t->co, "timeout");
}

static int send_retry (void *obj, shl_task *t, int cancel) {
  if (cancel) return send_timeout(obj, t, 1);
  return 0;
}

/* Make the socket of an unbound client, for a destination of 'family'.
** Returns 0, or -1 with a message in 'err'. */
static int open_client (ludp *u, int family, char *err, size_t errlen) {
  sh_sockopts o;
  if (u->d != NULL) return 0;
  memset(&o, 0, sizeof o);
  o.ipv6only = -1;
  o.mode = -1;
  u->d = sh_dgram_open(u->H->loop, family == AF_INET ? AF_INET6 : family, NULL, 0, &o,
                       on_dgram, u, err, errlen);
  if (u->d == NULL && family == AF_INET)        /* no IPv6 here */
    u->d = sh_dgram_open(u->H->loop, AF_INET, NULL, 0, &o, on_dgram, u, err, errlen);
  if (u->d == NULL) return -1;
  u->scheme = family == AF_UNIX ? SH_UNIXGRAM : SH_UDP;
  return 0;
}

/* Where sendto_k goes on. */
enum {
  SEND_TO_ADDR = 1,     /* after EAGAIN: the packed sh_addr is in stack slot 4 */
  SEND_CONNECTED = 2,   /* after EAGAIN, on a connected socket */
  SEND_RESOLVED = 3     /* the destination's name was resolved */
};

/* The same, raising on failure. */
static int ensure_socket (lua_State *L, ludp *u, int family) {
  char err[300];
  if (open_client(u, family, err, sizeof err) != 0) return luaL_error(L, "udp: %s", err);
  return 0;
}

/* What the tries of udp(), udp:connect() and udp:sendto() on an address
** need (shl_try_addrs): a userdata on the stack. */
typedef struct udp_try {
  shl_tries tries;        /* first */
  ludp *u;
  sh_sockopts o;          /* udp(): for the bind */
  sh_addr to;             /* udp:sendto(): the address taken */
  int raise;              /* udp:connect(): the last try could make no socket */
} udp_try;

static udp_try *new_try (lua_State *L, ludp *u, sh_try_fn op) {
  udp_try *x = (udp_try *)lua_newuserdatauv(L, sizeof *x, 0);
  memset(x, 0, sizeof *x);
  x->tries.op = op;
  x->u = u;
  return x;
}

static int sendto_k (lua_State *L, int status, lua_KContext ctx);

/* Send the datagram at index 2 to 'a' (NULL: connected); park on EAGAIN. */
static int send_now (lua_State *L, ludp *u, const sh_addr *a) {
  size_t len;
  const char *data = lua_tolstring(L, 2, &len);
  const struct sockaddr *to = a != NULL ? (const struct sockaddr *)&a->sa : NULL;
  socklen_t tolen = a != NULL ? a->salen : 0;
  shl_task *t;
  ssize_t n;
  if (u->closed) return shl_pushfail(L, "closed");
  if (to != NULL) ensure_socket(L, u, to->sa_family);
  if (u->d == NULL) return shl_pushfail(L, "not connected");
  n = sh_dgram_send(u->d, data, len, to, tolen, to != NULL ? reply_source(u, to, tolen) : NULL);
  if (n >= 0) {
    writer_done(u, L);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
    int e = errno;
    writer_done(u, L);
    return shl_pushfail(L, e == EMSGSIZE ? "message too long" : sh_strerror(e));
  }
  t = shl_checktask(L, "udp:sendto()");
  if (a != NULL) {                        /* keep the address for the retry */
    lua_settop(L, 3);
    lua_pushlstring(L, (const char *)a, sizeof *a);
  }
  if (u->writers.head == NULL) {          /* first to wait: the head */
    shl_waitq_push(&u->writers, t);
    new_head(u);
  } else if (u->writers.head != t) {      /* others wait already: after them */
    return shl_wait(L, &u->writers, t, SHL_WAIT_SEND, u->timeout, send_timeout, u,
                    a != NULL ? SEND_TO_ADDR : SEND_CONNECTED, sendto_k);
  }
  {
    double now = sh_now(), left = u->wdeadline < 0 ? -1 : u->wdeadline - now;
    if (u->wdeadline >= 0 && left <= 0) {  /* the head's time is up */
      writer_done(u, L);
      return shl_pushfail(L, "timeout");
    }
    update_watch(u);
    if (sh_dgram_family(u->d) == AF_UNIX) {   /* retry on a timer, backing off */
      double wait = u->wbackoff;
      if (left >= 0 && left < wait) wait = left;
      u->wbackoff = u->wbackoff * 2 < 0.05 ? u->wbackoff * 2 : 0.05;
      return shl_wait(L, &u->writers, t, SHL_WAIT_SEND, wait, send_retry, u,
                      a != NULL ? SEND_TO_ADDR : SEND_CONNECTED, sendto_k);
    }
    return shl_wait(L, &u->writers, t, SHL_WAIT_SEND, left, send_timeout, u,
                    a != NULL ? SEND_TO_ADDR : SEND_CONNECTED, sendto_k);
  }
}

/* One address of a host name for udp:sendto() (sh_try_fn): the first is
** taken; the send comes after. */
static int take_address (const struct sockaddr *sa, socklen_t len, void *ctx,
                         char *err, size_t errlen) {
  udp_try *x = ctx;
  (void)err; (void)errlen;
  memcpy(&x->to.sa, sa, len);
  x->to.salen = len;
  x->to.resolved = 1;
  return SH_TRY_OK;
}

/* Send to the address 'x' (at 4) took. */
static int send_taken (lua_State *L, ludp *u, const udp_try *x) {
  sh_addr a = x->to;
  lua_settop(L, 3);
  return send_now(L, u, &a);
}

/* Resumed after EAGAIN (nothing pushed) or a failure (nil, err pushed), or
** after resolving the destination (ctx 3). */
static int sendto_k (lua_State *L, int status, lua_KContext ctx) {
  ludp *u = checkudp(L, 1);
  shl_task *t = shl_current(L);
  sh_addr a;
  (void)status;
  if (ctx == SEND_RESOLVED) {             /* the host name was resolved */
    int n = shl_tried(L);
    return n != 0 ? n : send_taken(L, u, (const udp_try *)lua_touserdata(L, 4));
  }
  if (t != NULL && lua_gettop(L) > t->top) return lua_gettop(L) - t->top;
  if (ctx == SEND_CONNECTED) return send_now(L, u, NULL);
  memcpy(&a, lua_tostring(L, 4), sizeof a);
  lua_settop(L, 3);
  return send_now(L, u, &a);
}

/* udp:sendto(data, addr) -> true, or nil, err. */
static int udp_sendto (lua_State *L) {
  ludp *u = checkudp(L, 1);
  sh_addr a;
  int d;
  luaL_checklstring(L, 2, NULL);
  lua_settop(L, 3);
  if ((d = destination(L, u, 3, &a)) < 0) return 2;
  if (d > 0) {
    udp_try *x;
    int n;
    shl_checktask(L, "udp:sendto() to a host name");
    x = new_try(L, u, take_address);
    n = shl_try_addrs(L, &a, SOCK_DGRAM, &x->tries, SEND_RESOLVED, sendto_k);
    return n != 0 ? n : send_taken(L, u, x);
  }
  return send_now(L, u, &a);
}

/* udp:send(data) -> true, or nil, err (a connected socket). */
static int udp_send (lua_State *L) {
  ludp *u = checkudp(L, 1);
  luaL_checklstring(L, 2, NULL);
  lua_settop(L, 2);
  if (!u->connected && !u->closed) return shl_pushfail(L, "not connected");
  return send_now(L, u, NULL);
}

/* ====================== Connecting ====================== */

/* One address for udp:connect() (sh_try_fn). */
static int try_connect (const struct sockaddr *sa, socklen_t len, void *ctx,
                        char *err, size_t errlen) {
  udp_try *x = ctx;
  ludp *u = x->u;
  x->raise = 0;
  if (u->closed) {                        /* closed while the name resolved */
    snprintf(err, errlen, "closed");
    return SH_TRY_FAIL;
  }
  if (open_client(u, sa->sa_family, err, errlen) != 0) {
    x->raise = 1;
    return SH_TRY_FAIL;
  }
  if (sh_dgram_connect(u->d, sa, len) != 0) {
    snprintf(err, errlen, "%s", sh_strerror(errno));
    return SH_TRY_FAIL;
  }
  return SH_TRY_OK;
}

/* After the tries ('n' as shl_try_addrs returns it): push true, or leave
** nil, err; raise as ensure_socket does when no socket could be made. */
static int connected (lua_State *L, ludp *u, const udp_try *x, int n) {
  if (n != 0 && x->raise) return luaL_error(L, "udp: %s", lua_tostring(L, -1));
  if (n != 0) return n;
  u->connected = 1;
  lua_pushboolean(L, 1);
  return 1;
}

static int connect_k (lua_State *L, int status, lua_KContext ctx) {
  int n = shl_tried(L);
  (void)status; (void)ctx;
  return connected(L, checkudp(L, 1), (const udp_try *)lua_touserdata(L, 3), n);
}

/* Connect to 'a', to each of its addresses in turn until one works. */
static int connect_to (lua_State *L, ludp *u, const sh_addr *a) {
  udp_try *x;
  int n;
  if (u->closed) return shl_pushfail(L, "closed");
  x = new_try(L, u, try_connect);
  n = shl_try_addrs(L, a, SOCK_DGRAM, &x->tries, 0, connect_k);
  return connected(L, u, x, n);
}

/* udp:connect(addr) -> true, or nil, err: send() and recv() then talk to
** addr only. */
static int udp_connect (lua_State *L) {
  ludp *u = checkudp(L, 1);
  sh_addr a;
  int d;
  lua_settop(L, 2);
  if ((d = destination(L, u, 2, &a)) < 0) return 2;
  if (d > 0) shl_checktask(L, "udp:connect() to a host name");
  return connect_to(L, u, &a);
}

/* ====================== Options ====================== */

static const char *const udp_opts[] = {
  "reuseport", "ipv6only", "mode", "broadcast", "rcvbuf", "sndbuf", "ttl", "loop", NULL
};

/* udp:setoption(name, value) -> true, or nil, err. Names: "broadcast",
** "loop" (booleans), "ttl", "rcvbuf", "sndbuf" (integers). */
static int udp_setoption (lua_State *L) {
  static const char *const names[] = {"broadcast", "loop", "ttl", "rcvbuf", "sndbuf", NULL};
  ludp *u = checkudp(L, 1);
  int which = luaL_checkoption(L, 2, NULL, names), v;
  v = which < 2 ? lua_toboolean(L, 3) : (int)luaL_checkinteger(L, 3);
  if (u->closed) return shl_pushfail(L, "closed");
  if (u->d == NULL) return shl_pushfail(L, "not bound");
  if (sh_dgram_setopt(u->d, names[which], v) != 0) return shl_pushfail(L, sh_strerror(errno));
  lua_pushboolean(L, 1);
  return 1;
}

static void apply_options (lua_State *L, ludp *u, int arg) {
  static const char *const names[] = {"broadcast", "loop", "ttl", "rcvbuf", "sndbuf", NULL};
  int i;
  if (lua_isnoneornil(L, arg)) return;
  for (i = 0; names[i] != NULL; i++) {
    int v;
    if (lua_getfield(L, arg, names[i]) == LUA_TNIL) { lua_pop(L, 1); continue; }
    v = i < 2 ? lua_toboolean(L, -1) : (int)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    if (sh_dgram_setopt(u->d, names[i], v) != 0)
      luaL_error(L, "udp option '%s': %s", names[i], sh_strerror(errno));
  }
}

/* An IP address for join/leave: "239.1.2.3", "ff02::1". */
static void check_ip (lua_State *L, int arg, sh_addr *a) {
  char text[300], err[300];
  size_t len;
  const char *ip = luaL_checklstring(L, arg, &len);
  int n = snprintf(text, sizeof text, strchr(ip, ':') ? "udp://[%s]:0" : "udp://%s:0", ip);
  if (strlen(ip) != len || n < 0 || (size_t)n >= sizeof text ||
      sh_addr_parse(text, (size_t)n, a, err, sizeof err) != 0 || !a->resolved)
    luaL_argerror(L, arg, "IP address expected");
}

static int membership (lua_State *L, int join) {
  ludp *u = checkudp(L, 1);
  sh_addr g, i;
  check_ip(L, 2, &g);
  if (!lua_isnoneornil(L, 3)) check_ip(L, 3, &i);
  if (u->closed) return shl_pushfail(L, "closed");
  if (u->d == NULL) return shl_pushfail(L, "not bound");
  if (sh_dgram_membership(u->d, join, (const struct sockaddr *)&g.sa,
                          lua_isnoneornil(L, 3) ? NULL : (const struct sockaddr *)&i.sa) != 0)
    return shl_pushfail(L, sh_strerror(errno));
  lua_pushboolean(L, 1);
  return 1;
}

/* udp:join(group [, iface]) / udp:leave(group [, iface]) -- multicast. */
static int udp_join (lua_State *L) { return membership(L, 1); }
static int udp_leave (lua_State *L) { return membership(L, 0); }

/* ====================== Lifetime ====================== */

static void close_internal (lua_State *L, ludp *u, int gc) {
  free_froms(L, u);
  if (u->closed) return;
  u->closed = 1;
  if (u->d != NULL) sh_dgram_free(u->d);
  u->d = NULL;
  if (u->handler_ref != LUA_NOREF && u->H->loop != NULL) sh_loop_unref(u->H->loop);
  if (u->self_ref != LUA_NOREF && !gc) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->self_ref);
    shl_shutdown_register(L, -1, 0);
    lua_pop(L, 1);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, u->handler_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, u->self_ref);
  u->handler_ref = u->self_ref = LUA_NOREF;
  if (gc) {                               /* the tasks may be gone */
    u->readers.head = u->readers.tail = NULL;
    u->writers.head = u->writers.tail = NULL;
    return;
  }
  shl_waitq_fail_all(&u->readers, "closed");
  shl_waitq_fail_all(&u->writers, "closed");
}

static int udp_close (lua_State *L) {
  close_internal(L, checkudp(L, 1), 0);
  lua_pushboolean(L, 1);
  return 1;
}

static int udp_gc (lua_State *L) {
  close_internal(L, checkudp(L, 1), 1);
  return 0;
}

static int udp_settimeout (lua_State *L) {
  checkudp(L, 1)->timeout = shl_opttimeout(L, 2, -1);
  lua_pushboolean(L, 1);
  return 1;
}

static int push_name (lua_State *L, ludp *u, int peer) {
  if (u->closed) return shl_pushfail(L, "closed");
  if (u->d == NULL) return shl_pushfail(L, "not bound");
  return shl_push_sockname(L, sh_dgram_fd(u->d), peer, (int)u->scheme, "not connected");
}

/* udp:address() -> "udp://0.0.0.0:9999"; udp:peer() once connected. */
static int udp_address (lua_State *L) { return push_name(L, checkudp(L, 1), 0); }
static int udp_peer (lua_State *L) { return push_name(L, checkudp(L, 1), 1); }

static int udp_tostring (lua_State *L) {
  ludp *u = checkudp(L, 1);
  if (!u->closed && u->d == NULL) lua_pushliteral(L, "sockhost.udp (unbound)");
  else if (push_name(L, u, 0) != 1) lua_pushliteral(L, "sockhost.udp (closed)");
  else lua_pushfstring(L, "sockhost.udp %s", lua_tostring(L, -1));
  return 1;
}

/* Make the object; the socket comes later for unbound clients. */
static ludp *new_udp (lua_State *L, shl_host *H) {
  ludp *u = (ludp *)lua_newuserdatauv(L, sizeof *u, 0);
  memset(u, 0, sizeof *u);
  u->H = H;
  u->timeout = -1;
  u->handler_ref = u->self_ref = LUA_NOREF;
  u->scheme = SH_UDP;
  luaL_setmetatable(L, UDP_MT);
  if (H->dgram_buf == NULL && (H->dgram_buf = malloc(SH_DGRAM_MAX)) == NULL)
    luaL_error(L, "out of memory");
  return u;
}

/* One address for sockhost.udp() (sh_try_fn): bind there. */
static int try_bind (const struct sockaddr *sa, socklen_t len, void *ctx,
                     char *err, size_t errlen) {
  udp_try *x = ctx;
  ludp *u = x->u;
  u->d = sh_dgram_open(u->H->loop, sa->sa_family, sa, len, &x->o, on_dgram, u, err, errlen);
  return u->d != NULL ? SH_TRY_OK : SH_TRY_FAIL;
}

/* After the tries ('n' as shl_try_addrs returns it): set up the socket at 4
** (arguments: 1 addr, 2 handler or nil, 3 opts or nil) and push it, or
** leave nil, err. */
static int bound (lua_State *L, ludp *u, int n) {
  if (n != 0) { u->closed = 1; return n; }
  lua_settop(L, 4);
  apply_options(L, u, 3);
  if (!lua_isnil(L, 2)) {
    lua_pushvalue(L, 2);
    u->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    u->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    sh_loop_ref(u->H->loop);              /* serving keeps the process alive */
    shl_shutdown_register(L, -1, 1);
    update_watch(u);
  }
  return 1;
}

static int udp_k (lua_State *L, int status, lua_KContext ctx) {
  ludp *u = checkudp(L, 4);
  int n = shl_tried(L);
  (void)status; (void)ctx;
  if (n == 0 && !lua_isnil(L, 2) && u->H->draining) {   /* shutdown began meanwhile */
    close_internal(L, u, 0);
    return shl_pushfail(L, "shutting down");
  }
  return bound(L, u, n);
}

/* Bind the new object at 4 to 'a', to each of its addresses in turn until
** one works. Pushes the object, or nil, err. */
static int bind_to (lua_State *L, ludp *u, const sh_addr *a) {
  udp_try *x;
  int n;
  if (!lua_isnil(L, 2) && u->H->draining) { u->closed = 1; return shl_pushfail(L, "shutting down"); }
  x = new_try(L, u, try_bind);
  shl_sockopts(L, 3, &x->o);
  u->scheme = a->scheme;
  n = shl_try_addrs(L, a, SOCK_DGRAM, &x->tries, 0, udp_k);
  return bound(L, u, n);
}

/* sockhost.udp([addr] [, handler] [, opts]) -> udp socket, or nil, err (a
** malformed or stream address too: "bad address '<addr>': <why>"). */
int shl_udp (lua_State *L) {
  static const char *const mode_needs_file =
    "mode applies only to a Unix socket file (unixgram:/path)";
  shl_host *H = shl_gethost(L);
  sh_sockopts o;
  sh_addr a;
  const char *text;
  size_t len;
  char err[300];
  if (lua_istable(L, 2)) { lua_pushnil(L); lua_insert(L, 2); }   /* udp(addr, opts) */
  lua_settop(L, 3);
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  shl_checkoptions(L, 3, udp_opts);
  shl_sockopts(L, 3, &o);                  /* check them before anything happens */
  if (lua_isnil(L, 1)) {                  /* an unbound client */
    luaL_argcheck(L, lua_isnil(L, 2), 2, "a handler needs an address to listen on");
    luaL_argcheck(L, o.mode < 0, 3, mode_needs_file);
    new_udp(L, H);
    return 1;
  }
  text = luaL_checklstring(L, 1, &len);
  if (sh_addr_parse(text, len, &a, err, sizeof err) != 0) return shl_pushfail(L, err);
  if (sh_addr_is_stream(a.scheme)) return shl_pushfail(L, not_datagram(text, len, err, sizeof err));
  luaL_argcheck(L, o.mode < 0 || sh_addr_has_file(&a), 3, mode_needs_file);
  if (!a.resolved) shl_checktask(L, "sockhost.udp() on a host name");
  return bind_to(L, new_udp(L, H), &a);
}

static const luaL_Reg udp_methods[] = {
  {"recvfrom", udp_recvfrom}, {"recv", udp_recv}, {"sendto", udp_sendto}, {"send", udp_send},
  {"connect", udp_connect}, {"setoption", udp_setoption}, {"join", udp_join},
  {"leave", udp_leave}, {"settimeout", udp_settimeout}, {"address", udp_address},
  {"peer", udp_peer}, {"close", udp_close}, {NULL, NULL}
};

static const luaL_Reg udp_meta[] = {
  {"__index", NULL}, {"__gc", udp_gc}, {"__close", udp_close},
  {"__tostring", udp_tostring}, {NULL, NULL}
};

void shl_udp_open (lua_State *L) {
  shl_newclass(L, UDP_MT, udp_meta, udp_methods);
}
