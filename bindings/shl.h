/* shl.h -- what the binding files share: the scheduler, tasks (the
** coroutines the host runs), and small helpers for the Lua side.
**
** Every coroutine the host runs is a task: the main script, each connection
** handler, each timer callback, each spawned function. A task that calls a
** blocking method parks: it records how it is to be woken, arms its
** deadline, and yields. Whoever it waits for (a stream, a timer, another
** task) later pushes the results onto the task's stack and resumes it. */
#ifndef SHL_H
#define SHL_H

#include <lauxlib.h>
#include <lua.h>

#include "../core/sh_addr.h"
#include "../core/sh_loop.h"
#include "../core/sh_resolve.h"
#include "../core/sh_timer.h"

#define SH_VERSION "sockhost 0.1.0"

#define TASK_MT "sockhost.task"
#define CONN_MT "sockhost.conn"
#define LISTENER_MT "sockhost.listener"
#define TIMER_MT "sockhost.timer"

typedef struct shl_task shl_task;
typedef struct lconn lconn;

/* Called when a parked task's deadline passes ('cancel' 0): forget the
** waiter, push the results for the task onto t->co and return how many.
** Called with 'cancel' 1 when the task is being collected at shutdown:
** release what the wait holds, push nothing. */
typedef int (*shl_timeout_fn)(void *obj, shl_task *t, int cancel);

/* Called when a task ends, after its error (if any) is logged. */
typedef void (*shl_exit_fn)(shl_task *t, void *ctx);

typedef enum { TASK_NEW, TASK_READY, TASK_RUNNING, TASK_PARKED, TASK_DONE, TASK_FAILED } shl_state;

typedef struct shl_sched {
  lua_State *L;              /* the main thread */
  sh_loop *loop;
  sh_timer *ready_timer;     /* fires once to run the ready queue */
  shl_task *ready_head;      /* tasks to resume from the loop, FIFO */
  shl_task *ready_tail;
  shl_task *current;         /* task running now, or NULL */
  unsigned next_id;          /* connection ids for logs */
  int exit_code;             /* for the executable: 1 after the main task failed */
  double linger;             /* seconds a closing stream may take to flush */
  sh_resolver *resolver;     /* made on first use; see sockhost.resolver() */
  unsigned char *dgram_buf;  /* one datagram's worth, shared by all sockets */
  int reuseport;             /* default for listeners (set in -w workers) */
  double budget;             /* seconds a task may run without yielding; 0: any */
  double idle_timeout;       /* default for accepted connections; 0: none */
  double line_timeout;       /* default deadline to finish a line; 0: none */
  double max_line;           /* default longest line */
  double max_conns;          /* default connections per listener */
  int timers;                /* armed after/every timers */
  int draining;              /* shutting down: stop accepting, let handlers end */
  double grace;              /* seconds handlers get to finish on shutdown */
  sh_timer *grace_timer;     /* ends the grace period */
  lconn *accepted;           /* open accepted connections, and others with
                             ** time limits (a list) */
  sh_timer *sweep_timer;     /* checks their time limits */
  shl_task *pool;            /* finished tasks kept for reuse (a list) */
  int npool;
  int max_timers;            /* cap on those */
  double resumed_at;         /* when the current task was resumed */
  unsigned long long shuffle;   /* sockhost.test: 0, or the state of the
                             ** generator that picks the ready task to run */
} shl_sched;

struct shl_task {
  shl_sched *S;
  lua_State *co;             /* the coroutine */
  int ref;                   /* registry ref to the task userdata until it ends */
  shl_state state;
  int nargs;                 /* values on co's stack for the next resume */
  int nres;                  /* results on co's stack once DONE */
  int top;                   /* co's stack top when it parked: a waker that
                             ** pushed more values reports a failure */
  shl_task *next;            /* link in the ready queue */
  shl_task *wnext;           /* link in a wait queue (writers, joiners): a task
                             ** whose turn comes is on both at once */
  shl_task *joiners;         /* tasks parked in join() on this one */
  sh_timer *deadline;        /* timeout of the current wait; made on demand */
  shl_timeout_fn on_timeout; /* how to end the current wait on its deadline */
  void *wait_obj;            /* what the task waits for */
  shl_exit_fn on_exit;       /* NULL, or what to do when the task ends */
  int overrun;               /* stopped for running past the budget */
  int poolable;              /* no script holds the task object: reusable */
  void *exit_ctx;
};

/* ---------------- l_sched.c: the scheduler ---------------- */
shl_sched *shl_getsched(lua_State *L);
void shl_sched_open(lua_State *L);            /* creates the scheduler once */
shl_task *shl_current(lua_State *L);          /* the task running on L, or NULL */
/* The task running on L; raises "<what> would block outside a sockhost task"
** if L is not a task (the main thread, a plain coroutine). */
shl_task *shl_checktask(lua_State *L, const char *what);
/* Park the running task and yield (use as 'return shl_park(...)'). A timeout
** < 0 waits forever. 'k' continues the C function (NULL: plain yield, so the
** values the waker pushes become the results of the call). */
int shl_park(lua_State *L, shl_task *t, double timeout, shl_timeout_fn fn, void *obj,
             lua_KContext ctx, lua_KFunction k);
/* End t's wait (disarm the deadline). Call before pushing its results. */
void shl_unpark(shl_task *t);
/* Resume t now with 'nargs' values on its stack. Only from a loop callback,
** never from inside Lua. Anything may have changed when it returns. */
void shl_resume(shl_task *t, int nargs);
/* Resume t later, from the loop: safe from anywhere. */
void shl_wake(shl_task *t, int nargs);
/* Push nil, err onto t's stack and wake it later. */
void shl_wake_fail(shl_task *t, const char *err);
/* sockhost.test: run the ready queue in an order drawn from 'seed' (0: in
** the order tasks were woken). */
void shl_sched_shuffle(shl_sched *S, unsigned long long seed);
/* Stop any task that runs 'seconds' without yielding (0: no limit). */
void shl_set_budget(shl_sched *S, double seconds);
/* Graceful shutdown: close listeners and handler sockets, run the
** on_shutdown hooks, let handlers finish for S->grace seconds, then stop. */
void shl_shutdown(lua_State *L, shl_sched *S);
/* Objects that stop on shutdown (listeners, datagram handler sockets):
** register the one at 'idx' while it is open; unregister when closed. */
void shl_shutdown_register(lua_State *L, int idx, int on);
int shl_shutdown_lua(lua_State *L);
int shl_on_shutdown(lua_State *L);
int shl_on_signal(lua_State *L);
/* Run the loop (see sh_loop_run). */
int shl_run(shl_sched *S, double timeout);

/* ---------------- l_modules.c: Lua modules shipped inside ---------------- */
/* Register them in package.preload; the module table at the top of the
** stack gets them as lazy fields. */
void shl_modules_open(lua_State *L);
/* l_http.c: package.preload["sockhost.http.parser"], the C half of
** sockhost.http. */
void shl_http_open(lua_State *L);
/* l_test.c: package.preload["sockhost.test.core"], the C half of
** sockhost.test. */
void shl_test_open(lua_State *L);

/* ---------------- l_task.c: tasks ---------------- */
/* Make a task of the function below the 'nargs' values on top of L (popped).
** 'owner' (an absolute index, or 0) is recorded as what the task serves: it
** names the task in logs. With 'keep', the task object is left on L. */
shl_task *shl_task_new(shl_sched *S, lua_State *L, int nargs, int owner, int keep);
/* Push t's userdata. */
void shl_task_push(lua_State *L, shl_task *t);
/* The task has returned or raised: record it, log a failure, wake joiners,
** run on_exit, release it. 'status' and 'nres' are lua_resume's. */
void shl_task_finish(shl_task *t, int status, int nres);
void shl_task_open(lua_State *L);

/* ---------------- l_resolve.c: names ---------------- */
/* The resolver, made with the system's configuration on first use; raises
** if it cannot be made. */
sh_resolver *shl_resolver(lua_State *L, shl_sched *S);
/* What shl_try_addrs needs from its caller. It begins the caller's own
** context (the 'ctx' its op gets), which must outlive a wait: make it part
** of a userdata left on the stack. */
typedef struct shl_tries {
  sh_try_fn op;              /* one try, set by the caller; it may run from
                             ** the loop (plain C, no Lua) and must end at
                             ** once (SH_TRY_OK or SH_TRY_FAIL) */
  sh_try *walk;              /* the rest is shl_try_addrs's */
  shl_task *t;
  char host[256];
} shl_tries;
/* Try x->op on each address of 'a' in turn until one works (sh_try_start):
** returns 0 when one worked at once, or pushes nil and the last error and
** returns 2. For a host name the running task (the caller has checked that
** there is one) parks until the end, 30 s at most, then continues in 'k',
** where shl_tried tells the outcome. */
int shl_try_addrs(lua_State *L, const sh_addr *a, int socktype, shl_tries *x,
                  lua_KContext ctx, lua_KFunction k);
/* In that continuation: 0 when a try worked, or 2 with nil and the error
** ("cannot resolve 'host': timeout", "address in use", ...) on top. */
int shl_tried(lua_State *L);
int shl_resolve(lua_State *L);
int shl_setresolver(lua_State *L);
void shl_resolver_close(shl_sched *S);

/* ---------------- l_conn.c, l_listener.c, l_timer.c ---------------- */

/* Connections counted against a listener's limit; shared by the listener
** and its connections, freed when the last one lets go. */
typedef struct shl_counter {
  int live;                  /* open connections */
  int refs;                  /* the listener + each counted connection */
} shl_counter;
void shl_counter_release(shl_counter *c);
/* Count this connection in 'c' until it closes. */
void shl_conn_count(lconn *lc, shl_counter *c);
/* Shutdown: close the accepted connections whose handler waits for a new
** request (a read parked with nothing buffered). */
void shl_conn_drain_idle(shl_sched *S);
/* Idle and line-finishing time limits for the connection. */
void shl_conn_setlimits(lconn *lc, double idle, double line);
/* Push a new connection object over connected socket 'fd'. On failure 'fd'
** is closed, nothing is pushed, NULL returned. */
lconn *shl_conn_new(lua_State *L, shl_sched *S, int fd);
void shl_conn_settimeout(lconn *c, double timeout);
void shl_conn_setmaxline(lconn *c, size_t max_line);
/* A handler task's on_exit: close its connection, flushing output. */
void shl_conn_handler_exit(shl_task *t, void *ctx);
void shl_conn_open(lua_State *L);
int shl_connect(lua_State *L);
void shl_listener_open(lua_State *L);
struct sh_sockopts;
/* Socket options (backlog, reuseport, ipv6only, mode) from table 'arg'. */
void shl_sockopts(lua_State *L, int arg, struct sh_sockopts *o);
int shl_listen(lua_State *L);
void shl_timer_open(lua_State *L);
void shl_udp_open(lua_State *L);
int shl_udp(lua_State *L);
int shl_after(lua_State *L);
int shl_every(lua_State *L);
int shl_sleep(lua_State *L);

/* ---------------- l_tls.c: TLS options, sessions, handshakes ---------------- */
struct sh_tls_ctx;
struct bufferevent;
/* A TLS context from the options table at 'arg' (nil: defaults) for a
** server or a client. Raises on malformed options; NULL with a message in
** 'err' when a file cannot be used. Sets '*name' to the 'servername'
** option (client) if given, and '*hs_timeout' (default 10 s). */
struct sh_tls_ctx *shl_tls_ctx(lua_State *L, int arg, int server, const char **name,
                               double *hs_timeout, char *err, size_t errlen);
/* Whether the table at 'arg' holds any TLS option. */
int shl_tls_has_options(lua_State *L, int arg);
/* Push conn:tls()'s table for 'bev' (nil when it is not TLS); returns 1. */
int shl_tls_push_info(lua_State *L, struct bufferevent *bev);
/* Work on the loop that no task owns (a listener's handshakes): cancelled
** at lua_close, before the scheduler's last run of the loop. */
typedef struct shl_pending {
  struct shl_pending *prev, *next;
  void (*cancel)(struct shl_pending *p);   /* free it; no Lua calls but unref */
} shl_pending;
void shl_pending_add(lua_State *L, shl_pending *p);
void shl_pending_remove(shl_pending *p);    /* idempotent */
/* l_conn.c: a connection over bufferevent 'bev' (a finished TLS handshake),
** pushed; on failure 'bev' is freed, nothing pushed, NULL returned. */
lconn *shl_conn_new_bev(lua_State *L, shl_sched *S, struct bufferevent *bev);

/* ---------------- helpers ---------------- */
/* Create metatable 'name' with metamethods 'meta' and __index = 'methods'. */
void shl_newclass(lua_State *L, const char *name, const luaL_Reg *meta,
                  const luaL_Reg *methods);
int shl_pushfail(lua_State *L, const char *err);        /* nil, err */
/* Push s[0..len) with each NUL written as "\x00" and return it: the log
** takes C strings, and a NUL in peer data must not cut a line short unseen. */
const char *shl_push_nul_escaped(lua_State *L, const char *s, size_t len);
/* Push the address string of fd's own (peer 0) or remote end (peer 1), in
** 'scheme' (< 0: tcp or unix, from the family); nil, err on failure, with
** 'notconn' (if not NULL) as the error for an unconnected peer. */
int shl_push_sockname(lua_State *L, int fd, int peer, int scheme, const char *notconn);
/* Optional timeout argument/option: nil or < 0 means none. */
double shl_opttimeout(lua_State *L, int arg, double def);
/* Raise on option names not in 'known' (NULL-terminated) for table 'arg'. */
void shl_checkoptions(lua_State *L, int arg, const char *const known[]);
/* opts[name] as number, or 'def' when absent. Raises on a wrong type. */
double shl_optfield(lua_State *L, int arg, const char *name, double def);

LUAMOD_API int luaopen_sockhost(lua_State *L);

#endif
