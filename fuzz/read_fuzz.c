/* read_fuzz.c -- libFuzzer target: random bytes in random pieces through the
** real stream read path (fuzz/readcheck.lua says how, and what must hold).
** Built and run by `make fuzz`. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int luaopen_sockhost(lua_State *L);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

static void setup (void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "sockhost", luaopen_sockhost, 1);
  lua_pop(L, 1);
  if (luaL_dostring(L, "package.path = './fuzz/?.lua;' .. package.path "
                       "return require('readcheck').check") != LUA_OK) {
    fprintf(stderr, "read_fuzz: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_setglobal(L, "check");
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  if (L == NULL) setup();
  lua_getglobal(L, "check");
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "read_fuzz: %s\n", lua_tostring(L, -1));
    abort();                           /* a finding */
  }
  return 0;
}
