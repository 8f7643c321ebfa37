/* session.c: zulip.Session, the C side of a client's settings: site, credentials, TLS, proxy and
 * limits, shared by its engine and every transfer. Settings are resolved in Lua
 * (lua/zulip/config.lua); this only stores them.
 * The API key lives here and nowhere else: no function returns it and __tostring omits it. */
#include "session.h"
#include "compat.h"

#include <string.h>

typedef struct zulip_session_ud {
  zsess *s;
  char *label;  /* "email at site", for __tostring */
} zulip_session_ud;

zsess *zulip_session_check(lua_State *L, int idx) {
  zulip_session_ud *u = luaL_checkudata(L, idx, ZULIP_SESSION_MT);
  if (u->s == NULL) luaL_error(L, "session is closed");
  return u->s;
}

/* A string setting; one that goes into the request (site, credentials, user agent) must not hold
 * a control character: a CR or LF would end a header line, a NUL would cut the value short. */
static const char *zulip_session_optstring(lua_State *L, const char *key, int required) {
  const char *v, *p;
  size_t n;
  lua_getfield(L, 1, key);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    if (required) luaL_error(L, "session: '%s' is required", key);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "session: '%s' must be a string", key);
  v = lua_tolstring(L, -1, &n);
  for (p = v; p < v + n; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) luaL_error(L, "zulip: '%s' has a character HTTP cannot carry (a control character)", key);
  lua_pop(L, 1);  /* still anchored by the options table */
  return v;
}

static double zulip_session_optnumber(lua_State *L, const char *key, double dflt, double lo, double hi) {
  double v;
  lua_getfield(L, 1, key);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return dflt;
  }
  if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "session: '%s' must be a number", key);
  v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (!(v >= lo && v <= hi)) luaL_error(L, "session: '%s' is out of range", key);
  return v;
}

static int zulip_session_gc(lua_State *L) {
  zulip_session_ud *u = luaL_checkudata(L, 1, ZULIP_SESSION_MT);
  zsess_release(u->s);
  u->s = NULL;
  zsess_strset(&u->label, NULL);
  return 0;
}

static int zulip_session_tostring(lua_State *L) {
  zulip_session_ud *u = luaL_checkudata(L, 1, ZULIP_SESSION_MT);
  lua_pushfstring(L, "zulip.Session (%s)", u->label ? u->label : "closed");
  return 1;
}

int zulip_session_new(lua_State *L) {
  zulip_session_ud *u;
  zsess *s;
  const char *site, *email, *key, *v;
  int failed = 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  site = zulip_session_optstring(L, "site", 1);
  email = zulip_session_optstring(L, "email", 1);
  key = zulip_session_optstring(L, "api_key", 1);
  u = zulip_newuserdata(L, sizeof *u);
  u->s = NULL;
  u->label = NULL;
  luaL_getmetatable(L, ZULIP_SESSION_MT);
  lua_setmetatable(L, -2);
  u->s = s = zsess_new();
  if (s == NULL) return luaL_error(L, "session: out of memory");
  lua_pushfstring(L, "%s at %s", email, site);
  failed |= zsess_strset(&u->label, lua_tostring(L, -1));
  lua_pop(L, 1);
  failed |= zsess_set_site(s, site);
  failed |= zsess_strset(&s->api_key, key);
  lua_pushfstring(L, "%s:%s", email, key);
  s->userpwd_b64 = ztrace_base64(lua_tostring(L, -1));
  failed |= s->userpwd_b64 == NULL;
  lua_pop(L, 1);
  failed |= zsess_strset(&s->user_agent, zulip_session_optstring(L, "user_agent", 0));
  failed |= !failed && zsess_headers(s) != 0;
  failed |= zsess_strset(&s->cert_bundle, zulip_session_optstring(L, "cert_bundle", 0));
  failed |= zsess_strset(&s->client_cert, zulip_session_optstring(L, "client_cert", 0));
  failed |= zsess_strset(&s->client_key, zulip_session_optstring(L, "client_cert_key", 0));
  v = zulip_session_optstring(L, "proxy", 0);
  failed |= zsess_strset(&s->proxy, v);
  failed |= zsess_strset(&s->no_proxy, zulip_session_optstring(L, "no_proxy", 0));
  if (failed) return luaL_error(L, "session: out of memory");
  lua_getfield(L, 1, "insecure");
  s->insecure = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "debug");
  s->debug = lua_toboolean(L, -1);
  lua_pop(L, 1);
  s->connect_timeout_ms = (long)(1000 * zulip_session_optnumber(L, "connect_timeout", 10, 0.001, 3600));
  s->max_reply_bytes = (size_t)zulip_session_optnumber(L, "max_reply_bytes", (double)((size_t)256 << 20), 1, 1e15);
  s->low_speed_limit = (long)zulip_session_optnumber(L, "low_speed_limit", 1024, 0, 1e12);
  s->low_speed_time = (long)zulip_session_optnumber(L, "low_speed_time", 30, 0, 86400);
  return 1;
}

void zulip_session_open(lua_State *L) {
  zulip_newmetatable(L, ZULIP_SESSION_MT);
  lua_pushcfunction(L, zulip_session_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, zulip_session_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "zulip.Session is private");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}
