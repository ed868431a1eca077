/* l_select.c -- sockhost.select(cases [, timeout]): wait for the first of
** several things: a value from a channel, an event, the end of a task, the
** result of a read on a conn.
**
** The cases are taken in the order of their keys (integers, ascending, then
** strings, in byte order): the first that is ready at the call wins. Else
** the task parks, and each case waits in its own way until one ends the
** select and the others are called off:
**  - a channel or an event: a stand-in (shl.h) in its queue, fired by
**    whoever would wake a task there;
**  - a task's end or a conn's read: a helper task that joins it or runs
**    conn:read(fmt), and ends the select with what it got. A task can wait
**    in one queue only, and these queues are other files'. A helper called
**    off is taken out of its queue (its wait's own cancel function, or the
**    joiners' queue) and woken to find itself forgotten; a read called off
**    has consumed nothing.
** Everything happens in the order of events and of the ready queue, so
** under sockhost.test's seed a select ends the same way each run. */
#include <stdlib.h>
#include <string.h>

#include "shl.h"

#define SEL 3                   /* select's stack: cases, timeout, the select */

enum { CASE_CHANNEL, CASE_EVENT, CASE_TASK, CASE_READ };

struct lselect;

typedef struct sel_case {
  shl_standin in;               /* a channel or event: its place in the queue */
  struct lselect *sel;
  shl_waitq *q;                 /* that queue, while the stand-in is in it */
  shl_task *helper;             /* a task or read: the helper, while it serves */
  shl_task *target;             /* a task: the one whose end is awaited */
  void *conn;                   /* a read: the conn it reads */
  int kind;
  int idx;                      /* its place in key order, from 1 */
} sel_case;

typedef struct lselect {
  shl_task *t;                  /* the task in select(); NULL once it ended */
  int n;
  sel_case c[];
} lselect;

/* A key while the keys are sorted (its string anchored in a table). */
typedef struct sel_key {
  lua_Integer i;
  const char *s;                /* NULL for an integer key */
  size_t len;
  int pos;                      /* where it was gathered, from 1 */
} sel_key;

/* ====================== Ending a select ====================== */

/* Take the helper of c off its wait, if it is parked in it, and wake it: it
** finds itself forgotten and ends. Not started yet, or woken already: it
** finds out when it runs. */
static void release_helper (sel_case *c, shl_task *h) {
  if (h->state != TASK_PARKED) return;
  if (h->on_timeout != NULL) h->on_timeout(h->wait_obj, h, 1);   /* a read */
  else if (c->kind == CASE_TASK) shl_waitq_remove(&c->target->joiners, h);
  shl_unpark(h);
  shl_wake(h, 0);
}

/* Call every case off: stand-ins out of their queues, helpers forgotten
** (and, with 'wake', released). */
static void call_off (lselect *sel, int wake) {
  int i;
  for (i = 0; i < sel->n; i++) {
    sel_case *c = &sel->c[i];
    shl_task *h = c->helper;
    if (c->q != NULL) shl_waitq_remove(c->q, &c->in.node);
    c->q = NULL;
    c->helper = NULL;
    if (h != NULL && wake) release_helper(c, h);
  }
}

/* Case 'win' ends the select with the n values on top of 'from': the task
** gets win's key and them. */
static void finish (sel_case *win, lua_State *from, int n) {
  lselect *sel = win->sel;
  shl_task *t = sel->t;
  sel->t = NULL;
  win->q = NULL;                        /* taken out by whoever fired it */
  win->helper = NULL;                   /* the one running now, if any */
  call_off(sel, 1);
  lua_checkstack(t->co, n + 2);
  lua_getiuservalue(t->co, SEL, 1);     /* the keys, in order */
  lua_rawgeti(t->co, -1, win->idx);
  lua_remove(t->co, -2);
  lua_xmove(from, t->co, n);
  shl_unpark(t);
  shl_wake(t, n + 1);
}

static void on_fire (shl_standin *in, lua_State *from, int n) {
  finish((sel_case *)in, from, n);
}

static int select_timeout (void *obj, shl_task *t, int cancel) {
  lselect *sel = obj;
  sel->t = NULL;
  call_off(sel, !cancel);               /* at lua_close helpers are left alone */
  return cancel ? 0 : shl_pushfail(t->co, "timeout");
}

static int select_k (lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  return lua_gettop(L) - SEL;           /* what finish or the timeout pushed */
}

/* ====================== Helpers ====================== */

/* The case a helper (running on L: the select, its case's index) serves,
** or NULL when it has been called off. */
static sel_case *helper_case (lua_State *L) {
  lselect *sel = (lselect *)lua_touserdata(L, 1);
  sel_case *c = &sel->c[lua_tointeger(L, 2) - 1];
  return sel->t != NULL && c->helper == shl_current(L) ? c : NULL;
}

static void helper_exit (shl_task *t, void *ctx) {
  sel_case *c = ctx;
  if (c->helper == t) c->helper = NULL;
}

static int push_ended (lua_State *L, sel_case *c) {
  lua_pushstring(L, c->target->state == TASK_DONE ? "done" : "failed");
  finish(c, L, 1);
  return 0;
}

static int joined_k (lua_State *L, int status, lua_KContext ctx) {
  sel_case *c = helper_case(L);
  (void)status; (void)ctx;
  return c != NULL ? push_ended(L, c) : 0;
}

#define READ_BASE 2             /* a read helper's stack: the select, the index */

static int read_k (lua_State *L, int status, lua_KContext ctx) {
  sel_case *c = helper_case(L);
  int n = lua_gettop(L) - READ_BASE;
  (void)ctx;
  if (c == NULL) return 0;
  if (status != LUA_OK && status != LUA_YIELD) {   /* raised: nil, the error */
    luaL_pushfail(L);
    lua_insert(L, -2);
    n = 2;
  }
  finish(c, L, n);
  return 0;
}

/* A helper's body: wait for its case, then end the select. */
static int helper_main (lua_State *L) {
  sel_case *c = helper_case(L);
  if (c == NULL) return 0;
  if (c->kind == CASE_TASK) {
    shl_task *me = shl_current(L), *target = c->target;
    if (target->state == TASK_DONE || target->state == TASK_FAILED) return push_ended(L, c);
    return shl_wait(L, &target->joiners, me, SHL_WAIT_JOIN, -1, NULL, NULL, 0, joined_k);
  }
  luaL_checkstack(L, 6, NULL);
  lua_settop(L, READ_BASE);
  lua_getiuservalue(L, 1, 2);           /* the case values, in order */
  lua_rawgeti(L, -1, c->idx);           /* conn, or { conn, fmt } */
  if (lua_istable(L, -1)) {
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
  } else {
    lua_pushvalue(L, -1);
    lua_pushliteral(L, "l");
  }
  lua_getfield(L, -2, "read");          /* sel idx vals case conn fmt read */
  lua_insert(L, -3);
  lua_remove(L, READ_BASE + 1);
  lua_remove(L, READ_BASE + 1);         /* sel idx read conn fmt */
  return read_k(L, lua_pcallk(L, 2, LUA_MULTRET, 0, 0, read_k), 0);
}

/* Start the helper of case c (of the select at SEL). */
static void spawn_helper (lua_State *L, sel_case *c) {
  shl_task *h;
  lua_pushcfunction(L, helper_main);
  lua_pushvalue(L, SEL);
  lua_pushinteger(L, c->idx);
  h = shl_task_new(shl_getsched(L), L, 2, 0, 0);
  h->on_exit = helper_exit;
  h->exit_ctx = c;
  c->helper = h;
  shl_wake(h, 2);
}

/* ====================== Cases ====================== */

static int cmp_keys (const void *a, const void *b) {
  const sel_key *x = a, *y = b;
  size_t m;
  int r;
  if ((x->s == NULL) != (y->s == NULL)) return x->s == NULL ? -1 : 1;
  if (x->s == NULL) return (x->i > y->i) - (x->i < y->i);
  m = x->len < y->len ? x->len : y->len;
  r = memcmp(x->s, y->s, m);
  return r != 0 ? r : (x->len > y->len) - (x->len < y->len);
}

/* Raise "bad argument #1 to 'select' (case K: what)". */
static int case_error (lua_State *L, int keyidx, const char *what) {
  if (lua_type(L, keyidx) == LUA_TSTRING)
    lua_pushfstring(L, "case '%s': %s", lua_tostring(L, keyidx), what);
  else
    lua_pushfstring(L, "case [%s]: %s", luaL_tolstring(L, keyidx, NULL), what);
  return luaL_argerror(L, 1, lua_tostring(L, -1));
}

/* Gather the keys and values of the cases (arg 1) in key order into two
** tables pushed on L: keys, values. Returns how many. */
static int gather (lua_State *L) {
  int n = 0, i, found = lua_gettop(L) + 1;
  sel_key *k;
  lua_newtable(L);                        /* the keys as next finds them */
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1) && lua_type(L, -1) != LUA_TSTRING)
      case_error(L, lua_gettop(L), "keys must be integers or strings");
    lua_pushvalue(L, -1);
    lua_rawseti(L, found, ++n);
  }
  luaL_argcheck(L, n > 0, 1, "no cases");
  k = (sel_key *)lua_newuserdatauv(L, (size_t)n * sizeof *k, 0);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, found, i + 1);
    k[i].pos = i + 1;
    k[i].s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &k[i].len) : NULL;
    k[i].i = k[i].s == NULL ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);                        /* the string stays in 'found' */
  }
  qsort(k, (size_t)n, sizeof *k, cmp_keys);
  lua_createtable(L, n, 0);               /* found k keys */
  lua_createtable(L, n, 0);               /* found k keys values */
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, found, k[i].pos);
    lua_pushvalue(L, -1);
    lua_rawseti(L, found + 2, i + 1);
    lua_rawget(L, 1);
    lua_rawseti(L, found + 3, i + 1);
  }
  lua_remove(L, found);
  lua_remove(L, found);                   /* keys values */
  return n;
}

static int valid_format (lua_State *L, int idx) {
  const char *f;
  if (lua_isnoneornil(L, idx)) return 1;
  if (lua_isinteger(L, idx)) return lua_tointeger(L, idx) >= 0;
  if (lua_type(L, idx) != LUA_TSTRING) return 0;
  f = lua_tostring(L, idx);
  if (*f == '*') f++;
  return strcmp(f, "l") == 0 || strcmp(f, "L") == 0 || strcmp(f, "a") == 0;
}

/* The kind of the case value on top of L (its key at 'keyidx'); raises for
** anything else. */
static int classify (lua_State *L, int keyidx, shl_task *me, sel_case *c) {
  shl_task *t;
  if (shl_tochannel(L, -1) != NULL) return CASE_CHANNEL;
  if (shl_toevent(L, -1) != NULL) return CASE_EVENT;
  if ((c->conn = luaL_testudata(L, -1, CONN_MT)) != NULL) return CASE_READ;
  if ((t = (shl_task *)luaL_testudata(L, -1, TASK_MT)) != NULL) {
    if (t == me) case_error(L, keyidx, "a task cannot wait for its own end");
    return CASE_TASK;
  }
  if (lua_istable(L, -1)) {
    int ok;
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    ok = (c->conn = luaL_testudata(L, -2, CONN_MT)) != NULL && valid_format(L, -1);
    lua_pop(L, 2);
    if (ok) return CASE_READ;
    return case_error(L, keyidx, "a table case is { conn [, format] }, "
                                 "with a format conn:read takes");
  }
  return case_error(L, keyidx, "a channel, an event, a task or a conn expected");
}

/* A conn has one reader at a time: raise if case c reads a conn an earlier
** case reads. */
static void check_reader (lua_State *L, lselect *sel, sel_case *c, int keyidx) {
  int i;
  for (i = 0; c->kind == CASE_READ && i < c->idx - 1; i++)
    if (sel->c[i].kind == CASE_READ && sel->c[i].conn == c->conn)
      case_error(L, keyidx, "another case reads the same conn");
}

/* If the case whose value is on top of L is ready now, push its results and
** return how many; else 0. */
static int poll_case (lua_State *L, int kind) {
  switch (kind) {
    case CASE_CHANNEL:
      return shl_channel_take(L, lua_gettop(L), shl_tochannel(L, -1));
    case CASE_EVENT:
      if (!shl_event_isset(shl_toevent(L, -1))) return 0;
      lua_pushboolean(L, 1);
      return 1;
    case CASE_TASK: {
      shl_task *t = (shl_task *)lua_touserdata(L, -1);
      if (t->state != TASK_DONE && t->state != TASK_FAILED) return 0;
      lua_pushstring(L, t->state == TASK_DONE ? "done" : "failed");
      return 1;
    }
    default:
      return 0;                           /* a read is tried by its helper */
  }
}

/* Set case c, whose value is on top of L, waiting. */
static void arm (lua_State *L, sel_case *c) {
  if (c->kind == CASE_CHANNEL || c->kind == CASE_EVENT) {
    c->q = c->kind == CASE_CHANNEL ? shl_channel_receivers(shl_tochannel(L, -1))
                                   : shl_event_waiters(shl_toevent(L, -1));
    c->in.node.state = TASK_PARKED;       /* node.co stays NULL: a stand-in */
    c->in.node.waiting = SHL_WAIT_SELECT;
    c->in.fire = on_fire;
    shl_waitq_push(c->q, &c->in.node);
    return;
  }
  if (c->kind == CASE_TASK) c->target = (shl_task *)lua_touserdata(L, -1);
  spawn_helper(L, c);
}

/* Make the select's state, at SEL, with the keys and values (on top of L,
** popped) as its user values; the values stay at SEL + 1, the keys at SEL + 2. */
static lselect *new_select (lua_State *L, int n) {
  size_t size = sizeof(lselect) + (size_t)n * sizeof(sel_case);
  lselect *sel = (lselect *)lua_newuserdatauv(L, size, 2);
  memset(sel, 0, size);
  sel->n = n;
  lua_pushvalue(L, -3);
  lua_setiuservalue(L, -2, 1);            /* uv1: the keys */
  lua_pushvalue(L, -2);
  lua_setiuservalue(L, -2, 2);            /* uv2: the values */
  lua_replace(L, SEL);                    /* cases timeout sel values */
  lua_getiuservalue(L, SEL, 1);           /* cases timeout sel values keys */
  return sel;
}

/* Check every case of 'sel' (key and value at SEL + 2, SEL + 1), raising
** on a bad one, before any is taken. */
static void check_cases (lua_State *L, lselect *sel, shl_task *me) {
  int i;
  for (i = 1; i <= sel->n; i++) {
    sel_case *c = &sel->c[i - 1];
    c->sel = sel;
    c->idx = i;
    lua_rawgeti(L, SEL + 2, i);
    lua_rawgeti(L, SEL + 1, i);           /* key value */
    c->kind = classify(L, lua_gettop(L) - 1, me, c);
    check_reader(L, sel, c, lua_gettop(L) - 1);
    lua_pop(L, 2);
  }
}

/* The first case ready now, in key order: push its key and results and
** return how many; 0 if none is. */
static int take_ready (lua_State *L, lselect *sel) {
  int i, got;
  for (i = 1; i <= sel->n; i++) {
    lua_rawgeti(L, SEL + 2, i);
    lua_rawgeti(L, SEL + 1, i);           /* key value */
    if ((got = poll_case(L, sel->c[i - 1].kind)) > 0) {
      lua_remove(L, -(got + 1));          /* key results */
      return got + 1;
    }
    lua_pop(L, 2);
  }
  return 0;
}

/* sockhost.select(cases [, timeout]) -> key, ... | nil, "timeout" */
int shl_select (lua_State *L) {
  double timeout = shl_opttimeout(L, 2, -1);
  shl_task *me = shl_current(L);
  lselect *sel;
  int i, got;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  sel = new_select(L, gather(L));         /* cases timeout sel values keys */
  luaL_checkstack(L, 8, NULL);
  check_cases(L, sel, me);
  if ((got = take_ready(L, sel)) > 0) return got;
  if (timeout == 0) return shl_pushfail(L, "timeout");
  sel->t = shl_checktask(L, "sockhost.select()");
  for (i = 1; i <= sel->n; i++) {
    lua_rawgeti(L, SEL + 1, i);
    arm(L, &sel->c[i - 1]);
    lua_pop(L, 1);
  }
  lua_settop(L, SEL);
  return shl_park(L, sel->t, SHL_WAIT_SELECT, timeout, select_timeout, sel, 0, select_k);
}
