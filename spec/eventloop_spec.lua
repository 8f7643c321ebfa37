-- Queues in event loops: step(0) never blocks in any state, the pollfd alone says when to step
-- (including the end of a retry's backoff), zulip.step_all drives 100 and 1,000 queues at once
-- without busy polling or cross-talk, running out of fds gives a clear error, and the game-loop
-- example runs against the dev server.
local zulip = require("zulip")
local core = require("zulip.core")
local devserver = require("spec.support.devserver")
local util = require("spec.support.util")

-- Runs a Lua file in a fresh interpreter under `sh -c`, after the shell command `prefix` (for
-- ulimit and the environment). Returns the output and whether it exited 0.
local function run_file(path, prefix, args)
  local cmd = (prefix or "") .. " exec " .. util.lua_bin() .. " " .. util.shquote(path) .. " " .. (args or "")
  local p = assert(io.popen("sh -c " .. util.shquote(cmd) .. " 2>&1", "r"))
  local out = p:read("*a")
  local ok = p:close()
  return out, ok == true or ok == 0
end

local function run_script(code, prefix)
  local file = os.tmpname()
  util.write_file(file, code)
  local out, ok = run_file(file, prefix)
  os.remove(file)
  return out, ok
end

local function readable(q, secs)
  return #assert(core.wait({ q:pollfd() }, secs or 0)) == 1
end

-- How a loop that watches only the pollfd sleeps: on the fd alone with epoll and kqueue; with the
-- poll core (whose fd does not carry the sockets) also until q:timeout(), which is then at most
-- POLL_SLICE while a request is in flight. True when it woke for the queue.
local POLL_CORE = not core.single_fd  -- the poll core, or kqueue through libkqueue
local function sleep_on_fd(q, secs)
  local t = POLL_CORE and q:timeout() or nil
  if t and t < secs then
    core.wait({ q:pollfd() }, t)
    return true
  end
  return #assert(core.wait({ q:pollfd() }, secs)) == 1
end

-- Calls q:step(0) for `secs` seconds; returns how many calls fit and all events they returned.
-- Each call is timed by the loop itself: a call that blocked would leave the count tiny.
-- calls q:step(0) for `secs`; returns the number of calls, the events, and the longest call
local function count_steps(q, secs)
  local n, events, t0, longest = 0, {}, core.now(), 0
  repeat
    local t = core.now()
    local evs, msg = q:step(0)
    longest = math.max(longest, core.now() - t)
    assert(evs, msg)
    for _, ev in ipairs(evs) do events[#events + 1] = ev end
    n = n + 1
  until core.now() - t0 >= secs
  return n, events, longest
end

describe("event loops", function()
  local srv, bot, client

  local function queue_waiting(id)
    for _, info in ipairs(srv:control("GET", "/test/queues").queues) do
      if info.id == id then return info.waiting end
    end
    return false
  end

  -- steps (with short waits) until f() is true; fails after `secs`
  local function step_until(q, secs, f)
    local deadline = core.now() + secs
    while not f() do
      assert(core.now() < deadline, "condition not reached in " .. secs .. " s")
      assert(q:step(0.02))
    end
  end

  srv = util.use_devserver{ args = { "--rate-limit", "0" }, config = { heartbeat = 60 } }
  bot = devserver.users.bot
  before_each(function()
    client = util.client(srv)
  end)

  it("an idle queue whose connection the server closes does not wake its loop", function()
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    -- the reply comes whole, then the server drops the kept connection (as servers do with idle ones)
    srv:control("POST", "/test/fault", { kind = "close_after_reply", path = "/api/v1/events" })
    assert(q:get_events{ dont_block = true })
    assert.is_false(readable(q, 0.3))  -- a readable fd now would make a loop spin until the next poll
    assert.are.same({}, assert(q:get_events{ dont_block = true }))  -- which goes out on a new connection
    q:close()
  end)

  it("an idle kept connection the server resets wakes its loop at most once; the next request reconnects", function()
    -- between requests a kept connection's socket stays in the poller, parked with no events: a
    -- reset still reports there, and must take it out rather than leave the fd readable for ever
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    srv:control("POST", "/test/fault", { kind = "reset_after_reply", path = "/api/v1/events", seconds = 0.1 })
    assert(q:get_events{ dont_block = true })
    local t0, wakes = core.now(), 0
    while core.now() - t0 < 0.6 and wakes <= 5 do
      if #assert(core.wait({ client:pollfd() }, 0.6 - (core.now() - t0))) == 1 then
        wakes = wakes + 1
        assert.are.same({}, assert(client:step(0)))
      end
    end
    assert.is_true(wakes <= 1, ("%d wake-ups"):format(wakes))
    assert.are.same({}, assert(q:get_events{ dont_block = true }))
    q:close()
  end)

  it("a long-poll that outlives connect_timeout does not wake its loop until its reply", function()
    -- curl's connect timer stays armed after the connection is made: a request that outlives it
    -- gets the engine's own connect deadline, which goes once the request is out
    for _, fresh in ipairs{ false, true } do
      local c = zulip.client{ site = srv.site, email = bot.email, api_key = bot.api_key, connect_timeout = 0.5 }
      local q = c:queue{ event_types = { "message" } }
      assert(q:register())
      if fresh then  -- the poll opens a connection of its own: the register's is closed after its reply
        srv:control("POST", "/test/fault", { kind = "close_after_reply", path = "/api/v1/register" })
        q:close()
        q = c:queue{ event_types = { "message" } }
        assert(q:register())
      end
      assert.are.same({}, assert(q:step(0)))
      step_until(q, 5, function() return queue_waiting(q.id) end)
      local t0, wakes, late = core.now(), 0, 0
      while core.now() - t0 < 1.5 do  -- three connect timeouts
        if sleep_on_fd(q, 1.5 - (core.now() - t0)) then
          wakes = wakes + 1
          if core.now() - t0 > 0.3 then late = late + 1 end
          assert.are.same({}, assert(q:step(0)))
        end
      end
      -- a kept connection: no wake-up at all; a new one leaves curl's own connect-phase timers
      -- (happy eyeballs, 200 ms after connecting began), which curl does not disarm, but nothing
      -- at the connect timeout (0.5 s) or after
      if not POLL_CORE then
        assert.are.equal(0, late)
        if not fresh then assert.are.equal(0, wakes) end
      end
      local t = q:_loop_timeout(true)
      assert.is_true(t ~= nil and t > 50, tostring(t))  -- the long-poll's own deadline, nothing sooner
      assert.is_true(queue_waiting(q.id))
      -- and it still gets its event at once
      srv:control("POST", "/test/messages", { count = 1 })
      local got, deadline = {}, core.now() + 5
      while #got == 0 and core.now() < deadline do got = assert(q:step(0.05)) end
      assert.are.equal(1, #got)
      assert.are.equal("message", got[1].type)
      c:close()
    end
  end)

  it("step(0) never blocks: register in flight, long-poll pending, backoff pending, just finished", function()
    -- What is pending lasts 1.5 s or more in every state (the held register, the long-poll, the
    -- backoff, the next poll), so a step(0) that waited for any of it would take that long. The
    -- bound below is a sixth of the shortest wait: it tells waiting from not waiting even under
    -- valgrind, and says nothing about speed (the counts are printed for that, not asserted).
    local LONGEST = 0.25
    local counts, longest, _ = {}, {}, nil
    -- 1. the register is held 2 s by the server
    srv:control("POST", "/test/fault", { kind = "delay", seconds = 2, path = "/api/v1/register" })
    local retried = 0
    local q = client:queue{ event_types = { "message" }, backoff = { base = 1.5, factor = 1, cap = 1.5 },
                            random = function() return 1 end, on_retry = function() retried = retried + 1 end }
    counts.register, _, longest.register = count_steps(q, 0.3)
    assert.is_nil(q.id)  -- still registering: no call waited for it
    step_until(q, 5, function() return q.id ~= nil end)

    -- 2. the long-poll is pending on the server
    step_until(q, 5, function() return queue_waiting(q.id) end)
    local n, evs
    n, evs, longest.longpoll = count_steps(q, 0.5)
    counts.longpoll = math.floor(n * 0.6)  -- per 0.3 s
    assert.are.same({}, evs)
    assert.is_true(queue_waiting(q.id))

    -- 3. a 500 puts the queue into a 1.5 s backoff
    srv:control("POST", "/test/fault", { kind = "status500", path = "/api/v1/events" })
    srv:control("POST", "/test/event", { queue_id = q.id, event = { type = "restart", immediate = false } })
    step_until(q, 5, function() return retried == 1 end)  -- the event came, then the next poll got a 500
    counts.backoff, _, longest.backoff = count_steps(q, 0.3)
    local left = q:timeout()
    assert.is_true(left > 0.5 and left < 1.3, "backoff left: " .. tostring(left))

    -- 4. just finished: the reply with a message came in; the next step starts the next poll
    q:close()
    q = client:queue{ event_types = { "message" } }
    step_until(q, 5, function() return q.id ~= nil and queue_waiting(q.id) end)
    srv:send("alice", { type = "stream", to = "Denmark", topic = "loop", content = "fin" })
    local got
    local deadline = core.now() + 5
    repeat
      local e = assert(q:step(0))
      got = e[1]
    until got or core.now() > deadline
    assert.are.equal("fin", got.message.content)
    counts.finished, evs, longest.finished = count_steps(q, 0.3)
    assert.are.same({}, evs)
    step_until(q, 5, function() return queue_waiting(q.id) end)  -- the next poll went out

    print(("\n  step(0) calls per 0.3 s: register %d, long-poll %d, backoff %d, just finished %d (%.1f us/call)")
      :format(counts.register, counts.longpoll, counts.backoff, counts.finished, 0.3e6 / counts.longpoll))
    for state, t in pairs(longest) do
      assert.is_true(t < LONGEST, ("a step(0) took %.3f s while %s: it waited"):format(t, state))
      assert.is_true(counts[state] >= 2, state)  -- it kept being called, not one call that returned late
    end
    q:close()
  end)

  it("the pollfd alone says when to step: new queue, long-poll, end of a backoff, events taken", function()
    local retries = {}
    local q = client:queue{ event_types = { "message" }, backoff = { base = 0.8, factor = 1, cap = 0.8 },
                            random = function() return 1 end,
                            on_retry = function(info) retries[#retries + 1] = info.reason end }
    assert.is_true(readable(q))  -- a new queue has work: its register
    assert.are.equal(0, q:timeout())
    -- a loop that sleeps on nothing but the fd
    local wakeups, got, t_fail, t_retry = 0, {}, nil, nil
    local deadline = core.now() + 10
    srv:control("POST", "/test/fault", { kind = "status500", path = "/api/v1/events", count = 1 })
    while #got < 1 and core.now() < deadline do
      if sleep_on_fd(q, 5) then
        wakeups = wakeups + 1
        if t_fail and not t_retry then t_retry = core.now() end
        local evs = assert(q:step(0))
        if #retries == 1 and not t_fail then
          t_fail = core.now()
          assert.is_false(readable(q))  -- quiet during the backoff ...
          local left = q:timeout()
          assert.is_true(left > 0.6 and left <= 0.8, tostring(left))
          srv:send("alice", { type = "stream", to = "Denmark", topic = "fd", content = "one" })  -- waits for the retry
        end
        for _, ev in ipairs(evs) do got[#got + 1] = ev.message.content end
      end
    end
    assert.are.same({ "one" }, got)
    assert.are.same({ "HTTP" }, retries)
    -- ... and readable when it ends (the timerfd alarm), not before
    assert.is_true(t_retry - t_fail >= 0.79 and t_retry - t_fail < 1.2, tostring(t_retry - t_fail))
    -- the poll core: a wake-up per POLL_SLICE while requests are in flight, and no more
    local max_wakeups = POLL_CORE and math.ceil((core.now() - deadline + 10) / zulip.POLL_SLICE) + 40 or 40
    assert.is_true(wakeups < max_wakeups, wakeups .. " wake-ups")
    -- events were handed out: readable at once, so the next poll starts on the next step
    assert.is_true(readable(q))
    assert.are.same({}, assert(q:step(0)))
    assert.is_false(readable(q, 0.2))  -- the long-poll waits quietly
    local t = q:timeout()              -- nil, or the long-poll's far-off deadline
    if POLL_CORE then                  -- ... but capped, as the fd does not see the socket
      assert.are.equal(zulip.POLL_SLICE, t)
      t = q:_loop_timeout(true)
    end
    assert.is_true(t == nil or t > 1, tostring(t))
    q:close()
  end)

  it("after a fatal error the queue is quiet: fd unreadable, timeout nil; step_all does not spin", function()
    local dead = srv.users.deactivated
    local c = zulip.client{ site = srv.site, email = dead.email, api_key = dead.api_key }
    local q = c:queue{}
    local results = zulip.step_all({ q }, 2)
    local deadline = core.now() + 5
    while #results == 0 and core.now() < deadline do results = zulip.step_all({ q }, 1) end
    assert.are.equal(1, #results)
    assert.are.equal(q, results[1].queue)
    assert.are.equal("UNAUTHORIZED", results[1].error.code)
    assert.matches("UNAUTHORIZED", results[1].message)
    assert.is_false(readable(q))
    assert.is_nil(q:timeout())
    local rounds, t0 = 0, core.now()
    repeat
      assert.are.same({}, zulip.step_all({ q }, 0.2))
      rounds = rounds + 1
    until core.now() - t0 >= 0.6
    assert.is_true(rounds <= 4, rounds .. " rounds in 0.6 s")
    q:close()
    assert.are.same({}, zulip.step_all({ q }, 5))  -- only closed queues: returns at once
  end)

  it("100 queues of one client each get their own events, no cross-talk; step_all sleeps meanwhile", function()
    local N = 100
    local qs, index = {}, {}
    for i = 1, N do
      qs[i] = client:queue{ event_types = { "message" }, narrow = { { "channel", "Denmark" }, { "topic", "t" .. i } } }
      index[qs[i]] = i
    end
    local deadline = core.now() + 20
    local function all(f) for i = 1, N do if not f(qs[i]) then return false end end return true end
    repeat
      for _, r in ipairs(zulip.step_all(qs, 1)) do error(r.message or "unexpected events") end
    until all(function(q) return q.id ~= nil end) or core.now() > deadline
    assert.is_true(all(function(q) return q.id ~= nil end), "not all registered")
    repeat
      assert.are.same({}, zulip.step_all(qs, 0.1))
    until srv:control("GET", "/test/stats").longpolls_waiting >= N or core.now() > deadline
    assert.are.equal(N, srv:control("GET", "/test/stats").longpolls_waiting)

    -- nothing to do: step_all sleeps in poll(2) instead of spinning
    local rounds, t0 = 0, core.now()
    repeat
      assert.are.same({}, zulip.step_all(qs, 0.25))
      rounds = rounds + 1
    until core.now() - t0 >= 0.75
    assert.is_true(rounds <= 5, rounds .. " rounds in 0.75 s")

    -- one message per topic, sent in reverse order
    for i = N, 1, -1 do
      srv:control("POST", "/test/messages", { count = 1, to = "Denmark", topic = "t" .. i, sender = "alice@example.com",
                                             content_prefix = "for " .. i .. " #" })
    end
    local got, n = {}, 0
    deadline = core.now() + 20
    while n < N and core.now() < deadline do
      for _, r in ipairs(zulip.step_all(qs, 1)) do
        assert.is_nil(r.error)
        local i = index[r.queue]
        for _, ev in ipairs(r.events) do
          got[i] = got[i] or {}
          table.insert(got[i], ev.message.subject .. "|" .. ev.message.content)
          if #got[i] == 1 then n = n + 1 end
        end
      end
    end
    assert.are.equal(N, n)
    for _ = 1, 3 do  -- and nothing more arrives anywhere
      for _, r in ipairs(zulip.step_all(qs, 0.1)) do error("extra events for queue " .. index[r.queue]) end
    end
    for i = 1, N do
      assert.are.same({ "t" .. i .. "|for " .. i .. " #1" }, got[i])
    end
    local ids = {}
    for i = 1, N do
      assert.is_nil(ids[qs[i].id])
      ids[qs[i].id] = true
      qs[i]:close()
    end
  end)

  it("1,000 queues in one process (soft RLIMIT_NOFILE raised to the hard limit)", function()
    local out, ok = run_script([[
      local zulip = require("zulip")
      local core = require("zulip.core")
      local devserver = require("spec.support.devserver")
      local N = 1000
      local srv = devserver.start{ args = { "--rate-limit", "0", "--heartbeat", "300", "--quiet" } }
      local bot = srv.users.bot
      local client = zulip.client{ site = srv.site, email = bot.email, api_key = bot.api_key, timeout = 30 }
      local qs, t0 = {}, core.now()
      for i = 1, N do qs[i] = client:queue{ event_types = { "message" } } end
      local registered = 0
      while registered < N and core.now() - t0 < 60 do
        for _, r in ipairs(zulip.step_all(qs, 1)) do error(r.message or "events before any message") end
        registered = 0
        for i = 1, N do if qs[i].id then registered = registered + 1 end end
      end
      local t1 = core.now()
      srv:control("POST", "/test/messages", { count = 1, to = "Denmark", topic = "many", sender = "alice@example.com" })
      local got, n = {}, 0
      while n < N and core.now() - t1 < 60 do
        for _, r in ipairs(zulip.step_all(qs, 1)) do
          if r.error then error(r.message) end
          for _, ev in ipairs(r.events) do
            if ev.type == "message" and ev.message.subject == "many" and not got[r.queue] then
              got[r.queue] = true
              n = n + 1
            end
          end
        end
      end
      local t2 = core.now()
      for i = 1, N do qs[i]:close() end
      print(("registered=%d received=%d register_s=%.2f deliver_s=%.2f close_s=%.2f")
        :format(registered, n, t1 - t0, t2 - t1, core.now() - t2))
      srv:stop()
    ]], "ulimit -Sn $(ulimit -Hn) &&")
    print("\n  1,000 queues: " .. out:gsub("\n$", ""))
    assert.is_true(ok, out)
    assert.matches("registered=1000 received=1000 ", out)
  end)

  it("running out of file descriptors is a clear error, not a crash, and the clients recover", function()
    local out, ok = run_script([[
      local zulip = require("zulip")
      local devserver = require("spec.support.devserver")
      local srv = devserver.start{ args = { "--rate-limit", "0" } }
      local bot = srv.users.bot
      local function client()
        return zulip.client{ site = srv.site, email = bot.email, api_key = bot.api_key, timeout = 5 }
      end
      local cs = {}
      for _ = 1, 100 do
        local ok, c = pcall(client)
        if not ok then print("make: " .. c) break end
        cs[#cs + 1] = c
      end
      print("made " .. #cs)
      -- The failed make may have left a free fd or two (it fails at whichever fd runs out first):
      -- take them all, so that what the closed client frees is exactly what a new client takes.
      local held = {}
      for _ = 1, 64 do                      -- the limit is 48
        local f = io.open("/dev/null")
        if not f then break end
        held[#held + 1] = f
      end
      cs[#cs]:close()                       -- frees its fds, but not enough for a socket too
      cs[#cs] = client()
      local q = cs[#cs]:queue{}
      local state, msg, err = q:register()
      print("register: " .. tostring(state) .. " " .. (err and err.code or "-") .. " " .. tostring(msg))
      for i = 1, #cs - 1 do cs[i]:close() end
      for _, f in ipairs(held) do f:close() end
      print("after closing: " .. (q:register() and "registered" or "failed"))
      srv:stop()
    ]], "ulimit -n 48 &&")
    assert.is_true(ok, out)
    assert.matches("make: zulip: cannot make a client: out of file descriptors %(Too many open files%): "
                   .. "raise the open%-files limit %(ulimit %-n, RLIMIT_NOFILE%) or close clients\n", out)
    assert.matches("made %d+\n", out)
    assert.matches("register: nil NETWORK zulip: NETWORK: cannot open a socket: out of file descriptors", out)
    assert.matches("after closing: registered\n", out)
  end)

  it("core.wait checks its arguments", function()
    assert.has_error(function() core.wait({ "x" }) end, "wait: fds[1] is not a file descriptor")
    assert.has_error(function() core.wait({ -1 }) end, "wait: fds[1] is not a file descriptor")
    assert.has_error(function() core.wait({}, -1) end, "wait: bad timeout")
    assert.are.same({}, core.wait({}, 0))
    assert.has_error(function() zulip.step_all("x") end, "zulip: step_all expects a list of queues and clients")
    assert.has_error(function() zulip.step_all({}, -1) end, "zulip: step_all timeout must be a number >= 0")
  end)

  it("the game-loop example steps every frame and shows pushed messages", function()
    local dir = util.tmpdir()
    local log = dir .. "/out"
    local env = ("ZULIP_SITE=%s ZULIP_EMAIL=%s ZULIP_API_KEY=%s HOME=%s")
      :format(util.shquote(srv.site), util.shquote(bot.email), util.shquote(bot.api_key), util.shquote(dir))
    assert(os.execute(("%s timeout -k 5 60 %s %s 240 60 >%s 2>&1 &")
      :format(env, util.lua_bin(), util.shquote(util.root .. "/examples/game_loop.lua"), util.shquote(log))))
    local function wait_for(pattern)
      local deadline = core.now() + 20
      repeat
        local out = util.read_file(log) or ""
        if out:find(pattern) then return out end
        core.sleep(0.02)
      until core.now() > deadline
      error("no '" .. pattern .. "' from the game loop:\n" .. (util.read_file(log) or ""))
    end
    wait_for("registered queue ")
    srv:send("alice", { type = "stream", to = "Denmark", topic = "game", content = "gg 1" })
    wait_for("Alice: gg 1\n")
    srv:send("alice", { type = "stream", to = "Denmark", topic = "game", content = "gg 2" })
    local out = wait_for("frames=%d+[^\n]*\n")
    local f1 = tonumber(out:match("frame (%d+): Alice: gg 1\n"))
    local f2 = tonumber(out:match("frame (%d+): Alice: gg 2\n"))
    assert.is_true(f2 > f1, out)
    local frames, messages, seconds, worst = out:match("frames=(%d+) messages=(%d+) late_frames=%d+ "
                                                        .. "seconds=([%d.]+) step_max_ms=([%d.]+)")
    assert.are.equal("240", frames, out)
    assert.are.equal("2", messages)
    -- 240 frames at 60 fps take 4 s when no frame waits for the network
    assert.is_true(tonumber(seconds) < 6, out)
    assert.is_true(tonumber(worst) < 100, out)
    print("\n  game loop: " .. out:match("frames=[^\n]*"))
    os.execute("rm -rf " .. util.shquote(dir))
  end)
end)
