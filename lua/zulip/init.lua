--- lua-zulip: a Lua client for Zulip's real-time events API.
--
--     local zulip = require("zulip")
--     local client = zulip.client{ zuliprc = "~/.zuliprc" }
--     local q = client:queue{ event_types = { "message" } }
--     for event in q:each() do
--       print(event.message.sender_full_name, event.message.content)
--     end
--
-- @module zulip
local core = require("zulip.core")
local config = require("zulip.config")
local encode = require("zulip.encode")
local errors = require("zulip.errors")
local queue = require("zulip.queue")
local loop = require("zulip.loop")
local version = require("zulip.version")

local zulip = {}

--- The library's version, e.g. `"0.1.0"`.
zulip._VERSION = version
--- The value JSON `null` decodes to (a lightuserdata, equal to `cjson.null`).
-- @usage if event.message.avatar_url == zulip.null then use_gravatar(event.message.sender_email) end
zulip.null = core.null
--- The C core's JSON decoder: integers stay integers, `null` is `zulip.null`.
-- Returns `value`, or `nil, msg, err` with `err.code == "PROTOCOL"` and `err.position`.
-- @function decode
-- @tparam string json
-- @usage local v = zulip.decode('{"id": 5}'); assert(math.type == nil or math.type(v.id) == "integer")
zulip.decode = core.decode
--- Drive many queues at once: wait in one `poll(2)` on all their pollfds (at most `timeout`
-- seconds; nil: until one has work), then `step(0)` the ones with work. See `zulip.loop`.
-- @function step_all
-- @tparam table queues a list of queues
-- @tparam[opt] number timeout
-- @treturn table a list of `{ queue = q, events = list }` and `{ queue = q, error = err, message = msg }`
-- @usage for _, r in ipairs(zulip.step_all(queues, 0.5)) do
--   for _, ev in ipairs(r.events or {}) do print(r.queue.id, ev.type) end
-- end
zulip.step_all = loop.step_all

local platform = io.open("/proc/version", "r")
if platform then platform:close() end
local lua_name = (type(jit) == "table" and jit.version) or _VERSION
--- The default User-Agent, e.g. `lua-zulip/0.1.0 (Lua 5.4; Linux)`.
zulip.USER_AGENT = ("lua-zulip/%s (%s; %s)"):format(version, lua_name, platform and "Linux" or "Unix")

local Client = {}
Client.__index = Client
Client.__name = "zulip.Client"
Client.__tostring = function(c) return ("zulip.Client (%s at %s)"):format(c.email, c.site) end
Client.__metatable = "zulip.Client"

local CLIENT_OPTS = {
  site = "string", email = "string", api_key = "string", zuliprc = "string", insecure = "any",
  cert_bundle = "string", client_cert = "string", client_cert_key = "string", proxy = "string",
  user_agent = "string", timeout = "number", on_log = "function", max_reply_bytes = "number",
  low_speed_limit = "number", low_speed_time = "number", connect_timeout = "number",
  longpoll_grace = "number", debug = "boolean",
}

local warned_insecure = false

--- Make a client. Does no network I/O. Settings resolve as the reference Python client does:
-- an option here, then `ZULIP_EMAIL`, `ZULIP_API_KEY`, `ZULIP_SITE`, `ZULIP_CERT`,
-- `ZULIP_CERT_KEY`, `ZULIP_CERT_BUNDLE`, `ZULIP_ALLOW_INSECURE`, then the `[api]` section of
-- the zuliprc at `zuliprc`, else `$ZULIP_CONFIG`, else `~/.zuliprc`.
-- @tparam[opt] table opts `site`, `email`, `api_key`, `zuliprc`, `insecure`, `cert_bundle`,
--   `client_cert`, `client_cert_key`, `proxy`, `user_agent`, `timeout` (seconds, default 15),
--   `connect_timeout` (10), `max_reply_bytes` (256 MiB), `low_speed_limit` (bytes/s, 1024) and
--   `low_speed_time` (s, 30) for replies that trickle, `longpoll_grace` (s, 10: how long past the
--   server's `event_queue_longpoll_timeout_seconds` a silent long-poll is given before it is
--   called dead and redone), `on_log(level, msg, fields)`, `debug` (true: a trace of every request,
--   curl's verbose text while connecting and then the request's and the reply's heads, goes to
--   `on_log("debug", line, {source = "curl", direction = "info"|"out"|"in"})` after the request,
--   with the API key and the Authorization value replaced by `[redacted]`)
-- @treturn table the client
-- @usage local client = zulip.client{ site = "chat.example.com", email = "bot@example.com", api_key = key }
function zulip.client(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("zulip: zulip.client expects a table of options", 2) end
  for k, v in pairs(opts) do
    local want = CLIENT_OPTS[k]
    if want == nil then error(("zulip: unknown client option '%s'"):format(tostring(k)), 2) end
    if want ~= "any" and type(v) ~= want then error(("zulip: client option '%s' must be a %s"):format(k, want), 2) end
  end
  local timeout = opts.timeout or 15
  if timeout <= 0 or timeout ~= timeout then error("zulip: client option 'timeout' must be > 0", 2) end
  local ok, s = pcall(config.resolve, opts)
  if not ok then error(s, 2) end
  local log = opts.on_log or function() end
  local session = core.session{
    site = s.site, email = s.email, api_key = s.api_key,
    user_agent = opts.user_agent or zulip.USER_AGENT,
    cert_bundle = s.cert_bundle, client_cert = s.client_cert, client_cert_key = s.client_cert_key,
    proxy = opts.proxy, insecure = s.insecure, connect_timeout = opts.connect_timeout,
    max_reply_bytes = opts.max_reply_bytes, low_speed_limit = opts.low_speed_limit,
    low_speed_time = opts.low_speed_time, debug = opts.debug,
  }
  if s.insecure then
    local msg = "TLS certificate verification is off (insecure = true): anyone on the path can read the API key"
    if opts.on_log then
      log("warn", msg, { site = s.site })
    elseif not warned_insecure then
      io.stderr:write("lua-zulip: warning: ", msg, "\n")
    end
    warned_insecure = true
  end
  local grace = opts.longpoll_grace or 10
  if grace < 0 or grace ~= grace then error("zulip: client option 'longpoll_grace' must be >= 0", 2) end
  return setmetatable({ site = s.site, email = s.email, timeout = timeout, insecure = s.insecure,
                        longpoll_grace = grace, _session = session, _log = log }, Client)
end

--- Make an event queue (not yet registered: see `q:register`, `q:each`, `q:step`).
-- @tparam[opt] table opts register parameters `event_types`, `narrow`, `all_public_streams`,
--   `apply_markdown`, `client_gravatar`, `slim_presence`, `include_subscribers`,
--   `client_capabilities`, `fetch_event_types`, `queue_lifespan_secs`; `id` and `last_event_id`
--   to resume a saved queue; recovery options `heartbeats`, `on_reset`, `on_retry`, `backoff`
--   (used by `step`, defaults for `each`)
-- @treturn userdata a `zulip.Queue`
-- @usage local q = client:queue{ event_types = { "message" }, narrow = { { "channel", "Denmark" } } }
function Client:queue(opts)
  return queue.new(self, self._session, opts, self._log)
end

local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true }

--- Call any REST endpoint of the Zulip API.
-- Parameters go in the query string for GET and DELETE and in a form body otherwise; every
-- non-string value is sent as JSON text.
-- @tparam string method `"GET"`, `"POST"`, `"PUT"`, `"PATCH"` or `"DELETE"`
-- @tparam string path e.g. `"users/me"` (under `/api/v1/`) or a full `"/api/v1/..."` path
-- @tparam[opt] table params
-- @treturn table the decoded reply, or `nil, msg, err`
-- @usage local me = assert(client:request("GET", "users/me")); print(me.full_name)
function Client:request(method, path, params)
  if not METHODS[method] then error("zulip: request method must be GET, POST, PUT, PATCH or DELETE", 2) end
  if type(path) ~= "string" then error("zulip: request path must be a string", 2) end
  if params ~= nil and type(params) ~= "table" then error("zulip: request params must be a table", 2) end
  local full = path:sub(1, 5) == "/api/" and path or ("/api/v1/" .. path:gsub("^/+", ""))
  local form = params and encode.form(params) or ""
  local t = self._rest
  if t == nil then
    t = core.queue(self._session)
    self._rest = t
    t:_state()._log = self._log  -- for the debug trace (see errors.outcome)
  end
  if method == "GET" or method == "DELETE" then
    t:_start(method, form ~= "" and (full .. "?" .. form) or full, nil, self.timeout)
  else
    t:_start(method, full, form, self.timeout)
  end
  while not t:_drive() do end
  return errors.outcome(t)
end

--- Send a message (`POST /api/v1/messages`).
-- @tparam table msg `type` (`"stream"`/`"channel"` or `"private"`/`"direct"`), `to` (a channel
--   name, or a list of emails or user ids), `topic`, `content`
-- @treturn table the reply (`reply.id` is the new message's id), or `nil, msg, err`
-- @usage assert(client:send_message{ type = "stream", to = "Denmark", topic = "Castle", content = "Hello" })
function Client:send_message(msg)
  if type(msg) ~= "table" then error("zulip: send_message expects a table", 2) end
  if type(msg.content) ~= "string" then error("zulip: send_message needs 'content' (a string)", 2) end
  return self:request("POST", "messages", msg)
end

return zulip
