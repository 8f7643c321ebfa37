-- Runs inside `nvim --headless -u NONE` for spec/nvim_spec.lua: loads lua-zulip built for Neovim's
-- Lua (build/luajit, or build/5.1 where Neovim runs PUC Lua 5.1) and the example plugin
-- (examples/nvim), opens a view with :ZulipOpen, and measures an editor timer (vim.fn.timer_start,
-- 20 ms) while the queue long-polls. Writes `ready` (the queue id) once registered and `result`
-- (JSON) when done, then quits.
-- Environment: ZULIP_NVIM_ROOT, ZULIP_NVIM_OUT, ZULIP_NVIM_LUA, ZULIP_NVIM_MESSAGES, ZULIP_NVIM_TIMEOUT, plus
-- ZULIP_SITE/ZULIP_EMAIL/ZULIP_API_KEY for the plugin's client.
-- luacheck: globals vim
local root, out = os.getenv("ZULIP_NVIM_ROOT"), os.getenv("ZULIP_NVIM_OUT")
local want = tonumber(os.getenv("ZULIP_NVIM_MESSAGES") or "3")
local timeout_ms = 1000 * tonumber(os.getenv("ZULIP_NVIM_TIMEOUT") or "20")
local INTERVAL = 20

package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
-- ZULIP_NVIM_LUA: "luajit", or "5.1" for a Neovim built with PUC Lua (Debian's arm64 one)
package.cpath = root .. "/build/" .. (os.getenv("ZULIP_NVIM_LUA") or "luajit") .. (os.getenv("ZULIP_BUILD_TAG") or "")
  .. "/?.so;" .. package.cpath
vim.opt.runtimepath:append(root .. "/examples/nvim")

-- package.searchpath is 5.2's (LuaJIT has it; PUC Lua 5.1, Debian's arm64 Neovim, does not)
local function searchpath(name, path)
  if package.searchpath then return package.searchpath(name, path) end
  local file = name:gsub("%.", "/")
  for template in path:gmatch("[^;]+") do
    local candidate = template:gsub("%?", file)
    local f = io.open(candidate, "r")
    if f then
      f:close()
      return candidate
    end
  end
end

local function write(name, text)
  local f = assert(io.open(out .. "/" .. name .. ".tmp", "w"))
  f:write(text)
  f:close()
  assert(os.rename(out .. "/" .. name .. ".tmp", out .. "/" .. name))
end

local function fail(msg)
  write("result", vim.fn.json_encode({ error = tostring(msg) }))
  vim.cmd("qall!")
end

local ok, err = pcall(function()
  vim.cmd("runtime plugin/zulip.lua")
  vim.cmd("ZulipOpen Denmark")
end)
if not ok then return fail(err) end
local _, view = next(require("zulip_nvim").views())
if not view then return fail("ZulipOpen made no view") end

local uv = vim.loop
local now = function() return uv.hrtime() / 1e6 end
local t_open = now()
local ticks, busy_ticks, max_gap, busy_max_gap = 0, 0, 0, 0
local last, t_ready, finished

local function finish(why)
  finished = true
  write("result", vim.fn.json_encode({
    why = why,
    lines = vim.api.nvim_buf_get_lines(view.buf, 0, -1, false),
    messages = view.messages,
    ticks = ticks, busy_ticks = busy_ticks, interval_ms = INTERVAL,
    max_gap_ms = max_gap, busy_max_gap_ms = busy_max_gap,
    elapsed_ms = now() - t_ready,
    wakeups = view.watch.wakeups, steps = view.watch.steps,
    stopped = view.stopped,
    lua = jit and jit.version or _VERSION,
    nvim = vim.version().major .. "." .. vim.version().minor .. "." .. vim.version().patch,
    uv = vim.uv and "vim.uv" or "vim.loop",
    core = searchpath("zulip.core", package.cpath),
    version = require("zulip")._VERSION,
    queue_id = view.queue.id,
  }))
  vim.cmd("qall!")  -- VimLeavePre: the plugin stops the watcher and closes (deletes) the queue
end

vim.fn.timer_start(INTERVAL, function()
  if finished then return end
  local t = now()
  if not t_ready then
    if view.queue.id then
      t_ready, last = t, t
      write("ready", view.queue.id)
    elseif t - t_open > timeout_ms then
      finish("not registered")
    end
    return
  end
  local gap = t - last
  last = t
  ticks = ticks + 1
  if gap > max_gap then max_gap = gap end
  if view.queue:_state()._busy then  -- a request (the long-poll) is in flight right now
    busy_ticks = busy_ticks + 1
    if gap > busy_max_gap then busy_max_gap = gap end
  end
  if view.messages >= want then
    finish("done")
  elseif view.stopped then
    finish("stopped: " .. view.stopped)
  elseif t - t_ready > timeout_ms then
    finish("timeout")
  end
end, { ["repeat"] = -1 })
