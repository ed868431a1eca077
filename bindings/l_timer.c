/* l_timer.c -- the "sockhost.timer" object (sockhost.after, sockhost.every)
** and sockhost.sleep. Each firing runs the callback in a task of its own,
** with the timer as its argument, so `t:cancel()` works from inside. An armed
** timer is anchored in the registry and keeps the loop alive. */
#include <string.h>

#include "shl.h"

typedef struct ltimer {
  sh_timer *t;            /* NULL after __gc */
  shl_host *H;
  int fn_ref;             /* the callback */
  int self_ref;           /* anchors the userdata while armed */
  double every;           /* seconds between firings; 0 for after() */
  int overlap;            /* every(): a firing may start while the last runs */
  int run_ref;            /* no overlap: anchors the userdata while a firing
                          ** runs (LUA_NOREF: none runs) */
  lua_Integer skipped;    /* firings skipped: the last one still ran */
} ltimer;

static ltimer *checktimer (lua_State *L, int arg) {
  return (ltimer *)luaL_checkudata(L, arg, TIMER_MT);
}

static void release (lua_State *L, ltimer *lt) {
  if (lt->self_ref != LUA_NOREF) lt->H->timers--;
  luaL_unref(L, LUA_REGISTRYINDEX, lt->fn_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lt->self_ref);
  lt->fn_ref = lt->self_ref = LUA_NOREF;
}

/* A firing of a timer without overlap has ended. */
static void firing_done (shl_task *t, void *ctx) {
  ltimer *lt = ctx;
  luaL_unref(t->S->L, LUA_REGISTRYINDEX, lt->run_ref);
  lt->run_ref = LUA_NOREF;
}

static void on_fire (sh_timer *timer, void *ctx) {
  ltimer *lt = ctx;
  lua_State *L = lt->H->L;
  shl_task *t;
  (void)timer;
  if (lt->run_ref != LUA_NOREF) { lt->skipped++; return; }
  if (!lua_checkstack(L, 8)) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->fn_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->self_ref);    /* fn(timer) */
  if (lt->every <= 0) release(L, lt);                 /* one-shot: done */
  if (!lt->overlap) {
    lua_pushvalue(L, -1);
    lt->run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  t = shl_task_new(lt->H->sched, L, 1, 0, 0);
  if (!lt->overlap) {
    t->on_exit = firing_done;
    t->exit_ctx = lt;
  }
  shl_resume(t, 1);
}

static int make_timer (lua_State *L, double every, int overlap) {
  shl_host *H = shl_gethost(L);
  double delay = luaL_checknumber(L, 1);
  ltimer *lt;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_argcheck(L, delay >= 0, 1, "delay must be non-negative");
  if (H->timers >= H->max_timers)
    return luaL_error(L, "too many timers (%d armed)", H->timers);
  lt = (ltimer *)lua_newuserdatauv(L, sizeof *lt, 0);
  memset(lt, 0, sizeof *lt);
  lt->H = H;
  lt->every = every;
  lt->overlap = overlap;
  lt->fn_ref = lt->self_ref = lt->run_ref = LUA_NOREF;
  luaL_setmetatable(L, TIMER_MT);
  lt->t = sh_timer_new(H->loop, 1, on_fire, lt);
  if (lt->t == NULL || sh_timer_start(lt->t, delay, every) != 0)
    return luaL_error(L, "out of memory");
  lua_pushvalue(L, 2);
  lt->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  lt->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  H->timers++;
  return 1;
}

/* sockhost.after(seconds, fn) -> timer: fn(timer) once, after 'seconds'. */
int shl_after (lua_State *L) { return make_timer(L, 0, 1); }

static const char *const every_opts[] = {"overlap", NULL};

/* opts.overlap (default true): whether a firing may start while the last
** one still runs. */
static int opt_overlap (lua_State *L, int arg) {
  int t, on = 1;
  shl_checkoptions(L, arg, every_opts);
  if (lua_isnoneornil(L, arg)) return 1;
  t = lua_getfield(L, arg, "overlap");
  if (t != LUA_TNIL && t != LUA_TBOOLEAN) luaL_error(L, "option 'overlap' must be a boolean");
  if (t == LUA_TBOOLEAN) on = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return on;
}

/* sockhost.every(seconds, fn [, opts]) -> timer: fn(timer) every 'seconds';
** with opts.overlap false, a firing while the last one runs is skipped. */
int shl_every (lua_State *L) {
  double every = luaL_checknumber(L, 1);
  int overlap;
  luaL_argcheck(L, every > 0, 1, "interval must be positive");
  overlap = opt_overlap(L, 3);
  lua_settop(L, 2);
  return make_timer(L, every, overlap);
}

/* timer:skipped() -> the number of firings skipped (every with overlap false). */
static int timer_skipped (lua_State *L) {
  lua_pushinteger(L, checktimer(L, 1)->skipped);
  return 1;
}

/* timer:cancel() -> true if it was armed. */
static int timer_cancel (lua_State *L) {
  ltimer *lt = checktimer(L, 1);
  int armed = lt->t != NULL && sh_timer_active(lt->t);
  if (lt->t != NULL) sh_timer_stop(lt->t);
  release(L, lt);
  lua_pushboolean(L, armed);
  return 1;
}

static int timer_gc (lua_State *L) {
  ltimer *lt = checktimer(L, 1);
  if (lt->t != NULL) sh_timer_free(lt->t);
  lt->t = NULL;
  return 0;
}

static int timer_tostring (lua_State *L) {
  ltimer *lt = checktimer(L, 1);
  lua_pushfstring(L, "sockhost.timer (%s): %p",
                  lt->t != NULL && sh_timer_active(lt->t) ? "armed" : "idle", (void *)lt);
  return 1;
}

static int sleep_done (void *obj, shl_task *t, int cancel) {
  (void)obj; (void)t; (void)cancel;
  return 0;
}

/* sockhost.sleep(seconds) -- park the task; other tasks run meanwhile. */
int shl_sleep (lua_State *L) {
  double s = luaL_checknumber(L, 1);
  shl_task *t;
  luaL_argcheck(L, s >= 0, 1, "seconds must be non-negative");
  t = shl_checktask(L, "sockhost.sleep()");
  lua_settop(L, 0);
  return shl_park(L, t, SHL_WAIT_SLEEP, s, sleep_done, NULL, 0, NULL);
}

static const luaL_Reg timer_methods[] = {
  {"cancel", timer_cancel}, {"skipped", timer_skipped}, {NULL, NULL}
};

static const luaL_Reg timer_meta[] = {
  {"__index", NULL}, {"__gc", timer_gc}, {"__tostring", timer_tostring}, {NULL, NULL}
};

void shl_timer_open (lua_State *L) {
  shl_newclass(L, TIMER_MT, timer_meta, timer_methods);
}
