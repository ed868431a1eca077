/* loadgen.c -- the load generator of `make bench`: one thread on plain
** epoll, meant to run pinned to its own core so that it is never the
** bottleneck.
**
**   loadgen -m MODE [-H host] -p port [-c conns] [-s size] [-d secs]
**           [-w warmup_secs] [-t udp_timeout_ms] [-n idle_conns] [-b srcaddrs]
**           [-N total_conns]
**   loadgen -m startup -n runs [-C cpu] -- command [args...]
**
** Modes
**   echo   ping-pong: each of C connections sends one S-byte message and
**          waits for the whole echo before it sends the next one
**   line   the same with S-1 bytes + "\n"; the reply must be that line
**   churn  C concurrent slots: connect, send 64 bytes, read the echo, close;
**          with -N, stop after N connections in all (the run ends when the
**          last one is done, or at the time limit, whichever comes first)
**   udp    C connected UDP sockets, one S-byte datagram outstanding each; a
**          datagram with no reply within -t ms counts as lost
**   startup  run the command after "--" -n times (its stdout and stderr to
**          /dev/null, pinned to CPU -C if given; posix_spawn) and report the
**          median and p90 wall time from spawn to exit, in ms
**   idle   open N connections (one 64-byte ping-pong each, which proves the
**          server has accepted and serves them), print the result line, then
**          hold them until stdin reaches EOF or a line arrives (at most -d
**          seconds), and close them
**
** Runs take the lock /tmp/sockhost-bench.lock (waiting at most 20 minutes
** for another benchmark), unless SOCKHOST_BENCH_LOCK_HELD is set.
**
** Every replied byte is checked against what was sent. Only exchanges that
** complete after the warm-up count (count=, rate=); total= is all the
** exchanges completed, the warm-up's too (bench/run divides the server's
** CPU time over the whole run by it). Output: one line of key=value pairs
** on stdout. Runs stop by themselves after warm-up + duration.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sched.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { M_ECHO, M_LINE, M_CHURN, M_UDP, M_IDLE, M_STARTUP, M_COUNT };
static const char *mode_names[] = {"echo", "line", "churn", "udp", "idle", "startup"};

/* ---------- options ---------- */
static int mode = M_ECHO;
static const char *host = "127.0.0.1";
static int port = 0;
static int nconns = 50;
static size_t msgsize = 64;
static double duration = 3.0;
static double warmup = 0.5;
static double udp_timeout_ms = 100.0;
static int nidle = 10000;
static int nsrc = 32;         /* churn/idle: source addresses 127.0.0.1..N */
static long long churn_total = 0;   /* churn: -N connections in all; 0: no count */
static int child_cpu = -1;   /* startup: pin the command to this CPU */

/* ---------- time ---------- */
static inline uint64_t now_ns (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------- latency histogram: 100 ns buckets up to 100 ms, then log2 ---------- */
#define HBUCKET_NS 100u
#define HLINEAR    1000000u               /* 1e6 * 100 ns = 100 ms */
static uint32_t *hist;
static uint64_t hist_over[64];
static uint64_t hist_n;

static void hist_add (uint64_t ns) {
  uint64_t b = ns / HBUCKET_NS;
  hist_n++;
  if (b < HLINEAR) hist[b]++;
  else hist_over[63 - __builtin_clzll(ns)]++;
}

/* The q-quantile in microseconds. */
static double hist_quantile (double q) {
  uint64_t want, acc = 0;
  if (hist_n == 0) return 0;
  want = (uint64_t)(q * (double)hist_n);
  if (want >= hist_n) want = hist_n - 1;
  for (uint32_t i = 0; i < HLINEAR; i++) {
    acc += hist[i];
    if (acc > want) return (i + 0.5) * HBUCKET_NS / 1000.0;
  }
  for (int i = 0; i < 64; i++) {
    acc += hist_over[i];
    if (acc > want) return (double)(1ull << i) / 1000.0;
  }
  return 0;
}

/* ---------- connections ---------- */
enum { S_FREE, S_CONNECTING, S_WAIT, S_IDLE, S_DEAD };
struct conn {
  int fd;
  int state;
  int out_armed;           /* EPOLLOUT in the interest set */
  size_t sent, got;        /* bytes of the current message */
  uint64_t t0;             /* when the current exchange started */
  uint32_t seq;            /* udp: sequence number of the outstanding datagram */
  uint32_t idx;
};

static int ep = -1;
static char *msg;                 /* what we send */
static char rbuf[1 << 17];        /* scratch for replies */
static struct sockaddr_in srv;
static uint64_t t_start, t_count_from, t_end;
static uint64_t n_done, n_err, n_bad, n_lost, n_sent;
static uint64_t n_total;      /* exchanges completed, the warm-up's too */
static long long n_opened;        /* churn: connections made so far */
static int n_src_rr;

static void die (const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void record (struct conn *c, uint64_t t) {
  n_total++;
  if (t >= t_count_from) {
    n_done++;
    hist_add(t - c->t0);
  }
}

static void ep_set (struct conn *c, uint32_t ev, int op) {
  struct epoll_event e;
  e.events = ev;
  e.data.ptr = c;
  if (epoll_ctl(ep, op, c->fd, &e) != 0) die("epoll_ctl");
}

static void kill_conn (struct conn *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->state = S_DEAD;
  n_err++;
}

/* ---------- echo / line: ping-pong on established connections ---------- */

/* Push the rest of the current message; arm EPOLLOUT if the kernel pushes back. */
static void push (struct conn *c) {
  while (c->sent < msgsize) {
    ssize_t w = send(c->fd, msg + c->sent, msgsize - c->sent, MSG_NOSIGNAL);
    if (w > 0) { c->sent += (size_t)w; continue; }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!c->out_armed) { c->out_armed = 1; ep_set(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD); }
      return;
    }
    kill_conn(c);
    return;
  }
  if (c->out_armed) { c->out_armed = 0; ep_set(c, EPOLLIN, EPOLL_CTL_MOD); }
}

static void start_msg (struct conn *c, uint64_t t) {
  c->t0 = t;
  c->sent = c->got = 0;
  push(c);
}

/* One read per wake-up (level-triggered). Returns 1 when the reply is complete. */
static int pull (struct conn *c) {
  size_t want = msgsize - c->got;
  ssize_t r;
  if (want > sizeof rbuf) want = sizeof rbuf;
  r = recv(c->fd, rbuf, want, 0);
  if (r > 0) {
    if (c->got + (size_t)r > c->sent) n_bad++;             /* more than we sent */
    else if (memcmp(rbuf, msg + c->got, (size_t)r) != 0) n_bad++;
    c->got += (size_t)r;
    return c->got == msgsize;
  }
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
  kill_conn(c);                                            /* EOF or error */
  return 0;
}

/* Connect with a deadline (the whole set-up must end by itself too). */
static int tcp_connect_by (uint64_t deadline) {
  int one = 1, err = 0;
  socklen_t len = sizeof err;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (connect(fd, (struct sockaddr *)&srv, sizeof srv) != 0) {
    struct pollfd p = {fd, POLLOUT, 0};
    uint64_t t = now_ns();
    if (errno != EINPROGRESS) die("connect");
    if (poll(&p, 1, t < deadline ? (int)((deadline - t) / 1000000u) + 1 : 0) != 1) {
      fprintf(stderr, "loadgen: connect: timed out\n");
      exit(2);
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      errno = err;
      die("connect");
    }
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static int all_dead (struct conn *cs, int n) {
  for (int i = 0; i < n; i++) if (cs[i].state != S_DEAD) return 0;
  return 1;
}

#define MAXEV 1024
static struct epoll_event evs[MAXEV];

static int wait_ms (uint64_t t) {
  uint64_t left = t < t_end ? t_end - t : 0;
  int ms = (int)(left / 1000000u) + 1;
  return ms > 100 ? 100 : ms;
}

static void run_pingpong (void) {
  struct conn *cs = calloc((size_t)nconns, sizeof *cs);
  uint64_t t;
  uint64_t deadline = now_ns() + 20ull * 1000000000u;
  for (int i = 0; i < nconns; i++) {
    cs[i].fd = tcp_connect_by(deadline);
    cs[i].state = S_WAIT;
    cs[i].idx = (uint32_t)i;
    ep_set(&cs[i], EPOLLIN, EPOLL_CTL_ADD);
  }
  t_start = now_ns();
  t_count_from = t_start + (uint64_t)(warmup * 1e9);
  t_end = t_count_from + (uint64_t)(duration * 1e9);
  for (int i = 0; i < nconns; i++) start_msg(&cs[i], now_ns());
  for (t = now_ns(); t < t_end; t = now_ns()) {
    int n = epoll_wait(ep, evs, MAXEV, wait_ms(t));
    if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (c->state == S_DEAD) continue;
      if (evs[i].events & EPOLLOUT) push(c);
      if (c->state == S_DEAD) continue;
      if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (pull(c)) {
          uint64_t tn = now_ns();
          record(c, tn);
          start_msg(c, tn);
        }
      }
    }
    if (all_dead(cs, nconns)) break;
  }
  for (int i = 0; i < nconns; i++) if (cs[i].fd >= 0) close(cs[i].fd);
  free(cs);
}

/* ---------- churn and idle: non-blocking connects ---------- */
static char churn_msg[64];

static int open_nb (struct conn *c) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (nsrc > 1) {
    /* Spread over 127.0.0.1..N so that TIME_WAIT does not exhaust the ports. */
    struct sockaddr_in src;
    int one = 1;
    memset(&src, 0, sizeof src);
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(n_src_rr++ % nsrc));
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) { close(fd); return -1; }
  }
  if (connect(fd, (struct sockaddr *)&srv, sizeof srv) != 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  c->fd = fd;
  c->state = S_CONNECTING;
  c->sent = c->got = 0;
  c->t0 = now_ns();
  ep_set(c, EPOLLIN | EPOLLOUT | EPOLLET, EPOLL_CTL_ADD);
  return 0;
}

/* Drive one short exchange (edge-triggered). Returns 1 when the echo is in. */
static int step_short (struct conn *c, uint32_t ev) {
  if (c->state == S_CONNECTING && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
    ssize_t w = send(c->fd, churn_msg, sizeof churn_msg, MSG_NOSIGNAL);
    if (w != (ssize_t)sizeof churn_msg) {
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
      return -1;
    }
    c->sent = sizeof churn_msg;
    c->state = S_WAIT;
  }
  if (c->state == S_WAIT && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
    for (;;) {
      ssize_t r = recv(c->fd, rbuf, sizeof churn_msg - c->got, 0);
      if (r > 0) {
        if (memcmp(rbuf, churn_msg + c->got, (size_t)r) != 0) n_bad++;
        c->got += (size_t)r;
        if (c->got == sizeof churn_msg) return 1;
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
      if (r < 0 && errno == EINTR) continue;
      return -1;
    }
  }
  return 0;
}

/* The slot's next connection, unless -N have been made: 1 when it is
** connecting, 0 when there are no more to make, -1 when it failed at once
** (the slot is then retried). */
static int churn_next (struct conn *c) {
  if (churn_total > 0 && n_opened >= churn_total) { c->fd = -1; c->state = S_DEAD; return 0; }
  if (open_nb(c) != 0) { n_err++; c->fd = -1; c->state = S_FREE; return -1; }
  n_opened++;
  return 1;
}

static void run_churn (void) {
  struct conn *cs = calloc((size_t)nconns, sizeof *cs);
  int pending = 0, live = 0;
  uint64_t t;
  memset(churn_msg, 'c', sizeof churn_msg);
  t_start = now_ns();
  t_count_from = t_start + (uint64_t)(warmup * 1e9);
  t_end = t_count_from + (uint64_t)(duration * 1e9);
  for (int i = 0; i < nconns; i++) {
    int r;
    cs[i].idx = (uint32_t)i;
    r = churn_next(&cs[i]);
    if (r > 0) live++;
    else if (r < 0) pending++;
  }
  for (t = now_ns(); t < t_end; t = now_ns()) {
    int n;
    if (live == 0 && pending == 0) break;          /* all -N connections done */
    n = epoll_wait(ep, evs, MAXEV, pending ? 1 : wait_ms(t));
    if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      int r = step_short(c, evs[i].events);
      if (r == 0) continue;
      if (r > 0) record(c, now_ns());
      else n_err++;
      close(c->fd);
      live--;
      r = churn_next(c);
      if (r > 0) live++;
      else if (r < 0) pending++;
    }
    if (pending) {          /* slots whose connect failed at once: retry */
      pending = 0;
      for (int i = 0; i < nconns; i++) {
        int r;
        if (cs[i].state != S_FREE) continue;
        r = churn_next(&cs[i]);
        if (r > 0) live++;
        else if (r < 0) pending++;
      }
    }
  }
  for (int i = 0; i < nconns; i++) if (cs[i].fd >= 0) close(cs[i].fd);
  free(cs);
}

/* idle: open nidle connections, each with one ping-pong, at most 100 in flight. */
static void run_idle (void) {
  struct conn *cs = calloc((size_t)nidle, sizeof *cs);
  int opened = 0, inflight = 0, ready = 0, failed = 0;
  uint64_t t0 = now_ns(), deadline = t0 + 120ull * 1000000000u;
  double setup;
  memset(churn_msg, 'i', sizeof churn_msg);
  t_count_from = 0;
  while (ready + failed < nidle && now_ns() < deadline) {
    while (inflight < 100 && opened < nidle) {
      struct conn *c = &cs[opened++];
      c->idx = (uint32_t)(opened - 1);
      if (open_nb(c) != 0) { failed++; n_err++; c->state = S_DEAD; c->fd = -1; }
      else inflight++;
    }
    int n = epoll_wait(ep, evs, MAXEV, 100);
    if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      int r;
      if (c->state != S_CONNECTING && c->state != S_WAIT) continue;
      r = step_short(c, evs[i].events);
      if (r == 0) continue;
      inflight--;
      if (r > 0) {
        record(c, now_ns());
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        c->state = S_IDLE;
        ready++;
      } else {
        close(c->fd); c->fd = -1; c->state = S_DEAD; failed++; n_err++;
      }
    }
  }
  setup = (double)(now_ns() - t0) / 1e9;
  printf("loadgen mode=idle conns=%d open=%d errors=%d setup_s=%.3f p50_us=%.1f p99_us=%.1f\n",
         nidle, ready, failed, setup, hist_quantile(0.5), hist_quantile(0.99));
  fflush(stdout);
  /* Hold until the harness says so (a line or EOF on stdin), at most -d s. */
  {
    struct pollfd p = {0, POLLIN, 0};
    char line[64];
    int ms = (int)(duration * 1000);
    if (poll(&p, 1, ms) > 0) { if (read(0, line, sizeof line) < 0) { /* ignore */ } }
  }
  for (int i = 0; i < nidle; i++) if (cs[i].fd >= 0) close(cs[i].fd);
  free(cs);
}

/* ---------- udp ---------- */
static void udp_send (struct conn *c, uint64_t t) {
  uint32_t hdr[2];
  c->seq++;
  c->t0 = t;
  hdr[0] = c->idx;
  hdr[1] = c->seq;
  memcpy(msg, hdr, sizeof hdr);
  n_sent++;
  if (send(c->fd, msg, msgsize, 0) < 0 && errno != EAGAIN && errno != ECONNREFUSED) die("send");
}

static void run_udp (void) {
  struct conn *cs = calloc((size_t)nconns, sizeof *cs);
  uint64_t t, last_scan = 0, tmo = (uint64_t)(udp_timeout_ms * 1e6);
  uint64_t sent_at_count = 0;
  int counting = 0;
  if (msgsize < 8) msgsize = 8;
  for (int i = 0; i < nconns; i++) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&srv, sizeof srv) != 0) die("connect");
    cs[i].fd = fd;
    cs[i].idx = (uint32_t)i;
    cs[i].state = S_WAIT;
    ep_set(&cs[i], EPOLLIN, EPOLL_CTL_ADD);
  }
  t_start = now_ns();
  t_count_from = t_start + (uint64_t)(warmup * 1e9);
  t_end = t_count_from + (uint64_t)(duration * 1e9);
  for (int i = 0; i < nconns; i++) udp_send(&cs[i], now_ns());
  for (t = now_ns(); t < t_end; t = now_ns()) {
    int n = epoll_wait(ep, evs, MAXEV, 1);
    if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
    if (!counting && t >= t_count_from) { counting = 1; sent_at_count = n_sent; n_lost = 0; }
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
      uint32_t hdr[2];
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        n_err++;                        /* ECONNREFUSED: nobody listening */
        continue;
      }
      if ((size_t)r != msgsize) { n_bad++; continue; }
      memcpy(hdr, rbuf, sizeof hdr);
      if (hdr[0] != c->idx || hdr[1] != c->seq) continue;       /* a late reply */
      if (memcmp(rbuf + 8, msg + 8, msgsize - 8) != 0) n_bad++;
      {
        uint64_t tn = now_ns();
        record(c, tn);
        udp_send(c, tn);
      }
    }
    if (t - last_scan > 1000000u) {     /* per-datagram timeouts, every 1 ms */
      uint64_t tn = now_ns();
      last_scan = t;
      for (int i = 0; i < nconns; i++)
        if (tn > cs[i].t0 && tn - cs[i].t0 > tmo) { n_lost++; udp_send(&cs[i], tn); }
    }
  }
  /* datagrams sent while counting = n_sent - sent_at_count */
  n_sent = counting ? n_sent - sent_at_count : 0;
  for (int i = 0; i < nconns; i++) close(cs[i].fd);
  free(cs);
}

/* ---------- startup ---------- */
static int cmp_double (const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

extern char **environ;

static int run_startup (char **cmd, int runs) {
  double *ms = calloc((size_t)runs, sizeof *ms);
  int failed = 0;
  posix_spawn_file_actions_t fa;
  if (child_cpu >= 0) {          /* we only wait meanwhile: run on its CPU */
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(child_cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
  }
  posix_spawn_file_actions_init(&fa);
  for (int fd = 0; fd <= 2; fd++)
    posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", O_RDWR, 0);
  for (int i = 0; i < runs; i++) {
    uint64_t t0 = now_ns();
    int status;
    pid_t pid;
    if (posix_spawnp(&pid, cmd[0], &fa, NULL, cmd, environ) != 0) die("posix_spawnp");
    if (waitpid(pid, &status, 0) < 0) die("waitpid");
    ms[i] = (double)(now_ns() - t0) / 1e6;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
  }
  posix_spawn_file_actions_destroy(&fa);
  qsort(ms, (size_t)runs, sizeof *ms, cmp_double);
  printf("loadgen mode=startup runs=%d p50_ms=%.3f p90_ms=%.3f min_ms=%.3f errors=%d\n",
         runs, ms[runs / 2], ms[(runs * 9) / 10 < runs ? (runs * 9) / 10 : runs - 1], ms[0], failed);
  free(ms);
  return failed ? 1 : 0;
}

/* ---------- one benchmark at a time ---------- */
/* Two load runs at once on a 2-core machine spoil each other's numbers, so
** every run takes this lock (bench/run takes it for its whole run and tells
** its children so). Waiting is bounded: after 20 minutes we go ahead. */
#define LOCK_PATH "/tmp/sockhost-bench.lock"
static void take_lock (void) {
  const char *held = getenv("SOCKHOST_BENCH_LOCK_HELD");
  int fd;
  uint64_t deadline;
  if (held && *held) return;
  fd = open(LOCK_PATH, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) == 0) return;     /* held until exit */
  fprintf(stderr, "loadgen: another benchmark is running (%s); waiting\n", LOCK_PATH);
  deadline = now_ns() + 1200ull * 1000000000u;
  while (now_ns() < deadline) {
    sleep(1);
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return;
  }
  fprintf(stderr, "loadgen: still locked after 20 min; going ahead\n");
}

/* ---------- main ---------- */
static void usage (void) {
  fprintf(stderr,
    "usage: loadgen -m echo|line|churn|udp|idle -p port [-H host] [-c conns] [-s size]\n"
    "               [-d secs] [-w warmup_secs] [-t udp_timeout_ms] [-n idle_conns] [-b nsrc]\n"
    "               [-N total_conns]\n"
    "       loadgen -m startup -n runs [-C cpu] -- command [args...]\n");
  exit(2);
}

int main (int argc, char **argv) {
  int o;
  struct rlimit rl;
  double secs;
  while ((o = getopt(argc, argv, "m:H:p:c:s:d:w:t:n:b:C:N:")) != -1) {
    switch (o) {
      case 'm': {
        int i;
        for (i = 0; i < M_COUNT; i++) if (strcmp(optarg, mode_names[i]) == 0) break;
        if (i == M_COUNT) usage();
        mode = i;
        break;
      }
      case 'H': host = optarg; break;
      case 'p': port = atoi(optarg); break;
      case 'c': nconns = atoi(optarg); break;
      case 's': msgsize = (size_t)atol(optarg); break;
      case 'd': duration = atof(optarg); break;
      case 'w': warmup = atof(optarg); break;
      case 't': udp_timeout_ms = atof(optarg); break;
      case 'n': nidle = atoi(optarg); break;
      case 'b': nsrc = atoi(optarg); break;
      case 'C': child_cpu = atoi(optarg); break;
      case 'N': churn_total = atoll(optarg); break;
      default: usage();
    }
  }
  take_lock();
  if (mode == M_STARTUP) {
    if (optind >= argc || nidle <= 0) usage();
    return run_startup(argv + optind, nidle);
  }
  if (port <= 0 || nconns <= 0 || msgsize == 0 || duration <= 0) usage();
  signal(SIGPIPE, SIG_IGN);
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  memset(&srv, 0, sizeof srv);
  srv.sin_family = AF_INET;
  srv.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &srv.sin_addr) != 1) { fprintf(stderr, "loadgen: bad host\n"); return 2; }
  hist = calloc(HLINEAR, sizeof *hist);
  msg = malloc(msgsize);
  if (!hist || !msg) die("malloc");
  for (size_t i = 0; i < msgsize; i++) msg[i] = (char)('a' + i % 26);
  if (mode == M_LINE) msg[msgsize - 1] = '\n';
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");

  switch (mode) {
    case M_ECHO: case M_LINE: run_pingpong(); break;
    case M_CHURN: run_churn(); break;
    case M_UDP: run_udp(); break;
    case M_IDLE: run_idle(); return 0;
  }
  secs = duration;
  {
    uint64_t t = now_ns();                 /* we may stop early if all died */
    if (t < t_end && t > t_count_from) secs = (double)(t - t_count_from) / 1e9;
  }
  printf("loadgen mode=%s conns=%d size=%zu duration=%.3f count=%llu rate=%.1f "
         "p50_us=%.1f p99_us=%.1f errors=%llu bad=%llu",
         mode_names[mode], nconns, mode == M_CHURN ? sizeof churn_msg : msgsize, secs,
         (unsigned long long)n_done, (double)n_done / secs,
         hist_quantile(0.5), hist_quantile(0.99),
         (unsigned long long)n_err, (unsigned long long)n_bad);
  if (mode == M_CHURN) printf(" opened=%lld", n_opened);
  if (mode == M_UDP)
    printf(" sent=%llu lost=%llu loss=%.6f", (unsigned long long)n_sent,
           (unsigned long long)n_lost, n_sent ? (double)n_lost / (double)n_sent : 0.0);
  {
    struct rusage ru;             /* preemptions: a sign of a disturbed run */
    getrusage(RUSAGE_SELF, &ru);
    printf(" nivcsw=%ld", ru.ru_nivcsw);
  }
  printf(" total=%llu", (unsigned long long)n_total);
  printf("\n");
  return (n_done == 0) ? 1 : 0;
}
