-- Through real nginx, configured like production Zulip's front end (spec/support/nginx.lua), on
-- each of its listeners: plain HTTP, TLS with http2 on (production's `listen ... ssl http2`) and
-- TLS without http2 (issue 10).
local core = require("zulip.core")
local zulip = require("zulip")
local devserver = require("spec.support.devserver")
local nginx = require("spec.support.nginx")
local util = require("spec.support.util")

-- no real rate limit: these specs make many requests; heartbeats keep long-polls short
local START = { heartbeat = 0.5, args = { "--rate-limit", "0" } }

describe("through nginx", function()
  local srv, ng

  setup(function()
    srv = devserver.start(START)
    ng = nginx.start{ upstream = srv }
  end)
  teardown(function()
    ng:stop()
    srv:stop()
  end)
  before_each(function() srv:control("POST", "/test/reset", {}) end)

  local function push(from, to)
    for i = from, to do
      srv:send("alice", { type = "stream", to = "Denmark", topic = "ng", content = tostring(i) })
    end
  end

  -- this listener's access log lines from index `from` on
  local function requests_on(port, from)
    local list = {}
    for i, r in ipairs(ng:requests()) do
      if i >= (from or 1) and r.port == port then list[#list + 1] = r end
    end
    return list
  end

  for _, listener in ipairs{ "plain", "h2", "tls" } do
    describe(listener .. " listener", function()
      local function client(extra)
        local opts = { site = ng.sites[listener], cert_bundle = listener ~= "plain" and ng.ca_file or nil,
                       timeout = 5 }
        for k, v in pairs(extra or {}) do opts[k] = v end
        return util.client(srv, opts)
      end

      it("registers, long-polls and delivers numbered messages exactly once, in order", function()
        local q = client():queue{ event_types = { "message" } }
        local from = #ng:requests() + 1
        util.later(srv, 0.3, { messages = { count = 12, spread = 1.2, to = "Denmark", topic = "ng" } })
        local got, retries = util.collect(q, 12)
        assert.are.same(util.seq(12), got)
        assert.are.same({}, retries)
        -- it went through nginx, on this listener: register and long-polls, some gzipped by nginx
        core.sleep(0.1)  -- nginx logs a request when it has ended
        local seen, gzipped = {}, 0
        for _, r in ipairs(requests_on(ng.ports[listener], from)) do
          seen[r.method .. " " .. r.path] = r.status
          if r.gzip_ratio then gzipped = gzipped + 1 end
        end
        assert.are.equal(200, seen["POST /api/v1/register"])
        assert.are.equal(200, seen["GET /api/v1/events"])
        assert.is_true(gzipped > 0, "nginx gzipped no reply")
        q:close()
      end)

      it("goes on after nginx closed the connection while it was idle between polls", function()
        local q = client():queue{ event_types = { "message" } }
        assert(q:register())
        push(1, 2)
        local before
        local got, retries = util.collect(q, 4, { on_event = function(k)
          if k == 2 then
            core.sleep(0.1)
            before = #ng:requests()
            core.sleep(nginx.KEEPALIVE_TIMEOUT * 2.5)  -- idle: no poll is open now
            push(3, 4)
          end
        end })
        assert.are.same(util.seq(4), got)
        assert.are.same({}, retries)
        core.sleep(0.1)
        -- the poll after the pause went out on a new connection: nginx had closed the idle one
        local last_before, first_after
        for i, r in ipairs(ng:requests()) do
          if r.port == ng.ports[listener] and r.method == "GET" and r.path == "/api/v1/events" then
            if i <= before then last_before = r elseif not first_after then first_after = r end
          end
        end
        assert.is_table(last_before)
        assert.is_table(first_after)
        assert.are_not.equal(last_before.connection, first_after.connection)
        q:close()
      end)

      it("sees nginx's HTML 502 while the dev server is down, re-registers on the new one, goes on", function()
        srv:control("POST", "/test/config", { heartbeat = 30 })  -- the poll waits when it is killed
        local q = client():queue{ event_types = { "message" } }
        assert(q:register())
        local old_queue = q.id
        push(1, 3)
        local statuses, resets, restarted = {}, 0, false
        local got = util.collect(q, 6, {
          on_event = function(k)
            if k == 3 then  -- the next long-poll will be waiting when the server dies
              os.execute("(sleep 0.5; kill -9 " .. srv.pid .. ") >/dev/null 2>&1 &")
            end
          end,
          on_retry = function(info)
            statuses[#statuses + 1] = info.http_status or info.reason
            if info.http_status == 502 then
              assert.matches("502 Bad Gateway", info.error.msg)  -- nginx's own page, not Zulip JSON
              assert.are.equal("HTTP", info.error.code)
            end
            if #statuses == 2 and not restarted then  -- a second poll in vain, then back on its port
              restarted = true
              local port = srv.port
              srv:kill()
              srv = devserver.start{ port = port, heartbeat = START.heartbeat, args = START.args }
            end
          end,
          on_reset = function(qq)
            resets = resets + 1
            assert.are_not.equal(old_queue, qq.id)
            push(4, 6)  -- sent after the re-register: each arrives once
          end,
        })
        assert.are.same(util.seq(6), got)
        assert.is_true(restarted)
        assert.are.same({ 502, 502 }, { statuses[1], statuses[2] })
        assert.are.equal(1, resets)
        q:close()
      end)

      it("loses nothing and repeats nothing across nginx -s reload mid-stream", function()
        local q = client():queue{ event_types = { "message" } }
        assert(q:register())
        local from = #ng:requests() + 1
        util.later(srv, 0.2, { messages = { count = 30, spread = 2.4, to = "Denmark", topic = "ng" } })
        local got = util.collect(q, 30, { on_event = function(k)
          if k == 5 or k == 18 then ng:reload() end
        end })
        assert.are.same(util.seq(30), got)
        -- the polls were served by three generations of workers
        core.sleep(0.1)
        local workers, n = {}, 0
        for _, r in ipairs(requests_on(ng.ports[listener], from)) do
          if r.path == "/api/v1/events" and not workers[r.worker] then
            workers[r.worker] = true
            n = n + 1
          end
        end
        assert.are.equal(3, n)
        q:close()
      end)

      if listener == "h2" then
        it("multiplexes: 50 long-polling queues of one client use at most 2 connections", function()
          local c = client()
          local qs = {}
          for i = 1, 50 do qs[i] = c:queue{ event_types = { "message" } } end
          local from = #ng:requests() + 1
          -- step the client until every queue has registered and has long-polled a few times
          -- (heartbeats every 0.5 s end each poll, so nginx logs it)
          local deadline = core.now() + 15
          local polls
          repeat
            for _, r in ipairs(zulip.step_all({ c }, 0.2)) do assert.is_nil(r.error, r.message) end
            polls = 0
            for _, r in ipairs(requests_on(ng.ports.h2, from)) do
              if r.method == "GET" and r.path == "/api/v1/events" then polls = polls + 1 end
            end
          until polls >= 150 or core.now() > deadline
          assert.is_true(polls >= 150, "only " .. polls .. " polls ended in time")
          for _, q in ipairs(qs) do assert.is_string(q.id) end  -- every queue registered
          local conns, n = {}, 0
          for _, r in ipairs(requests_on(ng.ports.h2, from)) do
            if not conns[r.connection] then conns[r.connection], n = true, n + 1 end
          end
          assert.is_true(n >= 1 and n <= 2, n .. " connections")
          c:close(5)
        end)
      end

      it("gets nginx's own HTML 405 for POST /api/v1/events, as an HTTP error", function()
        local c = client()
        local reply, msg, err = c:request("POST", "events", { queue_id = "1:2" })
        assert.is_nil(reply)
        assert.are.equal("HTTP", err.code, msg)
        assert.are.equal(405, err.http_status)
        assert.matches("405 Not Allowed", msg)
        -- nginx answered it: the dev server never saw it
        for _, r in ipairs(srv:control("GET", "/test/requests?n=50").requests) do
          assert.are_not.equal("POST /api/v1/events", r.method .. " " .. r.path)
        end
        -- the same client goes on with other requests
        local me, msg2 = c:request("GET", "users/me")
        assert.is_table(me, msg2)
        assert.are.equal(srv.users.bot.email, me.email)
      end)
    end)
  end
end)
