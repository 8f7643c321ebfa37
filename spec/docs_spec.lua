-- The reference (`make docs`, LDoc over lua/zulip) has an entry, with an example (`@usage`),
-- for every public function: every function a user can reach from `require("zulip")`, a client,
-- a queue, a request's handle and the public modules. The doc comments are read the way LDoc
-- reads them: a block that starts with `---` documents the function defined on the line after
-- it, or the name its `@function` tag gives; a module whose block says `@local` is not rendered.
local util = require("spec.support.util")
local zulip = require("zulip")
local core = require("zulip.core")

local DIR = util.root .. "/lua/zulip/"
local FILES = { "init", "config", "encode", "engine", "errors", "loop", "outcome", "policy", "queue", "uv" }

-- file -> { module = name, is_local = bool, at = { [line] = block }, blocks = { ... } };
-- named: LDoc name from @function -> block. A block is { text =, line =, usage =, is_local = }.
local function read_docs()
  local files, named = {}, {}
  for _, name in ipairs(FILES) do
    local text = assert(util.read_file(DIR .. name .. ".lua"), name)
    local lines = {}
    for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
    local f = { at = {}, blocks = {}, lines = lines }
    local i = 1
    while i <= #lines do
      if lines[i]:match("^%s*%-%-%-") and not lines[i]:match("^%s*%-%-%-%-") then
        local first, body = i, {}
        while i <= #lines and lines[i]:match("^%s*%-%-") do
          body[#body + 1] = lines[i]
          i = i + 1
        end
        local b = { text = table.concat(body, "\n"), line = first }
        b.usage = b.text:find("@usage", 1, true) ~= nil
        b.is_local = b.text:find("@local", 1, true) ~= nil
        local mod = b.text:match("@module%s+([%w_.]+)")
        if mod then
          f.module, f.is_local = mod, b.is_local
        else
          local fname = b.text:match("@function%s+([%w_.:]+)")
          if fname then named[fname] = { block = b, file = f } end
          f.at[i] = b  -- the line after the block (LDoc takes the definition there)
        end
        f.blocks[#f.blocks + 1] = b
      else
        i = i + 1
      end
    end
    files[name] = f
  end
  return files, named
end

describe("the reference", function()
  local files, named = read_docs()

  it("documents every function the public modules define, with an example", function()
    local missing = {}
    for name, f in pairs(files) do
      assert.is_string(f.module, name .. ".lua has no @module block")
      assert.are.equal(name == "init" and "zulip" or ("zulip." .. name), f.module)
      -- LDoc takes the module's description from the file's first comment: anything before the
      -- `---` block (a luacheck directive, say) renames the module and loses its text
      assert.is_truthy(f.lines[1]:match("^%-%-%-"), name .. ".lua does not start with its --- block")
      for n, line in ipairs(f.lines) do
        local owner, method = line:match("^function%s+([%w_]+)[.:]([%w_]+)%s*%(")
        if owner and method:sub(1, 1) ~= "_" and not f.is_local then
          local b = f.at[n]
          if not b then
            missing[#missing + 1] = ("%s.lua:%d %s"):format(name, n, line)
          elseif not b.is_local and not b.usage then
            missing[#missing + 1] = ("%s.lua:%d %s (no @usage)"):format(name, n, line)
          end
        end
      end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  it("has an entry with an example for every function reachable from the API", function()
    local reach = {}  -- { name = LDoc name, fn = function }
    local function add_table(t, prefix)
      for k, v in pairs(t) do
        if type(v) == "function" and type(k) == "string" and k:sub(1, 1) ~= "_" then
          reach[#reach + 1] = { name = prefix .. k, fn = v }
        end
      end
    end
    add_table(zulip, "")
    local c = zulip.client{ site = "http://127.0.0.1:9", email = "bot@example.com",
                            api_key = "botkey0123456789ABCDEFGHIJKLMNOP", timeout = 1 }
    add_table(debug.getmetatable(c).__index, "Client:")
    add_table(core.Queue, "Queue:")
    local h = c:request("GET", "users/me", nil, function() end)
    add_table(debug.getmetatable(h).__index, "Request:")
    h:cancel()
    local dm = { type = "private", display_recipient = { { id = 1, email = "someone@example.com" } } }
    local r = c:reply(dm, "hi", function() end)
    add_table(debug.getmetatable(r).__index, "Reply:")
    r:cancel()
    c:close(0)
    for _, m in ipairs{ "config", "encode", "errors", "loop", "outcome", "policy", "uv" } do
      add_table(require("zulip." .. m), m .. ".")
    end
    add_table(debug.getmetatable(require("zulip.policy").new()).__index, "Policy:")
    assert.is_true(#reach > 40, "found only " .. #reach .. " functions")

    local missing = {}
    for _, x in ipairs(reach) do
      local info = debug.getinfo(x.fn, "S")
      local file = info.source:match("lua/zulip/([%w_]+)%.lua$")
      local f = file and files[file]
      local b = f and f.at[info.linedefined]
      local ok = b and not b.is_local and not f.is_local and b.usage
      if not ok then
        local short = x.name:match("[.:]([%w_]+)$") or x.name
        for fname, n in pairs(named) do
          local nf = n.file
          if (fname == x.name or fname == short) and not nf.is_local and not n.block.is_local and n.block.usage then
            ok = true
          end
        end
      end
      if not ok then
        missing[#missing + 1] = ("%s (%s:%s)"):format(x.name, info.short_src, tostring(info.linedefined))
      end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)
end)
