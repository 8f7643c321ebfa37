-- zulip.uv on a plain luv loop (require("luv")), and with a stand-in `vim` global to check that
-- it picks vim.uv, else vim.loop, and schedules callbacks the way Neovim needs. The real
-- Neovim run is spec/nvim_spec.lua.
local zulip = require("zulip")
local zuv = require("zulip.uv")
local uv = require("luv")
local util = require("spec.support.util")

-- Runs the luv loop until f() is true or `secs` pass; a 20 ms ticker re-checks f.
local function run_until(secs, f)
  local deadline = util.now() + secs
  local tick = uv.new_timer()
  tick:start(20, 20, function() end)
  while not f() and util.now() < deadline do uv.run("once") end
  tick:close()
  uv.run("nowait")  -- let libuv finish closing handles
  return f()
end

describe("zulip.uv", function()
  local srv, client

  local function send(content, delay)
    util.send_later(srv, delay or 0.3, "alice", { type = "stream", to = "Denmark", topic = "uv", content = content })
  end

  -- the first message after `delay` seconds, the second `gap` seconds later, from one process so
  -- that they cannot swap
  local function send_two(first, second, delay, gap)
    util.later(srv, delay, { messages = { contents = { first, second }, spread = 2 * gap,
                                          to = "Denmark", topic = "uv" } })
  end

  teardown(function() uv.run("nowait") end)  -- registered first: it runs before the server stops
  srv = util.use_devserver{ args = { "--rate-limit", "0" }, config = { heartbeat = 60 } }
  before_each(function()
    client = util.client(srv)
  end)

  it("drives a queue from luv: registers, receives, wakes only on its fd; stop() leaves the queue open", function()
    local q = client:queue{ event_types = { "message" } }
    local got, errs = {}, {}
    local h = zuv.watch(q, function(ev, qq)
      assert.are.equal(q, qq)
      got[#got + 1] = ev.message.content
    end, function(msg) errs[#errs + 1] = msg end)
    assert.is_true(h:is_active())
    assert.is_true(run_until(5, function() return q.id ~= nil end))
    send_two("one", "two", 0.3, 0.6)
    assert.is_true(run_until(10, function() return #got == 2 end))
    assert.are.same({ "one", "two" }, got)
    assert.are.same({}, errs)
    -- ~1 s of mostly waiting: a handful of wake-ups, not a busy loop
    assert.is_true(h.wakeups < 40, h.wakeups .. " wake-ups")
    assert.is_true(h.steps <= h.wakeups + 1)
    assert.is_true(h:stop())
    assert.is_true(h:stop())  -- idempotent
    assert.is_false(h:is_active())
    assert.is_true(h._kick:is_closing())
    assert.is_nil(h._poller)  -- its last watcher gone, the client's shared poll handle closes
    uv.run("nowait")
    assert.is_false(q.closed)  -- the queue is the caller's
    assert.are.same({}, assert(q:step(0)))
    q:close()
  end)

  it("recovers from a 5xx through its backoff, woken by the fd alone", function()
    local retried = {}
    local q = client:queue{ event_types = { "message" }, backoff = { base = 0.4, factor = 1, cap = 0.4 },
                            random = function() return 1 end,
                            on_retry = function() retried[#retried + 1] = util.now() end }
    assert(q:register())
    srv:control("POST", "/test/fault", { kind = "status500", path = "/api/v1/events", count = 2 })
    local got, errs = {}, {}
    local h = zuv.watch(q, function(ev) got[#got + 1] = { ev.message.content, util.now() } end,
                        function(msg) errs[#errs + 1] = msg end)
    send("after the faults", 0.2)
    assert.is_true(run_until(10, function() return #got == 1 end))
    assert.are.equal("after the faults", got[1][1])
    assert.are.equal(2, #retried)
    assert.is_true(got[1][2] - retried[2] >= 0.39, "retried before its backoff ended")
    assert.are.same({}, errs)
    h:stop()
    q:close()
    uv.run("nowait")
  end)

  it("reports an error raised by on_event and goes on with the next event", function()
    local q = client:queue{ event_types = { "message" } }
    local got, errs = {}, {}
    local h = zuv.watch(q, function(ev)
      got[#got + 1] = ev.message.content
      if ev.message.content == "boom" then error("handler failed") end
    end, function(msg, err) errs[#errs + 1] = { msg, err } end)
    assert.is_true(run_until(5, function() return q.id ~= nil end))
    send_two("boom", "after", 0.2, 0.4)
    assert.is_true(run_until(10, function() return #got == 2 end))
    assert.are.same({ "boom", "after" }, got)
    assert.are.equal(1, #errs)
    assert.are.equal("CALLBACK", errs[1][2].code)
    assert.matches("on_event raised: .*handler failed", errs[1][1])
    assert.is_true(h:is_active())
    h:stop()
    q:close()
    uv.run("nowait")
  end)

  it("stops on a fatal error and reports it", function()
    local dead = srv.users.deactivated
    local c = zulip.client{ site = srv.site, email = dead.email, api_key = dead.api_key }
    local q = c:queue{}
    local errs = {}
    local h = zuv.watch(q, function() error("no events expected") end,
                        function(msg, err) errs[#errs + 1] = { msg, err } end)
    assert.is_true(run_until(5, function() return #errs > 0 end))
    assert.are.equal(1, #errs)
    assert.are.equal("UNAUTHORIZED", errs[1][2].code)
    assert.matches("UNAUTHORIZED", errs[1][1])
    assert.is_false(h:is_active())
    assert.are.equal("UNAUTHORIZED", q.last_error.code)
    q:close()
  end)

  it("stops at once when on_event closes the queue", function()
    local q = client:queue{ event_types = { "message" } }
    local n = 0
    local h = zuv.watch(q, function(_, qq) n = n + 1; qq:close() end)
    assert.is_true(run_until(5, function() return q.id ~= nil end))
    send("bye", 0.2)
    assert.is_true(run_until(10, function() return not h:is_active() end))
    assert.are.equal(1, n)
    assert.is_true(q.closed)
    uv.run("nowait")
  end)

  it("inside Neovim uses vim.uv, else vim.loop, and runs callbacks through vim.schedule", function()
    local scheduled = {}
    local function fake_vim(fields)
      local v = { schedule = function(f) scheduled[#scheduled + 1] = f end, notify = function() end }
      for k, x in pairs(fields) do v[k] = x end
      return v
    end
    local function drain()
      local list = scheduled
      scheduled = {}
      for _, f in ipairs(list) do f() end
      return true
    end
    local saved = rawget(_G, "vim")
    local ok, err = pcall(function()
      for _, case in ipairs{ { loop = uv }, { uv = uv, loop = {} } } do  -- 0.7-0.9, then 0.10+
        rawset(_G, "vim", fake_vim(case))
        local q = client:queue{ event_types = { "message" } }
        local got = {}
        local h = zuv.watch(q, function(ev) got[#got + 1] = ev.message.content end)
        assert.is_true(run_until(5, function() return q.id ~= nil end))
        send("scheduled", 0.2)
        assert.is_true(run_until(10, function() return #scheduled > 0 end))
        assert.are.same({}, got)  -- not from the luv callback itself ...
        drain()
        assert.are.same({ "scheduled" }, got)  -- ... but when the editor runs its scheduled work
        h:stop()
        q:close()
        uv.run("nowait")
      end
    end)
    rawset(_G, "vim", saved)
    assert(ok, err)
  end)

  it("checks its arguments", function()
    local q = client:queue{}
    assert.has_error(function() zuv.watch({}, function() end) end, "zulip.uv: watch expects a client or a zulip.Queue")
    assert.has_error(function() zuv.watch(q, nil) end, "zulip.uv: on_event must be a function")
    assert.has_error(function() zuv.watch(q, print, 5) end, "zulip.uv: on_error must be a function")
    assert.has_error(function() zuv.watch(q, print, nil, { schedule = 1 }) end,
      "zulip.uv: opts.schedule must be a function or false")
    q:close()
    assert.has_error(function() zuv.watch(q, print) end, "zulip.uv: queue is closed")
  end)
end)
