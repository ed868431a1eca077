/* resp_fuzz.c -- libFuzzer target: the RESP command fast path
** (core/sh_resp.c). Whatever the input and limits, it must not crash or read
** out of bounds; a command it accepts has 1..max_elements arguments, each
** within max_bulk, together within max_bytes, handed over in order, inside
** the bytes it says it used, each between its "$<len>\r\n" and a CRLF; the
** same command with more bytes after it is accepted the same; no cut of it
** is accepted. Built and run by `make fuzz`. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/sh_resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct seen {
  const char *buf;
  size_t next;           /* where the next argument's header may start */
  size_t count, bytes, n;
} seen;

static void on_arg (void *ud, size_t i, size_t n, const char *p, size_t len) {
  seen *s = ud;
  if (i != s->count) abort();                       /* in order, none skipped */
  if (s->count == 0) {                              /* after the "*<n>\r\n" line */
    const char *lf = memchr(s->buf, '\n', (size_t)(p - s->buf));
    if (lf == NULL || lf[-1] != '\r') abort();
    s->n = n;
    s->next = (size_t)(lf - s->buf) + 1;
  } else if (n != s->n) abort();
  if ((size_t)(p - s->buf) < s->next + 4) abort();  /* after a "$<d>\r\n" */
  if (s->buf[s->next] != '$' || p[-2] != '\r' || p[-1] != '\n') abort();
  if (p[len] != '\r' || p[len + 1] != '\n') abort();
  s->next = (size_t)(p - s->buf) + len + 2;
  s->count++;
  s->bytes += len;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  sh_resp_limits lim;
  const char *buf;
  size_t nargs = 0, used = 0, n2 = 0, u2 = 0, cut;
  seen s;
  char *more;
  int r;
  if (size < 4) return 0;
  /* the first 4 bytes choose the limits (small, to reach them) */
  lim.max_bulk = data[0] % 64;
  lim.max_bytes = data[1] % 128;
  lim.max_elements = data[2] % 16;
  lim.max_line = data[3] % 32;
  if (data[0] & 0x80) lim.max_bulk = SIZE_MAX;
  if (data[1] & 0x80) lim.max_bytes = SIZE_MAX;
  buf = (const char *)data + 4;
  size -= 4;
  memset(&s, 0, sizeof s);
  s.buf = buf;
  r = sh_resp_command(buf, size, &lim, on_arg, &s, &nargs, &used);
  if (r != SH_RESP_OK && r != SH_RESP_SHORT && r != SH_RESP_OTHER) abort();
  if (r != SH_RESP_OK) return 0;
  if (nargs == 0 || nargs > lim.max_elements || nargs != s.count) abort();
  if (used > size || used != s.next || s.bytes > lim.max_bytes) abort();
  if (buf[0] != '*') abort();
  /* without fn: the same answer */
  if (sh_resp_command(buf, size, &lim, NULL, NULL, &n2, &u2) != SH_RESP_OK || n2 != nargs || u2 != used)
    abort();
  /* exactly the command's bytes, then garbage after it: the same */
  more = malloc(used + 8);
  if (more == NULL) return 0;
  memcpy(more, buf, used);
  memcpy(more + used, "\n*x$\r\0\r\n", 8);
  if (sh_resp_command(more, used + 8, &lim, NULL, NULL, &n2, &u2) != SH_RESP_OK || n2 != nargs ||
      u2 != used)
    abort();
  /* a cut of it: never accepted */
  for (cut = 0; cut < used; cut += 1 + cut / 8)
    if (sh_resp_command(more, cut, &lim, NULL, NULL, &n2, &u2) == SH_RESP_OK) abort();
  free(more);
  return 0;
}
