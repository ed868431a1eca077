/* l_http.c -- the C half of sockhost.http: the request head parser (on the
** http-parser library, Debian's libhttp-parser-dev) and a few helpers. It is
** the module "sockhost.http.parser", in package.preload; the Lua half,
** bindings/lua/http.lua, reads the head from the connection line by line
** and hands it over whole.
**
** http-parser does the grammar (method, request target characters, header
** name and value characters, Content-Length digits, keep-alive). It is
** lenient where request smuggling lives, so this file adds, before and
** after it: every line ends in CRLF (no bare LF, no bare CR), no folded
** header lines, header names are tokens (no space before the colon), the
** request line is "METHOD SP target SP HTTP/1.x" with single spaces, at most
** one Content-Length (digits only), Transfer-Encoding is exactly "chunked"
** and never beside Content-Length, HTTP/1.1 has exactly one Host.
**
** Nothing here calls back into Lua: the parser's callbacks only record
** spans into the head string, and the result table is built afterwards. */
#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/sh_util.h"
#include "shl.h"

#define HTTP_MAX_HEADERS_CAP 256    /* hard cap on max_headers */
#define HTTP_DEFAULT_HEADERS 100
#define HTTP_STACK_HEADERS 32       /* heads up to this many headers: no allocation */
#define MAX_LENGTH_DIGITS 15        /* Content-Length and chunk sizes: < 2^53 */

typedef struct { const char *p; size_t n; } span;

typedef struct head {
  span target;
  span *name, *value;         /* room for 'cap' headers */
  int nh, cap, max_headers;
  int last;                   /* 1: the last callback was a name, 2: a value */
  int done;                   /* on_headers_complete was called */
  int too_many;
  unsigned flags;
  int keep_alive, upgrade;
  unsigned method, major, minor;
} head;

static int on_url (http_parser *p, const char *at, size_t n) {
  head *h = p->data;
  if (h->target.p == NULL) h->target.p = at;
  h->target.n += n;
  return 0;
}

static int on_field (http_parser *p, const char *at, size_t n) {
  head *h = p->data;
  if (h->last != 1) {
    if (h->nh >= h->max_headers) { h->too_many = 1; return 1; }
    if (h->nh >= h->cap) return 1;            /* more names than lines: cannot be */
    h->name[h->nh].p = at;
    h->name[h->nh].n = 0;
    h->value[h->nh].p = at;
    h->value[h->nh].n = 0;
    h->nh++;
    h->last = 1;
  }
  h->name[h->nh - 1].n += n;
  return 0;
}

static int on_value (http_parser *p, const char *at, size_t n) {
  head *h = p->data;
  span *v;
  if (h->nh == 0) return 1;
  v = &h->value[h->nh - 1];
  if (h->last != 2) { v->p = at; v->n = 0; h->last = 2; }
  v->n += n;
  return 0;
}

static int on_headers_complete (http_parser *p) {
  head *h = p->data;
  h->done = 1;
  h->flags = p->flags;
  h->keep_alive = http_should_keep_alive(p);
  h->method = p->method;
  h->major = p->http_major;
  h->minor = p->http_minor;
  return 0;
}

static const http_parser_settings settings = {
  .on_url = on_url, .on_header_field = on_field, .on_header_value = on_value,
  .on_headers_complete = on_headers_complete,
};

/* RFC 9110 tchar */
static int is_tchar (unsigned char c) {
  static const char extra[] = "!#$%&'*+-.^_`|~";
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  return c != 0 && strchr(extra, c) != NULL;
}

static int ieq (span s, const char *lit) {
  size_t i, n = strlen(lit);
  if (s.n != n) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s.p[i];
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
    if (c != (unsigned char)lit[i]) return 0;
  }
  return 1;
}

/* Decimal digits only, at most MAX_LENGTH_DIGITS; -1 otherwise. */
static long long parse_length (span v) {
  long long n = 0;
  size_t i;
  if (v.n == 0 || v.n > MAX_LENGTH_DIGITS) return -1;
  for (i = 0; i < v.n; i++) {
    if (v.p[i] < '0' || v.p[i] > '9') return -1;
    n = n * 10 + (v.p[i] - '0');
  }
  return n;
}

/* The outcome of a parse: err == NULL, or the reason and the status code
** to answer with. */
typedef struct result {
  const char *err;
  int status;
  long long length;           /* Content-Length, or -1 */
  int chunked;
  span path, query;           /* query.p NULL: none */
} result;

static int fail (result *r, const char *err, int status) {
  r->err = err;
  r->status = status;
  return -1;
}

/* Line endings, folding and the request line's shape, before http-parser. */
static int prescan (const char *s, size_t len, result *r) {
  const char *p = s, *end = s + len, *nl, *sp1, *sp2, *v;
  size_t lineno = 0;
  for (; p < end; p = nl + 1, lineno++) {
    const char *cr;
    nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL) return fail(r, "incomplete head", 400);
    if (nl == p || nl[-1] != '\r') return fail(r, "bare LF", 400);
    cr = memchr(p, '\r', (size_t)(nl - p));
    if (cr != nl - 1) return fail(r, "bare CR", 400);
    if (lineno == 0) {
      /* METHOD SP request-target SP HTTP-version */
      sp1 = memchr(p, ' ', (size_t)(cr - p));
      sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(cr - sp1 - 1)) : NULL;
      if (sp1 == NULL || sp2 == NULL || sp1 == p || sp2 == sp1 + 1
          || memchr(sp2 + 1, ' ', (size_t)(cr - sp2 - 1)) != NULL)
        return fail(r, "bad request line", 400);
      v = sp2 + 1;
      if (cr - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9'
          || v[6] != '.' || v[7] < '0' || v[7] > '9')
        return fail(r, "bad request line", 400);
      if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return fail(r, "unsupported version", 505);
    } else if (cr == p) {                     /* the blank line */
      if (nl + 1 != end) return fail(r, "data after head", 400);
      return 0;
    } else if (*p == ' ' || *p == '\t') {
      return fail(r, "folded header", 400);
    }
  }
  return fail(r, "incomplete head", 400);
}

/* Split the request target into its raw path and query. */
static void split_target (span t, unsigned method, result *r) {
  const char *q, *hash;
  r->query.p = NULL;
  r->query.n = 0;
  if (method == HTTP_CONNECT || (t.n == 1 && t.p[0] == '*')) {
    r->path = t;
    return;
  }
  if (t.n > 0 && t.p[0] != '/') {               /* absolute-form */
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(t.p, t.n, 0, &u) == 0) {
      if (u.field_set & (1 << UF_PATH)) {
        r->path.p = t.p + u.field_data[UF_PATH].off;
        r->path.n = u.field_data[UF_PATH].len;
      } else {
        r->path.p = "/";
        r->path.n = 1;
      }
      if (u.field_set & (1 << UF_QUERY)) {
        r->query.p = t.p + u.field_data[UF_QUERY].off;
        r->query.n = u.field_data[UF_QUERY].len;
      }
      return;
    }
  }
  hash = memchr(t.p, '#', t.n);
  if (hash != NULL) t.n = (size_t)(hash - t.p);
  q = memchr(t.p, '?', t.n);
  r->path.p = t.p;
  r->path.n = q ? (size_t)(q - t.p) : t.n;
  if (q != NULL) {
    r->query.p = q + 1;
    r->query.n = t.n - (size_t)(q + 1 - t.p);
  }
}

/* Parse a complete request head (request line, header lines, blank line;
** all CRLF) into h and r. 0 on success, -1 with r->err and r->status. */
static int parse_head (const char *s, size_t len, head *h, result *r) {
  http_parser p;
  size_t n;
  int i, ncl = 0, nte = 0, nhost = 0;
  enum http_errno e;
  memset(r, 0, sizeof *r);
  r->length = -1;
  h->nh = 0;
  h->last = h->done = h->too_many = 0;
  h->target.p = NULL;
  h->target.n = 0;
  if (prescan(s, len, r) != 0) return -1;
  http_parser_init(&p, HTTP_REQUEST);
  p.data = h;
  n = http_parser_execute(&p, &settings, s, len);
  e = HTTP_PARSER_ERRNO(&p);
  if (h->too_many) return fail(r, "too many headers", 431);
  for (i = 0; i < h->nh; i++) {               /* also for a failed parse */
    if (ieq(h->name[i], "content-length")) ncl++;
    else if (ieq(h->name[i], "transfer-encoding")) nte++;
  }
  if (e == HPE_UNEXPECTED_CONTENT_LENGTH || (ncl && nte))
    return fail(r, ncl > 1 ? "duplicate content-length" : "content-length with transfer-encoding", 400);
  switch (e) {
    case HPE_OK: break;
    case HPE_HEADER_OVERFLOW: return fail(r, "head too large", 431);
    case HPE_INVALID_CONTENT_LENGTH: return fail(r, "bad content-length", 400);
    case HPE_INVALID_TRANSFER_ENCODING: return fail(r, "bad transfer-encoding", 400);
    case HPE_INVALID_METHOD: case HPE_INVALID_URL: case HPE_INVALID_VERSION:
    case HPE_INVALID_CONSTANT:
      return fail(r, "bad request line", 400);
    default:
      return fail(r, h->target.p == NULL ? "bad request line" : "bad header", 400);
  }
  if (!h->done || (n != len && !p.upgrade)) return fail(r, "incomplete head", 400);
  h->upgrade = p.upgrade;
  for (i = 0; i < h->nh; i++) {
    span *nm = &h->name[i], *v = &h->value[i];
    size_t k;
    if (nm->n == 0) return fail(r, "bad header", 400);
    for (k = 0; k < nm->n; k++)
      if (!is_tchar((unsigned char)nm->p[k])) return fail(r, "bad header", 400);
    while (v->n > 0 && (v->p[v->n - 1] == ' ' || v->p[v->n - 1] == '\t')) v->n--;
    while (v->n > 0 && (v->p[0] == ' ' || v->p[0] == '\t')) { v->p++; v->n--; }
    if (ieq(*nm, "content-length")) {
      if ((r->length = parse_length(*v)) < 0) return fail(r, "bad content-length", 400);
    } else if (ieq(*nm, "transfer-encoding")) {
      if (nte > 1 || !ieq(*v, "chunked") || h->minor == 0)
        return fail(r, "bad transfer-encoding", 400);
      r->chunked = 1;
    } else if (ieq(*nm, "host")) {
      nhost++;
    }
  }
  if (nhost > 1) return fail(r, "duplicate host", 400);
  if (nhost == 0 && h->minor == 1) return fail(r, "missing host", 400);
  split_target(h->target, h->method, r);
  return 0;
}

/* Push the lower-cased name. */
static void push_lower (lua_State *L, span nm) {
  char small[64];
  luaL_Buffer b;
  char *d = nm.n <= sizeof small ? small : luaL_buffinitsize(L, &b, nm.n);
  size_t k;
  for (k = 0; k < nm.n; k++) {
    unsigned char c = (unsigned char)nm.p[k];
    d[k] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
  }
  if (d == small) lua_pushlstring(L, small, nm.n);
  else luaL_pushresultsize(&b, nm.n);
}

static void setfield_span (lua_State *L, const char *k, span s) {
  lua_pushlstring(L, s.p, s.n);
  lua_setfield(L, -2, k);
}

/* parser.parse_head(s [, max_headers]) -> head | nil, err, status
** head = { method, target, path, query_string (raw, or nil), version ("1.0" or
** "1.1"), headers = { lower-cased name = value; repeats joined by ", ",
** "; " for cookie }, keep_alive, length (Content-Length or nil), chunked,
** upgrade } */
static int l_parse_head (lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Integer maxh = luaL_optinteger(L, 2, HTTP_DEFAULT_HEADERS);
  span names[HTTP_STACK_HEADERS], values[HTTP_STACK_HEADERS];
  head hd, *h = &hd;
  result r;
  const char *p = s, *end = s + len;
  int i, lines = 0;
  luaL_argcheck(L, maxh >= 1 && maxh <= HTTP_MAX_HEADERS_CAP, 2, "max_headers out of range (1..256)");
  while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) { p++; lines++; }
  h->max_headers = (int)maxh;
  h->cap = lines < (int)maxh + 1 ? lines : (int)maxh + 1;  /* one past max: too_many */
  if (h->cap <= HTTP_STACK_HEADERS) {
    h->name = names;
    h->value = values;
  } else {                                      /* scratch, freed by the collector */
    h->name = lua_newuserdatauv(L, 2 * (size_t)h->cap * sizeof(span), 0);
    h->value = h->name + h->cap;
  }
  if (parse_head(s, len, h, &r) != 0) {
    luaL_pushfail(L);
    lua_pushstring(L, r.err);
    lua_pushinteger(L, r.status);
    return 3;
  }
  lua_createtable(L, 0, 12);
  lua_pushstring(L, http_method_str((enum http_method)h->method));
  lua_setfield(L, -2, "method");
  setfield_span(L, "target", h->target);
  setfield_span(L, "path", r.path);
  if (r.query.p != NULL) setfield_span(L, "query_string", r.query);
  lua_pushstring(L, h->minor == 1 ? "1.1" : "1.0");
  lua_setfield(L, -2, "version");
  lua_pushboolean(L, h->keep_alive);
  lua_setfield(L, -2, "keep_alive");
  lua_pushboolean(L, r.chunked);
  lua_setfield(L, -2, "chunked");
  lua_pushboolean(L, h->upgrade);
  lua_setfield(L, -2, "upgrade");
  if (r.length >= 0) {
    lua_pushinteger(L, (lua_Integer)r.length);
    lua_setfield(L, -2, "length");
  }
  lua_createtable(L, 0, h->nh);
  for (i = 0; i < h->nh; i++) {
    push_lower(L, h->name[i]);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushlstring(L, h->value[i].p, h->value[i].n);
    } else {                                    /* a repeat: join in order */
      lua_pushstring(L, ieq(h->name[i], "cookie") ? "; " : ", ");
      lua_pushlstring(L, h->value[i].p, h->value[i].n);
      lua_concat(L, 3);
    }
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "headers");
  return 1;
}

/* parser.chunk_size(line) -> n | nil, "bad chunk size"
** 'line' is a chunk-size line without its LF: 1 to 15 hex digits, then
** optionally ";" and extensions (ignored; no control characters), then CR. */
static int l_chunk_size (lua_State *L) {
  size_t len, i = 0;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Integer n = 0;
  if (len < 2 || s[len - 1] != '\r') goto bad;
  len--;
  for (; i < len; i++) {
    int c = (unsigned char)s[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else break;
    if (i >= MAX_LENGTH_DIGITS) goto bad;
    n = n * 16 + d;
  }
  if (i == 0) goto bad;
  if (i < len) {
    if (s[i] != ';') goto bad;
    for (; i < len; i++) {
      unsigned char c = (unsigned char)s[i];
      if ((c < 32 && c != '\t') || c == 127) goto bad;
    }
  }
  lua_pushinteger(L, n);
  return 1;
bad:
  luaL_pushfail(L);
  lua_pushliteral(L, "bad chunk size");
  return 2;
}

/* parser.realpath(path) -> resolved, kind | nil, err
** The canonical absolute path (symbolic links, "." and ".." resolved) and
** what it is: "file", "directory" or "other". */
static int l_realpath (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char *res = realpath(path, NULL);
  struct stat st;
  int e;
  if (res == NULL || stat(res, &st) != 0) {
    e = errno;
    free(res);
    return shl_pushfail(L, sh_strerror(e));
  }
  lua_pushstring(L, res);                       /* may raise: free first */
  free(res);
  lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : "other");
  return 2;
}

static const luaL_Reg funcs[] = {
  {"parse_head", l_parse_head}, {"chunk_size", l_chunk_size}, {"realpath", l_realpath},
  {NULL, NULL}
};

static int luaopen_http_parser (lua_State *L) {
  unsigned long v = http_parser_version();
  luaL_newlib(L, funcs);
  lua_pushfstring(L, "http-parser %d.%d.%d", (int)((v >> 16) & 255), (int)((v >> 8) & 255),
                  (int)(v & 255));
  lua_setfield(L, -2, "version");
  return 1;
}

/* package.preload["sockhost.http.parser"] */
void shl_http_open (lua_State *L) {
  int top = lua_gettop(L);
  lua_getglobal(L, "package");
  if (lua_istable(L, -1) && lua_getfield(L, -1, "preload") == LUA_TTABLE) {
    lua_pushcfunction(L, luaopen_http_parser);
    lua_setfield(L, -2, "sockhost.http.parser");
  }
  lua_settop(L, top);
}
