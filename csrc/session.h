/* session.h: the zulip.Session userdata (a client's shared transport settings). */
#ifndef ZULIP_SESSION_H
#define ZULIP_SESSION_H

#include <lua.h>
#include "engine.h"

#define ZULIP_SESSION_MT "zulip.Session"

void zulip_session_open(lua_State *L);            /* registers the metatable */
int zulip_session_new(lua_State *L);              /* core.session(opts) */
zsess *zulip_session_check(lua_State *L, int idx);

#endif
