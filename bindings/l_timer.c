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

static void on_fire (sh_timer *timer, void *ctx) {
  ltimer *lt = ctx;
  lua_State *L = lt->H->L;
  (void)timer;
  if (!lua_checkstack(L, 8)) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->fn_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->self_ref);    /* fn(timer) */
  if (lt->every <= 0) release(L, lt);                 /* one-shot: done */
  shl_resume(shl_task_new(lt->H->sched, L, 1, 0, 0), 1);
}

static int make_timer (lua_State *L, double every) {
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
  lt->fn_ref = lt->self_ref = LUA_NOREF;
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
int shl_after (lua_State *L) { return make_timer(L, 0); }

/* sockhost.every(seconds, fn) -> timer: fn(timer) every 'seconds'. */
int shl_every (lua_State *L) {
  double every = luaL_checknumber(L, 1);
  luaL_argcheck(L, every > 0, 1, "interval must be positive");
  return make_timer(L, every);
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

static const luaL_Reg timer_methods[] = { {"cancel", timer_cancel}, {NULL, NULL} };

static const luaL_Reg timer_meta[] = {
  {"__index", NULL}, {"__gc", timer_gc}, {"__tostring", timer_tostring}, {NULL, NULL}
};

void shl_timer_open (lua_State *L) {
  shl_newclass(L, TIMER_MT, timer_meta, timer_methods);
}
