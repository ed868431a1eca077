/* l_reload.c -- reloading without dropping a connection: SIGHUP,
** sockhost.reload(), --watch, and telling systemd how the service is.
**
** A reload starts the next generation of the process (sh_handover.h) with
** the listening and datagram sockets this one holds; once its main chunk has
** run (shl_reload_started) it says so, and this one stops accepting and shuts
** down gracefully (--grace). A new generation that fails first changes
** nothing: this one keeps serving. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "../core/sh_dgram.h"
#include "../core/sh_fswatch.h"
#include "../core/sh_handover.h"
#include "../core/sh_inherit.h"
#include "../core/sh_log.h"
#include "../core/sh_net.h"
#include "../core/sh_notify.h"
#include "../core/sh_timer.h"
#include "shl.h"

#define WATCH_QUIET 0.15       /* --watch: seconds without a change before reloading */
#define WATCH_MAX 64           /* files --watch follows */

static struct {
  shl_host *H;
  int worker;                  /* -w: this worker's number, else 0 */
  int master_fd;               /* -w: the pipe to the master */
  int master_pid;
  int first_parent;            /* a worker's next generation: the old one, its
                               ** parent until it exits; 0 once adopted */
  sh_timer *adoption;          /* ... and the timer that waits for the master
                               ** to adopt it */
  char script[PATH_MAX];       /* the script, as given; "" when none (standard input) */
  char dir[PATH_MAX];          /* its folder, resolved */
  char files[WATCH_MAX][NAME_MAX + 1];   /* --watch: the files in 'dir' that count */
  int nfiles;
  sh_fswatch *fs;
  int started;                 /* the main chunk has run */
  int changed;                 /* --watch: a change came before that */
  char why[300];               /* what asked for the reload under way */
} R;

void shl_reload_init (int argc, char **argv) {
  sh_handover_init(argc, argv);
  sh_inherit_init();
}

/* "exited with status 1", "killed by signal 9" */
static void ended_how (int ws, char *buf, size_t size) {
  if (WIFSIGNALED(ws)) snprintf(buf, size, "killed by signal %d", WTERMSIG(ws));
  else snprintf(buf, size, "exited with status %d", WEXITSTATUS(ws));
}

static void on_handover (int ok, int pid, int status, double secs, void *ctx) {
  shl_host *H = ctx;
  char how[48];
  int gen = sh_handover_generation();
  if (ok) {
    sh_log(SH_LOG_INFO, "reload: generation %d (pid %d) serving after %.0f ms (%s); "
           "generation %d (pid %d) stops accepting", gen + 1, pid, secs * 1000, R.why, gen,
           (int)getpid());
    sh_inherit_set_handed_over();
    H->handed_over = 1;
    if (R.worker > 0 && dprintf(R.master_fd, "h%d\n", pid) < 0)
      sh_log(SH_LOG_WARN, "reload: cannot tell the master: %s", strerror(errno));
    if (R.fs != NULL) { sh_fswatch_free(R.fs); R.fs = NULL; }
    shl_shutdown(H->L, H);
    return;
  }
  ended_how(status, how, sizeof how);
  sh_log(SH_LOG_ERROR, "reload: generation %d (pid %d) failed to start (%s) after %.0f ms; "
         "generation %d (pid %d) keeps serving", gen + 1, pid, how, secs * 1000, gen,
         (int)getpid());
  sh_notify("READY=1\nSTATUS=reload failed; the previous version serves");
}

/* Start the next generation; 0, or -1 with a message in 'err'. */
static int reload_begin (shl_host *H, const char *why, char *err, size_t errlen) {
  if (H->draining) { snprintf(err, errlen, "shutting down"); return -1; }
  if (R.script[0] == '\0') { snprintf(err, errlen, "no script file to load again"); return -1; }
  snprintf(R.why, sizeof R.why, "%s", why);
  sh_notify_reloading();
  if (sh_handover_start(H->loop, on_handover, H, err, errlen) < 0) {
    sh_notify("READY=1");
    return -1;
  }
  sh_log(SH_LOG_INFO, "reload (%s): starting generation %d", why, sh_handover_generation() + 1);
  return 0;
}

static void reload_or_log (shl_host *H, const char *why) {
  char err[160];
  if (reload_begin(H, why, err, sizeof err) != 0)
    sh_log(SH_LOG_WARN, "reload (%s): %s", why, err);
}

static void on_hup (int signum, void *ctx) {
  shl_host *H = ctx;
  if (shl_signal_watched(H->L, "HUP")) {          /* the script's own */
    shl_signal_deliver(H, signum);
    return;
  }
  reload_or_log(H, "SIGHUP");
}

/* sockhost.reload() -> true | nil, err */
int shl_reload_lua (lua_State *L) {
  shl_host *H = shl_gethost(L);
  char err[160];
  if (R.worker > 0) {                             /* -w: the master reloads them all */
    if (kill(R.master_pid, SIGHUP) != 0) return shl_pushfail(L, "cannot signal the master");
    lua_pushboolean(L, 1);
    return 1;
  }
  if (reload_begin(H, "sockhost.reload()", err, sizeof err) != 0) return shl_pushfail(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

/* --watch: whether a change to 'name' counts. */
static int watched (const char *name, void *ctx) {
  int i;
  (void)ctx;
  for (i = 0; i < R.nfiles; i++)
    if (strcmp(R.files[i], name) == 0) return 1;
  return 0;
}

static void on_change (const char *name, void *ctx) {
  char why[NAME_MAX + 40];
  snprintf(why, sizeof why, "--watch: %s changed", name);
  if (!R.started) {                               /* reloaded once it serves */
    snprintf(R.why, sizeof R.why, "%s", why);
    R.changed = 1;
    return;
  }
  reload_or_log(ctx, why);
}

/* Add the file at 'path' to the watched ones if it lies in R.dir. */
static void follow (const char *path) {
  char real[PATH_MAX], dir[PATH_MAX];
  if (realpath(path, real) == NULL || R.nfiles >= WATCH_MAX) return;
  snprintf(dir, sizeof dir, "%s", real);
  if (strcmp(dirname(dir), R.dir) != 0) return;
  snprintf(R.files[R.nfiles++], NAME_MAX + 1, "%s", basename(real));
}

/* The files of the modules loaded so far (package.searchpath on each). */
static const char loaded_files[] =
  "local t = {}\n"
  "for name in pairs(package.loaded) do\n"
  "  if type(name) == 'string' then\n"
  "    local p = package.searchpath(name, package.path)\n"
  "    if p then t[#t + 1] = p end\n"
  "  end\n"
  "end\n"
  "return t\n";

static void follow_modules (lua_State *L) {
  lua_Integer i, n;
  if (luaL_loadbuffer(L, loaded_files, sizeof loaded_files - 1, "=--watch") != LUA_OK ||
      lua_pcall(L, 0, 1, 0) != LUA_OK) {
    lua_pop(L, 1);
    return;
  }
  n = (lua_Integer)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, -1, i) == LUA_TSTRING) follow(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* --watch, before the script runs: its folder, and the script in it. */
static void watch_start (shl_host *H) {
  char err[PATH_MAX + 80], real[PATH_MAX];
  if (realpath(R.script, real) == NULL) {
    sh_log(SH_LOG_WARN, "--watch: cannot watch %s", R.script);
    return;
  }
  snprintf(R.dir, sizeof R.dir, "%s", dirname(real));
  R.nfiles = 0;
  follow(R.script);
  R.fs = sh_fswatch_new(H->loop, R.dir, WATCH_QUIET, watched, on_change, H, err, sizeof err);
  if (R.fs == NULL) sh_log(SH_LOG_WARN, "--watch: cannot watch %s", err);
}

/* --watch, once the main chunk has run: the modules it loaded too. */
static void watch_modules (shl_host *H) {
  int i;
  follow_modules(H->L);
  for (i = 0; i < R.nfiles; i++) sh_log(SH_LOG_DEBUG, "--watch: %s/%s", R.dir, R.files[i]);
}

/* A worker's next generation is the old worker's child: it cannot ask to
** die with the master (PR_SET_PDEATHSIG names the parent, and the old
** worker exits when it has handed over). The master, a subreaper, adopts
** it then: from that moment it asks. If its parent changes to anything
** else, the master died first: it goes too, as a first generation would. */
static void on_adoption (sh_timer *t, void *ctx) {
  pid_t parent = getppid();
  (void)ctx;
  if (parent == R.first_parent) return;            /* the old one still runs */
  sh_timer_free(t);
  R.adoption = NULL;
  R.first_parent = 0;
#ifdef __linux__
  if (parent == R.master_pid && prctl(PR_SET_PDEATHSIG, SIGKILL) == 0 &&
      getppid() == R.master_pid)
    return;
#else
  if (parent == R.master_pid) return;
#endif
  sh_log(SH_LOG_ERROR, "worker %d: the master (pid %d) is gone: exiting", R.worker,
         R.master_pid);
  raise(SIGKILL);
}

static void watch_adoption (shl_host *H) {
  if (R.first_parent <= 0 || R.adoption != NULL) return;
  R.adoption = sh_timer_new(H->loop, 0, on_adoption, NULL);
  if (R.adoption == NULL || sh_timer_start(R.adoption, 0.1, 0.1) != 0)
    sh_log(SH_LOG_WARN, "worker %d: cannot watch for the master's adoption", R.worker);
}

void shl_reload_setup (shl_host *H, const char *script, int watch) {
  R.H = H;
  watch_adoption(H);
  snprintf(R.script, sizeof R.script, "%s", script != NULL ? script : "");
  if (watch && R.script[0] != '\0') watch_start(H);
  if (sh_loop_signal(H->loop, SIGHUP, on_hup, H) != 0)
    sh_log(SH_LOG_WARN, "cannot watch SIGHUP: reloading only with sockhost.reload()");
  else
    H->owns_hup = 1;
}

/* setenv(name, n) */
static void setenv_int (const char *name, int n) {
  char buf[24];
  snprintf(buf, sizeof buf, "%d", n);
  setenv(name, buf, 1);
}

void shl_reload_worker (int id, int fd, int master_pid) {
  R.worker = id;
  R.master_fd = fd;
  R.master_pid = master_pid;
  setenv_int("SOCKHOST_WORKER", id);         /* for the next generations */
  setenv_int("SOCKHOST_WORKER_FD", fd);
  setenv_int("SOCKHOST_MASTER_PID", master_pid);
  sh_handover_keep_fd(fd);
}

int shl_reload_worker_of (int *fd) {
  const char *w = getenv("SOCKHOST_WORKER"), *f = getenv("SOCKHOST_WORKER_FD");
  const char *m = getenv("SOCKHOST_MASTER_PID");
  int id = w != NULL ? atoi(w) : 0, pfd = f != NULL ? atoi(f) : -1;
  if (id <= 0 || m == NULL || pfd < 0 || fcntl(pfd, F_SETFD, FD_CLOEXEC) != 0) return 0;
  *fd = pfd;
  shl_reload_worker(id, pfd, atoi(m));
  R.first_parent = (int)getppid();
  return id;
}

int shl_reload_worker_pipe (int fd, int *started) {
  char buf[256];
  ssize_t n, i;
  int pid = 0;
  while ((n = read(fd, buf, sizeof buf - 1)) > 0) {
    buf[n] = '\0';
    for (i = 0; i < n; i++) {
      if (buf[i] == 's') *started = 1;
      if (buf[i] == 'h') pid = atoi(buf + i + 1);   /* the whole message comes in one write */
    }
  }
  return pid;
}

void shl_reload_started (shl_host *H) {
  char state[64];
  int unused = sh_inherit_close_unused();
  sh_inherit_set_holding(0);
  sh_listener_release_held();
  sh_dgram_release_held();
  if (unused > 0)
    sh_log(SH_LOG_INFO, "reload: closed %d inherited sockets no listener took", unused);
  sh_handover_ready();
  snprintf(state, sizeof state, "READY=1\nMAINPID=%d", (int)getpid());
  sh_notify(state);
  R.started = 1;
  if (R.fs != NULL) watch_modules(H);
  if (R.changed && !H->draining) {
    char why[sizeof R.why];
    snprintf(why, sizeof why, "%s", R.why);
    reload_or_log(H, why);
  }
}
