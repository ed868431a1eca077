/* l_task.c -- the "sockhost.task" object: a coroutine run by the host.
**
** The userdata holds the C state (struct shl_task) and three user values:
** 1 the thread, 2 the owner (the connection a handler serves, or nil), 3 the
** error value once the task has failed. While a task is alive a registry
** reference anchors it; after it ends, its results stay on the thread's
** stack for join() as long as somebody holds the task object. */
#include <string.h>

#include "../core/sh_log.h"
#include "shl.h"


static shl_task *checktask (lua_State *L, int arg) {
  return (shl_task *)luaL_checkudata(L, arg, TASK_MT);
}

/* ====================== Methods ====================== */

/* Raise the error that ended t (from uv3), as it was raised. */
static int raise_failure (lua_State *L, int arg) {
  lua_getiuservalue(L, arg, 3);
  return lua_error(L);
}

static int join_k (lua_State *L, int status, lua_KContext ctx) {
  shl_task *t = checktask(L, 1);
  (void)status; (void)ctx;
  if (t->state == TASK_FAILED) return raise_failure(L, 1);
  return lua_gettop(L) - 1;                    /* what the finisher pushed */
}

/* task:join() -> the results of the task's function; raises its error. */
static int task_join (lua_State *L) {
  shl_task *t = checktask(L, 1), *me;
  lua_settop(L, 1);
  if (t->state == TASK_DONE) {
    shl_task_results(t, L);
    return t->nres;
  }
  if (t->state == TASK_FAILED) return raise_failure(L, 1);
  me = shl_checktask(L, "task:join()");
  if (me == t) return luaL_error(L, "a task cannot join itself");
  return shl_wait(L, &t->joiners, me, SHL_WAIT_JOIN, -1, NULL, NULL, 0, join_k);
}

static const char *const state_names[] = {
  "ready", "ready", "running", "waiting", "done", "failed"
};

/* task:status() -> "ready" | "running" | "waiting" | "done" | "failed" */
static int task_status (lua_State *L) {
  shl_task *t = checktask(L, 1);
  lua_pushstring(L, state_names[t->state]);
  return 1;
}

static int task_tostring (lua_State *L) {
  shl_task *t = checktask(L, 1);
  lua_pushfstring(L, "sockhost.task (%s): %p", state_names[t->state], (void *)t);
  return 1;
}

/* Only at lua_close can a live task be collected: release its wait. */
static int task_gc (lua_State *L) {
  shl_task *t = checktask(L, 1);
  if (t->state == TASK_PARKED && t->on_timeout != NULL)
    t->on_timeout(t->wait_obj, t, 1);
  t->on_timeout = NULL;
  if (t->deadline != NULL) { sh_timer_free(t->deadline); t->deadline = NULL; }
  if (t->state != TASK_DONE && t->state != TASK_FAILED && t->S->loop != NULL) {
    t->state = TASK_FAILED;
    sh_loop_unref(t->S->loop);
  }
  return 0;
}

/* sockhost.spawn(fn, ...) -> task. fn runs in a task of its own, starting on
** the loop's next turn. */
static int l_spawn (lua_State *L) {
  shl_sched *S = shl_getsched(L);
  int nargs = lua_gettop(L) - 1;
  shl_task *t;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  t = shl_task_new(S, L, nargs, 0, 1);
  shl_wake(t, nargs);
  return 1;
}

static const luaL_Reg task_methods[] = {
  {"join", task_join}, {"status", task_status}, {NULL, NULL}
};

static const luaL_Reg task_meta[] = {
  {"__index", NULL}, {"__gc", task_gc}, {"__tostring", task_tostring}, {NULL, NULL}
};

void shl_task_open (lua_State *L) {
  shl_newclass(L, TASK_MT, task_meta, task_methods);
  lua_pushcfunction(L, l_spawn);               /* left for luaopen_sockhost */
}

/* What a parked task waits for, by shl_reason. */
const char *const shl_reason_names[] = {
  "none", "read", "write", "connect", "handshake", "resolve", "recv", "send", "sleep",
  "join", "channel", "event", "select"
};

/* ---------------- for the stats and the admin console ---------------- */

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
  lua_pushinteger(L, (lua_Integer)t->id);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, t->state == TASK_PARKED ? "parked" : t->state == TASK_NEW ? "new" : state_names[t->state]);
  lua_setfield(L, -2, "state");
  if (t->state == TASK_PARKED && (size_t)t->waiting < SHL_NREASONS) {
    lua_pushstring(L, shl_reason_names[t->waiting]);
    lua_setfield(L, -2, "waiting");
  }
  lua_pushnumber(L, sh_now() - t->born);
  lua_setfield(L, -2, "age");
  if (t->state == TASK_PARKED || t->state == TASK_READY || t->state == TASK_RUNNING) {
    push_where(L, t->co);
    lua_setfield(L, -2, "where");
  }
}

