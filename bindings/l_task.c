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

void shl_task_push (lua_State *L, shl_task *t) {
  lua_rawgeti(t->S->L, LUA_REGISTRYINDEX, t->ref);
  if (t->S->L != L) lua_xmove(t->S->L, L, 1);
}

/* ====================== Creation ====================== */

#define POOL_MAX 256      /* finished handler tasks kept for reuse */

/* A task from the pool, for a function and 'nargs' arguments on L. */
static shl_task *reuse (shl_sched *S, lua_State *L, int nargs, int owner) {
  shl_task *t = S->pool;
  S->pool = t->next;
  S->npool--;
  t->next = NULL;
  if (owner != 0) {
    shl_task_push(L, t);
    lua_pushvalue(L, owner);
    lua_setiuservalue(L, -2, 2);               /* uv2 = owner */
    lua_pop(L, 1);
  }
  lua_xmove(L, t->co, nargs + 1);              /* function and arguments to co */
  t->nargs = nargs;
  t->state = TASK_NEW;
  sh_loop_ref(S->loop);
  return t;
}

shl_task *shl_task_new (shl_sched *S, lua_State *L, int nargs, int owner, int keep) {
  int base = lua_gettop(L) - nargs;            /* the function */
  lua_State *co;
  shl_task *t;
  luaL_checkstack(L, 6, NULL);
  if (!keep && S->pool != NULL) return reuse(S, L, nargs, owner);
  co = lua_newthread(L);
  t = (shl_task *)lua_newuserdatauv(L, sizeof *t, 3);
  memset(t, 0, sizeof *t);
  t->S = S;
  t->co = co;
  t->state = TASK_NEW;
  t->ref = LUA_NOREF;
  luaL_setmetatable(L, TASK_MT);
  lua_pushvalue(L, -2);
  lua_setiuservalue(L, -2, 1);                 /* uv1 = thread */
  if (owner != 0) {
    lua_pushvalue(L, owner);
    lua_setiuservalue(L, -2, 2);               /* uv2 = owner */
  }
  if (keep) {
    lua_pushvalue(L, -1);
    lua_replace(L, -3);                        /* the task takes the thread's slot */
  }
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);     /* anchor while alive */
  if (!keep) lua_pop(L, 1);                    /* the thread */
  /* stack: ... f args [task] */
  if (keep) lua_rotate(L, base, 1);            /* ... task f args */
  lua_xmove(L, co, nargs + 1);                 /* function and arguments to co */
  t->nargs = nargs;
  t->poolable = !keep;                         /* nobody else sees this object */
  sh_loop_ref(S->loop);                        /* a live task keeps the loop */
  return t;
}

/* A handler task ended well: keep its thread for the next one. */
static int to_pool (shl_task *t) {
  shl_sched *S = t->S;
  lua_State *L = S->L;
  if (!t->poolable || t->joiners.head != NULL || S->npool >= POOL_MAX || !lua_checkstack(L, 3))
    return 0;
  lua_settop(t->co, 0);                        /* drop the results */
  shl_task_push(L, t);
  lua_pushnil(L);
  lua_setiuservalue(L, -2, 2);                 /* no owner */
  lua_pop(L, 1);
  t->state = TASK_DONE;
  t->nres = 0;
  t->on_exit = NULL;
  t->exit_ctx = NULL;
  t->next = S->pool;
  S->pool = t;
  S->npool++;
  sh_loop_unref(S->loop);
  return 1;
}

/* ====================== Ending ====================== */

/* tostring(v), with each NUL written as "\x00": the log takes C strings, and
** an error message may quote peer data, whose NUL must not cut the line
** short unseen. */
static int tostring_raw (lua_State *L) {
  size_t len;
  const char *s = luaL_tolstring(L, 1, &len);
  if (strlen(s) < len) shl_push_nul_escaped(L, s, len);
  return 1;
}

/* Push a printable form of the value on top of L (popped), without ever
** raising: a __tostring that fails must not take the host down. */
static const char *safe_tostring (lua_State *L) {
  const char *tname = luaL_typename(L, -1);
  lua_pushcfunction(L, tostring_raw);
  lua_insert(L, -2);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
    lua_pop(L, 1);
    return lua_pushfstring(L, "(error object is a %s value)", tname);
  }
  return lua_tostring(L, -1);
}

/* Log a failure with its traceback; keep the error value in uv3. */
static void record_failure (shl_task *t) {
  lua_State *L = t->S->L, *co = t->co;
  const char *msg, *trace, *label;
  luaL_checkstack(L, 8, NULL);
  shl_task_push(L, t);                         /* task */
  lua_pushvalue(co, -1);
  lua_xmove(co, L, 1);                         /* task err */
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, -3, 3);                 /* task err */
  lua_pushvalue(L, -1);
  msg = safe_tostring(L);                      /* task err msg */
  luaL_traceback(L, co, NULL, 0);              /* task err msg trace */
  trace = lua_tostring(L, -1);
  if (lua_getiuservalue(L, -4, 2) == LUA_TNIL) {   /* what the task served */
    lua_pop(L, 1);
    lua_pushliteral(L, "task");
  }
  label = safe_tostring(L);                    /* task err msg trace label */
  sh_log_trace(SH_LOG_ERROR, trace, "%s failed: %s", label, msg);
  lua_pop(L, 5);
#if LUA_VERSION_RELEASE_NUM >= 50406
  lua_closethread(co, L);                      /* close pending <close> variables */
#else
  lua_resetthread(co);
#endif
}

/* Copy t's n results onto 'to'. */
static void push_results (shl_task *t, lua_State *to) {
  int i;
  lua_checkstack(t->co, t->nres);
  lua_checkstack(to, t->nres);
  for (i = 0; i < t->nres; i++) lua_pushvalue(t->co, -t->nres);
  lua_xmove(t->co, to, t->nres);
}

void shl_task_finish (shl_task *t, int status, int nres) {
  shl_sched *S = t->S;
  shl_task *j;
  if (status == LUA_OK) {
    t->state = TASK_DONE;
    t->nres = nres;
  } else {
    t->state = TASK_FAILED;
    t->nres = 0;
    record_failure(t);
  }
  while ((j = shl_waitq_pop(&t->joiners)) != NULL) {   /* wake joiners, in order */
    shl_unpark(j);
    if (t->state == TASK_DONE) push_results(t, j->co);
    shl_wake(j, t->state == TASK_DONE ? t->nres : 0);
  }
  if (t->on_exit != NULL) t->on_exit(t, t->exit_ctx);
  if (t->state == TASK_DONE && to_pool(t)) return;
  if (t->deadline != NULL) { sh_timer_free(t->deadline); t->deadline = NULL; }
  luaL_unref(S->L, LUA_REGISTRYINDEX, t->ref);
  t->ref = LUA_NOREF;
  sh_loop_unref(S->loop);
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
    push_results(t, L);
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
