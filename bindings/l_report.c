/* l_report.c -- this process's side of --metrics: the reporter answers the
** collector's asks (core/sh_collector.h) with sockhost.metrics.render(),
** from the loop, never blocking it: the report goes into a stream, which
** the loop sends as the collector takes it; while the collector has not
** taken the last one, no new one is made. It also serves
** sockhost.stats{ all = true }: the sum of every process's report, asked
** of the collector by a task that parks until it comes.
**
** The reporter's stream keeps nothing alive: a process whose script is
** done exits as it would without --metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../core/sh_collector.h"
#include "../core/sh_log.h"
#include "../core/sh_stream.h"
#include "../core/sh_util.h"
#include "shl.h"

#define MAX_WAITERS 64          /* tasks waiting for the sum at once */
#define SUM_TIMEOUT 5.0         /* seconds a task waits for it */
#define MAX_UNSENT (1u << 20)   /* a report not taken yet: no new one */
#define FINAL_LINGER 2.0        /* seconds the last report may take to go out */

typedef struct reporter {
  shl_pending node;             /* cancelled at lua_close */
  shl_host *H;
  sh_stream *s;                 /* NULL once the collector is gone */
  unsigned long asked;          /* the last "A" sent */
  shl_task *waiters[MAX_WAITERS];
  int nwaiters;
  int failed;                   /* render failed once: logged */
} reporter;

static reporter *the_reporter;  /* one per process */

static void forget_waiter (reporter *r, shl_task *t) {
  int i;
  for (i = 0; i < r->nwaiters; i++)
    if (r->waiters[i] == t) { r->waiters[i] = r->waiters[--r->nwaiters]; return; }
}

static void wake_all (reporter *r, const char *text, size_t len, const char *err) {
  while (r->nwaiters > 0) {
    shl_task *t = r->waiters[--r->nwaiters];
    shl_unpark(t);
    lua_checkstack(t->co, 2);
    if (err != NULL) {
      lua_pushnil(t->co);
      lua_pushstring(t->co, err);
      shl_wake(t, 2);
    } else {
      lua_pushlstring(t->co, text, len);
      shl_wake(t, 1);
    }
  }
}

static void end_reporter (reporter *r) {
  if (r->s != NULL) sh_stream_abort(r->s);
  r->s = NULL;
  wake_all(r, NULL, 0, "the metrics collector is gone");
}

static void cancel (shl_pending *p) {
  reporter *r = (reporter *)p;
  if (r->s != NULL) sh_stream_abort(r->s);
  r->s = NULL;
  r->nwaiters = 0;                             /* the tasks are being collected */
  if (the_reporter == r) the_reporter = NULL;
  free(r);
}

/* require("sockhost.metrics").render() */
static int render (lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "sockhost.metrics");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "render");
  lua_call(L, 0, 1);
  return 1;
}

/* The collector asked (seq): send the report. */
static void report (reporter *r, unsigned long seq) {
  lua_State *L = r->H->L;
  struct iovec iov[2];
  char head[64];
  size_t len;
  const char *text;
  if (sh_stream_outlen(r->s) > MAX_UNSENT || !lua_checkstack(L, 4)) return;
  lua_pushcfunction(L, render);
  if (shl_host_pcall(r->H->sched, L, 0, 1) != LUA_OK || !lua_isstring(L, -1)) {
    if (!r->failed++) sh_log(SH_LOG_WARN, "metrics: cannot render: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return;
  }
  text = lua_tolstring(L, -1, &len);
  iov[0].iov_base = head;
  iov[0].iov_len = (size_t)snprintf(head, sizeof head, "R %lu %zu\n", seq, len);
  iov[1].iov_base = (void *)text;
  iov[1].iov_len = len;
  if (sh_stream_write(r->s, iov, 2, iov[0].iov_len + len + MAX_UNSENT) < 0) end_reporter(r);
  lua_pop(L, 1);
}

/* The process is ending (its loop has stopped; the state is still whole):
** a last report, unasked, with everything counted since the last ask, then
** the stream closes once it is sent (lua_close delivers closing streams).
** The collector folds it into its base when the connection ends, so a
** reload or a graceful stop loses nothing. */
void shl_report_final (lua_State *L) {
  reporter *r = the_reporter;
  (void)L;
  if (r == NULL || r->s == NULL) return;
  report(r, 0);
  if (r->s == NULL) return;
  sh_stream_close(r->s, FINAL_LINGER);
  r->s = NULL;
  wake_all(r, NULL, 0, "the metrics collector is gone");
}

/* Take the whole messages in the input: asks, and sums. */
static void take (reporter *r) {
  for (;;) {
    size_t inlen = r->s != NULL ? sh_stream_inlen(r->s) : 0;
    ssize_t nl = inlen > 0 ? sh_stream_find(r->s, "\n", 1, 0) : -1;
    const char *p;
    char line[64];
    unsigned long seq, blen;
    if (nl < 0 || (size_t)nl >= sizeof line) return;
    if ((p = sh_stream_peek(r->s, (size_t)nl + 1)) == NULL) return;
    memcpy(line, p, (size_t)nl);
    line[nl] = '\0';
    if (sscanf(line, "T %lu %lu", &seq, &blen) == 2) {
      if (inlen < (size_t)nl + 1 + blen) {
        sh_stream_set_cap(r->s, (size_t)nl + 1 + blen + SH_STREAM_CAP);
        return;                                /* the body is not all here */
      }
      p = sh_stream_peek(r->s, (size_t)nl + 1 + blen);
      if (p == NULL) return;
      if (seq == r->asked) wake_all(r, p + nl + 1, blen, NULL);
      sh_stream_consume(r->s, (size_t)nl + 1 + blen);
      sh_stream_set_cap(r->s, SH_STREAM_CAP);
      continue;
    }
    sh_stream_consume(r->s, (size_t)nl + 1);
    if (sscanf(line, "Q %lu", &seq) == 1) {
      report(r, seq);
      if (r->s == NULL) return;
    }
  }
}

static void on_stream (sh_stream *s, int what, void *ctx) {
  reporter *r = ctx;
  if (what & SH_STREAM_READ) take(r);
  if (r->s != NULL && (sh_stream_eof(s) || sh_stream_error(s))) end_reporter(r);
}

void shl_report_start (lua_State *L, shl_host *H, int worker) {
  int fd = sh_collector_connect();
  reporter *r;
  char hello[64];
  struct iovec iov;
  if (fd < 0) return;
  r = calloc(1, sizeof *r);
  if (r == NULL || sh_fd_prepare(fd) != 0 || (r->s = sh_stream_new(H->loop, fd, on_stream, r)) == NULL) {
    free(r);
    close(fd);
    sh_log(SH_LOG_WARN, "metrics: cannot report to the collector (out of memory)");
    return;
  }
  r->H = H;
  r->node.cancel = cancel;
  shl_pending_add(L, &r->node);
  the_reporter = r;
  iov.iov_base = hello;
  iov.iov_len = (size_t)snprintf(hello, sizeof hello, "hello %d %d\n", worker, (int)getpid());
  if (sh_stream_write(r->s, &iov, 1, iov.iov_len) < 0) end_reporter(r);
}

/* ---------------- sockhost.stats{ all = true } ---------------- */

static int sum_timeout (void *obj, shl_task *t, int cancelled) {
  reporter *r = the_reporter;
  (void)obj;
  if (r != NULL) forget_waiter(r, t);
  if (cancelled) return 0;
  lua_pushnil(t->co);
  lua_pushliteral(t->co, "timeout");
  return 2;
}

/* The text (or nil, err) on top: require("sockhost.metrics").parse(text). */
static int parsed (lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  if (lua_type(L, 1) != LUA_TSTRING) return lua_gettop(L);     /* nil, err */
  lua_settop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "sockhost.metrics");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "parse");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

/* Push the sum of every process's metrics (a table by sample), or park
** until the collector sends it; without a collector, this process's. */
int shl_stats_all (lua_State *L) {
  reporter *r = the_reporter;
  shl_task *t;
  char line[48];
  struct iovec iov;
  lua_settop(L, 0);
  if (r == NULL || r->s == NULL) {
    lua_pushcfunction(L, render);
    lua_call(L, 0, 1);
    return parsed(L, LUA_OK, 0);
  }
  t = shl_checktask(L, "sockhost.stats{ all = true }");
  if (r->nwaiters == MAX_WAITERS) return shl_pushfail(L, "busy");
  if (r->nwaiters == 0) {
    iov.iov_base = line;
    iov.iov_len = (size_t)snprintf(line, sizeof line, "A %lu\n", ++r->asked);
    if (sh_stream_write(r->s, &iov, 1, iov.iov_len + MAX_UNSENT) < 0) {
      end_reporter(r);
      return shl_pushfail(L, "the metrics collector is gone");
    }
  }
  r->waiters[r->nwaiters++] = t;
  return shl_park(L, t, SHL_WAIT_EVENT, SUM_TIMEOUT, sum_timeout, r, 0, parsed);
}
