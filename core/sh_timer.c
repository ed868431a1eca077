/* sh_timer.c -- timers; see sh_timer.h. */
#include "sh_timer.h"

#include <event2/event.h>
#include <event2/event_struct.h>
#include <math.h>
#include <stdlib.h>

#include "sh_util.h"

struct sh_timer {
  struct event ev;
  sh_loop *loop;
  sh_timer_fn cb;
  void *ctx;
  double repeat;        /* seconds between firings, 0 for one-shot */
  double origin;        /* repeating: the k-th firing is due at origin +
                        ** k * repeat (k >= 1), on the clock in use (sh_now):
                        ** never at the previous one plus repeat, whose
                        ** rounding errors would add up. every(): the start */
  double ticks;         /* repeating: k of the firing armed (an integer) */
  int keep_alive;       /* hold a loop reference while active */
  int active;           /* armed */
  double due;           /* virtual clock: when it fires */
  double due_real;      /* real clock: when it fires (sh_now_real) */
  sh_timer *aprev, *anext;   /* link in 'all' */
  sh_timer *vprev, *vnext;   /* virtual clock: link in 'waiting' */
  int listed;           /* in 'waiting' */
};

/* A timer due within this much of now is due now: a periodic deadline
** computed as origin + k * repeat may round a hair past the time a test
** moves the virtual clock to (1000 + 2 * 0.3 is 1000.6, two advance(0.3)
** make 1000.5999999999999). A microsecond, libevent's own resolution: no
** real timer can tell the difference. */
#define DUE_SLACK 1e-6

/* Timers armed under the virtual clock, earliest first (equal times in the
** order they were armed). Tests keep few timers; a list is enough. */
static sh_timer *waiting;
/* Every timer, so that switching clocks can find the armed ones. */
static sh_timer *all;

static void unlist (sh_timer *t) {
  if (!t->listed) return;
  if (t->vprev) t->vprev->vnext = t->vnext;
  else waiting = t->vnext;
  if (t->vnext) t->vnext->vprev = t->vprev;
  t->vprev = t->vnext = NULL;
  t->listed = 0;
}

static void list_at (sh_timer *t, double due) {
  sh_timer *p = NULL, *q = waiting;
  unlist(t);
  t->due = due;
  while (q != NULL && q->due <= due) { p = q; q = q->vnext; }
  t->vprev = p;
  t->vnext = q;
  if (p) p->vnext = t; else waiting = t;
  if (q) q->vprev = t;
  t->listed = 1;
}

/* Put t on libevent's heap to fire in 'seconds'. The deadline libevent
** takes is its cached time of the loop turn plus 'seconds': after CPU work
** in the same turn the cache is behind, so it is brought up to date first.
** (on_fire still checks: libevent's clock is a coarse one.) */
static int add_real (sh_timer *t, double seconds) {
  struct timeval tv = sh_timeval(seconds);
  if (seconds > 0) event_base_update_cache_time(sh_loop_base(t->loop));
  return evtimer_add(&t->ev, &tv);
}

/* Arm on whichever clock is in use. A zero delay fires at the next turn of
** the loop on either (not in the turn running now: a task that sleeps 0 in
** a loop must not keep one turn, or one test step, from ending). */
static int arm (sh_timer *t, double seconds) {
  if (sh_clock_is_virtual()) {
    evtimer_del(&t->ev);
    if (seconds <= 0) {
      unlist(t);
      t->due_real = sh_now_real();
      return add_real(t, 0);
    }
    list_at(t, sh_now() + seconds);
    return 0;
  }
  unlist(t);
  t->due_real = sh_now_real() + seconds;
  return add_real(t, seconds);
}

static void set_active (sh_timer *t, int on) {
  if (t->active == on) return;
  t->active = on;
  if (t->keep_alive) {
    if (on) sh_loop_ref(t->loop);
    else sh_loop_unref(t->loop);
  }
}

/* A repeating timer that fired: arm its next firing on its grid, the first
** origin + k * repeat that is still ahead. A firing late by more
** than an interval (a long callback, a stalled loop) skips those it missed
** rather than catching up in a burst. */
static int rearm (sh_timer *t) {
  double now = sh_now(), due;
  t->ticks += 1;
  if (t->origin + t->ticks * t->repeat + DUE_SLACK < now)
    t->ticks = floor((now - t->origin) / t->repeat) + 1;
  due = t->origin + t->ticks * t->repeat;
  if (!sh_clock_is_virtual()) return arm(t, due - now);
  evtimer_del(&t->ev);
  list_at(t, due);                 /* exactly there, not now + (due - now) */
  return 0;
}

static void on_fire (evutil_socket_t fd, short what, void *arg) {
  sh_timer *t = arg;
  (void)fd; (void)what;
  if (!sh_clock_is_virtual()) {                 /* never before its time */
    double left = t->due_real - sh_now_real();
    if (left > 0) {
      add_real(t, left);
      return;
    }
  }
  if (t->repeat > 0) {
    rearm(t);
  } else {
    set_active(t, 0);
  }
  t->cb(t, t->ctx);     /* may stop, restart or free 't' */
}

sh_timer *sh_timer_new (sh_loop *loop, int keep_alive, sh_timer_fn cb, void *ctx) {
  sh_timer *t = calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  t->loop = loop;
  t->cb = cb;
  t->ctx = ctx;
  t->keep_alive = keep_alive;
  evtimer_assign(&t->ev, sh_loop_base(loop), on_fire, t);
  t->anext = all;
  if (all) all->aprev = t;
  all = t;
  return t;
}

int sh_timer_start (sh_timer *t, double seconds, double repeat) {
  t->repeat = repeat > 0 ? repeat : 0;
  t->origin = sh_now();
  if (seconds != t->repeat) t->origin += seconds - t->repeat;
  t->ticks = 1;
  if (arm(t, seconds) != 0) return -1;
  set_active(t, 1);
  return 0;
}

void sh_timer_stop (sh_timer *t) {
  unlist(t);
  evtimer_del(&t->ev);
  set_active(t, 0);
}

int sh_timer_active (const sh_timer *t) { return t->active; }

void sh_timer_free (sh_timer *t) {
  sh_timer_stop(t);
  if (t->aprev) t->aprev->anext = t->anext;
  else all = t->anext;
  if (t->anext) t->anext->aprev = t->aprev;
  free(t);
}

double sh_timer_next_due (sh_loop *loop) {
  sh_timer *t;
  for (t = waiting; t != NULL; t = t->vnext)
    if (t->loop == loop) return t->due;
  return -1;
}

int sh_timer_fire_due (sh_loop *loop) {
  double now = sh_now();
  int n = 0;
  sh_timer *t = waiting, *next;
  for (; t != NULL && t->due <= now + DUE_SLACK; t = next) {
    next = t->vnext;
    if (t->loop != loop) continue;
    unlist(t);
    event_active(&t->ev, EV_TIMEOUT, 1);
    n++;
  }
  return n;
}

/* The clock went back to real time at virtual time 'now': re-arm every
** waiting timer for what it had left. */
static void to_real (double now) {
  while (waiting != NULL) {
    sh_timer *t = waiting;
    double left = t->due > now ? t->due - now : 0;
    t->origin += sh_now_real() - now;       /* the grid moves with the clock */
    unlist(t);
    t->due_real = sh_now_real() + left;
    add_real(t, left);
  }
}

/* The clock became virtual: move every timer armed on the real clock to
** the virtual one, with what it had left. */
static void to_virtual (void) {
  double real = sh_now_real(), now = sh_now();
  sh_timer *t;
  for (t = all; t != NULL; t = t->anext) {
    if (t->listed || !evtimer_pending(&t->ev, NULL)) continue;
    evtimer_del(&t->ev);
    t->origin += now - real;                /* the grid moves with the clock */
    list_at(t, now + (t->due_real > real ? t->due_real - real : 0));
  }
}

void sh_timer_clock (int on, double start) {
  double now = sh_now();
  if ((on != 0) == sh_clock_is_virtual()) return;
  sh_clock_mode(on, start);
  if (on) to_virtual();
  else to_real(now);
}
