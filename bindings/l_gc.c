/* l_gc.c -- the garbage collector's pace for a server.
**
** Lua's incremental collector starts a cycle when the heap has grown by a
** share of itself (the pause, 200%: at twice the size the last cycle left).
** A server's heap is small and what it allocates is mostly short-lived
** (the strings of reads, a request's tables): with a 300 KB heap a cycle
** starts every 300 KB allocated and marks the whole heap again, which
** was over half of the instructions of a 16 KiB echo.
**
** So the pause is given a floor in bytes, as Go's collector has (a minimum
** heap of 4 MB): a cycle starts when the heap has grown by its pause or by
** SHL_GC_HEADROOM, whichever is more (the pause at most 1000%, Lua's cap).
** 1 MiB keeps most of the gain (the collector's share of a 16 KiB echo
** went from 7.4k to 1.5k instructions a message; 4 MiB: 1.3k) while
** garbage waiting for a cycle stays within the caches: with 500
** connections, 4 MiB cost more CPU per message than it saved.
** A large heap keeps Lua's own pause. The pause is set again after each
** cycle, from the heap then, at the next outermost resume.
**
** A script that chooses its collector itself (collectgarbage with
** "incremental", "generational", "setpause", "setstepmul" or "stop") takes
** over: from then on the pace is left alone. */
#include "shl.h"

#include <lauxlib.h>

#define SHL_GC_HEADROOM 1024         /* KiB a cycle may wait for, at least */
#define LUA_PAUSE 200                /* Lua's default pause, % */
#define MAX_PAUSE 1000               /* the largest Lua 5.4 keeps */

static const char *const gc_opts[] = {"stop", "restart", "collect", "count", "step",
  "setpause", "setstepmul", "isrunning", "generational", "incremental", NULL};

/* Whether an option of collectgarbage (an index in gc_opts) sets the
** collector's mode or pace: stop, setpause, setstepmul, generational,
** incremental. */
static int takes_over (int opt) {
  return opt == 0 || opt == 5 || opt == 6 || opt == 8 || opt == 9;
}

static int push_mode (lua_State *L, int old) {
  if (old == -1) return 0;                     /* inside a finalizer */
  lua_pushstring(L, old == LUA_GCINC ? "incremental" : "generational");
  return 1;
}

/* collectgarbage([opt [, ...]]): Lua's own (the reference manual's
** options, results and fail inside a finalizer), noting that the script
** has chosen the collector itself when it does. Written out rather than
** wrapped, so that a traceback shows one frame for it. */
static int gc_collectgarbage (lua_State *L) {
  static const int what[] = {LUA_GCSTOP, LUA_GCRESTART, LUA_GCCOLLECT, LUA_GCCOUNT,
    LUA_GCSTEP, LUA_GCSETPAUSE, LUA_GCSETSTEPMUL, LUA_GCISRUNNING, LUA_GCGEN, LUA_GCINC};
  shl_sched *S = (shl_sched *)lua_touserdata(L, lua_upvalueindex(1));
  int opt = luaL_checkoption(L, 1, "collect", gc_opts), res;
  if (takes_over(opt)) S->gc_paced = 0;
  switch (what[opt]) {
    case LUA_GCCOUNT: {
      int k = lua_gc(L, LUA_GCCOUNT), b = lua_gc(L, LUA_GCCOUNTB);
      if (k == -1) break;
      lua_pushnumber(L, (lua_Number)k + ((lua_Number)b / 1024));
      return 1;
    }
    case LUA_GCSTEP:
      res = lua_gc(L, LUA_GCSTEP, (int)luaL_optinteger(L, 2, 0));
      if (res == -1) break;
      lua_pushboolean(L, res);
      return 1;
    case LUA_GCSETPAUSE: case LUA_GCSETSTEPMUL:
      res = lua_gc(L, what[opt], (int)luaL_optinteger(L, 2, 0));
      if (res == -1) break;
      lua_pushinteger(L, res);
      return 1;
    case LUA_GCISRUNNING:
      res = lua_gc(L, LUA_GCISRUNNING);
      if (res == -1) break;
      lua_pushboolean(L, res);
      return 1;
    case LUA_GCGEN:
      if (push_mode(L, lua_gc(L, LUA_GCGEN, (int)luaL_optinteger(L, 2, 0),
                              (int)luaL_optinteger(L, 3, 0)))) return 1;
      break;
    case LUA_GCINC:
      if (push_mode(L, lua_gc(L, LUA_GCINC, (int)luaL_optinteger(L, 2, 0),
                              (int)luaL_optinteger(L, 3, 0), (int)luaL_optinteger(L, 4, 0))))
        return 1;
      break;
    default:
      res = lua_gc(L, what[opt]);
      if (res == -1) break;
      lua_pushinteger(L, res);
      return 1;
  }
  luaL_pushfail(L);
  return 1;
}

/* The pause (%) for a heap of 'kb' KiB. */
static int pause_for (int kb) {
  long p;
  if (kb <= 0) return MAX_PAUSE;
  p = 100L * ((long)kb + SHL_GC_HEADROOM) / kb;
  if (p < LUA_PAUSE) p = LUA_PAUSE;
  if (p > MAX_PAUSE) p = MAX_PAUSE;
  return (int)p;
}

/* The sentinel: an object with nothing pointing to it, so that each cycle
** finalizes it; its finalizer notes that a cycle has ended (the heap is
** then about what is live) and makes the next one. It cannot set the pause
** itself (lua_gc refuses inside a finalizer): shl_gc_pace does, later. */
static const char SENTINEL_MT = 0;

static void new_sentinel (lua_State *L, shl_sched *S);

static int sentinel_gc (lua_State *L) {
  shl_sched *S = *(shl_sched **)lua_touserdata(L, 1);
  S->gc_cycle = 1;
  if (S->gc_paced) new_sentinel(L, S);
  return 0;
}

static void new_sentinel (lua_State *L, shl_sched *S) {
  shl_sched **p = (shl_sched **)lua_newuserdatauv(L, sizeof *p, 0);
  *p = S;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &SENTINEL_MT) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, sentinel_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &SENTINEL_MT);
  }
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
}

/* After a cycle: the pause for the heap there is now (about what is live,
** and what was allocated since the cycle ended). It applies from the end
** of the next cycle, as Lua sets each cycle's threshold when it ends. */
void shl_gc_pace (shl_sched *S) {
  int kb, pause;
  if (!S->gc_paced || !S->gc_cycle) return;
  S->gc_cycle = 0;
  kb = lua_gc(S->L, LUA_GCCOUNT, 0);
  if (kb < 0) return;
  pause = pause_for(kb);
  if (pause != S->gc_pause && lua_gc(S->L, LUA_GCINC, pause, 0, 0) != -1) S->gc_pause = pause;
}

void shl_gc_open (lua_State *L, shl_sched *S) {
  lua_pushlightuserdata(L, S);           /* the host's: it outlives the state's code */
  lua_pushcclosure(L, gc_collectgarbage, 1);
  lua_setglobal(L, "collectgarbage");
  S->gc_paced = 1;
  S->gc_cycle = 1;
  S->gc_pause = LUA_PAUSE;
  shl_gc_pace(S);
  new_sentinel(L, S);
}
