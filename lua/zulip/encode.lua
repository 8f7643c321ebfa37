--- Request encoding: the server wants form fields whose non-string values are JSON text.
-- `event_types = {"message"}` becomes `event_types=%5B%22message%22%5D`, `dont_block = true`
-- becomes `dont_block=true` and `last_event_id = 5` becomes `last_event_id=5`, never `5.0`.
-- @module zulip.encode
local M = {}

local null = require("zulip.core").null
local floor, huge = math.floor, math.huge
local format, gsub, byte, concat = string.format, string.gsub, string.byte, table.concat

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function escape_char(c)
  return ESCAPES[c] or format("\\u%04x", byte(c))
end

local function json_string(s)
  return '"' .. gsub(s, '[%c"\\]', escape_char) .. '"'
end

local function json_number(n)
  if n ~= n or n == huge or n == -huge then error("zulip: cannot encode " .. tostring(n) .. " as JSON", 0) end
  if math.type and math.type(n) == "integer" then return format("%d", n) end
  if floor(n) == n and n > -2^63 and n < 2^63 then return format("%.0f", n) end  -- 5.0 is sent as 5
  return format("%.17g", n)
end

local encode_value

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  for i = 1, n do if t[i] == nil then return false, n end end
  return true, n
end

local function encode_table(t, depth)
  if depth > 100 then error("zulip: parameter nested too deeply to encode", 0) end
  local array, n = is_array(t)
  local parts = {}
  if array and (n > 0 or getmetatable(t) ~= M.object_mt) then
    for i = 1, n do parts[i] = encode_value(t[i], depth + 1) end
    return "[" .. concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then error("zulip: JSON object keys must be strings, got " .. type(k), 0) end
    keys[#keys + 1] = k
  end
  table.sort(keys)  -- a stable order makes requests reproducible
  for i, k in ipairs(keys) do parts[i] = json_string(k) .. ":" .. encode_value(t[k], depth + 1) end
  return "{" .. concat(parts, ",") .. "}"
end

function encode_value(v, depth)
  local tv = type(v)
  if tv == "string" then return json_string(v)
  elseif tv == "number" then return json_number(v)
  elseif tv == "boolean" then return v and "true" or "false"
  elseif v == null then return "null"
  elseif tv == "table" then return encode_table(v, depth or 0)
  end
  error("zulip: cannot encode a " .. tv .. " as JSON", 0)
end

--- Metatable that marks an empty table as a JSON object (`{}`) rather than an array (`[]`).
M.object_mt = {}

--- Encode a Lua value as JSON text (strings, numbers, booleans, `zulip.null`, tables).
-- @param v the value
-- @treturn string JSON text
-- @usage assert(encode.json({"message"}) == '["message"]')
function M.json(v)
  return encode_value(v, 0)
end

local function urlescape_char(c)
  return format("%%%02X", byte(c))
end

--- Percent-encode a string for a form field or a query string.
-- @tparam string s
-- @treturn string
-- @usage assert(encode.urlescape("a b") == "a%20b")
function M.urlescape(s)
  return (gsub(s, "[^%w%-%._~]", urlescape_char))
end

--- Encode parameters as `application/x-www-form-urlencoded`: strings as they are, every other
-- value as JSON text. Keys are sorted so that requests are reproducible.
-- @tparam table params
-- @treturn string
-- @usage assert(encode.form{ last_event_id = 5, dont_block = true } == "dont_block=true&last_event_id=5")
function M.form(params)
  local keys = {}
  for k in pairs(params) do
    if type(k) ~= "string" then error("zulip: parameter names must be strings", 0) end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do
    local v = params[k]
    if type(v) ~= "string" then v = encode_value(v, 0) end
    parts[i] = M.urlescape(k) .. "=" .. M.urlescape(v)
  end
  return concat(parts, "&")
end

return M
