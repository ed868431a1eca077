/* sh_tls.c -- TLS contexts, handshakes and session details; see sh_tls.h.
**
** What it deliberately does not do: renegotiation (off), session tickets
** shared between processes, OCSP, certificate revocation lists. */
#include "sh_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "sh_transport.h"
#include "sh_util.h"

/* A name served with its own context (SNI). */
typedef struct sni_entry {
  char *name;              /* "a.example" or "*.example" */
  SSL_CTX *ctx;
} sni_entry;

struct sh_tls_ctx {
  int refs;                /* the owner + each running handshake */
  int server;
  int verify;
  int sys;                 /* a client that checks against the system store */
  int has_store;           /* ... and has it (sys_store, below) */
  SSL_CTX *ctx;            /* the default context */
  sni_entry *sni;          /* more certificates, by name */
  int nsni;
  unsigned char *alpn;     /* server: protocols offered, in preference order */
  size_t alpn_len;
};

struct sh_tls_hs {
  sh_loop_item item;       /* first: destroyed with the loop if still running */
  sh_loop *loop;
  sh_tls_ctx *t;           /* a reference */
  int fd;                  /* ours until the bufferevent has it, else -1 */
  struct bufferevent *bev;
  struct event *timer;     /* the deadline, or NULL */
  struct event *wait;      /* waiting for the system store, or NULL */
  char *name;              /* ... with the name to check, or NULL */
  sh_tls_done_fn cb;
  void *arg;
};

/* ====================== Contexts ====================== */

/* "why: detail" from the first error OpenSSL has queued (then cleared). */
static void ssl_error (char *err, size_t errlen, const char *why) {
  unsigned long e, last = 0, sys = 0;
  const char *r = NULL;
  while ((e = ERR_get_error()) != 0) {
    if (ERR_SYSTEM_ERROR(e) && sys == 0) sys = e;
    last = e;
  }
  if (sys != 0) r = sh_strerror(ERR_GET_REASON(sys));   /* "no such file or directory" */
  else if (last != 0) r = ERR_reason_error_string(last);
  if (r != NULL) snprintf(err, errlen, "%s: %s", why, r);
  else snprintf(err, errlen, "%s", why);
  ERR_clear_error();
}

/* Server ALPN: the first of our protocols that the client offers. */
static int on_alpn (SSL *ssl, const unsigned char **out, unsigned char *outlen,
                    const unsigned char *in, unsigned int inlen, void *arg) {
  sh_tls_ctx *t = arg;
  size_t i, j;
  (void)ssl;
  for (i = 0; i < t->alpn_len; i += 1 + (size_t)t->alpn[i]) {
    for (j = 0; j < inlen; j += 1 + (size_t)in[j]) {
      if (in[j] == t->alpn[i] && j + 1 + in[j] <= inlen &&
          memcmp(in + j + 1, t->alpn + i + 1, in[j]) == 0) {
        *out = in + j + 1;
        *outlen = in[j];
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_NOACK;     /* no protocol in common: go on without */
}

static int name_matches (const char *pattern, const char *name) {
  if (strncmp(pattern, "*.", 2) == 0) {
    const char *dot = strchr(name, '.');
    return dot != NULL && dot != name && strcasecmp(dot + 1, pattern + 2) == 0;
  }
  return strcasecmp(pattern, name) == 0;
}

/* Server SNI: switch to the context of the name asked for, if any. */
static int on_servername (SSL *ssl, int *alert, void *arg) {
  sh_tls_ctx *t = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  int i;
  (void)alert;
  if (name == NULL) return SSL_TLSEXT_ERR_OK;
  for (i = 0; i < t->nsni; i++)             /* exact names first */
    if (strcasecmp(t->sni[i].name, name) == 0) {
      SSL_set_SSL_CTX(ssl, t->sni[i].ctx);
      return SSL_TLSEXT_ERR_OK;
    }
  for (i = 0; i < t->nsni; i++)
    if (name_matches(t->sni[i].name, name)) {
      SSL_set_SSL_CTX(ssl, t->sni[i].ctx);
      return SSL_TLSEXT_ERR_OK;
    }
  return SSL_TLSEXT_ERR_OK;                 /* the default certificate */
}

static int load_pair (SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t errlen) {
  char why[600];
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    snprintf(why, sizeof why, "cannot load certificate '%.200s'", cert);
    ssl_error(err, errlen, why);
    return -1;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key != NULL ? key : cert, SSL_FILETYPE_PEM) != 1) {
    snprintf(why, sizeof why, "cannot load key '%.200s'", key != NULL ? key : cert);
    ssl_error(err, errlen, why);
    return -1;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    snprintf(why, sizeof why, "key '%.200s' does not match certificate '%.200s'",
             key != NULL ? key : cert, cert);
    ssl_error(err, errlen, why);
    return -1;
  }
  return 0;
}

/* One SSL_CTX with everything but the certificate. */
static SSL_CTX *base_ctx (sh_tls_ctx *t, const sh_tls_conf *c, char *err, size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(c->server ? TLS_server_method() : TLS_client_method());
  int mode = SSL_VERIFY_NONE;
  if (ctx == NULL) { ssl_error(err, errlen, "cannot make a TLS context"); return NULL; }
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_set_min_proto_version(ctx, c->min_version > 0 ? c->min_version : TLS1_2_VERSION) != 1) {
    ssl_error(err, errlen, "bad min_version");
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (c->ca != NULL) {
    if (SSL_CTX_load_verify_locations(ctx, c->ca, NULL) != 1) {
      char why[300];
      snprintf(why, sizeof why, "cannot load CA file '%.200s'", c->ca);
      ssl_error(err, errlen, why);
      SSL_CTX_free(ctx);
      return NULL;
    }
    if (c->server) SSL_CTX_set_client_CA_list(ctx, SSL_load_client_CA_file(c->ca));
  }
  if (!c->server) mode = c->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE;
  else if (c->verify) mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  else if (c->ca != NULL) mode = SSL_VERIFY_PEER;    /* optional client certificate */
  SSL_CTX_set_verify(ctx, mode, NULL);
  if (c->server) {
    static const unsigned char sid[] = "sockhost";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    if (t->alpn != NULL) SSL_CTX_set_alpn_select_cb(ctx, on_alpn, t);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
  } else if (c->alpn != NULL && c->alpn_len > 0) {
    SSL_CTX_set_alpn_protos(ctx, c->alpn, (unsigned)c->alpn_len);
  }
  return ctx;
}

/* ====================== The system's CA store ====================== */

/* Loading the system's CA store parses every certificate of the bundle
** (/etc/ssl/certs/ca-certificates.crt: about 150): 25 to 50 ms, which on
** the loop froze every connection at the first tls:// connect. A thread
** loads it instead, when the first client context that needs it is made
** (before that connect resolves its name and connects), into one X509_STORE
** that every such context shares. A handshake that needs it before it is
** there waits without blocking the loop; the others go on.
**
** The thread touches nothing but OpenSSL and its load: it builds the store,
** says so under the lock, and closes its end of a pipe, whose other end
** then reads as ended for each waiting handshake's event, on whatever loop.
** Once the result is taken (on the loop, never blocking: the thread is done
** when the pipe says so) and nobody waits, the pipe is closed. When the last
** context that uses the store goes, so does the store; a load still running
** then is waited for (at exit, say: a thread in OpenSSL must not outlive
** OpenSSL's clean-up at exit). */
typedef struct sys_load {
  pthread_mutex_t lock;
  pthread_t thread;
  int fds[2];              /* the thread closes fds[1] when it is done */
  int done;                /* under lock: the result is there */
  X509_STORE *result;      /* under lock: the store, or NULL (out of memory) */
  int joined;              /* loop side: the thread is gone, its result taken */
  int waiters;             /* loop side: handshakes with an event on fds[0] */
} sys_load;

static struct {
  int users;               /* client contexts that use the system store */
  sys_load *load;          /* the load in flight or not yet taken, or NULL */
  X509_STORE *store;       /* the store, once loaded (our reference): NULL
                           ** after a load, when it found no memory */
} sysca;

static X509_STORE *load_store (void) {
  X509_STORE *st = X509_STORE_new();
  if (st != NULL) X509_STORE_set_default_paths(st);   /* a missing file: an empty store */
  ERR_clear_error();
  return st;
}

static void sys_load_free (sys_load *ld) {
  if (ld->fds[0] >= 0) close(ld->fds[0]);
  if (ld->fds[1] >= 0) close(ld->fds[1]);
  X509_STORE_free(ld->result);
  pthread_mutex_destroy(&ld->lock);
  free(ld);
}

static void *sys_thread (void *arg) {
  sys_load *ld = arg;
  X509_STORE *st = load_store();
  pthread_mutex_lock(&ld->lock);
  ld->result = st;
  ld->done = 1;
  pthread_mutex_unlock(&ld->lock);
  close(ld->fds[1]);                        /* the waiters' events fire */
  ld->fds[1] = -1;
  return NULL;
}

/* A thread with every signal blocked: the loop's handlers (and the CPU
** budget's profiling timer) stay with the loop's thread. */
static int sys_spawn (sys_load *ld) {
  sigset_t all, old;
  int r;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  r = pthread_create(&ld->thread, NULL, sys_thread, ld);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return r;
}

/* Start loading; without a pipe or a thread, load now, on the loop. */
static void sys_start (void) {
  sys_load *ld = calloc(1, sizeof *ld);
  if (ld != NULL) {
    ld->fds[0] = ld->fds[1] = -1;
    pthread_mutex_init(&ld->lock, NULL);
    if (pipe2(ld->fds, O_CLOEXEC | O_NONBLOCK) == 0 && sys_spawn(ld) == 0) {
      sysca.load = ld;
      return;
    }
    sys_load_free(ld);
  }
  sysca.store = load_store();
}

/* Join the thread, which is done or about to be (or wait for it), and take
** its result. */
static void sys_join (sys_load *ld) {
  pthread_join(ld->thread, NULL);
  ld->joined = 1;
  sysca.store = ld->result;
  ld->result = NULL;
}

/* The load is over and nobody waits on its pipe: let it go. */
static void sys_load_end (void) {
  sys_load *ld = sysca.load;
  if (ld == NULL || ld->waiters > 0 || !ld->joined) return;
  sysca.load = NULL;
  sys_load_free(ld);
}

/* Whether the load is over (sysca.store is the store, or NULL if it failed),
** taking the thread's result if it is done. Never blocks. */
static int sys_ready (void) {
  sys_load *ld = sysca.load;
  int done;
  if (ld == NULL || ld->joined) return 1;
  pthread_mutex_lock(&ld->lock);
  done = ld->done;
  pthread_mutex_unlock(&ld->lock);
  if (!done) return 0;
  sys_join(ld);                             /* returning, if not gone already */
  sys_load_end();
  return 1;
}

static void sys_acquire (void) {
  if (sysca.users++ == 0 && sysca.load == NULL) sys_start();
}

/* The last context that uses the store is gone (no handshake waits: each
** holds its context). */
static void sys_release (void) {
  sys_load *ld = sysca.load;
  if (--sysca.users > 0) return;
  if (ld != NULL) {
    if (!ld->joined) sys_join(ld);          /* may wait for the load to end */
    sysca.load = NULL;
    sys_load_free(ld);
  }
  X509_STORE_free(sysca.store);
  sysca.store = NULL;
}

/* Give client context 't' the store, if it needs it and has not got it yet;
** -1 if the load failed. The store must be ready (sys_ready). */
static int sys_attach (sh_tls_ctx *t) {
  if (!t->sys || t->has_store) return 0;
  if (sysca.store == NULL) return -1;
  SSL_CTX_set1_cert_store(t->ctx, sysca.store);   /* one more reference */
  t->has_store = 1;
  return 0;
}

sh_tls_ctx *sh_tls_ctx_new (const sh_tls_conf *c, char *err, size_t errlen) {
  sh_tls_ctx *t = calloc(1, sizeof *t);
  int i;
  if (t == NULL) { snprintf(err, errlen, "out of memory"); return NULL; }
  t->refs = 1;
  t->server = c->server;
  t->verify = c->verify;
  if (c->server && c->alpn != NULL && c->alpn_len > 0) {
    if ((t->alpn = malloc(c->alpn_len)) == NULL) goto oom;
    memcpy(t->alpn, c->alpn, c->alpn_len);
    t->alpn_len = c->alpn_len;
  }
  if (c->server && c->cert == NULL) {
    snprintf(err, errlen, "a TLS server needs cert and key");
    goto fail;
  }
  if ((t->ctx = base_ctx(t, c, err, errlen)) == NULL) goto fail;
  if (c->cert != NULL && load_pair(t->ctx, c->cert, c->key, err, errlen) != 0) goto fail;
  if (c->ncerts > 0 && (t->sni = calloc((size_t)c->ncerts, sizeof *t->sni)) == NULL) goto oom;
  for (i = 0; i < c->ncerts; i++) {
    sni_entry *e = &t->sni[t->nsni];
    if ((e->name = strdup(c->certs[i].name)) == NULL) goto oom;
    t->nsni++;
    if ((e->ctx = base_ctx(t, c, err, errlen)) == NULL) goto fail;
    if (load_pair(e->ctx, c->certs[i].cert, c->certs[i].key, err, errlen) != 0) goto fail;
  }
  if (!c->server && c->verify && c->ca == NULL) {
    t->sys = 1;                             /* the system store, from a thread */
    sys_acquire();
  }
  return t;
oom:
  snprintf(err, errlen, "out of memory");
fail:
  sh_tls_ctx_free(t);
  return NULL;
}

sh_tls_ctx *sh_tls_ctx_ref (sh_tls_ctx *t) {
  t->refs++;
  return t;
}

void sh_tls_ctx_free (sh_tls_ctx *t) {
  int i;
  if (t == NULL || --t->refs > 0) return;
  for (i = 0; i < t->nsni; i++) {
    free(t->sni[i].name);
    if (t->sni[i].ctx != NULL) SSL_CTX_free(t->sni[i].ctx);
  }
  free(t->sni);
  if (t->ctx != NULL) SSL_CTX_free(t->ctx);
  if (t->sys) sys_release();
  free(t->alpn);
  free(t);
}

/* ====================== Failures, in words ====================== */

/* A failed certificate check, by the verify result. */
static const char *verify_words (long v) {
  switch (v) {
    case X509_V_ERR_CERT_HAS_EXPIRED: return "certificate expired";
    case X509_V_ERR_CERT_NOT_YET_VALID: return "certificate not yet valid";
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN: return "unknown CA";
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH: return "name mismatch";
    default: return "certificate rejected";
  }
}

/* A failed handshake, by OpenSSL's reason (ours, or the alert the peer
** sent us about our certificate). */
static const char *reason_words (int r) {
  switch (r) {
    case SSL_R_WRONG_VERSION_NUMBER: case SSL_R_HTTP_REQUEST: case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_UNKNOWN_PROTOCOL: case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH: case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_UNEXPECTED_RECORD: case SSL_R_LENGTH_MISMATCH:
      return "not TLS";
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED: return "certificate expired";
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA: return "unknown CA";
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE: case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN: return "certificate rejected";
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE: return "no client certificate";
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED: return "certificate required";
    case SSL_R_UNSUPPORTED_PROTOCOL: case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_NO_PROTOCOLS_AVAILABLE: return "protocol version";
    case SSL_R_NO_SHARED_CIPHER: case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
      return "handshake failure";
    default: return NULL;
  }
}

/* The message for a handshake that ended with 'what' (a bufferevent event). */
static void describe (struct bufferevent *bev, short what, char *buf, size_t n) {
  SSL *ssl = bufferevent_openssl_get_ssl(bev);
  unsigned long e, first = 0;
  long v = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
  const char *words = NULL, *detail = NULL;
  int sys = EVUTIL_SOCKET_ERROR();
  while ((e = bufferevent_get_openssl_error(bev)) != 0)
    if (first == 0) first = e;
  ERR_clear_error();
  if (v != X509_V_OK && (first == 0 || ERR_GET_REASON(first) == SSL_R_CERTIFICATE_VERIFY_FAILED)) {
    words = verify_words(v);
    detail = X509_verify_cert_error_string(v);
  } else if (first != 0) {
    words = reason_words(ERR_GET_REASON(first));
    detail = ERR_reason_error_string(first);
    if (words == NULL) words = "handshake failed";
  } else if (what & BEV_EVENT_EOF) {
    words = "closed during handshake";
  } else {
    words = "handshake failed";
    if (sys != 0) detail = sh_strerror(sys);
  }
  if (detail != NULL && strcmp(detail, words) != 0) snprintf(buf, n, "%s: %s", words, detail);
  else snprintf(buf, n, "%s", words);
}

/* ====================== Handshakes ====================== */

/* Stop waiting for the system store. */
static void hs_unwait (sh_tls_hs *h) {
  if (h->wait == NULL) return;
  event_free(h->wait);
  h->wait = NULL;
  sysca.load->waiters--;                      /* a waiter's context keeps the load */
  sys_load_end();
}

static void hs_free (sh_tls_hs *h, int free_bev) {
  sh_loop_untrack(h->loop, &h->item);
  if (h->timer != NULL) event_free(h->timer);
  hs_unwait(h);
  if (free_bev && h->bev != NULL) bufferevent_free(h->bev);
  if (h->fd >= 0) close(h->fd);
  free(h->name);
  sh_tls_ctx_free(h->t);
  free(h);
}

/* ====================== The "tls" transport ====================== */

/* Our end: close_notify, before the socket's FIN. */
static void close_notify (struct bufferevent *bev) {
  SSL *ssl = bufferevent_openssl_get_ssl(bev);
  if (ssl == NULL) return;
  SSL_shutdown(ssl);                        /* sends close_notify; no waiting */
  ERR_clear_error();
}

/* Bytes written to and read from the socket so far, records and handshake
** included: the idle limit sees a record trickling out to a slow reader. */
static unsigned long long moved (struct bufferevent *bev) {
  SSL *ssl = bufferevent_openssl_get_ssl(bev);
  if (ssl == NULL) return 0;
  return (unsigned long long)BIO_number_written(SSL_get_wbio(ssl)) +
         (unsigned long long)BIO_number_read(SSL_get_rbio(ssl));
}

static const sh_bev_hooks tls_hooks = {"tls", close_notify, moved};

static void hs_finish (sh_tls_hs *h, struct bufferevent *bev, const char *err) {
  sh_tls_done_fn cb = h->cb;
  void *arg = h->arg;
  sh_stream *s = NULL;
  if (bev != NULL) {
    bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
    /* A peer's end without close_notify is still an end (the context
    ** ignores an unexpected EOF); what else ends the stream now (a reset)
    ** is an error, as on a socket, never an end of input. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 0);
    s = sh_stream_new_bev(h->loop, bev, &tls_hooks, NULL, NULL);
    if (s != NULL) h->bev = NULL;           /* the stream's now */
    else err = "out of memory";
  }
  hs_free(h, 1);
  cb(s, err, arg);
}

static void hs_on_event (struct bufferevent *bev, short what, void *arg) {
  sh_tls_hs *h = arg;
  char msg[400];
  if (what & BEV_EVENT_CONNECTED) { hs_finish(h, bev, NULL); return; }
  if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) return;
  describe(bev, what, msg, sizeof msg);
  hs_finish(h, NULL, msg);
}

static void hs_on_timer (evutil_socket_t fd, short what, void *arg) {
  (void)fd; (void)what;
  hs_finish(arg, NULL, "handshake timeout");
}

static void hs_orphan (sh_loop_item *item) { hs_free((sh_tls_hs *)item, 1); }

static int is_ip (const char *name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/* The handshake proper: the SSL, the name to check, the bufferevent, which
** takes the socket. -1 when out of memory (the socket still ours). */
static int hs_begin (sh_tls_hs *h, const char *name) {
  sh_tls_ctx *t = h->t;
  SSL *ssl = SSL_new(t->ctx);
  if (ssl == NULL) return -1;
  if (!t->server && name != NULL && *name != '\0') {
    if (is_ip(name)) {
      if (t->verify) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
    } else {
      SSL_set_tlsext_host_name(ssl, name);
      if (t->verify) SSL_set1_host(ssl, name);
    }
  }
  h->bev = bufferevent_openssl_socket_new(sh_loop_base(h->loop), h->fd, ssl,
             t->server ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
  if (h->bev == NULL) { SSL_free(ssl); return -1; }
  h->fd = -1;                              /* the bufferevent's now */
  bufferevent_openssl_set_allow_dirty_shutdown(h->bev, 1);
  bufferevent_setcb(h->bev, NULL, NULL, hs_on_event, h);
  bufferevent_enable(h->bev, EV_READ | EV_WRITE);
  return 0;
}

/* The system store is there (or failed): begin. From the loop. */
static void hs_on_store (evutil_socket_t fd, short what, void *arg) {
  sh_tls_hs *h = arg;
  char *name = h->name;
  (void)fd; (void)what;
  if (!sys_ready()) return;                 /* not yet: the event is still added */
  hs_unwait(h);
  h->name = NULL;
  if (sys_attach(h->t) != 0) hs_finish(h, NULL, "cannot load the system's CA store: out of memory");
  else if (hs_begin(h, name) != 0) hs_finish(h, NULL, "out of memory");
  free(name);
}

/* Wait for the system store, on an event of our own on the load's pipe. */
static int hs_wait (sh_tls_hs *h, const char *name) {
  if (name != NULL && (h->name = strdup(name)) == NULL) return -1;
  h->wait = event_new(sh_loop_base(h->loop), sysca.load->fds[0], EV_READ | EV_PERSIST, hs_on_store, h);
  if (h->wait == NULL) return -1;
  if (event_add(h->wait, NULL) != 0) {
    event_free(h->wait);
    h->wait = NULL;
    return -1;
  }
  sysca.load->waiters++;
  return 0;
}

sh_tls_hs *sh_tls_start (sh_loop *loop, sh_tls_ctx *t, int fd, const char *name, double timeout,
                         sh_tls_done_fn cb, void *arg) {
  sh_tls_hs *h = calloc(1, sizeof *h);
  int r;
  if (h == NULL) { close(fd); return NULL; }
  h->loop = loop;
  h->t = sh_tls_ctx_ref(t);
  h->fd = fd;
  h->cb = cb;
  h->arg = arg;
  h->item.destroy = hs_orphan;
  sh_loop_track(loop, &h->item);
  if (timeout > 0) {
    struct timeval tv = sh_timeval(timeout);
    h->timer = evtimer_new(sh_loop_base(loop), hs_on_timer, h);
    if (h->timer == NULL || evtimer_add(h->timer, &tv) != 0) { hs_free(h, 1); return NULL; }
  }
  if (t->sys && !sys_ready()) r = hs_wait(h, name);
  else if (sys_attach(t) != 0) r = -1;
  else r = hs_begin(h, name);
  if (r != 0) { hs_free(h, 1); return NULL; }
  return h;
}

void sh_tls_cancel (sh_tls_hs *h) { hs_free(h, 1); }

/* ====================== Sessions ====================== */

static SSL *stream_ssl (const sh_stream *s) {
  struct bufferevent *bev = s != NULL ? sh_stream_bev(s) : NULL;
  return bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
}

int sh_tls_is_tls (const sh_stream *s) { return stream_ssl(s) != NULL; }

static double asn1_seconds (const ASN1_TIME *at) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  if (at == NULL || ASN1_TIME_to_tm(at, &tm) != 1) return 0;
  return (double)timegm(&tm);
}

static void name_text (X509_NAME *nm, char *buf, size_t n) {
  BIO *b = BIO_new(BIO_s_mem());
  int len;
  buf[0] = '\0';
  if (b == NULL) return;
  if (X509_NAME_print_ex(b, nm, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
    len = BIO_read(b, buf, (int)n - 1);
    buf[len > 0 ? len : 0] = '\0';
  }
  BIO_free(b);
}

int sh_tls_info_get (const sh_stream *s, sh_tls_info *out) {
  SSL *ssl = stream_ssl(s);
  const unsigned char *alpn = NULL;
  unsigned alpn_len = 0;
  const char *sni;
  X509 *peer;
  memset(out, 0, sizeof *out);
  if (ssl == NULL) return -1;
  snprintf(out->protocol, sizeof out->protocol, "%s", SSL_get_version(ssl));
  snprintf(out->cipher, sizeof out->cipher, "%s", SSL_get_cipher_name(ssl));
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  if (alpn != NULL) snprintf(out->alpn, sizeof out->alpn, "%.*s", (int)alpn_len, (const char *)alpn);
  sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (sni != NULL) snprintf(out->servername, sizeof out->servername, "%s", sni);
  peer = SSL_get1_peer_certificate(ssl);
  if (peer != NULL) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0, i;
    out->has_peer = 1;
    out->verified = SSL_get_verify_result(ssl) == X509_V_OK &&
                    (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER);
    name_text(X509_get_subject_name(peer), out->subject, sizeof out->subject);
    name_text(X509_get_issuer_name(peer), out->issuer, sizeof out->issuer);
    if (X509_digest(peer, EVP_sha256(), md, &mdlen) == 1)
      for (i = 0; i < mdlen && i * 3 + 3 <= sizeof out->fingerprint; i++)
        snprintf(out->fingerprint + i * 3, 4, i + 1 < mdlen ? "%02X:" : "%02X", md[i]);
    out->not_before = asn1_seconds(X509_get0_notBefore(peer));
    out->not_after = asn1_seconds(X509_get0_notAfter(peer));
    X509_free(peer);
  }
  return 0;
}
