-- Queues in Debian's lua-cqueues: a queue is a pollable object (pollfd, events, timeout), so
-- cqueues.poll(q) sleeps until the queue has work and wakes when an event arrives.
local cqueues = require("cqueues")
local zulip = require("zulip")
local util = require("spec.support.util")

describe("cqueues", function()
  local srv, client

  srv = util.use_devserver{ args = { "--rate-limit", "0" }, config = { heartbeat = 60 } }
  before_each(function()
    client = util.client(srv)
  end)

  local function waiting(id)
    for _, info in ipairs(srv:control("GET", "/test/queues").queues) do
      if info.id == id then return info.waiting end
    end
  end

  -- Runs f in a coroutine of a cqueues controller, for at most `secs`; its errors come out of
  -- cq:loop (no pcall inside: Lua 5.1 cannot yield across it).
  local function in_cqueue(secs, f)
    local cq = cqueues.new()
    cq:wrap(f)
    local ok, err = cq:loop(secs)
    if not ok then error(err, 0) end
    assert(cq:empty(), "the coroutine did not finish in " .. secs .. " s")
  end

  it("cqueues.poll(q) wakes when an event arrives, and sleeps until then", function()
    local q = client:queue{ event_types = { "message" } }
    local got, wakes_waiting, t_sent, t_got
    in_cqueue(15, function()
      -- register and start the long-poll
      local deadline = util.now() + 5
      while not (q.id and waiting(q.id)) and util.now() < deadline do
        cqueues.poll(q, 0.1)
        assert(q:step(0))
      end
      assert(q.id and waiting(q.id), "no long-poll pending")
      -- nothing happens for 0.8 s: cqueues keeps the coroutine asleep
      local wakes, t0 = 0, util.now()
      repeat
        if cqueues.poll(q, 0.8 - (util.now() - t0)) == q then
          wakes = wakes + 1
          assert.are.same({}, assert(q:step(0)))
        end
      until util.now() - t0 >= 0.8
      wakes_waiting = wakes
      -- then a message
      t_sent = util.now()
      util.send_later(srv, 0, "alice", { type = "stream", to = "Denmark", topic = "cq", content = "via cqueues" })
      deadline = util.now() + 10
      while not got and util.now() < deadline do
        local ready = cqueues.poll(q, 10)
        assert.are.equal(q, ready)
        got = assert(q:step(0))[1]
      end
      t_got = util.now()
    end)
    assert.are.equal("via cqueues", got.message.content)
    -- without one fd for the sockets (the poll core): q:timeout() is then at most POLL_SLICE while the
    -- long-poll is open, so cqueues wakes that often, and no more (see client:pollfd)
    local one_fd = require("zulip.core").single_fd  -- false: the poll core, or kqueue on libkqueue
    local max_wakes = one_fd and 2 or math.ceil(0.8 / zulip.POLL_SLICE) + 2
    assert.is_true(wakes_waiting <= max_wakes, wakes_waiting .. " wake-ups with nothing to do")
    assert.is_true(t_got - t_sent < 3)
    q:close()
  end)

  it("polls several queues at once and honours a backoff through timeout() and the fd", function()
    local retried = {}
    local function make(topic)
      return client:queue{ event_types = { "message" }, narrow = { { "channel", "Denmark" }, { "topic", topic } },
                           backoff = { base = 0.5, factor = 1, cap = 0.5 }, random = function() return 1 end,
                           on_retry = function() retried[#retried + 1] = { topic, util.now() } end }
    end
    local a, b = make("a"), make("b")
    assert(a:register())
    assert(b:register())
    -- the first poll of either gets a 500; both messages wait in the server's queues
    srv:control("POST", "/test/fault", { kind = "status500", path = "/api/v1/events", count = 1 })
    srv:control("POST", "/test/messages", { count = 1, to = "Denmark", topic = "b", sender = "alice@example.com" })
    srv:control("POST", "/test/messages", { count = 1, to = "Denmark", topic = "a", sender = "alice@example.com" })
    local got, when = {}, {}
    in_cqueue(15, function()
      local deadline = util.now() + 10
      while (not got.a or not got.b) and util.now() < deadline do
        for _, q in ipairs{ cqueues.poll(a, b, 5) } do
          for _, ev in ipairs(assert(q:step(0))) do
            got[ev.message.subject], when[ev.message.subject] = q, util.now()
          end
        end
      end
    end)
    assert.are.equal(a, got.a)
    assert.are.equal(b, got.b)
    assert.are.equal(1, #retried)  -- one of them hit the 500 ...
    local topic, t_fail = retried[1][1], retried[1][2]
    assert.is_true(when[topic] - t_fail >= 0.49)  -- ... waited out its backoff, then got its message
    a:close()
    b:close()
  end)
end)
