-- Recovery: numbered messages pushed through each fault arrive exactly once, in order.
-- Every spec runs twice: against the dev server directly, and through nginx configured like
-- production Zulip's front end (spec/support/nginx.lua). Faults are armed on the dev server, so
-- they still happen behind nginx, which turns a reset or broken upstream reply into its own 502:
-- through nginx the specs assert exactly-once delivery, not the exact error the client saw.
local zulip = require("zulip")
local core = require("zulip.core")
local nginx = require("spec.support.nginx")
local util = require("spec.support.util")

local FAST = util.FAST_BACKOFF  -- keep retries quick in specs
local collect, seq = util.collect, util.seq

for _, via in ipairs{ "direct", "nginx" } do
  describe("recovery (" .. via .. ")", function()
    local srv, ng, client
    local proxied = via == "nginx"

    -- the site the client talks to
    local function site()
      return proxied and ng.sites.plain or srv.site
    end

    local function push(from, to)
      for i = from, to do
        srv:send("alice", { type = "stream", to = "Denmark", topic = "rec", content = tostring(i) })
      end
    end

    local function fault(kind, extra)
      local f = { kind = kind, path = "/api/v1/events", count = 1 }
      for k, v in pairs(extra or {}) do f[k] = v end
      srv:control("POST", "/test/fault", f)
    end

    teardown(function() if ng then ng:stop() end end)  -- registered first: before the server stops
    -- no real rate limit: these specs make hundreds of requests a minute; 429 comes from faults
    srv = util.use_devserver{ heartbeat = 0.5, args = { "--rate-limit", "0" } }
    setup(function() if proxied then ng = nginx.start{ upstream = srv } end end)
    before_each(function()
      local bot = srv.users.bot
      client = zulip.client{ site = site(), email = bot.email, api_key = bot.api_key, timeout = 2,
                             low_speed_time = 1, low_speed_limit = 1000 }
    end)

    for _, kind in ipairs{ "reset", "close_after_headers", "truncate", "status500", "html502",
                           "invalid_json", "trickle" } do
      -- nginx forwards nothing until it has the whole head of the reply, so a head trickled one
      -- byte at a time is, to the client behind it, a long-poll that says nothing yet (the
      -- "silent" spec below covers that)
      local skip = proxied and kind == "trickle"
      if not skip then it("retries the same queue after '" .. kind .. "' and delivers 1..6 exactly once", function()
        local q = client:queue{ event_types = { "message" } }
        assert(q:register())
        local id = q.id
        push(1, 3)
        fault(kind, { interval = 0.3 })
        local got, retries = collect(q, 6, { on_event = function(k)
          if k == 3 then  -- a second fault after events were delivered: nothing may be replayed or lost
            push(4, 6)
            fault(kind, { interval = 0.3 })
          end
        end })
        assert.are.same(seq(6), got)
        assert.are.equal(id, q.id)  -- the same queue throughout
        if kind == "reset" or proxied then
          -- the transport resends once, silently, on a new connection when a kept connection dies
          -- before any byte of the reply (csrc/http.c, zhttp_resend); behind nginx a fault may be
          -- its 502 or a connection nginx ends
          assert.is_true(#retries <= 2)
          if proxied then assert.is_true(#retries >= 1) end
        else
          assert.are.equal(2, #retries)
        end
        for _, r in ipairs(retries) do
          assert.is_table(r.error)
          assert.is_number(r.delay)
          assert.is_true(r.delay <= FAST.cap)
          assert.is_number(r.attempt)
        end
        -- the poll after a failure does not block
        local reqs = srv:control("GET", "/test/requests?n=50").requests
        local after_fault = false
        local checked = 0
        for _, r in ipairs(reqs) do
          if r.path == "/api/v1/events" and r.method == "GET" then
            if after_fault and kind ~= "reset" then  -- (the transport's own resend would not use dont_block)
              assert.matches("dont_block=true", r.query)
              checked = checked + 1
            end
            after_fault = type(r.fault) == "string"  -- cjson.null otherwise
          end
        end
        if kind ~= "reset" then assert.are.equal(#retries, checked) end
        q:close()
      end) end
    end

    it("reports each retry with its reason, attempt, delay and HTTP status", function()
      local q = client:queue{ event_types = { "message" } }
      assert(q:register())
      push(1, 1)
      fault("status500", { count = 3 })
      local got, retries = collect(q, 1)
      assert.are.same({ 1 }, got)
      assert.are.equal(3, #retries)
      for i, r in ipairs(retries) do
        assert.are.equal(i, r.attempt)
        assert.are.equal(500, r.http_status)
        assert.is_string(r.reason)
        assert.is_table(r.error)
      end
    end)

    it("waits Retry-After on 429, at least and not much longer", function()
      local q = client:queue{ event_types = { "message" } }
      assert(q:register())
      push(1, 2)
      fault("ratelimit", { retry_after = 0.4 })
      local slept = {}
      local t0 = util.now()
      local got = {}
      for ev in q:each{ backoff = FAST, sleep = function(s) slept[#slept + 1] = s; core.sleep(s) end } do
        got[#got + 1] = tonumber(ev.message.content)
        if #got == 2 then break end
      end
      local elapsed = util.now() - t0
      assert.are.same({ 1, 2 }, got)
      assert.are.same({ 0.4 }, slept)
      assert.is_true(elapsed >= 0.4, "waited " .. elapsed)
      assert.is_true(elapsed < 1.4, "waited " .. elapsed)
      q:close()
    end)

    it("re-registers when the queue is garbage-collected mid-poll, calls on_reset, and goes on", function()
      local q = client:queue{ event_types = { "message" } }
      assert(q:register())
      local old = q.id
      push(1, 2)
      local resets = {}
      local got = collect(q, 4, {
        on_event = function(k)
          if k == 2 then srv:control("POST", "/test/gc_queue", { queue_id = old }) end
        end,
        on_reset = function(qq, state)
          resets[#resets + 1] = state.queue_id
          assert.are.equal(state.queue_id, qq.id)
          assert.are.equal(state.last_event_id, qq.last_event_id)
          push(3, 4)
        end,
      })
      assert.are.same({ 1, 2, 3, 4 }, got)
      assert.are.equal(1, #resets)
      assert.are_not.equal(old, q.id)
      q:close()
    end)

    it("re-registers when the queue is removed while our long-poll waits on it", function()
      local q = client:queue{ event_types = { "message" } }
      assert(q:register())
      local old = q.id
      push(1, 1)
      -- the queue dies while our long-poll waits: the server ends that poll with 200 (old queue id)
      util.later(srv, 0.5, { control = { "POST", "/test/gc_queue", { queue_id = old } } })
      local got = collect(q, 2, { on_reset = function() push(2, 2) end })
      assert.are.same({ 1, 2 }, got)
      q:close()
    end)

    it("survives an overlapping poll of the same queue without duplicates", function()
      local q = client:queue{ event_types = { "message" } }
      assert(q:register())
      push(1, 1)
      local got = collect(q, 3, { on_event = function(k)
        if k == 1 then
          -- while our next long-poll waits, another poll of the same queue ends it with 200
          util.later(srv, 0.3, { user = "bot", get = "/api/v1/events?queue_id=" .. q.id
                                   .. "&last_event_id=" .. q.last_event_id .. "&dont_block=false" })
          -- "2" at 0.8 s and "3" at 1.0 s, from one process so that they cannot swap
          util.later(srv, 0.8, { messages = { first = 2, count = 2, spread = 0.4, to = "Denmark", topic = "rec" } })
        end
      end })
      assert.are.same({ 1, 2, 3 }, got)
      -- make sure the background poll has come and gone, so it cannot take a later spec's fault
      local t0, seen = util.now(), false
      repeat
        for _, r in ipairs(srv:control("GET", "/test/requests?n=50").requests) do
          if r.method == "GET" and r.query:find("dont_block=false", 1, true) then seen = true end
        end
        if not seen then core.sleep(0.05) end
      until seen or util.now() - t0 > 10
      assert.is_true(seen, "the overlapping poll never arrived")
      q:close()
    end)

    it("detects a silent (half-open) long-poll by its timeout and polls again with the same last_event_id", function()
      srv:control("POST", "/test/config", { longpoll_timeout_seconds = 1 })
      local bot = srv.users.bot
      local c = zulip.client{ site = site(), email = bot.email, api_key = bot.api_key, longpoll_grace = 0.5 }
      local q = c:queue{ event_types = { "message" }, fetch_event_types = { "realm", "message" } }
      local state = assert(q:register())
      assert.are.equal(1, state.event_queue_longpoll_timeout_seconds)
      fault("silent", { seconds = 30 })
      util.send_later(srv, 0.5, "alice", { type = "stream", to = "Denmark", topic = "rec", content = "1" })
      local t0 = util.now()
      local got, retries = collect(q, 1)
      assert.are.same({ 1 }, got)
      assert.are.equal(1, #retries)
      assert.are.equal("TIMEOUT", retries[1].reason)
      assert.is_true(util.now() - t0 < 5)
      q:close()
    end)

    it("raises at once on 401 and never loops", function()
      local q = client:queue{ event_types = { "message" } }
      assert(q:register())
      fault("unauthorized", { count = 100 })
      local before = srv:control("GET", "/test/stats").requests["/api/v1/events"] or 0
      local t0 = util.now()
      local ok, err = pcall(collect, q, 1)
      assert.is_false(ok)
      assert.matches("UNAUTHORIZED", err)
      assert.is_true(util.now() - t0 < 2)
      local after = srv:control("GET", "/test/stats").requests["/api/v1/events"]
      assert.are.equal(before + 1, after)
      q:close()
    end)

    it("raises at once on another 4xx", function()
      local q = client:queue{ id = "no-such-queue-but-valid", last_event_id = 7 }
      -- acknowledging an event that was never delivered is a 400 BAD_REQUEST, not a retry
      local body = '{"result":"error","msg":"Event 7 was not in this queue","code":"BAD_REQUEST"}'
      srv:control("POST", "/test/fault", { kind = "raw", path = "/api/v1/events",
        data = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: " .. #body
          .. "\r\n\r\n" .. body })
      local ok, err = pcall(collect, q, 1)
      assert.is_false(ok)
      assert.matches("BAD_REQUEST", err)
      q:close()
    end)

    it("backs off register failures too", function()
      local q = client:queue{ event_types = { "message" } }
      srv:control("POST", "/test/fault", { kind = "status500", path = "/api/v1/register", count = 2 })
      push(1, 1)  -- before the queue exists: not delivered
      local resets = 0
      local got, retries = collect(q, 1, { on_reset = function() resets = resets + 1; push(2, 2) end })
      assert.are.same({ 2 }, got)
      assert.are.equal(2, #retries)
      assert.are.equal(1, resets)
      q:close()
    end)

    it("recovers the same way in the non-blocking step", function()
      local bot = srv.users.bot
      local retries = {}
      local c = zulip.client{ site = site(), email = bot.email, api_key = bot.api_key, timeout = 2 }
      local q = c:queue{ event_types = { "message" }, backoff = FAST,
                         on_retry = function(info) retries[#retries + 1] = info end }
      push(0, 0)  -- before register: not delivered
      srv:control("POST", "/test/fault", { kind = "status500", path = "/api/v1/register" })
      local got, t0 = {}, util.now()
      local pushed = false
      while #got < 6 and util.now() - t0 < 10 do
        local events, msg = q:step(0.05)
        assert.is_table(events, msg)
        if q.id and not pushed then  -- registered (after one retry); its first long-poll is waiting
          pushed = true
          push(1, 2)
        end
        for _, ev in ipairs(events) do
          got[#got + 1] = tonumber(ev.message.content)
          -- the next poll starts on the next step: fault it, then give it something to find
          if #got == 2 then fault("truncate"); push(3, 4) end
          if #got == 4 then fault("html502"); push(5, 6) end
        end
      end
      assert.are.same(seq(6), got)
      assert.are.equal(3, #retries)
      -- 401 comes back as nil, msg, err from step, never as a loop
      fault("unauthorized")
      local events, msg, err
      t0 = util.now()
      repeat events, msg, err = q:step(0.05) until events == nil or util.now() - t0 > 5
      assert.is_nil(events)
      assert.matches("UNAUTHORIZED", msg)
      assert.are.equal(401, err.http_status)
      q:close()
    end)

    it("soak: random faults in 20% of requests, every pushed event delivered once, in order", function()
      local seconds = tonumber(os.getenv("ZULIP_SOAK_SECONDS") or "") or 8
      local n = math.floor(seconds * 25)
      srv:control("POST", "/test/random_faults", { probability = 0.2, seed = 42, retry_after = 0.05,
        paths = { "/api/v1/events" },
        kinds = { "reset", "close_after_headers", "truncate", "status500", "html502", "invalid_json", "ratelimit",
                  "delay" }, seconds = 0.2 })
      local q = client:queue{ event_types = { "message" } }
      assert(q:register())
      util.later(srv, 0.1, { messages = { count = n, to = "Denmark", topic = "rec", spread = seconds * 0.8 } })
      local got, retries = collect(q, n, { limit = seconds + 20 })
      srv:control("POST", "/test/random_faults", { probability = 0 })
      assert.are.same(seq(n), got)
      assert.is_true(#retries > 0)
      q:close()
    end)
  end)
end
