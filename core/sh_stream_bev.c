/* sh_stream_bev.c -- the bufferevent transport of sh_stream: a libevent
** bufferevent does the I/O (TLS streams, with the hooks of core/sh_tls.c);
** the stream keeps the interface and its semantics.
**
** The bufferevent's read high-water mark applies the input cap; its write
** low-water mark is the stream's, lowered to 0 when a shutdown or close
** waits for the output to be out. Writes queue up to the limit in all:
** nothing goes to the kernel at once. */
#include "sh_transport.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdint.h>
#include <sys/socket.h>

static const sh_bev_hooks plain_hooks = {"bufferevent", NULL, NULL};

static size_t bev_inlen (const sh_stream *s) {
  return evbuffer_get_length(bufferevent_get_input(s->u.bev.bev));
}

static size_t bev_outlen (const sh_stream *s) {
  return evbuffer_get_length(bufferevent_get_output(s->u.bev.bev));
}

static struct evbuffer *bev_input (sh_stream *s, int make) {
  (void)make;
  return bufferevent_get_input(s->u.bev.bev);
}

/* ====================== Reading ====================== */

/* The read watermark applies the cap: only the end of input stops reading
** (and, closing, only until our side is half-closed). */
static void bev_update_read (sh_stream *s) {
  int want = !s->eof;
  if (s->closing) want = !s->eof && s->shut_done;
  if (want) bufferevent_enable(s->u.bev.bev, EV_READ);
  else bufferevent_disable(s->u.bev.bev, EV_READ);
}

static void bev_set_cap (sh_stream *s) {
  if (!s->closing) bufferevent_setwatermark(s->u.bev.bev, EV_READ, 0, s->cap);
}

static void bev_set_lowat (sh_stream *s) {
  bufferevent_setwatermark(s->u.bev.bev, EV_WRITE, s->lowat, 0);
}

/* Bytes arrived. */
static void bev_on_read (struct bufferevent *bev, void *arg) {
  sh_stream *s = arg;
  sh_transport_touch(s);
  if (s->closing) {                          /* discarding until the peer's end */
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    return;
  }
  if (sh_transport_arrived(s)) sh_transport_notify(s, SH_STREAM_READ);
}

/* Closing: discard without a cap. */
static void bev_discard_input (sh_stream *s) {
  struct evbuffer *in = bufferevent_get_input(s->u.bev.bev);
  evbuffer_drain(in, evbuffer_get_length(in));
  bufferevent_setwatermark(s->u.bev.bev, EV_READ, 0, 0);
}

/* ====================== Writing ====================== */

/* Output fell to the write low watermark. */
static void bev_on_write (struct bufferevent *bev, void *arg) {
  sh_stream *s = arg;
  (void)bev;
  sh_transport_touch(s);
  sh_transport_sent(s, SIZE_MAX, bev_outlen(s));
}

/* A failure: the output can never go out now. As a reset is on a socket. */
static void bev_fail (sh_stream *s) {
  int err = EVUTIL_SOCKET_ERROR();
  if (err == 0 || err == EAGAIN) err = ECONNRESET;   /* a TLS-level failure */
  if (s->err == 0) s->err = err;
  if (bev_outlen(s) > 0) evbuffer_drain(bufferevent_get_output(s->u.bev.bev), bev_outlen(s));
}

/* The end of the stream: the peer's (EOF) or a failure (ERROR); libevent
** stops both directions on either. A failure, or an end met while writing,
** is an error: the output is dropped and the owner told at once, closing
** or not, so that nothing waits for bytes that cannot go out. After the
** peer's orderly end our output may still go out (a half-close): writing
** starts again. */
static void bev_on_event (struct bufferevent *bev, short what, void *arg) {
  sh_stream *s = arg;
  if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) return;
  if (what & (BEV_EVENT_ERROR | BEV_EVENT_WRITING)) bev_fail(s);
  else if (bev_outlen(s) > 0) bufferevent_enable(bev, EV_WRITE);
  sh_transport_eof(s, 0);
  if (s->closing) { sh_transport_finish_close(s); return; }
  sh_transport_notify(s, SH_STREAM_READ);
}

/* Queue up to 'limit' bytes in all: the bufferevent writes them itself. */
static ssize_t bev_write (sh_stream *s, const struct iovec *iov, int n, size_t limit) {
  struct evbuffer *out = bufferevent_get_output(s->u.bev.bev);
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

static void bev_want_empty (sh_stream *s) {
  bufferevent_setwatermark(s->u.bev.bev, EV_WRITE, 0, 0);
}

/* The transport's own end first (TLS: close_notify), then the socket's FIN
** (or, without a socket, the bufferevent's end of stream). */
static void bev_half_close (sh_stream *s) {
  if (s->u.bev.hooks->on_shut != NULL) s->u.bev.hooks->on_shut(s->u.bev.bev);
  if (s->fd < 0) bufferevent_flush(s->u.bev.bev, EV_WRITE, BEV_FINISHED);
  else shutdown(s->fd, SHUT_WR);
}

/* Its output buffer: it sends from it without telling us each time (its
** write callback comes only at the low-water mark). */
static size_t bev_unsent (const sh_stream *s) { return bev_outlen(s); }

static int bev_moved (sh_stream *s) {
  unsigned long long m;
  if (s->u.bev.hooks->moved == NULL) return 0;
  m = s->u.bev.hooks->moved(s->u.bev.bev);
  if (m == s->u.bev.moved) return 0;
  s->u.bev.moved = m;
  return 1;
}

/* ====================== Lifetime ====================== */

static void bev_destroy (sh_stream *s) {
  bufferevent_free(s->u.bev.bev);           /* it owns the fd (BEV_OPT_CLOSE_ON_FREE) */
}

static const char *bev_name (const sh_stream *s) { return s->u.bev.hooks->name; }

static const sh_transport bev_ops = {
  bev_name, bev_inlen, bev_outlen, bev_input, bev_update_read, bev_set_cap,
  bev_set_lowat, bev_write, bev_want_empty, bev_half_close, bev_discard_input,
  bev_unsent, bev_moved, NULL, bev_destroy
};

sh_stream *sh_stream_new_bev (sh_loop *loop, struct bufferevent *bev, const sh_bev_hooks *hooks,
                              sh_stream_fn cb, void *ctx) {
  sh_stream *s;
  if (hooks == NULL) hooks = &plain_hooks;
  s = sh_transport_new(loop, &bev_ops, (int)bufferevent_getfd(bev), cb, ctx);
  if (s == NULL) return NULL;
  s->u.bev.bev = bev;
  s->u.bev.hooks = hooks;
  if (hooks->moved != NULL) s->u.bev.moved = hooks->moved(bev);
  bufferevent_setcb(bev, bev_on_read, bev_on_write, bev_on_event, s);
  bufferevent_setwatermark(bev, EV_READ, 0, s->cap);
  bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
  if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
    bufferevent_trigger(bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
  return s;
}

struct bufferevent *sh_stream_bev (const sh_stream *s) {
  return s->ops->destroy == bev_destroy ? s->u.bev.bev : NULL;
}
