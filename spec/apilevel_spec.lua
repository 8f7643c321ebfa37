-- Today's API level (feature level 481): the register parameters that changed between feature level 330
-- and 481 reach the server as the real one reads them, the dev server honours them, and bad
-- values raise before any request.
local cjson = require("cjson")
local core = require("zulip.core")
local util = require("spec.support.util")

describe("API level 481", function()
  local srv = util.use_devserver{ heartbeat = 30 }
  local client
  setup(function() client = util.client(srv) end)

  local function register_form()
    local reqs = srv:control("GET", "/test/requests?n=20").requests
    for i = #reqs, 1, -1 do
      if reqs[i].path == "/api/v1/register" then return reqs[i].form end
    end
  end

  local function queue_info(id)
    for _, q in ipairs(srv:control("GET", "/test/queues").queues) do
      if q.id == id then return q end
    end
  end

  it("sends idle_queue_timeout and include_subscribers = \"partial\" as JSON, and the server honours them", function()
    local q = client:queue{ idle_queue_timeout = 3600, include_subscribers = "partial",
                            fetch_event_types = { "subscription" } }
    local state = assert(q:register())
    local form = register_form()
    assert.are.equal("3600", form.idle_queue_timeout)
    assert.are.equal('"partial"', form.include_subscribers)
    assert.is_nil(state.ignored_parameters_unsupported)
    assert.are.equal(3600, state.idle_queue_timeout_secs)
    assert.are.equal(3600, queue_info(q.id).idle_queue_timeout)
    assert.is_true(#state.subscriptions > 0)
    for _, sub in ipairs(state.subscriptions) do
      assert.is_nil(sub.subscribers)
      assert.are.same({ 10 }, sub.partial_subscribers)  -- Denmark's bot
    end
    q:close()
  end)

  it("sends \"mobile\" for idle_queue_timeout: 12 hours", function()
    local q = client:queue{ idle_queue_timeout = "mobile" }
    local state = assert(q:register())
    assert.are.equal('"mobile"', register_form().idle_queue_timeout)
    assert.are.equal(12 * 3600, state.idle_queue_timeout_secs)
    assert.are.equal(12 * 3600, queue_info(q.id).idle_queue_timeout)
    q:close()
  end)

  it("keeps include_subscribers true and false as they were", function()
    local q = client:queue{ include_subscribers = true, fetch_event_types = { "subscription" } }
    local state = assert(q:register())
    assert.are.equal("true", register_form().include_subscribers)
    assert.are.same({ 10, 11 }, state.subscriptions[1].subscribers)
    assert.is_nil(state.subscriptions[1].partial_subscribers)
    q:close()
    q = client:queue{ include_subscribers = false, fetch_event_types = { "subscription" } }
    state = assert(q:register())
    assert.are.equal("false", register_form().include_subscribers)
    assert.is_nil(state.subscriptions[1].subscribers)
    q:close()
  end)

  it("passes the newer client_capabilities flags through as given, unknown ones too", function()
    local caps = { notification_settings_null = true, empty_topic_name = true, simplified_presence_events = true,
                   include_deactivated_groups = true, individual_emoji_changes = true, archived_channels = true,
                   a_flag_from_the_future = true }
    local q = client:queue{ client_capabilities = caps }
    local state = assert(q:register())
    assert.is_nil(state.ignored_parameters_unsupported)
    assert.are.same(caps, cjson.decode(register_form().client_capabilities))
    q:close()
  end)

  it("collects a queue after its idle_queue_timeout, not the default", function()
    srv:control("POST", "/test/config", { gc_interval = 0.2 })
    local short = client:queue{ idle_queue_timeout = 1 }
    local long = client:queue{}
    assert(short:register())
    assert(long:register())
    local t0 = util.now()
    while queue_info(short.id) and util.now() - t0 < 10 do core.sleep(0.1) end
    assert.is_nil(queue_info(short.id))
    assert.is_table(queue_info(long.id))  -- 600 s by default
    short:close()
    long:close()
  end)

  it("raises a clear error for bad values, before any request", function()
    local before = #srv:control("GET", "/test/requests?n=500").requests
    for _, bad in ipairs{ 0, -5, 1.5, "desktop", true, {} } do
      assert.has_error(function() client:queue{ idle_queue_timeout = bad } end,
        "zulip: queue option 'idle_queue_timeout' must be an integer >= 1 or \"mobile\"")
    end
    for _, bad in ipairs{ "full", 1, {} } do
      assert.has_error(function() client:queue{ include_subscribers = bad } end,
        "zulip: queue option 'include_subscribers' must be a boolean or \"partial\"")
    end
    assert.are.equal(before, #srv:control("GET", "/test/requests?n=500").requests)
  end)

  describe("the dev server, as the real one at level 481", function()
    local CAPS = '{"notification_settings_null":true}'
    local function register(params)
      params.client_capabilities = params.client_capabilities or CAPS
      local resp = assert(srv:api("bot", "POST", "/api/v1/register", params))
      return resp.status, resp.json
    end

    it("reports feature level 481", function()
      local status, r = register{}
      assert.are.equal(200, status)
      assert.are.equal(481, r.zulip_feature_level)
      assert.are.equal(600, r.idle_queue_timeout_secs)  -- the default without idle_queue_timeout
    end)

    it("rejects a bad idle_queue_timeout with 400 BAD_REQUEST", function()
      for _, bad in ipairs{ "mobile", '"desktop"', "0", "-1", "1.5", "true", tostring(7 * 24 * 3600 + 1) } do
        local status, r = register{ idle_queue_timeout = bad }
        assert.are.equal(400, status, bad)
        assert.are.equal("BAD_REQUEST", r.code, bad)
        assert.matches("idle_queue_timeout", r.msg)
      end
      local status, r = register{ idle_queue_timeout = tostring(7 * 24 * 3600) }
      assert.are.equal(200, status)
      assert.are.equal(7 * 24 * 3600, r.idle_queue_timeout_secs)
    end)

    it("rejects include_subscribers other than true, false and \"partial\"", function()
      for _, bad in ipairs{ '"all"', "partial", "1" } do
        local status, r = register{ include_subscribers = bad }
        assert.are.equal(400, status, bad)
        assert.matches("include_subscribers", r.msg)
      end
    end)

    it("still requires notification_settings_null and checks known flags are booleans", function()
      local status, r = register{ client_capabilities = '{"empty_topic_name":true}' }
      assert.are.equal(400, status)
      assert.matches("notification_settings_null", r.msg)
      status, r = register{ client_capabilities = '{"notification_settings_null":true,"individual_emoji_changes":1}' }
      assert.are.equal(400, status)
      assert.matches("individual_emoji_changes", r.msg)
      status = register{ client_capabilities = '{"notification_settings_null":true,"unheard_of":"x"}' }
      assert.are.equal(200, status)
    end)

    it("lists unknown register parameters in ignored_parameters_unsupported", function()
      local status, r = register{ some_future_parameter = "1", idle_queue_timeout = "60" }
      assert.are.equal(200, status)
      assert.are.same({ "some_future_parameter" }, r.ignored_parameters_unsupported)
    end)
  end)
end)
