/* sh_tls.h -- TLS for streams, on libevent's OpenSSL bufferevents. Knows
** nothing about Lua; see bindings/l_tls.c.
**
** Three parts: contexts built from a plain configuration (certificates and
** keys from PEM files, certificates chosen by SNI, a CA file or the system
** store, ALPN, a minimum version); handshakes with a deadline, whose
** failures come back as short stable messages ("certificate expired",
** "unknown CA", "name mismatch", "not TLS", "handshake timeout", ...) with
** OpenSSL's detail after a colon; and what a finished session says about
** itself and its peer. A finished handshake hands out a stream (sh_stream.h)
** of the "tls" transport: a bufferevent stream that sends close_notify
** before its end and counts the bytes its records move.
**
** Callbacks come only from the event loop.
**
** The one thread of the process: the system's CA store (a client that
** verifies without a 'ca' of its own) is loaded by a thread started with the
** first context that needs it, and shared by all of them while any lives.
** The thread touches only OpenSSL; the loop learns it is done through a
** pipe. A handshake that needs the store before it is there waits for it
** without blocking the loop. */
#ifndef SH_TLS_H
#define SH_TLS_H

#include <stddef.h>

#include "sh_loop.h"
#include "sh_stream.h"

/* One certificate served for a name (SNI). */
typedef struct sh_tls_cert {
  const char *name;        /* "a.example", or "*.example" (one label) */
  const char *cert;        /* PEM file: the certificate, then its chain */
  const char *key;         /* PEM file: its private key */
} sh_tls_cert;

typedef struct sh_tls_conf {
  int server;              /* 1: accept handshakes; 0: connect */
  const char *cert;        /* PEM chain file: required for a server; a
                           ** client certificate for a client; or NULL */
  const char *key;         /* PEM key file for 'cert' (NULL: in 'cert') */
  const char *ca;          /* PEM CA file to check the peer against; NULL:
                           ** the system store (client) / none (server) */
  int verify;              /* client: check the server's certificate and
                           ** name; server: require a client certificate,
                           ** checked against 'ca' */
  const unsigned char *alpn;   /* protocols in ALPN wire format, or NULL */
  size_t alpn_len;
  int min_version;         /* 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3) */
  const sh_tls_cert *certs;    /* server: more certificates, chosen by SNI */
  int ncerts;
} sh_tls_conf;

typedef struct sh_tls_ctx sh_tls_ctx;

/* Build a context. Returns NULL with a message in 'err' ("cannot load
** certificate 'x.pem': no such file", ...). The context is reference
** counted: each handshake holds one while it runs. One that uses the
** system's store starts loading it (in a thread) if no other one has, and
** returns at once. */
sh_tls_ctx *sh_tls_ctx_new(const sh_tls_conf *c, char *err, size_t errlen);
void sh_tls_ctx_free(sh_tls_ctx *t);        /* drops the caller's reference */
sh_tls_ctx *sh_tls_ctx_ref(sh_tls_ctx *t);  /* one more reference; returns t */

/* ---------------- Handshakes ---------------- */

typedef struct sh_tls_hs sh_tls_hs;

/* The outcome: stream 's' (now the callee's, without an owner until
** sh_stream_set_owner) and err NULL; or s NULL and a message. The handshake
** is freed before the call. */
typedef void (*sh_tls_done_fn)(sh_stream *s, const char *err, void *arg);

/* Start a handshake on connected non-blocking socket 'fd', which the
** handshake owns from now on (closed on failure). A client checks the
** server's certificate for 'name' and sends it as SNI (IP literals are
** checked against the certificate's IP addresses, never sent); NULL or "":
** no name, and a verifying client then checks the chain alone (any
** certificate of a trusted CA passes: callers refuse that before, see
** bindings/l_tls.c). The handshake fails with "handshake timeout" after
** 'timeout' seconds (<= 0: none). A client whose context uses the system's
** store and finds it still loading waits for it first (the deadline runs
** meanwhile); other handshakes and the loop go on. Returns NULL (fd closed)
** only when out of memory. */
sh_tls_hs *sh_tls_start(sh_loop *loop, sh_tls_ctx *t, int fd, const char *name, double timeout,
                        sh_tls_done_fn cb, void *arg);
/* Give up: close the socket, free the handshake, never call back. */
void sh_tls_cancel(sh_tls_hs *h);

/* ---------------- Sessions ---------------- */

/* True for a stream of the TLS transport. */
int sh_tls_is_tls(const sh_stream *s);

typedef struct sh_tls_info {
  char protocol[16];       /* "TLSv1.3" */
  char cipher[64];         /* "TLS_AES_256_GCM_SHA384" */
  char alpn[256];          /* the protocol agreed, or "" */
  char servername[256];    /* SNI: sent by the client, or "" */
  int has_peer;            /* the peer showed a certificate: */
  int verified;            /* ... and it was checked and passed */
  char subject[512];       /* RFC 2253: "CN=a.example,O=Test" */
  char issuer[512];
  char fingerprint[100];   /* SHA-256, upper-case hex with colons */
  double not_before;       /* validity, in seconds since the epoch */
  double not_after;
} sh_tls_info;

/* Fill 'out' for TLS stream 's'; -1 if it is not one. */
int sh_tls_info_get(const sh_stream *s, sh_tls_info *out);

#endif
