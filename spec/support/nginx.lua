--- Debian's nginx in front of a running dev server, configured like production Zulip's front end
-- for the events API (zulip/zulip's puppet nginx files), for specs.
--
--   local devserver = require("spec.support.devserver")
--   local nginx = require("spec.support.nginx")
--   local srv = devserver.start{ heartbeat = 0.5 }
--   local ng = nginx.start{ upstream = srv }
--   -- ng.sites.plain  http://127.0.0.1:P   plain HTTP
--   -- ng.sites.h2     https://127.0.0.1:Q  TLS, `listen ... ssl http2` (as production)
--   -- ng.sites.tls    https://127.0.0.1:R  TLS without http2
--   -- ng.ca_file      the CA that signed the certificate of both TLS listeners
--   ng:reload()        -- nginx -s reload
--   ng:stop()
--
-- nginx runs as a plain foreground process (`daemon off`) with everything (pid, logs, temp
-- paths, config) in a temporary directory. It stops by itself: a watchdog shell loop ends it
-- when this Lua process is gone or after `lifetime` seconds (default 600).
-- The upstream is the dev server's plain port (its control port with TLS): restart a killed dev
-- server with `devserver.start{ port = ng.upstream_port }` and nginx finds it again.
local socket = require("socket")
local devserver = require("spec.support.devserver")

local M = {}

local quote, run, read_file = devserver.quote, devserver.run, devserver.read_file

M.BINARY = os.getenv("LUA_ZULIP_NGINX") or "/usr/sbin/nginx"
-- the keepalive_timeout of the client side, seconds: short, so an idle connection between two
-- polls is really closed by nginx (production has 65 s)
M.KEEPALIVE_TIMEOUT = 1

local START_TIMEOUT = 10
local STOP_TIMEOUT = 5

-- Production Zulip's events location (puppet/zulip/files/nginx/zulip-include-common/
-- proxy_longpolling and the app's location blocks), on one upstream with keepalive.
local CONFIG = [[
# written by spec/support/nginx.lua
user @USER@ @GROUP@;
worker_processes 1;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log info;
worker_shutdown_timeout 5s;
events { worker_connections 512; }
http {
  # one line per request: the worker, the client connection's serial number and its request count
  # on it, the listener, the request, the status, and the compression ratio when nginx gzipped it
  log_format spec '$pid $connection $connection_requests $server_port $request_method $uri $status $gzip_ratio';
  access_log @DIR@/access.log spec;
  client_body_temp_path @DIR@/tmp/body;
  proxy_temp_path @DIR@/tmp/proxy;
  fastcgi_temp_path @DIR@/tmp/fastcgi;
  uwsgi_temp_path @DIR@/tmp/uwsgi;
  scgi_temp_path @DIR@/tmp/scgi;
  types { text/html html; application/json json; }
  default_type application/octet-stream;
  sendfile on;
  tcp_nodelay on;
  keepalive_timeout @KEEPALIVE@s;
  server_tokens on;

  gzip on;
  gzip_vary on;
  gzip_proxied any;
  gzip_types text/plain text/css application/json application/javascript text/xml application/xml;

  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_certificate @CERT@;
  ssl_certificate_key @KEY@;
  ssl_session_cache shared:SSL:1m;

  upstream tornado {
    server 127.0.0.1:@UPSTREAM@;
    keepalive 10000;
  }

  server {
    listen 127.0.0.1:@PLAIN@;
    listen 127.0.0.1:@H2@ ssl http2;
    listen 127.0.0.1:@TLS@ ssl;
    server_name localhost;

    location /api/v1/events {
      # production: only these methods reach Tornado; anything else is nginx's own HTML 405
      if ($request_method !~ ^(GET|DELETE|OPTIONS)$) { return 405; }
      proxy_pass http://tornado;
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 1200;
      proxy_next_upstream off;
      proxy_redirect off;
    }

    location /api/ {
      proxy_pass http://tornado;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 20;
      proxy_redirect off;
    }
  }
}
]]

-- The watchdog: ends nginx when the spec process is gone or its lifetime is over, unless stop()
-- removed the marker file first. TERM is nginx's fast shutdown (QUIT would wait for long-polls);
-- then SIGKILL for the master and its workers (they are in its own process group: setsid).
local WATCHDOG = [[
parent=$1 pid=$2 marker=$3 life=$4
i=0
while [ "$i" -lt "$life" ] && [ -e "$marker" ] && kill -0 "$parent" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do
  sleep 1
  i=$((i + 1))
done
[ -e "$marker" ] || exit 0
kill -TERM "$pid" 2>/dev/null
sleep 3
kill -KILL -- "-$pid" 2>/dev/null
kill -KILL "$pid" 2>/dev/null
rm -f "$marker"
]]

-- A port that was free a moment ago: bound to 127.0.0.1:0, read back and closed. nginx cannot
-- report the port of a port-0 bind, so it gets these; start() tries again when one was taken.
local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function command_output(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end

local function connects(port)
  local c = socket.tcp()
  c:settimeout(0.2)
  local ok = c:connect("127.0.0.1", port)
  c:close()
  return ok ~= nil
end

local Nginx = {}
Nginx.__index = Nginx

local function nginx_args(self)
  return quote(M.BINARY) .. " -p " .. quote(self.dir .. "/") .. " -e " .. quote(self.dir .. "/error.log")
    .. " -c " .. quote(self.conf)
end

-- One attempt: writes the config for these ports, launches nginx and waits until every listener
-- accepts. Returns true, or false and the error log when nginx exited (a port was taken).
local function launch(self, timeout)
  local text = CONFIG:gsub("@([%u%d]+)@", {
    USER = self.user, GROUP = self.group, DIR = self.dir, KEEPALIVE = tostring(self.keepalive_timeout),
    CERT = self.tls.server_cert, KEY = self.tls.server_key, UPSTREAM = tostring(self.upstream_port),
    PLAIN = tostring(self.ports.plain), H2 = tostring(self.ports.h2), TLS = tostring(self.ports.tls),
  })
  local f = assert(io.open(self.conf, "w"))
  f:write(text)
  f:close()
  os.remove(self.dir .. "/nginx.pid")
  local pid_file = self.dir .. "/launch.pid"
  assert(run("setsid " .. nginx_args(self) .. " -g 'daemon off; master_process on;' </dev/null >>"
             .. quote(self.dir .. "/stdout.log") .. " 2>&1 & echo $! >" .. quote(pid_file)),
         "could not launch nginx")
  self.pid = tonumber(read_file(pid_file) or "")
  local deadline = socket.gettime() + timeout
  while socket.gettime() < deadline do
    if not (self.pid and devserver.process_alive(self.pid)) then
      return false, read_file(self.dir .. "/error.log") or ""
    end
    if read_file(self.dir .. "/nginx.pid") and connects(self.ports.plain) and connects(self.ports.h2)
        and connects(self.ports.tls) then
      return true
    end
    socket.sleep(0.02)
  end
  run("kill -KILL -- -" .. self.pid .. " 2>/dev/null; kill -KILL " .. self.pid .. " 2>/dev/null")
  error("nginx did not start in " .. timeout .. " s; its error log:\n"
        .. (read_file(self.dir .. "/error.log") or "(none)"), 3)
end

--- Starts nginx in front of `opts.upstream` (a dev server from devserver.start) or
-- `opts.upstream_port`, and waits until its three listeners accept.
-- opts: keepalive_timeout (seconds, default M.KEEPALIVE_TIMEOUT), lifetime (seconds, default
-- 600), timeout (start timeout). Returns the nginx object: sites (plain, h2, tls), ports,
-- ca_file, upstream_port, dir, pid.
function M.start(opts)
  opts = opts or {}
  local upstream_port = opts.upstream_port or (opts.upstream and opts.upstream.control_port)
  assert(upstream_port, "nginx.start needs upstream (a dev server) or upstream_port")
  local dir = devserver.make_temp_dir("lua-zulip-nginx")
  assert(run("mkdir -p " .. quote(dir .. "/tmp")))
  local self = setmetatable({
    dir = dir, conf = dir .. "/nginx.conf", upstream_port = upstream_port, tls = devserver.tls_files(),
    keepalive_timeout = opts.keepalive_timeout or M.KEEPALIVE_TIMEOUT, stopped = false,
    -- the master runs as whoever runs the specs; as root its workers must not become "nobody",
    -- who could not read the key in our 0700 temp directory
    user = command_output("id -un"), group = command_output("id -gn"),
  }, Nginx)
  local ok, log
  for _ = 1, 5 do
    self.ports = { plain = free_port(), h2 = free_port(), tls = free_port() }
    ok, log = launch(self, opts.timeout or START_TIMEOUT)
    if ok then break end
    if not log:find("Address already in use", 1, true) then break end
  end
  if not ok then
    run("rm -rf " .. quote(dir))
    error("nginx did not start; its error log:\n" .. log, 2)
  end
  self.ca_file = self.tls.ca_file
  self.sites = {
    plain = "http://127.0.0.1:" .. self.ports.plain,
    h2 = "https://127.0.0.1:" .. self.ports.h2,
    tls = "https://127.0.0.1:" .. self.ports.tls,
  }
  self.marker = dir .. "/running"
  assert(io.open(self.marker, "w")):close()
  local parent = devserver.own_pid() or "1"
  assert(run("sh -c " .. quote(WATCHDOG) .. " watchdog " .. parent .. " " .. self.pid .. " "
             .. quote(self.marker) .. " " .. tostring(opts.lifetime or 600) .. " </dev/null >/dev/null 2>&1 &"))
  return self
end

--- `nginx -s reload` with the same prefix and config: a new set of workers takes over, the old
-- ones finish what they hold (at most worker_shutdown_timeout, 5 s). Waits until a new worker
-- runs (the error log says so). Raises if the signal could not be sent.
function Nginx:reload()
  local before = select(2, (read_file(self.dir .. "/error.log") or ""):gsub("start worker process", ""))
  local out = command_output(nginx_args(self) .. " -s reload 2>&1; echo \"rc=$?\"")
  if not out:find("rc=0$") then error("nginx -s reload failed: " .. out, 2) end
  local deadline = socket.gettime() + START_TIMEOUT
  while socket.gettime() < deadline do
    local now = select(2, (read_file(self.dir .. "/error.log") or ""):gsub("start worker process", ""))
    if now > before then return true end
    socket.sleep(0.02)
  end
  error("nginx reload: no new worker started; its error log:\n" .. (read_file(self.dir .. "/error.log") or ""), 2)
end

--- The error log so far (for messages and specs).
function Nginx:error_log()
  return read_file(self.dir .. "/error.log") or ""
end

--- The access log so far as a list of { worker =, connection =, requests =, port =, method =,
-- path =, status =, gzip_ratio = } (nginx's $connection: equal numbers mean one client
-- connection; gzip_ratio is nil unless nginx compressed the reply), oldest first. nginx writes a
-- line when the request ends.
function Nginx:requests()
  local list = {}
  for line in (read_file(self.dir .. "/access.log") or ""):gmatch("[^\n]+") do
    local worker, conn, n, port, method, path, status, ratio =
      line:match("^(%d+) (%d+) (%d+) (%d+) (%S+) (%S+) (%d+) (%S+)$")
    if conn then
      list[#list + 1] = { worker = tonumber(worker), connection = tonumber(conn), requests = tonumber(n),
                          port = tonumber(port), method = method, path = path, status = tonumber(status),
                          gzip_ratio = tonumber(ratio) }
    end
  end
  return list
end

--- Stops nginx (TERM: fast shutdown, then SIGKILL for the master and its workers if they
-- linger), ends the watchdog and removes the temporary directory. Safe to call more than once.
function Nginx:stop()
  if self.stopped then return end
  self.stopped = true
  os.remove(self.marker)  -- the watchdog sees it gone and ends without touching anything
  run("kill -TERM " .. self.pid .. " 2>/dev/null")
  local deadline = socket.gettime() + STOP_TIMEOUT
  while devserver.process_alive(self.pid) and socket.gettime() < deadline do socket.sleep(0.02) end
  if devserver.process_alive(self.pid) then
    run("kill -KILL -- -" .. self.pid .. " 2>/dev/null; kill -KILL " .. self.pid .. " 2>/dev/null")
  end
  run("rm -rf " .. quote(self.dir))
end

return M
