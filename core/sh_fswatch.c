/* sh_fswatch.c -- inotify on a folder, debounced: see sh_fswatch.h. */
#include "sh_fswatch.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "sh_util.h"

struct sh_fswatch {
  sh_loop_item item;       /* freed with the loop if still there */
  sh_loop *loop;
  int fd;                  /* inotify */
  struct event *ev;        /* fd readable */
  struct event *quiet_ev;  /* the quiet period is over */
  double quiet;
  char last[256];          /* the last file that counted */
  sh_fswatch_want want;
  sh_fswatch_fn cb;
  void *ctx;
};

static void on_quiet (evutil_socket_t fd, short what, void *arg) {
  sh_fswatch *w = arg;
  (void)fd;
  (void)what;
  w->cb(w->last, w->ctx);
}

/* A change that counts (re)starts the quiet period. */
static void changed (sh_fswatch *w, const char *name) {
  struct timeval tv;
  if (!w->want(name, w->ctx)) return;
  snprintf(w->last, sizeof w->last, "%s", name);
  tv.tv_sec = (time_t)w->quiet;
  tv.tv_usec = (suseconds_t)((w->quiet - (double)tv.tv_sec) * 1e6);
  evtimer_add(w->quiet_ev, &tv);
}

static void on_inotify (evutil_socket_t fd, short what, void *arg) {
  sh_fswatch *w = arg;
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  ssize_t n, off;
  (void)what;
  while ((n = read((int)fd, buf, sizeof buf)) > 0)
    for (off = 0; off < n;) {
      const struct inotify_event *e = (const struct inotify_event *)(buf + off);
      if (e->len > 0) changed(w, e->name);
      off += (ssize_t)(sizeof *e + e->len);
    }
}

static void destroy (sh_loop_item *item) {
  sh_fswatch_free((sh_fswatch *)item);
}

static int watch_dir (sh_fswatch *w, const char *dir, char *err, size_t errlen) {
  w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (w->fd >= 0 && inotify_add_watch(w->fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) >= 0)
    return 0;
  snprintf(err, errlen, "%s: %s", dir, sh_strerror(errno));
  if (w->fd >= 0) close(w->fd);
  return -1;
}

sh_fswatch *sh_fswatch_new (sh_loop *loop, const char *dir, double quiet, sh_fswatch_want want,
                            sh_fswatch_fn cb, void *ctx, char *err, size_t errlen) {
  struct event_base *base = sh_loop_base(loop);
  sh_fswatch *w = calloc(1, sizeof *w);
  if (w == NULL) { snprintf(err, errlen, "out of memory"); return NULL; }
  w->loop = loop;
  w->quiet = quiet;
  w->want = want;
  w->cb = cb;
  w->ctx = ctx;
  if (watch_dir(w, dir, err, errlen) != 0) { free(w); return NULL; }
  w->ev = event_new(base, w->fd, EV_READ | EV_PERSIST, on_inotify, w);
  w->quiet_ev = evtimer_new(base, on_quiet, w);
  if (w->ev == NULL || w->quiet_ev == NULL) {
    snprintf(err, errlen, "out of memory");
    if (w->ev) event_free(w->ev);
    if (w->quiet_ev) event_free(w->quiet_ev);
    close(w->fd);
    free(w);
    return NULL;
  }
  event_add(w->ev, NULL);
  w->item.destroy = destroy;
  sh_loop_track(loop, &w->item);
  return w;
}

void sh_fswatch_free (sh_fswatch *w) {
  sh_loop_untrack(w->loop, &w->item);
  event_free(w->ev);
  event_free(w->quiet_ev);
  close(w->fd);
  free(w);
}
