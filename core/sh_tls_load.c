/* sh_tls_load.c -- sh_tls.h in the executable: each function hands on to
** the TLS module, sockhost-tls.so (see sh_tls_module.h), which is opened
** with dlopen when a context is first made, that is when a tls:// address,
** starttls or https:// is first used. Until then nothing is TLS: a stream
** is not (sh_tls_is_tls is 0, without loading anything), and there is no
** context to free or handshake to cancel.
**
** Where the module is looked for, by the executable's own path
** (/proc/self/exe, links resolved): next to it (the build tree), then in
** ../lib/sockhost/ from its folder (`make install`: PREFIX/bin/sockhost and
** PREFIX/lib/sockhost/sockhost-tls.so, whatever PREFIX or DESTDIR). The
** module is opened once and never closed; a failure to open it is kept too,
** and every later context gets the same message: "TLS unavailable: ...".
**
** Only the loop's thread calls these (as every sh_tls.h function). */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sh_tls_module.h"

#define ERR_PREFIX "TLS unavailable: "

static struct {
  int tried;                  /* loading was tried (api or err says how) */
  const sh_tls_api *api;      /* the module's table, once loaded */
  char err[600];              /* why it could not be loaded */
} mod;

/* The folder of the running executable into dir; -1 if unknown. */
static int exe_dir (char *dir, size_t n) {
  ssize_t len = readlink("/proc/self/exe", dir, n - 1);
  char *slash;
  if (len <= 0 || (size_t)len >= n - 1) return -1;
  dir[len] = '\0';
  if ((slash = strrchr(dir, '/')) == NULL) return -1;
  *slash = '\0';
  return 0;
}

/* Open one candidate: 1 loaded; 0 no file there; -1 a file that failed
** (mod.err says why). */
static int try_open (const char *path) {
  void *h;
  const sh_tls_api *(*entry)(void);
  const sh_tls_api *api;
  if (access(path, F_OK) != 0) return 0;
  if ((h = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
    snprintf(mod.err, sizeof mod.err, ERR_PREFIX "cannot load '%.200s': %.200s", path, dlerror());
    return -1;
  }
  entry = (const sh_tls_api *(*)(void))dlsym(h, SH_TLS_MODULE_ENTRY);
  api = entry != NULL ? entry() : NULL;
  if (api == NULL || strcmp(api->stamp, SH_TLS_STAMP) != 0) {
    snprintf(mod.err, sizeof mod.err, ERR_PREFIX "'%.200s' is not from this build of sockhost", path);
    return -1;                            /* left open: OpenSSL is not made to be unloaded */
  }
  mod.api = api;
  return 1;
}

static void load (void) {
  char dir[PATH_MAX], path[PATH_MAX + 64];
  mod.tried = 1;
  if (exe_dir(dir, sizeof dir) != 0) {
    snprintf(mod.err, sizeof mod.err, ERR_PREFIX "cannot find the executable's folder");
    return;
  }
  snprintf(path, sizeof path, "%s/" SH_TLS_MODULE_FILE, dir);
  if (try_open(path) != 0) return;
  snprintf(path, sizeof path, "%s/../lib/sockhost/" SH_TLS_MODULE_FILE, dir);
  if (try_open(path) != 0) return;
  snprintf(mod.err, sizeof mod.err,
           ERR_PREFIX SH_TLS_MODULE_FILE " not found in '%.200s' or '%.200s/../lib/sockhost'",
           dir, dir);
}

sh_tls_ctx *sh_tls_ctx_new (const sh_tls_conf *c, char *err, size_t errlen) {
  if (!mod.tried) load();
  if (mod.api == NULL) {
    snprintf(err, errlen, "%s", mod.err);
    return NULL;
  }
  return mod.api->ctx_new(c, err, errlen);
}

/* A context or handshake exists only if the module is loaded. */
void sh_tls_ctx_free (sh_tls_ctx *t) {
  if (t != NULL) mod.api->ctx_free(t);
}

sh_tls_ctx *sh_tls_ctx_ref (sh_tls_ctx *t) { return mod.api->ctx_ref(t); }

sh_tls_hs *sh_tls_start (sh_loop *loop, sh_tls_ctx *t, int fd, const char *name, double timeout,
                         sh_tls_done_fn cb, void *arg) {
  return mod.api->start(loop, t, fd, name, timeout, cb, arg);
}

void sh_tls_cancel (sh_tls_hs *h) { mod.api->cancel(h); }

int sh_tls_is_tls (const sh_stream *s) { return mod.api != NULL && mod.api->is_tls(s); }

int sh_tls_info_get (const sh_stream *s, sh_tls_info *out) {
  if (mod.api == NULL) {
    memset(out, 0, sizeof *out);
    return -1;
  }
  return mod.api->info_get(s, out);
}
