/* sh_resolve.c -- see sh_resolve.h. The stub resolver: configuration (hosts
** file, resolv.conf), DNS messages, the questions on the wire (UDP, TCP after
** a truncated answer), the line of questions waiting for a place, and the
** look-ups made of them (search list, A and AAAA). */
#include "sh_resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sh_util.h"

#define RESOLV_CONF "/etc/resolv.conf"
#define HOSTS_FILE "/etc/hosts"
#define DNS_PORT 53
#define DEFAULT_TIMEOUT 5.0
#define DEFAULT_ATTEMPTS 2
#define MAX_SEARCH 6             /* search domains kept */
#define MAX_NDOTS 15
#define ID_BUCKETS 4096          /* the table of questions by id */
#define UDP_READS 256            /* datagrams read per wake-up */
#define UDP_BUFSIZE (1 << 20)    /* socket buffers asked for (bursts of answers) */
#define MSG_MAX 4096             /* longest UDP answer read */
#define QMSG_MAX (12 + 255 + 4)  /* a question message */
#define T_A 1
#define T_AAAA 28
#define C_IN 1
#define F_QR 0x8000
#define F_TC 0x0200
#define F_RD 0x0100

typedef struct dnsq dnsq;

/* A FIFO of questions; a question is in at most one at a time. */
typedef struct qlist {
  dnsq *head, *tail;
  int n;
} qlist;

typedef struct host_entry {
  char *name;                    /* lower case */
  int family;
  unsigned char addr[16];
} host_entry;

typedef struct server {
  sh_resolver *r;
  struct sockaddr_storage sa;
  socklen_t len;
  int fd;                        /* UDP, connected; -1 until first used */
  struct event *rev, *wev;       /* readable; writable (armed while 'blocked') */
  qlist blocked;                 /* questions the socket did not take yet */
} server;

struct sh_resolver {
  struct event_base *base;
  server ns[SH_RESOLVE_MAX_SERVERS];
  int nns;
  char *search[MAX_SEARCH];
  int nsearch, ndots;
  struct timeval tv;             /* one try */
  const struct timeval *try_tv;  /* the same, as a common timeout if libevent has one */
  int attempts, max_inflight;
  host_entry *hosts;
  int nhosts, hosts_cap;
  int inflight;                  /* questions holding a place */
  qlist waiting;                 /* questions waiting for a place */
  qlist tcp_waiting;             /* truncated answers waiting for a connection */
  int tcp_open;
  int pumping;
  dnsq *ids[ID_BUCKETS];
  sh_resolve *looks;             /* look-ups going on or being delivered */
};

/* A question's state: where it is. */
enum { Q_IDLE, Q_WAITING, Q_BLOCKED, Q_SENT, Q_TCP_WAIT, Q_TCP, Q_DONE };
/* What a question (or one try of it) came to. */
enum { R_NONE, R_ADDRS, R_NODATA, R_NXDOMAIN, R_TIMEOUT, R_SERVFAIL, R_FAIL };

struct dnsq {
  sh_resolve *look;
  dnsq *prev, *next;             /* in a qlist */
  dnsq *idnext;                  /* in the table of ids */
  struct event *timer;           /* the try's time limit */
  int type;                      /* T_A, T_AAAA */
  int state, result, why;        /* why: what the last failed try came to */
  int tries, server, has_id;
  unsigned short id;
  int naddr;
  unsigned char addr[SH_MAX_ADDRS][16];
  int tcp_fd;
  struct event *tcp_ev;
  unsigned char tcp_len[2];
  unsigned char *tcp_buf;
  size_t tcp_got, tcp_need;
  size_t tcp_sent;               /* bytes of the question sent so far */
  size_t len;                    /* of the message, after its 2-byte TCP length */
  unsigned char msg[2 + QMSG_MAX];
};

struct sh_resolve {
  sh_resolver *r;                /* NULL once the resolver is gone */
  sh_resolve *prev, *next;       /* in r->looks */
  struct event *ev;              /* delivers the answer; meanwhile the A/AAAA skew */
  sh_resolve_fn cb;
  void *ctx;
  int port;
  int done;                      /* answered: the delivery is due */
  int cand;                      /* the search list's name being asked */
  int nodata;                    /* a name had no A or AAAA records */
  const char *err;
  int n;
  unsigned char fam[SH_MAX_ADDRS];
  unsigned char addr[SH_MAX_ADDRS][16];
  dnsq q[2];                     /* A and AAAA */
  char name[256];
};

/* ====================== Lists ====================== */

static void qlist_push (qlist *l, dnsq *q) {
  q->next = NULL;
  q->prev = l->tail;
  if (l->tail != NULL) l->tail->next = q; else l->head = q;
  l->tail = q;
  l->n++;
}

static void qlist_unlink (qlist *l, dnsq *q) {
  if (q->prev != NULL) q->prev->next = q->next; else l->head = q->next;
  if (q->next != NULL) q->next->prev = q->prev; else l->tail = q->prev;
  q->prev = q->next = NULL;
  l->n--;
}

static dnsq *qlist_pop (qlist *l) {
  dnsq *q = l->head;
  if (q != NULL) qlist_unlink(l, q);
  return q;
}

/* ====================== Configuration ====================== */

/* Add a name server: "ip", "ip:port", "[ip6]:port". Returns 0, or -1. */
static int server_add (sh_resolver *r, const char *text) {
  server *s;
  int len = (int)sizeof s->sa;
  if (r->nns >= SH_RESOLVE_MAX_SERVERS) return 0;
  s = &r->ns[r->nns];
  memset(s, 0, sizeof *s);
  if (evutil_parse_sockaddr_port(text, (struct sockaddr *)&s->sa, &len) != 0) return -1;
  if (s->sa.ss_family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&s->sa;
    if (in->sin_port == 0) in->sin_port = htons(DNS_PORT);
  } else if (s->sa.ss_family == AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&s->sa;
    if (in6->sin6_port == 0) in6->sin6_port = htons(DNS_PORT);
  } else {
    return -1;
  }
  s->r = r;
  s->len = (socklen_t)len;
  s->fd = -1;
  r->nns++;
  return 0;
}

static void search_clear (sh_resolver *r) {
  while (r->nsearch > 0) free(r->search[--r->nsearch]);
}

/* "search a b c" or "domain a": the search list from 'rest' on. */
static void search_set (sh_resolver *r, char *rest) {
  char *save = NULL, *w;
  search_clear(r);
  for (w = strtok_r(rest, " \t\r\n", &save); w != NULL && r->nsearch < MAX_SEARCH;
       w = strtok_r(NULL, " \t\r\n", &save)) {
    size_t n = strlen(w);
    if (n > 0 && w[n - 1] == '.') w[--n] = '\0';
    if (n == 0 || n > 200) continue;
    r->search[r->nsearch] = strdup(w);
    if (r->search[r->nsearch] != NULL) r->nsearch++;
  }
}

/* "options ndots:n timeout:n attempts:n ..." */
static void options_set (sh_resolver *r, char *rest) {
  char *save = NULL, *w;
  for (w = strtok_r(rest, " \t\r\n", &save); w != NULL; w = strtok_r(NULL, " \t\r\n", &save)) {
    int v;
    if (sscanf(w, "ndots:%d", &v) == 1) r->ndots = v < 0 ? 0 : v > MAX_NDOTS ? MAX_NDOTS : v;
    else if (sscanf(w, "timeout:%d", &v) == 1 && v > 0) r->tv.tv_sec = v > 60 ? 60 : v;
    else if (sscanf(w, "attempts:%d", &v) == 1 && v > 0)
      r->attempts = v > SH_RESOLVE_MAX_ATTEMPTS ? SH_RESOLVE_MAX_ATTEMPTS : v;
  }
}

/* The system's name servers, search list and options. No file, or no
** "nameserver" in it: 127.0.0.1, as the C library does. */
static void resolv_conf_load (sh_resolver *r, const char *path) {
  char line[1024];
  FILE *f = fopen(path, "r");
  while (f != NULL && fgets(line, sizeof line, f) != NULL) {
    char *save = NULL, *key = strtok_r(line, " \t\r\n", &save);
    char *rest = save;
    if (key == NULL || key[0] == '#' || key[0] == ';') continue;
    if (strcmp(key, "nameserver") == 0) {
      char *ip = strtok_r(NULL, " \t\r\n", &save);
      if (ip != NULL) (void)server_add(r, ip);
    } else if (strcmp(key, "search") == 0 || strcmp(key, "domain") == 0) {
      search_set(r, rest);
    } else if (strcmp(key, "options") == 0) {
      options_set(r, rest);
    }
  }
  if (f != NULL) fclose(f);
  if (r->nns == 0) (void)server_add(r, "127.0.0.1");
}

static int host_add (sh_resolver *r, const char *name, int family, const unsigned char *addr) {
  host_entry *e;
  char *p;
  if (r->nhosts == r->hosts_cap) {
    int cap = r->hosts_cap ? r->hosts_cap * 2 : 32;
    host_entry *h = realloc(r->hosts, (size_t)cap * sizeof *h);
    if (h == NULL) return -1;
    r->hosts = h;
    r->hosts_cap = cap;
  }
  e = &r->hosts[r->nhosts];
  e->name = strdup(name);
  if (e->name == NULL) return -1;
  for (p = e->name; *p; p++) if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
  e->family = family;
  memcpy(e->addr, addr, family == AF_INET ? 4 : 16);
  r->nhosts++;
  return 0;
}

/* One line of a hosts file: "address name alias ...". */
static int hosts_line (sh_resolver *r, char *line) {
  unsigned char addr[16];
  char *save = NULL, *hash = strchr(line, '#'), *ip, *name;
  int family = AF_INET;
  if (hash != NULL) *hash = '\0';
  ip = strtok_r(line, " \t\r\n", &save);
  if (ip == NULL) return 0;
  if (inet_pton(AF_INET, ip, addr) != 1) {
    family = AF_INET6;
    if (inet_pton(AF_INET6, ip, addr) != 1) return 0;
  }
  while ((name = strtok_r(NULL, " \t\r\n", &save)) != NULL)
    if (host_add(r, name, family, addr) != 0) return -1;
  return 0;
}

/* Read a hosts file. Returns 0, or -1 (unreadable, or out of memory). */
static int hosts_load (sh_resolver *r, const char *path) {
  char line[1024];
  int rc = 0;
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  while (rc == 0 && fgets(line, sizeof line, f) != NULL) rc = hosts_line(r, line);
  fclose(f);
  return rc;
}

static void hosts_free (sh_resolver *r) {
  while (r->nhosts > 0) free(r->hosts[--r->nhosts].name);
  free(r->hosts);
  r->hosts = NULL;
}

/* ====================== Answers kept by a look-up ====================== */

static void look_add (sh_resolve *L, int family, const unsigned char *addr) {
  if (L->n >= SH_MAX_ADDRS) return;
  L->fam[L->n] = (unsigned char)family;
  memcpy(L->addr[L->n++], addr, family == AF_INET ? 4 : 16);
}

/* A literal address: kept as it is. */
static int look_literal (sh_resolve *L) {
  unsigned char addr[16];
  if (inet_pton(AF_INET, L->name, addr) == 1) look_add(L, AF_INET, addr);
  else if (inet_pton(AF_INET6, L->name, addr) == 1) look_add(L, AF_INET6, addr);
  return L->n > 0;
}

/* The hosts file's addresses for the name (no final dot, any case), in
** the file's order. */
static int look_hosts (sh_resolve *L) {
  const sh_resolver *r = L->r;
  char name[256];
  size_t n = strlen(L->name);
  int i;
  memcpy(name, L->name, n + 1);
  if (n > 0 && name[n - 1] == '.') name[n - 1] = '\0';
  for (i = 0; i < r->nhosts; i++)
    if (strcasecmp(r->hosts[i].name, name) == 0) look_add(L, r->hosts[i].family, r->hosts[i].addr);
  return L->n > 0;
}

/* The answer as socket addresses with the port set. */
static void look_list (const sh_resolve *L, sh_addrlist *list) {
  int i;
  list->n = 0;
  for (i = 0; i < L->n; i++) {
    struct sockaddr_storage *ss = &list->sa[i];
    memset(ss, 0, sizeof *ss);
    if (L->fam[i] == AF_INET) {
      struct sockaddr_in *in = (struct sockaddr_in *)ss;
      in->sin_family = AF_INET;
      in->sin_port = htons((unsigned short)L->port);
      memcpy(&in->sin_addr, L->addr[i], 4);
      list->len[i] = sizeof *in;
    } else {
      struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons((unsigned short)L->port);
      memcpy(&in6->sin6_addr, L->addr[i], 16);
      list->len[i] = sizeof *in6;
    }
  }
  list->n = L->n;
}

/* ====================== Messages ====================== */

static unsigned get16 (const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }

static void put16 (unsigned char *p, unsigned v) {
  p[0] = (unsigned char)(v >> 8);
  p[1] = (unsigned char)v;
}

/* 'name' (no final dot) in the wire's labels, its letters' case randomised
** (so that a forged answer must guess it too). Returns the length, or 0 for
** a name that cannot be asked (an empty label, one over 63 bytes, over 255 in
** all). */
static size_t name_wire (const char *name, unsigned char *out) {
  unsigned char rnd[32];
  size_t o = 0, i = 0, bit = 0;
  evutil_secure_rng_get_bytes(rnd, sizeof rnd);
  while (name[i] != '\0') {
    size_t n = strcspn(name + i, "."), k;
    if (n == 0 || n > 63 || o + 1 + n + 1 > 255) return 0;
    out[o++] = (unsigned char)n;
    for (k = 0; k < n; k++, bit++) {
      unsigned char c = (unsigned char)name[i + k];
      int flip = rnd[(bit / 8) % sizeof rnd] >> (bit % 8) & 1;
      if (flip && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) c ^= 0x20;
      out[o++] = c;
    }
    i += n;
    if (name[i] == '.') i++;
  }
  if (o == 0) return 0;
  out[o++] = 0;
  return o;
}

/* The question message for q's type about 'name' (the id is set per try).
** Returns 0, or -1 for a name that cannot be asked. */
static int question_build (dnsq *q, const char *name) {
  unsigned char *m = q->msg + 2;
  size_t n;
  memset(m, 0, 12);
  put16(m + 2, F_RD);
  put16(m + 4, 1);
  n = name_wire(name, m + 12);
  if (n == 0) return -1;
  put16(m + 12 + n, (unsigned)q->type);
  put16(m + 12 + n + 2, C_IN);
  q->len = 12 + n + 4;
  put16(q->msg, (unsigned)q->len);
  return 0;
}

/* Skip a name at m[*o]; returns 0, or -1 when it runs past 'n'. */
static int name_skip (const unsigned char *m, size_t n, size_t *o) {
  while (*o < n) {
    unsigned c = m[*o];
    if (c == 0) { *o += 1; return 0; }
    if ((c & 0xC0) == 0xC0) { *o += 2; return *o <= n ? 0 : -1; }
    if (c & 0xC0) return -1;
    *o += 1 + c;
  }
  return -1;
}

/* Keep the addresses of q's type from the answer section at m[o]. Returns 0,
** or -1 for a malformed section. */
static int answers_take (dnsq *q, const unsigned char *m, size_t n, size_t o, unsigned count) {
  size_t want = q->type == T_A ? 4 : 16;
  q->naddr = 0;
  while (count-- > 0) {
    unsigned type, klass, rdlen;
    if (name_skip(m, n, &o) != 0 || o + 10 > n) return -1;
    type = get16(m + o);
    klass = get16(m + o + 2);
    rdlen = get16(m + o + 8);
    o += 10;
    if (o + rdlen > n) return -1;
    if ((int)type == q->type && klass == C_IN && rdlen == want && q->naddr < SH_MAX_ADDRS)
      memcpy(q->addr[q->naddr++], m + o, want);
    o += rdlen;
  }
  return 0;
}

/* Is m[0..n) the answer to q's question (the id, and the question as sent,
** letter case included)? If so, its flags in *flags and q's addresses taken:
** returns 0, or 1 for a malformed answer. -1: not an answer to q. */
static int answer_parse (dnsq *q, const unsigned char *m, size_t n, unsigned *flags) {
  const unsigned char *ask = q->msg + 2;
  if (n < q->len || get16(m) != q->id) return -1;
  *flags = get16(m + 2);
  if (!(*flags & F_QR) || (*flags >> 11 & 0xF) != 0 || get16(m + 4) != 1) return -1;
  if (memcmp(m + 12, ask + 12, q->len - 12) != 0) return -1;
  return answers_take(q, m, n, q->len, get16(m + 6)) == 0 ? 0 : 1;
}

/* ====================== Questions by id ====================== */

static dnsq *id_find (const sh_resolver *r, unsigned id) {
  dnsq *q = r->ids[id % ID_BUCKETS];
  while (q != NULL && q->id != id) q = q->idnext;
  return q;
}

/* Give q an id no question out has, and file it. */
static void id_take (sh_resolver *r, dnsq *q) {
  unsigned short id;
  do evutil_secure_rng_get_bytes(&id, sizeof id); while (id_find(r, id) != NULL);
  q->id = id;
  put16(q->msg + 2, id);
  q->idnext = r->ids[id % ID_BUCKETS];
  r->ids[id % ID_BUCKETS] = q;
  q->has_id = 1;
}

static void id_drop (sh_resolver *r, dnsq *q) {
  dnsq **p = &r->ids[q->id % ID_BUCKETS];
  if (!q->has_id) return;
  while (*p != q) p = &(*p)->idnext;
  *p = q->idnext;
  q->has_id = 0;
}

/* ====================== A question's try ====================== */

static void look_step(sh_resolve *L);

static sh_resolver *q_resolver (const dnsq *q) { return q->look->r; }

static void tcp_close (sh_resolver *r, dnsq *q) {
  if (q->tcp_ev != NULL) event_free(q->tcp_ev);
  if (q->tcp_fd >= 0) close(q->tcp_fd);
  free(q->tcp_buf);
  q->tcp_ev = NULL;
  q->tcp_fd = -1;
  q->tcp_buf = NULL;
  r->tcp_open--;
}

/* Take q out of wherever it is; free its place if it held one. */
static void question_stop (dnsq *q) {
  sh_resolver *r = q_resolver(q);
  int held = 1;
  switch (q->state) {
    case Q_WAITING: qlist_unlink(&r->waiting, q); held = 0; break;
    case Q_BLOCKED: qlist_unlink(&r->ns[q->server].blocked, q); break;
    case Q_SENT: break;
    case Q_TCP_WAIT: qlist_unlink(&r->tcp_waiting, q); break;
    case Q_TCP: tcp_close(r, q); break;
    default: held = 0; break;
  }
  if (held) {
    id_drop(r, q);
    evtimer_del(q->timer);
    r->inflight--;
  }
  q->state = Q_IDLE;
}

/* q came to 'result': it is done; its look-up may be too. */
static void question_end (dnsq *q, int result) {
  question_stop(q);
  q->result = result;
  q->state = Q_DONE;
  look_step(q->look);
}

/* A try failed ('why'): to the back of the line for the next one, or done
** when none is left. */
static void try_fail (dnsq *q, int why) {
  sh_resolver *r = q_resolver(q);
  question_stop(q);
  q->why = why;
  if (q->tries >= r->attempts * r->nns) {
    question_end(q, why);
    return;
  }
  q->state = Q_WAITING;
  qlist_push(&r->waiting, q);
}

static void question_wait (dnsq *q) {
  sh_resolver *r = q_resolver(q);
  q->state = Q_WAITING;
  qlist_push(&r->waiting, q);
}

/* ---------------- UDP ---------------- */

static void on_udp_read(evutil_socket_t fd, short what, void *arg);
static void on_udp_write(evutil_socket_t fd, short what, void *arg);

static void server_close (server *s) {
  if (s->rev != NULL) event_free(s->rev);
  if (s->wev != NULL) event_free(s->wev);
  if (s->fd >= 0) close(s->fd);
  s->rev = s->wev = NULL;
  s->fd = -1;
}

/* The server's UDP socket, connected to it (so only its datagrams come in).
** Returns 0, or -1 (out of descriptors, say: the try then times out). */
static int server_open (server *s) {
  int fd, size = UDP_BUFSIZE;
  if (s->fd >= 0) return 0;
  fd = socket(s->sa.ss_family, SOCK_DGRAM, 0);
  if (fd < 0) return -1;
  s->fd = fd;
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  s->rev = event_new(s->r->base, fd, EV_READ | EV_PERSIST, on_udp_read, s);
  s->wev = event_new(s->r->base, fd, EV_WRITE, on_udp_write, s);
  if (sh_fd_prepare(fd) != 0 || connect(fd, (struct sockaddr *)&s->sa, s->len) != 0 ||
      s->rev == NULL || s->wev == NULL || event_add(s->rev, NULL) != 0) {
    server_close(s);
    return -1;
  }
  return 0;
}

/* Send q's message: 1 when the socket would block, else 0 (sent, or lost to
** an error: the try's time limit deals with both). */
static int udp_send (server *s, dnsq *q) {
  if (send(s->fd, q->msg + 2, q->len, 0) >= 0) return 0;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS;
}

static void udp_block (server *s, dnsq *q) {
  q->state = Q_BLOCKED;
  qlist_push(&s->blocked, q);
  if (s->blocked.n == 1) event_add(s->wev, NULL);
}

/* A try: a place, an id, the time limit, and the question out over UDP. */
static void try_begin (sh_resolver *r, dnsq *q) {
  server *s;
  q->server = q->tries % r->nns;
  q->tries++;
  s = &r->ns[q->server];
  r->inflight++;
  id_take(r, q);
  evtimer_add(q->timer, r->try_tv);
  q->state = Q_SENT;
  if (server_open(s) != 0) return;
  if (s->blocked.n > 0 || udp_send(s, q)) udp_block(s, q);
}

/* Give waiting questions the places that are free, first come first. */
static void pump (sh_resolver *r) {
  if (r->pumping) return;
  r->pumping = 1;
  while (r->inflight < r->max_inflight && r->waiting.head != NULL)
    try_begin(r, qlist_pop(&r->waiting));
  r->pumping = 0;
}

static void on_udp_write (evutil_socket_t fd, short what, void *arg) {
  server *s = arg;
  (void)fd; (void)what;
  while (s->blocked.head != NULL) {
    if (udp_send(s, s->blocked.head)) { event_add(s->wev, NULL); return; }
    qlist_pop(&s->blocked)->state = Q_SENT;
  }
}

static void tcp_begin(dnsq *q);

/* An answer to q (over TCP when 'tcp'): the end, the next try, or TCP. */
static void answer_take (dnsq *q, int parsed, unsigned flags, int tcp) {
  unsigned rcode = flags & 0xF;
  if (parsed != 0) try_fail(q, R_FAIL);
  else if ((flags & F_TC) && !tcp) tcp_begin(q);
  else if (rcode == 0) question_end(q, q->naddr > 0 ? R_ADDRS : R_NODATA);
  else if (rcode == 3) question_end(q, R_NXDOMAIN);
  else try_fail(q, rcode == 2 ? R_SERVFAIL : R_FAIL);
}

static void udp_answer (server *s, const unsigned char *m, size_t n) {
  sh_resolver *r = s->r;
  dnsq *q;
  unsigned flags = 0;
  int parsed;
  if (n < 12) return;
  q = id_find(r, get16(m));
  if (q == NULL || q->state != Q_SENT || &r->ns[q->server] != s) return;
  parsed = answer_parse(q, m, n, &flags);
  if (parsed >= 0) answer_take(q, parsed, flags, 0);   /* else forged, or stale */
}

static void service(sh_resolver *r);

static void on_udp_read (evutil_socket_t fd, short what, void *arg) {
  server *s = arg;
  sh_resolver *r = s->r;
  unsigned char m[MSG_MAX];
  int i;
  (void)what;
  for (i = 0; i < UDP_READS; i++) {
    ssize_t n = recv(fd, m, sizeof m, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n >= 0) udp_answer(s, m, (size_t)n);   /* errors (a refusal): the tries time out */
  }
  service(r);
}

static void on_try_timeout (evutil_socket_t fd, short what, void *arg) {
  dnsq *q = arg;
  sh_resolver *r = q_resolver(q);
  (void)fd; (void)what;
  try_fail(q, R_TIMEOUT);
  service(r);
}

/* ---------------- TCP, after a truncated answer ---------------- */

/* The same try goes on over TCP, with a time limit of its own. */
static void tcp_begin (dnsq *q) {
  sh_resolver *r = q_resolver(q);
  id_drop(r, q);
  q->naddr = 0;                            /* what a truncated answer held */
  q->state = Q_TCP_WAIT;
  qlist_push(&r->tcp_waiting, q);
  evtimer_add(q->timer, r->try_tv);
}

static void on_tcp_write(evutil_socket_t fd, short what, void *arg);
static void on_tcp_read(evutil_socket_t fd, short what, void *arg);

/* Connect to q's server. Returns 0, or -1. */
static int tcp_connect (sh_resolver *r, dnsq *q) {
  const server *s = &r->ns[q->server];
  int fd = socket(s->sa.ss_family, SOCK_STREAM, 0);
  q->state = Q_TCP;
  q->tcp_fd = fd;
  q->tcp_got = q->tcp_need = q->tcp_sent = 0;
  r->tcp_open++;
  if (fd < 0 || sh_fd_prepare(fd) != 0) return -1;
  if (connect(fd, (const struct sockaddr *)&s->sa, s->len) != 0 && errno != EINPROGRESS) return -1;
  q->tcp_ev = event_new(r->base, fd, EV_WRITE, on_tcp_write, q);
  if (q->tcp_ev == NULL || event_add(q->tcp_ev, NULL) != 0) return -1;
  return 0;
}

static void tcp_pump (sh_resolver *r) {
  while (r->tcp_open < SH_RESOLVE_TCP && r->tcp_waiting.head != NULL) {
    dnsq *q = qlist_pop(&r->tcp_waiting);
    if (tcp_connect(r, q) != 0) try_fail(q, R_FAIL);
  }
}

/* Send what is left of the question. Returns 1 when it is all out, 0 for
** more to send when the socket has room, -1 on an error. */
static int tcp_send (dnsq *q) {
  size_t total = 2 + (size_t)q->len;
  while (q->tcp_sent < total) {
    ssize_t n = send(q->tcp_fd, q->msg + q->tcp_sent, total - q->tcp_sent, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : errno == EINTR ? 0 : -1;
    q->tcp_sent += (size_t)n;
  }
  return 1;
}

/* Connected (the first time), or room to write: send the question (a
** send may take only part of it), then read. */
static void on_tcp_write (evutil_socket_t fd, short what, void *arg) {
  dnsq *q = arg;
  sh_resolver *r = q_resolver(q);
  int err = 0, sent;
  socklen_t len = sizeof err;
  (void)what;
  if (q->tcp_sent == 0 && (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0))
    sent = -1;
  else
    sent = tcp_send(q);
  if (sent < 0) {
    try_fail(q, R_FAIL);
  } else if (sent == 0) {
    if (event_add(q->tcp_ev, NULL) != 0) try_fail(q, R_FAIL);
  } else {
    event_free(q->tcp_ev);
    q->tcp_ev = event_new(r->base, fd, EV_READ | EV_PERSIST, on_tcp_read, q);
    if (q->tcp_ev == NULL || event_add(q->tcp_ev, NULL) != 0) try_fail(q, R_FAIL);
  }
  service(r);
}

/* Read what is there of the answer: its length, then the message. Returns 1
** when complete, 0 for more to come, -1 on an error or an early end. */
static int tcp_fill (dnsq *q) {
  for (;;) {
    unsigned char *to = q->tcp_got < 2 ? q->tcp_len + q->tcp_got : q->tcp_buf + q->tcp_got - 2;
    size_t want = q->tcp_got < 2 ? 2 - q->tcp_got : q->tcp_need - (q->tcp_got - 2);
    ssize_t n = recv(q->tcp_fd, to, want, 0);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    if (n == 0) return -1;
    q->tcp_got += (size_t)n;
    if (q->tcp_got == 2) {
      q->tcp_need = get16(q->tcp_len);
      if (q->tcp_need < 12 || (q->tcp_buf = malloc(q->tcp_need)) == NULL) return -1;
    }
    if (q->tcp_got > 2 && q->tcp_got - 2 == q->tcp_need) return 1;
  }
}

static void on_tcp_read (evutil_socket_t fd, short what, void *arg) {
  dnsq *q = arg;
  sh_resolver *r = q_resolver(q);
  int done = tcp_fill(q);
  (void)fd; (void)what;
  if (done < 0) {
    try_fail(q, R_FAIL);
  } else if (done > 0) {
    unsigned flags = 0;
    int parsed = answer_parse(q, q->tcp_buf, q->tcp_need, &flags);
    if (parsed < 0) try_fail(q, R_FAIL);
    else answer_take(q, parsed, flags, 1);
  }
  service(r);
}

/* After anything that may have freed a place: connections, then places. */
static void service (sh_resolver *r) {
  tcp_pump(r);
  pump(r);
}

/* ====================== Look-ups ====================== */

static const char *result_text (int result) {
  switch (result) {
    case R_TIMEOUT: return "timeout";
    case R_SERVFAIL: return "temporary failure";
    default: return "name server failure";
  }
}

/* The answer is known: stop asking, deliver it from the loop. */
static void look_finish (sh_resolve *L, const char *err) {
  question_stop(&L->q[0]);
  question_stop(&L->q[1]);
  L->err = err;
  L->done = 1;
  event_del(L->ev);
  event_active(L->ev, EV_TIMEOUT, 0);
}

/* Keep the addresses the questions found: A's, then AAAA's. */
static void look_gather (sh_resolve *L) {
  int k, i;
  for (k = 0; k < 2; k++)
    for (i = 0; L->q[k].result == R_ADDRS && i < L->q[k].naddr; i++)
      look_add(L, L->q[k].type == T_A ? AF_INET : AF_INET6, L->q[k].addr[i]);
}

/* The 'i'th name of the search list for L's name into 'out' (no final dot):
** as given first when it has 'ndots' dots or more, else last; only as given
** when it ends with a dot. Returns 0 when there is none. */
static int search_name (const sh_resolve *L, int i, char *out, size_t n) {
  const sh_resolver *r = L->r;
  size_t len = strlen(L->name);
  int dots = 0, first, k;
  const char *p;
  if (len > 0 && L->name[len - 1] == '.') {
    if (i > 0 || len == 1) return 0;
    snprintf(out, n, "%.*s", (int)(len - 1), L->name);
    return 1;
  }
  for (p = L->name; *p; p++) dots += *p == '.';
  first = dots >= r->ndots;
  if (i > r->nsearch) return 0;
  if ((first && i == 0) || (!first && i == r->nsearch)) { snprintf(out, n, "%s", L->name); return 1; }
  k = first ? i - 1 : i;
  snprintf(out, n, "%s.%s", L->name, r->search[k]);
  return 1;
}

/* Ask the search list's next name that can be asked; when none is left,
** the answer is "no address" or "name not found". */
static void look_ask_next (sh_resolve *L) {
  char name[600];
  while (search_name(L, L->cand, name, sizeof name)) {
    int k, ok = 1;
    for (k = 0; k < 2 && ok; k++) {
      dnsq *q = &L->q[k];
      q->tries = 0;
      q->naddr = 0;
      q->result = q->why = R_NONE;
      ok = question_build(q, name) == 0;
    }
    if (ok) {
      question_wait(&L->q[0]);
      question_wait(&L->q[1]);
      return;
    }
    L->cand++;
  }
  look_finish(L, L->nodata ? "no address" : "name not found");
}

/* Both questions about one name are done. */
static void look_name_done (sh_resolve *L) {
  int k;
  look_gather(L);
  if (L->n > 0) { look_finish(L, NULL); return; }
  for (k = 0; k < 2; k++) {
    int res = L->q[k].result;
    if (res != R_NXDOMAIN && res != R_NODATA) { look_finish(L, result_text(res)); return; }
    if (res == R_NODATA) L->nodata = 1;
  }
  L->cand++;
  look_ask_next(L);
}

/* A question ended: the name is done, or one has addresses and the other
** gets SH_RESOLVE_SKEW more seconds. */
static void look_step (sh_resolve *L) {
  const dnsq *a = &L->q[0], *b = &L->q[1];
  if (a->state == Q_DONE && b->state == Q_DONE) {
    look_name_done(L);
  } else if ((a->state == Q_DONE && a->result == R_ADDRS) ||
             (b->state == Q_DONE && b->result == R_ADDRS)) {
    struct timeval tv = sh_timeval(SH_RESOLVE_SKEW);
    event_add(L->ev, &tv);
  }
}

static void look_unlink (sh_resolve *L) {
  sh_resolver *r = L->r;
  if (r == NULL) return;
  if (L->prev != NULL) L->prev->next = L->next; else r->looks = L->next;
  if (L->next != NULL) L->next->prev = L->prev;
  L->prev = L->next = NULL;
}

static void look_free (sh_resolve *L) {
  int k;
  look_unlink(L);
  for (k = 0; k < 2; k++) if (L->q[k].timer != NULL) event_free(L->q[k].timer);
  if (L->ev != NULL) event_free(L->ev);
  free(L);
}

/* L's one event: the answer's delivery, or the end of the skew (the answer
** then goes with the addresses there are). */
static void on_look_event (evutil_socket_t fd, short what, void *arg) {
  sh_resolve *L = arg;
  sh_resolve_fn cb = L->cb;
  void *ctx = L->ctx;
  const char *err = L->err;
  sh_addrlist list;
  (void)fd; (void)what;
  if (!L->done) {
    look_gather(L);
    look_finish(L, NULL);
    service(L->r);
    return;
  }
  look_list(L, &list);
  look_free(L);
  cb(err, &list, ctx);
}

static sh_resolve *look_new (sh_resolver *r, const char *host, int port, sh_resolve_fn cb,
                             void *ctx) {
  sh_resolve *L = calloc(1, sizeof *L);
  int k;
  if (L == NULL) return NULL;
  L->ev = event_new(r->base, -1, 0, on_look_event, L);
  for (k = 0; k < 2; k++) {
    L->q[k].look = L;
    L->q[k].type = k == 0 ? T_A : T_AAAA;
    L->q[k].tcp_fd = -1;
    L->q[k].timer = evtimer_new(r->base, on_try_timeout, &L->q[k]);
  }
  L->r = r;
  L->cb = cb;
  L->ctx = ctx;
  L->port = port;
  snprintf(L->name, sizeof L->name, "%s", host);
  L->next = r->looks;
  if (r->looks != NULL) r->looks->prev = L;
  r->looks = L;
  if (L->ev == NULL || L->q[0].timer == NULL || L->q[1].timer == NULL) {
    look_free(L);
    return NULL;
  }
  return L;
}

sh_resolve *sh_resolve_start (sh_resolver *r, const char *host, int port, int socktype,
                              sh_resolve_fn cb, void *ctx) {
  sh_resolve *L = look_new(r, host, port, cb, ctx);
  (void)socktype;                          /* addresses serve any socket type */
  if (L == NULL) { errno = ENOMEM; return NULL; }
  if (strlen(host) >= sizeof L->name) look_finish(L, "name not found");
  else if (look_literal(L) || look_hosts(L)) look_finish(L, NULL);
  else if (r->nns == 0) look_finish(L, "name not found");
  else look_ask_next(L);
  service(r);
  return L;                                /* answered or going on */
}

void sh_resolve_cancel (sh_resolve *L) {
  sh_resolver *r = L->r;
  if (r != NULL) {
    question_stop(&L->q[0]);
    question_stop(&L->q[1]);
  }
  look_free(L);
  if (r != NULL) service(r);
}

/* ====================== Resolvers ====================== */

static int conf_apply (sh_resolver *r, const sh_resolver_conf *c, char *err, size_t errlen) {
  const char *const *ns;
  if (c->nameservers == NULL) resolv_conf_load(r, RESOLV_CONF);
  for (ns = c->nameservers; ns != NULL && *ns != NULL; ns++) {
    if (server_add(r, *ns) != 0) {
      snprintf(err, errlen, "bad name server '%.100s'", *ns);
      return -1;
    }
  }
  if (c->hosts != NULL && hosts_load(r, c->hosts) != 0) {
    snprintf(err, errlen, "cannot read hosts file '%.200s'", c->hosts);
    return -1;
  }
  if (c->hosts == NULL) (void)hosts_load(r, HOSTS_FILE);
  if (c->timeout > 0) r->tv = sh_timeval(c->timeout > SH_RESOLVE_MAX_TIMEOUT ? SH_RESOLVE_MAX_TIMEOUT : c->timeout);
  if (c->attempts > 0) r->attempts = c->attempts > SH_RESOLVE_MAX_ATTEMPTS ? SH_RESOLVE_MAX_ATTEMPTS : c->attempts;
  if (c->max_inflight > 0)
    r->max_inflight = c->max_inflight > SH_RESOLVE_MAX_INFLIGHT ? SH_RESOLVE_MAX_INFLIGHT : c->max_inflight;
  return 0;
}

sh_resolver *sh_resolver_new (sh_loop *loop, const sh_resolver_conf *conf, char *err, size_t errlen) {
  static const sh_resolver_conf defaults;
  sh_resolver *r = calloc(1, sizeof *r);
  if (r == NULL) { snprintf(err, errlen, "out of memory"); return NULL; }
  r->base = sh_loop_base(loop);
  r->ndots = 1;
  r->tv = sh_timeval(DEFAULT_TIMEOUT);
  r->attempts = DEFAULT_ATTEMPTS;
  r->max_inflight = SH_RESOLVE_INFLIGHT;
  if (conf_apply(r, conf != NULL ? conf : &defaults, err, errlen) != 0) {
    sh_resolver_free(r);
    return NULL;
  }
  r->try_tv = event_base_init_common_timeout(r->base, &r->tv);
  if (r->try_tv == NULL) r->try_tv = &r->tv;
  return r;
}

void sh_resolver_free (sh_resolver *r) {
  sh_resolve *L, *next;
  int i;
  if (r == NULL) return;
  for (L = r->looks; L != NULL; L = next) {
    next = L->next;
    if (!L->done) { L->n = 0; look_finish(L, "cancelled"); }
    L->r = NULL;
    L->prev = L->next = NULL;
  }
  for (i = 0; i < r->nns; i++) server_close(&r->ns[i]);
  search_clear(r);
  hosts_free(r);
  free(r);
}

/* ====================== Trying each address ====================== */

struct sh_try {
  sh_resolve *rq;          /* resolution in flight, or NULL */
  sh_try_fn op;
  sh_tried_fn cb;
  void *ctx;
  int next;                /* the next address to try */
  sh_addrlist list;        /* the addresses */
  char host[256];          /* a host name: for "cannot resolve 'host'" */
  char err[320];           /* the last failure */
};

/* Try the addresses from the next on, until one works or goes on later. */
static int try_walk (sh_try *t) {
  int r = SH_TRY_FAIL;
  while (r == SH_TRY_FAIL && t->next < t->list.n) {
    int i = t->next++;
    r = t->op((const struct sockaddr *)&t->list.sa[i], t->list.len[i], t->ctx,
              t->err, sizeof t->err);
  }
  return r;
}

/* The end (from the loop): free the walk, then tell the owner. */
static void try_end (sh_try *t, int ok) {
  sh_tried_fn cb = t->cb;
  void *ctx = t->ctx;
  char err[sizeof t->err];
  memcpy(err, t->err, sizeof err);
  free(t);
  cb(ok ? NULL : err, ctx);
}

static void try_go_on (sh_try *t) {
  int r = try_walk(t);
  if (r != SH_TRY_LATER) try_end(t, r == SH_TRY_OK);
}

static void on_addrs (const char *err, const sh_addrlist *list, void *ctx) {
  sh_try *t = ctx;
  t->rq = NULL;
  if (err != NULL) {
    snprintf(t->err, sizeof t->err, "cannot resolve '%s': %s", t->host, err);
    try_end(t, 0);
    return;
  }
  t->list = *list;
  try_go_on(t);
}

/* A literal or a Unix path: try it now. */
static int try_now (sh_try *t, const sh_addr *a, sh_try **tp, char *err, size_t errlen) {
  int r;
  t->list.n = 1;
  memcpy(&t->list.sa[0], &a->sa, a->salen);
  t->list.len[0] = a->salen;
  r = try_walk(t);
  if (r == SH_TRY_LATER) { *tp = t; return r; }
  snprintf(err, errlen, "%s", t->err);
  free(t);
  return r;
}

int sh_try_start (sh_resolver *r, const sh_addr *a, int socktype, sh_try_fn op,
                  sh_tried_fn cb, void *ctx, sh_try **tp, char *err, size_t errlen) {
  sh_try *t = calloc(1, sizeof *t);
  *tp = NULL;
  if (t == NULL) { snprintf(err, errlen, "out of memory"); return SH_TRY_FAIL; }
  t->op = op;
  t->cb = cb;
  t->ctx = ctx;
  snprintf(t->err, sizeof t->err, "no address");
  if (a->resolved) return try_now(t, a, tp, err, errlen);
  snprintf(t->host, sizeof t->host, "%s", a->host);
  t->rq = sh_resolve_start(r, a->host, a->port, socktype, on_addrs, t);
  if (t->rq == NULL) {
    free(t);
    snprintf(err, errlen, "out of memory");
    return SH_TRY_FAIL;
  }
  *tp = t;
  return SH_TRY_LATER;
}

void sh_try_result (sh_try *t, const char *err) {
  if (err == NULL) { try_end(t, 1); return; }
  snprintf(t->err, sizeof t->err, "%s", err);
  try_go_on(t);
}

void sh_try_cancel (sh_try *t) {
  if (t->rq != NULL) sh_resolve_cancel(t->rq);
  free(t);
}
