-- End-to-end benchmarks: rows 2-6 of `make bench` (row 1, decoding, is bench/decode.lua).
--   lua bench/e2e.lua ROW        (ROW = 2..6; `make bench ROWS="2 3"` runs the ones named)
-- Each row runs in a process of its own against the dev server (Python, quiet, no rate limit,
-- heartbeat 60 s) and prints Markdown table lines: measure | lua-zulip | baseline | ratio | target.
-- The baseline is bench/baseline.lua (luasocket keep-alive + lua-cjson), measured in the same
-- run. CPU is this process's user+system time from getrusage (build/bench/<LUA>/rusage.so),
-- taken around the client's own work only: the server's CPU is not the client's.
local zulip = require("zulip")
local core = require("zulip.core")
local devserver = require("spec.support.devserver")
local baseline = require("bench.baseline")
local ru = require("rusage")
local rawpoll = require("rawpoll")

local cpu, now = ru.cpu, core.now
local format = string.format
local LUA_BIN = (arg[-1] or "lua5.4")
local HERE = (arg[0]:match("^(.*)/[^/]*$") or ".")

local function line(measure, ours, base, ratio, target)
  print(format("| %s | %s | %s | %s | %s |", measure, ours, base, ratio, target))
end

local function start_server()
  return devserver.start{ heartbeat = 60, args = { "--quiet", "--rate-limit", "0" } }
end

local function client_for(srv)
  local u = srv.users.bot
  return zulip.client{ site = srv.site, email = u.email, api_key = u.api_key }
end

local function stats(t)
  local s, sorted = 0, {}
  for i, v in ipairs(t) do s, sorted[i] = s + v, v end
  table.sort(sorted)
  local function pct(p) return sorted[math.max(1, math.ceil(#sorted * p))] end
  return { mean = s / #t, p50 = pct(0.5), p99 = pct(0.99), sum = s }
end

local function us(x) return format("%.1f", x * 1e6) end

local ROWS = {}

-- 2. Per-poll overhead: push one message (outside the measured region), then poll it; each client
-- has a queue, so each round polls the same event from each, in rotating order. The floor is
-- bench/rawpoll.c: the same GET in C over one kept connection, no decoding; "floor + decode"
-- (the same calls) adds zulip.decode of its body, the same work as ours but for libcurl's request
-- path and the Lua engine. "libcurl alone" is the same GET as a zulip.Transfer of a client's C engine,
-- started and driven from a bare loop and decoded (no Lua engine): less the floor + decode, what
-- libcurl's request path costs.
ROWS[2] = function()
  local N, WARM = 1000, 50
  local srv = start_server()
  local q = client_for(srv):queue{ event_types = { "message" } }
  assert(q:register())
  local b = baseline.new(srv.port, srv.users.bot)
  b:register()
  local f = baseline.new(srv.port, srv.users.bot)  -- the floor's queue, registered the plain way
  f:register()
  local raw = rawpoll.connect(srv.port, "Basic " .. require("mime").b64(srv.users.bot.email .. ":"
    .. srv.users.bot.api_key))
  local lc = baseline.new(srv.port, srv.users.bot)  -- libcurl alone's queue, registered the plain way
  lc:register()
  local lclient = client_for(srv)
  local eng = lclient._engine.core
  local x = eng:transfer({})
  local function ours()
    local c0 = cpu()
    local events = assert(q:get_events())
    local c = cpu() - c0
    assert(#events == 1)
    return c
  end
  local function base()
    local c0 = cpu()
    local events = b:get_events()
    local c = cpu() - c0
    assert(#events == 1)
    return c
  end
  local function floor()
    local target = "/api/v1/events?queue_id=" .. f.queue_id .. "&last_event_id=" .. format("%d", f.last_event_id)
    local c0 = cpu()
    local status, body = raw:get(target)
    local c1 = cpu()
    local reply = zulip.decode(body)
    local c2 = cpu()
    assert(status == 200 and #reply.events == 1)
    f.last_event_id = reply.events[1].id
    return c1 - c0, c2 - c0  -- without the decode, and with it
  end
  local function curl_alone()
    local target = "/api/v1/events?queue_id=" .. lc.queue_id .. "&last_event_id=" .. format("%d", lc.last_event_id)
    local c0 = cpu()
    assert(x:start("GET", target, nil, 60))
    repeat local done = eng:drive(10) until #done > 0
    local reply = zulip.decode(x:raw())
    local c = cpu() - c0
    assert(x:result().status == 200 and #reply.events == 1)
    lc.last_event_id = reply.events[1].id
    return c
  end
  local zs, bs, fs, ds, cs = {}, {}, {}, {}, {}
  local order = { { ours, zs }, { base, bs }, { floor, fs, ds }, { curl_alone, cs } }
  for i = 1, N + WARM do  -- the four in rotating order
    srv:control("POST", "/test/messages", { count = 1 })
    for k = 0, 3 do
      local o = order[(i + k) % 4 + 1]
      local v, decoded = o[1]()
      if i > WARM then
        o[2][#o[2] + 1] = v
        if o[3] then o[3][#o[3] + 1] = decoded end  -- the floor's, with its decode
      end
    end
  end
  q:close()
  b:close()
  raw:close()
  f:close()
  lc:close()
  lclient:close()
  local p = io.popen(format("python3 %s/pyhelper.py poll %d %d", HERE, srv.port, N))
  local py_mean, py_p50 = p:read("*n", "*n")
  p:close()
  srv:stop()
  local z, bl, fl, fd, ca = stats(zs), stats(bs), stats(fs), stats(ds), stats(cs)
  line("2 per-poll CPU, mean (µs)", us(z.mean), us(bl.mean), format("%.2f", z.mean / bl.mean), "")
  line("2 per-poll CPU, median (µs)", us(z.p50), us(bl.p50), format("%.2f", z.p50 / bl.p50), "")
  line("2 floor: raw C GET, one kept connection, mean (µs)", us(z.mean), us(fl.mean),
    format("%.2f", z.mean / fl.mean), "≤ 3.00 of the floor")
  line("2 floor + zulip.decode of the body, mean (µs)", us(z.mean), us(fd.mean),
    format("%.2f", z.mean / fd.mean), "")
  line("2 libcurl alone: a core transfer from a bare loop, decoded, mean (µs)", us(z.mean), us(ca.mean),
    format("%.2f", z.mean / ca.mean),
    format("its request path: %s µs over floor + decode", us(ca.mean - fd.mean)))
  line("2 stdlib-Python client, mean / median (µs)", us(z.mean), format("%.1f / %.1f", py_mean, py_p50),
    format("%.2f", z.mean / (py_mean / 1e6)), "")
end

-- 3. Burst: 100 batches of 1,000 message events; each client drains every batch (one reply of
-- 1,000 events, gzipped for lua-zulip, plain for the baseline, which cannot inflate).
ROWS[3] = function()
  local BATCH, BATCHES = 1000, 100
  local srv = start_server()
  local q = client_for(srv):queue{ event_types = { "message" } }
  assert(q:register())
  local b = baseline.new(srv.port, srv.users.bot)
  b:register()
  local function drain(get)
    local got, t0, c0 = 0, now(), cpu()
    while got < BATCH do got = got + #get() end
    assert(got == BATCH)
    return cpu() - c0, now() - t0
  end
  local ours = function() return assert(q:get_events()) end
  local base = function() return b:get_events() end
  local zc, zw, bc, bw = 0, 0, 0, 0
  for i = 1, BATCHES do
    srv:control("POST", "/test/messages", { count = BATCH })
    local c, w
    if i % 2 == 0 then
      c, w = drain(ours); zc, zw = zc + c, zw + w
      c, w = drain(base); bc, bw = bc + c, bw + w
    else
      c, w = drain(base); bc, bw = bc + c, bw + w
      c, w = drain(ours); zc, zw = zc + c, zw + w
    end
  end
  q:close()
  b:close()
  srv:stop()
  local n = BATCH * BATCHES
  line("3 burst: events/s (wall, incl. server)", format("%.0f", n / zw), format("%.0f", n / bw),
    format("%.2f", (n / zw) / (n / bw)), "follows row 1")
  line("3 burst: client CPU per event (µs)", us(zc / n), us(bc / n), format("%.2f", zc / bc),
    "≤ 0.60")
end

-- 4. Latency: the server stamps each event with its CLOCK_MONOTONIC time right before writing
-- the reply (/test/config stamp_written_at); the loop body subtracts it from core.now().
-- A separate process sends one message every 4 ms, so each reply wakes a waiting long-poll.
ROWS[4] = function()
  local N, WARM = 1000, 50
  local srv = start_server()
  srv:control("POST", "/test/config", { stamp_written_at = true })
  local function pusher()
    os.execute(format("python3 %s/pyhelper.py push %d %d 0.004 &", HERE, srv.port, N + WARM + 20))
  end
  local zl, bl = {}, {}
  local q = client_for(srv):queue{ event_types = { "message" } }
  assert(q:register())
  pusher()
  for ev in q:each() do
    local lat = now() - ev._written_at
    zl[#zl + 1] = lat
    if #zl == N + WARM then break end
  end
  q:close()
  local b = baseline.new(srv.port, srv.users.bot)
  b:register()
  pusher()
  while #bl < N + WARM do
    for _, ev in ipairs(b:get_events()) do
      local lat = now() - ev._written_at
      bl[#bl + 1] = lat
    end
  end
  b:close()
  srv:stop()
  local function tail(t)
    local out = {}
    for i = WARM + 1, WARM + N do out[#out + 1] = t[i] end
    return stats(out)
  end
  local z, x = tail(zl), tail(bl)
  line("4 latency p50 (µs)", us(z.p50), us(x.p50), format("%.2f", z.p50 / x.p50), "< 100 µs")
  line("4 latency p99 (µs)", us(z.p99), us(x.p99), format("%.2f", z.p99 / x.p99), "")
end

-- 5. Many queues: 1,000 queues of one client registered and long-polling in one process; RSS, C
-- heap, Lua heap and file descriptors per queue. Then a poll(2) loop on the client's one pollfd
-- steps the client when it is readable: first for 12 s, then for 10 s of steady state.
ROWS[5] = function()
  local NQ = 1000
  local limit = ru.nofile(NQ * 6 + 200)
  assert(limit >= NQ * 2 + 100, "need RLIMIT_NOFILE >= " .. NQ * 2 + 100 .. " (ulimit -n)")
  local srv = start_server()
  local client = client_for(srv)
  local keep = client:queue{ event_types = { "message" } }  -- warms libcurl and the code paths
  assert(keep:register())
  collectgarbage()
  collectgarbage()
  local rss0, heap0, lua0, fds0 = ru.rss(), ru.heap(), collectgarbage("count"), ru.fds()
  local qs = {}
  local t0 = now()
  for i = 1, NQ do
    local q = client:queue{ event_types = { "message" } }
    assert(q:register())
    assert(#assert(q:step(0)) == 0)  -- a stepped queue: the client drives it from now on
    qs[i] = q
  end
  -- every queue's long-poll started (each on a connection of its own: the dev server speaks HTTP/1.1)
  local deadline = now() + 30
  local function waiting()
    local n = 0
    for _, q in ipairs(qs) do if q:_state()._busy == "poll" then n = n + 1 end end
    return n
  end
  while waiting() < NQ and now() < deadline do client:step(0.01) end
  assert(waiting() == NQ, "the long-polls did not start")
  local setup = now() - t0
  collectgarbage()
  collectgarbage()
  local rss1, heap1, lua1, fds1 = ru.rss(), ru.heap(), collectgarbage("count"), ru.fds()
  local fd = { client:pollfd() }
  local function idle(secs)
    local c0, w0, wakeups, polls, events, in_step = cpu(), now(), 0, 0, 0, 0
    while true do
      local left = secs - (now() - w0)
      if left <= 0 then break end
      polls = polls + 1
      if #ru.poll(fd, math.ceil(left * 1000)) > 0 then
        wakeups = wakeups + 1
        local s0 = cpu()
        for _, r in ipairs(client:step(0)) do events = events + #(r.events or {}) end
        in_step = in_step + cpu() - s0
      end
    end
    return format("%.1f ms (%.1f in step), %d wake-ups in %d polls, %d events, %d waiting",
      (cpu() - c0) * 1e3, in_step * 1e3, wakeups, polls - 1, events, waiting())
  end
  local first = idle(12)
  local steady = idle(10)
  -- what a loop pays per wake-up with nothing new: a step of the client and its timeout
  local function per_call(f)
    local c0 = cpu()
    for _ = 1, 200 do f() end
    return (cpu() - c0) / 200
  end
  local step_cost = per_call(function() assert(#client:step(0) == 0) end)
  local timeout_cost = per_call(function() return client:timeout() end)
  srv:stop()
  local kib = function(x) return format("%.1f", x / NQ) end
  line(format("5 %d queues: RSS per queue (KiB; setup %.1f s)", NQ, setup), kib(rss1 - rss0), "", "",
    "≤ 64 KiB")
  line("5 … C heap in use (curl + queue struct + buffers) / Lua heap, per queue (KiB)",
    format("%s / %s", kib((heap1 - heap0) / 1024), kib(lua1 - lua0)), "", "", "")
  line("5 … file descriptors per queue (one client: its pollfd, its timer, curl's, the connections)",
    format("%.2f (%d in all)", (fds1 - fds0) / NQ, fds1 - fds0), "", "", "")
  line("5 first 12 s: CPU, wake-ups, events, long-polls waiting", first, "", "", "")
  line("5 next 10 s idle: CPU, wake-ups, events, long-polls waiting", steady, "", "", "~0")
  line("5 a wake-up with nothing new: client:step(0) / client:timeout() CPU (µs)",
    format("%s / %s", us(step_cost), us(timeout_cost)), "", "", "")
  os.exit(0)  -- the queues' DELETEs would only time the server; it has stopped
end

-- 6. Register against a large initial state (gzip on): each client in a fresh process, so that
-- its peak RSS (ru_maxrss) is its own.
local STATE = { extra_users = 20000, extra_channels = 395 }
ROWS[6] = function()
  local srv = start_server()
  srv:control("POST", "/test/config", STATE)
  local function child(who)
    local p = io.popen(format("%s %s/e2e.lua 6 %s %d", LUA_BIN, HERE, who, srv.port))
    local wall, c, peak, rss0, bytes = p:read("*n", "*n", "*n", "*n", "*n")
    assert(p:close() and bytes, "row 6 child failed")
    return { wall = wall, cpu = c, peak = peak, rss0 = rss0, bytes = bytes }
  end
  local z, x = child("ours"), child("base")
  srv:stop()
  line(format("6 register %.1f MB state: wall (s)", x.bytes / 1e6), format("%.2f", z.wall),
    format("%.2f", x.wall), format("%.2f", z.wall / x.wall), "")
  line("6 register: client CPU (s)", format("%.2f", z.cpu), format("%.2f", x.cpu),
    format("%.2f", z.cpu / x.cpu), "")
  line("6 register: peak RSS (MiB; before register)", format("%.0f (%.0f)", z.peak / 1024, z.rss0 / 1024),
    format("%.0f (%.0f)", x.peak / 1024, x.rss0 / 1024), format("%.2f", z.peak / x.peak), "")
end

local function register_child(who, port)
  local srv = { port = port, site = "http://127.0.0.1:" .. port, users = devserver.users }
  local rss0 = ru.maxrss()
  local t0, c0 = now(), cpu()
  local state, bytes
  if who == "ours" then
    local q = client_for(srv):queue{ include_subscribers = true }
    state = assert(q:register())
    bytes = 0  -- the same state as the baseline's: its byte count names the row
  else
    local b = baseline.new(port, srv.users.bot)
    state = b:register("include_subscribers=true")
    bytes = b.last_body_bytes
  end
  local wall, c = now() - t0, cpu() - c0
  assert(#state.realm_users >= STATE.extra_users)
  print(wall, c, ru.maxrss(), rss0, bytes)
end

local row = tonumber(arg[1])
if row == 6 and arg[2] then
  register_child(arg[2], tonumber(arg[3]))
elseif ROWS[row] then
  ROWS[row]()
else
  io.stderr:write("usage: e2e.lua ROW (2-6)\n")
  os.exit(2)
end
