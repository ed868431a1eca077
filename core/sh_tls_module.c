/* sh_tls_module.c -- the entry of sockhost-tls.so: sh_tls.c's functions in
** a table (see sh_tls_module.h). The only symbol the module exports. */
#include "sh_tls_module.h"

__attribute__((visibility("default")))
const sh_tls_api *sh_tls_module_api (void) {
  static const sh_tls_api api = {
    SH_TLS_STAMP, sh_tls_ctx_new, sh_tls_ctx_free, sh_tls_ctx_ref, sh_tls_start,
    sh_tls_cancel, sh_tls_is_tls, sh_tls_info_get
  };
  return &api;
}
