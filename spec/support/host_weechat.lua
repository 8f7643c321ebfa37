-- A WeeChat script for spec/host_weechat_spec.lua, run by Debian's weechat-headless with its Lua
-- plugin (Lua 5.3, so it loads build/5.3/zulip/core.so). The client is driven the way a WeeChat
-- script drives any socket: `weechat.hook_fd` on `client:pollfd()` calls `client:step(0)` when
-- the fd is readable, and nothing else steps it (but on a core whose pollfd does not carry the
-- sockets, the poll core: a one-shot `hook_timer` at `client:timeout()` too, as the README says such
-- a loop must); `weechat.hook_timer(10, ...)` counts ticks. The
-- scenario (spec/support/host_scenario.lua) does its slow operations from the fd callback, where
-- the main queue's events arrive. Results go to ZULIP_HOST_OUT; the script then runs /quit.
-- WeeChat names callbacks by string, so they are globals of this script's own Lua state.
-- luacheck: globals weechat zulip_host_fd zulip_host_tick zulip_host_kick zulip_host_shutdown zulip_host_follow
local root = os.getenv("ZULIP_HOST_ROOT")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. root .. "/?.lua;" .. package.path
package.cpath = root .. "/build/5.3" .. (os.getenv("ZULIP_BUILD_TAG") or "") .. "/?.so;" .. package.cpath

weechat.register("zulip_host_spec", "lua-zulip", "1", "MIT", "lua-zulip host spec", "zulip_host_shutdown", "")

local scenario = require("spec.support.host_scenario")
local S, client, q, driver

function zulip_host_shutdown() return weechat.WEECHAT_RC_OK end

local function quit()
  weechat.command("", "/quit")
end

-- One step of whatever the fd belongs to; hands the main queue's events to the scenario.
local function step()
  if driver == "client" then
    local results = client:step(0)
    for _, r in ipairs(results) do
      if r.queue == q then
        if r.error or r.events == nil then
          return S:finish("client:step(0): the main queue failed: " .. tostring(r.message))
        end
        for _, ev in ipairs(r.events) do
          S:on_event(ev)
          if S.finished then return end
        end
      elseif r.error then
        S:note("client:step(0): another queue failed: " .. tostring(r.message))
      end
    end
  else
    local events, msg = q:step(0)
    if events == nil then return S:finish("q:step(0) failed: " .. tostring(msg)) end
    for _, ev in ipairs(events) do
      S:on_event(ev)
      if S.finished then return end
    end
  end
end

-- The one-shot timer of a core without one fd for everything (core.single_fd false).
local single_fd = require("zulip.core").single_fd
local hook_follow
local function follow()
  if single_fd then return end
  if hook_follow then
    weechat.unhook(hook_follow)
    hook_follow = nil
  end
  if S.finished then return end
  local t
  if driver == "client" then t = client:timeout() else t = q:timeout() end
  if t then hook_follow = weechat.hook_timer(math.max(1, math.ceil(t * 1000)), 0, 1, "zulip_host_follow", "") end
end

function zulip_host_fd()
  if S and not S.finished then
    S:guard(step)
    follow()
  end
  return weechat.WEECHAT_RC_OK
end

function zulip_host_follow()
  hook_follow = nil  -- a one-shot timer is gone once it fired: never unhook it
  return zulip_host_fd()
end

function zulip_host_kick()  -- the first step (a new client has work: its register)
  return zulip_host_fd()
end

local hook_tick
function zulip_host_tick()
  if S and not S.finished then
    S:guard(S.tick, S)
    if S.finished and hook_tick then
      weechat.unhook(hook_tick)
      hook_tick = nil
    end
  end
  return weechat.WEECHAT_RC_OK
end

local ok, err = xpcall(function()
  local zulip = require("zulip")
  client = zulip.client{ timeout = 10 }
  q = client:queue{ event_types = { "message" }, apply_markdown = false }
  -- the client's fd (one fd for everything the client does: what a host watches); a module
  -- without client:pollfd is driven through the queue's own fd instead, and the result says so
  -- (the spec fails on it)
  local fd
  if type(client.pollfd) == "function" then
    driver, fd = "client", client:pollfd()
  else
    driver, fd = "queue (the client has no pollfd)", q:pollfd()
  end
  S = scenario.new{
    host = "weechat", interval = 0.01, client = client, queue = q, now = require("zulip.core").now, quit = quit,
    info = { weechat = weechat.info_get("version", ""), driver = driver },
  }
  S:prepare()
  weechat.hook_fd(fd, 1, 0, 0, "zulip_host_fd", "")
  weechat.hook_timer(1, 0, 1, "zulip_host_kick", "")
  hook_tick = weechat.hook_timer(10, 0, 0, "zulip_host_tick", "")
end, debug.traceback)

if not ok then
  if S then
    S:finish("setting up: " .. tostring(err))
  else
    local f = io.open(os.getenv("ZULIP_HOST_OUT") .. "/result", "w")
    f:write("return " .. scenario.serialize({ host = "weechat", error = "setting up: " .. tostring(err) }) .. "\n")
    f:close()
    quit()
  end
end
