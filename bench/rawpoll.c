/* rawpoll.c: the floor of bench row 2 (build/bench/<LUA>/rawpoll.so), kept out of zulip.core: the
 * same long-poll as lua-zulip's, done the cheapest way C can do it. One blocking TCP socket kept
 * open, the request written with one send(2), the reply read into one buffer until its
 * Content-Length is in; no TLS, no gzip, no checks beyond the status, no decoding (the caller may
 * decode the body it returns, to price the decoder apart).
 *   c = rawpoll.connect(port, "Basic ...")   -> a connection to 127.0.0.1:port
 *   status, body = c:get(target)             -> one GET on it; raises on a broken reply
 *   c:close()
 */
#define _POSIX_C_SOURCE 200809L
#include <lua.h>
#include <lauxlib.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define RAWPOLL_MT "bench.rawpoll"

typedef struct rawpoll {
  int fd;
  char head[512];   /* "\r\nHost: ...\r\nAuthorization: ...\r\n\r\n" */
  char *buf;
  size_t cap;
} rawpoll;

static rawpoll *rawpoll_check(lua_State *L) {
  rawpoll *c = (rawpoll *)luaL_checkudata(L, 1, RAWPOLL_MT);
  if (c->fd < 0) luaL_error(L, "rawpoll: closed");
  return c;
}

static int rawpoll_connect(lua_State *L) {
  int port = (int)luaL_checkinteger(L, 1);
  const char *auth = luaL_checkstring(L, 2);
  rawpoll *c = (rawpoll *)lua_newuserdata(L, sizeof *c);
  struct sockaddr_in sa;
  int one = 1;
  c->fd = -1;
  c->buf = NULL;
  c->cap = 0;
  luaL_getmetatable(L, RAWPOLL_MT);
  lua_setmetatable(L, -2);
  if (snprintf(c->head, sizeof c->head, " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: %s\r\n"
               "User-Agent: rawpoll\r\n\r\n", auth) >= (int)sizeof c->head)
    return luaL_error(L, "rawpoll: authorization too long");
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0) return luaL_error(L, "rawpoll: socket: %s", strerror(errno));
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
    return luaL_error(L, "rawpoll: connect: %s", strerror(errno));
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return 1;
}

/* the end of the head (after "\r\n\r\n") in buf[0..n), or NULL */
static const char *rawpoll_head_end(const char *buf, size_t n) {
  size_t i;
  for (i = 3; i < n; i++)
    if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r') return buf + i + 1;
  return NULL;
}

static long rawpoll_content_length(const char *head, const char *end) {
  const char *p = head;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL) break;
    if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0) return strtol(p + 15, NULL, 10);
    p = eol + 1;
  }
  return -1;
}

static int rawpoll_get(lua_State *L) {
  rawpoll *c = rawpoll_check(L);
  size_t tl;
  const char *target = luaL_checklstring(L, 2, &tl);
  size_t hl = strlen(c->head), n = 0, need = 0;
  const char *body = NULL;
  char req[4096];
  int status;
  if (4 + tl + hl > sizeof req) return luaL_error(L, "rawpoll: target too long");
  memcpy(req, "GET ", 4);
  memcpy(req + 4, target, tl);
  memcpy(req + 4 + tl, c->head, hl);
  if (send(c->fd, req, 4 + tl + hl, 0) != (ssize_t)(4 + tl + hl)) return luaL_error(L, "rawpoll: send failed");
  for (;;) {
    ssize_t got;
    if (c->cap - n < 16384) {
      size_t cap = c->cap ? c->cap * 2 : 65536;
      char *b = (char *)realloc(c->buf, cap);
      if (b == NULL) return luaL_error(L, "rawpoll: out of memory");
      if (body != NULL) body = b + (body - c->buf);
      c->buf = b;
      c->cap = cap;
    }
    got = recv(c->fd, c->buf + n, c->cap - n, 0);
    if (got <= 0) return luaL_error(L, "rawpoll: the server closed the connection");
    n += (size_t)got;
    if (body == NULL && (body = rawpoll_head_end(c->buf, n)) != NULL) {
      long len = rawpoll_content_length(c->buf, body);
      if (len < 0) return luaL_error(L, "rawpoll: no Content-Length");
      need = (size_t)(body - c->buf) + (size_t)len;
    }
    if (body != NULL && n >= need) break;
  }
  if (n != need) return luaL_error(L, "rawpoll: bytes after the reply");
  status = (int)strtol(c->buf + 9, NULL, 10);
  lua_pushinteger(L, status);
  lua_pushlstring(L, body, need - (size_t)(body - c->buf));
  return 2;
}

static int rawpoll_close(lua_State *L) {
  rawpoll *c = (rawpoll *)luaL_checkudata(L, 1, RAWPOLL_MT);
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  free(c->buf);
  c->buf = NULL;
  c->cap = 0;
  return 0;
}

static const luaL_Reg rawpoll_methods[] = {
  {"get", rawpoll_get},
  {"close", rawpoll_close},
  {NULL, NULL}
};

__attribute__((visibility("default"))) int luaopen_rawpoll(lua_State *L) {
  const luaL_Reg *f;
  luaL_newmetatable(L, RAWPOLL_MT);
  lua_newtable(L);
  for (f = rawpoll_methods; f->name != NULL; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, rawpoll_close);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, rawpoll_connect);
  lua_setfield(L, -2, "connect");
  return 1;
}
