/* shl_modules.h -- Lua modules shipped inside sockhost (the files in bindings/lua/),
** embedded at build time by bindings/embed.lua. */
#ifndef SHL_MODULES_H
#define SHL_MODULES_H

#include <stddef.h>

typedef struct shl_module {
  const char *name;          /* "http" for the module "sockhost.http" */
  const char *src;           /* its Lua source */
  size_t len;
} shl_module;

extern const shl_module shl_modules[];   /* ends with a NULL name */

#endif
