/* sh_handover.c -- starting the next generation: see sh_handover.h. */
#include "sh_handover.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sh_clock.h"
#include "sh_inherit.h"
#include "sh_util.h"

extern char **environ;

static char **saved_argv;          /* the command line to run again */
static char exe[PATH_MAX];         /* the executable */
static int generation = 1;
static int ready_fd = -1;          /* in a new generation: the pipe to the old one */
static int kept[4];                /* sh_handover_keep_fd */
static int nkept;

typedef struct pending {
  sh_loop_item item;               /* freed with the loop if still waiting */
  sh_loop *loop;
  struct event *ev;                /* the pipe's read end is readable */
  int fd;
  pid_t pid;
  double began;
  sh_handover_fn cb;
  void *ctx;
} pending;

static pending *cur;               /* the generation starting, or NULL */

/* The variable 'name' as a number and out of the environment; 'dflt' if unset. */
static long take_env (const char *name, long dflt) {
  const char *v = getenv(name);
  long n = v != NULL ? strtol(v, NULL, 10) : dflt;
  unsetenv(name);
  return n;
}

void sh_handover_init (int argc, char **argv) {
  ssize_t n;
  (void)argc;
  saved_argv = argv;
  n = readlink("/proc/self/exe", exe, sizeof exe - 1);   /* the same file, even if replaced */
  exe[n > 0 ? n : 0] = '\0';
  if (n <= 0 && argv[0] != NULL) snprintf(exe, sizeof exe, "%s", argv[0]);
  generation = (int)take_env("SOCKHOST_GENERATION", 1);
  ready_fd = (int)take_env("SOCKHOST_READY_FD", -1);
  if (ready_fd >= 0 && fcntl(ready_fd, F_SETFD, FD_CLOEXEC) != 0) ready_fd = -1;
}

int sh_handover_generation (void) { return generation; }

void sh_handover_keep_fd (int fd) {
  if (nkept < (int)(sizeof kept / sizeof kept[0])) kept[nkept++] = fd;
}
int sh_handover_pending (void) { return cur != NULL; }

void sh_handover_ready (void) {
  ssize_t r;
  if (ready_fd < 0) return;
  r = write(ready_fd, "r", 1);
  (void)r;                          /* a gone old generation needs no word */
  close(ready_fd);
  ready_fd = -1;
}

/* The environment of the new generation: ours without the handover's
** variables, then theirs ('vars'). NULL when out of memory. */
static char **child_env (char *const *vars, int nvars) {
  size_t n = 0, k = 0;
  char **env;
  int i;
  while (environ[n] != NULL) n++;
  env = calloc(n + (size_t)nvars + 1, sizeof *env);
  if (env == NULL) return NULL;
  for (i = 0; environ[i] != NULL; i++)
    if (strncmp(environ[i], "SOCKHOST_FDS=", 13) != 0 &&
        strncmp(environ[i], "SOCKHOST_READY_FD=", 18) != 0 &&
        strncmp(environ[i], "SOCKHOST_GENERATION=", 20) != 0)
      env[k++] = environ[i];
  for (i = 0; i < nvars; i++) env[k++] = vars[i];
  return env;
}

/* "SOCKHOST_FDS=3 4 7" for the tracked sockets, into 'buf'. */
static void fds_var (char *buf, size_t size, const int *fds, int n) {
  size_t len = (size_t)snprintf(buf, size, "SOCKHOST_FDS=");
  int i;
  for (i = 0; i < n && len < size; i++)
    len += (size_t)snprintf(buf + len, size - len, i > 0 ? " %d" : "%d", fds[i]);
}

/* In the child: keep 'fds' and 'wfd' open across exec, take the default
** signal mask, and run the program again. Never returns. */
static void exec_child (const int *fds, int n, int wfd, char **env) {
  sigset_t none;
  int i;
  for (i = 0; i < n; i++) fcntl(fds[i], F_SETFD, 0);
  for (i = 0; i < nkept; i++) fcntl(kept[i], F_SETFD, 0);
  fcntl(wfd, F_SETFD, 0);
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  execve(exe, saved_argv, env);
  _exit(127);
}

static void drop (pending *p) {
  sh_loop_untrack(p->loop, &p->item);
  event_free(p->ev);
  close(p->fd);
  free(p);
  cur = NULL;
}

/* The loop ends while the new generation has not answered: it goes on alone. */
static void destroy (sh_loop_item *item) {
  drop((pending *)item);
}

static void finish (int ok, int status) {
  pending *p = cur;
  double secs = sh_now_real() - p->began;
  sh_handover_fn cb = p->cb;
  void *ctx = p->ctx;
  int pid = (int)p->pid;
  drop(p);
  cb(ok, pid, status, secs, ctx);
}

/* The pipe is readable: a byte (ready) or its end (the child ended). */
static void on_pipe (evutil_socket_t fd, short what, void *arg) {
  char c;
  ssize_t r = read((int)fd, &c, 1);
  int status = 0;
  (void)what;
  (void)arg;
  if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (r == 1) { finish(1, 0); return; }
  while (waitpid(cur->pid, &status, 0) < 0 && errno == EINTR) {}
  finish(0, status);
}

/* Fork and exec; the pid, or -1 with errno. */
static pid_t spawn (int wfd, char **env) {
  int fds[SH_INHERIT_MAX];
  int n = sh_inherit_tracked(fds, SH_INHERIT_MAX);
  pid_t pid;
  fflush(NULL);
  pid = fork();
  if (pid == 0) exec_child(fds, n, wfd, env);
  return pid;
}

int sh_handover_start (sh_loop *loop, sh_handover_fn cb, void *ctx, char *err, size_t errlen) {
  int fds[SH_INHERIT_MAX], pfd[2], n;
  char fdvar[SH_INHERIT_MAX * 12], readyvar[40], genvar[40];
  char *vars[3];
  char **env;
  pending *p;
  if (cur != NULL) { snprintf(err, errlen, "a reload is already under way"); return -1; }
  if (saved_argv == NULL || exe[0] == '\0') { snprintf(err, errlen, "no command line to run"); return -1; }
  n = sh_inherit_tracked(fds, SH_INHERIT_MAX);
  if ((p = calloc(1, sizeof *p)) == NULL) { snprintf(err, errlen, "out of memory"); return -1; }
  if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) != 0) {
    snprintf(err, errlen, "%s", sh_strerror(errno));
    free(p);
    return -1;
  }
  fds_var(fdvar, sizeof fdvar, fds, n);
  snprintf(readyvar, sizeof readyvar, "SOCKHOST_READY_FD=%d", pfd[1]);
  snprintf(genvar, sizeof genvar, "SOCKHOST_GENERATION=%d", generation + 1);
  vars[0] = fdvar; vars[1] = readyvar; vars[2] = genvar;
  env = child_env(vars, 3);
  p->ev = env != NULL ? event_new(sh_loop_base(loop), pfd[0], EV_READ | EV_PERSIST, on_pipe, NULL) : NULL;
  p->pid = p->ev != NULL ? spawn(pfd[1], env) : -1;
  free(env);
  close(pfd[1]);
  if (p->pid < 0) {
    snprintf(err, errlen, "%s", p->ev != NULL ? sh_strerror(errno) : "out of memory");
    if (p->ev != NULL) event_free(p->ev);
    close(pfd[0]);
    free(p);
    return -1;
  }
  p->fd = pfd[0];
  p->began = sh_now_real();
  p->cb = cb;
  p->ctx = ctx;
  p->loop = loop;
  p->item.destroy = destroy;
  sh_loop_track(loop, &p->item);
  cur = p;
  event_add(p->ev, NULL);
  return (int)p->pid;
}
