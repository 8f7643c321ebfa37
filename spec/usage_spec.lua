-- What a new user runs into first: client:reply, and the errors for the usual mistakes (a wrong
-- site, a typo in an option, a zuliprc with the wrong section, a module built for another Lua).
-- Every misuse error starts with this file's name and the line of the call.
local devserver = require("spec.support.devserver")
local util = require("spec.support.util")
local zulip = require("zulip")

-- The error `f` raises; it must raise.
local function error_of(f)
  local ok, e = pcall(f)
  assert.is_false(ok, "it did not raise")
  return tostring(e)
end

-- "usage_spec.lua:N: " for the line after the caller's
local function next_line()
  return "usage_spec%.lua:" .. (debug.getinfo(2, "l").currentline + 1) .. ": "
end

local KEY = "botkey0123456789ABCDEFGHIJKLMNOP"

describe("client:reply", function()
  local srv, c
  setup(function() srv = devserver.start{ heartbeat = 1 } end)
  teardown(function() srv:stop() end)
  before_each(function()
    srv:control("POST", "/test/reset", {})
    c = util.client(srv)
  end)
  after_each(function() c:close() end)

  local function posts()
    local out = {}
    for _, r in ipairs(srv:control("GET", "/test/requests?n=100").requests) do
      if r.path == "/api/v1/messages" or r.path == "/api/v1/users/me" then
        out[#out + 1] = { path = r.path, form = r.form }
      end
    end
    return out
  end

  -- a message as the bot's queue gets it, sent by Alice
  local function received(params)
    local q = c:queue{ event_types = { "message" } }
    assert(q:register())
    assert(srv:send("alice", params))
    local events = {}
    local deadline = util.now() + 10
    while #events == 0 and util.now() < deadline do
      for _, ev in ipairs(assert(q:step(0.5))) do
        if ev.type == "message" then events[#events + 1] = ev end
      end
    end
    q:close()
    assert.are.equal(1, #events)
    srv:control("POST", "/test/reset", {})
    return events[1].message
  end

  it("answers a channel message in its channel and topic, and returns the server's reply", function()
    local m = received{ type = "stream", to = "Denmark", topic = "castle", content = "ping" }
    local sent, msg, err = c:reply(m, "pong")
    assert.is_table(sent, msg)
    assert.is_nil(err)
    assert.is_true(math.type == nil or math.type(sent.id) == "integer")
    local p = posts()
    assert.are.equal(1, #p)
    assert.are.same({ type = "stream", to = "1", topic = "castle", content = "pong" }, p[1].form)
  end)

  it("answers a DM in the same conversation without the client's own user, asking nobody", function()
    local m = received{ type = "private", to = srv.users.bot.email, content = "ping" }
    assert.are.equal(2, #m.display_recipient)
    assert(c:reply(m, "pong"))
    local p = posts()
    assert.are.equal(1, #p)
    assert.are.same({ type = "private", to = "[" .. srv.users.alice.user_id .. "]", content = "pong" }, p[1].form)
    assert.are.equal(srv.users.bot.user_id, c.user_id)
  end)

  it("answers a group DM to everyone in it but the client's own user", function()
    local m = {
      type = "private", content = "ping", subject = "",
      display_recipient = {
        { id = 10, email = "bot@example.com", full_name = "Echo Bot" },
        { id = 11, email = "alice@example.com", full_name = "Alice" },
        { id = 1001, email = "user1@example.com", full_name = "User 1" },
      },
    }
    srv:control("POST", "/test/config", { extra_users = 1 })
    local sent, msg = c:reply(m, "pong")
    srv:control("POST", "/test/config", { extra_users = 0 })
    assert.is_table(sent, msg)
    assert.are.same({ type = "private", to = "[11,1001]", content = "pong" }, posts()[1].form)
  end)

  it("when no participant's email is the client's, asks users/me once, without blocking given a callback", function()
    -- a realm that hides emails shows addresses that are not the one the client logs in with
    local m = {
      type = "private", content = "ping", subject = "",
      display_recipient = {
        { id = 10, email = "user10@chat.example.com", full_name = "Echo Bot" },
        { id = 11, email = "user11@chat.example.com", full_name = "Alice" },
      },
    }
    srv:control("POST", "/test/fault", { kind = "delay", seconds = 1, path = "/api/v1/users/me" })
    local got
    local t0 = util.now()
    local h = c:reply(m, "pong", function(...) got = { ... } end)
    assert.is_true(util.now() - t0 < 0.5, "reply with a callback waited for the server")
    assert.is_false(h:done())
    local deadline = util.now() + 10
    while not got and util.now() < deadline do c:step(0.2) end
    assert.is_truthy(got, "the callback never ran")
    assert.is_table(got[1], got[2])
    assert.is_true(h:done())
    assert.are.equal(10, c.user_id)
    local p = posts()
    assert.are.equal("/api/v1/users/me", p[1].path)
    assert.are.same({ type = "private", to = "[11]", content = "pong" }, p[2].form)
    -- now known: the next reply asks nobody
    srv:control("POST", "/test/reset", {})
    assert(c:reply(m, "pong again"))
    assert.are.equal(1, #posts())
  end)

  it("returns nil, msg, err when the server refuses the message", function()
    local m = { type = "stream", display_recipient = "No such channel", subject = "t", content = "ping" }
    local sent, msg, err = c:reply(m, "pong")
    assert.is_nil(sent)
    assert.matches("^zulip: STREAM_DOES_NOT_EXIST: ", msg)
    assert.are.equal(400, err.http_status)
  end)

  it("raises at the caller's line for what is not a message", function()
    local at = next_line()
    assert.matches("^.-" .. at .. "zulip: reply expects a message", error_of(function() c:reply("ping", "pong") end))
    at = next_line()
    assert.matches("^.-" .. at .. "zulip: reply needs the content", error_of(function() c:reply({}, nil) end))
    at = next_line()
    assert.matches("^.-" .. at .. "zulip: reply: not a message", error_of(function() c:reply({ type = "x" }, "p") end))
    at = next_line()
    local e = error_of(function() c:reply({ type = "private", display_recipient = { {} } }, "p") end)
    assert.matches("^.-" .. at .. "zulip: reply: each of a direct message's 'display_recipient' needs", e)
  end)
end)

describe("misuse errors name the caller's line", function()
  -- options for zulip.client, called by the specs themselves: its errors name their lines
  local function opts(extra)
    local o = { site = "http://127.0.0.1:9", email = "bot@example.com", api_key = KEY }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  it("for a site zulip.client cannot use", function()
    for site, why in pairs{
      ["htp://chat.example.com"] = "has the scheme 'htp://': use https://",
      ["https://chat example.com"] = "has a space",
      ["https://chat.example.com/?x=1"] = "has a '%?' or '#'",
      ["https://chat.example.com/#top"] = "has a '%?' or '#'",
      ["https://:443"] = "has no host name",
      ["http://chat.example.com:90a"] = "has a port that is not a number",
      ["http://chat.example.com:99999"] = "has a port out of range %(1 to 65535%)",
      ["http://chat.example.com:0"] = "has a port out of range",
    } do
      local at = next_line()
      local e = error_of(function() zulip.client(opts{ site = site }) end)
      assert.matches("^.-" .. at .. "zulip: site '[^']+' %(option 'site'%) " .. why, e)
    end
    local at = next_line()
    local e = error_of(function() local _ = zulip.client{ email = "a@b", api_key = KEY } end)
    assert.matches("^.-" .. at, e)
    assert.are.equal("http://chat.example.com", zulip.client(opts{ site = "http://chat.example.com/" }).site)
    assert.are.equal("https://chat.example.com", zulip.client(opts{ site = "chat.example.com" }).site)
    assert.are.equal("http://[::1]:9991", zulip.client(opts{ site = "http://[::1]:9991" }).site)
  end)

  it("for typos inside backoff = {...}, in client, queue and each options", function()
    local at = next_line()
    local e = error_of(function() zulip.client(opts{ backoff = { bsae = 1 } }) end)
    assert.matches("^.-" .. at .. "zulip: unknown backoff setting 'bsae'", e)
    assert.is_nil(e:find("lua/zulip/", 1, true))
    local c = zulip.client(opts())
    at = next_line()
    e = error_of(function() c:queue{ backoff = { cpa = 1 } } end)
    assert.matches("^.-" .. at .. "zulip: unknown backoff setting 'cpa'", e)
    assert.is_nil(e:find("lua/zulip/", 1, true))
    local q = c:queue{}
    at = next_line()
    e = error_of(function() q:each{ backoff = { factr = 1 } } end)
    assert.matches("^.-" .. at .. "zulip: unknown backoff setting 'factr'", e)
    at = next_line()
    e = error_of(function() q:each{ backoff = { cap = -1 } } end)
    assert.matches("^.-" .. at .. "zulip: backoff.cap must be a number >= 0", e)
    q:close()
    c:close()
  end)

  it("for queue options and a closed queue", function()
    local c = zulip.client(opts())
    for qopts, text in pairs{
      [{ bogus = 1 }] = "unknown queue option 'bogus'",
      [{ event_types = "message" }] = "queue option 'event_types' must be a list of strings",
      [{ on_retry = 1 }] = "option 'on_retry' must be a function",
      [{ last_event_id = 3 }] = "queue option 'last_event_id' needs 'id'",
    } do
      local at = next_line()
      assert.matches("^.-" .. at .. "zulip: " .. text:gsub("%p", "%%%0"), error_of(function() c:queue(qopts) end))
    end
    local q = c:queue{}
    local at = next_line()
    assert.matches("^.-" .. at .. "zulip: unknown option 'bogus'", error_of(function() q:each{ bogus = true } end))
    q:close()
    for _, method in ipairs{ "pollfd", "step", "timeout", "events", "register", "each" } do
      local here = next_line()
      assert.matches("^.-" .. here .. "zulip: queue is closed$", error_of(function() q[method](q) end))
    end
    c:close()
  end)

  it("for request and send_message arguments", function()
    local c = zulip.client(opts())
    local at = next_line()
    local e = error_of(function() c:send_message{ type = "stream", to = print, topic = "t", content = "x" } end)
    assert.matches("^.-" .. at .. "zulip: cannot encode a function as JSON$", e)
    at = next_line()
    e = error_of(function() c:send_message({ content = "x" }, 5) end)
    assert.matches("^.-" .. at .. "zulip: the callback must be a function$", e)
    at = next_line()
    e = error_of(function() c:request("GET", "users me") end)
    assert.matches("^.-" .. at .. "zulip: request path has a character HTTP cannot carry", e)
    c:close()
    at = next_line()
    e = error_of(function() c:send_message{ content = "x" } end)
    assert.matches("^.-" .. at .. "zulip: the client is closed$", e)
  end)

  it("for a zuliprc: the file and the section or setting", function()
    local dir = util.tmpdir()
    local function rc(name, text) return util.write_file(dir .. "/" .. name, text) end
    local upper = rc("upper", "[API]\nemail=bot@example.com\nkey=" .. KEY .. "\nsite=http://127.0.0.1:9\n")
    local at = next_line()
    local e = error_of(function() zulip.client{ zuliprc = upper } end)
    assert.matches("^.-" .. at .. "zulip: no site given", e)
    assert.matches(upper:gsub("%p", "%%%0") .. " has no %[api%] section, only %[API%] %(section names are "
                   .. "case%-sensitive", e)
    local bad_site = rc("site", "[api]\nemail=bot@example.com\nkey=" .. KEY .. "\nsite=htp://x.example\n")
    at = next_line()
    e = error_of(function() zulip.client{ zuliprc = bad_site } end)
    assert.matches("^.-" .. at .. "zulip: site 'htp://x.example' %('site' in the %[api%] section of "
                   .. bad_site:gsub("%p", "%%%0") .. "%)", e)
    local bad_bool = rc("bool", "[api]\nemail=bot@example.com\nkey=" .. KEY .. "\nsite=x.example\ninsecure=yes\n")
    at = next_line()
    e = error_of(function() zulip.client{ zuliprc = bad_bool } end)
    assert.matches("^.-" .. at .. "zulip: 'insecure' in the %[api%] section of " .. bad_bool:gsub("%p", "%%%0")
                   .. " must be true or false", e)
    at = next_line()
    e = error_of(function() zulip.client{ zuliprc = dir .. "/none" } end)
    assert.matches("^.-" .. at .. "zulip: cannot read the zuliprc " .. (dir .. "/none"):gsub("%p", "%%%0")
                   .. " %(given as option 'zuliprc'%)", e)
    for _, text in ipairs{ e } do assert.is_nil(text:find(KEY, 1, true)) end
    os.execute("rm -rf " .. util.shquote(dir))
  end)
end)

describe("an https site on a plain-HTTP server", function()
  it("fails with TLS and the hint to use http://", function()
    local srv = devserver.start{}
    local c = zulip.client{ site = srv.site:gsub("^http:", "https:"), email = "bot@example.com", api_key = KEY,
                            timeout = 5 }
    local r, msg, err = c:request("GET", "users/me")
    c:close()
    srv:stop()
    assert.is_nil(r)
    assert.are.equal("TLS", err.code)
    assert.matches("wrong version number %(the server speaks plain HTTP%? then use an http:// site%)$", msg)
  end)
end)

describe("a zulip.core built for another Lua", function()
  it("fails at require('zulip') with a message that names the Lua to rebuild for", function()
    local this = os.getenv("ZULIP_TEST_LUA") or "5.4"
    local other = (this == "5.1" or this == "luajit") and "5.4" or "5.1"
    local dir = util.root .. "/" .. util.build_dir(other)  -- this poller's build (make test POLLER=poll)
    local so = dir .. "/zulip/core.so"
    if not util.read_file(so) then  -- make test builds every Lua first; make test-one only one
      assert(os.execute("make -s -C " .. util.shquote(util.root) .. " LUA=" .. other .. util.make_poller() .. " "
                        .. util.build_dir(other) .. "/zulip/core.so >/dev/null"))
    end
    local out, ok = util.run_lua('require("zulip")', {
      LUA_PATH = util.root .. "/lua/?.lua;" .. util.root .. "/lua/?/init.lua;;",
      LUA_CPATH = dir .. "/?.so;;",
    })
    assert.is_false(ok and _VERSION ~= "Lua 5.1")  -- (5.1's popen close cannot tell)
    local v = this == "luajit" and "5.1" or this
    assert.matches("zulip: zulip.core at " .. so:gsub("%p", "%%%0") .. " %(it needs luaL?_[%w_]+, which this Lua"
                   .. " lacks%) was built for another Lua than this one %([^)]+%); rebuild it for this Lua: luarocks"
                   .. " make %-%-lua%-version=" .. v:gsub("%p", "%%%0") .. ", or make LUA="
                   .. this:gsub("%p", "%%%0"), out)
  end)
end)
