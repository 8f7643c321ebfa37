-- The core's contract, point by point: the API's names, zulip.decode, no I/O at zulip.client,
-- where each setting comes from, what goes on the wire (encoding, User-Agent, compression, one
-- connection), timeouts, the error fields, client:request and send_message, hidden heartbeats,
-- TLS and proxies, and no API key in any string. Each spec here fails if the point it names is
-- taken away. What other specs pin down is not repeated: recovery from faults
-- (recovery_spec.lua), the JSON decoder (json_spec.lua), event loops (eventloop_spec.lua), TLS
-- verification (tls_spec.lua), hostile replies (hostile_spec.lua), lifetimes (lifetime_spec.lua).
-- Real dev server on 127.0.0.1, real libcurl, bounded waits.
local zulip = require("zulip")
local config = require("zulip.config")
local encode = require("zulip.encode")
local mime = require("mime")
local socket = require("socket")
local devserver = require("spec.support.devserver")
local util = require("spec.support.util")

local has_int = math.type ~= nil
local lua54 = _VERSION == "Lua 5.4" and not rawget(_G, "jit")

local function env_of(t)
  return function(name) return t[name] end
end

describe("core contract", function()
  local srv, bot

  local function new_client(extra) return util.client(srv, extra) end

  -- The /api requests the server saw, oldest first, optionally only those to `path`.
  local function requests(path, method)
    local out = {}
    for _, r in ipairs(srv:control("GET", "/test/requests?n=200").requests) do
      if (path == nil or r.path == path) and (method == nil or r.method == method) then out[#out + 1] = r end
    end
    return out
  end

  local function last_request(path, method)
    local reqs = requests(path, method)
    return reqs[#reqs]
  end

  local function raw_fault(path, status_line, headers, body)
    local head = { "HTTP/1.1 " .. status_line, "Content-Type: application/json" }
    for _, h in ipairs(headers) do head[#head + 1] = h end
    head[#head + 1] = "Content-Length: " .. #body
    srv:control("POST", "/test/fault", { kind = "raw", path = path,
      data = table.concat(head, "\r\n") .. "\r\n\r\n" .. body })
  end

  -- Drive a queue without blocking for `secs` and return the largest q:timeout() seen meanwhile:
  -- the transfer's next timer (curl's while it connects), which with no shorter timer pending is
  -- the request's whole timeout.
  local function timer_of(q, secs)
    local t0, best = util.now(), -1
    q:step(0)
    while util.now() - t0 < secs do
      q:step(0.02)
      local t = q:_loop_timeout(true)  -- the engine's own timer: without the poll core's POLL_SLICE cap
      if t and t > best then best = t end
    end
    return best
  end

  srv = util.use_devserver{ heartbeat = 30 }
  bot = devserver.users.bot

  describe("the API surface", function()
    it("has every public name of the API", function()
      assert.is_function(zulip.client)
      assert.is_function(zulip.decode)
      assert.is_string(zulip._VERSION)
      assert.are.equal("userdata", type(zulip.null))  -- a lightuserdata sentinel
      local c = new_client()
      for _, name in ipairs{ "queue", "request", "send_message" } do assert.is_function(c[name], name) end
      local q = c:queue{}
      for _, name in ipairs{ "register", "get_events", "each", "close" } do assert.is_function(q[name], name) end
      q:close()
    end)

    it("zulip.decode is the core's decoder: integers, null, and nil, msg, err with a position", function()
      local v = zulip.decode('{"id": 5, "x": null, "f": 1.5, "s": "\\ud83d\\ude00"}')
      assert.are.equal(5, v.id)
      if has_int then assert.are.equal("integer", math.type(v.id)) end
      assert.are.equal(zulip.null, v.x)
      assert.are.equal(1.5, v.f)
      assert.are.equal("\240\159\152\128", v.s)
      assert.are.equal(zulip.null, zulip.decode("null"))
      local n = select("#", zulip.decode('[1, 2,'))
      local bad, msg, err = zulip.decode('[1, 2,')
      assert.are.equal(3, n)
      assert.is_nil(bad)
      assert.is_string(msg)
      assert.matches("at character %d+", msg)
      assert.are.equal("PROTOCOL", err.code)
      assert.are.equal(msg, err.msg)
      assert.is_number(err.position)
      assert.is_true(err.position >= 6 and err.position <= 8, tostring(err.position))
      assert.has_error(function() zulip.decode({}) end)
    end)

    it("makes a client without any request to the server", function()
      local c = new_client()
      local q = c:queue{ event_types = { "message" } }
      assert.are.equal(0, #requests())
      q:close()
      assert.are.equal(0, #requests())  -- closing a queue never registered sends nothing either
    end)
  end)

  describe("settings", function()
    local dir
    before_each(function() dir = util.tmpdir() end)
    after_each(function() os.execute("rm -rf " .. util.shquote(dir)) end)

    local function rc_file(name, fields)
      local lines = { "[api]" }
      local keys = {}
      for k in pairs(fields) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do lines[#lines + 1] = k .. "=" .. fields[k] end
      return util.write_file(dir .. "/" .. name, table.concat(lines, "\n") .. "\n")
    end

    -- field, environment variable, zuliprc key, then the value at each level and what it resolves to
    local LEVELS = {
      { "email", "ZULIP_EMAIL", "email", "rc@example.com", "env@example.com", "opt@example.com" },
      { "api_key", "ZULIP_API_KEY", "key", ("r"):rep(32), ("e"):rep(32), ("o"):rep(32) },
      { "site", "ZULIP_SITE", "site", "rc.example.com", "env.example.com", "opt.example.com",
        resolved = function(v) return "https://" .. v end },
      { "client_cert", "ZULIP_CERT", "client_cert", "/rc/c.pem", "/env/c.pem", "/opt/c.pem" },
      { "client_cert_key", "ZULIP_CERT_KEY", "client_cert_key", "/rc/k.pem", "/env/k.pem", "/opt/k.pem" },
      { "cert_bundle", "ZULIP_CERT_BUNDLE", "cert_bundle", "/rc/ca.pem", "/env/ca.pem", "/opt/ca.pem" },
      { "insecure", "ZULIP_ALLOW_INSECURE", "insecure", "true", "false", true,
        resolved = function(v) return v == true or v == "true" end },
    }
    for _, L in ipairs(LEVELS) do
      local field, env_name, rc_key, rc_v, env_v, opt_v = L[1], L[2], L[3], L[4], L[5], L[6]
      local want = L.resolved or function(v) return v end
      it(("resolves %s: option, then %s, then zuliprc '%s'"):format(field, env_name, rc_key), function()
        local base = { email = "base@example.com", key = ("b"):rep(32), site = "base.example.com" }
        base[rc_key] = rc_v
        local rc = rc_file("zuliprc", base)
        assert.are.equal(want(rc_v), config.resolve({ zuliprc = rc }, env_of{})[field])
        local env = env_of{ [env_name] = env_v }
        assert.are.equal(want(env_v), config.resolve({ zuliprc = rc }, env)[field])
        assert.are.equal(want(opt_v), config.resolve({ zuliprc = rc, [field] = opt_v }, env)[field])
      end)
    end

    it("finds the zuliprc at the option, else $ZULIP_CONFIG, else ~/.zuliprc", function()
      local keyed = { key = ("k"):rep(32), site = "x.example.com" }
      local function rc_for(name, email)
        local t = { email = email }
        for k, v in pairs(keyed) do t[k] = v end
        return rc_file(name, t)
      end
      local opt_rc = rc_for("opt.rc", "opt@example.com")
      local env_rc = rc_for("env.rc", "env@example.com")
      rc_for(".zuliprc", "home@example.com")
      assert.are.equal("opt@example.com", config.resolve({ zuliprc = opt_rc }, env_of{ ZULIP_CONFIG = env_rc }).email)
      assert.are.equal("env@example.com", config.resolve({}, env_of{ ZULIP_CONFIG = env_rc }).email)
      -- ~ is $HOME of the real environment: a child interpreter
      local code = [[io.write(require("zulip.config").resolve({}).email)]]
      local base = { HOME = dir, ZULIP_EMAIL = false, ZULIP_SITE = false, ZULIP_API_KEY = false,
                     LUA_PATH = package.path, LUA_CPATH = package.cpath }
      base.ZULIP_CONFIG = env_rc
      local out, ok = util.run_lua(code, base)
      assert.is_true(ok, out)
      assert.are.equal("env@example.com", out)
      base.ZULIP_CONFIG = false
      out, ok = util.run_lua(code, base)
      assert.is_true(ok, out)
      assert.are.equal("home@example.com", out)
    end)

    it("accepts only true or false for insecure, in the environment and in the zuliprc", function()
      local opts = { site = "x.example.com", email = "a@example.com", api_key = ("k"):rep(32) }
      assert.is_true(config.resolve(opts, env_of{ ZULIP_ALLOW_INSECURE = "TRUE" }).insecure)
      assert.is_false(config.resolve(opts, env_of{ ZULIP_ALLOW_INSECURE = "False" }).insecure)
      for _, v in ipairs{ "1", "yes", "on", "0", "no", "off", "maybe" } do
        assert.has_error(function() config.resolve(opts, env_of{ ZULIP_ALLOW_INSECURE = v }) end,
          ('zulip: ZULIP_ALLOW_INSECURE must be true or false, got "%s"'):format(v))
        local rc = rc_file("zuliprc", { email = "a@example.com", key = ("k"):rep(32), site = "x", insecure = v })
        assert.has_error(function() config.resolve({ zuliprc = rc }, env_of{}) end,
          ('zulip: \'insecure\' in the [api] section of %s must be true or false, got "%s"'):format(rc, v))
      end
      opts.insecure = "yes"
      assert.has_error(function() zulip.client(opts) end, 'zulip: option \'insecure\' must be true or false, got "yes"')
    end)

    it("turns a bare host into https:// and drops trailing slashes, on the wire too", function()
      local c = zulip.client{ site = "chat.example.com//", email = "a@example.com", api_key = ("k"):rep(32) }
      assert.are.equal("https://chat.example.com", c.site)
      -- a plain-HTTP server: a trailing slash must not become //api/v1
      local c2 = new_client{ site = srv.site .. "/" }
      assert(c2:request("GET", "users/me"))
      assert.are.equal("/api/v1/users/me", last_request().path)
    end)
  end)

  describe("encoding", function()
    it("sends fetch_event_types as JSON, and integral floats as integers everywhere", function()
      local c = new_client()
      local q = c:queue{ event_types = { "message" }, fetch_event_types = { "realm", "message" },
                         queue_lifespan_secs = 1200.0 }
      assert(q:register())
      local form = last_request("/api/v1/register").form
      assert.are.equal('["realm","message"]', form.fetch_event_types)
      assert.are.equal("1200", form.queue_lifespan_secs)
      -- a saved last_event_id that came back as a float (cjson does that) goes out as an integer
      local q2 = c:queue{ id = q.id, last_event_id = -1.0 }
      assert.are.same({}, assert(q2:get_events{ dont_block = true }))
      assert.are.equal("queue_id=" .. encode.urlescape(q.id) .. "&last_event_id=-1&dont_block=true",
        last_request("/api/v1/events").query)
      assert(c:request("GET", "users/me", { a = 5.0, b = { 1.0, 2^53, 1e17 }, c = -3.0 }))
      assert.are.equal("a=5&b=%5B1%2C9007199254740992%2C100000000000000000%5D&c=-3",
        last_request("/api/v1/users/me").query)
      q2:close()
      q:close()
    end)
  end)

  describe("HTTP", function()
    it("sends a User-Agent of the form lua-zulip/x.y.z (Lua 5.4; Linux), or the user_agent option", function()
      local lua_name = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION
      local uname = assert(io.popen("uname -s"))
      local system = uname:read("*l")
      uname:close()
      local want = ("lua-zulip/%s (%s; %s)"):format(zulip._VERSION, lua_name, system)
      if lua54 and system == "Linux" then
        assert.are.equal("lua-zulip/" .. zulip._VERSION .. " (Lua 5.4; Linux)", want)
      end
      assert.are.equal(want, zulip.USER_AGENT)
      assert(new_client():request("GET", "users/me"))
      assert.are.equal(want, last_request().headers["User-Agent"])
      assert(new_client{ user_agent = "my-bot/2.0" }:request("GET", "users/me"))
      assert.are.equal("my-bot/2.0", last_request().headers["User-Agent"])
    end)

    it("accepts gzip and brotli, and decodes a gzipped reply", function()
      local c = new_client()
      local q = c:queue{ event_types = { "message" } }
      assert(q:register())
      local ae = last_request("/api/v1/register").headers["Accept-Encoding"]
      assert.matches("%f[%w]gzip%f[%W]", ae)
      assert.matches("%f[%w]br%f[%W]", ae)
      local lines = {}
      for i = 1, 150 do lines[i] = ("line %d of a reply large enough to be gzipped"):format(i) end
      local content = table.concat(lines, "\n")
      srv:send("alice", { type = "stream", to = "Denmark", topic = "gz", content = content })
      local events = assert(q:get_events{ dont_block = true })  -- (already queued: send returned)
      assert.are.equal(content, events[1].message.content)
      assert.are.equal("gzip", last_request("/api/v1/events").content_encoding)
      q:close()
    end)

    it("reuses one connection for a queue's register and polls, and for client:request", function()
      srv:control("POST", "/test/config", { longpoll_timeout_seconds = 3 })  -- the long-poll ends within 4 s
      local c = new_client{ longpoll_grace = 1 }
      local q = c:queue{ event_types = { "message" }, fetch_event_types = { "realm" } }
      assert(q:register())
      for _ = 1, 4 do assert(q:get_events{ dont_block = true }) end
      util.send_later(srv, 0.2, "alice", { type = "stream", to = "Denmark", topic = "t", content = "x" })
      assert.are.equal(1, #assert(q:get_events()))  -- a long-poll, too
      for _ = 1, 3 do assert(c:request("GET", "users/me")) end
      local ports, rest_ports = {}, {}
      for _, r in ipairs(requests()) do
        if r.path == "/api/v1/users/me" then rest_ports[r.peer_port] = true end
        if r.path == "/api/v1/register" or r.path == "/api/v1/events" then ports[r.peer_port] = true end
      end
      local function count(t) local n = 0; for _ in pairs(t) do n = n + 1 end; return n end
      assert.are.equal(6, #requests("/api/v1/register") + #requests("/api/v1/events"))
      assert.are.equal(1, count(ports))
      assert.are.equal(1, count(rest_ports))
      q:close()
    end)

    it("resends a request once, on a new connection, when the server closed the kept one", function()
      local c = new_client()
      local q = c:queue{ event_types = { "message" } }
      assert(q:register())
      local function close_after(path)  -- the next reply comes whole, then the connection ends
        srv:control("POST", "/test/fault", { kind = "close_after_reply", path = path })
      end
      close_after("/api/v1/events")
      assert(q:get_events{ dont_block = true })
      assert(q:get_events{ dont_block = true })  -- at once: it goes out on the closed connection first
      close_after("/api/v1/events")
      assert(q:get_events{ dont_block = true })
      socket.sleep(1.2)                          -- idle for a while: checked before it is used
      assert(q:get_events{ dont_block = true })
      -- a POST is resent too, and arrives once
      close_after("/api/v1/users/me")
      assert(c:request("GET", "users/me"))
      assert(c:request("POST", "messages", { type = "stream", to = "Denmark", topic = "resent", content = "once" }))
      local events = assert(q:get_events{ dont_block = true })
      assert.are.equal(1, #events)
      assert.are.equal("once", events[1].message.content)
      local ports, n = {}, 0
      for _, r in ipairs(requests()) do
        if r.path == "/api/v1/register" or r.path == "/api/v1/events" then
          if not ports[r.peer_port] then n = n + 1 end
          ports[r.peer_port] = true
        end
      end
      assert.are.equal(5, #requests("/api/v1/events"))  -- each poll reached the server once
      -- on four connections: the client's requests share them, so users/me (closed after its
      -- reply) took the third, and the POST and the last poll went out on a fourth
      assert.are.equal(4, n)
      assert.are.equal(1, #requests("/api/v1/messages"))
      q:close()
    end)
  end)

  describe("timeouts", function()
    -- on a connection that is made (or kept), a request's own timeout is its only timer: the
    -- connect deadline goes once the request is out (curl's own would stay armed)
    it("gives a long-poll the server's event_queue_longpoll_timeout_seconds plus the grace", function()
      srv:control("POST", "/test/config", { longpoll_timeout_seconds = 2 })
      local c = new_client{ longpoll_grace = 4 }
      local q = c:queue{ event_types = { "message" }, fetch_event_types = { "realm" } }
      assert.are.equal(2, assert(q:register()).event_queue_longpoll_timeout_seconds)
      local t = timer_of(q, 0.3)
      assert.is_true(t > 5.5 and t <= 6, tostring(t))
      q:close()
      -- the default grace is 10 s
      local q2 = new_client():queue{ fetch_event_types = { "realm" } }
      assert(q2:register())
      t = timer_of(q2, 0.3)
      assert.is_true(t > 11.5 and t <= 12, tostring(t))
      q2:close()
    end)

    it("gives a long-poll 90 s plus the grace when the server does not say", function()
      srv:control("POST", "/test/config", { longpoll_timeout_seconds = zulip.null })
      local c = new_client{ longpoll_grace = 4 }
      local q = c:queue{ fetch_event_types = { "realm" } }
      assert.is_nil(assert(q:register()).event_queue_longpoll_timeout_seconds)
      local t = timer_of(q, 0.3)
      assert.is_true(t > 93.5 and t <= 94, tostring(t))
      q:close()
    end)

    it("really ends a silent long-poll at the server's timeout plus the grace", function()
      srv:control("POST", "/test/config", { longpoll_timeout_seconds = 1 })
      local c = new_client{ longpoll_grace = 0.5 }
      local q = c:queue{ fetch_event_types = { "realm" } }
      assert(q:register())
      srv:control("POST", "/test/fault", { kind = "silent", seconds = 4, path = "/api/v1/events" })
      local t0 = util.now()
      local events, _, err = q:get_events()
      local took = util.now() - t0
      assert.is_nil(events)
      assert.are.equal("TIMEOUT", err.code)
      assert.is_true(took >= 1.4 and took < 2.5, tostring(took))
      q:close()
    end)

    it("gives other requests `timeout`, 15 s by default", function()
      for _, case in ipairs{ { 15, {} }, { 7, { timeout = 7 } } } do
        local want, extra = case[1], case[2]
        local opts = { site = srv.site, email = bot.email, api_key = bot.api_key }
        for k, v in pairs(extra) do opts[k] = v end
        local q = zulip.client(opts):queue{}
        srv:control("POST", "/test/fault", { kind = "delay", seconds = 1, path = "/api/v1/register" })
        local t = timer_of(q, 0.35)  -- past any 200 ms connect-phase timer of curl's
        assert.is_true(t > want - 0.5 and t <= want, want .. ": " .. t)
        q:close()
      end
    end)

    -- A loopback listener whose accept queue (backlog 0) is full: the kernel drops new SYNs, so
    -- connecting to it never ends by itself. Returns its port and a function that closes it all.
    local function silent_listener()
      local l = assert(socket.tcp())
      assert(l:bind("127.0.0.1", 0))
      assert(l:listen(0))
      local _, port = l:getsockname()
      local fillers = {}
      for i = 1, 3 do
        fillers[i] = assert(socket.tcp())
        fillers[i]:settimeout(0)
        fillers[i]:connect("127.0.0.1", port)
      end
      socket.sleep(0.05)
      return port, function()
        for _, f in ipairs(fillers) do f:close() end
        l:close()
      end
    end

    it("connects with a 10 s timeout by default", function()
      local port, done = silent_listener()
      local q = zulip.client{ site = "http://127.0.0.1:" .. port, email = bot.email, api_key = bot.api_key,
                              timeout = 60 }:queue{}
      local t = timer_of(q, 0.35)  -- while connecting, past curl's 200 ms happy-eyeballs timer
      q:close()
      done()
      assert.is_true(t > 9.5 and t <= 10, tostring(t))
    end)

    it("gives up connecting after connect_timeout on a listener that never answers", function()
      local port, done = silent_listener()
      local c = zulip.client{ site = "http://127.0.0.1:" .. port, email = bot.email, api_key = bot.api_key,
                              timeout = 5, connect_timeout = 0.3 }
      local t0 = util.now()
      local state, msg, err = c:queue{}:register()
      local took = util.now() - t0
      assert.is_nil(state)
      assert.are.equal("TIMEOUT", err.code)
      assert.matches("no connection within connect_timeout (300 ms)", msg, 1, true)
      assert.is_true(took >= 0.25 and took < 2, tostring(took))
      -- the engine's own deadline ended it (the request outlives connect_timeout); until a reply
      -- comes, the next attempts use curl's, which gives each of a host's addresses its share
      t0 = util.now()
      state, msg, err = c:queue{}:register()
      took = util.now() - t0
      done()
      assert.is_nil(state)
      assert.are.equal("TIMEOUT", err.code)
      assert.is_nil(msg:find("connect_timeout", 1, true), msg)  -- curl's own words
      assert.is_true(took >= 0.25 and took < 2, tostring(took))
    end)
  end)

  describe("errors", function()
    it("fill code, msg, http_status and queue_id, and msg is the readable line", function()
      local c = new_client()
      local q = c:queue{}
      assert(q:register())
      local id = q.id
      srv:control("POST", "/test/gc_queue", { queue_id = id })
      local events, msg, err = q:get_events{ dont_block = true }
      assert.is_nil(events)
      assert.are.equal("BAD_EVENT_QUEUE_ID", err.code)
      assert.are.equal("Bad event queue ID: " .. id, err.msg)
      assert.are.equal(400, err.http_status)
      assert.are.equal(id, err.queue_id)
      assert.is_nil(err.retry_after)
      assert.are.equal(msg, tostring(err))
      assert.is_string(msg)
      assert.is_truthy(msg:find("BAD_EVENT_QUEUE_ID", 1, true) and msg:find(err.msg, 1, true))
      q:close()
      -- client-side failures have no HTTP status
      local _, _, nerr = zulip.client{ site = "http://127.0.0.1:1", email = bot.email, api_key = bot.api_key }
        :request("GET", "users/me")
      assert.are.equal("NETWORK", nerr.code)
      assert.is_string(nerr.msg)
      assert.is_nil(nerr.http_status)
      -- so the plain assert() of the Lua under test shows that line (busted's own assert is not it)
      local out, ok = util.run_lua(([[
        local c = require("zulip").client{ site = "http://127.0.0.1:1", email = "a@example.com", api_key = %q }
        assert(c:request("GET", "users/me"))
      ]]):format(bot.api_key), { LUA_PATH = package.path, LUA_CPATH = package.cpath })
      assert.is_false(ok and _VERSION ~= "Lua 5.1")  -- (5.1's popen close cannot tell)
      -- (after the retry's line on stderr: there is no on_log)
      assert.matches("^lua%-zulip: GET http://127%.0%.0%.1:1/api/v1/users/me failed: NETWORK: [^\n]+\n", out)
      out = out:gsub("^lua%-zulip: [^\n]*\n", "")
      assert.matches("^%S+: %S+:2: zulip: NETWORK: [^\n]*connect", out)
      assert.is_nil(out:find("table: ", 1, true), out)
    end)

    it("take retry_after, in float seconds, from the Retry-After header or from the body", function()
      local c = new_client()
      -- (register: a queue's own requests have no retries of their own; a request would wait it out)
      raw_fault("/api/v1/register", "429 Too Many Requests", { "Retry-After: 0.75" },
        '{"result":"error","msg":"API usage exceeded rate limit","code":"RATE_LIMIT_HIT"}')
      local _, _, err = c:queue{}:register()
      assert.are.equal("RATE_LIMIT_HIT", err.code)
      assert.are.equal(429, err.http_status)
      assert.are.equal(0.75, err.retry_after)
      if has_int then assert.are.equal("float", math.type(err.retry_after)) end
      raw_fault("/api/v1/register", "429 Too Many Requests", {},
        '{"result":"error","msg":"API usage exceeded rate limit","code":"RATE_LIMIT_HIT","retry-after":0.25}')
      _, _, err = c:queue{}:register()
      assert.are.equal("RATE_LIMIT_HIT", err.code)
      assert.are.equal(0.25, err.retry_after)
    end)

    it("raise for wrong argument types", function()
      local c = new_client()
      assert.has_error(function() c:queue("x") end, "zulip: client:queue expects a table of options")
      assert.has_error(function() c:queue{ id = 5 } end, "zulip: queue option 'id' must be a string")
      assert.has_error(function() c:queue{ id = "x", last_event_id = 1.5 } end,
        "zulip: queue option 'last_event_id' must be an integer")
      assert.has_error(function() c:queue{ client_capabilities = true } end,
        "zulip: queue option 'client_capabilities' must be table")
      assert.has_error(function() c:request("GET", 5) end, "zulip: request path must be a string")
      assert.has_error(function() c:request("GET", "users/me", "a=1") end, "zulip: request params must be a table")
      assert.has_error(function() c:request(nil, "users/me") end)
      assert.has_error(function() c:send_message("hi") end, "zulip: send_message expects a table")
      local q = c:queue{}
      assert.has_error(function() q:each("x") end, "zulip: each expects a table of options")
      assert.has_error(function() q:each{ bogus = true } end, "zulip: unknown option 'bogus'")
      assert.has_error(function() q:step("x") end, "zulip: step timeout must be a number >= 0")
      assert.has_error(function() q:step(-1) end, "zulip: step timeout must be a number >= 0")
      q:close()
      assert.are.equal(0, #requests())
    end)

    it("raise for every use of a closed queue but close", function()
      local q = new_client():queue{}
      assert(q:register())
      q:close()
      for _, call in ipairs{
        function() q:register() end, function() q:get_events() end, function() q:each() end,
        function() q:step(0) end, function() q:timeout() end, function() q:events() end,
      } do
        assert.has_error(call, "zulip: queue is closed")
      end
      assert.has_error(function() q:pollfd() end, "zulip: queue is closed")
      assert.is_true(q:close())
    end)
  end)

  describe("client:request", function()
    it("puts params in the query for GET and DELETE and in a form body for POST, PUT and PATCH", function()
      local c = new_client()
      local reply = assert(c:request("GET", "users/me", { flag = true, n = 3 }))
      assert.are.equal(bot.email, reply.email)
      local r = last_request("/api/v1/users/me", "GET")
      assert.are.equal("flag=true&n=3", r.query)
      assert.is_nil(next(r.form))
      for _, method in ipairs{ "PATCH", "PUT" } do
        local _, _, err = c:request(method, "users/me", { full_name = "New Name", n = 4 })
        assert.are.equal(405, err.http_status)  -- the dev server has no such route; it logs the request
        r = last_request("/api/v1/users/me", method)
        assert.are.equal("", r.query)
        assert.are.same({ full_name = "New Name", n = "4" }, r.form)
      end
      assert(c:request("POST", "messages", { type = "private", to = { srv.users.alice.email }, content = "dm" }))
      r = last_request("/api/v1/messages", "POST")
      assert.are.equal("", r.query)
      assert.are.equal('["alice@example.com"]', r.form.to)
      local q = c:queue{}
      assert(q:register())
      assert(c:request("DELETE", "events", { queue_id = q.id }))
      local deleted
      for _, d in ipairs(requests("/api/v1/events", "DELETE")) do  -- (a queue leaked by a failed spec may be GC'd)
        if d.query == "queue_id=" .. encode.urlescape(q.id) and d.status == 200 then deleted = true end
      end
      assert.is_true(deleted)
      local _, _, err = q:get_events{ dont_block = true }
      assert.are.equal("BAD_EVENT_QUEUE_ID", err.code)
      q:close()
    end)

    it("send_message posts the message and returns the reply with its id", function()
      local c = new_client()
      local reply = assert(c:send_message{ type = "stream", to = "Denmark", topic = "Castle", content = "hello" })
      assert.is_number(reply.id)
      local r = last_request("/api/v1/messages", "POST")
      assert.are.same({ type = "stream", to = "Denmark", topic = "Castle", content = "hello" }, r.form)
    end)
  end)

  describe("the iterator", function()
    it("acknowledges the heartbeats it hides", function()
      srv:control("POST", "/test/config", { heartbeat = 0.2 })
      local q = new_client():queue{ event_types = { "message" } }
      assert(q:register())
      util.send_later(srv, 0.75, "alice", { type = "stream", to = "Denmark", topic = "hb", content = "after" })
      -- bounds: an unacknowledged heartbeat comes back at once, so polls spin into the rate limit (a
      -- retry); and should the message never come, the queue is removed after 8 s (a reset)
      util.later(srv, 8, { control = { "POST", "/test/gc_queue", { queue_id = q.id } } })
      local function no_retry(info) error("spec: unexpected retry: " .. tostring(info.error), 0) end
      local function no_reset() error("spec: no message within 8 s", 0) end
      local got
      for ev in q:each{ on_retry = no_retry, on_reset = no_reset } do got = ev; break end -- luacheck: ignore 512
      assert.are.equal("after", got.message.content)
      assert.is_true(got.id >= 1, "no heartbeat came first")  -- register's last_event_id was -1
      local polls = requests("/api/v1/events", "GET")
      -- every heartbeat was acknowledged by the next poll: one poll per heartbeat, then the message
      assert.is_true(#polls <= got.id + 1, #polls .. " polls for " .. got.id .. " heartbeats")
      assert.matches("&last_event_id=" .. (got.id - 1) .. "$", polls[#polls].query)
      q:close()
    end)
  end)

  -- insecure, client_cert and client_cert_key: spec/tls_spec.lua
  describe("TLS and proxies", function()
    local tls
    setup(function() tls = devserver.start{ tls = true, heartbeat = 30 } end)
    teardown(function() tls:stop() end)

    local function tls_client(extra)
      local opts = { site = tls.site, email = bot.email, api_key = bot.api_key, timeout = 5 }
      for k, v in pairs(extra or {}) do opts[k] = v end
      return zulip.client(opts)
    end

    it("verifies the server against cert_bundle, and gets https:// for a site without a scheme", function()
      local _, _, err = tls_client():request("GET", "users/me")  -- the system CAs don't know it
      assert.are.equal("TLS", err.code)
      local me = assert(tls_client{ cert_bundle = tls.ca_file }:request("GET", "users/me"))
      assert.are.equal(bot.email, me.email)
      local bare = tls.site:gsub("^https://", "") .. "/"
      assert(tls_client{ site = bare, cert_bundle = tls.ca_file }:request("GET", "users/me"))
    end)

    it("goes through the proxy option, in a CONNECT tunnel", function()
      -- the dev server answers CONNECT with a tunnel back to itself, so it can stand in for a
      -- forward proxy; zulip.invalid does not resolve, so only the proxy can have reached it
      local c = zulip.client{ site = "http://zulip.invalid", email = bot.email, api_key = bot.api_key,
                              timeout = 5, proxy = srv.site }
      local me = assert(c:request("GET", "users/me"))
      assert.are.equal(bot.email, me.email)
      local log = srv:control("GET", "/test/requests?n=2").requests
      assert.are.equal("CONNECT", log[1].method)
      assert.are.equal("zulip.invalid:80", log[1].path)
      assert.are.equal(zulip.null, log[1].headers.Authorization)  -- the proxy never sees the credentials
      assert.are.equal("/api/v1/users/me", log[2].path)
      assert.are.equal("Basic", log[2].headers.Authorization)  -- the server, through the tunnel, does
    end)

    it("goes through a proxy from the environment (http_proxy) too, in a CONNECT tunnel", function()
      local out = util.run_lua(([[
        local c = require("zulip").client{ site = "http://zulip.invalid", email = %q, api_key = %q, timeout = 5 }
        print(select(2, c:request("GET", "users/me")) or "email " .. c:request("GET", "users/me").email)
      ]]):format(bot.email, bot.api_key), { LUA_PATH = package.path, LUA_CPATH = package.cpath,
                                           http_proxy = srv.site, no_proxy = false, NO_PROXY = false })
      assert.matches("^email bot@example%.com\n", out)
      local log = srv:control("GET", "/test/requests?n=3").requests
      assert.are.same({ "CONNECT", "GET", "GET" }, { log[1].method, log[2].method, log[3].method })
    end)

    it("goes around the environment's proxy for a host in no_proxy", function()
      -- the proxy named is a port nothing listens on: only a direct request can succeed
      local out = util.run_lua(([[
        local c = require("zulip").client{ site = %q, email = %q, api_key = %q, timeout = 5 }
        print(select(2, c:request("GET", "users/me")) or "email " .. c:request("GET", "users/me").email)
      ]]):format(srv.site, bot.email, bot.api_key),
        { LUA_PATH = package.path, LUA_CPATH = package.cpath,
          http_proxy = "http://127.0.0.1:1", no_proxy = "127.0.0.1", NO_PROXY = false })
      assert.matches("^email bot@example%.com\n", out)
      local log = srv:control("GET", "/test/requests?n=2").requests
      assert.are.same({ "GET", "GET" }, { log[1].method, log[2].method })
    end)
  end)

  it("never shows the API key, nor its Basic form, in any message, error or string", function()
    local secret_b64 = mime.b64(bot.email .. ":" .. bot.api_key)
    local seen = {}
    local function keep(v, depth)
      depth = depth or 0
      if type(v) == "table" and depth < 4 then
        seen[#seen + 1] = tostring(v)
        for k, x in pairs(v) do keep(k, depth + 1); keep(x, depth + 1) end
      elseif v ~= nil then
        seen[#seen + 1] = tostring(v)
      end
    end
    local c = new_client{ timeout = 0.5, on_log = function(...) keep({ ... }) end }
    keep(c); keep(c._session)
    local q = c:queue{}
    keep(q)
    for _, kind in ipairs{ "reset", "silent", "status500", "html502", "invalid_json", "unauthorized",
                           "ratelimit", "truncate" } do
      srv:control("POST", "/test/fault", { kind = kind, path = "/api/v1/register", seconds = 2 })
      keep({ q:register() })
    end
    srv:control("POST", "/test/config", { extra_users = 50 })
    keep({ new_client{ max_reply_bytes = 2000 }:queue{}:register() })  -- TOO_LARGE
    srv:control("POST", "/test/config", { extra_users = 0 })
    keep({ c:request("GET", "no/such/endpoint") })
    keep({ c:queue{ narrow = { { "bogus", "x" } } }:register() })
    assert(q:register())
    keep(q)
    srv:control("POST", "/test/gc_queue", { queue_id = q.id })
    keep({ q:get_events{ dont_block = true } })
    -- the iterator: a retry (logged, with the error), then a 401 that it raises
    -- (GET only: a DELETE from the __gc of some other queue must not take these faults)
    srv:control("POST", "/test/fault", { kind = "status500", path = "/api/v1/events", method = "GET" })
    srv:control("POST", "/test/fault", { kind = "unauthorized", path = "/api/v1/events", method = "GET" })
    local function no_reset() error("spec: unexpected re-register", 0) end  -- (would long-poll for ever)
    keep({ pcall(function()
      for _ in q:each{ backoff = { base = 0.01, factor = 2, cap = 0.02 }, on_reset = no_reset } do end
    end) })
    keep(q.last_error)
    q:close()
    keep({ pcall(q.register, q) })
    keep({ zulip.client{ site = "http://127.0.0.1:1", email = bot.email, api_key = bot.api_key }
      :request("GET", "users/me") })
    assert.is_true(#seen > 40)
    local codes = {}
    for _, s in ipairs(seen) do
      assert.is_nil(s:find(bot.api_key, 1, true), s)
      assert.is_nil(s:find(secret_b64, 1, true), s)
      local code = s:match("^zulip: ([%u_]+): ")
      if code then codes[code] = true end
    end
    for _, code in ipairs{ "NETWORK", "TIMEOUT", "HTTP", "PROTOCOL", "UNAUTHORIZED", "RATE_LIMIT_HIT",
                           "TOO_LARGE", "BAD_REQUEST", "BAD_EVENT_QUEUE_ID" } do
      assert.is_true(codes[code], "no " .. code .. " error was checked")
    end
  end)
end)
