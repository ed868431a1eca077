/* ws_load.c -- the WebSocket load generator of `make bench` (the ws-* rows):
** one thread on plain epoll, meant to run pinned to its own core (as
** bench/loadgen).
**
**   ws_load -p port [-c conns] [-s size] [-d secs] [-w warmup] [-t text]
**
** C connections, each doing the RFC 6455 handshake once (GET /), then
** ping-ponging S-byte messages: send one masked binary frame (text with
** -t 1), wait for the whole echo frame, check it, send the next. The mask
** key is fixed per connection (the server's work is the same; a client's
** randomness is not what is measured). Only exchanges completed after the
** warm-up count. Output, one line:
**   loadgen mode=ws conns=C size=S duration=D count=N rate=R errors=E bad=B total=T
** (T: all the messages echoed, the warm-up's too)
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct conn {
  int fd;
  int reading;           /* 0: sending the frame, 1: reading the echo */
  size_t off;            /* bytes sent, or received, of the current frame */
} conn;

static unsigned char *frame, *expect, *inbuf;
static size_t frame_len, expect_len;

static double now (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A frame: opcode op, payload p of n bytes, masked with key (or not). */
static size_t make_frame (unsigned char *out, int op, const unsigned char *p, size_t n,
                          const unsigned char *key) {
  size_t h = 0, i;
  out[h++] = (unsigned char)(0x80 | op);
  if (n < 126) out[h++] = (unsigned char)((key ? 0x80 : 0) | n);
  else if (n < 65536) {
    out[h++] = (unsigned char)((key ? 0x80 : 0) | 126);
    out[h++] = (unsigned char)(n >> 8); out[h++] = (unsigned char)n;
  } else {
    out[h++] = (unsigned char)((key ? 0x80 : 0) | 127);
    for (i = 0; i < 8; i++) out[h++] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
  }
  if (key) { memcpy(out + h, key, 4); h += 4; }
  for (i = 0; i < n; i++) out[h + i] = key ? p[i] ^ key[i & 3] : p[i];
  return h + n;
}

static int fcntl_nonblock (int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Connect and do the handshake, blocking; then the socket goes non-blocking. */
static int open_conn (int port) {
  static const char req[] =
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  struct sockaddr_in a;
  char buf[4096];
  size_t got = 0;
  int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) goto fail;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) goto fail;
  while (got < sizeof buf - 1) {          /* read the answer's head, byte by byte */
    ssize_t r = read(fd, buf + got, 1);
    if (r <= 0) goto fail;
    got++;
    if (got >= 4 && memcmp(buf + got - 4, "\r\n\r\n", 4) == 0) break;
  }
  buf[got] = '\0';
  if (strncmp(buf, "HTTP/1.1 101", 12) != 0 || !strstr(buf, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) goto fail;
  if (fcntl_nonblock(fd) != 0) goto fail;
  return fd;
fail:
  if (fd >= 0) close(fd);
  return -1;
}

static void usage (void) {
  fprintf(stderr, "usage: ws_load -p port [-c conns] [-s size] [-d secs] [-w warmup] [-t 0|1]\n");
  exit(2);
}

int main (int argc, char **argv) {
  int port = 0, nconns = 50, text = 0, opt, ep, i;
  size_t size = 64;
  double dur = 3, warm = 0.5, t0, t_start, t_end;
  unsigned long long count = 0, total = 0, errors = 0, bad = 0;
  static const unsigned char key[4] = { 0x37, 0xfa, 0x21, 0x3d };
  unsigned char *payload;
  conn *cs;
  struct epoll_event evs[256];
  while ((opt = getopt(argc, argv, "p:c:s:d:w:t:")) != -1) {
    switch (opt) {
    case 'p': port = atoi(optarg); break;
    case 'c': nconns = atoi(optarg); break;
    case 's': size = (size_t)atol(optarg); break;
    case 'd': dur = atof(optarg); break;
    case 'w': warm = atof(optarg); break;
    case 't': text = atoi(optarg); break;
    default: usage();
    }
  }
  if (port <= 0 || nconns <= 0) usage();
  signal(SIGPIPE, SIG_IGN);
  payload = malloc(size + 1);
  frame = malloc(size + 14);
  expect = malloc(size + 14);
  inbuf = malloc(size + 14);
  cs = calloc((size_t)nconns, sizeof *cs);
  if (!payload || !frame || !expect || !inbuf || !cs) return 1;
  for (i = 0; i < (int)size; i++) payload[i] = (unsigned char)('a' + i % 26);
  frame_len = make_frame(frame, text ? 1 : 2, payload, size, key);
  expect_len = make_frame(expect, text ? 1 : 2, payload, size, NULL);
  ep = epoll_create1(0);
  for (i = 0; i < nconns; i++) {
    struct epoll_event ev;
    cs[i].fd = open_conn(port);
    if (cs[i].fd < 0) { fprintf(stderr, "ws_load: connection %d failed\n", i); return 1; }
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    ev.data.ptr = &cs[i];
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
  }
  t0 = now();
  t_start = t0 + warm;
  t_end = t_start + dur;
  while (now() < t_end) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      for (;;) {                       /* edge-triggered: until EAGAIN */
        ssize_t r;
        if (c->fd < 0) break;
        if (!c->reading) {
          r = write(c->fd, frame + c->off, frame_len - c->off);
          if (r < 0) {
            if (errno != EAGAIN) { errors++; close(c->fd); c->fd = -1; }
            break;
          }
          c->off += (size_t)r;
          if (c->off == frame_len) { c->reading = 1; c->off = 0; }
        } else {
          r = read(c->fd, inbuf + c->off, expect_len - c->off);
          if (r <= 0) {
            if (r == 0 || errno != EAGAIN) { errors++; close(c->fd); c->fd = -1; }
            break;
          }
          c->off += (size_t)r;
          if (c->off == expect_len) {
            if (memcmp(inbuf, expect, expect_len) != 0) bad++;
            total++;
            if (now() >= t_start) count++;
            c->reading = 0; c->off = 0;
          }
        }
      }
    }
  }
  printf("loadgen mode=ws conns=%d size=%zu duration=%.3f count=%llu rate=%.1f errors=%llu bad=%llu total=%llu\n",
         nconns, size, dur, count, count / dur, errors, bad, total);
  return 0;
}
