--- Drive a queue from a libuv loop: Neovim's `vim.uv` (0.10+) or `vim.loop` (0.7 to 0.9), or
-- `require("luv")` anywhere else.
--
-- The watcher polls the queue's `pollfd` with a `uv_poll` handle and calls `q:step(0)` whenever
-- it is readable. That fd alone is enough: the request's socket and timers, the end of a
-- retry's backoff and "start the next request" all make it readable (see `Queue:step`), so no
-- uv timer follows `q:timeout()` and an idle queue costs the loop nothing. A one-shot timer only
-- makes the first step.
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

--- Stop watching: closes the uv handles; the queue stays open (close it yourself, after this).
-- Events not yet delivered are dropped. Idempotent; safe from inside the callbacks.
-- @treturn boolean true
-- @usage h:stop(); q:close()
function Watch:stop()
  if self.active then
    self.active = false
    for _, handle in ipairs{ self._poll, self._kick } do
      if not handle:is_closing() then
        handle:stop()
        handle:close()
      end
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

--- Drive `q` from a libuv loop until `handle:stop()` or a fatal error.
-- Each event the queue returns is passed to `on_event(ev, q)`. All callbacks run under `pcall`:
-- an error in `on_event` is reported through `on_error` and the loop goes on. Inside Neovim the
-- callbacks run through `vim.schedule` (luv callbacks may not call most of the editor's API),
-- in order; elsewhere they run in the poll callback itself.
--
-- Stop the watcher before closing the queue: closing frees the fd that libuv is watching. A
-- queue closed from inside a callback is noticed and the watcher stops at once.
-- @tparam userdata q a `zulip.Queue` (registered or not; the first step registers it)
-- @tparam function on_event `on_event(ev, q)`
-- @tparam[opt] function on_error `on_error(msg, err)` (default: `vim.notify` in Neovim, else stderr)
-- @tparam[opt] table opts `uv` (the binding: default `vim.uv`, then `vim.loop`, then `luv`),
--   `schedule` (a function like `vim.schedule` that runs callbacks later; `false` for none;
--   default `vim.schedule` when the binding is Neovim's, else none)
-- @treturn table the watcher: `h:stop()`, `h:is_active()`, and counters `h.wakeups` (fd
--   readiness seen) and `h.steps` (calls of `q:step`)
-- @usage local zuv = require("zulip.uv")
-- local h = zuv.watch(client:queue{ event_types = { "message" } }, function(ev)
--   print(ev.message.sender_full_name .. ": " .. ev.message.content)
-- end, function(msg) print("zulip stopped: " .. msg) end)
function M.watch(q, on_event, on_error, opts)
  if type(q) ~= "userdata" or type(q.pollfd) ~= "function" then
    error("zulip.uv: watch expects a zulip.Queue", 2)
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
  if q:_closed() then error("zulip.uv: queue is closed", 2) end

  local h = setmetatable({ queue = q, active = true, wakeups = 0, steps = 0 }, Watch)
  local poll = uv.new_poll(q:pollfd())
  local kick = uv.new_timer()
  h._poll, h._kick = poll, kick

  local function report(msg, err)
    local ok, e = pcall(on_error, msg, err)
    if not ok then stderr_error("on_error raised: " .. tostring(e) .. " (reporting: " .. tostring(msg) .. ")") end
  end

  local function deliver(ev)
    if not h.active then return end
    local ok, e = pcall(on_event, ev, q)
    if not ok then
      local err = errors.new("CALLBACK", "on_event raised: " .. tostring(e))
      report(err.message, err)
    end
  end

  local function fatal(msg, err)
    h:stop()
    if schedule then schedule(function() report(msg, err) end) else report(msg, err) end
  end

  local pumping = false
  local function pump()
    if not h.active or pumping then return end  -- re-entered from a callback that ran the loop
    if q:_closed() then return h:stop() end
    pumping = true
    h.steps = h.steps + 1
    local ok, events, msg, err = pcall(q.step, q, 0)
    if not ok then
      local e = errors.new("CALLBACK", "q:step raised: " .. tostring(events))
      pumping = false
      return fatal(e.message, e)
    end
    if events == nil then
      pumping = false
      return fatal(msg, err)
    end
    for i = 1, #events do
      local ev = events[i]
      if schedule then schedule(function() deliver(ev) end) else deliver(ev) end
    end
    pumping = false
    if h.active and q:_closed() then h:stop() end
  end

  poll:start("r", function(perr)
    if perr then
      local e = errors.new("LOOP", "polling the queue's fd failed: " .. tostring(perr))
      return fatal(e.message, e)
    end
    h.wakeups = h.wakeups + 1
    pump()
  end)
  kick:start(0, 0, pump)
  return h
end

return M
