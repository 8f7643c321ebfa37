-- zulip.state on its own: each applied event type, in the shapes of Zulip's API (feature level
-- 481), on a snapshot written here in the shape of a register reply; the indexes behind the
-- lookups; events it must leave alone. The dev server's real actions are in keep_state_spec.lua.
local zulip = require("zulip")
local state = require("zulip.state")
local NULL = zulip.null

local function user(id, name, extra)
  local u = { user_id = id, email = name:lower() .. "@example.com", full_name = name, is_bot = false,
              is_active = true, role = 400, avatar_url = NULL, profile_data = {} }
  for k, v in pairs(extra or {}) do u[k] = v end
  return u
end

local function channel(id, name, extra)
  local c = { stream_id = id, name = name, description = "", rendered_description = "",
              invite_only = false, first_message_id = NULL, subscriber_count = 0 }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

local function sub(id, name, subscribers)
  local s = channel(id, name, { color = "#76ce90", is_muted = false, pin_to_top = false,
                                subscribers = subscribers, subscriber_count = #subscribers })
  return s
end

-- A register reply: the bot is 10; Alice 11 and Bob 13 are active, 12 is deactivated.
local function snapshot()
  return {
    queue_id = "q", last_event_id = -1, max_message_id = 5,
    realm_users = { user(10, "Bot", { is_bot = true, profile_data = nil }), user(11, "Alice"), user(13, "Bob") },
    realm_non_active_users = { user(12, "Gone", { is_active = false }) },
    realm_bots = {},
    streams = { channel(1, "Denmark", { subscriber_count = 2 }), channel(2, "Scotland", { subscriber_count = 1 }),
                channel(3, "Verona") },
    subscriptions = { sub(1, "Denmark", { 10, 11 }) },
    unsubscribed = {},
    never_subscribed = { sub(2, "Scotland", { 11 }), sub(3, "Verona", {}) },
    unread_msgs = { count = 2, old_unreads_missing = false, mentions = { 5 },
                    streams = { { stream_id = 1, topic = "lunch", unread_message_ids = { 4, 5 } } },
                    pms = {}, huddles = {} },
    realm_user_groups = { { id = 1, name = "admins", description = "", members = { 11 }, direct_subgroup_ids = {} } },
    realm_name = "dev", realm_description = "",
    user_settings = { twenty_four_hour_time = false, default_language = "en" },
    muted_users = {}, user_topics = {}, realm_emoji = {},
  }
end

local function new_state()
  return state.new(snapshot(), { include_subscribers = true, email = "bot@example.com" })
end

local function ids(list)
  local out = {}
  for _, x in ipairs(list) do out[#out + 1] = x.user_id or x.stream_id or x.id end
  table.sort(out)
  return out
end

local function stream_msg(id, stream_id, topic, flags)
  return { type = "message", flags = flags or {}, message = { id = id, type = "stream", stream_id = stream_id,
           subject = topic, sender_id = 11, display_recipient = "Denmark", content = "hi" } }
end

local function dm(id, people, flags)
  local rec = {}
  for _, p in ipairs(people) do rec[#rec + 1] = { id = p, email = p .. "@x", full_name = "u" .. p } end
  return { type = "message", flags = flags or {}, message = { id = id, type = "private", sender_id = people[2],
           display_recipient = rec, subject = "", content = "hi" } }
end

describe("zulip.state", function()
  it("is zulip.state, and refuses what is not a register reply", function()
    assert.are.equal(state, zulip.state)
    assert.has_error(function() state.new("x") end, "zulip: state.new expects the register reply (a table)")
    assert.has_error(function() state.new({}, 5) end, "zulip: state.new options must be a table")
  end)

  it("finds users by id and by email in any case, active or not", function()
    local st = new_state()
    assert.are.equal("Alice", st:user(11).full_name)
    assert.are.equal(11, st:user("ALICE@example.com").user_id)
    assert.are.equal(12, st:user(12).user_id)
    assert.is_nil(st:user(99))
    assert.is_nil(st:user("nobody@example.com"))
  end)

  it("realm_user add, update (name, email, role), deactivate, reactivate, remove", function()
    local st = new_state()
    local d = st.data
    assert.is_true(st:apply{ type = "realm_user", op = "add", person = user(14, "Carol", { profile_data = nil }) })
    assert.are.same({ 10, 11, 13, 14 }, ids(d.realm_users))
    assert.are.same({}, st:user(14).profile_data)  -- the server gives non-bots an empty profile
    assert.is_true(st:apply{ type = "realm_user", op = "update", person = { user_id = 14, full_name = "Caroline" } })
    assert.are.equal("Caroline", st:user("carol@example.com").full_name)
    st:apply{ type = "realm_user", op = "update", person = { user_id = 14, email = "c@example.com" } }
    assert.is_nil(st:user("carol@example.com"))
    assert.are.equal(14, st:user("C@example.com").user_id)
    st:apply{ type = "realm_user", op = "update", person = { user_id = 14, new_field = 1 } }
    assert.is_nil(st:user(14).new_field)  -- only fields the user has change
    -- deactivation: to realm_non_active_users, and out of every subscriber list
    st:apply{ type = "realm_user", op = "update", person = { user_id = 11, is_active = false } }
    assert.are.same({ 10, 13, 14 }, ids(d.realm_users))
    assert.are.same({ 11, 12 }, ids(d.realm_non_active_users))
    assert.is_false(st:user(11).is_active)
    assert.are.same({ 10 }, d.subscriptions[1].subscribers)
    assert.are.equal(1, d.subscriptions[1].subscriber_count)
    assert.are.equal(1, st:channel(1).subscriber_count)
    assert.are.same({}, st:channel(2) and d.never_subscribed[1].subscribers)
    st:apply{ type = "realm_user", op = "update", person = { user_id = 12, is_active = true } }
    assert.are.same({ 10, 12, 13, 14 }, ids(d.realm_users))
    st:apply{ type = "realm_user", op = "remove", person = { user_id = 13, full_name = "Bob" } }
    assert.is_nil(st:user(13))
    assert.is_nil(st:user("bob@example.com"))
    assert.are.same({ 10, 12, 14 }, ids(d.realm_users))
  end)

  it("realm_bot add, update, delete", function()
    local st = new_state()
    st:apply{ type = "realm_bot", op = "add", bot = { user_id = 20, full_name = "B", owner_id = 11, is_active = true } }
    st:apply{ type = "realm_bot", op = "update", bot = { user_id = 20, full_name = "B2" } }
    assert.are.equal("B2", st.data.realm_bots[1].full_name)
    st:apply{ type = "realm_bot", op = "delete", bot = { user_id = 20 } }
    assert.are.same({}, st.data.realm_bots)
  end)

  it("stream create, update by the old name, rename, delete (stream_ids)", function()
    local st = new_state()
    local d = st.data
    st:apply{ type = "stream", op = "create", streams = { channel(4, "Oslo") } }
    assert.are.equal(4, st:channel("oslo").stream_id)
    assert.are.same({}, st.data.never_subscribed[#d.never_subscribed].subscribers)
    assert.is_nil(st:channel(4).subscribers)  -- streams entries carry no subscriber list
    st:apply{ type = "stream", op = "update", stream_id = 4, name = "Oslo", property = "description",
              value = "fjords", rendered_description = "<p>fjords</p>" }
    assert.are.equal("<p>fjords</p>", st:channel(4).rendered_description)
    assert.are.equal("fjords", d.never_subscribed[#d.never_subscribed].description)
    st:apply{ type = "stream", op = "update", stream_id = 4, name = "Oslo", property = "name", value = "Bergen" }
    assert.is_nil(st:channel("Oslo"))
    assert.are.equal(4, st:channel("BERGEN").stream_id)
    st:apply{ type = "stream", op = "update", stream_id = 4, name = "Bergen", property = "is_archived", value = true }
    assert.is_nil(st:channel(4).is_archived)  -- streams: only properties the entry has
    assert.is_true(d.never_subscribed[#d.never_subscribed].is_archived)
    st:apply{ type = "stream", op = "delete", streams = { { stream_id = 4, name = "Bergen" } }, stream_ids = { 4 } }
    assert.is_nil(st:channel(4))
    assert.is_nil(st:channel("Bergen"))
    assert.are.same({ 2, 3 }, ids(d.never_subscribed))
    st:apply{ type = "stream", op = "delete", stream_ids = { 1 } }  -- a subscribed one goes too
    assert.are.same({}, d.subscriptions)
    assert.are.same({ 2, 3 }, ids(d.streams))
  end)

  it("subscription add, update, peer_add, peer_remove, remove", function()
    local st = new_state()
    local d = st.data
    st:apply{ type = "subscription", op = "add", subscriptions = { sub(2, "Scotland", { 11, 10 }) } }
    assert.are.same({ 1, 2 }, ids(d.subscriptions))
    assert.are.same({ 3 }, ids(d.never_subscribed))
    assert.are.same({ 10, 11 }, st:subscription("Scotland").subscribers)  -- sorted
    st:apply{ type = "subscription", op = "update", stream_id = 2, property = "color", value = "#000000" }
    assert.are.equal("#000000", st:subscription(2).color)
    st:apply{ type = "subscription", op = "peer_add", stream_ids = { 2, 3 }, user_ids = { 13, 11 } }
    assert.are.same({ 10, 11, 13 }, st:subscription(2).subscribers)
    assert.are.equal(3, st:subscription(2).subscriber_count)
    assert.are.equal(3, st:channel(2).subscriber_count)
    assert.are.same({ 11, 13 }, d.never_subscribed[1].subscribers)
    assert.are.equal(2, st:channel(3).subscriber_count)
    st:apply{ type = "subscription", op = "peer_remove", stream_ids = { 2 }, user_ids = { 11, 99 } }
    assert.are.same({ 10, 13 }, st:subscription(2).subscribers)
    assert.are.equal(2, st:channel(2).subscriber_count)
    st:apply{ type = "subscription", op = "remove", subscriptions = { { stream_id = 2, name = "Scotland" } } }
    assert.is_nil(st:subscription(2))
    assert.are.same({ 2 }, ids(d.unsubscribed))
    assert.are.same({ 13 }, d.unsubscribed[1].subscribers)  -- without us
    assert.are.equal(1, st:channel(2).subscriber_count)
    -- and back: out of unsubscribed
    st:apply{ type = "subscription", op = "add", subscriptions = { sub(2, "Scotland", { 10, 13 }) } }
    assert.are.same({}, d.unsubscribed)
  end)

  it("without include_subscribers: no subscriber lists, counts move by the event", function()
    local snap = snapshot()
    for _, key in ipairs({ "subscriptions", "never_subscribed" }) do
      for _, s in ipairs(snap[key]) do s.subscribers = nil end
    end
    local st = state.new(snap, { email = "bot@example.com" })
    st:apply{ type = "subscription", op = "add", subscriptions = { sub(3, "Verona", { 10 }) } }
    assert.is_nil(st:subscription(3).subscribers)
    st:apply{ type = "subscription", op = "peer_add", stream_ids = { 1 }, user_ids = { 13 } }
    assert.are.equal(3, st:channel(1).subscriber_count)
    st:apply{ type = "stream", op = "create", streams = { channel(4, "Oslo") } }
    assert.is_nil(snap.never_subscribed[#snap.never_subscribed].subscribers)
  end)

  it("unread messages: new, read, unread again, deleted, moved, with counts per channel, topic and DM", function()
    local st = new_state()
    local u = st.data.unread_msgs
    assert.are.equal(2, st:unread_count())
    assert.are.equal(2, st:unread_count("Denmark"))
    assert.are.equal(2, st:unread_count(1, "lunch"))
    assert.is_true(st:apply(stream_msg(6, 1, "dinner", { "mentioned" })))
    assert.is_true(st:apply(stream_msg(7, 1, "lunch", { "read" })))  -- our own: read
    assert.is_true(st:apply(dm(8, { 10, 11 })))
    assert.is_true(st:apply(dm(9, { 10, 11, 13 })))
    assert.are.equal(9, st.data.max_message_id)
    assert.are.equal(5, u.count)
    assert.are.equal(3, st:unread_count("denmark"))
    assert.are.equal(1, st:unread_count("Denmark", "dinner"))
    assert.are.equal(0, st:unread_count("Denmark", "Dinner"))  -- topics are compared as they are
    assert.are.equal(1, st:dm_unread_count(11))
    assert.are.equal(1, st:dm_unread_count({ 13, 11 }))
    assert.are.same({ 5, 6 }, u.mentions)
    assert.are.same({ { other_user_id = 11, sender_id = 11, unread_message_ids = { 8 } } }, u.pms)
    assert.are.same({ { user_ids_string = "10,11,13", unread_message_ids = { 9 } } }, u.huddles)
    -- read
    st:apply{ type = "update_message_flags", op = "add", operation = "add", flag = "read", messages = { 5, 8 },
              all = false }
    assert.are.equal(3, u.count)
    assert.are.same({ 6 }, u.mentions)
    assert.are.same({}, u.pms)
    assert.are.equal(0, st:dm_unread_count(11))
    assert.are.same({ 4 }, st.bykey["s1\0lunch"].unread_message_ids)
    -- unread again, from message_details
    st:apply{ type = "update_message_flags", op = "remove", flag = "read", messages = { 5, 8 }, all = false,
              message_details = { ["5"] = { type = "stream", stream_id = 1, topic = "lunch", mentioned = true },
                                  ["8"] = { type = "private", user_ids = { 11 } } } }
    assert.are.equal(5, u.count)
    assert.are.same({ 5, 6 }, u.mentions)
    assert.are.equal(1, st:dm_unread_count(11))
    -- moved: topic, then channel
    st:apply{ type = "update_message", message_id = 4, message_ids = { 4, 5 }, stream_id = 1, orig_subject = "lunch",
              subject = "brunch", propagate_mode = "change_all", flags = {}, rendering_only = false }
    assert.are.equal(0, st:unread_count(1, "lunch"))
    assert.are.equal(2, st:unread_count(1, "brunch"))
    assert.are.same({ 5, 6 }, u.mentions)
    st:apply{ type = "update_message", message_id = 4, message_ids = { 4 }, stream_id = 1, new_stream_id = 2,
              propagate_mode = "change_one", flags = {}, rendering_only = false }
    assert.are.equal(1, st:unread_count("Scotland", "brunch"))
    assert.are.equal(2, st:unread_count("Denmark"))
    -- a content edit moves nothing
    assert.is_false(st:apply{ type = "update_message", message_id = 5, message_ids = { 5 }, content = "x" })
    -- deleted: out of the unreads; the newest gone lowers max_message_id to the newest left
    st:apply{ type = "delete_message", message_ids = { 9, 6 }, message_type = "stream", stream_id = 1,
              topic = "dinner" }
    assert.are.same({ 5 }, u.mentions)
    assert.are.same({}, u.huddles)
    assert.are.equal(8, st.data.max_message_id)
    assert.are.equal(3, u.count)
    -- everything read at once
    st:apply{ type = "update_message_flags", op = "add", flag = "read", messages = {}, all = true }
    assert.are.equal(0, st:unread_count())
    assert.are.same({}, u.streams)
    assert.are.same({}, u.mentions)
  end)

  it("first_message_id of a subscribed channel and of streams is set by its first message", function()
    local st = new_state()
    st:apply(stream_msg(6, 1, "t"))
    st:apply(stream_msg(7, 1, "t"))
    assert.are.equal(6, st:channel(1).first_message_id)
    assert.are.equal(6, st:subscription(1).first_message_id)
  end)

  it("user groups: add (kept sorted), update, members, subgroups, remove", function()
    local st = new_state()
    local gs = st.data.realm_user_groups
    st:apply{ type = "user_group", op = "add", group = { id = 2, name = "devs", description = "", members = { 13, 11 },
                                                          direct_subgroup_ids = {} } }
    st:apply{ type = "user_group", op = "update", group_id = 2, data = { description = "people who code" } }
    st:apply{ type = "user_group", op = "add_members", group_id = 2, user_ids = { 12, 11 } }
    st:apply{ type = "user_group", op = "remove_members", group_id = 2, user_ids = { 13 } }
    st:apply{ type = "user_group", op = "add_subgroups", group_id = 2, direct_subgroup_ids = { 1 } }
    assert.are.same({ id = 2, name = "devs", description = "people who code", members = { 11, 12 },
                      direct_subgroup_ids = { 1 } }, gs[2])
    st:apply{ type = "user_group", op = "remove_subgroups", group_id = 2, direct_subgroup_ids = { 1 } }
    assert.are.same({}, gs[2].direct_subgroup_ids)
    st:apply{ type = "user_group", op = "remove", group_id = 1 }
    assert.are.same({ 2 }, ids(gs))
  end)

  it("realm update and update_dict, user_settings, muted users, user topics, custom emoji", function()
    local st = new_state()
    local d = st.data
    st:apply{ type = "realm", op = "update", property = "name", value = "New name" }
    st:apply{ type = "realm", op = "update_dict", property = "default", data = { description = "d", icon_url = "/i" } }
    assert.are.same({ "New name", "d", "/i" }, { d.realm_name, d.realm_description, d.realm_icon_url })
    st:apply{ type = "user_settings", op = "update", property = "default_language", value = "de",
              language_name = "Deutsch" }
    assert.are.equal("de", d.user_settings.default_language)
    st:apply{ type = "muted_users", muted_users = { { id = 11, timestamp = 1 } } }
    assert.are.same({ { id = 11, timestamp = 1 } }, d.muted_users)
    st:apply{ type = "user_topic", stream_id = 1, topic_name = "lunch", last_updated = 5, visibility_policy = 1 }
    st:apply{ type = "user_topic", stream_id = 1, topic_name = "lunch", last_updated = 6, visibility_policy = 2 }
    st:apply{ type = "user_topic", stream_id = 1, topic_name = "tea", last_updated = 7, visibility_policy = 1 }
    assert.are.same({ { stream_id = 1, topic_name = "lunch", last_updated = 6, visibility_policy = 2 },
                      { stream_id = 1, topic_name = "tea", last_updated = 7, visibility_policy = 1 } }, d.user_topics)
    st:apply{ type = "user_topic", stream_id = 1, topic_name = "lunch", last_updated = 8, visibility_policy = 0 }
    assert.are.same({ { stream_id = 1, topic_name = "tea", last_updated = 7, visibility_policy = 1 } }, d.user_topics)
    local emoji = { ["1"] = { id = "1", name = "party", source_url = "/e/1.png", deactivated = false, author_id = 11 } }
    st:apply{ type = "realm_emoji", op = "update", realm_emoji = emoji }
    assert.are.same(emoji, d.realm_emoji)
    emoji["1"].name = "changed by the caller"
    assert.are.equal("party", d.realm_emoji["1"].name)  -- the state holds its own copy
  end)

  it("leaves other events, malformed events, and keys the register did not return alone", function()
    local st = new_state()
    local before = snapshot()
    for _, ev in ipairs({
      { type = "heartbeat" }, { type = "typing", op = "start" }, { type = "presence", user_id = 11 },
      { type = "realm_user", op = "update" }, { type = "realm_user", op = "update", person = "x" },
      { type = "realm_user", op = "frobnicate", person = { user_id = 11 } },
      { type = "stream", op = "create", streams = "x" }, { type = "stream", op = "update", stream_id = 99 },
      { type = "subscription", op = "update", stream_id = 99, property = "color", value = 1 },
      { type = "subscription", op = "peer_add", stream_ids = "x", user_ids = { 1 } },
      { type = "message", message = { id = "x" } }, { type = "message" },
      { type = "update_message_flags", op = "add", flag = "read", messages = { "x", {} } },
      { type = "user_group", op = "update", group_id = 99, data = {} },
      { type = "user_topic", stream_id = 1 }, 5, "x",
    }) do
      st:apply(ev)
    end
    assert.are.same(before, st.data)
    -- a register without the key: nothing is made up
    local bare = state.new({ queue_id = "q", last_event_id = -1 })
    assert.is_false(bare:apply(stream_msg(6, 1, "t")) and bare.data.unread_msgs ~= nil)
    assert.is_false(bare:apply{ type = "realm_user", op = "add", person = user(14, "Carol") })
    assert.is_false(bare:apply{ type = "muted_users", muted_users = {} })
    assert.are.same({ queue_id = "q", last_event_id = -1 }, bare.data)
    assert.are.equal(0, bare:unread_count())
  end)

  it("keeps the work of one event in proportion to what it changes, not to the realm's size", function()
    -- not a timing: counts the Lua VM instructions the same events take on a realm of 10,000
    -- users and 1,000 channels and on one of 100 and 10 (a scan of the realm would be 100x)
    if jit then jit.off() end  -- compiled code runs no count hook
    local function realm(n_users, n_channels)
      local users, streams, unread = {}, {}, {}
      for i = 1, n_users do users[i] = user(100 + i, "U" .. i) end
      for j = 1, n_channels do
        streams[j] = channel(100 + j, "C" .. j)
        unread[j] = { stream_id = 100 + j, topic = "t", unread_message_ids = { 1000 + j } }
      end
      return state.new({ realm_users = users, realm_non_active_users = {}, streams = streams,
                         unread_msgs = { count = n_channels, streams = unread, pms = {}, huddles = {},
                                         mentions = {} } })
    end
    local function cost(st)
      local n = 0
      debug.sethook(function() n = n + 1 end, "", 1)
      st:apply{ type = "realm_user", op = "update", person = { user_id = 105, full_name = "Renamed" } }
      st:apply{ type = "realm_user", op = "update", person = { user_id = 106, is_active = false } }
      st:apply{ type = "realm_user", op = "add", person = user(99, "New") }
      st:apply{ type = "stream", op = "update", stream_id = 105, name = "C5", property = "name", value = "D5" }
      st:apply{ type = "stream", op = "delete", stream_ids = { 107 } }
      st:apply(stream_msg(5000, 108, "t"))
      st:apply{ type = "update_message_flags", op = "add", flag = "read", messages = { 1001, 5000 }, all = false }
      debug.sethook()
      assert.are.equal("Renamed", st:user(105).full_name)
      assert.is_nil(st:channel("C7"))
      return n
    end
    local small, big = cost(realm(100, 10)), cost(realm(10000, 1000))
    if jit then jit.on() end
    print(("\n  VM instructions for 7 events: %d (10,000 users), %d (100 users)"):format(big, small))
    assert.is_true(big < small * 1.5 + 200, ("%d instructions on the big realm, %d on the small"):format(big, small))
  end)
end)
