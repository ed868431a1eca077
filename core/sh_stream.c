/* sh_stream.c -- buffered non-blocking streams; see sh_stream.h.
**
** Two backends behind one interface: a socket the stream reads and writes
** itself (the fast path, benchmarked), and any bufferevent (TLS, pairs),
** which does its own I/O. Each public function branches once at its top on
** 'bev'; the bufferevent half lives in its own section below.
**
** Lifetime: a stream is freed in one place, destroy(). If that is asked for
** while the owner's callback runs, it is deferred until the callback returns
** (the owner may close the stream from inside it). */
#include "sh_stream.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sh_util.h"

#define READ_CHUNK 16384   /* bytes asked of the kernel per read */
#define WRITE_IOV 16       /* buffers per sendmsg() from the output queue */
#define FIN_WAIT 2.0       /* seconds to wait for the peer's close after ours */

struct sh_stream {
  sh_loop_item item;          /* first: tracked by the loop once orphaned */
  sh_loop *loop;
  int fd;                     /* the socket; -1 for a bufferevent without one */
  struct bufferevent *bev;    /* the bufferevent backend, or NULL */
  sh_stream_hook_fn on_shut;  /* bufferevent: called before our FIN (TLS
                              ** sends its close_notify there), or NULL */
  sh_stream_count_fn moved_fn;  /* bufferevent: bytes it moved, or NULL */
  unsigned long long moved;   /* ... as last read */
  struct event rev;           /* readable; added while 'reading' */
  struct event *wev;          /* writable; added while output is queued; made
                              ** on the first pushback (most never need it) */
  struct event *linger;       /* close deadline; created on close */
  int limited;                /* idle or partial-message limit set */
  double idle;                /* seconds without progress allowed; 0: any */
  double partial;             /* seconds a partial message may take; 0: any */
  double last_active;         /* when a byte last moved */
  double partial_since;       /* when the pending partial message began; 0: none */
  double outq_at;             /* when 'outq' was sampled */
  int outq;                   /* bytes the kernel held for the peer then */
  struct evbuffer *in;        /* bytes read, not yet taken by the owner */
  struct evbuffer *out;       /* bytes the kernel refused so far */
  size_t cap;                 /* pause reading when 'in' holds this much */
  size_t lowat;               /* report DRAIN at or below this */
  sh_stream_fn cb;            /* owner's callback; NULL once closed */
  void *ctx;                  /* owner's context */
  int err;                    /* errno that ended the stream, or 0 */
  unsigned reading : 1;       /* 'rev' is added */
  unsigned writing : 1;       /* 'wev' is added */
  unsigned eof : 1;           /* no more input will come */
  unsigned shut_pending : 1;  /* shutdown(SHUT_WR) once output drains */
  unsigned shut_done : 1;     /* our side is half-closed */
  unsigned closing : 1;       /* sh_stream_close() was called */
  unsigned holds_ref : 1;     /* keeps the loop alive while flushing */
  unsigned in_cb : 1;         /* inside the owner's callback */
  unsigned dead : 1;          /* destroy() was deferred */
  unsigned detached : 1;      /* the fd was handed back: do not close it */
};

static void on_read(evutil_socket_t fd, short what, void *arg);

/* Buffered input. The buffer is made when bytes arrive and given back when
** the owner has taken them all (see sh_stream_set_cap): an idle connection
** holds no buffers at all. */
static size_t inlen (const sh_stream *s) {
  if (s->bev != NULL) return evbuffer_get_length(bufferevent_get_input(s->bev));
  return s->in != NULL ? evbuffer_get_length(s->in) : 0;
}

/* Queued output; the queue is made on first use (an idle connection has none). */
static size_t outlen (const sh_stream *s) {
  if (s->bev != NULL) return evbuffer_get_length(bufferevent_get_output(s->bev));
  return s->out != NULL ? evbuffer_get_length(s->out) : 0;
}
static void on_write(evutil_socket_t fd, short what, void *arg);

/* ====================== Lifetime ====================== */

sh_stream *sh_stream_new (sh_loop *loop, int fd, sh_stream_fn cb, void *ctx) {
  struct event_base *base = sh_loop_base(loop);
  sh_stream *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->loop = loop;
  s->fd = fd;
  s->cb = cb;
  s->ctx = ctx;
  s->cap = 65536;
  s->lowat = 0;
  if (event_assign(&s->rev, base, fd, EV_READ | EV_PERSIST, on_read, s) != 0) {
    free(s);
    return NULL;
  }
  sh_stream_set_cap(s, s->cap);
  return s;
}

static void destroy (sh_stream *s) {
  if (s->in_cb) { s->dead = 1; return; }   /* finish after the callback */
  sh_loop_untrack(s->loop, &s->item);
  if (s->linger) event_free(s->linger);
  if (s->holds_ref) sh_loop_unref(s->loop);
  if (s->bev != NULL) {                     /* it owns the fd (BEV_OPT_CLOSE_ON_FREE) */
    bufferevent_free(s->bev);
    free(s);
    return;
  }
  event_del(&s->rev);
  if (s->wev) event_free(s->wev);
  if (!s->detached) close(s->fd);
  if (s->in != NULL) evbuffer_free(s->in);
  if (s->out != NULL) evbuffer_free(s->out);
  free(s);
}

/* Call the owner. Returns 0 if the stream was destroyed meanwhile. */
static int notify (sh_stream *s, int what) {
  if (s->cb == NULL) return 1;
  s->in_cb = 1;
  s->cb(s, what, s->ctx);
  s->in_cb = 0;
  if (s->dead) { destroy(s); return 0; }
  return 1;
}

/* ====================== Reading ====================== */

static void update_read (sh_stream *s) {
  int want = !s->eof && inlen(s) < s->cap;
  if (s->closing) want = !s->eof && s->shut_done;   /* discard until FIN */
  if (s->bev != NULL) {                  /* the read watermark applies the cap */
    if (!s->closing) want = !s->eof;
    if (want) bufferevent_enable(s->bev, EV_READ);
    else bufferevent_disable(s->bev, EV_READ);
    return;
  }
  if (want && !s->reading) {
    if (event_add(&s->rev, NULL) == 0) s->reading = 1;
  } else if (!want && s->reading) {
    event_del(&s->rev);
    s->reading = 0;
  }
}

void sh_stream_set_cap (sh_stream *s, size_t cap) {
  s->cap = cap > 0 ? cap : 1;
  if (s->bev != NULL) {
    if (!s->closing) bufferevent_setwatermark(s->bev, EV_READ, 0, s->cap);
    return;
  }
  if (s->in != NULL && evbuffer_get_length(s->in) == 0) {
    evbuffer_free(s->in);                  /* all taken: give the buffer back */
    s->in = NULL;
  }
  update_read(s);
}

void sh_stream_set_lowat (sh_stream *s, size_t lowat) {
  s->lowat = lowat;
  if (s->bev != NULL) bufferevent_setwatermark(s->bev, EV_WRITE, lowat, 0);
}

/* Mark the stream ended by 'err' (0: orderly end of input). */
static void set_eof (sh_stream *s, int err) {
  s->eof = 1;
  if (err != 0 && s->err == 0) s->err = err;
  update_read(s);
}

/* Read one chunk into 'in'. Returns bytes read, 0 at end, -1 on EAGAIN or
** error (errno set). */
static ssize_t read_chunk (sh_stream *s) {
  struct evbuffer_iovec vec[2];
  struct iovec iov[2];
  int i, nvec;
  if (s->in == NULL && (s->in = evbuffer_new()) == NULL) { errno = ENOMEM; return -1; }
  nvec = evbuffer_reserve_space(s->in, READ_CHUNK, vec, 2);
  ssize_t n;
  size_t left;
  if (nvec < 0) { errno = ENOMEM; return -1; }
  for (i = 0; i < nvec; i++) { iov[i].iov_base = vec[i].iov_base; iov[i].iov_len = vec[i].iov_len; }
  do n = readv(s->fd, iov, nvec); while (n < 0 && errno == EINTR);
  left = n > 0 ? (size_t)n : 0;
  for (i = 0; i < nvec; i++) {
    if (vec[i].iov_len > left) vec[i].iov_len = left;
    left -= vec[i].iov_len;
  }
  evbuffer_commit_space(s->in, vec, nvec);
  return n;
}

static void finish_close(sh_stream *s);

static void on_read (evutil_socket_t fd, short what, void *arg) {
  sh_stream *s = arg;
  (void)fd; (void)what;
  if (!s->eof) {
    ssize_t n = read_chunk(s);
    if (n > 0 && s->limited) s->last_active = sh_now_coarse();
    if (n == 0) set_eof(s, 0);
    else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) set_eof(s, errno);
    else if (n < 0) return;                  /* spurious wake-up */
  }
  if (s->closing) {                          /* discarding until the peer's FIN */
    if (s->in != NULL) evbuffer_drain(s->in, evbuffer_get_length(s->in));
    if (s->eof) finish_close(s);
    return;
  }
  update_read(s);
  notify(s, SH_STREAM_READ);
}

/* ====================== Writing ====================== */

static void fail (sh_stream *s, int err) {
  if (s->err == 0) s->err = err;
  if (s->out != NULL) evbuffer_drain(s->out, evbuffer_get_length(s->out));
  if (s->writing) { event_del(s->wev); s->writing = 0; }
  if (!s->eof) set_eof(s, err);
  /* Tell the owner from the loop, also when the input had already ended (a
  ** peer that sent its FIN, then reset while a writer waited): no other
  ** event would ever wake that writer. */
  event_active(&s->rev, EV_READ, 0);
}

static void update_write (sh_stream *s) {
  int want = outlen(s) > 0;
  if (want && !s->writing) {
    if (s->wev == NULL)
      s->wev = event_new(sh_loop_base(s->loop), s->fd, EV_WRITE | EV_PERSIST, on_write, s);
    if (s->wev != NULL && event_add(s->wev, NULL) == 0) s->writing = 1;
    else fail(s, ENOMEM);
  } else if (!want && s->writing) {
    event_del(s->wev);
    s->writing = 0;
  }
}

static void do_shutdown (sh_stream *s) {
  s->shut_pending = 0;
  if (s->shut_done) return;
  s->shut_done = 1;
  if (s->bev != NULL) {
    if (s->on_shut != NULL) s->on_shut(s->bev);
    if (s->fd < 0) { bufferevent_flush(s->bev, EV_WRITE, BEV_FINISHED); return; }
  }
  shutdown(s->fd, SHUT_WR);
}

/* Send from the output queue. Returns -1 after a failure. */
static int flush_out (sh_stream *s) {
  struct evbuffer_iovec vec[WRITE_IOV];
  struct iovec iov[WRITE_IOV];
  struct msghdr msg;
  int i, n = evbuffer_peek(s->out, -1, NULL, vec, WRITE_IOV);
  ssize_t w;
  if (n > WRITE_IOV) n = WRITE_IOV;
  for (i = 0; i < n; i++) { iov[i].iov_base = vec[i].iov_base; iov[i].iov_len = vec[i].iov_len; }
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = (size_t)n;
  do w = sendmsg(s->fd, &msg, MSG_NOSIGNAL); while (w < 0 && errno == EINTR);
  if (w < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    fail(s, errno);
    return -1;
  }
  evbuffer_drain(s->out, (size_t)w);
  if (w > 0 && s->limited) s->last_active = sh_now_coarse();
  return 0;
}

static void on_write (evutil_socket_t fd, short what, void *arg) {
  sh_stream *s = arg;
  size_t before = outlen(s), after;
  (void)fd; (void)what;
  if (flush_out(s) < 0) {
    if (s->closing) finish_close(s);
    return;
  }
  after = outlen(s);
  update_write(s);
  if (after == 0 && s->shut_pending) do_shutdown(s);
  if (s->closing) {
    if (after == 0) finish_close(s);
    return;
  }
  if (before > s->lowat && after <= s->lowat) notify(s, SH_STREAM_DRAIN);
}

static ssize_t bev_write(sh_stream *s, const struct iovec *iov, int n, size_t limit);

ssize_t sh_stream_write (sh_stream *s, const struct iovec *iov, int n, size_t limit) {
  size_t taken = 0, sent = 0;
  int i;
  if (s->closing || s->shut_done || s->shut_pending || s->err != 0) {
    errno = s->err != 0 ? s->err : EPIPE;
    return -1;
  }
  if (s->bev != NULL) return bev_write(s, iov, n, limit);
  if (outlen(s) == 0) {                      /* fast path: straight to the kernel */
    struct msghdr msg;
    ssize_t w;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = (struct iovec *)iov;
    msg.msg_iovlen = (size_t)n;
    do w = sendmsg(s->fd, &msg, MSG_NOSIGNAL); while (w < 0 && errno == EINTR);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      int e = errno;
      fail(s, e);
      errno = e;
      return -1;
    }
    sent = w > 0 ? (size_t)w : 0;
    if (sent > 0 && s->limited) s->last_active = sh_now_coarse();
  }
  taken = sent;
  for (i = 0; i < n; i++) {                 /* queue the rest, up to 'limit' */
    size_t len = iov[i].iov_len, off = 0, room, have = outlen(s);
    if (sent >= len) { sent -= len; continue; }
    off = sent;
    sent = 0;
    room = have < limit ? limit - have : 0;
    if (room == 0) break;
    if (len - off < room) room = len - off;
    if (s->out == NULL && (s->out = evbuffer_new()) == NULL) {
      errno = ENOMEM;
      return -1;
    }
    if (evbuffer_add(s->out, (const char *)iov[i].iov_base + off, room) != 0) {
      errno = ENOMEM;
      return -1;
    }
    taken += room;
    if (off + room < len) break;
  }
  update_write(s);
  return (ssize_t)taken;
}

void sh_stream_shutdown (sh_stream *s) {
  if (s->closing || s->shut_done) return;
  if (outlen(s) == 0) do_shutdown(s);
  else s->shut_pending = 1;
  if (s->shut_pending && s->bev != NULL)      /* be told when the output is out */
    bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
}

/* ====================== Time limits ====================== */

/* No timer per stream: the owner sweeps its streams now and then with
** sh_stream_limit_passed(), which is cheaper in memory for many idle ones. */
void sh_stream_set_limits (sh_stream *s, double idle, double partial) {
  s->idle = idle > 0 ? idle : 0;
  s->partial = partial > 0 ? partial : 0;
  s->limited = s->idle > 0 || s->partial > 0;
  s->last_active = sh_now_coarse();
}

void sh_stream_partial (sh_stream *s, int pending) {
  if (!pending) { s->partial_since = 0; return; }
  if (s->partial_since > 0 || s->partial == 0) return;
  s->partial_since = sh_now_coarse();
}

static int kernel_outq (const sh_stream *s) {
  int n = 0;
  if (s->fd < 0 || ioctl(s->fd, TIOCOUTQ, &n) != 0) n = 0;   /* SIOCOUTQ: bytes not yet acked */
  return n;
}

/* What waits for the peer: the kernel's queue, and for a bufferevent
** stream also its output buffer, which it sends from without telling us
** each time (its write callback comes only at the low-water mark). */
static int queued (const sh_stream *s) {
  int n = kernel_outq(s);
  if (s->bev != NULL) n += (int)(outlen(s) < (1u << 30) ? outlen(s) : (1u << 30));
  return n;
}

/* Idle means no byte moved between us and the kernel, but a slow reader
** may still be draining what the kernel holds for it: that is progress.
** The kernel's queue is sampled once halfway through an idle period and
** compared once at its end (two ioctls at most per period and stream). */
int sh_stream_limit_passed (sh_stream *s, double now) {
  if (s->closing || !s->limited) return 0;
  if (s->moved_fn != NULL) {                     /* progress out of our sight */
    unsigned long long m = s->moved_fn(s->bev);
    if (m != s->moved) { s->moved = m; s->last_active = now; }
  }
  if (s->partial > 0 && s->partial_since > 0 && now >= s->partial_since + s->partial) return 2;
  if (s->idle > 0 && now >= s->last_active + s->idle / 2) {
    if (s->outq_at < s->last_active) {           /* first look in this period */
      s->outq_at = now;
      s->outq = queued(s);
    }
    if (now >= s->last_active + s->idle) {
      int n = queued(s);
      if (n >= s->outq) return 1;
      s->last_active = s->outq_at = now;         /* the peer took some */
      s->outq = n;
    }
  }
  return 0;
}

/* ====================== Closing ====================== */

int sh_stream_fd (const sh_stream *s) { return s->fd; }
void *sh_stream_ctx (const sh_stream *s) { return s->cb != NULL ? s->ctx : NULL; }
struct evbuffer *sh_stream_input (sh_stream *s) {
  if (s->bev != NULL) return bufferevent_get_input(s->bev);
  if (s->in == NULL) s->in = evbuffer_new();   /* NULL only without memory */
  return s->in;
}
size_t sh_stream_inlen (const sh_stream *s) { return inlen(s); }
size_t sh_stream_outlen (const sh_stream *s) { return outlen(s); }
int sh_stream_eof (const sh_stream *s) { return s->eof; }
int sh_stream_error (const sh_stream *s) { return s->err; }

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

/* Output is out (or lost): send our FIN, then read and discard until the
** peer's, so unread input does not turn our close into a reset. */
static void finish_close (sh_stream *s) {
  if (s->holds_ref) { sh_loop_unref(s->loop); s->holds_ref = 0; }
  if (s->eof || s->err != 0) { destroy(s); return; }
  do_shutdown(s);
  if (s->bev != NULL) {                     /* discard without a cap */
    struct evbuffer *in = bufferevent_get_input(s->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_setwatermark(s->bev, EV_READ, 0, 0);
  }
  if (s->in != NULL) evbuffer_drain(s->in, evbuffer_get_length(s->in));
  update_read(s);
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
  s->item.destroy = destroy_orphan;
  sh_loop_track(s->loop, &s->item);
  s->cb = NULL;
  s->ctx = NULL;
  s->shut_pending = 0;
  update_read(s);
  if (outlen(s) == 0 || s->err != 0) {
    finish_close(s);
    return;
  }
  s->holds_ref = 1;                         /* delivering keeps us alive */
  sh_loop_ref(s->loop);
  if (s->bev != NULL) bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);   /* told when out */
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

/* ====================== Handing the socket on ====================== */

/* The stream forgets the socket without closing it; what it had buffered
** either way is dropped. For a protocol that switches layers in place
** (STARTTLS). */
int sh_stream_detach (sh_stream *s) {
  int fd = s->fd;
  if (s->bev != NULL) return -1;
  event_del(&s->rev);
  s->reading = 0;
  if (s->writing) { event_del(s->wev); s->writing = 0; }
  s->detached = 1;
  s->cb = NULL;
  s->ctx = NULL;
  destroy(s);                               /* after the callback, if inside it */
  return fd;
}

/* ====================== The bufferevent backend ====================== */

/* Bytes arrived (the bufferevent read them; its high watermark is the cap). */
static void bev_on_read (struct bufferevent *bev, void *arg) {
  sh_stream *s = arg;
  if (s->limited) s->last_active = sh_now_coarse();
  if (s->closing) {                          /* discarding until the peer's end */
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    return;
  }
  notify(s, SH_STREAM_READ);
}

/* Output fell to the write low watermark. */
static void bev_on_write (struct bufferevent *bev, void *arg) {
  sh_stream *s = arg;
  size_t after = outlen(s);
  (void)bev;
  if (s->limited) s->last_active = sh_now_coarse();
  if (after == 0 && s->shut_pending) do_shutdown(s);
  if (s->closing) {
    if (after == 0) finish_close(s);
    return;
  }
  if (after <= s->lowat) notify(s, SH_STREAM_DRAIN);
}

static void bev_on_event (struct bufferevent *bev, short what, void *arg) {
  sh_stream *s = arg;
  int err = 0;
  (void)bev;
  if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) return;
  if (what & BEV_EVENT_ERROR) {
    err = EVUTIL_SOCKET_ERROR();
    if (err == 0 || err == EAGAIN) err = ECONNRESET;   /* a TLS-level failure */
    if (s->err == 0) s->err = err;
    if (outlen(s) > 0) evbuffer_drain(bufferevent_get_output(s->bev), outlen(s));
  }
  s->eof = 1;
  update_read(s);
  if (s->closing) { finish_close(s); return; }
  notify(s, SH_STREAM_READ);
}

sh_stream *sh_stream_new_bev (sh_loop *loop, struct bufferevent *bev, sh_stream_fn cb,
                              void *ctx) {
  sh_stream *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->loop = loop;
  s->bev = bev;
  s->fd = (int)bufferevent_getfd(bev);
  s->cb = cb;
  s->ctx = ctx;
  s->cap = 65536;
  bufferevent_setcb(bev, bev_on_read, bev_on_write, bev_on_event, s);
  bufferevent_setwatermark(bev, EV_READ, 0, s->cap);
  bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
  if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
    bufferevent_trigger(bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
  return s;
}

struct bufferevent *sh_stream_bev (const sh_stream *s) { return s->bev; }

void sh_stream_set_shutdown_hook (sh_stream *s, sh_stream_hook_fn fn) { s->on_shut = fn; }

void sh_stream_set_counter (sh_stream *s, sh_stream_count_fn fn) {
  s->moved_fn = fn;
  if (fn != NULL) s->moved = fn(s->bev);
}

/* Queue up to 'limit' bytes in all: the bufferevent writes them itself. */
static ssize_t bev_write (sh_stream *s, const struct iovec *iov, int n, size_t limit) {
  struct evbuffer *out = bufferevent_get_output(s->bev);
  size_t have = evbuffer_get_length(out), room = have < limit ? limit - have : 0, taken = 0;
  int i;
  for (i = 0; i < n && room > 0; i++) {
    size_t len = iov[i].iov_len < room ? iov[i].iov_len : room;
    if (evbuffer_add(out, iov[i].iov_base, len) != 0) {
      if (taken > 0) break;
      errno = ENOMEM;
      return -1;
    }
    taken += len;
    room -= len;
  }
  return (ssize_t)taken;
}
