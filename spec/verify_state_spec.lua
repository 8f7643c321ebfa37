-- The kept state against the server, in the style of the Zulip server's own `verify_action`
-- (zerver/tests/test_events.py): seeded random sequences of real actions on the dev server's
-- realm (POST /test/action), and after each one the state a keep_state queue holds equals a fresh
-- register's state with the same fetch_event_types, once the orders the server does not promise
-- are normalised. Every event type zulip.state applies is among the actions.
local util = require("spec.support.util")
local encode = require("zulip.encode")

local FETCH = { "realm_user", "realm_bot", "stream", "subscription", "message", "update_message_flags",
                "delete_message", "update_message", "user_group", "realm", "user_settings", "muted_users",
                "user_topic", "realm_emoji" }

-- a small generator of our own, the same on every Lua (math.random differs between versions)
local function rng(seed)
  local s = seed
  local r = {}
  function r.float()
    s = (s * 1103515245 + 12345) % 2147483648
    return s / 2147483648
  end
  function r.int(n) return math.floor(r.float() * n) + 1 end
  function r.pick(list) return list[r.int(#list)] end
  function r.some(list, most)
    local out, taken = {}, {}
    if #list == 0 then return out end
    for _ = 1, r.int(math.min(most, #list)) do
      local x = r.pick(list)
      if not taken[x] then taken[x], out[#out + 1] = true, x end
    end
    return out
  end
  return r
end

-- Normalise what the server does not keep in order: lists of objects sorted by their key, lists of
-- numbers sorted; queue_id and last_event_id are the queue's own.
local KEYS = { "user_id", "stream_id", "id", "other_user_id", "user_ids_string" }
local function key_of(v)
  if type(v) ~= "table" then return nil end
  if v.topic ~= nil then return ("%d\0%s"):format(v.stream_id, v.topic) end
  if v.topic_name ~= nil then return ("%d\0%s"):format(v.stream_id, v.topic_name) end
  for _, k in ipairs(KEYS) do
    if v[k] ~= nil then return type(v[k]) == "number" and ("%012d"):format(v[k]) or tostring(v[k]) end
  end
end

local function normal(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = normal(x) end
  if #out > 0 then
    if type(out[1]) == "number" then
      table.sort(out)
    elseif key_of(out[1]) then
      table.sort(out, function(a, b) return key_of(a) < key_of(b) end)
    end
  end
  return out
end

local function normal_state(st)
  local out = normal(st)
  out.queue_id, out.last_event_id = nil, nil
  return out
end

-- the first difference between two normalised states, as a path (for a readable failure)
local function diff(a, b, path)
  if type(a) ~= type(b) then return path .. ": " .. tostring(a) .. " vs " .. tostring(b) end
  if type(a) ~= "table" then
    if a ~= b then return path .. ": " .. tostring(a) .. " vs " .. tostring(b) end
    return nil
  end
  for k, x in pairs(a) do
    local d = diff(x, b[k], path .. "." .. tostring(k))
    if d then return d end
  end
  for k, x in pairs(b) do
    if a[k] == nil then return path .. "." .. tostring(k) .. ": missing vs " .. tostring(x) end
  end
end

describe("the kept state after random real actions", function()
  local srv, client

  srv = util.use_devserver{ heartbeat = 30, config = { rate_limit = require("cjson").null } }  -- ~1,000 requests
  before_each(function()
    client = util.client(srv)
  end)
  after_each(function()
    client:close()
  end)

  local function fresh()
    local q = client:queue{ fetch_event_types = FETCH, event_types = FETCH, include_subscribers = true }
    local st = assert(q:register())
    q:close()
    return st
  end

  -- The world as the generator knows it, read off the kept state and the actions' replies.
  local function choices(st, world)
    local active, inactive, humans = {}, {}, {}
    for _, u in ipairs(st.realm_users) do
      active[#active + 1] = u.user_id
      if not u.is_bot and u.user_id ~= 11 then humans[#humans + 1] = u.user_id end
    end
    for _, u in ipairs(st.realm_non_active_users) do inactive[#inactive + 1] = u.user_id end
    local subscribed, channels, all_channels = {}, {}, {}
    for _, s in ipairs(st.subscriptions) do subscribed[#subscribed + 1] = s end
    for _, s in ipairs(st.streams) do
      all_channels[#all_channels + 1] = s.stream_id
      if s.stream_id ~= 1 then channels[#channels + 1] = s.stream_id end
    end
    local groups, group_of = {}, {}
    for _, g in ipairs(st.realm_user_groups) do groups[#groups + 1], group_of[g.id] = g.id, g end
    local emoji = {}
    for id, e in pairs(st.realm_emoji) do if not e.deactivated then emoji[#emoji + 1] = id end end
    table.sort(emoji)
    return { active = active, inactive = inactive, humans = humans, subscribed = subscribed,
             channels = channels, all_channels = all_channels, groups = groups, group_of = group_of, emoji = emoji,
             messages = world.messages, stream_messages = world.stream_messages }
  end

  local TOPICS = { "lunch", "dinner", "tea" }

  -- Each maker returns an action body, or nil when the world has nothing to do it on.
  local function makers(r, n, me)
    local function members(c, most) return r.some(c.active, most) end
    return {
      function() return { action = "create_user", full_name = "User " .. n, email = "user" .. n .. "@example.com",
                          is_bot = r.float() < 0.2 } end,
      function(c) return #c.humans > 0 and { action = "update_user", user_id = r.pick(c.humans),
                                            full_name = "Renamed " .. n } or nil end,
      function(c) return #c.humans > 1 and { action = "deactivate_user", user_id = r.pick(c.humans) } or nil end,
      function(c) return #c.inactive > 0 and { action = "reactivate_user", user_id = r.pick(c.inactive) } or nil end,
      function() return { action = "create_channel", name = "Channel " .. n, description = "made by " .. n } end,
      function(c)
        if #c.channels == 0 then return nil end
        if r.float() < 0.5 then
          return { action = "update_channel", stream_id = r.pick(c.channels), property = "name",
                   value = "Renamed " .. n }
        end
        return { action = "update_channel", stream_id = r.pick(c.channels), property = "description",
                 value = "about " .. n }
      end,
      function(c) return #c.channels > 2 and { action = "delete_channel", stream_id = r.pick(c.channels) } or nil end,
      function(c)
        local ids = members(c, 3)
        if r.float() < 0.5 then ids[#ids + 1] = me end
        return { action = "subscribe", stream_id = r.pick(c.all_channels), user_ids = ids }
      end,
      function(c)
        local ids = members(c, 2)
        if r.float() < 0.5 then ids[#ids + 1] = me end
        return { action = "unsubscribe", stream_id = r.pick(c.all_channels), user_ids = ids }
      end,
      function(c)
        if #c.subscribed == 0 then return nil end
        local prop = r.pick({ "color", "is_muted", "pin_to_top" })
        local value = prop == "color" and ("#%06x"):format(r.int(0xffffff)) or r.float() < 0.5
        return { action = "update_subscription", user_id = me, stream_id = r.pick(c.subscribed).stream_id,
                 property = prop, value = value }
      end,
      function(c)  -- a channel message, to one the bot may or may not be in
        local mention = r.float() < 0.3 and { me } or nil
        return { action = "send", sender_id = r.pick(c.active), type = "stream", stream_id = r.pick(c.all_channels),
                 topic = r.pick(TOPICS), content = "message " .. n, mention_user_ids = mention }
      end,
      function(c)  -- a DM to the bot, alone or with others
        local to = { me }
        if r.float() < 0.4 then for _, u in ipairs(r.some(c.humans, 2)) do to[#to + 1] = u end end
        local sender = r.pick(c.active)
        return { action = "send", sender_id = sender, type = "private", to = to, content = "dm " .. n }
      end,
      function(c)
        return #c.messages > 0 and { action = "mark_read", user_id = me, message_ids = r.some(c.messages, 3) } or nil
      end,
      function(c)
        return #c.messages > 0 and { action = "mark_unread", user_id = me, message_ids = r.some(c.messages, 3) } or nil
      end,
      function(c)
        return #c.messages > 0 and { action = "delete_message", message_ids = { r.pick(c.messages) } } or nil
      end,
      function(c)
        if #c.stream_messages == 0 then return nil end
        local body = { action = "move_messages", message_ids = { r.pick(c.stream_messages) } }
        if r.float() < 0.5 or #c.all_channels < 2 then body.topic = "moved " .. n
        else body.stream_id = r.pick(c.all_channels) end  -- its own channel now and then: a 400, checked too
        return body
      end,
      function(c)
        return { action = "create_group", name = "group " .. n, description = "g", members = members(c, 3) }
      end,
      function(c)
        if #c.groups == 0 then return nil end
        return { action = "update_group", group_id = r.pick(c.groups), description = "now " .. n }
      end,
      function(c)  -- members: add some who are not in, or take out some who are
        if #c.groups == 0 then return nil end
        local g = c.group_of[r.pick(c.groups)]
        if r.float() < 0.5 and #g.members > 0 then
          return { action = "remove_group_members", group_id = g.id, user_ids = r.some(g.members, 2) }
        end
        return { action = "add_group_members", group_id = g.id, user_ids = members(c, 2) }
      end,
      function(c)  -- subgroups: take out one that is there, or add one (a cycle is refused: checked too)
        if #c.groups < 2 then return nil end
        local parents = {}
        for _, id in ipairs(c.groups) do
          if #c.group_of[id].direct_subgroup_ids > 0 then parents[#parents + 1] = c.group_of[id] end
        end
        if #parents > 0 and r.float() < 0.5 then
          local p = r.pick(parents)
          return { action = "remove_subgroups", group_id = p.id, subgroup_ids = { r.pick(p.direct_subgroup_ids) } }
        end
        local g, sub = c.group_of[r.pick(c.groups)], r.pick(c.groups)
        if sub == g.id then return nil end
        return { action = "add_subgroups", group_id = g.id, subgroup_ids = { sub } }
      end,
      function(c) return #c.groups > 2 and { action = "delete_group", group_id = r.pick(c.groups) } or nil end,
      function() return { action = "update_realm", property = "name", value = "Realm " .. n } end,
      function() return { action = "update_realm_dict", data = { description = "realm " .. n } } end,
      function()
        return { action = "update_user_settings", user_id = me, property = "twenty_four_hour_time",
                 value = r.float() < 0.5 }
      end,
      function(c)
        if #c.humans == 0 then return nil end
        return { action = r.float() < 0.6 and "mute_user" or "unmute_user", user_id = me,
                 muted_user_id = r.pick(c.humans) }
      end,
      function(c)
        return { action = "set_topic_visibility", user_id = me, stream_id = r.pick(c.all_channels),
                 topic = r.pick(TOPICS), visibility_policy = r.int(4) - 1 }
      end,
      function() return { action = "add_emoji", name = "emoji_" .. n, author_id = 11 } end,
      function(c) return #c.emoji > 0 and { action = "remove_emoji", emoji_id = r.pick(c.emoji) } or nil end,
    }
  end

  local function remove_id(list, id)
    for i = #list, 1, -1 do if list[i] == id then table.remove(list, i) end end
  end

  -- `who`: the user whose state is kept (the bot, or Alice, who owns the bots and so gets realm_bot)
  local function run(seed, steps, who)
    local r = rng(seed)
    local me = srv.users[who].user_id
    client:close()
    client = util.client(srv, { email = srv.users[who].email, api_key = srv.users[who].api_key })
    local q = client:queue{ keep_state = true, fetch_event_types = FETCH, event_types = FETCH,
                            include_subscribers = true }
    assert(q:register())
    local world = { messages = {}, stream_messages = {} }
    local done, types, refused = {}, {}, 0
    local n = 0
    local order = {}
    while n < steps do
      local c = choices(q.state, world)
      local ms = makers(r, n, me)
      if #order == 0 then  -- rounds: every kind of action once per round, in a random order
        for i = 1, #ms do table.insert(order, r.int(i), i) end
      end
      local body = ms[table.remove(order)](c)
      if body then
        n = n + 1
        -- an action the server refuses (a 400: nothing to change, or not allowed) changes nothing
        -- and sends no event: the state is checked after it all the same
        local ok, reply = pcall(srv.control, srv, "POST", "/test/action", body)
        if not ok then
          if not tostring(reply):find("-> 400", 1, true) then error(reply, 0) end
          refused, reply = refused + 1, {}
        else
          done[body.action] = (done[body.action] or 0) + 1
        end
        if body.action == "send" and reply.message_id then
          world.messages[#world.messages + 1] = reply.message_id
          if body.type == "stream" then world.stream_messages[#world.stream_messages + 1] = reply.message_id end
        elseif body.action == "delete_message" then
          remove_id(world.messages, body.message_ids[1])
          remove_id(world.stream_messages, body.message_ids[1])
        end
        -- the action's events were queued before it replied: one poll that does not wait takes them
        for _, ev in ipairs(assert(q:get_events{ dont_block = true })) do types[ev.type] = true end
        local want, have = normal_state(fresh()), normal_state(q.state)
        local d = diff(have, want, "state")
        if d then
          error(("seed %d, action %d (%s): the kept state differs from a fresh register at %s\n%s")
            :format(seed, n, body.action, d, encode.json(body)), 0)
        end
      end
    end
    q:close()
    print(("\n  seed %d: %d actions, %d of them refused by the server (nothing to change)")
      :format(seed, steps, refused))
    assert.is_true(refused < steps / 4, refused .. " of " .. steps .. " actions were refused")
    return done, types
  end

  it("300 actions, seed 1, Alice's state: it equals a fresh register after each", function()
    local done, types = run(1, tonumber(os.getenv("VERIFY_STEPS") or 300), "alice")
    local applied = { "realm_user", "realm_bot", "stream", "subscription", "message", "update_message_flags",
                      "delete_message", "update_message", "user_group", "realm", "user_settings", "muted_users",
                      "user_topic", "realm_emoji" }
    for _, t in ipairs(applied) do assert.is_true(types[t], "no " .. t .. " event came") end
    local names = {}
    for k, v in pairs(done) do names[#names + 1] = k .. "=" .. v end
    table.sort(names)
    print("\n  actions: " .. table.concat(names, " "))
    for _, a in ipairs({ "create_user", "update_user", "deactivate_user", "reactivate_user", "create_channel",
                         "update_channel", "delete_channel", "subscribe", "unsubscribe", "update_subscription",
                         "send", "mark_read", "mark_unread", "delete_message", "move_messages", "create_group",
                         "update_group", "add_group_members", "remove_group_members", "add_subgroups",
                         "remove_subgroups", "delete_group", "update_realm", "update_realm_dict",
                         "update_user_settings", "mute_user", "unmute_user", "set_topic_visibility", "add_emoji",
                         "remove_emoji" }) do
      assert.is_true((done[a] or 0) > 0, "the generator never did " .. a)
    end
  end)

  it("200 actions, seed 7, the bot's state", function()
    run(7, tonumber(os.getenv("VERIFY_STEPS") or 200), "bot")
  end)
end)
