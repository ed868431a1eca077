/* l_modules.c -- the Lua modules shipped inside sockhost: each of
** bindings/lua/NAME.lua is `require "sockhost.NAME"` (package.preload), and
** also the field sockhost.NAME, loaded on first use. */
#include <string.h>

#include "shl.h"
#include "shl_modules.h"

static const shl_module *find (const char *name) {
  const shl_module *m;
  for (m = shl_modules; m->name != NULL; m++)
    if (strcmp(m->name, name) == 0) return m;
  return NULL;
}

/* package.preload loader: upvalue 1 is the short name. */
static int load_module (lua_State *L) {
  const shl_module *m = find(lua_tostring(L, lua_upvalueindex(1)));
  lua_pushfstring(L, "@sockhost/%s.lua", m->name);
  if (luaL_loadbuffer(L, m->src, m->len, lua_tostring(L, -1)) != LUA_OK)
    return lua_error(L);
  lua_pushfstring(L, "sockhost.%s", m->name);
  lua_call(L, 1, 1);
  return 1;
}

/* __index of the module table: sockhost.http etc. through require, so that
** both ways give the same table. Other names are nil, as usual. */
static int module_index (lua_State *L) {
  const char *key = lua_tostring(L, 2);
  if (lua_type(L, 2) != LUA_TSTRING || find(key) == NULL) return 0;
  lua_getglobal(L, "require");
  lua_pushfstring(L, "sockhost.%s", key);
  lua_call(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);                             /* cache it in the table */
  return 1;
}

/* Register the loaders in package.preload and give the module table at the
** top of the stack its lazy fields. Without the package library (a host
** that did not open it) only the fields are missing. */
void shl_modules_open (lua_State *L) {
  const shl_module *m;
  int ok, top = lua_gettop(L);
  luaL_checkstack(L, 5, NULL);
  lua_getglobal(L, "package");
  ok = lua_istable(L, -1) && lua_getfield(L, -1, "preload") == LUA_TTABLE;
  if (ok) {
    for (m = shl_modules; m->name != NULL; m++) {
      lua_pushfstring(L, "sockhost.%s", m->name);
      lua_pushstring(L, m->name);
      lua_pushcclosure(L, load_module, 1);
      lua_rawset(L, -3);                        /* preload["sockhost.NAME"] */
    }
  }
  lua_settop(L, top);
  if (!ok) return;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, module_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
}
