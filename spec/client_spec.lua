-- The client's own contract: a request given a callback returns at once and can be cancelled;
-- the client is pollable (pollfd, events, timeout, step) and zulip.step_all takes it; requests
-- recover with the queues' policy, bounded, and a POST that may have reached the server is never
-- repeated blindly (err.maybe_sent).
local core = require("zulip.core")
local zulip = require("zulip")
local socket = require("socket")
local util = require("spec.support.util")

-- a port nothing listens on: bound a moment ago, then closed
local function socket_free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return port
end

describe("client", function()
  local srv = util.use_devserver{ heartbeat = 0.5, args = { "--rate-limit", "0" } }

  local function client(extra)
    local opts = { backoff = util.FAST_BACKOFF }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return util.client(srv, opts)
  end

  local function fault(kind, path, extra)
    local body = { kind = kind, path = path }
    for k, v in pairs(extra or {}) do body[k] = v end
    srv:control("POST", "/test/fault", body)
  end

  -- the dev server's record of the requests to `path`, oldest first: "METHOD status", where a
  -- request the server did not answer (a reset) has "-"
  local function requests_to(path)
    local list = {}
    for _, r in ipairs(srv:control("GET", "/test/requests?n=100").requests) do
      if r.path == path then
        list[#list + 1] = r.method .. " " .. (type(r.status) == "number" and ("%d"):format(r.status) or "-")
      end
    end
    return list
  end

  -- steps the client until done() or 10 s have passed
  local function drive(c, done)
    local deadline = core.now() + 10
    while not done() and core.now() < deadline do c:step(0.05) end
    assert.is_true(done(), "the client did not get there in time")
  end

  local MSG = { type = "stream", to = "Denmark", topic = "client spec", content = "hello" }

  describe("a request given a callback", function()
    it("returns a handle at once and calls back from step with the reply", function()
      fault("delay", "/api/v1/messages", { seconds = 1 })
      local c = client()
      local got
      local h = c:send_message(MSG, function(...) got = { ... } end)
      assert.is_nil(got)  -- the server is still sleeping on it
      assert.is_false(h:done())
      assert.are.equal("function", type(h.cancel))
      drive(c, function() return got ~= nil end)
      local reply = got[1]
      assert.is_table(reply)
      assert.are.equal("number", type(reply.id))
      assert.is_true(h:done())
      assert.are.same({ "POST 200" }, requests_to("/api/v1/messages"))
      c:close()
    end)

    it("calls back with nil, msg, err when the server refuses", function()
      local c = client()
      local r, m, e = "unset"
      c:send_message({ type = "stream", to = "No such channel", topic = "t", content = "x" },
        function(reply, msg, err) r, m, e = reply, msg, err end)
      drive(c, function() return r ~= "unset" end)
      assert.is_nil(r)
      assert.are.equal("string", type(m))
      assert.matches("^zulip: ", m)
      assert.are.equal("table", type(e))
      assert.are.equal(400, e.http_status)
      c:close()
    end)

    it("never calls back once cancelled, and the client goes on", function()
      fault("delay", "/api/v1/messages", { seconds = 0.5 })
      local c = client()
      local called = false
      local h = c:send_message(MSG, function() called = true end)
      assert.is_true(h:cancel())
      assert.is_true(h:cancel())  -- idempotent
      local t0 = core.now()
      while core.now() - t0 < 1 do c:step(0.05) end
      assert.is_false(called)
      -- another request on the same client still works
      local me = assert(c:request("GET", "users/me"))
      assert.are.equal(srv.users.bot.email, me.email)
      c:close()
    end)

    it("blocks and returns the reply without a callback, as before", function()
      local c = client()
      local reply, msg = c:send_message(MSG)
      assert.is_table(reply, msg)
      assert.is_not_nil(reply.id)
      c:close()
    end)

    it("ends with NETWORK when the client is closed first", function()
      fault("delay", "/api/v1/messages", { seconds = 3 })
      local c = client()
      local r, m, e = "unset"
      c:send_message(MSG, function(reply, msg, err) r, m, e = reply, msg, err end)
      c:step(0.05)
      c:close(0.2)
      drive(c, function() return r ~= "unset" end)
      assert.is_nil(r)
      assert.matches("closed", m)
      assert.are.equal("NETWORK", e.code)
    end)
  end)

  describe("is pollable", function()
    it("has one fd for all its queues, which says when to step", function()
      local c = client()
      assert.are.equal("r", c:events())
      local fd = c:pollfd()
      assert.are.equal("number", type(fd))
      assert.is_nil(c:timeout())  -- nothing to do: only the fd matters
      local q1 = c:queue{ event_types = { "message" } }
      local q2 = c:queue{ event_types = { "message" } }
      assert.are.equal(fd, q1:pollfd())
      assert.are.equal(fd, q2:pollfd())
      assert.are.equal(0, c:timeout())  -- two queues to register
      c:close()
    end)

    it("does not ask a loop to step the client for a queue used by hand (register, get_events)", function()
      local c = client()
      local q = c:queue{ event_types = { "message" } }
      assert(q:register())
      assert(q:get_events{ dont_block = true })
      assert.are.equal(0, q:timeout())  -- stepping the queue itself takes it over, at once
      local t = c:timeout()  -- client:step leaves such a queue to its owner
      -- a 0 would have a loop that follows the client's timeout (zulip.uv on the poll core) spin
      assert.is_true(t == nil or t > 0, tostring(t))
      q:close()
      c:close()
    end)

    it("says the soonest of its queues' timeouts in every state, and its step hands out each one's news", function()
      -- client:timeout() and client:step look only at the queues with news and those the policy
      -- has yet to take over; whatever state the queues are in, the answer is what asking every
      -- queue would give
      srv:control("POST", "/test/config", { heartbeat = 60 })  -- no heartbeat comes in between
      local c = client{ backoff = { base = 2, factor = 1, cap = 2 } }
      local function fixed() return 0.75 end  -- no jitter: a backoff is 1.5 s
      local qs = {}
      for i = 1, 3 do qs[i] = c:queue{ event_types = { "message" }, random = fixed } end
      local function agrees(what)
        local soonest
        for _, q in ipairs(qs) do
          local t = q:_loop_timeout(true)
          if t ~= nil and (soonest == nil or t < soonest) then soonest = t end
        end
        local t = c:_loop_timeout(true)
        assert.is_true((t == nil and soonest == nil) or (t ~= nil and soonest ~= nil and math.abs(t - soonest) < 0.01),
          ("%s: the client says %s, its queues %s"):format(what, tostring(t), tostring(soonest)))
        return t
      end
      local function polling(q) return q.id ~= nil and q:_state()._busy == "poll" end
      assert.are.equal(0, agrees("new queues"))
      drive(c, function() return polling(qs[1]) and polling(qs[2]) and polling(qs[3]) end)
      local t0 = core.now()
      while core.now() - t0 < 0.3 do c:step(0.05) end  -- past curl's own timers from connecting
      local t = agrees("all polling")
      assert.is_true(t > 1, tostring(t))
      -- an event for the second queue, left there while the first queue's steps drive the client
      srv:control("POST", "/test/event", { queue_id = qs[2].id, event = { type = "spec_probe" } })
      local deadline = core.now() + 5
      while not qs[2]:_has_news() and core.now() < deadline do assert(qs[1]:step(0.05)) end
      assert.are.equal(0, agrees("one with news"))
      local got
      for _, r in ipairs(c:step(0)) do
        assert.are.equal(qs[2], r.queue)
        for _, ev in ipairs(r.events) do if ev.type == "spec_probe" then got = ev end end
      end
      assert.is_table(got)
      -- a failed poll: that queue waits out its backoff (1.5 s), the others their long-polls
      fault("status500", "/api/v1/events")
      local backing
      deadline = core.now() + 5
      while backing == nil and core.now() < deadline do
        c:step(0.05)
        for _, q in ipairs(qs) do if q:_state()._wake then backing = q end end
      end
      assert.is_not_nil(backing)
      t = agrees("one backing off")
      assert.is_true(t > 0.5 and t <= 1.51, tostring(t))
      drive(c, function() return polling(backing) end)
      -- a fatal error: handed out once by client:step, then that queue is quiet until stepped again
      fault("unauthorized", "/api/v1/events")
      local failed
      deadline = core.now() + 5
      while failed == nil and core.now() < deadline do
        for _, r in ipairs(c:step(0.05)) do
          if r.error then failed = r end
        end
      end
      assert.is_not_nil(failed)
      assert.are.equal("UNAUTHORIZED", failed.error.code)
      agrees("one failed")
      -- stepping again retries it
      drive(c, function() return polling(qs[1]) and polling(qs[2]) and polling(qs[3]) end)
      t0 = core.now()
      while core.now() - t0 < 0.3 do c:step(0.05) end
      t = agrees("all polling again")
      assert.is_true(t > 1, tostring(t))
      c:close()
    end)

    it("delivers every queue's events through zulip.step_all on the client", function()
      local c = client()
      local qs = { c:queue{ event_types = { "message" } }, c:queue{ event_types = { "message" } } }
      local got = { {}, {} }
      local deadline = core.now() + 10
      local sent = false
      while (#got[1] < 3 or #got[2] < 3) and core.now() < deadline do
        for _, r in ipairs(zulip.step_all({ c }, 0.1)) do
          assert.is_nil(r.error, r.message)
          local k = r.queue == qs[1] and 1 or 2
          for _, ev in ipairs(r.events) do
            if ev.type == "message" then table.insert(got[k], tonumber(ev.message.content)) end
          end
        end
        if not sent and qs[1].id and qs[2].id then
          sent = true
          for i = 1, 3 do srv:send("alice", { type = "stream", to = "Denmark", topic = "t", content = tostring(i) }) end
        end
      end
      assert.are.same({ { 1, 2, 3 }, { 1, 2, 3 } }, got)
      c:close()
    end)

    it("step(t) raises on a bad timeout and returns a list", function()
      local c = client()
      assert.has_error(function() c:step(-1) end, "zulip: step timeout must be a number >= 0")
      assert.are.same({}, c:step(0))
      c:close()
      assert.is_true(c:closed())
    end)
  end)

  describe("sends each request to its path on the site", function()
    local function last_request()
      local reqs = srv:control("GET", "/test/requests?n=1").requests
      return reqs[#reqs]
    end

    it("with the query as given, on a site at the server's root", function()
      local c = client()
      assert(c:request("GET", "users/me", { client_gravatar = true }))
      local r = last_request()
      assert.are.equal("/api/v1/users/me", r.path)
      assert.are.equal("client_gravatar=true", r.query)
      c:close()
    end)

    it("under the site's own path when the site has one", function()
      local c = client{ site = srv.site .. "/chat/" }  -- the dev server has nothing there: a 404
      local reply, msg = c:request("GET", "users/me", { client_gravatar = true })
      assert.is_nil(reply)
      assert.matches("404", msg)
      local r = last_request()
      assert.are.equal("/chat/api/v1/users/me", r.path)
      assert.are.equal("client_gravatar=true", r.query)
      c:close()
    end)
  end)

  describe("requests recover with the policy, bounded", function()
    it("retries a GET after the connection was reset", function()
      fault("reset", "/api/v1/users/me")
      local c = client()
      local me, msg = c:request("GET", "users/me")
      assert.is_table(me, msg)
      assert.are.same({ "GET -", "GET 200" }, requests_to("/api/v1/users/me"))
      c:close()
    end)

    it("retries a DELETE after a 500", function()
      local c = client()
      local q = c:queue{ event_types = { "message" } }
      assert(q:register())
      fault("status500", "/api/v1/events", { method = "DELETE" })
      local reply, msg = c:request("DELETE", "events", { queue_id = q.id })
      assert.is_table(reply, msg)
      local deletes = {}
      for _, r in ipairs(requests_to("/api/v1/events")) do
        if r:match("^DELETE") then deletes[#deletes + 1] = r end
      end
      assert.are.same({ "DELETE 500", "DELETE 200" }, deletes)
      c:close()
    end)

    it("does not repeat a POST the server may have received: err.maybe_sent", function()
      fault("reset", "/api/v1/messages")
      local c = client()
      local reply, msg, err = c:send_message(MSG)
      assert.is_nil(reply)
      assert.are.equal("NETWORK", err.code, msg)
      assert.is_true(err.maybe_sent)
      assert.are.same({ "POST -" }, requests_to("/api/v1/messages"))
      c:close()
    end)

    it("does not repeat a POST answered by a 500 either", function()
      fault("status500", "/api/v1/messages")
      local c = client()
      local reply, _, err = c:send_message(MSG)
      assert.is_nil(reply)
      assert.are.equal(500, err.http_status)
      assert.is_true(err.maybe_sent)
      assert.are.same({ "POST 500" }, requests_to("/api/v1/messages"))
      c:close()
    end)

    it("waits out a 429's Retry-After and sends the POST again (the server did not take it)", function()
      fault("ratelimit", "/api/v1/messages", { retry_after = 0.3 })
      local c = client()
      local t0 = core.now()
      local reply, msg = c:send_message(MSG)
      assert.is_table(reply, msg)
      assert.is_true(core.now() - t0 >= 0.3)
      assert.are.same({ "POST 429", "POST 200" }, requests_to("/api/v1/messages"))
      c:close()
    end)

    it("retries a POST that never left (connection refused), then fails with NETWORK", function()
      local s = socket_free_port()
      local logs = {}
      local c = zulip.client{ site = "http://127.0.0.1:" .. s, email = "bot@example.com", api_key = "k",
                              timeout = 1, backoff = util.FAST_BACKOFF,
                              on_log = function(level, line) logs[#logs + 1] = level .. " " .. line end }
      local reply, msg, err = c:send_message(MSG)
      assert.is_nil(reply)
      assert.are.equal("NETWORK", err.code, msg)
      assert.is_nil(err.maybe_sent)
      local retries = 0
      local retry_line = "^warn POST http://127%.0%.0%.1:%d+/api/v1/messages failed: NETWORK: .*next attempt in"
      for _, l in ipairs(logs) do if l:match(retry_line) then retries = retries + 1 end end
      assert.is_true(retries >= 1, table.concat(logs, "\n"))
      assert.is_true(retries <= 3)  -- at most 4 tries in all
      c:close()
    end)
  end)
end)
