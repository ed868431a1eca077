/* l_crypto.c -- the module "sockhost.crypto" (package.preload): the byte
** work of core/sh_crypto.h for Lua: SHA-1, base64, random bytes, the
** WebSocket XOR mask and UTF-8 validation. Plain functions on strings; no
** object, nothing blocks. Used by sockhost.websocket. */
#include <string.h>

#include "../core/sh_crypto.h"
#include "shl.h"

#define MAX_RANDOM 65536          /* crypto.random(n): the most n may be */

/* crypto.sha1(s) -> the 20-byte digest */
static int l_sha1 (lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char d[SH_SHA1_LEN];
  if (sh_sha1(s, n, d) != 0) return luaL_error(L, "sha1 failed");
  lua_pushlstring(L, (const char *)d, sizeof d);
  return 1;
}

/* crypto.base64_encode(s) -> text */
static int l_base64_encode (lua_State *L) {
  size_t n, len;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, sh_base64_len(n) + 1);
  len = sh_base64_encode(s, n, out);
  luaL_pushresultsize(&b, len);
  return 1;
}

/* crypto.base64_decode(text) -> bytes | nil, "bad base64" */
static int l_base64_decode (lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, n / 4 * 3 + 1);
  long len = sh_base64_decode(s, n, out);
  if (len < 0) return shl_pushfail(L, "bad base64");
  luaL_pushresultsize(&b, (size_t)len);
  return 1;
}

/* crypto.random(n) -> n random bytes */
static int l_random (lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_Buffer b;
  char *out;
  luaL_argcheck(L, n >= 0 && n <= MAX_RANDOM, 1, "count out of range (0..65536)");
  out = luaL_buffinitsize(L, &b, (size_t)n + 1);
  if (sh_random(out, (size_t)n) != 0) return luaL_error(L, "random bytes failed");
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/* crypto.mask(data, key [, offset]) -> data XOR the 4-byte key */
static int l_mask (lua_State *L) {
  size_t n, klen;
  const char *s = luaL_checklstring(L, 1, &n);
  const char *key = luaL_checklstring(L, 2, &klen);
  lua_Integer off = luaL_optinteger(L, 3, 0);
  luaL_Buffer b;
  char *out;
  luaL_argcheck(L, klen == 4, 2, "key must be 4 bytes");
  luaL_argcheck(L, off >= 0, 3, "offset must be non-negative");
  out = luaL_buffinitsize(L, &b, n + 1);
  memcpy(out, s, n);
  sh_xor_mask((unsigned char *)out, n, (const unsigned char *)key, (size_t)off);
  luaL_pushresultsize(&b, n);
  return 1;
}

/* crypto.utf8_valid(s) -> boolean */
static int l_utf8_valid (lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_pushboolean(L, sh_utf8_valid((const unsigned char *)s, n));
  return 1;
}

static int luaopen_crypto (lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"sha1", l_sha1}, {"base64_encode", l_base64_encode}, {"base64_decode", l_base64_decode},
    {"random", l_random}, {"mask", l_mask}, {"utf8_valid", l_utf8_valid}, {NULL, NULL}
  };
  luaL_newlib(L, funcs);
  return 1;
}

void shl_crypto_open (lua_State *L) {
  int top = lua_gettop(L);
  lua_getglobal(L, "package");
  if (lua_istable(L, -1) && lua_getfield(L, -1, "preload") == LUA_TTABLE) {
    lua_pushcfunction(L, luaopen_crypto);
    lua_setfield(L, -2, "sockhost.crypto");
  }
  lua_settop(L, top);
}
