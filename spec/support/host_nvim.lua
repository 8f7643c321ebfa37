-- Runs inside `nvim --headless -u NONE` for spec/host_nvim_spec.lua (Debian's Neovim 0.7, LuaJIT,
-- so it loads build/luajit/zulip/core.so). The main queue is driven by `zulip.uv` on the editor's
-- loop; a 10 ms editor timer (vim.loop.new_timer) counts ticks; the scenario
-- (spec/support/host_scenario.lua) does its slow operations from the watcher's on_event.
--
-- ZULIP_HOST_MODE=plugin runs the example plugin (examples/nvim) instead: `:ZulipOpen Denmark`
-- makes the view, and the send is the plugin's own send path (`require("zulip_nvim").send`),
-- started from the plugin's on_message hook.
-- Environment: ZULIP_HOST_ROOT, ZULIP_HOST_OUT, ZULIP_SITE/ZULIP_EMAIL/ZULIP_API_KEY, and the
-- scenario's (see host_scenario.lua).
-- luacheck: globals vim
local root = os.getenv("ZULIP_HOST_ROOT")
local mode = os.getenv("ZULIP_HOST_MODE") or "api"
local INTERVAL = 10

package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. root .. "/?.lua;" .. package.path
package.cpath = root .. "/build/luajit" .. (os.getenv("ZULIP_BUILD_TAG") or "") .. "/?.so;" .. package.cpath

local uv = vim.loop
local scenario = require("spec.support.host_scenario")

local function version()
  local v = vim.version()
  return v.major .. "." .. v.minor .. "." .. v.patch
end

local S
local function quit() vim.schedule(function() vim.cmd("qall!") end) end

local ok, err = xpcall(function()
  local zulip = require("zulip")
  local client, q, send, before_finish
  if mode == "plugin" then
    vim.opt.runtimepath:append(root .. "/examples/nvim")
    vim.cmd("runtime plugin/zulip.lua")
    local plugin = require("zulip_nvim")
    local function on_message(_, m) S:guard(S.on_event, S, { type = "message", message = m }) end
    local view = plugin.open{ channel = "Denmark", client = { timeout = 10 }, on_message = on_message }
    client, q = view.client, view.queue
    send = function(msg, cb) return plugin.send(view, msg.content, { topic = msg.topic, callback = cb }) end
    before_finish = function(info) info.plugin_sent = view.sent end  -- ids the plugin showed as sent
  else
    client = zulip.client{ timeout = 10 }
    q = client:queue{ event_types = { "message" }, apply_markdown = false }
  end
  S = scenario.new{
    host = mode == "plugin" and "nvim-plugin" or "nvim", interval = INTERVAL / 1000, client = client, queue = q,
    now = function() return uv.hrtime() / 1e9 end, quit = quit, send = send, before_finish = before_finish,
    info = { nvim = version(), uv = vim.uv and "vim.uv" or "vim.loop", mode = mode },
  }
  S:prepare()
  if mode ~= "plugin" then
    S.watch = require("zulip.uv").watch(q, function(ev) S:guard(S.on_event, S, ev) end,
      function(msg, e) S:guard(function() S:finish("zulip.uv on_error: " .. tostring(msg)
        .. " (" .. tostring(type(e) == "table" and e.code) .. ")") end) end)
  end
  local timer = uv.new_timer()
  timer:start(INTERVAL, INTERVAL, function()
    S:guard(S.tick, S)
    if S.finished then timer:stop() end
  end)
end, debug.traceback)

if not ok then
  if S then
    S:finish("setting up: " .. tostring(err))
  else
    local out = os.getenv("ZULIP_HOST_OUT")
    local f = io.open(out .. "/result", "w")
    f:write("return " .. scenario.serialize({ host = "nvim", error = "setting up: " .. tostring(err) }) .. "\n")
    f:close()
    vim.cmd("qall!")
  end
end
