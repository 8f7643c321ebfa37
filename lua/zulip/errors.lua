--- Errors: every failure is returned as `nil, msg, err`.
-- `msg` is a readable string; `err` is a table with `code` (the server's code such as
-- `BAD_EVENT_QUEUE_ID`, `RATE_LIMIT_HIT`, `UNAUTHORIZED`, `BAD_REQUEST`, or a client-side one:
-- `NETWORK`, `TIMEOUT`, `HTTP`, `PROTOCOL`, `TOO_LARGE`, `TLS`), `msg`, `http_status`,
-- `retry_after` (seconds) and `queue_id`. `tostring(err)` gives `msg`.
-- @module zulip.errors
local M = {}

local ErrorMT = { __name = "zulip.Error" }
ErrorMT.__tostring = function(e) return e.message end
M.ErrorMT = ErrorMT

--- Make an error table.
-- @tparam string code e.g. `"NETWORK"`
-- @tparam string msg what went wrong
-- @tparam[opt] table fields `http_status`, `retry_after`, `queue_id`
-- @treturn table err, whose `message` field is the full readable line
-- @usage local err = errors.new("TIMEOUT", "no reply within 15 s")
function M.new(code, msg, fields)
  local e = setmetatable({ code = code, msg = msg }, ErrorMT)
  if fields then
    e.http_status, e.retry_after, e.queue_id = fields.http_status, fields.retry_after, fields.queue_id
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

local function snippet(text)
  text = text:gsub("<[^>]*>", " "):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  if #text > 120 then text = text:sub(1, 117) .. "..." end
  return text
end

--- Classify the outcome of one request as the C core reports it (see `zulip.core` `_result`).
-- @param status HTTP status, or `false` when the transfer failed
-- @param body decoded JSON reply, or (when status is false) the client-side code
-- @param retry_after Retry-After header in seconds, or (when status is false) the message
-- @param json_err the decoder's message when the body was not JSON
-- @tparam[opt] function raw returns the raw body text, for a readable message
-- @return the reply table on success, or `nil, msg, err`
-- @usage local reply, msg, err = errors.classify(q:_result())
function M.classify(status, body, retry_after, json_err, raw)
  if status == false then return M.fail(M.new(body, retry_after)) end
  local fields = { http_status = status, retry_after = retry_after }
  if type(body) == "table" then
    if status == 200 and body.result == "success" then return body end
    if body.result == "error" or status >= 400 then
      local ra = body["retry-after"]
      if fields.retry_after == nil and type(ra) == "number" and ra >= 0 then fields.retry_after = ra end
      if type(body.queue_id) == "string" then fields.queue_id = body.queue_id end
      local code = type(body.code) == "string" and body.code
        or (status == 401 and "UNAUTHORIZED") or (status == 429 and "RATE_LIMIT_HIT")
        or (status >= 500 and "HTTP") or (status >= 400 and "BAD_REQUEST") or "PROTOCOL"
      if status == 401 then code = "UNAUTHORIZED" end
      local msg = type(body.msg) == "string" and body.msg ~= "" and body.msg or ("HTTP " .. status)
      return M.fail(M.new(code, msg, fields))
    end
    return M.fail(M.new("PROTOCOL", "reply has no result field", fields))
  end
  if status == 401 then return M.fail(M.new("UNAUTHORIZED", "HTTP 401 without a JSON body", fields)) end
  if status == 429 then return M.fail(M.new("RATE_LIMIT_HIT", "HTTP 429 without a JSON body", fields)) end
  if status >= 300 then
    local text = raw and snippet(raw()) or ""
    return M.fail(M.new("HTTP", "unexpected reply" .. (text ~= "" and (": " .. text) or ""), fields))
  end
  if json_err then return M.fail(M.new("PROTOCOL", "reply is not JSON: " .. json_err, fields)) end
  return M.fail(M.new("PROTOCOL", "empty reply", fields))
end

local DIRECTION = { ["*"] = "info", [">"] = "out", ["<"] = "in" }

-- With the client's `debug` option, hand the transfer's curl trace (already scrubbed in C) to
-- the log hook of the transport's owner, one line at a time.
local function flush_trace(t)
  local trace = t:_trace()
  if trace == nil then return end
  local log = t:_state()._log
  if log == nil then return end
  for line in trace:gmatch("[^\n]+") do
    log("debug", line, { source = "curl", direction = DIRECTION[line:sub(1, 1)] })
  end
end

--- The outcome of a finished request on a core transport, as `reply` or `nil, msg, err`.
-- @param t a `zulip.Queue` (or the client's own transport) whose transfer has ended
-- @usage local reply, msg, err = errors.outcome(q)
function M.outcome(t)
  local status, body, retry_after, json_err = t:_result()
  flush_trace(t)  -- after _result: the log hook may close the queue
  if status == 200 and type(body) == "table" and body.result == "success" then return body end
  if status == nil then return M.fail(M.new("PROTOCOL", "no request has finished")) end
  return M.classify(status, body, retry_after, json_err, function() return t:_closed() and "" or t:_body() end)
end

return M
