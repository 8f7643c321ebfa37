/* wait.c: core.wait(fds, timeout, events) -> the 1-based positions of the fds that are ready.
 * One poll(2) call over any number of clients' pollfds (each an epoll or kqueue set of its own
 * sockets and timer; with the poll(2) poller each client's self-pipe and sockets), so a process
 * can sleep on a thousand queues at once without busy polling; the Lua side (zulip.step_all in
 * lua/zulip/loop.lua) then steps only the clients that are ready. */
#define _POSIX_C_SOURCE 200809L
#include "wait.h"
#include "compat.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>

/* core.wait(fds, timeout|nil, events|nil)
 *   fds:     a list of file descriptors (integers >= 0)
 *   timeout: seconds to wait at most (rounded up to whole ms); nil or absent: no limit
 *   events:  at the same positions, "r", "w" or "rw" (what eng:pollfds() gives); nil: all "r"
 * -> list of positions i whose fds[i] is ready (or in error: stepping it shows why),
 *    possibly empty (the timeout passed, or a signal interrupted the wait)
 * -> nil, "wait: message", "NAME" when poll(2) fails */
int zulip_wait(lua_State *L) {
  struct pollfd *pfd;
  int n, i, ms = -1, ready, k;
  int has_events;
  luaL_checktype(L, 1, LUA_TTABLE);
  has_events = !lua_isnoneornil(L, 3);
  if (has_events) luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);  /* the scratch below goes to 4, whatever was passed */
  n = (int)lua_rawlen(L, 1);
  if (!lua_isnoneornil(L, 2)) {
    double s = luaL_checknumber(L, 2) * 1000;
    if (!(s >= 0)) return luaL_error(L, "wait: bad timeout");
    ms = s >= INT_MAX ? INT_MAX : (int)s;
    if ((double)ms < s) ms++;  /* round up: never wake before the time asked */
  }
  /* scratch as userdata: the errors below cannot leak it */
  pfd = zulip_newuserdata(L, (size_t)(n > 0 ? n : 1) * sizeof *pfd);
  for (i = 0; i < n; i++) {
    double fd;
    lua_rawgeti(L, 1, i + 1);
    fd = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || !(fd >= 0 && fd <= INT_MAX) || fd != (double)(int)fd)
      return luaL_error(L, "wait: fds[%d] is not a file descriptor", i + 1);
    lua_pop(L, 1);
    pfd[i].fd = (int)fd;
    pfd[i].events = POLLIN;
    if (has_events) {
      const char *ev;
      lua_rawgeti(L, 3, i + 1);
      ev = lua_tostring(L, -1);
      if (ev == NULL || (strcmp(ev, "r") != 0 && strcmp(ev, "w") != 0 && strcmp(ev, "rw") != 0))
        return luaL_error(L, "wait: events[%d] is not \"r\", \"w\" or \"rw\"", i + 1);
      pfd[i].events = (short)((strchr(ev, 'r') ? POLLIN : 0) | (strchr(ev, 'w') ? POLLOUT : 0));
      lua_pop(L, 1);
    }
    pfd[i].revents = 0;
  }
  ready = poll(pfd, (nfds_t)n, ms);
  if (ready < 0 && errno != EINTR) {
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "wait: %s", strerror(e));
    lua_pushstring(L, e == EINVAL ? "EINVAL" : e == ENOMEM ? "ENOMEM" : "EFAULT");
    return 3;
  }
  lua_createtable(L, ready > 0 ? ready : 0, 0);
  for (i = 0, k = 0; ready > 0 && i < n; i++) {
    if (pfd[i].revents != 0) {
      lua_pushinteger(L, i + 1);
      lua_rawseti(L, -2, ++k);
    }
  }
  return 1;
}
