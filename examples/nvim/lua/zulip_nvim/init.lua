--- zulip_nvim: a small Neovim plugin (0.7+) that shows incoming Zulip messages in a buffer.
-- The queue is driven by `zulip.uv` on the editor's own libuv loop, so the long-poll never
-- blocks typing: messages are appended as they arrive.
--
--     :ZulipOpen            all messages the account receives
--     :ZulipOpen Denmark    one channel
--     :ZulipSend text       post to this view's channel (topic "nvim"), without waiting
--     :ZulipClose           stop and delete the server's queue
--
-- Credentials come from `ZULIP_SITE`/`ZULIP_EMAIL`/`ZULIP_API_KEY` or `~/.zuliprc` (see
-- `zulip.client`), or from `require("zulip_nvim").open{ client = { ... } }`.
-- @module zulip_nvim
local M = {}

local views = {}
local opened = 0

local function format_message(m)
  local where
  if m.type == "stream" then
    where = ("#%s > %s"):format(tostring(m.display_recipient), tostring(m.subject or m.topic))
  else
    where = "direct"
  end
  local head = ("%s %s (%s): "):format(os.date("%H:%M", tonumber(m.timestamp) or os.time()),
                                       tostring(m.sender_full_name), where)
  local lines = {}
  for line in (tostring(m.content) .. "\n"):gmatch("([^\n]*)\n") do
    lines[#lines + 1] = #lines == 0 and (head .. line) or ("    " .. line)
  end
  return lines
end

local function append(view, lines)
  if not vim.api.nvim_buf_is_valid(view.buf) then return end
  vim.api.nvim_buf_set_lines(view.buf, -1, -1, false, lines)
  -- keep windows that show the end of the buffer following it
  local last = vim.api.nvim_buf_line_count(view.buf)
  for _, win in ipairs(vim.api.nvim_list_wins()) do
    if vim.api.nvim_win_get_buf(win) == view.buf and vim.api.nvim_win_get_cursor(win)[1] >= last - #lines then
      vim.api.nvim_win_set_cursor(win, { last, 0 })
    end
  end
end

--- Open a buffer that shows incoming messages.
-- @tparam[opt] table opts `client` (options for `zulip.client`, default: environment/zuliprc),
--   `channel` (only this channel), `window` (false: don't show the buffer in the current window),
--   `on_message` (`on_message(view, message)`, called for each message after it is shown),
--   `zulip` (the module, for tests)
-- @treturn table the view: `buf`, `queue`, `watch` (the `zulip.uv` watcher), `messages` (count)
-- @usage local view = require("zulip_nvim").open{ channel = "Denmark" }
function M.open(opts)
  opts = opts or {}
  local zulip = opts.zulip or require("zulip")
  -- Without on_log the library writes retries to stderr, which would draw over the editor's
  -- screen: the view shows them instead (the first of a run of failures and every tenth, as the
  -- library would), unless the caller brings an on_log of its own.
  local view
  local copts = {}
  for k, v in pairs(opts.client or {}) do copts[k] = v end
  if copts.on_log == nil then
    copts.on_log = function(level, msg, fields)
      if level ~= "debug" and (not (fields and fields.retry) or fields.attempt % 10 == 1) then
        if view then append(view, { "-- " .. msg }) else vim.schedule(function() vim.notify(msg) end) end
      end
    end
  end
  local client = zulip.client(copts)
  local narrow = opts.channel and { { "channel", opts.channel } } or nil
  local q = client:queue{ event_types = { "message" }, apply_markdown = false, narrow = narrow }
  opened = opened + 1
  local buf = vim.api.nvim_create_buf(true, true)
  vim.api.nvim_buf_set_name(buf, ("zulip://%s/%d"):format(opts.channel or "all", opened))
  vim.api.nvim_buf_set_option(buf, "filetype", "zulip")
  vim.api.nvim_buf_set_lines(buf, 0, -1, false,
    { ("-- Zulip: %s at %s%s --"):format(client.email, client.site, opts.channel and (", #" .. opts.channel) or "") })
  view = { buf = buf, queue = q, client = client, channel = opts.channel, messages = 0, sent = {} }
  view.watch = require("zulip.uv").watch(q, function(ev)
    if ev.type == "message" then
      view.messages = view.messages + 1
      append(view, format_message(ev.message))
      if opts.on_message then opts.on_message(view, ev.message) end
    end
  end, function(msg, err)
    append(view, { "!! " .. msg })
    if err and err.code ~= "CALLBACK" then view.stopped = msg end
  end)
  views[buf] = view
  vim.api.nvim_create_autocmd("BufWipeout", { buffer = buf, once = true, callback = function() M.close(view) end })
  if opts.window ~= false then vim.api.nvim_win_set_buf(0, buf) end
  return view
end

--- Post a message to the view's channel without waiting for the reply: the editor goes on at
-- once, and when the server answers (the view's watcher drives the request) the buffer shows
-- "-> sent (id N)" or the error.
-- @tparam table view a view from `open` (one with a channel)
-- @tparam string content the message text
-- @tparam[opt] table opts `topic` (default `"nvim"`), `callback` (`callback(reply)` or
--   `callback(nil, msg, err)`, after the buffer has been updated)
-- @return the request's handle (`handle:cancel()`)
-- @usage require("zulip_nvim").send(view, "hello from the editor")
function M.send(view, content, opts)
  opts = opts or {}
  if not view.channel then error("zulip_nvim: this view has no channel to send to", 2) end
  local msg = { type = "stream", to = view.channel, topic = opts.topic or "nvim", content = content }
  return view.client:send_message(msg, function(reply, emsg, err)
    if reply then
      view.sent[#view.sent + 1] = reply.id
      append(view, { ("-> sent (id %s)"):format(tostring(reply.id)) })
    else
      append(view, { "!! send failed: " .. tostring(emsg) })
    end
    if opts.callback then opts.callback(reply, emsg, err) end
  end)
end

--- Close a view's queue and stop its watcher. The queue's DELETE goes out in the background (the
-- loop drives it), so the editor never waits; with `opts.wait` (seconds, for leaving Neovim, when
-- the loop will not turn again) the client is closed and waited for, at most that long.
-- @tparam[opt] table view default: the view in the current buffer, else every view
-- @tparam[opt] table opts `wait`
-- @usage require("zulip_nvim").close()
function M.close(view, opts)
  local list = {}
  if view then
    list[1] = view
  elseif views[vim.api.nvim_get_current_buf()] then
    list[1] = views[vim.api.nvim_get_current_buf()]
  else
    for _, v in pairs(views) do list[#list + 1] = v end
  end
  for _, v in ipairs(list) do
    views[v.buf] = nil
    v.queue:close()
    v.watch:stop()
    if opts and opts.wait then v.client:close(opts.wait) end
  end
end

--- The open views, keyed by buffer number.
-- @treturn table
-- @usage for buf, view in pairs(require("zulip_nvim").views()) do print(buf, view.messages) end
function M.views()
  return views
end

return M
