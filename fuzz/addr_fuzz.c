/* addr_fuzz.c -- libFuzzer target: the address parser and the IP text
** helpers. Whatever the input, parsing must not crash; an input with a NUL
** byte must be refused (never cut short); a parsed literal must format back
** to an address that parses to the same socket address; an address's
** canonical text (sh_addr_text) must parse back to the same address and be
** its own canonical text; IP text and bytes must round-trip; a name is good
** for resolve exactly when it is good as an address's host. Built and run
** by `make fuzz`. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/sh_addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The canonical text of 'a' parses to the same address and is a fixed point. */
static void check_canonical (const sh_addr *a) {
  char text[512], again[512], err[300];
  sh_addr b;
  size_t n = sh_addr_text(a, text, sizeof text);
  if (sh_addr_parse(text, n, &b, err, sizeof err) != 0) abort();
  if (b.scheme != a->scheme || b.port != a->port || strcmp(b.host, a->host) != 0) abort();
  if (b.resolved != a->resolved) abort();
  if (a->resolved && (b.salen != a->salen || memcmp(&a->sa, &b.sa, a->salen) != 0)) abort();
  if (sh_addr_text(&b, again, sizeof again) != n || memcmp(text, again, n) != 0) abort();
}

/* A parsed literal formats (as the kernel's address would) back to itself. */
static void check_format (const sh_addr *a) {
  char back[512], err[300];
  sh_addr b;
  sh_addr_format((const struct sockaddr *)&a->sa, a->salen, a->scheme, back, sizeof back);
  if (sh_addr_parse(back, strlen(back), &b, err, sizeof err) != 0) abort();
  if (b.salen != a->salen || memcmp(&a->sa, &b.sa, a->salen) != 0) {
    /* Unix paths are kept as written; inet addresses must round-trip */
    if (a->sa.ss_family != AF_UNIX) abort();
  }
}

/* IP text -> bytes -> text -> the same bytes; and any 4 or 16 bytes ->
** text -> the same bytes. */
static void check_ip (const uint8_t *data, size_t size) {
  unsigned char ip[16], again[16];
  char text[SH_IP_TEXT];
  size_t n = sh_ip_parse((const char *)data, size, ip), t;
  if (n != 0) {
    if (memchr(data, '\0', size) != NULL) abort();
    t = sh_ip_format(ip, n, text);
    if (sh_ip_parse(text, t, again) != n || memcmp(ip, again, n) != 0) abort();
  }
  n = size >= 16 ? 16 : size >= 4 ? 4 : 0;
  if (n == 0) return;
  t = sh_ip_format(data, n, text);
  if (t == 0 || t >= SH_IP_TEXT || sh_ip_parse(text, t, again) != n || memcmp(data, again, n) != 0)
    abort();
}

/* Without a ':' (IPv6 literals go in brackets in an address) and besides
** "*" (a wildcard in an address, no name), a name is good for resolve
** exactly when "tcp://name:1" parses. */
static void check_name (const char *text, size_t size) {
  char addr[512], err[300];
  sh_addr a;
  int n;
  if (memchr(text, ':', size) != NULL || (size == 1 && text[0] == '*')) return;
  if (memchr(text, '\0', size) != NULL || size == 0) return;
  n = snprintf(addr, sizeof addr, "tcp://%s:1", text);
  if (n < 0 || (size_t)n >= sizeof addr) return;
  if ((sh_addr_check_name(text, size, err, sizeof err) == 0) !=
      (sh_addr_parse(addr, (size_t)n, &a, err, sizeof err) == 0))
    abort();
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  char text[512], err[300];
  sh_addr a;
  if (size >= sizeof text) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  check_ip(data, size);
  check_name(text, size);
  if (sh_addr_parse(text, size, &a, err, sizeof err) != 0) return 0;
  if (memchr(text, '\0', size) != NULL) abort();       /* a NUL was let through */
  check_canonical(&a);
  if (a.resolved) check_format(&a);
  return 0;
}
