-- busted --helper for the sanitizer and valgrind runs (make asan, make valgrind).
--
-- 1. A full garbage collection after every spec, so that a queue or session a spec dropped is
--    finalized (its __gc runs, and any memory error in it shows up) while that spec is current.
-- 2. Under `make asan` the interpreter runs with LD_PRELOAD=libasan, and every process a spec
--    starts (the dev server, make, nvim, localedef, a child lua) would inherit it and have its
--    own leaks and quirks reported. Commands started through os.execute and io.popen therefore
--    run without the sanitizer environment, and a child Lua loads the plain build instead of the
--    instrumented one, which needs the preloaded runtime: ZULIP_CHILD_CPATH replaces LUA_CPATH,
--    and ZULIP_ASAN_CPATH (the instrumented build's path) becomes it where a spec spells it out.
local busted = require("busted")

busted.subscribe({ "test", "end" }, function()
  collectgarbage()
  collectgarbage()  -- a second cycle frees what the first one's finalizers released
  return nil, true
end)

local preload = os.getenv("LD_PRELOAD") or ""
local child_cpath = os.getenv("ZULIP_CHILD_CPATH")
local asan_cpath = os.getenv("ZULIP_ASAN_CPATH")
if preload:find("asan", 1, true) and child_cpath and asan_cpath then
  local prefix = "env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS LUA_CPATH='"
    .. child_cpath:gsub("'", "'\\''") .. ";;' "
  local execute, popen = os.execute, io.popen
  -- a command line may be a compound shell command: run it in its own sh under the clean env
  local function wrap(cmd)
    if cmd == nil then return nil end
    local from = asan_cpath:gsub("%p", "%%%0")
    cmd = cmd:gsub(from, (child_cpath:gsub("%%", "%%%%")))
    return prefix .. "sh -c '" .. cmd:gsub("'", "'\\''") .. "'"
  end
  os.execute = function(cmd) return execute(wrap(cmd)) end  -- luacheck: ignore 122
  io.popen = function(cmd, mode) return popen(wrap(cmd), mode) end  -- luacheck: ignore 122
end
