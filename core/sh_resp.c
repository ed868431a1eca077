/* sh_resp.c -- see sh_resp.h. */
#include <stdint.h>

#include "sh_resp.h"

/* The header line at buf[*pos..len) that starts with 'type': its number
** (digits only, leading zeros allowed, as Lua's tonumber of "%d+" reads
** them) into *v, *pos past its CRLF. SH_RESP_OTHER when it is not such a
** line, its LF comes past max_line, or the number is over 'most'. */
static int header (const char *buf, size_t len, size_t *pos, char type, size_t most,
                   size_t max_line, size_t *v) {
  size_t i = *pos, start = *pos, n = 0;
  int digits = 0;
  if (i >= len) return SH_RESP_SHORT;
  if (buf[i] != type) return SH_RESP_OTHER;
  for (i++; i < len && buf[i] >= '0' && buf[i] <= '9'; i++) {
    if (n > (SIZE_MAX - 9) / 10) return SH_RESP_OTHER;
    n = n * 10 + (size_t)(buf[i] - '0');
    if (n > most) return SH_RESP_OTHER;
    digits = 1;
  }
  if (i - start > max_line) return SH_RESP_OTHER;    /* no LF within max_line */
  if (i >= len) return SH_RESP_SHORT;
  if (!digits || buf[i] != '\r') return SH_RESP_OTHER;
  if (i + 1 - start > max_line) return SH_RESP_OTHER;
  if (i + 1 >= len) return SH_RESP_SHORT;
  if (buf[i + 1] != '\n') return SH_RESP_OTHER;
  if (i + 1 - start > max_line) return SH_RESP_OTHER;   /* the LF's place */
  *pos = i + 2;
  *v = n;
  return SH_RESP_OK;
}

int sh_resp_command (const char *buf, size_t len, const sh_resp_limits *lim,
                     sh_resp_arg_fn fn, void *ud, size_t *nargs, size_t *used) {
  size_t pos = 0, n, i, bytes = 0;
  int r = header(buf, len, &pos, '*', lim->max_elements, lim->max_line, &n);
  if (r != SH_RESP_OK) return r;
  if (n == 0) return SH_RESP_OTHER;                   /* empty: skipped by the general reader */
  for (i = 0; i < n; i++) {
    size_t blen;
    r = header(buf, len, &pos, '$', lim->max_bulk, lim->max_line, &blen);
    if (r != SH_RESP_OK) return r;
    bytes += blen;
    if (bytes > lim->max_bytes) return SH_RESP_OTHER;
    if (len - pos < blen + 2) {                       /* payload or CRLF not all here */
      if (len - pos > blen && buf[pos + blen] != '\r') return SH_RESP_OTHER;
      return SH_RESP_SHORT;
    }
    if (buf[pos + blen] != '\r' || buf[pos + blen + 1] != '\n') return SH_RESP_OTHER;
    if (fn != NULL) fn(ud, i, n, buf + pos, blen);
    pos += blen + 2;
  }
  *nargs = n;
  *used = pos;
  return SH_RESP_OK;
}
