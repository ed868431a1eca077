/* l_event.c -- the "sockhost.event" object (sockhost.event): a flag tasks
** wait for. ev:set() raises it and wakes every waiter, and later waits
** return at once until ev:clear(); ev:signal() wakes only the first waiter
** and leaves the flag as it is. Waiters wait in a shl_waitq, which may also
** hold the stand-ins of selects (l_select.c). Every waiter in it is parked. */
#include <string.h>

#include "shl.h"

struct shl_event {
  shl_waitq waiters;            /* tasks and select stand-ins, in arrival order */
  int set;
};

static shl_event *checkevent (lua_State *L, int arg) {
  return (shl_event *)luaL_checkudata(L, arg, EVENT_MT);
}

shl_event *shl_toevent (lua_State *L, int idx) {
  return (shl_event *)luaL_testudata(L, idx, EVENT_MT);
}

int shl_event_isset (const shl_event *ev) { return ev->set; }

shl_waitq *shl_event_waiters (shl_event *ev) { return &ev->waiters; }

/* Wake the first waiter with true; returns 0 if none waited. */
static int wake_one (lua_State *L, shl_event *ev) {
  shl_task *w = shl_waitq_pop(&ev->waiters);
  if (w == NULL) return 0;
  lua_pushboolean(L, 1);
  shl_deliver(L, w, 1);
  return 1;
}

static int wait_timeout (void *obj, shl_task *t, int cancel) {
  shl_event *ev = obj;
  shl_waitq_remove(&ev->waiters, t);
  return cancel ? 0 : shl_pushfail(t->co, "timeout");
}

/* ev:wait([timeout]) -> true | nil, "timeout" */
static int ev_wait (lua_State *L) {
  shl_event *ev = checkevent(L, 1);
  double timeout = shl_opttimeout(L, 2, -1);
  shl_task *t;
  lua_settop(L, 1);
  if (ev->set) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (timeout == 0) return shl_pushfail(L, "timeout");
  t = shl_checktask(L, "event:wait()");
  return shl_wait(L, &ev->waiters, t, SHL_WAIT_EVENT, timeout, wait_timeout, ev, 0, NULL);
}

/* ev:set() -> true: the flag up, every waiter woken. */
static int ev_set (lua_State *L) {
  shl_event *ev = checkevent(L, 1);
  ev->set = 1;
  while (wake_one(L, ev)) {}
  lua_pushboolean(L, 1);
  return 1;
}

/* ev:clear() -> true: the flag down; later waits wait. */
static int ev_clear (lua_State *L) {
  checkevent(L, 1)->set = 0;
  lua_pushboolean(L, 1);
  return 1;
}

/* ev:signal() -> boolean: the first waiter woken (false if none waited). */
static int ev_signal (lua_State *L) {
  lua_pushboolean(L, wake_one(L, checkevent(L, 1)));
  return 1;
}

/* ev:is_set() -> boolean */
static int ev_is_set (lua_State *L) {
  lua_pushboolean(L, checkevent(L, 1)->set);
  return 1;
}

static int ev_tostring (lua_State *L) {
  shl_event *ev = checkevent(L, 1);
  lua_pushfstring(L, "sockhost.event (%s): %p", ev->set ? "set" : "clear", (void *)ev);
  return 1;
}

/* sockhost.event() -> event, clear. */
static int l_event (lua_State *L) {
  shl_event *ev = (shl_event *)lua_newuserdatauv(L, sizeof *ev, 0);
  memset(ev, 0, sizeof *ev);
  luaL_setmetatable(L, EVENT_MT);
  return 1;
}

static const luaL_Reg ev_methods[] = {
  {"wait", ev_wait}, {"set", ev_set}, {"clear", ev_clear}, {"signal", ev_signal},
  {"is_set", ev_is_set}, {NULL, NULL}
};

static const luaL_Reg ev_meta[] = {
  {"__index", NULL}, {"__tostring", ev_tostring}, {NULL, NULL}
};

void shl_event_open (lua_State *L) {
  shl_newclass(L, EVENT_MT, ev_meta, ev_methods);
  lua_pushcfunction(L, l_event);             /* left for luaopen_sockhost */
}
