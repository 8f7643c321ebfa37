local policy = require("zulip.policy")
local errors = require("zulip.errors")
local outcome = require("zulip.outcome")

local function err(code, status, retry_after)
  return errors.new(code, "x", { http_status = status, retry_after = retry_after })
end

describe("recovery policy", function()
  it("backs off with full jitter: bounds 0.1, 0.2, 0.4 ... capped at 10 s, reset by a success", function()
    local p = policy.new(nil, function() return 1 end)  -- the top of each jitter range
    local delays = {}
    for i = 1, 9 do delays[i] = p:decide(err("NETWORK")).delay end
    assert.are.same({ 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10 }, delays)
    p:success()
    assert.are.equal(0.1, p:decide(err("TIMEOUT")).delay)
    local q = policy.new(nil, function() return 0.25 end)
    assert.are.equal(0.025, q:decide(err("NETWORK")).delay)
  end)

  it("takes its constants as options and refuses bad ones", function()
    local p = policy.new({ base = 1, factor = 3, cap = 5 }, function() return 1 end)
    assert.are.equal(1, p:decide(err("NETWORK")).delay)
    assert.are.equal(3, p:decide(err("NETWORK")).delay)
    assert.are.equal(5, p:decide(err("NETWORK")).delay)
    -- at the caller's line
    local ok, e = pcall(function() policy.new({ bse = 1 }) end)
    assert.is_false(ok)
    assert.matches("policy_spec%.lua:%d+: zulip: unknown backoff setting 'bse' %(known: base, factor, cap, "
                   .. "max_retry_after%)$", e)
    ok, e = pcall(function() policy.new({ cap = -1 }) end)
    assert.is_false(ok)
    assert.matches("policy_spec%.lua:%d+: zulip: backoff%.cap must be a number >= 0$", e)
  end)

  it("retries network faults, timeouts, 5xx and non-JSON replies", function()
    for _, e in ipairs{ err("NETWORK"), err("TIMEOUT"), err("HTTP", 502), err("HTTP", 500),
                        err("PROTOCOL", 200), err("PROTOCOL") } do
      local d = policy.new():decide(e)
      assert.are.equal("retry", d.action, e.code)
      assert.are.equal(1, d.attempt)
    end
  end)

  it("waits Retry-After on 429, else backs off", function()
    local d = policy.new():decide(err("RATE_LIMIT_HIT", 429, 0.5))
    assert.are.equal("retry", d.action)
    assert.are.equal(0.5, d.delay)
    d = policy.new(nil, function() return 1 end):decide(err("RATE_LIMIT_HIT", 429))
    assert.are.equal(0.1, d.delay)
    -- a hostile Retry-After (a day, a date years ahead) is capped
    assert.are.equal(300, policy.new():decide(err("RATE_LIMIT_HIT", 429, 86400 * 365)).delay)
    assert.are.equal(2, policy.new({ max_retry_after = 2 }):decide(err("RATE_LIMIT_HIT", 429, 60)).delay)
  end)

  it("re-registers at once on BAD_EVENT_QUEUE_ID, backing off when it repeats", function()
    local p = policy.new(nil, function() return 1 end)
    local d = p:decide(err("BAD_EVENT_QUEUE_ID", 400))
    assert.are.equal("reregister", d.action)
    assert.are.equal(0, d.delay)
    assert.are.equal(0.2, p:decide(err("BAD_EVENT_QUEUE_ID", 400)).delay)
  end)

  it("raises on 401, other 4xx, TLS and TOO_LARGE", function()
    for _, e in ipairs{ err("UNAUTHORIZED", 401), err("BAD_REQUEST", 400), err("HTTP", 404),
                        err("HTTP", 301), err("TLS"), err("TOO_LARGE") } do
      assert.are.equal("raise", policy.new():decide(e).action, e.code)
    end
  end)
end)

describe("error classification", function()
  it("maps replies to codes", function()
    local function classify(status, body, retry_after, json_error, raw)
      return outcome.classify({ status = status, body = body, retry_after = retry_after, json_error = json_error }, raw)
    end
    local _, _, e = classify(400, { result = "error", msg = "Bad event queue ID: q", code = "BAD_EVENT_QUEUE_ID",
                                    queue_id = "q" })
    assert.are.equal("BAD_EVENT_QUEUE_ID", e.code)
    assert.are.equal("q", e.queue_id)
    assert.are.equal(400, e.http_status)
    _, _, e = classify(429, { result = "error", msg = "x", code = "RATE_LIMIT_HIT", ["retry-after"] = 2.5 })
    assert.are.equal(2.5, e.retry_after)
    _, _, e = classify(429, { result = "error", msg = "x", ["retry-after"] = 2.5 }, 0.5)
    assert.are.equal(0.5, e.retry_after)  -- the header wins
    _, _, e = classify(405, { result = "error", msg = "Method Not Allowed" })
    assert.are.equal("BAD_REQUEST", e.code)
    _, _, e = classify(401, nil, nil, "unexpected character")
    assert.are.equal("UNAUTHORIZED", e.code)
    _, _, e = classify(502, nil, nil, "x", function() return "<html><b>Bad gateway</b></html>" end)
    assert.are.equal("HTTP", e.code)
    assert.are.equal("zulip: HTTP: unexpected reply: Bad gateway (HTTP 502)", e.message)
    assert.are.equal(e.message, tostring(e))
    _, _, e = outcome.classify({ status = 0, code = "TIMEOUT", message = "Operation timed out", sent = true })
    assert.are.equal("TIMEOUT", e.code)
    _, _, e = classify(200, { events = {} })
    assert.are.equal("PROTOCOL", e.code)
    assert.are.same({ result = "success" }, classify(200, { result = "success" }))
  end)
end)
