/* main.c -- the sockhost executable: `sockhost script.lua [args...]`.
**
** Behaves like the lua interpreter where it can (arg table, -e, -l, -, --,
** -v), runs the main script as a task, then runs the loop until nothing is
** left to wait for, sockhost.stop(), or a signal. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lualib.h>

#include "../core/sh_log.h"
#include "shl.h"

static const char *progname = "sockhost";

static void usage (FILE *f) {
  fprintf(f,
    "usage: %s [options] [script [args...]]\n"
    "Run a network service written in Lua.\n"
    "  -e stat          run the Lua statement 'stat'\n"
    "  -l mod           require module 'mod' as global 'mod' (-l g=mod: as 'g')\n"
    "  -                read the script from standard input\n"
    "  --               stop handling options\n"
    "  --check file     compile 'file' only; report syntax errors\n"
    "  --log-level lvl  debug, info (default), warn, error or off\n"
    "  --grace s        on SIGTERM/SIGINT, give handlers s seconds to finish\n"
    "                   (default 10)\n"
    "  --budget s       stop a task that runs s seconds without yielding\n"
    "                   (default 1; 0: no limit)\n"
    "  --max-memory m   cap the Lua state's memory at m MiB (default 1024)\n"
    "  --max-conns n    connections per listener (default 10000)\n"
    "  --idle-timeout s close accepted connections idle for s seconds\n"
    "                   (default 300; 0: never)\n"
    "  --line-timeout s ... and those that take s seconds to finish a line\n"
    "                   (default 60; 0: never)\n"
    "  --max-line n     longest line or read_until result (default 65536)\n"
    "  -w, --workers n  run n worker processes sharing the listeners\n"
    "                   (SO_REUSEPORT); 'auto': one per core\n"
    "  -v, --version    print the version\n"
    "  -h, --help       print this help\n"
    "  %s test [busted options] [specs]\n"
    "                   run busted specs in this host, with sockhost.test\n"
    "The script runs as a task: sockhost.connect, conn:read and the other\n"
    "blocking calls yield to the event loop. The process exits 0 when nothing\n"
    "is left to wait for, on sockhost.stop(), or on SIGINT/SIGTERM.\n",
    progname, progname);
}

static int fail (const char *msg) {
  fprintf(stderr, "%s: %s\n", progname, msg);
  fflush(stderr);
  return 1;
}

/* ====================== Options ====================== */

#define DEFAULT_BUDGET 1.0        /* seconds a task may run without yielding */
#define DEFAULT_MAX_MEMORY 1024   /* MiB for the Lua state */

typedef struct opts {
  double budget;    /* --budget */
  double max_memory;  /* --max-memory, MiB */
  int workers;      /* -w: worker processes; 0 or 1: just this one */
  double limits[5]; /* --max-conns, --idle-timeout, --line-timeout, --max-line, --grace;
                    ** < 0: default */
  int script;       /* index in argv of the script, or 0 */
  int first_arg;    /* index of the first script argument */
  int want_stdin;   /* script is "-" */
} opts;

static const char *const limit_names[] = {
  "--max-conns", "--idle-timeout", "--line-timeout", "--max-line", "--grace", NULL
};

static int limit_option (const char *a) {
  int i;
  for (i = 0; limit_names[i] != NULL; i++) if (strcmp(a, limit_names[i]) == 0) return i;
  return -1;
}

/* Check the options; run -l and -e later, in order. Returns -1 on a bad
** option (message printed), 1 if the program should exit 0 now. */
static int parse_args (int argc, char **argv, opts *o) {
  int i;
  memset(o, 0, sizeof *o);
  o->budget = DEFAULT_BUDGET;
  o->max_memory = DEFAULT_MAX_MEMORY;
  for (i = 0; i < 5; i++) o->limits[i] = -1;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) { i++; break; }
    if (strcmp(a, "-") == 0) { o->want_stdin = 1; break; }
    if (a[0] != '-') break;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(stdout); return 1; }
    if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
      printf("%s (%s, libevent)\n", SH_VERSION, LUA_RELEASE);
      return 1;
    }
    if (strcmp(a, "-e") == 0 || strcmp(a, "-l") == 0 || strcmp(a, "--check") == 0 ||
        strcmp(a, "--log-level") == 0 || strcmp(a, "-w") == 0 || strcmp(a, "--workers") == 0 ||
        strcmp(a, "--budget") == 0 || strcmp(a, "--max-memory") == 0 || limit_option(a) >= 0) {
      if (++i >= argc) {
        fprintf(stderr, "%s: '%s' needs an argument\n", progname, a);
        usage(stderr);
        return -1;
      }
      if (strcmp(a, "--budget") == 0 || strcmp(a, "--max-memory") == 0 || limit_option(a) >= 0) {
        char *end;
        double v = strtod(argv[i], &end);
        if (*end != '\0' || !(v >= 0)) {
          fprintf(stderr, "%s: '%s' needs a non-negative number\n", progname, a);
          return -1;
        }
        if (limit_option(a) >= 0) o->limits[limit_option(a)] = v;
        else if (a[2] == 'b') o->budget = v;
        else o->max_memory = v;
      }
      if (a[1] == 'w' || strcmp(a, "--workers") == 0) {
        char *end;
        long n = strcmp(argv[i], "auto") == 0 ? sysconf(_SC_NPROCESSORS_ONLN)
                                              : strtol(argv[i], &end, 10);
        if (strcmp(argv[i], "auto") != 0 && (*end != '\0' || n < 1 || n > 256)) {
          fprintf(stderr, "%s: '%s' needs a number from 1 to 256, or 'auto'\n", progname, a);
          return -1;
        }
        o->workers = n > 0 ? (int)n : 1;
      }
      continue;
    }
    fprintf(stderr, "%s: unrecognized option '%s'\n", progname, a);
    usage(stderr);
    return -1;
  }
  if (i < argc) {
    o->script = i;
    o->first_arg = i + 1;
  }
  return 0;
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

static void main_exit (shl_task *t, void *ctx) {
  (void)ctx;
  if (t->state == TASK_FAILED) {
    t->S->exit_code = 1;
    sh_loop_stop(t->S->loop);
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

/* Compile everything the command line asks for into a list of functions
** on the stack top. Returns 0, or 1 after printing the error. */
static int load_chunks (lua_State *L, int argc, char **argv, const opts *o) {
  int i, n = 0, end = o->script > 0 ? o->script : argc;
  lua_newtable(L);
  for (i = 1; i < end; i++) {
    int st = LUA_OK;
    if (strcmp(argv[i], "--") == 0) break;
    if (strcmp(argv[i], "-e") == 0) {
      i++;
      st = luaL_loadbuffer(L, argv[i], strlen(argv[i]), "=(command line)");
    } else if (strcmp(argv[i], "-l") == 0) {
      push_require(L, argv[++i]);
    } else if (strcmp(argv[i], "--log-level") == 0) {
      int lvl = sh_log_parse_level(argv[++i]);
      if (lvl < 0) return fail("--log-level: expected debug, info, warn, error or off");
      sh_log_set_level((sh_log_level)lvl);
      continue;
    } else if (strcmp(argv[i], "--check") == 0 || strcmp(argv[i], "-w") == 0 ||
               strcmp(argv[i], "--workers") == 0 || strcmp(argv[i], "--budget") == 0 ||
               strcmp(argv[i], "--max-memory") == 0 || limit_option(argv[i]) >= 0) {
      i++;
      continue;
    } else if (strcmp(argv[i], "-") == 0) {
      break;
    }
    if (st != LUA_OK) return fail(lua_tostring(L, -1));
    lua_rawseti(L, -2, ++n);
  }
  if (o->script > 0 || o->want_stdin) {
    const char *fname = o->want_stdin ? NULL : argv[o->script];
    if (luaL_loadfile(L, fname) != LUA_OK) return fail(lua_tostring(L, -1));
    lua_rawseti(L, -2, ++n);
  }
  return 0;
}

/* --check FILE...: compile only. */
static int check_only (int argc, char **argv) {
  int i, status = 0;
  lua_State *L = luaL_newstate();
  if (L == NULL) return fail("cannot create Lua state: not enough memory");
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--check") != 0) continue;
    if (luaL_loadfile(L, argv[++i]) != LUA_OK) status = fail(lua_tostring(L, -1));
    lua_settop(L, 0);
  }
  lua_close(L);
  return status;
}

/* SIGINT/SIGTERM: a graceful shutdown (see l_shutdown.c); a second signal
** exits at once. */
static void on_signal (int sig, void *ctx) {
  static int seen = 0;
  shl_sched *S = ctx;
  if (seen++) {
    sh_log(SH_LOG_WARN, "signal %d again: exiting now", sig);
    _exit(1);
  }
  sh_log(SH_LOG_INFO, "signal %d: stopping", sig);
  shl_shutdown(S->L, S);
}

/* ====================== Memory ====================== */

/* The Lua state's allocator, with a cap. Only script code running in a
** task is refused memory past the cap (it gets "not enough memory" as an
** error in that task); the host's own bookkeeping outside tasks is not, so
** the refusal never lands where nothing can catch it. */
static struct memctl {
  size_t used;      /* bytes in use */
  size_t limit;     /* cap; 0: none */
} memctl;
static shl_sched *memctl_sched;   /* to tell whether a task runs */

static void *l_alloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  struct memctl *m = ud;
  size_t old = ptr != NULL ? osize : 0;
  void *p;
  if (nsize == 0) {
    free(ptr);
    m->used -= old;
    return NULL;
  }
  if (m->limit > 0 && nsize > old && m->used + (nsize - old) > m->limit &&
      memctl_sched != NULL && memctl_sched->current != NULL)
    return NULL;
  p = realloc(ptr, nsize);
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

static int worker_id = 0;   /* 1..n in a worker process, 0 otherwise */

#define RESTART_PAUSE 1     /* seconds between restarts of a worker that died young */
#define DRAIN_LIMIT 30      /* seconds the workers get to finish after SIGTERM */

static pid_t start_worker (int id, const sigset_t *old, int argc, char **argv, const opts *o);

/* The master of -w n: start the workers, restart one that dies, pass
** SIGTERM/SIGINT on and wait for them all. Returns the exit status. */
static int run_master (int argc, char **argv, const opts *o) {
  sigset_t set, old;
  pid_t *pids = calloc((size_t)o->workers, sizeof *pids);
  time_t *born = calloc((size_t)o->workers, sizeof *born);
  time_t *due = calloc((size_t)o->workers, sizeof *due);   /* restart time, or 0 */
  time_t stop_by = 0;
  int i, live = 0, waiting = 0, stopping = 0, status = 0;
  if (pids == NULL || born == NULL || due == NULL) return fail("out of memory");
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGHUP);                     /* passed on to the workers */
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  sigprocmask(SIG_BLOCK, &set, &old);
  for (i = 0; i < o->workers; i++) {
    pids[i] = start_worker(i + 1, &old, argc, argv, o);
    born[i] = time(NULL);
    if (pids[i] > 0) live++;
  }
  sh_log(SH_LOG_INFO, "master %d: %d workers", (int)getpid(), live);
  while (live > 0 || (waiting > 0 && !stopping)) {
    struct timespec tick = {1, 0};            /* wake up to restart workers on time */
    int sig, ws;
    pid_t pid;
    time_t now;
    sig = sigtimedwait(&set, NULL, &tick);
    now = time(NULL);
    if (sig == SIGTERM || sig == SIGINT) {
      if (stopping) {                        /* a second signal: now */
        for (i = 0; i < o->workers; i++) if (pids[i] > 0) kill(pids[i], SIGKILL);
        status = 1;
      } else {
        stopping = 1;
        stop_by = now + DRAIN_LIMIT;
        sh_log(SH_LOG_INFO, "master: signal %d, stopping the workers", sig);
        for (i = 0; i < o->workers; i++) if (pids[i] > 0) kill(pids[i], SIGTERM);
      }
    }
    if (sig == SIGHUP || sig == SIGUSR1 || sig == SIGUSR2)
      for (i = 0; i < o->workers; i++) if (pids[i] > 0) kill(pids[i], sig);
    if (stopping && now >= stop_by)          /* they had their time */
      for (i = 0; i < o->workers; i++) if (pids[i] > 0) kill(pids[i], SIGKILL);
    while ((pid = waitpid(-1, &ws, WNOHANG)) > 0) {
      for (i = 0; i < o->workers && pids[i] != pid; i++) {}
      if (i == o->workers) continue;
      pids[i] = 0;
      live--;
      if (stopping || (WIFEXITED(ws) && WEXITSTATUS(ws) == 0)) continue;   /* done */
      sh_log(SH_LOG_WARN, "worker %d (pid %d) %s %d: restarting", i + 1, (int)pid,
             WIFSIGNALED(ws) ? "killed by signal" : "exited with status",
             WIFSIGNALED(ws) ? WTERMSIG(ws) : WEXITSTATUS(ws));
      due[i] = now - born[i] < RESTART_PAUSE ? now + RESTART_PAUSE : now;   /* no fork storm */
      waiting++;
    }
    for (i = 0; i < o->workers && !stopping; i++) {
      if (due[i] == 0 || due[i] > now) continue;
      due[i] = 0;
      waiting--;
      pids[i] = start_worker(i + 1, &old, argc, argv, o);
      born[i] = now;
      if (pids[i] > 0) live++;
    }
  }
  free(pids);
  free(born);
  free(due);
  return status;
}

static int run_one(int argc, char **argv, const opts *o);

static pid_t start_worker (int id, const sigset_t *old, int argc, char **argv, const opts *o) {
  pid_t pid;
  fflush(NULL);
  pid = fork();
  if (pid < 0) {
    sh_log(SH_LOG_ERROR, "master: cannot start worker %d: %s", id, strerror(errno));
    return 0;
  }
  if (pid > 0) return pid;
  sigprocmask(SIG_SETMASK, old, NULL);
  worker_id = id;
  _exit(run_one(argc, argv, o));
}

static int run (lua_State *L, int argc, char **argv, const opts *o) {
  shl_sched *S;
  shl_task *t;
  int nargs = o->script > 0 ? argc - o->first_arg : 0;
  luaL_openlibs(L);
  luaL_requiref(L, "sockhost", luaopen_sockhost, 1);   /* also global */
  lua_pop(L, 1);
  S = shl_getsched(L);
  shl_set_budget(S, o->budget);
  if (o->limits[0] >= 1) S->max_conns = o->limits[0];
  if (o->limits[1] >= 0) S->idle_timeout = o->limits[1];
  if (o->limits[2] >= 0) S->line_timeout = o->limits[2];
  if (o->limits[3] >= 1) S->max_line = o->limits[3];
  if (o->limits[4] >= 0) S->grace = o->limits[4];
  memctl_sched = S;
  if (worker_id > 0) {                         /* share listeners with the others */
    S->reuseport = 1;
    lua_getglobal(L, "sockhost");
    lua_pushinteger(L, worker_id);
    lua_setfield(L, -2, "worker");
    lua_pop(L, 1);
  }
  sh_loop_signal(S->loop, SIGINT, on_signal, S);
  sh_loop_signal(S->loop, SIGTERM, on_signal, S);
  create_arg_table(L, argc, argv, o->script);
  if (luaL_loadbuffer(L, runner, sizeof runner - 1, "=sockhost") != LUA_OK)
    return fail(lua_tostring(L, -1));
  if (load_chunks(L, argc, argv, o) != 0) return 1;
  if (lua_rawlen(L, -1) == 0) {                /* nothing to run */
    usage(stderr);
    return 1;
  }
  lua_pushinteger(L, nargs);
  t = shl_task_new(S, L, 2, 0, 0);
  t->on_exit = main_exit;
  shl_wake(t, 2);
  if (shl_run(S, -1) < 0) return fail("event loop failure");
  return S->exit_code;
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
  int status, i;
  if (argv[0] != NULL && argv[0][0] != '\0') progname = argv[0];
  setvbuf(stdout, NULL, _IOLBF, 0);            /* a server's output is a log */
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  if (argc > 1 && strcmp(argv[1], "test") == 0) return run_tests(argc, argv);
  if ((status = parse_args(argc, argv, &o)) != 0) return status < 0 ? 1 : 0;
  for (i = 1; i < (o.script > 0 ? o.script : argc); i++)
    if (strcmp(argv[i], "--check") == 0) return check_only(argc, argv);
  if (o.workers > 1) return run_master(argc, argv, &o);
  return run_one(argc, argv, &o);
}

static int run_one (int argc, char **argv, const opts *o) {
  int status;
  lua_State *L;
  memctl.limit = (size_t)(o->max_memory * 1024 * 1024);
  L = lua_newstate(l_alloc, &memctl);
  if (L == NULL) return fail("cannot create Lua state: not enough memory");
  lua_atpanic(L, l_panic);
  lua_setwarnf(L, l_warn, L);
  status = run(L, argc, argv, o);
  lua_close(L);                                /* flushes closing connections */
  return status;
}
