--- Client settings: explicit options, then the environment, then a zuliprc file.
-- The order is the reference Python client's: an option given to `zulip.client` wins, then
-- `ZULIP_EMAIL`, `ZULIP_API_KEY`, `ZULIP_SITE`, `ZULIP_CERT`, `ZULIP_CERT_KEY`,
-- `ZULIP_CERT_BUNDLE`, `ZULIP_ALLOW_INSECURE`, then the `[api]` section of the zuliprc found at
-- the `zuliprc` option, else `$ZULIP_CONFIG`, else `~/.zuliprc`.
-- @module zulip.config
local M = {}

local ENV = {
  email = "ZULIP_EMAIL", api_key = "ZULIP_API_KEY", site = "ZULIP_SITE",
  client_cert = "ZULIP_CERT", client_cert_key = "ZULIP_CERT_KEY",
  cert_bundle = "ZULIP_CERT_BUNDLE", insecure = "ZULIP_ALLOW_INSECURE",
}
local RC = {
  email = "email", api_key = "key", site = "site", insecure = "insecure",
  cert_bundle = "cert_bundle", client_cert = "client_cert", client_cert_key = "client_cert_key",
}
local FIELDS = { "email", "api_key", "site", "insecure", "cert_bundle", "client_cert", "client_cert_key" }

--- Parse the text of an INI-style zuliprc into `{section = {key = value}}`.
-- @tparam string text the file's contents
-- @treturn table sections
-- @usage local rc = config.parse_ini("[api]\nemail=bot@example.com\n") -- rc.api.email
function M.parse_ini(text)
  local sections, current = {}, nil
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("\r$", "")
    local name = line:match("^%s*%[%s*([^%]]-)%s*%]%s*$")
    if name then
      current = sections[name] or {}
      sections[name] = current
    elseif current and not line:match("^%s*[#;]") then
      local k, v = line:match("^%s*([^=:%s][^=:]-)%s*[=:]%s*(.-)%s*$")
      if k then current[k:lower()] = v end
    end
  end
  return sections
end

local function expand_home(path)
  if path:sub(1, 1) == "~" then
    local home = os.getenv("HOME")
    if home then return home .. path:sub(2) end
  end
  return path
end

-- The [api] section of a zuliprc (or {} when it has none), and all of its sections; nil when a
-- zuliprc nobody asked for (~/.zuliprc) does not exist.
local function read_zuliprc(path, explicit, where)
  local f, err = io.open(path, "r")
  if not f then
    if explicit then error(("zulip: cannot read the zuliprc %s: %s"):format(where, tostring(err)), 0) end
    return nil
  end
  local text = f:read("*a")
  f:close()
  local sections = M.parse_ini(text)
  return sections.api or {}, sections
end

-- What a zuliprc without an [api] section has instead, for the error that says so.
local function missing_api_hint(path, sections)
  if not sections or sections.api then return "" end
  local names = {}
  for name in pairs(sections) do names[#names + 1] = "[" .. name .. "]" end
  table.sort(names)
  if #names == 0 then return ("; %s has no [api] section"):format(path) end
  return ("; %s has no [api] section, only %s (section names are case-sensitive: write [api])")
    :format(path, table.concat(names, ", "))
end

-- Strict, as the reference client is, so that TLS checks are never turned off by accident
-- ("1", "yes", "on" or an empty value raise rather than guess).
local function parse_bool(value, where)
  if type(value) == "boolean" then return value end
  local v = tostring(value):lower()
  if v == "true" then return true end
  if v == "false" then return false end
  error(("zulip: %s must be true or false, got %q"):format(where, tostring(value)), 0)
end

--- Normalise a site: add `https://` when no scheme is given, drop trailing slashes and `/api`.
-- @tparam string site e.g. `"chat.example.com/"`
-- @treturn string e.g. `"https://chat.example.com"`
-- @usage assert(config.normalize_site("chat.example.com/") == "https://chat.example.com")
function M.normalize_site(site)
  site = site:gsub("^%s+", ""):gsub("%s+$", "")
  if not site:match("^%a[%w+.-]*://") then
    -- as the reference client does: plain http only for a local development server
    site = (site:match("^localhost[:/]") or site == "localhost") and "http://" .. site or "https://" .. site
  end
  site = site:gsub("/+$", ""):gsub("/api$", "")  -- paths are added as /api/v1/...
  return site
end

--- Check a normalised site: the scheme is `http` or `https`, there is a host, a port (if any)
-- from 1 to 65535, and nothing a base URL cannot have (spaces or other blanks, a query `?`, a
-- fragment `#`). Raises `"zulip: site ... "` naming `where` the site came from; returns the site.
-- @tparam string site as `normalize_site` returns it
-- @tparam[opt] string where e.g. `"option 'site'"`
-- @treturn string the site
-- @usage config.check_site("https://chat.example.com")            -- fine
-- pcall(config.check_site, "htp://chat.example.com")  -- false, "zulip: site 'htp://...' ..."
function M.check_site(site, where)
  local from = where and (" (" .. where .. ")") or ""
  local function bad(why)
    error(("zulip: site '%s'%s %s"):format(site, from, why), 0)
  end
  if site:find("[%s%c]") then bad("has a space or another blank in it") end
  local scheme, rest = site:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then bad("is not a URL such as https://chat.example.com") end
  scheme = scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then
    bad(("has the scheme '%s://': use https:// (or http:// for a server without TLS)"):format(scheme))
  end
  if site:find("[?#]") then bad("has a '?' or '#': give the server's address only, e.g. https://chat.example.com") end
  local authority = rest:match("^[^/]*")
  local host = authority:gsub("^.*@", ""):match("^%[[%x:.]+%]") or authority:gsub("^.*@", ""):match("^[^:]*")
  if host == nil or host == "" then bad("has no host name") end
  local port = authority:gsub("^.*@", ""):sub(#host + 1)
  if port ~= "" then
    local n = tonumber(port:match("^:(%d+)$"))
    if not n then bad("has a port that is not a number") end
    if n < 1 or n > 65535 then bad("has a port out of range (1 to 65535)") end
  end
  return site
end

--- The proxy that libcurl would take from the environment for a site, and the hosts that go
-- without one: read once per client here, where libcurl would read them again for every
-- request. The variables and their order are libcurl's: for an `https` site `https_proxy`, then
-- `HTTPS_PROXY`; for an `http` site `http_proxy` only (a CGI request's `Proxy:` header sets
-- `HTTP_PROXY`); then `all_proxy`, `ALL_PROXY`. The exceptions: `no_proxy`, then `NO_PROXY`.
-- @tparam string site a normalized site (`https://...` or `http://...`)
-- @tparam[opt] function getenv defaults to `os.getenv`
-- @treturn string the proxy, `""` for none
-- @treturn string the exceptions (libcurl's `CURLOPT_NOPROXY`), `""` for none
-- @usage local proxy, no_proxy = config.proxy_env("https://chat.example.com")
function M.proxy_env(site, getenv)
  getenv = getenv or os.getenv
  local scheme = (site:match("^(%a+)://") or "https"):lower()
  local names = scheme == "http" and { "http_proxy" } or { scheme .. "_proxy", scheme:upper() .. "_PROXY" }
  names[#names + 1], names[#names + 2] = "all_proxy", "ALL_PROXY"
  local proxy = ""
  for _, name in ipairs(names) do
    local v = getenv(name)
    if v ~= nil then proxy = v break end  -- set but empty: none, as libcurl takes it
  end
  return proxy, getenv("no_proxy") or getenv("NO_PROXY") or ""
end

--- Resolve the settings of a client from options, environment and zuliprc.
-- Does no network I/O. Raises a clear error when the site or the key is missing, or when
-- `insecure` is not a boolean.
-- @tparam[opt] table opts the options given to `zulip.client`
-- @tparam[opt] function getenv defaults to `os.getenv` (injectable for tests)
-- @treturn table settings with `site`, `email`, `api_key`, `insecure`, the TLS paths, and
--   `proxy` and `no_proxy` (the option `proxy`, else the environment's: see `proxy_env`)
-- @usage local s = config.resolve{ site = "chat.example.com", email = "bot@example.com", api_key = ("x"):rep(32) }
function M.resolve(opts, getenv)
  opts = opts or {}
  getenv = getenv or os.getenv
  local rc_path, rc_where = opts.zuliprc, "given as option 'zuliprc'"
  if rc_path == nil then rc_path, rc_where = getenv("ZULIP_CONFIG"), "named by ZULIP_CONFIG" end
  local rc, sections
  if rc_path then
    rc_path = expand_home(rc_path)
    rc, sections = read_zuliprc(rc_path, true, rc_path .. " (" .. rc_where .. ")")
  else
    rc_path = expand_home("~/.zuliprc")
    rc, sections = read_zuliprc(rc_path, false)
  end
  rc = rc or {}
  local out, from = {}, {}
  for _, field in ipairs(FIELDS) do
    local v = opts[field]
    local where = "option '" .. field .. "'"
    if v == nil then
      v, where = getenv(ENV[field]), ENV[field]
      if v == "" then v = nil end
    end
    if v == nil then v, where = rc[RC[field]], ("'%s' in the [api] section of %s"):format(RC[field], rc_path) end
    if field == "insecure" then
      out.insecure = v ~= nil and parse_bool(v, where) or false
    elseif v ~= nil then
      if type(v) ~= "string" then
        error(("zulip: %s must be a string"):format(where), 0)
      end
      out[field] = (field == "cert_bundle" or field:match("^client_cert")) and expand_home(v) or v
    end
    from[field] = where
  end
  local hint = missing_api_hint(rc_path, sections)
  local function missing(what, opt, env, key)
    error(("zulip: no %s given (option '%s', %s, or '%s' in the [api] section of a zuliprc%s)")
      :format(what, opt, env, key, hint ~= "" and hint or (sections and (": not in " .. rc_path) or "")), 0)
  end
  if not out.site then missing("site", "site", "ZULIP_SITE", "site") end
  if not out.email then missing("email", "email", "ZULIP_EMAIL", "email") end
  if not out.api_key then missing("API key", "api_key", "ZULIP_API_KEY", "key") end
  out.site = M.check_site(M.normalize_site(out.site), from.site)
  local env_proxy
  env_proxy, out.no_proxy = M.proxy_env(out.site, getenv)
  out.proxy = opts.proxy or env_proxy
  return out
end

return M
