-- luacheck: ignore 512 (loops that take one event and break are the point here)
-- The core path against the dev server over loopback: register, poll, iterate, close, errors.
local zulip = require("zulip")
local devserver = require("spec.support.devserver")
local util = require("spec.support.util")

describe("queues against the dev server", function()
  local srv, bot, client

  local function new_client(extra) return util.client(srv, extra) end

  local function send(content, extra)
    local msg = { type = "stream", to = "Denmark", topic = "spec", content = content }
    for k, v in pairs(extra or {}) do msg[k] = v end
    return srv:send("alice", msg)
  end

  local function last_request(path)
    local reqs = srv:control("GET", "/test/requests?n=50").requests
    for i = #reqs, 1, -1 do
      if reqs[i].path == path then return reqs[i] end
    end
  end

  srv = util.use_devserver{ heartbeat = 0.3, config = { heartbeat = 30 } }
  bot = devserver.users.bot
  before_each(function()
    client = new_client()
  end)

  it("registers and exposes the queue id and last_event_id", function()
    local q = client:queue{ event_types = { "message" } }
    assert.is_nil(q.id)
    local state, msg = q:register()
    assert.is_table(state, msg)
    assert.is_string(state.queue_id)
    assert.are.equal(state.queue_id, q.id)
    assert.are.equal(-1, q.last_event_id)
    if math.type then assert.are.equal("integer", math.type(q.last_event_id)) end
    assert.matches("zulip.Queue %(" .. state.queue_id:gsub("%-", "%%-"), tostring(q))
    q:close()
  end)

  it("encodes every register parameter as the server validates it", function()
    local q = client:queue{
      event_types = { "message", "realm" }, narrow = { { "channel", "Denmark" } },
      all_public_streams = false, apply_markdown = true, client_gravatar = true, slim_presence = true,
      include_subscribers = false, fetch_event_types = { "message", "realm" },
      client_capabilities = { notification_settings_null = true, bulk_message_deletion = true },
      queue_lifespan_secs = 1200,
    }
    local state, msg = q:register()
    assert.is_table(state, msg)
    assert.is_nil(state.ignored_parameters_unsupported)
    local form = last_request("/api/v1/register").form
    assert.are.equal('["message","realm"]', form.event_types)
    assert.are.equal('[["channel","Denmark"]]', form.narrow)
    assert.are.equal("false", form.all_public_streams)
    assert.are.equal("true", form.apply_markdown)
    assert.are.equal("true", form.client_gravatar)
    assert.are.equal("true", form.slim_presence)
    assert.are.equal("false", form.include_subscribers)
    assert.are.equal("1200", form.queue_lifespan_secs)
    assert.are.equal('{"bulk_message_deletion":true,"notification_settings_null":true}', form.client_capabilities)
    assert.are.equal(90, state.event_queue_longpoll_timeout_seconds)
    q:close()
  end)

  it("rejects wrong option types before any request", function()
    assert.has_error(function() client:queue{ event_types = "message" } end,
      "zulip: queue option 'event_types' must be a list of strings")
    assert.has_error(function() client:queue{ narrow = { "channel", "Denmark" } } end,
      "zulip: queue option 'narrow' must be a list of {operator, operand} string pairs")
    assert.has_error(function() client:queue{ apply_markdown = "yes" } end,
      "zulip: queue option 'apply_markdown' must be boolean")
    assert.has_error(function() client:queue{ queue_lifespan_secs = 1.5 } end,
      "zulip: queue option 'queue_lifespan_secs' must be an integer")
    assert.has_error(function() client:queue{ bogus = 1 } end, "zulip: unknown queue option 'bogus'")
    local q = assert(client:queue{})
    assert.has_error(function() q:get_events("x") end, "zulip: get_events expects a table of options")
    assert.has_error(function() q:get_events{ dont_block = 1 } end, "zulip: option 'dont_block' must be a boolean")
    assert.has_error(function() q:get_events() end, "zulip: queue is not registered (call q:register() first)")
    assert.has_error(function() q:each{ on_reset = 5 } end, "zulip: option 'on_reset' must be a function")
    q:close()
  end)

  it("polls: receives a message, with integers as integers and null as zulip.null", function()
    local q = client:queue{ event_types = { "message" }, client_gravatar = true }
    assert(q:register())
    local sent = send("hello **world**")
    local events, msg = q:get_events()
    assert.is_table(events, msg)
    assert.are.equal(1, #events)
    local ev = events[1]
    assert.are.equal("message", ev.type)
    assert.are.equal("hello **world**", ev.message.content)
    assert.are.equal(sent.id, ev.message.id)
    assert.are.equal(zulip.null, ev.message.avatar_url)
    if math.type then
      assert.are.equal("integer", math.type(ev.id))
      assert.are.equal("integer", math.type(ev.message.timestamp))
      assert.are.equal("integer", math.type(q.last_event_id))
    end
    assert.are.equal(ev.id, q.last_event_id)
    -- the next poll acknowledges it with an integer, never 5.0
    assert.are.same({}, assert(q:get_events{ dont_block = true }))
    assert.matches("last_event_id=" .. ev.id .. "&dont_block=true$", last_request("/api/v1/events").query)
    q:close()
  end)

  it("returns at once with dont_block and nothing pending", function()
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    local t0 = util.now()
    assert.are.same({}, assert(q:get_events{ dont_block = true }))
    assert.is_true(util.now() - t0 < 1)
    q:close()
  end)

  it("sends Basic auth, the User-Agent and Accept-Encoding", function()
    local q = client:queue{}
    assert(q:register())
    local r = last_request("/api/v1/register")
    assert.are.equal("Basic", r.headers.Authorization)
    assert.matches("^lua%-zulip/" .. zulip._VERSION:gsub("%.", "%%.") .. " %(", r.headers["User-Agent"])
    assert.matches("gzip", r.headers["Accept-Encoding"])
    q:close()
  end)

  it("iterates in order, hiding heartbeats, acknowledging each event only when asked for the next", function()
    srv:control("POST", "/test/config", { heartbeat = 0.2 })
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    for i = 1, 3 do send("m" .. i) end
    local got, acks = {}, {}
    for ev in q:each() do
      acks[#acks + 1] = q.last_event_id
      got[#got + 1] = ev.message.content
      assert.are_not.equal("heartbeat", ev.type)
      if #got == 3 then break end
    end
    assert.are.same({ "m1", "m2", "m3" }, got)
    -- while the body for event k runs, only events before it are acknowledged
    assert.are.same({ -1, 0, 1 }, acks)
    -- while the iterator waits, heartbeats (every 0.2 s) are acknowledged silently; then a message
    util.send_later(srv, 0.7, "alice", { type = "stream", to = "Denmark", topic = "spec", content = "m4" })
    for ev in q:each() do
      assert.are.equal("m4", ev.message.content)
      assert.is_true(ev.id > 3)  -- a heartbeat took an id in between
      break
    end
    q:close()
  end)

  it("redelivers the event whose loop body raised (Lua 5.4), never the ones before it", function()
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    for i = 1, 3 do send("r" .. i) end
    local ok = pcall(function()
      for ev in q:each() do
        if ev.message.content == "r2" then error("body failed") end
      end
    end)
    assert.is_false(ok)
    local lua54 = _VERSION == "Lua 5.4" and not rawget(_G, "jit")
    for ev in q:each() do
      assert.are.equal(lua54 and "r2" or "r3", ev.message.content)
      break
    end
    q:close()
  end)

  it("shows heartbeats when asked", function()
    srv:control("POST", "/test/config", { heartbeat = 0.1 })
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    for ev in q:each{ heartbeats = true } do
      assert.are.equal("heartbeat", ev.type)
      break
    end
    q:close()
  end)

  it("resumes a saved queue by id and last_event_id", function()
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    send("one")
    local first = assert(q:get_events())
    local saved_id, saved_last = q.id, q.last_event_id
    send("two")
    local q2 = client:queue{ id = saved_id, last_event_id = saved_last }
    assert.are.equal(saved_id, q2.id)
    local events = assert(q2:get_events())
    assert.are.equal(1, #events)
    assert.are.equal("two", events[1].message.content)
    assert.is_true(events[1].id > first[1].id)
    assert.has_error(function() client:queue{ last_event_id = 3 } end,
      "zulip: queue option 'last_event_id' needs 'id' (the saved queue to resume)")
    q2:close()
    q:close()
  end)

  it("closes idempotently, deletes the server's queue, and refuses use after close", function()
    local q = client:queue{}
    assert(q:register())
    local id = q.id
    assert.is_true(q:close())
    assert.is_true(q:close())
    assert.is_true(q.closed)
    for _, info in ipairs(srv:control("GET", "/test/queues").queues) do assert.are_not.equal(id, info.id) end
    assert.has_error(function() q:register() end, "zulip: queue is closed")
    assert.has_error(function() q:get_events() end, "zulip: queue is closed")
    assert.has_error(function() q:step(0) end, "zulip: queue is closed")
    assert.has_error(function() q:pollfd() end, "zulip: queue is closed")
    assert.matches("closed", tostring(q))
    assert.has_error(function() q.id = "x" end)
  end)

  it("closes through __gc and, on 5.4, through <close>", function()
    local q = client:queue{}
    assert(q:register())
    local id = q.id
    q = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    -- the collector never waits: the DELETE goes out the next time the client is driven
    local function alive()
      for _, info in ipairs(srv:control("GET", "/test/queues").queues) do if info.id == id then return true end end
    end
    local deadline = util.now() + 5
    while alive() and util.now() < deadline do client:step(0.05) end
    assert.is_nil(alive())
    if _VERSION == "Lua 5.4" and not rawget(_G, "jit") then
      local chunk = assert(load([[
        local client = ...
        local id
        do
          local q <close> = client:queue{}
          assert(q:register())
          id = q.id
        end
        return id
      ]]))
      id = chunk(zulip.client{ site = srv.site, email = srv.users.bot.email, api_key = srv.users.bot.api_key })
      for _, info in ipairs(srv:control("GET", "/test/queues").queues) do assert.are_not.equal(id, info.id) end
    end
  end)

  it("returns BAD_EVENT_QUEUE_ID from get_events, and the iterator re-registers with on_reset", function()
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    local old = q.id
    srv:control("POST", "/test/gc_queue", { queue_id = old })
    local events, msg, err = q:get_events{ dont_block = true }
    assert.is_nil(events)
    assert.are.equal("BAD_EVENT_QUEUE_ID", err.code)
    assert.are.equal(old, err.queue_id)
    assert.are.equal(400, err.http_status)
    assert.matches("BAD_EVENT_QUEUE_ID", msg)
    local resets = 0
    for ev in q:each{ on_reset = function(qq, state)
      resets = resets + 1
      assert.are.equal(q, qq)
      assert.are.equal(state.queue_id, qq.id)
      send("after reset")
    end } do
      assert.are.equal("after reset", ev.message.content)
      break
    end
    assert.are.equal(1, resets)
    assert.are_not.equal(old, q.id)
    q:close()
  end)

  it("raises on 401 from the iterator in bounded time, and returns UNAUTHORIZED from calls", function()
    local dead = srv.users.deactivated
    local c = zulip.client{ site = srv.site, email = dead.email, api_key = dead.api_key }
    local q = c:queue{}
    local state, msg, err = q:register()
    assert.is_nil(state)
    assert.are.equal("UNAUTHORIZED", err.code)
    assert.are.equal(401, err.http_status)
    assert.is_string(msg)
    local t0 = util.now()
    local ok, e = pcall(function() for _ in q:each() do end end)
    assert.is_false(ok)
    assert.matches("UNAUTHORIZED", e)
    assert.are.equal("UNAUTHORIZED", q.last_error.code)
    assert.is_true(util.now() - t0 < 2)
    q:close()
    local bad = zulip.client{ site = srv.site, email = bot.email, api_key = ("x"):rep(32) }
    local _, _, e2 = bad:request("GET", "users/me")
    assert.are.equal("UNAUTHORIZED", e2.code)
  end)

  describe("error codes", function()
    it("RATE_LIMIT_HIT with a float retry_after", function()
      local q = client:queue{}
      assert(q:register())
      srv:control("POST", "/test/fault", { kind = "ratelimit", path = "/api/v1/events", retry_after = 0.5 })
      local _, _, err = q:get_events{ dont_block = true }
      assert.are.equal("RATE_LIMIT_HIT", err.code)
      assert.are.equal(429, err.http_status)
      assert.are.equal(0.5, err.retry_after)
      q:close()
    end)

    it("BAD_REQUEST for what the server rejects", function()
      local q = client:queue{ narrow = { { "bogus", "x" } } }
      local _, msg, err = q:register()
      assert.are.equal("BAD_REQUEST", err.code)
      assert.are.equal(400, err.http_status)
      assert.matches("bogus", msg)
      q:close()
    end)

    it("HTTP for a proxy's HTML error page", function()
      local q = client:queue{}
      srv:control("POST", "/test/fault", { kind = "html502", path = "/api/v1/register" })
      local _, msg, err = q:register()
      assert.are.equal("HTTP", err.code)
      assert.are.equal(502, err.http_status)
      assert.is_nil(msg:find("<", 1, true))
      q:close()
    end)

    it("PROTOCOL for a reply that is not JSON", function()
      local q = client:queue{}
      srv:control("POST", "/test/fault", { kind = "invalid_json", path = "/api/v1/register" })
      local _, msg, err = q:register()
      assert.are.equal("PROTOCOL", err.code)
      assert.matches("not JSON", msg)
      q:close()
    end)

    it("NETWORK for a reset connection and a closed port", function()
      local q = client:queue{}
      srv:control("POST", "/test/fault", { kind = "reset", path = "/api/v1/register" })
      local _, _, err = q:register()
      assert.are.equal("NETWORK", err.code)
      q:close()
      local c = zulip.client{ site = "http://127.0.0.1:1", email = bot.email, api_key = bot.api_key }
      local _, msg2, err2 = c:queue{}:register()
      assert.are.equal("NETWORK", err2.code)
      assert.is_nil(msg2:find(bot.api_key, 1, true))
    end)

    it("TIMEOUT when the server does not answer in time", function()
      local c = new_client{ timeout = 0.3 }
      local q = c:queue{}
      srv:control("POST", "/test/fault", { kind = "delay", seconds = 2, path = "/api/v1/register" })
      local t0 = util.now()
      local _, _, err = q:register()
      assert.are.equal("TIMEOUT", err.code)
      assert.is_true(util.now() - t0 < 1.5)
      q:close()
    end)

    it("TOO_LARGE when a reply passes max_reply_bytes", function()
      local c = new_client{ max_reply_bytes = 2000 }
      srv:control("POST", "/test/config", { extra_users = 200 })
      local _, msg, err = c:queue{}:register()
      assert.are.equal("TOO_LARGE", err.code)
      assert.matches("max_reply_bytes", msg)
    end)
  end)

  it("never puts the API key in an error message or a string", function()
    local msgs = {}
    local q = client:queue{}
    for _, kind in ipairs{ "reset", "html502", "invalid_json", "unauthorized", "ratelimit" } do
      srv:control("POST", "/test/fault", { kind = kind, path = "/api/v1/register" })
      local _, msg, err = q:register()
      msgs[#msgs + 1] = msg
      msgs[#msgs + 1] = tostring(err)
      msgs[#msgs + 1] = err.msg
    end
    msgs[#msgs + 1] = tostring(client)
    msgs[#msgs + 1] = tostring(q)
    for _, s in ipairs(msgs) do assert.is_nil(s:find(bot.api_key, 1, true), s) end
    q:close()
  end)

  it("calls any endpoint with request, and sends messages", function()
    local me = assert(client:request("GET", "users/me"))
    assert.are.equal(bot.email, me.email)
    local me2 = assert(client:request("GET", "/api/v1/users/me"))
    assert.are.equal(me.user_id, me2.user_id)
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    local reply = assert(client:send_message{ type = "stream", to = "Denmark", topic = "Castle", content = "hi" })
    if math.type then assert.are.equal("integer", math.type(reply.id)) end
    local events = assert(q:get_events())
    assert.are.equal(reply.id, events[1].message.id)
    assert.are.equal("Castle", events[1].message.subject)
    local _, _, err = client:request("GET", "no/such/endpoint")
    assert.is_table(err)
    assert.has_error(function() client:request("FETCH", "x") end)
    assert.has_error(function() client:send_message{ to = "x" } end, "zulip: send_message needs 'content' (a string)")
    q:close()
  end)
end)
