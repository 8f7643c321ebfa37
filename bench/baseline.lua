-- The plain-Lua baseline the end-to-end rows compare against: the leanest events client one
-- would write by hand with luasocket and lua-cjson. One persistent HTTP/1.1 keep-alive socket,
-- requests built with one concatenation, the reply read with exact lengths (status line,
-- headers, then Content-Length bytes), no ltn12, no gzip, no TLS, no retries, no checks beyond
-- the status. cjson decodes every number as a float, so last_event_id is sent with %d.
local socket = require("socket")
local mime = require("mime")
local cjson = require("cjson")

local format, lower, match, tonumber = string.format, string.lower, string.match, tonumber
local decode = cjson.decode

local M = {}
M.__index = M

--- Connects to 127.0.0.1:port as user ({email=, api_key=}).
function M.new(port, user)
  local sock = assert(socket.tcp())
  assert(sock:connect("127.0.0.1", port))
  sock:setoption("tcp-nodelay", true)
  sock:settimeout(120)
  local auth = "Basic " .. mime.b64(user.email .. ":" .. user.api_key)
  return setmetatable({ sock = sock, head = "\r\nHost: 127.0.0.1\r\nAuthorization: " .. auth
    .. "\r\nUser-Agent: baseline\r\n" }, M)
end

-- One request on the open socket; returns the status and the decoded body.
function M:request(method, target, body)
  local sock = self.sock
  local req = method .. " " .. target .. " HTTP/1.1" .. self.head
  if body then
    req = req .. "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " .. #body
      .. "\r\n\r\n" .. body
  else
    req = req .. "\r\n"
  end
  assert(sock:send(req))
  local line = assert(sock:receive("*l"))
  local status = tonumber(match(line, "^HTTP/1%.%d (%d%d%d)"))
  local length
  while true do
    line = assert(sock:receive("*l"))
    if line == "" then break end
    local name, value = match(line, "^([^:]+):%s*(.-)%s*$")
    if name and lower(name) == "content-length" then length = tonumber(value) end
  end
  local reply = assert(sock:receive(length))
  self.last_body_bytes = #reply
  return status, decode(reply)
end

--- POST /api/v1/register; remembers the queue id and last event id.
function M:register(form)
  local status, state = self:request("POST", "/api/v1/register", form or "event_types=%5B%22message%22%5D")
  assert(status == 200, "baseline register failed")
  self.queue_id, self.last_event_id = state.queue_id, state.last_event_id
  return state
end

--- One GET /api/v1/events (long-poll); returns the events and advances last_event_id.
function M:get_events()
  local status, reply = self:request("GET", "/api/v1/events?queue_id=" .. self.queue_id
    .. "&last_event_id=" .. format("%d", self.last_event_id))
  assert(status == 200, "baseline poll failed")
  local events = reply.events
  if #events > 0 then self.last_event_id = events[#events].id end
  return events
end

function M:close()
  if self.queue_id then self:request("DELETE", "/api/v1/events?queue_id=" .. self.queue_id) end
  self.sock:close()
end

return M
