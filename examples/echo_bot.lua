-- echo_bot.lua: prints every message it can see and answers messages that mention "echo".
-- Settings come from ~/.zuliprc (or $ZULIP_CONFIG, or ZULIP_* variables):
--
--     lua5.4 examples/echo_bot.lua            # runs until Ctrl-C
--     ECHO_BOT_MAX=3 lua5.4 examples/echo_bot.lua   # stops after 3 messages
local zulip = require("zulip")

local client = zulip.client{}
local max = tonumber(os.getenv("ECHO_BOT_MAX") or "")
local q = client:queue{ event_types = { "message" } }
local state = assert(q:register())
print(("echo bot: %s on %s, queue registered (Zulip %s)"):format(client.email, client.site, state.zulip_version))
io.stdout:flush()

local seen = 0
local function on_retry(r) print(("  (retrying after %s in %.2f s)"):format(r.reason, r.delay)) end
for event in q:each{ on_retry = on_retry } do
  local m = event.message
  local where = m.type == "stream" and ("#" .. m.display_recipient .. " > " .. m.subject) or "direct"
  print(("[%s] %s: %s"):format(where, m.sender_full_name, m.content))
  io.stdout:flush()
  if m.sender_email ~= client.email and m.content:lower():find("echo", 1, true) then
    -- in the same channel and topic, or in the same DM conversation (display_recipient is the
    -- channel's name for a channel message, a list of users for a DM: reply knows both)
    local sent, msg = client:reply(m, "echo: " .. m.content)
    if sent then
      print(("  (answered: message %s)"):format(tostring(sent.id)))
    else
      print("  (could not answer: " .. msg .. ")")
    end
  end
  if m.sender_email ~= client.email then seen = seen + 1 end
  if max and seen >= max then break end
end
q:close()
print("echo bot: done")
