/* sh_watchdog.c -- see sh_watchdog.h.
**
** A thread that takes no signal samples a progress counter a few times per
** limit: the loop bumps it from a repeating timer (so an idle loop, waiting
** in the kernel, counts as turning) and the scheduler at every resume. When
** it has not moved for the limit, the thread writes the reason and sends
** DUMP_SIGNAL to the loop's thread, whose handler, interrupting whatever
** runs there, writes the line and the account of what ran and exits. The
** stop signals are noted by a handler chained before the loop's own.
**
** The same thread watches for stalls: the start of the run now going on
** (0: none) is kept in microseconds of the coarse clock; a run seen older
** than the warning gets STALL_SIGNAL, and again for each further warning's
** time it lasts; the loop's thread calls the user back from the handler. */
#include "sh_watchdog.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sh_clock.h"
#include "sh_log.h"
#include "sh_util.h"

#define DUMP_SIGNAL SIGRTMIN  /* watchdog thread -> loop's thread: write and exit */
#define STALL_SIGNAL (SIGRTMIN + 1)   /* watchdog thread -> loop's thread: a stall */
#define ANSWER_WAIT 2.0       /* seconds the loop's thread gets to do it */
#define EXIT_STATUS 1
#define STACK_SIZE (128 * 1024)

static struct {
  int started;
  double limit;                  /* seconds without progress; 0: no limit */
  double grace;                  /* a stop signal's deadline is grace + 1 s */
  sh_watchdog_fn describe;
  void *ctx;
  pthread_t loop_thread;
  sh_loop *loop;
  struct event *tick;            /* on the loop: progress at each firing */
  sh_loop_item item;             /* frees 'tick' with the loop */
  struct sigaction chained[2];   /* SIGTERM's and SIGINT's handlers before ours */
  char why[256];                 /* the reason, written before DUMP_SIGNAL */
  double stall;                  /* seconds a run may keep the loop; 0: off */
  sh_watchdog_stall_fn on_stall;
  void *stall_ctx;
} wd;

/* Shared by the threads and the signal handlers, read and written whole. */
static unsigned long kicks;      /* progress */
static int loop_gone;            /* the loop was freed: no limit any more */
static long long signal_ms;      /* when the first stop signal came; 0: none */
static int signal_no;
static long long run_since;      /* the current run's start (us); 0: none */

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_SEQ_CST)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_SEQ_CST)

void sh_watchdog_kick (void) {
  __atomic_fetch_add(&kicks, 1, __ATOMIC_RELAXED);
}

static long long now_us (void) {
  return (long long)(sh_now_real_coarse() * 1e6);
}

void sh_watchdog_run_begin (void) {
  if (wd.stall > 0) __atomic_store_n(&run_since, now_us(), __ATOMIC_RELAXED);
}

void sh_watchdog_run_end (void) {
  if (wd.stall > 0) __atomic_store_n(&run_since, 0, __ATOMIC_RELAXED);
}

double sh_watchdog_run_time (void) {
  long long since = LOAD(run_since);
  return since != 0 ? (double)(now_us() - since) / 1e6 : 0;
}

void sh_watchdog_set_stall (double warn, sh_watchdog_stall_fn fn, void *ctx) {
  wd.stall = warn > 0 ? warn : 0;
  wd.on_stall = fn;
  wd.stall_ctx = ctx;
}

/* ---------------- writing, from a signal handler too ---------------- */

/* The UTC time now as the log writes it, without locale, lock or malloc
** (days to a civil date: H. Hinnant's algorithm). */
static void stamp (char *out, size_t len) {
  struct timespec ts;
  long long days, secs, era, doe, yoe, doy, mp, y, m, d;
  clock_gettime(CLOCK_REALTIME, &ts);
  days = (long long)ts.tv_sec / 86400 + 719468;
  secs = (long long)ts.tv_sec % 86400;
  era = days / 146097;
  doe = days - era * 146097;
  yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = yoe + era * 400 + (m <= 2);
  snprintf(out, len, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%03ldZ", y, m, d,
           secs / 3600, secs / 60 % 60, secs % 60, (long)(ts.tv_nsec / 1000000));
}

static void write_all (const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

/* One line as sh_log writes it: "<time> <LEVEL> <msg>", if the log's
** level lets it through (reading it neither locks nor allocates). */
static int log_line (sh_log_level level, const char *msg) {
  static const char *const tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  char line[512], ts[96];
  int n;
  if (level < sh_log_get_level() || level >= SH_LOG_OFF) return 0;
  stamp(ts, sizeof ts);
  n = snprintf(line, sizeof line, "%s %-5s %s\n", ts, tags[level], msg);
  if (n < 0) return 0;
  write_all(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
  return 1;
}

/* ---------------- ending ---------------- */

/* DUMP_SIGNAL, on the loop's thread: the reason, what ran, the end. */
static void on_dump (int sig) {
  static char account[16384];
  size_t n;
  (void)sig;
  /* the line first: whatever happens next, it is out */
  if (log_line(SH_LOG_ERROR, wd.why) && wd.describe != NULL) {
    account[0] = '\t';
    account[1] = '\0';
    wd.describe(account + 1, sizeof account - 2, wd.ctx);
    n = strlen(account);
    account[n++] = '\n';
    write_all(account, n);
  }
  _exit(EXIT_STATUS);
}

static void pause_for (double seconds) {
  struct timespec ts;
  ts.tv_sec = (time_t)seconds;
  ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* On the watchdog's thread, with wd.why written: have the loop's thread
** end the process; if it does not answer, end it from here. */
static void end_process (void) {
  pthread_kill(wd.loop_thread, DUMP_SIGNAL);
  pause_for(ANSWER_WAIT);
  log_line(SH_LOG_ERROR, wd.why);
  log_line(SH_LOG_ERROR, "watchdog: the loop's thread did not answer: no traceback");
  _exit(EXIT_STATUS);
}

/* STALL_SIGNAL, on the loop's thread. */
static void on_stall_signal (int sig) {
  int saved = errno;
  (void)sig;
  if (wd.on_stall != NULL) wd.on_stall(wd.stall_ctx);
  errno = saved;
}

/* ---------------- watching ---------------- */

static double period (void) {
  double p = wd.limit > 0 ? wd.limit / 10 : 0.1;
  if (wd.stall > 0 && wd.stall / 4 < p) p = wd.stall / 4;
  return p < 0.005 ? 0.005 : p > 0.1 ? 0.1 : p;
}

/* A run older than the warning: tell the loop's thread, and again each
** time it goes on for as long (it may block again elsewhere). 'run' and
** 'told': the run last seen and when it was last told. */
static void check_stall (long long *run, long long *told) {
  long long since = LOAD(run_since), now = now_us();
  if (wd.stall <= 0 || since == 0) return;
  if (since != *run) {
    *run = since;
    *told = since;
  }
  if ((double)(now - *told) < wd.stall * 1e6) return;
  *told = now;
  pthread_kill(wd.loop_thread, STALL_SIGNAL);
}

/* Whether the first stop signal came more than grace + 1 s ago. */
static int signal_overdue (double now) {
  long long at = LOAD(signal_ms);
  return at != 0 && now * 1000 - (double)at >= (wd.grace + 1) * 1000;
}

static void *watch (void *arg) {
  unsigned long seen = LOAD(kicks), k;
  double last = sh_now_real(), before = last, now, step = period();
  long long run = 0, told = 0;
  (void)arg;
  for (;;) {
    pause_for(step);
    check_stall(&run, &told);
    now = sh_now_real();
    k = LOAD(kicks);
    /* moved, no loop left, or this thread was not running (the process
    ** was stopped): not the loop's fault */
    if (k != seen || LOAD(loop_gone) || now - before > step + 1) {
      seen = k;
      last = now;
    } else if (wd.limit > 0 && now - last >= wd.limit) {
      snprintf(wd.why, sizeof wd.why, "watchdog: the loop has not turned for %g s: exiting "
               "(stuck where the budget cannot stop it: a __gc finalizer, a blocking call...)",
               wd.limit);
      end_process();
    }
    before = now;
    if (signal_overdue(now)) {
      snprintf(wd.why, sizeof wd.why, "watchdog: not stopped %g s after signal %d "
               "(grace %g s + 1 s): exiting", wd.grace + 1, LOAD(signal_no), wd.grace);
      end_process();
    }
  }
  return NULL;
}

/* ---------------- the stop signals ---------------- */

/* SIGTERM, SIGINT: note the first and pass it on to the loop's watcher; a
** second one ends the process at once, turning loop or not. */
static void on_stop_signal (int sig) {
  int saved = errno;
  const struct sigaction *next = &wd.chained[sig == SIGINT];
  if (LOAD(signal_ms) != 0) {
    char msg[64];
    snprintf(msg, sizeof msg, "signal %d again: exiting now", sig);
    log_line(SH_LOG_WARN, msg);
    _exit(EXIT_STATUS);
  }
  STORE(signal_no, sig);
  STORE(signal_ms, (long long)(sh_now_real() * 1000));
  if (!(next->sa_flags & SA_SIGINFO) && next->sa_handler != SIG_DFL &&
      next->sa_handler != SIG_IGN)
    next->sa_handler(sig);
  errno = saved;
}

static int install (int sig, void (*fn)(int), struct sigaction *old) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sa.sa_flags = SA_RESTART;
  sigfillset(&sa.sa_mask);
  return sigaction(sig, &sa, old);
}

/* ---------------- the loop's side ---------------- */

static void on_tick (evutil_socket_t fd, short what, void *arg) {
  (void)fd; (void)what; (void)arg;
  sh_watchdog_kick();
}

/* The loop is being freed: its timer goes, and with it the limit. */
static void loop_freed (sh_loop_item *item) {
  sh_loop_untrack(wd.loop, item);
  event_free(wd.tick);
  wd.tick = NULL;
  STORE(loop_gone, 1);
}

static int start_tick (sh_loop *loop) {
  double every = wd.limit / 4;
  struct timeval tv = sh_timeval(every < 0.01 ? 0.01 : every > 1 ? 1 : every);
  wd.tick = event_new(sh_loop_base(loop), -1, EV_PERSIST, on_tick, NULL);
  if (wd.tick == NULL || event_add(wd.tick, &tv) != 0) return -1;
  wd.item.destroy = loop_freed;
  sh_loop_track(loop, &wd.item);
  return 0;
}

/* The thread, taking no signal: they all go to the loop's thread. */
static int start_thread (void) {
  sigset_t all, old;
  pthread_attr_t attr;
  pthread_t th;
  int rc;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, STACK_SIZE);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  rc = pthread_create(&th, &attr, watch, NULL);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc == 0) return 0;
  errno = rc;
  return -1;
}

int sh_watchdog_start (sh_loop *loop, double limit, double grace, sh_watchdog_fn describe,
                       void *ctx) {
  if (wd.started) return 0;
  wd.limit = limit > 0 ? limit : 0;
  wd.grace = grace > 0 ? grace : 0;
  wd.describe = describe;
  wd.ctx = ctx;
  wd.loop = loop;
  wd.loop_thread = pthread_self();
  if (install(DUMP_SIGNAL, on_dump, NULL) != 0 ||
      (wd.stall > 0 && install(STALL_SIGNAL, on_stall_signal, NULL) != 0) ||
      install(SIGTERM, on_stop_signal, &wd.chained[0]) != 0 ||
      install(SIGINT, on_stop_signal, &wd.chained[1]) != 0)
    return -1;
  if (wd.limit > 0 && start_tick(loop) != 0) return -1;
  if (start_thread() != 0) return -1;
  wd.started = 1;
  return 0;
}
