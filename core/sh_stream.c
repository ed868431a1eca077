/* sh_stream.c -- what every stream transport shares; see sh_stream.h for the
** interface and sh_transport.h for how a transport plugs in. Nothing here
** knows which transport it drives: it calls through s->ops.
**
** Lifetime: a stream is freed in one place, destroy(). If that is asked for
** while the owner's callback runs, it is deferred until the callback returns
** (the owner may close the stream from inside it). */
#include "sh_transport.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
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
static void charge_to(sh_stream *s, size_t now);
static void drop_held(sh_stream *s);

static void destroy (sh_stream *s) {
  if (s->in_cb) { s->dead = 1; return; }   /* finish after the callback */
  sweep_leave(s);
  sh_loop_untrack(s->loop, &s->item);
  if (s->linger) event_free(s->linger);
  if (s->holds_ref) sh_loop_unref(s->loop);
  drop_held(s);
  s->ops->destroy(s);
  charge_to(s, 0);                           /* its buffers are gone */
  free(s);
}

int sh_transport_notify (sh_stream *s, int what) {
  sh_transport_charge(s);
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
  if (s->err != 0) drop_held(s);             /* it can never go out now */
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

/* Making a large input contiguous copies it into one new block and frees
** the chains it came in: give those back at once, or the process holds
** the input twice until it is consumed. */
const char *sh_stream_peek (sh_stream *s, size_t n) {
  struct evbuffer *in = s->ops->input(s, 0);
  const char *p;
  int copied;
  if (in == NULL || n == 0 || evbuffer_get_length(in) < n) return NULL;
  copied = n >= SH_BUDGET_TRIM && (size_t)evbuffer_get_contiguous_space(in) < n;
  p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
  if (copied) sh_budget_give_back();
  return p;
}

void sh_stream_consume (sh_stream *s, size_t n) {
  struct evbuffer *in = s->ops->input(s, 0);
  if (in != NULL && n > 0) evbuffer_drain(in, n);
  if (s->charged != 0) sh_transport_charge(s);   /* input is counted when it arrives */
}

/* ====================== The buffer budget ====================== */

struct sh_budget {
  size_t limit;               /* 0: none */
  size_t used;                /* bytes charged now */
  size_t high;                /* the high point since the heap was last trimmed */
  sh_stream *head;            /* the streams charged something */
};

sh_budget *sh_budget_new (size_t limit) {
  sh_budget *b = calloc(1, sizeof *b);
  if (b != NULL) b->limit = limit;
  return b;
}

void sh_budget_free (sh_budget *b) {
  if (b == NULL) return;
  while (b->head != NULL) {
    sh_stream *s = b->head;
    b->head = s->bu_next;
    s->bu_prev = s->bu_next = NULL;
    s->budget = NULL;
    s->charged = 0;
  }
  free(b);
}

void sh_budget_set_limit (sh_budget *b, size_t limit) { b->limit = limit; }
size_t sh_budget_limit (const sh_budget *b) { return b->limit; }
size_t sh_budget_used (const sh_budget *b) { return b->used; }
int sh_budget_over (const sh_budget *b) { return b->limit > 0 && b->used > b->limit; }

static void budget_link (sh_budget *b, sh_stream *s) {
  s->bu_prev = NULL;
  s->bu_next = b->head;
  if (b->head != NULL) b->head->bu_prev = s;
  b->head = s;
}

static void budget_unlink (sh_budget *b, sh_stream *s) {
  if (s->bu_prev != NULL) s->bu_prev->bu_next = s->bu_next;
  else b->head = s->bu_next;
  if (s->bu_next != NULL) s->bu_next->bu_prev = s->bu_prev;
  s->bu_prev = s->bu_next = NULL;
}

/* Give the heap's free pages back to the system (glibc keeps them for
** reuse otherwise, past its trim threshold; core/sh_tls.c raises that). */
void sh_budget_give_back (void) {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

/* Most of what was buffered, and a large amount, is free again. (Not on
** every fall: a busy host's charge goes up and down, and the pages given
** back would be faulted in again.) */
static void budget_trim (sh_budget *b) {
  if (b->used > b->high / 2 || b->high - b->used < SH_BUDGET_TRIM) return;
  b->high = b->used;
  sh_budget_give_back();
}

/* The stream now holds 'now' bytes. */
static void charge_to (sh_stream *s, size_t now) {
  sh_budget *b = s->budget;
  size_t was = s->charged;
  if (b == NULL || now == was) return;
  s->charged = now;
  if (was == 0) budget_link(b, s);
  else if (now == 0) budget_unlink(b, s);
  if (now > was) {
    b->used += now - was;
    if (b->used > b->high) b->high = b->used;
  } else {
    b->used -= was - now;
    budget_trim(b);
  }
}

static size_t held_len (const sh_stream *s) {
  return s->held != NULL ? evbuffer_get_length(s->held) : 0;
}

void sh_transport_charge (sh_stream *s) {
  if (s->budget != NULL) charge_to(s, s->ops->inlen(s) + s->ops->outlen(s) + held_len(s));
}

void sh_stream_set_budget (sh_stream *s, sh_budget *b) {
  if (s->budget == b) return;
  charge_to(s, 0);
  s->budget = b;
  sh_transport_charge(s);
}

size_t sh_stream_charged (const sh_stream *s) { return s->charged; }

/* The stream holding the most, among those with an owner. */
static sh_stream *largest (sh_budget *b) {
  sh_stream *s, *big = NULL;
  for (s = b->head; s != NULL; s = s->bu_next)
    if (s->cb != NULL && !s->dead && (big == NULL || s->charged > big->charged)) big = s;
  return big;
}

int sh_transport_arrived (sh_stream *s) {
  sh_budget *b = s->budget;
  sh_stream *big;
  if (b == NULL) return 1;
  sh_transport_charge(s);
  if (!sh_budget_over(b) || (big = largest(b)) == NULL) return 1;
  if (big == s) return sh_transport_notify(s, SH_STREAM_OVER);
  s->in_cb = 1;                              /* whatever the other owner does, */
  sh_transport_notify(big, SH_STREAM_OVER);  /* 's' is freed only after this */
  s->in_cb = 0;
  if (s->dead) { destroy(s); return 0; }
  return 1;
}

/* ====================== Writing ====================== */

void sh_transport_half_close (sh_stream *s) {
  s->shut_pending = 0;
  if (s->shut_done) return;
  s->shut_done = 1;
  s->ops->half_close(s);
}

void sh_transport_sent (sh_stream *s, size_t before, size_t after) {
  sh_transport_charge(s);
  if (after == 0 && s->shut_pending) sh_transport_half_close(s);
  if (s->closing) {
    if (after == 0) sh_transport_finish_close(s);
    return;
  }
  if (before > s->lowat && after <= s->lowat) sh_transport_notify(s, SH_STREAM_DRAIN);
}

/* ---------------- Corking ---------------- */

#define HELD_IOV 64          /* buffers per transport write of what is held */

static void drop_held (sh_stream *s) {
  if (s->held == NULL) return;
  evbuffer_free(s->held);
  s->held = NULL;
}

/* Give what is held to the transport, which sends it at once if its queue
** is empty; whatever its limit, as those bytes were taken already. The
** buffer leaves the stream first: a failure on the way may drop it. Returns
** -1 if the stream failed (what was held is lost), else 0. */
static int send_held (sh_stream *s) {
  struct evbuffer *h = s->held;
  int ok = s->err == 0;
  s->held = NULL;
  while (ok && h != NULL && evbuffer_get_length(h) > 0) {
    struct evbuffer_iovec vec[HELD_IOV];
    struct iovec iov[HELD_IOV];
    int i, n = evbuffer_peek(h, -1, NULL, vec, HELD_IOV);
    ssize_t w;
    if (n > HELD_IOV) n = HELD_IOV;
    for (i = 0; i < n; i++) { iov[i].iov_base = vec[i].iov_base; iov[i].iov_len = vec[i].iov_len; }
    w = s->ops->write(s, iov, n, SIZE_MAX);
    ok = w > 0;
    if (ok) evbuffer_drain(h, (size_t)w);
  }
  if (h != NULL) evbuffer_free(h);
  return ok ? 0 : -1;
}

/* Whether a corked write of these buffers stays within 'limit', with what
** is queued and held already. */
static int fits (const sh_stream *s, const struct iovec *iov, int n, size_t limit) {
  size_t total = 0, have = s->ops->outlen(s) + held_len(s);
  int i;
  for (i = 0; i < n; i++) total += iov[i].iov_len;
  return have <= limit && total <= limit - have;
}

/* Hold the buffers (they fit). Returns the bytes held, or -1 (ENOMEM). */
static ssize_t hold (sh_stream *s, const struct iovec *iov, int n) {
  size_t taken = 0;
  int i;
  for (i = 0; i < n; i++) {
    if (iov[i].iov_len == 0) continue;
    if ((s->held == NULL && (s->held = evbuffer_new()) == NULL) ||
        evbuffer_add(s->held, iov[i].iov_base, iov[i].iov_len) != 0) {
      if (taken > 0) break;
      errno = ENOMEM;
      return -1;
    }
    taken += iov[i].iov_len;
  }
  return (ssize_t)taken;
}

void sh_stream_flush (sh_stream *s) {
  if (s->held == NULL) return;
  send_held(s);
  sh_transport_charge(s);
}

void sh_stream_cork (sh_stream *s, int on) {
  s->corked = on != 0;
  if (!on) sh_stream_flush(s);
}

int sh_stream_corked (const sh_stream *s) { return s->corked; }

/* ---------------- Writes ---------------- */

ssize_t sh_stream_write (sh_stream *s, const struct iovec *iov, int n, size_t limit) {
  ssize_t w;
  if (s->closing || s->shut_done || s->shut_pending || s->err != 0) {
    errno = s->err != 0 ? s->err : EPIPE;
    return -1;
  }
  if (s->corked && fits(s, iov, n, limit)) {
    w = hold(s, iov, n);
  } else if (s->held != NULL && send_held(s) != 0) {   /* past the limit: it goes first */
    errno = s->err != 0 ? s->err : EPIPE;
    w = -1;
  } else {
    w = s->ops->write(s, iov, n, limit);
  }
  /* Only the output can have grown: nothing to count when nothing was
  ** held and the kernel took it all (the common case). */
  if (s->budget != NULL && (s->charged != 0 || s->held != NULL || s->ops->outlen(s) != 0))
    sh_transport_charge(s);
  return w;
}

void sh_stream_shutdown (sh_stream *s) {
  if (s->closing || s->shut_done) return;
  send_held(s);
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
size_t sh_stream_outlen (const sh_stream *s) { return s->ops->outlen(s) + held_len(s); }
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
  sh_transport_charge(s);
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
  send_held(s);                             /* then it is queued output as any */
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
