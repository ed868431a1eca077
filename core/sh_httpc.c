/* sh_httpc.c -- the fast path of reading an HTTP/1.x response head: see
** sh_httpc.h. Each rule here mirrors one of the general reader's
** (bindings/lua/http.client.lua: read_head, check_lines, framing, has_token);
** where that reader would refuse, or take more care, this says
** SH_HTTPC_OTHER and leaves the head to it. */
#include <string.h>

#include "sh_httpc.h"

#define MAX_LENGTH_DIGITS 15   /* Content-Length: longer is left to the reader */

static int is_digit (unsigned char c) { return c >= '0' && c <= '9'; }

/* A token character (RFC 9110): the reader's [%w!#$%&'*+-.^_`|~]. */
static int is_tchar (unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c)) return 1;
  return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A control character other than tab: the reader's CTL. */
static int is_ctl (unsigned char c) { return (c < 32 && c != '\t') || c == 127; }

static unsigned char lower (unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* p[0..n) is 'word' (lower case) in any case. */
static int same (const char *p, size_t n, const char *word) {
  size_t i;
  if (strlen(word) != n) return 0;
  for (i = 0; i < n; i++)
    if (lower((unsigned char)p[i]) != (unsigned char)word[i]) return 0;
  return 1;
}

/* The status line, p[0..n) without its LF: "HTTP/1.<0|1> <1-5><d><d>",
** then "\r", or " ", a reason without control characters but tab, "\r". */
static int status_line (const char *p, size_t n, sh_httpc_head *h) {
  const unsigned char *u = (const unsigned char *)p;
  size_t i;
  if (n < 13 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
    return 0;
  if (u[9] < '1' || u[9] > '5' || !is_digit(u[10]) || !is_digit(u[11])) return 0;
  if (p[n - 1] != '\r') return 0;
  h->minor = p[7] - '0';
  h->status = (u[9] - '0') * 100 + (u[10] - '0') * 10 + (u[11] - '0');
  if (n == 13) {                                  /* "HTTP/1.1 200\r" */
    h->reason_off = 12;
    h->reason_len = 0;
    return 1;
  }
  if (p[12] != ' ') return 0;
  for (i = 13; i < n - 1; i++)
    if (is_ctl(u[i])) return 0;
  h->reason_off = 13;
  h->reason_len = n - 14;
  return 1;
}

/* Connection's value: its "close" and "keep-alive" tokens (between commas
** and white space), in any case. */
static void connection_tokens (const char *v, size_t n, sh_httpc_head *h) {
  size_t i = 0, j;
  while (i < n) {
    while (i < n && (v[i] == ',' || v[i] == ' ' || v[i] == '\t')) i++;
    for (j = i; j < n && v[j] != ',' && v[j] != ' ' && v[j] != '\t'; j++) {}
    if (same(v + i, j - i, "close")) h->close = 1;
    else if (same(v + i, j - i, "keep-alive")) h->keep_alive = 1;
    i = j;
  }
}

/* One header, name p[0..nlen) and value v[0..vlen) (without the white
** space around it): what it says of the framing; 0 to leave the head to
** the reader. */
static int field (const char *p, size_t nlen, const char *v, size_t vlen, int *te, sh_httpc_head *h) {
  if (same(p, nlen, "content-length")) {
    long long x = 0;
    size_t i;
    if (vlen == 0 || vlen > MAX_LENGTH_DIGITS) return 0;
    for (i = 0; i < vlen; i++) {
      if (!is_digit((unsigned char)v[i])) return 0;
      x = x * 10 + (v[i] - '0');
    }
    if (h->length >= 0 && h->length != x) return 0;
    h->length = x;
  } else if (same(p, nlen, "transfer-encoding")) {
    if (*te || !same(v, vlen, "chunked")) return 0;
    *te = 1;
  } else if (same(p, nlen, "connection")) {
    connection_tokens(v, vlen, h);
  }
  return 1;
}

/* The header lines p[0..n): CRLF between them, none after the last. */
static int fields (const char *p, size_t n, sh_httpc_head *h) {
  const unsigned char *u = (const unsigned char *)p;
  size_t pos = 0;
  int te = 0;
  while (pos < n) {
    size_t colon = pos, vs, ve, e;
    while (colon < n && u[colon] != ':') {
      if (!is_tchar(u[colon])) return 0;
      colon++;
    }
    if (colon == n || colon == pos) return 0;
    for (e = colon + 1; e < n; e++) {             /* the value: to CRLF or the end */
      if (u[e] == '\r' && e + 1 < n && u[e + 1] == '\n') break;
      if (is_ctl(u[e])) return 0;
    }
    vs = colon + 1;
    ve = e;
    while (vs < ve && (u[vs] == ' ' || u[vs] == '\t')) vs++;
    while (ve > vs && (u[ve - 1] == ' ' || u[ve - 1] == '\t')) ve--;
    if (!field(p + pos, colon - pos, p + vs, ve - vs, &te, h)) return 0;
    pos = e + 2;
  }
  h->chunked = te;
  return 1;
}

int sh_httpc_head_parse (const char *buf, size_t len, size_t max_head, sh_httpc_head *h) {
  const char *lf, *end;
  size_t line, start, left, from, limit;
  /* the status line: its LF within max_head bytes */
  lf = memchr(buf, '\n', len < max_head + 1 ? len : max_head + 1);
  if (lf == NULL) return len > max_head ? SH_HTTPC_OTHER : SH_HTTPC_SHORT;
  line = (size_t)(lf - buf);
  h->length = -1;
  h->chunked = h->close = h->keep_alive = 0;
  if (!status_line(buf, line, h)) return SH_HTTPC_OTHER;
  start = line + 1;
  if (len < start + 2) return SH_HTTPC_SHORT;
  h->fields_off = start;
  if (buf[start] == '\r' && buf[start + 1] == '\n') {       /* no header lines */
    h->fields_len = 0;
    h->used = start + 2;
  } else {
    /* the reader takes two bytes, then up to max_head - line - 5 more
    ** before the blank line's CRLFCRLF */
    if (max_head < line + 1 + 4) return SH_HTTPC_OTHER;
    left = max_head - line - 1;
    from = start + 2;
    limit = left - 4 + 4;                        /* the rest and its CRLFCRLF */
    if (len - from < limit) limit = len - from;
    end = limit >= 4 ? memmem(buf + from, limit, "\r\n\r\n", 4) : NULL;
    if (end == NULL) return len - from >= left ? SH_HTTPC_OTHER : SH_HTTPC_SHORT;
    h->fields_len = (size_t)(end - buf) - start;
    h->used = (size_t)(end - buf) + 4;
    if (!fields(buf + start, h->fields_len, h)) return SH_HTTPC_OTHER;
  }
  if (h->chunked && (h->length >= 0 || h->minor == 0)) return SH_HTTPC_OTHER;
  return SH_HTTPC_OK;
}
