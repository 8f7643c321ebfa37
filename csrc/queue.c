/* queue.c: zulip.Queue. The mechanism of one queue: start a request, drive it without blocking,
 * hand back the decoded reply. What to request and what a reply means (register, poll, retry,
 * re-register) is policy and lives in lua/zulip/queue.lua, which adds its methods to the same
 * methods table. Fields such as q.id live in the userdata's user value, a plain Lua table that
 * only the Lua layer writes (through q:_state()); from outside they are read-only. */
#include "queue.h"
#include "compat.h"
#include "http.h"
#include "json.h"
#include "session.h"

#include <stdio.h>
#include <string.h>

#define ZULIP_CLOSE_TIMEOUT_MS 5000L

typedef struct zulip_queue {
  zhttp_conn conn;
  int closed;
} zulip_queue;

static zulip_queue *zulip_queue_check(lua_State *L) {
  zulip_queue *q = luaL_checkudata(L, 1, ZULIP_QUEUE_MT);
  if (q->closed) luaL_error(L, "queue is closed");
  return q;
}

static long zulip_queue_ms(lua_State *L, int idx, const char *what) {
  double s = luaL_checknumber(L, idx);
  if (!(s >= 0 && s <= 86400.0 * 365)) luaL_error(L, "bad %s: %f seconds", what, s);
  return (long)(s * 1000 + 0.5);
}

int zulip_queue_new(lua_State *L) {
  zhttp_session *s = zulip_session_check(L, 1);
  zulip_queue *q = zulip_newuserdata(L, sizeof *q);
  memset(q, 0, sizeof *q);
  q->closed = 1;  /* until the transport exists, so __gc has nothing to undo */
  q->conn.epfd = q->conn.tfd = -1;
  luaL_getmetatable(L, ZULIP_QUEUE_MT);
  lua_setmetatable(L, -2);
  lua_newtable(L);
  zulip_setuservalue(L, -2);
  if (zhttp_conn_init(&q->conn, s) != 0) {  /* no position: the message says it all */
    lua_pushfstring(L, "zulip: cannot make a queue: %s", q->conn.errbuf);
    return lua_error(L);
  }
  q->closed = 0;
  return 1;
}

/* q:_start(method, path_and_query, body|nil, timeout_seconds) */
static int zulip_queue_start(lua_State *L) {
  zulip_queue *q = zulip_queue_check(L);
  const char *method = luaL_checkstring(L, 2);
  const char *path = luaL_checkstring(L, 3);
  size_t blen = 0;
  const char *body = luaL_optlstring(L, 4, NULL, &blen);
  long timeout = zulip_queue_ms(L, 5, "timeout");
  if (zhttp_start(&q->conn, method, path, body, blen, timeout) != 0)
    return luaL_error(L, "queue: cannot start request: %s", q->conn.errbuf);
  return 0;
}

/* q:_drive(wait_seconds|nil) -> true when the transfer has ended (nil: wait for it) */
static int zulip_queue_drive(lua_State *L) {
  zulip_queue *q = zulip_queue_check(L);
  long wait = lua_isnoneornil(L, 2) ? -1 : zulip_queue_ms(L, 2, "wait");
  lua_pushboolean(L, zhttp_drive(&q->conn, wait) == 1);
  return 1;
}

/* q:_result() -> nil                                   while the transfer runs or none was started
 *             -> status, value|nil, retry_after|nil, json_error|nil     when an HTTP reply came
 *             -> false, code, message                  when the transfer failed */
static int zulip_queue_result(lua_State *L) {
  zulip_queue *q = zulip_queue_check(L);
  zhttp_conn *c = &q->conn;
  if (c->state != ZHTTP_DONE) return 0;
  zhttp_reset_result(c);
  if (c->fail != NULL) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, c->fail);
    lua_pushstring(L, c->errbuf[0] ? c->errbuf : "the request failed");
    return 3;
  }
  lua_pushinteger(L, (lua_Integer)c->reply.status);
  if (c->reply.body_len > 0) {
    char err[160];
    size_t pos = 0;
    if (!zulip_json_decode(L, c->reply.body, c->reply.body_len, ZULIP_JSON_MAXDEPTH, err, sizeof err, &pos)) {
      lua_pushnil(L);
      if (c->reply.retry_after >= 0) lua_pushnumber(L, c->reply.retry_after); else lua_pushnil(L);
      lua_pushstring(L, err);
      return 4;
    }
  } else {
    lua_pushnil(L);
  }
  if (c->reply.retry_after >= 0) lua_pushnumber(L, c->reply.retry_after); else lua_pushnil(L);
  return 3;
}

/* q:_trace() -> the debug trace of the last transfer (scrubbed lines, see http.h), or nil; once */
static int zulip_queue_trace(lua_State *L) {
  zulip_queue *q = zulip_queue_check(L);
  size_t n;
  const char *t = zhttp_trace(&q->conn, &n);
  if (t == NULL) return 0;
  lua_pushlstring(L, t, n);
  q->conn.trace_len = 0;
  return 1;
}

/* q:_body() -> the raw text of the last reply (for error messages: a proxy's HTML page) */
static int zulip_queue_body(lua_State *L) {
  zulip_queue *q = zulip_queue_check(L);
  size_t n = q->conn.reply.body_len;
  lua_pushlstring(L, q->conn.reply.body ? q->conn.reply.body : "", n);
  return 1;
}

static int zulip_queue_busy(lua_State *L) {
  zulip_queue *q = zulip_queue_check(L);
  lua_pushboolean(L, q->conn.state == ZHTTP_BUSY);
  return 1;
}

static int zulip_queue_abort(lua_State *L) {
  zhttp_abort(&zulip_queue_check(L)->conn);
  return 0;
}

/** Returns the file descriptor that becomes readable when the queue has work to do. */
static int zulip_queue_pollfd(lua_State *L) {
  lua_pushinteger(L, zulip_queue_check(L)->conn.epfd);
  return 1;
}

/* q:_timeout() -> seconds until the transport wants a call, or nil */
static int zulip_queue_timeout(lua_State *L) {
  long ms = zhttp_timeout_ms(&zulip_queue_check(L)->conn);
  if (ms < 0) return 0;
  lua_pushnumber(L, (double)ms / 1000.0);
  return 1;
}

/* q:_alarm(seconds|nil): make pollfd readable after seconds while no transfer runs (the retry
 * backoff of q:step, or "call step now" at 0), so that the fd alone tells a loop when to step;
 * nil cancels. Rounded up to whole milliseconds, so it never fires before the time asked. */
static int zulip_queue_alarm(lua_State *L) {
  zulip_queue *q = zulip_queue_check(L);
  long ms = -1;
  if (!lua_isnoneornil(L, 2)) {
    double s = luaL_checknumber(L, 2);
    if (!(s >= 0 && s <= 86400.0 * 365)) return luaL_error(L, "bad alarm: %f seconds", s);
    ms = (long)(s * 1000);
    if ((double)ms < s * 1000) ms++;
  }
  zhttp_alarm(&q->conn, ms);
  return 0;
}

static int zulip_queue_state(lua_State *L) {
  luaL_checkudata(L, 1, ZULIP_QUEUE_MT);
  zulip_getuservalue(L, 1);
  return 1;
}

static int zulip_queue_is_closed(lua_State *L) {
  zulip_queue *q = luaL_checkudata(L, 1, ZULIP_QUEUE_MT);
  lua_pushboolean(L, q->closed);
  return 1;
}

/* DELETE /events for a registered queue, bounded in time; failures are ignored: the server
 * collects a queue nobody polls anyway, and close must always release the transport. */
static void zulip_queue_delete_remote(zulip_queue *q, const char *id) {
  char *esc = curl_easy_escape(q->conn.easy, id, 0);
  static const char prefix[] = "/api/v1/events?queue_id=";
  char path[sizeof prefix + 256];
  long long deadline;
  if (esc == NULL) return;
  if (strlen(esc) < 256) {
    memcpy(path, prefix, sizeof prefix - 1);
    strcpy(path + sizeof prefix - 1, esc);
    if (zhttp_start(&q->conn, "DELETE", path, NULL, 0, ZULIP_CLOSE_TIMEOUT_MS) == 0) {
      deadline = zhttp_now_ms() + ZULIP_CLOSE_TIMEOUT_MS + 1000;
      while (zhttp_drive(&q->conn, 100) != 1 && zhttp_now_ms() < deadline) {}
    }
  }
  curl_free(esc);
}

/* q:close(): also __gc and __close. Idempotent. */
static int zulip_queue_close(lua_State *L) {
  zulip_queue *q = luaL_checkudata(L, 1, ZULIP_QUEUE_MT);
  if (!q->closed) {
    q->closed = 1;  /* first, so nothing below can re-enter */
    zhttp_abort(&q->conn);
    zulip_getuservalue(L, 1);
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "id");
      if (lua_type(L, -1) == LUA_TSTRING) zulip_queue_delete_remote(q, lua_tostring(L, -1));
      lua_pop(L, 1);
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "closed");
    }
    lua_pop(L, 1);
    zhttp_conn_free(&q->conn);
  }
  lua_pushboolean(L, 1);
  return 1;
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
  return luaL_error(L, "zulip.Queue fields are read-only (tried to set '%s')",
                    lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : luaL_typename(L, 2));
}

static int zulip_queue_tostring(lua_State *L) {
  zulip_queue *q = luaL_checkudata(L, 1, ZULIP_QUEUE_MT);
  const char *id = NULL;
  zulip_getuservalue(L, 1);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "id");
    id = lua_tostring(L, -1);
  }
  lua_pushfstring(L, "zulip.Queue (%s%s)", id ? id : "not registered", q->closed ? ", closed" : "");
  return 1;
}

static const luaL_Reg zulip_queue_methods[] = {
  {"close", zulip_queue_close},
  {"pollfd", zulip_queue_pollfd},
  {"_start", zulip_queue_start},
  {"_drive", zulip_queue_drive},
  {"_result", zulip_queue_result},
  {"_body", zulip_queue_body},
  {"_trace", zulip_queue_trace},
  {"_busy", zulip_queue_busy},
  {"_abort", zulip_queue_abort},
  {"_timeout", zulip_queue_timeout},
  {"_alarm", zulip_queue_alarm},
  {"_state", zulip_queue_state},
  {"_closed", zulip_queue_is_closed},
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
  lua_pushcfunction(L, zulip_queue_close);
  lua_setfield(L, -3, "__gc");
  lua_pushcfunction(L, zulip_queue_close);
  lua_setfield(L, -3, "__close");
  lua_pushcfunction(L, zulip_queue_tostring);
  lua_setfield(L, -3, "__tostring");
  lua_remove(L, -2);                        /* methods */
}
