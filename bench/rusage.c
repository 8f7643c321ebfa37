/* rusage.c: a bench-only helper module (build/bench/<LUA>/rusage.so), kept out of zulip.core.
 *   cpu()            -> user+system CPU seconds of this process (getrusage RUSAGE_SELF), then
 *                       user and system seconds apart
 *   maxrss()         -> peak resident set size in KiB (ru_maxrss)
 *   rss()            -> current resident set size in KiB (/proc/self/statm)
 *   heap()           -> bytes malloc has handed out and not freed (mallinfo2 uordblks)
 *   nofile(n)        -> raises the soft RLIMIT_NOFILE to n (at most the hard limit); returns it
 *   fds()            -> how many file descriptors this process has open
 *   poll(fds, ms)    -> list of the indices in fds (a list of fds) that are readable, waiting up
 *                       to ms milliseconds (< 0: for ever); a foreign event loop in miniature */
#define _GNU_SOURCE
#include <lua.h>
#include <lauxlib.h>

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

static int rusage_cpu(lua_State *L) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
  double sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
  lua_pushnumber(L, user + sys);
  lua_pushnumber(L, user);
  lua_pushnumber(L, sys);
  return 3;
}

static int rusage_maxrss(lua_State *L) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  lua_pushnumber(L, (double)ru.ru_maxrss);
  return 1;
}

static int rusage_rss(lua_State *L) {
  long size = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL || fscanf(f, "%ld %ld", &size, &resident) != 2) resident = 0;
  if (f != NULL) fclose(f);
  lua_pushnumber(L, (double)resident * (double)sysconf(_SC_PAGESIZE) / 1024.0);
  return 1;
}

static int rusage_heap(lua_State *L) {
  struct mallinfo2 mi = mallinfo2();
  lua_pushnumber(L, (double)mi.uordblks + (double)mi.hblkhd);
  return 1;
}

static int rusage_nofile(lua_State *L) {
  rlim_t want = (rlim_t)luaL_checknumber(L, 1);
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (want > rl.rlim_max) want = rl.rlim_max;
  if (want > rl.rlim_cur) {
    rl.rlim_cur = want;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  lua_pushnumber(L, (double)rl.rlim_cur);
  return 1;
}

static int rusage_fds(lua_State *L) {
  struct rlimit rl;
  long fd, open = 0;
  getrlimit(RLIMIT_NOFILE, &rl);
  for (fd = 0; fd < (long)rl.rlim_cur; fd++)
    if (fcntl((int)fd, F_GETFD) != -1) open++;
  lua_pushinteger(L, (lua_Integer)open);
  return 1;
}

static int rusage_poll(lua_State *L) {
  int n, i, k = 0, ready;
  struct pollfd *pfds;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = 0;
  while (lua_rawgeti(L, 1, n + 1), !lua_isnil(L, -1)) { lua_pop(L, 1); n++; }
  lua_pop(L, 1);
  pfds = lua_newuserdata(L, sizeof *pfds * (size_t)(n > 0 ? n : 1));  /* freed by the GC */
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    pfds[i].fd = (int)lua_tointeger(L, -1);
    pfds[i].events = POLLIN;
    pfds[i].revents = 0;
    lua_pop(L, 1);
  }
  ready = poll(pfds, (nfds_t)n, (int)luaL_optinteger(L, 2, -1));
  lua_createtable(L, ready > 0 ? ready : 0, 0);
  for (i = 0; i < n && ready > 0; i++) {
    if (pfds[i].revents == 0) continue;
    lua_pushinteger(L, i + 1);
    lua_rawseti(L, -2, ++k);
  }
  return 1;
}

static const luaL_Reg rusage_functions[] = {
  {"cpu", rusage_cpu},
  {"maxrss", rusage_maxrss},
  {"rss", rusage_rss},
  {"heap", rusage_heap},
  {"nofile", rusage_nofile},
  {"fds", rusage_fds},
  {"poll", rusage_poll},
  {NULL, NULL}
};

__attribute__((visibility("default"))) int luaopen_rusage(lua_State *L) {
  const luaL_Reg *f;
  lua_newtable(L);
  for (f = rusage_functions; f->name != NULL; f++) {  /* no luaL_newlib: the 5.1 API lacks it */
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
  return 1;
}
