--- Driving many queues at once: `zulip.step_all` sleeps in one `poll(2)` on all the queues'
-- pollfds and steps only those with work, so a process can hold a thousand queues without
-- busy polling. Each queue is still a `zulip.Queue` with its own `pollfd`, `timeout` and `step`;
-- queues made from one client share its DNS cache and TLS sessions.
-- @module zulip.loop
local core = require("zulip.core")

local M = {}

local now, wait = core.now, core.wait

--- Wait until at least one queue has work (or `timeout` passes), then step each queue that
-- has work with `q:step(0)`. Closed queues are skipped. A queue whose step failed fatally is
-- quiet (its fd and `timeout()` say nothing) until it is stepped by hand, so it never makes this
-- spin; close it or leave it out.
-- @tparam table queues a list of `zulip.Queue`
-- @tparam[opt] number timeout seconds to wait at most; nil waits until some queue has work
--   (returns at once when no queue is open)
-- @treturn table a list, in the order of `queues`, of `{ queue = q, events = list }` for each
--   queue that got events and `{ queue = q, error = err, message = msg }` for each that failed
--   fatally; empty when nothing happened
-- @usage while running do
--   for _, r in ipairs(zulip.step_all(queues, 1)) do
--     if r.events then for _, ev in ipairs(r.events) do handle(r.queue, ev) end
--     else print("queue failed: " .. r.message); r.queue:close() end
--   end
-- end
function M.step_all(queues, timeout)
  if type(queues) ~= "table" then error("zulip: step_all expects a list of queues", 2) end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0 or timeout ~= timeout) then
    error("zulip: step_all timeout must be a number >= 0", 2)
  end
  local open, fds, due, n = {}, {}, {}, 0
  local limit = timeout
  for i = 1, #queues do
    local q = queues[i]
    if not q:_closed() then
      local t = q:timeout()
      n = n + 1
      open[n], fds[n], due[n] = q, q:pollfd(), t
      if t ~= nil and (limit == nil or t < limit) then limit = t end
    end
  end
  local out = {}
  if n == 0 then return out end
  local t0 = now()
  local ready, msg = wait(fds, limit)
  if ready == nil then error("zulip: step_all: " .. msg, 2) end
  local go = {}
  for i = 1, #ready do go[ready[i]] = true end
  local elapsed = now() - t0
  for k = 1, n do
    local q = open[k]
    if (go[k] or (due[k] ~= nil and due[k] <= elapsed)) and not q:_closed() then
      local events, emsg, err = q:step(0)
      if events == nil then
        out[#out + 1] = { queue = q, error = err, message = emsg }
      elseif #events > 0 then
        out[#out + 1] = { queue = q, events = events }
      end
    end
  end
  return out
end

return M
