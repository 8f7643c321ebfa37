-- Hostile and broken servers: replies that trickle, nest too deep, break HTTP, redirect to
-- another host, or are too large; and the secrets a client must never show (the API key, in any
-- error, log line, trace or tostring: README's security notes).
local zulip = require("zulip")
local devserver = require("spec.support.devserver")
local util = require("spec.support.util")
local mime = require("mime")
local socket = require("socket")

describe("a hostile server", function()
  local srv, bot

  local function new_client(extra) return util.client(srv, extra) end

  -- A request the client never repeats on its own (a POST that may have reached the server), so
  -- that the error is the one this reply makes; the second try of a GET would get a sane reply.
  local function post(c)
    return c:request("POST", "messages", { type = "stream", to = "Denmark", topic = "hostile", content = "x" })
  end

  -- the next /api request gets exactly these bytes, then EOF
  local function raw(data, path)
    srv:control("POST", "/test/fault", { kind = "raw", data_b64 = mime.b64(data), path = path })
  end

  local function http(status_line, headers, body)
    return status_line .. "\r\n" .. table.concat(headers, "\r\n") .. (#headers > 0 and "\r\n" or "")
      .. "\r\n" .. (body or "")
  end

  local function json_reply(body)
    return http("HTTP/1.1 200 OK", { "Content-Type: application/json", "Content-Length: " .. #body }, body)
  end

  srv = util.use_devserver{ heartbeat = 30 }
  bot = devserver.users.bot

  describe("that is slow", function()
    it("cuts off a reply that trickles below low_speed_limit once it has started", function()
      local c = new_client{ timeout = 30, low_speed_time = 1, low_speed_limit = 1000 }
      srv:control("POST", "/test/fault", { kind = "trickle", interval = 0.05, path = "/api/v1/messages" })
      local t0 = util.now()
      local r, msg, err = post(c)
      local took = util.now() - t0
      assert.is_nil(r)
      assert.are.equal("TIMEOUT", err.code, msg)
      assert.matches("slower than 1000 bytes/s over 1 s", msg)
      -- the status line alone takes 17 x 0.05 s, then one second of window; far below timeout = 30
      assert.is_true(took > 1 and took < 6, ("took %.2f s"):format(took))
    end)

    it("does not cut off a long-poll that is silent for longer than low_speed_time", function()
      srv:control("POST", "/test/config", { heartbeat = 2.5 })
      local c = new_client{ low_speed_time = 1, low_speed_limit = 1000 }
      local q = c:queue{ event_types = { "message" } }
      assert(q:register())
      local t0 = util.now()
      local events, msg = q:get_events()
      local took = util.now() - t0
      assert.is_table(events, msg)
      assert.are.equal("heartbeat", events[1] and events[1].type)
      assert.is_true(took >= 2, ("the poll was silent for only %.2f s"):format(took))
      q:close()
    end)
  end)

  describe("whose JSON nests deep", function()
    local function nested(depth)  -- {"result":"success","msg":"","x":[[...]]}: depth levels in all
      return '{"result":"success","msg":"","x":' .. ("["):rep(depth - 1) .. ("]"):rep(depth - 1) .. "}"
    end

    it("accepts 1000 levels", function()
      raw(json_reply(nested(1000)))
      local r, msg = new_client():request("GET", "users/me")
      assert.is_table(r, msg)
      local depth, v = 1, r.x
      while type(v) == "table" and v[1] ~= nil do depth, v = depth + 1, v[1] end
      assert.are.equal(999, depth)
    end)

    it("answers 1001 levels with PROTOCOL and the position", function()
      raw(json_reply(nested(1001)))
      local r, msg, err = post(new_client())
      assert.is_nil(r)
      assert.are.equal("PROTOCOL", err.code)
      assert.matches("too deeply nested at character %d+", msg)
      assert.are.equal(200, err.http_status)
    end)
  end)

  describe("that breaks HTTP", function()
    local cases = {
      { "garbage without a status line", "\0\1\2 garbage\r\n\r\n", "PROTOCOL", "HTTP/0.9" },
      { "an HTTP/0.9 reply", '{"result":"success","msg":""}', "PROTOCOL", "HTTP/0.9" },
      { "a status line that is not HTTP", http("HTTP/1.1 abc OK", { "Content-Length: 2" }, "{}"),
        "PROTOCOL", "" },
      { "a negative Content-Length", http("HTTP/1.1 200 OK", { "Content-Length: -5" }, "{}"),
        "PROTOCOL", "Content%-Length" },
      { "a NUL byte in a header", http("HTTP/1.1 200 OK", { "X-A: a\0b", "Content-Length: 2" }, "{}"),
        "PROTOCOL", "" },
      { "a body that is not gzip", http("HTTP/1.1 200 OK", { "Content-Encoding: gzip", "Content-Length: 9" },
        "\31\139\8garbag"), "PROTOCOL", "" },
      { "a body that is not brotli", http("HTTP/1.1 200 OK", { "Content-Encoding: br", "Content-Length: 9" },
        "\255\255garbage"), "PROTOCOL", "Encoding" },
      { "a Content-Encoding nobody asked for", http("HTTP/1.1 200 OK", { "Content-Encoding: zstd",
        "Content-Length: 2" }, "{}"), "PROTOCOL", "Encoding" },
      { "a bad chunk size", http("HTTP/1.1 200 OK", { "Transfer-Encoding: chunked" }, "zz\r\n{}\r\n0\r\n\r\n"),
        "NETWORK", "chunk" },
      { "a body shorter than its Content-Length", http("HTTP/1.1 200 OK", { "Content-Length: 100" }, "{}"),
        "NETWORK", "remaining" },
      { "a header line of 200 KB", http("HTTP/1.1 200 OK", { "X-Big: " .. ("a"):rep(200000), "Content-Length: 2" },
        "{}"), "TOO_LARGE", "header" },
      { "50,000 headers", http("HTTP/1.1 200 OK", { ("X-A: b\r\n"):rep(50000) .. "Content-Length: 2" }, "{}"),
        "TOO_LARGE", "headers" },
      { "a Content-Length of 10^23", http("HTTP/1.1 200 OK", { "Content-Length: 99999999999999999999999" }, "{}"),
        "TOO_LARGE", "max_reply_bytes" },
      { "status 999", http("HTTP/1.1 999 Odd", { "Content-Length: 2" }, "{}"), "HTTP", "999" },
      { "an HTML error page", http("HTTP/1.1 503 Busy", { "Content-Type: text/html", "Content-Length: 38" },
        "<html><h1>Down for upkeep</h1></html>\n"), "HTTP", "Down for upkeep" },
      { "a success without result", json_reply('{"events":[]}'), "PROTOCOL", "no result field" },
      { "a reply that is not JSON", json_reply("<html>"), "PROTOCOL", "not JSON" },
    }
    for _, case in ipairs(cases) do
      local name, data, code, pattern = case[1], case[2], case[3], case[4]
      it("answers " .. name .. " with " .. code .. ", and the client goes on working", function()
        local c = new_client()
        raw(data)
        local r, msg, err = post(c)
        assert.is_nil(r)
        assert.is_string(msg)
        assert.are.equal(code, err.code, msg)
        assert.matches(pattern, msg)
        assert.are.equal(msg, tostring(err))
        local me, msg2 = c:request("GET", "users/me")
        assert.is_table(me, msg2)
        assert.are.equal(bot.email, me.email)
      end)
    end

    it("answers every input the HTTP parser's fuzzer ever flagged with a reply or an error", function()
      -- spec/fixtures/fuzz/h1/*: byte 0 chose max_body in h1_fuzz (64 B, 1 KiB, 64 KiB, 256 MiB)
      local dir = util.root .. "/spec/fixtures/fuzz/h1"
      local limits, n = { [0] = 64, 1024, 65536, 256 * 1024 * 1024 }, 0
      for name in require("lfs").dir(dir) do
        local data = name:sub(1, 1) ~= "." and util.read_file(dir .. "/" .. name)
        if data and #data > 0 then
          n = n + 1
          local c = new_client{ max_reply_bytes = limits[data:byte(1) % 4] }
          raw(data:sub(2))
          local r, msg, err = c:request("GET", "users/me")
          assert.is_true(type(r) == "table" or (type(msg) == "string" and type(err.code) == "string"), name)
          -- (the server is still fine; this client's limit may be too small for a real reply)
          assert.is_table(new_client():request("GET", "users/me"), name)
        end
      end
      assert.is_true(n >= 1, "no fixtures in " .. dir)
    end)

    it("fails a Content-Length past max_reply_bytes before the body comes (TOO_LARGE)", function()
      -- the body is 10 bytes of 5000: without the early check this would be "transfer closed"
      raw(http("HTTP/1.1 200 OK", { "Content-Length: 5000" }, ("x"):rep(10)))
      local r, msg, err = post(new_client{ max_reply_bytes = 1000 })
      assert.is_nil(r)
      assert.are.equal("TOO_LARGE", err.code, msg)
      assert.are.equal("zulip: TOO_LARGE: reply larger than max_reply_bytes (1000 bytes)", msg)
    end)

    it("stops reading a reply without Content-Length at max_reply_bytes (TOO_LARGE)", function()
      raw(http("HTTP/1.0 200 OK", { "Content-Type: application/json" }, '["' .. ("x"):rep(100000) .. '"]'))
      local r, msg, err = new_client{ max_reply_bytes = 1000 }:request("GET", "users/me")
      assert.is_nil(r)
      assert.are.equal("TOO_LARGE", err.code, msg)
    end)

    it("ignores a Retry-After that is negative, absurd or garbage", function()
      for _, value in ipairs{ "-5", "banana", "1e300", "Thu, 99 Foo 2024 99:99:99 GMT" } do
        raw(http("HTTP/1.1 429 Too Many Requests", { "Retry-After: " .. value, "Content-Length: 0" }))
        local r, msg, err = new_client():queue{}:register()  -- no retry: a request would wait it out
        assert.is_nil(r)
        assert.are.equal("RATE_LIMIT_HIT", err.code, msg)
        assert.is_nil(err.retry_after, value)
      end
      raw(http("HTTP/1.1 429 Too Many Requests", { "Retry-After: 7", "Content-Length: 0" }))
      local _, _, err = new_client():queue{}:register()
      assert.are.equal(7, err.retry_after)
    end)
  end)

  describe("that redirects", function()
    it("never follows, so credentials never reach another host", function()
      local listener = assert(socket.bind("127.0.0.1", 0))
      local _, port = listener:getsockname()
      listener:settimeout(0)
      raw(http("HTTP/1.1 302 Found", { "Location: http://127.0.0.1:" .. port .. "/api/v1/users/me",
                                        "Content-Length: 0" }))
      local r, msg, err = new_client{ timeout = 2 }:request("GET", "users/me")
      -- had the client followed, its request would wait in the listener's backlog until now
      local conn = listener:accept()
      local seen = ""
      if conn then
        conn:settimeout(1)
        local data, _, partial = conn:receive(65536)
        seen = data or partial or ""
        conn:close()
      end
      listener:close()
      assert.is_nil(seen:lower():find("authorization", 1, true), "credentials were sent: " .. seen)
      assert.is_nil(conn, "the client followed the redirect")
      assert.is_nil(r)
      assert.are.equal("HTTP", err.code, msg)
      assert.are.equal(302, err.http_status)
    end)
  end)

  describe("that replays events", function()
    local function events_reply(ids)
      local evs = {}
      for i, id in ipairs(ids) do evs[i] = ('{"type":"heartbeat","id":%d}'):format(id) end
      return json_reply('{"result":"success","msg":"","events":[' .. table.concat(evs, ",") .. "]}")
    end

    it("hands out each event id once, in order, however a reply mixes old, repeated and new ones", function()
      local q = new_client():queue{ event_types = { "message" } }
      assert(q:register())
      local last = q.last_event_id
      raw(events_reply{ last + 1, last + 2 }, "/api/v1/events")  -- nothing to drop
      local got = assert(q:get_events())
      assert.are.same({ last + 1, last + 2 }, { got[1].id, got[2].id, got[3] })
      last = last + 2
      raw(events_reply{ last - 1, last, last + 1, last + 1, last + 3, last + 2 }, "/api/v1/events")
      got = assert(q:get_events())
      local ids = {}
      for i, ev in ipairs(got) do ids[i] = ev.id end
      assert.are.same({ last + 1, last + 3 }, ids)
      assert.are.equal(last + 3, q.last_event_id)
      last = last + 3
      raw(events_reply{ last + 1, last + 1, last + 2 }, "/api/v1/events")  -- new, then a repeat
      got = assert(q:get_events())
      assert.are.same({ last + 1, last + 2 }, { got[1].id, got[2].id, got[3] })
      raw(events_reply{ last, last + 2 }, "/api/v1/events")  -- all of it seen before
      assert.are.same({}, assert(q:get_events()))
      q:close()
    end)
  end)
end)

describe("secrets", function()
  local srv, bot

  srv = util.use_devserver{ heartbeat = 30 }
  bot = devserver.users.bot

  it("never show the API key, even in the curl trace of debug = true", function()
    srv:control("POST", "/test/reset", {})
    local lines, texts = {}, {}
    local function seen(s) texts[#texts + 1] = tostring(s) end
    local c = zulip.client{ site = srv.site, email = bot.email, api_key = bot.api_key, timeout = 5, debug = true,
      on_log = function(level, msg, fields)
        lines[#lines + 1] = { level = level, msg = msg, fields = fields }
        seen(msg)
        for k, v in pairs(fields or {}) do seen(k); seen(v) end
      end }
    seen(c)
    seen(c._session)
    assert.matches("^zulip%.Session %(bot@example%.com at http://127", tostring(c._session))
    local q = c:queue{ event_types = { "message" } }
    seen(q)
    assert(q:register())
    seen(q)
    assert(q:get_events{ dont_block = true })
    assert(c:request("GET", "users/me"))
    for _, fault in ipairs{ "unauthorized", "html502", "status500" } do
      srv:control("POST", "/test/fault", { kind = fault, path = "/api/v1/messages" })
      local r, msg, err = c:request("POST", "messages", { type = "stream", to = "Denmark", topic = "s", content = "x" })
      assert.is_nil(r)
      seen(msg); seen(err); seen(err.msg)
    end
    srv:control("POST", "/test/fault", { kind = "raw", path = "/api/v1/users/me",
      data_b64 = mime.b64("HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n") })
    seen(select(2, c:request("GET", "users/me")))
    q:close()
    seen(q)

    local key = bot.api_key
    local forms = { key, mime.b64(bot.email .. ":" .. key), mime.b64(key), key:sub(1, 12) }
    local all = table.concat(texts, "\n")
    for _, form in ipairs(forms) do
      assert.is_nil(all:find(form, 1, true), "found " .. form)
    end
    -- and the trace really is there: the request line, the scrubbed credentials, the replies
    local auth, request_line, reply = 0, false, false
    for _, l in ipairs(lines) do
      if l.level == "debug" then
        assert.are.equal("curl", l.fields.source)
        if l.msg == "> Authorization: Basic [redacted]" then auth = auth + 1 end
        if l.msg:match("^> POST /api/v1/register HTTP/1.1$") then request_line = true end
        if l.msg:match("^< HTTP/1.1 401") then reply = true end
      end
    end
    assert.is_true(auth >= 6, "scrubbed Authorization lines: " .. auth)
    assert.is_true(request_line)
    assert.is_true(reply)
  end)

  it("trace nothing without debug", function()
    local levels = {}
    local c = zulip.client{ site = srv.site, email = bot.email, api_key = bot.api_key, timeout = 5,
      on_log = function(level) levels[level] = (levels[level] or 0) + 1 end }
    assert(c:request("GET", "users/me"))
    assert.is_nil(levels.debug)
  end)
end)
