/* queue.h: the zulip.Queue userdata: a handle whose state (a Lua table) the Lua layer drives. */
#ifndef ZULIP_QUEUE_H
#define ZULIP_QUEUE_H

#include <lua.h>

#define ZULIP_QUEUE_MT "zulip.Queue"

void zulip_queue_open(lua_State *L);  /* registers the metatable; leaves the methods table on the stack */
int zulip_queue_new(lua_State *L);    /* core.queue() */

#endif
