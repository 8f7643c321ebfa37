--- Event queues: `register`, `get_events`, the iterator `each`, and the non-blocking `step`
-- with `pollfd`/`events`/`timeout` for foreign event loops. A queue is a `zulip.Queue` userdata
-- made by `client:queue{...}`; these methods join the C ones (`close`, `pollfd`) in its
-- metatable. Read-only fields: `q.id` (the server's queue id), `q.last_event_id`, `q.closed`,
-- `q.last_error` (the error that made the iterator raise).
-- @module zulip.queue
local core = require("zulip.core")
local encode = require("zulip.encode")
local errors = require("zulip.errors")
local policy = require("zulip.policy")

local Queue = core.Queue
local M = {}

local format, now = string.format, core.now

local function is_int(v)
  return type(v) == "number" and v == math.floor(v) and v > -2^53 and v < 2^53
end

-- register parameters and how each must look
local REGISTER = {
  event_types = "strings", fetch_event_types = "strings", narrow = "narrow",
  all_public_streams = "boolean", apply_markdown = "boolean", client_gravatar = "boolean",
  slim_presence = "boolean", include_subscribers = "boolean", client_capabilities = "table",
  queue_lifespan_secs = "integer", presence_history_limit_days = "integer",
}
-- recovery options, accepted by client:queue{} (for step) and by q:each{}
local RECOVERY = {
  heartbeats = "boolean", on_reset = "function", on_retry = "function", backoff = "table",
  sleep = "function", random = "function",
}

local function check_param(name, v, want, level)
  local ok
  if want == "strings" then
    ok = type(v) == "table"
    if ok then for _, s in ipairs(v) do ok = ok and type(s) == "string" end end
  elseif want == "narrow" then
    ok = type(v) == "table"
    if ok then
      for _, term in ipairs(v) do
        ok = ok and type(term) == "table" and type(term[1]) == "string" and type(term[2]) == "string"
      end
    end
  elseif want == "integer" then
    ok = is_int(v)
  else
    ok = type(v) == want
  end
  if not ok then
    local what = ({ strings = "a list of strings", narrow = "a list of {operator, operand} string pairs",
                    integer = "an integer" })[want] or want
    error(("zulip: queue option '%s' must be %s"):format(name, what), level)
  end
end

local function check_recovery(opts, level)
  for k, want in pairs(RECOVERY) do
    local v = opts[k]
    if v ~= nil and type(v) ~= want then
      error(("zulip: option '%s' must be a %s"):format(k, want), level)
    end
  end
end

--- Make a queue (called by `client:queue`).
-- @local
function M.new(client, session, opts, log)
  opts = opts or {}
  if type(opts) ~= "table" then error("zulip: client:queue expects a table of options", 3) end
  local params = {}
  for k, v in pairs(opts) do
    if REGISTER[k] then
      check_param(k, v, REGISTER[k], 4)
      params[k] = v
    elseif not RECOVERY[k] and k ~= "id" and k ~= "last_event_id" then
      error(("zulip: unknown queue option '%s'"):format(tostring(k)), 3)
    end
  end
  check_recovery(opts, 3)
  if opts.id ~= nil and type(opts.id) ~= "string" then error("zulip: queue option 'id' must be a string", 3) end
  if opts.last_event_id ~= nil and not is_int(opts.last_event_id) then
    error("zulip: queue option 'last_event_id' must be an integer", 3)
  end
  if opts.last_event_id ~= nil and opts.id == nil then
    error("zulip: queue option 'last_event_id' needs 'id' (the saved queue to resume)", 3)
  end
  local q = core.queue(session)
  local st = q:_state()
  st.id = opts.id
  st.last_event_id = opts.id and (opts.last_event_id or -1) or nil
  st.closed = false
  st._register_body = encode.form(params)
  st._timeout = client.timeout
  st._longpoll = 90
  st._grace = client.longpoll_grace  -- a silent long-poll gets this long past the server's timeout
  st._recovery = {}
  for k in pairs(RECOVERY) do st._recovery[k] = opts[k] end
  st._log = log
  q:_alarm(0)  -- a new queue has work (its register): its pollfd says so
  return q
end

local function state_of(q, level)
  if q:_closed() then error("zulip: queue is closed", level or 3) end
  return q:_state()
end

-- The iterator's last event counts as handled once anything else asks the queue for more.
local function commit_pending(st)
  local id = st._pending_ack
  if id ~= nil then
    if id > st.last_event_id then st.last_event_id = id end
    st._pending_ack = nil
  end
end

local function wait(q)
  while not q:_drive() do end  -- _drive returns early on a signal, so Ctrl-C is handled
end

local function start_register(q, st)
  q:_start("POST", "/api/v1/register", st._register_body, st._timeout)
  st._op = "register"
end

local function finish_register(q, st)
  local state, msg, err = errors.outcome(q)
  if not state then return nil, msg, err end
  if type(state.queue_id) ~= "string" or not is_int(state.last_event_id) then
    return errors.fail(errors.new("PROTOCOL", "register reply lacks queue_id or last_event_id"))
  end
  st.id, st.last_event_id, st._stale = state.queue_id, state.last_event_id, false
  local lp = state.event_queue_longpoll_timeout_seconds
  st._longpoll = (type(lp) == "number" and lp > 0 and lp < 86400) and lp or 90
  return state
end

local function start_poll(q, st, dont_block)
  if st._path_id ~= st.id then  -- the escaped id, made once per queue id
    st._path_id, st._path = st.id, "/api/v1/events?queue_id=" .. encode.urlescape(st.id) .. "&last_event_id="
  end
  local path = st._path .. format("%d", st.last_event_id)
  if dont_block then path = path .. "&dont_block=true" end
  q:_start("GET", path, nil, dont_block and st._timeout or st._longpoll + st._grace)
  st._op, st._op_id = "poll", st.id
end

-- The new events of a finished poll, oldest first: replays (ids already acknowledged, or
-- returned twice by overlapping polls) are dropped, and a late reply for a queue we have
-- since replaced is ignored, because its events are already in the new queue's initial state.
local function finish_poll(q, st)
  local body, msg, err = errors.outcome(q)
  if not body then return nil, msg, err end
  if st._op_id ~= st.id or (body.queue_id ~= nil and body.queue_id ~= st.id) then return {} end
  local events = body.events
  if type(events) ~= "table" then
    return errors.fail(errors.new("PROTOCOL", "reply has no events list", { http_status = 200 }))
  end
  local out, n, last = {}, 0, st.last_event_id
  for i = 1, #events do
    local ev = events[i]
    local id = type(ev) == "table" and ev.id
    if not is_int(id) then
      return errors.fail(errors.new("PROTOCOL", "event without an integer id", { http_status = 200 }))
    end
    if id > last then
      n = n + 1
      out[n] = ev
      last = id
    end
  end
  return out
end

--- Register the queue (`POST /api/v1/register`).
-- Sets `q.id` and `q.last_event_id` from the reply.
-- @treturn table the initial state (the whole register reply), or `nil, msg, err`
-- @usage local state = assert(q:register()); print(state.queue_id, state.zulip_version)
function Queue:register()
  local st = state_of(self)
  start_register(self, st)
  wait(self)
  return finish_register(self, st)
end

--- One poll (`GET /api/v1/events`): acknowledges everything up to `q.last_event_id`, waits
-- for events (unless `dont_block`), and advances `q.last_event_id` past the events returned,
-- so the next call acknowledges them. Heartbeats are returned like any other event.
-- @tparam[opt] table opts `{dont_block = false}`
-- @treturn table a list of events (possibly empty), or `nil, msg, err`
-- @usage for _, ev in ipairs(assert(q:get_events{ dont_block = true })) do print(ev.type) end
function Queue:get_events(opts)
  local st = state_of(self)
  local dont_block = false
  if opts ~= nil then
    if type(opts) ~= "table" then error("zulip: get_events expects a table of options", 2) end
    if opts.dont_block ~= nil and type(opts.dont_block) ~= "boolean" then
      error("zulip: option 'dont_block' must be a boolean", 2)
    end
    dont_block = opts.dont_block or false
  end
  if st.id == nil then error("zulip: queue is not registered (call q:register() first)", 2) end
  commit_pending(st)
  start_poll(self, st, dont_block)
  wait(self)
  local events, msg, err = finish_poll(self, st)
  if events and #events > 0 then st.last_event_id = events[#events].id end
  return events, msg, err
end

local function merged_options(st, opts, level)
  local o = {}
  for k, v in pairs(st._recovery) do o[k] = v end
  if opts ~= nil then
    if type(opts) ~= "table" then error("zulip: each expects a table of options", level) end
    for k, v in pairs(opts) do
      if RECOVERY[k] == nil then error(("zulip: unknown option '%s'"):format(tostring(k)), level) end
      o[k] = v
    end
    check_recovery(opts, level)
  end
  return o
end

local function retry_info(d)
  return { reason = d.reason, attempt = d.attempt, delay = d.delay, http_status = d.http_status, error = d.err }
end

-- Tell the caller (on_retry) and the log about a retry or a re-register.
local function report(st, o, d)
  st._log("warn", d.action == "reregister" and "event queue expired; registering a new one"
    or ("retrying after %s in %.3f s"):format(d.reason, d.delay), retry_info(d))
  if o.on_retry then o.on_retry(retry_info(d)) end
end

--- Iterate over events for ever, recovering from faults (see `zulip.policy`).
-- Registers the queue first if needed. Heartbeats are acknowledged and hidden unless
-- `heartbeats = true`. An event is acknowledged only when the loop asks for the next one, so an
-- event left by `break` counts as handled. On Lua 5.4 an event whose loop body raised is not
-- acknowledged (the loop's to-be-closed value sees the error) and comes again from the next poll;
-- 5.1, 5.3 and LuaJIT cannot tell an error from a `break`, so there it counts as handled when the
-- queue is next polled. The loop ends when the
-- queue is closed (also from inside the loop body or a callback); 401 and other fatal errors raise
-- (the error table is kept in `q.last_error`).
-- @tparam[opt] table opts `heartbeats`, `on_reset(q, state)`, `on_retry(info)`, `backoff`
--   (`{base=, factor=, cap=}`), `sleep(seconds)`, `random()`
-- @treturn function the iterator
-- @usage for event in q:each{ on_reset = function(q, state) rebuild(state) end } do
--   if event.type == "message" then print(event.message.content) end
-- end
function Queue:each(opts)
  local st = state_of(self)
  local o = merged_options(st, opts, 3)
  local pol = policy.new(o.backoff, o.random)
  local sleep = o.sleep or core.sleep
  local buffer, pos, dont_block = {}, 1, false
  commit_pending(st)

  local function fail(d, msg)
    st.last_error = d.err
    error(msg, 0)
  end

  local function register()
    start_register(self, st)
    wait(self)
    local state, msg, err = finish_register(self, st)
    if state then
      if o.on_reset then o.on_reset(self, state) end
      return
    end
    local d = pol:decide(err)
    if d.action ~= "retry" then fail(d, msg) end
    report(st, o, d)
    sleep(d.delay)
  end

  -- On 5.4 the generic for closes this value when the loop ends: a `break` (no error) means the
  -- body for the last event finished, so it is acknowledged; an error leaves it to be redelivered.
  local closer = setmetatable({}, { __close = function(_, e)
    if e == nil then commit_pending(st) else st._pending_ack = nil end
  end })

  return function()
    if self:_closed() then return nil end
    commit_pending(st)  -- the loop body for the previous event has returned
    while true do
      local ev = buffer[pos]
      while ev ~= nil do
        pos = pos + 1
        if ev.id > st.last_event_id then
          if ev.type ~= "heartbeat" or o.heartbeats then
            st._pending_ack = ev.id
            return ev
          end
          st.last_event_id = ev.id
        end
        ev = buffer[pos]
      end
      buffer, pos = {}, 1
      if st.id == nil or st._stale then
        register()
      else
        start_poll(self, st, dont_block)
        wait(self)
        local events, msg, err = finish_poll(self, st)
        if events then
          pol:success()
          buffer, dont_block = events, false
        else
          local d = pol:decide(err)
          if d.action == "raise" then fail(d, msg) end
          report(st, o, d)
          if d.action == "reregister" then st._stale = true else dont_block = true end
          sleep(d.delay)
        end
      end
      if self:_closed() then return nil end
    end
  end, nil, nil, closer
end

local function step_state(st)
  local s = st._step
  if s == nil then
    local o = st._recovery
    s = { o = o, policy = policy.new(o.backoff, o.random), wake_at = nil, dont_block = false }
    st._step = s
  end
  return s
end

-- The body of `step`: loops until events come or the deadline passes. Once past the deadline it
-- starts no second request, so `step(0)` does a bounded amount of work even against a server
-- that answers instantly.
local function step_pass(self, st, s, timeout)
  local deadline = now() + timeout
  local started = false
  while true do
    if not self:_busy() then
      if started and now() >= deadline then return {} end
      started = true
      local t = now()
      if s.wake_at and t < s.wake_at then
        if t >= deadline then return {} end
        core.sleep(math.min(s.wake_at, deadline) - t)
        if now() < s.wake_at then return {} end
      end
      s.wake_at = nil
      if st.id == nil or st._stale then start_register(self, st) else start_poll(self, st, s.dont_block) end
    end
    local left = deadline - now()
    if self:_drive(left > 0 and left or 0) then
      local result, msg, err
      if st._op == "register" then
        result, msg, err = finish_register(self, st)
        if result and s.o.on_reset then s.o.on_reset(self, result) end
        if self:_closed() then return {} end
      else
        result, msg, err = finish_poll(self, st)
      end
      if not result then
        local d = s.policy:decide(err)
        if d.action == "raise" then
          st.last_error = err
          return nil, msg, err
        end
        report(st, s.o, d)
        if self:_closed() then return {} end  -- on_retry or on_log closed it
        if d.action == "reregister" then st._stale = true else s.dont_block = true end
        s.wake_at = now() + d.delay
      elseif st._op == "poll" then
        s.policy:success()
        s.dont_block = false
        local out, n = {}, 0
        for i = 1, #result do
          local ev = result[i]
          st.last_event_id = ev.id
          if ev.type ~= "heartbeat" or s.o.heartbeats then
            n = n + 1
            out[n] = ev
          end
        end
        if n > 0 then return out end
      end
    elseif now() >= deadline then
      return {}
    end
  end
end

-- After a step, arm the queue's alarm so that its pollfd alone says when to step next: at the
-- end of a backoff, or at once when the next request is still to be started (after events were
-- returned). A transfer in flight needs none (its socket and its timers are in the same epoll
-- set); after a fatal error the queue stays quiet until someone calls `step` again.
local function arm_alarm(q, s, failed)
  if q:_closed() or q:_busy() then return end
  s.failed = failed or nil
  if failed then return end
  local wake = s.wake_at and s.wake_at - now() or 0
  q:_alarm(wake > 0 and wake or 0)
end

--- One bounded, non-blocking pass for event loops: starts or finishes the long-poll (or a
-- register), applies the recovery policy with timers instead of sleeps, and returns the new
-- events. `q:step(0)` never blocks, whatever the queue is doing (registering, long-polling,
-- backing off, just finished); `q:step(t)` waits at most `t` seconds. The events returned are
-- acknowledged by the next poll, which starts on the next call. Recovery options come from
-- `client:queue{...}`.
--
-- The queue's `pollfd` is readable exactly when a call has work to do: socket or timer activity
-- of the request in flight, the end of a retry's backoff, or a next request to start. So a loop
-- that watches only the fd never misses a wake-up; `q:timeout()` says the same in seconds for
-- loops that prefer a timeout. After a fatal error the fd stays quiet and `timeout()` is nil
-- until `step` is called again (which retries).
-- @tparam[opt=0] number timeout seconds it may wait for activity
-- @treturn table new events (possibly empty), or `nil, msg, err` on a fatal error (401, other 4xx)
-- @usage while running do
--   for _, ev in ipairs(assert(q:step(0))) do handle(ev) end
--   draw_frame()
-- end
function Queue:step(timeout)
  local st = state_of(self)
  if timeout == nil then timeout = 0 end
  if type(timeout) ~= "number" or timeout < 0 or timeout ~= timeout then
    error("zulip: step timeout must be a number >= 0", 2)
  end
  local s = step_state(st)
  commit_pending(st)
  self:_alarm(nil)  -- this call is the wake-up; arm_alarm sets the next one
  local events, msg, err = step_pass(self, st, s, timeout)
  arm_alarm(self, s, events == nil)
  return events, msg, err
end

--- Seconds until the queue needs `step` to be called again, or nil when only its `pollfd`
-- becoming readable matters (a request in flight with no timer due, or a queue stopped by a
-- fatal error). 0 for a queue that has not started yet. For cqueues and other pollers.
-- @treturn number|nil
-- @usage local t = q:timeout()
function Queue:timeout()
  local st = state_of(self)
  if self:_busy() then return self:_timeout() end
  local s = st._step
  if s and s.failed then return nil end
  if s and s.wake_at then
    local t = s.wake_at - now()
    return t > 0 and t or 0
  end
  return 0
end

--- The poll events wanted on `pollfd`: always `"r"` (the cqueues protocol).
-- @treturn string `"r"`
-- @usage assert(q:events() == "r")
function Queue:events()
  state_of(self)
  return "r"
end

return M
