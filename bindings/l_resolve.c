/* l_resolve.c -- host names: sockhost.resolve(), sockhost.resolver(), and
** the park-until-resolved helper that listen() and the datagram sockets use.
** Resolution runs on libevent's evdns and never blocks the loop. */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "../core/sh_util.h"
#include "shl.h"

#define RESOLVE_TIMEOUT 30.0     /* default seconds for sockhost.resolve() */

sh_resolver *shl_resolver (lua_State *L, shl_host *H) {
  char err[256];
  if (H->resolver == NULL) H->resolver = sh_resolver_new(H->loop, NULL, NULL, err, sizeof err);
  if (H->resolver == NULL) luaL_error(L, "sockhost: %s", err);
  return H->resolver;
}

static int resolve_timeout (void *obj, shl_task *t, int cancel) {
  sh_resolve_cancel((sh_resolve *)obj);
  return cancel ? 0 : shl_pushfail(t->co, "timeout");
}

static void on_resolved (const char *err, const sh_addrlist *list, void *ctx) {
  shl_task *t = ctx;
  shl_unpark(t);
  lua_checkstack(t->co, 3);
  if (err != NULL) {
    shl_resume(t, shl_pushfail(t->co, err));
    return;
  }
  lua_pushboolean(t->co, 1);
  lua_pushlstring(t->co, (const char *)list, sizeof *list);
  shl_resume(t, 2);
}

int shl_resolve_park (lua_State *L, shl_task *t, const char *host, int port, int socktype,
                      double timeout, lua_KContext ctx, lua_KFunction k) {
  sh_resolve *q = sh_resolve_start(shl_resolver(L, shl_gethost(L)), host, port, socktype, on_resolved, t);
  if (q == NULL) return luaL_error(L, "out of memory");
  return shl_park(L, t, SHL_WAIT_RESOLVE, timeout, resolve_timeout, q, ctx, k);
}

const sh_addrlist *shl_resolved (lua_State *L) {
  size_t len;
  const char *p = lua_tolstring(L, -1, &len);
  if (lua_toboolean(L, -2) == 0 || p == NULL || len != sizeof(sh_addrlist)) return NULL;
  return (const sh_addrlist *)p;
}

int shl_resolved_first (lua_State *L, int addr_arg, sh_addr *a) {
  const sh_addrlist *list = shl_resolved(L);
  char err[300];
  if (list == NULL) return shl_resolve_failed(L, addr_arg);
  if (sh_addr_parse(lua_tostring(L, addr_arg), a, err, sizeof err) != 0)
    memset(a, 0, sizeof *a);
  sh_addr_set(a, (const struct sockaddr *)&list->sa[0], list->len[0]);
  return 0;
}

int shl_resolve_failed (lua_State *L, int addr_arg) {
  char err[300];
  sh_addr a;
  const char *text = lua_tostring(L, addr_arg), *why = lua_tostring(L, -1);
  const char *host = text;
  if (text != NULL && sh_addr_parse(text, &a, err, sizeof err) == 0) host = a.host;
  luaL_pushfail(L);
  lua_pushfstring(L, "cannot resolve '%s': %s", host != NULL ? host : "?", why != NULL ? why : "?");
  return 2;
}

static int resolve_k (lua_State *L, int status, lua_KContext ctx) {
  const sh_addrlist *list = shl_resolved(L);
  int i, n = 0;
  (void)status; (void)ctx;
  if (list == NULL) {
    lua_pushfstring(L, "cannot resolve '%s': %s", lua_tostring(L, 1), lua_tostring(L, -1));
    lua_replace(L, -2);
    return 2;
  }
  lua_createtable(L, list->n, 0);
  for (i = 0; i < list->n; i++) {
    char buf[INET6_ADDRSTRLEN + 8];
    const struct sockaddr *sa = (const struct sockaddr *)&list->sa[i];
    sh_addr_host(sa, buf, sizeof buf);
    lua_pushstring(L, buf);
    if (i > 0) {                          /* drop duplicates (one per socket type) */
      int j, dup = 0;
      for (j = 1; j <= n && !dup; j++) {
        lua_rawgeti(L, -2, j);
        dup = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
      }
      if (dup) { lua_pop(L, 1); continue; }
    }
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* sockhost.resolve(name [, opts]) -> { "127.0.0.1", "::1", ... }, or nil,
** "cannot resolve 'name': ...". opts.timeout (default 30 s). */
int shl_resolve (lua_State *L) {
  static const char *const known[] = {"timeout", NULL};
  const char *name = luaL_checkstring(L, 1);
  double timeout;
  shl_task *t;
  shl_checkoptions(L, 2, known);
  timeout = shl_optfield(L, 2, "timeout", RESOLVE_TIMEOUT);
  luaL_argcheck(L, name[0] != '\0', 1, "empty name");
  t = shl_checktask(L, "sockhost.resolve()");
  lua_settop(L, 1);
  return shl_resolve_park(L, t, name, 0, SOCK_STREAM, timeout < 0 ? -1 : timeout, 0, resolve_k);
}

/* sockhost.resolver{ hosts = path, nameservers = { "ip[:port]", ... } } --
** replace the system's configuration (/etc/hosts, /etc/resolv.conf) for
** later look-ups. Requests in flight end with "cancelled". */
int shl_setresolver (lua_State *L) {
  static const char *const known[] = {"hosts", "nameservers", NULL};
  shl_host *H = shl_gethost(L);
  const char *hosts, *ns[17];
  sh_resolver *r;
  char err[256];
  int n = 0, has_ns;
  luaL_checktype(L, 1, LUA_TTABLE);
  shl_checkoptions(L, 1, known);
  lua_getfield(L, 1, "hosts");
  hosts = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
  has_ns = lua_getfield(L, 1, "nameservers") != LUA_TNIL;
  if (has_ns) {
    luaL_checktype(L, -1, LUA_TTABLE);
    for (n = 0; n < 16 && lua_rawgeti(L, -1, n + 1) != LUA_TNIL; n++) {
      ns[n] = luaL_checkstring(L, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  ns[n] = NULL;
  r = sh_resolver_new(H->loop, hosts, has_ns ? ns : NULL, err, sizeof err);
  if (r == NULL) return luaL_error(L, "sockhost.resolver: %s", err);
  sh_resolver_free(H->resolver);
  H->resolver = r;
  lua_pushboolean(L, 1);
  return 1;
}
