/* l_address.c -- sockhost.address: address strings as data, for a script
** that takes addresses from peers (a proxy, a DNS server) and must not
** parse them by hand. parse() and format() go through core/sh_addr, the
** parser every address argument goes through, so what parse() accepts is
** exactly what connect(), listen() and udp() accept. */
#include <string.h>
#include <sys/socket.h>

#include "shl.h"

static int is_unix (sh_scheme scheme) {
  return scheme == SH_UNIX || scheme == SH_UNIXGRAM;
}

/* "ipv4", "ipv6", "unix", or "name": a host name left for the resolver. */
static const char *family_name (const sh_addr *a) {
  if (!a->resolved) return "name";
  if (a->sa.ss_family == AF_INET) return "ipv4";
  return a->sa.ss_family == AF_INET6 ? "ipv6" : "unix";
}

static void setstring (lua_State *L, const char *key, const char *s, size_t len) {
  lua_pushlstring(L, s, len);
  lua_setfield(L, -2, key);
}

/* Push the table of a parsed address. */
static void push_parsed (lua_State *L, const sh_addr *a) {
  size_t hostlen = strcspn(a->host, "%");      /* a zone follows an IPv6 host */
  const char *zone = a->host + hostlen + 1;
  const char *name = sh_addr_scheme_name(a->scheme), *family = family_name(a);
  lua_createtable(L, 0, 5);
  setstring(L, "scheme", name, strlen(name));
  setstring(L, "family", family, strlen(family));
  if (is_unix(a->scheme)) {
    setstring(L, "path", a->host, strlen(a->host));
    return;
  }
  setstring(L, "host", a->host, hostlen);
  lua_pushinteger(L, a->port);
  lua_setfield(L, -2, "port");
  if (a->host[hostlen] == '%') setstring(L, "zone", zone, strlen(zone));
}

/* sockhost.address.parse(s) -> { scheme, host, port, zone, path, family },
** or nil, "bad address '<s>': <why>". */
static int addr_parse (lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  sh_addr a;
  char err[300];
  if (sh_addr_parse(s, len, &a, err, sizeof err) != 0) return shl_pushfail(L, err);
  push_parsed(L, &a);
  return 1;
}

/* ---------------- format ---------------- */

/* t[key] (t at 1) as a string (its length in *len), or NULL when nil;
** raises on another type. The string stays in t, so it outlives the pop. */
static const char *field (lua_State *L, const char *key, size_t *len) {
  const char *s = NULL;
  int type = lua_getfield(L, 1, key);
  if (type == LUA_TSTRING) s = lua_tolstring(L, -1, len);
  else if (type != LUA_TNIL)
    luaL_error(L, "sockhost.address.format: '%s' must be a string", key);
  lua_pop(L, 1);
  return s;
}

/* t.port (t at 1): 1 with *port set, or 0 when nil; raises on a value that
** is not an integer. */
static int port_field (lua_State *L, lua_Integer *port) {
  int isint, type = lua_getfield(L, 1, "port");
  *port = lua_tointegerx(L, -1, &isint);
  lua_pop(L, 1);
  if (type == LUA_TNIL) return 0;
  if (type != LUA_TNUMBER || !isint)
    luaL_error(L, "sockhost.address.format: 'port' must be an integer");
  return 1;
}

/* Raise if t (at 1) has 'key', which addresses of 'scheme' do not take. */
static void refuse_field (lua_State *L, const char *key, const char *scheme) {
  if (lua_getfield(L, 1, key) != LUA_TNIL)
    luaL_error(L, "sockhost.address.format: '%s' does not go with scheme '%s'", key, scheme);
  lua_pop(L, 1);
}

/* Add "host:port", the host in brackets (with "%zone") when it holds a ':'
** or has a zone. Returns 1 with the port in *port, or 0 when t has none. */
static int add_inet (lua_State *L, luaL_Buffer *b, const char *scheme, lua_Integer *port) {
  size_t hlen = 0, zlen = 0;
  const char *host, *zone;
  int has_port;
  refuse_field(L, "path", scheme);
  host = field(L, "host", &hlen);
  zone = field(L, "zone", &zlen);
  has_port = port_field(L, port);
  if (host == NULL) host = "";
  if (zone != NULL || memchr(host, ':', hlen) != NULL) {
    luaL_addchar(b, '[');
    luaL_addlstring(b, host, hlen);
    if (zone != NULL) { luaL_addchar(b, '%'); luaL_addlstring(b, zone, zlen); }
    luaL_addchar(b, ']');
  } else {
    luaL_addlstring(b, host, hlen);
  }
  if (has_port) {
    lua_pushfstring(L, ":%I", *port);
    luaL_addvalue(b);
  }
  return has_port;
}

/* Add ":path" (or ":" without one). */
static void add_unix (lua_State *L, luaL_Buffer *b, const char *scheme) {
  size_t plen = 0;
  const char *path;
  refuse_field(L, "host", scheme);
  refuse_field(L, "port", scheme);
  refuse_field(L, "zone", scheme);
  path = field(L, "path", &plen);
  luaL_addchar(b, ':');
  if (path != NULL) luaL_addlstring(b, path, plen);
}

/* Whether the 'len' bytes at 'scheme' are one of the names in 'names'. */
static int scheme_in (const char *scheme, size_t len, const char *const names[]) {
  int i;
  for (i = 0; names[i] != NULL; i++)
    if (strlen(names[i]) == len && memcmp(scheme, names[i], len) == 0) return 1;
  return 0;
}

static const char *const unix_schemes[] = {"unix", "unixgram", NULL};
static const char *const all_schemes[] = {"tcp", "tls", "udp", "unix", "unixgram", NULL};

/* Push the address string t (at 1) stands for, written from its fields as
** they are (it may not parse). Returns 1 with its port in *port, or 0 when
** it has none. */
static int build (lua_State *L, const char *scheme, size_t slen, lua_Integer *port) {
  luaL_Buffer b;
  int has_port = 0;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, scheme, slen);
  if (scheme_in(scheme, slen, unix_schemes)) {
    add_unix(L, &b, scheme);
  } else {
    luaL_addstring(&b, "://");
    has_port = add_inet(L, &b, scheme, port);
  }
  luaL_pushresult(&b);
  return has_port;
}

/* nil, "bad address '<text>': <why>". */
static int bad (lua_State *L, const char *text, size_t len, const char *why) {
  char err[300];
  sh_addr_error(text, len, why, err, sizeof err);
  return shl_pushfail(L, err);
}

/* sockhost.address.format(t) -> the canonical address string, or nil,
** "bad address '<text>': <why>" when t's fields make none. */
static int addr_format (lua_State *L) {
  lua_Integer port = 0;
  size_t slen = 3, len;
  const char *scheme, *text;
  int has_port;
  sh_addr a;
  char err[300], out[400];
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if ((scheme = field(L, "scheme", &slen)) == NULL) scheme = "tcp";
  has_port = build(L, scheme, slen, &port);
  text = lua_tolstring(L, 2, &len);
  if (!scheme_in(scheme, slen, all_schemes)) return bad(L, text, len, "unknown scheme");
  if (has_port && (port < 0 || port > 65535)) return bad(L, text, len, "port out of range");
  if (sh_addr_parse(text, len, &a, err, sizeof err) != 0) return shl_pushfail(L, err);
  lua_pushlstring(L, out, sh_addr_text(&a, out, sizeof out));
  return 1;
}

/* ---------------- IP literals ---------------- */

/* sockhost.address.is_ip(s) -> "ipv4", "ipv6", or false. */
static int addr_is_ip (lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char ip[16];
  size_t n = sh_ip_parse(s, len, ip);
  if (n == 0) lua_pushboolean(L, 0);
  else lua_pushstring(L, n == 4 ? "ipv4" : "ipv6");
  return 1;
}

/* sockhost.address.ip_to_bin(s) -> 4 or 16 bytes (network order), or nil,
** "bad address '<s>': not an IP address". */
static int addr_ip_to_bin (lua_State *L) {
  size_t len, n;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char ip[16];
  if ((n = sh_ip_parse(s, len, ip)) == 0) return bad(L, s, len, "not an IP address");
  lua_pushlstring(L, (const char *)ip, n);
  return 1;
}

/* sockhost.address.bin_to_ip(b) -> the canonical text of 4 or 16 bytes, or
** nil, "bad address: <n> bytes, not 4 or 16". */
static int addr_bin_to_ip (lua_State *L) {
  size_t len;
  const char *b = luaL_checklstring(L, 1, &len);
  char text[SH_IP_TEXT];
  if (len != 4 && len != 16) {
    luaL_pushfail(L);
    lua_pushfstring(L, "bad address: %I bytes, not 4 or 16", (lua_Integer)len);
    return 2;
  }
  lua_pushlstring(L, text, sh_ip_format((const unsigned char *)b, len, text));
  return 1;
}

static const luaL_Reg address_funcs[] = {
  {"parse", addr_parse}, {"format", addr_format}, {"is_ip", addr_is_ip},
  {"ip_to_bin", addr_ip_to_bin}, {"bin_to_ip", addr_bin_to_ip}, {NULL, NULL}
};

void shl_address_open (lua_State *L) {
  luaL_newlib(L, address_funcs);
}
