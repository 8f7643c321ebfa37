/* reply_fuzz.c: libFuzzer target for everything a hostile server's reply goes through: libcurl
 * reading it off a real socket through our engine (csrc/engine.c, xfer.c: the callbacks that
 * count headers and body against max_reply_bytes, Retry-After), the debug trace and its
 * scrubbing, the JSON decoder, and the Lua layer that classifies the outcome (zulip.outcome, the
 * register/poll handling of zulip.queue, the request policy of zulip.engine).
 *
 * A server thread in this process listens on 127.0.0.1; for each input it accepts one connection,
 * writes the input's bytes, half-closes, and drains the request until the client hangs up. The
 * main thread makes the request through the public Lua API on a Lua state kept across runs, so
 * nothing here reaches into private structures. Every transfer ends by itself (the server's EOF
 * ends any reply), so runs are fast and the same bytes always take the same path.
 *
 * Input: byte 0 chooses what the client does, the rest is what the server sends.
 *   bits 0-1  0: client:request("GET", "users/me")   1: q:register()
 *             2: q:get_events() on a resumed queue    3: client:request("POST", "messages", ...)
 *   bit 2     max_reply_bytes = 512 (else the 256 MiB default)
 *   bit 3     debug = true (the curl trace goes to on_log)
 * Checks: the call never raises; it returns a table or nil, msg, err with err.code a string and
 * msg == err.message; the API key (plain or inside the base64 credentials) appears in no message
 * and no logged line. */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef ZULIP_SRC_DIR
#error "ZULIP_SRC_DIR (the checkout, for lua/zulip/*.lua) must be defined by the build"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int luaopen_zulip_core(lua_State *L);

#define FUZZ_IO_TIMEOUT_MS 3000

/* MSG_NOSIGNAL is not everywhere (macOS has SO_NOSIGPIPE instead); SIGPIPE is ignored for the
 * whole process anyway (fuzz_init), so without it nothing changes */
#ifdef MSG_NOSIGNAL
#define ZFUZZ_NOSIGNAL MSG_NOSIGNAL
#else
#define ZFUZZ_NOSIGNAL 0
#endif

static const char fuzz_script[] =
  "local zulip = require('zulip')\n"
  "local KEY = 'fuzzkey0123456789ABCDEFGHIJKLMNOP'\n"
  "local EMAIL = 'fuzz@example.com'\n"
  "local B64 = 'ZnV6ekBleGFtcGxlLmNvbTpmdXp6a2V5MDEyMzQ1Njc4OUFCQ0RFRkdISUpLTE1OT1A='\n"
  "local FRAGMENTS = { KEY, B64, 'fuzzkey0123', 'mdXp6a2V5MDEy' }\n"
  "local echoed  -- the server sent something like the key itself: what it echoes is no leak\n"
  "local function clean(where, s)\n"
  "  if echoed or type(s) ~= 'string' then return end\n"
  "  for _, f in ipairs(FRAGMENTS) do\n"
  "    if s:find(f, 1, true) then error('the API key leaked into ' .. where .. ': ' .. s, 0) end\n"
  "  end\n"
  "end\n"
  "return function(port, mode, reply)\n"
  "  echoed = reply:find('fuzzkey', 1, true) or reply:find('ZnV6ekBl', 1, true)\n"
  "    or reply:find('mdXp6a2V5', 1, true)\n"
  "  local op = mode % 4\n"
  "  local lines = 0\n"
  "  local client = zulip.client{ site = 'http://127.0.0.1:' .. port, email = EMAIL, api_key = KEY,\n"
  "    timeout = 5, backoff = { base = 0, cap = 0 }, max_reply_bytes = (mode & 4) ~= 0 and 512 or nil, debug = (mode & 8) ~= 0,\n"
  "    on_log = function(level, msg, fields)\n"
  "      lines = lines + 1\n"
  "      clean('a ' .. tostring(level) .. ' log line', msg)\n"
  "      for _, v in pairs(fields or {}) do clean('log fields', v) end\n"
  "    end }\n"
  "  local r, msg, err, q\n"
  "  if op == 0 then\n"
  "    r, msg, err = client:request('GET', 'users/me')\n"
  "  elseif op == 3 then\n"
  "    r, msg, err = client:request('POST', 'messages', { type = 'stream', to = 'Denmark',\n"
  "      topic = 't', content = 'x' })\n"
  "  else\n"
  "    q = client:queue(op == 2 and { id = 'q1', last_event_id = 3 } or { event_types = { 'message' } })\n"
  "    if op == 1 then r, msg, err = q:register() else r, msg, err = q:get_events() end\n"
  "    q:_state().id = nil  -- no DELETE on close: this server answers once\n"
  "    clean('tostring(q)', tostring(q))\n"
  "    q:close()\n"
  "  end\n"
  "  client:close(0)\n"
  "  clean('tostring(client)', tostring(client))\n"
  "  if r == nil then\n"
  "    if type(msg) ~= 'string' or type(err) ~= 'table' or type(err.code) ~= 'string' then\n"
  "      error('a failure without msg and err.code: ' .. tostring(msg), 0)\n"
  "    end\n"
  "    if err.message ~= msg then error('msg differs from err.message', 0) end\n"
  "    clean('an error message', msg)\n"
  "    clean('tostring(err)', tostring(err))\n"
  "  elseif type(r) ~= 'table' then\n"
  "    error('a success that is not a table: ' .. type(r), 0)\n"
  "  end\n"
  "  return lines\n"
  "end\n";

/* ---- the one-connection-at-a-time server ---- */

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int listen_fd, port;
  int wake[2];           /* the main thread writes a byte when a run's client is done */
  const uint8_t *reply;  /* set by the main thread for one run */
  size_t reply_len;
  int job, done;         /* job: a run is waiting to be served; done: it was */
} srv = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, -1, 0, {-1, -1}, NULL, 0, 0, 0};

static int wait_fd(int fd, short events) {
  struct pollfd p;
  p.fd = fd;
  p.events = events;
  p.revents = 0;
  return poll(&p, 1, FUZZ_IO_TIMEOUT_MS) == 1;
}

/* Waits for the next connection of this run; -1 when the client is done (or never came). */
static int next_client(void) {
  struct pollfd p[2];
  char b;
  p[0].fd = srv.listen_fd;
  p[0].events = POLLIN;
  p[1].fd = srv.wake[0];
  p[1].events = POLLIN;
  p[0].revents = p[1].revents = 0;
  if (poll(p, 2, 10 * FUZZ_IO_TIMEOUT_MS) <= 0) return -1;
  if (p[1].revents) {
    if (read(srv.wake[0], &b, 1) < 0) { /* drained */ }
    return -1;
  }
  return accept(srv.listen_fd, NULL, NULL);
}

/* Every connection of a run gets the same bytes: a GET that the client retries (after a reply
 * that failed) connects again. */
static void serve_one(int fd, const uint8_t *reply, size_t len) {
  char sink[4096];
  size_t off = 0;
  while (off < len && wait_fd(fd, POLLOUT)) {
    ssize_t n = send(fd, reply + off, len - off, ZFUZZ_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) break;  /* the client stopped reading (max_reply_bytes) and hung up */
    off += (size_t)n;
  }
  shutdown(fd, SHUT_WR);
  /* drain the request until the client closes, so the close never turns into a reset */
  while (wait_fd(fd, POLLIN)) {
    ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) break;
  }
  close(fd);
}

static void *server_main(void *arg) {
  (void)arg;
  for (;;) {
    const uint8_t *reply;
    size_t len;
    pthread_mutex_lock(&srv.mu);
    while (!srv.job) pthread_cond_wait(&srv.cv, &srv.mu);
    reply = srv.reply;
    len = srv.reply_len;
    pthread_mutex_unlock(&srv.mu);
    for (;;) {
      int fd = next_client();
      if (fd < 0) break;
      serve_one(fd, reply, len);
    }
    pthread_mutex_lock(&srv.mu);
    srv.job = 0;
    srv.done = 1;
    pthread_cond_broadcast(&srv.cv);
    pthread_mutex_unlock(&srv.mu);
  }
  return NULL;
}

static void server_start(void) {
  struct sockaddr_in a;
  socklen_t alen = sizeof a;
  pthread_t t;
  int one = 1;
  srv.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  if (srv.listen_fd < 0) abort();
  (void)fcntl(srv.listen_fd, F_SETFD, FD_CLOEXEC);
  setsockopt(srv.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(srv.listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(srv.listen_fd, 8) != 0 ||
      getsockname(srv.listen_fd, (struct sockaddr *)&a, &alen) != 0)
    abort();
  srv.port = ntohs(a.sin_port);
  if (pipe(srv.wake) != 0) abort();
  if (pthread_create(&t, NULL, server_main, NULL) != 0) abort();
  pthread_detach(t);
}

/* ---- the client side ---- */

static lua_State *fuzz_L;
static int fuzz_run_ref = LUA_NOREF;
static unsigned long fuzz_runs;

static void fuzz_init(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL) abort();
  luaL_openlibs(L);
  signal(SIGPIPE, SIG_IGN);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_zulip_core);
  lua_setfield(L, -2, "zulip.core");
  lua_pop(L, 1);
  lua_pushstring(L, ZULIP_SRC_DIR "/lua/?.lua;" ZULIP_SRC_DIR "/lua/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  if (luaL_loadbuffer(L, fuzz_script, sizeof fuzz_script - 1, "=reply_fuzz") != 0 ||
      lua_pcall(L, 0, 1, 0) != 0) {
    fprintf(stderr, "reply_fuzz: %s\n", lua_tostring(L, -1));
    abort();
  }
  fuzz_run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  fuzz_L = L;
  server_start();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L;
  int rc;
  if (size < 1) return 0;
  if (fuzz_L == NULL) fuzz_init();
  L = fuzz_L;
  pthread_mutex_lock(&srv.mu);
  srv.reply = data + 1;
  srv.reply_len = size - 1;
  srv.done = 0;
  srv.job = 1;
  pthread_cond_broadcast(&srv.cv);
  pthread_mutex_unlock(&srv.mu);

  lua_rawgeti(L, LUA_REGISTRYINDEX, fuzz_run_ref);
  lua_pushinteger(L, srv.port);
  lua_pushinteger(L, data[0]);
  lua_pushlstring(L, (const char *)data + 1, size - 1);
  rc = lua_pcall(L, 3, 1, 0);
  if (rc != 0) {
    fprintf(stderr, "reply_fuzz: the client raised: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_settop(L, 0);
  if (write(srv.wake[1], "x", 1) != 1) abort();  /* the client is done: no more connections */

  pthread_mutex_lock(&srv.mu);
  while (!srv.done) pthread_cond_wait(&srv.cv, &srv.mu);
  pthread_mutex_unlock(&srv.mu);
  /* each run drops a client (a curl share) and a few tables: keep the heap small */
  if (++fuzz_runs % 64 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
