/* l_opts.c -- small helpers every binding file uses: reading option tables
** and optional arguments, making classes, pushing failures, addresses and
** log-safe strings. No state; nothing here parks or touches the loop. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "../core/sh_addr.h"
#include "../core/sh_util.h"
#include "shl.h"

const char *shl_push_nul_escaped (lua_State *L, const char *s, size_t len) {
  luaL_Buffer b;
  const char *end = s + len, *z;
  luaL_buffinit(L, &b);
  while ((z = memchr(s, '\0', (size_t)(end - s))) != NULL) {
    luaL_addlstring(&b, s, (size_t)(z - s));
    luaL_addstring(&b, "\\x00");
    s = z + 1;
  }
  luaL_addlstring(&b, s, (size_t)(end - s));
  luaL_pushresult(&b);
  return lua_tostring(L, -1);
}

int shl_pushfail (lua_State *L, const char *err) {
  luaL_pushfail(L);
  lua_pushstring(L, err);
  return 2;
}

int shl_push_sockname (lua_State *L, int fd, int peer, int scheme, const char *notconn) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char buf[160];
  int r;
  memset(&ss, 0, sizeof ss);
  r = peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
           : getsockname(fd, (struct sockaddr *)&ss, &len);
  if (r != 0) return shl_pushfail(L, peer && notconn != NULL ? notconn : sh_strerror(errno));
  if (scheme < 0) scheme = ss.ss_family == AF_UNIX ? SH_UNIX : SH_TCP;
  sh_addr_format((struct sockaddr *)&ss, len, (sh_scheme)scheme, buf, sizeof buf);
  lua_pushstring(L, buf);
  return 1;
}

/* Each function gets the metatable as its upvalue 1: a type check can
** compare with it instead of looking the name up in the registry. */
void shl_newclass (lua_State *L, const char *name, const luaL_Reg *meta,
                   const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  lua_pushvalue(L, -1);
  luaL_setfuncs(L, meta, 1);
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

double shl_opttimeout (lua_State *L, int arg, double def) {
  double t;
  if (lua_isnoneornil(L, arg)) return def;
  t = luaL_checknumber(L, arg);
  return t < 0 ? -1 : t;
}

void shl_checkoptions (lua_State *L, int arg, const char *const known[]) {
  if (lua_isnoneornil(L, arg)) return;
  luaL_checktype(L, arg, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, arg) != 0) {
    int i, ok = 0;
    if (lua_type(L, -2) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -2);
      for (i = 0; known[i] != NULL && !ok; i++) ok = strcmp(known[i], k) == 0;
    }
    if (!ok) luaL_error(L, "unknown option '%s'", luaL_tolstring(L, -2, NULL));
    lua_pop(L, 1);
  }
}

double shl_optfield (lua_State *L, int arg, const char *name, double def) {
  double v = def;
  if (lua_isnoneornil(L, arg)) return def;
  if (lua_getfield(L, arg, name) != LUA_TNIL) {
    int isnum;
    v = lua_tonumberx(L, -1, &isnum);
    if (!isnum) luaL_error(L, "option '%s' must be a number", name);
  }
  lua_pop(L, 1);
  return v;
}
