-- bridge.lua: several accounts' queues in one process, driven together by zulip.step_all
-- (one poll(2) over all their fds: no thread, no busy loop). Every message each account sees is
-- printed with the account it came through, and a direct message to any of the accounts is
-- bridged to the channel #Denmark > inbox, posted by the account that received it. The post
-- goes out with the callback form of `client:send_message`: the loop never waits for the
-- server's answer; the callback runs from a later `step_all` and prints "bridged as message N".
--
--     lua5.4 examples/bridge.lua ~/.zuliprc-bot1 ~/.zuliprc-bot2
--     BRIDGE_MAX=4 lua5.4 examples/bridge.lua a.zuliprc b.zuliprc    # stop after 4 events
local zulip = require("zulip")

local max = tonumber(os.getenv("BRIDGE_MAX") or "")
local accounts, queues = {}, {}
for i, path in ipairs(arg) do
  local client = zulip.client{ zuliprc = path }
  local q = client:queue{ event_types = { "message" } }
  assert(q:register())
  accounts[q] = client
  queues[i] = q
  print(("bridge: %s on %s"):format(client.email, client.site))
end
if #queues == 0 then error("usage: bridge.lua ZULIPRC [ZULIPRC ...]", 0) end
io.stdout:flush()

local seen, pending = 0, 0
local drain_until  -- once enough events are seen: how long pending posts are still awaited
while not max or seen < max or pending > 0 do
  if max and seen >= max then
    drain_until = drain_until or (os.time() + 10)
    if os.time() > drain_until then
      print(("bridge: %d posts still unanswered; leaving"):format(pending))
      break
    end
  end
  for _, r in ipairs(zulip.step_all(queues, pending > 0 and 1 or 30)) do
    local client = accounts[r.queue]
    if r.error then error(("%s: %s"):format(client.email, r.message), 0) end
    for _, ev in ipairs(r.events) do
      local m = ev.message
      print(("[%s] %s: %s"):format(client.email, m.sender_full_name, m.content))
      if m.type == "private" and m.sender_email ~= client.email then
        local text = ("%s wrote to %s: %s"):format(m.sender_full_name, client.email, m.content)
        pending = pending + 1
        client:send_message({ type = "stream", to = "Denmark", topic = "inbox", content = text }, function(reply, msg)
          pending = pending - 1
          if reply then
            print(("[%s] bridged as message %s"):format(client.email, tostring(reply.id)))
          else
            print(("[%s] bridging failed: %s"):format(client.email, msg))
          end
          io.stdout:flush()
        end)
      end
      seen = seen + 1
    end
    io.stdout:flush()
  end
end
for _, q in ipairs(queues) do q:close() end
