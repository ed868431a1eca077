/* sh_httpc.c -- the fast path of reading an HTTP/1.x response head: see
** sh_httpc.h. Each rule here mirrors one of the general reader's
** (bindings/lua/http.client.lua: read_head, check_lines, framing, has_token);
** where that reader would refuse, or take more care, this says
** SH_HTTPC_OTHER and leaves the head to it. */
#include <string.h>

#include "sh_httpc.h"

#define MAX_LENGTH_DIGITS 15   /* Content-Length: longer is left to the reader */

/* Byte classes: a token character (RFC 9110: the reader's
** [%w!#$%&'*+-.^_`|~]), and a control character other than tab (the
** reader's CTL; CR and LF among them). */
enum { TCHAR = 1, CTL = 2 };
static const unsigned char cls[256] = {
  2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
  0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 2,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

static int is_digit (unsigned char c) { return c >= '0' && c <= '9'; }

static unsigned char lower (unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* p[0..n) is 'word' (lower case, wlen bytes) in any case. */
static int same (const char *p, size_t n, const char *word, size_t wlen) {
  size_t i;
  if (n != wlen) return 0;
  for (i = 0; i < n; i++)
    if (lower((unsigned char)p[i]) != (unsigned char)word[i]) return 0;
  return 1;
}
#define SAME(p, n, lit) same((p), (n), lit, sizeof lit - 1)

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
    if (cls[u[i]] & CTL) return 0;
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
    if (SAME(v + i, j - i, "close")) h->close = 1;
    else if (SAME(v + i, j - i, "keep-alive")) h->keep_alive = 1;
    i = j;
  }
}

/* One header, name p[0..nlen) and value v[0..vlen) (without the white
** space around it): what it says of the framing; 0 to leave the head to
** the reader. */
static int field (const char *p, size_t nlen, const char *v, size_t vlen, int *te, sh_httpc_head *h) {
  if (nlen == 14 && SAME(p, nlen, "content-length")) {
    long long x = 0;
    size_t i;
    if (vlen == 0 || vlen > MAX_LENGTH_DIGITS) return 0;
    for (i = 0; i < vlen; i++) {
      if (!is_digit((unsigned char)v[i])) return 0;
      x = x * 10 + (v[i] - '0');
    }
    if (h->length >= 0 && h->length != x) return 0;
    h->length = x;
  } else if (nlen == 17 && SAME(p, nlen, "transfer-encoding")) {
    if (*te || !SAME(v, vlen, "chunked")) return 0;
    *te = 1;
  } else if (nlen == 10 && SAME(p, nlen, "connection")) {
    connection_tokens(v, vlen, h);
  }
  return 1;
}

/* The header lines from buf[pos], each "name:value\r\n", to the empty
** line; *end: where that empty line starts. */
static int fields (const char *buf, size_t len, size_t pos, size_t *end, sh_httpc_head *h) {
  const unsigned char *u = (const unsigned char *)buf;
  int te = 0;
  for (;;) {
    size_t colon = pos, vs, ve, e;
    if (pos + 2 > len) return SH_HTTPC_SHORT;
    if (u[pos] == '\r' && u[pos + 1] == '\n') break;    /* the empty line */
    while (colon < len && (cls[u[colon]] & TCHAR)) colon++;
    if (colon == len) return SH_HTTPC_SHORT;
    if (u[colon] != ':' || colon == pos) return SH_HTTPC_OTHER;
    for (e = colon + 1; e < len && !(cls[u[e]] & CTL); e++) {}   /* the value */
    if (e + 2 > len) return SH_HTTPC_SHORT;
    if (u[e] != '\r' || u[e + 1] != '\n') return SH_HTTPC_OTHER;
    vs = colon + 1;
    ve = e;
    while (vs < ve && (u[vs] == ' ' || u[vs] == '\t')) vs++;
    while (ve > vs && (u[ve - 1] == ' ' || u[ve - 1] == '\t')) ve--;
    if (!field(buf + pos, colon - pos, buf + vs, ve - vs, &te, h)) return SH_HTTPC_OTHER;
    pos = e + 2;
  }
  h->chunked = te;
  *end = pos;
  return SH_HTTPC_OK;
}

int sh_httpc_head_parse (const char *buf, size_t len, size_t max_head, sh_httpc_head *h) {
  const char *lf;
  size_t line, start, end = 0;
  int r;
  /* the status line: its LF within max_head bytes */
  lf = memchr(buf, '\n', len < max_head + 1 ? len : max_head + 1);
  if (lf == NULL) return len > max_head ? SH_HTTPC_OTHER : SH_HTTPC_SHORT;
  line = (size_t)(lf - buf);
  h->length = -1;
  h->chunked = h->close = h->keep_alive = 0;
  if (!status_line(buf, line, h)) return SH_HTTPC_OTHER;
  start = line + 1;
  h->fields_off = start;
  if ((r = fields(buf, len, start, &end, h)) != SH_HTTPC_OK) return r;
  h->fields_len = end > start ? end - 2 - start : 0;
  h->used = end + 2;
  /* the reader takes two bytes, then up to max_head - line - 5 more
  ** before the CRLFCRLF that ends the header lines */
  if (end > start && (max_head < line + 5 || h->fields_len > max_head - line - 3))
    return SH_HTTPC_OTHER;
  if (h->chunked && (h->length >= 0 || h->minor == 0)) return SH_HTTPC_OTHER;
  return SH_HTTPC_OK;
}
