-- Real LÖVE (Debian's love 11.4, LuaJIT, build/luajit) under xvfb-run, with the dev server
-- delaying one reply at a time: a game that calls q:step(0) once per frame sends a message,
-- closes a queue and collects an open queue from love.update, and must keep at least 70% of
-- the frames expected from its frame rate before the slow operation (hosts.MIN_SHARE). The game is
-- spec/support/love/ (main.lua, conf.lua), the scenario spec/support/host_scenario.lua.
--
-- LÖVE runs its own LuaJIT whatever Lua runs busted, so this file defines its test only in the
-- 5.4 run of the suite (see hosts.this_lua); under 5.3, 5.1 and LuaJIT it defines none.
local hosts = require("spec.support.hosts")
local util = require("spec.support.util")

if not hosts.this_lua() then return end

describe("LÖVE (q:step(0) per frame, under xvfb-run) while the server is slow", function()
  local srv = util.use_devserver{ heartbeat = 30 }

  setup(function()
    hosts.build("luajit")
  end)

  it("keeps its frames coming through a send (reply delayed 2 s), q:close() and a collected queue"
     .. " (DELETE delayed 3 s)", function()
    local run = hosts.start(srv, {
      name = "love", limit = 60,
      env = { SDL_AUDIODRIVER = "dummy" },
      argv = { "xvfb-run", "-a", "-s", "-screen 0 320x240x24", "love", hosts.root .. "/spec/support/love" },
    })
    local ok, err = pcall(function()
      local r = hosts.play(srv, run)
      assert.are.equal("11.4.0", r.info.love)
      assert.matches("^LuaJIT", r.lua)
      assert.are.equal(hosts.root .. "/" .. hosts.build_dir("luajit") .. "/zulip/core.so", r.core)
      hosts.check(srv, r, run)
    end)
    run.stop()
    if not ok then error(tostring(err) .. "\n  (the host's files: " .. run.dir .. ")", 0) end
    run.cleanup()
  end)
end)
