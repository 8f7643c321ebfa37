/* enginelib.c: zulip.Engine and zulip.Transfer, the Lua face of engine.h. Mechanism only: what to
 * request and what a reply means is policy, in lua/zulip/engine.lua and lua/zulip/queue.lua.
 *
 * A transfer's user value is its owner (a Lua table, the operation it carries out); the engine
 * finds a finished transfer's Lua object through a weak table, so an operation nobody holds is
 * collected, and its transfer cancelled, even while it runs. */
#include "enginelib.h"
#include "compat.h"
#include "engine.h"
#include "json.h"
#include "session.h"

#include <stdio.h>
#include <string.h>

#define ZULIP_ENGINE_MT "zulip.Engine"
#define ZULIP_TRANSFER_MT "zulip.Transfer"

typedef struct { zeng *e; } zulip_engine_ud;
/* hints: the shape of the transfer's last reply, which presizes the tables of the next one's
 * decode (a queue's polls bring the same shapes: a message event decoded with them makes no
 * rehash, a third fewer instructions) */
typedef struct {
  zxfer *x;
  zulip_json_hints hints;
} zulip_transfer_ud;

static zeng *zulip_engine_check(lua_State *L) {
  zulip_engine_ud *u = luaL_checkudata(L, 1, ZULIP_ENGINE_MT);
  if (u->e == NULL || u->e->closed) luaL_error(L, "zulip: the client is closed");
  return u->e;
}

static zulip_transfer_ud *zulip_transfer_checkud(lua_State *L) {
  zulip_transfer_ud *u = luaL_checkudata(L, 1, ZULIP_TRANSFER_MT);
  if (u->x == NULL) luaL_error(L, "zulip: the transfer is gone");
  return u;
}

static zxfer *zulip_transfer_check(lua_State *L) {
  return zulip_transfer_checkud(L)->x;
}

static long zulip_engine_ms(lua_State *L, int idx, const char *what) {
  double s = luaL_checknumber(L, idx);
  if (!(s >= 0 && s <= 86400.0 * 365)) luaL_error(L, "zulip: bad %s: %f seconds", what, s);
  return (long)(s * 1000 + 0.5);
}

/* core.engine(session) -> a zulip.Engine */
int zulip_engine_new(lua_State *L) {
  zsess *s = zulip_session_check(L, 1);
  char err[256];
  zulip_engine_ud *u = zulip_newuserdata(L, sizeof *u);
  u->e = NULL;
  luaL_getmetatable(L, ZULIP_ENGINE_MT);
  lua_setmetatable(L, -2);
  lua_newtable(L);                    /* live transfers: lightuserdata -> userdata, weak values */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  zulip_setuservalue(L, -2);
  u->e = zeng_new(s, err, sizeof err);
  if (u->e == NULL) {  /* no position: the message says it all */
    lua_pushfstring(L, "zulip: cannot make a client: %s", err);
    return lua_error(L);
  }
  return 1;
}

/* eng:transfer(owner) -> a zulip.Transfer, idle, whose user value is owner */
static int zulip_engine_transfer(lua_State *L) {
  zeng *e = zulip_engine_check(L);
  char err[256];
  zulip_transfer_ud *u;
  luaL_checkany(L, 2);
  u = zulip_newuserdata(L, sizeof *u);
  memset(u, 0, sizeof *u);
  luaL_getmetatable(L, ZULIP_TRANSFER_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, 2);
  zulip_setuservalue(L, -2);
  u->x = zxfer_new(e, err, sizeof err);
  if (u->x == NULL) return luaL_error(L, "zulip: %s", err);
  zulip_getuservalue(L, 1);
  lua_pushlightuserdata(L, u->x);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return 1;
}

/* eng:drive(wait_seconds|nil) -> the owners of the transfers that ended (a list, maybe empty),
 * and true when a signal cut the wait short (return to Lua, so Ctrl-C is handled) */
static int zulip_engine_drive(lua_State *L) {
  zeng *e = zulip_engine_check(L);
  long wait = lua_isnoneornil(L, 2) ? -1 : zulip_engine_ms(L, 2, "wait");
  int r = zeng_drive(e, wait), n = 0;
  zxfer *x;
  lua_createtable(L, r > 0 ? r : 0, 0);
  zulip_getuservalue(L, 1);
  while ((x = zeng_take(e)) != NULL) {
    lua_pushlightuserdata(L, x);
    lua_rawget(L, -2);
    if (lua_isuserdata(L, -1)) {   /* else being collected: its __gc cancels it */
      zulip_getuservalue(L, -1);
      lua_rawseti(L, -4, ++n);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushboolean(L, r < 0);
  return 2;
}

/* eng:background(method, path_and_query, timeout_seconds) -> true | nil, msg: a request nobody
 * waits for and no Lua object stands for (safe from a finalizer); eng:backgrounds() counts them */
static int zulip_engine_background(lua_State *L) {
  zeng *e = zulip_engine_check(L);
  size_t pl;
  const char *method = luaL_checkstring(L, 2);
  const char *path = luaL_checklstring(L, 3, &pl);
  long timeout = zulip_engine_ms(L, 4, "timeout");
  char err[CURL_ERROR_SIZE];
  if (strlen(path) != pl || zxfer_detached(e, method, path, timeout, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, strlen(path) != pl ? "the request path has a NUL byte" : err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int zulip_engine_backgrounds(lua_State *L) {
  lua_pushinteger(L, zeng_detached(zulip_engine_check(L)));
  return 1;
}

static int zulip_engine_pollfd(lua_State *L) {
  lua_pushinteger(L, zeng_fd(zulip_engine_check(L)));
  return 1;
}

/* eng:pollfds() -> fds, events: every fd a loop must watch (zpoll_fds: the pollfd alone with
 * epoll and kqueue; with poll(2) the self-pipe and each socket) and, at the same positions, what
 * for: "r", "w" or "rw" */
static int zulip_engine_pollfds(lua_State *L) {
  zeng *e = zulip_engine_check(L);
  zpoll_event one, *evs = &one;
  int n = zpoll_fds(e->poll, &one, 1), i;
  if (n > 1) {  /* scratch as userdata: an error below cannot leak it */
    evs = zulip_newuserdata(L, (size_t)n * sizeof *evs);
    n = zpoll_fds(e->poll, evs, n);
  }
  lua_createtable(L, n, 0);
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    int w = evs[i].what;
    lua_pushinteger(L, evs[i].fd);
    lua_rawseti(L, -3, i + 1);
    lua_pushstring(L, (w & ZPOLL_IN) && (w & ZPOLL_OUT) ? "rw" : (w & ZPOLL_OUT) ? "w" : "r");
    lua_rawseti(L, -2, i + 1);
  }
  return 2;
}

/* eng:timeout() -> seconds until the engine needs a drive (curl's timer, a reply's low-speed
 * window), or nil when only fd activity matters */
static int zulip_engine_timeout(lua_State *L) {
  long ms = zeng_timeout_ms(zulip_engine_check(L));
  if (ms < 0) return 0;
  lua_pushnumber(L, (double)ms / 1000.0);
  return 1;
}

/* eng:alarm(seconds|nil): the pollfd becomes readable after seconds (rounded up to whole ms, so it
 * never fires early) for the owner's own timers; nil cancels. One-shot. */
static int zulip_engine_alarm(lua_State *L) {
  zeng *e = zulip_engine_check(L);
  long ms = -1;
  if (!lua_isnoneornil(L, 2)) {
    double s = luaL_checknumber(L, 2);
    if (!(s >= 0 && s <= 86400.0 * 365)) return luaL_error(L, "zulip: bad alarm: %f seconds", s);
    ms = (long)(s * 1000);
    if ((double)ms < s * 1000) ms++;
  }
  zeng_alarm(e, ms);
  return 0;
}

static int zulip_engine_running(lua_State *L) {
  zeng *e = zulip_engine_check(L);
  int n = 0;
  zxfer *x;
  for (x = e->running; x != NULL; x = x->next) n++;
  lua_pushinteger(L, n);
  return 1;
}

/* eng:close(): also __gc. Cancels every transfer and closes the connections; never waits. */
static int zulip_engine_close(lua_State *L) {
  zulip_engine_ud *u = luaL_checkudata(L, 1, ZULIP_ENGINE_MT);
  if (u->e != NULL) zeng_close(u->e);
  return 0;
}

/* A collected engine can drive nothing more: closing it ends its detached transfers too, which
 * hold references to it (else each keeps the other alive). */
static int zulip_engine_gc(lua_State *L) {
  zulip_engine_ud *u = luaL_checkudata(L, 1, ZULIP_ENGINE_MT);
  if (u->e != NULL) zeng_close(u->e);
  zeng_release(u->e);
  u->e = NULL;
  return 0;
}

static int zulip_engine_is_closed(lua_State *L) {
  zulip_engine_ud *u = luaL_checkudata(L, 1, ZULIP_ENGINE_MT);
  lua_pushboolean(L, u->e == NULL || u->e->closed);
  return 1;
}

/* ---- transfers ---- */

/* x:start(method, path_and_query, body|nil, timeout_seconds) -> true | nil, msg */
static int zulip_transfer_start(lua_State *L) {
  zxfer *x = zulip_transfer_check(L);
  size_t ml, pl, bl = 0;
  const char *method = luaL_checklstring(L, 2, &ml);
  const char *path = luaL_checklstring(L, 3, &pl);
  const char *body = luaL_optlstring(L, 4, NULL, &bl);
  long timeout = zulip_engine_ms(L, 5, "timeout");
  if (strlen(path) != pl || strlen(method) != ml) {
    lua_pushnil(L);
    lua_pushliteral(L, "the request path has a NUL byte");
    return 2;
  }
  if (zxfer_start(x, method, path, body, bl, timeout) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, x->errbuf);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* x:result() -> nil while it runs or before any start; else one table of a fixed shape:
 *   status       HTTP status of the reply (0 when none came)
 *   body         the decoded JSON body, or nil (no body, not JSON, or a failed transfer)
 *   json_error   the decoder's message when a body came that is not JSON
 *   retry_after  seconds from Retry-After, or nil
 *   code         nil when a reply came, else "NETWORK", "TIMEOUT", "TLS", "PROTOCOL", "TOO_LARGE"
 *   message      what went wrong (with code)
 *   sent         whether any byte of the request went out */
static int zulip_transfer_result(lua_State *L) {
  zulip_transfer_ud *u = zulip_transfer_checkud(L);
  zxfer *x = u->x;
  if (x->state == ZXFER_RUNNING || (x->fail == NULL && x->status == 0)) return 0;
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, (lua_Integer)x->status);
  lua_setfield(L, -2, "status");
  if (x->retry_after >= 0) {
    lua_pushnumber(L, x->retry_after);
    lua_setfield(L, -2, "retry_after");
  }
  lua_pushboolean(L, x->sent);
  lua_setfield(L, -2, "sent");
  if (x->fail != NULL) {
    lua_pushstring(L, x->fail);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, x->errbuf[0] ? x->errbuf : "the request failed");
    lua_setfield(L, -2, "message");
  } else if (x->body_len > 0) {
    char err[160];
    size_t pos = 0;
    if (zulip_json_decode(L, x->body, x->body_len, ZULIP_JSON_MAXDEPTH, &u->hints, err, sizeof err, &pos)) {
      lua_setfield(L, -2, "body");
    } else {
      lua_pushstring(L, err);
      lua_setfield(L, -2, "json_error");
    }
  }
  return 1;
}

/* x:raw() -> the text of the last reply (for error messages: a proxy's HTML page) */
static int zulip_transfer_raw(lua_State *L) {
  zxfer *x = zulip_transfer_check(L);
  lua_pushlstring(L, x->body ? x->body : "", x->body_len);
  return 1;
}

/* x:trace() -> the debug trace of the last transfer (scrubbed lines), or nil; once */
static int zulip_transfer_trace(lua_State *L) {
  zxfer *x = zulip_transfer_check(L);
  if (x->trace_len == 0) return 0;
  lua_pushlstring(L, x->trace, x->trace_len);
  x->trace_len = 0;
  return 1;
}

static int zulip_transfer_running(lua_State *L) {
  lua_pushboolean(L, zulip_transfer_check(L)->state == ZXFER_RUNNING);
  return 1;
}

static int zulip_transfer_cancel(lua_State *L) {
  zulip_transfer_ud *u = luaL_checkudata(L, 1, ZULIP_TRANSFER_MT);
  if (u->x != NULL) zxfer_cancel(u->x);
  return 0;
}

static int zulip_transfer_gc(lua_State *L) {
  zulip_transfer_ud *u = luaL_checkudata(L, 1, ZULIP_TRANSFER_MT);
  if (u->x != NULL) {
    zxfer_cancel(u->x);
    zxfer_release(u->x);
    u->x = NULL;
  }
  return 0;
}

static int zulip_transfer_owner(lua_State *L) {
  luaL_checkudata(L, 1, ZULIP_TRANSFER_MT);
  zulip_getuservalue(L, 1);
  return 1;
}

static const luaL_Reg zulip_engine_methods[] = {
  {"transfer", zulip_engine_transfer},
  {"background", zulip_engine_background},
  {"backgrounds", zulip_engine_backgrounds},
  {"drive", zulip_engine_drive},
  {"pollfd", zulip_engine_pollfd},
  {"pollfds", zulip_engine_pollfds},
  {"timeout", zulip_engine_timeout},
  {"alarm", zulip_engine_alarm},
  {"running", zulip_engine_running},
  {"close", zulip_engine_close},
  {"closed", zulip_engine_is_closed},
  {NULL, NULL}
};

static const luaL_Reg zulip_transfer_methods[] = {
  {"start", zulip_transfer_start},
  {"result", zulip_transfer_result},
  {"raw", zulip_transfer_raw},
  {"trace", zulip_transfer_trace},
  {"running", zulip_transfer_running},
  {"cancel", zulip_transfer_cancel},
  {"owner", zulip_transfer_owner},
  {NULL, NULL}
};

static int zulip_engine_tostring(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));  /* the type's name: neither holds anything to show */
  return 1;
}

static void zulip_enginelib_type(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc) {
  zulip_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_pushstring(L, name);
  lua_pushcclosure(L, zulip_engine_tostring, 1);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "private");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}

void zulip_enginelib_open(lua_State *L) {
  zulip_enginelib_type(L, ZULIP_ENGINE_MT, zulip_engine_methods, zulip_engine_gc);
  zulip_enginelib_type(L, ZULIP_TRANSFER_MT, zulip_transfer_methods, zulip_transfer_gc);
}
