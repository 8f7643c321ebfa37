local zulip = require("zulip")
local config = require("zulip.config")
local util = require("spec.support.util")

local KEY = "botkey0123456789ABCDEFGHIJKLMNOP"

local function env_of(t)
  return function(name) return t[name] end
end

describe("configuration", function()
  local dir, rc
  before_each(function()
    dir = util.tmpdir()
    rc = util.write_file(dir .. "/zuliprc", table.concat({
      "[api]", "email=rc@example.com", "key=rckey0123456789ABCDEFGHIJKLMNOPQ", "site=rc.example.com/",
      "insecure=false", "cert_bundle=/tmp/rc-bundle.pem", "client_cert=/tmp/rc.crt", "client_cert_key=/tmp/rc.key",
      "", "[other]", "email=wrong@example.com", "",
    }, "\n"))
  end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("reads the [api] section of a zuliprc", function()
    local s = config.resolve({ zuliprc = rc }, env_of{})
    assert.are.equal("rc@example.com", s.email)
    assert.are.equal("rckey0123456789ABCDEFGHIJKLMNOPQ", s.api_key)
    assert.are.equal("https://rc.example.com", s.site)
    assert.are.equal(false, s.insecure)
    assert.are.equal("/tmp/rc-bundle.pem", s.cert_bundle)
    assert.are.equal("/tmp/rc.crt", s.client_cert)
    assert.are.equal("/tmp/rc.key", s.client_cert_key)
  end)

  it("prefers options, then the environment, then the zuliprc", function()
    local env = env_of{ ZULIP_EMAIL = "env@example.com", ZULIP_SITE = "http://env.example.com",
                        ZULIP_CERT_BUNDLE = "/env/bundle.pem", ZULIP_ALLOW_INSECURE = "true" }
    local s = config.resolve({ zuliprc = rc, email = "opt@example.com" }, env)
    assert.are.equal("opt@example.com", s.email)
    assert.are.equal("http://env.example.com", s.site)
    assert.are.equal("rckey0123456789ABCDEFGHIJKLMNOPQ", s.api_key)
    assert.are.equal("/env/bundle.pem", s.cert_bundle)
    assert.are.equal(true, s.insecure)
  end)

  it("finds the zuliprc through $ZULIP_CONFIG, else ~/.zuliprc", function()
    local s = config.resolve({}, env_of{ ZULIP_CONFIG = rc })
    assert.are.equal("rc@example.com", s.email)
    os.rename(rc, dir .. "/.zuliprc")
    local out, ok = util.run_lua([[
      local s = require("zulip.config").resolve({})
      io.write(s.email, " ", s.site)
    ]], { HOME = dir, ZULIP_CONFIG = false, ZULIP_EMAIL = false, ZULIP_SITE = false, ZULIP_API_KEY = false,
          LUA_PATH = util.root .. "/lua/?.lua;" .. util.root .. "/lua/?/init.lua;;" })
    assert.is_true(ok, out)
    assert.are.equal("rc@example.com https://rc.example.com", out)
  end)

  it("reads the real environment through zulip.client", function()
    local out, ok = util.run_lua([[
      local c = require("zulip").client{}
      io.write(c.email, " ", c.site)
    ]], { HOME = dir, ZULIP_CONFIG = false, ZULIP_EMAIL = "e@example.com", ZULIP_SITE = "zulip.example.org",
          ZULIP_API_KEY = KEY, LUA_PATH = package.path, LUA_CPATH = package.cpath })
    assert.is_true(ok, out)
    assert.are.equal("e@example.com https://zulip.example.org", out)
  end)

  it("takes the proxy from the environment as libcurl would, once", function()
    local function proxy(site, env, opts)
      local o = { site = site, email = "b@example.com", api_key = KEY }
      for k, v in pairs(opts or {}) do o[k] = v end
      local s = config.resolve(o, env_of(env))
      return s.proxy, s.no_proxy
    end
    local all = { https_proxy = "http://a:1", HTTPS_PROXY = "http://b:2", http_proxy = "http://c:3",
                  HTTP_PROXY = "http://d:4", all_proxy = "socks5h://e:5", ALL_PROXY = "http://f:6" }
    assert.are.same({ "http://a:1", "" }, { proxy("chat.example.com", all) })
    assert.are.same({ "http://c:3", "" }, { proxy("http://chat.example.com", all) })
    all.https_proxy, all.http_proxy = nil, nil
    assert.are.same({ "http://b:2", "" }, { proxy("chat.example.com", all) })
    -- HTTP_PROXY never: a CGI request's Proxy: header sets it
    assert.are.same({ "socks5h://e:5", "" }, { proxy("http://chat.example.com", all) })
    assert.are.same({ "http://f:6", "" }, { proxy("http://x.example.com", { ALL_PROXY = "http://f:6" }) })
    -- set but empty: no proxy, and the search stops there, as in libcurl
    assert.are.same({ "", "" }, { proxy("chat.example.com", { https_proxy = "", ALL_PROXY = "http://f:6" }) })
    assert.are.same({ "", "" }, { proxy("chat.example.com", {}) })
    local env = { https_proxy = "http://a:1", no_proxy = "localhost,.example.com", NO_PROXY = "x" }
    assert.are.same({ "http://a:1", "localhost,.example.com" }, { proxy("chat.example.com", env) })
    env.no_proxy, env.NO_PROXY = nil, "*"
    assert.are.same({ "http://a:1", "*" }, { proxy("chat.example.com", env) })
    -- the option wins over the environment; the exceptions still apply to it, as in libcurl
    assert.are.same({ "http://opt:9", "*" }, { proxy("chat.example.com", { https_proxy = "http://a:1", NO_PROXY = "*" },
      { proxy = "http://opt:9" }) })
  end)

  it("normalises the site", function()
    assert.are.equal("https://chat.example.com", config.normalize_site("chat.example.com///"))
    assert.are.equal("http://127.0.0.1:9991", config.normalize_site("http://127.0.0.1:9991/"))
    assert.are.equal("https://chat.example.com", config.normalize_site("https://chat.example.com/api/"))
    assert.are.equal("http://localhost:9991", config.normalize_site("localhost:9991"))
  end)

  it("raises clear errors for a missing site or key and a bad insecure value", function()
    assert.has_error(function() config.resolve({ email = "a@b", api_key = KEY }, env_of{}) end,
      "zulip: no site given (option 'site', ZULIP_SITE, or 'site' in the [api] section of a zuliprc)")
    assert.has_error(function() config.resolve({ email = "a@b", site = "x" }, env_of{}) end,
      "zulip: no API key given (option 'api_key', ZULIP_API_KEY, or 'key' in the [api] section of a zuliprc)")
    assert.has_error(function()
      config.resolve({ email = "a@b", site = "x", api_key = KEY }, env_of{ ZULIP_ALLOW_INSECURE = "maybe" })
    end, 'zulip: ZULIP_ALLOW_INSECURE must be true or false, got "maybe"')
    assert.has_error(function() config.resolve({ zuliprc = dir .. "/missing" }, env_of{}) end)
  end)

  it("does no network I/O when a client is made", function()
    local t0 = util.now()
    local c = zulip.client{ site = "http://192.0.2.1:9", email = "a@example.com", api_key = KEY }
    assert.is_true(util.now() - t0 < 0.5)
    assert.are.equal("http://192.0.2.1:9", c.site)
  end)

  it("rejects wrong option types and unknown options", function()
    assert.has_error(function() zulip.client{ site = 5, email = "a", api_key = KEY } end,
      "zulip: client option 'site' must be a string")
    assert.has_error(function() zulip.client{ sitee = "x" } end, "zulip: unknown client option 'sitee'")
    assert.has_error(function() zulip.client("x") end, "zulip: zulip.client expects a table of options")
    assert.has_error(function() zulip.client{ site = "x", email = "a", api_key = KEY, timeout = 0 } end,
      "zulip: client option 'timeout' must be > 0")
  end)

  it("never shows the API key in tostring", function()
    local c = zulip.client{ site = "x.example.com", email = "a@example.com", api_key = KEY }
    local q = c:queue{}
    for _, s in ipairs{ tostring(c), tostring(q), tostring(c._session) } do
      assert.is_nil(s:find(KEY, 1, true), s)
    end
    assert.matches("a@example.com at https://x.example.com", tostring(c), 1, true)
    q:close()
  end)
end)
