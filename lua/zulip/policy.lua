--- The recovery policy: what to do after a failed request. A small state machine shared by the
-- blocking iterator (`q:each`) and the non-blocking `q:step`, so both recover the same way.
--
-- * network error, timeout, HTTP 5xx, a reply that is not JSON or is cut short: retry the same
--   queue after a full-jitter exponential backoff (first bound `base` = 0.1 s, times `factor` = 2
--   per attempt, at most `cap` = 10 s; reset after a success); the next poll uses `dont_block`.
-- * 429 `RATE_LIMIT_HIT`: wait `Retry-After` (header or body; at most `max_retry_after` = 300 s,
--   so a broken or hostile server cannot put the bot to sleep for days), else the backoff.
-- * `BAD_EVENT_QUEUE_ID`: register a new queue at once (backing off if that keeps happening).
-- * 401 `UNAUTHORIZED`, any other 4xx, TLS failures, `TOO_LARGE`: raise; never loop.
-- @module zulip.policy
local M = {}

--- The default backoff constants.
-- @table DEFAULTS
-- @field base first upper bound of the delay, seconds (0.1)
-- @field factor growth per failed attempt (2)
-- @field cap largest delay, seconds (10)
-- @field max_retry_after longest wait a 429's Retry-After may ask for, seconds (300)
M.DEFAULTS = { base = 0.1, factor = 2, cap = 10, max_retry_after = 300 }

-- client-side codes worth retrying; HTTP only for 5xx (a 3xx or 4xx will not go away)
local RETRY = { NETWORK = true, TIMEOUT = true, PROTOCOL = true }

local Policy = {}
Policy.__index = Policy

--- Make a policy.
-- @tparam[opt] table backoff overrides of `DEFAULTS`
-- @tparam[opt] function random returns a float in [0, 1) (defaults to `math.random`)
-- @treturn table policy
-- @usage local p = policy.new({ cap = 5 })
function M.new(backoff, random)
  local b = {}
  for k, v in pairs(M.DEFAULTS) do b[k] = v end
  -- level 2: a direct caller's line; under the pcall of client and queue options no position at
  -- all (the level is pcall itself, a C function), and those re-raise with their caller's line
  if backoff ~= nil then
    if type(backoff) ~= "table" then error("zulip: 'backoff' must be a table", 2) end
    for k, v in pairs(backoff) do
      if M.DEFAULTS[k] == nil then
        error(("zulip: unknown backoff setting '%s' (known: base, factor, cap, max_retry_after)")
          :format(tostring(k)), 2)
      end
      if type(v) ~= "number" or v < 0 or v ~= v then error("zulip: backoff." .. k .. " must be a number >= 0", 2) end
      b[k] = v
    end
  end
  return setmetatable({ backoff = b, attempt = 0, random = random or math.random }, Policy)
end

--- The delay for the next retry: uniform in [0, min(cap, base * factor ^ attempt)].
-- @treturn number seconds
-- @usage local delay = policy.new():backoff_delay()  -- somewhere in [0, 0.1]
function Policy:backoff_delay()
  local b = self.backoff
  local bound = math.min(b.cap, b.base * b.factor ^ self.attempt)
  return self.random() * bound
end

--- Decide what to do about a failure.
-- @tparam table err the error (see `zulip.errors`)
-- @treturn table `{action = "retry"|"reregister"|"raise", delay = s, reason = code, attempt = n, http_status = s}`
-- @usage local d = p:decide(err); if d.action == "retry" then sleep(d.delay) end
function Policy:decide(err)
  local code, status = err.code, err.http_status
  local d = { reason = code, http_status = status, err = err, delay = 0 }
  if code == "BAD_EVENT_QUEUE_ID" then
    d.action = "reregister"  -- at once, unless re-registering keeps failing: then back off too
    if self.attempt > 0 then d.delay = self:backoff_delay() end
  elseif code == "RATE_LIMIT_HIT" or status == 429 then
    d.action = "retry"
    d.delay = err.retry_after and math.min(err.retry_after, self.backoff.max_retry_after) or self:backoff_delay()
  elseif RETRY[code] or (code == "HTTP" and (status == nil or status >= 500)) then
    d.action = "retry"
    d.delay = self:backoff_delay()
  else
    d.action = "raise"
  end
  if d.action ~= "raise" then
    self.attempt = self.attempt + 1
    d.attempt = self.attempt
  end
  return d
end

--- Record a success: the next failure starts the backoff from `base` again.
-- @usage p:success()
function Policy:success()
  self.attempt = 0
end

return M
