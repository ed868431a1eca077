/* l_resolve.c -- host names: sockhost.resolve(), sockhost.resolver(), and
** shl_try_addrs, through which listen() and the datagram sockets try each
** address of an address string in turn (the core's sh_try_start, which
** connect() uses too). Resolution is the core's stub resolver
** (sh_resolve.h) and never blocks the loop. */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "../core/sh_util.h"
#include "shl.h"

#define RESOLVE_TIMEOUT 30.0     /* default seconds for sockhost.resolve() */
#define TRIES_TIMEOUT 30.0       /* seconds shl_try_addrs waits for a name */

sh_resolver *shl_resolver (lua_State *L, shl_host *H) {
  char err[256];
  if (H->resolver == NULL) H->resolver = sh_resolver_new(H->loop, NULL, err, sizeof err);
  if (H->resolver == NULL) luaL_error(L, "sockhost: %s", err);
  return H->resolver;
}

static int resolve_timeout (void *obj, shl_task *t, int cancel) {
  sh_resolve_cancel((sh_resolve *)obj);
  return cancel ? 0 : shl_pushfail(t->co, "timeout");
}

/* End t's wait with nil, err; or with true and, when given, the raw list. */
static void resume_with (shl_task *t, const char *err, const sh_addrlist *list) {
  shl_unpark(t);
  lua_checkstack(t->co, 3);
  if (err != NULL) {
    shl_resume(t, shl_pushfail(t->co, err));
    return;
  }
  lua_pushboolean(t->co, 1);
  if (list != NULL) lua_pushlstring(t->co, (const char *)list, sizeof *list);
  shl_resume(t, list != NULL ? 2 : 1);
}

static void on_resolved (const char *err, const sh_addrlist *list, void *ctx) {
  resume_with((shl_task *)ctx, err, err != NULL ? NULL : list);
}

/* Park t until 'host' is resolved, then continue in k with, on top of the
** stack, true and a string holding the raw sh_addrlist, or nil and an
** error text. */
static int resolve_park (lua_State *L, shl_task *t, const char *host, double timeout,
                         lua_KFunction k) {
  sh_resolve *q = sh_resolve_start(shl_resolver(L, shl_gethost(L)), host, 0, SOCK_STREAM,
                                   on_resolved, t);
  if (q == NULL) return luaL_error(L, "out of memory");
  return shl_park(L, t, SHL_WAIT_RESOLVE, timeout, resolve_timeout, q, 0, k);
}

/* From the top of the stack as left by resolve_park: the list, or NULL
** (nil, err stay on the stack). */
static const sh_addrlist *resolved (lua_State *L) {
  size_t len;
  const char *p = lua_tolstring(L, -1, &len);
  if (lua_toboolean(L, -2) == 0 || p == NULL || len != sizeof(sh_addrlist)) return NULL;
  return (const sh_addrlist *)p;
}

static int resolve_k (lua_State *L, int status, lua_KContext ctx) {
  const sh_addrlist *list = resolved(L);
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
** "cannot resolve 'name': ...", or nil, "bad address 'name': ..." for a
** name that cannot be one. opts.timeout (default 30 s). */
int shl_resolve (lua_State *L) {
  static const char *const known[] = {"timeout", NULL};
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  double timeout;
  shl_task *t;
  char err[300];
  shl_checkoptions(L, 2, known);
  timeout = shl_optfield(L, 2, "timeout", RESOLVE_TIMEOUT);
  if (sh_addr_check_name(name, len, err, sizeof err) != 0) return shl_pushfail(L, err);
  t = shl_checktask(L, "sockhost.resolve()");
  lua_settop(L, 1);
  return resolve_park(L, t, name, timeout < 0 ? -1 : timeout, resolve_k);
}

/* ---------------- Trying each address: listen(), udp() ---------------- */

static int tries_timeout (void *obj, shl_task *t, int cancel) {
  shl_tries *x = obj;
  sh_try_cancel(x->walk);
  x->walk = NULL;
  if (cancel) return 0;
  luaL_pushfail(t->co);
  lua_pushfstring(t->co, "cannot resolve '%s': timeout", x->host);
  return 2;
}

static void on_tried (const char *err, void *ctx) {
  shl_tries *x = ctx;
  x->walk = NULL;
  resume_with(x->t, err, NULL);
}

int shl_try_addrs (lua_State *L, const sh_addr *a, int socktype, shl_tries *x,
                   lua_KContext ctx, lua_KFunction k) {
  sh_resolver *r = NULL;
  char err[320];
  int rc;
  x->t = NULL;
  x->host[0] = '\0';
  if (!a->resolved) {
    x->t = shl_checktask(L, "resolving a host name");
    r = shl_resolver(L, shl_gethost(L));
    snprintf(x->host, sizeof x->host, "%s", a->host);
  }
  rc = sh_try_start(r, a, socktype, x->op, on_tried, x, &x->walk, err, sizeof err);
  if (rc == SH_TRY_OK) return 0;
  if (rc == SH_TRY_FAIL) return shl_pushfail(L, err);
  if (x->t == NULL) {                       /* an op that does not end at once */
    sh_try_cancel(x->walk);
    return luaL_error(L, "shl_try_addrs: a try that goes on");
  }
  return shl_park(L, x->t, SHL_WAIT_RESOLVE, TRIES_TIMEOUT, tries_timeout, x, ctx, k);
}

int shl_tried (lua_State *L) {
  if (lua_type(L, -1) != LUA_TBOOLEAN) return 2;   /* nil, err */
  lua_pop(L, 1);
  return 0;
}

/* config[name] as an integer in lo..hi, or 0 when absent. */
static int conf_int (lua_State *L, const char *name, int lo, int hi) {
  lua_Integer v;
  int isint;
  if (lua_getfield(L, 1, name) == LUA_TNIL) { lua_pop(L, 1); return 0; }
  v = lua_tointegerx(L, -1, &isint);
  lua_pop(L, 1);
  if (!isint || v < lo || v > hi)
    luaL_error(L, "sockhost.resolver: '%s' must be an integer from %d to %d", name, lo, hi);
  return (int)v;
}

/* config.timeout: seconds above 0, or 0 when absent. */
static double conf_timeout (lua_State *L) {
  double v;
  int isnum;
  if (lua_getfield(L, 1, "timeout") == LUA_TNIL) { lua_pop(L, 1); return 0; }
  v = lua_tonumberx(L, -1, &isnum);
  lua_pop(L, 1);
  if (!isnum || !(v > 0) || v > SH_RESOLVE_MAX_TIMEOUT)
    luaL_error(L, "sockhost.resolver: 'timeout' must be above 0 and at most %d",
               (int)SH_RESOLVE_MAX_TIMEOUT);
  return v;
}

/* config.nameservers (at most 16) into ns, NULL-terminated, the strings
** left on the stack; false when absent. */
static int conf_nameservers (lua_State *L, const char *ns[SH_RESOLVE_MAX_SERVERS + 1]) {
  int t, n = 0;
  if (lua_getfield(L, 1, "nameservers") == LUA_TNIL) { lua_pop(L, 1); ns[0] = NULL; return 0; }
  luaL_checktype(L, -1, LUA_TTABLE);
  t = lua_gettop(L);
  luaL_checkstack(L, SH_RESOLVE_MAX_SERVERS + 1, "nameservers");
  for (n = 0; n < SH_RESOLVE_MAX_SERVERS && lua_rawgeti(L, t, n + 1) != LUA_TNIL; n++) {
    size_t len;
    ns[n] = luaL_checklstring(L, -1, &len);
    if (strlen(ns[n]) != len)
      luaL_error(L, "sockhost.resolver: bad name server '%s'", shl_push_nul_escaped(L, ns[n], len));
  }
  ns[n] = NULL;
  return 1;
}

/* sockhost.resolver{ hosts = path, nameservers = { "ip[:port]", ... },
** timeout = s, attempts = n, max_inflight = n } -- replace the system's
** configuration (/etc/hosts, /etc/resolv.conf) for later look-ups. Requests
** in flight end with "cancelled". */
int shl_setresolver (lua_State *L) {
  static const char *const known[] = {"hosts", "nameservers", "timeout", "attempts",
                                      "max_inflight", NULL};
  shl_host *H = shl_gethost(L);
  const char *ns[SH_RESOLVE_MAX_SERVERS + 1];
  sh_resolver_conf conf;
  sh_resolver *r;
  char err[256];
  size_t len;
  luaL_checktype(L, 1, LUA_TTABLE);
  shl_checkoptions(L, 1, known);
  lua_settop(L, 1);
  memset(&conf, 0, sizeof conf);
  lua_getfield(L, 1, "hosts");
  conf.hosts = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, &len);
  if (conf.hosts != NULL && strlen(conf.hosts) != len)
    return luaL_error(L, "sockhost.resolver: NUL byte in hosts file path");
  if (conf_nameservers(L, ns)) conf.nameservers = ns;
  conf.timeout = conf_timeout(L);
  conf.attempts = conf_int(L, "attempts", 1, SH_RESOLVE_MAX_ATTEMPTS);
  conf.max_inflight = conf_int(L, "max_inflight", 1, SH_RESOLVE_MAX_INFLIGHT);
  r = sh_resolver_new(H->loop, &conf, err, sizeof err);
  if (r == NULL) return luaL_error(L, "sockhost.resolver: %s", err);
  sh_resolver_free(H->resolver);
  H->resolver = r;
  lua_pushboolean(L, 1);
  return 1;
}
