/* sh_collector.c -- --metrics: the collector thread (see sh_collector.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sh_addr.h"
#include "sh_collector.h"
#include "sh_net.h"

#define MAX_CLIENTS 16          /* HTTP clients served at once; more wait */
#define MAX_REQUEST 8192        /* bytes of an HTTP request head */
#define CLIENT_TIMEOUT 5.0      /* seconds to send the request head / take the answer */
#define MAX_REPORT (64u << 20)  /* bytes of one report */

typedef struct family {
  char *name, *help;
  char type[16];
} family;

typedef struct series {
  char *key;                    /* name{labels} */
  int fam;
  double base;                  /* counters: what reporters gone had counted */
  double sum;                   /* while rendering */
  int present;
} series;

typedef struct reporter {
  int fd;
  int worker, pid;
  char *in;                     /* what arrived, not yet taken */
  size_t len, cap;
  int *idx;                     /* its last report: series and values */
  double *val;
  size_t n;
  unsigned long answered;       /* the last ask it answered */
  unsigned long sum_seq;        /* its own "A" ask waiting, or 0 */
  unsigned long sum_for;        /* ... served when all answered this ask */
  double sum_by;
  char out[128];                /* asks a send took only part of, to finish */
  size_t outlen;
} reporter;

typedef struct client {
  int fd;
  char in[MAX_REQUEST];
  size_t len;
  double since;
  unsigned long seq;            /* waiting for the reports of this ask, or 0 */
  double by;
} client;

/* All zero at start (so in .bss: its 128 KiB of client buffers take no
** memory in a process without --metrics); the descriptors are set by
** sh_collector_start. */
static struct {
  int started;                  /* sh_collector_start succeeded */
  int http_fd, unix_fd;
  char name[64];                /* the abstract socket's name (after its NUL) */
  size_t namelen;
  family *fams;
  size_t nfams;
  series *ser;
  size_t nser;
  reporter **reps;
  size_t nreps;
  client clients[MAX_CLIENTS];
  unsigned long seq;            /* asks made */
  double next_ask;
} C;

static double now_mono (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *dupn (const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d == NULL) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

/* Write all of buf to fd, waiting for room at most 'secs'. */
static int write_all (int fd, const char *buf, size_t len, double secs) {
  double by = now_mono() + secs;
  while (len > 0) {
    ssize_t w = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) { buf += w; len -= (size_t)w; continue; }
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
    {
      struct pollfd p;
      double left = by - now_mono();
      if (left <= 0) return -1;
      p.fd = fd;
      p.events = POLLOUT;
      if (poll(&p, 1, (int)(left * 1000) + 1) < 0 && errno != EINTR) return -1;
    }
  }
  return 0;
}

/* ====================== The sum ====================== */

static int find_family (const char *name, size_t n) {
  size_t i;
  for (i = 0; i < C.nfams; i++)
    if (strlen(C.fams[i].name) == n && memcmp(C.fams[i].name, name, n) == 0) return (int)i;
  return -1;
}

static int add_family (const char *name, size_t n) {
  int i = find_family(name, n);
  family *f;
  if (i >= 0) return i;
  f = realloc(C.fams, (C.nfams + 1) * sizeof *f);
  if (f == NULL) return -1;
  C.fams = f;
  f = &C.fams[C.nfams];
  memset(f, 0, sizeof *f);
  if ((f->name = dupn(name, n)) == NULL) return -1;
  strcpy(f->type, "untyped");
  return (int)C.nfams++;
}

/* The family of a sample named 'name' (n bytes): its own, or a
** histogram's for _bucket, _sum and _count. */
static int family_of (const char *name, size_t n) {
  static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
  size_t k;
  int i = find_family(name, n);
  if (i >= 0) return i;
  for (k = 0; k < 3; k++) {
    size_t sl = strlen(suffixes[k]);
    if (n > sl && memcmp(name + n - sl, suffixes[k], sl) == 0 &&
        (i = find_family(name, n - sl)) >= 0 && strcmp(C.fams[i].type, "histogram") == 0)
      return i;
  }
  return add_family(name, n);
}

static int cumulative (int fam) {
  return strcmp(C.fams[fam].type, "counter") == 0 || strcmp(C.fams[fam].type, "histogram") == 0;
}

/* The series of key (n bytes); 'guess' first (the same place last time). */
static int find_series (const char *key, size_t n, int guess) {
  size_t i;
  series *s;
  if (guess >= 0 && (size_t)guess < C.nser && strlen(C.ser[guess].key) == n &&
      memcmp(C.ser[guess].key, key, n) == 0)
    return guess;
  for (i = 0; i < C.nser; i++)
    if (strlen(C.ser[i].key) == n && memcmp(C.ser[i].key, key, n) == 0) return (int)i;
  s = realloc(C.ser, (C.nser + 1) * sizeof *s);
  if (s == NULL) return -1;
  C.ser = s;
  s = &C.ser[C.nser];
  memset(s, 0, sizeof *s);
  if ((s->key = dupn(key, n)) == NULL) return -1;
  s->fam = family_of(key, strcspn(s->key, "{"));
  if (s->fam < 0) { free(s->key); return -1; }
  return (int)C.nser++;
}

/* "# HELP name text" or "# TYPE name type" */
static void take_meta (const char *l, size_t n) {
  const char *name = l + 7, *end = memchr(name, ' ', n - 7);
  int f;
  if (end == NULL) return;
  if ((f = add_family(name, (size_t)(end - name))) < 0) return;
  end++;
  if (l[2] == 'H') {
    free(C.fams[f].help);
    C.fams[f].help = dupn(end, (size_t)(l + n - end));
  } else if ((size_t)(l + n - end) < sizeof C.fams[f].type) {
    memcpy(C.fams[f].type, end, (size_t)(l + n - end));
    C.fams[f].type[l + n - end] = '\0';
  }
}

/* Reporter r's report 'text' replaces its last one. */
static void take_report (reporter *r, const char *text, size_t len) {
  size_t cap = 0, n = 0;
  int *idx = NULL;
  double *val = NULL;
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p)), *sp;
    size_t ln;
    int i;
    if (nl == NULL) nl = end;
    ln = (size_t)(nl - p);
    if (ln > 7 && (memcmp(p, "# HELP ", 7) == 0 || memcmp(p, "# TYPE ", 7) == 0)) take_meta(p, ln);
    else if (ln > 0 && p[0] != '#' && (sp = memrchr(p, ' ', ln)) != NULL) {
      char num[64];
      size_t nl2 = (size_t)(nl - sp - 1);
      if (nl2 < sizeof num) {
        memcpy(num, sp + 1, nl2);
        num[nl2] = '\0';
        i = find_series(p, (size_t)(sp - p), n < r->n ? r->idx[n] : -1);
        if (i >= 0) {
          if (n == cap) {
            int *ni;
            double *nv;
            cap = cap ? cap * 2 : 64;
            ni = realloc(idx, cap * sizeof *idx);
            if (ni != NULL) idx = ni;
            nv = realloc(val, cap * sizeof *val);
            if (nv != NULL) val = nv;
            if (ni == NULL || nv == NULL) break;
          }
          idx[n] = i;
          val[n] = strtod(num, NULL);
          n++;
        }
      }
    }
    p = nl + 1;
  }
  free(r->idx);
  free(r->val);
  r->idx = idx;
  r->val = val;
  r->n = n;
}

/* A reporter went away: its counters go into the base. */
static void fold (reporter *r) {
  size_t j;
  for (j = 0; j < r->n; j++)
    if (cumulative(C.ser[r->idx[j]].fam)) C.ser[r->idx[j]].base += r->val[j];
}

static void put (char **buf, size_t *len, size_t *cap, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));

static void put (char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
  va_list ap;
  int n;
  if (*buf == NULL) return;
  for (;;) {
    va_start(ap, fmt);
    n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < *cap - *len) { *len += (size_t)n; return; }
    {
      char *nb = realloc(*buf, *cap * 2 + (size_t)n);
      if (nb == NULL) { free(*buf); *buf = NULL; return; }
      *buf = nb;
      *cap = *cap * 2 + (size_t)n;
    }
  }
}

static void put_number (char **buf, size_t *len, size_t *cap, double v) {
  char num[64];
  if (v != v) strcpy(num, "NaN");
  else if (v > 1e308 * 10) strcpy(num, "+Inf");
  else if (v < -1e308 * 10) strcpy(num, "-Inf");
  else if (v == (double)(long long)v && v < 9e15 && v > -9e15) snprintf(num, sizeof num, "%lld", (long long)v);
  else {
    snprintf(num, sizeof num, "%.15g", v);
    if (strtod(num, NULL) != v) snprintf(num, sizeof num, "%.17g", v);
  }
  put(buf, len, cap, "%s\n", num);
}

/* The sum of the reports, as exposition text (malloc'ed, NUL-terminated). */
static char *render (size_t *outlen) {
  size_t cap = 16384, len = 0, i, j, f;
  char *buf = malloc(cap);
  if (buf == NULL) return NULL;
  buf[0] = '\0';
  for (i = 0; i < C.nser; i++) {
    C.ser[i].sum = C.ser[i].base;
    C.ser[i].present = C.ser[i].base != 0;
  }
  for (i = 0; i < C.nreps; i++)
    for (j = 0; j < C.reps[i]->n; j++) {
      C.ser[C.reps[i]->idx[j]].sum += C.reps[i]->val[j];
      C.ser[C.reps[i]->idx[j]].present = 1;
    }
  put(&buf, &len, &cap, "# HELP sockhost_processes_reporting Processes whose reports are in "
      "this sum (the workers of -w N)\n# TYPE sockhost_processes_reporting gauge\n"
      "sockhost_processes_reporting %zu\n", C.nreps);
  for (f = 0; f < C.nfams; f++) {
    int any = 0;
    for (i = 0; i < C.nser && !any; i++) any = C.ser[i].fam == (int)f && C.ser[i].present;
    if (!any) continue;
    if (C.fams[f].help != NULL) put(&buf, &len, &cap, "# HELP %s %s\n", C.fams[f].name, C.fams[f].help);
    put(&buf, &len, &cap, "# TYPE %s %s\n", C.fams[f].name, C.fams[f].type);
    for (i = 0; i < C.nser; i++) {
      if (C.ser[i].fam != (int)f || !C.ser[i].present) continue;
      put(&buf, &len, &cap, "%s ", C.ser[i].key);
      put_number(&buf, &len, &cap, C.ser[i].sum);
    }
  }
  if (buf != NULL) *outlen = len;
  return buf;
}

/* ====================== Reporters ====================== */

/* Send what r has queued; what the socket does not take waits for POLLOUT
** (a send may take part of a line: the rest must follow before anything
** else, or the reporter would read a broken line). */
static void flush_out (reporter *r) {
  while (r->outlen > 0) {
    ssize_t w = send(r->fd, r->out, r->outlen, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w <= 0) return;                         /* full, or gone: its read says */
    memmove(r->out, r->out + w, r->outlen - (size_t)w);
    r->outlen -= (size_t)w;
  }
}

/* Queue an ask for r, whole or not at all (one not reading keeps its last
** report), and send what it can. */
static void ask (reporter *r, unsigned long seq) {
  char line[48];
  int n = snprintf(line, sizeof line, "Q %lu\n", seq);
  if (n <= 0 || r->outlen + (size_t)n > sizeof r->out) return;
  memcpy(r->out + r->outlen, line, (size_t)n);
  r->outlen += (size_t)n;
  flush_out(r);
}

static void ask_all (double now) {
  size_t i;
  ++C.seq;
  for (i = 0; i < C.nreps; i++) ask(C.reps[i], C.seq);
  C.next_ask = now + SH_COLLECT_EVERY;
}

static int all_answered (unsigned long seq) {
  size_t i;
  for (i = 0; i < C.nreps; i++)
    if (C.reps[i]->answered < seq) return 0;
  return 1;
}

static void drop_reporter (size_t k) {
  reporter *r = C.reps[k];
  fold(r);
  close(r->fd);
  free(r->in);
  free(r->idx);
  free(r->val);
  free(r);
  C.reps[k] = C.reps[--C.nreps];
}

/* Take the whole messages in r's input. Returns -1 if r is to go. */
static int take_messages (reporter *r, double now) {
  size_t off = 0;
  int rc = 0;
  while (off < r->len) {
    char *p = r->in + off, *nl = memchr(p, '\n', r->len - off);
    unsigned long seq, blen;
    if (nl == NULL) break;
    if (p[0] == 'R' && sscanf(p, "R %lu %lu", &seq, &blen) == 2) {
      if (blen > MAX_REPORT) { rc = -1; break; }
      if ((size_t)(nl + 1 - r->in) + blen > r->len) break;    /* the body is not all here */
      take_report(r, nl + 1, blen);
      if (seq > r->answered) r->answered = seq;
      off = (size_t)(nl + 1 - r->in) + blen;
      continue;
    }
    if (p[0] == 'A' && sscanf(p, "A %lu", &seq) == 1) {
      ask_all(now);
      r->sum_seq = seq;
      r->sum_for = C.seq;
      r->sum_by = now + SH_COLLECT_WAIT;
    } else if (p[0] == 'h') {
      sscanf(p, "hello %d %d", &r->worker, &r->pid);
    }
    off = (size_t)(nl + 1 - r->in);
  }
  memmove(r->in, r->in + off, r->len - off);
  r->len -= off;
  return rc;
}

static int read_reporter (reporter *r, double now) {
  for (;;) {
    ssize_t got;
    if (r->cap - r->len < 65536) {
      char *nb = realloc(r->in, r->cap * 2 + 65536);
      if (nb == NULL) return -1;
      r->in = nb;
      r->cap = r->cap * 2 + 65536;
    }
    got = recv(r->fd, r->in + r->len, r->cap - r->len, MSG_DONTWAIT);
    if (got == 0) return -1;
    if (got < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    r->len += (size_t)got;
    if (take_messages(r, now) != 0) return -1;
  }
}

static void accept_reporter (double now) {
  int fd = accept4(C.unix_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  reporter *r, **nr;
  if (fd < 0) return;
  r = calloc(1, sizeof *r);
  nr = realloc(C.reps, (C.nreps + 1) * sizeof *nr);
  if (r == NULL || nr == NULL) { free(r); if (nr) C.reps = nr; close(fd); return; }
  C.reps = nr;
  r->fd = fd;
  C.reps[C.nreps++] = r;
  ask(r, C.seq);                               /* its first report */
  (void)now;
}

/* Answer reporter r's "A" ask with the sum. */
static void answer_sum (reporter *r) {
  size_t len = 0;
  char *body = render(&len), head[64];
  unsigned long seq = r->sum_seq;
  int n;
  r->sum_seq = 0;
  if (body == NULL) return;
  n = snprintf(head, sizeof head, "T %lu %zu\n", seq, len);
  if (write_all(r->fd, head, (size_t)n, 1.0) == 0) write_all(r->fd, body, len, 1.0);
  free(body);
}

/* ====================== HTTP ====================== */

static void close_client (client *c) {
  close(c->fd);
  c->fd = -1;
}

static void respond (client *c, const char *status, const char *type, const char *body, size_t len) {
  char head[256];
  int n = snprintf(head, sizeof head, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n\r\n", status, type, len);
  if (write_all(c->fd, head, (size_t)n, CLIENT_TIMEOUT) == 0 && len > 0)
    write_all(c->fd, body, len, CLIENT_TIMEOUT);
  close_client(c);
}

static void answer_scrape (client *c) {
  size_t len = 0;
  char *body = render(&len);
  if (body == NULL) { respond(c, "500 Internal Server Error", "text/plain", "out of memory\n", 14); return; }
  respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, len);
  free(body);
}

/* The request head is in: GET /metrics starts a scrape. */
static void take_request (client *c, double now) {
  char method[16], path[256];
  if (sscanf(c->in, "%15s %255s", method, path) != 2) {
    respond(c, "400 Bad Request", "text/plain", "bad request\n", 12);
    return;
  }
  if (strcmp(path, "/metrics") != 0 && strncmp(path, "/metrics?", 9) != 0) {
    respond(c, "404 Not Found", "text/plain", "try /metrics\n", 13);
    return;
  }
  if (strcmp(method, "GET") != 0) {
    respond(c, "405 Method Not Allowed", "text/plain", "GET only\n", 9);
    return;
  }
  ask_all(now);
  c->seq = C.seq;
  c->by = now + SH_COLLECT_WAIT;
}

static void read_client (client *c, double now) {
  ssize_t got = recv(c->fd, c->in + c->len, sizeof c->in - 1 - c->len, MSG_DONTWAIT);
  if (got <= 0) {
    if (got == 0 || (errno != EAGAIN && errno != EINTR)) close_client(c);
    return;
  }
  c->len += (size_t)got;
  c->in[c->len] = '\0';
  if (strstr(c->in, "\r\n\r\n") != NULL || strstr(c->in, "\n\n") != NULL) take_request(c, now);
  else if (c->len >= sizeof c->in - 1) respond(c, "431 Request Header Fields Too Large", "text/plain", "", 0);
}

static void accept_client (double now) {
  int i;
  for (i = 0; i < MAX_CLIENTS && C.clients[i].fd >= 0; i++) {}
  if (i == MAX_CLIENTS) return;                /* it waits in the backlog */
  C.clients[i].fd = accept4(C.http_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (C.clients[i].fd < 0) return;
  {
    int one = 1;                               /* the head and body go at once */
    setsockopt(C.clients[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  C.clients[i].len = 0;
  C.clients[i].seq = 0;
  C.clients[i].since = now;
}

/* ====================== The thread ====================== */

/* Serve what is due: scrapes and sums whose reports are in or late,
** clients too slow with their request, the periodic ask. Returns the
** seconds until the next thing due. */
static double serve_due (double now) {
  double next = C.next_ask;
  size_t i;
  int k;
  if (now >= C.next_ask) { ask_all(now); next = C.next_ask; }
  for (k = 0; k < MAX_CLIENTS; k++) {
    client *c = &C.clients[k];
    if (c->fd < 0) continue;
    if (c->seq != 0 && (all_answered(c->seq) || now >= c->by)) answer_scrape(c);
    else if (c->seq == 0 && now - c->since > CLIENT_TIMEOUT) close_client(c);
    else if (c->seq != 0 && c->by < next) next = c->by;
    else if (c->seq == 0 && c->since + CLIENT_TIMEOUT < next) next = c->since + CLIENT_TIMEOUT;
  }
  for (i = 0; i < C.nreps; i++) {
    reporter *r = C.reps[i];
    if (r->sum_seq == 0) continue;
    if (all_answered(r->sum_for) || now >= r->sum_by) answer_sum(r);
    else if (r->sum_by < next) next = r->sum_by;
  }
  return next - now > 0 ? next - now : 0;
}

static void *collector_main (void *arg) {
  struct pollfd *pf = NULL;
  size_t npf = 0;
  (void)arg;
  for (;;) {
    double now = now_mono(), wait = serve_due(now);
    size_t n = 0, i, need = 2 + MAX_CLIENTS + C.nreps;
    int k;
    if (need > npf) {
      struct pollfd *np = realloc(pf, need * sizeof *pf);
      if (np == NULL) { sleep(1); continue; }
      pf = np;
      npf = need;
    }
    pf[n].fd = C.http_fd; pf[n++].events = POLLIN;
    pf[n].fd = C.unix_fd; pf[n++].events = POLLIN;
    for (k = 0; k < MAX_CLIENTS; k++) {
      pf[n].fd = C.clients[k].fd >= 0 && C.clients[k].seq == 0 ? C.clients[k].fd : -1;
      pf[n++].events = POLLIN;
    }
    for (i = 0; i < C.nreps; i++) {
      pf[n].fd = C.reps[i]->fd;
      pf[n++].events = POLLIN | (C.reps[i]->outlen > 0 ? POLLOUT : 0);
    }
    if (poll(pf, n, (int)(wait * 1000) + 1) <= 0) continue;
    now = now_mono();
    if (pf[0].revents) accept_client(now);
    if (pf[1].revents) accept_reporter(now);
    for (k = 0; k < MAX_CLIENTS; k++)
      if (pf[2 + k].revents && C.clients[k].fd >= 0) read_client(&C.clients[k], now);
    for (i = C.nreps; i-- > 0;) {              /* backwards: drop_reporter moves the last */
      if (2 + MAX_CLIENTS + i >= n || pf[2 + MAX_CLIENTS + i].revents == 0) continue;
      if (pf[2 + MAX_CLIENTS + i].revents & POLLOUT) flush_out(C.reps[i]);
      if (read_reporter(C.reps[i], now) != 0) drop_reporter(i);
    }
  }
  return NULL;
}

static sh_sockfile sockfile;      /* unix:/path: the file bound */

static int listen_http (const char *addr, char *err, size_t errlen) {
  sh_addr a;
  sh_sockopts o;
  int fd;
  if (sh_addr_parse(addr, strlen(addr), &a, err, errlen) != 0) return -1;
  if ((a.scheme != SH_TCP && a.scheme != SH_UNIX) || !a.resolved) {
    snprintf(err, errlen, "--metrics: tcp://IP:port or unix:/path expected, not '%s'", addr);
    return -1;
  }
  fd = socket(a.sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) { snprintf(err, errlen, "--metrics: %s", strerror(errno)); return -1; }
  memset(&o, 0, sizeof o);
  o.mode = -1;
  o.ipv6only = -1;
  if (sh_socket_options(fd, a.sa.ss_family, &o, err, errlen) != 0 ||
      sh_socket_bind(fd, (struct sockaddr *)&a.sa, a.salen, &o, &sockfile, err, errlen) != 0 ||
      listen(fd, 64) != 0) {
    char why[200];
    snprintf(why, sizeof why, "%s", err[0] != '\0' ? err : strerror(errno));
    snprintf(err, errlen, "--metrics %s: %s", addr, why);
    close(fd);
    return -1;
  }
  return fd;
}

/* At the top process's exit: a unix:/path of --metrics goes with it (only
** while it is still the file bound; a forked worker ends with _exit). */
static void remove_file (void) {
  sh_sockfile_remove(&sockfile);
}

int sh_collector_start (const char *addr, char *err, size_t errlen) {
  struct sockaddr_un un;
  pthread_t th;
  sigset_t all, old;
  int k;
  err[0] = '\0';
  if (C.started) { snprintf(err, errlen, "--metrics: already started"); return -1; }
  if ((C.http_fd = listen_http(addr, err, errlen)) < 0) return -1;
  C.started = 1;
  atexit(remove_file);
  C.namelen = (size_t)snprintf(C.name, sizeof C.name, "sockhost-metrics-%d-%ld", (int)getpid(),
                               (long)now_mono());
  setenv(SH_COLLECTOR_ENV, C.name, 1);          /* for a reload's exec'd workers */
  memset(&un, 0, sizeof un);
  un.sun_family = AF_UNIX;
  memcpy(un.sun_path + 1, C.name, C.namelen);
  C.unix_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (C.unix_fd < 0 ||
      bind(C.unix_fd, (struct sockaddr *)&un, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + C.namelen)) != 0 ||
      listen(C.unix_fd, 256) != 0) {
    snprintf(err, errlen, "--metrics: cannot make the collector's socket: %s", strerror(errno));
    return -1;
  }
  for (k = 0; k < MAX_CLIENTS; k++) C.clients[k].fd = -1;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);     /* signals are the loop's */
  k = pthread_create(&th, NULL, collector_main, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (k != 0) { snprintf(err, errlen, "--metrics: cannot start its thread: %s", strerror(k)); return -1; }
  pthread_detach(th);
  return 0;
}

/* A scrape's connection is closed by the collector once answered; a copy
** that a fork gave a worker kept it open, and the client waited for the
** end of the answer (seen when a worker was restarted during a scrape).
** The thread is not copied by fork; its state is left as it is, and only
** descriptors set once (the listening ones) or in place (the clients')
** are read. A reporter's socket is not: its end here is not the one whose
** close the collector waits for. */
void sh_collector_forked (void) {
  int k;
  if (!C.started) return;
  if (C.http_fd >= 0) close(C.http_fd);
  if (C.unix_fd >= 0) close(C.unix_fd);
  for (k = 0; k < MAX_CLIENTS; k++)
    if (C.clients[k].fd >= 0) close(C.clients[k].fd);
}

int sh_collector_connect (void) {
  struct sockaddr_un un;
  int fd;
  if (C.namelen == 0) {                         /* exec'd by a reload: from the environment */
    const char *name = getenv(SH_COLLECTOR_ENV);
    size_t len = name != NULL ? strlen(name) : 0;
    if (len == 0 || len >= sizeof C.name) return -1;
    memcpy(C.name, name, len);
    C.namelen = len;
  }
  memset(&un, 0, sizeof un);
  un.sun_family = AF_UNIX;
  memcpy(un.sun_path + 1, C.name, C.namelen);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&un, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + C.namelen)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}
