--- Event queues: `register`, `get_events`, the iterator `each`, and the non-blocking `step`
-- with `pollfd`/`events`/`timeout` for foreign event loops. A queue is a `zulip.Queue` userdata
-- made by `client:queue{...}`. Read-only fields: `q.id` (the server's queue id),
-- `q.last_event_id`, `q.closed`, `q.last_error` (the error that made the iterator raise), and
-- with `keep_state = true`, `q.state` (the register reply, kept current: see `zulip.state`).
--
-- All of it runs on one state machine per queue (register, poll, decide, hand out, acknowledge)
-- on its client's engine (`zulip.engine`): `each` and `step` differ only in how they wait (the
-- iterator blocks in the engine, `step` returns), and `register`/`get_events` are the same
-- requests without the recovery policy.
-- @module zulip.queue
local core = require("zulip.core")
local encode = require("zulip.encode")
local errors = require("zulip.errors")
local outcome = require("zulip.outcome")
local policy = require("zulip.policy")
local kept = require("zulip.state")

local Queue = core.Queue
local M = {}
-- q:_state() without the method lookup (a C __index, since a queue's fields are read through it)
local qstate = Queue._state

local format, now, floor = string.format, core.now, math.floor
local NOTHING = {}

local function is_int(v)
  return type(v) == "number" and v == floor(v) and v > -2^53 and v < 2^53
end

-- register parameters and how each must look
local REGISTER = {
  event_types = "strings", fetch_event_types = "strings", narrow = "narrow",
  all_public_streams = "boolean", apply_markdown = "boolean", client_gravatar = "boolean",
  slim_presence = "boolean", include_subscribers = "subscribers", client_capabilities = "table",
  queue_lifespan_secs = "integer", presence_history_limit_days = "integer",
  idle_queue_timeout = "idle_timeout",  -- feature level 481
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
  elseif want == "idle_timeout" then
    ok = (is_int(v) and v >= 1) or v == "mobile"
  elseif want == "subscribers" then  -- "partial": feature level 412
    ok = type(v) == "boolean" or v == "partial"
  else
    ok = type(v) == want
  end
  if not ok then
    local what = ({ strings = "a list of strings", narrow = "a list of {operator, operand} string pairs",
                    integer = "an integer", idle_timeout = 'an integer >= 1 or "mobile"',
                    subscribers = 'a boolean or "partial"' })[want] or want
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

local function make_policy(o, level)
  local ok, p = pcall(policy.new, o.backoff, o.random)
  if not ok then error(p, level + 1) end
  return p
end

-- The owner of a queue's transfer: the engine hands it the finished transfer.
local QueueOp = {}
QueueOp.__index = QueueOp
local finished  -- the queue's part, below

--- The engine's call when the queue's transfer has ended.
-- @local
function QueueOp:finished(eng)
  finished(self.q, self.st, eng)
end

local gc_queue

--- Make a queue (called by `client:queue`).
-- @local
function M.new(client, eng, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("zulip: client:queue expects a table of options", 3) end
  local params = {}
  for k, v in pairs(opts) do
    if REGISTER[k] then
      check_param(k, v, REGISTER[k], 4)
      params[k] = type(v) == "string" and encode.json(v) or v  -- the server reads each one as JSON
    elseif not RECOVERY[k] and k ~= "id" and k ~= "last_event_id" and k ~= "keep_state" then
      error(("zulip: unknown queue option '%s'"):format(tostring(k)), 3)
    end
  end
  check_recovery(opts, 4)
  if opts.id ~= nil and type(opts.id) ~= "string" then error("zulip: queue option 'id' must be a string", 3) end
  if opts.last_event_id ~= nil and not is_int(opts.last_event_id) then
    error("zulip: queue option 'last_event_id' must be an integer", 3)
  end
  if opts.last_event_id ~= nil and opts.id == nil then
    error("zulip: queue option 'last_event_id' needs 'id' (the saved queue to resume)", 3)
  end
  if opts.keep_state ~= nil and type(opts.keep_state) ~= "boolean" then
    error("zulip: queue option 'keep_state' must be a boolean", 3)
  end
  if opts.keep_state and opts.id ~= nil then
    error("zulip: queue option 'keep_state' needs the queue's register reply, so it cannot resume a saved 'id'", 3)
  end
  local recovery = {}
  for k in pairs(RECOVERY) do recovery[k] = opts[k] end
  if recovery.backoff == nil then recovery.backoff = client._backoff end
  local pol = make_policy(recovery, 3)
  local q = core.queue()
  local st = qstate(q)
  st.id = opts.id
  st.last_event_id = opts.id and (opts.last_event_id or -1) or nil
  st.closed = false
  st._eng = eng
  st._register_body = encode.form(params)
  if opts.keep_state then
    st._keep = { include_subscribers = opts.include_subscribers == true, email = client.email }
  end
  st._timeout = client._timeout
  st._longpoll = 90
  st._grace = client.longpoll_grace  -- a silent long-poll gets this long past the server's timeout
  st._recovery, st._o, st._pol = recovery, recovery, pol
  st._out, st._pos = NOTHING, 1     -- events to hand out, and the next one
  st._x = eng.core:transfer(setmetatable({ q = q, st = st }, QueueOp))
  st._gc = gc_queue
  eng:add_queue(q)
  eng.kick = true  -- a new queue has work (its register): the client's pollfd says so
  eng:arm()
  return q
end

local function state_of(q, level)
  local st = qstate(q)
  if st.closed then error("zulip: queue is closed", level or 3) end
  return st
end

-- The iterator's last event counts as handled once anything else asks the queue for more.
local function commit_pending(st)
  local id = st._pending_ack
  if id ~= nil then
    if id > st.last_event_id then st.last_event_id = id end
    st._pending_ack = nil
  end
end

local function retry_info(d)
  return { reason = d.reason, attempt = d.attempt, delay = d.delay, http_status = d.http_status, error = d.err }
end

local WHAT = { register = "registering the event queue (POST %s/api/v1/register)",
               poll = "polling for events (GET %s/api/v1/events)" }

-- A failed request of a queue the policy drives: raise (kept for the consumer), re-register, or
-- retry after the backoff. The log line and on_retry run after the pump. A retry's line says
-- what failed, why and when the next attempt is; its fields carry `retry = true` and the
-- attempt, which is how the client's default log (stderr) picks the first and every tenth.
local function failure(q, st, eng, msg, err, kind)
  local d = st._pol:decide(err)
  if d.action == "raise" then
    st._fatal, st.last_error = { msg = msg, err = err }, err
    eng.news[q] = true
    eng.kick = true
    return
  end
  local info = retry_info(d)
  if d.action == "reregister" then
    eng:say("warn", "event queue expired; registering a new one", info)
  else
    local fields = retry_info(d)
    fields.retry = true
    eng:say("warn", ("%s failed: %s: %s%s; next attempt in %.2f s (attempt %d)"):format(
      (WHAT[kind] or "a request to %s"):format(eng.client.site), err.code, err.msg,
      err.http_status and (" (HTTP " .. err.http_status .. ")") or "", d.delay, d.attempt), fields)
  end
  if st._o.on_retry then eng:later(st._o.on_retry, info) end
  if d.action == "reregister" then st._stale = true else st._dont_block = true end
  st._wake, st._delay = now() + d.delay, d.delay
  eng.timers[q] = st._wake
end

-- What a request made by hand (register, get_events) ended with, for manual() to return: kept in
-- fields of the state, not a table made per request.
local function reply(st, r, msg, err)
  st._replied, st._r, st._rmsg, st._rerr = true, r, msg, err
end

-- A request that could not even start (out of memory, a closed client): like a failed one.
local function start(q, st, kind, method, path, body, timeout)
  local ok, msg = st._x:start(method, path, body, timeout)
  if ok then
    st._busy = kind
    return
  end
  local _, m, err = errors.fail(errors.new("NETWORK", "cannot start the request: " .. tostring(msg)))
  if st._manual then reply(st, nil, m, err) else failure(q, st, st._eng, m, err, kind) end
end

local function start_register(q, st)
  start(q, st, "register", "POST", "/api/v1/register", st._register_body, st._timeout)
end

local function start_poll(q, st, dont_block)
  if st._path_id ~= st.id then  -- the escaped id, made once per queue id
    st._path_id, st._path = st.id, "/api/v1/events?queue_id=" .. encode.urlescape(st.id) .. "&last_event_id="
  end
  local path = st._path .. format("%d", st.last_event_id)
  if dont_block then path = path .. "&dont_block=true" end
  st._op_id = st.id
  start(q, st, "poll", "GET", path, nil, dont_block and st._timeout or st._longpoll + st._grace)
end

local function finish_register(st)
  local state, msg, err = outcome.of(st._x)
  if not state then return nil, msg, err end
  if type(state.queue_id) ~= "string" or not is_int(state.last_event_id) then
    return errors.fail(errors.new("PROTOCOL", "register reply lacks queue_id or last_event_id"))
  end
  st.id, st.last_event_id, st._stale = state.queue_id, state.last_event_id, false
  if st._keep then  -- q.state: this reply, from now on kept current by the events handed out
    st._kept = kept.new(state, st._keep)
    st.state, st._applied = state, state.last_event_id
  end
  local lp = state.event_queue_longpoll_timeout_seconds
  st._longpoll = (type(lp) == "number" and lp > 0 and lp < 86400) and lp or 90
  return state
end

-- keep_state: an event changes q.state before anyone sees it, once (an event that comes again
-- after a loop body raised is not applied twice). Callers test st._kept first, so that without
-- keep_state the loops over a burst's events make no call for it.
local function apply_kept(st, ev)
  local k = st._kept
  if k and ev.id > st._applied then
    st._applied = ev.id
    k:apply(ev)
  end
end

-- The new events of a finished poll, oldest first: replays (ids already acknowledged, or
-- returned twice by overlapping polls) are dropped, and a late reply for a queue we have
-- since replaced is ignored, because its events are already in the new queue's initial state.
local function finish_poll(st)
  local body, msg, err = outcome.of(st._x)
  if not body then return nil, msg, err end
  if st._op_id ~= st.id or (body.queue_id ~= nil and body.queue_id ~= st.id) then return {} end
  local events = body.events
  if type(events) ~= "table" then
    return errors.fail(errors.new("PROTOCOL", "reply has no events list", { http_status = 200 }))
  end
  -- the list itself when nothing is dropped (a burst's 1,000 events are not copied), else a copy
  -- of what is kept
  local out, n, last = events, 0, st.last_event_id
  for i = 1, #events do
    local ev = events[i]
    local id = type(ev) == "table" and ev.id
    if not is_int(id) then
      return errors.fail(errors.new("PROTOCOL", "event without an integer id", { http_status = 200 }))
    end
    if id > last then
      n = n + 1
      if out ~= events then out[n] = ev end
      last = id
    elseif out == events then  -- the first one dropped: keep events[1 .. n] in a list of their own
      out = {}
      for j = 1, n do out[j] = events[j] end
    end
  end
  return out
end

-- What the queue makes of its transfer's end (QueueOp:finished).
function finished(q, st, eng)
  local kind = st._busy
  st._busy = nil
  if eng.debug then eng:flush_trace(st._x) end
  if st.closed or kind == nil then return end
  if st._manual then
    local r, m, e
    if kind == "register" then r, m, e = finish_register(st) else r, m, e = finish_poll(st) end
    reply(st, r, m, e)
    return
  end
  local result, msg, err
  if kind == "register" then
    result, msg, err = finish_register(st)
    if result then
      if st._o.on_reset then eng:later(st._o.on_reset, q, result) end
      eng.todo[q] = true
      return
    end
  else
    result, msg, err = finish_poll(st)
    if result then
      st._pol:success()
      st._dont_block = false
      if #result > 0 then
        st._out, st._pos = result, 1
        eng.news[q] = true
        eng.kick = true
      else
        eng.todo[q] = true
      end
      return
    end
  end
  failure(q, st, eng, msg, err, kind)
end

--- The engine's call when the queue's backoff has ended.
-- @local
function Queue:_on_timer(eng)
  eng.todo[self] = true
end

--- Start the queue's next request if one is due (the engine calls it for queues in its todo).
-- @local
function Queue:_advance()
  local st = qstate(self)
  if st.closed or st._manual or not st._auto or st._busy or st._failed or st._fatal or st._out[st._pos] then
    return
  end
  local wake = st._wake
  if wake then
    if now() < wake then
      st._eng.timers[self] = wake
      return
    end
    st._wake = nil
  end
  if st.id == nil or st._stale then start_register(self, st) else start_poll(self, st, st._dont_block) end
end

-- register and get_events: the queue's requests without the policy. They cancel whatever the
-- policy had in flight, and wait for their own request.
local function manual(q, st, starter, dont_block)
  local eng = st._eng
  st._manual, st._auto = true, false
  eng.unsettled[q] = true
  if st._busy then st._x:cancel() end
  st._busy, st._wake = nil, nil
  st._replied, st._r, st._rmsg, st._rerr = false, nil, nil, nil
  eng.timers[q] = nil
  starter(q, st, dont_block)
  while st._busy and not st.closed do eng:pump(nil) end
  if not st._replied then return nil, "zulip: queue is closed" end
  local r, msg, err = st._r, st._rmsg, st._rerr
  st._replied, st._r, st._rmsg, st._rerr = false, nil, nil, nil
  return r, msg, err
end

--- Register the queue (`POST /api/v1/register`).
-- Sets `q.id` and `q.last_event_id` from the reply.
-- @treturn table the initial state (the whole register reply), or `nil, msg, err`
-- @usage local state = assert(q:register()); print(state.queue_id, state.zulip_version)
function Queue:register()
  return manual(self, state_of(self), start_register)
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
  local events, msg, err = manual(self, st, start_poll, dont_block)
  if events and #events > 0 then
    if st._kept then for i = 1, #events do apply_kept(st, events[i]) end end
    st.last_event_id = events[#events].id
  end
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
    check_recovery(opts, level + 1)
  end
  return o
end

-- Hand the policy to the consumer: each{...} brings its own options, step the queue's.
local function drive_with(st, o, pol)
  st._o, st._pol = o, pol
  st._manual, st._auto = false, true
end

--- Iterate over events for ever, recovering from faults (see `zulip.policy`).
-- Registers the queue first if needed. Heartbeats are acknowledged and hidden unless
-- `heartbeats = true`. An event is acknowledged only when the loop asks for the next one, so an
-- event left by `break` counts as handled. On Lua 5.4 an event whose loop body raised is not
-- acknowledged (the loop's to-be-closed value sees the error) and comes again from the next poll;
-- 5.1, 5.3 and LuaJIT cannot tell an error from a `break`, so there it counts as handled when the
-- queue is next polled. The loop ends when the queue is closed (also from inside the loop body or a
-- callback); 401 and other fatal errors raise (the error table is kept in `q.last_error`). While it
-- waits, the client's other operations (requests with callbacks, other queues) go on too.
-- @tparam[opt] table opts `heartbeats`, `on_reset(q, state)`, `on_retry(info)`, `backoff`
--   (`{base=, factor=, cap=, max_retry_after=}`), `sleep(seconds)` (for the backoff, instead of
--   waiting in the engine), `random()`
-- @treturn function the iterator
-- @usage for event in q:each{ on_reset = function(q, state) rebuild(state) end } do
--   if event.type == "message" then print(event.message.content) end
-- end
function Queue:each(opts)
  local st = state_of(self)
  local o = merged_options(st, opts, 3)
  local pol = (opts ~= nil and (opts.backoff ~= nil or opts.random ~= nil)) and make_policy(o, 2) or st._pol
  local eng = st._eng
  local sleep = o.sleep
  drive_with(st, o, pol)
  eng.unsettled[self] = true
  commit_pending(st)

  -- On 5.4 the generic for closes this value when the loop ends: a `break` (no error) means the
  -- body for the last event finished, so it is acknowledged; an error leaves it to be redelivered,
  -- with the events after it (they come again from the server).
  local closer = setmetatable({}, { __close = function(_, e)
    if e == nil then commit_pending(st) else st._pending_ack, st._out, st._pos = nil, NOTHING, 1 end
  end })

  return function()
    if st.closed then return nil end
    commit_pending(st)  -- the loop body for the previous event has returned
    drive_with(st, o, pol)
    eng.unsettled[self] = true  -- its options and its acknowledgement are each()'s now
    while true do
      eng:run_ready()  -- an on_reset left over from a pump that raised comes before the events
      local out = st._out
      local ev = out[st._pos]
      while ev ~= nil do
        st._pos = st._pos + 1
        if ev.id > st.last_event_id then
          if ev.type ~= "heartbeat" or o.heartbeats then
            st._pending_ack = ev.id
            if st._kept then apply_kept(st, ev) end
            return ev
          end
          st.last_event_id = ev.id
        end
        ev = out[st._pos]
      end
      st._out, st._pos = NOTHING, 1
      if st._fatal then
        local f = st._fatal
        st._fatal = nil
        error(f.msg, 0)
      end
      if st.closed then return nil end
      if not st._busy then
        if sleep and st._wake and st._wake > now() then  -- the caller's own sleep, for the backoff
          sleep(st._delay)
          st._wake = nil
          eng.timers[self] = nil
        end
        eng.todo[self] = true
      end
      eng:pump(nil)
      if st.closed then return nil end
    end
  end, nil, nil, closer
end

-- The visible events of the outbox, all of it acknowledged by the next poll.
local function take(st)
  local out, n, list = {}, 0, st._out
  for i = st._pos, #list do
    local ev = list[i]
    if ev.id > st.last_event_id then
      st.last_event_id = ev.id
      if st._kept then apply_kept(st, ev) end
      if ev.type ~= "heartbeat" or st._o.heartbeats then
        n = n + 1
        out[n] = ev
      end
    end
  end
  st._out, st._pos = NOTHING, 1
  return out
end

local function check_timeout(timeout, level)
  if timeout == nil then return 0 end
  if type(timeout) ~= "number" or timeout < 0 or timeout ~= timeout then
    error("zulip: step timeout must be a number >= 0", level)
  end
  return timeout
end

--- Take the queue's news after a pump: its events, or its fatal error.
-- @local
function Queue:_collect()
  local st = qstate(self)
  if st._fatal then
    local f = st._fatal
    st._fatal, st._failed = nil, true
    st._eng.unsettled[self] = true  -- the next client:step retries
    return nil, f.msg, f.err
  end
  if st.closed or not st._out[st._pos] then return NOTHING end
  local out = take(st)
  st._eng.todo[self] = true
  return out
end

--- Whether `_collect` has something.
-- @local
function Queue:_has_news()
  local st = qstate(self)
  return st._fatal ~= nil or st._out[st._pos] ~= nil
end

--- Let the policy drive the queue for `step` (also from `client:step`, for the queues in its
-- engine's `unsettled`: this does something only after one of the calls that put a queue there).
-- @local
function Queue:_stepping()
  local st = qstate(self)
  commit_pending(st)
  if st._manual or st._o ~= st._recovery or not st._auto then drive_with(st, st._recovery, st._pol) end
  if st._failed then st._failed = nil end  -- stepping again after a fatal error retries
  if not st._busy then st._eng.todo[self] = true end
end

--- One bounded, non-blocking pass for event loops: drives all of the client's operations
-- (this queue's long-poll or register, its other queues, requests with callbacks, whose callbacks
-- run from here), applies the recovery policy with timers instead of sleeps, and returns this
-- queue's new events. `q:step(0)` never blocks, whatever the queue is doing (registering,
-- long-polling, backing off, just finished); `q:step(t)` waits at most `t` seconds. The events
-- returned are acknowledged by the next poll, which starts on the next call. Recovery options
-- come from `client:queue{...}`.
--
-- The queue's `pollfd` (its client's) is readable when a call has work to do: socket or timer
-- activity of a request in flight, the end of a retry's backoff, or a next request to start. So a
-- loop that watches only the fd never misses a wake-up; `q:timeout()` says the same in seconds for
-- loops that prefer a timeout. After a fatal error the queue stays quiet (`timeout()` is nil) until
-- `step` is called again (which retries).
-- @tparam[opt=0] number timeout seconds it may wait for activity
-- @treturn table new events (possibly empty), or `nil, msg, err` on a fatal error (401, other 4xx)
-- @usage while running do
--   for _, ev in ipairs(assert(q:step(0))) do handle(ev) end
--   draw_frame()
-- end
function Queue:step(timeout)
  local st = state_of(self)
  timeout = check_timeout(timeout, 3)
  local eng = st._eng
  eng.driven = true
  self:_stepping()
  local deadline = now() + timeout
  local first = true
  while not st.closed and not self:_has_news() do
    local left = deadline - now()
    if not first and left <= 0 then break end
    first = false
    eng:pump(left > 0 and left or 0)
  end
  local events, msg, err = self:_collect()
  eng:arm()
  return events, msg, err
end

--- The file descriptor a loop watches: readable when `step` has work. It is the client's
-- (`client:pollfd()`), shared by all of its queues and requests.
-- @treturn integer
-- @usage local fd = q:pollfd()
function Queue:pollfd()
  local eng = state_of(self)._eng
  eng.driven = true
  return eng.core:pollfd()
end

--- Seconds until the queue needs `step` to be called again, or nil when only its `pollfd`
-- becoming readable matters (a request in flight with no timer due, or a queue stopped by a
-- fatal error). 0 for a queue that has not started yet or has events to hand out. For cqueues and
-- other pollers. On the poll core at most `zulip.POLL_SLICE` while a request is in flight (see
-- `client:pollfd`).
-- @treturn number|nil
-- @usage local t = q:timeout()
function Queue:timeout()
  state_of(self)  -- a closed queue raises here, at the caller's level
  return self:_loop_timeout(false)
end

--- `timeout()`, without the poll core's `POLL_SLICE` cap when `exact` (see `client:pollfds`).
-- `eng_timeout`, when given, is `eng:timeout(exact)` already computed (`false` for nil): a client
-- asks it once for all of its queues.
-- @local
function Queue:_loop_timeout(exact, eng_timeout)
  local st = state_of(self)
  -- not driven yet (never used, or used by hand): a step takes it over, so step now
  if st._out[st._pos] or st._fatal or not st._auto then return 0 end
  if st._failed then return nil end
  local eng = st._eng
  if st._busy then
    if eng_timeout == nil then return eng:timeout(exact) end
    return eng_timeout or nil
  end
  if st._wake then
    local t = st._wake - now()
    return t > 0 and t or 0
  end
  return 0
end

--- Every fd a loop must watch for this queue (its client's, see `client:pollfds`): a list of
-- `{ fd = n, events = "r" | "w" | "rw" }`.
-- @treturn table
-- @usage for _, w in ipairs(q:pollfds()) do print(w.fd, w.events) end
function Queue:pollfds()
  return state_of(self)._eng:pollfds()
end

--- The poll events wanted on `pollfd`: always `"r"` (the cqueues protocol).
-- @treturn string `"r"`
-- @usage assert(q:events() == "r")
function Queue:events()
  state_of(self)
  return "r"
end

--- Whether the queue is closed.
-- @local
function Queue:_closed()
  return qstate(self).closed
end

local function kept_of(q)
  local st = qstate(q)
  if not st._keep then error("zulip: the queue keeps no state (make it with keep_state = true)", 3) end
  return st._kept
end

--- A user of the kept state (`keep_state = true`), by id or email; nil before the register.
-- @tparam number|string key user id or email (any case)
-- @treturn table|nil the user's dict, active or not
-- @usage local who = q:user(event.message.sender_id); print(who and who.full_name)
function Queue:user(key)
  local k = kept_of(self)
  return k and k:user(key)
end

--- A channel of the kept state, by id or name (any case); nil before the register.
-- @tparam number|string key channel id or name
-- @treturn table|nil the channel's dict
-- @usage print(q:channel("Denmark").stream_id)
function Queue:channel(key)
  local k = kept_of(self)
  return k and k:channel(key)
end

--- Your subscription to a channel in the kept state, by id or name; nil when not subscribed.
-- @tparam number|string key channel id or name
-- @treturn table|nil the entry of `q.state.subscriptions`
-- @usage local sub = q:subscription("Denmark"); print(sub and sub.color)
function Queue:subscription(key)
  local k = kept_of(self)
  return k and k:subscription(key)
end

--- Unread messages in the kept state: all, in a channel, or in a topic (0 before the register).
-- @tparam[opt] number|string channel channel id or name
-- @tparam[opt] string topic a topic of that channel
-- @treturn number the count
-- @usage print(q:unread_count(), q:unread_count("Denmark"), q:unread_count("Denmark", "lunch"))
function Queue:unread_count(channel, topic)
  local k = kept_of(self)
  return k and k:unread_count(channel, topic) or 0
end

--- Unread direct messages in the kept state, with one user or a group (0 before the register).
-- @tparam number|table who a user id, or the list of the other users' ids
-- @treturn number the count
-- @usage print(q:dm_unread_count(11))
function Queue:dm_unread_count(who)
  local k = kept_of(self)
  return k and k:dm_unread_count(who) or 0
end

--- Close: the queue stops at once. A registered queue's `DELETE /api/v1/events` goes out in the
-- background when a loop drives the client (it was stepped or watched), so close never blocks
-- an editor or a game; in a plain blocking script it is waited for, at most the client's
-- `timeout`. Idempotent; also `__close` (Lua 5.4's `local q <close>`). An open queue that is
-- garbage-collected is closed the same way, with its DELETE in the background: the collector
-- never waits.
-- @treturn boolean true
-- @usage q:close()
function Queue:close()
  return self:_shut(true)
end

--- Close, waiting for the DELETE only when `may_wait` and no loop drives the client.
-- @local
function Queue:_shut(may_wait)
  local st = qstate(self)
  if st.closed then return true end
  st.closed = true
  local eng = st._eng
  if st._x then
    st._x:cancel()
    st._x = nil
  end
  st._busy, st._wake = nil, nil
  st._out, st._pos = NOTHING, 1
  eng:remove_queue(self)
  eng.todo[self], eng.timers[self] = nil, nil
  if st.id then
    local sent = eng:background("DELETE", "/api/v1/events?queue_id=" .. encode.urlescape(st.id), st._timeout)
    if sent and may_wait and not eng.driven then
      eng:wait_until(function() return not eng:busy() end, st._timeout)
    end
  end
  return true
end

function gc_queue(q)
  q:_shut(false)
end

return M
