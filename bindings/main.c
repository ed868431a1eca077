/* main.c -- the sockhost executable: `sockhost script.lua [args...]`.
**
** Behaves like the lua interpreter where it can (arg table, -e, -l, -, --,
** -v), runs the main script as a task, then runs the loop until nothing is
** left to wait for, sockhost.stop(), or a signal. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lualib.h>

#include "../core/sh_blocks.h"
#include "../core/sh_clock.h"
#include "../core/sh_admin_client.h"
#include "../core/sh_collector.h"
#include "../core/sh_log.h"
#include "shl.h"

static const char *progname = "sockhost";

static int fail (const char *msg) {
  fprintf(stderr, "%s: %s\n", progname, msg);
  fflush(stderr);
  return 1;
}

/* ====================== Options ====================== */

/* One table, options[], drives the command line: parse_args reads it,
** load_chunks and check_only walk the options it accepted (next_option),
** and usage prints it. */

#define DEFAULT_BUDGET 1.0        /* seconds a task may run without yielding */
#define DEFAULT_SLOW_TURN 0.1     /* seconds a run may keep the loop before it is logged */
#define DEFAULT_MAX_MEMORY 1024   /* MiB for the Lua state */
#define WATCHDOG_TIMES 10         /* the watchdog's default limit, in budgets */
#define UNSET (-1)                /* not given: the host's default */

typedef struct opts {
  double budget;        /* --budget */
  double watchdog;      /* --watchdog; UNSET: WATCHDOG_TIMES the budget */
  double slow_turn;     /* --slow-turn */
  double max_memory;    /* --max-memory, MiB */
  double max_buffers;   /* --max-buffers, MiB, or UNSET */
  double max_conns;     /* --max-conns; this and the next four may be UNSET */
  double idle_timeout;  /* --idle-timeout */
  double line_timeout;  /* --line-timeout */
  double max_line;      /* --max-line */
  double grace;         /* --grace */
  int workers;          /* -w: worker processes; 0 or 1: just this one */
  const char *metrics;  /* --metrics address, or NULL */
  const char *admin;    /* --admin address, or NULL */
  int log_level;        /* --log-level: an sh_log_level, or UNSET */
  int check;            /* --check given: compile only */
  int watch;            /* --watch: reload when the script changes */
  int optend;           /* argv[1..optend-1]: the options and their values */
  int script;           /* index in argv of the script, or 0 */
  int first_arg;        /* index of the first script argument */
  int want_stdin;       /* script is "-" */
} opts;

/* What an option's argument is. */
typedef enum { ARG_NONE, ARG_STRING, ARG_NUMBER, ARG_WORKERS, ARG_LEVEL } arg_kind;

/* Where an option's value goes, or what the option does. */
typedef enum {
  TO_FIELD,     /* the opts field at 'field': a double for ARG_NUMBER, else an int */
  TO_TEXT,      /* the opts field at 'field': the argument (a const char *) */
  TO_CHUNK,     /* -e: a chunk run before the script, in command-line order */
  TO_REQUIRE,   /* -l: a module required before the script, in the same order */
  TO_CHECK,     /* --check: a file to compile; nothing runs */
  TO_STDIN,     /* -: the script is standard input; the options end */
  TO_END,       /* --: the options end */
  TO_HELP,      /* print the usage, exit 0 */
  TO_VERSION    /* print the version, exit 0 */
} option_use;

typedef struct option {
  const char *name;     /* "-w", "--check" */
  const char *alias;    /* "--workers", or NULL */
  const char *metavar;  /* the argument in the usage; NULL with ARG_NONE */
  arg_kind kind;
  option_use use;
  size_t field;         /* TO_FIELD: offsetof(opts, ...) */
  double init;          /* TO_FIELD: the value when the option is not given */
  const char *help;     /* with its default; '\n' continues under it */
} option;

#define FIELD(f) TO_FIELD, offsetof(opts, f)   /* use and field of a row */

/* Every option, in the order of the usage. */
static const option options[] = {
  {"-e", NULL, "stat", ARG_STRING, TO_CHUNK, 0, 0, "run the Lua statement 'stat'"},
  {"-l", NULL, "mod", ARG_STRING, TO_REQUIRE, 0, 0,
   "require module 'mod' as global 'mod' (-l g=mod: as 'g')"},
  {"-", NULL, NULL, ARG_NONE, TO_STDIN, 0, 0, "read the script from standard input"},
  {"--", NULL, NULL, ARG_NONE, TO_END, 0, 0, "stop handling options"},
  {"--check", NULL, "file", ARG_STRING, TO_CHECK, 0, 0,
   "compile 'file' only; report syntax errors"},
  {"--log-level", NULL, "lvl", ARG_LEVEL, FIELD(log_level), UNSET,
   "debug, info (default), warn, error or off"},
  {"--grace", NULL, "s", ARG_NUMBER, FIELD(grace), UNSET,
   "on SIGTERM/SIGINT or a reload, give handlers s\nseconds to finish (default 10)"},
  {"--watch", NULL, NULL, ARG_NONE, FIELD(watch), 0,
   "reload when the script or a module beside it\nchanges (as SIGHUP does)"},
  {"--budget", NULL, "s", ARG_NUMBER, FIELD(budget), DEFAULT_BUDGET,
   "stop a task that runs s seconds without yielding\n(default 1; 0: no limit)"},
  {"--watchdog", NULL, "s", ARG_NUMBER, FIELD(watchdog), UNSET,
   "end the process if its loop does not turn for s\nseconds (default 10 times the budget; 0: never)"},
  {"--slow-turn", NULL, "s", ARG_NUMBER, FIELD(slow_turn), DEFAULT_SLOW_TURN,
   "log a task that keeps the loop from turning for s\nseconds, with its traceback "
   "(default 0.1; 0: never)"},
  {"--max-memory", NULL, "m", ARG_NUMBER, FIELD(max_memory), DEFAULT_MAX_MEMORY,
   "cap the Lua state's memory at m MiB (default 1024;\n"
   "0: no cap); buffers count in --max-buffers"},
  {"--max-buffers", NULL, "m", ARG_NUMBER, FIELD(max_buffers), UNSET,
   "cap the bytes all connections hold in buffers at\n"
   "m MiB (default 256; 0: no cap); each one, at a\nquarter of that"},
  {"--max-conns", NULL, "n", ARG_NUMBER, FIELD(max_conns), UNSET,
   "connections per listener (default 10000)"},
  {"--idle-timeout", NULL, "s", ARG_NUMBER, FIELD(idle_timeout), UNSET,
   "close accepted connections idle for s seconds\n(default 300; 0: never)"},
  {"--line-timeout", NULL, "s", ARG_NUMBER, FIELD(line_timeout), UNSET,
   "... and those that take s seconds to finish a line\n(default 60; 0: never)"},
  {"--max-line", NULL, "n", ARG_NUMBER, FIELD(max_line), UNSET,
   "longest line or read_until result (default 65536)"},
  {"--metrics", NULL, "addr", ARG_STRING, TO_TEXT, offsetof(opts, metrics), 0,
   "serve /metrics (Prometheus text) on addr, e.g.\ntcp://127.0.0.1:9100 (default: off)"},
  {"--admin", NULL, "addr", ARG_STRING, TO_TEXT, offsetof(opts, admin), 0,
   "the admin console on unix:PATH (default: off);\n-w n: PATH.1 ... PATH.n, one per worker"},
  {"-w", "--workers", "n", ARG_WORKERS, FIELD(workers), 0,
   "run n worker processes sharing the listeners\n(SO_REUSEPORT); 'auto': one per core"},
  {"-v", "--version", NULL, ARG_NONE, TO_VERSION, 0, 0, "print the version"},
  {"-h", "--help", NULL, ARG_NONE, TO_HELP, 0, 0, "print this help"},
};
#define NOPTIONS (sizeof options / sizeof options[0])

/* Reading an argument: its value, or < 0 if it is bad. */
static double read_number (const char *v) {
  char *end;
  double d = strtod(v, &end);
  return end != v && *end == '\0' && d >= 0 ? d : -1;
}

static double read_workers (const char *v) {
  char *end;
  long n;
  if (strcmp(v, "auto") == 0) {
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (double)n : 1;
  }
  n = strtol(v, &end, 10);
  return end != v && *end == '\0' && n >= 1 && n <= 256 ? (double)n : -1;
}

static double read_level (const char *v) {
  return sh_log_parse_level(v);
}

/* The kinds of value stored in opts: how to read one, what a bad one gets. */
static const struct {
  double (*read) (const char *v);
  const char *bad;      /* message format, given the option as spelled */
} kinds[] = {
  [ARG_NUMBER] = {read_number, "'%s' needs a non-negative number"},
  [ARG_WORKERS] = {read_workers, "'%s' needs a number from 1 to 256, or 'auto'"},
  [ARG_LEVEL] = {read_level, "%s: expected debug, info, warn, error or off"},
};

/* One line of the usage: 'left' in its column, then the help. */
static void usage_line (FILE *f, const char *left, const char *help) {
  fprintf(f, "  %-16s ", left);
  for (; *help != '\0'; help++) {
    fputc(*help, f);
    if (*help == '\n') fprintf(f, "%19s", "");
  }
  fputc('\n', f);
}

static void usage_option (FILE *f, const option *op) {
  char left[64];
  snprintf(left, sizeof left, "%s%s%s%s%s", op->name, op->alias != NULL ? ", " : "",
           op->alias != NULL ? op->alias : "", op->metavar != NULL ? " " : "",
           op->metavar != NULL ? op->metavar : "");
  usage_line(f, left, op->help);
}

static void usage (FILE *f) {
  size_t i;
  fprintf(f, "usage: %s [options] [script [args...]]\n"
             "Run a network service written in Lua.\n", progname);
  for (i = 0; i < NOPTIONS; i++) usage_option(f, &options[i]);
  fprintf(f,
    "  %s test [busted options] [specs]\n"
    "                   run busted specs in this host, with sockhost.test\n"
    "  %s admin unix:PATH [command]\n"
    "                   a command to the admin console of a running service\n"
    "                   (--admin); without one, read commands from stdin\n"
    "The script runs as a task: sockhost.connect, conn:read and the other\n"
    "blocking calls yield to the event loop. The process exits 0 when nothing\n"
    "is left to wait for, on sockhost.stop(), or on SIGINT/SIGTERM. SIGHUP\n"
    "reloads the script without dropping a connection.\n",
    progname, progname);
}

/* "progname: " and 'fmt' about option 'a' on stderr, then the usage if
** 'with_usage'. Returns -1. */
static int complain (const char *fmt, const char *a, int with_usage) {
  fprintf(stderr, "%s: ", progname);
  fprintf(stderr, fmt, a);
  fputc('\n', stderr);
  if (with_usage) usage(stderr);
  fflush(stderr);
  return -1;
}

static int is (const char *a, const char *name) {
  return name != NULL && strcmp(a, name) == 0;
}

/* The option spelled 'a', or NULL. */
static const option *find_option (const char *a) {
  size_t i;
  for (i = 0; i < NOPTIONS; i++)
    if (is(a, options[i].name) || is(a, options[i].alias)) return &options[i];
  return NULL;
}

/* Set op's field in o to v. */
static void store (opts *o, const option *op, double v) {
  char *p = (char *)o + op->field;
  if (op->kind == ARG_NUMBER) *(double *)p = v;
  else *(int *)p = (int)v;
}

static void init_opts (opts *o) {
  size_t i;
  memset(o, 0, sizeof *o);
  for (i = 0; i < NOPTIONS; i++)
    if (options[i].use == TO_FIELD) store(o, &options[i], options[i].init);
}

/* Act on option op, spelled 'a', with value v (NULL: none). Returns 0, 1
** if the program should exit 0 now, -1 after a message. */
static int take_option (opts *o, const option *op, const char *a, const char *v) {
  double d;
  switch (op->use) {
  case TO_HELP: usage(stdout); return 1;
  case TO_VERSION: printf("%s (%s, libevent)\n", SH_VERSION, LUA_RELEASE); return 1;
  case TO_CHECK: o->check = 1; return 0;
  case TO_TEXT: *(const char **)(void *)((char *)o + op->field) = v; return 0;
  case TO_FIELD: if (op->kind != ARG_NONE) break; store(o, op, 1); return 0;   /* a flag */
  default: return 0;                           /* -e, -l: see load_chunks */
  }
  d = kinds[op->kind].read(v);
  if (d < 0) return complain(kinds[op->kind].bad, a, 0);
  store(o, op, d);
  return 0;
}

#define OPTIONS_END 2

/* Take the option at argv[*i] and its value; *i moves past both. Returns
** take_option's result, or OPTIONS_END at the first argument that is not
** an option, at "-" or after "--". */
static int parse_one (int argc, char **argv, int *i, opts *o) {
  const char *a = argv[*i];
  const option *op = find_option(a);
  if (a[0] != '-') return OPTIONS_END;
  if (op == NULL) return complain("unrecognized option '%s'", a, 1);
  if (op->use == TO_STDIN) {                   /* "-" is the script */
    o->want_stdin = 1;
    return OPTIONS_END;
  }
  (*i)++;
  if (op->use == TO_END) return OPTIONS_END;
  if (op->kind == ARG_NONE) return take_option(o, op, a, NULL);
  if (*i >= argc) return complain("'%s' needs an argument", a, 1);
  return take_option(o, op, a, argv[(*i)++]);
}

/* Check the options and store their values; -e, -l and --check files are
** taken later, in order (next_option). Returns -1 on a bad option (message
** printed), 1 if the program should exit 0 now. */
static int parse_args (int argc, char **argv, opts *o) {
  int i = 1, st = 0;
  init_opts(o);
  while (st == 0 && i < argc) st = parse_one(argc, argv, &i, o);
  o->optend = i;
  if (i < argc) {
    o->script = i;
    o->first_arg = i + 1;
  }
  return st == OPTIONS_END ? 0 : st;
}

/* Walk the options parse_args accepted, from *i = 1: the option at argv[*i],
** its value in *v (NULL: none), *i moved past both; NULL after the last. */
static const option *next_option (char **argv, const opts *o, int *i, const char **v) {
  const option *op;
  if (*i >= o->optend) return NULL;
  op = find_option(argv[(*i)++]);
  *v = op->kind != ARG_NONE ? argv[(*i)++] : NULL;
  return op;
}

/* arg = { [-n..-1] = interpreter and options, [0] = script, [1..] = args } */
static void create_arg_table (lua_State *L, int argc, char **argv, int script) {
  int i, base = script > 0 ? script : argc;
  lua_createtable(L, argc - base, base);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - base);
  }
  lua_setglobal(L, "arg");
}

/* ====================== Running ====================== */

static void report_started(void);

/* The main task's on_exit ('ctx': the host). In a worker, a main chunk
** that has run to its end means the worker has started. */
static void main_exit (shl_task *t, void *ctx) {
  if (t->state == TASK_FAILED) {
    ((shl_host *)ctx)->exit_code = 1;
    sh_loop_stop(t->S->loop);
  } else if (t->state == TASK_DONE) {
    report_started();
    shl_reload_started((shl_host *)ctx);
  }
}

/* Runs the -e/-l chunks and the script in order, inside the main task. */
static const char runner[] =
  "local chunks, n = ...\n"
  "for i = 1, #chunks - 1 do chunks[i]() end\n"
  "return chunks[#chunks](table.unpack(arg or {}, 1, n))\n";

/* The chunk for "-l mod" (or "-l g=mod"): g = require("mod"). */
static int require_global (lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_call(L, 1, 1);
  lua_setglobal(L, lua_tostring(L, lua_upvalueindex(1)));
  return 0;
}

static void push_require (lua_State *L, const char *spec) {
  const char *eq = strchr(spec, '=');
  if (eq != NULL) {
    lua_pushlstring(L, spec, (size_t)(eq - spec));   /* global name */
    lua_pushstring(L, eq + 1);                       /* module */
  } else {
    lua_pushstring(L, spec);
    lua_pushstring(L, spec);
  }
  lua_pushcclosure(L, require_global, 2);
}

/* Push the function for an -e or -l option: 1; nothing for the others: 0;
** -1 with the compile error pushed. */
static int push_chunk (lua_State *L, const option *op, const char *v) {
  if (op->use == TO_CHUNK)
    return luaL_loadbuffer(L, v, strlen(v), "=(command line)") == LUA_OK ? 1 : -1;
  if (op->use != TO_REQUIRE) return 0;
  push_require(L, v);
  return 1;
}

/* Compile everything the command line asks for into a list of functions
** on the stack top: -e and -l in their order, then the script. Returns 0,
** or 1 after printing the error. */
static int load_chunks (lua_State *L, char **argv, const opts *o) {
  int i = 1, n = 0, pushed;
  const option *op;
  const char *v;
  lua_newtable(L);
  while ((op = next_option(argv, o, &i, &v)) != NULL) {
    if ((pushed = push_chunk(L, op, v)) < 0) return fail(lua_tostring(L, -1));
    if (pushed) lua_rawseti(L, -2, ++n);
  }
  if (o->script > 0 || o->want_stdin) {
    const char *fname = o->want_stdin ? NULL : argv[o->script];
    if (luaL_loadfile(L, fname) != LUA_OK) return fail(lua_tostring(L, -1));
    lua_rawseti(L, -2, ++n);
  }
  return 0;
}

/* --check FILE...: compile only. */
static int check_only (char **argv, const opts *o) {
  int i = 1, status = 0;
  const option *op;
  const char *v;
  lua_State *L = luaL_newstate();
  if (L == NULL) return fail("cannot create Lua state: not enough memory");
  while ((op = next_option(argv, o, &i, &v)) != NULL) {
    if (op->use != TO_CHECK) continue;
    if (luaL_loadfile(L, v) != LUA_OK) status = fail(lua_tostring(L, -1));
    lua_settop(L, 0);
  }
  lua_close(L);
  return status;
}

/* SIGINT/SIGTERM: a graceful shutdown (see l_shutdown.c); a second signal
** exits at once. */
static void on_signal (int sig, void *ctx) {
  static int seen = 0;
  shl_host *H = ctx;
  if (seen++) {
    sh_log(SH_LOG_WARN, "signal %d again: exiting now", sig);
    _exit(1);
  }
  sh_log(SH_LOG_INFO, "signal %d: stopping", sig);
  shl_shutdown(H->L, H);
}

/* ====================== Memory ====================== */

/* The Lua state's allocator, with a cap. Only script code running in a
** task is refused memory past the cap (it gets "not enough memory" as an
** error in that task); the host's own bookkeeping outside tasks is not, so
** the refusal never lands where nothing can catch it. */
static struct memctl {
  size_t used;      /* bytes in use */
  size_t limit;     /* cap; 0: none */
  sh_blocks blocks; /* small freed blocks kept for reuse (core/sh_blocks.h) */
} memctl;
static shl_sched *memctl_sched;   /* to tell whether a task runs */

static void *l_alloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  struct memctl *m = ud;
  size_t old = ptr != NULL ? osize : 0;
  void *p;
  if (nsize == 0) {
    sh_blocks_realloc(&m->blocks, ptr, osize, 0);
    m->used -= old;
    return NULL;
  }
  if (m->limit > 0 && nsize > old && m->used + (nsize - old) > m->limit &&
      memctl_sched != NULL && memctl_sched->current != NULL) {
    memctl_sched->mem_refused++;
    return NULL;
  }
  p = sh_blocks_realloc(&m->blocks, ptr, old, nsize);
  if (p != NULL) m->used = m->used - old + nsize;
  return p;
}

static int l_panic (lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  sh_log(SH_LOG_ERROR, "PANIC: unprotected error in call to Lua API (%s)",
         msg != NULL ? msg : "error object is not a string");
  return 0;   /* then abort() */
}

/* Lua warnings (from finalizers, say) go to the log. */
static void l_warn (void *ud, const char *msg, int tocont) {
  (void)ud; (void)tocont;
  if (msg[0] != '@') sh_log(SH_LOG_WARN, "lua: %s", msg);
}

/* Use every descriptor the hard limit allows. */
static void raise_fd_limit (void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* ====================== Workers ====================== */

/* The master of -w n forks n workers and keeps them running. Each worker
** gets a pipe on which it writes one byte once its main chunk has run to
** its end (report_started): a worker that exits non-zero before that failed
** to start, and stops the whole service. One that fails after it is
** restarted, with a pause that doubles while it keeps failing. A worker
** asks the kernel to kill it with its master (PR_SET_PDEATHSIG). */

static int worker_id = 0;      /* 1..n in a worker process, 0 otherwise */
static int started_fd = -1;    /* in a worker: the pipe to the master */

#define RESTART_FIRST 0.1      /* seconds before the first restart of a failed worker */
#define RESTART_MAX 30.0       /* ... doubling while it keeps failing, up to this */
#define RESTART_SPACING 0.25   /* seconds between two restarts: at most 4 forks a second */
#define STABLE_TIME 10.0       /* a worker that ran this long before failing starts over at RESTART_FIRST */
#define STARTUP_TIME 5.0       /* a worker whose main chunk still runs after this long has started */
#define DRAIN_LIMIT 30.0       /* seconds the workers get to finish after SIGTERM */

/* One worker's place in the master. */
typedef struct slot {
  pid_t pid;          /* the running worker, or 0 */
  int started_fd;     /* read end of its pipe, or -1 */
  double born;        /* when it was forked */
  double due;         /* when to restart it, or 0: not waiting */
  int fails;          /* failures in a row, each within STABLE_TIME of its start */
  int started;        /* its worker (or a generation that took its place) has
                      ** reported its main chunk run: the pipe's 's' */
} slot;

typedef struct master {
  int argc;
  char **argv;
  const opts *o;
  sigset_t set;       /* the signals the master waits for */
  sigset_t old;       /* the mask the workers get back */
  slot *slots;
  int n;
  int live;           /* workers running */
  int stopping;       /* stopping the workers: a signal, or one failed to start */
  int status;         /* the master's exit status */
  double stop_by;     /* while stopping: SIGKILL those still running then */
  double next_fork;   /* no restart before this */
} master;

static int run_one(int argc, char **argv, const opts *o);

/* In a worker: tell the master that the main chunk has run (once). The
** pipe stays open: a reload tells the master through it which process takes
** the worker's place (l_reload.c). */
static void report_started (void) {
  static int reported;
  ssize_t r;
  if (started_fd < 0 || reported) return;
  reported = 1;
  r = write(started_fd, "s", 1);
  (void)r;                                     /* the master reads it when we exit */
}

/* In a new worker: die with the master, and check that it still lives, for
** it may have died before the request; keep only our end of our pipe. */
static void worker_setup (const master *m, int id, pid_t master_pid, int fd) {
  int i;
#ifdef __linux__
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) _exit(1);
#endif
  if (getppid() != master_pid) _exit(1);
  sh_collector_forked();                       /* --metrics: the collector's sockets */
  for (i = 0; i < m->n; i++)
    if (m->slots[i].started_fd >= 0) close(m->slots[i].started_fd);
  sigprocmask(SIG_SETMASK, &m->old, NULL);
  worker_id = id;
  started_fd = fd;
  shl_reload_worker(id, fd, (int)master_pid);
}

/* Fork worker i; returns 0, or -1 if it could not (logged). */
static int spawn (master *m, int i, double now) {
  slot *s = &m->slots[i];
  pid_t master_pid = getpid(), pid;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    sh_log(SH_LOG_ERROR, "master: cannot start worker %d: %s", i + 1, strerror(errno));
    return -1;
  }
  s->started_fd = fds[0];
  fflush(NULL);
  pid = fork();
  if (pid == 0) {
    int status;
    worker_setup(m, i + 1, master_pid, fds[1]);
    status = run_one(m->argc, m->argv, m->o);
    if (started_fd >= 0) close(started_fd);
    _exit(status);
  }
  close(fds[1]);
  if (pid < 0) {
    sh_log(SH_LOG_ERROR, "master: cannot start worker %d: %s", i + 1, strerror(errno));
    close(fds[0]);
    s->started_fd = -1;
    return -1;
  }
  s->pid = pid;
  s->born = now;
  s->started = 0;
  m->live++;
  return 0;
}

static void kill_all (const master *m, int sig) {
  int i;
  for (i = 0; i < m->n; i++)
    if (m->slots[i].pid > 0) kill(m->slots[i].pid, sig);
}

/* Whether slot s counts as failing: waiting for its restart, or failed
** twice in a row and its worker has not yet run STABLE_TIME. */
static int failing (const slot *s, double now) {
  return s->due > 0 || (s->fails >= 2 && now - s->born < STABLE_TIME);
}

/* Pass SIGTERM on to the workers and give them DRAIN_LIMIT; the exit
** status is 1 if workers were failing. */
static void begin_stop (master *m, double now) {
  int i, bad = 0;
  m->stopping = 1;
  m->stop_by = now + DRAIN_LIMIT;
  for (i = 0; i < m->n; i++) bad += failing(&m->slots[i], now);
  if (bad > 0) {
    sh_log(SH_LOG_WARN, "master: %d workers were failing", bad);
    m->status = 1;
  }
  kill_all(m, SIGTERM);
}

static void on_master_signal (master *m, int sig, double now) {
  if (sig == SIGHUP || sig == SIGUSR1 || sig == SIGUSR2) {
    kill_all(m, sig);
  } else if (m->stopping) {                    /* a second SIGTERM/SIGINT: now */
    kill_all(m, SIGKILL);
    m->status = 1;
  } else {
    sh_log(SH_LOG_INFO, "master: signal %d, stopping the workers", sig);
    begin_stop(m, now);
  }
}

/* "exited with status N" or "killed by signal N", for wait status ws. */
static void how_ended (int ws, char *buf, size_t size) {
  if (WIFSIGNALED(ws)) snprintf(buf, size, "killed by signal %d", WTERMSIG(ws));
  else snprintf(buf, size, "exited with status %d", WEXITSTATUS(ws));
}

/* Whether the worker of s had started, and in *next the process a reload
** gave its place to, or 0 (then its pipe is closed). */
static int had_started (slot *s, double now, pid_t *next) {
  int started = 0;
  *next = shl_reload_worker_pipe(s->started_fd, &started);
  if (started) s->started = 1;
  if (*next > 0) {              /* the next generation serves: it has started (its
                                ** own 's' may have come in this same read) */
    s->started = 1;
    return 1;
  }
  close(s->started_fd);
  s->started_fd = -1;
  return s->started || now - s->born >= STARTUP_TIME;
}

/* The pause before restarting s after a failure; counts the failure. */
static double backoff (slot *s, double now) {
  double d = RESTART_FIRST;
  int k;
  s->fails = now - s->born >= STABLE_TIME ? 1 : s->fails + 1;
  for (k = 1; k < s->fails && d < RESTART_MAX; k++) d *= 2;
  return d < RESTART_MAX ? d : RESTART_MAX;
}

/* Worker i, pid, ended with wait status ws. */
static void worker_ended (master *m, int i, pid_t pid, int ws, double now) {
  slot *s = &m->slots[i];
  pid_t next;
  int ok = WIFEXITED(ws) && WEXITSTATUS(ws) == 0, started = had_started(s, now, &next);
  char how[48];
  if (next > 0) {                              /* reloaded: its next generation serves */
    sh_log(SH_LOG_INFO, "worker %d (pid %d) handed over to pid %d", i + 1, (int)pid, (int)next);
    s->pid = next;
    if (m->stopping) kill(next, SIGTERM);
    return;
  }
  s->pid = 0;
  m->live--;
  if (m->stopping) {                           /* ended by our SIGTERM, or failed */
    if (!ok && !(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGTERM)) m->status = 1;
    return;
  }
  if (ok) return;                              /* done: not restarted */
  how_ended(ws, how, sizeof how);
  if (!started) {
    sh_log(SH_LOG_ERROR, "worker %d (pid %d) failed to start (%s): stopping", i + 1,
           (int)pid, how);
    m->status = 1;
    begin_stop(m, now);
    return;
  }
  s->due = now + backoff(s, now);
  sh_log(SH_LOG_WARN, "worker %d (pid %d) %s: restarting in %.1f s", i + 1, (int)pid, how,
         s->due - now);
}

/* Reap the workers that have ended. */
static void reap (master *m, double now) {
  pid_t pid;
  int ws, i;
  while ((pid = waitpid(-1, &ws, WNOHANG)) > 0) {
    for (i = 0; i < m->n && m->slots[i].pid != pid; i++) {}
    if (i < m->n) worker_ended(m, i, pid, ws, now);
  }
}

/* The slot waiting longest past its restart time, or -1. */
static int next_due (const master *m) {
  int i, best = -1;
  for (i = 0; i < m->n; i++)
    if (m->slots[i].due > 0 && (best < 0 || m->slots[i].due < m->slots[best].due)) best = i;
  return best;
}

/* Fork worker i, or if that fails, try again after a pause. */
static void start_slot (master *m, int i, double now) {
  if (spawn(m, i, now) != 0) m->slots[i].due = now + backoff(&m->slots[i], now);
}

/* Restart one worker if one is due and the spacing allows. */
static void restart_due (master *m, double now) {
  int i = next_due(m);
  slot *s;
  if (m->stopping || i < 0 || m->slots[i].due > now || now < m->next_fork) return;
  s = &m->slots[i];
  s->due = 0;
  m->next_fork = now + RESTART_SPACING;
  start_slot(m, i, now);
}

/* Seconds until the master has something to do without a signal. */
static double next_wakeup (const master *m, double now) {
  double t = now + 1;
  int i = next_due(m);
  if (!m->stopping && i >= 0) {
    double at = m->slots[i].due > m->next_fork ? m->slots[i].due : m->next_fork;
    if (at < t) t = at;
  }
  if (m->stopping && m->stop_by > now && m->stop_by < t) t = m->stop_by;
  return t - now > 0.001 ? t - now : 0.001;
}

/* Wait for a signal at most 'secs'; returns it, or -1. */
static int wait_signal (const master *m, double secs) {
  struct timespec ts;
  ts.tv_sec = (time_t)secs;
  ts.tv_nsec = (long)((secs - (double)ts.tv_sec) * 1e9);
  return sigtimedwait(&m->set, NULL, &ts);
}

/* Block the signals the master waits for; the workers get 'old' back. */
static void block_signals (master *m) {
  static const int sigs[] = {SIGTERM, SIGINT, SIGCHLD, SIGHUP, SIGUSR1, SIGUSR2};
  size_t i;
  sigemptyset(&m->set);
  for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&m->set, sigs[i]);
  sigprocmask(SIG_BLOCK, &m->set, &m->old);
}

static int master_init (master *m, int argc, char **argv, const opts *o) {
  int i;
  memset(m, 0, sizeof *m);
  m->argc = argc;
  m->argv = argv;
  m->o = o;
  m->n = o->workers;
  m->slots = calloc((size_t)m->n, sizeof *m->slots);
  if (m->slots == NULL) return -1;
  for (i = 0; i < m->n; i++) m->slots[i].started_fd = -1;
  block_signals(m);
#ifdef __linux__
  prctl(PR_SET_CHILD_SUBREAPER, 1);            /* a reload's new workers become ours */
#endif
  return 0;
}

/* Compile the command line once in the master, so that a syntax error is
** told once and forks nothing (not a script on standard input, which only
** one process can read). Returns 0, or 1 after the message. */
static int precheck (char **argv, const opts *o) {
  lua_State *L;
  int status;
  if (o->want_stdin) return 0;
  if ((L = luaL_newstate()) == NULL) return fail("cannot create Lua state: not enough memory");
  status = load_chunks(L, argv, o);
  if (status == 0 && lua_rawlen(L, -1) == 0) {   /* nothing to run */
    usage(stderr);
    status = 1;
  }
  lua_close(L);
  return status;
}

/* The master of -w n: start the workers, restart one that fails after it
** started, stop them all when one fails before, pass signals on, wait for
** them all. Returns the exit status. */
static int run_master (int argc, char **argv, const opts *o) {
  master m;
  int i;
  if (precheck(argv, o) != 0) return 1;
  if (master_init(&m, argc, argv, o) != 0) return fail("out of memory");
  sh_log(m.n > 1 ? SH_LOG_INFO : SH_LOG_DEBUG, "master %d: %d worker%s", (int)getpid(), m.n,
         m.n == 1 ? "" : "s");                   /* one: --metrics's own master */
  if (m.n > 1)
    sh_log(SH_LOG_WARN, "-w %d: each worker runs its own copy of the script, with state of its "
           "own (tables, rooms, caches); a client reaches any one of them. Share state "
           "through a store outside the process (Redis, a database)", m.n);
  for (i = 0; i < m.n && !m.stopping; i++) {   /* no more forks once one failed */
    start_slot(&m, i, sh_now_real());
    reap(&m, sh_now_real());
  }
  while (m.live > 0 || (next_due(&m) >= 0 && !m.stopping)) {
    int sig = wait_signal(&m, next_wakeup(&m, sh_now_real()));
    double now = sh_now_real();
    if (sig > 0 && sig != SIGCHLD) on_master_signal(&m, sig, now);
    if (m.stopping && now >= m.stop_by) kill_all(&m, SIGKILL);   /* they had their time */
    reap(&m, now);
    restart_due(&m, now);
  }
  free(m.slots);
  return m.status;
}

/* The command line's settings on the host; a limit not given (or, for
** max_conns and max_line, below 1) keeps the host's default. */
static void apply_limits (shl_host *H, const opts *o) {
  shl_set_budget(H->sched, o->budget);
  shl_set_stall(H->sched, o->slow_turn);
  if (o->max_conns >= 1) H->max_conns = o->max_conns;
  if (o->idle_timeout >= 0) H->idle_timeout = o->idle_timeout;
  if (o->line_timeout >= 0) H->line_timeout = o->line_timeout;
  if (o->max_line >= 1) H->max_line = o->max_line;
  if (o->grace >= 0) H->grace = o->grace;
  if (o->max_buffers >= 0) shl_host_set_max_buffers(H, o->max_buffers * 1024 * 1024);
  if (worker_id > 0) H->reuseport = 1;         /* share listeners with the others */
}

static int run (lua_State *L, int argc, char **argv, const opts *o) {
  shl_host *H;
  shl_task *t;
  int nargs = o->script > 0 ? argc - o->first_arg : 0;
  luaL_openlibs(L);
  luaL_requiref(L, "sockhost", luaopen_sockhost, 1);   /* also global */
  lua_pop(L, 1);
  H = shl_gethost(L);
  apply_limits(H, o);
  memctl_sched = H->sched;
  shl_report_start(L, H, worker_id);          /* --metrics: answer the collector */
  if (o->admin != NULL && shl_admin_start(L, o->admin, o->workers > 1 ? worker_id : 0) != 0)
    return 1;                                 /* PATH.N only when there are several */
  if (worker_id > 0) {
    lua_getglobal(L, "sockhost");
    lua_pushinteger(L, worker_id);
    lua_setfield(L, -2, "worker");
    lua_pop(L, 1);
  }
  sh_loop_signal(H->loop, SIGINT, on_signal, H);
  sh_loop_signal(H->loop, SIGTERM, on_signal, H);
  shl_reload_setup(H, o->script > 0 ? argv[o->script] : NULL, o->watch);
  if (shl_sched_watchdog(H->sched, o->watchdog != UNSET ? o->watchdog
                                   : WATCHDOG_TIMES * o->budget, H->grace) != 0)
    sh_log(SH_LOG_WARN, "cannot start the watchdog: %s; running without it", strerror(errno));
  create_arg_table(L, argc, argv, o->script);
  if (luaL_loadbuffer(L, runner, sizeof runner - 1, "=sockhost") != LUA_OK)
    return fail(lua_tostring(L, -1));
  if (load_chunks(L, argv, o) != 0) return 1;
  if (lua_rawlen(L, -1) == 0) {                /* nothing to run */
    usage(stderr);
    return 1;
  }
  lua_pushinteger(L, nargs);
  t = shl_task_new(H->sched, L, 2, 0, 0);
  t->on_exit = main_exit;
  t->exit_ctx = H;
  shl_wake(t, 2);
  if (shl_run(H, -1) < 0) return fail("event loop failure");
  return H->exit_code;
}

/* ====================== sockhost test ====================== */

/* `sockhost test [busted options] [paths]`: busted's runner in this host,
** so that specs get sockhost and sockhost.test without a module to install;
** arg[1..] are busted's. The specs run on the main thread: sockhost.test
** drives the loop from there. */
static const char test_runner[] =
  "local ok, runner = pcall(require, 'busted.runner')\n"
  "if not ok then\n"
  "  io.stderr:write('sockhost test: busted is not installed (Debian: apt-get install lua-busted)\\n')\n"
  "  os.exit(2)\n"
  "end\n"
  "runner({ standalone = false })\n";

static int run_tests (int argc, char **argv) {
  lua_State *L = luaL_newstate();
  int i, status;
  if (L == NULL) return fail("cannot create Lua state: not enough memory");
  luaL_openlibs(L);
  luaL_requiref(L, "sockhost", luaopen_sockhost, 1);
  lua_pop(L, 1);
  lua_createtable(L, argc, 1);
  lua_pushfstring(L, "%s test", progname);
  lua_rawseti(L, -2, 0);
  for (i = 2; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");
  status = luaL_loadbuffer(L, test_runner, sizeof test_runner - 1, "=sockhost test");
  if (status == LUA_OK) status = lua_pcall(L, 0, 0, 0);
  if (status != LUA_OK) {
    fprintf(stderr, "%s test: %s\n", progname, lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }
  lua_close(L);
  return 0;
}

int main (int argc, char **argv) {
  opts o;
  int status;
  if (argv[0] != NULL && argv[0][0] != '\0') progname = argv[0];
  setvbuf(stdout, NULL, _IOLBF, 0);            /* a server's output is a log */
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  if (argc > 1 && strcmp(argv[1], "test") == 0) return run_tests(argc, argv);
  if (argc > 1 && strcmp(argv[1], "admin") == 0) return sh_admin_client(progname, argc - 2, argv + 2);
  shl_reload_init(argc, argv);                 /* sockets from a reload or systemd */
  if ((status = parse_args(argc, argv, &o)) != 0) return status < 0 ? 1 : 0;
  if (o.log_level != UNSET) sh_log_set_level((sh_log_level)o.log_level);
  if (o.check) return check_only(argv, &o);
  worker_id = shl_reload_worker_of(&started_fd);   /* a worker's next generation */
  if (o.metrics != NULL && worker_id == 0) {   /* the collector, before any fork */
    char err[300];
    if (sh_collector_start(o.metrics, err, sizeof err) != 0) return fail(err);
  }
  if (o.metrics != NULL && o.workers < 1) o.workers = 1;   /* the collector outlives reloads */
  if ((o.workers > 1 || o.metrics != NULL) && worker_id == 0) return run_master(argc, argv, &o);
  return run_one(argc, argv, &o);
}

static int run_one (int argc, char **argv, const opts *o) {
  int status;
  lua_State *L;
  memctl.limit = (size_t)(o->max_memory * 1024 * 1024);
  sh_blocks_init(&memctl.blocks, SH_BLOCKS_KEEP);
  L = lua_newstate(l_alloc, &memctl);
  if (L == NULL) return fail("cannot create Lua state: not enough memory");
  lua_atpanic(L, l_panic);
  lua_setwarnf(L, l_warn, L);
  status = run(L, argc, argv, o);
  shl_report_final(L);                         /* --metrics: what was counted last */
  lua_close(L);                                /* flushes closing connections */
  sh_blocks_drain(&memctl.blocks);
  return status;
}
