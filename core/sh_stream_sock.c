/* sh_stream_sock.c -- the socket transport of sh_stream: the stream reads
** and writes its socket itself (the fast path, benchmarked).
**
** Writes go to the kernel at once; only what the kernel refuses is queued,
** and only then is the write event armed. Reads are eager while the input
** is below its cap. Buffers are made on first use and the input buffer is
** given back when the owner has taken it all: an idle connection holds no
** buffers at all. */
#include "sh_transport.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK 16384   /* bytes asked of the kernel per read */
#define WRITE_IOV 16       /* buffers per sendmsg() from the output queue */

static size_t sock_inlen (const sh_stream *s) {
  return s->u.sock.in != NULL ? evbuffer_get_length(s->u.sock.in) : 0;
}

static size_t sock_outlen (const sh_stream *s) {
  return s->u.sock.out != NULL ? evbuffer_get_length(s->u.sock.out) : 0;
}

static struct evbuffer *sock_input (sh_stream *s, int make) {
  if (s->u.sock.in == NULL && make) s->u.sock.in = evbuffer_new();
  return s->u.sock.in;
}

/* ====================== Reading ====================== */

static void sock_update_read (sh_stream *s) {
  int want = !s->eof && sock_inlen(s) < s->cap;
  if (s->closing) want = !s->eof && s->shut_done;   /* discard until FIN */
  if (want && !s->u.sock.reading) {
    if (event_add(&s->u.sock.rev, NULL) == 0) s->u.sock.reading = 1;
  } else if (!want && s->u.sock.reading) {
    event_del(&s->u.sock.rev);
    s->u.sock.reading = 0;
  }
}

static void sock_set_cap (sh_stream *s) {
  if (s->u.sock.in != NULL && evbuffer_get_length(s->u.sock.in) == 0) {
    evbuffer_free(s->u.sock.in);             /* all taken: give the buffer back */
    s->u.sock.in = NULL;
  }
  sock_update_read(s);
}

static void sock_set_lowat (sh_stream *s) { (void)s; }

/* Read one chunk into the input. Returns bytes read, 0 at end, -1 on
** EAGAIN or error (errno set). */
static ssize_t read_chunk (sh_stream *s) {
  struct evbuffer_iovec vec[2];
  struct iovec iov[2];
  struct evbuffer *in = sock_input(s, 1);
  int i, nvec;
  ssize_t n;
  size_t left;
  if (in == NULL) { errno = ENOMEM; return -1; }
  nvec = evbuffer_reserve_space(in, READ_CHUNK, vec, 2);
  if (nvec < 0) { errno = ENOMEM; return -1; }
  for (i = 0; i < nvec; i++) { iov[i].iov_base = vec[i].iov_base; iov[i].iov_len = vec[i].iov_len; }
  if (nvec == 1)                  /* the usual case: read(2) costs less than readv(2) */
    do n = read(s->fd, iov[0].iov_base, iov[0].iov_len); while (n < 0 && errno == EINTR);
  else
    do n = readv(s->fd, iov, nvec); while (n < 0 && errno == EINTR);
  left = n > 0 ? (size_t)n : 0;
  for (i = 0; i < nvec; i++) {
    if (vec[i].iov_len > left) vec[i].iov_len = left;
    left -= vec[i].iov_len;
  }
  evbuffer_commit_space(in, vec, nvec);
  return n;
}

static void on_read (evutil_socket_t fd, short what, void *arg) {
  sh_stream *s = arg;
  (void)fd; (void)what;
  if (!s->eof) {
    ssize_t n = read_chunk(s);
    if (n > 0) sh_transport_touch(s);
    if (n == 0) sh_transport_eof(s, 0);
    else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) sh_transport_eof(s, errno);
    else if (n < 0) return;                  /* spurious wake-up */
  }
  if (s->closing) {                          /* discarding until the peer's FIN */
    if (s->u.sock.in != NULL) evbuffer_drain(s->u.sock.in, sock_inlen(s));
    if (s->eof) sh_transport_finish_close(s);
    return;
  }
  sock_update_read(s);
  if (sh_transport_arrived(s)) sh_transport_notify(s, SH_STREAM_READ);
}

static void sock_discard_input (sh_stream *s) {
  if (s->u.sock.in != NULL) evbuffer_drain(s->u.sock.in, sock_inlen(s));
}

/* ====================== Writing ====================== */

static void on_write(evutil_socket_t fd, short what, void *arg);

static void fail (sh_stream *s, int err) {
  if (s->err == 0) s->err = err;
  if (s->u.sock.out != NULL) evbuffer_drain(s->u.sock.out, sock_outlen(s));
  if (s->u.sock.writing) { event_del(s->u.sock.wev); s->u.sock.writing = 0; }
  if (!s->eof) sh_transport_eof(s, err);
  /* Tell the owner from the loop, also when the input had already ended (a
  ** peer that sent its FIN, then reset while a writer waited): no other
  ** event would ever wake that writer. */
  event_active(&s->u.sock.rev, EV_READ, 0);
}

static void update_write (sh_stream *s) {
  int want = sock_outlen(s) > 0;
  if (want && !s->u.sock.writing) {
    if (s->u.sock.wev == NULL)
      s->u.sock.wev = event_new(sh_loop_base(s->loop), s->fd, EV_WRITE | EV_PERSIST, on_write, s);
    if (s->u.sock.wev != NULL && event_add(s->u.sock.wev, NULL) == 0) s->u.sock.writing = 1;
    else fail(s, ENOMEM);
  } else if (!want && s->u.sock.writing) {
    event_del(s->u.sock.wev);
    s->u.sock.writing = 0;
  }
}

/* Send from the output queue. Returns -1 after a failure. */
static int flush_out (sh_stream *s) {
  struct evbuffer_iovec vec[WRITE_IOV];
  struct iovec iov[WRITE_IOV];
  struct msghdr msg;
  int i, n = evbuffer_peek(s->u.sock.out, -1, NULL, vec, WRITE_IOV);
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
  evbuffer_drain(s->u.sock.out, (size_t)w);
  if (w > 0) sh_transport_touch(s);
  return 0;
}

static void on_write (evutil_socket_t fd, short what, void *arg) {
  sh_stream *s = arg;
  size_t before = sock_outlen(s), after;
  (void)fd; (void)what;
  if (flush_out(s) < 0) {
    if (s->closing) sh_transport_finish_close(s);
    return;
  }
  after = sock_outlen(s);
  update_write(s);
  sh_transport_sent(s, before, after);
}

/* Straight to the kernel when nothing is queued. Returns bytes sent, or
** -1 after a failure (errno set). */
static ssize_t send_now (sh_stream *s, const struct iovec *iov, int n) {
  struct msghdr msg;
  ssize_t w;
  if (n == 1) {                   /* one buffer: send(2) costs less than sendmsg(2) */
    do w = send(s->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL); while (w < 0 && errno == EINTR);
  } else {
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = (struct iovec *)iov;
    msg.msg_iovlen = (size_t)n;
    do w = sendmsg(s->fd, &msg, MSG_NOSIGNAL); while (w < 0 && errno == EINTR);
  }
  if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    int e = errno;
    fail(s, e);
    errno = e;
    return -1;
  }
  if (w > 0) sh_transport_touch(s);
  return w > 0 ? w : 0;
}

static ssize_t sock_write (sh_stream *s, const struct iovec *iov, int n, size_t limit) {
  size_t taken, sent = 0;
  int i;
  if (sock_outlen(s) == 0) {                /* fast path: straight to the kernel */
    ssize_t w = send_now(s, iov, n);
    if (w < 0) return -1;
    sent = (size_t)w;
  }
  taken = sent;
  for (i = 0; i < n; i++) {                 /* queue the rest, up to 'limit' */
    size_t len = iov[i].iov_len, off = 0, room, have = sock_outlen(s);
    if (sent >= len) { sent -= len; continue; }
    off = sent;
    sent = 0;
    room = have < limit ? limit - have : 0;
    if (room == 0) break;
    if (len - off < room) room = len - off;
    if (s->u.sock.out == NULL && (s->u.sock.out = evbuffer_new()) == NULL) {
      errno = ENOMEM;
      return -1;
    }
    if (evbuffer_add(s->u.sock.out, (const char *)iov[i].iov_base + off, room) != 0) {
      errno = ENOMEM;
      return -1;
    }
    taken += room;
    if (off + room < len) break;
  }
  update_write(s);
  return (ssize_t)taken;
}

/* The write event reports each send: nothing more to ask for. */
static void sock_want_empty (sh_stream *s) { (void)s; }

static void sock_half_close (sh_stream *s) { shutdown(s->fd, SHUT_WR); }

static size_t sock_unsent (const sh_stream *s) { (void)s; return 0; }

/* ====================== Lifetime ====================== */

static int sock_detach (sh_stream *s) {
  event_del(&s->u.sock.rev);
  s->u.sock.reading = 0;
  if (s->u.sock.writing) { event_del(s->u.sock.wev); s->u.sock.writing = 0; }
  s->u.sock.detached = 1;
  return s->fd;
}

static void sock_destroy (sh_stream *s) {
  event_del(&s->u.sock.rev);
  if (s->u.sock.wev) event_free(s->u.sock.wev);
  if (!s->u.sock.detached) close(s->fd);
  if (s->u.sock.in != NULL) evbuffer_free(s->u.sock.in);
  if (s->u.sock.out != NULL) evbuffer_free(s->u.sock.out);
}

static const char *sock_name (const sh_stream *s) { (void)s; return "socket"; }

static const sh_transport sock_ops = {
  sock_name, sock_inlen, sock_outlen, sock_input, sock_update_read, sock_set_cap,
  sock_set_lowat, sock_write, sock_want_empty, sock_half_close, sock_discard_input,
  sock_unsent, NULL, sock_detach, sock_destroy
};

sh_stream *sh_stream_new (sh_loop *loop, int fd, sh_stream_fn cb, void *ctx) {
  sh_stream *s = sh_transport_new(loop, &sock_ops, fd, cb, ctx);
  if (s == NULL) return NULL;
  if (event_assign(&s->u.sock.rev, sh_loop_base(loop), fd, EV_READ | EV_PERSIST, on_read, s) != 0) {
    sh_transport_discard(s);
    return NULL;
  }
  sock_update_read(s);
  return s;
}
