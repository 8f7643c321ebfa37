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

-- Runs a small Python script in the background (python3 is bootstrapped for the dev server).
local function background_python(lines)
  local script = os.tmpname()
  table.insert(lines, 1, "import base64, json, os, ssl, sys, time, urllib.parse, urllib.request as r")
  table.insert(lines, 2, "os.unlink(sys.argv[0])")
  M.write_file(script, table.concat(lines, "\n") .. "\n")
  os.execute("python3 " .. shquote(script) .. " >/dev/null 2>&1 &")
end

local function py_auth(u)
  return ("base64.b64encode(%q.encode()).decode()"):format(u.email .. ":" .. u.api_key)
end

-- The Python lines that POST a message as user `u` to the server at `base` (http or https, whose
-- certificate is not checked); `form` is a Python expression for the form body, `indent` goes
-- before each line.
local function py_post_message(base, u, form, indent)
  indent = indent or ""
  return {
    indent .. ("req = r.Request(%q, data=(%s).encode(), method='POST')"):format(base .. "/api/v1/messages", form),
    indent .. "req.add_header('Authorization', 'Basic ' + " .. py_auth(u) .. ")",
    indent .. "req.add_header('Content-Type', 'application/x-www-form-urlencoded')",
    indent .. "r.urlopen(req, timeout=10, context=ssl._create_unverified_context()).read()",
  }
end

local function append(lines, more)
  for _, l in ipairs(more) do lines[#lines + 1] = l end
  return lines
end

--- `user` ("alice", ...) sends `msg` (a form table for POST /messages) from a background
-- process after `seconds`. Returns at once.
function M.send_later(srv, seconds, user, msg)
  local form = ("%q"):format(require("spec.support.devserver").form(msg))
  local lines = { ("time.sleep(%.3f)"):format(seconds) }
  background_python(append(lines, py_post_message(srv.site, srv.users[user], form)))
end

--- Do something to the dev server from a background process after `seconds`, so that a spec
-- blocked in a long-poll sees it happen. Returns at once. `action` is one of:
--   { control = { method, path, body } }                     a /test/ control call
--   { user = "bot", get = "/api/v1/events?..." }            an authenticated GET (may long-poll)
--   { messages = { count = n, to = "Denmark", topic = "t", spread = secs } }
--       Alice sends messages "1".."n" (or "first".."first + n - 1", or the strings of a
--       `contents` list instead of count), one by one, in order, spread over `spread` seconds
function M.later(srv, seconds, action)
  local base = "http://127.0.0.1:" .. (srv.control_port or srv.port)
  local lines = { ("time.sleep(%.3f)"):format(seconds) }
  if action.control then
    local method, path, body = action.control[1], action.control[2], action.control[3]
    lines[#lines + 1] = ("req = r.Request(%q, data=json.dumps(json.loads(%q)).encode(), method=%q)")
      :format(base .. path, require("cjson").encode(body or {}), method)
    lines[#lines + 1] = "req.add_header('Content-Type', 'application/json')"
    lines[#lines + 1] = "r.urlopen(req, timeout=10).read()"
  elseif action.get then
    lines[#lines + 1] = ("req = r.Request(%q)"):format(base .. action.get)
    lines[#lines + 1] = "req.add_header('Authorization', 'Basic ' + " .. py_auth(srv.users[action.user]) .. ")"
    lines[#lines + 1] = "r.urlopen(req, timeout=30).read()"
  elseif action.messages then
    local m = action.messages
    local contents = m.contents
    if not contents then
      contents = {}
      for i = m.first or 1, (m.first or 1) + m.count - 1 do contents[#contents + 1] = tostring(i) end
    end
    lines[#lines + 1] = ("contents = json.loads(%q)"):format(require("cjson").encode(contents))
    lines[#lines + 1] = ("gap = %.4f / len(contents)"):format(m.spread or 0)
    lines[#lines + 1] = "for c in contents:"
    local form = ("'type=stream&to=%s&topic=%s&content=' + urllib.parse.quote(c)"):format(m.to, m.topic)
    append(lines, py_post_message(base, srv.users.alice, form, "    "))
    lines[#lines + 1] = "    time.sleep(gap)"
  else
    error("util.later: unknown action")
  end
  background_python(lines)
end

--- Send messages from a background process as soon as every email in `owners` has an event
-- queue on the dev server (polled, for at most 15 s), so a bot started right after this call
-- cannot miss them by registering late. `sends` is a list of { user, msg } (as for send_later),
-- sent one after the other in this order. Returns at once.
function M.send_when_queued(srv, owners, sends)
  local base = "http://127.0.0.1:" .. (srv.control_port or srv.port)
  local form = require("spec.support.devserver").form
  local lines = {
    ("owners, deadline = json.loads(%q), time.monotonic() + 15"):format(require("cjson").encode(owners)),
    "while time.monotonic() < deadline:",
    ("    queues = json.load(r.urlopen(%q, timeout=10))['queues']"):format(base .. "/test/queues"),
    "    if all(any(q['owner'] == o for q in queues) for o in owners):",
    "        break",
    "    time.sleep(0.02)",
  }
  for _, send in ipairs(sends) do
    append(lines, py_post_message(base, srv.users[send[1]], ("%q"):format(form(send[2]))))
  end
  background_python(lines)
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
