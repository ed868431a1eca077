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

/* The host's defaults (the command line and sockhost.test change them). */
#define SHL_DEFAULT_IDLE 300.0        /* accepted connections: seconds without traffic */
#define SHL_DEFAULT_LINE 60.0         /* ... seconds to finish a line once begun */
#define SHL_DEFAULT_MAX_LINE 65536    /* ... longest line or read_until result */
#define SHL_DEFAULT_MAX_CONNS 10000   /* ... per listener */
#define SHL_DEFAULT_MAX_TIMERS 100000 /* armed after/every timers */
#define SHL_DEFAULT_GRACE 10.0        /* seconds handlers get on shutdown */
#define SHL_DEFAULT_MAX_BUFFERS 268435456.0   /* bytes (256 MiB) all connections
                                      ** may hold in their buffers together */
#define SHL_CONN_SHARE 4              /* ... one connection, 1/4 of that */

#define TASK_MT "sockhost.task"
#define CONN_MT "sockhost.conn"
#define LISTENER_MT "sockhost.listener"
#define TIMER_MT "sockhost.timer"
#define CHANNEL_MT "sockhost.channel"
#define EVENT_MT "sockhost.event"

typedef struct shl_task shl_task;
typedef struct lconn lconn;

/* Called when a parked task's deadline passes ('cancel' 0): forget the
** waiter, push the results for the task onto t->co and return how many.
** Called with 'cancel' 1 when the task is being collected at shutdown, or
** when the select it waits for no longer needs it (l_select.c): release
** what the wait holds, push nothing. */
typedef int (*shl_timeout_fn)(void *obj, shl_task *t, int cancel);

/* Called when a task ends, after its error (if any) is logged. */
typedef void (*shl_exit_fn)(shl_task *t, void *ctx);

typedef enum { TASK_NEW, TASK_READY, TASK_RUNNING, TASK_PARKED, TASK_DONE, TASK_FAILED } shl_state;

/* What a parked task waits for (for logs and stats). */
typedef enum {
  SHL_WAIT_NONE, SHL_WAIT_READ, SHL_WAIT_WRITE, SHL_WAIT_CONNECT, SHL_WAIT_HANDSHAKE,
  SHL_WAIT_RESOLVE, SHL_WAIT_RECV, SHL_WAIT_SEND, SHL_WAIT_SLEEP, SHL_WAIT_JOIN,
  SHL_WAIT_CHANNEL, SHL_WAIT_EVENT, SHL_WAIT_SELECT
} shl_reason;

/* The one waiting primitive: a FIFO of tasks waiting their turn on one
** thing (a conn's reader and writers, a udp socket's, a task's joiners).
** The head is the task whose turn it is, parked or already woken; the
** others are parked behind it. A task is in one queue at a time. */
typedef struct shl_waitq {
  shl_task *head, *tail;
} shl_waitq;

/* The scheduler (l_sched.c): tasks, the ready queue, parking, the budget. */
typedef struct shl_sched {
  lua_State *L;              /* the main thread */
  sh_loop *loop;             /* NULL once the host is closed */
  sh_timer *ready_timer;     /* fires once to run the ready queue */
  shl_task *ready_head;      /* tasks to resume from the loop, FIFO */
  shl_task *ready_tail;
  shl_task *current;         /* task running now, or NULL */
  shl_task *pool;            /* finished tasks kept for reuse (a list) */
  int npool;
  double budget;             /* seconds a task may run without yielding; 0: any */
  double stall;              /* a run longer than this is logged (--slow-turn); 0: off */
  unsigned long stalls;      /* runs that were */
  unsigned long overruns;    /* tasks stopped by the budget (sockhost.stats) */
  unsigned long mem_refused; /* allocations refused past --max-memory */
  shl_task *live;            /* tasks made and not yet ended, newest first */
  unsigned next_task;        /* task ids (sockhost.stats, the admin console) */
  /* the run being timed: a task's resume, or a call of the host's own into
  ** script code (shl_host_pcall) */
  int timing;                /* a run is being timed */
  int overrun;               /* ... and it ran past the budget: it is being stopped */
  double resumed_at;         /* when it began (real time, coarse) */
  lua_State *host_L;         /* a host call: the thread it runs on, and */
  int host_base;             /* ... how deep that thread was when it began */
  unsigned long long shuffle;   /* sockhost.test: 0, or the state of the
                             ** generator that picks the ready task to run */
  unsigned keeping;          /* sockhost.test: failures of the tasks made
                             ** with this mark are kept (0: none are) */
  unsigned keepings;         /* marks handed out */
  int gc_paced;              /* l_gc.c sets the collector's pause (the script
                             ** has not chosen its own) */
  int gc_cycle;              /* a cycle has ended since the pause was set */
  int gc_pause;              /* the pause set (%) */
} shl_sched;

/* The host (l_host.c): the loop and what every object of a Lua state
** shares: defaults and limits, counters, the shutdown, the resolver, the
** time-limit sweep. One per Lua state; it owns the scheduler. */
typedef struct shl_host {
  lua_State *L;              /* the main thread */
  sh_loop *loop;             /* NULL once closed */
  shl_sched *sched;
  /* defaults and limits (command line, sockhost.test) */
  double linger;             /* seconds a closing stream may take to flush */
  double idle_timeout;       /* default for accepted connections; 0: none */
  double line_timeout;       /* default deadline to finish a line; 0: none */
  double max_line;           /* default longest line */
  double max_conns;          /* default connections per listener */
  int max_timers;            /* cap on armed after/every timers */
  int reuseport;             /* default for listeners (set in -w workers) */
  double max_buffers;        /* bytes all streams may buffer together; 0: any */
  size_t conn_share;         /* bytes one connection may buffer; 0: any */
  /* counters */
  unsigned next_id;          /* connection ids for logs */
  int timers;                /* armed after/every timers */
  int exit_code;             /* for the executable: 1 after the main task failed */
  struct shl_counts {        /* what sockhost.stats() reports (l_stats.c) */
    unsigned long long open;        /* accepted connections open now */
    unsigned long long accepted;    /* connections accepted */
    unsigned long long bytes_in;    /* bytes connections' reads handed to scripts */
    unsigned long long bytes_out;   /* bytes connections' writes took */
    unsigned long long idle_cuts;   /* connections cut by the idle limit */
    unsigned long long line_cuts;   /* ... by the line deadline */
    unsigned long long buffer_cuts; /* ... by the buffers' budget */
    unsigned long long refused;     /* connections refused at max_conns */
  } counts;
  void *listeners;           /* open listeners (l_listener.c's list) */
  /* shutdown */
  int draining;              /* shutting down: stop accepting, let handlers end */
  int owns_hup;              /* SIGHUP reloads (l_reload.c), and comes to the
                             ** script's on_signal("HUP") through it */
  int handed_over;           /* a reload's new generation serves: a connection
                             ** that has not had its first request still gets it */
  double grace;              /* seconds handlers get to finish on shutdown */
  sh_timer *grace_timer;     /* ends the grace period */
  /* shared by the objects */
  lconn *accepted;           /* open accepted connections (a list) */
  struct sh_sweep *sweep;    /* checks the connections' time limits */
  struct sh_budget *budget;  /* what the streams' buffers hold, against max_buffers */
  size_t collect;            /* bytes of large reads to collect (shl_host_collect) */
  sh_timer *collect_timer;   /* runs that collection from the loop */
  sh_resolver *resolver;     /* made on first use; see sockhost.resolver() */
  unsigned char *dgram_buf;  /* one datagram's worth, shared by all sockets */
} shl_host;

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
  shl_task *wnext;           /* link in a shl_waitq: a task whose turn comes
                             ** is on it and the ready queue at once */
  shl_waitq joiners;         /* tasks parked in join() on this one */
  shl_reason waiting;        /* what it is parked on, while PARKED */
  sh_timer *deadline;        /* timeout of the current wait; made on demand */
  shl_timeout_fn on_timeout; /* how to end the current wait on its deadline */
  void *wait_obj;            /* what the task waits for */
  shl_exit_fn on_exit;       /* NULL, or what to do when the task ends */
  int overrun;               /* stopped for running past the budget */
  unsigned kept;             /* S->keeping when it was made */
  int poolable;              /* no script holds the task object: reusable */
  void *exit_ctx;
  shl_task *lprev, *lnext;   /* in S->live while made and not ended */
  unsigned id;               /* for the admin console */
  double born;               /* when it was made (sh_now) */
};

/* ---------------- l_host.c: the host ---------------- */
shl_host *shl_gethost(lua_State *L);
void shl_host_open(lua_State *L);             /* creates the host once per state */
/* Run the loop (see sh_loop_run). */
int shl_run(shl_host *H, double timeout);
/* Limit what the streams may buffer together to 'bytes' (0: no limit); one
** connection may then hold a share of it (H->conn_share). */
void shl_host_set_max_buffers(shl_host *H, double bytes);
/* 'bytes' of large strings handed to scripts (a closed connection's reads)
** are likely garbage now: soon, from the loop, the Lua collector does the
** work that allocating them would have asked of it, so that the memory goes
** back without waiting for scripts to allocate more. */
void shl_host_collect(shl_host *H, size_t bytes);

/* ---------------- l_gc.c: the collector's pace ---------------- */
/* Wrap the global collectgarbage (a script's own choice of collector
** turns the pacing off) and set the first pause. */
void shl_gc_open(lua_State *L, shl_sched *S);
/* After a cycle has ended, set the pause for the heap then: a floor of
** 1 MiB of growth per cycle for small heaps. After an outermost resume. */
void shl_gc_pace(shl_sched *S);

/* ---------------- l_sched.c: the scheduler ---------------- */
shl_sched *shl_getsched(lua_State *L);
/* Make the scheduler in 'S' (memory the host owns) for 'loop'; raises when
** out of memory. shl_sched_close ends it: the ready queue dropped, the
** budget's timer off. */
void shl_sched_init(lua_State *L, shl_sched *S, sh_loop *loop);
void shl_sched_close(shl_sched *S);
shl_task *shl_current(lua_State *L);          /* the task running on L, or NULL */
/* The task running on L; raises "<what> would block outside a sockhost task"
** if L is not a task (the main thread, a plain coroutine). */
shl_task *shl_checktask(lua_State *L, const char *what);
/* Park the running task on 'why' and yield (use as 'return shl_park(...)').
** A timeout < 0 waits forever. 'k' continues the C function (NULL: plain
** yield, so the values the waker pushes become the results of the call). */
int shl_park(lua_State *L, shl_task *t, shl_reason why, double timeout, shl_timeout_fn fn,
             void *obj, lua_KContext ctx, lua_KFunction k);
/* Wait queues. shl_wait parks t at the tail of q (its turn comes when the
** tasks before it are done); the others manage the queue: */
int shl_wait(lua_State *L, shl_waitq *q, shl_task *t, shl_reason why, double timeout,
             shl_timeout_fn fn, void *obj, lua_KContext ctx, lua_KFunction k);
void shl_waitq_push(shl_waitq *q, shl_task *t);     /* join the tail, unparked */
shl_task *shl_waitq_pop(shl_waitq *q);              /* take the head, or NULL */
/* Take t out of q: returns 1 if it was the head, 0 if behind it, -1 if absent. */
int shl_waitq_remove(shl_waitq *q, shl_task *t);
/* The head's turn: end its wait and wake it with nothing pushed. */
void shl_waitq_wake_head(shl_waitq *q);
/* Empty q: each parked task gets nil, err (a woken one finds out itself). */
void shl_waitq_fail_all(shl_waitq *q, const char *err);
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
/* Stop any task that runs 'seconds' without yielding (0: no limit). Where
** it can yield, a count hook makes it yield, which no pcall catches; where
** it cannot (a coroutine of its own, a table.sort comparator, a message
** handler), the hook raises "ran for more than S s without yielding", and
** again at each VM instruction until the task has left: a message handler
** of xpcall gets the error passed through unhandled (it would run with
** hooks off). A task stopped so ends as failed, with "stopped: ran for more
** than S s without yielding". The host's own calls into script code run
** under the same budget (shl_host_pcall). */
void shl_set_budget(shl_sched *S, double seconds);
/* Log a task that keeps the loop from turning for more than 'seconds'
** (wall clock: CPU or a blocking system call), with its traceback, once per
** place (the watchdog's thread finds it: call before shl_sched_watchdog).
** Only logged: the task runs on. 0: off. */
void shl_set_stall(shl_sched *S, double seconds);
/* lua_pcall(L, nargs, nres, 0) for a call of the host's own into script
** code outside any task (a __tostring while logging): with the budget on,
** it runs under it, and code that spins gets the budget's error. */
int shl_host_pcall(shl_sched *S, lua_State *L, int nargs, int nres);
/* Start the watchdog (core/sh_watchdog.h) on this scheduler's loop, after
** its SIGTERM and SIGINT watchers: 'limit' seconds without a turn of the
** loop or a resume end the process (0: no limit), as does a stop signal
** not obeyed in 'grace' + 1 s; the traceback of what ran (the running
** task's thread, a host call's, or the main thread) is logged. Returns 0,
** or -1 if it cannot start. */
int shl_sched_watchdog(shl_sched *S, double limit, double grace);
/* sockhost.test: push the failures kept since the last call, each as
** logged ("conn #1 ... failed: msg" and the traceback on the next lines),
** in a table (nil if none were being kept); then keep them in a new table
** ('keep') or no more. Only the failures of tasks made since keeping began
** are kept. */
void shl_sched_failures(lua_State *L, shl_sched *S, int keep);
/* Graceful shutdown: close listeners and handler sockets, run the
** on_shutdown hooks, let handlers finish for S->grace seconds, then stop. */
void shl_shutdown(lua_State *L, shl_host *H);
/* Objects that stop on shutdown (listeners, datagram handler sockets):
** register the one at 'idx' while it is open; unregister when closed. */
void shl_shutdown_register(lua_State *L, int idx, int on);
int shl_shutdown_lua(lua_State *L);
int shl_on_shutdown(lua_State *L);
int shl_on_signal(lua_State *L);
/* Whether the script watches signal 'name' ("HUP") with a function. */
int shl_signal_watched(lua_State *L, const char *name);
/* Run the script's function for 'signum' in a task, if it has one (for a
** signal the host watches itself: SIGHUP, see l_reload.c). */
void shl_signal_deliver(shl_host *H, int signum);

/* Reloading (l_reload.c). At start-up, before anything binds: the command
** line to run again and the sockets inherited (a reload, systemd). */
void shl_reload_init(int argc, char **argv);
/* Once the host exists: SIGHUP reloads (unless the script watches it), and
** 'watch' (--watch) reloads when 'script' or a module beside it changes. */
void shl_reload_setup(shl_host *H, const char *script, int watch);
/* The main chunk has run: tell the old generation and systemd we serve. */
void shl_reload_started(shl_host *H);
int shl_reload_lua(lua_State *L);        /* sockhost.reload() */
/* -w: worker 'id', its pipe 'fd' to the master 'master_pid' (passed on to
** the worker's next generations). */
void shl_reload_worker(int id, int fd, int master_pid);
/* In a worker's next generation: its number (0: not one) and in *fd its
** pipe to the master. */
int shl_reload_worker_of(int *fd);
/* In the master: read what a worker wrote on its pipe ('s': started, set
** *started; "h<pid>\n": a reload gave its place to pid); returns that pid,
** or 0. */
int shl_reload_worker_pipe(int fd, int *started);

/* ---------------- l_modules.c: Lua modules shipped inside ---------------- */
/* Register them in package.preload; the module table at the top of the
** stack gets them as lazy fields. */
void shl_modules_open(lua_State *L);
/* l_http.c: package.preload["sockhost.http.parser"], the C half of
** sockhost.http. */
void shl_http_open(lua_State *L);
/* Parse the request head 's' ('len' bytes, from its first line to its empty
** line; 'max_headers' 1..SH_HTTP_MAX_HEADERS) and push what
** parser.parse_head's table holds, as values: method, target, path,
** query_string (nil: none), version, keep_alive, chunked, upgrade, length
** (nil: none), headers; returns 10. A head it refuses: pushes false, the
** error's text and the status to answer with; returns 3. May leave a
** scratch userdata below the results. Calls no Lua code but the
** collector's. (conn:take_request) */
int shl_http_push_request(lua_State *L, const char *s, size_t len, int max_headers);
/* l_route.c: the route set type of the router (core/sh_route.h); its
** constructor becomes field "routes" of the table on top of the stack
** (sockhost.http.parser). */
void shl_route_open(lua_State *L);
/* l_crypto.c: package.preload["sockhost.crypto"]: SHA-1, base64, random
** bytes, the WebSocket mask, UTF-8 validation (core/sh_crypto.h). */
void shl_crypto_open(lua_State *L);
/* l_test.c: package.preload["sockhost.test.core"], the C half of
** sockhost.test. */
void shl_test_open(lua_State *L);

/* ---------------- l_sched.c: tasks, from birth to end; l_task.c: the task object ---------------- */
/* Make a task of the function below the 'nargs' values on top of L (popped).
** 'owner' (an absolute index, or 0) is recorded as what the task serves: it
** names the task in logs. With 'keep', the task object is left on L. */
shl_task *shl_task_new(shl_sched *S, lua_State *L, int nargs, int owner, int keep);
/* Push t's userdata. */
void shl_task_push(lua_State *L, shl_task *t);
/* Copy the results of finished task t onto 'to'. */
void shl_task_results(shl_task *t, lua_State *to);
/* The task has returned or raised: record it, log a failure, wake joiners,
** run on_exit, release it. 'status' and 'nres' are lua_resume's. */
void shl_task_finish(shl_task *t, int status, int nres);
void shl_task_open(lua_State *L);

/* ---------------- l_address.c: addresses as data ---------------- */
/* Push the sockhost.address table: parse, format, is_ip, ip_to_bin,
** bin_to_ip. */
void shl_address_open(lua_State *L);

/* ---------------- l_resolve.c: names ---------------- */
/* The resolver, made with the system's configuration on first use; raises
** if it cannot be made. */
sh_resolver *shl_resolver(lua_State *L, shl_host *H);
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

/* ---------------- l_conn.c, l_listener.c, l_timer.c ---------------- */

/* Connections counted against a listener's limit; shared by the listener
** and its connections, freed when the last one lets go. */
typedef struct shl_counter {
  int live;                  /* open connections */
  int refs;                  /* the listener + each counted connection */
  unsigned long proxy_refused;   /* refused for their PROXY header, in all */
  double proxy_log_at;       /* the second of refusals being logged */
  int proxy_logged, proxy_unlogged;  /* ... lines in it, refusals not logged */
} shl_counter;
void shl_counter_release(shl_counter *c);
/* Count this connection in 'c' until it closes. */
void shl_conn_count(lconn *lc, shl_counter *c);
/* Shutdown: close the accepted connections whose handler waits for a new
** request (a read parked with nothing buffered). */
void shl_conn_drain_idle(shl_host *H);
/* Idle and line-finishing time limits for the connection. */
void shl_conn_setlimits(lconn *lc, double idle, double line);
/* Push a new connection object over connected socket 'fd'. On failure 'fd'
** is closed, nothing is pushed, NULL returned. */
lconn *shl_conn_new(lua_State *L, shl_host *H, int fd);
/* Remember the peer's address (an accept knows it): conn:peer() and the log
** name an IP peer by it after the socket has forgotten it (a reset). */
void shl_conn_setpeer(lconn *lc, const struct sockaddr *sa, socklen_t len);
/* Keep what a PROXY header said (copied): conn:peer() names its client,
** conn:proxy() shows it. */
struct sh_proxy_info;
void shl_conn_setproxy(lconn *lc, const struct sh_proxy_info *info);
void shl_conn_settimeout(lconn *c, double timeout);
void shl_conn_setmaxline(lconn *c, size_t max_line);
/* A handler task's on_exit: close its connection, flushing output. */
void shl_conn_handler_exit(shl_task *t, void *ctx);
void shl_conn_open(lua_State *L);
int shl_connect(lua_State *L);
/* l_conn.c, for l_stats.c and the admin console: the handler task of an
** accepted connection (start_handler sets it, its end clears it); push the
** description of lc (id, peer, age, bytes, buffered, task); the open
** accepted connections with ids below 'below' (0: all), newest first, at
** most 'max' of them, into the table on top; the conn with id 'id' (or
** nil). */
void shl_conn_settask(lconn *lc, shl_task *t);
void shl_conn_describe(lua_State *L, lconn *lc);
int shl_conn_list(lua_State *L, shl_host *H, unsigned below, int max);
lconn *shl_conn_find(shl_host *H, unsigned id);
void shl_conn_abort(lconn *lc);
/* l_listener.c: push { [address] = { open =, accepted =, refused = } } of
** the open listeners. */
void shl_listener_stats(lua_State *L, shl_host *H);
/* The listener at 'idx' no longer keeps the process running. */
void shl_listener_weak(lua_State *L, int idx);
/* l_stats.c: sockhost.stats, and a task's description for the console. */
int shl_stats(lua_State *L);
void shl_stats_push(lua_State *L, shl_host *H);
/* l_task.c: push { id, state, waiting, age, where } of task t ('where':
** the Lua source line of its innermost frame); the names of shl_reason. */
void shl_task_describe(lua_State *L, shl_task *t);
#define SHL_NREASONS (SHL_WAIT_SELECT + 1)
extern const char *const shl_reason_names[SHL_NREASONS];
/* l_admin.c: the admin console's C half (package.preload
** ["sockhost.admin.core"]); --admin: start the console on 'addr' (a worker
** of -w N: addr.N). Returns 0, or 1 after printing why not. */
void shl_admin_open(lua_State *L);
int shl_admin_start(lua_State *L, const char *addr, int worker);
/* l_report.c: answer the collector's scrapes (core/sh_collector.h) from
** this process's loop, if a collector runs; 'worker' is sockhost.worker
** (0: a single process). */
void shl_report_start(lua_State *L, shl_host *H, int worker);
/* --metrics: the process is ending: send a last report (before lua_close). */
void shl_report_final(lua_State *L);
/* sockhost.stats{ all = true }: the sum of every process's metrics, a
** table by sample ("name{labels}" = value); a task parks until the
** collector sends it. */
int shl_stats_all(lua_State *L);
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

/* ---------------- l_channel.c, l_event.c, l_select.c: coordination ---------------- */
/* A stand-in holds the place of a task that waits on several things at
** once (sockhost.select) in the wait queue of a channel's receivers or an
** event's waiters; the task itself can be in one queue only. It is no task
** (node.co is NULL) and is never woken: whoever would wake a task in its
** place pushes the values the task would get and calls 'fire', which ends
** the select (and takes every other stand-in of it out of its queue). */
typedef struct shl_standin {
  shl_task node;             /* what the queue links: co NULL, state PARKED */
  void (*fire)(struct shl_standin *s, lua_State *from, int n);  /* takes the
                             ** n values on top of 'from' */
} shl_standin;
#define shl_is_standin(t) ((t)->co == NULL)
/* Hand the n values on top of L to w, just taken out of a queue: a task
** gets them and is woken; a stand-in fires. */
static inline void shl_deliver (lua_State *L, shl_task *w, int n) {
  if (shl_is_standin(w)) { ((shl_standin *)w)->fire((shl_standin *)w, L, n); return; }
  shl_unpark(w);
  lua_checkstack(w->co, n);
  lua_xmove(L, w->co, n);
  shl_wake(w, n);
}

typedef struct shl_channel shl_channel;
typedef struct shl_event shl_event;
void shl_channel_open(lua_State *L);         /* pushes sockhost.channel */
void shl_event_open(lua_State *L);           /* pushes sockhost.event */
int shl_select(lua_State *L);
/* The channel or event at 'idx', or NULL if it is something else. */
shl_channel *shl_tochannel(lua_State *L, int idx);
shl_event *shl_toevent(lua_State *L, int idx);
/* For select: take a value from the channel at 'idx' now if there is one
** (pushed: the value, or nil, "closed"); returns how many were pushed, 0 if
** a receiver would have to wait. */
int shl_channel_take(lua_State *L, int idx, shl_channel *ch);
shl_waitq *shl_channel_receivers(shl_channel *ch);
int shl_event_isset(const shl_event *ev);
shl_waitq *shl_event_waiters(shl_event *ev);

/* ---------------- l_tls.c: TLS options, sessions, handshakes ---------------- */
struct sh_tls_ctx;
struct sh_stream;
/* A TLS context from the options table at 'arg' (nil: defaults) for a
** server or a client. Raises on malformed options; NULL with a message in
** 'err' when a file cannot be used, or a verifying client has no name to
** check (no '*name', no servername). Sets '*name' to the 'servername'
** option (client) if given, and '*hs_timeout' (default 10 s). */
struct sh_tls_ctx *shl_tls_ctx(lua_State *L, int arg, int server, const char **name,
                               double *hs_timeout, char *err, size_t errlen);
/* Whether the table at 'arg' holds any TLS option. */
int shl_tls_has_options(lua_State *L, int arg);
/* Push conn:tls()'s table for stream 's' (nil when it is not TLS); returns 1. */
int shl_tls_push_info(lua_State *L, const struct sh_stream *s);
/* Work on the loop that no task owns (a listener's handshakes): cancelled
** at lua_close, before the scheduler's last run of the loop. */
typedef struct shl_pending {
  struct shl_pending *prev, *next;
  void (*cancel)(struct shl_pending *p);   /* free it; no Lua calls but unref */
} shl_pending;
void shl_pending_add(lua_State *L, shl_pending *p);
void shl_pending_remove(shl_pending *p);    /* idempotent */
/* l_conn.c: a connection over stream 's' (handed out by a finished TLS
** handshake, without an owner), pushed; on failure 's' is aborted, nothing
** pushed, NULL returned. */
lconn *shl_conn_new_stream(lua_State *L, shl_host *H, struct sh_stream *s);

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
