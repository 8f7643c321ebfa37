--- Drive a client or a queue from a libuv loop: Neovim's `vim.uv` (0.10+) or `vim.loop` (0.7 to
-- 0.9), or `require("luv")` anywhere else.
--
-- The watcher polls the client's `pollfd` with a `uv_poll` handle and steps whenever it is
-- readable; every watcher of one client shares that one handle (libuv allows only one per fd).
-- That fd alone is enough: the sockets and timers of every request, the end of a retry's backoff,
-- "start the next request" and callbacks to run all make it readable, so no uv timer follows
-- `timeout()` and an idle client costs the loop nothing. A one-shot timer only makes the first
-- step. On the poll core (`zulip.POLLER == "poll"`), where that fd does not carry the sockets, a
-- uv timer also follows `client:timeout()` (at most `zulip.POLL_SLICE`, 50 ms, apart while
-- requests are in flight), so replies are seen that late at worst. Requests with callbacks
-- (`client:send_message(msg, cb)`) and background DELETEs (`q:close()`) are driven by the same
-- steps, so nothing blocks the loop.
--
--     local zuv = require("zulip.uv")
--     local h = zuv.watch(q, function(ev) print(ev.type) end,
--                            function(msg, err) print("stopped: " .. msg) end)
--     -- later: h:stop(); q:close()
--
-- With standalone luv, let the loop turn once more after `h:stop()` (`uv.run("nowait")`) before
-- the program exits: luv 1.44 crashes at exit on handles that are still closing.
--
-- Errors reach `on_error(msg, err)`. `err.code` is the queue's (`UNAUTHORIZED`, `BAD_REQUEST`,
-- ...) for a fatal failure, after which the watcher has stopped; `CALLBACK` when a Lua callback
-- raised: from `on_event`, the watcher goes on with the next event; from inside `q:step` (an
-- `on_reset` or `on_retry` option), it stops; `LOOP` when libuv reported an error on the fd
-- (it stops). Recoverable failures (network, 5xx, an expired queue) never reach `on_error`:
-- `q:step` retries them after a backoff.
-- @module zulip.uv
local core = require("zulip.core")
local errors = require("zulip.errors")

local M = {}

local function vim_uv()
  local vim = rawget(_G, "vim")
  if type(vim) == "table" then return vim.uv or vim.loop end
end

local function default_uv()
  local uv = vim_uv()
  if uv then return uv end
  local ok, luv = pcall(require, "luv")
  if ok then return luv end
  error("zulip.uv: no libuv binding found (run inside Neovim, or install luv)", 3)
end

local function stderr_error(msg)
  io.stderr:write("lua-zulip: ", tostring(msg), "\n")
end

local Watch = {}
Watch.__index = Watch
Watch.__name = "zulip.uv.Watch"

-- One uv_poll per client fd (libuv allows only one active poll handle per fd): the shared poller
-- steps every watcher of that client when the fd is readable.
local pollers = setmetatable({}, { __mode = "k" })  -- engine -> { poll =, watchers = {} }

-- With the poll core (no fd carries the sockets: see `client:pollfd`) a uv timer also follows
-- `client:timeout()`, which is then at most `zulip.POLL_SLICE` while requests are in flight. Not
-- one uv_poll per socket: curl closes sockets and the kernel reuses their numbers between two
-- steps, and libuv keeps a poll handle's registration for an fd number that was closed under it.
local function follow(p)
  local timer = p.timer
  if timer == nil or timer:is_closing() then return end
  timer:stop()
  if p.poll:is_closing() or p.eng.is_closed then return end
  local t = p.eng.client:timeout()
  -- at least 1 ms: libuv before 1.48 runs a 0 ms timer started from a timer callback again in
  -- the same pass, without polling, so a 0 here would starve the host's loop
  if t ~= nil then timer:start(math.max(1, math.ceil(t * 1000)), 0, p.on_ready) end
end

local function close_poller(p)
  p.poll:stop()
  p.poll:close()
  if p.timer and not p.timer:is_closing() then
    p.timer:stop()
    p.timer:close()
  end
end

local function poller_of(uv, eng, fd)
  local p = pollers[eng]
  if p and p.uv == uv and not p.poll:is_closing() then return p end
  p = { uv = uv, eng = eng, watchers = {}, poll = uv.new_poll(fd) }
  pollers[eng] = p
  p.on_ready = function(perr)
    if p.poll:is_closing() then return end
    if #p.watchers == 0 then  -- no watcher left: finish what is pending (a DELETE), then stop
      if perr or eng.is_closed or not pcall(eng.pump, eng, 0) or not eng:busy() then
        close_poller(p)
      else
        follow(p)
      end
      return
    end
    local list = {}
    for i, w in ipairs(p.watchers) do list[i] = w end
    for _, w in ipairs(list) do
      if perr then
        w:_fail_loop(perr)
      else
        w.wakeups = w.wakeups + 1
        w:_pump()
      end
    end
    follow(p)
  end
  if not core.single_fd then p.timer = uv.new_timer() end
  p.poll:start("r", p.on_ready)
  return p
end

local function detach(h)
  local p = h._poller
  if p == nil then return end
  h._poller = nil
  for i, w in ipairs(p.watchers) do
    if w == h then table.remove(p.watchers, i) break end
  end
  -- the last watcher gone: the handle stays while the client has requests pending (a closed
  -- queue's DELETE), so they still go out; the poll callback closes it when they are done
  if #p.watchers == 0 and not p.poll:is_closing() and not p.eng:busy() then
    close_poller(p)
  end
end

--- Stop watching: closes the watcher's uv handles; the client and the queue stay open (close them
-- yourself, before or after this). Events not yet delivered are dropped. Requests the client still
-- has pending (a closed queue's DELETE) are driven to their end by the loop all the same, so
-- `q:close(); h:stop()` never blocks and still deletes the server's queue. Idempotent; safe from
-- inside the callbacks.
-- @treturn boolean true
-- @usage h:stop(); q:close()
function Watch:stop()
  if self.active then
    self.active = false
    detach(self)
    if not self._kick:is_closing() then
      self._kick:stop()
      self._kick:close()
    end
  end
  return true
end

--- Whether the watcher is still running.
-- @treturn boolean
-- @usage if not h:is_active() then restart() end
function Watch:is_active()
  return self.active
end

function Watch:_report(msg, err)
  local ok, e = pcall(self._on_error, msg, err)
  if not ok then stderr_error("on_error raised: " .. tostring(e) .. " (reporting: " .. tostring(msg) .. ")") end
end

function Watch:_later(fn)
  if self._schedule then self._schedule(fn) else fn() end
end

function Watch:_fatal(msg, err)
  self:stop()
  self:_later(function() self:_report(msg, err) end)
end

function Watch:_fail_loop(perr)
  local e = errors.new("LOOP", "polling the client's fd failed: " .. tostring(perr))
  self:_fatal(e.message, e)
end

function Watch:_deliver(ev, q)
  self:_later(function()
    if not self.active then return end
    local ok, e = pcall(self._on_event, ev, q)
    if not ok then
      local err = errors.new("CALLBACK", "on_event raised: " .. tostring(e))
      self:_report(err.message, err)
    end
  end)
end

local function closed(x)
  if getmetatable(x) == "zulip.Client" then return x:closed() end
  return x:_closed()
end

function Watch:_pump()
  if not self.active or self._pumping then return end  -- re-entered from a callback that ran the loop
  local x = self.target
  if closed(x) then return self:stop() end
  self._pumping = true
  self.steps = self.steps + 1
  local ok, a, b, c = pcall(x.step, x, 0)
  self._pumping = false
  if not ok then
    local e = errors.new("CALLBACK", "step raised: " .. tostring(a))
    return self:_fatal(e.message, e)
  end
  if self.is_client then
    for _, r in ipairs(a) do
      if r.events then
        for _, ev in ipairs(r.events) do self:_deliver(ev, r.queue) end
      else
        self:_later(function() self:_report(r.message, r.error) end)
      end
    end
  elseif a == nil then
    return self:_fatal(b, c)
  else
    for _, ev in ipairs(a) do self:_deliver(ev, x) end
  end
  if self.active and closed(x) then self:stop() end
end

--- Drive a client (all of its queues and requests) or one queue from a libuv loop until
-- `handle:stop()` or, for a queue, a fatal error.
-- Each event is passed to `on_event(ev, q)`. All callbacks run under `pcall`: an error in
-- `on_event` is reported through `on_error` and the loop goes on. Inside Neovim the callbacks run
-- through `vim.schedule` (luv callbacks may not call most of the editor's API), in order;
-- elsewhere they run in the poll callback itself. Watching a client, a queue that fails fatally is
-- reported to `on_error` and stays quiet; the watcher goes on with the others.
-- A queue or client closed from inside a callback is noticed and the watcher stops.
-- @param x a client, or a `zulip.Queue` (registered or not: the first step registers it)
-- @tparam function on_event `on_event(ev, q)`
-- @tparam[opt] function on_error `on_error(msg, err)` (default: `vim.notify` in Neovim, else stderr)
-- @tparam[opt] table opts `uv` (the binding: default `vim.uv`, then `vim.loop`, then `luv`),
--   `schedule` (a function like `vim.schedule` that runs callbacks later; `false` for none;
--   default `vim.schedule` when the binding is Neovim's, else none)
-- @treturn table the watcher: `h:stop()`, `h:is_active()`, and counters `h.wakeups` (fd
--   readiness seen) and `h.steps` (calls of `step`)
-- @usage local zuv = require("zulip.uv")
-- local h = zuv.watch(client:queue{ event_types = { "message" } }, function(ev)
--   print(ev.message.sender_full_name .. ": " .. ev.message.content)
--   client:send_message({ type = "stream", to = "Denmark", topic = "t", content = "seen" },
--                       function(reply, msg) if not reply then print(msg) end end)
-- end, function(msg) print("zulip stopped: " .. msg) end)
function M.watch(x, on_event, on_error, opts)
  local is_client = type(x) == "table" and getmetatable(x) == "zulip.Client"
  if not is_client and (type(x) ~= "userdata" or type(x.pollfd) ~= "function" or type(x._state) ~= "function") then
    error("zulip.uv: watch expects a client or a zulip.Queue", 2)
  end
  if type(on_event) ~= "function" then error("zulip.uv: on_event must be a function", 2) end
  if on_error ~= nil and type(on_error) ~= "function" then error("zulip.uv: on_error must be a function", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("zulip.uv: opts must be a table", 2) end
  opts = opts or {}
  local uv = opts.uv or default_uv()
  local in_vim = vim_uv() ~= nil and uv == vim_uv()
  local schedule = opts.schedule
  if schedule == nil and in_vim then schedule = rawget(_G, "vim").schedule end
  if schedule ~= false and schedule ~= nil and type(schedule) ~= "function" then
    error("zulip.uv: opts.schedule must be a function or false", 2)
  end
  if on_error == nil then
    on_error = in_vim and function(msg) rawget(_G, "vim").notify(msg, 4) end or stderr_error
  end
  if closed(x) then error(is_client and "zulip.uv: client is closed" or "zulip.uv: queue is closed", 2) end
  local eng = is_client and x._engine or x:_state()._eng
  if schedule then eng.schedule = schedule end  -- request callbacks, on_reset, on_log: through it too
  local h = setmetatable({ target = x, queue = (not is_client) and x or nil, is_client = is_client,
                           active = true, wakeups = 0, steps = 0, _on_event = on_event,
                           _on_error = on_error, _schedule = schedule or nil }, Watch)
  h._poller = poller_of(uv, eng, x:pollfd())
  table.insert(h._poller.watchers, h)
  h._kick = uv.new_timer()
  h._kick:start(0, 0, function()
    h:_pump()
    if h._poller then follow(h._poller) end
  end)
  return h
end

return M
