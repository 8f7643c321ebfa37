/* core.c: luaopen_zulip_core, the module's only exported symbol, and the small functions that
 * belong to no type: decode, the JSON null sentinel, a monotonic clock and a sleep. */
#if defined(__linux__)
#define _GNU_SOURCE              /* dladdr (zulip_core_pin) */
#elif defined(__APPLE__)
#define _DARWIN_C_SOURCE
#endif
#define _POSIX_C_SOURCE 200809L
#include "compat.h"
#include "enginelib.h"
#include "json.h"
#include "wait.h"
#include "queue.h"
#include "session.h"
#include "zpoll.h"

#include <errno.h>
#include <time.h>
#include <sys/utsname.h>
#if defined(__linux__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

#ifndef ZULIP_VERSION
#error "ZULIP_VERSION must be defined by the build (see the Makefile and the rockspec)"
#endif

/* zulip.decode(json) -> value | nil, msg, {code = "PROTOCOL", msg = msg, position = n} */
static int zulip_core_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char err[160];
  size_t pos = 0;
  if (zulip_json_decode(L, s, len, ZULIP_JSON_MAXDEPTH, NULL, err, sizeof err, &pos)) return 1;
  lua_pushnil(L);
  lua_pushstring(L, err);
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "PROTOCOL");
  lua_setfield(L, -2, "code");
  lua_pushstring(L, err);
  lua_setfield(L, -2, "msg");
  lua_pushinteger(L, (lua_Integer)pos);
  lua_setfield(L, -2, "position");
  return 3;
}

/* core.now() -> seconds on the monotonic clock, for timers that must not jump with the wall clock */
static int zulip_core_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
  return 1;
}

/* core.sleep(seconds): the default sleep of the blocking iterator. Returns early (false) on a
 * signal so that the interpreter's Ctrl-C handler gets to run. */
static int zulip_core_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  struct timespec ts;
  if (!(s >= 0)) s = 0;
  if (s > 86400) s = 86400;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  lua_pushboolean(L, nanosleep(&ts, NULL) == 0 || errno != EINTR);
  return 1;
}

/* The system's name from uname(2) ("Linux", "Darwin", "FreeBSD", ...), for the User-Agent:
 * "Unix" when uname fails. */
static void zulip_core_sysname(lua_State *L) {
  struct utsname u;
  if (uname(&u) >= 0 && u.sysname[0] != '\0') lua_pushstring(L, u.sysname);
  else lua_pushliteral(L, "Unix");
}

__attribute__((visibility("default"))) int luaopen_zulip_core(lua_State *L);

/* Once loaded, the module stays loaded. Lua unloads a C module when its state closes, and with it
 * the libraries that only the module holds: libcurl, whose threaded resolver may still be looking
 * up a name for a request that has been cancelled, and libkqueue (kqueue off macOS and the BSDs),
 * which runs a thread of its own. A thread left running in unmapped code takes the process down
 * later (with libkqueue, at exit: about one short script in 120, on a busy machine). */
static void zulip_core_pin(void) {
#if (defined(__linux__) || defined(__APPLE__)) && defined(RTLD_NODELETE) && defined(RTLD_NOLOAD)
  union { int (*fn)(lua_State *); void *ptr; } self;  /* a function's address, as dladdr takes it */
  Dl_info info;
  self.fn = luaopen_zulip_core;
  if (dladdr(self.ptr, &info) != 0 && info.dli_fname != NULL)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
#endif
}

static const luaL_Reg zulip_core_functions[] = {
  {"decode", zulip_core_decode},
  {"session", zulip_session_new},
  {"engine", zulip_engine_new},
  {"queue", zulip_queue_new},
  {"now", zulip_core_now},
  {"sleep", zulip_core_sleep},
  {"wait", zulip_wait},
  {NULL, NULL}
};

__attribute__((visibility("default"))) int luaopen_zulip_core(lua_State *L) {
  static int curl_ready = 0;
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return luaL_error(L, "libcurl failed to initialise");
    curl_ready = 1;
    zulip_core_pin();
  }
  zulip_session_open(L);
  zulip_enginelib_open(L);
  luaL_newlib(L, zulip_core_functions);
  zulip_queue_open(L);
  lua_setfield(L, -2, "Queue");  /* the methods table; lua/zulip adds the policy methods */
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_pushliteral(L, ZULIP_VERSION);
  lua_setfield(L, -2, "_VERSION");
  lua_pushliteral(L, LUA_VERSION);  /* the Lua whose headers built us: lua/zulip/init.lua checks it */
  lua_setfield(L, -2, "lua_version");
  lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
  lua_setfield(L, -2, "curl_version");
  lua_pushstring(L, zpoll_name());
  lua_setfield(L, -2, "poller");
  lua_pushboolean(L, zpoll_single_fd());
  lua_setfield(L, -2, "single_fd");
  zulip_core_sysname(L);
  lua_setfield(L, -2, "sysname");
  return 1;
}
