--- Start, control and stop the Zulip dev server (devserver/zulip_devserver.py)
-- from specs, example tests and benchmarks.
--
--   local devserver = require("spec.support.devserver")
--   local srv = devserver.start{ heartbeat = 0.5 }
--   srv:control("POST", "/test/fault", { kind = "reset", count = 1 })
--   srv:send("alice", { type = "stream", to = "Denmark", topic = "t", content = "hi" })
--   srv:stop()
--
-- Needs only luasocket and lua-cjson; works on Lua 5.1-5.4 and LuaJIT.
-- It also carries a minimal HTTP/1.1 client (write_request, read_response,
-- http) so specs can drive the server byte-exactly, including half-finished
-- long-polls.
local socket = require("socket")
local mime = require("mime")
local cjson = require("cjson")

local M = {}

M.users = {
  bot = { email = "bot@example.com", api_key = "botkey0123456789ABCDEFGHIJKLMNOP",
          full_name = "Echo Bot", user_id = 10 },
  alice = { email = "alice@example.com", api_key = "alicekey0123456789ABCDEFGHIJKLMN",
            full_name = "Alice", user_id = 11 },
  deactivated = { email = "deactivated@example.com", api_key = "deadkey0123456789ABCDEFGHIJKLMNO",
                  full_name = "Deactivated User", user_id = 12 },
}

local START_TIMEOUT = 10   -- seconds to wait for the server's port file
local STOP_TIMEOUT = 3     -- seconds to wait for a clean exit before kill -9
local DEFAULT_HTTP_TIMEOUT = 10

-- The server script, found relative to this file so any cwd works.
local function server_script()
  local source = debug.getinfo(1, "S").source
  local dir = source:sub(1, 1) == "@" and source:sub(2):match("^(.*)/[^/]*$") or "."
  if dir:sub(1, 1) ~= "/" then
    -- Lua cannot chdir, so the start directory is still the current one.
    dir = (os.getenv("PWD") or ".") .. "/" .. dir
  end
  return dir .. "/../../devserver/zulip_devserver.py"
end
M.server_script = server_script()

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- os.execute returns a number on Lua 5.1/LuaJIT and true/nil on 5.2+.
local function run(cmd)
  local ok, _, code = os.execute(cmd)
  if type(ok) == "number" then return ok == 0 end
  return ok == true and (code == nil or code == 0)
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

local function make_temp_dir(prefix)
  local base = os.getenv("TMPDIR") or "/tmp"
  local p = assert(io.popen("mktemp -d " .. quote(base .. "/" .. prefix .. ".XXXXXX")))
  local dir = p:read("*l")
  p:close()
  assert(dir and dir ~= "", "mktemp -d failed")
  return dir
end

-- The pid of this Lua process: /proc/self opened from Lua itself (not via a
-- shell) is this process.
local function own_pid()
  local stat = read_file("/proc/self/stat")
  return stat and stat:match("^(%d+)")
end

-- For the other helpers in spec/support (nginx.lua): the same small tools.
M.quote, M.run, M.read_file, M.make_temp_dir, M.own_pid = quote, run, read_file, make_temp_dir, own_pid

--- True while process `pid` exists.  A zombie counts as gone: an orphaned
-- server is reaped by init, which may take a while.
function M.process_alive(pid)
  pid = tonumber(pid)
  if read_file("/proc/self/stat") then
    local stat = read_file("/proc/" .. pid .. "/stat")
    return stat ~= nil and stat:match(".*%)%s+(%a)") ~= "Z"
  end
  return run("kill -0 " .. pid .. " 2>/dev/null")
end

-- Form values: numbers without a fractional part are sent as integers, so a
-- float that cjson decoded on Lua 5.3+ (5.0) never goes out as "5.0", which
-- Zulip rejects.  Tables are JSON-encoded; strings go verbatim.
local function form_value(v)
  if type(v) == "number" and v == math.floor(v) and v > -2^53 and v < 2^53 then
    return string.format("%d", v)
  elseif type(v) == "table" then
    return cjson.encode(v)
  end
  return tostring(v)
end

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

--- Encodes a table as application/x-www-form-urlencoded, keys sorted.
function M.form(params)
  local keys = {}
  for k in pairs(params) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = urlencode(k) .. "=" .. urlencode(form_value(params[k]))
  end
  return table.concat(parts, "&")
end

--- The Authorization header value for a user table ({email=, api_key=}).
function M.basic_auth(user)
  return "Basic " .. (mime.b64(user.email .. ":" .. user.api_key))
end

--- Writes one HTTP/1.1 request on an open socket (luasocket or luasec).
-- opts: headers (table), body (string), close (send Connection: close).
function M.write_request(sock, method, target, opts)
  opts = opts or {}
  local body = opts.body or ""
  local lines = { method .. " " .. target .. " HTTP/1.1", "Host: 127.0.0.1" }
  local names = {}
  for name in pairs(opts.headers or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    lines[#lines + 1] = name .. ": " .. opts.headers[name]
  end
  if body ~= "" or method ~= "GET" then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  if opts.close then lines[#lines + 1] = "Connection: close" end
  return sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. body)
end

--- Reads one response.  Returns {status=, headers= (lower-case names), body=,
-- json= (decoded when the body is JSON)}, or nil, error, partial response
-- (status/headers/partial body, when the connection broke midway).
function M.read_response(sock)
  local line, err = sock:receive("*l")
  if not line then return nil, err end
  local status = tonumber(line:match("^HTTP/%d%.%d (%d%d%d)"))
  if not status then return nil, "bad status line: " .. line end
  local resp = { status = status, headers = {} }
  while true do
    local header, herr = sock:receive("*l")
    if not header then return nil, herr, resp end
    if header == "" then break end
    local name, value = header:match("^([^:]+):%s*(.-)%s*$")
    if name then resp.headers[name:lower()] = value end
  end
  local length = tonumber(resp.headers["content-length"])
  local body, berr, partial = sock:receive(length or "*a")
  if not body then
    resp.body = partial
    return nil, berr, resp
  end
  resp.body = body
  local ctype = resp.headers["content-type"] or ""
  if ctype:find("json", 1, true) and resp.headers["content-encoding"] ~= "gzip" then
    local ok, decoded = pcall(cjson.decode, body)
    if ok then resp.json = decoded end
  end
  return resp
end

--- One request on a new connection to 127.0.0.1:port.  opts as for
-- write_request plus: auth (user table: Basic auth), form (params table: the
-- query string for GET, a form body otherwise), json (table: JSON body),
-- timeout (seconds).  Returns read_response's results.
function M.http(port, method, target, opts)
  opts = opts or {}
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  local body = opts.body
  if opts.auth then headers.Authorization = M.basic_auth(opts.auth) end
  if opts.form and method == "GET" then
    local query = M.form(opts.form)
    if query ~= "" then target = target .. (target:find("?", 1, true) and "&" or "?") .. query end
  elseif opts.form then
    body = M.form(opts.form)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
  elseif opts.json then
    body = cjson.encode(opts.json)
    headers["Content-Type"] = "application/json"
  end
  local sock = socket.tcp()
  sock:settimeout(opts.timeout or DEFAULT_HTTP_TIMEOUT)
  local ok, err = sock:connect("127.0.0.1", port)
  if not ok then
    sock:close()
    return nil, "connect: " .. tostring(err)
  end
  local sent, serr = M.write_request(sock, method, target,
                                     { headers = headers, body = body, close = true })
  if not sent then
    sock:close()
    return nil, "send: " .. tostring(serr)
  end
  local resp, rerr, partial = M.read_response(sock)
  sock:close()
  return resp, rerr, partial
end

-- TLS material, made once per Lua process with the openssl command line.
local tls_files

local CERT_SCRIPT = [[
set -e
cd "$1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj "/CN=lua-zulip test CA" -keyout ca.key -out ca.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
for who in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=lua-zulip test $who" -keyout $who.key -out $who.csr
done
printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'extendedKeyUsage=serverAuth' \
  'basicConstraints=CA:FALSE' 'subjectKeyIdentifier=hash' 'authorityKeyIdentifier=keyid,issuer' \
  > server.ext
printf '%s\n' 'extendedKeyUsage=clientAuth' 'basicConstraints=CA:FALSE' \
  'subjectKeyIdentifier=hash' 'authorityKeyIdentifier=keyid,issuer' > client.ext
for who in server client; do
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 7 \
    -extfile $who.ext -out $who.pem
done
]]

-- A value whose finalizer runs fn when it is collected, at the latest when the Lua state closes
-- (busted closes it on exit under 5.2 and later; tools/run-specs.sh removes its TMPDIR for all).
local function at_close(fn)
  if newproxy then -- Lua 5.1 and LuaJIT: a table has no __gc there
    local p = newproxy(true)
    getmetatable(p).__gc = fn
    return p
  end
  return setmetatable({}, { __gc = fn })
end

--- Self-signed CA plus a server certificate (127.0.0.1, localhost) and a
-- client certificate signed by it; generated on first use, removed when this Lua process ends.
function M.tls_files()
  if not tls_files then
    local dir = make_temp_dir("lua-zulip-tls")
    local remover = at_close(function() run("rm -rf " .. quote(dir)) end)
    if not run("sh -c " .. quote(CERT_SCRIPT) .. " sh " .. quote(dir) .. " >"
               .. quote(dir .. "/openssl.log") .. " 2>&1") then
      error("generating TLS certificates failed:\n" .. (read_file(dir .. "/openssl.log") or ""), 2)
    end
    tls_files = {
      dir = dir, ca_file = dir .. "/ca.pem",
      server_cert = dir .. "/server.pem", server_key = dir .. "/server.key",
      client_cert = dir .. "/client.pem", client_key = dir .. "/client.key",
      remover = remover,
    }
  end
  return tls_files
end

--- The ports a server started with M.start's port files in `dir` listens on:
-- port, control_port (the plain twin's with `tls`, else port again), or nil
-- until every port file the server writes is there.  The server writes
-- --port-file before --plain-port-file, so with TLS the first file alone does
-- not mean the twin listens yet.
function M.read_ports(dir, tls)
  local port = tonumber(read_file(dir .. "/port") or "")
  local control_port = port
  if tls then control_port = tonumber(read_file(dir .. "/plain-port") or "") end
  if not (port and control_port) then return nil end
  return port, control_port
end

local Server = {}
Server.__index = Server

--- Starts the server in the background and waits until it listens.
-- opts: heartbeat (seconds), tls (bool), client_ca (bool: require client
-- certificates), args (extra command-line arguments; they come last, so they
-- override the defaults, e.g. {"--lifetime", "1"}), timeout (start timeout), port (listen on
-- this port instead of any free one: to restart a killed server where a proxy expects it; a
-- port still held by the dying server is retried until the start timeout).
function M.start(opts)
  opts = opts or {}
  local dir = make_temp_dir("lua-zulip-devserver")
  local python = os.getenv("LUA_ZULIP_PYTHON") or "python3"
  local argv = { python, M.server_script, "--host", "127.0.0.1", "--port", tostring(opts.port or 0),
                 "--port-file", dir .. "/port", "--lifetime", "600" }
  local parent = own_pid()
  if parent then
    -- Ends the server even if this process dies without calling stop().
    argv[#argv + 1] = "--parent-pid"
    argv[#argv + 1] = parent
  end
  if opts.heartbeat then
    argv[#argv + 1] = "--heartbeat"
    argv[#argv + 1] = tostring(opts.heartbeat)
  end
  local tls = opts.tls or opts.client_ca
  local files
  if tls then
    files = M.tls_files()
    for _, a in ipairs{ "--tls-cert", files.server_cert, "--tls-key", files.server_key,
                        "--plain-port-file", dir .. "/plain-port" } do
      argv[#argv + 1] = a
    end
    if opts.client_ca then
      argv[#argv + 1] = "--tls-client-ca"
      argv[#argv + 1] = files.ca_file
    end
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end

  local quoted = {}
  for i, a in ipairs(argv) do quoted[i] = quote(a) end
  local log_file = dir .. "/server.log"
  local pid_file = dir .. "/pid"
  local function launch()
    assert(run(table.concat(quoted, " ") .. " </dev/null >" .. quote(log_file) .. " 2>&1 & echo $! >"
               .. quote(pid_file)), "could not launch " .. python)
    return tonumber(read_file(pid_file) or "")
  end
  local pid = launch()

  local deadline = socket.gettime() + (opts.timeout or START_TIMEOUT)
  local port, control_port, last_check = nil, nil, 0
  while socket.gettime() < deadline do
    port, control_port = M.read_ports(dir, tls)
    if port then break end
    if socket.gettime() - last_check > 0.1 then
      last_check = socket.gettime()
      if not (pid and M.process_alive(pid)) then
        -- a fixed port may still be held for a moment by the server it replaces: try again
        if not (opts.port and (read_file(log_file) or ""):find("Address already in use", 1, true)) then break end
        socket.sleep(0.1)
        pid = launch()
      end
    end
    socket.sleep(0.01)
  end
  if not (port and control_port) then
    if pid then run("kill -9 " .. pid .. " 2>/dev/null") end
    error("zulip dev server did not start (" .. table.concat(argv, " ") .. "); its log:\n"
          .. (read_file(log_file) or "(none)"), 2)
  end

  local srv = setmetatable({
    pid = pid, port = port, control_port = control_port, dir = dir, log_file = log_file,
    site = (tls and "https" or "http") .. "://127.0.0.1:" .. port,
    users = M.users, stopped = false,
  }, Server)
  if tls then
    srv.ca_file, srv.cert_dir = files.ca_file, files.dir
    srv.client_cert, srv.client_key = files.client_cert, files.client_key
  end
  return srv
end

--- Calls a /test/ control endpoint (JSON body; for GET put parameters in the
-- path).  Returns the decoded reply; raises on errors and non-2xx replies.
function Server:control(method, path, body)
  local resp, err = M.http(self.control_port, method, path,
                           { json = method ~= "GET" and (body or {}) or nil })
  if not resp then
    error("devserver " .. method .. " " .. path .. ": " .. tostring(err) .. self:log_tail(), 2)
  end
  if resp.status < 200 or resp.status > 299 or not resp.json then
    error(string.format("devserver %s %s -> %d: %s", method, path, resp.status, resp.body), 2)
  end
  return resp.json
end

--- The last lines of the server's log (for error messages), or "" when it has none.
function Server:log_tail(lines)
  local log = read_file(self.log_file)
  if not log or log == "" then return "" end
  local tail = {}
  for line in log:gmatch("[^\n]+") do
    tail[#tail + 1] = line
    if #tail > (lines or 20) then table.remove(tail, 1) end
  end
  return "\nthe dev server's log ends:\n" .. table.concat(tail, "\n")
end

local function user_of(self, user)
  local u = type(user) == "table" and user or self.users[user]
  if not u then error("unknown devserver user " .. tostring(user), 3) end
  return u
end

--- An /api request as `user` ("bot", "alice", "deactivated" or a table with
-- email and api_key).  With TLS it goes over the plain twin port, like control.
-- Returns the response table (see read_response) or nil, error.
function Server:api(user, method, path, params)
  return M.http(self.control_port, method, path, { auth = user_of(self, user), form = params })
end

--- POST /api/v1/messages as `user`; returns the decoded reply and the status.
function Server:send(user, params)
  local resp, err = self:api(user_of(self, user), "POST", "/api/v1/messages", params)
  if not resp then error("devserver send: " .. tostring(err), 2) end
  return resp.json, resp.status
end

--- Kills the server with SIGKILL at once, as a crash would (a long-poll it holds just breaks),
-- waits until it is gone and removes its temporary directory. `devserver.start{ port = srv.port }`
-- starts a new one where it was.
function Server:kill()
  if self.stopped then return end
  self.stopped = true
  if self.pid then
    run("kill -9 " .. self.pid .. " 2>/dev/null")
    local deadline = socket.gettime() + STOP_TIMEOUT
    while M.process_alive(self.pid) and socket.gettime() < deadline do socket.sleep(0.02) end
  end
  run("rm -rf " .. quote(self.dir))
end

--- Stops the server (POST /test/shutdown, then kill -9 if it lingers) and
-- removes its temporary directory.  Safe to call more than once.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  M.http(self.control_port, "POST", "/test/shutdown", { json = {}, timeout = 2 })
  local deadline = socket.gettime() + STOP_TIMEOUT
  while self.pid and M.process_alive(self.pid) and socket.gettime() < deadline do
    socket.sleep(0.02)
  end
  if self.pid and M.process_alive(self.pid) then run("kill -9 " .. self.pid .. " 2>/dev/null") end
  run("rm -rf " .. quote(self.dir))
end

return M
