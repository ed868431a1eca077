/* l_stats.c -- sockhost.stats(): what the host is doing, as a table
** (connections, listeners, bytes, tasks and what they wait for, timers,
** memory, the limits that fired); and the C half of the admin console,
** package.preload["sockhost.admin.core"] (bindings/lua/admin.lua).
**
** Counters are cheap increments where things happen (shl_host.counts,
** the scheduler's, each listener's); the tasks by state are counted here
** by walking the list of live tasks, on request only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/sh_log.h"
#include "../core/sh_net.h"
#include "shl.h"

/* What a parked task waits for, by shl_reason. */
static const char *const reason_names[] = {
  "none", "read", "write", "connect", "handshake", "resolve", "recv", "send", "sleep",
  "join", "channel", "event", "select"
};
#define NREASONS (sizeof reason_names / sizeof reason_names[0])

static const char *const state_names[] = {
  "new", "ready", "running", "parked", "done", "failed"
};

static void setint (lua_State *L, const char *k, unsigned long long v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* Resident set size in bytes, or 0 if unknown. */
static unsigned long long rss_bytes (void) {
  unsigned long long size = 0, res = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL) return 0;
  if (fscanf(f, "%llu %llu", &size, &res) != 2) res = 0;
  fclose(f);
  return res * (unsigned long long)sysconf(_SC_PAGESIZE);
}

static void push_tasks (lua_State *L, shl_sched *S) {
  unsigned long long by_state[TASK_FAILED + 1] = {0}, by_reason[NREASONS] = {0}, all = 0;
  shl_task *t;
  size_t i;
  for (t = S->live; t != NULL; t = t->lnext) {
    all++;
    by_state[t->state]++;
    if (t->state == TASK_PARKED && (size_t)t->waiting < NREASONS) by_reason[t->waiting]++;
  }
  lua_createtable(L, 0, 5);
  setint(L, "live", all);
  setint(L, "running", by_state[TASK_RUNNING]);
  setint(L, "ready", by_state[TASK_READY] + by_state[TASK_NEW]);
  setint(L, "parked", by_state[TASK_PARKED]);
  lua_createtable(L, 0, (int)NREASONS);
  for (i = 1; i < NREASONS; i++) setint(L, reason_names[i], by_reason[i]);
  lua_setfield(L, -2, "waiting");
}

static void push_limits (lua_State *L, shl_host *H) {
  lua_createtable(L, 0, 8);
  setint(L, "idle_cut", H->counts.idle_cuts);
  setint(L, "line_deadline", H->counts.line_cuts);
  setint(L, "max_conns", H->counts.refused);
  setint(L, "budget", H->sched->overruns);
  setint(L, "memory", H->sched->mem_refused);
  setint(L, "buffers", H->counts.buffer_cuts);
  setint(L, "accept_backoff", sh_net_backoffs());
  setint(L, "slow_turn", H->sched->stalls);
}

void shl_stats_push (lua_State *L, shl_host *H) {
  luaL_checkstack(L, 6, NULL);
  lua_createtable(L, 0, 9);
  lua_createtable(L, 0, 2);
  setint(L, "open", H->counts.open);
  setint(L, "accepted", H->counts.accepted);
  lua_setfield(L, -2, "connections");
  shl_listener_stats(L, H);
  lua_setfield(L, -2, "listeners");
  lua_createtable(L, 0, 2);
  setint(L, "in", H->counts.bytes_in);
  setint(L, "out", H->counts.bytes_out);
  lua_setfield(L, -2, "bytes");
  push_tasks(L, H->sched);
  lua_setfield(L, -2, "tasks");
  setint(L, "timers", (unsigned long long)(H->timers > 0 ? H->timers : 0));
  lua_createtable(L, 0, 2);
  setint(L, "lua", (unsigned long long)lua_gc(L, LUA_GCCOUNT, 0) * 1024 +
                   (unsigned long long)lua_gc(L, LUA_GCCOUNTB, 0));
  setint(L, "rss", rss_bytes());
  lua_setfield(L, -2, "memory");
  push_limits(L, H);
  lua_setfield(L, -2, "limits");
}

/* sockhost.stats() -> the table above. */
int shl_stats (lua_State *L) {
  static const char *const known[] = {"all", NULL};
  shl_checkoptions(L, 1, known);
  shl_stats_push(L, shl_gethost(L));
  return 1;
}

/* ====================== The admin console's C half ====================== */

/* "source:line" of the innermost Lua frame of co, or nil. */
static void push_where (lua_State *L, lua_State *co) {
  lua_Debug ar;
  int level;
  for (level = 0; co != NULL && lua_getstack(co, level, &ar); level++) {
    if (!lua_getinfo(co, "Sl", &ar)) break;
    if (ar.currentline > 0) {
      lua_pushfstring(L, "%s:%d", ar.short_src, ar.currentline);
      return;
    }
  }
  lua_pushnil(L);
}

void shl_task_describe (lua_State *L, shl_task *t) {
  luaL_checkstack(L, 4, NULL);
  lua_createtable(L, 0, 5);
  setint(L, "id", t->id);
  lua_pushstring(L, state_names[t->state]);
  lua_setfield(L, -2, "state");
  if (t->state == TASK_PARKED && (size_t)t->waiting < NREASONS) {
    lua_pushstring(L, reason_names[t->waiting]);
    lua_setfield(L, -2, "waiting");
  }
  lua_pushnumber(L, sh_now() - t->born);
  lua_setfield(L, -2, "age");
  if (t->state == TASK_PARKED || t->state == TASK_READY || t->state == TASK_RUNNING) {
    push_where(L, t->co);
    lua_setfield(L, -2, "where");
  }
}

static unsigned optid (lua_State *L, int arg) {
  lua_Integer v = luaL_optinteger(L, arg, 0);
  return v > 0 && v <= 0xffffffffLL ? (unsigned)v : 0;
}

/* core.conns(below, max) -> list of conn descriptions, ids below 'below'
** (0: all), newest first. */
static int a_conns (lua_State *L) {
  shl_host *H = shl_gethost(L);
  unsigned below = optid(L, 1);
  int max = (int)luaL_optinteger(L, 2, 500);
  lua_newtable(L);
  shl_conn_list(L, H, below, max);
  return 1;
}

/* core.conn(id) -> description, or nil. */
static int a_conn (lua_State *L) {
  lconn *lc = shl_conn_find(shl_gethost(L), optid(L, 1));
  if (lc == NULL) return 0;
  shl_conn_describe(L, lc);
  return 1;
}

/* core.close(id) -> true, or nil if no open accepted conn has that id. */
static int a_close (lua_State *L) {
  lconn *lc = shl_conn_find(shl_gethost(L), optid(L, 1));
  if (lc == NULL) return 0;
  shl_conn_abort(lc);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.tasks(below, max) -> list of task descriptions, as conns(). */
static int a_tasks (lua_State *L) {
  shl_sched *S = shl_gethost(L)->sched;
  unsigned below = optid(L, 1);
  int max = (int)luaL_optinteger(L, 2, 500), n = 0;
  shl_task *t;
  lua_newtable(L);
  for (t = S->live; t != NULL && n < max; t = t->lnext) {
    if (below != 0 && t->id >= below) continue;
    shl_task_describe(L, t);
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* core.uid() -> this process's user id. */
static int a_uid (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getuid());
  return 1;
}

static int open_admin_core (lua_State *L) {
  static const luaL_Reg fns[] = {
    {"conns", a_conns}, {"conn", a_conn}, {"close", a_close}, {"tasks", a_tasks},
    {"uid", a_uid}, {NULL, NULL}
  };
  luaL_newlib(L, fns);
  return 1;
}

void shl_admin_open (lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, open_admin_core);
  lua_setfield(L, -2, "sockhost.admin.core");
  lua_pop(L, 1);
}
