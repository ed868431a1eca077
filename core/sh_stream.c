/* sh_stream.c -- what every stream transport shares; see sh_stream.h for the
** interface and sh_transport.h for how a transport plugs in. Nothing here
** knows which transport it drives: it calls through s->ops.
**
** Lifetime: a stream is freed in one place, destroy(). If that is asked for
** while the owner's callback runs, it is deferred until the callback returns
** (the owner may close the stream from inside it). */
#include "sh_transport.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "sh_timer.h"
#include "sh_util.h"

#define FIN_WAIT 2.0       /* seconds to wait for the peer's close after ours */

/* ====================== Lifetime ====================== */

sh_stream *sh_transport_new (sh_loop *loop, const sh_transport *ops, int fd, sh_stream_fn cb,
                             void *ctx) {
  sh_stream *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->ops = ops;
  s->loop = loop;
  s->fd = fd;
  s->cb = cb;
  s->ctx = ctx;
  s->cap = SH_STREAM_CAP;
  return s;
}

void sh_transport_discard (sh_stream *s) { free(s); }

static void sweep_leave(sh_stream *s);

static void destroy (sh_stream *s) {
  if (s->in_cb) { s->dead = 1; return; }   /* finish after the callback */
  sweep_leave(s);
  sh_loop_untrack(s->loop, &s->item);
  if (s->linger) event_free(s->linger);
  if (s->holds_ref) sh_loop_unref(s->loop);
  s->ops->destroy(s);
  free(s);
}

int sh_transport_notify (sh_stream *s, int what) {
  if (s->cb == NULL) return 1;
  s->in_cb = 1;
  s->cb(s, what, s->ctx);
  s->in_cb = 0;
  if (s->dead) { destroy(s); return 0; }
  return 1;
}

void sh_stream_set_owner (sh_stream *s, sh_stream_fn cb, void *ctx) {
  s->cb = cb;
  s->ctx = ctx;
}

/* ====================== Reading ====================== */

void sh_stream_set_cap (sh_stream *s, size_t cap) {
  s->cap = cap > 0 ? cap : 1;
  s->ops->set_cap(s);
}

void sh_stream_set_lowat (sh_stream *s, size_t lowat) {
  s->lowat = lowat;
  s->ops->set_lowat(s);
}

void sh_transport_eof (sh_stream *s, int err) {
  s->eof = 1;
  if (err != 0 && s->err == 0) s->err = err;
  s->ops->update_read(s);
}

/* ---------------- The input buffer ---------------- */

ssize_t sh_stream_find (sh_stream *s, const char *d, size_t dlen, size_t from) {
  struct evbuffer *in = s->ops->input(s, 0);
  struct evbuffer_ptr start, found;
  if (in == NULL || evbuffer_ptr_set(in, &start, from, EVBUFFER_PTR_SET) != 0) return -1;
  found = evbuffer_search(in, d, dlen, &start);
  return found.pos;
}

const char *sh_stream_peek (sh_stream *s, size_t n) {
  struct evbuffer *in = s->ops->input(s, 0);
  if (in == NULL || n == 0 || evbuffer_get_length(in) < n) return NULL;
  return (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
}

void sh_stream_consume (sh_stream *s, size_t n) {
  struct evbuffer *in = s->ops->input(s, 0);
  if (in != NULL && n > 0) evbuffer_drain(in, n);
}

/* ====================== Writing ====================== */

void sh_transport_half_close (sh_stream *s) {
  s->shut_pending = 0;
  if (s->shut_done) return;
  s->shut_done = 1;
  s->ops->half_close(s);
}

void sh_transport_sent (sh_stream *s, size_t before, size_t after) {
  if (after == 0 && s->shut_pending) sh_transport_half_close(s);
  if (s->closing) {
    if (after == 0) sh_transport_finish_close(s);
    return;
  }
  if (before > s->lowat && after <= s->lowat) sh_transport_notify(s, SH_STREAM_DRAIN);
}

ssize_t sh_stream_write (sh_stream *s, const struct iovec *iov, int n, size_t limit) {
  if (s->closing || s->shut_done || s->shut_pending || s->err != 0) {
    errno = s->err != 0 ? s->err : EPIPE;
    return -1;
  }
  return s->ops->write(s, iov, n, limit);
}

void sh_stream_shutdown (sh_stream *s) {
  if (s->closing || s->shut_done) return;
  if (s->ops->outlen(s) == 0) {
    sh_transport_half_close(s);
    return;
  }
  s->shut_pending = 1;
  s->ops->want_empty(s);
}

/* ====================== Time limits ====================== */

struct sh_sweep {
  sh_timer *timer;
  double every;
  sh_stream *head;            /* the streams it checks */
  sh_stream *cursor;          /* the next one a running sweep looks at */
};

static void sweep_join (sh_sweep *w, sh_stream *s) {
  s->sweep = w;
  s->sw_prev = NULL;
  s->sw_next = w->head;
  if (w->head != NULL) w->head->sw_prev = s;
  w->head = s;
  if (!sh_timer_active(w->timer)) sh_timer_start(w->timer, w->every, w->every);
}

static void sweep_leave (sh_stream *s) {
  sh_sweep *w = s->sweep;
  if (w == NULL) return;
  if (w->cursor == s) w->cursor = s->sw_next;   /* a running sweep goes on past it */
  if (s->sw_prev != NULL) s->sw_prev->sw_next = s->sw_next;
  else w->head = s->sw_next;
  if (s->sw_next != NULL) s->sw_next->sw_prev = s->sw_prev;
  s->sw_prev = s->sw_next = NULL;
  s->sweep = NULL;
}

void sh_stream_set_limits (sh_stream *s, sh_sweep *w, double idle, double partial) {
  s->idle = idle > 0 ? idle : 0;
  s->partial = partial > 0 ? partial : 0;
  s->limited = s->idle > 0 || s->partial > 0;
  s->last_active = sh_now_coarse();
  if (s->sweep != NULL && (!s->limited || s->sweep != w)) sweep_leave(s);
  if (s->limited && s->sweep == NULL && w != NULL && !s->closing) sweep_join(w, s);
}

void sh_stream_partial (sh_stream *s, int pending) {
  if (!pending) { s->partial_since = 0; return; }
  if (s->partial_since > 0 || s->partial == 0) return;
  s->partial_since = sh_now_coarse();
}

/* What waits for the peer: the kernel's queue (SIOCOUTQ: bytes not yet
** acked), and what the transport holds and sends without telling us each
** time. */
static int queued (const sh_stream *s) {
  int n = 0;
  size_t held = s->ops->unsent(s);
  if (s->fd < 0 || ioctl(s->fd, TIOCOUTQ, &n) != 0) n = 0;
  return n + (int)(held < (1u << 30) ? held : (1u << 30));
}

/* 0 while within the limits; SH_STREAM_IDLE or SH_STREAM_SLOW past one.
** Idle means no byte moved between us and the kernel, but a slow reader
** may still be draining what the kernel holds for it: that is progress.
** The kernel's queue is sampled once halfway through an idle period and
** compared once at its end (two ioctls at most per period and stream). */
static int limit_passed (sh_stream *s, double now) {
  if (s->closing || !s->limited) return 0;
  if (s->ops->moved != NULL && s->ops->moved(s)) s->last_active = now;
  if (s->partial > 0 && s->partial_since > 0 && now >= s->partial_since + s->partial)
    return SH_STREAM_SLOW;
  if (s->idle > 0 && now >= s->last_active + s->idle / 2) {
    if (s->outq_at < s->last_active) {           /* first look in this period */
      s->outq_at = now;
      s->outq = queued(s);
    }
    if (now >= s->last_active + s->idle) {
      int n = queued(s);
      if (n >= s->outq) return SH_STREAM_IDLE;
      s->last_active = s->outq_at = now;         /* the peer took some */
      s->outq = n;
    }
  }
  return 0;
}

/* Check every stream; tell the owners of those past a limit. An owner may
** close any stream meanwhile: the cursor moves past one that leaves. */
static void on_sweep (sh_timer *timer, void *ctx) {
  sh_sweep *w = ctx;
  double now = sh_now_coarse();
  sh_stream *s;
  for (w->cursor = w->head; (s = w->cursor) != NULL;) {
    int why;
    w->cursor = s->sw_next;
    if ((why = limit_passed(s, now)) != 0) sh_transport_notify(s, why);
  }
  if (w->head == NULL) sh_timer_stop(timer);
}

sh_sweep *sh_sweep_new (sh_loop *loop, double every) {
  sh_sweep *w = calloc(1, sizeof *w);
  if (w == NULL) return NULL;
  w->every = every;
  if ((w->timer = sh_timer_new(loop, 0, on_sweep, w)) == NULL) { free(w); return NULL; }
  return w;
}

void sh_sweep_free (sh_sweep *w) {
  if (w == NULL) return;
  while (w->head != NULL) sweep_leave(w->head);
  sh_timer_free(w->timer);
  free(w);
}

/* ====================== Accessors ====================== */

int sh_stream_fd (const sh_stream *s) { return s->fd; }
const char *sh_stream_transport (const sh_stream *s) { return s->ops->name(s); }
void *sh_stream_ctx (const sh_stream *s) { return s->cb != NULL ? s->ctx : NULL; }
size_t sh_stream_inlen (const sh_stream *s) { return s->ops->inlen(s); }
size_t sh_stream_outlen (const sh_stream *s) { return s->ops->outlen(s); }
int sh_stream_eof (const sh_stream *s) { return s->eof; }
int sh_stream_error (const sh_stream *s) { return s->err; }

/* ====================== Closing ====================== */

static void on_linger (evutil_socket_t fd, short what, void *arg) {
  sh_stream *s = arg;
  (void)fd; (void)what;
  destroy(s);                 /* the peer took too long: give up */
}

static void arm_linger (sh_stream *s, double seconds) {
  struct timeval tv = sh_timeval(seconds);
  if (s->linger == NULL)
    s->linger = evtimer_new(sh_loop_base(s->loop), on_linger, s);
  if (s->linger == NULL || evtimer_add(s->linger, &tv) != 0) destroy(s);
}

/* Output is out (or lost): send our end, then read and discard until the
** peer's, so unread input does not turn our close into a reset. */
void sh_transport_finish_close (sh_stream *s) {
  if (s->holds_ref) { sh_loop_unref(s->loop); s->holds_ref = 0; }
  if (s->eof || s->err != 0) { destroy(s); return; }
  sh_transport_half_close(s);
  s->ops->discard_input(s);
  s->ops->update_read(s);
  arm_linger(s, FIN_WAIT);
}

/* The loop is going away with the stream still closing. */
static void destroy_orphan (sh_loop_item *item) {
  sh_stream *s = (sh_stream *)item;
  s->in_cb = 0;
  destroy(s);
}

void sh_stream_close (sh_stream *s, double linger) {
  if (s->closing) return;
  s->closing = 1;
  sweep_leave(s);
  s->item.destroy = destroy_orphan;
  sh_loop_track(s->loop, &s->item);
  s->cb = NULL;
  s->ctx = NULL;
  s->shut_pending = 0;
  s->ops->update_read(s);
  if (s->ops->outlen(s) == 0 || s->err != 0) {
    sh_transport_finish_close(s);
    return;
  }
  s->holds_ref = 1;                         /* delivering keeps us alive */
  sh_loop_ref(s->loop);
  s->ops->want_empty(s);
  arm_linger(s, linger);
}

void sh_stream_abort (sh_stream *s) {
  struct linger lg;
  lg.l_onoff = 1;
  lg.l_linger = 0;
  if (s->fd >= 0) setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  s->cb = NULL;
  s->ctx = NULL;
  destroy(s);
}

/* The stream forgets the socket without closing it; what it had buffered
** either way is dropped. For a protocol that switches layers in place
** (STARTTLS). */
int sh_stream_detach (sh_stream *s) {
  int fd;
  if (s->ops->detach == NULL) return -1;
  fd = s->ops->detach(s);
  s->cb = NULL;
  s->ctx = NULL;
  destroy(s);                               /* after the callback, if inside it */
  return fd;
}
