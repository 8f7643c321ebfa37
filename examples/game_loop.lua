--- A game-style frame loop that receives and sends Zulip messages without ever stalling a frame:
-- each frame calls `q:step(0)` (which never blocks), handles what arrived, "renders", and sleeps
-- until the next frame. The long-poll, retries and re-registering all happen between frames.
-- A message that starts with "ping" is answered with "pong" through the callback form of
-- `client:reply`: the call returns at once, and the callback runs from a later frame's
-- `q:step(0)` when the server has answered, however long that takes.
--
--     lua examples/game_loop.lua [frames [fps]]     (default: 600 frames at 60 fps)
--
-- Credentials: ZULIP_SITE, ZULIP_EMAIL, ZULIP_API_KEY, or ~/.zuliprc. Prints one line per
-- message ("frame N: Sender: content"), one per pong sent ("frame N: sent pong (id I): F frames
-- in S s while the reply was on its way") and a summary line at the end.
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
local current, pending = 0, 0

-- Answers "ping" without waiting: the frame goes on, the callback reports when the reply came.
-- client:reply answers in the message's channel and topic, or in its DM conversation.
local function answer(m)
  local sent_frame, sent_at = current, core.now()
  pending = pending + 1
  client:reply(m, "pong", function(reply, msg)
    pending = pending - 1
    if reply then
      print(("frame %d: sent pong (id %s): %d frames in %.3f s while the reply was on its way")
        :format(current, tostring(reply.id), current - sent_frame, core.now() - sent_at))
    else
      print(("frame %d: sending pong failed: %s"):format(current, msg))
    end
  end)
end

for frame = 1, frames do
  current = frame
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
      if ev.message.sender_email ~= client.email and tostring(ev.message.content):match("^ping") then
        answer(ev.message)
      end
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

print(("frames=%d messages=%d late_frames=%d seconds=%.2f step_max_ms=%.3f step_mean_ms=%.4f pending_sends=%d")
  :format(frames, messages, late, core.now() - started, worst * 1000, total / frames * 1000, pending))
q:close()
