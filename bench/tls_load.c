/* tls_load.c -- the TLS load generator of `make bench`: one thread on plain
** epoll and non-blocking OpenSSL, meant to run pinned to its own core (as
** bench/loadgen, which has no TLS).
**
**   tls_load -m echo|hs -p port [-H host] [-c conns] [-s size] [-d secs] [-w warmup]
**
** echo  C connections, each handshaking once, then ping-ponging S-byte
**       messages: send one, wait for the whole echo, send the next
** hs    C concurrent slots: connect, full handshake (no session
**       resumption), one 64-byte echo, close; again
**
** The client does not check the server's certificate (the load is on the
** server; verifying costs the client only). Every replied byte is checked.
** Only exchanges completed after the warm-up count. Output, one line:
**   loadgen mode=M conns=C size=S duration=D count=N rate=R errors=E bad=B total=T
** (T: all the exchanges completed, the warm-up's too)
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { S_CONNECTING, S_HANDSHAKE, S_SENDING, S_READING };

typedef struct conn {
  int fd;
  SSL *ssl;
  int state;
  size_t off;            /* bytes sent, or received, of the current message */
} conn;

static const char *host = "127.0.0.1";
static int port, nconns = 50, hs_mode;
static size_t size = 64;
static double duration = 3.0, warmup = 0.5;
static SSL_CTX *ctx;
static int ep;
static unsigned char *msg, *rbuf;
static unsigned long long count, total, errors, bad;   /* total: with the warm-up's */
static double t_start, t_count;     /* counting from t_count */

static double now (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void conn_open (conn *c);

static void conn_close (conn *c) {
  if (c->ssl != NULL) SSL_free(c->ssl);
  if (c->fd >= 0) close(c->fd);        /* also leaves the epoll set */
  c->ssl = NULL;
  c->fd = -1;
}

static void fail (conn *c) {
  errors++;
  ERR_clear_error();
  conn_close(c);
  conn_open(c);
}

static void conn_open (conn *c) {
  struct sockaddr_in sin;
  struct epoll_event ev;
  int one = 1;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((unsigned short)port);
  inet_pton(AF_INET, host, &sin.sin_addr);
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) { perror("socket"); exit(1); }
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->state = S_CONNECTING;
  c->off = 0;
  if (connect(c->fd, (struct sockaddr *)&sin, sizeof sin) != 0 && errno != EINPROGRESS) {
    errors++;
    close(c->fd);
    c->fd = -1;
    return;                                /* retried by the main loop */
  }
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
  ev.data.ptr = c;
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* A message completed. */
static void done_one (conn *c) {
  total++;
  if (now() >= t_count) count++;
  if (hs_mode) {
    conn_close(c);
    conn_open(c);
    return;
  }
  c->state = S_SENDING;
  c->off = 0;
}

/* Move the connection on until it would block. */
static void drive (conn *c) {
  for (;;) {
    int r, e;
    switch (c->state) {
      case S_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err == EINPROGRESS || err == EALREADY) return;
        if (err != 0) { fail(c); return; }
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_connect_state(c->ssl);
        c->state = S_HANDSHAKE;
        break;
      }
      case S_HANDSHAKE:
        r = SSL_do_handshake(c->ssl);
        if (r == 1) { c->state = S_SENDING; c->off = 0; break; }
        e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
        fail(c);
        return;
      case S_SENDING:
        r = SSL_write(c->ssl, msg + c->off, (int)(size - c->off));
        if (r > 0) {
          c->off += (size_t)r;
          if (c->off == size) { c->state = S_READING; c->off = 0; }
          break;
        }
        e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
        fail(c);
        return;
      case S_READING:
        r = SSL_read(c->ssl, rbuf + c->off, (int)(size - c->off));
        if (r > 0) {
          if (memcmp(rbuf + c->off, msg + c->off, (size_t)r) != 0) bad++;
          c->off += (size_t)r;
          if (c->off == size) {
            done_one(c);
            if (c->fd < 0) return;
            if (hs_mode) return;             /* a new connection: wait for it */
          }
          break;
        }
        e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
        fail(c);
        return;
    }
  }
}

int main (int argc, char **argv) {
  struct epoll_event evs[256];
  conn *conns;
  double end, elapsed;
  int o, i;
  while ((o = getopt(argc, argv, "m:H:p:c:s:d:w:")) != -1) {
    switch (o) {
      case 'm': hs_mode = strcmp(optarg, "hs") == 0; break;
      case 'H': host = optarg; break;
      case 'p': port = atoi(optarg); break;
      case 'c': nconns = atoi(optarg); break;
      case 's': size = (size_t)atol(optarg); break;
      case 'd': duration = atof(optarg); break;
      case 'w': warmup = atof(optarg); break;
      default:
        fprintf(stderr, "usage: tls_load -m echo|hs -p port [-H host] [-c conns] [-s size] "
                        "[-d secs] [-w warmup]\n");
        return 2;
    }
  }
  if (port <= 0 || nconns <= 0 || size == 0) { fprintf(stderr, "tls_load: bad arguments\n"); return 2; }
  if (hs_mode) size = 64;
  signal(SIGPIPE, SIG_IGN);
  ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  msg = malloc(size);
  rbuf = malloc(size);
  for (i = 0; i < (int)size; i++) msg[i] = (unsigned char)('a' + i % 26);
  ep = epoll_create1(0);
  conns = calloc((size_t)nconns, sizeof *conns);
  t_start = now();
  t_count = t_start + warmup;
  end = t_count + duration;
  for (i = 0; i < nconns; i++) { conns[i].fd = -1; conn_open(&conns[i]); drive(&conns[i]); }
  while (now() < end) {
    int n = epoll_wait(ep, evs, 256, 10);
    for (i = 0; i < n; i++) drive((conn *)evs[i].data.ptr);
    for (i = 0; i < nconns; i++)             /* a connect that failed at once */
      if (conns[i].fd < 0) { conn_open(&conns[i]); if (conns[i].fd >= 0) drive(&conns[i]); }
  }
  elapsed = now() - t_count;
  printf("loadgen mode=%s conns=%d size=%zu duration=%.3f count=%llu rate=%.1f errors=%llu bad=%llu total=%llu\n",
         hs_mode ? "tls-hs" : "tls-echo", nconns, size, elapsed, count, count / elapsed, errors, bad,
         total);
  for (i = 0; i < nconns; i++) conn_close(&conns[i]);
  free(conns);
  SSL_CTX_free(ctx);
  return 0;
}
