/* sh_timer.c -- timers; see sh_timer.h. */
#include "sh_timer.h"

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdlib.h>

#include "sh_util.h"

struct sh_timer {
  struct event ev;
  sh_loop *loop;
  sh_timer_fn cb;
  void *ctx;
  double repeat;        /* seconds between firings, 0 for one-shot */
  int keep_alive;       /* hold a loop reference while active */
  int active;           /* armed */
};

static void set_active (sh_timer *t, int on) {
  if (t->active == on) return;
  t->active = on;
  if (t->keep_alive) {
    if (on) sh_loop_ref(t->loop);
    else sh_loop_unref(t->loop);
  }
}

static void on_fire (evutil_socket_t fd, short what, void *arg) {
  sh_timer *t = arg;
  (void)fd; (void)what;
  if (t->repeat > 0) {
    struct timeval tv = sh_timeval(t->repeat);
    evtimer_add(&t->ev, &tv);
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
  return t;
}

int sh_timer_start (sh_timer *t, double seconds, double repeat) {
  struct timeval tv = sh_timeval(seconds);
  t->repeat = repeat > 0 ? repeat : 0;
  if (evtimer_add(&t->ev, &tv) != 0) return -1;
  set_active(t, 1);
  return 0;
}

void sh_timer_stop (sh_timer *t) {
  evtimer_del(&t->ev);
  set_active(t, 0);
}

int sh_timer_active (const sh_timer *t) { return t->active; }

void sh_timer_free (sh_timer *t) {
  sh_timer_stop(t);
  free(t);
}
