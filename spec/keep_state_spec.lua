-- luacheck: ignore 512 (loops that take one event and break are the point here)
-- keep_state = true on a queue, against the dev server: q.state is the register reply, changed by
-- each event before the loop body, a step result or get_events sees it, once; a re-registered
-- queue hands over a new state. The random sequences of real actions are in verify_state_spec.lua.
local util = require("spec.support.util")

describe("keep_state", function()
  local srv, client
  local TYPES = { "message", "update_message_flags" }  -- what unread_msgs needs
  local LOOKUPS = { "message", "update_message_flags", "realm_user", "stream", "subscription" }

  local function send(content)
    return srv:send("alice", { type = "stream", to = "Denmark", topic = "kept", content = content }).id
  end

  srv = util.use_devserver{ heartbeat = 30 }
  before_each(function()
    client = util.client(srv)
  end)
  after_each(function()
    client:close()
  end)

  it("rejects a wrong keep_state, a resumed queue, and lookups on a queue that keeps nothing", function()
    assert.has_error(function() client:queue{ keep_state = "yes" } end,
                     "zulip: queue option 'keep_state' must be a boolean")
    local ok, err = pcall(client.queue, client, { keep_state = true, id = "abc" })
    assert.is_false(ok)
    assert.matches("cannot resume a saved 'id'", err)
    local q = client:queue{}
    local ok2, err2 = pcall(function() local u = q:user(11) return u end)
    assert.is_false(ok2)
    assert.matches("keep_state_spec.lua:%d+: zulip: the queue keeps no state", err2)  -- the caller's line
    q:close()
  end)

  it("each: q.state is current for the event the loop body sees, and not ahead of it", function()
    local q = client:queue{ keep_state = true, event_types = TYPES, fetch_event_types = LOOKUPS }
    assert.is_nil(q.state)
    assert.are.equal(0, q:unread_count())
    assert(q:register())
    local state = q.state
    assert.are.equal("table", type(state))
    assert.are.equal("Alice", q:user("alice@example.com").full_name)
    assert.are.equal(1, q:channel("denmark").stream_id)
    local first, second = send("one"), send("two")  -- both arrive in one reply
    local seen = {}
    for ev in q:each() do
      seen[#seen + 1] = { ev.message.id, q.state.max_message_id, q:unread_count("Denmark", "kept") }
      if #seen == 2 then break end
    end
    assert.are.same({ { first, first, 1 }, { second, second, 2 } }, seen)
    assert.are.equal(state, q.state)  -- the same table, changed in place
    q:close()
  end)

  it("step and get_events: the events they return are applied, once each", function()
    local q = client:queue{ keep_state = true, event_types = TYPES }
    local deadline = os.time() + 10
    repeat assert(q:step(0.1)) until q.state or os.time() > deadline
    local id = send("stepped")
    local got
    repeat
      local evs = assert(q:step(0.2))
      got = evs[1]
    until got or os.time() > deadline
    assert.are.equal(id, got.message.id)
    assert.are.equal(id, q.state.max_message_id)
    assert.are.equal(1, q:unread_count(1))  -- by id: the channel names come with "subscription"/"stream"
    local id2 = send("polled")
    local evs = assert(q:get_events())
    assert.are.equal(id2, evs[#evs].message.id)
    assert.are.equal(2, q:unread_count(1, "kept"))
    q:close()
  end)

  it("a re-registered queue hands on_reset a new state, and q.state is replaced whole", function()
    local resets, old, three = {}, nil, nil
    local q = client:queue{ keep_state = true, event_types = TYPES,
                            on_reset = function(qq, st)
                              resets[#resets + 1] = { given = st, now = qq.state }
                              if #resets == 1 then send("one") end
                              if #resets == 2 then three = send("three") end  -- an event of the new queue
                            end }
    for ev in q:each() do
      if ev.message.content == "three" then break end
      if old == nil then
        old = q.state
        srv:control("POST", "/test/gc_queue", { queue_id = q.id })  -- the next poll: BAD_EVENT_QUEUE_ID
        send("two")  -- goes into the new queue's register reply, not into an event
      end
    end
    assert.are.equal(2, #resets)  -- the first register and the one after the queue was collected
    assert.are.equal(resets[2].given, resets[2].now)
    assert.are.equal(resets[2].given, q.state)
    assert.are_not.equal(old, q.state)
    assert.are.equal(three, q.state.max_message_id)
    assert.are.equal(3, q:unread_count(1, "kept"))  -- one and two from the register, three applied
    q:close()
  end)

  it("an event whose loop body raised comes again, and is not applied twice (Lua 5.4)", function()
    if not _VERSION:find("5.4", 1, true) then return end  -- 5.4 alone tells an error from a break
    local q = client:queue{ keep_state = true, event_types = TYPES }
    assert(q:register())
    send("boom")
    local ok = pcall(function()
      for _ in q:each() do error("body failed") end
    end)
    assert.is_false(ok)
    assert.are.equal(1, q:unread_count())
    local again
    for ev in q:each() do again = ev break end
    assert.are.equal("boom", again.message.content)
    assert.are.equal(1, q:unread_count())
    q:close()
  end)
end)
