--- Real hosts for the host specs (spec/host_*_spec.lua): start one under a hard timeout, play the
-- scenario of spec/support/host_scenario.lua with it (arm each dev server fault when the host
-- asks, then push the message that starts the operation), read its result file, and check that
-- the host's own clock kept ticking across each slow operation.
--
--   local hosts = require("spec.support.hosts")
--   local run = hosts.start(srv, { name = "nvim", argv = { "nvim", "--headless", ... }, env = {...} })
--   local r = hosts.play(srv, run)            -- the host's result table, checked for errors
--   hosts.check(srv, r, run)                  -- asserts the outcomes and the tick shares
--
-- The hosts use their own Lua whatever Lua runs busted, so each host spec runs once per
-- `make test`: `hosts.this_lua()` is true under 5.4 (and when ZULIP_TEST_LUA is unset).
local socket = require("socket")
local devserver = require("spec.support.devserver")
local util = require("spec.support.util")
local assert = require("luassert")

local M = {}

--- The share of expected ticks each slow operation must keep (70%: a host's timer or frames may
-- slow down a little during a slow reply, never stop).
M.MIN_SHARE = 0.7
--- How long the dev server holds each slow reply (seconds). ZULIP_HOST_SPEC_SEND_DELAY and
-- ZULIP_HOST_SPEC_DELETE_DELAY override them for trying the harness by hand (e.g. 0.01: then
-- nothing is slow and every tick share must pass).
M.SEND_DELAY = tonumber(os.getenv("ZULIP_HOST_SPEC_SEND_DELAY") or "") or 2
M.DELETE_DELAY = tonumber(os.getenv("ZULIP_HOST_SPEC_DELETE_DELAY") or "") or 3

local root = util.root
if root:sub(1, 1) ~= "/" then root = (os.getenv("PWD") or ".") .. (root == "." and "" or ("/" .. root)) end
M.root = root

local function sh(cmd)
  local ok, _, code = os.execute(cmd)
  if type(ok) == "number" then return ok == 0 end
  return ok == true and (code == nil or code == 0)
end
M.sh = sh

--- True when the host specs belong to this run of the suite. The hosts bring their own Lua
-- (Neovim and LÖVE LuaJIT, WeeChat 5.3), so running them under each of the four Lua versions
-- would test the same thing four times: they run under 5.4 only (or when ZULIP_TEST_LUA is
-- unset, e.g. busted by hand). Under the other versions the spec files define no test at all:
-- nothing is skipped or pending, and a failure under 5.4 fails `make test`.
function M.this_lua()
  local v = os.getenv("ZULIP_TEST_LUA")
  return v == nil or v == "5.4"
end

--- The build directory of the core a host loads (util.build_dir: the poller's, under `make test POLLER=`).
M.build_dir = util.build_dir

--- Makes sure the module a host loads is built and current (`make LUA=luajit` or `LUA=5.3`).
function M.build(lua)
  local target = util.build_dir(lua) .. "/zulip/core.so"
  assert(sh("make --no-print-directory -C " .. util.shquote(root) .. " LUA=" .. lua .. util.make_poller()
            .. " " .. target
            .. " >/dev/null"), "make LUA=" .. lua .. " failed")
  return root .. "/" .. target
end

-- Waits up to `secs` for f() to return a true value, and returns it.
local function wait_for(secs, f)
  local deadline = util.now() + secs
  repeat
    local v = f()
    if v then return v end
    socket.sleep(0.02)
  until util.now() > deadline
end
M.wait_for = wait_for

--- Starts a host in the background, bounded by `timeout -k 5 <limit>`.
-- opts: `name`, `argv` (the command), `env` (variables to set), `limit` (seconds, default 60),
-- `ops` (the operations, default all of `M.OPS`: "send", "close", "gc");
-- The host gets ZULIP_HOST_ROOT, ZULIP_HOST_OUT (a fresh dir) and the bot's credentials.
-- @return the run: `dir`, `pid`, `log()` (its output), `alive()`, `stop()`, `cleanup()` (removes
--   the dir; the specs call it only after a pass, so a failure leaves everything to look at)
function M.start(srv, opts)
  local dir = util.tmpdir()
  local bot = srv.users.bot
  local env = {
    ZULIP_HOST_ROOT = root, ZULIP_HOST_OUT = dir,
    ZULIP_SITE = srv.site, ZULIP_EMAIL = bot.email, ZULIP_API_KEY = bot.api_key,
    HOME = dir, XDG_RUNTIME_DIR = dir,  -- no ~/.zuliprc, no user config of the host
    ZULIP_HOST_SEND_WAIT = tostring(M.SEND_DELAY + 4),
    ZULIP_HOST_SEND_WINDOW = tostring(M.SEND_DELAY + 0.5),
    ZULIP_HOST_CLOSE_WINDOW = tostring(M.DELETE_DELAY + 0.5),
    ZULIP_HOST_GC_WINDOW = tostring(M.DELETE_DELAY + 0.5),
  }
  local ops = opts.ops or M.OPS
  env.ZULIP_HOST_OPS = table.concat(ops, ",")
  for k, v in pairs(opts.env or {}) do env[k] = v end
  -- exec all the way down, so the pid is timeout's: it runs the host in a process group of its
  -- own (pgid = its pid), which stop() ends as a whole
  local parts = { "exec env" }
  for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. util.shquote(v) end
  parts[#parts + 1] = "timeout -k 5 " .. tostring(opts.limit or 60)
  for _, a in ipairs(opts.argv) do parts[#parts + 1] = util.shquote((a:gsub("@OUT@", dir))) end
  local cmd = table.concat(parts, " ") .. " </dev/null >" .. util.shquote(dir .. "/log") .. " 2>&1"
  assert(sh("(" .. cmd .. ") & echo $! >" .. util.shquote(dir .. "/pid")), "could not start " .. opts.name)
  local run = { name = opts.name, dir = dir, pid = tonumber(util.read_file(dir .. "/pid")), started = util.now(),
                ops = ops }
  function run.log()
    local log = util.read_file(dir .. "/log") or ""
    if #log > 4000 then log = "...\n" .. log:sub(-4000) end
    return "\n-- " .. opts.name .. "'s output:\n" .. log
  end
  function run.alive() return devserver.process_alive(run.pid) end
  function run.cleanup() sh("rm -rf " .. util.shquote(dir)) end
  function run.stop()
    if run.alive() then sh("kill -TERM -- -" .. run.pid .. " 2>/dev/null") end
    if not wait_for(10, function() return not run.alive() end) then
      sh("kill -KILL -- -" .. run.pid .. " 2>/dev/null")
    end
  end
  return run
end

--- Loads the host's result file (a Lua table literal), or nil while there is none.
function M.result(run)
  local text = util.read_file(run.dir .. "/result")
  if not text then return nil end
  local chunk, err
  if setfenv then  -- 5.1, LuaJIT
    chunk, err = loadstring(text, "=result")
    if chunk then setfenv(chunk, {}) end
  else
    chunk, err = load(text, "=result", "t", {})
  end
  assert(chunk, "the host's result does not load: " .. tostring(err) .. run.log())
  return chunk()
end

local function decode(s)
  return (tostring(s or ""):gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- The DELETE /api/v1/events requests the server saw for queue `qid` (from /test/requests).
function M.deletes(srv, qid)
  local out = {}
  for _, r in ipairs(srv:control("GET", "/test/requests?n=200").requests) do
    if r.method == "DELETE" and r.path == "/api/v1/events" then
      local id = decode(tostring(r.query):match("queue_id=([^&]*)"))
      if id == "" and type(r.form) == "table" then id = r.form.queue_id end
      if id == qid then out[#out + 1] = r end
    end
  end
  return out
end

local function delay(seconds, path, method)
  return function() return { kind = "delay", seconds = seconds, path = path, method = method } end
end
local FAULTS = {
  send = delay(M.SEND_DELAY, "/api/v1/messages", "POST"),
  close = delay(M.DELETE_DELAY, "/api/v1/events", "DELETE"),
  gc = delay(M.DELETE_DELAY, "/api/v1/events", "DELETE"),
}
M.OPS = { "send", "close", "gc" }

--- Plays the scenario with a started host: for each operation, waits until the host asks for it,
-- arms the fault, and has Alice post "go <op>" to #Denmark (through a control endpoint, so the
-- fault is not taken by it). Then waits for the result and for the host to exit.
-- Returns the result; fails (with the host's message and output) when the host reported an error
-- or gave no result.
function M.play(srv, run, secs)
  local deadline = util.now() + (secs or 50)
  local function left() return math.max(0, deadline - util.now()) end
  local r
  for _, op in ipairs(run.ops) do
    local asked = wait_for(left(), function()
      return util.read_file(run.dir .. "/want-" .. op) or M.result(run) or not run.alive()
    end)
    r = M.result(run)
    if r or asked ~= "" then break end
    srv:control("POST", "/test/fault", FAULTS[op]())
    srv:control("POST", "/test/messages", { count = 1, to = "Denmark", topic = "hosts",
                                            content_prefix = "go " .. op .. " " })
  end
  r = r or wait_for(left(), function() return M.result(run) or (not run.alive() and M.result(run)) end)
  if not wait_for(15, function() return not run.alive() end) then
    run.stop()
    assert.is_false(run.alive(), run.name .. " did not exit" .. run.log())
  end
  assert.is_truthy(r, run.name .. " wrote no result (it was killed, crashed or froze)" .. run.log())
  if r.error then
    error(run.name .. " reported: " .. r.error .. "\n  notes: " .. table.concat(r.notes or {}, "; ") .. run.log(), 0)
  end
  return r
end

--- Ticks inside [t0, t1] (ms), the ticks expected there, and the worst gap between ticks that
-- overlaps the window (one tick before it and one after count as its edges).
-- A tick counts only when it comes at least half an interval after the last one counted: some
-- hosts (WeeChat) run a timer's missed ticks in a burst after a freeze, and those must not make
-- up for the ticks that never came in time. `raw` is every tick in the window.
function M.window_stats(ticks, t0, t1, interval_ms)
  local n, raw, worst, last = 0, 0, 0, nil
  for i, t in ipairs(ticks) do
    if t >= t0 and t <= t1 then
      raw = raw + 1
      if last == nil or t - last >= interval_ms / 2 then
        n = n + 1
        last = t
      end
    end
    local p = ticks[i - 1]
    if p and t >= t0 and p <= t1 and t - p > worst then worst = t - p end
    if t > t1 then break end
  end
  return { ticks = n, raw = raw, expected = (t1 - t0) / interval_ms, worst_gap_ms = worst, ms = t1 - t0 }
end

local function median(list)
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  if #s == 0 then return nil end
  return s[math.floor((#s + 1) / 2)]
end

--- The interval the expected ticks are counted in: the host timer's period, or (frame loops)
-- the mean frame time in the warm-up, after the main queue registered and before the first slow
-- operation began. Also returns the median frame time there.
function M.interval_ms(r)
  if r.interval_ms then return r.interval_ms end
  local from, to = r.warm_ms or 0, r.ops.send and r.ops.send.t0 or math.huge
  local frames, gaps = {}, {}
  for i, t in ipairs(r.ticks) do
    if t >= from and t < to then
      frames[#frames + 1] = t
      if i > 1 then gaps[#gaps + 1] = t - r.ticks[i - 1] end
    end
  end
  assert(#frames >= 10, "too few frames before the first slow operation: " .. #frames)
  return (frames[#frames] - frames[1]) / (#frames - 1), median(gaps)
end

--- Checks a result: each operation's outcome and the share of expected ticks across it.
-- Prints one line per operation (ticks, expected, worst gap, how long the call itself took).
-- Every outcome is checked before any tick share, and all failures are reported together, with
-- those of `extra` (a list of `{ ok, message }` the spec adds).
function M.check(srv, r, run, extra)
  local interval, median_frame = M.interval_ms(r)
  local failures, lines = {}, {}
  local function expect(ok, msg) if not ok then failures[#failures + 1] = msg end end
  for _, e in ipairs(extra or {}) do expect(e[1], e[2]) end
  local stats = {}
  local want = {}
  for _, op in ipairs(run.ops) do want[op] = true end
  for _, op in ipairs(run.ops) do
    local o = r.ops[op]
    expect(o and o.t1, op .. ": the operation did not run (phase " .. tostring(r.phase) .. ")")
    if o and o.t1 then
      local s = M.window_stats(r.ticks, o.t0, o.t1, interval)
      stats[op] = s
      lines[#lines + 1] = ("  %s %-5s %6.0f ms: %4d ticks of %.0f expected (%3.0f%%; %d in all), worst gap"
        .. " %.1f ms, call returned after %.1f ms"):format(r.host, op, s.ms, s.ticks, s.expected,
                                                   100 * s.ticks / s.expected, s.raw, s.worst_gap_ms, o.call_ms or -1)
    end
  end
  local send, close, gc = r.ops.send or {}, r.ops.close or {}, r.ops.gc or {}
  if want.send then  -- the callback got the server's reply, after the delay; the call returned a handle
    expect(send.called, "send: the callback was never called"
      .. (send.returned_reply_id and (" (send_message returned the reply itself, id "
          .. tostring(send.returned_reply_id) .. ": it blocked)") or ""))
    expect(not send.called or type(send.reply_id) == "number",
           "send: the callback got no reply id (error: " .. tostring(send.err_msg) .. ")")
    expect(not send.called_again, "send: the callback ran more than once")
    expect(send.handle_cancel == "function", "send: send_message returned a " .. tostring(send.handle_type)
      .. " whose cancel is " .. tostring(send.handle_cancel) .. ", not a handle with :cancel()")
    expect(not send.t_cb or send.t_cb - send.t0 >= 1000 * M.SEND_DELAY * 0.9,
           "send: the callback came before the server's delay was over: the fault was not in effect")
  end
  if want.close then  -- the queue stopped at once and its DELETE reached the server (delayed)
    expect(close.closed == true, "close: q.closed is not true after q:close()")
    if close.qid then
      local seen = wait_for(M.DELETE_DELAY + 5, function()
        local d = M.deletes(srv, close.qid)
        return #d > 0 and d
      end)
      expect(seen, "close: the DELETE of queue " .. close.qid .. " never reached the server")
      expect(not seen or seen[1].fault == "delay", "close: the DELETE was not the delayed one")
    end
  end
  if want.gc then  -- the dropped queue was collected (a queue nobody holds must not live on)
    expect(gc.collected, "gc: the dropped queue was not collected")
    local gc_deletes = gc.qid and #M.deletes(srv, gc.qid) or 0
    lines[#lines + 1] = ("  %s gc: %d DELETE of the collected queue reached the server (not asserted)")
      :format(r.host, gc_deletes)
  end
  for _, op in ipairs(run.ops) do
    local s = stats[op]
    if s then
      expect(s.ticks >= M.MIN_SHARE * s.expected, ("%s: the host's clock ticked %d times of %.0f expected"
        .. " (%.0f%%, worst gap %.1f ms): the host froze"):format(op, s.ticks, s.expected,
        100 * s.ticks / s.expected, s.worst_gap_ms))
    end
  end
  print(("\n  %s (%s, core %s), %s %.2f ms%s, %.1f s in all:\n%s")
    :format(r.host, tostring(r.lua), tostring(r.core), r.interval_ms and "timer interval" or "mean frame", interval,
            median_frame and (" (median %.2f ms)"):format(median_frame) or "", util.now() - run.started,
            table.concat(lines, "\n")))
  if #r.notes > 0 then print("  notes: " .. table.concat(r.notes, "; ")) end
  assert(#failures == 0, r.host .. ":\n  " .. table.concat(failures, "\n  ") .. "\n" .. table.concat(lines, "\n"))
  return stats
end

return M
