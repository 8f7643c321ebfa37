local zulip = require("zulip")
local util = require("spec.support.util")

describe("version", function()
  it("is one version shared by zulip._VERSION, the C core, the rockspec and the User-Agent", function()
    local v = require("zulip.version")
    assert.matches("^%d+%.%d+%.%d+$", v)
    assert.are.equal(v, zulip._VERSION)
    assert.are.equal(v, require("zulip.core")._VERSION)
    local rockspec = assert(util.read_file(util.root .. "/zulip-scm-1.rockspec"))
    assert.are.equal(v, rockspec:match('ZULIP_VERSION="([^"]+)"'))
    assert.matches("^lua%-zulip/" .. v:gsub("%.", "%%.") .. " %(", zulip.USER_AGENT)
    local changelog = util.read_file(util.root .. "/CHANGELOG.md")
    assert.is_truthy(changelog and changelog:find("## " .. v, 1, true))
  end)

  it("the module exports one C symbol", function()
    local lua = os.getenv("ZULIP_TEST_LUA") or "5.4"
    local p = io.popen("nm -D --defined-only " .. util.root .. "/" .. util.build_dir(lua) .. "/zulip/core.so 2>&1")
    local out = p:read("*a")
    p:close()
    local names = {}
    for name in out:gmatch("%x+ [TDBR] (%S+)") do names[#names + 1] = name end
    assert.are.same({ "luaopen_zulip_core" }, names)
  end)
end)
