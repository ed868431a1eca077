/* l_http.c -- the C half of sockhost.http: the module
** "sockhost.http.parser", in package.preload. It binds the strict request
** head parser of core/sh_http.h (on the http-parser library, Debian's
** libhttp-parser-dev) and a few helpers; the Lua half,
** bindings/lua/http.server.lua, reads the head from the connection line by
** line and hands it over whole.
**
** Nothing here calls back into Lua: the parser records spans into the head
** string, and the result table is built afterwards. */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "../core/sh_http.h"
#include "../core/sh_util.h"
#include "shl.h"

#define STACK_HEADERS 32          /* heads up to this many headers: no allocation */
#define SMALL_NAME 64             /* header names up to this long: lower-cased on the stack */

#define STR_(x) #x
#define STR(x) STR_(x)

/* Push the lower-cased name. */
static void push_lower (lua_State *L, sh_http_span nm) {
  char small[SMALL_NAME];
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

static void setfield_span (lua_State *L, const char *k, sh_http_span s) {
  lua_pushlstring(L, s.p, s.n);
  lua_setfield(L, -2, k);
}

static void setfield_boolean (lua_State *L, const char *k, int b) {
  lua_pushboolean(L, b);
  lua_setfield(L, -2, k);
}

/* Push head.headers: lower-cased name = value, repeats joined in order by
** ", " ("; " for cookie). */
static void push_headers (lua_State *L, const sh_http_head *h) {
  int i;
  lua_createtable(L, 0, h->nh);
  for (i = 0; i < h->nh; i++) {
    const sh_http_header *hd = &h->headers[i];
    push_lower(L, hd->name);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushlstring(L, hd->value.p, hd->value.n);
    } else {                                    /* a repeat: join in order */
      lua_pushstring(L, sh_http_ieq(hd->name, "cookie") ? "; " : ", ");
      lua_pushlstring(L, hd->value.p, hd->value.n);
      lua_concat(L, 3);
    }
    lua_rawset(L, -3);
  }
}

/* Push the table of a parsed head (see l_parse_head). */
static void push_head (lua_State *L, const sh_http_head *h) {
  lua_createtable(L, 0, 12);
  lua_pushstring(L, h->method);
  lua_setfield(L, -2, "method");
  setfield_span(L, "target", h->target);
  setfield_span(L, "path", h->path);
  if (h->query.p != NULL) setfield_span(L, "query_string", h->query);
  lua_pushstring(L, h->minor == 1 ? "1.1" : "1.0");
  lua_setfield(L, -2, "version");
  setfield_boolean(L, "keep_alive", h->keep_alive);
  setfield_boolean(L, "chunked", h->chunked);
  setfield_boolean(L, "upgrade", h->upgrade);
  if (h->length >= 0) {
    lua_pushinteger(L, (lua_Integer)h->length);
    lua_setfield(L, -2, "length");
  }
  push_headers(L, h);
  lua_setfield(L, -2, "headers");
}

/* The head 's' parsed into 'h' (room for its headers on the stack or, for
** many, in a scratch userdata pushed: the caller's settop drops it). */
static sh_http_err parse_into (lua_State *L, sh_http_head *h, sh_http_header *room,
                               const char *s, size_t len, int maxh) {
  sh_http_header *headers = room;
  int cap = sh_http_header_room(s, len, maxh);
  if (cap > STACK_HEADERS)                      /* scratch, freed by the collector */
    headers = lua_newuserdatauv(L, (size_t)cap * sizeof *headers, 0);
  sh_http_head_init(h, headers, cap, maxh);
  return sh_http_parse_head(h, s, len);
}

/* See shl.h. The fields as values, so that the caller's table constructor
** makes the table in one go. */
int shl_http_push_request (lua_State *L, const char *s, size_t len, int max_headers) {
  sh_http_header room[STACK_HEADERS];
  sh_http_head h;
  sh_http_err e = parse_into(L, &h, room, s, len, max_headers);
  luaL_checkstack(L, 12, NULL);
  if (e != SH_HTTP_OK) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, sh_http_strerror(e));
    lua_pushinteger(L, sh_http_status(e));
    return 3;
  }
  lua_pushstring(L, h.method);
  lua_pushlstring(L, h.target.p, h.target.n);
  if (h.path.p == h.target.p && h.path.n == h.target.n) lua_pushvalue(L, -1);
  else lua_pushlstring(L, h.path.p, h.path.n);
  if (h.query.p != NULL) lua_pushlstring(L, h.query.p, h.query.n);
  else lua_pushnil(L);
  lua_pushstring(L, h.minor == 1 ? "1.1" : "1.0");
  lua_pushboolean(L, h.keep_alive);
  lua_pushboolean(L, h.chunked);
  lua_pushboolean(L, h.upgrade);
  if (h.length >= 0) lua_pushinteger(L, (lua_Integer)h.length);
  else lua_pushnil(L);
  push_headers(L, &h);
  return 10;
}

/* parser.parse_head(s [, max_headers]) -> head | nil, err, status
** head = { method, target, path, query_string (raw, or nil), version ("1.0" or
** "1.1"), headers = { lower-cased name = value; repeats joined by ", ",
** "; " for cookie }, keep_alive, length (Content-Length or nil), chunked,
** upgrade } */
static int l_parse_head (lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Integer maxh = luaL_optinteger(L, 2, SH_HTTP_DEFAULT_HEADERS);
  sh_http_header room[STACK_HEADERS];
  sh_http_head h;
  sh_http_err e;
  luaL_argcheck(L, maxh >= 1 && maxh <= SH_HTTP_MAX_HEADERS, 2,
                "max_headers out of range (1.." STR(SH_HTTP_MAX_HEADERS) ")");
  e = parse_into(L, &h, room, s, len, (int)maxh);
  if (e != SH_HTTP_OK) {
    luaL_pushfail(L);
    lua_pushstring(L, sh_http_strerror(e));
    lua_pushinteger(L, sh_http_status(e));
    return 3;
  }
  push_head(L, &h);
  return 1;
}

/* parser.chunk_size(line) -> n | nil, "bad chunk size"
** 'line' is a chunk-size line without its LF (see sh_http_chunk_size). */
static int l_chunk_size (lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  long long n;
  sh_http_err e = sh_http_chunk_size(s, len, &n);
  if (e != SH_HTTP_OK) return shl_pushfail(L, sh_http_strerror(e));
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
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

/* parser.split_path(path) -> { segment, ... }, pct, normal: the non-empty
** pieces between slashes ("/a//b/" -> { "a", "b" }), as the router matches
** them; whether the path holds a '%'; whether it is in its normal form,
** "/" .. table.concat(segments, "/"). */
static int l_split_path (lua_State *L) {
  size_t len, i = 0, start;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Integer n = 0;
  int pct = 0, normal = len > 0 && s[0] == '/';
  lua_createtable(L, 8, 0);
  while (i < len) {
    start = i;
    while (i < len && s[i] == '/') i++;
    if (i - start != 1 || (i == len && len > 1)) normal = 0;   /* "//", "/a/", "a" */
    if (i == len) break;
    start = i;
    while (i < len && s[i] != '/') { if (s[i] == '%') pct = 1; i++; }
    lua_pushlstring(L, s + start, i - start);
    lua_rawseti(L, -2, ++n);
  }
  lua_pushboolean(L, pct);
  lua_pushboolean(L, normal);
  return 3;
}

/* parser.normal_path(path) -> whether path is in its normal form (what
** split_path's third result says), without splitting it. */
static int l_normal_path (lua_State *L) {
  size_t len, i;
  const char *s = luaL_checklstring(L, 1, &len);
  int normal = len > 0 && s[0] == '/' && (len == 1 || s[len - 1] != '/');
  for (i = 1; normal && i < len; i++)
    if (s[i] == '/' && s[i - 1] == '/') normal = 0;
  lua_pushboolean(L, normal);
  return 1;
}

static const luaL_Reg funcs[] = {
  {"parse_head", l_parse_head}, {"chunk_size", l_chunk_size}, {"realpath", l_realpath},
  {"split_path", l_split_path}, {"normal_path", l_normal_path},
  {NULL, NULL}
};

static int luaopen_http_parser (lua_State *L) {
  char version[64];
  sh_http_parser_version(version, sizeof version);
  luaL_newlib(L, funcs);
  shl_route_open(L);
  lua_pushstring(L, version);
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
