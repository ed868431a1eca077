/* l_admin.c -- the admin console's C half: package.preload
** ["sockhost.admin.core"], what bindings/lua/admin.lua needs from the host
** (connections and tasks listed in chunks, a connection closed by id, the
** process's uid); and shl_admin_start, which --admin calls. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shl.h"

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

/* core.weak(listener): it keeps the process running no more. */
static int a_weak (lua_State *L) {
  shl_listener_weak(L, 1);
  return 0;
}

/* core.uid() -> this process's user id. */
static int a_uid (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getuid());
  return 1;
}

static int open_admin_core (lua_State *L) {
  static const luaL_Reg fns[] = {
    {"conns", a_conns}, {"conn", a_conn}, {"close", a_close}, {"tasks", a_tasks},
    {"uid", a_uid}, {"weak", a_weak}, {NULL, NULL}
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

/* --admin ADDR: require("sockhost.admin").start(addr, worker). Returns 0,
** or 1 after the message. */
static int start (lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "sockhost.admin");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "start");
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_call(L, 2, 0);
  return 0;
}

int shl_admin_start (lua_State *L, const char *addr, int worker) {
  lua_pushcfunction(L, start);
  lua_pushstring(L, addr);
  lua_pushinteger(L, worker);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    fprintf(stderr, "sockhost: --admin: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}
