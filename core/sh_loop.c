/* sh_loop.c -- event loop with a reference count; see sh_loop.h. */
#include "sh_loop.h"

#include <event2/event.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>

#include "sh_log.h"
#include "sh_util.h"

#define MAX_SIGNALS 8

struct sh_signal_watch {
  struct event *ev;
  sh_signal_fn cb;
  void *ctx;
};

struct sh_loop {
  sh_loop_item orphans;       /* list head: items to destroy at free */
  struct sh_signal_watch sig[MAX_SIGNALS];   /* signal watchers */
  int nsig;
  struct event_base *base;
  int refs;          /* things that keep the loop alive */
  int stopping;      /* sh_loop_stop() was called while running */
  int running;       /* inside sh_loop_run() */
  int timed_out;     /* the run deadline passed */
};

/* libevent's own messages go to our log, one line each. */
static void on_libevent_log (int severity, const char *msg) {
  sh_log(severity >= EVENT_LOG_ERR ? SH_LOG_ERROR : severity == EVENT_LOG_WARN ? SH_LOG_WARN
         : SH_LOG_DEBUG, "libevent: %s", msg);
}

/* glibc's heap and a server's pattern: a pass of the loop reads into the
** buffers of every ready connection, and the strings and chains of the pass
** are alive at once and freed together. Past glibc's trim threshold
** (128 KiB until a large mapped block is freed) the top of the heap went
** back to the kernel (brk) at the end of each pass and was taken again,
** page faults included, on the next: measured on echo 50 x 16 KiB, 3,800
** brk calls and 17,000 page faults in 2 s in some processes and none in
** others (which had once freed a large block), and twice or three times
** the rate in the second kind. So every process keeps up to TRIM_THRESHOLD
** of free heap (a value glibc reaches by itself in that second kind) and
** grows it by TOP_PAD at a time; memory a burst took is still given back,
** by the buffer budget's trim (sh_stream.h). Idle RSS is not changed:
** neither touches a page. Once per process. */
#define TRIM_THRESHOLD (32 << 20)
#define TOP_PAD (1 << 20)

static void tune_malloc (void) {
  static int done;
  if (done) return;
  done = 1;
#if defined(__GLIBC__) && defined(M_TRIM_THRESHOLD)
  mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD);
  mallopt(M_TOP_PAD, TOP_PAD);
#endif
}

sh_loop *sh_loop_new (char *err, size_t errlen) {
  sh_loop *loop = calloc(1, sizeof *loop);
  if (loop == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  tune_malloc();
  loop->orphans.prev = loop->orphans.next = &loop->orphans;
  event_set_log_callback(on_libevent_log);
  loop->base = event_base_new();
  if (loop->base == NULL) {
    snprintf(err, errlen, "cannot create event base");
    free(loop);
    return NULL;
  }
  return loop;
}

void sh_loop_free (sh_loop *loop) {
  int i;
  if (loop == NULL) return;
  while (loop->orphans.next != &loop->orphans)
    loop->orphans.next->destroy(loop->orphans.next);
  for (i = 0; i < loop->nsig; i++) event_free(loop->sig[i].ev);
  event_base_free(loop->base);
  free(loop);
}

struct event_base *sh_loop_base (sh_loop *loop) { return loop->base; }

void sh_loop_track (sh_loop *loop, sh_loop_item *item) {
  item->next = loop->orphans.next;
  item->prev = &loop->orphans;
  loop->orphans.next->prev = item;
  loop->orphans.next = item;
}

void sh_loop_untrack (sh_loop *loop, sh_loop_item *item) {
  (void)loop;
  if (item->next == NULL) return;
  item->prev->next = item->next;
  item->next->prev = item->prev;
  item->next = item->prev = NULL;
}
void sh_loop_ref (sh_loop *loop) { loop->refs++; }
void sh_loop_unref (sh_loop *loop) { loop->refs--; }
int sh_loop_refs (const sh_loop *loop) { return loop->refs; }
int sh_loop_running (const sh_loop *loop) { return loop->running; }

void sh_loop_stop (sh_loop *loop) {
  if (!loop->running) return;
  loop->stopping = 1;
  event_base_loopbreak(loop->base);
}

static void on_deadline (evutil_socket_t fd, short what, void *arg) {
  sh_loop *loop = arg;
  (void)fd; (void)what;
  loop->timed_out = 1;
  event_base_loopbreak(loop->base);
}

int sh_loop_run (sh_loop *loop, double timeout) {
  struct event *deadline = NULL;
  int rc = 0;
  loop->running = 1;
  loop->stopping = loop->timed_out = 0;
  if (timeout >= 0) {
    struct timeval tv = sh_timeval(timeout);
    deadline = evtimer_new(loop->base, on_deadline, loop);
    if (deadline == NULL || evtimer_add(deadline, &tv) != 0) rc = -1;
  }
  /* One iteration at a time, so the reference count is checked between
  ** batches of callbacks rather than when it first touches zero. */
  while (rc == 0 && loop->refs > 0 && !loop->stopping && !loop->timed_out) {
    int r = event_base_loop(loop->base, EVLOOP_ONCE);
    if (r < 0) rc = -1;
    else if (r == 1) break;   /* nothing pending at all: no event can ever
                              ** wake what is left (a task joining itself) */
  }
  if (deadline != NULL) event_free(deadline);
  if (rc == 0) rc = loop->stopping ? 1 : loop->timed_out ? 2 : 0;
  loop->running = 0;
  loop->stopping = loop->timed_out = 0;
  return rc;
}

static void on_signal (evutil_socket_t signum, short what, void *arg) {
  struct sh_signal_watch *w = arg;
  (void)what;
  w->cb((int)signum, w->ctx);
}

int sh_loop_signal (sh_loop *loop, int signum, sh_signal_fn cb, void *ctx) {
  struct sh_signal_watch *w;
  if (loop->nsig >= MAX_SIGNALS) return -1;
  w = &loop->sig[loop->nsig];
  w->cb = cb;
  w->ctx = ctx;
  w->ev = evsignal_new(loop->base, signum, on_signal, w);
  if (w->ev == NULL || evsignal_add(w->ev, NULL) != 0) {
    if (w->ev) event_free(w->ev);
    return -1;
  }
  loop->nsig++;
  return 0;
}

/* Something moved when a callback ran: one made active before the step
** (timers sh_timer_fire_due made due) or one that became active in it. The
** high-water mark alone misses the first kind, which raised it before the
** reset. */
int sh_loop_step (sh_loop *loop) {
  int r, waiting = event_base_get_num_events(loop->base, EVENT_BASE_COUNT_ACTIVE);
  event_base_get_max_events(loop->base, EVENT_BASE_COUNT_ACTIVE, 1);   /* reset */
  r = event_base_loop(loop->base, EVLOOP_NONBLOCK | EVLOOP_ONCE);   /* NONBLOCK alone
                                      ** goes on while callbacks keep coming */
  if (r < 0) return -1;
  return waiting > 0 || event_base_get_max_events(loop->base, EVENT_BASE_COUNT_ACTIVE, 1) > 0;
}
