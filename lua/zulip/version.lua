-- The one place the version is written. The Makefile passes it to the C core, the rockspec
-- repeats it in its defines (a spec checks they agree), and the User-Agent is built from it.
return "0.1.0"
