--- A register snapshot kept current by the events: what `client:queue{ keep_state = true }` uses,
-- and usable on its own.
--
-- `POST /register` returns the initial state (users, channels, subscriptions, unread messages,
-- settings); each later event says how it changed. `State:apply(event)` changes the snapshot the
-- way the server itself does (its `apply_event`), so after applying every event of a queue the
-- snapshot equals what a fresh register with the same `fetch_event_types` would return, up to
-- the order of lists the server does not promise (this module keeps no list in order: an entry
-- that leaves a list is replaced by the list's last one). Indexes are kept beside the snapshot, so
-- an event costs work in proportion to what it changes, and the lookups (`user`, `channel`,
-- `subscription`, `unread_count`, `dm_unread_count`) stay correct as events arrive.
--
-- Applied (the register keys in brackets; the `fetch_event_types` that bring them):
--
-- * `realm_user` add, update, remove (`realm_users`, `realm_non_active_users`; `realm_user`):
--   deactivation moves a user to `realm_non_active_users` and out of every channel's `subscribers`;
--   `remove` (a user you may no longer see) drops the user.
-- * `realm_bot` add, update, delete (`realm_bots`; `realm_bot`).
-- * `stream` create, update, delete (`streams`; `stream`, and the subscription lists).
-- * `subscription` add, remove, update, peer_add, peer_remove (`subscriptions`, `unsubscribed`,
--   `never_subscribed`; `subscription`), with `subscriber_count`.
-- * `message`, `update_message_flags` (read, and starred when `starred_messages` is there),
--   `delete_message`, `update_message` moving topics or channels (`unread_msgs`, `max_message_id`,
--   `first_message_id`; `message` and `update_message_flags`).
-- * `user_group` add, update, add_members, remove_members, add_subgroups, remove_subgroups, remove
--   (`realm_user_groups`; `user_group`).
-- * `realm` update, update_dict (`realm_*`; `realm`); `user_settings` update (`user_settings`);
--   `muted_users`; `user_topic` (`user_topics`) and `muted_topics`; `realm_emoji`.
--
-- Every other event passes through untouched. A snapshot key that the register did not return is
-- not made up: an event whose key is missing changes nothing.
--
-- One limit: after the newest message is deleted, `max_message_id` is the newest of the last 64
-- messages this state saw (the register's own `max_message_id` among them); the server knows older
-- ones too. When all of those are gone it stays as it was (unless there was none before).
-- @module zulip.state
local core = require("zulip.core")

local NULL = core.null
local M = {}
local State = {}
State.__index = State

local KEEP_IDS = 64  -- message ids kept for max_message_id after a deletion

local function is_table(v) return type(v) == "table" end

local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end

local function lower(s)
  return type(s) == "string" and s:lower() or nil
end

-- sorted lists of numbers: binary search, insert, remove
local function bsearch(list, x)
  local lo, hi = 1, #list
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    local v = list[mid]
    if v == x then return mid, true end
    if v < x then lo = mid + 1 else hi = mid - 1 end
  end
  return lo, false
end

local function sorted_insert(list, x)
  local i, found = bsearch(list, x)
  if found then return false end
  table.insert(list, i, x)
  return true
end

local function sorted_remove(list, x)
  local i, found = bsearch(list, x)
  if not found then return false end
  table.remove(list, i)
  return true
end

local function numbers_sorted(list)
  if not is_table(list) then return end
  for i = 1, #list do
    if type(list[i]) ~= "number" then return end
  end
  table.sort(list)
  return true
end

-- Indexed lists: a list of tables and pos[key] = its index; removal swaps in the last entry.
local function index_list(list, field)
  local pos = {}
  if is_table(list) then
    for i = 1, #list do
      local v = list[i]
      if is_table(v) and v[field] ~= nil then pos[v[field]] = i end
    end
  end
  return pos
end

local function list_add(list, pos, item, key)
  local i = pos[key]
  if i then list[i] = item return end
  i = #list + 1
  list[i], pos[key] = item, i
end

local function list_remove(list, pos, key, field)
  local i = pos[key]
  if not i then return nil end
  local n, item = #list, list[i]
  local last = list[n]
  list[i] = last
  pos[last[field]] = i
  list[n] = nil
  pos[key] = nil
  return item
end

-- the three subscription lists, in the order the server searches them
local SUBLISTS = { "subscriptions", "unsubscribed", "never_subscribed" }

--- Keep a register reply current.
-- @tparam table snapshot the register reply (kept and changed in place: `st.data`)
-- @tparam[opt] table opts `include_subscribers` (what the register asked for: a channel that
--   appears later gets an empty `subscribers` list when it is `true`), and who you are, for your
--   own entries in subscriber lists and DM conversations: `user_id`, or `email` (looked up in the
--   snapshot's users); the reply's own `user_id` when it has one
-- @treturn State
-- @usage local st = zulip.state.new(assert(q:register()), { include_subscribers = true })
-- for _, ev in ipairs(assert(q:get_events())) do st:apply(ev) end
-- print(st:user("alice@example.com").full_name, st:unread_count("Denmark"))
function M.new(snapshot, opts)
  if type(snapshot) ~= "table" then error("zulip: state.new expects the register reply (a table)", 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("zulip: state.new options must be a table", 2) end
  local self = setmetatable({ data = snapshot }, State)
  self.with_subscribers = opts.include_subscribers == true
  self:_index_users()
  local me = opts.user_id or (type(snapshot.user_id) == "number" and snapshot.user_id) or nil
  if me == nil and type(opts.email) == "string" then
    local u = self.uemail[opts.email:lower()]
    me = u and u.user_id
  end
  self.me = me
  self:_index_channels()
  self:_index_unreads()
  local d = snapshot
  self.botpos = index_list(d.realm_bots, "user_id")
  self.grouppos = index_list(d.realm_user_groups, "id")
  self.topicpos = {}
  if is_table(d.user_topics) then
    for i, t in ipairs(d.user_topics) do
      if is_table(t) and type(t.topic_name) == "string" then
        self.topicpos[tostring(t.stream_id) .. "\0" .. t.topic_name:lower()] = i
      end
    end
  end
  -- the newest message ids seen; seen_all: no message is older than these (none before the register)
  self.seen, self.seen_all = {}, true
  if type(d.max_message_id) == "number" and d.max_message_id > 0 then
    self.seen[1], self.seen_all = d.max_message_id, false
  end
  return self
end

-- users ---------------------------------------------------------------------------------------

function State:_index_users()
  local d = self.data
  self.uid, self.uemail, self.ulist = {}, {}, {}
  self.upos = { realm_users = index_list(d.realm_users, "user_id"),
                realm_non_active_users = index_list(d.realm_non_active_users, "user_id") }
  for key, pos in pairs(self.upos) do
    for id, i in pairs(pos) do
      local u = d[key][i]
      self.uid[id], self.ulist[id] = u, key
      if lower(u.email) then self.uemail[lower(u.email)] = u end
    end
  end
end

function State:_user_place(u, key)
  local d = self.data
  local list = d[key]
  if not is_table(list) then return end
  local id = u.user_id
  local old = self.ulist[id]
  if old and old ~= key then list_remove(d[old], self.upos[old], id, "user_id") end
  local prev = self.uid[id]
  if prev and lower(prev.email) and self.uemail[lower(prev.email)] == prev then self.uemail[lower(prev.email)] = nil end
  list_add(list, self.upos[key], u, id)
  self.uid[id], self.ulist[id] = u, key
  if lower(u.email) then self.uemail[lower(u.email)] = u end
end

function State:_user_drop(id)
  local key = self.ulist[id]
  if not key then return end
  local u = list_remove(self.data[key], self.upos[key], id, "user_id")
  self.uid[id], self.ulist[id] = nil, nil
  if u and lower(u.email) and self.uemail[lower(u.email)] == u then self.uemail[lower(u.email)] = nil end
end

-- a user leaves every channel's subscriber list (deactivated, or removed from view)
function State:_unsubscribe_everywhere(user_id)
  for _, key in ipairs(SUBLISTS) do
    local list = self.data[key]
    if is_table(list) then
      for _, sub in ipairs(list) do
        if is_table(sub.subscribers) and sorted_remove(sub.subscribers, user_id) then
          self:_count_changed(sub.stream_id)
        end
      end
    end
  end
end

local apply = {}

function apply.realm_user(self, ev)
  local person = ev.person
  if not is_table(person) or type(person.user_id) ~= "number" then return false end
  local id = person.user_id
  if ev.op == "add" then
    if not is_table(self.data.realm_users) then return false end
    local u = copy(person)
    u.is_active = true
    if not u.is_bot and u.profile_data == nil then u.profile_data = {} end
    self:_user_place(u, "realm_users")
  elseif ev.op == "update" then
    local u = self.uid[id]
    if not u then return false end
    local old_email = lower(u.email)
    for field, value in pairs(person) do
      if u[field] ~= nil then u[field] = copy(value) end
    end
    if person.new_email ~= nil then u.email = person.new_email end
    if lower(u.email) ~= old_email then
      if old_email and self.uemail[old_email] == u then self.uemail[old_email] = nil end
      if lower(u.email) then self.uemail[lower(u.email)] = u end
    end
    if person.is_active ~= nil then
      self:_user_place(u, person.is_active and "realm_users" or "realm_non_active_users")
      if not person.is_active then self:_unsubscribe_everywhere(id) end
    end
  elseif ev.op == "remove" then
    self:_user_drop(id)
    self:_unsubscribe_everywhere(id)
  else
    return false
  end
  return true
end

function apply.realm_bot(self, ev)
  local list, bot = self.data.realm_bots, ev.bot
  if not is_table(list) or not is_table(bot) or bot.user_id == nil then return false end
  if ev.op == "add" then
    list_add(list, self.botpos, copy(bot), bot.user_id)
  elseif ev.op == "delete" or ev.op == "remove" then
    list_remove(list, self.botpos, bot.user_id, "user_id")
  elseif ev.op == "update" then
    local b = list[self.botpos[bot.user_id]]
    if not b then return false end
    for k, v in pairs(bot) do b[k] = copy(v) end
  else
    return false
  end
  return true
end

-- channels and subscriptions ------------------------------------------------------------------

function State:_index_channels()
  local d = self.data
  self.spos = index_list(d.streams, "stream_id")
  self.subpos, self.subin = {}, {}
  for _, key in ipairs(SUBLISTS) do
    self.subpos[key] = index_list(d[key], "stream_id")
    for id, i in pairs(self.subpos[key]) do
      self.subin[id] = key
      local sub = d[key][i]
      if is_table(sub.subscribers) then
        numbers_sorted(sub.subscribers)
        self.with_subscribers = true
      end
    end
  end
  self.cname = {}
  for id in pairs(self.subin) do self:_name_channel(id) end
  for id in pairs(self.spos) do self:_name_channel(id) end
end

-- the channel's dict: from `streams` if the register has them, else its subscription entry
function State:_channel(id)
  local d = self.data
  local i = self.spos[id]
  if i then return d.streams[i] end
  local key = self.subin[id]
  return key and d[key][self.subpos[key][id]] or nil
end

function State:_sub(id)
  local key = self.subin[id]
  return key and self.data[key][self.subpos[key][id]] or nil, key
end

function State:_name_channel(id)
  local c = self:_channel(id)
  if c and lower(c.name) then self.cname[lower(c.name)] = id end
end

-- each entry of a channel, in the subscription lists and in `streams`
function State:_entries(id)
  local out = {}
  local sub = self:_sub(id)
  if sub then out[#out + 1] = sub end
  local i = self.spos[id]
  if i then out[#out + 1] = self.data.streams[i] end
  return out
end

-- subscriber_count follows the subscriber list when there is one, else moves by `delta`
function State:_count_changed(id, delta)
  local sub = self:_sub(id)
  local n = sub and is_table(sub.subscribers) and #sub.subscribers or nil
  for _, e in ipairs(self:_entries(id)) do
    if type(e.subscriber_count) == "number" then
      if n then e.subscriber_count = n
      elseif delta then e.subscriber_count = math.max(0, e.subscriber_count + delta) end
    end
  end
end

function State:_sub_move(id, item, to)
  local d = self.data
  local from = self.subin[id]
  if from then list_remove(d[from], self.subpos[from], id, "stream_id") end
  self.subin[id] = nil
  if item and is_table(d[to]) then
    list_add(d[to], self.subpos[to], item, id)
    self.subin[id] = to
  end
end

local function event_stream_ids(ev)
  local ids = {}
  if is_table(ev.stream_ids) then
    for _, id in ipairs(ev.stream_ids) do ids[#ids + 1] = id end
  elseif is_table(ev.streams) then
    for _, s in ipairs(ev.streams) do if is_table(s) then ids[#ids + 1] = s.stream_id end end
  end
  return ids
end

function apply.stream(self, ev)
  local d = self.data
  if ev.op == "create" then
    if not is_table(ev.streams) then return false end
    for _, s in ipairs(ev.streams) do
      if is_table(s) and s.stream_id ~= nil then
        local id = s.stream_id
        if is_table(d.never_subscribed) and not self.subin[id] then
          local entry = copy(s)
          if self.with_subscribers then entry.subscribers = {} end
          self:_sub_move(id, entry, "never_subscribed")
        end
        if is_table(d.streams) then list_add(d.streams, self.spos, copy(s), id) end
        self:_name_channel(id)
      end
    end
  elseif ev.op == "delete" then
    for _, id in ipairs(event_stream_ids(ev)) do
      local c = self:_channel(id)
      if c and lower(c.name) and self.cname[lower(c.name)] == id then self.cname[lower(c.name)] = nil end
      if self.spos[id] then list_remove(d.streams, self.spos, id, "stream_id") end
      self:_sub_move(id, nil)
    end
  elseif ev.op == "update" then
    local key = lower(ev.name)
    local id = ev.stream_id or (key and self.cname[key])
    if id == nil or type(ev.property) ~= "string" then return false end
    local old = self:_channel(id)
    local old_name = old and lower(old.name)
    local sub = self:_sub(id)
    local s = self.spos[id] and d.streams[self.spos[id]]
    for _, e in ipairs({ sub or false, s or false }) do
      if e and (e ~= s or e[ev.property] ~= nil) then
        e[ev.property] = copy(ev.value)
        if ev.property == "description" and ev.rendered_description ~= nil then
          e.rendered_description = ev.rendered_description
        end
        if ev.history_public_to_subscribers ~= nil and ev.history_public_to_subscribers ~= NULL then
          e.history_public_to_subscribers = ev.history_public_to_subscribers
        end
        if ev.is_web_public ~= nil and ev.is_web_public ~= NULL then e.is_web_public = ev.is_web_public end
      end
    end
    if ev.property == "name" then
      if old_name and self.cname[old_name] == id then self.cname[old_name] = nil end
      self:_name_channel(id)
    end
  else
    return false
  end
  return true
end

local function user_ids(list)
  local out = {}
  if is_table(list) then
    for _, u in ipairs(list) do if type(u) == "number" then out[#out + 1] = u end end
  end
  return out
end

function apply.subscription(self, ev)
  local d = self.data
  local op = ev.op
  if op == "add" then
    if not is_table(ev.subscriptions) or not is_table(d.subscriptions) then return false end
    for _, s in ipairs(ev.subscriptions) do
      if is_table(s) and s.stream_id ~= nil and self.subin[s.stream_id] ~= "subscriptions" then
        local entry = copy(s)
        if not self.with_subscribers then entry.subscribers = nil
        elseif is_table(entry.subscribers) then numbers_sorted(entry.subscribers) end
        self:_sub_move(s.stream_id, entry, "subscriptions")
        self:_name_channel(s.stream_id)
        -- the peers' peer_add leaves us out: the new entry's count is the channel's
        local c = self.spos[s.stream_id] and d.streams[self.spos[s.stream_id]]
        if c and type(c.subscriber_count) == "number" and type(s.subscriber_count) == "number" then
          c.subscriber_count = s.subscriber_count
        end
      end
    end
  elseif op == "remove" then
    if not is_table(ev.subscriptions) then return false end
    for _, s in ipairs(ev.subscriptions) do
      local id = is_table(s) and s.stream_id
      if id and self.subin[id] == "subscriptions" then
        local sub = self:_sub(id)
        if self.me and is_table(sub.subscribers) then sorted_remove(sub.subscribers, self.me) end
        self:_sub_move(id, sub, "unsubscribed")
        self:_count_changed(id, -1)  -- (by the list, when there is one)
      end
    end
  elseif op == "update" then
    local sub, key = self:_sub(ev.stream_id)
    if not sub or key ~= "subscriptions" or type(ev.property) ~= "string" then return false end
    sub[ev.property] = copy(ev.value)
  elseif op == "peer_add" or op == "peer_remove" then
    local users = user_ids(ev.user_ids)
    for _, id in ipairs(is_table(ev.stream_ids) and ev.stream_ids or {}) do
      local sub = self:_sub(id)
      local changed = 0
      if sub and is_table(sub.subscribers) then
        for _, u in ipairs(users) do
          local did = (op == "peer_add" and sorted_insert or sorted_remove)(sub.subscribers, u)
          if did then changed = changed + 1 end
        end
      else
        changed = #users
      end
      self:_count_changed(id, op == "peer_add" and changed or -changed)
    end
  else
    return false
  end
  return true
end

-- unread messages ----------------------------------------------------------------------------
-- um[id] = the bucket (an entry of pms, streams or huddles) that lists it; a bucket's place is
-- kept in bpos[bucket] = its index in its list; bykey finds a conversation's bucket.

local function topic_key(stream_id, topic) return tostring(stream_id) .. "\0" .. tostring(topic) end

local function bucket_key(key, b)
  if key == "streams" then return "s" .. topic_key(b.stream_id, b.topic) end
  if key == "pms" then return "p" .. tostring(b.other_user_id or b.sender_id) end
  return "h" .. tostring(b.user_ids_string)
end

function State:_index_unreads()
  local u = self.data.unread_msgs
  self.um, self.bykey, self.bpos, self.scount, self.mentioned = {}, {}, {}, {}, {}
  if not is_table(u) then self.unreads = false return end
  self.unreads = true
  for _, key in ipairs({ "pms", "streams", "huddles" }) do
    if not is_table(u[key]) then u[key] = {} end
    local list = u[key]
    for i, b in ipairs(list) do
      if is_table(b) then
        if not is_table(b.unread_message_ids) then b.unread_message_ids = {} end
        numbers_sorted(b.unread_message_ids)
        self.bpos[b] = i
        self.bykey[bucket_key(key, b)] = b
        for _, id in ipairs(b.unread_message_ids) do self.um[id] = b end
        if key == "streams" then
          self.scount[b.stream_id] = (self.scount[b.stream_id] or 0) + #b.unread_message_ids
        end
      end
    end
  end
  if not is_table(u.mentions) then u.mentions = {} end
  numbers_sorted(u.mentions)
  for _, id in ipairs(u.mentions) do self.mentioned[id] = true end
end

local function bucket_list(b)
  if b.topic ~= nil then return "streams" end
  if b.user_ids_string ~= nil then return "huddles" end
  return "pms"
end

function State:_unread_add(id, where, mentioned)
  if not self.unreads or self.um[id] then return end
  local u = self.data.unread_msgs
  local kind = where.kind
  local b = self.bykey[bucket_key(kind, where)]
  if not b then
    if kind == "streams" then b = { stream_id = where.stream_id, topic = where.topic }
    elseif kind == "pms" then b = { other_user_id = where.other_user_id, sender_id = where.other_user_id }
    else b = { user_ids_string = where.user_ids_string } end
    b.unread_message_ids = {}
    local list = u[kind]
    list[#list + 1] = b
    self.bpos[b] = #list
    self.bykey[bucket_key(kind, b)] = b
  end
  sorted_insert(b.unread_message_ids, id)
  self.um[id] = b
  if kind == "streams" then self.scount[b.stream_id] = (self.scount[b.stream_id] or 0) + 1 end
  if type(u.count) == "number" then u.count = u.count + 1 end
  if mentioned then
    self.mentioned[id] = true
    sorted_insert(u.mentions, id)
  end
end

-- takes a message out of its bucket; returns the bucket it was in (for a move)
function State:_unread_take(id, keep_mention)
  local b = self.um[id]
  if not b then return nil end
  local u = self.data.unread_msgs
  sorted_remove(b.unread_message_ids, id)
  self.um[id] = nil
  local kind = bucket_list(b)
  if kind == "streams" then self.scount[b.stream_id] = (self.scount[b.stream_id] or 1) - 1 end
  if #b.unread_message_ids == 0 then
    local list, i = u[kind], self.bpos[b]
    local last = list[#list]
    list[i], self.bpos[last] = last, i
    list[#list] = nil
    self.bpos[b] = nil
    self.bykey[bucket_key(kind, b)] = nil
  end
  if type(u.count) == "number" then u.count = u.count - 1 end
  if self.mentioned[id] and not keep_mention then
    self.mentioned[id] = nil
    sorted_remove(u.mentions, id)
  end
  return b
end

-- where an unread message goes: {kind, stream_id, topic} or a DM conversation
function State:_dm_where(others)
  local me = self.me
  local ids = {}
  for _, uid in ipairs(others) do if uid ~= me then ids[#ids + 1] = uid end end
  if #ids <= 1 then return { kind = "pms", other_user_id = ids[1] or me } end
  if me then ids[#ids + 1] = me end
  table.sort(ids)
  for i = 1, #ids do ids[i] = ("%d"):format(ids[i]) end
  return { kind = "huddles", user_ids_string = table.concat(ids, ",") }
end

local function has_flag(flags, name)
  if not is_table(flags) then return false end
  for _, f in ipairs(flags) do if f == name then return true end end
  return false
end

function State:_saw(id)
  local seen = self.seen
  if sorted_insert(seen, id) and #seen > KEEP_IDS then
    table.remove(seen, 1)
    self.seen_all = false
  end
end

function apply.message(self, ev)
  local m = ev.message
  if not is_table(m) or type(m.id) ~= "number" then return false end
  local d = self.data
  if type(d.max_message_id) == "number" and m.id > d.max_message_id then d.max_message_id = m.id end
  self:_saw(m.id)
  if m.type == "stream" then  -- the server sets it in `subscriptions` and `streams` only
    local sub = self.subin[m.stream_id] == "subscriptions" and self:_sub(m.stream_id)
    local s = self.spos[m.stream_id] and d.streams[self.spos[m.stream_id]]
    if sub and sub.first_message_id == NULL then sub.first_message_id = m.id end
    if s and s.first_message_id == NULL then s.first_message_id = m.id end
  end
  if self.unreads and not has_flag(ev.flags, "read") then
    local where
    if m.type == "stream" then
      where = { kind = "streams", stream_id = m.stream_id, topic = m.subject or m.topic }
    elseif is_table(m.display_recipient) then
      local others = {}
      for _, r in ipairs(m.display_recipient) do if is_table(r) then others[#others + 1] = r.id end end
      if self.me == nil and #others == 2 then  -- unread, so the sender is the other one
        where = { kind = "pms", other_user_id = m.sender_id }
      else
        where = self:_dm_where(others)
      end
    end
    if where then
      self:_unread_add(m.id, where, has_flag(ev.flags, "mentioned") or has_flag(ev.flags, "wildcard_mentioned"))
    end
  end
  return true
end

function apply.update_message_flags(self, ev)
  local op = ev.op or ev.operation
  local d = self.data
  if ev.flag == "read" and self.unreads then
    if op == "add" then
      if ev.all == true then
        for id in pairs(self.um) do self:_unread_take(id) end
      else
        for _, id in ipairs(user_ids(ev.messages)) do self:_unread_take(id) end
      end
    elseif op == "remove" and is_table(ev.message_details) then
      for key, det in pairs(ev.message_details) do
        local id = tonumber(key)
        if id and is_table(det) then
          local where
          if det.type == "stream" then
            where = { kind = "streams", stream_id = det.stream_id, topic = det.topic }
          else
            where = self:_dm_where(user_ids(det.user_ids))
          end
          self:_unread_add(id, where, det.mentioned == true)
        end
      end
    else
      return false
    end
    return true
  elseif ev.flag == "starred" and is_table(d.starred_messages) then
    for _, id in ipairs(user_ids(ev.messages)) do
      if op == "add" then sorted_insert(d.starred_messages, id) else sorted_remove(d.starred_messages, id) end
    end
    return true
  end
  return false
end

function apply.delete_message(self, ev)
  local ids = ev.message_ids and user_ids(ev.message_ids) or { ev.message_id }
  local d = self.data
  for _, id in ipairs(ids) do
    if type(id) == "number" then
      if self.unreads then self:_unread_take(id) end
      sorted_remove(self.seen, id)
      if is_table(d.starred_messages) then sorted_remove(d.starred_messages, id) end
    end
  end
  if type(d.max_message_id) == "number" then
    local newest = self.seen[#self.seen]
    if newest ~= nil and newest < d.max_message_id then
      d.max_message_id = newest
    elseif newest == nil and self.seen_all then  -- every message there was is gone
      d.max_message_id = -1
    end
  end
  return true
end

function apply.update_message(self, ev)
  if not self.unreads then return false end
  local topic, to = ev.subject, ev.new_stream_id
  if topic == nil and to == nil then return false end
  for _, id in ipairs(user_ids(ev.message_ids or { ev.message_id })) do
    local b = self.um[id]
    if b and b.topic ~= nil then
      local mentioned = self.mentioned[id]
      self:_unread_take(id, true)
      self.mentioned[id] = nil
      self.um[id] = nil
      local where = { kind = "streams", stream_id = to or b.stream_id, topic = topic or b.topic }
      -- the mention stays where it was listed: put it back without counting it twice
      self:_unread_add(id, where, false)
      if mentioned then self.mentioned[id] = true end
    end
  end
  return true
end

-- groups, settings, mutes, emoji -------------------------------------------------------------

function apply.user_group(self, ev)
  local list = self.data.realm_user_groups
  if not is_table(list) then return false end
  if ev.op == "add" then
    if not is_table(ev.group) or ev.group.id == nil then return false end
    local g = copy(ev.group)
    numbers_sorted(g.members)
    numbers_sorted(g.direct_subgroup_ids)
    list_add(list, self.grouppos, g, g.id)
    return true
  end
  local g = list[self.grouppos[ev.group_id] or 0]
  if ev.op == "remove" then
    list_remove(list, self.grouppos, ev.group_id, "id")
    return true
  end
  if not g then return false end
  if ev.op == "update" and is_table(ev.data) then
    for k, v in pairs(ev.data) do g[k] = copy(v) end
  elseif ev.op == "add_members" or ev.op == "remove_members" then
    if not is_table(g.members) then g.members = {} end
    for _, u in ipairs(user_ids(ev.user_ids)) do
      if ev.op == "add_members" then sorted_insert(g.members, u) else sorted_remove(g.members, u) end
    end
  elseif ev.op == "add_subgroups" or ev.op == "remove_subgroups" then
    if not is_table(g.direct_subgroup_ids) then g.direct_subgroup_ids = {} end
    for _, s in ipairs(user_ids(ev.direct_subgroup_ids)) do
      if ev.op == "add_subgroups" then sorted_insert(g.direct_subgroup_ids, s)
      else sorted_remove(g.direct_subgroup_ids, s) end
    end
  else
    return false
  end
  return true
end

function apply.realm(self, ev)
  local d = self.data
  if ev.op == "update" and type(ev.property) == "string" then
    d["realm_" .. ev.property] = copy(ev.value)
  elseif ev.op == "update_dict" and is_table(ev.data) then
    for k, v in pairs(ev.data) do d["realm_" .. k] = copy(v) end
  else
    return false
  end
  return true
end

function apply.user_settings(self, ev)
  local s = self.data.user_settings
  if ev.op ~= "update" or type(ev.property) ~= "string" or not is_table(s) then return false end
  s[ev.property] = copy(ev.value)
  return true
end

function apply.muted_users(self, ev)
  if not is_table(ev.muted_users) or self.data.muted_users == nil then return false end
  self.data.muted_users = copy(ev.muted_users)
  return true
end

function apply.muted_topics(self, ev)
  if not is_table(ev.muted_topics) or self.data.muted_topics == nil then return false end
  self.data.muted_topics = copy(ev.muted_topics)
  return true
end

function apply.user_topic(self, ev)
  local list = self.data.user_topics
  if not is_table(list) or ev.stream_id == nil or type(ev.topic_name) ~= "string" then return false end
  local key = topic_key(ev.stream_id, ev.topic_name:lower())  -- the server matches topics in any case
  local pos = self.topicpos
  if ev.visibility_policy == 0 then
    local i = pos[key]
    if i then
      local last = list[#list]
      list[i], pos[topic_key(last.stream_id, last.topic_name:lower())] = last, i
      list[#list], pos[key] = nil, nil
    end
  else
    local t = { stream_id = ev.stream_id, topic_name = ev.topic_name,
                visibility_policy = ev.visibility_policy, last_updated = ev.last_updated }
    local i = pos[key] or #list + 1
    list[i], pos[key] = t, i
  end
  return true
end

function apply.realm_emoji(self, ev)
  local d = self.data
  if d.realm_emoji == nil then return false end
  if ev.op == "update" and is_table(ev.realm_emoji) then
    d.realm_emoji = copy(ev.realm_emoji)
  elseif is_table(ev.realm_emoji) then  -- one emoji at a time (newer servers): merge what came
    for k, v in pairs(ev.realm_emoji) do d.realm_emoji[k] = copy(v) end
  else
    return false
  end
  return true
end

--- Apply one event to the snapshot.
-- Unknown event types, and events for keys the register did not return, change nothing.
-- Malformed events change nothing either (they never raise).
-- @tparam table event one event of `GET /events`
-- @treturn boolean whether the snapshot changed
-- @usage for _, ev in ipairs(assert(q:get_events())) do st:apply(ev) end
function State:apply(event)
  if type(event) ~= "table" then return false end
  local f = apply[event.type]
  if not f then return false end
  local ok, changed = pcall(f, self, event)
  return ok and changed == true
end

--- A user by id or email (any case), active or not.
-- @tparam number|string key the user id or email
-- @treturn table|nil the user's dict in `realm_users` or `realm_non_active_users`
-- @usage print(st:user(11).full_name, st:user("Alice@example.com").user_id)
function State:user(key)
  if type(key) == "string" then return self.uemail[key:lower()] end
  return self.uid[key]
end

--- A channel by id or name (any case).
-- @tparam number|string key the channel id or name
-- @treturn table|nil its dict in `streams` (or, when the register has no `streams`, its
--   subscription entry)
-- @usage print(st:channel("denmark").stream_id)
function State:channel(key)
  if type(key) == "string" then key = self.cname[key:lower()] end
  return key ~= nil and self:_channel(key) or nil
end

--- Your subscription to a channel, by id or name.
-- @tparam number|string key the channel id or name
-- @treturn table|nil the entry in `subscriptions` (nil when you are not subscribed)
-- @usage local sub = st:subscription("Denmark"); if sub and sub.is_muted then return end
function State:subscription(key)
  if type(key) == "string" then key = self.cname[key:lower()] end
  local sub, list = self:_sub(key)
  return list == "subscriptions" and sub or nil
end

--- Unread messages: all of them, in a channel, or in a channel's topic.
-- @tparam[opt] number|string channel a channel id or name
-- @tparam[opt] string topic a topic of that channel
-- @treturn number the count (0 when the register returned no `unread_msgs`)
-- @usage print(st:unread_count(), st:unread_count("Denmark"), st:unread_count("Denmark", "lunch"))
function State:unread_count(channel, topic)
  local u = self.data.unread_msgs
  if not is_table(u) then return 0 end
  if channel == nil then return type(u.count) == "number" and u.count or 0 end
  if type(channel) == "string" then channel = self.cname[channel:lower()] end
  if channel == nil then return 0 end
  if topic == nil then return self.scount[channel] or 0 end
  local b = self.bykey["s" .. topic_key(channel, topic)]
  return b and #b.unread_message_ids or 0
end

--- Unread direct messages with a user, or in a group conversation.
-- @tparam number|table who a user id, or a list of the other users' ids
-- @treturn number the count
-- @usage print(st:dm_unread_count(11), st:dm_unread_count({ 11, 12 }))
function State:dm_unread_count(who)
  if not self.unreads then return 0 end
  local where = self:_dm_where(type(who) == "table" and user_ids(who) or { who })
  local b = self.bykey[bucket_key(where.kind, where)]
  return b and #b.unread_message_ids or 0
end

return M
