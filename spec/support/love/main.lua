-- A small LÖVE 11.4 game (LuaJIT) for spec/host_love_spec.lua: every frame, love.update calls
-- `q:step(0)` once, hands the events to the scenario (spec/support/host_scenario.lua), which does
-- its slow operations from there, and counts the frame. Frames are capped at about 100 per
-- second, as games cap theirs; the spec expects frames at the rate seen before the first slow
-- operation. The project's modules come from ZULIP_HOST_ROOT (lua/ and build/luajit/); results go
-- to ZULIP_HOST_OUT. Anything that raises ends the game with the error in the result file (never
-- LÖVE's error screen, which would wait for ever).
-- luacheck: globals love
local root = os.getenv("ZULIP_HOST_ROOT")
local out = os.getenv("ZULIP_HOST_OUT")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. root .. "/?.lua;" .. package.path
package.cpath = root .. "/build/luajit" .. (os.getenv("ZULIP_BUILD_TAG") or "") .. "/?.so;" .. package.cpath

local FRAME = 0.01  -- the frame cap: 100 frames per second
local scenario = require("spec.support.host_scenario")
local S, q

local function early_failure(msg)
  local f = io.open(out .. "/result", "w")
  if f then
    f:write("return " .. scenario.serialize({ host = "love", error = tostring(msg) }) .. "\n")
    f:close()
  end
end

function love.errorhandler(msg)
  local text = tostring(msg) .. "\n" .. debug.traceback("", 2)
  if S then S:finish("LÖVE error handler: " .. text) else early_failure(text) end
  return nil  -- no error screen: quit
end

function love.load()
  local zulip = require("zulip")
  local client = zulip.client{ timeout = 10 }
  q = client:queue{ event_types = { "message" }, apply_markdown = false }
  local major, minor, revision = love.getVersion()
  S = scenario.new{
    host = "love", client = client, queue = q, now = love.timer.getTime,
    quit = function() love.event.quit() end,
    info = { love = ("%d.%d.%d"):format(major, minor, revision), renderer = love.graphics.getRendererInfo() },
  }
  S:prepare()
end

local next_frame
local function frame()
  local events, msg, err = q:step(0)
  if events == nil then
    return S:finish("q:step(0) failed: " .. tostring(msg) .. " (" .. tostring(type(err) == "table" and err.code) .. ")")
  end
  for i = 1, #events do
    S:on_event(events[i])
    if S.finished then return end
  end
  S:tick()
end

function love.update()
  if S.finished then return end
  S:guard(frame)
  -- the frame cap: sleep out the rest of this frame's 10 ms
  local t = love.timer.getTime()
  next_frame = (next_frame or t) + FRAME
  if next_frame > t then love.timer.sleep(next_frame - t) else next_frame = t end
end

function love.draw()
  love.graphics.print(S and S.phase or "", 2, 2)
end
