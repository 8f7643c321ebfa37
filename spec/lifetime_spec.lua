-- luacheck: ignore 512 (loops that run once and break or close are the point here)
-- Lifetimes: queues collected, closed or abandoned at awkward moments must neither crash nor
-- leak (this suite also runs under ASan and valgrind: make asan, make valgrind).
local util = require("spec.support.util")

local lfs = require("lfs")  -- busted's own dependency

-- This process's open descriptors, listed by this process (the directory handle counts, always
-- one). Not by a child through io.popen: popen closes its copy of the pipe's write end only after
-- the child started, so `ls /proc/PID/fd` saw that end or not, by chance (+/-1 in CI).
local function open_fds()
  local n = 0
  for name in lfs.dir("/proc/self/fd") do
    if name ~= "." and name ~= ".." then n = n + 1 end
  end
  return n
end

local function full_gc()
  collectgarbage()
  collectgarbage()
end

describe("queue lifetimes", function()
  local srv, client

  local function new_client(extra) return util.client(srv, extra) end

  local function server_queues()
    local ids = {}
    for _, q in ipairs(srv:control("GET", "/test/queues").queues) do ids[q.id] = q end
    return ids
  end

  -- The collector and a driven client's close never wait: a queue's DELETE goes out the next time
  -- the client is driven. Drive it (bounded) until the server's queue `id` is gone.
  local function deleted(c, id)
    local deadline = util.now() + 5
    while server_queues()[id] and util.now() < deadline do c:step(0.05) end
    return server_queues()[id] == nil
  end

  local function send(content)
    return srv:send("alice", { type = "stream", to = "Denmark", topic = "life", content = content })
  end

  srv = util.use_devserver{ heartbeat = 30 }
  before_each(function()
    client = new_client()
  end)

  it("a queue collected by the GC while its long-poll is in flight deletes itself", function()
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    local id = q.id
    assert.are.same({}, q:step(0))  -- starts the long-poll and returns at once
    assert.is_not_nil(q:_state()._busy)
    assert.is_not_nil(server_queues()[id])
    q = nil  -- luacheck: ignore 311
    full_gc()
    assert.is_true(deleted(client, id), "__gc did not delete the server's queue")
  end)

  it("closing while a long-poll is in flight aborts it and deletes the queue", function()
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    q:step(0)
    assert.is_not_nil(q:_state()._busy)
    assert.is_true(q:close())
    assert.is_true(q.closed)
    assert.is_nil(q:_state()._busy)
    assert.is_true(deleted(client, q.id))  -- a stepped client's close sends its DELETE in the background
  end)

  it("a queue closed inside its own iterator ends the loop", function()
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    send("three")
    send("four")
    local seen = {}
    for ev in q:each() do
      seen[#seen + 1] = ev.message.content
      q:close()
    end
    assert.are.same({ "three" }, seen)  -- the loop ends after the first event
    assert.is_true(q.closed)
    assert.has_error(function() q:each() end, "zulip: queue is closed")
  end)

  it("a queue closed from on_reset ends each() and step()", function()
    local q = client:queue{ event_types = { "message" } }
    local resets = 0
    for _ in q:each{ on_reset = function(qq) resets = resets + 1; qq:close() end } do
      error("no event may come after on_reset closed the queue")
    end
    assert.are.equal(1, resets)
    assert.is_true(q.closed)

    local q2 = client:queue{ event_types = { "message" }, on_reset = function(qq) qq:close() end }
    assert.are.same({}, q2:step(2))
    assert.is_true(q2.closed)
    assert.has_error(function() q2:step(0) end, "zulip: queue is closed")
  end)

  it("a queue closed from on_retry ends each() and step()", function()
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    srv:control("POST", "/test/fault", { kind = "status500", path = "/api/v1/events", count = 5 })
    local retries = 0
    for _ in q:each{ on_retry = function() retries = retries + 1; q:close() end, sleep = function() end } do
      error("no event may come after on_retry closed the queue")
    end
    assert.are.equal(1, retries)
    assert.is_true(q.closed)

    local q2
    q2 = client:queue{ event_types = { "message" }, on_retry = function() q2:close() end }
    assert(q2:register())
    srv:control("POST", "/test/fault", { kind = "status500", path = "/api/v1/events", count = 5 })
    local events, msg = q2:step(2)
    assert.are.same({}, events, msg)
    assert.is_true(q2.closed)
  end)

  it("a queue closed from on_log (the debug trace, a retry warning) does not crash", function()
    local q
    local c = new_client{ debug = true, on_log = function() if q then q:close() end end }
    q = c:queue{ event_types = { "message" } }
    local ok, err = pcall(q.register, q)
    assert.is_true(ok, tostring(err))
    assert.is_true(q.closed)
    local q2
    local c2 = new_client{ on_log = function(level) if level == "warn" and q2 then q2:close() end end }
    q2 = c2:queue{ event_types = { "message" } }
    assert(q2:register())
    srv:control("POST", "/test/fault", { kind = "status500", path = "/api/v1/events" })
    assert.are.same({}, q2:step(2))
    assert.is_true(q2.closed)
  end)

  it("every method but close raises once a queue is closed; close stays idempotent", function()
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    local id = q.id
    assert.is_true(q:close())
    assert.is_true(q:close())
    for _, call in ipairs{
      function() q:register() end, function() q:get_events() end, function() q:each() end,
      function() q:step(0) end, function() q:timeout() end, function() q:events() end,
      function() q:pollfd() end,
    } do
      assert.has_error(call)
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.matches("queue is closed", err)
    end
    assert.are.equal(id, q.id)  -- fields stay readable
    assert.is_true(q.closed)
    assert.are.equal("zulip.Queue (" .. id .. ", closed)", tostring(q))
    local unregistered = client:queue{}
    unregistered:close()
    assert.are.equal("zulip.Queue (not registered, closed)", tostring(unregistered))
  end)

  it("an error raised inside the loop body leaves the queue usable", function()
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    send("boom")
    local ok, err = pcall(function()
      for ev in q:each() do error("body failed on " .. ev.message.content, 0) end
    end)
    assert.is_false(ok)
    assert.are.equal("body failed on boom", err)
    send("after")
    local contents = {}
    for ev in q:each() do
      contents[#contents + 1] = ev.message.content
      if ev.message.content == "after" then break end
    end
    -- 5.4 redelivers the event whose body raised; the others count it as handled
    assert.are.equal("after", contents[#contents])
    assert.is_true(#contents == 1 or contents[1] == "boom")
    q:close()
  end)

  it("a coroutine that abandons an iterator leaks nothing and the queue still closes", function()
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    send("c1")
    local co = coroutine.wrap(function()
      for ev in q:each() do coroutine.yield(ev.message.content) end
    end)
    assert.are.equal("c1", co())
    co = nil  -- luacheck: ignore 311
    full_gc()
    assert.is_false(q.closed)
    send("c2")
    local events = assert(q:get_events())
    assert.are.equal("c2", events[#events].message.content)
    assert.is_true(q:close())

    -- both the coroutine and the queue dropped together: __gc closes the queue
    local q2 = client:queue{ event_types = { "message" } }
    assert(q2:register())
    local id = q2.id
    send("c3")
    local co2 = coroutine.create(function()
      for ev in q2:each() do coroutine.yield(ev) end
    end)
    assert.is_true((coroutine.resume(co2)))
    q2, co2 = nil, nil  -- luacheck: ignore 311
    full_gc()
    assert.is_true(deleted(client, id))
  end)

  it("a queue outlives the client that made it (the session is reference-counted)", function()
    local c = new_client()
    local q = c:queue{ event_types = { "message" } }
    assert(q:register())
    c = nil  -- luacheck: ignore 311
    full_gc()
    send("orphan")
    local events, msg = q:get_events()
    assert.is_table(events, msg)
    assert.are.equal("orphan", events[1] and events[1].message.content)
    assert.matches("^zulip%.Client", tostring(client))
    assert.is_true(q:close())
  end)

  it("thousands of create/close cycles leak no file descriptors", function()
    srv:control("POST", "/test/config", { rate_limit = require("cjson").null })
    -- counted with the client's timer in the same state both times: armed by a new queue (its
    -- wake-up), as the loops below leave it. libkqueue, the kqueue core on Linux, holds a timerfd
    -- while a timer is armed; the other cores' fds do not depend on it
    client:queue{ event_types = { "message" } }:close()
    full_gc()
    local before = open_fds()
    for _ = 1, 2000 do
      local q = client:queue{ event_types = { "message" } }
      q:close()
    end
    for _ = 1, 100 do  -- registered, polled, closed (DELETE)
      local q = client:queue{ event_types = { "message" } }
      assert(q:register())
      q:step(0)
      q:close()
    end
    for _ = 1, 200 do  -- clients and queues only dropped: the GC closes them
      local c = new_client()
      assert(c:request("GET", "users/me"))
      local q = c:queue{}
      q:pollfd()
    end
    full_gc()
    assert.are.equal(before, open_fds())
  end)

  it("a blocking q:close() returns when its DELETE is answered, not at the client's timeout", function()
    local c = new_client{ timeout = 20 }
    local q = c:queue{}
    assert(q:register())
    local id = q.id
    local t = util.now()
    q:close()
    local took = util.now() - t
    assert.is_nil(server_queues()[id])  -- deleted before close returned
    -- a close that waited for its deadline takes the whole 20 s: the DELETE's reply was not seen
    assert.is_true(took < 10, ("q:close() took %.1f s"):format(took))
    c:close()
  end)
end)

-- A host that closes its Lua state and goes on (a C program with a state per task, an editor that
-- reloads a plugin) must not lose the libraries zulip.core brought: libcurl's resolver thread may
-- still be looking up a name for a cancelled request, and libkqueue (the kqueue core off macOS)
-- runs a thread of its own. Lua unloads a C module with its state; zulip.core stays loaded.
describe("a Lua state that closes", function()
  it("leaves zulip.core and libcurl loaded, and the next state loads zulip.core again", function()
    local v = os.getenv("ZULIP_TEST_LUA") or "5.4"
    local pkg = v == "luajit" and "luajit" or ("lua" .. v)
    local dir = util.tmpdir()
    util.write_file(dir .. "/host.c", [[
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>
static int mapped(const char *name) {
  char line[1024];
  int n = 0;
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f)) if (strstr(line, name)) n++;
  fclose(f);
  return n;
}
int main(int argc, char **argv) {
  int round;
  for (round = 1; round <= 3; round++) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (argc < 2 || luaL_dostring(L, argv[1])) {
      printf("error: %s\n", argc < 2 ? "no chunk" : lua_tostring(L, -1));
      return 1;
    }
    lua_close(L);
    printf("round %d closed: core %d libcurl %d\n", round, mapped("/zulip/core.so"), mapped("libcurl"));
  }
  return 0;
}
]])
    local build = "cc -o " .. util.shquote(dir .. "/host") .. " " .. util.shquote(dir .. "/host.c")
      .. " $(pkg-config --cflags --libs " .. pkg .. ") 2>&1"
    local p = assert(io.popen(build))
    local out = p:read("*a")
    assert.is_truthy(p:close(), "cc: " .. out)
    -- a client with a request in flight (to a port that refuses) when the state closes
    local chunk = [[
      local zulip = require("zulip")
      local c = zulip.client{ site = "http://127.0.0.1:1", email = "bot@example.com", api_key = ("k"):rep(32),
                              on_log = function() end }
      c:request("GET", "users/me", nil, function() end)
      c:step(0)
    ]]
    local cmd = ("cd %s && LUA_PATH=%s LUA_CPATH=%s timeout 30 %s %s 2>&1"):format(util.shquote(util.root),
      util.shquote(package.path), util.shquote(package.cpath), util.shquote(dir .. "/host"), util.shquote(chunk))
    p = assert(io.popen(cmd))
    out = p:read("*a")
    local ok = p:close()
    os.execute("rm -rf " .. util.shquote(dir))
    assert.is_truthy(ok, out)
    for round = 1, 3 do
      local core, curl = out:match("round " .. round .. " closed: core (%-?%d+) libcurl (%-?%d+)\n")
      assert.is_truthy(core, out)
      assert.is_true(tonumber(core) > 0 and tonumber(curl) > 0, out)
    end
  end)
end)
