--- The scenario that every real host (Neovim, LÖVE, WeeChat) plays for the host specs
-- (spec/host_*_spec.lua), loaded inside the host: plain Lua that runs on LuaJIT and 5.3.
--
-- The host gives it a clock, a client and a main queue, drives the client in its own way
-- (zulip.uv, q:step(0) per frame, hook_fd on the pollfd) and calls `S:tick()` from its own timer
-- or frame and `S:on_event(ev)` for each event of the main queue. The scenario then does three
-- slow operations, one after the other, and records when every tick came:
--
--   send   `client:send_message(msg, callback)` while the server delays the reply
--   close  `q2:close()` on a second, registered queue while the server delays DELETE
--   gc     a third registered queue is dropped and `collectgarbage()` runs, DELETE delayed
--
-- The spec side (spec/support/hosts.lua) arms each fault when the host asks for it (the file
-- `want-<op>` in the out dir), then makes the dev server push a message "go <op>" to the main
-- queue; the operation starts from the host's event handler. The result file `result` is a Lua
-- table literal (no JSON library in every host): tick times and each operation's window in ms
-- since the scenario began, what each callback got, and `error` when anything raised.
--
-- Environment: ZULIP_HOST_OUT (the out dir), ZULIP_HOST_SEND_WAIT (seconds a send's callback is
-- awaited, default 6), ZULIP_HOST_SEND_WINDOW (seconds measured when no callback came, default
-- 2.5), ZULIP_HOST_CLOSE_WINDOW and ZULIP_HOST_GC_WINDOW (seconds each of those
-- is watched, default 3.5), ZULIP_HOST_DEADLINE (seconds for the whole scenario, default 40),
-- ZULIP_HOST_OPS (the operations to do, in order: default "send,close,gc").
local M = {}

local unpack = table.unpack or unpack  -- luacheck: ignore 143

local S = {}
S.__index = S

local function number_env(name, default)
  return tonumber(os.getenv(name) or "") or default
end

-- A Lua literal for plain data (numbers, strings, booleans, tables without cycles).
local function serialize(v, out)
  local t = type(v)
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      out[#out + 1] = "nil"
    elseif v == math.floor(v) and v > -2^53 and v < 2^53 then
      out[#out + 1] = string.format("%d", v)
    else
      out[#out + 1] = string.format("%.17g", v)
    end
  elseif t == "string" then
    out[#out + 1] = string.format("%q", v)
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif t == "table" then
    out[#out + 1] = "{"
    local n = #v
    for i = 1, n do
      serialize(v[i], out)
      out[#out + 1] = ","
    end
    for k, x in pairs(v) do
      if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then
        out[#out + 1] = "["
        serialize(k, out)
        out[#out + 1] = "]="
        serialize(x, out)
        out[#out + 1] = ","
      end
    end
    out[#out + 1] = "}"
  else
    out[#out + 1] = string.format("%q", tostring(v))
  end
end
M.serialize = function(v)
  local out = {}
  serialize(v, out)
  return table.concat(out)
end

--- A new scenario.
-- o: `host` (name), `now` (a clock in seconds), `interval` (the host timer's period in seconds,
-- nil for a frame loop), `client`, `queue` (the main queue), `quit` (ends the host),
-- `send` (optional: `send(msg, callback)` instead of `client:send_message`), `info` (a table of
-- host facts copied into the result), `before_finish` (optional: `before_finish(info)` adds to it)
function M.new(o)
  local out = os.getenv("ZULIP_HOST_OUT")
  if not out or out == "" then error("host_scenario: ZULIP_HOST_OUT is not set") end
  local self = setmetatable({
    host = o.host, now = o.now, interval = o.interval, client = o.client, queue = o.queue,
    quit_host = o.quit, send = o.send, before_finish = o.before_finish, out = out,
    send_wait = number_env("ZULIP_HOST_SEND_WAIT", 6),
    send_window = number_env("ZULIP_HOST_SEND_WINDOW", 2.5),
    close_window = number_env("ZULIP_HOST_CLOSE_WINDOW", 3.5),
    gc_window = number_env("ZULIP_HOST_GC_WINDOW", 3.5),
    deadline_s = number_env("ZULIP_HOST_DEADLINE", 40),
    todo = {},
    phase = "register", ticks = {}, events = 0, ops = {}, notes = {},
    info = o.info or {},
  }, S)
  for op in (os.getenv("ZULIP_HOST_OPS") or "send,close,gc"):gmatch("[^,]+") do self.todo[#self.todo + 1] = op end
  self.t_base = self.now()
  return self
end

function S:ms()
  return (self.now() - self.t_base) * 1000
end

function S:write(name, text)
  local path = self.out .. "/" .. name
  local f = assert(io.open(path .. ".tmp", "w"))
  f:write(text)
  f:close()
  assert(os.rename(path .. ".tmp", path))
end

function S:note(msg)
  self.notes[#self.notes + 1] = ("%.1f ms: %s"):format(self:ms(), tostring(msg))
end

--- Writes the result (once) and ends the host. `err` is nil when the scenario ran to its end.
function S:finish(err)
  if self.finished then return end
  self.finished = true
  if self.before_finish then
    local ok, e = pcall(self.before_finish, self.info)
    if not ok then err = (err and (err .. "; ") or "") .. "before_finish raised: " .. tostring(e) end
  end
  local r = {
    host = self.host, error = err, phase = self.phase, ticks = self.ticks, events = self.events,
    interval_ms = self.interval and self.interval * 1000 or nil, ops = self.ops, notes = self.notes,
    info = self.info, lua = (type(jit) == "table" and jit.version) or _VERSION,
    core = package.searchpath and package.searchpath("zulip.core", package.cpath) or nil,
    queue_ids = self.queue_ids, warm_ms = self.t_warm,
  }
  local ok, text = pcall(M.serialize, r)
  if not ok then text = M.serialize({ host = self.host, error = "serializing the result: " .. tostring(text) }) end
  self:write("result", "return " .. text .. "\n")
  if self.quit_host then
    local qok, qerr = pcall(self.quit_host)
    if not qok then io.stderr:write("host_scenario: quitting failed: ", tostring(qerr), "\n") end
  end
end

--- Runs f(...) and turns a raise into a failed result (with a traceback). Returns f's results.
function S:guard(f, ...)
  if self.finished then return end
  local args, n = { ... }, select("#", ...)
  local res = { xpcall(function() return f(unpack(args, 1, n)) end, debug.traceback) }
  if not res[1] then
    self:finish("raised in phase " .. self.phase .. ": " .. tostring(res[2]))
    return
  end
  return unpack(res, 2, table.maxn and table.maxn(res) or #res)
end

-- Registers a queue nobody steps (blocking, before the slow part): the one to close, the one to
-- collect. Its event types are ones nothing here ever sends, so it stays quiet.
local function side_queue(client)
  local q = client:queue{ event_types = { "realm_emoji" } }
  local state, msg = q:register()
  if not state then error("registering a side queue failed: " .. tostring(msg)) end
  return q
end

--- Before the host's loop starts: registers the two side queues (blocking: nothing is slow yet).
function S:prepare()
  self.close_q = side_queue(self.client)
  self.gc_q = side_queue(self.client)
  self.gc_ref = setmetatable({ self.gc_q }, { __mode = "v" })
  self.side_ids = { close = self.close_q.id, gc = self.gc_q.id }
end

-- The end of an operation's window: what the spec measures ticks across.
function S:end_window(op)
  op.t1 = self:ms()
  self.phase = "idle"
end

-- Asks for the next operation, or ends the scenario after the last.
function S:want_next()
  local name = table.remove(self.todo, 1)
  if not name then return self:finish(nil) end
  self.phase = "want-" .. name
  self:write("want-" .. name, "")
end

--- Call from the host's timer (or once per frame).
function S:tick()
  if self.finished then return end
  local t = self:ms()
  self.ticks[#self.ticks + 1] = t
  if t > self.deadline_s * 1000 then
    return self:finish("the scenario did not end within " .. self.deadline_s .. " s (phase " .. self.phase .. ")")
  end
  local ph = self.phase
  if ph == "register" then
    if self.queue.id then
      self.queue_ids = { main = self.queue.id, close = self.side_ids.close, gc = self.side_ids.gc }
      self:write("ids", M.serialize(self.queue_ids))
      self.phase, self.t_warm = "warm", t
    end
  elseif ph == "warm" then
    if t - self.t_warm >= 500 then self:want_next() end
  elseif ph == "send" then
    local op = self.ops.send
    if op.called or t - op.t0 >= self.send_wait * 1000 then
      self:end_window(op)
      -- until the reply came; without one, as long as the server held it (plus a little): a
      -- send that blocked through the whole delay and never called back shows up as a freeze
      if op.t_cb then op.t1 = op.t_cb else op.t1 = math.min(op.t1, op.t0 + self.send_window * 1000) end
      self:want_next()
    end
  elseif ph == "close" then
    local op = self.ops.close
    if t - op.t0 >= self.close_window * 1000 then
      self:end_window(op)
      self:want_next()
    end
  elseif ph == "gc" then
    local op = self.ops.gc
    if t - op.t0 >= self.gc_window * 1000 then
      self:end_window(op)
      op.collected = self.gc_ref[1] == nil
      self:want_next()
    end
  end
end

-- The three operations. Each records t0 (just before the call), call_ms (how long the call took
-- to return) and, for send, what the callback got and when.
local start = {}

function start.send(self)
  local op = { t0 = self:ms() }
  self.ops.send = op
  self.phase = "send"
  local msg = { type = "stream", to = "Denmark", topic = "hosts", content = "sent from " .. self.host }
  local function callback(reply, emsg, err)
    local ok, e = pcall(function()
      if op.called then
        op.called_again = (op.called_again or 0) + 1
        return
      end
      op.called, op.t_cb = true, self:ms()
      if reply then
        op.reply_id = type(reply) == "table" and reply.id or nil
        op.reply_result = type(reply) == "table" and reply.result or nil
      else
        op.err_msg, op.err_code = tostring(emsg), type(err) == "table" and err.code or nil
      end
    end)
    if not ok then self:note("send callback: " .. tostring(e)) end
  end
  local handle
  if self.send then
    handle = self.send(msg, callback)
  else
    handle = self.client:send_message(msg, callback)
  end
  op.call_ms = self:ms() - op.t0
  op.handle_type = type(handle)
  local ok, cancel = pcall(function() return handle.cancel end)
  op.handle_cancel = ok and type(cancel) or ("indexing the handle raised: " .. tostring(cancel))
  if type(handle) == "table" and handle.id and not op.called then
    op.returned_reply_id = handle.id  -- a blocking send's reply (the callback was not used)
  end
end

function start.close(self)
  local op = { t0 = self:ms(), qid = self.close_q.id }
  self.ops.close = op
  self.phase = "close"
  self.close_q:close()
  op.call_ms = self:ms() - op.t0
  op.closed = self.close_q.closed
end

function start.gc(self)
  local op = { t0 = self:ms(), qid = self.gc_q.id }
  self.ops.gc = op
  self.phase = "gc"
  self.gc_q = nil  -- the last strong reference: the queue is garbage now
  collectgarbage("collect")
  collectgarbage("collect")  -- a second cycle frees what the first one's finalizers released
  op.call_ms = self:ms() - op.t0
  op.collected_at_once = self.gc_ref[1] == nil
end

--- Call for each event of the main queue (from the host's own event handler).
function S:on_event(ev)
  if self.finished then return end
  self.events = self.events + 1
  if type(ev) ~= "table" or ev.type ~= "message" or type(ev.message) ~= "table" then return end
  local which = tostring(ev.message.content):match("^go (%a+)")
  if not which then return end
  if self.phase ~= "want-" .. which then
    return self:note("'go " .. which .. "' came in phase " .. self.phase .. "; ignored")
  end
  start[which](self)
end

M.new_scenario = M.new
return M
