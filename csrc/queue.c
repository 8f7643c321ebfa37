/* queue.c: zulip.Queue, a userdata so that a queue has __gc and __close on every Lua version
 * (5.1 has no __gc for tables). It holds nothing but a state table (its user value) that only the
 * Lua layer writes (lua/zulip/queue.lua, through q:_state()); from outside its fields are
 * read-only. The methods are Lua functions that lua/zulip/queue.lua puts in the methods table. */
#include "queue.h"
#include "compat.h"

/* core.queue() -> a zulip.Queue with an empty state */
int zulip_queue_new(lua_State *L) {
  zulip_newuserdata(L, 1);
  luaL_getmetatable(L, ZULIP_QUEUE_MT);
  lua_setmetatable(L, -2);
  lua_newtable(L);
  zulip_setuservalue(L, -2);
  return 1;
}

static int zulip_queue_state(lua_State *L) {
  luaL_checkudata(L, 1, ZULIP_QUEUE_MT);
  zulip_getuservalue(L, 1);
  return 1;
}

/* __close (5.4's to-be-closed variables): the queue's close method. */
static int zulip_queue_close(lua_State *L) {
  luaL_checkudata(L, 1, ZULIP_QUEUE_MT);
  lua_getfield(L, lua_upvalueindex(1), "close");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 0);
  return 0;
}

/* __gc: the state's _gc(q), which must not wait (lua/zulip/queue.lua sends the DELETE in the
 * background); an error there is dropped, as an error in a finalizer would be anyway. Unlike
 * close, it never blocks, so it is a function of its own. */
static int zulip_queue_gc(lua_State *L) {
  luaL_checkudata(L, 1, ZULIP_QUEUE_MT);
  zulip_getuservalue(L, 1);
  if (!lua_istable(L, -1)) return 0;
  lua_getfield(L, -1, "_gc");
  if (!lua_isfunction(L, -1)) return 0;
  lua_pushvalue(L, 1);
  if (lua_pcall(L, 1, 0, 0) != 0) lua_pop(L, 1);
  return 0;
}

static int zulip_queue_index(lua_State *L) {
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));  /* methods first */
  if (!lua_isnil(L, -1)) return 1;
  lua_pop(L, 1);
  if (lua_type(L, 2) == LUA_TSTRING && lua_tostring(L, 2)[0] == '_') return 0;
  zulip_getuservalue(L, 1);
  if (!lua_istable(L, -1)) return 0;
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int zulip_queue_newindex(lua_State *L) {
  return luaL_error(L, "zulip: queue fields are read-only (tried to set '%s')",
                    lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : luaL_typename(L, 2));
}

static int zulip_queue_tostring(lua_State *L) {
  const char *id = NULL;
  int closed = 0;
  luaL_checkudata(L, 1, ZULIP_QUEUE_MT);
  zulip_getuservalue(L, 1);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "closed");
    closed = lua_toboolean(L, -1);
    lua_getfield(L, -2, "id");
    if (lua_type(L, -1) == LUA_TSTRING) id = lua_tostring(L, -1);
  }
  lua_pushfstring(L, "zulip.Queue (%s%s)", id ? id : "not registered", closed ? ", closed" : "");
  return 1;
}

static const luaL_Reg zulip_queue_methods[] = {
  {"_state", zulip_queue_state},
  {NULL, NULL}
};

void zulip_queue_open(lua_State *L) {
  zulip_newmetatable(L, ZULIP_QUEUE_MT);
  luaL_newlib(L, zulip_queue_methods);      /* mt methods */
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, zulip_queue_index, 1);
  lua_setfield(L, -3, "__index");
  lua_pushcfunction(L, zulip_queue_newindex);
  lua_setfield(L, -3, "__newindex");
  lua_pushcfunction(L, zulip_queue_gc);
  lua_setfield(L, -3, "__gc");
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, zulip_queue_close, 1);
  lua_setfield(L, -3, "__close");
  lua_pushcfunction(L, zulip_queue_tostring);
  lua_setfield(L, -3, "__tostring");
  lua_remove(L, -2);                        /* methods */
}
