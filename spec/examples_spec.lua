-- The examples run against the dev server here, so they never rot.
local util = require("spec.support.util")
local socket = require("socket")

describe("examples", function()
  local srv, dir

  local function zuliprc(user)
    local u = srv.users[user]
    return util.write_file(dir .. "/" .. user .. ".zuliprc",
      ("[api]\nemail=%s\nkey=%s\nsite=%s\n"):format(u.email, u.api_key, srv.site))
  end

  -- runs an example in the background-safe way: bounded by `timeout`, output captured
  local function run(script, args, env)
    local parts = { "env" }
    for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. util.shquote(v) end
    parts[#parts + 1] = "LUA_PATH=" .. util.shquote(package.path)
    parts[#parts + 1] = "LUA_CPATH=" .. util.shquote(package.cpath)
    parts[#parts + 1] = "timeout 20 " .. util.lua_bin() .. " " .. util.shquote(util.root .. "/examples/" .. script)
    for _, a in ipairs(args or {}) do parts[#parts + 1] = util.shquote(a) end
    local p = io.popen(table.concat(parts, " ") .. " 2>&1")
    local out = p:read("*a")
    local ok = p:close()
    return out, ok == true or ok == 0
  end

  -- starts an example in the background (bounded by `timeout`); returns its output file and a
  -- function that waits (at most `secs`) for the example to end and returns its output
  local function start(script, args, env)
    local parts = { "env" }
    for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. util.shquote(v) end
    parts[#parts + 1] = "LUA_PATH=" .. util.shquote(package.path)
    parts[#parts + 1] = "LUA_CPATH=" .. util.shquote(package.cpath)
    parts[#parts + 1] = "timeout 30 " .. util.lua_bin() .. " " .. util.shquote(util.root .. "/examples/" .. script)
    for _, a in ipairs(args or {}) do parts[#parts + 1] = util.shquote(a) end
    local out = dir .. "/" .. script .. ".out"
    os.remove(out)
    assert(os.execute("(" .. table.concat(parts, " ") .. " </dev/null >" .. util.shquote(out)
                      .. " 2>&1; echo $? >" .. util.shquote(out .. ".rc") .. ") &"))
    os.remove(out .. ".rc")
    local function output() return util.read_file(out) or "" end
    local function finish(secs)
      local deadline = util.now() + secs
      while not util.read_file(out .. ".rc") and util.now() < deadline do socket.sleep(0.05) end
      return output(), (util.read_file(out .. ".rc") or ""):match("^0") ~= nil
    end
    return output, finish
  end

  local function msg(content, extra)
    local m = { type = "stream", to = "Denmark", topic = "ex", content = content }
    for k, v in pairs(extra or {}) do m[k] = v end
    return m
  end

  srv = util.use_devserver{ heartbeat = 2 }
  setup(function() dir = util.tmpdir() end)
  teardown(function() os.execute("rm -rf " .. util.shquote(dir)) end)

  it("echo_bot.lua prints messages and answers the ones that say echo, a DM in the DM", function()
    util.send_when_queued(srv, { "bot@example.com" },
                          { { "alice", msg("hello") }, { "alice", msg("please echo me") },
                            { "alice", { type = "private", to = srv.users.bot.email, content = "echo in private" } } })
    local out, ok = run("echo_bot.lua", {}, { ZULIP_CONFIG = zuliprc("bot"), ECHO_BOT_MAX = "3" })
    assert.is_true(ok, out)
    assert.matches("queue registered", out)
    assert.matches("%[#Denmark > ex%] Alice: hello\n", out)
    assert.matches("%[#Denmark > ex%] Alice: please echo me\n", out)
    assert.matches("echo bot: done", out)
    local reqs = srv:control("GET", "/test/requests?n=50").requests
    local replied = false
    for _, r in ipairs(reqs) do
      if r.path == "/api/v1/messages" and type(r.form) == "table" and r.form.content == "echo: please echo me" then
        replied = true
      end
    end
    assert.is_true(replied, "the bot did not answer")
    assert.matches("%[direct%] Alice: echo in private\n  %(answered: message %d+%)\n", out)
    local dm
    for _, r in ipairs(reqs) do
      if r.path == "/api/v1/messages" and type(r.form) == "table" and r.form.content == "echo: echo in private" then
        dm = r.form
      end
    end
    assert.are.same({ type = "private", to = "[" .. srv.users.alice.user_id .. "]", content = "echo: echo in private" },
                    dm)
  end)

  it("channel_follower.lua sees only its channel", function()
    util.send_when_queued(srv, { "bot@example.com" }, {
      { "alice", msg("elsewhere", { to = "Scotland" }) }, { "alice", msg("first") },
      { "alice", msg("second", { to = "Scotland" }) }, { "alice", msg("third") },
    })
    local out, ok = run("channel_follower.lua", { "Denmark" }, { ZULIP_CONFIG = zuliprc("bot"), FOLLOW_MAX = "2" })
    assert.is_true(ok, out)
    assert.matches("following #Denmark", out)
    assert.matches("#Denmark > ex | Alice: first\n#Denmark > ex | Alice: third\n", out)
    assert.is_nil(out:find("Scotland", 1, true))
  end)

  it("bridge.lua runs two accounts' queues in one process and bridges direct messages", function()
    util.send_when_queued(srv, { "bot@example.com", "alice@example.com" },
                          { { "alice", { type = "private", to = srv.users.bot.email, content = "psst" } } })
    local out, ok = run("bridge.lua", { zuliprc("bot"), zuliprc("alice") }, { BRIDGE_MAX = "4" })
    assert.is_true(ok, out)
    assert.matches("bridge: bot@example.com", out)
    assert.matches("bridge: alice@example.com", out)
    assert.matches("%[bot@example.com%] Alice: psst", out)
    assert.matches("%[alice@example.com%] Alice: psst", out)
    assert.matches("%[bot@example.com%] Echo Bot: Alice wrote to bot@example.com: psst", out)
    assert.matches("%[alice@example.com%] Echo Bot: Alice wrote to bot@example.com: psst", out)
    -- the post went out in the callback form: its callback ran from a later step_all
    assert.matches("%[bot@example.com%] bridged as message %d+", out)
  end)

  it("game_loop.lua answers ping without stalling its frames while the server delays the reply 2 s", function()
    local fps = 60
    local output, finish = start("game_loop.lua", { "240", tostring(fps) }, { ZULIP_CONFIG = zuliprc("bot") })
    local deadline = util.now() + 15
    while not output():find("registered queue", 1, true) and not output():find("frames=", 1, true)
          and util.now() < deadline do
      socket.sleep(0.02)
    end
    assert.matches("registered queue", output())
    srv:control("POST", "/test/fault", { kind = "delay", seconds = 2, path = "/api/v1/messages", method = "POST" })
    srv:control("POST", "/test/messages", { count = 1, to = "Denmark", topic = "game", content_prefix = "ping" })
    local out, ok = finish(25)
    assert.is_true(ok, out)
    assert.matches("Alice: ping1\n", out)
    local frames, secs = out:match("sent pong %(id %d+%): (%d+) frames in ([%d.]+) s while the reply was on its way")
    assert.is_truthy(frames, "the pong's callback never reported (did send_message block?):\n" .. out)
    frames, secs = tonumber(frames), tonumber(secs)
    assert.is_true(secs >= 1.8, "the reply came after " .. secs .. " s: the server's delay was not in effect")
    -- the frames kept coming while the reply was on its way: at least 70% of those expected
    assert.is_true(frames >= 0.7 * secs * fps, ("%d frames in %.3f s (%.0f expected):\n%s")
      :format(frames, secs, secs * fps, out))
    assert.matches("pending_sends=0", out)
  end)
end)
