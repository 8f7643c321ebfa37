-- The poller built into the C core (issue 12): the one `make POLLER=` asked for, what each one
-- promises a loop (epoll and kqueue: the pollfd alone; poll: the self-pipe plus the sockets of
-- pollfds(), and timeout() capped at POLL_SLICE for loops that watch the pipe alone), and that a
-- loop of either kind, and step_all, get a message in good time on every core.
local zulip = require("zulip")
local core = require("zulip.core")
local devserver = require("spec.support.devserver")
local util = require("spec.support.util")

local function uname()
  local p = assert(io.popen("uname -s"))
  local s = p:read("*l")
  p:close()
  return s
end

local function default_poller(system)
  if system == "Linux" then return "epoll" end
  if system == "Darwin" or system == "DragonFly" or system:match("BSD$") then return "kqueue" end
  return "poll"
end

describe("the poller", function()
  local srv, bot, client

  setup(function()
    srv = devserver.start{ args = { "--rate-limit", "0" } }
    bot = srv.users.bot
  end)
  teardown(function() srv:stop() end)
  before_each(function()
    srv:control("POST", "/test/reset", {})
    srv:control("POST", "/test/config", { heartbeat = 60 })
    client = zulip.client{ site = srv.site, email = bot.email, api_key = bot.api_key, timeout = 5 }
  end)
  after_each(function() client:close(1) end)

  local function waiting(id)
    for _, info in ipairs(srv:control("GET", "/test/queues").queues) do
      if info.id == id then return info.waiting end
    end
  end

  -- a queue with its long-poll pending on the server
  local function long_polling()
    local q = client:queue{ event_types = { "message" } }
    local deadline = core.now() + 5
    while not (q.id and waiting(q.id)) do
      assert(core.now() < deadline, "no long-poll pending after 5 s")
      assert(q:step(0.05))
    end
    return q
  end

  it("is the one make built (ZULIP_BUILD_TAG), else the system's default", function()
    local tag = util.build_tag
    local want = tag ~= "" and tag:sub(2) or default_poller(uname())
    assert.are.equal(want, zulip.POLLER)
    assert.are.equal(want, core.poller)
    -- one fd for everything: epoll, and the kernel's kqueue (libkqueue's kqueue fd is never
    -- readable, so a kqueue core off macOS and the BSDs lists the sockets as poll does)
    local native = want == default_poller(uname())
    assert.are.equal(want == "epoll" or (want == "kqueue" and native), core.single_fd)
    assert.are.equal(uname(), core.sysname)
  end)

  it("lists in pollfds() every fd a loop must watch", function()
    local q = long_polling()
    local fd = client:pollfd()
    local fds = client:pollfds()
    assert.are.same(fds, q:pollfds())
    assert.are.same({ fd = fd, events = "r" }, fds[1])
    if core.single_fd then
      assert.are.equal(1, #fds)  -- the sockets are inside the epoll/kqueue set
    else
      -- the self-pipe, then the long-poll's socket (curl waits to read the reply)
      assert.is_true(#fds >= 2, #fds .. " fds")
      local seen = { [fd] = true }
      for i = 2, #fds do
        assert.is_true(math.floor(fds[i].fd) == fds[i].fd and fds[i].fd >= 0, tostring(fds[i].fd))
        assert.is_nil(seen[fds[i].fd], "fd listed twice")
        seen[fds[i].fd] = true
        assert.matches("^r?w?$", fds[i].events)
      end
      -- a pipe that only work due at once makes readable: quiet while the long-poll waits ...
      assert.are.same({}, assert(core.wait({ fd }, 0.2)))
      -- ... so a loop watching it alone is told to come back within the slice, one watching all
      -- of them is not
      assert.are.equal(zulip.POLL_SLICE, client:timeout())
      assert.are.equal(zulip.POLL_SLICE, q:timeout())
      local exact = client:_loop_timeout(true)
      assert.is_true(exact == nil or exact > 1, tostring(exact))
    end
    q:close()
    assert.is_false(client:closed())
  end)

  it("gets a message to a loop that watches only pollfd() and follows timeout()", function()
    local q = long_polling()
    local t_sent = core.now()
    util.send_later(srv, 0.3, "alice", { type = "stream", to = "Denmark", topic = "p", content = "one fd" })
    local got, wakes, deadline = nil, 0, core.now() + 10
    while not got and core.now() < deadline do
      local t = client:timeout()
      core.wait({ client:pollfd() }, t and math.min(t, 5) or 5)
      wakes = wakes + 1
      for _, r in ipairs(client:step(0)) do
        if r.events and r.events[1] then got = r.events[1] end
      end
    end
    assert.are.equal("one fd", got and got.message.content)
    local took = core.now() - t_sent
    assert.is_true(took < 2, took .. " s")
    -- epoll and kqueue: woken for the reply alone (plus a heartbeat at most); poll: once a slice
    local max_wakes = core.single_fd and 4 or math.ceil(took / zulip.POLL_SLICE) + 4
    assert.is_true(wakes <= max_wakes, wakes .. " wake-ups in " .. took .. " s")
    q:close()
  end)

  it("gets a message to step_all at once: it watches every fd, so it needs no slice", function()
    local q = long_polling()
    local t_sent = core.now()
    util.send_later(srv, 0.5, "alice", { type = "stream", to = "Denmark", topic = "p", content = "all fds" })
    local got, rounds, deadline = nil, 0, core.now() + 10
    while not got and core.now() < deadline do
      rounds = rounds + 1
      for _, r in ipairs(zulip.step_all({ q }, 5)) do
        if r.events and r.events[1] then got = r.events[1] end
      end
    end
    assert.are.equal("all fds", got and got.message.content)
    local took = core.now() - t_sent
    assert.is_true(took < 2, took .. " s")
    -- sliced at POLL_SLICE, 0.5 s would take 10 rounds; woken by the socket, a few
    assert.is_true(rounds <= 4, rounds .. " rounds in " .. took .. " s")
    q:close()
  end)
end)
