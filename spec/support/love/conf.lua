-- LÖVE 11 configuration for the host spec (spec/host_love_spec.lua): a tiny window under
-- xvfb-run, no audio, and only the modules the game loop needs.
function love.conf(t)  -- luacheck: ignore 112
  t.version = "11.4"
  t.identity = "lua-zulip-host-spec"
  t.window.title = "lua-zulip host spec"
  t.window.width, t.window.height = 64, 64
  t.window.vsync = 0  -- the game caps its own frame rate (see main.lua)
  t.modules.audio = false
  t.modules.sound = false
  t.modules.joystick = false
  t.modules.physics = false
  t.modules.video = false
  t.modules.touch = false
end
