-- Decode benchmark: zulip.core.decode vs lua-cjson vs dkjson on synthetic
-- Zulip payloads (bench/gen.lua).  From the repo root:
--   LUA_CPATH="build/5.4/?.so;;" LUA_PATH="lua/?.lua;lua/?/init.lua;;" lua5.4 bench/decode.lua [N]
-- N = decodes per timed run (default 5); best of RUNS runs, the decoders
-- alternating so machine noise hits both alike; CPU time (os.clock);
-- MB = 10^6 bytes.  Two modes:
--   isolated:     collectgarbage() (untimed) before each decode, so the time
--                 is the decoder's own work (incl. GC steps it triggers);
--   back-to-back: N decodes in a row, so the time also includes collecting
--                 the previous results (the same work for every decoder).
-- dkjson (pure Lua) is timed on a single isolated decode.
local zulip = require("zulip.core")
local cjson = require("cjson")
local dkjson = require("dkjson")

local dir = (arg and arg[0] or ""):match("^(.*)[/\\]") or "."
local gen = dofile(dir .. "/gen.lua")

local N = tonumber(arg and arg[1]) or 5
local RUNS = 5

-- Deep equality; numbers by value; integral numbers must be integers (5.3+).
local function check(a, b, path)
  if type(a) == "number" and type(b) == "number" then
    assert(a == b, path .. ": " .. tostring(a) .. " ~= " .. tostring(b))
    if math.type and a == math.floor(a) then
      assert(math.type(a) == "integer", path .. ": integral value decoded as float")
    end
  elseif type(a) == "table" and type(b) == "table" then
    for k, v in pairs(a) do check(v, b[k], path .. "." .. tostring(k)) end
    for k in pairs(b) do assert(a[k] ~= nil, path .. "." .. tostring(k) .. " missing") end
  else
    assert(rawequal(a, b), path .. ": " .. tostring(a) .. " ~= " .. tostring(b))
  end
end

local clock = os.clock
local function isolated(decode, s, n)
  local t = 0
  for _ = 1, n do
    collectgarbage()
    collectgarbage()
    local c0 = clock()
    decode(s)
    t = t + clock() - c0
  end
  return t
end

local function back_to_back(decode, s, n)
  collectgarbage()
  collectgarbage()
  local c0 = clock()
  for _ = 1, n do decode(s) end
  return clock() - c0
end

local function race(mode, s, a, b)
  local ta, tb = math.huge, math.huge
  for _ = 1, RUNS do
    ta = math.min(ta, mode(a, s, N))
    tb = math.min(tb, mode(b, s, N))
  end
  return #s * N / ta / 1e6, #s * N / tb / 1e6
end

local payloads = {
  { "register", gen.register_reply(10000, 500) },
  { "events", gen.events_reply(20000) },
}
local zdecode = function(s) return assert(zulip.decode(s)) end
local dk = function(s) return dkjson.decode(s, 1, zulip.null) end

print(("%s: N=%d, best of %d; MB/s"):format(jit and jit.version or _VERSION, N, RUNS))
print(("%-22s %6s %8s %8s %8s %12s"):format("payload", "MB", "zulip", "cjson", "dkjson",
  "zulip/cjson"))
for _, p in ipairs(payloads) do
  local name, s = p[1], p[2]
  check(zdecode(s), cjson.decode(s), name)
  local z, c = race(isolated, s, zdecode, cjson.decode)
  local d = #s / isolated(dk, s, 1) / 1e6
  print(("%-22s %6.2f %8.1f %8.1f %8.1f %11.2fx"):format(name .. " isolated", #s / 1e6, z, c,
    d, z / c))
  z, c = race(back_to_back, s, zdecode, cjson.decode)
  print(("%-22s %6.2f %8.1f %8.1f %8s %11.2fx"):format(name .. " back-to-back", #s / 1e6, z, c,
    "", z / c))
end
