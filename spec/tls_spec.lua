-- TLS against the dev server over HTTPS with a certificate from a CA made for the test run:
-- verification is on by default, cert_bundle and insecure = true let the client in, and client
-- certificates work when the server requires them.
local util = require("spec.support.util")

local client_for = util.client

describe("TLS", function()
  local srv = util.use_devserver{ tls = true, heartbeat = 30 }

  it("serves HTTPS with a certificate no system CA knows", function()
    assert.matches("^https://127%.0%.0%.1:%d+$", srv.site)
    assert.is_string(util.read_file(srv.ca_file))
  end)

  it("refuses the server by default: verification is on (TLS, and each() raises)", function()
    local c = client_for(srv)
    local r, msg, err = c:request("GET", "users/me")
    assert.is_nil(r)
    assert.are.equal("TLS", err.code, msg)
    assert.matches("certificate", msg)
    local q = c:queue{ event_types = { "message" } }
    local t0 = util.now()
    local ok, raised = pcall(function()
      for _ in q:each() do end  -- luacheck: ignore 512
    end)
    assert.is_false(ok)
    assert.matches("TLS", raised)
    assert.are.equal("TLS", q.last_error.code)
    assert.is_true(util.now() - t0 < 5, "each() retried a TLS failure")
    q:close()
  end)

  it("refuses it with a bundle that does not hold its CA", function()
    local dir = util.tmpdir()
    local other = dir .. "/other.pem"
    -- a CA of its own, that never signed the server's certificate
    assert(os.execute("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
      .. "-subj /CN=other -keyout " .. other .. ".key -out " .. other .. " >/dev/null 2>&1"))
    local r, msg, err = client_for(srv, { cert_bundle = other }):request("GET", "users/me")
    os.execute("rm -rf " .. util.shquote(dir))
    assert.is_nil(r)
    assert.are.equal("TLS", err.code, msg)
  end)

  it("accepts the server with cert_bundle, for requests and queues", function()
    local c = client_for(srv, { cert_bundle = srv.ca_file })
    local me, msg = c:request("GET", "users/me")
    assert.is_table(me, msg)
    assert.are.equal(srv.users.bot.email, me.email)
    local q = c:queue{ event_types = { "message" } }
    assert(q:register())
    srv:send("alice", { type = "stream", to = "Denmark", topic = "tls", content = "over TLS" })
    local events, msg2 = q:get_events()
    assert.is_table(events, msg2)
    assert.are.equal("over TLS", events[1] and events[1].message.content)
    q:close()
  end)

  it("accepts it with insecure = true and logs one warning through on_log", function()
    local warnings = {}
    local c = client_for(srv, { insecure = true, on_log = function(level, msg)
      if level == "warn" then warnings[#warnings + 1] = msg end
    end })
    for _ = 1, 3 do
      local me, msg = c:request("GET", "users/me")
      assert.is_table(me, msg)
    end
    local q = c:queue{ event_types = { "message" } }
    assert(q:register())
    q:close()
    assert.are.equal(1, #warnings)
    assert.matches("verification is off", warnings[1])
  end)

  it("without on_log warns on stderr once per process, however many insecure clients", function()
    local out, ok = util.run_lua(([[
      local zulip = require("zulip")
      for i = 1, 3 do
        local c = zulip.client{ site = %q, email = "bot@example.com", api_key = %q, insecure = true }
        assert(c:request("GET", "users/me"))
      end
      io.stdout:write("done\n")
    ]]):format(srv.site, srv.users.bot.api_key))
    assert.is_true(ok, out)
    local n = select(2, out:gsub("verification is off", ""))
    assert.are.equal(1, n, out)
    assert.matches("done", out)
  end)
end)

describe("TLS client certificates", function()
  local srv = util.use_devserver{ client_ca = true, heartbeat = 30 }

  it("fail when the server requires one and none is given", function()
    local r, msg, err = client_for(srv, { cert_bundle = srv.ca_file }):request("GET", "users/me")
    assert.is_nil(r)
    assert.is_string(msg)
    -- TLS 1.3 sends the server's refusal after the handshake: the client reads it as an alert
    -- (TLS), unless the server's reset comes first (NETWORK); both are errors, never a reply
    assert.is_truthy(err.code == "TLS" or err.code == "NETWORK", msg)
  end)

  it("work with client_cert and client_cert_key", function()
    local c = client_for(srv, { cert_bundle = srv.ca_file, client_cert = srv.client_cert,
                                client_cert_key = srv.client_key })
    local me, msg = c:request("GET", "users/me")
    assert.is_table(me, msg)
    local q = c:queue{ event_types = { "message" } }
    local state, msg2 = q:register()
    assert.is_table(state, msg2)
    q:close()
  end)

  it("give a TLS error for a certificate file that does not exist", function()
    local r, msg, err = client_for(srv, { cert_bundle = srv.ca_file, client_cert = "/nonexistent/client.pem",
                                          client_cert_key = srv.client_key }):request("GET", "users/me")
    assert.is_nil(r)
    assert.are.equal("TLS", err.code, msg)
  end)
end)
