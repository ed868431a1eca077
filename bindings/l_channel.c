/* l_channel.c -- the "sockhost.channel" object: values passed from task to
** task, in order (sockhost.channel). A receiver waits while there is no
** value; a sender waits while the buffer is full, and on an unbuffered
** channel (capacity 0) until a receiver takes its value. Both wait in turn,
** in shl_waitq's; the receivers' queue may also hold the stand-ins of
** selects (l_select.c).
**
** The buffer is a ring in the userdata's user value (a table, slots 1 to
** the capacity). A parked sender's value stays on its own stack until a
** receiver takes it. So the queues never both hold waiters: receivers wait
** only while the buffer is empty and no sender waits, senders only while
** the buffer is full (or unbuffered) and no receiver waits. Every waiter in
** a queue is parked. */
#include <string.h>

#include "shl.h"

#define SENT 2                  /* a parked sender's stack: channel, value */

struct shl_channel {
  shl_waitq receivers;          /* tasks and select stand-ins waiting for a value */
  shl_waitq senders;            /* tasks waiting for room, or for a receiver */
  lua_Integer cap;              /* values the buffer holds; 0: unbuffered */
  lua_Integer first;            /* the oldest buffered value's slot, from 0 */
  lua_Integer count;            /* buffered values */
  int closed;
};

static shl_channel *checkchannel (lua_State *L, int arg) {
  return (shl_channel *)luaL_checkudata(L, arg, CHANNEL_MT);
}

shl_channel *shl_tochannel (lua_State *L, int idx) {
  return (shl_channel *)luaL_testudata(L, idx, CHANNEL_MT);
}

shl_waitq *shl_channel_receivers (shl_channel *ch) { return &ch->receivers; }

/* ====================== The buffer ====================== */

/* Append the value on top of L (popped) to the buffer of the channel at idx. */
static void buf_put (lua_State *L, int idx, shl_channel *ch) {
  lua_getiuservalue(L, idx, 1);
  lua_insert(L, -2);
  lua_rawseti(L, -2, (ch->first + ch->count) % ch->cap + 1);
  lua_pop(L, 1);
  ch->count++;
}

/* Push the oldest buffered value and take it out. */
static void buf_take (lua_State *L, int idx, shl_channel *ch) {
  lua_Integer slot = ch->first + 1;
  lua_getiuservalue(L, idx, 1);
  lua_rawgeti(L, -1, slot);
  lua_pushnil(L);
  lua_rawseti(L, -3, slot);
  lua_remove(L, -2);
  ch->first = (ch->first + 1) % ch->cap;
  ch->count--;
}

/* ====================== Receiving ====================== */

/* The head sender's value is taken: push it, and wake the sender with true. */
static void take_sender (lua_State *L, shl_channel *ch) {
  shl_task *s = shl_waitq_pop(&ch->senders);
  lua_checkstack(s->co, 1);
  lua_pushvalue(s->co, SENT);
  lua_xmove(s->co, L, 1);
  shl_unpark(s);
  lua_pushboolean(s->co, 1);
  shl_wake(s, 1);
}

int shl_channel_take (lua_State *L, int idx, shl_channel *ch) {
  luaL_checkstack(L, 4, NULL);
  if (ch->count > 0) {
    buf_take(L, idx, ch);
    if (ch->senders.head != NULL) {       /* its value fills the free slot */
      take_sender(L, ch);
      buf_put(L, idx, ch);
    }
    return 1;
  }
  if (ch->senders.head != NULL) {         /* unbuffered: straight from it */
    take_sender(L, ch);
    return 1;
  }
  if (ch->closed) return shl_pushfail(L, "closed");
  return 0;
}

static int receive_timeout (void *obj, shl_task *t, int cancel) {
  shl_channel *ch = obj;
  shl_waitq_remove(&ch->receivers, t);
  return cancel ? 0 : shl_pushfail(t->co, "timeout");
}

/* ch:receive([timeout]) -> value | nil, "closed" | nil, "timeout" */
static int ch_receive (lua_State *L) {
  shl_channel *ch = checkchannel(L, 1);
  double timeout = shl_opttimeout(L, 2, -1);
  int n;
  shl_task *t;
  lua_settop(L, 1);
  if ((n = shl_channel_take(L, 1, ch)) > 0) return n;
  if (timeout == 0) return shl_pushfail(L, "timeout");
  t = shl_checktask(L, "channel:receive()");
  return shl_wait(L, &ch->receivers, t, SHL_WAIT_CHANNEL, timeout, receive_timeout, ch, 0, NULL);
}

/* ====================== Sending ====================== */

static int send_timeout (void *obj, shl_task *t, int cancel) {
  shl_channel *ch = obj;
  shl_waitq_remove(&ch->senders, t);
  return cancel ? 0 : shl_pushfail(t->co, "timeout");
}

/* Pass the value at SENT on at once if it can be: to the first receiver
** waiting, else into the buffer. Returns 1 if it went. */
static int put_now (lua_State *L, shl_channel *ch) {
  shl_task *r = shl_waitq_pop(&ch->receivers);
  if (r != NULL) {
    lua_pushvalue(L, SENT);
    shl_deliver(L, r, 1);
    return 1;
  }
  if (ch->count < ch->cap) {
    lua_pushvalue(L, SENT);
    buf_put(L, 1, ch);
    return 1;
  }
  return 0;
}

/* ch:send(value [, timeout]) -> true | nil, "closed" | nil, "timeout" */
static int ch_send (lua_State *L) {
  shl_channel *ch = checkchannel(L, 1);
  double timeout = shl_opttimeout(L, 3, -1);
  shl_task *t;
  luaL_checkany(L, SENT);
  luaL_argcheck(L, !lua_isnil(L, SENT), SENT, "cannot send nil");
  lua_settop(L, SENT);
  if (ch->closed) return shl_pushfail(L, "closed");
  if (put_now(L, ch)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (timeout == 0) return shl_pushfail(L, "timeout");
  t = shl_checktask(L, "channel:send()");
  return shl_wait(L, &ch->senders, t, SHL_WAIT_CHANNEL, timeout, send_timeout, ch, 0, NULL);
}

/* ====================== Closing and the rest ====================== */

/* ch:close() -> true. Senders waiting get nil, "closed"; receivers too, once
** the buffer is empty (it is, while any wait). */
static int ch_close (lua_State *L) {
  shl_channel *ch = checkchannel(L, 1);
  shl_task *r;
  if (!ch->closed) {
    ch->closed = 1;
    shl_waitq_fail_all(&ch->senders, "closed");
    while ((r = shl_waitq_pop(&ch->receivers)) != NULL) {
      shl_pushfail(L, "closed");
      shl_deliver(L, r, 2);
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ch:is_closed() -> boolean */
static int ch_is_closed (lua_State *L) {
  lua_pushboolean(L, checkchannel(L, 1)->closed);
  return 1;
}

/* #ch -> the number of values in the buffer */
static int ch_len (lua_State *L) {
  lua_pushinteger(L, checkchannel(L, 1)->count);
  return 1;
}

static int ch_tostring (lua_State *L) {
  shl_channel *ch = checkchannel(L, 1);
  lua_pushfstring(L, "sockhost.channel (%s, %I/%I): %p", ch->closed ? "closed" : "open",
                  (LUAI_UACINT)ch->count, (LUAI_UACINT)ch->cap, (void *)ch);
  return 1;
}

/* sockhost.channel([capacity]) -> channel */
static int l_channel (lua_State *L) {
  lua_Integer cap = luaL_optinteger(L, 1, 0);
  shl_channel *ch;
  luaL_argcheck(L, cap >= 0, 1, "capacity must be non-negative");
  ch = (shl_channel *)lua_newuserdatauv(L, sizeof *ch, 1);
  memset(ch, 0, sizeof *ch);
  ch->cap = cap;
  luaL_setmetatable(L, CHANNEL_MT);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);               /* uv1 = the buffer */
  return 1;
}

static const luaL_Reg ch_methods[] = {
  {"send", ch_send}, {"receive", ch_receive}, {"close", ch_close},
  {"is_closed", ch_is_closed}, {NULL, NULL}
};

static const luaL_Reg ch_meta[] = {
  {"__index", NULL}, {"__len", ch_len}, {"__close", ch_close},
  {"__tostring", ch_tostring}, {NULL, NULL}
};

void shl_channel_open (lua_State *L) {
  shl_newclass(L, CHANNEL_MT, ch_meta, ch_methods);
  lua_pushcfunction(L, l_channel);           /* left for luaopen_sockhost */
}
