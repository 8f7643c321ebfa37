--- Errors: every failure is returned as `nil, msg, err`.
-- `msg` is a readable string (`assert(q:register())` prints it); `err` is a table with:
--
-- | field | meaning |
-- |---|---|
-- | `code` | the server's code, or a client-side one (below) |
-- | `msg` | the server's message, or what went wrong |
-- | `http_status` | the HTTP status, when there was a reply |
-- | `retry_after` | seconds (a float) from `Retry-After` or the body's `retry-after` |
-- | `queue_id` | for `BAD_EVENT_QUEUE_ID` |
-- | `maybe_sent` | true when a request that is not safe to repeat (a POST) may have reached the server before it failed, so it was not repeated |
-- | `message` | the full readable line, the same as `msg` of `nil, msg, err`; also `tostring(err)` |
--
-- The codes, and what the iterator (`q:each`, `q:step`) does about each:
--
-- | code | when | the iterator |
-- |---|---|---|
-- | `BAD_EVENT_QUEUE_ID` | the server garbage-collected the queue (400) | registers a new queue, calls `on_reset` |
-- | `RATE_LIMIT_HIT` | 429 | waits `Retry-After`, retries |
-- | `UNAUTHORIZED` | 401: wrong key, deactivated user or realm | raises at once |
-- | `BAD_REQUEST` and other server codes (`STREAM_DOES_NOT_EXIST`, ...) | other 4xx | raises at once |
-- | `NETWORK` | connection refused, reset, closed, cut short | backs off, retries |
-- | `TIMEOUT` | no reply in time; a trickling reply; a silent long-poll | backs off, retries |
-- | `HTTP` | a reply that is not Zulip's: a proxy's 502 page (retried), a 3xx or 404 (raised) | 5xx: retries |
-- | `PROTOCOL` | a 200 whose body is not JSON or not a Zulip reply | backs off, retries |
-- | `TOO_LARGE` | a reply (or its Content-Length) over `max_reply_bytes`, after decompression; a reply header line over 100 KB or headers over 300 KB | raises |
-- | `TLS` | certificate or handshake failure; the server refusing our client certificate (its reset may win the race: then `NETWORK`); an `https://` site whose server speaks plain HTTP (with a hint to use `http://`) | raises |
--
-- When the iterator raises, `q.last_error` holds the `err` table. Misuse (wrong argument types,
-- unknown options, a bad site, a closed queue) is not such a return: it raises, with the
-- caller's file and line in the message. Which reply becomes which error is `zulip.outcome`.
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
