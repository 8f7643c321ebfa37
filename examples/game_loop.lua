--- A game-style frame loop that receives Zulip messages without ever stalling a frame: each
-- frame calls `q:step(0)` (which never blocks), handles what arrived, "renders", and sleeps
-- until the next frame. The long-poll, retries and re-registering all happen between frames.
--
--     lua examples/game_loop.lua [frames [fps]]     (default: 600 frames at 60 fps)
--
-- Credentials: ZULIP_SITE, ZULIP_EMAIL, ZULIP_API_KEY, or ~/.zuliprc. Prints one line per
-- message ("frame N: Sender: content") and a summary line at the end.
local zulip = require("zulip")
local core = require("zulip.core")  -- its monotonic clock and sleep; a game brings its own

local frames = tonumber(arg and arg[1]) or 600
local fps = tonumber(arg and arg[2]) or 60
io.stdout:setvbuf("line")

local client = zulip.client()
local q = client:queue{ event_types = { "message" }, apply_markdown = false }

local frame_time = 1 / fps
local started = core.now()
local next_frame = started
local worst, total, messages, late = 0, 0, 0, 0
local registered = false

for frame = 1, frames do
  local t0 = core.now()
  local events, msg = q:step(0)
  local spent = core.now() - t0
  total = total + spent
  if spent > worst then worst = spent end
  if not events then
    print("fatal: " .. msg)
    break
  end
  if not registered and q.id then
    registered = true
    print(("frame %d: registered queue %s"):format(frame, q.id))
  end
  for _, ev in ipairs(events) do
    if ev.type == "message" then
      messages = messages + 1
      print(("frame %d: %s: %s"):format(frame, ev.message.sender_full_name, ev.message.content))
    end
  end

  -- draw_world(); swap_buffers() would go here

  next_frame = next_frame + frame_time
  local idle = next_frame - core.now()
  if idle > 0 then
    core.sleep(idle)
  else
    late = late + 1
    next_frame = core.now()  -- a slow frame: don't try to catch up
  end
end

print(("frames=%d messages=%d late_frames=%d seconds=%.2f step_max_ms=%.3f step_mean_ms=%.4f")
  :format(frames, messages, late, core.now() - started, worst * 1000, total / frames * 1000))
q:close()
