-- Real headless Neovim (Debian's 0.7.2, LuaJIT) runs the example plugin (examples/nvim) on the
-- module built for LuaJIT (build/luajit) and receives pushed messages, while an editor timer
-- shows that the editor's loop stayed responsive during the long-poll. The driver that runs
-- inside Neovim is spec/support/nvim_driver.lua.
local cjson = require("cjson")
local socket = require("socket")
local devserver = require("spec.support.devserver")
local hosts = require("spec.support.hosts")
local util = require("spec.support.util")

local root = util.root
if root:sub(1, 1) ~= "/" then root = (os.getenv("PWD") or ".") .. (root == "." and "" or ("/" .. root)) end

local sh, wait_for = hosts.sh, hosts.wait_for

describe("Neovim drives a queue through zulip.uv", function()
  local srv = util.use_devserver{ heartbeat = 30 }
  local nvim_lua = util.nvim_lua()  -- "luajit", or "5.1" for a Neovim built with PUC Lua (arm64)

  setup(function()
    -- Neovim loads the C core through package.cpath; make sure the build for its Lua is current
    assert(sh("make --no-print-directory -C " .. util.shquote(root) .. " LUA=" .. nvim_lua .. util.make_poller()
              .. " " .. util.build_dir(nvim_lua) .. "/zulip/core.so >/dev/null"), "make LUA=" .. nvim_lua .. " failed")
  end)

  it("shows pushed messages in the plugin's buffer; a 20 ms editor timer keeps its pace meanwhile", function()
    local out = util.tmpdir()
    local bot = srv.users.bot
    local env = {
      ZULIP_NVIM_ROOT = root, ZULIP_NVIM_OUT = out, ZULIP_NVIM_LUA = nvim_lua,
      ZULIP_NVIM_MESSAGES = "3", ZULIP_NVIM_TIMEOUT = "20",
      ZULIP_SITE = srv.site, ZULIP_EMAIL = bot.email, ZULIP_API_KEY = bot.api_key,
      HOME = out,  -- no ~/.zuliprc: the environment alone configures the client
    }
    local parts = { "env" }
    for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. util.shquote(v) end
    assert(sh(table.concat(parts, " ") .. " timeout -k 5 60 nvim --headless -u NONE -i NONE -n -c "
              .. util.shquote("luafile " .. root .. "/spec/support/nvim_driver.lua")
              .. " </dev/null >" .. util.shquote(out .. "/log") .. " 2>&1 & echo $! >" .. util.shquote(out .. "/pid")))
    local pid = tonumber(util.read_file(out .. "/pid"))

    local function log() return (util.read_file(out .. "/log") or "") .. (util.read_file(out .. "/result") or "") end
    local qid = wait_for(20, function() return util.read_file(out .. "/ready") or util.read_file(out .. "/result") end)
    assert.is_truthy(qid, "Neovim did not register a queue: " .. log())
    assert.is_nil(util.read_file(out .. "/result"), log())

    -- Three messages, each sent only after the server has held Neovim's long-poll open for a while
    local held = 0
    for i = 1, 3 do
      local waiting = wait_for(10, function()
        for _, info in ipairs(srv:control("GET", "/test/queues").queues) do
          if info.id == qid and info.waiting then return true end
        end
      end)
      assert.is_true(waiting, "no long-poll pending before message " .. i .. ": " .. log())
      socket.sleep(0.4)
      held = held + 0.4
      srv:send("alice", { type = "stream", to = "Denmark", topic = "nvim", content = "hello nvim " .. i })
    end

    local text = wait_for(20, function() return util.read_file(out .. "/result") end)
    assert.is_truthy(text, "no result from Neovim: " .. log())
    local r = cjson.decode(text)
    assert.is_nil(r.error, log())
    assert.are.equal("done", r.why, log())
    wait_for(10, function() return not devserver.process_alive(pid) end)
    assert.is_false(devserver.process_alive(pid), "Neovim did not quit")

    -- the real editor and the module built for its Lua
    if nvim_lua == "luajit" then assert.matches("^LuaJIT", r.lua) else assert.are.equal("Lua 5.1", r.lua) end
    assert.are.equal("0.7.2", r.nvim)
    assert.are.equal("vim.loop", r.uv)  -- 0.7 has no vim.uv: the adapter found vim.loop
    assert.are.equal(root .. "/" .. util.build_dir(nvim_lua) .. "/zulip/core.so", r.core)

    -- the plugin's buffer shows the three messages, in order
    local shown = {}
    for _, line in ipairs(r.lines) do
      local n = line:match("Alice %(#Denmark > nvim%): hello nvim (%d)$")
      if n then shown[#shown + 1] = tonumber(n) end
    end
    assert.are.same({ 1, 2, 3 }, shown)

    -- Responsiveness. The server held the long-poll for >= 1.2 s in all; a 20 ms timer on the
    -- editor's main loop fired throughout, and never late by more than a few intervals. Had the
    -- long-poll blocked the loop, the timer would have stalled for 0.4 s before each message.
    local expected = r.elapsed_ms / r.interval_ms
    print(("\n  nvim: %.0f ms, %d ticks of %d ms (%.0f expected), %d while the long-poll was in flight;"
      .. " max gap %.1f ms (%.1f ms in flight); %d fd wake-ups, %d steps")
      :format(r.elapsed_ms, r.ticks, r.interval_ms, expected, r.busy_ticks, r.max_gap_ms,
              r.busy_max_gap_ms, r.wakeups, r.steps))
    assert.is_true(r.elapsed_ms >= held * 1000)
    assert.is_true(r.ticks >= expected * 0.5, "timer fired " .. r.ticks .. " of " .. expected .. " times")
    assert.is_true(r.busy_ticks >= (held * 1000 / r.interval_ms) * 0.5, "only " .. r.busy_ticks .. " ticks in flight")
    assert.is_true(r.max_gap_ms < 200, "the editor's timer stalled for " .. r.max_gap_ms .. " ms")
    -- and the watcher is woken by its fd only when there is work, not in a busy loop
    assert.is_true(r.wakeups < 100, r.wakeups .. " wake-ups")

    -- leaving Neovim closed the queue: the plugin deleted it on the server
    for _, info in ipairs(srv:control("GET", "/test/queues").queues) do assert.are_not.equal(qid, info.id) end
    sh("rm -rf " .. util.shquote(out))
  end)

  it("shows retries in the plugin's buffer, not on stderr (which would draw over the editor)", function()
    local out = util.tmpdir()
    local port = assert(socket.bind("127.0.0.1", 0))
    local _, free = port:getsockname()
    port:close()
    local code = table.concat({
      ("package.path = %q .. package.path"):format(root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;"),
      ("package.cpath = %q .. package.cpath"):format(root .. "/" .. util.build_dir(util.nvim_lua()) .. "/?.so;"),
      ("vim.opt.runtimepath:append(%q)"):format(root .. "/examples/nvim"),
      "vim.cmd('runtime plugin/zulip.lua')",
      "vim.cmd('ZulipOpen Denmark')",
      "local _, view = next(require('zulip_nvim').views())",
      "local function shown() return table.concat(vim.api.nvim_buf_get_lines(view.buf, 0, -1, false), '\\n') end",
      "vim.wait(8000, function() return shown():find('failed', 1, true) ~= nil end, 20)",
      ("vim.fn.writefile(vim.split(shown(), '\\n'), %q)"):format(out .. "/lines"),
      "require('zulip_nvim').close(nil, { wait = 0 })",
      "vim.cmd('qall!')",
    }, "\n")
    util.write_file(out .. "/test.lua", code)
    local env = ("env HOME=%s ZULIP_SITE=http://127.0.0.1:%d ZULIP_EMAIL=bot@example.com ZULIP_API_KEY=%s")
      :format(util.shquote(out), free, srv.users.bot.api_key)
    assert(sh(env .. " timeout -k 5 30 nvim --headless -u NONE -i NONE -n -c "
              .. util.shquote("luafile " .. out .. "/test.lua") .. " </dev/null >" .. util.shquote(out .. "/log")
              .. " 2>&1"))
    local lines, log = util.read_file(out .. "/lines") or "", util.read_file(out .. "/log") or ""
    sh("rm -rf " .. util.shquote(out))
    assert.matches("\n%-%- registering the event queue %(POST http://127%.0%.0%.1:" .. free
                   .. "/api/v1/register%) failed: NETWORK: [^\n]+%(attempt 1%)", lines)
    assert.is_nil(log:find("lua-zulip:", 1, true), log)
  end)
end)
