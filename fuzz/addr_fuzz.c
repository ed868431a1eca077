/* addr_fuzz.c -- libFuzzer target: the address parser. Whatever the input,
** parsing must not crash; an input with a NUL byte must be refused (never
** cut short); a parsed literal must format back to an address that parses
** to the same socket address. Built and run by `make fuzz`. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/sh_addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  char text[512], back[512], err[300];
  sh_addr a, b;
  if (size >= sizeof text) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  if (sh_addr_parse(text, size, &a, err, sizeof err) != 0) return 0;
  if (memchr(text, '\0', size) != NULL) abort();       /* a NUL was let through */
  if (!a.resolved) return 0;
  sh_addr_format((struct sockaddr *)&a.sa, a.salen, a.scheme, back, sizeof back);
  if (sh_addr_parse(back, strlen(back), &b, err, sizeof err) != 0) abort();
  if (b.salen != a.salen || memcmp(&a.sa, &b.sa, a.salen) != 0) {
    /* Unix paths are kept as written; inet addresses must round-trip */
    if (a.sa.ss_family != AF_UNIX) abort();
  }
  return 0;
}
