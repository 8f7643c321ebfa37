package = "zulip"
version = "scm-1"
source = {
  url = "git+https://example.invalid/lua-zulip.git",
}
description = {
  summary = "Zulip real-time events API client with a C core (libcurl, fast JSON)",
  detailed = [[
    Register Zulip event queues, long-poll them with automatic recovery, drive them from
    Neovim, cqueues, luv or a game loop, and decode JSON straight into Lua values with
    integers kept as integers.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
}
external_dependencies = {
  -- luarocks looks for both under its external_deps_dirs; where they are elsewhere (Debian keeps
  -- curl.h in a multiarch dir such as /usr/include/aarch64-linux-gnu, Homebrew in its own prefix):
  --   luarocks make CURL_INCDIR=$(pkg-config --variable=includedir libcurl) \
  --                 CURL_LIBDIR=$(pkg-config --variable=libdir libcurl)
  CURL = { header = "curl/curl.h", library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    ["zulip.core"] = {
      -- [1] is the poller: plain poll(2) on any Unix, replaced below where the system has better
      -- (luarocks merges a platform's table into this one key by key)
      sources = { "csrc/poll_poll.c", "csrc/core.c", "csrc/engine.c", "csrc/enginelib.c", "csrc/json.c",
                  "csrc/pollclock.c", "csrc/pollset.c", "csrc/queue.c", "csrc/session.c", "csrc/trace.c", "csrc/wait.c",
                  "csrc/xfer.c" },
      -- the same version as lua/zulip/version.lua (spec/version_spec.lua checks they agree)
      defines = { 'ZULIP_VERSION="0.1.0"' },
      incdirs = { "csrc", "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
      libraries = { "curl" },
    },
    ["zulip"] = "lua/zulip/init.lua",
    ["zulip.config"] = "lua/zulip/config.lua",
    ["zulip.encode"] = "lua/zulip/encode.lua",
    ["zulip.engine"] = "lua/zulip/engine.lua",
    ["zulip.errors"] = "lua/zulip/errors.lua",
    ["zulip.loop"] = "lua/zulip/loop.lua",
    ["zulip.outcome"] = "lua/zulip/outcome.lua",
    ["zulip.policy"] = "lua/zulip/policy.lua",
    ["zulip.queue"] = "lua/zulip/queue.lua",
    ["zulip.state"] = "lua/zulip/state.lua",
    ["zulip.uv"] = "lua/zulip/uv.lua",
    ["zulip.version"] = "lua/zulip/version.lua",
  },
  platforms = {
    linux = { modules = { ["zulip.core"] = { sources = { [1] = "csrc/poll_epoll.c" } } } },
    macosx = { modules = { ["zulip.core"] = { sources = { [1] = "csrc/poll_kqueue.c" } } } },
    bsd = { modules = { ["zulip.core"] = { sources = { [1] = "csrc/poll_kqueue.c" } } } },
  },
}
