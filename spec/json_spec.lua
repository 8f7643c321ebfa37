-- Spec for zulip.core.decode (the C JSON decoder in csrc/json.c).
-- Runs under Lua 5.1, 5.3, 5.4 and LuaJIT; integer-subtype checks are
-- guarded by `if math.type`.
local core = require("zulip.core")
local decode, null = core.decode, core.null

local has_int = math.type ~= nil
local PAD = string.rep(" ", 5000) -- documents >= 4 KiB have string caches of their own; smaller
                                  -- ones use the caches the Lua state keeps between decodes

-- Decode s, which must succeed; returns the value.
local function ok(s)
  local n = select("#", decode(s))
  local v, msg = decode(s)
  assert(msg == nil, "unexpected error: " .. tostring(msg))
  assert.are.equal(1, n)
  return v
end

-- Decode s, which must fail; returns msg, err table.
local function bad(s)
  local v, msg, err = decode(s)
  assert.is_nil(v)
  assert.is_string(msg)
  assert.is_table(err)
  assert.are.equal("PROTOCOL", err.code)
  assert.are.equal(msg, err.msg)
  assert.is_number(err.position)
  return msg, err
end

-- Decode s, which must fail with exactly this message and position.
local function fails(s, msg, pos)
  local m, err = bad(s)
  assert.are.equal(msg .. " at character " .. pos, m)
  assert.are.equal(pos, err.position)
end

local function is_int(v) return math.type(v) == "integer" end
local function is_float(v) return math.type(v) == "float" end

-- Deep equality with numbers compared by value, integral ones also by subtype.
local function same(a, b, path)
  path = path or "$"
  if type(a) == "number" and type(b) == "number" then
    assert(a == b, path .. ": " .. tostring(a) .. " ~= " .. tostring(b))
    if has_int and a == math.floor(a) and a > -2^63 and a < 2^63 then
      assert(is_int(a), path .. ": integral value decoded as float")
    end
  elseif type(a) == "table" and type(b) == "table" then
    for k, v in pairs(a) do same(v, b[k], path .. "." .. tostring(k)) end
    for k in pairs(b) do assert(a[k] ~= nil, path .. "." .. tostring(k) .. " missing") end
  else
    assert(rawequal(a, b), path .. ": " .. tostring(a) .. " ~= " .. tostring(b))
  end
end

-- Check f(decode(s)) with the kept string caches (s small) and with a document's own (padded).
local function both(s, f)
  f(ok(s))
  f(ok(s .. PAD))
  f(ok(PAD .. s))
end

describe("zulip.core.decode", function()
  describe("types", function()
    it("decodes every JSON type", function()
      both('{"o":{"k":"v"},"a":[1,"x",true,false,null],"s":"str","n":-1.5,"t":true,"f":false,"z":null}',
        function(v)
          assert.are.equal("table", type(v))
          assert.are.equal("v", v.o.k)
          assert.are.equal(5, #v.a)
          assert.are.equal(1, v.a[1])
          assert.are.equal("x", v.a[2])
          assert.are.equal(true, v.a[3])
          assert.are.equal(false, v.a[4])
          assert.are.equal(null, v.a[5])
          assert.are.equal("str", v.s)
          assert.are.equal(-1.5, v.n)
          assert.are.equal(true, v.t)
          assert.are.equal(false, v.f)
          assert.are.equal(null, v.z)
        end)
    end)

    it("decodes scalars at top level", function()
      assert.are.equal("hi", ok('"hi"'))
      assert.are.equal(42, ok("42"))
      assert.are.equal(true, ok("true"))
      assert.are.equal(false, ok("false"))
      assert.are.equal(null, ok("null"))
      assert.are.equal("", ok('""'))
    end)

    it("decodes arrays as 1-based sequences and empty containers as empty tables", function()
      both("[[],{},[[]],10,20]", function(v)
        assert.are.equal(5, #v)
        assert.are.equal(nil, next(v[1]))
        assert.are.equal(nil, next(v[2]))
        assert.are.equal(0, #v[3][1])
        assert.are.equal(10, v[4])
        assert.are.equal(20, v[5])
        assert.are.equal(nil, v[0])
        assert.are.equal(nil, v[6])
      end)
    end)

    it("keeps array holes for null as the sentinel", function()
      local v = ok("[null,null,3]")
      assert.are.equal(3, #v)
      assert.are.equal(null, v[1])
      assert.are.equal(3, v[3])
    end)
  end)

  describe("null", function()
    it("is a lightuserdata sentinel equal to NULL", function()
      assert.are.equal("userdata", type(null))
      assert.is_true(rawequal(ok("null"), null))
      local okc, cjson = pcall(require, "cjson")
      if okc then assert.is_true(rawequal(null, cjson.null)) end
    end)
  end)

  describe("numbers", function()
    it("decodes integer literals as integers", function()
      for _, s in ipairs({ "0", "-0", "1", "-1", "123456789", "1717200000" }) do
        local v = ok(s)
        assert.are.equal(tonumber(s), v)
        if has_int then assert.is_true(is_int(v), s) end
      end
    end)

    it("is exact for large integers on 5.3+", function()
      if not has_int then return end
      local v = ok("9007199254740993")
      assert.is_true(is_int(v))
      assert.are.equal(9007199254740993, v)
      assert.are_not.equal(9007199254740992, v)
      assert.are.equal(math.maxinteger, ok("9223372036854775807"))
      assert.are.equal(math.mininteger, ok("-9223372036854775808"))
      assert.is_true(is_int(ok("-9223372036854775808")))
      assert.are.equal(-9007199254740993, ok("[-9007199254740993]")[1])
    end)

    it("turns integers beyond int64 into floats", function()
      local v = ok("9223372036854775808")
      assert.are.equal(2^63, v)
      assert.are.equal(-2^63, ok("-9223372036854775809"))
      assert.are.equal(2^64, ok("18446744073709551616"))
      assert.are.equal(1e30, ok("1000000000000000000000000000000"))
      assert.are.equal(1.2345678901234568e29, ok("123456789012345678901234567890"))
      if has_int then
        assert.is_true(is_float(v))
        assert.is_true(is_float(ok("-9223372036854775809")))
        assert.is_true(is_float(ok("12345678901234567890")))
      end
    end)

    it("keeps floats floats", function()
      local cases = { ["1.0"] = 1.0, ["1e2"] = 100, ["1E2"] = 100, ["1e+2"] = 100, ["-0.5"] = -0.5,
        ["1.5e-300"] = 1.5e-300, ["0.0"] = 0, ["2.5E-3"] = 0.0025, ["100e-2"] = 1, ["-1.25e1"] = -12.5 }
      for s, want in pairs(cases) do
        local v = ok(s)
        assert.are.equal(want, v, s)
        if has_int then assert.is_true(is_float(v), s) end
      end
      local nz = ok("-0.0")
      assert.are.equal(-math.huge, 1 / nz)
      if has_int then assert.are.equal(math.huge, 1 / ok("-0")) end -- integer 0
    end)

    it("rounds decimals correctly (agrees with the C library)", function()
      local cases = { "0.1", "0.2", "0.30000000000000004", "2.2250738585072014e-308",
        "2.2250738585072011e-308", "4.9e-324", "5e-324", "1.7976931348623157e308",
        "1e23", "8.98846567431158e307", "9007199254740993.0", "9007199254740993e0",
        "1.00000000000000011102230246251565404236316680908203125", "0.000001",
        "123.456", "3.14159265358979323846264338327950288", "1e22", "1e-22", "4503599627370497.5",
        "1.7976931348623159e308", "1e400", "1e-400", "0.1e1", "7e-10", "2e0" }
      for _, s in ipairs(cases) do
        assert.are.equal(tonumber(s), ok(s), s)
        assert.are.equal(-tonumber(s), ok("-" .. s), s)
      end
      -- many digits and huge exponents must not confuse the fast path
      local zeros = string.rep("0", 100010)
      assert.are.equal(1e-6, ok("0." .. zeros .. "1e100005"))
      assert.are.equal(math.huge, ok("0." .. string.rep("0", 99989) .. "1e1000000000"))
      assert.are.equal(0, ok("1e-99999999999999999999"))
      assert.are.equal(1, ok("1" .. string.rep("0", 30) .. "e-30"))
      assert.are.equal(1, ok("0.0000000000000000000000000000001e31"))
      assert.are.equal(math.huge, ok("1" .. string.rep("0", 400)))
      assert.are.equal(12.5, ok("12.5" .. string.rep("0", 300)))
      assert.are.equal(math.huge, ok("1e400"))
      assert.are.equal(-math.huge, ok("-1e400"))
      assert.are.equal(0, ok("1e-400"))
    end)

    it("agrees with the C library on many pseudo-random decimals", function()
      local seed = 12345
      local function rnd(n)
        seed = (seed * 16807) % 2147483647
        return seed % n
      end
      for _ = 1, 20000 do
        local digits = {}
        for i = 1, 1 + rnd(20) do digits[i] = tostring(rnd(10)) end
        local m = table.concat(digits)
        local pt = rnd(#m + 1)
        local s = m:sub(1, pt) .. "." .. m:sub(pt + 1)
        if pt == 0 or pt == #m then s = m .. ".5" end
        s = s:gsub("^0+(%d)", "%1")
        if rnd(2) == 0 then s = s .. "e" .. tostring(rnd(60) - 30) end
        assert.are.equal(tonumber(s), ok(s), s)
      end
    end)

    it("does not depend on the C locale's decimal point", function()
      -- a locale whose decimal point is ',': compiled into a temp dir (glibc's localedef and the
      -- `locales` sources, both bootstrapped), then used by a fresh interpreter via LOCPATH
      local util = require("spec.support.util")
      local dir = util.tmpdir()
      assert(os.execute("localedef -i de_DE -f UTF-8 " .. dir .. "/de_DE.UTF-8 >/dev/null 2>&1") ~= false)
      local out, okrun = util.run_lua([[
        assert(os.setlocale("de_DE.UTF-8", "numeric"), "locale not found")
        -- PUC Lua formats through the C library, so it shows the locale took (LuaJIT formats itself)
        assert(rawget(_G, "jit") or string.format("%.1f", 1.5) == "1,5", "not a comma locale")
        local d = require("zulip.core").decode
        -- fast path, and the strtod fallback (> 19 digits, exponent out of range)
        local r = { d("1.5"), d("[2.25e1]")[1], d("1.5000000000000000000000001"), d("2.5e300"), d("-7.25e-200") }
        os.setlocale("C", "numeric")
        print(string.format("%.17g %.17g %.17g %.17g %.17g", r[1], r[2], r[3], r[4], r[5]))
      ]], { LOCPATH = dir, LUA_PATH = package.path, LUA_CPATH = package.cpath })
      os.execute("rm -rf " .. util.shquote(dir))
      assert.is_true(okrun, out)
      assert.are.equal(string.format("%.17g %.17g %.17g %.17g %.17g", 1.5, 22.5, 1.5, 2.5e300, -7.25e-200) .. "\n", out)
    end)

    it("rejects malformed numbers", function()
      fails("01", "unexpected character '1'", 2)
      fails("-01", "unexpected character '1'", 3)
      fails("[00]", "unexpected character '0'", 3)
      fails("+1", "unexpected character '+'", 1)
      fails(".5", "unexpected character '.'", 1)
      fails("1.", "unexpected end of input", 3)
      fails("[1.]", "unexpected character ']'", 4)
      fails("1.e5", "unexpected character 'e'", 3)
      fails("1e", "unexpected end of input", 3)
      fails("1e+", "unexpected end of input", 4)
      fails("[1e+]", "unexpected character ']'", 5)
      fails("-", "unexpected end of input", 2)
      fails("--1", "unexpected character '-'", 2)
      fails("-a", "unexpected character 'a'", 2)
      fails("NaN", "unexpected character 'N'", 1)
      fails("Infinity", "unexpected character 'I'", 1)
      fails("-Infinity", "unexpected character 'I'", 2)
      fails("0x10", "unexpected character 'x'", 2)
      fails("1_000", "unexpected character '_'", 2)
      fails("[1,5.]", "unexpected character ']'", 6)
    end)
  end)

  describe("strings", function()
    it("decodes all escape forms", function()
      both([=["\"\\\/\b\f\n\r\t"]=], function(v) assert.are.equal('"\\/\b\f\n\r\t', v) end)
      both([=[{"k\"ey":"a\\b"}]=], function(v) assert.are.equal("a\\b", v['k"ey']) end)
    end)

    it("decodes BMP \\u escapes to UTF-8", function()
      assert.are.equal("A", ok('"\\u0041"'))
      assert.are.equal("\195\169", ok('"\\u00e9"'))
      assert.are.equal("\195\169", ok('"\\u00E9"'))
      assert.are.equal("\226\130\172", ok('"\\u20ac"'))
      assert.are.equal("\223\191", ok('"\\u07ff"'))
      assert.are.equal("\224\160\128", ok('"\\u0800"'))
      assert.are.equal("\239\191\191", ok('"\\uffff"'))
      assert.are.equal("a\0b", ok('"a\\u0000b"'))
      assert.are.equal("caf\195\169!", ok('"caf\\u00e9!"'))
    end)

    it("combines surrogate pairs into 4-byte UTF-8", function()
      assert.are.equal("\240\159\152\128", ok('"\\ud83d\\ude00"'))
      assert.are.equal("\240\159\152\128", ok('"\\uD83D\\uDE00"'))
      assert.are.equal("\240\144\128\128", ok('"\\ud800\\udc00"'))
      assert.are.equal("\244\143\191\191", ok('"\\udbff\\udfff"'))
      assert.are.equal("x\240\159\142\137y", ok('"x\\ud83c\\udf89y"'))
    end)

    it("replaces lone surrogates with U+FFFD", function()
      local R = "\239\191\189"
      assert.are.equal(R, ok('"\\ud83d"'))
      assert.are.equal(R, ok('"\\ude00"'))
      assert.are.equal(R .. "x", ok('"\\ud83dx"'))
      assert.are.equal(R .. "A", ok('"\\ud83d\\u0041"'))
      assert.are.equal(R .. "\240\159\152\128", ok('"\\ud83d\\ud83d\\ude00"'))
      assert.are.equal(R .. R, ok('"\\ude00\\ud83d"'))
      assert.are.equal(R .. "\n", ok('"\\ud83d\\n"'))
    end)

    it("rejects invalid escapes", function()
      fails('"\\q"', "invalid escape '\\q'", 2)
      fails('"ab\\x41"', "invalid escape '\\x'", 4)
      fails('"\\U0041"', "invalid escape '\\U'", 2)
      fails('"\\\'"', "invalid escape '\\''", 2)
      fails('"\\u12"', "invalid unicode escape", 2)
      fails('"\\u12G4"', "invalid unicode escape", 2)
      fails('"\\u-123"', "invalid unicode escape", 2)
      fails('"\\ud83d\\u12"', "invalid unicode escape", 8)
      fails('"\\\1"', "invalid escape '\\' followed by byte 0x01", 2)
    end)

    it("rejects raw control characters", function()
      fails('"a\nb"', "unescaped control character '\\x0a' in string", 3)
      fails('"\t"', "unescaped control character '\\x09' in string", 2)
      fails('"a\0"', "unescaped control character '\\x00' in string", 3)
      fails('"\31"', "unescaped control character '\\x1f' in string", 2)
      fails('"\\n\1"', "unescaped control character '\\x01' in string", 4)
      fails('{"a\1":1}', "unescaped control character '\\x01' in string", 4)
      assert.are.equal("\127", ok('"\127"'))
    end)

    it("finds quotes, escapes and control characters at every offset", function()
      for n = 0, 40 do
        for _, fill in ipairs({ "x", "\200", "\255", "~", "\127" }) do
          local str = string.rep(fill, n)
          for _, pad in ipairs({ "", PAD }) do
            assert.are.equal(str, ok('"' .. str .. '"' .. pad))
            assert.are.equal(str .. "\n" .. str, ok('"' .. str .. '\\n' .. str .. '"' .. pad))
            assert.are.equal(1, ok('{"' .. str .. '":1}' .. pad)[str])
            fails('"' .. str .. '\1"' .. pad, "unescaped control character '\\x01' in string", n + 2)
            fails('"' .. str .. '\31"' .. pad, "unescaped control character '\\x1f' in string", n + 2)
            fails('"\\t' .. str .. '\0' .. pad, "unescaped control character '\\x00' in string", n + 4)
            fails('"' .. str, "unexpected end of input", n + 2)
          end
        end
      end
    end)

    it("passes invalid UTF-8 through unchanged", function()
      for _, s in ipairs({ "\255\254", "\195", "\192\175", "a\237\160\128b", "\244\144\128\128" }) do
        both('"' .. s .. '"', function(v) assert.are.equal(s, v) end)
        both('{"' .. s .. '":1}', function(v) assert.are.equal(1, v[s]) end)
      end
    end)

    it("decodes long strings with and without escapes", function()
      local plain = string.rep("abcdefghij\195\169", 100000)
      assert.are.equal(plain, ok('"' .. plain .. '"'))
      local esc = string.rep('x\\"\\u00e9\\ud83d\\ude00\\n', 50000)
      local want = string.rep('x"\195\169\240\159\152\128\n', 50000)
      assert.are.equal(want, ok('"' .. esc .. '"'))
      local tail = string.rep("y", 3000)
      assert.are.equal("\n" .. tail, ok('"\\n' .. tail .. '"'))
      assert.are.equal(tail .. "\n" .. tail, ok('"' .. tail .. '\\n' .. tail .. '"'))
    end)
  end)

  describe("objects", function()
    it("lets the last duplicate key win", function()
      both('{"a":1,"b":2,"a":3}', function(v)
        assert.are.equal(3, v.a)
        assert.are.equal(2, v.b)
      end)
      both('{"a":1,"\\u0061":2}', function(v) assert.are.equal(2, v.a) end)
    end)

    it("keeps keys that differ only in the middle distinct", function()
      local parts, items = {}, {}
      for i = 1, 300 do
        local k = "prefix__" .. string.format("%03d", i) .. "__suffix"
        local w = "valstart" .. string.format("%04d", i) .. "_the_end"
        parts[i] = '"' .. k .. '":"' .. w .. '"'
        items[i] = '"' .. w .. '"'
      end
      local doc = "[{" .. table.concat(parts, ",") .. "},[" .. table.concat(items, ",") .. "]]"
      both(doc, function(v)
        for i = 1, 300 do
          local k = "prefix__" .. string.format("%03d", i) .. "__suffix"
          local w = "valstart" .. string.format("%04d", i) .. "_the_end"
          assert.are.equal(w, v[1][k])
          assert.are.equal(w, v[2][i])
        end
      end)
    end)

    it("handles many distinct keys and short values", function()
      local parts = {}
      for i = 1, 20000 do parts[i] = string.format('"k%d":"v%d"', i, i % 777) end
      local v = ok("{" .. table.concat(parts, ",") .. "}")
      local n = 0
      for k, val in pairs(v) do
        n = n + 1
        assert.are.equal("v" .. tostring(tonumber(k:sub(2)) % 777), val)
      end
      assert.are.equal(20000, n)
    end)

    it("keeps the strings of small documents apart from one decode to the next", function()
      -- keys and values alike 8 bytes at each end, differing only in the middle and in length,
      -- decoded in turns with collections between: the state keeps them from one decode to
      -- the next, and must hand out each one only for itself
      local function key(i) return "abcdefgh" .. string.rep(string.char(65 + i % 26), i % 23) .. "stuvwxyz" end
      local function val(i) return "ABCDEFGH" .. string.format("%0" .. (1 + i % 17) .. "d", i) .. "STUVWXYZ" end
      for round = 1, 3 do
        for i = 1, 400 do
          local doc = string.format('{"%s":"%s","id":%d,"%s":["%s",""]}', key(i), val(i), i, key(i + 1), val(i + 2))
          local v = ok(doc)
          assert.are.equal(val(i), v[key(i)])
          assert.are.equal(val(i + 2), v[key(i + 1)][1])
          assert.are.equal("", v[key(i + 1)][2])
          assert.are.equal(i, v.id)
          if i % 97 == 0 then collectgarbage("collect") end
        end
        collectgarbage("collect")
        assert.are.equal("xyz", ok('{"k":"xyz"}').k .. ok(PAD .. '{"k":""}').k, "round " .. round)
      end
    end)

    it("decodes short keys at the very end of the input", function()
      assert.are.equal(1, ok(PAD .. '{"a":1}').a)
      assert.are.equal("b", ok(PAD .. '{"ab":"b"}').ab)
      assert.are.equal(true, ok(PAD .. '{"":true}')[""])
      assert.are.equal("", ok(PAD .. '[""]')[1])
      assert.are.equal("xyz", ok(PAD .. '"xyz"'))
    end)
  end)

  describe("whitespace and framing", function()
    it("accepts leading and trailing whitespace", function()
      assert.are.equal(1, ok(" \t\r\n[ 1 ] \n")[1])
      local v = ok(' { "a" : [ 1 , 2 ] , "b" : { } } ')
      assert.are.equal(2, v.a[2])
      assert.are.equal("x", ok('\n"x"\n'))
    end)

    it("rejects empty input", function()
      fails("", "unexpected end of input", 1)
      fails("  \n ", "unexpected end of input", 5)
    end)

    it("rejects trailing garbage", function()
      fails("{} x", "unexpected character 'x'", 4)
      fails("1 2", "unexpected character '2'", 3)
      fails("[]]", "unexpected character ']'", 3)
      fails("nullx", "unexpected character 'x'", 5)
      fails('"a""b"', "unexpected character '\"'", 4)
      fails("true\0", "unexpected character '\\x00'", 5)
    end)

    it("reports positions for malformed input", function()
      fails("[1,]", "unexpected character ']'", 4)
      fails("[1 2]", "unexpected character '2'", 4)
      fails("[,1]", "unexpected character ','", 2)
      fails('{"a" 1}', "unexpected character '1'", 6)
      fails('{"a":}', "unexpected character '}'", 6)
      fails("{a:1}", "unexpected character 'a'", 2)
      fails('{"a":1,}', "unexpected character '}'", 8)
      fails('{"a":1 "b":2}', "unexpected character '\"'", 8)
      fails("{1:2}", "unexpected character '1'", 2)
      fails('"abc', "unexpected end of input", 5)
      fails("[", "unexpected end of input", 2)
      fails('{"a":1', "unexpected end of input", 7)
      fails("tru", "unexpected end of input", 4)
      fails("trUe", "unexpected character 'U'", 3)
      fails("nul", "unexpected end of input", 4)
      fails("nulL", "unexpected character 'L'", 4)
      fails("fals", "unexpected end of input", 5)
      fails("[True]", "unexpected character 'T'", 2)
      fails("@", "unexpected character '@'", 1)
      fails("\1", "unexpected character '\\x01'", 1)
      fails("[\255]", "unexpected character '\\xff'", 2)
      fails("'a'", "unexpected character '\\x27'", 1)
      fails("[1]" .. PAD .. "]", "unexpected character ']'", 5004)
    end)

    it("errors at every truncation of a document", function()
      local doc = '{"a":[1,-2.5e-3,true,false,null,"x\\"y\\u00e9\\ud83d\\ude00\\n"],' ..
        '"b\\u0041":{"c":{}, "d":[ ]},"e":"caf\195\169","f":12345678901234567890,"g":0}'
      assert.are.equal("table", type(ok(doc)))
      for i = 0, #doc - 1 do
        local prefix = doc:sub(1, i)
        fails(prefix, "unexpected end of input", i + 1)
      end
    end)
  end)

  describe("depth", function()
    local function nest(n)
      return string.rep("[", n) .. string.rep("]", n)
    end

    it("accepts 1000 nested arrays", function()
      local v = ok(nest(1000))
      for _ = 1, 999 do v = v[1] end
      assert.are.equal("table", type(v))
      assert.are.equal(nil, next(v))
    end)

    it("rejects 1001 nested arrays", function()
      fails(nest(1001), "too deeply nested", 1001)
      fails(nest(5000), "too deeply nested", 1001)
    end)

    it("counts objects too", function()
      local function onest(n) return string.rep('{"a":', n) .. "1" .. string.rep("}", n) end
      local v = ok(onest(1000))
      for _ = 1, 999 do v = v.a end
      assert.are.equal(1, v.a)
      v = ok(onest(1000) .. PAD) -- with the string caches' stack slots in use
      for _ = 1, 999 do v = v.a end
      assert.are.equal(1, v.a)
      fails(onest(1001), "too deeply nested", 5001)
      fails(onest(1001) .. PAD, "too deeply nested", 5001)
      fails(string.rep('[{"k":', 500) .. "[", "too deeply nested", 3001)
    end)
  end)

  describe("big documents", function()
    it("decodes a large array of integers", function()
      local t = {}
      for i = 1, 200000 do t[i] = tostring(i * 7919 - 500000) end
      local v = ok("[" .. table.concat(t, ",") .. "]")
      assert.are.equal(200000, #v)
      for i = 1, 200000, 997 do assert.are.equal(i * 7919 - 500000, v[i]) end
      if has_int then assert.is_true(is_int(v[200000])) end
    end)

    it("agrees with cjson on the benchmark payloads", function()
      local cjson = require("cjson")  -- bootstrapped (lua-cjson): the oracle
      local src = debug.getinfo(1, "S").source
      local root = src:match("^@(.*)spec[/\\]json_spec%.lua$") or ""
      local gen = dofile(root .. "bench/gen.lua")
      for _, s in ipairs({ gen.register_reply(300, 30), gen.events_reply(300) }) do
        local v = ok(s)
        same(v, cjson.decode(s))
        for i = 1, #s, 997 do -- and every truncation is an error, never a value
          bad(s:sub(1, i))
        end
      end
      local ev = ok(gen.events_reply(50))
      assert.are.equal(50, #ev.events)
      assert.are.equal("message", ev.events[1].type)
      assert.are.equal(null, ev.events[1].message.avatar_url)
    end)
  end)
end)
