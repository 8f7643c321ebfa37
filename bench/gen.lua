-- Deterministic generator of synthetic Zulip payloads for the decode
-- benchmark and the JSON spec.  Pure Lua; produces byte-identical output on
-- Lua 5.1, 5.3, 5.4 and LuaJIT.  The JSON text is built by hand in the
-- compact orjson style Zulip's server emits (no spaces, trailing newline).
--
--   gen.register_reply(users, channels) -> string  (defaults 10000, 500; ~5 MB)
--   gen.events_reply(n)                 -> string  (default 20000; ~14 MB)

local gen = {}

local concat, format = table.concat, string.format

-- Park-Miller minimal standard LCG.  Every intermediate value is below 2^53,
-- so it is exact both with doubles (5.1/LuaJIT) and integers (5.3+).
local function rng(seed)
  local s = seed
  return function(n) -- integer in [1, n]
    s = (s * 16807) % 2147483647
    return s % n + 1
  end
end

local function pick(r, t) return t[r(#t)] end

local FIRST = { "Aaron", "Beatriz", "Chen", "Dmitri", "Élodie", "Fatima", "Gustav",
  "Hiroshi", "Ingrid", "José", "Kwame", "Lena", "Mateo", "Nadia", "Olumide",
  "Priya", "Quentin", "Rosa", "Søren", "Tomás", "Ulla", "Vikram", "Wen", "Yara",
  "Zoë", "李", "Юлия", "محمد" }
local LAST = { "Anderson", "Bäcker", "Castillo", "Dubois", "Eriksen", "Fernández",
  "García", "Hoffmann", "Ivanova", "Jensen", "Kowalski", "López", "Müller",
  "Nakamura", "O'Brien", "Petrov", "Quispe", "Rossi", "Schmidt", "Tanaka",
  "Usman", "Virtanen", "Wang", "Xu", "Yılmaz", "Zhang", "雷", "Смирнов" }
local TZ = { "", "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata",
  "Asia/Tokyo", "America/Sao_Paulo", "Africa/Lagos", "Australia/Sydney",
  "Europe/London", "America/Los_Angeles" }
local WORDS = { "the", "deploy", "is", "green", "again", "can", "someone", "review",
  "my", "PR", "for", "the", "new", "events", "API", "queue", "timeout", "looks",
  "fine", "on", "staging", "café", "naïve", "résumé", "über", "日本語", "テスト",
  "🙂", "👍", "ok", "thanks", "meeting", "at", "3pm", "tomorrow", "lunch?" }
local TOPICS = { "deploys", "standup", "release 9.0", "bugs", "lunch", "random",
  "design review", "oncall", "café ☕", "hiring", "infra", "docs" }
local CLIENTS = { "website", "ZulipMobile", "ZulipElectron", "ZulipPython", "ZulipTerminal" }
local COLORS = { "#76ce90", "#fae589", "#a6c7e5", "#e79ab5", "#bfd56f", "#f4ae55",
  "#b0a5fd", "#addfe5", "#f5ce6e", "#c2726a", "#94c849", "#bd86e5" }

local HEX = "0123456789abcdef"
local function hex(r, n)
  local t = {}
  for i = 1, n do local k = r(16); t[i] = HEX:sub(k, k) end
  return concat(t)
end

-- JSON string literal, escaping as orjson does (only " \ and control chars).
local function jstr(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\"
    elseif c == "\n" then return "\\n" elseif c == "\t" then return "\\t"
    elseif c == "\r" then return "\\r"
    elseif c:byte() < 32 then return format("\\u%04x", c:byte())
    end
    return c
  end) .. '"'
end

local function date(r)
  return format("%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00", 2012 + r(12), r(12), r(28),
    r(24) - 1, r(60) - 1, r(60) - 1, r(1000000) - 1)
end

local function user_json(r, id)
  local full = pick(r, FIRST) .. " " .. pick(r, LAST)
  local email = format("user%d@zulip.example.com", id)
  local is_bot = r(20) == 1
  local role = ({ 100, 200, 300, 400, 400, 400, 400, 600 })[r(8)]
  local avatar = "null"
  if r(4) ~= 1 then
    avatar = jstr(format("https://secure.gravatar.com/avatar/%s?d=identicon&version=%d",
      hex(r, 32), r(3)))
  end
  local profile = "{}"
  if r(3) == 1 then
    local pronoun = pick(r, { "she/her", "he/him", "they/them" })
    profile = format('{"4":{"value":%s,"rendered_value":%s},"7":{"value":"%d"}}',
      jstr(pronoun), jstr("<p>" .. pronoun .. "</p>"), r(100000))
  end
  local parts = {
    '{"email":', jstr(email),
    ',"user_id":', format("%d", id),
    ',"avatar_version":', format("%d", r(5)),
    ',"is_admin":', (role <= 200) and "true" or "false",
    ',"is_owner":', (role == 100) and "true" or "false",
    ',"is_guest":', (role == 600) and "true" or "false",
    ',"is_billing_admin":false',
    ',"role":', format("%d", role),
    ',"is_bot":', is_bot and "true" or "false",
    ',"full_name":', jstr(full),
    ',"timezone":', jstr(pick(r, TZ)),
    ',"is_active":', (r(50) == 1) and "false" or "true",
    ',"date_joined":', jstr(date(r)),
    ',"avatar_url":', avatar,
    ',"delivery_email":null',
    ',"profile_data":', profile,
  }
  if is_bot then
    parts[#parts + 1] = format(',"bot_type":%d,"bot_owner_id":%d', r(4), r(id))
  end
  parts[#parts + 1] = "}"
  return concat(parts)
end

local function channel_json(r, id, users)
  local name = pick(r, TOPICS) .. " " .. format("%d", id)
  local desc = "Discussion of " .. name .. " — see https://zulip.example.com/#narrow"
  -- subscriber count: mostly small, a few huge channels
  local n = r(10) == 1 and r(users) or r(120)
  local subs, start = {}, r(users)
  for i = 1, n do subs[i] = format("%d", (start + i * 7) % users + 1) end
  return concat({
    '{"audible_notifications":null',
    ',"can_remove_subscribers_group":', format("%d", 10 + r(5)),
    ',"color":', jstr(pick(r, COLORS)),
    ',"creator_id":', r(3) == 1 and "null" or format("%d", r(users)),
    ',"date_created":', format("%d", 1500000000 + r(200000000)),
    ',"description":', jstr(desc),
    ',"desktop_notifications":null,"email_notifications":null',
    ',"first_message_id":', format("%d", r(1000000)),
    ',"history_public_to_subscribers":true,"in_home_view":true',
    ',"invite_only":', r(5) == 1 and "true" or "false",
    ',"is_announcement_only":false,"is_muted":false,"is_web_public":false',
    ',"message_retention_days":null',
    ',"name":', jstr(name),
    ',"pin_to_top":false,"push_notifications":null',
    ',"rendered_description":', jstr("<p>" .. desc .. "</p>"),
    ',"stream_id":', format("%d", id),
    ',"stream_post_policy":1,"stream_weekly_traffic":', format("%d", r(500)),
    ',"subscribers":[', concat(subs, ","), "]",
    ',"wildcard_mentions_notify":null}',
  })
end

function gen.register_reply(users, channels)
  users, channels = users or 10000, channels or 500
  local r = rng(20240601)
  local out = {
    '{"result":"success","msg":"","queue_id":"', format("%d", 1700000000 + r(99999)),
    ":", format("%d", r(9999)), '","last_event_id":-1',
    ',"zulip_version":"9.0-dev-1234-g0123abcd","zulip_feature_level":255',
    ',"zulip_merge_base":"9.0-dev-1230-g89abcdef"',
    ',"server_timestamp":1717200000.123456,"max_message_id":', format("%d", 2000000 + r(99999)),
    ',"realm_users":[',
  }
  local users_t = {}
  for id = 1, users do users_t[id] = user_json(r, id) end
  out[#out + 1] = concat(users_t, ",")
  out[#out + 1] = '],"realm_non_active_users":[],"subscriptions":['
  local ch = {}
  for id = 1, channels do ch[id] = channel_json(r, id, users) end
  out[#out + 1] = concat(ch, ",")
  out[#out + 1] = '],"unsubscribed":[],"never_subscribed":[]'
  out[#out + 1] = ',"realm_name":"Example Org","realm_default_language":"en"'
  out[#out + 1] = ',"server_presence_ping_interval_seconds":60'
  out[#out + 1] = ',"server_presence_offline_threshold_seconds":140,"event_queue_longpoll_timeout_seconds":90}\n'
  return concat(out)
end

-- Message content: Zulip-rendered HTML containing quotes and newlines (which
-- orjson escapes), raw UTF-8, and some \u escapes including surrogate pairs
-- (as an ensure_ascii encoder would produce).
local function content_json(r)
  local words = {}
  for i = 1, 8 + r(40) do words[i] = pick(r, WORDS) end
  local body = concat(words, " ")
  local k = r(6)
  local esc = ""
  if k == 1 then esc = " caf\\u00e9"
  elseif k == 2 then esc = " \\ud83d\\ude00 \\u00e9t\\u00e9"
  elseif k == 3 then esc = " \\u2603 \\ud83c\\udf89"
  end
  local s = jstr("<p>" .. body .. ' <a href="https://zulip.example.com/#narrow/stream/'
    .. format("%d", r(500)) .. '">link</a></p>\n<p>' .. pick(r, WORDS) .. "</p>")
  return s:sub(1, -2) .. esc .. '"'
end

local function message_event_json(r, eid)
  local sender = r(10000)
  local stream = r(500)
  local topic = pick(r, TOPICS)
  return concat({
    '{"type":"message","id":', format("%d", eid),
    ',"message":{"id":', format("%d", 1000000 + eid),
    ',"sender_id":', format("%d", sender),
    ',"content":', content_json(r),
    ',"recipient_id":', format("%d", 20000 + stream),
    ',"timestamp":', format("%d", 1717200000 + eid * 3 + r(3)),
    ',"client":', jstr(pick(r, CLIENTS)),
    ',"subject":', jstr(topic),
    ',"topic_links":[],"is_me_message":false,"reactions":[],"submessages":[]',
    ',"sender_full_name":', jstr(pick(r, FIRST) .. " " .. pick(r, LAST)),
    ',"sender_email":', jstr(format("user%d@zulip.example.com", sender)),
    ',"sender_realm_str":"zulip","display_recipient":', jstr(pick(r, TOPICS)),
    ',"type":"stream","stream_id":', format("%d", stream),
    ',"avatar_url":null,"content_type":"text/html"}',
    ',"flags":', r(4) == 1 and '["read","mentioned"]' or '["read"]', "}",
  })
end

function gen.events_reply(n)
  n = n or 20000
  local r = rng(424242)
  local ev = {}
  for i = 1, n do ev[i] = message_event_json(r, i) end
  return '{"result":"success","msg":"","events":[' .. concat(ev, ",")
    .. '],"queue_id":"1717200000:42"}\n'
end

return gen
