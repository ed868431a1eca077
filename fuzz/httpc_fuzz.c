/* httpc_fuzz.c -- libFuzzer target: the HTTP client's response head fast
** path (core/sh_httpc.c). Whatever the input and max_head, it must not crash
** or read out of bounds; a head it accepts starts with a well-formed status
** line, ends at the first CRLFCRLF after it (or right after the status
** line's CRLF), is within max_head + 3 bytes, has header lines of a token,
** a colon and a value without control characters but tab, and a reason
** without them; the same head with more bytes after it is accepted the same;
** no cut of it is accepted. Built and run by `make fuzz`. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/sh_httpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int ctl (unsigned char c) { return (c < 32 && c != '\t') || c == 127; }

/* The header lines p[0..n), CRLF between them: each "token:value". */
static void check_fields (const char *p, size_t n) {
  size_t pos = 0;
  while (pos < n) {
    size_t i = pos;
    if (p[i] == ':') abort();                        /* an empty name */
    while (i < n && p[i] != ':') {
      if (ctl((unsigned char)p[i]) || p[i] == ' ' || p[i] == '"' || p[i] == '(') abort();
      i++;
    }
    if (i == n) abort();
    for (i++; i < n && !(p[i] == '\r' && i + 1 < n && p[i + 1] == '\n'); i++)
      if (ctl((unsigned char)p[i])) abort();
    pos = i + 2;
  }
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  sh_httpc_head h, h2;
  const char *buf;
  size_t max_head, cut;
  char *more;
  int r;
  if (size < 2) return 0;
  max_head = (size_t)data[0] * 4 + data[1] % 4;      /* small, to reach it */
  if (data[1] & 0x80) max_head = 65536;
  buf = (const char *)data + 2;
  size -= 2;
  r = sh_httpc_head_parse(buf, size, max_head, &h);
  if (r != SH_HTTPC_OK && r != SH_HTTPC_SHORT && r != SH_HTTPC_OTHER) abort();
  if (r != SH_HTTPC_OK) return 0;
  if (h.used > size || h.used > max_head + 3 || h.used < 16) abort();
  if (memcmp(buf, "HTTP/1.", 7) != 0 || h.minor < 0 || h.minor > 1) abort();
  if (h.status < 100 || h.status > 599) abort();
  if (h.fields_off + h.fields_len > h.used || h.reason_off + h.reason_len >= h.fields_off) abort();
  if (buf[h.fields_off - 1] != '\n' || buf[h.fields_off - 2] != '\r') abort();
  for (cut = h.reason_off; cut < h.reason_off + h.reason_len; cut++)
    if (ctl((unsigned char)buf[cut])) abort();
  if (memcmp(buf + h.used - 2, "\r\n", 2) != 0) abort();
  if (h.fields_len > 0) {
    const char *end = memmem(buf + h.fields_off, h.used - h.fields_off, "\r\n\r\n", 4);
    if (end == NULL || (size_t)(end - buf) + 4 != h.used) abort();
    if ((size_t)(end - buf) != h.fields_off + h.fields_len) abort();
    check_fields(buf + h.fields_off, h.fields_len);
  } else if (h.used != h.fields_off + 2) {
    abort();
  }
  if (h.chunked && (h.length >= 0 || h.minor == 0)) abort();
  /* the same head with garbage after it: the same */
  more = malloc(h.used + 8);
  if (more == NULL) return 0;
  memcpy(more, buf, h.used);
  memcpy(more + h.used, "\n:\r\0\r\nX\r", 8);
  if (sh_httpc_head_parse(more, h.used + 8, max_head, &h2) != SH_HTTPC_OK || h2.used != h.used ||
      h2.status != h.status || h2.length != h.length || h2.chunked != h.chunked ||
      h2.close != h.close || h2.keep_alive != h.keep_alive || h2.fields_len != h.fields_len)
    abort();
  /* a cut of it: never accepted */
  for (cut = 0; cut < h.used; cut += 1 + cut / 8)
    if (sh_httpc_head_parse(more, cut, max_head, &h2) == SH_HTTPC_OK) abort();
  free(more);
  return 0;
}
