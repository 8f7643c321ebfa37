/* compat.h: the only place that knows which Lua we are built against.
 * The core is written to the 5.3/5.4 API; these shims map it onto 5.1 and LuaJIT. */
#ifndef ZULIP_COMPAT_H
#define ZULIP_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
/* 5.1 / LuaJIT: userdata carry an environment table instead of a user value. */
#define zulip_newuserdata(L, sz)   lua_newuserdata((L), (sz))
#define zulip_getuservalue(L, i)   lua_getfenv((L), (i))
#define zulip_setuservalue(L, i)   lua_setfenv((L), (i))
#define lua_rawlen(L, i)           lua_objlen((L), (i))
#ifndef luaL_newlib  /* LuaJIT 2.1 has these 5.2 helpers; plain 5.1 does not */
#define luaL_setfuncs(L, l, n)     zulip_compat_setfuncs((L), (l), (n))
#define luaL_newlibtable(L, l)     lua_createtable((L), 0, (int)(sizeof(l) / sizeof((l)[0]) - 1))
#define luaL_newlib(L, l)          (luaL_newlibtable((L), (l)), luaL_setfuncs((L), (l), 0))
#define luaL_testudata(L, i, t)    zulip_testudata((L), (i), (t))
#define ZULIP_NEED_SETFUNCS 1
#endif
#ifndef lua_absindex
#define lua_absindex(L, i)         (((i) > 0 || (i) <= LUA_REGISTRYINDEX) ? (i) : lua_gettop(L) + (i) + 1)
#endif
#ifdef ZULIP_NEED_SETFUNCS
static inline void zulip_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
static inline void *zulip_testudata(lua_State *L, int i, const char *tname) {
  void *p = lua_touserdata(L, i);
  if (p == NULL || !lua_getmetatable(L, i)) return NULL;
  luaL_getmetatable(L, tname);
  if (!lua_rawequal(L, -1, -2)) p = NULL;
  lua_pop(L, 2);
  return p;
}
#endif
#elif LUA_VERSION_NUM < 504
#define zulip_newuserdata(L, sz)   lua_newuserdata((L), (sz))
#define zulip_getuservalue(L, i)   ((void)lua_getuservalue((L), (i)))
#define zulip_setuservalue(L, i)   ((void)lua_setuservalue((L), (i)))
#else
#define zulip_newuserdata(L, sz)   lua_newuserdatauv((L), (sz), 1)
#define zulip_getuservalue(L, i)   ((void)lua_getiuservalue((L), (i), 1))
#define zulip_setuservalue(L, i)   ((void)lua_setiuservalue((L), (i), 1))
#endif

/* Give a metatable the name 5.3+ puts in __name, so error messages agree on every version. */
static inline int zulip_newmetatable(lua_State *L, const char *tname) {
  if (!luaL_newmetatable(L, tname)) return 0;
  lua_pushstring(L, tname);
  lua_setfield(L, -2, "__name");
  return 1;
}

#endif
