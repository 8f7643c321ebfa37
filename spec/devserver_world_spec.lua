-- The dev server's realm model (devserver/world.py) and POST /test/action: for each action, the
-- events a registered queue receives (the bot's, user 10, and alice's where the recipients
-- differ) and what a fresh register then shows. Plain HTTP; every wait is bounded.
local socket = require("socket")
local cjson = require("cjson")
local util = require("spec.support.util")

local srv = util.use_devserver{ heartbeat = 30, config = { rate_limit = cjson.null } }

local function api(user, method, path, params)
  local resp, err = srv:api(user, method, path, params)
  assert(resp, "request failed: " .. tostring(err))
  assert(resp.json, "not JSON: " .. tostring(resp.body))
  return resp
end

local function register(user, params)
  local resp = api(user or "bot", "POST", "/api/v1/register", params)
  assert.equals(200, resp.status, resp.body)
  return resp.json
end

-- A registered queue; :take() returns the events that came since the last take.
local function watch(user, params)
  local state = register(user, params)
  local w = { state = state, last = state.last_event_id }
  function w.take()
    local resp = api(user or "bot", "GET", "/api/v1/events",
                     { queue_id = state.queue_id, last_event_id = w.last, dont_block = true })
    assert.equals(200, resp.status, resp.body)
    local events = resp.json.events
    if #events > 0 then w.last = events[#events].id end
    return events
  end
  return w
end

local function action(name, args)
  local body = { action = name }
  for k, v in pairs(args or {}) do body[k] = v end
  return srv:control("POST", "/test/action", body)
end

local function action_error(name, args)
  local body = { action = name }
  for k, v in pairs(args or {}) do body[k] = v end
  local resp = assert(require("spec.support.devserver").http(srv.control_port, "POST", "/test/action",
                                                                { json = body }))
  assert.equals(400, resp.status, resp.body)
  assert.equals("error", resp.json.result)
  assert.equals("BAD_REQUEST", resp.json.code)
  return resp.json.msg
end

local function find(list, key, value)
  for _, item in ipairs(list or {}) do
    if item[key] == value then return item end
  end
  return nil
end

-- "type" or "type/op" of each event, for comparing sequences
local function kinds(events)
  local out = {}
  for i, e in ipairs(events) do out[i] = e.op and (e.type .. "/" .. e.op) or e.type end
  return out
end

describe("dev server realm model (POST /test/action)", function()
  describe("users", function()
    it("create_user: realm_user add to everyone; a bot also realm_bot add to its owner", function()
      local bot, alice = watch("bot"), watch("alice")
      local uid = action("create_user", { full_name = "Zed" }).user_id
      local events = bot.take()
      assert.same({ "realm_user/add" }, kinds(events))
      assert.equals(uid, events[1].person.user_id)
      assert.equals("Zed", events[1].person.full_name)
      assert.equals(400, events[1].person.role)
      assert.same({ "realm_user/add" }, kinds(alice.take()))
      assert.equals("Zed", find(register().realm_users, "user_id", uid).full_name)

      local made = action("create_user", { full_name = "Botty", is_bot = true })
      assert.same({ "realm_user/add" }, kinds(bot.take()))
      events = alice.take()
      assert.same({ "realm_user/add", "realm_bot/add" }, kinds(events))
      assert.equals(made.user_id, events[2].bot.user_id)
      assert.equals(11, events[2].bot.owner_id)
      assert.is_not_nil(find(register("alice").realm_bots, "user_id", made.user_id))
      assert.is_nil(find(register("bot").realm_bots, "user_id", made.user_id))
      -- owner_id gives the bot another owner, who alone gets realm_bot
      local own = action("create_user", { full_name = "Mine", is_bot = true, owner_id = 10 })
      assert.same({ "realm_user/add", "realm_bot/add" }, kinds(bot.take()))
      assert.same({ "realm_user/add" }, kinds(alice.take()))
      assert.equals(10, find(register("bot").realm_bots, "user_id", own.user_id).owner_id)
      -- a created user has an API key and can register
      local me = register({ email = made.email, api_key = made.api_key })
      assert.is_string(me.queue_id)
    end)

    it("update_user: one realm_user update per changed property", function()
      local bot = watch("bot")
      action("update_user", { user_id = 11, full_name = "Alice B", role = 200, timezone = "Europe/Oslo" })
      local events = bot.take()
      assert.same({ "realm_user/update", "realm_user/update", "realm_user/update" }, kinds(events))
      assert.same({ user_id = 11, full_name = "Alice B" }, events[1].person)
      assert.same({ user_id = 11, role = 200 }, events[2].person)
      assert.same({ user_id = 11, timezone = "Europe/Oslo" }, events[3].person)
      local alice = find(register().realm_users, "user_id", 11)
      assert.equals("Alice B", alice.full_name)
      assert.equals(200, alice.role)
      assert.is_true(alice.is_admin)
      assert.is_false(alice.is_owner)
      -- unchanged values send nothing; a bot's name also goes to its owner as realm_bot
      action("update_user", { user_id = 11, full_name = "Alice B" })
      assert.same({}, bot.take())
      local owner = watch("alice")
      action("update_user", { user_id = 10, full_name = "Echo Bot 2" })
      assert.same({ "realm_user/update", "realm_bot/update" }, kinds(owner.take()))
      assert.same({ "realm_user/update" }, kinds(bot.take()))
    end)

    it("deactivate_user / reactivate_user move the user between the lists", function()
      local bot = watch("bot")
      local uid = action("create_user", { full_name = "Temp" }).user_id
      bot.take()
      action("deactivate_user", { user_id = uid })
      local events = bot.take()
      assert.same({ "realm_user/update" }, kinds(events))
      assert.same({ user_id = uid, is_active = false }, events[1].person)
      local state = register()
      assert.is_nil(find(state.realm_users, "user_id", uid))
      assert.is_false(find(state.realm_non_active_users, "user_id", uid).is_active)
      action("reactivate_user", { user_id = uid })
      assert.same({ user_id = uid, is_active = true }, bot.take()[1].person)
      assert.is_not_nil(find(register().realm_users, "user_id", uid))
      assert.matches("already active", action_error("reactivate_user", { user_id = uid }))
    end)

    it("a deactivated user keeps their subscriptions but leaves the subscriber lists", function()
      local uid = action("create_user", { full_name = "Sub" }).user_id
      action("subscribe", { stream_id = 1, user_ids = { uid } })
      local bot = watch("bot", { include_subscribers = true })
      action("deactivate_user", { user_id = uid })
      local events = bot.take()
      assert.same({ "realm_user/update", "subscription/peer_remove" }, kinds(events))
      assert.same({ { 1 }, { uid } }, { events[2].stream_ids, events[2].user_ids })
      local sub = find(register("bot", { include_subscribers = true }).subscriptions, "stream_id", 1)
      assert.same({ 10, 11 }, sub.subscribers)
      assert.equals(2, sub.subscriber_count)
      assert.matches("deactivated", action_error("subscribe", { stream_id = 2, user_ids = { uid } }))
      action("reactivate_user", { user_id = uid })
      assert.same({ "realm_user/update", "subscription/peer_add" }, kinds(bot.take()))
      assert.equals(3, find(register().subscriptions, "stream_id", 1).subscriber_count)
    end)
  end)

  describe("channels and subscriptions", function()
    it("create_channel: a public one goes to everyone, a private one to nobody yet", function()
      local bot = watch("bot", { include_subscribers = true })
      local sid = action("create_channel", { name = "Norway", description = "fjords" }).stream_id
      local events = bot.take()
      assert.same({ "stream/create" }, kinds(events))
      assert.equals("Norway", events[1].streams[1].name)
      assert.equals("<p>fjords</p>", events[1].streams[1].rendered_description)
      assert.equals(0, events[1].streams[1].subscriber_count)
      local state = register("bot", { include_subscribers = true })
      assert.is_not_nil(find(state.streams, "stream_id", sid))
      assert.same({}, find(state.never_subscribed, "stream_id", sid).subscribers)
      local secret = action("create_channel", { name = "Secret", invite_only = true }).stream_id
      assert.same({}, bot.take())
      assert.is_nil(find(register().streams, "stream_id", secret))
      assert.is_nil(find(register().never_subscribed, "stream_id", secret))
      assert.matches("exists", action_error("create_channel", { name = "norway" }))
    end)

    it("subscribe / unsubscribe a public channel: add or remove to them, peer events to the rest", function()
      local bot, alice = watch("bot"), watch("alice")
      action("subscribe", { stream_id = 3, user_ids = { 10 } })   -- Verona
      local events = bot.take()
      assert.same({ "subscription/add" }, kinds(events))
      local sub = events[1].subscriptions[1]
      assert.equals("Verona", sub.name)
      assert.same({ 10 }, sub.subscribers)
      assert.equals(1, sub.subscriber_count)
      assert.equals("#76ce90", sub.color)
      events = alice.take()
      assert.same({ "subscription/peer_add" }, kinds(events))
      assert.same({ 3 }, events[1].stream_ids)
      assert.same({ 10 }, events[1].user_ids)
      local state = register()
      assert.equals(1, find(state.subscriptions, "stream_id", 3).subscriber_count)
      assert.is_nil(find(state.never_subscribed, "stream_id", 3))
      assert.equals(1, find(state.streams, "stream_id", 3).subscriber_count)

      action("unsubscribe", { stream_id = 1, user_ids = { 10 } })   -- Denmark
      events = bot.take()
      assert.same({ "subscription/remove" }, kinds(events))
      assert.same({ { stream_id = 1, name = "Denmark" } }, events[1].subscriptions)
      events = alice.take()
      assert.same({ "subscription/peer_remove" }, kinds(events))
      assert.same({ 10 }, events[1].user_ids)
      state = register("bot", { include_subscribers = true })
      assert.is_nil(find(state.subscriptions, "stream_id", 1))
      local gone = find(state.unsubscribed, "stream_id", 1)
      assert.same({ 11 }, gone.subscribers)
      assert.equals(1, gone.subscriber_count)
      -- already subscribed: nothing happens, nothing is sent
      assert.same({}, action("subscribe", { stream_id = 2, user_ids = { 11 } }).subscribed)
      assert.same({}, alice.take())
    end)

    it("users unsubscribed together learn of each other (one user at a time)", function()
      local bot = watch("bot")
      action("unsubscribe", { stream_id = 1, user_ids = { 11, 10 } })
      local events = bot.take()
      assert.same({ "subscription/remove", "subscription/peer_remove" }, kinds(events))
      assert.same({ 11 }, events[2].user_ids)
      assert.equals(0, find(register().unsubscribed, "stream_id", 1).subscriber_count)
    end)

    it("a private channel is seen by its subscribers only", function()
      local bot, alice = watch("bot"), watch("alice")
      local sid = action("create_channel", { name = "Secret", invite_only = true }).stream_id
      action("subscribe", { stream_id = sid, user_ids = { 11 } })
      assert.same({ "stream/create", "subscription/add" }, kinds(alice.take()))
      assert.same({}, bot.take())
      action("subscribe", { stream_id = sid, user_ids = { 10 } })
      local events = bot.take()
      assert.same({ "stream/create", "subscription/add" }, kinds(events))
      assert.equals(2, events[1].streams[1].subscriber_count)
      assert.same({ 10, 11 }, events[2].subscriptions[1].subscribers)
      assert.same({ "subscription/peer_add" }, kinds(alice.take()))
      assert.is_not_nil(find(register().streams, "stream_id", sid))

      action("unsubscribe", { stream_id = sid, user_ids = { 10 } })
      events = bot.take()
      assert.same({ "subscription/remove", "stream/delete" }, kinds(events))
      assert.same({ sid }, events[2].stream_ids)
      assert.same({ "subscription/peer_remove" }, kinds(alice.take()))
      local state = register()
      assert.is_nil(find(state.streams, "stream_id", sid))
      assert.is_nil(find(state.subscriptions, "stream_id", sid))
      assert.is_nil(find(state.unsubscribed, "stream_id", sid))
    end)

    it("update_channel: name, description and is_archived, with the old name", function()
      local bot = watch("bot")
      action("update_channel", { stream_id = 1, property = "name", value = "Danmark" })
      action("update_channel", { stream_id = 1, property = "description", value = "hej" })
      action("update_channel", { stream_id = 1, property = "is_archived", value = true })
      local events = bot.take()
      assert.same({ "stream/update", "stream/update", "stream/update" }, kinds(events))
      assert.equals("Denmark", events[1].name)
      assert.equals("Danmark", events[1].value)
      assert.equals("Danmark", events[2].name)
      assert.equals("<p>hej</p>", events[2].rendered_description)
      assert.equals("is_archived", events[3].property)
      assert.is_true(events[3].value)
      local sub = find(register().subscriptions, "stream_id", 1)
      assert.equals("Danmark", sub.name)
      assert.equals("hej", sub.description)
      assert.is_true(sub.is_archived)
      -- the new name is the one messages go to
      local reply, status = srv:send("alice", { type = "stream", to = "Danmark", topic = "t", content = "x" })
      assert.equals(200, status, cjson.encode(reply))
      assert.matches("property must be", action_error("update_channel", { stream_id = 1, property = "color",
                                                                          value = "x" }))
    end)

    it("delete_channel: stream delete to who could see it; gone from every list", function()
      local bot = watch("bot")
      action("delete_channel", { stream_id = 1 })
      local events = bot.take()
      assert.same({ "stream/delete" }, kinds(events))
      assert.same({ { stream_id = 1, name = "Denmark" } }, events[1].streams)
      assert.same({ 1 }, events[1].stream_ids)
      local state = register()
      for _, key in ipairs{ "streams", "subscriptions", "unsubscribed", "never_subscribed" } do
        assert.is_nil(find(state[key], "stream_id", 1), key)
      end
      local reply, status = srv:send("alice", { type = "stream", to = "Denmark", topic = "t", content = "x" })
      assert.equals(400, status)
      assert.equals("STREAM_DOES_NOT_EXIST", reply.code)
    end)

    it("update_subscription: subscription update to that user only", function()
      local bot, alice = watch("bot"), watch("alice")
      action("update_subscription", { user_id = 10, stream_id = 1, property = "color", value = "#aabbcc" })
      action("update_subscription", { user_id = 10, stream_id = 1, property = "is_muted", value = true })
      action("update_subscription", { user_id = 10, stream_id = 1, property = "desktop_notifications",
                                      value = false })
      local events = bot.take()
      assert.same({ "subscription/update", "subscription/update", "subscription/update" }, kinds(events))
      assert.same({ 1, "color", "#aabbcc" }, { events[1].stream_id, events[1].property, events[1].value })
      assert.same({}, alice.take())
      local sub = find(register().subscriptions, "stream_id", 1)
      assert.equals("#aabbcc", sub.color)
      assert.is_true(sub.is_muted)
      assert.is_false(sub.desktop_notifications)
      assert.equals("#76ce90", find(register("alice").subscriptions, "stream_id", 1).color)
      assert.matches("not subscribed", action_error("update_subscription", { user_id = 10, stream_id = 2,
                                                                             property = "color", value = "#000000" }))
    end)
  end)

  describe("messages and flags", function()
    local function unread(user) return register(user).unread_msgs end
    -- alice posts to a channel; returns the message id
    local function post(stream_id, topic, content)
      return action("send", { sender_id = 11, type = "stream", stream_id = stream_id, topic = topic,
                              content = content }).message_id
    end

    it("send stores per-user flags: unread for recipients, read for the sender, mentions", function()
      local zed = action("create_user", { full_name = "Zed" }).user_id
      local bot = watch("bot")
      local m1 = action("send", { sender_id = 11, type = "stream", stream_id = 1, topic = "t",
                                  content = "hi @**Echo Bot**" }).message_id
      local m2 = action("send", { sender_id = 11, type = "private", to = { 10 }, content = "dm" }).message_id
      local m3 = action("send", { sender_id = 11, type = "private", to = { 10, zed }, content = "group" }).message_id
      local m4 = action("send", { sender_id = 10, type = "private", to = { 10 }, content = "self" }).message_id
      local m5 = action("send", { sender_id = 11, type = "stream", stream_id = 2, topic = "t",
                                  content = "not for the bot", mention_user_ids = { 10 } }).message_id
      local events = bot.take()
      assert.same({ "message", "message", "message", "message" }, kinds(events))
      assert.same({ "mentioned" }, events[1].flags)
      assert.same({}, events[2].flags)
      assert.same({ "read" }, events[4].flags)
      -- the builtin channels' history is older than any message: first_message_id stays 0
      assert.equals(0, find(register().streams, "stream_id", 1).first_message_id)
      local u = unread("bot")
      assert.equals(3, u.count)
      assert.same({ { stream_id = 1, topic = "t", unread_message_ids = { m1 } } }, u.streams)
      assert.same({ { other_user_id = 11, sender_id = 11, unread_message_ids = { m2 } } }, u.pms)
      assert.same({ { user_ids_string = ("10,11,%d"):format(zed), unread_message_ids = { m3 } } }, u.huddles)
      assert.same({ m1 }, u.mentions)
      assert.is_false(u.old_unreads_missing)
      -- alice sent them all: nothing unread for her but the bot's self-DM is not hers either
      assert.equals(0, unread("alice").count)
      -- max_message_id is the newest message the user received: m5 went to Scotland only
      assert.equals(m4, register("bot", { fetch_event_types = '["message"]' }).max_message_id)
      assert.equals(m5, register("alice", { fetch_event_types = '["message"]' }).max_message_id)

      -- a self-DM made unread is a pm with oneself
      action("mark_unread", { user_id = 10, message_ids = { m4 } })
      assert.same({ other_user_id = 10, sender_id = 10, unread_message_ids = { m4 } }, find(unread("bot").pms,
                                                                                            "other_user_id", 10))
    end)

    it("a new channel's first_message_id: stream update when its oldest message changes", function()
      local sid = action("create_channel", { name = "Fresh" }).stream_id
      local bot = watch("bot")   -- not subscribed: no messages, yet it sees the channel
      local a = post(sid, "t", "1")
      local b = post(sid, "t", "2")
      local events = bot.take()
      assert.same({ "stream/update" }, kinds(events))
      assert.same({ sid, "Fresh", "first_message_id", a },
                  { events[1].stream_id, events[1].name, events[1].property, events[1].value })
      assert.equals(a, find(register().never_subscribed, "stream_id", sid).first_message_id)
      action("delete_message", { message_ids = { a } })
      events = bot.take()   -- the bot received neither message: no delete_message
      assert.same({ "stream/update" }, kinds(events))
      assert.same({ sid, b }, { events[1].stream_id, events[1].value })
      action("move_messages", { message_ids = { b }, stream_id = 1 })
      events = bot.take()
      assert.same({ "stream/update" }, kinds(events))   -- Denmark's history is older: no change there
      assert.same({ sid, cjson.null }, { events[1].stream_id, events[1].value })
      assert.equals(cjson.null, find(register().streams, "stream_id", sid).first_message_id)
      assert.equals(0, find(register().streams, "stream_id", 1).first_message_id)
    end)

    it("mark_read / mark_unread: update_message_flags with the ids that changed", function()
      local zed = action("create_user", { full_name = "Zed" }).user_id
      local m1 = action("send", { sender_id = 11, type = "stream", stream_id = 1, topic = "t",
                                  content = "x", mention_user_ids = { 10 } }).message_id
      local m2 = action("send", { sender_id = 11, type = "private", to = { 10, zed }, content = "y" }).message_id
      local m3 = post(2, "t", "z")
      local bot, alice = watch("bot"), watch("alice")
      action("mark_read", { user_id = 10, message_ids = { m2, m1, m3 } })
      local events = bot.take()
      assert.same({ "update_message_flags/add" }, kinds(events))
      assert.same({ "add", "read", false }, { events[1].operation, events[1].flag, events[1].all })
      assert.same({ m1, m2 }, events[1].messages)   -- m3 never reached the bot
      assert.same({}, alice.take())
      assert.equals(0, register().unread_msgs.count)
      action("mark_read", { user_id = 10, message_ids = { m1 } })
      assert.same({}, bot.take()[1].messages)

      action("mark_unread", { user_id = 10, message_ids = { m1, m2 } })
      events = bot.take()
      assert.same({ "update_message_flags/remove" }, kinds(events))
      assert.same({ m1, m2 }, events[1].messages)
      local d1, d2 = events[1].message_details[("%d"):format(m1)],
                     events[1].message_details[("%d"):format(m2)]
      assert.same({ type = "stream", stream_id = 1, topic = "t", unmuted_stream_msg = true, mentioned = true }, d1)
      assert.same({ type = "private", user_ids = { 11, zed } }, d2)
      local u = register().unread_msgs
      assert.equals(2, u.count)
      assert.same({ m1 }, u.mentions)
    end)

    it("delete_message: sorted ids to everyone who received them", function()
      local a = post(1, "t", "1")
      local b = post(1, "t", "2")
      local dm = action("send", { sender_id = 11, type = "private", to = { 10 }, content = "3" }).message_id
      local bot = watch("bot")
      action("delete_message", { message_ids = { b, a } })
      local events = bot.take()
      assert.same({ "delete_message" }, kinds(events))
      assert.same({ a, b }, events[1].message_ids)
      assert.same({ "stream", 1, "t" }, { events[1].message_type, events[1].stream_id, events[1].topic })
      action("delete_message", { message_ids = { dm } })
      events = bot.take()
      assert.equals("private", events[1].message_type)
      assert.is_nil(events[1].stream_id)
      assert.equals(0, register().unread_msgs.count)
      assert.matches("no message", action_error("delete_message", { message_ids = { dm } }))
    end)

    it("move_messages: update_message with old and new place; unreads follow", function()
      local a = post(1, "t", "1")
      local b = action("send", { sender_id = 11, type = "stream", stream_id = 1, topic = "t", content = "2",
                                 mention_user_ids = { 10 } }).message_id
      local bot = watch("bot")
      action("move_messages", { message_ids = { b, a }, topic = "new", stream_id = 3 })
      local events = bot.take()
      assert.same({ "update_message" }, kinds(events))
      local e = events[1]
      assert.same({ a, b }, e.message_ids)
      assert.equals(a, e.message_id)
      assert.same({ 1, "t", "new", 3, "change_all" },
                  { e.stream_id, e.orig_subject, e.subject, e.new_stream_id, e.propagate_mode })
      assert.same({}, e.flags)
      assert.same({ { stream_id = 3, topic = "new", unread_message_ids = { a, b } } }, register().unread_msgs.streams)
      -- a move to where they are is no change, and no event
      assert.same({}, action("move_messages", { message_ids = { a }, topic = "new" }).moved)
      assert.same({}, bot.take())
    end)
  end)

  describe("user groups", function()
    it("create, update, members, subgroups and delete: user_group events to everyone", function()
      local bot = watch("bot")
      local g1 = action("create_group", { name = "devs", description = "d", members = { 11, 10 } }).group_id
      local g2 = action("create_group", { name = "leads", members = {} }).group_id
      local events = bot.take()
      assert.same({ "user_group/add", "user_group/add" }, kinds(events))
      assert.same({ 10, 11 }, events[1].group.members)
      assert.same({}, events[1].group.direct_subgroup_ids)
      assert.is_false(events[1].group.is_system_group)
      action("update_group", { group_id = g1, name = "developers" })
      action("add_group_members", { group_id = g2, user_ids = { 11 } })
      action("remove_group_members", { group_id = g1, user_ids = { 10 } })
      action("add_subgroups", { group_id = g1, subgroup_ids = { g2 } })
      events = bot.take()
      assert.same({ "user_group/update", "user_group/add_members", "user_group/remove_members",
                    "user_group/add_subgroups" }, kinds(events))
      assert.same({ name = "developers" }, events[1].data)
      assert.same({ 11 }, events[2].user_ids)
      assert.same({ g2 }, events[4].direct_subgroup_ids)
      local g = find(register().realm_user_groups, "id", g1)
      assert.same({ "developers", { 11 }, { g2 } }, { g.name, g.members, g.direct_subgroup_ids })
      assert.matches("own subgroup", action_error("add_subgroups", { group_id = g1, subgroup_ids = { g1 } }))
      -- no change is no event
      assert.same({}, action("add_group_members", { group_id = g2, user_ids = { 11 } }).user_ids)
      assert.same({}, action("add_subgroups", { group_id = g1, subgroup_ids = { g2 } }).subgroup_ids)
      assert.same({}, bot.take())
      -- deleting a subgroup takes it out of its parent first
      action("delete_group", { group_id = g2 })
      events = bot.take()
      assert.same({ "user_group/remove_subgroups", "user_group/remove" }, kinds(events))
      assert.same({ g1, { g2 } }, { events[1].group_id, events[1].direct_subgroup_ids })
      assert.equals(g2, events[2].group_id)
      local groups = register().realm_user_groups
      assert.is_nil(find(groups, "id", g2))
      assert.same({}, find(groups, "id", g1).direct_subgroup_ids)
    end)
  end)

  describe("settings", function()
    it("update_realm and update_realm_dict: realm events to everyone", function()
      local bot = watch("bot")
      action("update_realm", { property = "name", value = "New realm" })
      action("update_realm", { property = "waiting_period_threshold", value = 3 })
      action("update_realm_dict", { data = { description = "about", allow_message_editing = false,
                                             message_content_edit_limit_seconds = cjson.null } })
      action("update_realm_dict", { data = { icon_url = "/icon.png", icon_source = "U" } })
      local events = bot.take()
      assert.same({ "realm/update", "realm/update", "realm/update_dict", "realm/update_dict" }, kinds(events))
      assert.same({ "name", "New realm" }, { events[1].property, events[1].value })
      assert.equals("default", events[3].property)
      assert.equals(cjson.null, events[3].data.message_content_edit_limit_seconds)
      local s = register("bot", { fetch_event_types = '["realm"]' })
      assert.same({ "New realm", "about", 3, false, cjson.null, "/icon.png", "U" },
                  { s.realm_name, s.realm_description, s.realm_waiting_period_threshold,
                    s.realm_allow_message_editing, s.realm_message_content_edit_limit_seconds,
                    s.realm_icon_url, s.realm_icon_source })
      assert.matches("go together", action_error("update_realm_dict", { data = { icon_source = "G" } }))
      assert.matches("property must", action_error("update_realm", { property = "description", value = "x" }))
    end)

    it("update_user_settings: user_settings update to that user (language_name with the language)", function()
      local bot, alice = watch("bot"), watch("alice")
      action("update_user_settings", { user_id = 10, property = "default_language", value = "de" })
      action("update_user_settings", { user_id = 10, property = "twenty_four_hour_time", value = true })
      local events = bot.take()
      assert.same({ "user_settings/update", "user_settings/update" }, kinds(events))
      assert.equals("Deutsch", events[1].language_name)
      assert.same({}, alice.take())
      local settings = register().user_settings
      assert.same({ "de", true }, { settings.default_language, settings.twenty_four_hour_time })
      assert.equals("en", register("alice").user_settings.default_language)
      assert.matches("must be a boolean", action_error("update_user_settings", {
        user_id = 10, property = "enter_sends", value = 1 }))
    end)

    it("mute_user / unmute_user: muted_users with the whole list", function()
      local bot = watch("bot")
      action("mute_user", { user_id = 10, muted_user_id = 11 })
      action("mute_user", { user_id = 10, muted_user_id = 12 })
      action("unmute_user", { user_id = 10, muted_user_id = 11 })
      local events = bot.take()
      assert.same({ "muted_users", "muted_users", "muted_users" }, kinds(events))
      assert.equals(2, #events[2].muted_users)
      assert.same({ 12 }, { events[3].muted_users[1].id })
      local muted = register().muted_users
      assert.equals(1, #muted)
      assert.equals(12, muted[1].id)
      assert.same({}, register("alice").muted_users)
      assert.matches("themself", action_error("mute_user", { user_id = 10, muted_user_id = 10 }))
      action("unmute_user", { user_id = 10, muted_user_id = 11 })   -- not muted: nothing is sent
      assert.same({}, bot.take())
    end)

    it("set_topic_visibility: user_topic to that user; policy 0 drops the topic", function()
      local bot = watch("bot")
      action("set_topic_visibility", { user_id = 10, stream_id = 1, topic = "t", visibility_policy = 1 })
      action("set_topic_visibility", { user_id = 10, stream_id = 1, topic = "u", visibility_policy = 3 })
      action("set_topic_visibility", { user_id = 10, stream_id = 1, topic = "t", visibility_policy = 0 })
      local events = bot.take()
      assert.same({ "user_topic", "user_topic", "user_topic" }, kinds(events))
      assert.same({ 1, "t", 1 }, { events[1].stream_id, events[1].topic_name, events[1].visibility_policy })
      assert.is_number(events[1].last_updated)
      local topics = register().user_topics
      assert.equals(1, #topics)
      assert.same({ 1, "u", 3 }, { topics[1].stream_id, topics[1].topic_name, topics[1].visibility_policy })
    end)

    it("add_emoji / remove_emoji: realm_emoji update with the whole dict", function()
      local bot = watch("bot")
      local id = action("add_emoji", { name = "party", author_id = 11 }).emoji_id
      local events = bot.take()
      assert.same({ "realm_emoji/update" }, kinds(events))
      local e = events[1].realm_emoji[id]
      assert.same({ id, "party", false, 11, cjson.null }, { e.id, e.name, e.deactivated, e.author_id, e.still_url })
      action("remove_emoji", { emoji_id = id })
      assert.is_true(bot.take()[1].realm_emoji[id].deactivated)
      assert.is_true(register().realm_emoji[id].deactivated)
      assert.matches("no active emoji", action_error("remove_emoji", { emoji_id = id }))
    end)
  end)

  describe("register", function()
    it("returns each key group only when its type is wanted", function()
      local s = register("bot", { fetch_event_types = '["muted_users","user_topic"]' })
      assert.same({}, s.muted_users)
      assert.same({}, s.user_topics)
      for _, key in ipairs{ "realm_users", "realm_bots", "streams", "subscriptions", "unread_msgs",
                            "realm_user_groups", "realm_name", "user_settings", "realm_emoji", "max_message_id" } do
        assert.is_nil(s[key], key)
      end
      -- unread_msgs needs both message and update_message_flags
      assert.is_nil(register("bot", { fetch_event_types = '["message"]' }).unread_msgs)
      assert.is_table(register("bot", { fetch_event_types = '["message","update_message_flags"]' }).unread_msgs)
      s = register("bot", { event_types = '["realm_bot","stream"]' })
      assert.is_table(s.realm_bots)
      assert.is_table(s.streams)
      assert.is_nil(s.realm_users)
      s = register("bot")
      for _, key in ipairs{ "realm_users", "realm_non_active_users", "realm_bots", "streams", "subscriptions",
                            "unsubscribed", "never_subscribed", "unread_msgs", "realm_user_groups", "realm_name",
                            "user_settings", "muted_users", "user_topics", "realm_emoji", "max_message_id" } do
        assert.is_not_nil(s[key], key)
      end
    end)

    it("a queue's event_types filter the action's events", function()
      local only = watch("bot", { event_types = '["realm_emoji"]' })
      action("create_user", { full_name = "Filtered" })
      action("add_emoji", { name = "ok" })
      assert.same({ "realm_emoji/update" }, kinds(only.take()))
    end)

    it("rejects unknown actions and bad arguments with 400 BAD_REQUEST", function()
      assert.matches("unknown action", action_error("nope"))
      assert.matches("user_id is required", action_error("update_user", {}))
      assert.matches("no user", action_error("update_user", { user_id = 999999 }))
      assert.matches("not an integer", action_error("subscribe", { stream_id = "1", user_ids = { 10 } }))
      assert.matches("sender_id", action_error("send", { type = "stream", stream_id = 1, content = "x" }))
    end)

    it("stays fast for 10,000 users and 1,000 channels, which are part of the model", function()
      srv:control("POST", "/test/config", { extra_users = 10000, extra_channels = 1000 })
      local t0 = socket.gettime()
      local s = register("bot")
      local took = socket.gettime() - t0
      assert.is_true(took < 2, "register took " .. took .. " s")
      assert.equals(10002, #s.realm_users)
      assert.equals(1001, #s.subscriptions)
      assert.equals(10002, find(s.subscriptions, "stream_id", 1001).subscriber_count)
      local bot = watch("bot", { fetch_event_types = '["message"]' })
      t0 = socket.gettime()
      for i = 1, 20 do
        action("unsubscribe", { stream_id = 1000 + i, user_ids = { 1000 + i } })
        action("update_user", { user_id = 1000 + i, full_name = "Renamed " .. i })
      end
      took = socket.gettime() - t0
      assert.is_true(took < 2, "40 actions took " .. took .. " s")
      assert.equals(40, #bot.take())
      s = register("bot", { fetch_event_types = '["subscription","realm_user"]', include_subscribers = true })
      local sub = find(s.subscriptions, "stream_id", 1001)
      assert.equals(10001, sub.subscriber_count)
      assert.equals(10001, #sub.subscribers)
      assert.equals("Renamed 1", find(s.realm_users, "user_id", 1001).full_name)
    end)
  end)
end)
