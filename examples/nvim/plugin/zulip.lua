-- :ZulipOpen [channel], :ZulipSend text and :ZulipClose (see lua/zulip_nvim/init.lua).
if vim.g.loaded_zulip_nvim then return end
vim.g.loaded_zulip_nvim = true

vim.api.nvim_create_user_command("ZulipOpen", function(cmd)
  require("zulip_nvim").open{ channel = cmd.args ~= "" and cmd.args or nil }
end, { nargs = "?", desc = "Show incoming Zulip messages in a buffer" })

vim.api.nvim_create_user_command("ZulipSend", function(cmd)
  local zn = require("zulip_nvim")
  local view = zn.views()[vim.api.nvim_get_current_buf()]
  if not view then return vim.notify("ZulipSend: this buffer is not a Zulip view", vim.log.levels.ERROR) end
  zn.send(view, cmd.args)
end, { nargs = "+", desc = "Post to this Zulip view's channel (the reply shows up in the buffer)" })

vim.api.nvim_create_user_command("ZulipClose", function()
  require("zulip_nvim").close()
end, { desc = "Stop showing Zulip messages (in this buffer, else everywhere)" })

vim.api.nvim_create_autocmd("VimLeavePre", {
  callback = function() require("zulip_nvim").close(nil, { wait = 2 }) end,  -- the loop turns no more
})
