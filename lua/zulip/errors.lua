--- Errors: every failure is returned as `nil, msg, err`.
-- `msg` is a readable string; `err` is a table with `code` (the server's code such as
-- `BAD_EVENT_QUEUE_ID`, `RATE_LIMIT_HIT`, `UNAUTHORIZED`, `BAD_REQUEST`, or a client-side one:
-- `NETWORK`, `TIMEOUT`, `HTTP`, `PROTOCOL`, `TOO_LARGE`, `TLS`), `msg`, `http_status`,
-- `retry_after` (seconds), `queue_id`, and `maybe_sent` (true when a request that is not safe to
-- repeat, such as a POST, may have reached the server before it failed, so it was not repeated).
-- `tostring(err)` gives `msg`. Which reply becomes which error is `zulip.outcome`.
-- @module zulip.errors
local M = {}

local ErrorMT = { __name = "zulip.Error" }
ErrorMT.__tostring = function(e) return e.message end
M.ErrorMT = ErrorMT

--- Make an error table.
-- @tparam string code e.g. `"NETWORK"`
-- @tparam string msg what went wrong
-- @tparam[opt] table fields `http_status`, `retry_after`, `queue_id`, `maybe_sent`
-- @treturn table err, whose `message` field is the full readable line
-- @usage local err = errors.new("TIMEOUT", "no reply within 15 s")
function M.new(code, msg, fields)
  local e = setmetatable({ code = code, msg = msg }, ErrorMT)
  if fields then
    e.http_status, e.retry_after, e.queue_id = fields.http_status, fields.retry_after, fields.queue_id
    e.maybe_sent = fields.maybe_sent
  end
  e.message = "zulip: " .. code .. ": " .. msg .. (e.http_status and (" (HTTP " .. e.http_status .. ")") or "")
  return e
end

--- Return `nil, msg, err` for an error table.
-- @tparam table e
-- @usage return errors.fail(errors.new("PROTOCOL", "reply without events"))
function M.fail(e)
  return nil, e.message, e
end

return M
