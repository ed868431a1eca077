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

/* Where the sources go. On x86-64, GNU ld puts .lrodata (the large code
** model's read-only data) in a segment of its own, after .bss: a mapping
** whose pages a process touches only when it loads a module. In .rodata,
** next to the constants the code reads, the kernel's fault-around (and its
** mapping of whole large folios) mapped about 110 KiB of them in every
** idle process. Elsewhere they stay in .rodata. */
#if defined(__x86_64__) && defined(__GNUC__)
#define SHL_MODULE_SRC __attribute__((section(".lrodata.sockhost_modules")))
#else
#define SHL_MODULE_SRC
#endif

#endif
