/* l_conn.c -- the "sockhost.conn" object: a stream connection (TCP or
** Unix) with blocking-style methods that park the calling task, plus
** sockhost.connect().
**
** Reads: the formats of io.read ("l", "L", "a", n) plus read_until,
** read_some and resp_commands (whole RESP commands, core/sh_resp.h). One builder, try_read(), makes the results on both paths: at
** once when the input already holds them, or from the stream callback when
** bytes arrive for a parked reader. One reader at a time ("busy" otherwise).
**
** Writes: straight to the kernel; what it refuses is queued up to the
** high-water mark, then the writer parks until the queue drains to the
** low-water mark. Writers from several tasks take turns, in order, so their
** bytes never interleave.
**
** TLS: a tls:// connection is the same object over a TLS stream (a
** bufferevent stream, core/sh_tls.c); sockhost.connect() runs the handshake
** before it hands the conn out, conn:starttls() runs one in place, conn:tls()
** describes the session. Options and the session table: l_tls.c.
**
** What this file does not do: resolve names. */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../core/sh_http.h"
#include "../core/sh_httpc.h"
#include "../core/sh_log.h"
#include "../core/sh_net.h"
#include "../core/sh_resp.h"
#include "../core/sh_proxy.h"
#include "../core/sh_stream.h"
#include "../core/sh_tls.h"
#include "../core/sh_util.h"
#include "shl.h"

#define INPUT_CAP SH_STREAM_CAP  /* read ahead this much when nobody asks more */
#define MAX_ALL (64u << 20)     /* most bytes read("a") gathers before "too large" */
#define OUT_HIGH 65536          /* a writer parks above this much queued output */
#define OUT_LOW 16384           /* ... and continues at or below this */
#define MAX_IOV 32              /* arguments sent per sendmsg() */
#define CONNECT_TIMEOUT 30.0    /* default seconds for sockhost.connect() */

enum { RD_LINE, RD_LINE_KEEP, RD_ALL, RD_N, RD_UNTIL, RD_SOME, RD_WAIT, RD_RESP };
enum { CLOSE_FLUSH, CLOSE_ABORT, CLOSE_GC };
/* A connection's state: its stream is set only while CONN_OPEN. */
typedef enum { CONN_OPEN, CONN_HANDSHAKE, CONN_CLOSED } conn_state;
/* write_k's context: where the parked writer goes on. */
enum { WRITE_TURN = 0 };           /* its turn came: from argument 2 */

/* An IP peer's address, remembered at accept or connect: a TCP socket
** forgets it once both halves are shut down or the peer reset it, and
** peer() and the log still name it then. 24 bytes (a sockaddr_in6 is 28);
** a Unix socket keeps its peer's name, and is asked. */
typedef struct peer_addr {
  unsigned char addr[16];  /* IPv4: the first 4 bytes */
  uint32_t scope;          /* IPv6: the zone (sin6_scope_id) */
  uint16_t port;           /* network byte order */
  unsigned char family;    /* 4, 6, or 0: not remembered */
} peer_addr;

struct lconn {
  sh_stream *s;          /* NULL once closed */
  shl_host *H;
  conn_state state;      /* open, in starttls's handshake, or closed */
  int tracked;           /* on H->accepted */
  int served;            /* a read has returned: later ones wait for a new request */
  shl_waitq readers;     /* the task parked in a read (one at a time) */
  shl_waitq writers;     /* writers in turn; the head is writing */
  double timeout;        /* seconds for each blocking call; < 0: none */
  size_t max_line;       /* longest line / read_until result */
  size_t max_all;        /* most bytes read("a") gathers */
  double idle;           /* idle limit in seconds; 0: none */
  double line;           /* seconds to finish a line once begun; 0: none */
  size_t want;           /* reader: n for RD_N, most bytes for RD_SOME/RD_UNTIL,
                            most commands for RD_RESP */
  sh_resp_limits rlim;   /* reader: RD_RESP's limits */
  size_t scanned;        /* reader: bytes already searched for the delimiter */
  const char *delim;     /* reader: read_until's delimiter (on its stack) */
  size_t dlen;
  size_t woff;           /* active writer: offset into its current argument */
  shl_counter *counter;  /* the listener's count this conn is in, or NULL */
  lconn *prev, *next;    /* in H->accepted (accepted connections) */
  unsigned id;           /* for logs: "conn #7" */
  peer_addr peer;        /* the peer's address, if IP */
  unsigned char rmode;   /* reader: RD_* */
  unsigned char corked;  /* conn:cork(): kept across starttls's new stream */
  char cut[96];          /* why the read that failed cuts the conn, or "" */
  size_t handed;         /* bytes its reads handed to Lua (see close_internal) */
  sh_tls_hs *hs;         /* starttls: the handshake running (s is NULL) */
  shl_task *hs_task;     /* ... and the task parked in starttls */
  sh_proxy_info *proxy;  /* what a PROXY header said (a copy, its TLVs after
                         ** it), or NULL; freed at close */
  shl_task *task;        /* accepted: its handler task while it runs */
  double born;           /* when it was made (sh_now) */
  unsigned long long rx; /* bytes its reads handed to Lua, in all */
  unsigned long long tx; /* bytes its writes took, in all */
};

/* The methods have the metatable as upvalue 1 (shl_newclass): compared
** with it, the common case needs no lookup of CONN_MT in the registry.
** Anything else (a function without that upvalue, the wrong type) goes to
** luaL_checkudata, which decides and raises as ever. */
static lconn *checkconn (lua_State *L, int arg) {
  void *p = lua_touserdata(L, arg);
  if (p != NULL && lua_getmetatable(L, arg)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same) return (lconn *)p;
  }
  return (lconn *)luaL_checkudata(L, arg, CONN_MT);
}

static void close_internal(lconn *lc, int how);

/* ====================== The buffer share ======================
** A connection may hold H->conn_share bytes in its buffers (0: any): a read
** never raises the input cap past it, a read that needs more fails with
** "too large", and the connection is cut (cut_now) once the read has its
** results. The host's budget of all buffers (sh_budget) cuts the
** connection holding the most when it is over its limit (on_over). */

static size_t fit (lconn *lc, size_t cap) {
  size_t share = lc->H->conn_share;
  return share > 0 && cap > share ? share : cap;
}

/* The input holds all a connection may, and the read is not done. */
static int over_share (lconn *lc, size_t len) {
  return lc->H->conn_share > 0 && len >= lc->H->conn_share;
}

/* A read that needs 'need' bytes (or, with 0, more than the share): push
** nil, "too large" and mark the conn to be cut. */
static int too_large (lua_State *L, lconn *lc, size_t need) {
  if (need > 0)
    snprintf(lc->cut, sizeof lc->cut, "a read of %zu bytes, over the %zu a connection may hold",
             need, lc->H->conn_share);
  else
    snprintf(lc->cut, sizeof lc->cut, "no end in the %zu bytes a connection may hold",
             lc->H->conn_share);
  return shl_pushfail(L, "too large");
}

/* ====================== Reading ====================== */

/* 'n' input bytes were taken by a read (delimiters too): count them. */
static void consumed (lconn *lc, size_t n) {
  lc->rx += n;
  lc->H->counts.bytes_in += n;
}

/* Push the first n input bytes, then remove n + extra. */
static void take (lua_State *L, lconn *lc, size_t n, size_t extra) {
  const char *p = sh_stream_peek(lc->s, n);
  if (p == NULL) lua_pushliteral(L, "");
  else lua_pushlstring(L, p, n);
  sh_stream_consume(lc->s, n + extra);
  lc->handed += n;
  consumed(lc, n + extra);
}

/* Push a copy of what is buffered, leaving it there. */
static void peek (lua_State *L, lconn *lc) {
  size_t len = sh_stream_inlen(lc->s);
  const char *p = sh_stream_peek(lc->s, len);
  if (p == NULL) lua_pushliteral(L, "");
  else lua_pushlstring(L, p, len);
  lc->handed += len;
}

/* Find the reader's delimiter ("\n" for lines), resuming the search where
** the last one stopped so that a line arriving byte by byte costs O(n). */
static ssize_t find_delim (lconn *lc, const char *d, size_t dlen) {
  size_t from = lc->scanned >= dlen ? lc->scanned - (dlen - 1) : 0;
  ssize_t pos = sh_stream_find(lc->s, d, dlen, from);
  if (pos < 0) lc->scanned = sh_stream_inlen(lc->s);
  return pos;
}

static int read_line (lua_State *L, lconn *lc, size_t len, int eof) {
  ssize_t pos = find_delim(lc, "\n", 1);
  if (pos >= 0) {
    size_t n = (size_t)pos, cut = 1;
    const char *p = sh_stream_peek(lc->s, n + 1);
    if (n > lc->max_line) return shl_pushfail(L, "line too long");
    if (p == NULL) return shl_pushfail(L, "out of memory");
    if (lc->rmode == RD_LINE_KEEP) { n++; cut = 0; }
    else if (n > 0 && p[n - 1] == '\r') { n--; cut = 2; }
    lua_pushlstring(L, p, n);
    sh_stream_consume(lc->s, n + cut);
    consumed(lc, n + cut);
    return 1;
  }
  if (len > lc->max_line) return shl_pushfail(L, "line too long");
  if (eof && len > 0) {                 /* the last line, without its end */
    take(L, lc, len, 0);
    return 1;
  }
  return -1;
}

/* One argument of a command: the first makes its table (on top of the
** stack), each goes into it. */
static void resp_arg (void *ud, size_t i, size_t n, const char *p, size_t len) {
  lua_State *L = ud;
  if (i == 0) lua_createtable(L, n < 64 ? (int)n : 64, 0);
  lua_pushlstring(L, p, len);
  lua_rawseti(L, -2, (lua_Integer)i + 1);
}

/* RD_RESP looks at most this far into the input: a batch costs no more than
** that to make contiguous, however much is buffered, and a command longer
** than that goes to the general reader. */
#define RESP_WINDOW (64 * 1024)

/* RD_RESP: push the whole commands at the head of the input (up to
** lc->want of them, and none begun past lc->want arguments) as { args, ... }, n and take them; or push false when
** the first is not one (core/sh_resp.h), leaving the input alone. */
static int resp_batch (lua_State *L, lconn *lc) {
  size_t len = sh_stream_inlen(lc->s), off = 0, got = 0, args = 0;
  const char *buf;
  if (len > RESP_WINDOW) len = RESP_WINDOW;
  buf = len > 0 ? sh_stream_peek(lc->s, len) : NULL;
  if (buf == NULL) { lua_pushboolean(L, 0); return 1; }
  luaL_checkstack(L, 4, NULL);
  lua_createtable(L, lc->want < 16 ? (int)lc->want : 16, 0);
  while (got < lc->want && args < lc->want) {   /* no new command past want arguments */
    size_t nargs, used;
    int top = lua_gettop(L);
    if (sh_resp_command(buf + off, len - off, &lc->rlim, resp_arg, L, &nargs, &used) != SH_RESP_OK) {
      lua_settop(L, top);                /* the arguments of a command cut short */
      break;
    }
    lua_rawseti(L, -2, (lua_Integer)++got);
    off += used;
    args += nargs;
  }
  if (got == 0) { lua_pop(L, 1); lua_pushboolean(L, 0); return 1; }
  sh_stream_consume(lc->s, off);
  lc->handed += off;
  consumed(lc, off);
  lua_pushinteger(L, (lua_Integer)got);
  return 2;
}

/* Push the results of the parked or arriving read if they are ready, and
** return how many; -1 (pushing nothing) while more input is needed. */
static int try_read (lua_State *L, lconn *lc) {
  size_t len = sh_stream_inlen(lc->s);
  int eof = sh_stream_eof(lc->s), n;
  if (len == 0 && !eof) return -1;        /* the common case: nothing yet */
  switch (lc->rmode) {
    case RD_RESP:
      return resp_batch(L, lc);
    case RD_SOME:
      if (len > 0) { take(L, lc, len < lc->want ? len : lc->want, 0); return 1; }
      break;
    case RD_WAIT:                         /* take_head: some input, left buffered */
      if (len > 0) { lua_pushboolean(L, 1); return 1; }
      break;
    case RD_N:
      if (len >= lc->want) { take(L, lc, lc->want, 0); return 1; }
      break;
    case RD_ALL:
      if (eof) { take(L, lc, len, 0); return 1; }
      if (len >= lc->max_all) return shl_pushfail(L, "too large");
      if (over_share(lc, len)) return too_large(L, lc, 0);
      return -1;
    case RD_UNTIL: {
      ssize_t pos = find_delim(lc, lc->delim, lc->dlen);
      if (pos >= 0 && (size_t)pos <= lc->want) { take(L, lc, (size_t)pos, lc->dlen); return 1; }
      if (pos >= 0 || len > lc->want + lc->dlen) return shl_pushfail(L, "line too long");
      break;
    }
    default:
      if ((n = read_line(L, lc, len, eof)) >= 0) return n;
      break;
  }
  if (!eof && over_share(lc, len)) return too_large(L, lc, 0);
  if (!eof) {
    if (len > 0 && lc->rmode != RD_SOME && lc->rmode != RD_N)
      sh_stream_partial(lc->s, 1);        /* a line begun: it has a deadline */
    return -1;
  }
  luaL_pushfail(L);                      /* the stream ended first */
  lua_pushliteral(L, "closed");
  if (lc->rmode == RD_SOME || lc->rmode == RD_WAIT || lc->rmode == RD_LINE
      || lc->rmode == RD_LINE_KEEP) return 2;
  take(L, lc, len, 0);                   /* what did arrive */
  return 3;
}

static void reader_done (lconn *lc) {
  shl_waitq_pop(&lc->readers);
  lc->delim = NULL;
  if (lc->s != NULL) {
    sh_stream_set_cap(lc->s, fit(lc, INPUT_CAP));
    sh_stream_partial(lc->s, 0);
  }
}

static int read_timeout (void *obj, shl_task *t, int cancel) {
  lconn *lc = obj;
  int n = 2;
  if (!cancel && lc->s != NULL && lc->rmode != RD_SOME && lc->rmode != RD_WAIT) {
    luaL_pushfail(t->co);
    lua_pushliteral(t->co, "timeout");
    peek(t->co, lc);                     /* stays buffered */
    n = 3;
  } else if (!cancel) {
    shl_pushfail(t->co, "timeout");
  } else {
    n = 0;
  }
  shl_waitq_remove(&lc->readers, t);
  lc->delim = NULL;
  if (lc->s != NULL) sh_stream_set_cap(lc->s, fit(lc, INPUT_CAP));
  return n;
}

/* Start a read of the mode set in lc: results now, or park the task. */
static int drain_now(lconn *lc);
static void cut_now(lconn *lc);

static int read_start_t (lua_State *L, lconn *lc, size_t cap, lua_KFunction k, double timeout,
                         lua_KContext ctx) {
  shl_task *t;
  int n;
  if (drain_now(lc)) {                    /* shutting down: no new requests */
    close_internal(lc, CLOSE_FLUSH);
    shl_pushfail(L, "closed");
    return k != NULL ? k(L, LUA_OK, ctx) : 2;
  }
  lc->scanned = 0;
  n = try_read(L, lc);
  if (n >= 0) {
    lc->served = 1;
    sh_stream_partial(lc->s, 0);
    if (lc->cut[0] != '\0') cut_now(lc);
    return k != NULL ? k(L, LUA_OK, ctx) : n;
  }
  t = shl_checktask(L, "conn:read()");
  if (lc->corked) sh_stream_flush(lc->s);  /* the batch is over: the peer may wait for it */
  sh_stream_set_cap(lc->s, fit(lc, cap));
  return shl_wait(L, &lc->readers, t, SHL_WAIT_READ, timeout, read_timeout, lc, ctx, k);
}

static int read_start (lua_State *L, lconn *lc, size_t cap, lua_KFunction k) {
  return read_start_t(L, lc, cap, k, lc->timeout, 0);
}

static int check_reader (lua_State *L, lconn *lc) {
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  if (lc->readers.head != NULL) return shl_pushfail(L, "busy");
  return 0;
}

static size_t line_cap (lconn *lc, size_t extra) {
  size_t need = lc->max_line + extra + 1;
  return need > INPUT_CAP ? need : INPUT_CAP;
}

/* conn:read([fmt]) -- fmt "l" (default), "L", "a" or a byte count. */
static int conn_read (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  size_t cap = INPUT_CAP;
  int busy;
  if (lua_type(L, 2) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0, 2, "byte count must be non-negative");
    if ((busy = check_reader(L, lc)) != 0) return busy;
    if (n == 0) { lua_pushliteral(L, ""); return 1; }
    lc->rmode = RD_N;
    lc->want = (size_t)n;
    if (lc->H->conn_share > 0 && lc->want > lc->H->conn_share) {
      too_large(L, lc, lc->want);
      cut_now(lc);
      return 2;
    }
    if (lc->want > cap) cap = lc->want;
  } else {
    const char *f = luaL_optstring(L, 2, "l");
    if (*f == '*') f++;                 /* accept "*l", as io.read does */
    if (strcmp(f, "l") == 0) lc->rmode = RD_LINE;
    else if (strcmp(f, "L") == 0) lc->rmode = RD_LINE_KEEP;
    else if (strcmp(f, "a") == 0) lc->rmode = RD_ALL;
    else return luaL_argerror(L, 2, "invalid format");
    if ((busy = check_reader(L, lc)) != 0) return busy;
    cap = lc->rmode == RD_ALL ? lc->max_all : line_cap(lc, 0);
  }
  lua_settop(L, 1);
  return read_start(L, lc, cap, NULL);
}

static size_t opt_size (lua_State *L, int arg) {
  lua_Integer v = luaL_checkinteger(L, arg);
  luaL_argcheck(L, v >= 0, arg, "must be non-negative");
  return (size_t)v;
}

/* conn:resp_commands(max, max_bulk, max_bytes, max_elements) -> { args,
** ... }, n | false | nil, err. Waits only while nothing is buffered (nil,
** "timeout" as conn:read). Then: the RESP commands ("*<n>\r\n" and n bulk
** strings) at the head of the input, whole, up to max of them (and no
** further one once they hold max arguments: the script gets to yield
** between batches), each a list of strings, taken from the input; or false when the first is not such a
** command, whole and within the limits (core/sh_resp.h), or the conn is
** closed or busy: that is left for conn:read (sockhost.resp's general
** reader) to wait for, skip or refuse. Header lines obey max_line as
** conn:read("L") does. */
static int conn_resp_commands (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  lua_Integer max = luaL_checkinteger(L, 2);
  luaL_argcheck(L, max >= 1, 2, "must be positive");
  lc->rlim.max_bulk = opt_size(L, 3);
  lc->rlim.max_bytes = opt_size(L, 4);
  lc->rlim.max_elements = opt_size(L, 5);
  if (lc->s == NULL || lc->readers.head != NULL) { lua_pushboolean(L, 0); return 1; }
  lc->rlim.max_line = lc->max_line;
  lc->rmode = RD_RESP;
  lc->want = (size_t)max;
  lua_settop(L, 1);
  return read_start(L, lc, INPUT_CAP, NULL);
}

/* conn:read_until(delim [, max]) -- the bytes before delim (removed too). */
static int conn_read_until (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  size_t dlen;
  const char *d = luaL_checklstring(L, 2, &dlen);
  lua_Integer max = luaL_optinteger(L, 3, (lua_Integer)lc->max_line);
  int busy;
  luaL_argcheck(L, dlen > 0, 2, "empty delimiter");
  luaL_argcheck(L, max >= 0, 3, "max must be non-negative");
  if ((busy = check_reader(L, lc)) != 0) return busy;
  lua_settop(L, 2);                      /* keeps 'd' alive while parked */
  lc->rmode = RD_UNTIL;
  lc->delim = d;
  lc->dlen = dlen;
  lc->want = (size_t)max;
  return read_start(L, lc, lc->want + dlen + 1 > INPUT_CAP ? lc->want + dlen + 1 : INPUT_CAP, NULL);
}

/* conn:read_some([max]) -- whatever has arrived, 1 to max bytes. */
static int conn_read_some (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, INPUT_CAP);
  int busy;
  luaL_argcheck(L, max > 0, 2, "max must be positive");
  if ((busy = check_reader(L, lc)) != 0) return busy;
  lua_settop(L, 1);
  lc->rmode = RD_SOME;
  lc->want = (size_t)max;
  return read_start(L, lc, INPUT_CAP, NULL);
}

/* Where the request head buffered whole at the start of lc's input lies
** (see conn_take_head; the limits are the arguments 2 to 4): its first
** line at 'p' + '*skip', '*len' bytes to the end of its empty line; NULL if
** there is none (nothing consumed). */
static const char *head_find (lua_State *L, lconn *lc, size_t *skip, size_t *hlen) {
  lua_Integer max_line = lua_tointeger(L, 2), max_head = lua_tointeger(L, 3);
  lua_Integer max_lines = lua_tointeger(L, 4), n = 0;
  size_t len, size = 0, k;
  const char *p, *end, *line, *nl;
  if (lc->s == NULL || lc->readers.head != NULL || (len = sh_stream_inlen(lc->s)) == 0
      || (p = sh_stream_peek(lc->s, len)) == NULL)
    return NULL;
  end = p + len;
  *skip = 0;
  if (p[0] == '\n') *skip = 1;                  /* one empty line before a request */
  else if (len >= 2 && p[0] == '\r' && p[1] == '\n') *skip = 2;
  for (line = p + *skip; line < end; line = nl + 1) {
    nl = memchr(line, '\n', (size_t)(end - line));
    if (nl == NULL || (lua_Integer)(nl - line) > max_line) break;
    k = (size_t)(nl - line);
    n++;
    size += k + 1;
    if (n > 1 && (lua_Integer)size > max_head) break;
    if (n > 1 && (k == 0 || (k == 1 && line[0] == '\r'))) {   /* the empty line: done */
      *hlen = (size_t)(nl + 1 - (p + *skip));
      return p;
    }
    if (n > max_lines + 1) break;
  }
  return NULL;
}

/* The head found by head_find is the caller's: take it from the input. */
static void head_taken (lconn *lc, size_t skip, size_t hlen) {
  sh_stream_consume(lc->s, skip + hlen);
  lc->handed += hlen;
  consumed(lc, skip + hlen);
  sh_stream_partial(lc->s, 0);
  if (lc->cut[0] != '\0') cut_now(lc);
}

/* conn_take_head's result: the head buffered whole, pushed and consumed,
** or nil. */
static int head_scan (lua_State *L, lconn *lc) {
  size_t skip, hlen;
  const char *p = head_find(L, lc, &skip, &hlen);
  if (p == NULL) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushlstring(L, p + skip, hlen);
  head_taken(lc, skip, hlen);
  return 1;
}

/* A head this long or shorter is copied to the C stack to be parsed. */
#define HEAD_COPY 2048

/* conn_take_request's result: the head buffered whole, consumed and parsed
** (shl_http_push_request's values), or false. It is copied (onto the C
** stack, or into a Lua string when long) and consumed before it is parsed:
** the values pushed may run the collector's finalizers. */
static int request_scan (lua_State *L, lconn *lc) {
  char copy[HEAD_COPY];
  size_t skip, hlen;
  const char *p = head_find(L, lc, &skip, &hlen), *head = copy;
  lua_Integer maxh = lua_tointeger(L, 4);
  if (p == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (hlen <= sizeof copy) memcpy(copy, p + skip, hlen);
  else head = lua_pushlstring(L, p + skip, hlen);   /* copied before it may collect */
  head_taken(lc, skip, hlen);
  if (maxh > SH_HTTP_MAX_HEADERS) maxh = SH_HTTP_MAX_HEADERS;   /* head_find kept to max_lines */
  if (maxh < 1) maxh = 1;
  return shl_http_push_request(L, head, hlen, (int)maxh);
}

static int take_head_k (lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  if (!lua_toboolean(L, 6)) return lua_gettop(L) - 5;   /* nil, err: nothing came */
  lua_settop(L, 5);
  return ctx ? request_scan(L, checkconn(L, 1)) : head_scan(L, checkconn(L, 1));
}

/* conn:take_head(max_line, max_head, max_lines [, wait]) -- the request
** head at the start of the input when it is buffered whole, or nil
** (nothing consumed): the bytes from its first line to its empty line, ends
** of line kept, one empty line before it skipped. nil as well for anything
** the line-by-line reading of sockhost.http (read_head in
** bindings/lua/http.server.lua) would refuse or wait longer for: a line
** longer than max_line, more than max_head bytes (the first line and each
** header line, with one byte for its end), more than max_lines header
** lines, a head not complete yet; that path then reads it and answers.
** With 'wait' (seconds, as conn:settimeout takes them), when nothing is buffered it first
** waits for input that long, like a read: nil, "timeout" / "closed" if none
** came. The fast path of sockhost.http: one call instead of a read_until
** per line. conn:take_request: the same, parsed ('parse' 1). */
static int take_head_or_request (lua_State *L, int parse) {
  lconn *lc = checkconn(L, 1);
  int busy;
  luaL_checkinteger(L, 2);
  luaL_checkinteger(L, 3);
  luaL_checkinteger(L, 4);
  if (lua_isnoneornil(L, 5) || lc->s == NULL || sh_stream_inlen(lc->s) > 0) {
    lua_settop(L, 4);
    return parse ? request_scan(L, lc) : head_scan(L, lc);
  }
  if ((busy = check_reader(L, lc)) != 0) return busy;
  lua_settop(L, 5);
  lc->rmode = RD_WAIT;
  return read_start_t(L, lc, INPUT_CAP, take_head_k, shl_opttimeout(L, 5, -1), parse);
}

static int conn_take_head (lua_State *L) {
  return take_head_or_request(L, 0);
}

/* conn:take_request(max_line, max_head, max_headers [, wait]) -- as
** take_head, and the head parsed (sockhost.http.parser's rules):
** method, target, path, query_string, version, keep_alive, chunked,
** upgrade, length, headers; false for a head not buffered whole (or over a
** limit; nothing consumed); false, err, status for a head the parser
** refuses (consumed); nil, err when nothing came. */
static int conn_take_request (lua_State *L) {
  return take_head_or_request(L, 1);
}

/* The lines() iterator: ends at the end of the stream, raises on errors
** such as "timeout" or "line too long". */
static int lines_k (lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  if (lua_isnil(L, 2)) {                 /* nil, err [, partial] */
    const char *err = lua_tostring(L, 3);
    if (err != NULL && strcmp(err, "closed") != 0)
      return luaL_error(L, "conn:lines(): %s", err);
    lua_pushnil(L);
    return 1;
  }
  lua_settop(L, 2);
  return 1;
}

static int lines_iter (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  int busy;
  lua_settop(L, 1);
  if ((busy = check_reader(L, lc)) != 0) {
    if (lc->s == NULL) { lua_pushnil(L); return 1; }
    return luaL_error(L, "conn:lines(): busy");
  }
  lc->rmode = RD_LINE;
  return read_start(L, lc, line_cap(lc, 0), lines_k);
}

/* conn:lines() -- for line in conn:lines() do ... end */
static int conn_lines (lua_State *L) {
  checkconn(L, 1);
  lua_pushcfunction(L, lines_iter);
  lua_pushvalue(L, 1);
  return 2;
}

/* ====================== Writing ====================== */

/* The current writer is finished: hand the turn to the next one. */
static void writer_done (lconn *lc, lua_State *L) {
  shl_task *t = lc->writers.head;
  if (t == NULL || t->co != L) return;
  shl_waitq_pop(&lc->writers);
  shl_waitq_wake_head(&lc->writers);     /* the next one's turn */
}

static int write_timeout (void *obj, shl_task *t, int cancel) {
  lconn *lc = obj;
  if (shl_waitq_remove(&lc->writers, t) == 1 && !cancel) shl_waitq_wake_head(&lc->writers);
  if (cancel) return 0;
  return shl_pushfail(t->co, "timeout");
}

static int write_k (lua_State *L, int status, lua_KContext ctx);

/* Send arguments i..top, starting 'off' bytes into argument i. */
static int write_from (lua_State *L, lconn *lc, int i, size_t off) {
  int top = lua_gettop(L);
  shl_task *t;
  while (i <= top) {
    struct iovec iov[MAX_IOV];
    size_t left, total = 0;
    ssize_t w;
    int n = 0, j;
    for (j = i; j <= top && n < MAX_IOV; j++, n++) {
      size_t len;
      const char *p = lua_tolstring(L, j, &len);
      if (j == i) { p += off; len -= off; }
      iov[n].iov_base = (void *)p;
      iov[n].iov_len = len;
      total += len;
    }
    w = total > 0 ? sh_stream_write(lc->s, iov, n, OUT_HIGH) : 0;
    if (w < 0) {
      writer_done(lc, L);
      return shl_pushfail(L, "closed");
    }
    lc->tx += (size_t)w;
    lc->H->counts.bytes_out += (size_t)w;
    for (left = (size_t)w, j = 0; j < n; j++) {   /* advance past what was taken */
      if (left < iov[j].iov_len) { off += left; break; }
      left -= iov[j].iov_len;
      i++;
      off = 0;
    }
    if ((size_t)w < total) break;       /* the queue is full */
  }
  if (i > top) {
    if (lc->corked && lc->readers.head != NULL) sh_stream_flush(lc->s);   /* nothing would */
    writer_done(lc, L);
    lua_pushboolean(L, 1);
    return 1;
  }
  t = shl_checktask(L, "conn:write()");
  lc->woff = off;
  return shl_wait(L, &lc->writers, t, SHL_WAIT_WRITE, lc->timeout, write_timeout, lc, i, write_k);
}

/* Resumed: the queue drained (nothing pushed), or the wait failed (nil, err
** pushed), or it is this writer's turn (ctx 0: start at argument 2). */
static int write_k (lua_State *L, int status, lua_KContext ctx) {
  lconn *lc = checkconn(L, 1);
  shl_task *t = shl_current(L);
  (void)status;
  if (t != NULL && lua_gettop(L) > t->top) return lua_gettop(L) - t->top;
  if (lc->s == NULL) {
    writer_done(lc, L);
    return shl_pushfail(L, "closed");
  }
  return ctx == WRITE_TURN ? write_from(L, lc, 2, 0) : write_from(L, lc, (int)ctx, lc->woff);
}

/* conn:write(...) -- strings or numbers; true, or nil, err. */
static int conn_write (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  int i, top = lua_gettop(L);
  for (i = 2; i <= top; i++) luaL_checklstring(L, i, NULL);
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  if (lc->writers.head != NULL) {        /* another task is writing: queue up */
    shl_task *t = shl_checktask(L, "conn:write()");
    return shl_wait(L, &lc->writers, t, SHL_WAIT_WRITE, lc->timeout, write_timeout, lc,
                    WRITE_TURN, write_k);
  }
  return write_from(L, lc, 2, 0);
}

/* ====================== The peer's address ====================== */

void shl_conn_setpeer (lconn *lc, const struct sockaddr *sa, socklen_t len) {
  peer_addr *p = &lc->peer;
  memset(p, 0, sizeof *p);
  if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
    memcpy(p->addr, &in4->sin_addr, 4);
    p->port = in4->sin_port;
    p->family = 4;
  } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    memcpy(p->addr, &in6->sin6_addr, 16);
    p->scope = in6->sin6_scope_id;
    p->port = in6->sin6_port;
    p->family = 6;
  }
}

/* A connection we made: ask the socket once, while it still knows. */
static void learn_peer (lconn *lc) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(sh_stream_fd(lc->s), (struct sockaddr *)&ss, &len) == 0)
    shl_conn_setpeer(lc, (struct sockaddr *)&ss, len);
}

/* The remembered address as a socket address; its length, 0 if none. */
static socklen_t remembered (const lconn *lc, struct sockaddr_storage *ss) {
  const peer_addr *p = &lc->peer;
  memset(ss, 0, sizeof *ss);
  if (p->family == 4) {
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    in4->sin_family = AF_INET;
    memcpy(&in4->sin_addr, p->addr, 4);
    in4->sin_port = p->port;
    return sizeof *in4;
  }
  if (p->family == 6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    memcpy(&in6->sin6_addr, p->addr, 16);
    in6->sin6_scope_id = p->scope;
    in6->sin6_port = p->port;
    return sizeof *in6;
  }
  return 0;
}

/* ---------------- Behind a balancer: the PROXY protocol ---------------- */

/* An address from a PROXY header as text, in the conn's scheme. */
static void format_proxied (lconn *lc, const struct sockaddr *sa, socklen_t len,
                            char *buf, size_t n) {
  sh_scheme scheme = sa->sa_family == AF_UNIX ? SH_UNIX : sh_tls_is_tls(lc->s) ? SH_TLS : SH_TCP;
  sh_addr_format(sa, len, scheme, buf, n);
}

/* Keep what the balancer said (l_listener.c, before the handler runs):
** conn:peer() names the client it gives from then on, conn:proxy() shows it. */
void shl_conn_setproxy (lconn *lc, const sh_proxy_info *info) {
  sh_proxy_info *p = sh_proxy_copy(info);
  if (p == NULL) return;                    /* out of memory: conn:proxy() is nil */
  free(lc->proxy);
  lc->proxy = p;
}

/* Push a proxied address, or nil when the header gave none. */
static void push_proxied (lua_State *L, lconn *lc, const struct sockaddr_storage *ss,
                          socklen_t len) {
  char buf[160];
  if (!lc->proxy->has_addr) { lua_pushnil(L); return; }
  format_proxied(lc, (const struct sockaddr *)ss, len, buf, sizeof buf);
  lua_pushstring(L, buf);
}

/* The v2 TLVs as a list of { type =, value = }. */
static void push_tlvs (lua_State *L, const sh_proxy_info *p) {
  size_t i = 0;
  int k = 0;
  lua_createtable(L, 0, 0);
  while (i + 3 <= p->tlvlen) {               /* checked well formed by the parser */
    size_t vlen = ((size_t)p->tlv[i + 1] << 8) | p->tlv[i + 2];
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, p->tlv[i]);
    lua_setfield(L, -2, "type");
    lua_pushlstring(L, (const char *)p->tlv + i + 3, vlen);
    lua_setfield(L, -2, "value");
    lua_rawseti(L, -2, ++k);
    i += 3 + vlen;
  }
}

/* conn:proxy() -> { version =, command =, source =, destination =, tlvs = }
** | nil (no PROXY header) | nil, "closed" */
static int conn_proxy (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  const sh_proxy_info *p = lc->proxy;
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  if (p == NULL) { lua_pushnil(L); return 1; }
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, p->version);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, p->local ? "LOCAL" : "PROXY");
  lua_setfield(L, -2, "command");
  push_proxied(L, lc, &p->src, p->srclen);
  lua_setfield(L, -2, "source");
  push_proxied(L, lc, &p->dst, p->dstlen);
  lua_setfield(L, -2, "destination");
  if (p->version == 2) {
    push_tlvs(L, p);
    lua_setfield(L, -2, "tlvs");
  }
  return 1;
}

/* The peer's address string ("tcp://127.0.0.1:5000") into buf: the one
** remembered, else the socket's. Returns 0, or -1 with errno set (a Unix
** socket that cannot tell). The conn is open. */
static int format_peer (lconn *lc, char *buf, size_t n) {
  struct sockaddr_storage ss;
  socklen_t len;
  sh_scheme scheme;
  if (lc->proxy != NULL && lc->proxy->has_addr) {    /* the client behind a balancer */
    format_proxied(lc, (const struct sockaddr *)&lc->proxy->src, lc->proxy->srclen, buf, n);
    return 0;
  }
  len = remembered(lc, &ss);
  if (len == 0) {
    len = sizeof ss;
    if (getpeername(sh_stream_fd(lc->s), (struct sockaddr *)&ss, &len) != 0) return -1;
  }
  scheme = ss.ss_family == AF_UNIX ? SH_UNIX : sh_tls_is_tls(lc->s) ? SH_TLS : SH_TCP;
  sh_addr_format((struct sockaddr *)&ss, len, scheme, buf, n);
  return 0;
}

/* ---------------- Batching: cork, uncork, buffered ----------------
** While corked, writes are held in the stream (up to the high-water mark)
** and go out together: at uncork, when a read on the conn has to wait for
** input (the batch it answers is over), when a write comes while a read
** waits, at the high-water mark, at shutdown and close. */

/* conn:cork() -> true | nil, "closed" */
static int conn_cork (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  lc->corked = 1;
  sh_stream_cork(lc->s, 1);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:uncork() -> true | nil, "closed": what was held goes out now. */
static int conn_uncork (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  lc->corked = 0;
  sh_stream_cork(lc->s, 0);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:buffered() -> bytes written, not yet handed to the kernel. */
static int conn_buffered (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  lua_pushinteger(L, (lua_Integer)sh_stream_outlen(lc->s));
  return 1;
}

/* conn:pending() -> bytes buffered for reading, whether the stream ended.
** Never waits: what the loop has already read, as it is now. */
static int conn_pending (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  lua_pushinteger(L, (lua_Integer)sh_stream_inlen(lc->s));
  lua_pushboolean(L, sh_stream_eof(lc->s));
  return 2;
}

/* ====================== Stream events ====================== */


/* Say in the log why the conn is cut ("conn #7 127.0.0.1:5000: why,
** closing"), then close it at once. */
static void cut (lconn *lc, const char *why) {
  char peer[160];
  if (lc->s == NULL) return;
  if (format_peer(lc, peer, sizeof peer) != 0) strcpy(peer, "?");
  sh_log(SH_LOG_INFO, "conn #%u %s: %s, closing", lc->id, peer, why);
  close_internal(lc, CLOSE_ABORT);
}

/* The read that just failed with "too large" cuts the conn. */
static void cut_now (lconn *lc) {
  char why[sizeof lc->cut];
  memcpy(why, lc->cut, sizeof why);
  lc->cut[0] = '\0';
  cut(lc, why);
}

/* The host's buffers are over their budget, and this conn holds the most:
** its reader gets "out of memory", and it is cut. */
static void on_over (sh_stream *s, lconn *lc) {
  char why[128];
  snprintf(why, sizeof why, "holds %zu bytes, the most, with all buffers over their "
           "limit of %zu", sh_stream_charged(s), (size_t)lc->H->max_buffers);
  shl_waitq_fail_all(&lc->readers, "out of memory");
  lc->H->counts.buffer_cuts++;
  cut(lc, why);
}

static void on_stream (sh_stream *s, int what, void *ctx) {
  lconn *lc = ctx;
  if (what & SH_STREAM_IDLE) {
    lc->H->counts.idle_cuts++;
    cut(lc, "idle too long");
    return;
  }
  if (what & SH_STREAM_SLOW) {
    lc->H->counts.line_cuts++;
    cut(lc, "line not finished in time");
    return;
  }
  if (what & SH_STREAM_OVER) { on_over(s, lc); return; }
  if ((what & SH_STREAM_READ) && lc->readers.head != NULL) {
    shl_task *t = lc->readers.head;
    int n;
    lua_checkstack(t->co, 4);
    n = try_read(t->co, lc);
    if (n >= 0) {
      lc->served = 1;
      reader_done(lc);
      shl_unpark(t);
      if (lc->cut[0] != '\0') cut_now(lc);   /* its reader is out of the queue */
      shl_resume(t, n);
      if ((lc = sh_stream_ctx(s)) == NULL) return;   /* closed meanwhile */
    }
  }
  if (sh_stream_error(s) != 0) shl_waitq_fail_all(&lc->writers, "closed");
  if ((what & SH_STREAM_DRAIN) && lc->writers.head != NULL &&
      lc->writers.head->state == TASK_PARKED) {
    shl_task *t = lc->writers.head;
    shl_unpark(t);
    shl_resume(t, 0);
  }
}

/* ====================== Lifetime ====================== */

void shl_counter_release (shl_counter *c) {
  if (c != NULL && --c->refs == 0) free(c);
}

static lconn *conn_alloc (lua_State *L, shl_host *H) {
  lconn *lc;
  if (!lua_checkstack(L, 2)) return NULL;
  lc = (lconn *)lua_newuserdatauv(L, sizeof *lc, 0);
  memset(lc, 0, sizeof *lc);
  lc->state = CONN_CLOSED;               /* until it has a stream */
  lc->H = H;
  lc->timeout = -1;
  lc->max_line = (size_t)H->max_line;
  lc->max_all = MAX_ALL;
  lc->born = sh_now();
  luaL_setmetatable(L, CONN_MT);
  return lc;
}

lconn *shl_conn_new (lua_State *L, shl_host *H, int fd) {
  lconn *lc = conn_alloc(L, H);
  if (lc == NULL) { close(fd); return NULL; }
  lc->s = sh_stream_new(H->loop, fd, on_stream, lc);
  if (lc->s == NULL) {
    close(fd);
    lua_pop(L, 1);
    return NULL;
  }
  lc->state = CONN_OPEN;
  sh_stream_set_lowat(lc->s, OUT_LOW);
  sh_stream_set_budget(lc->s, H->budget);
  sh_stream_set_cap(lc->s, fit(lc, INPUT_CAP));
  lc->id = ++H->next_id;
  return lc;
}

/* Take over stream 's', handed out without an owner (a TLS handshake). */
static void adopt (lconn *lc, sh_stream *s) {
  lc->s = s;
  lc->state = CONN_OPEN;
  sh_stream_set_owner(s, on_stream, lc);
  sh_stream_cork(s, lc->corked);
  sh_stream_set_lowat(s, OUT_LOW);
  sh_stream_set_budget(s, lc->H->budget);
  sh_stream_set_cap(s, fit(lc, INPUT_CAP));
}

lconn *shl_conn_new_stream (lua_State *L, shl_host *H, sh_stream *s) {
  lconn *lc = conn_alloc(L, H);
  if (lc == NULL) { sh_stream_abort(s); return NULL; }
  adopt(lc, s);
  lc->id = ++H->next_id;
  return lc;
}

void shl_conn_settimeout (lconn *lc, double timeout) { lc->timeout = timeout; }

#define SWEEP_EVERY 0.2     /* seconds between checks of the time limits */

/* Accepted connections are on a list, for the shutdown (shl_conn_drain_idle). */
static void track (lconn *lc) {
  shl_host *H = lc->H;
  if (lc->tracked) return;
  lc->tracked = 1;
  H->counts.open++;
  lc->prev = NULL;
  lc->next = H->accepted;
  if (H->accepted != NULL) H->accepted->prev = lc;
  H->accepted = lc;
}

static void untrack (lconn *lc) {
  if (!lc->tracked) return;
  lc->tracked = 0;
  lc->H->counts.open--;
  if (lc->prev != NULL) lc->prev->next = lc->next;
  else lc->H->accepted = lc->next;
  if (lc->next != NULL) lc->next->prev = lc->prev;
  lc->prev = lc->next = NULL;
}

void shl_conn_setlimits (lconn *lc, double idle, double line) {
  lc->idle = idle > 0 ? idle : 0;
  lc->line = line > 0 ? line : 0;
  if (lc->s == NULL) return;
  if (lc->H->sweep == NULL && (lc->idle > 0 || lc->line > 0))
    lc->H->sweep = sh_sweep_new(lc->H->loop, SWEEP_EVERY);
  sh_stream_set_limits(lc->s, lc->H->sweep, lc->idle, lc->line);
}

void shl_conn_count (lconn *lc, shl_counter *c) {
  lc->counter = c;
  c->live++;
  c->refs++;
  track(lc);
}

static void uncount (lconn *lc) {
  untrack(lc);
  if (lc->counter == NULL) return;
  lc->counter->live--;
  shl_counter_release(lc->counter);
  lc->counter = NULL;
}

/* Waiting for a new request on an accepted conn while shutting down? */
static int drain_now (lconn *lc) {
  return lc->H->draining && lc->counter != NULL && lc->s != NULL &&
         sh_stream_inlen(lc->s) == 0 && (lc->served || !lc->H->handed_over);
}

void shl_conn_drain_idle (shl_host *H) {
  lconn *lc = H->accepted, *next;
  for (; lc != NULL; lc = next) {
    next = lc->next;
    if (lc->readers.head != NULL && drain_now(lc)) close_internal(lc, CLOSE_FLUSH);
  }
}
void shl_conn_setmaxline (lconn *lc, size_t max_line) { lc->max_line = max_line; }

/* Close: flush first (CLOSE_FLUSH), drop output (CLOSE_ABORT), or, from a
** finalizer (CLOSE_GC), without touching tasks, which may be gone. */
static void close_handshake (lconn *lc, int how) {
  shl_task *t = lc->hs_task;
  sh_tls_cancel(lc->hs);
  lc->hs = NULL;
  lc->hs_task = NULL;
  lc->state = CONN_CLOSED;
  uncount(lc);
  if (how != CLOSE_GC && t != NULL) shl_wake_fail(t, "closed");
}

/* What the conn's reads handed to its script is likely garbage once it
** closes: ask for the collector's work on it, as much as one read's worth
** at most (a long-lived conn has handed much more, long collected). */
static void collect_handed (lconn *lc) {
  size_t most = lc->H->conn_share > 0 ? lc->H->conn_share : MAX_ALL;
  shl_host_collect(lc->H, lc->handed < most ? lc->handed : most);
}

static void close_internal (lconn *lc, int how) {
  sh_stream *s = lc->s;
  free(lc->proxy);
  lc->proxy = NULL;
  if (lc->state == CONN_HANDSHAKE) { close_handshake(lc, how); return; }
  if (lc->state == CONN_CLOSED) return;
  lc->state = CONN_CLOSED;
  lc->s = NULL;
  if (how == CLOSE_ABORT) sh_stream_abort(s);
  else sh_stream_close(s, lc->H->linger);
  uncount(lc);
  if (lc->handed >= SH_BUDGET_TRIM && how != CLOSE_GC) collect_handed(lc);
  lc->handed = 0;
  if (how == CLOSE_GC) {                   /* the tasks may be gone */
    lc->readers.head = lc->readers.tail = NULL;
    lc->writers.head = lc->writers.tail = NULL;
    return;
  }
  shl_waitq_fail_all(&lc->readers, "closed");
  shl_waitq_fail_all(&lc->writers, "closed");
}

void shl_conn_handler_exit (shl_task *t, void *ctx) {
  lconn *lc = ctx;
  (void)t;
  lc->task = NULL;
  close_internal(lc, CLOSE_FLUSH);
}

/* ====================== For the stats and the admin console ====================== */

void shl_conn_settask (lconn *lc, shl_task *t) { lc->task = t; }

void shl_conn_abort (lconn *lc) { close_internal(lc, CLOSE_ABORT); }

/* The task to describe: the handler, else whoever waits on the conn. */
static shl_task *conn_task (lconn *lc) {
  if (lc->task != NULL) return lc->task;
  if (lc->readers.head != NULL && !shl_is_standin(lc->readers.head)) return lc->readers.head;
  if (lc->writers.head != NULL && !shl_is_standin(lc->writers.head)) return lc->writers.head;
  return NULL;
}

void shl_conn_describe (lua_State *L, lconn *lc) {
  char peer[160];
  shl_task *t = conn_task(lc);
  luaL_checkstack(L, 6, NULL);
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, lc->id);
  lua_setfield(L, -2, "id");
  if (lc->s == NULL || format_peer(lc, peer, sizeof peer) != 0) strcpy(peer, "?");
  lua_pushstring(L, peer);
  lua_setfield(L, -2, "peer");
  lua_pushnumber(L, sh_now() - lc->born);
  lua_setfield(L, -2, "age");
  lua_pushinteger(L, (lua_Integer)lc->rx);
  lua_setfield(L, -2, "bytes_in");
  lua_pushinteger(L, (lua_Integer)lc->tx);
  lua_setfield(L, -2, "bytes_out");
  lua_pushinteger(L, lc->s != NULL ? (lua_Integer)sh_stream_inlen(lc->s) : 0);
  lua_setfield(L, -2, "buffered_in");
  lua_pushinteger(L, lc->s != NULL ? (lua_Integer)sh_stream_outlen(lc->s) : 0);
  lua_setfield(L, -2, "buffered_out");
  if (t != NULL) {
    shl_task_describe(L, t);
    lua_setfield(L, -2, "task");
  }
}

int shl_conn_list (lua_State *L, shl_host *H, unsigned below, int max) {
  lconn *lc;
  int n = 0;
  for (lc = H->accepted; lc != NULL && n < max; lc = lc->next) {
    if (below != 0 && lc->id >= below) continue;
    shl_conn_describe(L, lc);
    lua_rawseti(L, -2, ++n);
  }
  return n;
}

lconn *shl_conn_find (shl_host *H, unsigned id) {
  lconn *lc;
  for (lc = H->accepted; lc != NULL; lc = lc->next)
    if (lc->id == id) return lc;
  return NULL;
}

/* conn:close() -- deliver what is buffered, then close. */
static int conn_close (lua_State *L) {
  close_internal(checkconn(L, 1), CLOSE_FLUSH);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:abort() -- close now, dropping buffered output; TCP peers see a reset. */
static int conn_abort (lua_State *L) {
  close_internal(checkconn(L, 1), CLOSE_ABORT);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:shutdown() -- half-close: no more writes, reading goes on. */
static int conn_shutdown (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  sh_stream_shutdown(lc->s);
  lua_pushboolean(L, 1);
  return 1;
}

static int conn_gc (lua_State *L) {
  close_internal(checkconn(L, 1), CLOSE_GC);
  return 0;
}

/* conn:setlimits{ max_line =, idle_timeout =, line_timeout = } -- change
** this connection's limits (see sockhost.listen). */
static int conn_setlimits (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  double max_line = (double)lc->max_line, idle = lc->idle, line = lc->line;
  const char *notnum = NULL;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_pushnil(L);
  while (lua_next(L, 2) != 0) {          /* one pass: the names checked, the numbers read */
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    double *slot = NULL, v;
    int isnum;
    if (strcmp(k, "idle_timeout") == 0) slot = &idle;
    else if (strcmp(k, "line_timeout") == 0) slot = &line;
    else if (strcmp(k, "max_line") == 0) slot = &max_line;
    else luaL_error(L, "unknown option '%s'", luaL_tolstring(L, -2, NULL));
    v = lua_tonumberx(L, -1, &isnum);
    if (isnum) *slot = v;
    else if (notnum == NULL) notnum = k;  /* after the unknown names, as before */
    lua_pop(L, 1);
  }
  if (notnum != NULL) luaL_error(L, "option '%s' must be a number", notnum);
  luaL_argcheck(L, max_line >= 1, 2, "max_line must be positive");
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  lc->max_line = (size_t)max_line;
  shl_conn_setlimits(lc, idle, line);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:settimeout(seconds) -- for each later blocking call; nil: none. */
static int conn_settimeout (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  lc->timeout = shl_opttimeout(L, 2, -1);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:peer() -- the remote address, remembered for an IP peer (the
** socket forgets it after a reset). */
static int push_peer (lua_State *L, lconn *lc) {
  char buf[160];
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  if (format_peer(lc, buf, sizeof buf) != 0) return shl_pushfail(L, sh_strerror(errno));
  lua_pushstring(L, buf);
  return 1;
}

static int conn_peer (lua_State *L) { return push_peer(L, checkconn(L, 1)); }

/* conn:address() -- the local address. */
static int conn_address (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  return shl_push_sockname(L, sh_stream_fd(lc->s), 0, sh_tls_is_tls(lc->s) ? SH_TLS : -1, NULL);
}

static int conn_tostring (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  if (lc->s == NULL || push_peer(L, lc) != 1) {
    lua_pushfstring(L, "conn #%d (closed)", (int)lc->id);
    return 1;
  }
  lua_pushfstring(L, "conn #%d %s", (int)lc->id, lua_tostring(L, -1));
  return 1;
}

/* ====================== sockhost.connect ====================== */

static int connect_timeout (void *obj, shl_task *t, int cancel) {
  sh_connect_cancel((sh_connect *)obj);
  return cancel ? 0 : shl_pushfail(t->co, "timeout");
}

static void on_connected (int fd, const char *err, void *ctx) {
  shl_task *t = ctx;
  lconn *lc;
  shl_unpark(t);
  lua_checkstack(t->co, 3);
  if (err != NULL) {
    shl_resume(t, shl_pushfail(t->co, err));
    return;
  }
  if ((lc = shl_conn_new(t->co, shl_gethost(t->co), fd)) == NULL) {
    shl_resume(t, shl_pushfail(t->co, "out of memory"));
    return;
  }
  learn_peer(lc);
  shl_resume(t, 1);
}

/* ---------------- tls:// : connect, then the handshake ---------------- */

/* What a task parked in a TLS connect waits for: first the connection,
** then the handshake. */
typedef struct tls_connect {
  shl_task *t;
  sh_connect *req;       /* connecting, or NULL */
  sh_tls_hs *hs;         /* in the handshake, or NULL */
  sh_tls_ctx *ctx;       /* our reference, until the handshake has its own */
  double hs_timeout;
  char name[256];        /* server name: SNI and the certificate check */
} tls_connect;

static void tls_connect_free (tls_connect *x) {
  if (x->req != NULL) sh_connect_cancel(x->req);
  if (x->hs != NULL) sh_tls_cancel(x->hs);
  sh_tls_ctx_free(x->ctx);
  free(x);
}

/* The deadline of the whole connect + handshake ('timeout'). */
static int tls_connect_timeout (void *obj, shl_task *t, int cancel) {
  tls_connect *x = obj;
  int in_hs = x->hs != NULL;
  tls_connect_free(x);
  if (cancel) return 0;
  return shl_pushfail(t->co, in_hs ? "handshake timeout" : "timeout");
}

static void on_tls_done (sh_stream *s, const char *err, void *ctx) {
  tls_connect *x = ctx;
  shl_task *t = x->t;
  lconn *lc;
  x->hs = NULL;                          /* freed before this call */
  tls_connect_free(x);
  shl_unpark(t);
  lua_checkstack(t->co, 3);
  if (s == NULL) { shl_resume(t, shl_pushfail(t->co, err)); return; }
  if ((lc = shl_conn_new_stream(t->co, shl_gethost(t->co), s)) == NULL) {
    shl_resume(t, shl_pushfail(t->co, "out of memory"));
    return;
  }
  learn_peer(lc);
  shl_resume(t, 1);
}

static void on_tls_connected (int fd, const char *err, void *ctx) {
  tls_connect *x = ctx;
  shl_task *t = x->t;
  x->req = NULL;                         /* freed before this call */
  if (err == NULL) {
    x->hs = sh_tls_start(t->S->loop, x->ctx, fd, x->name, x->hs_timeout, on_tls_done, x);
    if (x->hs != NULL) return;           /* still parked, now on the handshake */
    err = "out of memory";
  }
  tls_connect_free(x);
  shl_unpark(t);
  lua_checkstack(t->co, 3);
  shl_resume(t, shl_pushfail(t->co, err));
}

static const char *const connect_opts[] = {
  "timeout", "cert", "key", "ca", "verify", "servername", "alpn", "min_version",
  "handshake_timeout", NULL
};

static int connect_tls (lua_State *L, shl_host *H, const sh_addr *a, double timeout) {
  const char *name = a->host;
  tls_connect *x;
  double hs_timeout;
  char err[400];
  shl_task *t = shl_checktask(L, "sockhost.connect()");
  sh_tls_ctx *ctx = shl_tls_ctx(L, 2, 0, &name, &hs_timeout, err, sizeof err);
  if (ctx == NULL) return shl_pushfail(L, err);
  x = calloc(1, sizeof *x);
  if (x == NULL) { sh_tls_ctx_free(ctx); return luaL_error(L, "out of memory"); }
  x->t = t;
  x->ctx = ctx;
  x->hs_timeout = hs_timeout;
  snprintf(x->name, sizeof x->name, "%s", name);
  x->req = sh_connect_start(H->loop, a->resolved ? NULL : shl_resolver(L, H), a,
                            on_tls_connected, x);
  if (x->req == NULL) { tls_connect_free(x); return luaL_error(L, "out of memory"); }
  return shl_park(L, t, SHL_WAIT_CONNECT, timeout < 0 ? -1 : timeout, tls_connect_timeout, x,
                  0, NULL);
}

/* sockhost.connect(addr [, opts]) -> conn, or nil, err (a malformed or
** datagram address too: "bad address '<addr>': <why>"). */
int shl_connect (lua_State *L) {
  shl_host *H = shl_gethost(L);
  size_t textlen;
  const char *text = luaL_checklstring(L, 1, &textlen);
  double timeout;
  sh_addr a;
  sh_connect *req;
  shl_task *t;
  char err[300];
  shl_checkoptions(L, 2, connect_opts);
  timeout = shl_optfield(L, 2, "timeout", CONNECT_TIMEOUT);
  if (sh_addr_parse(text, textlen, &a, err, sizeof err) != 0) return shl_pushfail(L, err);
  if (!sh_addr_is_stream(a.scheme)) {
    sh_addr_error(text, textlen, "not a stream address", err, sizeof err);
    return shl_pushfail(L, err);
  }
  if (a.scheme == SH_TLS) return connect_tls(L, H, &a, timeout);
  if (shl_tls_has_options(L, 2))
    return luaL_argerror(L, 2, "TLS options need a tls:// address (or conn:starttls)");
  t = shl_checktask(L, "sockhost.connect()");
  req = sh_connect_start(H->loop, a.resolved ? NULL : shl_resolver(L, H), &a, on_connected, t);
  if (req == NULL) return luaL_error(L, "out of memory");
  return shl_park(L, t, SHL_WAIT_CONNECT, timeout < 0 ? -1 : timeout, connect_timeout, req,
                  0, NULL);
}

/* ====================== TLS on a connection ====================== */

/* conn:tls() -> the session table, or nil for a plain connection. */
static int conn_tls (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  return shl_tls_push_info(L, lc->s);
}

static void on_starttls_done (sh_stream *s, const char *err, void *ctx) {
  lconn *lc = ctx;
  shl_task *t = lc->hs_task;
  lc->hs = NULL;
  lc->hs_task = NULL;
  if (s != NULL) adopt(lc, s);
  else lc->state = CONN_CLOSED;           /* the handshake failed */
  if (lc->s == NULL) uncount(lc);        /* the handshake failed: closed */
  else shl_conn_setlimits(lc, lc->idle, lc->line);
  if (t == NULL) return;
  shl_unpark(t);
  lua_checkstack(t->co, 2);
  if (lc->s == NULL) { shl_resume(t, shl_pushfail(t->co, err)); return; }
  lua_pushboolean(t->co, 1);
  shl_resume(t, 1);
}

static int starttls_cancel (void *obj, shl_task *t, int cancel) {
  lconn *lc = obj;
  (void)t;
  lc->hs_task = NULL;
  close_internal(lc, CLOSE_GC);
  return cancel ? 0 : shl_pushfail(t->co, "closed");
}

static const char *const starttls_opts[] = {
  "server", "cert", "key", "ca", "verify", "servername", "alpn", "min_version",
  "certs", "handshake_timeout", NULL
};

static int starttls_k (lua_State *L, int status, lua_KContext ctx);

/* Queued output must reach the peer before the handshake: wait for it as
** a writer does, until the queue is empty. */
static int starttls_flush (lua_State *L, lconn *lc, shl_task *t) {
  sh_stream_set_lowat(lc->s, 0);
  return shl_wait(L, &lc->writers, t, SHL_WAIT_WRITE, lc->timeout, write_timeout, lc, 0,
                  starttls_k);
}

/* Start the handshake (the output is flushed). Options at 2. */
static int starttls_go (lua_State *L, lconn *lc, shl_task *t) {
  int server = lc->counter != NULL, fd;
  const char *name = NULL;
  struct sockaddr_storage ss;
  socklen_t sslen = sizeof ss;
  char host[160] = "", err[400];
  double hs_timeout;
  sh_tls_ctx *ctx;
  if (lua_istable(L, 2)) {
    if (lua_getfield(L, 2, "server") != LUA_TNIL) server = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (!server && getpeername(sh_stream_fd(lc->s), (struct sockaddr *)&ss, &sslen) == 0 &&
      ss.ss_family != AF_UNIX)
    sh_addr_host((struct sockaddr *)&ss, host, sizeof host);
  name = host;
  ctx = shl_tls_ctx(L, 2, server, &name, &hs_timeout, err, sizeof err);
  if (ctx == NULL) return shl_pushfail(L, err);
  fd = sh_stream_detach(lc->s);          /* drops plaintext already buffered */
  lc->s = NULL;
  lc->state = CONN_HANDSHAKE;
  lc->hs = sh_tls_start(lc->H->loop, ctx, fd, name, hs_timeout, on_starttls_done, lc);
  sh_tls_ctx_free(ctx);                  /* the handshake holds its own */
  if (lc->hs == NULL) {
    lc->state = CONN_CLOSED;
    uncount(lc);
    return shl_pushfail(L, "out of memory");
  }
  lc->hs_task = t;
  lua_settop(L, 1);                      /* the conn stays on the stack */
  return shl_park(L, t, SHL_WAIT_HANDSHAKE, -1, starttls_cancel, lc, 0, NULL);
}

/* Resumed while flushing: the queue drained (nothing pushed), or the wait
** failed (nil, err pushed: "timeout", "closed"). */
static int starttls_k (lua_State *L, int status, lua_KContext kctx) {
  lconn *lc = checkconn(L, 1);
  shl_task *t = shl_current(L);
  (void)status; (void)kctx;
  if (lc->s != NULL) sh_stream_set_lowat(lc->s, OUT_LOW);
  if (t != NULL && lua_gettop(L) > t->top) return lua_gettop(L) - t->top;
  writer_done(lc, L);
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  sh_stream_flush(lc->s);                /* what a cork holds goes first */
  if (sh_stream_outlen(lc->s) > 0) return starttls_flush(L, lc, t);
  lua_settop(L, 2);
  return starttls_go(L, lc, t);
}

/* conn:starttls([opts]) -> true, or nil, err (the conn is closed then).
** A server side if opts.server, else if the conn was accepted. */
static int conn_starttls (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  shl_task *t;
  shl_checkoptions(L, 2, starttls_opts);
  if (lc->state == CONN_HANDSHAKE) return shl_pushfail(L, "busy");   /* another task's */
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  if (sh_tls_is_tls(lc->s)) return shl_pushfail(L, "already TLS");
  if (lc->readers.head != NULL || lc->writers.head != NULL) return shl_pushfail(L, "busy");
  t = shl_checktask(L, "conn:starttls()");
  lua_settop(L, 2);
  sh_stream_flush(lc->s);                /* what a cork holds goes first */
  if (sh_stream_outlen(lc->s) > 0) return starttls_flush(L, lc, t);
  return starttls_go(L, lc, t);
}

/* conn:peercred() -> { pid =, uid =, gid = } for a Unix-domain connection;
** nil, err otherwise. */
static int conn_peercred (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  struct ucred cred;
  socklen_t len = sizeof cred;
  struct sockaddr_storage ss;
  socklen_t sslen = sizeof ss;
  if (lc->s == NULL) return shl_pushfail(L, "closed");
  if (getsockname(sh_stream_fd(lc->s), (struct sockaddr *)&ss, &sslen) != 0 ||
      ss.ss_family != AF_UNIX)
    return shl_pushfail(L, "not a unix socket");
  if (getsockopt(sh_stream_fd(lc->s), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return shl_pushfail(L, sh_strerror(errno));
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, cred.pid);
  lua_setfield(L, -2, "pid");
  lua_pushinteger(L, cred.uid);
  lua_setfield(L, -2, "uid");
  lua_pushinteger(L, cred.gid);
  lua_setfield(L, -2, "gid");
  return 1;
}

/* ====================== The HTTP client's response head ======================
** conn:take_response, the fast path of sockhost.http's client
** (bindings/lua/http.client.lua): a response head buffered whole, checked
** and taken in one call by core/sh_httpc.c. */

/* Push what the response head at the start of lc's input says and take
** it, or push false (nothing consumed): see conn_take_response. */
static int response_scan (lua_State *L, lconn *lc, size_t max_head) {
  sh_httpc_head h;
  size_t len;
  const char *p;
  if (lc->s == NULL || lc->readers.head != NULL || (len = sh_stream_inlen(lc->s)) == 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (len > max_head + 3) len = max_head + 3;    /* no pullup past a head's bound */
  p = sh_stream_peek(lc->s, len);
  if (p == NULL || sh_httpc_head_parse(p, len, max_head, &h) != SH_HTTPC_OK) {
    lua_pushboolean(L, 0);
    return 1;
  }
  luaL_checkstack(L, 8, NULL);
  lua_pushinteger(L, h.status);
  lua_pushlstring(L, p + h.reason_off, h.reason_len);
  lua_pushinteger(L, h.minor);
  lua_pushlstring(L, p + h.fields_off, h.fields_len);
  lua_pushinteger(L, h.length);
  lua_pushboolean(L, h.chunked);
  lua_pushboolean(L, h.close);
  lua_pushboolean(L, h.keep_alive);
  sh_stream_consume(lc->s, h.used);
  lc->handed += h.used;
  consumed(lc, h.used);
  sh_stream_partial(lc->s, 0);
  if (lc->cut[0] != '\0') cut_now(lc);
  return 8;
}

static int take_response_k (lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  if (!lua_toboolean(L, 3)) return lua_gettop(L) - 2;   /* nil, err: nothing came */
  lua_settop(L, 2);
  return response_scan(L, checkconn(L, 1), (size_t)lua_tointeger(L, 2));
}

/* conn:take_response(max_head) -> status, reason, minor, fields, length,
** chunked, close, keep_alive | false | nil, err. Waits (the conn's timeout)
** while nothing is buffered: nil, "timeout" / "closed" / "busy" as a read.
** Then the response head at the start of the input, when it is there whole
** and core/sh_httpc.c takes it (see sh_httpc.h), taken from the input: the
** status code, the reason phrase, 0 or 1 for HTTP/1.0 or 1.1, the header
** lines (CRLF between them, none after the last), Content-Length or -1,
** and whether Transfer-Encoding is chunked and Connection holds "close"
** and "keep-alive"; else false, nothing taken, for the client's line by
** line reader to read, wait for or refuse. */
static int conn_take_response (lua_State *L) {
  lconn *lc = checkconn(L, 1);
  lua_Integer max = luaL_checkinteger(L, 2);
  int busy;
  luaL_argcheck(L, max >= 0 && max < INT_MAX, 2, "out of range");
  if ((busy = check_reader(L, lc)) != 0) return busy;
  if (sh_stream_inlen(lc->s) > 0) {
    lua_settop(L, 2);
    return response_scan(L, lc, (size_t)max);
  }
  lua_settop(L, 2);
  lc->rmode = RD_WAIT;
  return read_start_t(L, lc, INPUT_CAP, take_response_k, lc->timeout, 0);
}

/* ====================== Registration ====================== */

static const luaL_Reg conn_methods[] = {
  {"read", conn_read}, {"read_until", conn_read_until}, {"read_some", conn_read_some},
  {"lines", conn_lines}, {"write", conn_write}, {"cork", conn_cork}, {"uncork", conn_uncork},
  {"buffered", conn_buffered}, {"resp_commands", conn_resp_commands}, {"pending", conn_pending}, {"settimeout", conn_settimeout},
  {"peer", conn_peer}, {"address", conn_address}, {"close", conn_close},
  {"shutdown", conn_shutdown}, {"abort", conn_abort}, {"peercred", conn_peercred},
  {"setlimits", conn_setlimits}, {"tls", conn_tls}, {"starttls", conn_starttls},
  {"proxy", conn_proxy}, {"take_head", conn_take_head},
  {"take_request", conn_take_request}, {"take_response", conn_take_response}, {NULL, NULL}
};

static const luaL_Reg conn_meta[] = {
  {"__index", NULL}, {"__gc", conn_gc}, {"__close", conn_close},
  {"__tostring", conn_tostring}, {NULL, NULL}
};

void shl_conn_open (lua_State *L) {
  shl_newclass(L, CONN_MT, conn_meta, conn_methods);
}
