-- Small helpers shared by specs: the Lua binary under test, temp files, subprocesses.
local M = {}

local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/support/util%.lua$") or "."
M.root = root

--- "" for the default poller's build, else "-<poller>" (make exports it: `make test POLLER=poll`).
M.build_tag = os.getenv("ZULIP_BUILD_TAG") or ""

--- The build directory of the module for a Lua ("5.4", "luajit"), relative to the root.
function M.build_dir(lua)
  return "build/" .. lua .. M.build_tag
end

--- The make arguments that build the same poller's core (none for the default one).
function M.make_poller()
  return M.build_tag == "" and "" or (" POLLER=" .. M.build_tag:sub(2))
end

--- The Lua Neovim runs, as make spells it: "luajit" (Debian's x86-64 Neovim), or "5.1" where it is
-- built with PUC Lua 5.1 (Debian's arm64 Neovim 0.7: `nvim --version` says "Lua 5.1").
function M.nvim_lua()
  local p = assert(io.popen("nvim --version 2>/dev/null"))
  local text = p:read("*a")
  p:close()
  return text:find("LuaJIT", 1, true) and "luajit" or "5.1"
end

--- The interpreter the suite runs under (run-specs.sh sets ZULIP_TEST_LUA).
function M.lua_bin()
  local v = os.getenv("ZULIP_TEST_LUA") or "5.4"
  return v == "luajit" and "luajit" or ("lua" .. v)
end

function M.write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

function M.read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function M.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p '" .. p .. "'"))
  return p
end

local function shquote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.shquote = shquote

--- Run Lua code in a fresh interpreter with the project on its paths; returns output, ok.
-- env: table of environment variables to set (false to unset).
function M.run_lua(code, env)
  local parts, sets = { "env" }, {}
  for k, v in pairs(env or {}) do
    if v == false then parts[#parts + 1] = "-u " .. k else sets[#sets + 1] = k .. "=" .. shquote(v) end
  end
  for _, s in ipairs(sets) do parts[#parts + 1] = s end
  local file = os.tmpname()
  M.write_file(file, code)
  local cmd = table.concat(parts, " ") .. " " .. M.lua_bin() .. " " .. shquote(file) .. " 2>&1"
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  local ok = p:close()
  os.remove(file)
  return out, ok == true or ok == 0
end

-- Scheduled actions (POST /test/schedule): the dev server's own thread runs `steps` in order, each
-- after its `delay`, so a spec blocked in a long-poll sees them happen. /test/reset cancels them.
local function schedule(srv, steps)
  return srv:control("POST", "/test/schedule", { steps = steps })
end
M.schedule = schedule

local function email_of(srv, user)
  local u = srv.users[user]
  if not u then error("unknown devserver user " .. tostring(user), 3) end
  return u.email
end

local function send_step(srv, user, msg, delay)
  return { delay = delay, send = { user = email_of(srv, user), message = msg } }
end

--- `user` ("alice", ...) sends `msg` (a form table for POST /messages) after `seconds`: the dev
-- server does it (POST /test/schedule). Returns at once.
function M.send_later(srv, seconds, user, msg)
  schedule(srv, { send_step(srv, user, msg, seconds) })
end

--- Have the dev server do something to itself after `seconds` (POST /test/schedule), so that a
-- spec blocked in a long-poll sees it happen. Returns at once. `action` is one of:
--   { control = { method, path, body } }                     a /test/ control call
--   { user = "bot", get = "/api/v1/events?..." }            an authenticated GET (may long-poll)
--   { messages = { count = n, to = "Denmark", topic = "t", spread = secs } }
--       Alice sends messages "1".."n" (or "first".."first + n - 1", or the strings of a
--       `contents` list instead of count), one by one, in order, spread over `spread` seconds
function M.later(srv, seconds, action)
  local step
  if action.control then
    local method, path, body = action.control[1], action.control[2], action.control[3]
    step = { control = { method = method, path = path, body = body or {} } }
  elseif action.get then
    step = { get = { user = email_of(srv, action.user), path = action.get } }
  elseif action.messages then
    local m = action.messages
    local contents = m.contents
    if not contents then
      contents = {}
      for i = m.first or 1, (m.first or 1) + m.count - 1 do contents[#contents + 1] = tostring(i) end
    end
    step = { messages = { user = srv.users.alice.email, contents = contents, spread = m.spread or 0,
                          to = m.to, topic = m.topic } }
  else
    error("util.later: unknown action")
  end
  step.delay = seconds
  schedule(srv, { step })
end

--- Send messages as soon as every email in `owners` has an event queue on the dev server (the
-- server waits, for at most 15 s), so a bot started right after this call cannot miss them by
-- registering late. `sends` is a list of { user, msg } (as for send_later), sent one after the
-- other in this order. Returns at once.
function M.send_when_queued(srv, owners, sends)
  local steps = { { wait_queues = { owners = owners, timeout = 15 } } }
  for _, send in ipairs(sends) do steps[#steps + 1] = send_step(srv, send[1], send[2]) end
  schedule(srv, steps)
end

--- A client for the dev server's bot (timeout 5 s); `extra` adds or overrides options.
function M.client(srv, extra)
  local bot = srv.users.bot
  local opts = { site = srv.site, email = bot.email, api_key = bot.api_key, timeout = 5 }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return require("zulip").client(opts)
end

--- Inside a `describe` block: a dev server for its specs, started in `setup` with
-- `devserver.start(opts)`, reset (POST /test/reset, then `opts.config` as a /test/config body
-- when given) before each spec, and stopped in `teardown`. Returns a stand-in that forwards every
-- field and method to the running server, so `srv:control(...)`, `srv.site` work in the specs;
-- `srv:replace(new)` makes it stand for another server (one restarted on the same port).
--
--   local srv = util.use_devserver{ heartbeat = 30, config = { rate_limit = cjson.null } }
function M.use_devserver(opts)
  opts = opts or {}
  local start = {}
  for k, v in pairs(opts) do if k ~= "config" then start[k] = v end end
  local real
  local stand_in = setmetatable({}, {
    __index = function(_, k)
      if k == "replace" then return function(_, new) real = new end end
      if real == nil then error("util.use_devserver: the server starts in setup", 2) end
      local v = real[k]
      if type(v) == "function" then return function(_, ...) return v(real, ...) end end
      return v
    end,
    __newindex = function(_, k, v) real[k] = v end,
  })
  local busted = require("busted")  -- its hooks are not globals inside a module
  busted.setup(function() real = require("spec.support.devserver").start(start) end)
  busted.teardown(function() if real then real:stop() end end)
  busted.before_each(function()
    real:control("POST", "/test/reset", {})
    if opts.config then real:control("POST", "/test/config", opts.config) end
  end)
  return stand_in
end

--- The list 1..n.
function M.seq(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- quick retries for specs
M.FAST_BACKOFF = { base = 0.01, factor = 2, cap = 0.05 }

--- Iterates `q:each` until `n` messages arrived and returns their contents as numbers, in the
-- order they came, and the list of retries (on_retry's infos). Bounded in time: raises "spec: no
-- progress in time" after opts.limit seconds (20). opts: on_event(k) after the k-th message
-- (may inject faults or send more), on_reset, on_retry(info) (called as well), backoff
-- (M.FAST_BACKOFF), limit.
function M.collect(q, n, opts)
  opts = opts or {}
  local got, retries, t0 = {}, {}, M.now()
  local function guard()
    if M.now() - t0 > (opts.limit or 20) then error("spec: no progress in time", 0) end
  end
  for ev in q:each{ heartbeats = true, backoff = opts.backoff or M.FAST_BACKOFF, on_reset = opts.on_reset,
                    on_retry = function(info)
                      retries[#retries + 1] = info
                      if opts.on_retry then opts.on_retry(info) end
                      guard()
                    end } do
    guard()
    if ev.type == "message" then
      got[#got + 1] = tonumber(ev.message.content)
      if opts.on_event then opts.on_event(#got) end
      if #got >= n then break end
    end
  end
  return got, retries
end

--- A clock for bounded waits in specs.
function M.now()
  return require("zulip.core").now()
end

return M
