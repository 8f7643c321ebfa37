-- busted --helper for the sanitizer and valgrind runs (make asan, make valgrind): a full
-- garbage collection after every spec, so that a queue or session a spec dropped is finalized
-- (its __gc runs, and any memory error in it shows up) while that spec is still the current one.
local busted = require("busted")

busted.subscribe({ "test", "end" }, function()
  collectgarbage()
  collectgarbage()  -- a second cycle frees what the first one's finalizers released
  return nil, true
end)
