-- demo.lua (run by `make demo`): starts the bundled dev server on 127.0.0.1, runs
-- examples/echo_bot.lua against it, posts a short conversation as Alice, and stops cleanly.
local devserver = require("spec.support.devserver")
local core = require("zulip.core")

local lua = arg and arg[-1] or "lua5.4"
local function sh(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local function sleep(s) core.sleep(s) end

local srv = devserver.start{ heartbeat = 5 }
local ok, err = pcall(function()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. sh(dir)))
  local rc = dir .. "/zuliprc"
  local f = assert(io.open(rc, "w"))
  f:write("[api]\nemail=", srv.users.bot.email, "\nkey=", srv.users.bot.api_key, "\nsite=", srv.site, "\n")
  f:close()
  print("demo: dev server at " .. srv.site .. "; starting the echo bot with " .. rc)

  local pidfile = dir .. "/bot.pid"
  assert(os.execute(("ZULIP_CONFIG=%s ECHO_BOT_MAX=3 %s examples/echo_bot.lua & echo $! > %s")
    :format(sh(rc), sh(lua), sh(pidfile))))
  sleep(0.1)
  local pid = assert(io.open(pidfile)):read("*l")
  -- a bot that has exited but is not reaped yet (a zombie: where PID 1 reaps late, as in some
  -- containers) still answers kill -0, so its state in /proc decides first
  local function bot_alive()
    local stat = io.open("/proc/" .. pid .. "/stat")
    if stat then
      local state = (stat:read("*l") or ""):match("^%d+ %b() (%a)")
      stat:close()
      if state == "Z" or state == "X" then return false end
    end
    return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
      or os.execute("kill -0 " .. pid .. " 2>/dev/null") == 0
  end

  -- wait (bounded) until the bot has registered its queue
  local t0 = core.now()
  repeat
    sleep(0.05)
    local queues = srv:control("GET", "/test/queues").queues
  until #queues > 0 or core.now() - t0 > 10
  for _, text in ipairs{ "Hello bot!", "Can you echo this?", "Thanks, bye." } do
    sleep(0.3)
    print("demo: Alice says: " .. text)
    srv:send("alice", { type = "stream", to = "Denmark", topic = "demo", content = text })
  end
  t0 = core.now()
  while bot_alive() and core.now() - t0 < 15 do sleep(0.1) end
  if bot_alive() then
    os.execute("kill " .. pid)
    error("the echo bot did not finish in time")
  end
  os.execute("rm -rf " .. sh(dir))
end)
srv:stop()
if not ok then
  io.stderr:write("demo failed: ", tostring(err), "\n")
  os.exit(1)
end
print("demo: done; the dev server has stopped")
