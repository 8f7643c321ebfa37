-- Real WeeChat (Debian's weechat-headless with its Lua plugin: Lua 5.3, build/5.3) with the dev
-- server delaying one reply at a time: a script that steps the client from `weechat.hook_fd` on
-- `client:pollfd()` sends a message, closes a queue and collects an open queue, and a 10 ms
-- `weechat.hook_timer` must keep at least 70% of its expected ticks across each (hosts.MIN_SHARE). The
-- script is spec/support/host_weechat.lua, the scenario spec/support/host_scenario.lua.
--
-- WeeChat runs its own Lua 5.3 whatever Lua runs busted, so this file defines its test only in
-- the 5.4 run of the suite (see hosts.this_lua); under 5.3, 5.1 and LuaJIT it defines none.
local hosts = require("spec.support.hosts")
local util = require("spec.support.util")

if not hosts.this_lua() then return end

describe("WeeChat (hook_fd on client:pollfd(), 10 ms hook_timer) while the server is slow", function()
  local srv = util.use_devserver{ heartbeat = 30 }

  setup(function()
    hosts.build("5.3")
  end)

  it("keeps ticking through a send (reply delayed 2 s), q:close() and a collected queue (DELETE delayed 3 s)",
     function()
    local run = hosts.start(srv, {
      name = "weechat", limit = 60,
      -- headless: no terminal, no daemon; -a: connect to nothing; the run dir is the spec's own
      argv = { "weechat-headless", "-a", "--dir", "@OUT@/weechat",
               "--run-command", "/lua load " .. hosts.root .. "/spec/support/host_weechat.lua" },
    })
    local ok, err = pcall(function()
      local r = hosts.play(srv, run)
      assert.matches("^3%.", r.info.weechat)
      assert.are.equal("Lua 5.3", r.lua)
      assert.are.equal(hosts.root .. "/" .. hosts.build_dir("5.3") .. "/zulip/core.so", r.core)
      hosts.check(srv, r, run, { { r.info.driver == "client", "the script could not drive the client: the"
                                     .. " queue's fd and q:step(0) stood in (" .. tostring(r.info.driver) .. ")" } })
    end)
    run.stop()
    if not ok then error(tostring(err) .. "\n  (the host's files: " .. run.dir .. ")", 0) end
    run.cleanup()
  end)
end)
