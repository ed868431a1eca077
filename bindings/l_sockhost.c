/* l_sockhost.c -- the `sockhost` module table and luaopen_sockhost(), which
** both the executable and `require "sockhost"` from plain lua5.4 use. */
#include <string.h>

#include "../core/sh_log.h"
#include "shl.h"

/* sockhost.now() -> monotonic seconds, as a float. */
static int l_now (lua_State *L) {
  lua_pushnumber(L, sh_now());
  return 1;
}

/* sockhost.stop() -- make the running loop return (the executable exits 0). */
static int l_stop (lua_State *L) {
  sh_loop_stop(shl_getsched(L)->loop);
  return 0;
}

static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};

/* sockhost.log(level, ...) -- one log line: the values, tostring'd, joined by
** spaces. A NUL is written "\x00" here; sh_log escapes the other control
** characters, bytes that are not UTF-8 and bidi controls, and cuts long
** messages. */
static int l_log (lua_State *L) {
  int level = luaL_checkoption(L, 1, NULL, level_names), i, n = lua_gettop(L);
  luaL_Buffer b;
  const char *msg;
  size_t len;
  if ((sh_log_level)level < sh_log_get_level()) return 0;   /* filtered out */
  luaL_buffinit(L, &b);
  for (i = 2; i <= n; i++) {
    if (i > 2) luaL_addchar(&b, ' ');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  msg = lua_tolstring(L, -1, &len);
  if (strlen(msg) < len) msg = shl_push_nul_escaped(L, msg, len);
  sh_log((sh_log_level)level, "%s", msg);
  return 0;
}

static const char *const all_levels[] = {"debug", "info", "warn", "error", "off", NULL};

/* sockhost.log_level([level]) -- the current level's name; with an argument,
** set it (the name before the change is returned). */
static int l_log_level (lua_State *L) {
  sh_log_level was = sh_log_get_level();
  if (!lua_isnoneornil(L, 1))
    sh_log_set_level((sh_log_level)luaL_checkoption(L, 1, NULL, all_levels));
  lua_pushstring(L, sh_log_level_name(was));
  return 1;
}

static const char *const run_opts[] = {"timeout", NULL};

/* run()'s main function failed: stop, as the executable does. */
static void run_main_exit (shl_task *t, void *ctx) {
  (void)ctx;
  if (t->state == TASK_FAILED) sh_loop_stop(t->S->loop);
}

/* sockhost.run([fn [, opts]]) -- drive the loop from plain Lua (the
** executable does this itself). fn, if given, runs as a task; run returns
** when nothing is left to wait for, on sockhost.stop(), or as soon as fn
** fails, and then returns fn's results or raises its error. opts.timeout bounds the run: past it,
** run raises "sockhost.run: timeout". */
static int l_run (lua_State *L) {
  shl_host *H = shl_gethost(L);
  shl_task *t = NULL;
  double timeout;
  int rc;
  if (sh_loop_running(H->loop) || shl_current(L) != NULL)
    return luaL_error(L, "sockhost.run: the loop is already running");
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  shl_checkoptions(L, 2, run_opts);
  timeout = shl_optfield(L, 2, "timeout", -1);
  lua_settop(L, 1);
  if (!lua_isnil(L, 1)) {
    t = shl_task_new(H->sched, L, 0, 0, 1);     /* stack: task */
    t->on_exit = run_main_exit;
    shl_wake(t, 0);
  }
  rc = shl_run(H, timeout);
  if (rc == 2) return luaL_error(L, "sockhost.run: timeout after %f s", timeout);
  if (rc < 0) return luaL_error(L, "sockhost.run: event loop failure");
  if (t == NULL) return 0;
  if (t->state == TASK_FAILED) {
    lua_getiuservalue(L, -1, 3);
    return lua_error(L);
  }
  if (t->state != TASK_DONE) return 0;          /* stopped before it ended */
  lua_getfield(L, -1, "join");
  lua_insert(L, -2);
  lua_call(L, 1, LUA_MULTRET);                  /* the results, via task:join() */
  return lua_gettop(L);
}


static const luaL_Reg funcs[] = {
  {"listen", shl_listen}, {"connect", shl_connect}, {"sleep", shl_sleep},
  {"after", shl_after}, {"every", shl_every}, {"now", l_now}, {"stop", l_stop},
  {"run", l_run}, {"log", l_log}, {"log_level", l_log_level}, {"resolve", shl_resolve}, {"resolver", shl_setresolver},
  {"udp", shl_udp}, {"shutdown", shl_shutdown_lua}, {"on_shutdown", shl_on_shutdown},
  {"on_signal", shl_on_signal}, {"reload", shl_reload_lua}, {"select", shl_select},
  {"stats", shl_stats},
  {"spawn", NULL}, {"channel", NULL}, {"event", NULL}, {NULL, NULL}
};

LUAMOD_API int luaopen_sockhost (lua_State *L) {
  shl_host_open(L);
  shl_conn_open(L);
  shl_listener_open(L);
  shl_timer_open(L);
  shl_udp_open(L);
  luaL_newlib(L, funcs);
  shl_task_open(L);                             /* pushes spawn */
  lua_setfield(L, -2, "spawn");
  shl_channel_open(L);                          /* pushes channel */
  lua_setfield(L, -2, "channel");
  shl_event_open(L);                            /* pushes event */
  lua_setfield(L, -2, "event");
  lua_pushliteral(L, SH_VERSION);
  lua_setfield(L, -2, "version");
  shl_address_open(L);
  lua_setfield(L, -2, "address");
  shl_http_open(L);
  shl_crypto_open(L);
  shl_test_open(L);
  shl_admin_open(L);
  shl_modules_open(L);
  return 1;
}
