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

-- zulip.core is built against one Lua's headers. Loaded into another, it fails to link with
-- "undefined symbol: lua_..." (a 5.1 build in 5.3 lacks lua_replace, a 5.4 build in 5.1 lacks
-- lua_rotate, ...), or, were the symbols to match, it reports another `lua_version`: both say
-- which Lua to rebuild it for.
local function wrong_lua(detail)
  local this = (type(jit) == "table" and jit.version) or _VERSION
  local v = type(jit) == "table" and "5.1" or _VERSION:match("%d+%.%d+") or "?"
  local make = type(jit) == "table" and "luajit" or v
  return ("zulip: zulip.core %s was built for another Lua than this one (%s); rebuild it for this Lua:"
          .. " luarocks make --lua-version=%s, or make LUA=%s"):format(detail, this, v, make)
end
local core
do
  local ok, mod = pcall(require, "zulip.core")
  if not ok then
    local msg = tostring(mod)
    local sym = msg:match("undefined symbol: (luaL?_[%w_]+)")
    if sym then
      local file = msg:match("from file '([^']+)'")
      error(wrong_lua(("%s(it needs %s, which this Lua lacks)"):format(file and ("at " .. file .. " ") or "", sym)), 2)
    end
    error(mod, 0)
  end
  if mod.lua_version ~= nil and mod.lua_version ~= _VERSION then
    error(wrong_lua(("(built for %s)"):format(tostring(mod.lua_version))), 2)
  end
  core = mod
end
local config = require("zulip.config")
local errors = require("zulip.errors")
local encode = require("zulip.encode")
local engine = require("zulip.engine")
local queue = require("zulip.queue")
local loop = require("zulip.loop")
local policy = require("zulip.policy")
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
--- The state keeper that `keep_state = true` uses, for a register reply of your own:
-- `zulip.state.new(reply, opts)`, then `st:apply(event)` and the lookups (see `zulip.state`).
-- @usage local st = zulip.state.new(assert(q:register()))
zulip.state = require("zulip.state")
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

local lua_name = (type(jit) == "table" and jit.version) or _VERSION
--- The default User-Agent, e.g. `lua-zulip/0.1.0 (Lua 5.4; Linux)`: the system's name is
-- uname(2)'s (`Darwin` on macOS, `FreeBSD`, ...).
-- @usage print(zulip.USER_AGENT)
zulip.USER_AGENT = ("lua-zulip/%s (%s; %s)"):format(version, lua_name, core.sysname)

--- The poller the C core was built with (`make POLLER=`): `"epoll"` (Linux), `"kqueue"` (macOS,
-- the BSDs) or `"poll"` (plain poll(2), any Unix). With epoll and kqueue, `client:pollfd()` alone
-- tells a loop of all activity; with poll it does not, and `client:timeout()` is at most
-- `zulip.POLL_SLICE` seconds while requests are in flight (see `client:pollfd`).
-- @usage if zulip.POLLER == "poll" then print("single-fd loops wake every", zulip.POLL_SLICE, "s") end
zulip.POLLER = core.poller
--- On the poll core: the longest `client:timeout()` and `q:timeout()` give while a request is in
-- flight, so a loop that watches only `pollfd()` still sees socket activity that soon (seconds).
-- @usage local t = math.min(client:timeout() or zulip.POLL_SLICE, zulip.POLL_SLICE)
zulip.POLL_SLICE = engine.POLL_SLICE

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
  longpoll_grace = "number", debug = "boolean", backoff = "table",
}

local warned_insecure = false

-- Without on_log: a retry goes to stderr, the first of a run of failures and every tenth after
-- it (attempts 1, 11, 21, ...), so a wrong or unreachable site is never silent and a long outage
-- is not a flood. Everything else stays quiet.
local function default_log(level, msg, fields)
  if level == "warn" and type(fields) == "table" and fields.retry and type(fields.attempt) == "number"
     and fields.attempt % 10 == 1 then
    io.stderr:write("lua-zulip: ", msg, "\n")
  end
end

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
  local log = opts.on_log or default_log
  local session = core.session{
    site = s.site, email = s.email, api_key = s.api_key,
    user_agent = opts.user_agent or zulip.USER_AGENT,
    cert_bundle = s.cert_bundle, client_cert = s.client_cert, client_cert_key = s.client_cert_key,
    proxy = s.proxy, no_proxy = s.no_proxy, insecure = s.insecure, connect_timeout = opts.connect_timeout,
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
  if opts.backoff ~= nil then
    local okb, e = pcall(policy.new, opts.backoff)
    if not okb then error(e, 2) end
  end
  local c = setmetatable({ site = s.site, email = s.email, _timeout = timeout, insecure = s.insecure,
                           longpoll_grace = grace, _session = session, _log = log, _debug = opts.debug == true,
                           _backoff = opts.backoff }, Client)
  c._engine = engine.new(session, c)
  return c
end

local function engine_of(c, level)
  local e = c._engine
  if e.is_closed then error("zulip: the client is closed", level or 3) end
  return e
end

--- Make an event queue (not yet registered: see `q:register`, `q:each`, `q:step`).
-- @tparam[opt] table opts register parameters `event_types`, `narrow`, `all_public_streams`,
--   `apply_markdown`, `client_gravatar`, `slim_presence`, `include_subscribers`,
--   `client_capabilities` (passed through as given), `fetch_event_types`, `queue_lifespan_secs`,
--   `idle_queue_timeout` (seconds, or `"mobile"`: 12 h; feature level 481); `include_subscribers`
--   may be `true`, `false` or `"partial"` (level 412); `id` and `last_event_id`
--   to resume a saved queue; recovery options `heartbeats`, `on_reset`, `on_retry`, `backoff`
--   (used by `step`, defaults for `each`); `keep_state = true`: `q.state` is the register reply,
--   kept current by each event before the loop body, callback or `step` result sees it (see
--   `zulip.state` for what is applied), with the lookups `q:user`, `q:channel`, `q:subscription`,
--   `q:unread_count` and `q:dm_unread_count`
-- @treturn userdata a `zulip.Queue`
-- @usage local q = client:queue{ event_types = { "message" }, narrow = { { "channel", "Denmark" } } }
-- local kept = client:queue{ keep_state = true,
--                            fetch_event_types = { "realm_user", "message", "update_message_flags" } }
function Client:queue(opts)
  local q = queue.new(self, engine_of(self), opts)  -- not a tail call: its errors name our caller's line
  return q
end

local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true }

local function check_callback(callback, level)
  if callback ~= nil and type(callback) ~= "function" then
    error("zulip: the callback must be a function", level + 1)
  end
end

-- client:request's body, also called by send_message: its misuse errors are raised at level 3,
-- the caller of the public method that called it (which must not tail-call it).
local function request(self, method, path, params, callback)
  if not METHODS[method] then error("zulip: request method must be GET, POST, PUT, PATCH or DELETE", 3) end
  if type(path) ~= "string" then error("zulip: request path must be a string", 3) end
  if path:find("[%c ]") then
    error("zulip: request path has a character HTTP cannot carry (a space, NUL, CR, LF or another control)", 3)
  end
  if params ~= nil and type(params) ~= "table" then error("zulip: request params must be a table", 3) end
  check_callback(callback, 3)
  local e = engine_of(self, 4)
  local full = path:sub(1, 5) == "/api/" and path or ("/api/v1/" .. path:gsub("^/+", ""))
  local ok, form = pcall(function() return params and encode.form(params) or "" end)
  if not ok then error(form, 3) end
  if method == "GET" or method == "DELETE" then
    return e:request(method, form ~= "" and (full .. "?" .. form) or full, nil, self._timeout, callback)
  end
  return e:request(method, full, form, self._timeout, callback)
end

--- Call any REST endpoint of the Zulip API.
-- Parameters go in the query string for GET and DELETE and in a form body otherwise; every
-- non-string value is sent as JSON text. Without a callback it waits for the reply (driving the
-- client's other operations meanwhile); with one it returns at once and the callback gets
-- `(reply)` or `(nil, msg, err)` later, from whatever drives the client (`client:step`, a queue's
-- `step`, a `zulip.uv` watcher, or a blocking call).
--
-- Recovery, bounded (at most 4 tries, none starting later than `timeout` after the first): a 429
-- waits `Retry-After`; a failure before the request left (DNS, connect) backs off and retries;
-- a GET or DELETE also retries after a network failure or a 5xx; a POST, PUT or PATCH that may
-- have reached the server is not repeated (`err.maybe_sent` is true), so no message is posted twice.
-- @tparam string method `"GET"`, `"POST"`, `"PUT"`, `"PATCH"` or `"DELETE"`
-- @tparam string path e.g. `"users/me"` (under `/api/v1/`) or a full `"/api/v1/..."` path
-- @tparam[opt] table params
-- @tparam[opt] function callback `callback(reply)` or `callback(nil, msg, err)`
-- @return without a callback: the decoded reply, or `nil, msg, err`; with one: a handle with
--   `h:cancel()` and `h:done()`
-- @usage local me = assert(client:request("GET", "users/me")); print(me.full_name)
-- client:request("GET", "users/me", nil, function(me, msg) print(me and me.full_name or msg) end)
function Client:request(method, path, params, callback)
  local r, m, e = request(self, method, path, params, callback)  -- no tail call: errors name our caller
  return r, m, e
end

--- Send a message (`POST /api/v1/messages`).
-- @tparam table msg `type` (`"stream"`/`"channel"` or `"private"`/`"direct"`), `to` (a channel
--   name or id, or a list of emails or user ids), `topic`, `content`
-- @tparam[opt] function callback as for `request`: then it returns at once
-- @treturn table the reply (`reply.id` is the new message's id), or `nil, msg, err`; with a
--   callback, a handle
-- @usage assert(client:send_message{ type = "stream", to = "Denmark", topic = "Castle", content = "Hello" })
-- client:send_message({ type = "private", to = { 11 }, content = "hi" }, function(reply, msg)
--   if not reply then print("not sent: " .. msg) end
-- end)
function Client:send_message(msg, callback)
  if type(msg) ~= "table" then error("zulip: send_message expects a table", 2) end
  if type(msg.content) ~= "string" then error("zulip: send_message needs 'content' (a string)", 2) end
  check_callback(callback, 2)
  local r, m, e = request(self, "POST", "messages", msg, callback)  -- no tail call: errors name our caller
  return r, m, e
end

local function is_int(v)
  return type(v) == "number" and v == math.floor(v) and v > -2^53 and v < 2^53
end

--- Cancel a request started with a callback (the handle that `client:request`,
-- `client:send_message` and `client:reply` return when given one): it ends at once and its
-- callback is not called. Idempotent; does nothing once the callback has run. (The handle's
-- class lives in the engine, `lua/zulip/engine.lua`.)
-- @function Request:cancel
-- @treturn boolean true
-- @usage local h = client:send_message(msg, function(reply) end)
-- h:cancel()

--- Whether a request started with a callback has ended (its callback has been queued or run).
-- @function Request:done
-- @treturn boolean
-- @usage if h:done() then print("sent") end

-- Where a reply to message `m` goes: a send_message table, or nil when the client's own user id
-- is needed first (no participant's email is the client's: a realm that hides emails shows
-- addresses like user10@chat.example.com in display_recipient).
local function reply_target(c, m, content)
  local kind = m.type
  if kind == "stream" or kind == "channel" then
    local to = is_int(m.stream_id) and m.stream_id or m.display_recipient
    local topic = m.subject
    if topic == nil then topic = m.topic end
    if (type(to) ~= "string" and not is_int(to)) or type(topic) ~= "string" then
      error("zulip: reply: a channel message needs 'display_recipient' (or 'stream_id') and 'subject'", 3)
    end
    return { type = "stream", to = to, topic = topic, content = content }
  end
  local list = m.display_recipient
  if (kind ~= "private" and kind ~= "direct") or type(list) ~= "table" then
    error("zulip: reply: not a message event's message (its 'type' must be \"stream\" or \"private\", and"
          .. " a direct message's 'display_recipient' is a list of users)", 3)
  end
  for _, r in ipairs(list) do
    if type(r) ~= "table" or not is_int(r.id) then
      error("zulip: reply: each of a direct message's 'display_recipient' needs an integer 'id'", 3)
    end
  end
  local me = c.user_id
  if me == nil then
    local email = c.email:lower()
    for _, r in ipairs(list) do
      if type(r.email) == "string" and r.email:lower() == email then me = r.id end
    end
    if me == nil then return nil end
    c.user_id = me
  end
  local to = {}
  for _, r in ipairs(list) do
    if r.id ~= me then to[#to + 1] = r.id end
  end
  if #to == 0 then to[1] = me end  -- a conversation with oneself
  return { type = "private", to = to, content = content }
end

-- The handle of a reply that first had to ask for the client's user id: two requests, one handle.
local Reply = {}
Reply.__index = Reply
Reply.__name = "zulip.Reply"

--- Cancel a reply started with a callback (the handle `client:reply` returns): like a request
-- handle's `cancel`, also while it is still asking the server for the client's user id.
-- @treturn boolean true
-- @usage local h = client:reply(m, "pong", function() end); h:cancel()
function Reply:cancel()
  self.cancelled = true
  if self.h then self.h:cancel() end
  return true
end

--- Whether the reply has ended (its callback has been queued or run).
-- @treturn boolean
-- @usage if h:done() then print("replied") end
function Reply:done()
  return self.finished == true
end

--- Reply to a message where it came from: in the same channel and topic, or in the same direct
-- message conversation. For a direct message `to` lists the conversation's participants by user
-- id without the client's own user (the server adds the sender itself), so a one-to-one DM is
-- answered to its sender and a group DM to the whole group.
--
-- Which participant is the client's own user: the one whose email is `client.email`; when none
-- is (a realm that hides emails shows `user10@...` addresses), the client asks the server once
-- (`GET /api/v1/users/me`) and keeps the answer in `client.user_id`. With a callback that request
-- goes out with a callback too, so `reply` never blocks a loop that drives the client.
-- @tparam table message a message event's `message` (`event.message` from `q:each`)
-- @tparam string content the reply's text (Zulip markdown)
-- @tparam[opt] function callback as for `send_message`: then it returns at once
-- @treturn table what `send_message` returns: the server's reply (`reply.id` is the new message's
--   id), or `nil, msg, err` (e.g. `BAD_REQUEST` when the channel does not exist); with a callback,
--   a handle with `h:cancel()` and `h:done()`
-- @usage for event in q:each() do
--   local m = event.message
--   if m.sender_email ~= client.email and m.content == "ping" then
--     local sent, msg = client:reply(m, "pong")
--     if not sent then io.stderr:write("could not reply: ", msg, "\n") end
--   end
-- end
-- client:reply(m, "pong", function(sent, msg) if not sent then print(msg) end end)  -- from a loop
function Client:reply(message, content, callback)
  if type(message) ~= "table" then error("zulip: reply expects a message (a table) and its content", 2) end
  if type(content) ~= "string" then error("zulip: reply needs the content (a string)", 2) end
  check_callback(callback, 2)
  engine_of(self)
  local target = reply_target(self, message, content)
  if target then
    local r, msg, err = self:send_message(target, callback)
    return r, msg, err
  end
  if not callback then
    local me, msg, err = self:request("GET", "users/me")
    if not me then return nil, msg, err end
    if not is_int(me.user_id) then
      return errors.fail(errors.new("PROTOCOL", "users/me reply lacks user_id"))
    end
    self.user_id = me.user_id
    return self:send_message(reply_target(self, message, content))
  end
  local h = setmetatable({}, Reply)
  local function finish(r, msg, err)
    h.finished = true
    callback(r, msg, err)
  end
  h.h = self:request("GET", "users/me", nil, function(me, msg, err)
    if h.cancelled then return end
    if not me then return finish(nil, msg, err) end
    if not is_int(me.user_id) then
      local e = errors.new("PROTOCOL", "users/me reply lacks user_id")
      return finish(nil, e.message, e)
    end
    self.user_id = me.user_id
    h.h = self:send_message(reply_target(self, message, content), finish)
  end)
  return h
end

--- The file descriptor a loop watches for this client: readable when `client:step` has work
-- (socket or timer activity of any of its requests and queues, the end of a backoff, a callback
-- to run). With the epoll and kqueue cores (`zulip.POLLER`), one fd for everything the client does.
--
-- With the poll core there is no such fd (poll(2) keeps no set in the kernel): `pollfd()` is then
-- a self-pipe, readable when the client has work to do at once that needs no I/O (a callback to
-- run, a request to start); a socket's activity and a timer's end do not make it readable. So a loop that
-- watches only it must also follow `timeout()`, which is then at most `zulip.POLL_SLICE` seconds
-- while requests are in flight. `client:pollfds()` lists every fd instead, for loops that can
-- watch many (`zulip.step_all` does).
-- @treturn integer
-- @usage local fd = client:pollfd()
function Client:pollfd()
  local e = engine_of(self)
  e.driven = true
  return e.core:pollfd()
end

--- Every fd a loop must watch for this client and for what, right now: a list of
-- `{ fd = n, events = "r" | "w" | "rw" }`. With epoll and kqueue just `pollfd()` for `"r"`; with
-- the poll core its self-pipe, then each socket in use (the list changes with every step). With
-- these, `client:timeout()` needs no `zulip.POLL_SLICE` cap: a loop that watches them all and
-- wakes at `timeout()` misses nothing.
-- @treturn table
-- @usage for _, w in ipairs(client:pollfds()) do print(w.fd, w.events) end
function Client:pollfds()
  return engine_of(self):pollfds()
end

--- The poll events wanted on `pollfd`: always `"r"` (the cqueues protocol).
-- @treturn string `"r"`
-- @usage assert(client:events() == "r")
function Client:events()
  engine_of(self)
  return "r"
end

--- Seconds until the client needs `step`, or nil when only its `pollfd` matters. On the poll
-- core at most `zulip.POLL_SLICE` while requests are in flight (see `pollfd`).
-- @treturn number|nil
-- @usage local t = client:timeout()
function Client:timeout()
  return self:_loop_timeout(false)
end

--- `timeout()`, exact (no `POLL_SLICE` cap) when `exact`: for loops that watch every fd of
-- `pollfds()`.
-- @local
function Client:_loop_timeout(exact)
  local e = engine_of(self)
  local t = e:timeout(exact)
  if t == 0 then return 0 end
  -- Besides the engine's own timeout (requests in flight, backoffs ending, queues about to start a
  -- request), only queues with news and those the policy has yet to take over want a step: the
  -- others are waiting on the engine. So a loop over a thousand queues asks a few.
  local et, open = t or false, e.queues
  local function ask(set)
    for q in pairs(set) do
      -- a queue used by hand (register, get_events) is not driven by client:step: it asks nothing
      if open[q] ~= nil and not q:_state()._manual then
        local qt = q:_loop_timeout(exact, et)
        if qt ~= nil and (t == nil or qt < t) then t = qt end
      end
    end
  end
  ask(e.news)
  ask(e.unsettled)
  return t
end

--- One bounded pass over everything the client does: drives its requests (running their
-- callbacks) and all of its open queues (a queue never used yet is registered), waiting at most
-- `timeout` seconds (0: never blocks) for something to happen.
-- @tparam[opt=0] number timeout
-- @treturn table a list, in the order the queues were made, of `{ queue = q, events = list }` for
--   each queue that got events and `{ queue = q, error = err, message = msg }` for each that
--   failed fatally (it then stays quiet until stepped again); empty when nothing happened
-- @usage while running do
--   for _, r in ipairs(client:step(0)) do
--     for _, ev in ipairs(r.events or {}) do handle(r.queue, ev) end
--   end
-- end
function Client:step(timeout)
  local e = engine_of(self)
  if timeout == nil then timeout = 0 end
  if type(timeout) ~= "number" or timeout < 0 or timeout ~= timeout then
    error("zulip: step timeout must be a number >= 0", 2)
  end
  e.driven = true
  -- the policy takes over the queues that need it (a queue used by hand stays so); the others
  -- are driven already, so a step of a thousand queues does not visit them all
  local unsettled, open = e.unsettled, e.queues
  local u = next(unsettled)
  while u ~= nil do
    unsettled[u] = nil
    if open[u] ~= nil and not u:_state()._manual then u:_stepping() end
    u = next(unsettled)
  end
  local deadline = core.now() + timeout
  local first = true
  local news = e:news_list()
  while true do
    local left = deadline - core.now()
    if news[1] ~= nil or (not first and left <= 0) or e.is_closed then break end
    first = false
    e:pump(left > 0 and left or 0)
    news = e:news_list()
  end
  local out = {}
  for _, q in ipairs(news) do
    local events, msg, err = q:_collect()
    e.news[q] = nil
    if events == nil then
      out[#out + 1] = { queue = q, error = err, message = msg }
    elseif #events > 0 then
      out[#out + 1] = { queue = q, events = events }
    end
  end
  if not e.is_closed then e:arm() end
  return out
end

--- Close the client: its queues are closed (their DELETEs go out together), what is pending is
-- given at most `timeout` seconds (the client's, by default), then the connections close.
-- Requests still pending get their callback with a `NETWORK` error. Idempotent.
-- @tparam[opt] number timeout seconds
-- @treturn boolean true
-- @usage client:close()
function Client:close(timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("zulip: close timeout must be a number >= 0", 2)
  end
  self._engine:close(timeout or self._timeout)
  return true
end

--- Whether the client is closed.
-- @treturn boolean
-- @usage if client:closed() then client = zulip.client{} end
function Client:closed()
  return self._engine.is_closed
end

return zulip
