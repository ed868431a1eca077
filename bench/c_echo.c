/* c_echo.c -- the plain-C libevent baseline of `make bench`: the fast kind.
**
**   c_echo echo|line|udp|none PORT [HOST]
**
** echo  evconnlistener; per connection one raw `struct event` on the fd. Its
**       read callback read()s into a stack buffer and write()s the bytes
**       straight back. Only when the kernel pushes back does it keep the
**       rest and wait for EV_WRITE (reading stops meanwhile: backpressure).
** line  the same, echoing complete lines only, one write() per line; a
**       partial line waits in a per-connection buffer.
** udp   recvfrom()/sendto() in the read callback until EAGAIN.
** none  set up the event base and exit (the start-up reference).
**
** No bufferevents: they defer each write to the next loop iteration.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>   /* struct event embedded per client */
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { M_ECHO, M_LINE };

struct client {
  struct event ev;       /* EV_READ, or EV_WRITE while output is pending */
  int fd;
  char *out;             /* pending output (only after a push-back) */
  size_t outlen, outoff;
  char *in;              /* line mode: a partial line */
  size_t inlen, incap;
};

static struct event_base *base;
static int mode = M_ECHO;

static void on_read (evutil_socket_t fd, short what, void *arg);
static void on_write (evutil_socket_t fd, short what, void *arg);

static void client_free (struct client *c) {
  event_del(&c->ev);
  close(c->fd);
  free(c->out);
  free(c->in);
  free(c);
}

static void switch_to (struct client *c, int writing) {
  event_del(&c->ev);
  event_assign(&c->ev, base, c->fd, (writing ? EV_WRITE : EV_READ) | EV_PERSIST,
               writing ? on_write : on_read, c);
  event_add(&c->ev, NULL);
}

/* Keep data[0..len) for later and wait until the socket is writable. */
static void defer (struct client *c, const char *data, size_t len) {
  char *p = malloc(len);
  if (!p) { client_free(c); return; }
  memcpy(p, data, len);
  free(c->out);
  c->out = p;
  c->outlen = len;
  c->outoff = 0;
  switch_to(c, 1);
}

/* Write at once; returns 0 when all went out, 1 when the rest was deferred,
** -1 when the connection is gone (freed). */
static int send_now (struct client *c, const char *data, size_t len) {
  while (len > 0) {
    ssize_t w = write(c->fd, data, len);
    if (w > 0) { data += w; len -= (size_t)w; continue; }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) { defer(c, data, len); return 1; }
    client_free(c);
    return -1;
  }
  return 0;
}

static int keep_partial (struct client *c, const char *p, size_t n) {
  if (c->inlen + n > c->incap) {
    size_t cap = c->incap ? c->incap : 128;
    char *q;
    while (cap < c->inlen + n) cap *= 2;
    q = realloc(c->in, cap);
    if (!q) return -1;
    c->in = q;
    c->incap = cap;
  }
  memcpy(c->in + c->inlen, p, n);
  c->inlen += n;
  return 0;
}

static int append_out (struct client *c, const char *p, size_t n) {
  char *q = realloc(c->out, c->outlen + n);
  if (!q) return -1;
  memcpy(q + c->outlen, p, n);
  c->out = q;
  c->outlen += n;
  return 0;
}

/* Line echo: one write per complete line. If the kernel pushes back, the
** rest of the complete lines joins the deferred output (the same bytes go
** out in the same order); a trailing partial line waits in c->in. */
static void lines (struct client *c, const char *buf, size_t n) {
  const char *p = buf, *end = buf + n, *nl;
  int r;
  if (c->inlen > 0) {                       /* finish the partial line first */
    size_t len;
    nl = memchr(p, '\n', n);
    if (!nl) { if (keep_partial(c, p, n) != 0) client_free(c); return; }
    if (keep_partial(c, p, (size_t)(nl + 1 - p)) != 0) { client_free(c); return; }
    p = nl + 1;
    len = c->inlen;
    c->inlen = 0;
    r = send_now(c, c->in, len);
    if (r < 0) return;
    if (r > 0) goto pushed_back;
  }
  while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
    r = send_now(c, p, (size_t)(nl + 1 - p));
    p = nl + 1;
    if (r < 0) return;
    if (r > 0) goto pushed_back;
  }
  if (p < end && keep_partial(c, p, (size_t)(end - p)) != 0) client_free(c);
  return;
pushed_back:
  nl = p < end ? memrchr(p, '\n', (size_t)(end - p)) : NULL;
  if (nl) {
    if (append_out(c, p, (size_t)(nl + 1 - p)) != 0) { client_free(c); return; }
    p = nl + 1;
  }
  if (p < end && keep_partial(c, p, (size_t)(end - p)) != 0) client_free(c);
}

static void on_read (evutil_socket_t fd, short what, void *arg) {
  struct client *c = arg;
  char buf[65536];
  ssize_t n;
  (void)what;
  n = read(fd, buf, sizeof buf);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    client_free(c);
    return;
  }
  if (mode == M_ECHO) { send_now(c, buf, (size_t)n); return; }
  lines(c, buf, (size_t)n);
}

static void on_write (evutil_socket_t fd, short what, void *arg) {
  struct client *c = arg;
  (void)what;
  while (c->outoff < c->outlen) {
    ssize_t w = write(fd, c->out + c->outoff, c->outlen - c->outoff);
    if (w > 0) { c->outoff += (size_t)w; continue; }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    client_free(c);
    return;
  }
  free(c->out);
  c->out = NULL;
  c->outlen = c->outoff = 0;
  switch_to(c, 0);
}

static void on_accept (struct evconnlistener *lev, evutil_socket_t fd,
                       struct sockaddr *sa, int len, void *arg) {
  struct client *c = calloc(1, sizeof *c);
  int one = 1;
  (void)lev; (void)sa; (void)len; (void)arg;
  if (!c) { close(fd); return; }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->fd = fd;
  event_assign(&c->ev, base, fd, EV_READ | EV_PERSIST, on_read, c);
  event_add(&c->ev, NULL);
}

static void on_dgram (evutil_socket_t fd, short what, void *arg) {
  char buf[65536];
  (void)what; (void)arg;
  for (;;) {
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    if (n < 0) return;                      /* EAGAIN (or an error: next time) */
    sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
  }
}

int main (int argc, char **argv) {
  struct sockaddr_in sin;
  const char *m;
  if (argc < 2) {
    fprintf(stderr, "usage: c_echo echo|line|udp|none PORT [HOST]\n");
    return 2;
  }
  m = argv[1];
  base = event_base_new();
  if (!base) return 1;
  if (strcmp(m, "none") == 0) { event_base_free(base); return 0; }
  if (argc < 3) return 2;
  signal(SIGPIPE, SIG_IGN);
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((unsigned short)atoi(argv[2]));
  inet_pton(AF_INET, argc > 3 ? argv[3] : "127.0.0.1", &sin.sin_addr);
  if (strcmp(m, "udp") == 0) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct event *ev;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0) { perror("c_echo: udp"); return 1; }
    ev = event_new(base, fd, EV_READ | EV_PERSIST, on_dgram, NULL);
    event_add(ev, NULL);
  } else {
    struct evconnlistener *lev;
    if (strcmp(m, "line") == 0) mode = M_LINE;
    else if (strcmp(m, "echo") != 0) { fprintf(stderr, "c_echo: bad mode %s\n", m); return 2; }
    lev = evconnlistener_new_bind(base, on_accept, NULL,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
                                  (struct sockaddr *)&sin, sizeof sin);
    if (!lev) { perror("c_echo: listen"); return 1; }
  }
  event_base_dispatch(base);
  return 0;
}
