std = "max"
max_line_length = 120
files["spec/**/*.lua"] = { std = "+busted" }
files["examples/nvim/**/*.lua"] = { globals = { "vim" } }
exclude_files = { "build/**" }
color = false
