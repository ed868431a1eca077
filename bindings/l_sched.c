/* l_sched.c -- the coroutine scheduler: parking, waking and resuming tasks,
** and the loop that drives them. See shl.h for the model.
**
** Two ways to resume: shl_resume() runs the task at once and is used only by
** loop callbacks (nothing of Lua is on the C stack then); shl_wake() queues
** the task and lets the loop resume it, and is what code running inside Lua
** uses (closing a connection wakes its reader; a finished task wakes its
** joiners), so resumes never nest. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "../core/sh_log.h"
#include "../core/sh_util.h"
#include "../core/sh_watchdog.h"

#include "shl.h"

static const char SCHED_KEY = 'S';   /* registry: the scheduler (light userdata) */


/* ====================== Finding tasks ====================== */

shl_sched *shl_getsched (lua_State *L) {
  shl_sched *S;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &SCHED_KEY);
  S = (shl_sched *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (S == NULL) luaL_error(L, "sockhost is not initialised");
  return S;
}

/* Code runs in a task only while the scheduler resumes it, and resumes never
** nest, so the task on L, if any, is the one being resumed. (A task thread
** that a script resumes itself with coroutine.resume is not running as a
** task then, and cannot block.) */
shl_task *shl_current (lua_State *L) {
  shl_task *t;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &SCHED_KEY);
  t = ((shl_sched *)lua_touserdata(L, -1))->current;
  lua_pop(L, 1);
  return (t != NULL && t->co == L) ? t : NULL;
}

shl_task *shl_checktask (lua_State *L, const char *what) {
  shl_task *t = shl_current(L);
  if (t == NULL || !lua_isyieldable(L))
    luaL_error(L, "%s would block outside a sockhost task "
                  "(call it from a handler, or from a function given to sockhost.spawn)", what);
  return t;
}

/* ====================== Parking ====================== */

static void on_deadline (sh_timer *timer, void *ctx) {
  shl_task *t = ctx;
  shl_timeout_fn fn = t->on_timeout;
  int n;
  (void)timer;
  if (t->state != TASK_PARKED || fn == NULL) return;
  t->on_timeout = NULL;
  n = fn(t->wait_obj, t, 0);
  t->wait_obj = NULL;
  shl_resume(t, n);
}

int shl_park (lua_State *L, shl_task *t, shl_reason why, double timeout, shl_timeout_fn fn,
              void *obj, lua_KContext ctx, lua_KFunction k) {
  t->state = TASK_PARKED;
  t->waiting = why;
  t->top = lua_gettop(L);
  t->on_timeout = fn;
  t->wait_obj = obj;
  if (timeout >= 0 && fn != NULL) {
    if (t->deadline == NULL) t->deadline = sh_timer_new(t->S->loop, 0, on_deadline, t);
    if (t->deadline == NULL || sh_timer_start(t->deadline, timeout, 0) != 0)
      return luaL_error(L, "out of memory");
  }
  return lua_yieldk(L, 0, ctx, k);
}

void shl_unpark (shl_task *t) {
  if (t->deadline != NULL) sh_timer_stop(t->deadline);
  t->on_timeout = NULL;
  t->wait_obj = NULL;
  t->waiting = SHL_WAIT_NONE;
}

/* ====================== Wait queues ====================== */

void shl_waitq_push (shl_waitq *q, shl_task *t) {
  t->wnext = NULL;
  if (q->tail != NULL) q->tail->wnext = t;
  else q->head = t;
  q->tail = t;
}

shl_task *shl_waitq_pop (shl_waitq *q) {
  shl_task *t = q->head;
  if (t == NULL) return NULL;
  q->head = t->wnext;
  if (q->head == NULL) q->tail = NULL;
  t->wnext = NULL;
  return t;
}

int shl_waitq_remove (shl_waitq *q, shl_task *t) {
  shl_task **p = &q->head, *prev = NULL;
  while (*p != NULL && *p != t) { prev = *p; p = &(*p)->wnext; }
  if (*p == NULL) return -1;
  *p = t->wnext;
  if (q->tail == t) q->tail = prev;
  t->wnext = NULL;
  return prev == NULL;
}

void shl_waitq_wake_head (shl_waitq *q) {
  if (q->head == NULL) return;
  shl_unpark(q->head);
  shl_wake(q->head, 0);
}

void shl_waitq_fail_all (shl_waitq *q, const char *err) {
  shl_task *t;
  while ((t = shl_waitq_pop(q)) != NULL)
    if (t->state == TASK_PARKED) shl_wake_fail(t, err);
}

/* A task is in one queue at most: in q if it is its tail or has a next. */
static int in_queue (const shl_waitq *q, const shl_task *t) {
  return q->tail == t || t->wnext != NULL;
}

/* A task already in q (the head, parking again) keeps its place. */
int shl_wait (lua_State *L, shl_waitq *q, shl_task *t, shl_reason why, double timeout,
              shl_timeout_fn fn, void *obj, lua_KContext ctx, lua_KFunction k) {
  if (!in_queue(q, t)) shl_waitq_push(q, t);
  return shl_park(L, t, why, timeout, fn, obj, ctx, k);
}

/* ====================== Time budget ====================== */

/* A task that runs past its budget without yielding is stopped. A Lua hook
** costs on every VM instruction once set, so tasks run without one: a
** profiling timer (ITIMER_PROF: it ticks only while the process uses CPU)
** looks at the running task, and when the same resume is still running at
** two ticks in a row, sets the count hook on its thread (lua_sethook may
** be called from a signal handler). The hook then checks the clock. A
** coroutine a script makes itself gets the hook from its start instead (the
** timer cannot see which coroutine of a task is running), and so does the
** thread of a call of the host's own into script code.
**
** Past the budget the run is being stopped (S->overrun) and the hook comes
** at every instruction, on each thread of the run it reaches: the task's
** own thread yields where it can, which no pcall catches; anywhere else the
** hook raises the budget's error, again at the next instruction of whoever
** caught it, so the error climbs out of every pcall loop. Lua calls the
** message handler of an error raised in a hook with hooks off, where a
** handler that loops could never be stopped: so before raising, each xpcall
** of the run gets a handler that passes the error through as it is. What
** no hook reaches (a __gc finalizer: Lua runs those with hooks off) is the
** watchdog's (core/sh_watchdog.h). */

#define HOOK_COUNT 1000              /* instructions between the hook's looks */
#define TRACE_LEVELS 24              /* frames in the watchdog's traceback */

static shl_sched *budget_sched;      /* the state whose tasks are timed */
static shl_sched *stall_sched;       /* the state whose stalls are logged */
static volatile sig_atomic_t stall_pending;   /* a stall: report at the hook */
static volatile sig_atomic_t stall_unhooked;  /* ... and the thread had no hook before */
static volatile sig_atomic_t resumes;   /* bumped at every resume */
static sig_atomic_t resumes_seen = -1;
static lua_CFunction xpcall_fn;      /* the base library's xpcall, to find its frames */

/* The message handler that xpcall frames get once their run is stopped. */
static int pass_error (lua_State *L) {
  lua_settop(L, 1);
  return 1;
}

static int depth (lua_State *L) {
  lua_Debug ar;
  int n = 0;
  while (lua_getstack(L, n, &ar)) n++;
  return n;
}

/* Give each xpcall among L's frames of the run (all of a task's or a
** coroutine's; those above its start for a host call) pass_error as its
** message handler: xpcall keeps it in its second slot. */
static void pass_handlers (shl_sched *S, lua_State *L) {
  lua_Debug ar;
  int level, n = depth(L) - (L == S->host_L ? S->host_base : 0);
  for (level = 0; level < n && xpcall_fn != NULL && lua_getstack(L, level, &ar); level++) {
    if (!lua_getinfo(L, "f", &ar)) continue;
    if (lua_tocfunction(L, -1) == xpcall_fn) {
      lua_pushcfunction(L, pass_error);
      if (lua_setlocal(L, &ar, 2) == NULL) lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

static void budget_hook (lua_State *L, lua_Debug *ar);

/* Not being stopped: a thread hooked at every instruction goes back to
** every HOOK_COUNT (a coroutine outlives the run that stopped). */
static void relax (lua_State *L) {
  if (lua_gethookcount(L) == 1) lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_COUNT);
}

/* The run is past its budget: stop it from thread L. */
static void stop_run (shl_sched *S, lua_State *L) {
  shl_task *t = S->current;
  lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
  if (t != NULL && L != t->co) lua_sethook(t->co, budget_hook, LUA_MASKCOUNT, 1);
  if (t != NULL && L == t->co && lua_isyieldable(L)) {
    t->overrun = 1;
    lua_yield(L, 0);                    /* in a hook: returns, then yields */
    return;
  }
  pass_handlers(S, L);
  luaL_error(L, "ran for more than %f s without yielding", S->budget);
}

static void report_stall (lua_State *L);

static void budget_hook (lua_State *L, lua_Debug *ar) {
  shl_sched *S = budget_sched;
  (void)ar;
  if (stall_pending && stall_sched != NULL && stall_sched->current != NULL &&
      stall_sched->current->co == L) {
    stall_pending = 0;
    report_stall(L);
    if (stall_unhooked) {               /* the hook was the stall's only: */
      lua_sethook(L, NULL, 0, 0);       /* the budget's timer decides as before */
      return;
    }
  }
  if (S == NULL) {                      /* hooked for a stall only */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  if (!S->timing) {
    relax(L);
    return;
  }
  if (!S->overrun && sh_now_real_coarse() - S->resumed_at < S->budget) {
    relax(L);
    return;
  }
  S->overrun = 1;
  stop_run(S, L);
}

static void on_prof_tick (int sig) {
  shl_sched *S = budget_sched;
  shl_task *t;
  (void)sig;
  if (S == NULL || (t = S->current) == NULL || S->overrun) return;   /* overrun: hooked */
  if (resumes != resumes_seen) { resumes_seen = resumes; return; }
  lua_sethook(t->co, budget_hook, LUA_MASKCOUNT, HOOK_COUNT);
}

/* coroutine.create and coroutine.wrap, giving the new thread the hook
** while a budget is set. */
static int hooked_create (lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));       /* the original */
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  if (budget_sched == NULL) return 1;
  if (lua_type(L, -1) == LUA_TTHREAD)
    lua_sethook(lua_tothread(L, -1), budget_hook, LUA_MASKCOUNT, HOOK_COUNT);
  else if (lua_type(L, -1) == LUA_TFUNCTION && lua_getupvalue(L, -1, 1) != NULL) {
    if (lua_type(L, -1) == LUA_TTHREAD)        /* wrap's function holds its thread */
      lua_sethook(lua_tothread(L, -1), budget_hook, LUA_MASKCOUNT, HOOK_COUNT);
    lua_pop(L, 1);
  }
  return 1;
}

static void hook_coroutines (lua_State *L) {
  static const char *const names[] = {"create", "wrap"};
  int i;
  if (lua_getglobal(L, "coroutine") == LUA_TTABLE) {
    for (i = 0; i < 2; i++) {
      lua_getfield(L, -1, names[i]);
      if (lua_tocfunction(L, -1) == hooked_create || !lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        continue;
      }
      lua_pushcclosure(L, hooked_create, 1);
      lua_setfield(L, -2, names[i]);
    }
  }
  lua_pop(L, 1);
}

static void find_xpcall (lua_State *L) {
  lua_getglobal(L, "xpcall");
  if (lua_tocfunction(L, -1) != NULL) xpcall_fn = lua_tocfunction(L, -1);
  lua_pop(L, 1);
}

void shl_set_budget (shl_sched *S, double seconds) {
  struct sigaction sa;
  struct itimerval it;
  double tick;
  S->budget = seconds > 0 ? seconds : 0;
  budget_sched = S->budget > 0 ? S : NULL;
  memset(&it, 0, sizeof it);
  if (S->budget > 0) {
    hook_coroutines(S->L);
    find_xpcall(S->L);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_prof_tick;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPROF, &sa, NULL);
    tick = S->budget / 4;               /* hooked after 2 ticks of CPU at most */
    if (tick < 0.01) tick = 0.01;
    if (tick > 0.25) tick = 0.25;
    it.it_interval.tv_sec = (time_t)tick;
    it.it_interval.tv_usec = (suseconds_t)((tick - (double)(time_t)tick) * 1e6);
    it.it_value = it.it_interval;
  }
  setitimer(ITIMER_PROF, &it, NULL);     /* zero: off */
}

/* A thread that got the hook from the timer loses it before its next run. */
static void unhook (lua_State *co) {
  if (lua_gethook(co) != NULL) lua_sethook(co, NULL, 0, 0);
}

/* ---------------- the host's own calls into script code ---------------- */

/* What a host call puts aside: the run it may interrupt, L's hook. */
typedef struct host_run {
  shl_task *current;
  int timing, overrun, host_base, mask, count;
  double resumed_at;
  lua_State *host_L;
  lua_Hook hook;
} host_run;

/* Time what runs on L from now on, as a run of its own; 'base': L's frames
** below, not the run's. Returns 0 (and does nothing) without a budget. */
static int host_begin (shl_sched *S, lua_State *L, int base, host_run *h) {
  if (S->budget <= 0) return 0;
  h->current = S->current;
  h->timing = S->timing;
  h->overrun = S->overrun;
  h->resumed_at = S->resumed_at;
  h->host_L = S->host_L;
  h->host_base = S->host_base;
  h->hook = lua_gethook(L);
  h->mask = lua_gethookmask(L);
  h->count = lua_gethookcount(L);
  S->current = NULL;
  S->timing = 1;
  S->overrun = 0;
  S->resumed_at = sh_now_real_coarse();
  S->host_L = L;
  S->host_base = base;
  lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_COUNT);
  return 1;
}

static void host_end (shl_sched *S, lua_State *L, const host_run *h) {
  lua_sethook(L, h->hook, h->mask, h->count);
  S->current = h->current;
  S->timing = h->timing;
  S->overrun = h->overrun;
  S->resumed_at = h->resumed_at;
  S->host_L = h->host_L;
  S->host_base = h->host_base;
}

int shl_host_pcall (shl_sched *S, lua_State *L, int nargs, int nres) {
  host_run h;
  int on = host_begin(S, L, depth(L), &h), status;
  status = lua_pcall(L, nargs, nres, 0);
  if (on) host_end(S, L, &h);
  return status;
}

/* Close co's pending to-be-closed variables (their __close is script code:
** timed as a host call). */
static void close_thread (shl_sched *S, lua_State *co, lua_State *L) {
  host_run h;
  int on = host_begin(S, co, 0, &h);
#if LUA_VERSION_RELEASE_NUM >= 50406
  lua_closethread(co, L);
#else
  (void)L;
  lua_resetthread(co);
#endif
  if (on) host_end(S, co, &h);
}

/* ---------------- the watchdog ---------------- */

/* One frame as luaL_traceback writes it, without its search of a global
** name (which allocates); at most len - 1 bytes, NUL-terminated. */
static size_t trace_frame (char *buf, size_t len, const lua_Debug *ar) {
  char where[LUA_IDSIZE + 16];
  int n;
  if (ar->currentline > 0) snprintf(where, sizeof where, "%s:%d:", ar->short_src, ar->currentline);
  else snprintf(where, sizeof where, "%s:", ar->short_src);
  if (*ar->namewhat != '\0')
    n = snprintf(buf, len, "\n\t%s in %s '%s'", where, ar->namewhat, ar->name);
  else if (*ar->what == 'm')
    n = snprintf(buf, len, "\n\t%s in main chunk", where);
  else if (*ar->what == 'C')
    n = snprintf(buf, len, "\n\t%s in ?", where);
  else
    n = snprintf(buf, len, "\n\t%s in function <%s:%d>", where, ar->short_src, ar->linedefined);
  if (n >= 0 && (size_t)n < len && ar->istailcall)
    n += snprintf(buf + n, len - (size_t)n, "\n\t(...tail calls...)");
  return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

/* L's traceback as luaL_traceback writes it (TRACE_LEVELS frames at most),
** into 'buf': from a signal handler on the loop's thread, lua_getstack and
** lua_getinfo without 'f' or 'L' neither allocate nor lock. */
static void describe_thread (lua_State *L, char *buf, size_t len) {
  lua_Debug ar;
  size_t n = (size_t)snprintf(buf, len, "stack traceback:");
  int level;
  for (level = 0; level < TRACE_LEVELS && n + 1 < len && lua_getstack(L, level, &ar); level++) {
    if (!lua_getinfo(L, "Slnt", &ar)) break;
    n += trace_frame(buf + n, len - n, &ar);
  }
}

/* The watchdog's account of what ran: the traceback of the running task's
** thread (where a finalizer it set off runs too), or of the thread of a
** host call, or of the main thread. */
static void describe_stuck (char *buf, size_t len, void *ctx) {
  shl_sched *S = ctx;
  describe_thread(S->current != NULL ? S->current->co : S->host_L != NULL ? S->host_L : S->L,
                  buf, len);
}

int shl_sched_watchdog (shl_sched *S, double limit, double grace) {
  return sh_watchdog_start(S->loop, limit, grace, describe_stuck, S);
}

/* ---------------- stalls ---------------- */

/* A run that keeps the loop from turning (a blocking call: io, os.execute,
** LuaSocket; or long CPU work) is found by the watchdog's thread
** (core/sh_watchdog.h), which signals the loop's thread. on_stall, in the
** handler, writes down where the running task is (the call that blocks is
** still on its stack) and sets the count hook on its thread; the hook, at
** the task's next VM instruction (once the call returned), logs it, and
** leaves the thread's hook as it found it: a stall is logged, never
** stopped (the budget's timer alone decides that, as before). Each place is
** logged once (the first MAX_STALL_SITES of them); each run that stalled
** is counted. */

#define STALLS "sockhost.stalls"     /* registry: places already logged */
#define MAX_STALL_SITES 256

static char stall_trace[4096];       /* written in the handler, read in the hook */
static char stall_site[LUA_IDSIZE + 32];
static double stall_counted = -1;    /* the run counted last (its start time) */

/* The first frame of L with a line, as "source:line", into 'buf'. */
static void site_of (lua_State *L, char *buf, size_t len) {
  lua_Debug ar;
  int level;
  snprintf(buf, len, "?");
  for (level = 0; lua_getstack(L, level, &ar); level++) {
    if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
      snprintf(buf, len, "%s:%d", ar.short_src, ar.currentline);
      return;
    }
  }
}

/* In the STALL_SIGNAL handler (core/sh_watchdog.c), on the loop's thread. */
static void on_stall (void *ctx) {
  shl_sched *S = ctx;
  lua_State *co;
  lua_Hook h;
  if (S->current == NULL || stall_pending) return;
  co = S->current->co;
  h = lua_gethook(co);
  if (h != NULL && h != budget_hook) return;    /* the script's own hook: leave it */
  site_of(co, stall_site, sizeof stall_site);
  describe_thread(co, stall_trace, sizeof stall_trace);
  stall_unhooked = h == NULL;
  stall_pending = 1;
  lua_sethook(co, budget_hook, LUA_MASKCOUNT, 1);
}

/* Whether 'site' (on top) is new, noting it if so (up to MAX_STALL_SITES). */
static int first_time (lua_State *L) {
  int fresh;
  lua_getfield(L, LUA_REGISTRYINDEX, STALLS);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, STALLS);
  }
  lua_pushvalue(L, -2);
  fresh = lua_rawget(L, -2) == LUA_TNIL;
  lua_pop(L, 1);
  if (fresh) {
    lua_Integer n = (lua_Integer)luaL_len(L, -1);
    fresh = n < MAX_STALL_SITES;
    if (fresh) {
      lua_pushvalue(L, -2);
      lua_pushboolean(L, 1);
      lua_rawset(L, -3);
      lua_pushboolean(L, 1);
      lua_rawseti(L, -2, n + 1);
    }
  }
  lua_pop(L, 1);
  return fresh;
}

/* report_stall's body, protected: (S, took). */
static int log_stall (lua_State *L) {
  shl_sched *S = lua_touserdata(L, 1);
  double took = lua_tonumber(L, 2);
  luaL_checkstack(L, 8, NULL);
  lua_settop(L, 2);
  lua_pushstring(L, stall_site);                /* S took site */
  if (!first_time(L)) return 0;
  shl_task_push(L, S->current);
  lua_getiuservalue(L, -1, 2);                  /* S took site task served */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "task");
  }
  sh_log_trace(SH_LOG_WARN, stall_trace,
               "%s kept the loop from turning for %.3f s at %s (over the %g s of "
               "--slow-turn: a blocking call? io, os.execute, LuaSocket: see "
               "\"Blocking calls\" in doc/API.md); logged once per place",
               luaL_tolstring(L, -1, NULL), took, stall_site, S->stall);
  return 0;
}

/* In the hook, on the running task's thread L, after a stall was signalled. */
static void report_stall (lua_State *L) {
  shl_sched *S = stall_sched;
  double took = sh_watchdog_run_time(), began = sh_now_real_coarse() - took;
  if (took < S->stall * 0.9) return;            /* that run ended: this is another */
  if (began - stall_counted > 0.001 || stall_counted - began > 0.001) {
    stall_counted = began;
    S->stalls++;
  }
  if (!lua_checkstack(L, 3)) return;
  lua_pushcfunction(L, log_stall);
  lua_pushlightuserdata(L, S);
  lua_pushnumber(L, took);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_pop(L, 1);
}

void shl_set_stall (shl_sched *S, double seconds) {
  S->stall = seconds > 0 ? seconds : 0;
  stall_sched = S->stall > 0 ? S : NULL;
  sh_watchdog_set_stall(S->stall, on_stall, S);
}

/* ---------------- resuming ---------------- */

/* The task ran past its budget and is over, whatever it did after: its
** results or error give way to the budget's. */
static void stopped (shl_task *t, int status, int nres) {
  shl_sched *S = t->S;
  S->overrun = 0;
  lua_pop(t->co, status == LUA_OK || status == LUA_YIELD ? nres : 1);
  lua_pushfstring(t->co, "stopped: ran for more than %f s without yielding", S->budget);
  t->overrun = 1;
  S->overruns++;
  shl_task_finish(t, LUA_ERRRUN, 0);
}

void shl_resume (shl_task *t, int nargs) {
  shl_sched *S = t->S;
  shl_task *prev = S->current;
  int nres = 0, status;
  t->state = TASK_RUNNING;
  S->current = t;
  sh_watchdog_kick();
  if (S->budget > 0) {
    S->resumed_at = sh_now_real_coarse();
    S->timing = 1;
    S->overrun = 0;
    resumes++;
    unhook(t->co);
  }
  if (prev == NULL) sh_watchdog_run_begin();
  status = lua_resume(t->co, NULL, nargs, &nres);
  if (prev == NULL) {
    sh_watchdog_run_end();
    shl_gc_pace(S);
  }
  S->current = prev;
  S->timing = 0;
  if (S->overrun) {
    stopped(t, status, nres);
    return;
  }
  if (status == LUA_YIELD) {
    lua_pop(t->co, nres);
    if (t->state == TASK_RUNNING)    /* a bare coroutine.yield(): let others run */
      shl_wake(t, 0);
    return;
  }
  shl_task_finish(t, status, nres);
}

void shl_sched_shuffle (shl_sched *S, unsigned long long seed) {
  S->shuffle = seed ? seed * 0x9E3779B97F4A7C15ULL | 1 : 0;
}

/* xorshift64*: the next draw in [0, n). */
static int draw (shl_sched *S, int n) {
  unsigned long long x = S->shuffle;
  x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
  S->shuffle = x;
  return (int)(((x * 0x2545F4914F6CDD1DULL) >> 33) % (unsigned long long)n);
}

/* Take the k-th task of the ready queue out of it. */
static shl_task *unqueue (shl_sched *S, int k) {
  shl_task *prev = NULL, *t = S->ready_head;
  while (k-- > 0) { prev = t; t = t->next; }
  if (prev != NULL) prev->next = t->next;
  else S->ready_head = t->next;
  if (S->ready_tail == t) S->ready_tail = prev;
  t->next = NULL;
  return t;
}

/* The seeded order: of the tasks queued when the batch began, a drawn one
** runs next, until all of them ran. */
static void run_shuffled (shl_sched *S) {
  int n = 0;
  shl_task *t;
  for (t = S->ready_head; t != NULL; t = t->next) n++;
  for (; n > 0 && S->ready_head != NULL; n--) {
    int avail = 0;
    for (t = S->ready_head; t != NULL && avail < n; t = t->next) avail++;
    t = unqueue(S, draw(S, avail));
    shl_resume(t, t->nargs);
  }
}

static void on_ready (sh_timer *timer, void *ctx) {
  shl_sched *S = ctx;
  int n = 0;
  shl_task *t, *last = S->ready_tail;
  (void)timer;
  if (S->shuffle) {
    run_shuffled(S);
    if (S->ready_head != NULL) sh_timer_start(S->ready_timer, 0, 0);
    return;
  }
  /* Run only what was queued before we started: a task that keeps yielding
  ** must not starve I/O. */
  while ((t = S->ready_head) != NULL) {
    S->ready_head = t->next;
    if (S->ready_head == NULL) S->ready_tail = NULL;
    t->next = NULL;
    n++;
    shl_resume(t, t->nargs);
    if (t == last) break;
  }
  if (S->ready_head != NULL) sh_timer_start(S->ready_timer, 0, 0);
  (void)n;
}

void shl_wake (shl_task *t, int nargs) {
  shl_sched *S = t->S;
  t->state = TASK_READY;
  t->nargs = nargs;
  t->next = NULL;
  if (S->ready_tail != NULL) S->ready_tail->next = t;
  else S->ready_head = t;
  S->ready_tail = t;
  if (!sh_timer_active(S->ready_timer)) sh_timer_start(S->ready_timer, 0, 0);
}

void shl_wake_fail (shl_task *t, const char *err) {
  shl_unpark(t);
  lua_checkstack(t->co, 2);
  luaL_pushfail(t->co);
  lua_pushstring(t->co, err);
  shl_wake(t, 2);
}


/* ====================== Tasks: birth and end ====================== */

void shl_task_push (lua_State *L, shl_task *t) {
  lua_rawgeti(t->S->L, LUA_REGISTRYINDEX, t->ref);
  if (t->S->L != L) lua_xmove(t->S->L, L, 1);
}

/* ====================== Creation ====================== */

#define POOL_MAX 256      /* finished handler tasks kept for reuse */

/* The list of live tasks (sockhost.stats, the admin console). */
static void link_live (shl_sched *S, shl_task *t) {
  t->id = ++S->next_task;
  t->born = sh_now();
  t->lprev = NULL;
  t->lnext = S->live;
  if (S->live != NULL) S->live->lprev = t;
  S->live = t;
}

static void unlink_live (shl_sched *S, shl_task *t) {
  if (t->lprev != NULL) t->lprev->lnext = t->lnext;
  else if (S->live == t) S->live = t->lnext;
  else return;                                 /* not linked */
  if (t->lnext != NULL) t->lnext->lprev = t->lprev;
  t->lprev = t->lnext = NULL;
}

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
  t->kept = S->keeping;
  link_live(S, t);
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
  t->kept = S->keeping;
  link_live(S, t);
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
** raising: a __tostring that fails must not take the host down, nor one
** that never returns (it runs under the budget). */
static const char *safe_tostring (shl_sched *S, lua_State *L) {
  const char *tname = luaL_typename(L, -1);
  lua_pushcfunction(L, tostring_raw);
  lua_insert(L, -2);
  if (shl_host_pcall(S, L, 1, 1) != LUA_OK || !lua_isstring(L, -1)) {
    lua_pop(L, 1);
    return lua_pushfstring(L, "(error object is a %s value)", tname);
  }
  return lua_tostring(L, -1);
}

static const char FAILURES_KEY = 'F';   /* registry: failures kept for sockhost.test */

void shl_sched_failures (lua_State *L, shl_sched *S, int keep) {
  if (!keep) S->keeping = 0;
  else if (S->keeping == 0) S->keeping = ++S->keepings;    /* tasks from now on */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &FAILURES_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  if (keep) lua_newtable(L);
  else lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &FAILURES_KEY);
}

/* A failure as logged, kept for sockhost.test if it keeps those of t (a
** task made before it began keeping them is not the session's). */
static void keep_failure (shl_task *t, const char *label, const char *msg, const char *trace) {
  lua_State *L = t->S->L;
  if (t->kept == 0 || t->kept != t->S->keeping) return;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &FAILURES_KEY) == LUA_TTABLE) {
    lua_pushfstring(L, "%s failed: %s\n%s", label, msg, trace);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  }
  lua_pop(L, 1);
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
  msg = safe_tostring(t->S, L);                /* task err msg */
  luaL_traceback(L, co, NULL, 0);              /* task err msg trace */
  trace = lua_tostring(L, -1);
  if (lua_getiuservalue(L, -4, 2) == LUA_TNIL) {   /* what the task served */
    lua_pop(L, 1);
    lua_pushliteral(L, "task");
  }
  label = safe_tostring(t->S, L);              /* task err msg trace label */
  sh_log_trace(SH_LOG_ERROR, trace, "%s failed: %s", label, msg);
  keep_failure(t, label, msg, trace);
  lua_pop(L, 5);
  close_thread(t->S, co, L);                   /* close pending <close> variables */
}

void shl_task_results (shl_task *t, lua_State *to) {
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
    if (t->state == TASK_DONE) shl_task_results(t, j->co);
    shl_wake(j, t->state == TASK_DONE ? t->nres : 0);
  }
  if (t->on_exit != NULL) t->on_exit(t, t->exit_ctx);
  unlink_live(S, t);
  if (t->state == TASK_DONE && to_pool(t)) return;
  if (t->deadline != NULL) { sh_timer_free(t->deadline); t->deadline = NULL; }
  luaL_unref(S->L, LUA_REGISTRYINDEX, t->ref);
  t->ref = LUA_NOREF;
  sh_loop_unref(S->loop);
}

/* ====================== The scheduler ====================== */

void shl_sched_init (lua_State *L, shl_sched *S, sh_loop *loop) {
  memset(S, 0, sizeof *S);
  S->loop = loop;
  S->ready_timer = sh_timer_new(loop, 0, on_ready, S);
  if (S->ready_timer == NULL) luaL_error(L, "sockhost: out of memory");
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  S->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, S);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &SCHED_KEY);
}

/* At lua_close: nothing runs any more. The profiling timer must not look
** at S (nor at a task's thread) once lua_close has freed it. */
void shl_sched_close (shl_sched *S) {
  S->ready_head = S->ready_tail = NULL;
  if (S->ready_timer != NULL) sh_timer_free(S->ready_timer);
  S->ready_timer = NULL;
  if (budget_sched == S) shl_set_budget(S, 0);
}
