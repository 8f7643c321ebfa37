-- smoke.lua: the installed module registers a queue on the dev server and receives a message.
local zulip = require("zulip")
local source = debug.getinfo(zulip.client, "S").source
local core_path = package.cpath
assert(source:find("/share/lua/", 1, true), "zulip was loaded from the source tree, not the install: " .. source)
assert(core_path:find("/lib/lua/", 1, true), "zulip.core is not searched in the install tree")
local devserver = require("spec.support.devserver")
local srv = devserver.start{}
local ok, err = pcall(function()
  local bot = srv.users.bot
  local client = zulip.client{ site = srv.site, email = bot.email, api_key = bot.api_key }
  local q = client:queue{ event_types = { "message" } }
  assert(q:register())
  srv:send("alice", { type = "stream", to = "Denmark", topic = "smoke", content = "installed" })
  local events = assert(q:get_events())
  assert(events[1].message.content == "installed", "unexpected event")
  q:close()
end)
srv:stop()
if not ok then error(err, 0) end
print(("smoke: %s %s from %s: ok"):format(_VERSION, zulip._VERSION, source))
