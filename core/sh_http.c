/* sh_http.c -- see sh_http.h. http-parser's callbacks only record spans
** into the head string; the strict checks run before it (line endings,
** folding, the request line's shape) and after it (the headers). */
#include "sh_http.h"

#include <http_parser.h>
#include <stdio.h>
#include <string.h>

static const struct { const char *text; int status; } errors[] = {
  [SH_HTTP_OK] = { "", 0 },
  [SH_HTTP_INCOMPLETE] = { "incomplete head", 400 },
  [SH_HTTP_BARE_LF] = { "bare LF", 400 },
  [SH_HTTP_BARE_CR] = { "bare CR", 400 },
  [SH_HTTP_BAD_REQUEST_LINE] = { "bad request line", 400 },
  [SH_HTTP_BAD_VERSION] = { "unsupported version", 505 },
  [SH_HTTP_DATA_AFTER_HEAD] = { "data after head", 400 },
  [SH_HTTP_FOLDED] = { "folded header", 400 },
  [SH_HTTP_BAD_HEADER] = { "bad header", 400 },
  [SH_HTTP_TOO_MANY_HEADERS] = { "too many headers", 431 },
  [SH_HTTP_HEAD_TOO_LARGE] = { "head too large", 431 },
  [SH_HTTP_BAD_LENGTH] = { "bad content-length", 400 },
  [SH_HTTP_DUP_LENGTH] = { "duplicate content-length", 400 },
  [SH_HTTP_LENGTH_WITH_TE] = { "content-length with transfer-encoding", 400 },
  [SH_HTTP_BAD_TE] = { "bad transfer-encoding", 400 },
  [SH_HTTP_DUP_HOST] = { "duplicate host", 400 },
  [SH_HTTP_NO_HOST] = { "missing host", 400 },
  [SH_HTTP_BAD_CHUNK_SIZE] = { "bad chunk size", 400 },
};

const char *sh_http_strerror (sh_http_err e) {
  return errors[e].text;
}

int sh_http_status (sh_http_err e) {
  return errors[e].status;
}

/* ---------------- http-parser's callbacks ---------------- */

/* What the callbacks share, besides the head. */
typedef struct pstate {
  sh_http_head *h;
  int last;                   /* 1: the last callback was a name, 2: a value */
  int done;                   /* on_headers_complete was called */
  int too_many;
  unsigned method;            /* enum http_method */
} pstate;

static int on_url (http_parser *p, const char *at, size_t n) {
  sh_http_head *h = ((pstate *)p->data)->h;
  if (h->target.p == NULL) h->target.p = at;
  h->target.n += n;
  return 0;
}

static int on_field (http_parser *p, const char *at, size_t n) {
  pstate *ps = p->data;
  sh_http_head *h = ps->h;
  if (ps->last != 1) {
    if (h->nh >= h->max_headers) { ps->too_many = 1; return 1; }
    if (h->nh >= h->cap) return 1;            /* more names than lines: cannot be */
    h->headers[h->nh].name.p = at;
    h->headers[h->nh].name.n = 0;
    h->headers[h->nh].value.p = at;
    h->headers[h->nh].value.n = 0;
    h->nh++;
    ps->last = 1;
  }
  h->headers[h->nh - 1].name.n += n;
  return 0;
}

static int on_value (http_parser *p, const char *at, size_t n) {
  pstate *ps = p->data;
  sh_http_span *v;
  if (ps->h->nh == 0) return 1;
  v = &ps->h->headers[ps->h->nh - 1].value;
  if (ps->last != 2) { v->p = at; v->n = 0; ps->last = 2; }
  v->n += n;
  return 0;
}

static int on_headers_complete (http_parser *p) {
  pstate *ps = p->data;
  ps->done = 1;
  ps->method = p->method;
  ps->h->method = http_method_str((enum http_method)p->method);
  ps->h->keep_alive = http_should_keep_alive(p);
  ps->h->minor = p->http_minor;
  return 0;
}

static const http_parser_settings settings = {
  .on_url = on_url, .on_header_field = on_field, .on_header_value = on_value,
  .on_headers_complete = on_headers_complete,
};

/* ---------------- helpers ---------------- */

/* RFC 9110 tchar */
static int is_tchar (unsigned char c) {
  static const char extra[] = "!#$%&'*+-.^_`|~";
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  return c != 0 && strchr(extra, c) != NULL;
}

int sh_http_ieq (sh_http_span s, const char *lower) {
  size_t i, n = strlen(lower);
  if (s.n != n) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s.p[i];
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
    if (c != (unsigned char)lower[i]) return 0;
  }
  return 1;
}

/* Decimal digits only, at most SH_HTTP_MAX_DIGITS; -1 otherwise. */
static long long parse_length (sh_http_span v) {
  long long n = 0;
  size_t i;
  if (v.n == 0 || v.n > SH_HTTP_MAX_DIGITS) return -1;
  for (i = 0; i < v.n; i++) {
    if (v.p[i] < '0' || v.p[i] > '9') return -1;
    n = n * 10 + (v.p[i] - '0');
  }
  return n;
}

/* ---------------- before http-parser ---------------- */

/* "METHOD SP request-target SP HTTP-version", from 'p' to its CR. */
static sh_http_err check_request_line (const char *p, const char *cr) {
  const char *sp1, *sp2, *v;
  sp1 = memchr(p, ' ', (size_t)(cr - p));
  sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(cr - sp1 - 1)) : NULL;
  if (sp1 == NULL || sp2 == NULL || sp1 == p || sp2 == sp1 + 1
      || memchr(sp2 + 1, ' ', (size_t)(cr - sp2 - 1)) != NULL)
    return SH_HTTP_BAD_REQUEST_LINE;
  v = sp2 + 1;
  if (cr - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9'
      || v[6] != '.' || v[7] < '0' || v[7] > '9')
    return SH_HTTP_BAD_REQUEST_LINE;
  if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) return SH_HTTP_BAD_VERSION;
  return SH_HTTP_OK;
}

/* Line endings, folding and the request line's shape. */
static sh_http_err prescan (const char *s, size_t len) {
  const char *p = s, *end = s + len, *nl, *cr;
  sh_http_err e;
  size_t lineno = 0;
  for (; p < end; p = nl + 1, lineno++) {
    nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL) return SH_HTTP_INCOMPLETE;
    if (nl == p || nl[-1] != '\r') return SH_HTTP_BARE_LF;
    cr = memchr(p, '\r', (size_t)(nl - p));
    if (cr != nl - 1) return SH_HTTP_BARE_CR;
    if (lineno == 0) {
      if ((e = check_request_line(p, cr)) != SH_HTTP_OK) return e;
    } else if (cr == p) {                     /* the blank line */
      return nl + 1 != end ? SH_HTTP_DATA_AFTER_HEAD : SH_HTTP_OK;
    } else if (*p == ' ' || *p == '\t') {
      return SH_HTTP_FOLDED;
    }
  }
  return SH_HTTP_INCOMPLETE;
}

/* ---------------- http-parser's verdict ---------------- */

/* What http-parser said (it stopped after 'n' bytes with 'e'), and the
** Content-Length / Transfer-Encoding conflicts, which it may report as
** anything or not at all. Sets *nte to the number of Transfer-Encodings. */
static sh_http_err verdict (const sh_http_head *h, const pstate *ps, const http_parser *p,
                            size_t n, size_t len, int *nte) {
  enum http_errno e = HTTP_PARSER_ERRNO(p);
  int i, ncl = 0;
  if (ps->too_many) return SH_HTTP_TOO_MANY_HEADERS;
  for (i = 0, *nte = 0; i < h->nh; i++) {     /* also for a failed parse */
    if (sh_http_ieq(h->headers[i].name, "content-length")) ncl++;
    else if (sh_http_ieq(h->headers[i].name, "transfer-encoding")) (*nte)++;
  }
  if (e == HPE_UNEXPECTED_CONTENT_LENGTH || (ncl && *nte))
    return ncl > 1 ? SH_HTTP_DUP_LENGTH : SH_HTTP_LENGTH_WITH_TE;
  switch (e) {
    case HPE_OK: break;
    case HPE_HEADER_OVERFLOW: return SH_HTTP_HEAD_TOO_LARGE;
    case HPE_INVALID_CONTENT_LENGTH: return SH_HTTP_BAD_LENGTH;
    case HPE_INVALID_TRANSFER_ENCODING: return SH_HTTP_BAD_TE;
    case HPE_INVALID_METHOD: case HPE_INVALID_URL: case HPE_INVALID_VERSION:
    case HPE_INVALID_CONSTANT:
      return SH_HTTP_BAD_REQUEST_LINE;
    default:
      return h->target.p == NULL ? SH_HTTP_BAD_REQUEST_LINE : SH_HTTP_BAD_HEADER;
  }
  if (!ps->done || (n != len && !p->upgrade)) return SH_HTTP_INCOMPLETE;
  return SH_HTTP_OK;
}

/* ---------------- after http-parser ---------------- */

static void trim (sh_http_span *v) {
  while (v->n > 0 && (v->p[v->n - 1] == ' ' || v->p[v->n - 1] == '\t')) v->n--;
  while (v->n > 0 && (v->p[0] == ' ' || v->p[0] == '\t')) { v->p++; v->n--; }
}

static int is_token (sh_http_span s) {
  size_t k;
  if (s.n == 0) return 0;
  for (k = 0; k < s.n; k++)
    if (!is_tchar((unsigned char)s.p[k])) return 0;
  return 1;
}

/* Names, values trimmed, framing, Host ('nte': Transfer-Encodings seen). */
static sh_http_err check_headers (sh_http_head *h, int nte) {
  int i, nhost = 0;
  for (i = 0; i < h->nh; i++) {
    sh_http_span nm = h->headers[i].name, *v = &h->headers[i].value;
    if (!is_token(nm)) return SH_HTTP_BAD_HEADER;
    trim(v);
    if (sh_http_ieq(nm, "content-length")) {
      if ((h->length = parse_length(*v)) < 0) return SH_HTTP_BAD_LENGTH;
    } else if (sh_http_ieq(nm, "transfer-encoding")) {
      if (nte > 1 || !sh_http_ieq(*v, "chunked") || h->minor == 0) return SH_HTTP_BAD_TE;
      h->chunked = 1;
    } else if (sh_http_ieq(nm, "host")) {
      nhost++;
    }
  }
  if (nhost > 1) return SH_HTTP_DUP_HOST;
  if (nhost == 0 && h->minor == 1) return SH_HTTP_NO_HOST;
  return SH_HTTP_OK;
}

/* An absolute-form target's path and query; 0 if it is not one. */
static int split_absolute (sh_http_head *h) {
  sh_http_span t = h->target;
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(t.p, t.n, 0, &u) != 0) return 0;
  if (u.field_set & (1 << UF_PATH)) {
    h->path.p = t.p + u.field_data[UF_PATH].off;
    h->path.n = u.field_data[UF_PATH].len;
  } else {
    h->path.p = "/";
    h->path.n = 1;
  }
  if (u.field_set & (1 << UF_QUERY)) {
    h->query.p = t.p + u.field_data[UF_QUERY].off;
    h->query.n = u.field_data[UF_QUERY].len;
  }
  return 1;
}

/* Split the request target into its raw path and query. */
static void split_target (sh_http_head *h, unsigned method) {
  sh_http_span t = h->target;
  const char *q, *hash;
  h->query.p = NULL;
  h->query.n = 0;
  if (method == HTTP_CONNECT || (t.n == 1 && t.p[0] == '*')) {
    h->path = t;
    return;
  }
  if (t.n > 0 && t.p[0] != '/' && split_absolute(h)) return;
  hash = memchr(t.p, '#', t.n);
  if (hash != NULL) t.n = (size_t)(hash - t.p);
  q = memchr(t.p, '?', t.n);
  h->path.p = t.p;
  h->path.n = q ? (size_t)(q - t.p) : t.n;
  if (q != NULL) {
    h->query.p = q + 1;
    h->query.n = t.n - (size_t)(q + 1 - t.p);
  }
}

/* ---------------- the API ---------------- */

int sh_http_header_room (const char *s, size_t len, int max_headers) {
  const char *p = s, *end = s + len;
  int lines = 0;
  while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) { p++; lines++; }
  return lines < max_headers + 1 ? lines : max_headers + 1;  /* one past max: too many */
}

void sh_http_head_init (sh_http_head *h, sh_http_header *headers, int cap, int max_headers) {
  memset(h, 0, sizeof *h);
  h->headers = headers;
  h->cap = cap;
  h->max_headers = max_headers;
  h->length = -1;
}

static void reset (sh_http_head *h) {
  sh_http_header *headers = h->headers;
  int cap = h->cap, max_headers = h->max_headers;
  sh_http_head_init(h, headers, cap, max_headers);
}

sh_http_err sh_http_parse_head (sh_http_head *h, const char *s, size_t len) {
  http_parser p;
  pstate ps = { h, 0, 0, 0, 0 };
  size_t n;
  int nte;
  sh_http_err e;
  reset(h);
  if ((e = prescan(s, len)) != SH_HTTP_OK) return e;
  http_parser_init(&p, HTTP_REQUEST);
  p.data = &ps;
  n = http_parser_execute(&p, &settings, s, len);
  if ((e = verdict(h, &ps, &p, n, len, &nte)) != SH_HTTP_OK) return e;
  h->upgrade = p.upgrade;
  if ((e = check_headers(h, nte)) != SH_HTTP_OK) return e;
  split_target(h, ps.method);
  return SH_HTTP_OK;
}

sh_http_err sh_http_chunk_size (const char *s, size_t len, long long *size) {
  size_t i = 0;
  long long n = 0;
  if (len < 2 || s[len - 1] != '\r') return SH_HTTP_BAD_CHUNK_SIZE;
  len--;
  for (; i < len; i++) {
    int c = (unsigned char)s[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else break;
    if (i >= SH_HTTP_MAX_DIGITS) return SH_HTTP_BAD_CHUNK_SIZE;
    n = n * 16 + d;
  }
  if (i == 0 || (i < len && s[i] != ';')) return SH_HTTP_BAD_CHUNK_SIZE;
  for (; i < len; i++) {                      /* extensions: no control characters */
    unsigned char c = (unsigned char)s[i];
    if ((c < 32 && c != '\t') || c == 127) return SH_HTTP_BAD_CHUNK_SIZE;
  }
  *size = n;
  return SH_HTTP_OK;
}

void sh_http_parser_version (char *buf, size_t n) {
  unsigned long v = http_parser_version();
  if (n > 0)
    snprintf(buf, n, "http-parser %d.%d.%d", (int)((v >> 16) & 255), (int)((v >> 8) & 255),
             (int)(v & 255));
}
