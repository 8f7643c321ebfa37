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

local function read_zuliprc(path, explicit)
  local f, err = io.open(path, "r")
  if not f then
    if explicit then error("zulip: cannot read zuliprc: " .. tostring(err), 0) end
    return nil
  end
  local text = f:read("*a")
  f:close()
  return M.parse_ini(text).api or {}, path
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

--- Normalise a site: add `https://` when no scheme is given, drop trailing slashes.
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

--- Resolve the settings of a client from options, environment and zuliprc.
-- Does no network I/O. Raises a clear error when the site or the key is missing, or when
-- `insecure` is not a boolean.
-- @tparam[opt] table opts the options given to `zulip.client`
-- @tparam[opt] function getenv defaults to `os.getenv` (injectable for tests)
-- @treturn table settings with `site`, `email`, `api_key`, `insecure` and the TLS paths
-- @usage local s = config.resolve{ site = "chat.example.com", email = "bot@example.com", api_key = ("x"):rep(32) }
function M.resolve(opts, getenv)
  opts = opts or {}
  getenv = getenv or os.getenv
  local rc_path = opts.zuliprc or getenv("ZULIP_CONFIG")
  local rc
  if rc_path then
    rc = read_zuliprc(expand_home(rc_path), true)
  else
    rc = read_zuliprc(expand_home("~/.zuliprc"), false)
  end
  rc = rc or {}
  local out = {}
  for _, field in ipairs(FIELDS) do
    local v = opts[field]
    local where = "option '" .. field .. "'"
    if v == nil then
      v, where = getenv(ENV[field]), ENV[field]
      if v == "" then v = nil end
    end
    if v == nil then v, where = rc[RC[field]], "zuliprc '" .. RC[field] .. "'" end
    if field == "insecure" then
      out.insecure = v ~= nil and parse_bool(v, where) or false
    elseif v ~= nil then
      if type(v) ~= "string" then
        error(("zulip: %s must be a string"):format(where), 0)
      end
      out[field] = (field == "cert_bundle" or field:match("^client_cert")) and expand_home(v) or v
    end
  end
  if not out.site then error("zulip: no site given (option 'site', ZULIP_SITE or zuliprc 'site')", 0) end
  if not out.email then error("zulip: no email given (option 'email', ZULIP_EMAIL or zuliprc 'email')", 0) end
  if not out.api_key then error("zulip: no API key given (option 'api_key', ZULIP_API_KEY or zuliprc 'key')", 0) end
  out.site = M.normalize_site(out.site)
  return out
end

return M
