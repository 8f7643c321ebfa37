-- Real headless Neovim (Debian's 0.7, LuaJIT, build/luajit) with the dev server delaying one
-- reply at a time: a send from zulip.uv's on_event, q:close() and collecting an open queue must
-- each leave a 10 ms editor timer (vim.loop.new_timer) ticking: at least 70% of the expected
-- ticks across the slow operation (hosts.MIN_SHARE). The driver inside Neovim is
-- spec/support/host_nvim.lua, the scenario spec/support/host_scenario.lua.
--
-- Neovim runs its own LuaJIT whatever Lua runs busted, so this file defines its tests only in the
-- 5.4 run of the suite (see hosts.this_lua); under 5.3, 5.1 and LuaJIT it defines none.
local hosts = require("spec.support.hosts")
local util = require("spec.support.util")

if not hosts.this_lua() then return end

describe("Neovim (zulip.uv, 10 ms editor timer) while the server is slow", function()
  local srv = util.use_devserver{ heartbeat = 30 }

  setup(function()
    hosts.build("luajit")
  end)

  local function nvim(mode, ops)
    local run = hosts.start(srv, {
      name = "nvim", limit = 60, env = { ZULIP_HOST_MODE = mode }, ops = ops,
      argv = { "nvim", "--headless", "-u", "NONE", "-i", "NONE", "-n",
               "-c", "luafile " .. hosts.root .. "/spec/support/host_nvim.lua" },
    })
    local ok, err = pcall(function()
      local r = hosts.play(srv, run)
      assert.are.equal("0.7.2", r.info.nvim)
      assert.matches("^LuaJIT", r.lua)
      assert.are.equal(hosts.root .. "/" .. hosts.build_dir("luajit") .. "/zulip/core.so", r.core)
      local extra = {}
      if mode == "plugin" then  -- the plugin's own callback saw the reply before the scenario's
        local sent = r.info.plugin_sent or {}
        extra[1] = { sent[1] ~= nil and sent[1] == r.ops.send.reply_id,
                     "the plugin did not record the sent message (zulip_nvim view.sent is empty)" }
      end
      hosts.check(srv, r, run, extra)
    end)
    run.stop()
    if not ok then error(tostring(err) .. "\n  (the host's files: " .. run.dir .. ")", 0) end
    run.cleanup()
  end

  it("keeps ticking through a send from on_event (reply delayed 2 s), q:close() and a collected queue"
     .. " (DELETE delayed 3 s)", function()
    nvim("api")
  end)

  it("the example plugin's send path (zulip_nvim.send) keeps the editor ticking while the reply is delayed",
     function()
    nvim("plugin", { "send" })
  end)
end)
