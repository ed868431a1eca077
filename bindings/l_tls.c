/* l_tls.c -- the Lua side of TLS: the option tables of listen, connect and
** conn:starttls turned into contexts (core/sh_tls.c), conn:tls()'s table,
** and the handshakes that a listener has started and nobody else owns.
**
** The objects stay where they are: listeners (l_listener.c) start server
** handshakes, connections (l_conn.c) client ones and starttls.
**
** Client contexts that use the system's CA store are kept and shared, one
** per set of options (verify, alpn, min_version); the store itself, which
** takes 25-50 ms to load, is loaded once by a thread and shared by all of
** them (core/sh_tls.c). Those with files of their own (ca, cert) are built
** at each call, so that a changed file is read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/sh_tls.h"
#include "shl.h"

#define MAX_CERTS 64         /* names in 'certs' */
#define MAX_ALPN 32          /* protocols in 'alpn' */
#define HANDSHAKE_TIMEOUT 10.0
#define CACHED 8             /* client contexts kept */

/* What this file keeps per Lua state, in a registry userdata made on first
** use (after the scheduler, so finalized before it): the handshakes no task
** owns, and the shared client contexts. */
typedef struct tls_state {
  shl_pending head;          /* sentinel of a circular list */
  struct {
    char *key;               /* the options, as a string */
    size_t keylen;
    sh_tls_ctx *ctx;
  } cache[CACHED];
  int next;                  /* the slot to replace next */
} tls_state;

static tls_state *get_state(lua_State *L);

/* ====================== Options ====================== */

static const char *optstring (lua_State *L, int arg, const char *name) {
  const char *s = NULL;
  int ty = lua_getfield(L, arg, name);
  if (ty == LUA_TSTRING) s = lua_tostring(L, -1);      /* the table keeps it */
  else if (ty != LUA_TNIL) luaL_error(L, "bad option '%s' (string expected, got %s)", name,
                                      luaL_typename(L, -1));
  lua_pop(L, 1);
  return s;
}

/* alpn = { "h2", "http/1.1" } -> wire format in 'buf'. */
static size_t alpn_wire (lua_State *L, int arg, unsigned char *buf, size_t n) {
  size_t len = 0, i, count;
  if (lua_getfield(L, arg, "alpn") == LUA_TNIL) { lua_pop(L, 1); return 0; }
  if (!lua_istable(L, -1)) luaL_error(L, "bad option 'alpn' (list of strings expected)");
  count = lua_rawlen(L, -1);
  if (count == 0 || count > MAX_ALPN) luaL_error(L, "bad option 'alpn' (1 to %d protocols)", MAX_ALPN);
  for (i = 1; i <= count; i++) {
    size_t plen;
    const char *p;
    lua_rawgeti(L, -1, (lua_Integer)i);
    p = lua_tolstring(L, -1, &plen);
    if (lua_type(L, -1) != LUA_TSTRING || plen == 0 || plen > 255 || len + 1 + plen > n)
      luaL_error(L, "bad option 'alpn' (protocol names of 1 to 255 bytes expected)");
    buf[len] = (unsigned char)plen;
    memcpy(buf + len + 1, p, plen);
    len += 1 + plen;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return len;
}

/* certs = { ["a.example"] = { cert = "a.pem", key = "a.key" }, ... } */
static int sni_certs (lua_State *L, int arg, sh_tls_cert *certs) {
  int n = 0;
  if (lua_getfield(L, arg, "certs") == LUA_TNIL) { lua_pop(L, 1); return 0; }
  if (!lua_istable(L, -1)) luaL_error(L, "bad option 'certs' (table of name = {cert=, key=} expected)");
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {          /* certs, name, entry */
    if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
      luaL_error(L, "bad option 'certs' (table of name = {cert=, key=} expected)");
    if (n >= MAX_CERTS) luaL_error(L, "bad option 'certs' (more than %d names)", MAX_CERTS);
    certs[n].name = lua_tostring(L, -2);
    certs[n].cert = optstring(L, lua_gettop(L), "cert");
    certs[n].key = optstring(L, lua_gettop(L), "key");
    if (certs[n].cert == NULL) luaL_error(L, "bad option 'certs' (no cert for '%s')", certs[n].name);
    n++;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return n;
}

/* A shared client context for 'c' (no files of its own): one more
** reference to a kept one, or a new one, kept. */
static sh_tls_ctx *cached_ctx (lua_State *L, const sh_tls_conf *c, char *err, size_t errlen) {
  tls_state *st = get_state(L);
  char key[MAX_ALPN * 256 + 16];
  size_t len;
  int i;
  sh_tls_ctx *t;
  key[0] = (char)c->verify;
  key[1] = (char)(c->min_version & 0xff);
  memcpy(key + 2, c->alpn != NULL ? (const char *)c->alpn : "", c->alpn_len);
  len = 2 + c->alpn_len;
  for (i = 0; i < CACHED; i++)
    if (st->cache[i].ctx != NULL && st->cache[i].keylen == len && memcmp(st->cache[i].key, key, len) == 0)
      return sh_tls_ctx_ref(st->cache[i].ctx);
  if ((t = sh_tls_ctx_new(c, err, errlen)) == NULL) return NULL;
  i = st->next;
  st->next = (st->next + 1) % CACHED;
  sh_tls_ctx_free(st->cache[i].ctx);      /* handshakes still using it keep it */
  free(st->cache[i].key);
  st->cache[i].ctx = NULL;
  st->cache[i].key = malloc(len);
  if (st->cache[i].key == NULL) return t;  /* not kept */
  memcpy(st->cache[i].key, key, len);
  st->cache[i].keylen = len;
  st->cache[i].ctx = sh_tls_ctx_ref(t);
  return t;
}

/* Build a context from the options table at 'arg' (nil: none). Raises on
** malformed options; returns NULL with a message in 'err' when a file
** cannot be used, or when a client that verifies has no name to check the
** certificate against (a unix: peer, and no servername): the chain alone
** would let any certificate of a trusted CA pass. For a client, '*name' is
** set to 'servername' if given, else left alone; '*hs_timeout' to
** handshake_timeout (default 10 s). */
sh_tls_ctx *shl_tls_ctx (lua_State *L, int arg, int server, const char **name,
                         double *hs_timeout, char *err, size_t errlen) {
  unsigned char alpn[MAX_ALPN * 256];
  sh_tls_cert certs[MAX_CERTS];
  sh_tls_conf c;
  const char *v;
  memset(&c, 0, sizeof c);
  c.server = server;
  c.verify = !server;
  c.min_version = 0x0303;
  *hs_timeout = HANDSHAKE_TIMEOUT;
  if (!lua_isnoneornil(L, arg)) {
    luaL_checktype(L, arg, LUA_TTABLE);
    c.cert = optstring(L, arg, "cert");
    c.key = optstring(L, arg, "key");
    c.ca = optstring(L, arg, "ca");
    if (lua_getfield(L, arg, "verify") != LUA_TNIL) {
      if (!lua_isboolean(L, -1)) luaL_error(L, "bad option 'verify' (boolean expected)");
      c.verify = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    v = optstring(L, arg, "min_version");
    if (v != NULL && strcmp(v, "tls1.3") == 0) c.min_version = 0x0304;
    else if (v != NULL && strcmp(v, "tls1.2") != 0)
      luaL_error(L, "bad option 'min_version' (\"tls1.2\" or \"tls1.3\" expected)");
    c.alpn_len = alpn_wire(L, arg, alpn, sizeof alpn);
    c.alpn = c.alpn_len > 0 ? alpn : NULL;
    *hs_timeout = shl_optfield(L, arg, "handshake_timeout", HANDSHAKE_TIMEOUT);
    if (server) {
      c.ncerts = sni_certs(L, arg, certs);
      c.certs = certs;
    } else {
      if (lua_getfield(L, arg, "certs") != LUA_TNIL)
        luaL_error(L, "bad option 'certs' (for servers only)");
      lua_pop(L, 1);
      v = optstring(L, arg, "servername");
      if (v != NULL) *name = v;
    }
  }
  if (server && c.verify && c.ca == NULL)
    luaL_error(L, "bad option 'verify' (a server checks client certificates against 'ca': give it)");
  if (c.key != NULL && c.cert == NULL) luaL_error(L, "bad option 'key' (no 'cert')");
  if (!server && c.verify && (*name == NULL || **name == '\0')) {
    snprintf(err, errlen, "no servername: nothing to check the server's certificate against "
             "(give servername, or verify = false)");
    return NULL;
  }
  if (!server && c.ca == NULL && c.cert == NULL) return cached_ctx(L, &c, err, errlen);
  return sh_tls_ctx_new(&c, err, errlen);
}

/* Is any TLS option in the table at 'arg'? (For tcp:// addresses.) */
int shl_tls_has_options (lua_State *L, int arg) {
  static const char *const names[] = {"cert", "key", "ca", "verify", "servername", "alpn",
                                      "min_version", "certs", "handshake_timeout", NULL};
  int i, found = 0;
  if (!lua_istable(L, arg)) return 0;
  for (i = 0; names[i] != NULL && !found; i++) {
    found = lua_getfield(L, arg, names[i]) != LUA_TNIL;
    lua_pop(L, 1);
  }
  return found;
}

/* ====================== conn:tls() ====================== */

static void setstr (lua_State *L, const char *k, const char *v) {
  if (v == NULL || *v == '\0') return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

static void setnum (lua_State *L, const char *k, double v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* Push the session table of TLS stream 's'; nil if it is not one. */
int shl_tls_push_info (lua_State *L, const sh_stream *s) {
  sh_tls_info in;
  if (sh_tls_info_get(s, &in) != 0) { lua_pushnil(L); return 1; }
  lua_createtable(L, 0, 5);
  setstr(L, "protocol", in.protocol);
  setstr(L, "cipher", in.cipher);
  setstr(L, "alpn", in.alpn);
  setstr(L, "servername", in.servername);
  if (in.has_peer) {
    lua_createtable(L, 0, 6);
    setstr(L, "subject", in.subject);
    setstr(L, "issuer", in.issuer);
    setstr(L, "fingerprint", in.fingerprint);
    setnum(L, "not_before", in.not_before);
    setnum(L, "not_after", in.not_after);
    lua_pushboolean(L, in.verified);
    lua_setfield(L, -2, "verified");
    lua_setfield(L, -2, "peer");
  }
  return 1;
}

/* ====================== Handshakes nobody else owns ====================== */

/* Server handshakes belong to no task and may outlive their listener. At
** lua_close they must go before the scheduler runs the loop a last time
** (a finished one would start a handler in a closing state): a userdata in
** the registry, made after the scheduler and so finalized before it,
** cancels those still running. */
static const char STATE_KEY = 's';

static int state_gc (lua_State *L) {
  tls_state *st = (tls_state *)lua_touserdata(L, 1);
  int i;
  while (st->head.next != &st->head) {
    shl_pending *p = st->head.next;
    shl_pending_remove(p);
    p->cancel(p);
  }
  for (i = 0; i < CACHED; i++) {
    sh_tls_ctx_free(st->cache[i].ctx);
    free(st->cache[i].key);
    st->cache[i].ctx = NULL;
    st->cache[i].key = NULL;
  }
  return 0;
}

static tls_state *get_state (lua_State *L) {
  tls_state *st;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
  st = (tls_state *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (st != NULL) return st;
  st = (tls_state *)lua_newuserdatauv(L, sizeof *st, 0);
  memset(st, 0, sizeof *st);
  st->head.next = st->head.prev = &st->head;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
  return st;
}

void shl_pending_add (lua_State *L, shl_pending *p) {
  tls_state *st = get_state(L);
  p->next = st->head.next;
  p->prev = &st->head;
  st->head.next->prev = p;
  st->head.next = p;
}

void shl_pending_remove (shl_pending *p) {
  if (p->next == NULL) return;
  p->prev->next = p->next;
  p->next->prev = p->prev;
  p->next = p->prev = NULL;
}
