/* l_shutdown.c -- stopping gracefully, and signals for scripts:
** sockhost.shutdown(), sockhost.on_shutdown(), sockhost.on_signal().
**
** A graceful shutdown stops accepting at once (listeners and datagram handler
** sockets close), runs the on_shutdown hooks, closes accepted connections
** that sit waiting for a new request, and lets every other handler finish
** for the grace period; then the loop stops. */
#include <signal.h>
#include <string.h>

#include "../core/sh_log.h"
#include "shl.h"

static const char SET_KEY = 'D';     /* registry: objects to close on shutdown */
static const char HOOKS_KEY = 'H';   /* registry: on_shutdown functions */
static const char SIGNALS_KEY = 'G'; /* registry: signal name -> function */

static void push_table (lua_State *L, const void *key) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

void shl_shutdown_register (lua_State *L, int idx, int on) {
  idx = lua_absindex(L, idx);
  push_table(L, &SET_KEY);
  lua_pushvalue(L, idx);
  if (on) lua_pushboolean(L, 1); else lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static void on_grace (sh_timer *timer, void *ctx) {
  shl_host *H = ctx;
  (void)timer;
  sh_log(SH_LOG_WARN, "shutdown: grace period of %.3g s over, stopping", H->grace);
  sh_loop_stop(H->loop);
}

/* The work of shl_shutdown, in protected mode. */
static int shutdown_p (lua_State *L) {
  shl_host *H = (shl_host *)lua_touserdata(L, 1);
  int i, n = 0;
  lua_settop(L, 1);
  push_table(L, &SET_KEY);                      /* 2: the set */
  lua_newtable(L);                              /* 3: its keys, to close */
  lua_pushnil(L);
  while (lua_next(L, 2) != 0) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, 3, ++n);
  }
  for (i = 1; i <= n; i++) {                    /* stop accepting */
    lua_rawgeti(L, 3, i);
    if (lua_getfield(L, -1, "close") == LUA_TFUNCTION) {
      lua_insert(L, -2);
      lua_pcall(L, 1, 0, 0);
    }
    lua_settop(L, 3);
  }
  push_table(L, &HOOKS_KEY);                    /* 4: hooks, each in a task */
  n = (int)lua_rawlen(L, 4);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 4, i);
    shl_wake(shl_task_new(H->sched, L, 0, 0, 0), 0);
  }
  shl_conn_drain_idle(H);
  if (H->grace >= 0) {                          /* 0: stop on the next turn */
    H->grace_timer = sh_timer_new(H->loop, 0, on_grace, H);
    if (H->grace_timer != NULL) sh_timer_start(H->grace_timer, H->grace, 0);
  }
  return 0;
}

void shl_shutdown (lua_State *L, shl_host *H) {
  if (H->draining) return;
  H->draining = 1;
  sh_log(SH_LOG_INFO, "shutdown: no longer accepting; %.3g s for handlers to finish", H->grace);
  lua_pushcfunction(L, shutdown_p);
  lua_pushlightuserdata(L, H);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    sh_log(SH_LOG_ERROR, "shutdown: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    sh_loop_stop(H->loop);
  }
}

/* sockhost.shutdown([grace]) -- stop gracefully, as on SIGTERM. */
int shl_shutdown_lua (lua_State *L) {
  shl_host *H = shl_gethost(L);
  if (!lua_isnoneornil(L, 1)) {
    double g = luaL_checknumber(L, 1);
    luaL_argcheck(L, g >= 0, 1, "grace must be non-negative");
    H->grace = g;
  }
  shl_shutdown(L, H);
  return 0;
}

/* sockhost.on_shutdown(fn) -- run fn in a task of its own when shutting down. */
int shl_on_shutdown (lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  push_table(L, &HOOKS_KEY);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

static const char *const signal_names[] = {"HUP", "USR1", "USR2", NULL};
static const int signal_numbers[] = {SIGHUP, SIGUSR1, SIGUSR2};
static int signal_installed[3];
static void on_script_signal(int signum, void *ctx);

void shl_signal_deliver (shl_host *H, int signum) {
  on_script_signal(signum, H);
}

static void on_script_signal (int signum, void *ctx) {
  shl_host *H = ctx;
  lua_State *L = H->L;
  int i;
  for (i = 0; i < 3 && signal_numbers[i] != signum; i++) {}
  if (i == 3 || !lua_checkstack(L, 4)) return;
  push_table(L, &SIGNALS_KEY);
  if (lua_getfield(L, -1, signal_names[i]) != LUA_TFUNCTION) { lua_pop(L, 2); return; }
  lua_remove(L, -2);
  lua_pushstring(L, signal_names[i]);
  shl_resume(shl_task_new(H->sched, L, 1, 0, 0), 1);
}

/* sockhost.on_signal(name, fn) -- run fn(name) in a task each time the signal
** arrives: "HUP", "USR1" or "USR2". fn nil: back to ignoring it. */
int shl_on_signal (lua_State *L) {
  shl_host *H = shl_gethost(L);
  int i = luaL_checkoption(L, 1, NULL, signal_names);
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  if (signal_numbers[i] == SIGHUP && H->owns_hup) {
    signal_installed[i] = 1;                     /* it comes through shl_signal_deliver */
  } else if (!signal_installed[i]) {
    signal(signal_numbers[i], SIG_IGN);          /* until the loop's watcher is in */
    if (sh_loop_signal(H->loop, signal_numbers[i], on_script_signal, H) != 0)
      return luaL_error(L, "cannot watch signal %s", signal_names[i]);
    signal_installed[i] = 1;
  }
  push_table(L, &SIGNALS_KEY);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, signal_names[i]);
  return 0;
}

int shl_signal_watched (lua_State *L, const char *name) {
  int yes;
  push_table(L, &SIGNALS_KEY);
  yes = lua_getfield(L, -1, name) == LUA_TFUNCTION;
  lua_pop(L, 2);
  return yes;
}
