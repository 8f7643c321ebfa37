--- The engine of a client: every operation of one client (its queues' registers and polls, REST
-- requests, DELETEs in the background) is a transfer on one C engine (a libcurl multi handle
-- behind one pollfd), and this module drives it: `pump` lets curl act, hands each finished
-- transfer to its operation, fires Lua-side timers (a retry's backoff), starts what is due, and
-- runs the callbacks. Blocking calls and `step` alike are loops of `pump`, so they cannot drift
-- apart. User code (callbacks, `on_reset`, `on_retry`, `on_log`) runs only at the end of a pump,
-- from the `ready` list, so an error there cannot lose a finished transfer: the callbacks after
-- it stay queued for the next pump.
-- @module zulip.engine
-- @local
local core = require("zulip.core")
local errors = require("zulip.errors")
local outcome = require("zulip.outcome")
local policy = require("zulip.policy")

local M = {}
local Engine = {}
Engine.__index = Engine

local now = core.now
local SINGLE_FD = core.single_fd  -- false on the poll core: the pollfd does not carry the sockets

--- On the poll core, the longest timeout a loop watching only the pollfd is given while sockets
-- are in use (seconds): how late it may see a reply. Policy, so here and not in C.
-- @local
M.POLL_SLICE = 0.05
local WEAK_KEYS = { __mode = "k" }
local REQUEST_ATTEMPTS = 4         -- a request is tried at most this often
local IDEMPOTENT = { GET = true, DELETE = true }
local DIRECTION = { ["*"] = "info", [">"] = "out", ["<"] = "in" }

--- Make the engine of a client.
-- @local
function M.new(session, client)
  return setmetatable({
    core = core.engine(session),
    is_closed = false,                      -- core:closed(), kept here (set by close): asked on every pump
    client = client,
    log = client._log,
    debug = client._debug,                  -- the debug option: transfers collect a trace
    queues = setmetatable({}, WEAK_KEYS),   -- open queues -> their number, for client:step's order
    nqueues = 0,
    todo = setmetatable({}, WEAK_KEYS),     -- queues that may have a request to start
    unsettled = setmetatable({}, WEAK_KEYS), -- queues client:step must hand to the policy again
                                            -- (new, used by hand or by each(), or failed)
    news = setmetatable({}, WEAK_KEYS),     -- queues that got events or a fatal error since
                                            -- client:step last looked (others may have taken them)
    timers = setmetatable({}, WEAK_KEYS),   -- queue or request operation -> when it is due
    pending = {},                           -- request operations in flight or waiting: held here
    ready = {}, nready = 0, first = 1,      -- callbacks to run, in order
    kick = false,                           -- something new for a loop: make the fd readable once
    driven = false,                         -- a loop drives this client (step, a watcher)
  }, Engine)
end

--- Queue a callback to run at the end of this pump (or the next one).
-- @local
function Engine:later(fn, a, b, c)
  local n = self.nready + 1
  self.ready[n] = { fn, a, b, c }
  self.nready = n
end

--- Run the queued callbacks; one that raises leaves the rest queued and raises on. With a
-- scheduler (`zulip.uv` inside Neovim sets `vim.schedule`: a libuv callback may not call most of
-- the editor's API), they are handed to it, in order, instead.
-- @local
function Engine:run_ready()
  local ready, schedule = self.ready, self.schedule
  while self.first <= self.nready do
    local i = self.first
    local item = ready[i]
    ready[i] = nil
    self.first = i + 1
    if schedule then
      schedule(function() item[1](item[2], item[3], item[4]) end)
    else
      item[1](item[2], item[3], item[4])
    end
  end
  self.first, self.nready = 1, 0
end

--- Log through the client's on_log, after the pump.
-- @local
function Engine:say(level, msg, fields)
  self:later(self.log, level, msg, fields)
end

--- Hand the debug trace of a finished transfer to on_log, one line at a time.
-- @local
function Engine:flush_trace(x)
  if not self.debug then return end  -- no trace is collected
  local trace = x:trace()
  if trace == nil then return end
  for line in trace:gmatch("[^\n]+") do
    self:say("debug", line, { source = "curl", direction = DIRECTION[line:sub(1, 1)] })
  end
end

--- The earliest Lua-side timer, or nil.
-- @local
function Engine:next_timer()
  local timers = self.timers
  if next(timers) == nil then return nil end  -- most pumps: one call, not pairs and its iterator
  local first
  for _, t in pairs(timers) do
    if first == nil or t < first then first = t end
  end
  return first
end

local function fire_timers(self)
  if next(self.timers) == nil then return end
  local t = now()
  for obj, due in pairs(self.timers) do
    if due <= t then
      self.timers[obj] = nil
      obj:_on_timer(self)
    end
  end
end

local function advance(self)
  local todo = self.todo
  local q = next(todo)
  while q ~= nil do
    todo[q] = nil
    q:_advance()
    q = next(todo)
  end
end

--- The alarm that makes the pollfd readable when the next pump is due for Lua's own reasons.
-- Called even when none is wanted: setting the alarm also re-arms the core's timer for curl's own
-- next deadline, which a transfer started since the last drive has moved (to now).
-- @local
function Engine:arm()
  if self.is_closed then return end
  if self.kick or self.nready >= self.first or next(self.todo) ~= nil then
    self.kick = false
    self.core:alarm(0)
    return
  end
  local t = self:next_timer()
  if t then
    local d = t - now()
    self.core:alarm(d > 0 and d or 0)
  else
    self.core:alarm(nil)
  end
end

--- One pass: start what is due, let curl act (waiting at most `wait` seconds; nil: until a
-- transfer ends), finish what ended, fire timers, start what they made due, run the callbacks.
-- Returns true when a signal cut the wait short.
-- @local
function Engine:pump(wait)
  if self.is_closed then
    self:run_ready()
    return false
  end
  fire_timers(self)
  advance(self)
  local t = self:next_timer()
  if t ~= nil then
    local left = t - now()
    if left < 0 then left = 0 end
    if wait == nil or left < wait then wait = left end
  end
  if self.nready >= self.first then wait = 0 end
  local owners, interrupted = self.core:drive(wait)
  for i = 1, #owners do
    owners[i]:finished(self)
  end
  fire_timers(self)
  advance(self)
  self:arm()
  self:run_ready()
  return interrupted
end

--- What a loop watches for this client, as `{ fd =, events = "r"|"w"|"rw" }` (client:pollfds and
-- q:pollfds); watching marks the client driven.
-- @local
function Engine:pollfds()
  self.driven = true
  local fds, evs = self.core:pollfds()
  local out = {}
  for i = 1, #fds do out[i] = { fd = fds[i], events = evs[i] } end
  return out
end

--- Seconds until the client needs a step, or nil when only its pollfd matters. On the poll
-- core (no fd carries the sockets) at most POLL_SLICE while sockets are in use, unless `exact`:
-- the caller watches every fd of `core:pollfds()` itself.
-- @local
function Engine:timeout(exact)
  if self.is_closed then return nil end
  if self.nready >= self.first or next(self.todo) ~= nil then return 0 end
  local t = self.core:timeout()
  local lt = self:next_timer()
  if lt then
    lt = lt - now()
    if lt < 0 then lt = 0 end
    if t == nil or lt < t then t = lt end
  end
  if not SINGLE_FD and not exact and (t == nil or t > M.POLL_SLICE) and #self.core:pollfds() > 1 then
    t = M.POLL_SLICE
  end
  return t
end

-- ---- requests ----------------------------------------------------------------------------

local Request = {}
Request.__index = Request

-- What to do about a failed request: the queues' policy, bounded, and never a blind repeat of a
-- request that may have reached the server and is not safe to repeat.
local function request_decision(op, err, res)
  local code, status = err.code, err.http_status
  local safe = IDEMPOTENT[op.method]
  local retry = false
  if code == "RATE_LIMIT_HIT" or status == 429 then
    retry = true
  elseif not res.sent and (code == "NETWORK" or code == "TIMEOUT") then
    retry = true  -- it never left: DNS, connect, a handshake cut short
  elseif code == "NETWORK" or code == "TIMEOUT" or code == "PROTOCOL" or (code == "HTTP" and (status or 0) >= 500) then
    if safe then retry = true else err.maybe_sent = true end
  end
  if not retry or op.attempt >= REQUEST_ATTEMPTS then return nil end
  local d = op.policy:decide(err)
  -- bounded in time too: no retry that would start after the request's own timeout has passed
  -- since its first try (a 429 asking for minutes fails now, with err.retry_after)
  if d.action ~= "retry" or now() + d.delay > op.started + op.timeout then return nil end
  return d.delay
end

function Request:finished(eng)
  eng:flush_trace(self.x)
  if self.cancelled then return end
  local reply, msg, err, res = outcome.of(self.x)
  if reply == nil then
    local delay = request_decision(self, err, res)
    if delay ~= nil then
      local status = err.http_status and (" (HTTP " .. err.http_status .. ")") or ""
      eng:say("warn", ("%s %s%s failed: %s: %s%s; next attempt in %.2f s (attempt %d)"):format(self.method,
                eng.client.site, self.path, err.code, err.msg, status, delay, self.attempt),
              { reason = err.code, attempt = self.attempt, delay = delay, http_status = err.http_status,
                error = err, retry = true })
      eng.timers[self] = now() + delay
      return
    end
  end
  eng.pending[self] = nil
  self.done, self.reply, self.msg, self.err = true, reply, msg, err
  if self.callback then eng:later(self.callback, reply, msg, err) end
end

function Request:_on_timer(eng)
  self:start(eng)
end

function Request:start(eng)
  self.attempt = self.attempt + 1
  local ok, msg = self.x:start(self.method, self.target, self.body, self.timeout)
  if not ok then
    local _, m, err = errors.fail(errors.new("PROTOCOL", msg))
    eng.pending[self] = nil
    self.done, self.msg, self.err = true, m, err
    if self.callback then eng:later(self.callback, nil, m, err) end
  end
end

local Handle = {}
Handle.__index = Handle
Handle.__name = "zulip.Request"

--- Cancel a request started with a callback: it ends at once and its callback is not called.
-- Idempotent; does nothing once the callback has run.
-- @usage local h = client:send_message(msg, function(reply) end); h:cancel()
function Handle:cancel()
  local op, eng = self._op, self._eng
  if not op.done and not op.cancelled then
    op.cancelled = true
    eng.pending[op], eng.timers[op] = nil, nil
    op.x:cancel()
  end
  return true
end

--- Whether the request has ended (its callback has been queued or run).
-- @treturn boolean
-- @usage if h:done() then print("sent") end
function Handle:done()
  return self._op.done == true
end

--- Start a request. With a callback, returns a handle at once; without, waits for the outcome.
-- @local
function Engine:request(method, target, body, timeout, callback)
  if self.is_closed then error("zulip: the client is closed", 3) end
  local op = setmetatable({ method = method, target = target, path = target:match("^[^?]*"),
                            body = body, timeout = timeout, callback = callback, attempt = 0,
                            policy = policy.new(self.client._backoff) }, Request)
  op.x = self.core:transfer(op)
  op.started = now()
  self.pending[op] = true
  op:start(self)
  if callback then
    self:arm()
    return setmetatable({ _op = op, _eng = self }, Handle)
  end
  while not op.done do self:pump(nil) end
  return op.reply, op.msg, op.err
end

-- ---- DELETEs in the background --------------------------------------------------------------

--- Start a request nobody waits for (a queue's DELETE). It makes no Lua object, so it is safe
-- from a finalizer; it never waits and never raises: a failure is dropped (the server collects a
-- queue anyway). Returns true when it went out.
-- @local
function Engine:background(method, target, timeout)
  if self.is_closed then return false end
  local ok, started = pcall(self.core.background, self.core, method, target, timeout)
  if not (ok and started) then return false end
  self:arm()
  return true
end

--- Whether requests are still pending: with callbacks, or in the background.
-- @local
function Engine:busy()
  return not self.is_closed and (next(self.pending) ~= nil or self.core:backgrounds() > 0)
end

--- Pump until `done()` is true or `seconds` have passed.
-- @local
function Engine:wait_until(done, seconds)
  local deadline = now() + seconds
  while not done() do
    local left = deadline - now()
    if left <= 0 or self.is_closed then return false end
    self:pump(left)
  end
  return true
end

--- Close: the queues first (their DELETEs go out together), then wait at most `seconds` for
-- what is pending, then close the connections.
-- @local
function Engine:close(seconds)
  if self.is_closed then return end
  local qs = {}
  for q in pairs(self.queues) do qs[#qs + 1] = q end
  for _, q in ipairs(qs) do q:_shut(false) end
  self:wait_until(function() return not self:busy() end, seconds)
  local pending = self.pending
  for op in pairs(pending) do
    if op.callback and not op.done and not op.cancelled then
      local _, msg, err = errors.fail(errors.new("NETWORK", "the client was closed before the request ended"))
      op.done = true
      self:later(op.callback, nil, msg, err)
    end
  end
  self.pending = {}
  self.timers = setmetatable({}, WEAK_KEYS)
  self.core:close()
  self.is_closed = true
  self:run_ready()
end

--- Add a queue (numbered in creation order, for client:step's results); the policy takes it
-- over at the next client:step.
-- @local
function Engine:add_queue(q)
  self.nqueues = self.nqueues + 1
  self.queues[q] = self.nqueues
  self.unsettled[q] = true
end

--- Forget a queue (closed).
-- @local
function Engine:remove_queue(q)
  self.queues[q] = nil
end

--- The open queues that have news (events to hand out, or a fatal error), in creation order:
-- from `news`, which every queue that gets some joins, so a client:step of a thousand queues
-- looks at the few that got something, not at all of them. Forgets the ones whose news another
-- caller took (their own step, an iterator).
-- @local
function Engine:news_list()
  local news, order, list = self.news, self.queues, {}
  for q in pairs(news) do
    if order[q] ~= nil and q:_has_news() then list[#list + 1] = q else news[q] = nil end
  end
  if list[2] ~= nil then table.sort(list, function(a, b) return order[a] < order[b] end) end
  return list
end

return M
