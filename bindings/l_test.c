/* l_test.c -- the C half of sockhost.test (bindings/lua/test.lua), loaded
** as `require "sockhost.test.core"`: the virtual clock, driving the loop one
** step at a time, the seeded ready queue, and the "sockhost.testpeer"
** object, a scripted peer's socket.
**
** A peer is deliberately not a conn: it belongs to the spec, which runs
** outside any task, so it never blocks and never parks. Its socket is
** non-blocking; the Lua half polls it between steps of the loop. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../core/sh_addr.h"
#include "../core/sh_clock.h"
#include "../core/sh_log.h"
#include "../core/sh_loop.h"
#include "../core/sh_timer.h"
#include "shl.h"

#define PEER_MT "sockhost.testpeer"
#define RECV_CHUNK 65536

typedef struct tpeer {
  int fd;                 /* -1 once closed */
  int dgram;              /* a datagram socket */
  sh_scheme scheme;       /* of the address it talks to */
} tpeer;

static tpeer *checkpeer (lua_State *L) {
  tpeer *p = (tpeer *)luaL_checkudata(L, 1, PEER_MT);
  if (p->fd < 0) luaL_error(L, "peer is closed");
  return p;
}

static int errfail (lua_State *L, int e) {
  if (e == ECONNRESET || e == EPIPE) return shl_pushfail(L, "reset");
  return shl_pushfail(L, strerror(e));
}

/* ---------------- the clock and the loop ---------------- */

/* core.virtual(on [, start]) */
static int t_virtual (lua_State *L) {
  sh_timer_clock(lua_toboolean(L, 1), luaL_optnumber(L, 2, 0));
  return 0;
}

/* core.set(t): move the virtual clock to t (never backwards). */
static int t_set (lua_State *L) {
  sh_clock_set(luaL_checknumber(L, 1));
  return 0;
}

/* core.next_due() -> when the earliest timer is due, or nil. */
static int t_next_due (lua_State *L) {
  double due = sh_timer_next_due(shl_getsched(L)->loop);
  if (due < 0) return 0;
  lua_pushnumber(L, due);
  return 1;
}

/* core.fire_due() -> how many timers were made to fire. */
static int t_fire_due (lua_State *L) {
  lua_pushinteger(L, sh_timer_fire_due(shl_getsched(L)->loop));
  return 1;
}

/* core.step() -> true if any callback ran. Raises inside a task: a task
** cannot run the loop it runs on. */
static int t_step (lua_State *L) {
  shl_sched *S = shl_getsched(L);
  int r;
  if (S->current != NULL) return luaL_error(L, "sockhost.test: a task cannot drive the loop");
  r = sh_loop_step(S->loop);
  if (r < 0) return luaL_error(L, "sockhost.test: event loop failure");
  lua_pushboolean(L, r);
  return 1;
}

/* core.pause(seconds): sleep in real time (the loopback transport gives the
** kernel a moment before the spec concludes nothing more will come). */
static int t_pause (lua_State *L) {
  double d = luaL_checknumber(L, 1);
  struct timespec ts;
  if (d <= 0) return 0;
  ts.tv_sec = (time_t)d;
  ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL);
  return 0;
}

/* core.real() -> the real monotonic time in seconds, virtual clock or not
** (for bounds in real time). */
static int t_real (lua_State *L) {
  lua_pushnumber(L, sh_now_real());
  return 1;
}

/* core.failures(keep) -> the failures of tasks since the last call, as
** logged, with their tracebacks (a list; nil if none were kept); then keep
** them anew, or not. Only tasks made since keeping began count. */
static int t_failures (lua_State *L) {
  shl_sched_failures(L, shl_getsched(L), lua_toboolean(L, 1));
  return 1;
}

/* core.shuffle(seed): 0 for the plain order. */
static int t_shuffle (lua_State *L) {
  shl_sched_shuffle(shl_getsched(L), (unsigned long long)luaL_checkinteger(L, 1));
  return 0;
}

/* core.defaults{ idle_timeout =, line_timeout =, max_line =, max_conns =,
** budget = } -> the previous values, in a table of the same shape: the
** host-wide defaults the command line sets for the executable. */
static int t_defaults (lua_State *L) {
  shl_host *H = shl_gethost(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_createtable(L, 0, 5);
  lua_pushnumber(L, H->idle_timeout); lua_setfield(L, -2, "idle_timeout");
  lua_pushnumber(L, H->line_timeout); lua_setfield(L, -2, "line_timeout");
  lua_pushnumber(L, H->max_line); lua_setfield(L, -2, "max_line");
  lua_pushnumber(L, H->max_conns); lua_setfield(L, -2, "max_conns");
  lua_pushnumber(L, H->sched->budget); lua_setfield(L, -2, "budget");
  H->idle_timeout = shl_optfield(L, 1, "idle_timeout", H->idle_timeout);
  H->line_timeout = shl_optfield(L, 1, "line_timeout", H->line_timeout);
  H->max_line = shl_optfield(L, 1, "max_line", H->max_line);
  H->max_conns = shl_optfield(L, 1, "max_conns", H->max_conns);
  shl_set_budget(H->sched, shl_optfield(L, 1, "budget", H->sched->budget));
  return 1;
}

/* ---------------- peers ---------------- */

static tpeer *newpeer (lua_State *L, int fd, int dgram, sh_scheme scheme) {
  tpeer *p = (tpeer *)lua_newuserdatauv(L, sizeof *p, 0);
  p->fd = fd;
  p->dgram = dgram;
  p->scheme = scheme;
  luaL_setmetatable(L, PEER_MT);
  return p;
}

static void checkaddr (lua_State *L, int arg, sh_addr *a) {
  char err[300];
  size_t len;
  const char *text = luaL_checklstring(L, arg, &len);
  if (sh_addr_parse(text, len, a, err, sizeof err) != 0)
    luaL_argerror(L, arg, err);
  if (!a->resolved) luaL_argerror(L, arg, "an IP address or a Unix path expected");
}

/* core.connect(addr) -> peer, or nil, err. The connect is blocking: the
** listener is in this process, and the kernel completes a connection to a
** listening socket without its accept. */
static int t_connect (lua_State *L) {
  sh_addr a;
  int fd;
  checkaddr(L, 1, &a);
  if (!sh_addr_is_stream(a.scheme)) luaL_argerror(L, 1, "stream address expected");
  fd = socket(a.sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errfail(L, errno);
  if (connect(fd, (struct sockaddr *)&a.sa, a.salen) != 0) {
    int e = errno;
    close(fd);
    return shl_pushfail(L, e == ECONNREFUSED || e == ENOENT ? "connection refused" : strerror(e));
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (a.scheme == SH_TCP) {     /* a piece sent must not wait in the kernel
                                ** while the spec decides nothing moves */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  newpeer(L, fd, 0, a.scheme);
  return 1;
}

/* core.datagram(addr [, bind]) -> peer: a datagram socket that sends to
** 'addr'; bound to 'bind' if given (a Unix datagram peer must be, to get
** replies). */
static int t_datagram (lua_State *L) {
  sh_addr a, b;
  int fd;
  checkaddr(L, 1, &a);
  if (sh_addr_is_stream(a.scheme)) luaL_argerror(L, 1, "datagram address expected");
  if (!lua_isnoneornil(L, 2)) checkaddr(L, 2, &b);
  fd = socket(a.sa.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return errfail(L, errno);
  if ((!lua_isnoneornil(L, 2) && bind(fd, (struct sockaddr *)&b.sa, b.salen) != 0) ||
      connect(fd, (struct sockaddr *)&a.sa, a.salen) != 0) {
    int e = errno;
    close(fd);
    return errfail(L, e);
  }
  newpeer(L, fd, 1, a.scheme);
  return 1;
}

/* peer:send(data) -> bytes taken now (maybe 0: the kernel is full), or nil,
** err. A datagram is all or nothing: nil, "kernel full" when refused. */
static int peer_send (lua_State *L) {
  tpeer *p = checkpeer(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  ssize_t n = send(p->fd, s, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return errfail(L, errno);
    if (p->dgram) return shl_pushfail(L, "kernel full");  /* 0 would be an empty datagram */
    n = 0;
  }
  lua_pushinteger(L, n);
  return 1;
}

/* peer:recv() -> what has arrived, "" if nothing yet; nil, "closed" at the
** end of the stream; nil, "reset". A datagram peer gets one datagram (maybe
** ""), or false when none waits. */
static int peer_recv (lua_State *L) {
  tpeer *p = checkpeer(L);
  luaL_Buffer b;
  char *buf = luaL_buffinitsize(L, &b, RECV_CHUNK);
  ssize_t n = recv(p->fd, buf, RECV_CHUNK, MSG_DONTWAIT);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return errfail(L, errno);
    if (p->dgram) {                 /* "" is an empty datagram: nothing is false */
      lua_pushboolean(L, 0);
      return 1;
    }
    n = 0;
  } else if (n == 0 && !p->dgram) {
    return shl_pushfail(L, "closed");
  }
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/* peer:shutdown(): half-close, the server reads the end of the stream. */
static int peer_shutdown (lua_State *L) {
  tpeer *p = checkpeer(L);
  shutdown(p->fd, SHUT_WR);
  return 0;
}

/* peer:reset(): close so that the server sees a reset: an RST for TCP;
** for a Unix stream, a close with unread bytes is what gives the other end
** ECONNRESET, so whatever is unread is left unread. */
static int peer_reset (lua_State *L) {
  tpeer *p = checkpeer(L);
  struct linger lg;
  lg.l_onoff = 1;
  lg.l_linger = 0;
  if (p->scheme == SH_TCP) setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(p->fd);
  p->fd = -1;
  return 0;
}

static int peer_close (lua_State *L) {
  tpeer *p = (tpeer *)luaL_checkudata(L, 1, PEER_MT);
  if (p->fd >= 0) close(p->fd);
  p->fd = -1;
  return 0;
}

/* peer:address() -> its own address string. */
static int peer_address (lua_State *L) {
  tpeer *p = checkpeer(L);
  return shl_push_sockname(L, p->fd, 0, p->scheme, NULL);
}

static int peer_closed (lua_State *L) {
  tpeer *p = (tpeer *)luaL_checkudata(L, 1, PEER_MT);
  lua_pushboolean(L, p->fd < 0);
  return 1;
}

static const luaL_Reg peer_methods[] = {
  {"send", peer_send}, {"recv", peer_recv}, {"shutdown", peer_shutdown},
  {"reset", peer_reset}, {"close", peer_close}, {"address", peer_address},
  {"closed", peer_closed}, {NULL, NULL}
};

static const luaL_Reg peer_meta[] = {
  {"__gc", peer_close}, {"__close", peer_close}, {NULL, NULL}
};

/* ---------------- the host's own log lines ---------------- */

#define CAPTURE_MAX (1u << 20)   /* bytes of lines kept between two drains */

/* Lines the host logged since the last drain, "LEVEL message\n" each (the
** log escapes newlines: one line is one record). Process-wide, as the log. */
static struct { char *buf; size_t len, cap; unsigned long dropped; } captured;

static void capture_line (sh_log_level level, const char *line, void *ctx) {
  const char *tag = sh_log_level_name(level);
  size_t need = strlen(tag) + 1 + strlen(line) + 1;
  (void)ctx;
  if (captured.len + need > CAPTURE_MAX) { captured.dropped++; return; }
  if (captured.len + need > captured.cap) {
    size_t cap = captured.cap ? captured.cap * 2 : 4096;
    char *p;
    while (cap < captured.len + need) cap *= 2;
    if ((p = realloc(captured.buf, cap)) == NULL) { captured.dropped++; return; }
    captured.buf = p;
    captured.cap = cap;
  }
  captured.len += (size_t)snprintf(captured.buf + captured.len, need + 1, "%s %s\n", tag, line);
}

/* core.capture(on) -- keep the host's own log lines (whatever the level)
** for core.captured; off: stop, and forget what was kept. */
static int t_capture (lua_State *L) {
  int on = lua_toboolean(L, 1);
  sh_log_set_sink(on ? capture_line : NULL, NULL);
  if (!on) {
    free(captured.buf);
    memset(&captured, 0, sizeof captured);
  }
  return 0;
}

/* core.captured() -> { "info conn #3 ...: idle too long, closing", ... },
** the lines kept since the last call (oldest first), and how many did not
** fit; nothing when there are none. */
static int t_captured (lua_State *L) {
  size_t i = 0;
  lua_Integer n = 0;
  if (captured.len == 0 && captured.dropped == 0) return 0;   /* the usual case */
  lua_newtable(L);
  while (i < captured.len) {
    const char *nl = memchr(captured.buf + i, '\n', captured.len - i);
    size_t end = nl != NULL ? (size_t)(nl - captured.buf) : captured.len;
    lua_pushlstring(L, captured.buf + i, end - i);
    lua_rawseti(L, -2, ++n);
    i = end + 1;
  }
  lua_pushinteger(L, (lua_Integer)captured.dropped);
  captured.len = 0;
  captured.dropped = 0;
  return 2;
}

static const luaL_Reg core_funcs[] = {
  {"virtual", t_virtual}, {"set", t_set}, {"next_due", t_next_due},
  {"fire_due", t_fire_due}, {"step", t_step}, {"shuffle", t_shuffle},
  {"defaults", t_defaults}, {"pause", t_pause}, {"connect", t_connect}, {"datagram", t_datagram},
  {"capture", t_capture}, {"captured", t_captured},
  {"real", t_real}, {"failures", t_failures}, {NULL, NULL}
};

static int open_core (lua_State *L) {
  shl_newclass(L, PEER_MT, peer_meta, peer_methods);
  luaL_newlib(L, core_funcs);
  return 1;
}

void shl_test_open (lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, open_core);
  lua_setfield(L, -2, "sockhost.test.core");
  lua_pop(L, 1);
}
