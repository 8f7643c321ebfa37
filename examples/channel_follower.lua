-- channel_follower.lua: follows one channel with a narrow, printing each message in it.
-- A narrow makes the server filter: messages elsewhere never reach this queue.
--
--     lua5.4 examples/channel_follower.lua Denmark            # settings from ~/.zuliprc
--     FOLLOW_MAX=2 lua5.4 examples/channel_follower.lua Denmark   # stop after two messages
local zulip = require("zulip")

local channel = arg[1] or "Denmark"
local max = tonumber(os.getenv("FOLLOW_MAX") or "")
local client = zulip.client{}
local q = client:queue{ event_types = { "message" }, narrow = { { "channel", channel } } }
assert(q:register())
print(("following #%s as %s"):format(channel, client.email))
io.stdout:flush()

local n = 0
for event in q:each() do
  local m = event.message
  print(("#%s > %s | %s: %s"):format(m.display_recipient, m.subject, m.sender_full_name, m.content))
  io.stdout:flush()
  n = n + 1
  if max and n >= max then break end
end
q:close()
