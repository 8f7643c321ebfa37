-- Small helpers shared by specs: the Lua binary under test, temp files, subprocesses.
local M = {}

local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/support/util%.lua$") or "."
M.root = root

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

--- Post a message as `user` after `seconds`, from a background process, so that a spec can
-- block in a long-poll and still see a message arrive. Returns at once.
function M.send_later(srv, seconds, user, msg)
  local u = srv.users[user]
  local body = require("spec.support.devserver").form(msg)
  local script = os.tmpname()
  M.write_file(script, table.concat({
    "import base64, os, sys, time, urllib.request as r",
    "os.unlink(sys.argv[0])",
    ("time.sleep(%.3f)"):format(seconds),
    ("req = r.Request(%q, data=%q.encode(), method='POST')"):format(srv.site .. "/api/v1/messages", body),
    ("req.add_header('Authorization', 'Basic ' + base64.b64encode(%q.encode()).decode())")
      :format(u.email .. ":" .. u.api_key),
    "req.add_header('Content-Type', 'application/x-www-form-urlencoded')",
    "r.urlopen(req, timeout=10).read()",
  }, "\n") .. "\n")
  os.execute("python3 " .. shquote(script) .. " >/dev/null 2>&1 &")
end

--- A clock for bounded waits in specs.
function M.now()
  return require("zulip.core").now()
end

return M
