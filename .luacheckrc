std = "max"
max_line_length = 120
files["spec/**/*.lua"] = { std = "+busted" }
files["examples/nvim/**/*.lua"] = { globals = { "vim" } }
exclude_files = { "build/**" }
color = false
-- the Markdown tables of the zulip.errors page (its LDoc comment) cannot wrap
files["lua/zulip/errors.lua"] = { max_comment_line_length = false }
