/* l_stats.c -- sockhost.stats(): what the host is doing, as a table
** (connections, listeners, bytes, tasks and what they wait for, timers,
** memory, the limits that fired).
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

#define NREASONS (SHL_WAIT_SELECT + 1)
#define reason_names shl_reason_names


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
  if (lua_istable(L, 1) && lua_getfield(L, 1, "all") != LUA_TNIL && lua_toboolean(L, -1))
    return shl_stats_all(L);
  shl_stats_push(L, shl_gethost(L));
  return 1;
}

