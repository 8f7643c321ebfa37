/* poller.h: core.wait, one poll(2) over many queues' fds (zulip.step_all drives many queues). */
#ifndef ZULIP_POLLER_H
#define ZULIP_POLLER_H

#include <lua.h>

int zulip_poller_wait(lua_State *L);  /* core.wait(fds, timeout|nil) */

#endif
