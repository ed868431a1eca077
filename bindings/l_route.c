/* l_route.c -- the route set of sockhost.http's router: its dynamic
** patterns ("/users/:id", "/files/\*rest") compiled once by core/sh_route
** and matched against a request's path in one call, the params table made
** here. A userdata of type "sockhost.http.routes", made by
** sockhost.http.parser's routes(); bindings/lua/http.router.lua keeps the
** handlers by the index add() returns. */
#include <stdlib.h>
#include <string.h>

#include "../core/sh_route.h"
#include "shl.h"

#define ROUTES_MT "sockhost.http.routes"
#define STACK_VALS 16              /* parameters up to this many: on the C stack */
#define STACK_TEXT 256             /* a value up to this long: decoded on the C stack */

typedef struct route {
  char *text;                      /* the pattern, owned */
  sh_route_part *parts;            /* its segments, pointing into text */
  size_t n, params;
} route;

typedef struct routes {
  route *r;
  size_t n, cap;
  size_t maxparams;                /* the most parameters of a route */
} routes;

static routes *checkroutes (lua_State *L) {
  return (routes *)luaL_checkudata(L, 1, ROUTES_MT);
}

static int routes_gc (lua_State *L) {
  routes *rs = checkroutes(L);
  size_t i;
  for (i = 0; i < rs->n; i++) {
    free(rs->r[i].text);
    free(rs->r[i].parts);
  }
  free(rs->r);
  rs->r = NULL;
  rs->n = rs->cap = rs->maxparams = 0;
  return 0;
}

/* routes:add(pattern) -> index (1, 2, ...). The pattern as the router has
** checked it (starts with '/', "*name" only last). */
static int routes_add (lua_State *L) {
  routes *rs = checkroutes(L);
  size_t len, n;
  const char *pat = luaL_checklstring(L, 2, &len);
  route r;
  if (rs->n == rs->cap) {
    size_t cap = rs->cap ? rs->cap * 2 : 8;
    route *nr = realloc(rs->r, cap * sizeof *nr);
    if (nr == NULL) return luaL_error(L, "not enough memory");
    rs->r = nr;
    rs->cap = cap;
  }
  n = sh_route_count(pat, len);
  r.text = malloc(len + 1);
  r.parts = malloc((n ? n : 1) * sizeof *r.parts);
  if (r.text == NULL || r.parts == NULL) {
    free(r.text);
    free(r.parts);
    return luaL_error(L, "not enough memory");
  }
  memcpy(r.text, pat, len + 1);
  r.n = n;
  r.params = sh_route_compile(r.text, len, r.parts);
  if (r.params > rs->maxparams) rs->maxparams = r.params;
  rs->r[rs->n++] = r;
  lua_pushinteger(L, (lua_Integer)rs->n);
  return 1;
}

/* Push a parameter's value, %XX decoded when 'decode'; 0 (nothing pushed)
** when its escapes are malformed. */
static int push_value (lua_State *L, sh_route_span v, int decode) {
  char small[STACK_TEXT];
  luaL_Buffer b;
  char *out;
  long n;
  if (!decode || memchr(v.p, '%', v.n) == NULL) {
    lua_pushlstring(L, v.p, v.n);
    return 1;
  }
  out = v.n <= sizeof small ? small : luaL_buffinitsize(L, &b, v.n);
  n = sh_route_unescape(v.p, v.n, out);
  if (n < 0) return 0;                     /* the caller drops the buffer */
  if (out == small) lua_pushlstring(L, small, (size_t)n);
  else luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/* Push route r's params table, its values 'vals' (as sh_route_match left
** them) with their names: { name = value }; 0 (nothing pushed) if a ":name"
** value's escapes are malformed. 'r' is a copy: what it points to lives as
** long as the set, which the caller's stack holds, even if a finalizer run
** by the pushes added routes (and moved the set's array). */
static int push_params (lua_State *L, const route *r, const sh_route_span *vals) {
  size_t k, v = 0;
  int top = lua_gettop(L);
  lua_createtable(L, 0, (int)r->params);
  for (k = 0; k < r->n; k++) {
    const sh_route_part *pt = &r->parts[k];
    if (pt->kind == SH_ROUTE_LITERAL) continue;
    lua_pushlstring(L, pt->text.p, pt->text.n);
    if (!push_value(L, vals[v++], pt->kind == SH_ROUTE_PARAM)) {
      lua_settop(L, top);
      return 0;
    }
    lua_rawset(L, -3);
  }
  return 1;
}

/* Whether path segment 'first' (its first; p NULL: none) may match r:
** r's first segment is a parameter or the rest, or the same literal. */
static int first_fits (const route *r, sh_route_span first) {
  const sh_route_part *pt = r->parts;
  if (r->n == 0) return first.p == NULL;
  if (pt->kind != SH_ROUTE_LITERAL) return 1;
  return first.p != NULL && pt->text.n == first.n && memcmp(pt->text.p, first.p, first.n) == 0;
}

/* routes:match(path [, after]) -> index, params | nil. The first route
** after index 'after' (default 0) that 'path' matches, and its params:
** ":name" values percent-decoded (a malformed escape: no match), "*name"
** raw. Each route is first tried on the path's first segment alone. */
static int routes_match (lua_State *L) {
  routes *rs = checkroutes(L);
  size_t len, i, k = 0;
  const char *path = luaL_checklstring(L, 2, &len);
  lua_Integer after = luaL_optinteger(L, 3, 0);
  sh_route_span room[STACK_VALS], *vals = room, first = { NULL, 0 };
  lua_settop(L, 3);
  if (rs->maxparams > STACK_VALS)            /* scratch, dropped with the call */
    vals = lua_newuserdatauv(L, rs->maxparams * sizeof *vals, 0);
  while (k < len && path[k] == '/') k++;
  if (k < len) {
    first.p = path + k;
    while (k < len && path[k] != '/') k++;
    first.n = (size_t)(path + k - first.p);
  }
  for (i = after > 0 ? (size_t)after : 0; i < rs->n; i++) {
    route r;
    if (!first_fits(&rs->r[i], first)) continue;
    r = rs->r[i];
    if (sh_route_match(r.parts, r.n, path, len, vals) && push_params(L, &r, vals)) {
      lua_pushinteger(L, (lua_Integer)i + 1);
      lua_insert(L, -2);
      return 2;
    }
  }
  lua_pushnil(L);
  return 1;
}

/* parser.routes() -> an empty route set. */
static int l_routes (lua_State *L) {
  routes *rs = (routes *)lua_newuserdatauv(L, sizeof *rs, 0);
  memset(rs, 0, sizeof *rs);
  luaL_setmetatable(L, ROUTES_MT);
  return 1;
}

static const luaL_Reg routes_methods[] = {
  {"add", routes_add}, {"match", routes_match}, {NULL, NULL}
};

static const luaL_Reg routes_meta[] = {
  {"__index", NULL}, {"__gc", routes_gc}, {NULL, NULL}
};

void shl_route_open (lua_State *L) {
  shl_newclass(L, ROUTES_MT, routes_meta, routes_methods);
  lua_pushcfunction(L, l_routes);
  lua_setfield(L, -2, "routes");
}
