-- Checks the Zulip dev server (devserver/zulip_devserver.py) against the
-- behaviour of the real Zulip server, over raw HTTP.  Every network call has
-- a timeout and every wait is bounded, so a broken server fails, never hangs.
local devserver = require("spec.support.devserver")
local socket = require("socket")
local cjson = require("cjson")
local util = require("spec.support.util")

local HEARTBEAT = 0.5   -- the server's default heartbeat in this file
local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local CAPS = '{"notification_settings_null":true}'

local srv

-- One request on a fresh connection; `user` is a key of srv.users or nil.
local function call(user, method, path, params, opts)
  opts = opts or {}
  local resp, err = devserver.http(srv.port, method, path, {
    auth = user and srv.users[user] or nil, form = params, headers = opts.headers,
    body = opts.body, timeout = opts.timeout or 5,
  })
  assert(resp, "request failed: " .. tostring(err))
  return resp
end

local function expect_error(resp, status, code, msg)
  assert.equals(status, resp.status, resp.body)
  assert.equals("error", resp.json.result)
  assert.equals(code, resp.json.code)
  if msg then assert.equals(msg, resp.json.msg) end
end

local function register(user, params)
  local resp = call(user, "POST", "/api/v1/register", params)
  assert.equals(200, resp.status, resp.body)
  return resp.json
end

local function merge(a, b)
  local t = {}
  for k, v in pairs(a) do t[k] = v end
  for k, v in pairs(b or {}) do t[k] = v end
  return t
end

-- GET /events that answers at once (dont_block=true unless overridden).
local function poll_now(user, queue_id, last_event_id, extra)
  return call(user, "GET", "/api/v1/events", merge(
    { queue_id = queue_id, last_event_id = last_event_id, dont_block = true }, extra))
end

-- A long-poll left open: returns the socket; finish_poll reads the reply.
local function start_poll(user, queue_id, last_event_id)
  local sock = socket.tcp()
  sock:settimeout(5)
  assert(sock:connect("127.0.0.1", srv.port))
  local query = devserver.form{ queue_id = queue_id, last_event_id = last_event_id }
  assert(devserver.write_request(sock, "GET", "/api/v1/events?" .. query,
                                 { headers = { Authorization = devserver.basic_auth(srv.users[user]) } }))
  return sock
end

local function finish_poll(sock, timeout)
  sock:settimeout(timeout or 5)
  local resp, err = devserver.read_response(sock)
  sock:close()
  assert(resp, "long-poll failed: " .. tostring(err))
  return resp
end

local function wait_until(predicate, timeout)
  local deadline = socket.gettime() + (timeout or 3)
  while socket.gettime() < deadline do
    if predicate() then return true end
    socket.sleep(0.02)
  end
  return predicate()
end

local function queue_info(queue_id)
  for _, q in ipairs(srv:control("GET", "/test/queues").queues) do
    if q.id == queue_id then return q end
  end
end

local function is_waiting(queue_id)
  return function()
    local q = queue_info(queue_id)
    return q ~= nil and q.waiting
  end
end

local function send(user, to, topic, content)
  local reply = srv:send(user, { type = "stream", to = to, topic = topic, content = content })
  assert.equals("success", reply.result)
  return reply.id
end

local function types_of(events)
  local t = {}
  for i, e in ipairs(events) do t[i] = e.type end
  return t
end

local function timed(f)
  local t0 = socket.gettime()
  local a, b, c = f()
  return socket.gettime() - t0, a, b, c
end

describe("zulip dev server", function()
  srv = util.use_devserver{ heartbeat = HEARTBEAT, args = { "--rate-limit", "0" } }

  describe("authentication", function()
    it("rejects a missing Authorization header with 401 UNAUTHORIZED", function()
      local resp = call(nil, "GET", "/api/v1/users/me")
      expect_error(resp, 401, "UNAUTHORIZED", "Not logged in: API authentication or user session required")
      assert.equals('Basic realm="zulip"', resp.headers["www-authenticate"])
    end)

    it("sends 401 UNAUTHORIZED (not INVALID_API_KEY) for bad credentials", function()
      local cases = {
        { { email = "bot@example.com", api_key = "wrongkey0123456789ABCDEFGHIJKLMN" }, "Invalid API key" },
        { { email = "bot@example.com", api_key = "short" }, "Malformed API key" },
        { { email = "bot@example.com", api_key = "botkey0123456789ABCDEFGHIJKLMNO!" }, "Malformed API key" },
        { { email = "alice@example.com", api_key = srv.users.bot.api_key }, "Invalid API key" },
        { srv.users.deactivated, "Account is deactivated" },
      }
      for _, case in ipairs(cases) do
        local resp = assert(devserver.http(srv.port, "GET", "/api/v1/users/me", { auth = case[1] }))
        expect_error(resp, 401, "UNAUTHORIZED", case[2])
        assert.equals('Basic realm="zulip"', resp.headers["www-authenticate"])
      end
    end)

    it("rejects malformed Basic headers with 401 and other schemes with 400", function()
      for _, header in ipairs{ "Basic", "Basic bm9jb2xvbg==", "Basic YTpiOmM=", "Basic a b" } do
        local resp = call(nil, "GET", "/api/v1/users/me", nil, { headers = { Authorization = header } })
        expect_error(resp, 401, "UNAUTHORIZED", "Invalid authorization header for basic auth")
      end
      local resp = call(nil, "GET", "/api/v1/users/me", nil, { headers = { Authorization = "Bearer abc" } })
      expect_error(resp, 400, "BAD_REQUEST", "This endpoint requires HTTP basic authentication.")
    end)

    it("accepts a lower-case scheme and a differently-cased, padded email", function()
      local header = "basic " .. require("mime").b64(" BOT@Example.com :" .. srv.users.bot.api_key)
      local resp = call(nil, "GET", "/api/v1/users/me", nil, { headers = { Authorization = header } })
      assert.equals(200, resp.status)
      assert.same({ 10, "bot@example.com", "Echo Bot" },
                  { resp.json.user_id, resp.json.email, resp.json.full_name })
    end)
  end)

  describe("routing and replies", function()
    it("answers a wrong method with 405, allowed_methods and no code", function()
      local resp = call("bot", "GET", "/api/v1/register")
      assert.equals(405, resp.status)
      assert.same({ result = "error", msg = "Method Not Allowed", allowed_methods = { "POST" } }, resp.json)
    end)

    it("answers unknown /api paths with a JSON 404", function()
      local resp = call("bot", "GET", "/api/v1/nope")
      assert.equals(404, resp.status)
      assert.equals("error", resp.json.result)
    end)

    it("sends compact JSON with a trailing newline and keeps connections alive", function()
      local sock = socket.tcp()
      sock:settimeout(5)
      assert(sock:connect("127.0.0.1", srv.port))
      local auth = { Authorization = devserver.basic_auth(srv.users.alice) }
      for _ = 1, 2 do
        assert(devserver.write_request(sock, "GET", "/api/v1/users/me", { headers = auth }))
        local resp = assert(devserver.read_response(sock))
        assert.equals(200, resp.status)
        assert.equals("application/json", resp.headers["content-type"])
        assert.is_nil(resp.headers.connection)
        assert.matches('^{"result":"success","msg":"",', resp.body)
        assert.equals("}\n", resp.body:sub(-2))
      end
      sock:close()
    end)

    it("gzips large replies when the client accepts gzip", function()
      srv:control("POST", "/test/config", { extra_users = 40 })
      local params = { fetch_event_types = '["realm_user"]' }
      local resp = call("bot", "POST", "/api/v1/register", params, { headers = { ["Accept-Encoding"] = "gzip" } })
      assert.equals(200, resp.status)
      assert.equals("gzip", resp.headers["content-encoding"])
      assert.equals("\31\139", resp.body:sub(1, 2))
      assert.equals(#resp.body, tonumber(resp.headers["content-length"]))
      local path = os.tmpname()
      local f = assert(io.open(path, "wb"))
      f:write(resp.body)
      f:close()
      local p = assert(io.popen("gzip -dc < '" .. path .. "'"))
      local decoded = cjson.decode(p:read("*a"))
      p:close()
      os.remove(path)
      assert.equals(42, #decoded.realm_users)

      local plain = call("bot", "POST", "/api/v1/register", params)
      assert.is_nil(plain.headers["content-encoding"])
      assert.equals(42, #plain.json.realm_users)
      local small = call("bot", "GET", "/api/v1/users/me", nil, { headers = { ["Accept-Encoding"] = "gzip" } })
      assert.is_nil(small.headers["content-encoding"])
    end)
  end)

  describe("POST /register", function()
    it("returns a uuid queue, version data, last_event_id -1 and all state by default", function()
      local r = register("bot", { client_capabilities = CAPS })
      assert.matches(UUID, r.queue_id)
      assert.equals(481, r.zulip_feature_level)
      assert.equals("11.0-dev+lua-zulip-devserver", r.zulip_version)
      assert.is_string(r.zulip_merge_base)
      assert.equals(-1, r.last_event_id)
      assert.equals(90, r.event_queue_longpoll_timeout_seconds)
      assert.equals(-1, r.max_message_id)
      assert.equals(2, #r.realm_users)
      -- client_gravatar defaults to true in register: avatar_url is null.
      assert.equals(cjson.null, r.realm_users[1].avatar_url)
      assert.equals(1, #r.subscriptions)
      assert.equals("Denmark", r.subscriptions[1].name)
      assert.is_nil(r.subscriptions[1].subscribers)
    end)

    it("filters initial state by fetch_event_types, else event_types", function()
      local r = register("bot", { event_types = '["message"]' })
      assert.equals(-1, r.max_message_id)
      assert.is_nil(r.realm_users)
      assert.is_nil(r.event_queue_longpoll_timeout_seconds)
      r = register("bot", { event_types = '["message"]', fetch_event_types = '["realm"]' })
      assert.equals(90, r.event_queue_longpoll_timeout_seconds)
      assert.is_nil(r.max_message_id)
      send("alice", "Denmark", "t", "x")
      assert.is_true(register("bot", { fetch_event_types = '["message"]' }).max_message_id > 0)
    end)

    it("honours include_subscribers, client_gravatar and extra channels", function()
      srv:control("POST", "/test/config", { extra_channels = 2 })
      local r = register("alice", { include_subscribers = true, client_gravatar = false,
                                    fetch_event_types = '["subscription","realm_user"]' })
      assert.equals(4, #r.subscriptions)   -- Denmark, Scotland, Channel 1, Channel 2
      for _, sub in ipairs(r.subscriptions) do assert.is_table(sub.subscribers) end
      assert.is_string(r.realm_users[1].avatar_url)
    end)

    it("requires notification_settings_null in client_capabilities", function()
      local resp = call("bot", "POST", "/api/v1/register", { client_capabilities = '{"bulk_message_deletion":true}' })
      expect_error(resp, 400, "BAD_REQUEST",
                   'client_capabilities["notification_settings_null"] field is missing: Field required')
    end)

    it("lists unknown parameters, sorted, in ignored_parameters_unsupported", function()
      local r = register("bot", { zzz = 1, aaa = "x", event_types = '["message"]' })
      assert.same({ "aaa", "zzz" }, r.ignored_parameters_unsupported)
    end)

    it("validates JSON-typed parameters strictly", function()
      local cases = {
        { { apply_markdown = "True" }, "apply_markdown is not valid JSON" },
        { { apply_markdown = "1" }, "apply_markdown is not a boolean" },
        { { event_types = "message" }, "event_types is not valid JSON" },
        { { event_types = "[1]" }, "event_types[0] is not a string" },
        { { queue_lifespan_secs = "5.0" }, "queue_lifespan_secs is not an integer" },
        { { narrow = '[["foo","bar"]]' }, "Operator foo not supported." },
        { { narrow = '[["is","followed"]]' }, "Operand followed not supported." },
      }
      for _, case in ipairs(cases) do
        expect_error(call("bot", "POST", "/api/v1/register", case[1]), 400, "BAD_REQUEST", case[2])
      end
      expect_error(call("bot", "POST", "/api/v1/register", { narrow = '[["channel"]]' }), 400, "BAD_REQUEST")
    end)
  end)

  describe("GET and DELETE /events parameters", function()
    local queue_id
    before_each(function()
      queue_id = register("bot", { event_types = '["message"]' }).queue_id
    end)

    it("rejects non-integer and non-JSON last_event_id and non-boolean dont_block", function()
      for raw, msg in pairs{ ["5.0"] = "last_event_id is not an integer",
                             ['"5"'] = "last_event_id is not an integer",
                             ["1e2"] = "last_event_id is not an integer",
                             abc = "last_event_id is not valid JSON" } do
        expect_error(poll_now("bot", queue_id, raw), 400, "BAD_REQUEST", msg)
      end
      expect_error(poll_now("bot", queue_id, -1, { dont_block = "True" }), 400, "BAD_REQUEST",
                   "dont_block is not valid JSON")
      expect_error(poll_now("bot", queue_id, -1, { dont_block = "1" }), 400, "BAD_REQUEST",
                   "dont_block is not a boolean")
    end)

    it("reports a missing last_event_id as BAD_REQUEST without var_name", function()
      local resp = call("bot", "GET", "/api/v1/events", { queue_id = queue_id, dont_block = true })
      expect_error(resp, 400, "BAD_REQUEST", "Missing 'last_event_id' argument")
      assert.is_nil(resp.json.var_name)
    end)

    it("needs queue_id unless dont_block, which then creates a queue", function()
      expect_error(call("bot", "GET", "/api/v1/events", { last_event_id = -1 }), 400, "BAD_REQUEST",
                   "Missing 'queue_id' argument")
      local resp = call("bot", "GET", "/api/v1/events", { dont_block = true, event_types = '["message"]' })
      assert.equals(200, resp.status)
      assert.matches(UUID, resp.json.queue_id)
      assert.matches('"events":%[%]', resp.body)
      assert.equals(200, poll_now("bot", resp.json.queue_id, -1).status)
    end)

    it("answers unknown or foreign queues with BAD_EVENT_QUEUE_ID", function()
      local resp = poll_now("bot", "no-such-queue", -1)
      expect_error(resp, 400, "BAD_EVENT_QUEUE_ID", "Bad event queue ID: no-such-queue")
      assert.equals("no-such-queue", resp.json.queue_id)
      expect_error(poll_now("alice", queue_id, -1), 400, "BAD_EVENT_QUEUE_ID")
      expect_error(call("alice", "DELETE", "/api/v1/events", { queue_id = queue_id }), 400, "BAD_EVENT_QUEUE_ID")
    end)

    it("DELETE needs queue_id (REQUEST_VARIABLE_MISSING) from the body or the query", function()
      local resp = call("bot", "DELETE", "/api/v1/events")
      expect_error(resp, 400, "REQUEST_VARIABLE_MISSING", "Missing 'queue_id' argument")
      assert.equals("queue_id", resp.json.var_name)
      -- A DELETE body that is not form-urlencoded is not parsed.
      resp = call("bot", "DELETE", "/api/v1/events", nil,
                  { body = "queue_id=" .. queue_id, headers = { ["Content-Type"] = "text/plain" } })
      expect_error(resp, 400, "REQUEST_VARIABLE_MISSING")
      resp = call("bot", "DELETE", "/api/v1/events?queue_id=" .. queue_id)
      assert.same({ result = "success", msg = "" }, resp.json)
      expect_error(poll_now("bot", queue_id, -1), 400, "BAD_EVENT_QUEUE_ID")
      local other = register("bot").queue_id
      assert.equals(200, call("bot", "DELETE", "/api/v1/events", { queue_id = other }).status)
    end)
  end)

  describe("acknowledgement and pruning", function()
    it("follows Zulip's ack rules", function()
      local queue_id = register("bot", { event_types = '["message"]' }).queue_id
      local resp = poll_now("bot", queue_id, -1)
      assert.equals(200, resp.status)
      assert.matches('"events":%[%]', resp.body)
      assert.is_nil(resp.json.queue_id)   -- immediate replies carry no queue_id
      assert.equals(200, poll_now("bot", queue_id, -1).status)
      expect_error(poll_now("bot", queue_id, 0), 400, "BAD_REQUEST", "Event 0 was not in this queue")

      send("alice", "Denmark", "t", "one")
      send("alice", "Denmark", "t", "two")
      local events = poll_now("bot", queue_id, -1).json.events
      assert.same({ 0, 1 }, { events[1].id, events[2].id })
      -- Unacknowledged events come back on every poll; without dont_block too.
      resp = call("bot", "GET", "/api/v1/events", { queue_id = queue_id, last_event_id = -1 })
      assert.equals(2, #resp.json.events)
      assert.is_nil(resp.json.queue_id)
      events = poll_now("bot", queue_id, 0).json.events
      assert.same({ 1 }, { events[1].id, events[2] and events[2].id })
      assert.equals(200, poll_now("bot", queue_id, 0).status)   -- the same ack twice is fine
      expect_error(poll_now("bot", queue_id, -1), 400, "BAD_REQUEST",
                   "An event newer than 0 has already been pruned!")
      -- Acking an id never delivered fails, but the pruning has happened.
      expect_error(poll_now("bot", queue_id, 5), 400, "BAD_REQUEST", "Event 5 was not in this queue")
      assert.equals(0, queue_info(queue_id).pending)
      assert.equals(1, queue_info(queue_id).newest_pruned_id)
    end)
  end)

  describe("long-polling", function()
    it("waits for the first event and replies with queue_id", function()
      local queue_id = register("bot", { apply_markdown = true }).queue_id
      local sock = start_poll("bot", queue_id, -1)
      assert.is_true(wait_until(is_waiting(queue_id)))
      local message_id = send("alice", "Denmark", "greetings", "hi <you> & @**Echo Bot**")
      local resp = finish_poll(sock)
      assert.equals(200, resp.status)
      assert.equals(queue_id, resp.json.queue_id)
      assert.is_nil(resp.json.ignored_parameters_unsupported)
      local event = resp.json.events[1]
      assert.equals("message", event.type)
      assert.equals(0, event.id)
      assert.same({ "mentioned" }, event.flags)
      local m = event.message
      assert.equals(message_id, m.id)
      assert.equals("<p>hi &lt;you&gt; &amp; @**Echo Bot**</p>", m.content)
      assert.equals("text/html", m.content_type)
      assert.same({ 11, "alice@example.com", "Alice", "stream", "Denmark", 1, "greetings" },
                  { m.sender_id, m.sender_email, m.sender_full_name, m.type,
                    m.display_recipient, m.stream_id, m.subject })
      assert.equals(cjson.null, m.avatar_url)
      assert.equals(math.floor(m.timestamp), m.timestamp)
      assert.equals("lua-zulip-devserver", m.client)
      assert.is_number(m.recipient_id)
      assert.is_false(m.is_me_message)
      assert.same({ {}, {}, {} }, { m.reactions, m.submessages, m.topic_links })
    end)

    it("sends heartbeats that bypass event_types and must be acked", function()
      local queue_id = register("bot", { event_types = '["message"]' }).queue_id
      local elapsed, resp = timed(function() return finish_poll(start_poll("bot", queue_id, -1)) end)
      assert.is_true(elapsed >= HEARTBEAT * 0.8 and elapsed < HEARTBEAT + 1.5, "took " .. elapsed)
      assert.same({ { type = "heartbeat", id = 0 } }, resp.json.events)
      assert.equals(queue_id, resp.json.queue_id)
      assert.equals(1, #poll_now("bot", queue_id, -1).json.events)   -- still queued
      assert.equals(0, #poll_now("bot", queue_id, 0).json.events)
    end)

    it("ends an older poll with 200 when a newer one arrives, then DELETE ends the newer", function()
      srv:control("POST", "/test/config", { heartbeat = 5 })
      local queue_id = register("bot").queue_id
      local first = start_poll("bot", queue_id, -1)
      assert.is_true(wait_until(is_waiting(queue_id)))
      -- A poll that fails the ack checks leaves the waiting one alone.
      expect_error(poll_now("bot", queue_id, 3), 400, "BAD_REQUEST")
      assert.is_true(queue_info(queue_id).waiting)
      local second = start_poll("bot", queue_id, -1)
      local resp = finish_poll(first, 2)
      assert.equals(200, resp.status)
      assert.matches('"events":%[%]', resp.body)
      assert.equals(queue_id, resp.json.queue_id)
      assert.is_true(wait_until(is_waiting(queue_id)))
      assert.same({ result = "success", msg = "" },
                  call("bot", "DELETE", "/api/v1/events", { queue_id = queue_id }).json)
      resp = finish_poll(second, 2)
      assert.equals(200, resp.status)
      assert.equals(queue_id, resp.json.queue_id)
      expect_error(poll_now("bot", queue_id, -1), 400, "BAD_EVENT_QUEUE_ID")
    end)

    it("survives a client that disconnects mid-wait and logs it once", function()
      srv:control("POST", "/test/config", { heartbeat = 5 })
      local q = register("bot").queue_id
      local sock = start_poll("bot", q, -1)
      assert.is_true(wait_until(is_waiting(q)))
      sock:close()
      assert.is_true(wait_until(function() return not queue_info(q).waiting end))
      send("alice", "Denmark", "t", "after the disconnect")
      assert.equals(1, #poll_now("bot", q, -1).json.events)
      local f = assert(io.open(srv.log_file))
      local log = f:read("*a")
      f:close()
      local _, lines = log:gsub("queue " .. q:gsub("%-", "%%-") .. ": client disconnected", "")
      assert.equals(1, lines)
    end)

    it("delivers direct messages to recipient and sender queues", function()
      local bot_q = register("bot").queue_id
      local alice_q = register("alice").queue_id
      local reply = srv:send("alice", { type = "direct", to = '["bot@example.com"]', content = "psst" })
      assert.equals("success", reply.result)
      local bot_event = poll_now("bot", bot_q, -1).json.events[1]
      assert.equals("private", bot_event.message.type)
      assert.equals("", bot_event.message.subject)
      assert.same({}, bot_event.flags)
      local ids = {}
      for i, r in ipairs(bot_event.message.display_recipient) do ids[i] = r.id end
      assert.same({ 10, 11 }, ids)
      local alice_event = poll_now("alice", alice_q, -1).json.events[1]
      assert.same({ "read" }, alice_event.flags)
      assert.equals("psst", alice_event.message.content)
      assert.equals("text/x-markdown", alice_event.message.content_type)
    end)
  end)

  describe("filtering", function()
    it("gives narrowed queues matching public-channel messages even unsubscribed", function()
      local q = register("bot", { narrow = '[["channel","verona"]]' }).queue_id
      send("alice", "Denmark", "t", "not for the narrow")
      send("alice", "Verona", "t", "for the narrow")
      local events = poll_now("bot", q, -1).json.events
      assert.equals(1, #events)
      assert.equals("Verona", events[1].message.display_recipient)
      assert.same({}, events[1].flags)
    end)

    it("ANDs narrow terms, case-insensitively", function()
      local narrow = '[["stream","DENMARK"],["topic","A"],["sender","ALICE@example.com"]]'
      local q = register("bot", { narrow = narrow }).queue_id
      send("alice", "Denmark", "a", "match")
      send("alice", "Denmark", "b", "wrong topic")
      send("bot", "Denmark", "a", "wrong sender")
      local events = poll_now("bot", q, -1).json.events
      assert.equals(1, #events)
      assert.equals("match", events[1].message.content)
    end)

    it("skips channels the owner is not subscribed to, unless all_public_streams", function()
      local plain = register("bot").queue_id
      local public = register("bot", { all_public_streams = true }).queue_id
      send("alice", "Scotland", "t", "x")
      assert.equals(0, #poll_now("bot", plain, -1).json.events)
      assert.equals(1, #poll_now("bot", public, -1).json.events)
    end)

    it("treats event_types=[] as heartbeats only", function()
      local q = register("bot", { event_types = "[]" }).queue_id
      send("alice", "Denmark", "t", "x")
      srv:control("POST", "/test/event", { user = "bot@example.com", event = { type = "presence" } })
      assert.equals(0, #poll_now("bot", q, -1).json.events)
      assert.same({ "heartbeat" }, types_of(finish_poll(start_poll("bot", q, -1)).json.events))
    end)
  end)

  describe("garbage collection", function()
    it("collects idle queues but never one with a waiting request", function()
      srv:control("POST", "/test/config", { heartbeat = 5 })
      local idle = register("bot").queue_id
      local busy = register("bot").queue_id
      local long_lived = register("bot", { queue_lifespan_secs = 60 }).queue_id
      local sock = start_poll("bot", busy, -1)
      -- The short timeout only once the poll waits: a poll the server took up late would
      -- otherwise find its queue already collected.
      assert.is_true(wait_until(is_waiting(busy)))
      srv:control("POST", "/test/config", { queue_timeout = 0.3, gc_interval = 0.1 })
      assert.is_true(wait_until(function() return queue_info(idle) == nil end))
      expect_error(poll_now("bot", idle, -1), 400, "BAD_EVENT_QUEUE_ID")
      socket.sleep(0.3)
      assert.is_true(queue_info(busy).waiting)
      assert.is_table(queue_info(long_lived))
      send("alice", "Denmark", "t", "wake up")
      assert.equals(1, #finish_poll(sock).json.events)
      -- Its last_connection_time is when the wait began, so it goes soon now.
      assert.is_true(wait_until(function() return queue_info(busy) == nil end))
    end)

    it("ends a waiting request with 200 when /test/gc_queue removes its queue", function()
      srv:control("POST", "/test/config", { heartbeat = 5 })
      local q = register("bot").queue_id
      local sock = start_poll("bot", q, -1)
      assert.is_true(wait_until(is_waiting(q)))
      assert.same({ q }, srv:control("POST", "/test/gc_queue", { queue_id = q }).removed)
      local resp = finish_poll(sock, 2)
      assert.equals(200, resp.status)
      assert.equals(q, resp.json.queue_id)
      expect_error(poll_now("bot", q, -1), 400, "BAD_EVENT_QUEUE_ID")
    end)
  end)

  describe("rate limiting", function()
    it("answers 429 RATE_LIMIT_HIT with a float Retry-After before touching the queue", function()
      srv:control("POST", "/test/config", { rate_limit = { 3, 60 } })
      local q = register("bot").queue_id
      local ok = call("bot", "GET", "/api/v1/users/me")
      assert.equals("3", ok.headers["x-ratelimit-limit"])
      assert.equals("1", ok.headers["x-ratelimit-remaining"])
      assert.equals(200, call("bot", "GET", "/api/v1/users/me").status)
      -- last_event_id=0 would be an error; the 429 comes first.
      local resp = poll_now("bot", q, 0)
      expect_error(resp, 429, "RATE_LIMIT_HIT")
      local retry = resp.json["retry-after"]
      assert.is_true(retry > 0 and retry <= 60 and retry ~= math.floor(retry))
      assert.matches("^%d+%.%d+$", resp.headers["retry-after"])
      assert.is_true(math.abs(tonumber(resp.headers["retry-after"]) - retry) < 1e-6)
      assert.equals(200, call("alice", "GET", "/api/v1/users/me").status)   -- per user
      srv:control("POST", "/test/config", { rate_limit = cjson.null })
      assert.equals(200, call("bot", "GET", "/api/v1/users/me").status)
    end)
  end)

  describe("faults", function()
    local function fault(spec)
      return srv:control("POST", "/test/fault", merge({ path = "/api/v1/users/me" }, spec))
    end
    local function me(opts)
      return devserver.http(srv.port, "GET", "/api/v1/users/me",
                            merge({ auth = srv.users.bot, timeout = 3 }, opts))
    end

    it("reset: drops the connection without a reply", function()
      assert.is_number(fault{ kind = "reset" }.fault_id)
      local resp, err = me()
      assert.is_nil(resp)
      assert.is_string(err)
      assert.equals(200, me().status)   -- count defaults to 1
    end)

    it("close_after_headers and truncate: the body never arrives complete", function()
      fault{ kind = "close_after_headers" }
      local resp, err, partial = me()
      assert.is_nil(resp)
      assert.equals("closed", err)
      assert.equals(200, partial.status)
      assert.is_true(tonumber(partial.headers["content-length"]) > 0)
      assert.equals("", partial.body)
      fault{ kind = "truncate" }
      resp, err, partial = me()
      assert.is_nil(resp)
      assert.equals("closed", err)
      local length = tonumber(partial.headers["content-length"])
      assert.equals(math.floor(length / 2), #partial.body)
    end)

    it("trickle: the real reply arrives slowly", function()
      fault{ kind = "trickle", interval = 0.001 }
      local elapsed, resp = timed(me)
      assert.equals(200, resp.status)
      assert.equals("bot@example.com", resp.json.email)
      assert.is_true(elapsed > 0.15, "took " .. elapsed)
    end)

    it("canned HTTP replies: status500, html502, invalid_json, ratelimit, unauthorized", function()
      fault{ kind = "status500" }
      local resp = me()
      assert.equals(500, resp.status)
      assert.same({ result = "error", msg = "Internal server error" }, resp.json)
      fault{ kind = "html502" }
      resp = me()
      assert.equals(502, resp.status)
      assert.equals("text/html", resp.headers["content-type"])
      assert.matches("502 Bad Gateway", resp.body)
      fault{ kind = "invalid_json" }
      resp = me()
      assert.equals(200, resp.status)
      assert.equals("application/json", resp.headers["content-type"])
      assert.is_nil(resp.json)
      fault{ kind = "ratelimit", retry_after = 0.25 }
      resp = me()
      expect_error(resp, 429, "RATE_LIMIT_HIT")
      assert.equals("0.25", resp.headers["retry-after"])
      assert.equals(0.25, resp.json["retry-after"])
      fault{ kind = "unauthorized" }
      resp = me()
      expect_error(resp, 401, "UNAUTHORIZED")
      assert.equals('Basic realm="zulip"', resp.headers["www-authenticate"])
    end)

    it("delay: the request is handled late", function()
      fault{ kind = "delay", seconds = 0.3 }
      local elapsed, resp = timed(me)
      assert.equals(200, resp.status)
      assert.is_true(elapsed >= 0.28, "took " .. elapsed)
    end)

    it("gc: the queue is gone before the request is handled", function()
      local q = register("bot").queue_id
      fault{ kind = "gc", path = "/api/v1/events" }
      expect_error(poll_now("bot", q, -1), 400, "BAD_EVENT_QUEUE_ID")
    end)

    it("silent: the request is read, nothing comes back, then the connection closes", function()
      fault{ kind = "silent", seconds = 0.4 }
      local resp, err = me{ timeout = 0.1 }
      assert.is_nil(resp)
      assert.equals("timeout", err)
      fault{ kind = "silent", seconds = 0.3 }
      local elapsed
      elapsed, resp, err = timed(me)
      assert.is_nil(resp)
      assert.equals("closed", err)
      assert.is_true(elapsed >= 0.25, "took " .. elapsed)
    end)

    it("raw: arbitrary bytes from a hostile server", function()
      fault{ kind = "raw", data = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}" }
      local resp = me()
      assert.equals(200, resp.status)
      assert.same({}, resp.json)
      fault{ kind = "raw", data_b64 = "AAFnYXJiYWdlDQo=" }   -- "\0\1garbage\r\n"
      local err
      resp, err = me()
      assert.is_nil(resp)
      assert.matches("bad status line", err)
    end)

    it("matches path, method and count, and only after authentication", function()
      fault{ kind = "status500", path = "/api/v1/events", method = "DELETE", count = 2 }
      assert.equals(2, srv:control("GET", "/test/stats").faults_pending)
      local q = register("bot").queue_id
      assert.equals(200, poll_now("bot", q, -1).status)
      assert.equals(401, call(nil, "DELETE", "/api/v1/events", { queue_id = q }).status)
      assert.equals(500, call("bot", "DELETE", "/api/v1/events", { queue_id = q }).status)
      assert.equals(500, call("bot", "DELETE", "/api/v1/events", { queue_id = q }).status)
      assert.equals(0, srv:control("GET", "/test/stats").faults_pending)
      assert.equals(200, call("bot", "DELETE", "/api/v1/events", { queue_id = q }).status)
      assert.has_error(function() fault{ kind = "no-such-kind" } end)
    end)

    it("random faults hit matching paths until turned off", function()
      srv:control("POST", "/test/random_faults",
                  { probability = 1, kinds = { "html502" }, seed = 1, paths = { "/api/v1/users/me" } })
      assert.equals(502, me().status)
      assert.equals(502, me().status)
      assert.equals(200, call("bot", "POST", "/api/v1/register").status)
      srv:control("POST", "/test/random_faults", { probability = 0 })
      assert.equals(200, me().status)
    end)

    it("records which fault hit a request", function()
      fault{ kind = "status500" }
      me()
      local last = srv:control("GET", "/test/requests?n=1").requests[1]
      assert.same({ "/api/v1/users/me", "status500", 500 }, { last.path, last.fault, last.status })
    end)
  end)

  describe("control endpoints", function()
    it("/test/event pushes arbitrary events to one queue or a user's accepting queues", function()
      local q = register("bot").queue_id
      local only_messages = register("bot", { event_types = '["message"]' }).queue_id
      srv:control("POST", "/test/event", { queue_id = q, event = { type = "weird", nested = { 1, 2 } } })
      local event = poll_now("bot", q, -1).json.events[1]
      assert.same({ type = "weird", id = 0, nested = { 1, 2 } }, event)
      local pushed = srv:control("POST", "/test/event", { user = "bot@example.com", event = { type = "odd" } })
      assert.same({ q }, pushed.queues)
      assert.equals(0, #poll_now("bot", only_messages, -1).json.events)
    end)

    it("/test/event with events wakes a long-poll once with all of them", function()
      srv:control("POST", "/test/config", { heartbeat = 5 })
      local q = register("bot").queue_id
      local sock = start_poll("bot", q, -1)
      assert.is_true(wait_until(is_waiting(q)))
      srv:control("POST", "/test/event", { queue_id = q, events = { { type = "a" }, { type = "b" } } })
      assert.same({ "a", "b" }, types_of(finish_poll(sock).json.events))
    end)

    it("register_initial_events makes register's last_event_id 0", function()
      srv:control("POST", "/test/config", { register_initial_events = true })
      local r = register("bot", { event_types = '["message"]' })
      assert.equals(0, r.last_event_id)
      assert.equals(1, #poll_now("bot", r.queue_id, -1).json.events)
      assert.equals(0, #poll_now("bot", r.queue_id, 0).json.events)
    end)

    it("longpoll_timeout_seconds sets or removes the register key", function()
      srv:control("POST", "/test/config", { longpoll_timeout_seconds = 30 })
      assert.equals(30, register("bot").event_queue_longpoll_timeout_seconds)
      srv:control("POST", "/test/config", { longpoll_timeout_seconds = cjson.null })
      local r = register("bot", { fetch_event_types = '["realm"]' })
      assert.is_nil(r.event_queue_longpoll_timeout_seconds)
      assert.is_string(r.realm_name)
    end)

    it("/test/messages sends numbered messages in bulk", function()
      local q = register("bot", { event_types = '["message"]' }).queue_id
      local reply = srv:control("POST", "/test/messages",
                                { count = 5, to = "Denmark", topic = "bulk", sender = "alice@example.com" })
      assert.equals(5, reply.count)
      assert.equals(reply.first_id + 4, reply.last_id)
      local contents = {}
      for i, e in ipairs(poll_now("bot", q, -1).json.events) do contents[i] = e.message.content end
      assert.same({ "m1", "m2", "m3", "m4", "m5" }, contents)
    end)

    it("/test/stats, /test/requests and /test/queues describe the server", function()
      local q = register("bot", { narrow = '[["is","dm"]]' }).queue_id
      call("alice", "GET", "/api/v1/users/me", nil, { headers = { ["User-Agent"] = "spec/1.0" } })
      local stats = srv:control("GET", "/test/stats")
      assert.equals(1, stats.queues)
      assert.equals(1, stats.requests["/api/v1/users/me"])
      assert.equals(0, stats.longpolls_waiting)
      local reqs = srv:control("GET", "/test/requests?n=2").requests
      assert.equals(2, #reqs)
      assert.same({ "GET", "/api/v1/users/me", 200, "spec/1.0", "Basic" },
                  { reqs[2].method, reqs[2].path, reqs[2].status, reqs[2].headers["User-Agent"],
                    reqs[2].headers.Authorization })
      assert.equals('[["is","dm"]]', reqs[1].form.narrow)
      local raw = assert(devserver.http(srv.port, "GET", "/test/requests?n=50")).body
      assert.is_nil(raw:find(srv.users.alice.api_key, 1, true))
      assert.is_nil(raw:find(devserver.basic_auth(srv.users.alice):sub(7), 1, true))
      local info = queue_info(q)
      assert.same({ "bot@example.com", { { "is", "dm" } }, -1, 0, false },
                  { info.owner, info.narrow, info.newest_pruned_id, info.pending, info.waiting })
    end)

    it("/test/schedule runs its steps in order from a server thread, over HTTP as a client would", function()
      srv:control("POST", "/test/config", { heartbeat = 5 })
      local q = register("bot", { event_types = '["message"]' }).queue_id
      local t0 = socket.gettime()
      local reply = srv:control("POST", "/test/schedule", { steps = {
        { wait_queues = { owners = { "bot@example.com" } } },
        { delay = 0.3, send = { user = "alice@example.com",
                                message = { type = "stream", to = "Denmark", topic = "s", content = "one" } } },
        { messages = { contents = { "two", "three" }, spread = 0.2, topic = "s" } },
        { control = { method = "POST", path = "/test/event", body = { queue_id = q, event = { type = "done" } } } },
      } })
      assert.is_number(reply.schedule_id)
      local sock = start_poll("bot", q, -1)
      local first = finish_poll(sock).json.events
      assert.is_true(socket.gettime() - t0 >= 0.25, "the first step did not wait its delay")
      assert.equals("one", first[1].message.content)
      assert.is_true(wait_until(function() return queue_info(q).pending >= 4 end))
      local events = poll_now("bot", q, -1).json.events
      assert.same({ "message", "message", "message", "done" }, types_of(events))
      assert.same({ "one", "two", "three" },
                  { events[1].message.content, events[2].message.content, events[3].message.content })
      local posts = 0
      for _, r in ipairs(srv:control("GET", "/test/requests?n=50").requests) do
        if r.path == "/api/v1/messages" and r.status == 200 then posts = posts + 1 end
      end
      assert.equals(3, posts)
    end)

    it("/test/schedule rejects bad steps, and /test/reset cancels what is still to come", function()
      for _, steps in ipairs{ {}, { { bogus = {} } }, { { send = { user = "nobody@example.com", message = {} } } },
                              { { delay = -1, control = { path = "/test/stats", method = "GET" } } },
                              { { get = { user = "bot@example.com", path = "/test/stats" } } } } do
        local resp = assert(devserver.http(srv.port, "POST", "/test/schedule", { json = { steps = steps } }))
        assert.equals(400, resp.status, resp.body)
      end
      srv:control("POST", "/test/schedule", { steps = {
        { delay = 0.5, send = { user = "alice@example.com",
                                message = { type = "stream", to = "Denmark", topic = "s", content = "late" } } } } })
      srv:control("POST", "/test/reset")
      local q = register("bot", { event_types = '["message"]' }).queue_id
      socket.sleep(1)
      assert.equals(0, queue_info(q).pending)
      assert.is_nil(srv:control("GET", "/test/stats").requests["/api/v1/messages"])
    end)

    it("/test/reset restores the command-line configuration", function()
      srv:control("POST", "/test/config", { heartbeat = 9, extra_users = 3 })
      register("bot")
      srv:control("POST", "/test/reset")
      local stats = srv:control("GET", "/test/stats")
      assert.equals(HEARTBEAT, stats.config.heartbeat)
      assert.equals(0, stats.queues)
      assert.has_error(function() srv:control("POST", "/test/config", { no_such_key = 1 }) end)
    end)
  end)

  describe("process", function()
    it("exits by itself after --lifetime and when --parent-pid is gone", function()
      local p = assert(io.popen("sleep 0.3 >/dev/null 2>&1 & echo $!"))
      local parent = p:read("*l")
      p:close()
      local short = devserver.start{ args = { "--lifetime", "1", "--quiet" } }
      local orphan = devserver.start{ args = { "--parent-pid", parent, "--quiet" } }
      assert.is_true(wait_until(function()
        return not devserver.process_alive(short.pid) and not devserver.process_alive(orphan.pid)
      end, 5))
      short:stop()
      orphan:stop()
      short:stop()   -- idempotent
    end)

    it("start() waits for the plain twin's port file, not just the TLS port's", function()
      -- The server writes --port-file first: seen alone, it must not make the
      -- TLS port the control port (control requests would then be plain HTTP
      -- to the TLS port, which closes the connection).
      local p = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/lua-zulip-ports.XXXXXX\""))
      local dir = p:read("*l")
      p:close()
      local function put(name, text)
        local f = assert(io.open(dir .. "/" .. name, "w"))
        f:write(text)
        f:close()
      end
      local ok, err = pcall(function()
        assert.same({}, { devserver.read_ports(dir, false) })
        put("port", "4431\n")
        assert.same({ 4431, 4431 }, { devserver.read_ports(dir, false) })
        assert.same({}, { devserver.read_ports(dir, true) })
        put("plain-port", "8081\n")
        assert.same({ 4431, 8081 }, { devserver.read_ports(dir, true) })
      end)
      os.execute("rm -rf '" .. dir .. "'")
      assert(ok, err)
    end)

    local has_luasec, ssl = pcall(require, "ssl")
    local tls_it = has_luasec and it or pending

    local function https_me(server, params)
      local sock = socket.tcp()
      sock:settimeout(5)
      assert(sock:connect("127.0.0.1", server.port))
      local conn = assert(ssl.wrap(sock, merge({ mode = "client", protocol = "any", verify = "peer",
                                                 cafile = server.ca_file }, params)))
      conn:settimeout(5)
      local ok, err = conn:dohandshake()
      if ok then
        ok, err = devserver.write_request(conn, "GET", "/api/v1/users/me",
                                          { headers = { Authorization = devserver.basic_auth(server.users.bot) } })
      end
      local resp
      if ok then resp, err = devserver.read_response(conn) end
      conn:close()
      return resp, err
    end

    tls_it("serves HTTPS, with control over the plain twin port", function()
      local tls = devserver.start{ tls = true }
      local ok, err = pcall(function()
        assert.matches("^https://127%.0%.0%.1:%d+$", tls.site)
        assert.not_equals(tls.port, tls.control_port)
        local resp = assert(https_me(tls))
        assert.equals(200, resp.status)
        assert.equals("bot@example.com", resp.json.email)
        assert.equals(1, tls:control("GET", "/test/stats").requests["/api/v1/users/me"])
      end)
      tls:stop()
      assert(ok, err)
    end)

    tls_it("requires a client certificate with client_ca", function()
      local tls = devserver.start{ client_ca = true }
      local ok, err = pcall(function()
        local resp = https_me(tls)
        assert.is_nil(resp)
        resp = assert(https_me(tls, { certificate = tls.client_cert, key = tls.client_key }))
        assert.equals(200, resp.status)
      end)
      tls:stop()
      assert(ok, err)
    end)
  end)
end)
