-- The README's "A bot in ten lines", taken from README.md as it stands when the spec runs, run
-- as a new user would (a child Lua process, settings from ~/.zuliprc) against the dev server:
-- it must answer a DM "ping" in the DM and a channel "ping" in the channel, and, pointed at a
-- port nobody listens on, say so on stderr within seconds instead of retrying silently.
local devserver = require("spec.support.devserver")
local util = require("spec.support.util")
local socket = require("socket")

-- The first ```lua block after a heading of the README ("## A bot in ten lines" by default).
local function readme_bot(heading)
  heading = heading or "## A bot in ten lines"
  local readme = assert(util.read_file(util.root .. "/README.md"), "README.md not found")
  local at = assert(readme:find("\n" .. heading .. "\n", 1, true), "README.md has no '" .. heading .. "'")
  local code = readme:match("\n```lua\n(.-)\n```\n", at)
  assert(code and code:find("zulip.client", 1, true), "no lua code block under '" .. heading .. "'")
  return code
end

describe("the README's bot", function()
  local srv, dir, code

  -- Starts the bot with HOME=home (so zulip.client{} reads home/.zuliprc), bounded by
  -- `timeout`, its stdout line-buffered as on a terminal; returns functions that read its stdout
  -- and stderr, and one that stops it.
  local function start_bot(home, other_code)
    local script = util.write_file(home .. "/bot.lua", other_code or code)
    local out, err, pid = home .. "/out", home .. "/err", home .. "/pid"
    local cmd = ("cd %s && HOME=%s LUA_PATH=%s LUA_CPATH=%s sh -c 'echo $$ > %s; exec stdbuf -oL timeout -k 2 30 %s %s'"
                 .. " </dev/null >%s 2>%s &"):format(
      util.shquote(home), util.shquote(home), util.shquote(package.path), util.shquote(package.cpath),
      util.shquote(pid), util.lua_bin(), util.shquote(script), util.shquote(out), util.shquote(err))
    assert(os.execute(cmd))
    local function stop()
      local deadline = util.now() + 5
      local p = util.read_file(pid)
      while not p and util.now() < deadline do socket.sleep(0.02); p = util.read_file(pid) end
      if p then os.execute("kill " .. p:match("%d+") .. " 2>/dev/null") end
    end
    return function() return util.read_file(out) or "" end, function() return util.read_file(err) or "" end, stop
  end

  -- Waits (at most 10 s) until the child has registered a queue of the bot's.
  local function wait_for_queue(stderr)
    local deadline = util.now() + 10
    local queued = false
    while not queued and util.now() < deadline do
      for _, q in ipairs(srv:control("GET", "/test/queues").queues) do
        if q.owner == srv.users.bot.email then queued = true end
      end
      if not queued then socket.sleep(0.05) end
    end
    assert.is_true(queued, "the child never registered a queue; its stderr:\n" .. stderr())
  end

  local function write_zuliprc(home, site)
    local bot = srv.users.bot
    util.write_file(home .. "/.zuliprc", ("[api]\nemail=%s\nkey=%s\nsite=%s\n"):format(bot.email, bot.api_key, site))
  end

  setup(function()
    srv = devserver.start{ heartbeat = 1 }
    dir = util.tmpdir()
    code = readme_bot()
  end)
  teardown(function()
    srv:stop()
    os.execute("rm -rf " .. util.shquote(dir))
  end)

  it("answers a DM ping with a DM pong and a channel ping with a channel pong", function()
    srv:control("POST", "/test/reset", {})
    local home = dir .. "/home1"
    os.execute("mkdir -p " .. util.shquote(home))
    write_zuliprc(home, srv.site)
    -- Alice watches her own messages through the library, registered before anything is sent
    local alice = util.client(srv, { email = srv.users.alice.email, api_key = srv.users.alice.api_key })
    local aq = alice:queue{ event_types = { "message" } }
    assert(aq:register())
    local _, stderr, stop = start_bot(home)
    local ok, err = pcall(function()
      wait_for_queue(stderr)
      local deadline
      local reply, status = srv:send("alice", { type = "private", to = srv.users.bot.email, content = "ping" })
      assert.are.equal(200, status, reply and reply.msg)
      reply, status = srv:send("alice", { type = "stream", to = "Denmark", topic = "readme", content = "ping" })
      assert.are.equal(200, status, reply and reply.msg)

      local dm, channel
      deadline = util.now() + 15
      while not (dm and channel) and util.now() < deadline do
        for _, ev in ipairs(assert(aq:step(0.5))) do
          local m = ev.message
          if ev.type == "message" and m.sender_email == srv.users.bot.email and m.content == "pong" then
            if m.type == "private" then dm = m else channel = m end
          end
        end
      end
      assert.is_truthy(dm, "no DM pong reached Alice; the bot's stderr:\n" .. stderr())
      assert.is_truthy(channel, "no channel pong reached Alice; the bot's stderr:\n" .. stderr())
      local ids = {}
      for _, u in ipairs(dm.display_recipient) do ids[#ids + 1] = u.id end
      table.sort(ids)
      assert.are.same({ srv.users.bot.user_id, srv.users.alice.user_id }, ids)
      assert.are.equal("stream", channel.type)
      assert.are.equal("Denmark", channel.display_recipient)
      assert.are.equal("readme", channel.subject)
      -- the DM reply named Alice only, not the bot itself
      local tos = {}
      for _, r in ipairs(srv:control("GET", "/test/requests?n=100").requests) do
        if r.path == "/api/v1/messages" and type(r.form) == "table" and r.form.content == "pong" then
          tos[#tos + 1] = r.form.to
        end
      end
      table.sort(tos)
      assert.are.same({ "1", "[" .. srv.users.alice.user_id .. "]" }, tos)
    end)
    stop()
    aq:close()
    alice:close()
    assert(ok, err)
  end)

  it("pointed at a port nobody listens on, says so on stderr within seconds", function()
    local home = dir .. "/home2"
    os.execute("mkdir -p " .. util.shquote(home))
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    write_zuliprc(home, "http://127.0.0.1:" .. port)
    local started = util.now()
    local stdout, stderr, stop = start_bot(home)
    local deadline = started + 8
    while not stderr():find("\n", 1, true) and util.now() < deadline do socket.sleep(0.05) end
    local took = util.now() - started
    -- it goes on retrying: a few seconds later the bot is still running and quiet (attempts 2-10)
    socket.sleep(1)
    local err_text, out_text = stderr(), stdout()
    stop()
    assert.matches("^lua%-zulip: registering the event queue %(POST http://127%.0%.0%.1:" .. port
                   .. "/api/v1/register%) failed: NETWORK: [^\n]+; next attempt in [%d.]+ s %(attempt 1%)\n", err_text)
    assert.is_true(took < 5, ("the first line took %.1f s"):format(took))
    local lines = select(2, err_text:gsub("\n", ""))
    assert.is_true(lines <= 2, "more than the first and the eleventh attempt were printed:\n" .. err_text)
    assert.is_nil(err_text:find(srv.users.bot.api_key, 1, true))
    assert.are.equal("", out_text)
  end)

  it("the keep_state example ('A state that stays current') prints who wrote and the unread counts", function()
    srv:control("POST", "/test/reset", {})
    local home = dir .. "/home3"
    os.execute("mkdir -p " .. util.shquote(home))
    write_zuliprc(home, srv.site)
    local stdout, stderr, stop = start_bot(home, readme_bot("## A state that stays current"))
    local ok, err = pcall(function()
      wait_for_queue(stderr)
      local deadline
      srv:control("POST", "/test/action", { action = "update_user", user_id = srv.users.alice.user_id,
                                             full_name = "Alice Renamed" })
      srv:send("alice", { type = "stream", to = "Denmark", topic = "state", content = "one" })
      srv:send("alice", { type = "private", to = srv.users.bot.email, content = "two" })
      deadline = util.now() + 10
      while select(2, stdout():gsub("\n", "")) < 2 and util.now() < deadline do socket.sleep(0.05) end
      assert.are.equal("Alice Renamed wrote (#Denmark: 1 unread; 1 unread in all)\n"
                       .. "Alice Renamed wrote (DMs with them: 1 unread; 2 unread in all)\n", stdout(),
                       "its stderr:\n" .. stderr())
    end)
    stop()
    assert(ok, err)
  end)

  it("the default stderr line goes away when on_log is given", function()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    local out = util.run_lua(([[
      local zulip = require("zulip")
      local lines = {}
      local c = zulip.client{ site = "http://127.0.0.1:%d", email = "bot@example.com",
                              api_key = "botkey0123456789ABCDEFGHIJKLMNOP", timeout = 1,
                              on_log = function(level, msg, f) if f and f.retry then lines[#lines + 1] = msg end end }
      local q = c:queue{ event_types = { "message" }, backoff = { base = 0.001, cap = 0.002 } }
      for _ = 1, 200 do q:step(0.01); if #lines >= 12 then break end end
      io.write("seen ", #lines, "\n")
    ]]):format(port))
    -- stderr is part of out: nothing else was written (a step may log more than one fast retry)
    local seen = tonumber(out:match("^seen (%d+)\n$"))
    assert.is_truthy(seen, out)
    assert.is_true(seen >= 12, out)
  end)
end)
