/* http_fuzz.c -- libFuzzer target: sockhost.http's head parser and chunk
** size parser (core/sh_http.c on http-parser, bound by bindings/l_http.c),
** through Lua as scripts call them. Whatever the input, nothing may crash, and what is accepted
** must obey the strict rules: one head ending in the first empty line, CRLF
** only, no folding, never Content-Length beside Transfer-Encoding, a chunk
** size only from hex digits. Built and run by `make fuzz`. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int luaopen_sockhost(lua_State *L);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char check_src[] =
  "local P = require 'sockhost.http.parser'\n"
  "local function same(a, b)\n"
  "  if type(a) ~= 'table' or type(b) ~= 'table' then return a == b end\n"
  "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
  "  for k in pairs(b) do if a[k] == nil then return false end end\n"
  "  return true\n"
  "end\n"
  "return function(s)\n"
  "  for _, input in ipairs { s, s .. '\\r\\n\\r\\n' } do\n"
  "    local h, err, status = P.parse_head(input)\n"
  "    if h then\n"
  "      assert(input:find('\\r\\n\\r\\n', 1, true) == #input - 3, 'accepted more than one head')\n"
  "      assert(not input:find('[^\\r]\\n') and not input:find('\\r[^\\n]'), 'accepted a bare LF or CR')\n"
  "      assert(not input:find('\\n[ \\t]'), 'accepted a folded line')\n"
  "      assert(not (h.headers['content-length'] and h.headers['transfer-encoding']), 'CL with TE')\n"
  "      assert(h.chunked == (h.headers['transfer-encoding'] ~= nil))\n"
  "      assert(h.length == nil or (math.type(h.length) == 'integer' and h.length >= 0))\n"
  "      assert(h.version == '1.1' or h.version == '1.0')\n"
  "      for k in pairs(h.headers) do assert(k == k:lower() and #k > 0) end\n"
  "      assert(same(h, (P.parse_head(input))), 'not the same twice')\n"
  "    else\n"
  "      assert(type(err) == 'string' and (status == 400 or status == 431 or status == 505))\n"
  "    end\n"
  "  end\n"
  "  local line = s:match('^[^\\n]*')\n"
  "  local n = P.chunk_size(line)\n"
  "  if n then\n"
  "    assert(line:find('^%x+\\r$') or line:find('^%x+;[^%c]*\\r$') or line:find('^%x+;.*\\r$'))\n"
  "    assert(n == tonumber(line:match('^%x+'), 16))\n"
  "  end\n"
  "end\n";

static lua_State *L;

static void setup (void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "sockhost", luaopen_sockhost, 1);
  lua_pop(L, 1);
  if (luaL_dostring(L, check_src) != LUA_OK) {
    fprintf(stderr, "http_fuzz: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_setglobal(L, "check");
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  if (L == NULL) setup();
  lua_getglobal(L, "check");
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "http_fuzz: %s\n", lua_tostring(L, -1));
    abort();                           /* a finding */
  }
  lua_settop(L, 0);
  return 0;
}
