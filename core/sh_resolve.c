/* sh_resolve.c -- see sh_resolve.h. */
#include "sh_resolve.h"

#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sh_resolver {
  sh_loop *loop;
  struct evdns_base *dns;
};

struct sh_resolve {
  sh_resolver *r;
  struct evdns_getaddrinfo_request *req;   /* NULL once answered */
  struct event *deliver;                   /* hands the answer over from the loop */
  sh_resolve_fn cb;
  void *ctx;
  int cancelled;
  int answered;
  int no_server;                           /* not in the hosts file, no server to ask */
  const char *err;                         /* static text, or NULL */
  sh_addrlist list;
};

sh_resolver *sh_resolver_new (sh_loop *loop, const char *hosts, const char *const *nameservers,
                              char *err, size_t errlen) {
  int flags = EVDNS_BASE_DISABLE_WHEN_INACTIVE;
  sh_resolver *r = calloc(1, sizeof *r);
  if (r == NULL) { snprintf(err, errlen, "out of memory"); return NULL; }
  r->loop = loop;
  if (nameservers == NULL) flags |= EVDNS_BASE_INITIALIZE_NAMESERVERS;
  r->dns = evdns_base_new(sh_loop_base(loop), flags);
  if (r->dns == NULL) {
    snprintf(err, errlen, "cannot start the resolver");
    free(r);
    return NULL;
  }
  for (; nameservers != NULL && *nameservers != NULL; nameservers++) {
    if (evdns_base_nameserver_ip_add(r->dns, *nameservers) != 0) {
      snprintf(err, errlen, "bad name server '%.100s'", *nameservers);
      sh_resolver_free(r);
      return NULL;
    }
  }
  if (hosts != NULL) {
    evdns_base_clear_host_addresses(r->dns);
    if (evdns_base_load_hosts(r->dns, hosts) != 0) {
      snprintf(err, errlen, "cannot read hosts file '%.200s'", hosts);
      sh_resolver_free(r);
      return NULL;
    }
  } else if (nameservers != NULL) {
    evdns_base_load_hosts(r->dns, NULL);     /* /etc/hosts */
  }
  return r;
}

void sh_resolver_free (sh_resolver *r) {
  if (r == NULL) return;
  evdns_base_free(r->dns, 1);
  free(r);
}

static void finish (sh_resolve *q) {
  event_free(q->deliver);
  free(q);
}

static void on_deliver (evutil_socket_t fd, short what, void *arg) {
  sh_resolve *q = arg;
  sh_resolve_fn cb = q->cb;
  void *ctx = q->ctx;
  sh_addrlist list = q->list;
  const char *err = q->err;
  (void)fd; (void)what;
  finish(q);
  cb(err, &list, ctx);
}

static const char *gai_text (int result) {
  switch (result) {
    case EVUTIL_EAI_NONAME: return "name not found";
    case EVUTIL_EAI_AGAIN: return "temporary failure";
    case EVUTIL_EAI_FAIL: return "name server failure";
    case EVUTIL_EAI_MEMORY: return "out of memory";
    case EVUTIL_EAI_CANCEL: return "cancelled";
    default: return "no address";
  }
}

static void on_answer (int result, struct evutil_addrinfo *res, void *arg) {
  sh_resolve *q = arg;
  struct evutil_addrinfo *ai;
  q->req = NULL;
  q->answered = 1;
  if (q->no_server) result = EVUTIL_EAI_NONAME;
  if (result != 0) q->err = gai_text(result);
  for (ai = res; ai != NULL && q->list.n < SH_MAX_ADDRS; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof q->list.sa[0]) continue;
    memcpy(&q->list.sa[q->list.n], ai->ai_addr, ai->ai_addrlen);
    q->list.len[q->list.n++] = (socklen_t)ai->ai_addrlen;
  }
  if (res != NULL) evutil_freeaddrinfo(res);
  if (result == 0 && q->list.n == 0) q->err = "no address";
  if (q->cancelled) { finish(q); return; }
  event_active(q->deliver, EV_TIMEOUT, 0);   /* answer from the loop */
}

sh_resolve *sh_resolve_start (sh_resolver *r, const char *host, int port, int socktype,
                              sh_resolve_fn cb, void *ctx) {
  struct evutil_addrinfo hints;
  char serv[16];
  sh_resolve *q = calloc(1, sizeof *q);
  if (q == NULL) { errno = ENOMEM; return NULL; }
  q->deliver = event_new(sh_loop_base(r->loop), -1, 0, on_deliver, q);
  if (q->deliver == NULL) { free(q); errno = ENOMEM; return NULL; }
  q->r = r;
  q->cb = cb;
  q->ctx = ctx;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  snprintf(serv, sizeof serv, "%d", port);
  q->req = evdns_getaddrinfo(r->dns, host, serv, &hints, on_answer, q);
  if (q->req != NULL && !q->answered && evdns_base_count_nameservers(r->dns) == 0) {
    q->no_server = 1;                        /* it would wait for ever */
    evdns_getaddrinfo_cancel(q->req);
  }
  return q;                                  /* answered or pending */
}

void sh_resolve_cancel (sh_resolve *q) {
  if (q->answered) { finish(q); return; }   /* delivery pending: drop it */
  q->cancelled = 1;
  if (q->req != NULL) evdns_getaddrinfo_cancel(q->req);   /* on_answer frees q */
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
