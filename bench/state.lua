-- Row 7 of `make bench`: zulip.state on a realm of 10,000 users and 1,000 channels.
-- Events applied per second (CPU, os.clock) for a mix of the events a busy realm sends, against a
-- baseline in the same process: the same changes made the way a hand-written client (or the
-- server's own apply_event) makes them, by scanning the lists. And the memory the indexes take
-- beside the snapshot itself. No server: the snapshot is built here in a register reply's shape.
local state = require("zulip.state")

local USERS, CHANNELS, SUBSCRIBED, PER_CHANNEL, UNREAD, EVENTS = 10000, 1000, 100, 200, 5000, 200000

-- a small generator of our own, the same on every Lua
local seed = 42
local function rand(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n + 1
end

local function snapshot()
  local users = {}
  for i = 1, USERS do
    users[i] = { user_id = i, email = "user" .. i .. "@example.com", full_name = "User " .. i, is_bot = false,
                 is_active = true, role = 400, timezone = "", avatar_version = 1, profile_data = {} }
  end
  local streams, subs, never = {}, {}, {}
  for j = 1, CHANNELS do
    local c = { stream_id = j, name = "Channel " .. j, description = "", rendered_description = "",
                invite_only = false, first_message_id = 1, subscriber_count = PER_CHANNEL }
    streams[j] = c
    local entry = {}
    for k, v in pairs(c) do entry[k] = v end
    local members, base = {}, (j * 37) % (USERS - PER_CHANNEL)
    for k = 1, PER_CHANNEL do members[k] = base + k end
    entry.subscribers = members
    if j <= SUBSCRIBED then
      entry.color, entry.is_muted, entry.pin_to_top = "#76ce90", false, false
      subs[#subs + 1] = entry
    else
      never[#never + 1] = entry
    end
  end
  local buckets = {}
  local id = 0
  for j = 1, SUBSCRIBED do
    for t = 1, 5 do
      local ids = {}
      for _ = 1, UNREAD / SUBSCRIBED / 5 do id = id + 1; ids[#ids + 1] = id end
      buckets[#buckets + 1] = { stream_id = j, topic = "topic " .. t, unread_message_ids = ids }
    end
  end
  return { queue_id = "q", last_event_id = -1, max_message_id = id, user_id = 1,
           realm_users = users, realm_non_active_users = {}, realm_bots = {}, streams = streams,
           subscriptions = subs, unsubscribed = {}, never_subscribed = never,
           unread_msgs = { count = id, streams = buckets, pms = {}, huddles = {}, mentions = {},
                           old_unreads_missing = false },
           realm_user_groups = {}, user_settings = {}, muted_users = {}, user_topics = {}, realm_emoji = {} }
end

-- the mix: per 100 events, 60 new messages, 20 read flags, 8 user updates, 6 peer changes, 4
-- channel updates, 2 topic moves
local function events(first_id)
  local out, next_id = {}, first_id
  for i = 1, EVENTS do
    local k, ev = i % 100
    if k < 60 then
      next_id = next_id + 1
      ev = { type = "message", flags = {}, message = { id = next_id, type = "stream", stream_id = rand(SUBSCRIBED),
             subject = "topic " .. rand(5), sender_id = rand(USERS), content = "x" } }
    elseif k < 80 then
      ev = { type = "update_message_flags", op = "add", flag = "read", all = false,
             messages = { next_id - rand(50) } }
    elseif k < 88 then
      ev = { type = "realm_user", op = "update", person = { user_id = rand(USERS), full_name = "Renamed " .. i } }
    elseif k < 94 then
      ev = { type = "subscription", op = k % 2 == 0 and "peer_add" or "peer_remove",
             stream_ids = { rand(CHANNELS) }, user_ids = { rand(USERS) } }
    elseif k < 98 then
      local j = rand(CHANNELS)
      ev = { type = "stream", op = "update", stream_id = j, name = "Channel " .. j, property = "description",
             value = "about " .. i, rendered_description = "<p>about</p>" }
    else
      ev = { type = "update_message", message_id = next_id, message_ids = { next_id - rand(20) },
             stream_id = rand(SUBSCRIBED), subject = "moved", propagate_mode = "change_one" }
    end
    out[i] = ev
  end
  return out
end

-- The baseline: the same changes by scanning, as apply_event does it.
local function scan_bucket(d, stream_id, topic)  -- a topic's unread bucket, made when missing
  for _, b in ipairs(d.unread_msgs.streams) do
    if b.stream_id == stream_id and b.topic == topic then return b end
  end
  local b = { stream_id = stream_id, topic = topic, unread_message_ids = {} }
  table.insert(d.unread_msgs.streams, b)
  return b
end

local function scan_apply(d, ev)
  local t = ev.type
  if t == "message" then
    local m = ev.message
    if m.id > d.max_message_id then d.max_message_id = m.id end
    table.insert(scan_bucket(d, m.stream_id, m.subject).unread_message_ids, m.id)
    d.unread_msgs.count = d.unread_msgs.count + 1
  elseif t == "update_message_flags" then
    for _, id in ipairs(ev.messages) do
      for bi, b in ipairs(d.unread_msgs.streams) do
        local hit
        for i, x in ipairs(b.unread_message_ids) do if x == id then hit = i break end end
        if hit then
          table.remove(b.unread_message_ids, hit)
          d.unread_msgs.count = d.unread_msgs.count - 1
          if #b.unread_message_ids == 0 then table.remove(d.unread_msgs.streams, bi) end
          break
        end
      end
    end
  elseif t == "realm_user" then
    for _, u in ipairs(d.realm_users) do
      if u.user_id == ev.person.user_id then
        for k, v in pairs(ev.person) do if u[k] ~= nil then u[k] = v end end
        break
      end
    end
  elseif t == "subscription" then
    for _, key in ipairs({ "subscriptions", "unsubscribed", "never_subscribed" }) do
      for _, s in ipairs(d[key]) do
        if s.stream_id == ev.stream_ids[1] then
          local set = {}
          for _, u in ipairs(s.subscribers) do set[u] = true end
          for _, u in ipairs(ev.user_ids) do set[u] = ev.op == "peer_add" or nil end
          local list = {}
          for u in pairs(set) do list[#list + 1] = u end
          table.sort(list)
          s.subscribers, s.subscriber_count = list, #list
        end
      end
    end
  elseif t == "stream" then
    local name = ev.name:lower()
    for _, key in ipairs({ "subscriptions", "unsubscribed", "never_subscribed", "streams" }) do
      for _, s in ipairs(d[key]) do
        if s.name:lower() == name then s[ev.property] = ev.value; s.rendered_description = ev.rendered_description end
      end
    end
  elseif t == "update_message" then
    for _, id in ipairs(ev.message_ids) do
      for bi, b in ipairs(d.unread_msgs.streams) do
        local hit
        for i, x in ipairs(b.unread_message_ids) do if x == id then hit = i break end end
        if hit then
          table.remove(b.unread_message_ids, hit)
          if #b.unread_message_ids == 0 then table.remove(d.unread_msgs.streams, bi) end
          table.insert(scan_bucket(d, b.stream_id, ev.subject).unread_message_ids, id)
          break
        end
      end
    end
  end
end

local function kib() collectgarbage("collect"); collectgarbage("collect"); return collectgarbage("count") end

local base = kib()
local snap = snapshot()
local snap_kib = kib() - base
local before = kib()
local st = state.new(snap)
local index_kib = kib() - before
local evs = events(snap.max_message_id)

local t0 = os.clock()
for i = 1, #evs do st:apply(evs[i]) end
local kept_s = os.clock() - t0

local plain = snapshot()
local n_scan = EVENTS / 20  -- the baseline is slow: a twentieth of the events, the same mix
t0 = os.clock()
for i = 1, n_scan do scan_apply(plain, evs[i]) end
local scan_s = os.clock() - t0

local kept_rate, scan_rate = #evs / kept_s, n_scan / scan_s
print(("| 7 state: events applied/s (%dk users, %d channels) | %.0f | %.0f | %.1f |  |")
  :format(math.floor(USERS / 1000), CHANNELS, kept_rate, scan_rate, kept_rate / scan_rate))
print(("| 7 state: µs per event | %.2f | %.1f | %.3f |  |"):format(1e6 / kept_rate, 1e6 / scan_rate,
  scan_rate / kept_rate))
print(("| 7 state: indexes / snapshot memory (MiB) | %.1f | %.1f | %.2f |  |")
  :format(index_kib / 1024, snap_kib / 1024, index_kib / snap_kib))
