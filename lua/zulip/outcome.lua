--- Reply classification: what a finished request means, as `reply` or `nil, msg, err`.
-- The C core hands back one table of a fixed shape per finished request (`status`, `body`,
-- `json_error`, `retry_after`, `code`, `message`, `sent`); this module turns it into the
-- server's reply or an error of `zulip.errors`:
--
-- * 200 with `"result": "success"`: the reply.
-- * a Zulip error body: its `code` (401 is always `UNAUTHORIZED`, whatever the body says), `msg`,
--   `queue_id`, and `retry-after` when no header gave one.
-- * a reply that is not Zulip's (a proxy's HTML page): `HTTP` with a snippet of its text; 401 and
--   429 keep their meaning without a JSON body.
-- * a 200 that is not JSON, or JSON that is not a Zulip reply: `PROTOCOL`.
-- * a transfer that failed: the core's code (`NETWORK`, `TIMEOUT`, `TLS`, `PROTOCOL`, `TOO_LARGE`);
--   a TLS "wrong version number" (a plain-HTTP server answering a TLS hello) gets the hint
--   "the server speaks plain HTTP? then use an http:// site".
-- @module zulip.outcome
local errors = require("zulip.errors")

local M = {}

local function snippet(text)
  text = text:gsub("<[^>]*>", " "):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  if #text > 120 then text = text:sub(1, 117) .. "..." end
  return text
end

--- Classify one finished request.
-- @tparam table res the core's result (see above)
-- @tparam[opt] function raw returns the reply's raw text, for a readable message
-- @return the reply table on success, or `nil, msg, err`
-- @usage local reply, msg, err = outcome.classify(transfer:result(), function() return transfer:raw() end)
function M.classify(res, raw)
  if res.code then
    local msg = res.message
    -- OpenSSL's words for a TLS hello answered with plain text: most often an http:// server
    -- given as a site without a scheme (which means https://)
    if res.code == "TLS" and type(msg) == "string" and msg:lower():find("wrong version number", 1, true) then
      msg = msg .. " (the server speaks plain HTTP? then use an http:// site)"
    end
    return errors.fail(errors.new(res.code, msg))
  end
  local status, body = res.status, res.body
  if status == 200 and type(body) == "table" and body.result == "success" then return body end
  local fields = { http_status = status, retry_after = res.retry_after }
  if type(body) == "table" then
    if body.result == "error" or status >= 400 then
      local ra = body["retry-after"]
      if fields.retry_after == nil and type(ra) == "number" and ra >= 0 then fields.retry_after = ra end
      if type(body.queue_id) == "string" then fields.queue_id = body.queue_id end
      local code = type(body.code) == "string" and body.code
        or (status == 429 and "RATE_LIMIT_HIT") or (status >= 500 and "HTTP")
        or (status >= 400 and "BAD_REQUEST") or "PROTOCOL"
      if status == 401 then code = "UNAUTHORIZED" end
      local msg = type(body.msg) == "string" and body.msg ~= "" and body.msg or ("HTTP " .. status)
      return errors.fail(errors.new(code, msg, fields))
    end
    return errors.fail(errors.new("PROTOCOL", "reply has no result field", fields))
  end
  if status == 401 then return errors.fail(errors.new("UNAUTHORIZED", "HTTP 401 without a JSON body", fields)) end
  if status == 429 then return errors.fail(errors.new("RATE_LIMIT_HIT", "HTTP 429 without a JSON body", fields)) end
  if status >= 300 then
    local text = raw and snippet(raw()) or ""
    return errors.fail(errors.new("HTTP", "unexpected reply" .. (text ~= "" and (": " .. text) or ""), fields))
  end
  if res.json_error then return errors.fail(errors.new("PROTOCOL", "reply is not JSON: " .. res.json_error, fields)) end
  return errors.fail(errors.new("PROTOCOL", "empty reply", fields))
end

--- The outcome of a transfer that has ended.
-- @param x a `zulip.Transfer` whose request has ended
-- @return the reply, or `nil, msg, err`; then the core's result table
-- @usage local reply, msg, err = outcome.of(x)
function M.of(x)
  local res = x:result()
  if res == nil then
    local _, msg, err = errors.fail(errors.new("PROTOCOL", "no request has finished"))
    return nil, msg, err, { sent = false }
  end
  -- the raw text only matters for a reply that is not JSON: no closure made for the others
  local raw = type(res.body) ~= "table" and function() return x:raw() end or nil
  local reply, msg, err = M.classify(res, raw)
  return reply, msg, err, res
end

return M
