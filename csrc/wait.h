/* wait.h: core.wait, one poll(2) over many queues' fds (zulip.step_all drives many queues). */
#ifndef ZULIP_WAIT_H
#define ZULIP_WAIT_H

#include <lua.h>

int zulip_wait(lua_State *L);  /* core.wait(fds, timeout|nil) */

#endif
