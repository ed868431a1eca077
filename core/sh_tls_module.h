/* sh_tls_module.h -- the seam between the executable and its TLS module.
**
** TLS (core/sh_tls.c, on OpenSSL and libevent's OpenSSL bufferevents) is
** built into a shared object of its own, sockhost-tls.so, which the
** executable opens with dlopen the first time something needs TLS
** (core/sh_tls_load.c): a process that never uses TLS never maps libssl or
** libcrypto (about 1.9 MiB of its resident memory when idle). The module
** calls back into the executable's core (streams, the loop, the log), which
** exports its symbols (-Wl,-E); its own symbols are hidden, but for the one
** function below, which hands out the table of sh_tls.h's functions.
**
** A module from another build would call into core functions whose
** signatures it does not know: the stamp, a checksum of the headers both
** sides are compiled against (the Makefile's SH_TLS_STAMP), must match. */
#ifndef SH_TLS_MODULE_H
#define SH_TLS_MODULE_H

#include <stddef.h>

#include "sh_tls.h"

#ifndef SH_TLS_STAMP
#define SH_TLS_STAMP "unstamped"
#endif

/* The module's file name, and the one symbol it exports. */
#define SH_TLS_MODULE_FILE  "sockhost-tls.so"
#define SH_TLS_MODULE_ENTRY "sh_tls_module_api"

typedef struct sh_tls_api {
  const char *stamp;       /* SH_TLS_STAMP of the module's build */
  sh_tls_ctx *(*ctx_new)(const sh_tls_conf *c, char *err, size_t errlen);
  void (*ctx_free)(sh_tls_ctx *t);
  sh_tls_ctx *(*ctx_ref)(sh_tls_ctx *t);
  sh_tls_hs *(*start)(sh_loop *loop, sh_tls_ctx *t, int fd, const char *name, double timeout,
                      sh_tls_done_fn cb, void *arg);
  void (*cancel)(sh_tls_hs *h);
  int (*is_tls)(const sh_stream *s);
  int (*info_get)(const sh_stream *s, sh_tls_info *out);
} sh_tls_api;

/* The module's entry: its table (static; never NULL). */
const sh_tls_api *sh_tls_module_api(void);

#endif
