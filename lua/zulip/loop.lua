--- Driving many queues and clients at once: `zulip.step_all` sleeps in one `poll(2)` on all
-- their pollfds and steps only those with work, so a process can hold a thousand queues without
-- busy polling. A queue's pollfd is its client's, so queues of one client share one fd. On the
-- poll core (`zulip.POLLER == "poll"`) it waits on every fd of `client:pollfds()` instead (each
-- client's self-pipe and sockets), so it sees socket activity at once there too.
-- @module zulip.loop
local core = require("zulip.core")

local M = {}

local now, wait = core.now, core.wait

local function is_client(x)
  return type(x) == "table" and getmetatable(x) == "zulip.Client"
end

--- Wait until at least one queue or client has work (or `timeout` passes), then step each one
-- that has work with `step(0)`. Closed queues and clients are skipped. A queue whose step failed
-- fatally is quiet (its `timeout()` is nil) until it is stepped again, so it never makes this
-- spin; close it or leave it out.
-- @tparam table items a list of `zulip.Queue` and clients
-- @tparam[opt] number timeout seconds to wait at most; nil waits until something has work
--   (returns at once when nothing is open)
-- @treturn table a list, in the order of `items`, of `{ queue = q, events = list }` for each
--   queue that got events and `{ queue = q, error = err, message = msg }` for each that failed
--   fatally (a client's queues appear where the client is listed); empty when nothing happened
-- @usage while running do
--   for _, r in ipairs(zulip.step_all(queues, 1)) do
--     if r.events then for _, ev in ipairs(r.events) do handle(r.queue, ev) end
--     else print("queue failed: " .. r.message); r.queue:close() end
--   end
-- end
function M.step_all(items, timeout)
  if type(items) ~= "table" then error("zulip: step_all expects a list of queues and clients", 2) end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0 or timeout ~= timeout) then
    error("zulip: step_all timeout must be a number >= 0", 2)
  end
  -- every fd of every client (pollfds: one per client with epoll and kqueue; with poll(2) each
  -- client's self-pipe and sockets), so the timeouts need no POLL_SLICE cap: _loop_timeout(true)
  local open, engs, fds, wants, owner, seen, n = {}, {}, {}, {}, {}, {}, 0
  local limit = timeout
  for i = 1, #items do
    local x = items[i]
    local closed
    if is_client(x) then closed = x:closed() else closed = x:_closed() end
    if not closed then
      n = n + 1
      open[n] = x
      x:pollfd()  -- marks the client driven, as any loop's use of it does
      local eng = is_client(x) and x._engine or x:_state()._eng
      engs[n] = eng
      if not seen[eng] then
        seen[eng] = true
        local efds, evs = eng.core:pollfds()
        for j = 1, #efds do
          local k = #fds + 1
          fds[k], wants[k], owner[k] = efds[j], evs[j], eng
        end
      end
      local t = x:_loop_timeout(true)
      if t ~= nil and (limit == nil or t < limit) then limit = t end
    end
  end
  local out = {}
  if n == 0 then return out end
  local ready, msg = wait(fds, limit, wants)
  if ready == nil then error("zulip: step_all: " .. msg, 2) end
  local go = {}
  for i = 1, #ready do go[owner[ready[i]]] = true end
  local t0 = now()
  for k = 1, n do
    local x = open[k]
    if is_client(x) then
      if not x:closed() then
        for _, r in ipairs(x:step(0)) do out[#out + 1] = r end
      end
    elseif not x:_closed() then
      -- a step of another queue of the same client may have done this one's work: ask again
      local t = x:_loop_timeout(true)
      if go[engs[k]] or (t ~= nil and t <= now() - t0) then
        local events, emsg, err = x:step(0)
        if events == nil then
          out[#out + 1] = { queue = x, error = err, message = emsg }
        elseif #events > 0 then
          out[#out + 1] = { queue = x, events = events }
        end
      end
    end
  end
  return out
end

return M
