/* l_host.c -- the host of a Lua state: its loop, the defaults and limits
** the objects start from, counters, the shutdown's state, and what they
** share (the resolver, the time-limit sweep, the budget of the streams'
** buffers, a datagram buffer). It owns the scheduler (l_sched.c) and ends
** everything at lua_close.
**
** The host is a full userdata in the registry, made first, so that its
** finalizer runs after every other object's: connections closed by their
** finalizers get a little time to deliver what they hold, then the loop
** goes. */
#include <stdlib.h>
#include <string.h>

#include "../core/sh_resolve.h"
#include "../core/sh_stream.h"
#include "shl.h"

static const char HOST_KEY = 'H';    /* registry: the host userdata */

#define DEFAULT_LINGER 30.0          /* seconds a closed stream may flush */
#define SHUTDOWN_GRACE 5.0           /* seconds to flush at lua_close */

/* The host and its scheduler, in one block. */
typedef struct host_block {
  shl_host host;
  shl_sched sched;
} host_block;

shl_host *shl_gethost (lua_State *L) {
  shl_host *H;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &HOST_KEY);
  H = (shl_host *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (H == NULL) luaL_error(L, "sockhost is not initialised");
  return H;
}

int shl_run (shl_host *H, double timeout) {
  return sh_loop_run(H->loop, timeout);
}

static int host_gc (lua_State *L) {
  shl_host *H = (shl_host *)lua_touserdata(L, 1);
  if (H->loop == NULL) return 0;
  shl_sched_close(H->sched);
  if (H->grace_timer != NULL) sh_timer_free(H->grace_timer);
  H->grace_timer = NULL;
  if (H->collect_timer != NULL) sh_timer_free(H->collect_timer);
  H->collect_timer = NULL;
  sh_sweep_free(H->sweep);
  H->sweep = NULL;
  sh_resolver_free(H->resolver);
  H->resolver = NULL;
  if (!sh_loop_running(H->loop)) sh_loop_run(H->loop, SHUTDOWN_GRACE);
  sh_loop_free(H->loop);
  H->loop = H->sched->loop = NULL;
  sh_budget_free(H->budget);                   /* after every stream */
  H->budget = NULL;
  free(H->dgram_buf);
  H->dgram_buf = NULL;
  return 0;
}

void shl_host_set_max_buffers (shl_host *H, double bytes) {
  H->max_buffers = bytes > 0 ? bytes : 0;
  H->conn_share = (size_t)(H->max_buffers / SHL_CONN_SHARE);
  if (H->budget != NULL) sh_budget_set_limit(H->budget, (size_t)H->max_buffers);
}

/* Two steps: the first may only end a cycle that began while the strings
** were still in use; the second then runs a whole one. Each does work in
** proportion to the bytes, as allocating them would have, counted from a
** debt of zero: the headroom l_gc.c gives a small heap would otherwise
** swallow them (a step of 20 MB against a cycle due in 30 does nothing,
** and the closed connections holding those bytes wait). What they free
** may be in glibc's heap (a large free block there is reused before a new
** mapping is made): give it back. */
static void on_collect (sh_timer *timer, void *ctx) {
  shl_host *H = ctx;
  int kb = H->collect / 1024 < 0x7fffffff ? (int)(H->collect / 1024) : 0x7fffffff;
  (void)timer;
  H->collect = 0;
  shl_gc_pace(H->sched);
  lua_gc(H->L, LUA_GCSTEP, 0);           /* a basic step, from a debt of 0 */
  if (lua_gc(H->L, LUA_GCSTEP, kb) == 1) lua_gc(H->L, LUA_GCSTEP, kb);
  sh_budget_give_back();                 /* the heap may hold them: free now */
}

void shl_host_collect (shl_host *H, size_t bytes) {
  if (H->loop == NULL || bytes == 0) return;
  if (H->collect_timer == NULL && (H->collect_timer = sh_timer_new(H->loop, 0, on_collect, H)) == NULL)
    return;
  H->collect += bytes;
  if (!sh_timer_active(H->collect_timer)) sh_timer_start(H->collect_timer, 0, 0);
}

static void set_defaults (shl_host *H) {
  H->linger = DEFAULT_LINGER;
  H->idle_timeout = SHL_DEFAULT_IDLE;
  H->line_timeout = SHL_DEFAULT_LINE;
  H->max_line = SHL_DEFAULT_MAX_LINE;
  H->max_conns = SHL_DEFAULT_MAX_CONNS;
  H->max_timers = SHL_DEFAULT_MAX_TIMERS;
  H->grace = SHL_DEFAULT_GRACE;
  shl_host_set_max_buffers(H, SHL_DEFAULT_MAX_BUFFERS);
}

void shl_host_open (lua_State *L) {
  host_block *b;
  shl_host *H;
  char err[128];
  lua_rawgetp(L, LUA_REGISTRYINDEX, &HOST_KEY);
  H = (shl_host *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (H != NULL) return;                       /* already open in this state */
  b = (host_block *)lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  H = &b->host;
  lua_newtable(L);                             /* its metatable */
  lua_pushcfunction(L, host_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &HOST_KEY);
  H->loop = sh_loop_new(err, sizeof err);
  if (H->loop == NULL) luaL_error(L, "sockhost: %s", err);
  H->sched = &b->sched;
  shl_sched_init(L, H->sched, H->loop);
  shl_gc_open(L, H->sched);
  H->L = H->sched->L;
  set_defaults(H);
  H->budget = sh_budget_new((size_t)H->max_buffers);
  if (H->budget == NULL) luaL_error(L, "sockhost: out of memory");
}
