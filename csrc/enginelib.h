/* enginelib.h: the zulip.Engine and zulip.Transfer userdata (see enginelib.c). */
#ifndef ZULIP_ENGINELIB_H
#define ZULIP_ENGINELIB_H

#include <lua.h>

void zulip_enginelib_open(lua_State *L);  /* registers both metatables */
int zulip_engine_new(lua_State *L);       /* core.engine(session) */

#endif
