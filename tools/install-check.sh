#!/bin/sh
# install-check.sh: installs the rock (luarocks make, offline) and `make install PREFIX=...`
# into temporary trees, then runs a smoke script from outside the source tree that talks to the
# dev server with the installed module. A broken rockspec or install rule fails here.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$root"

smoke() {  # smoke LUA_BIN LUA_PATH LUA_CPATH
  ( cd "$tmp" && LUA_PATH="$2;$root/?.lua;;" LUA_CPATH="$3;;" "$1" "$root/tools/smoke.lua" )
}

for v in 5.4 5.1; do
  case $v in 5.1) bin=lua5.1 ;; *) bin=lua$v ;; esac
  echo "install-check: luarocks make for Lua $v"
  # curl's dirs as a luarocks user passes them (Debian's curl.h is in a multiarch include dir)
  luarocks make --deps-mode=none --tree "$tmp/rocks$v" --lua-version "$v" zulip-scm-1.rockspec \
    CURL_INCDIR="$(pkg-config --variable=includedir libcurl)" CURL_LIBDIR="$(pkg-config --variable=libdir libcurl)" \
    >"$tmp/log" 2>&1 \
    || { cat "$tmp/log"; exit 1; }
  rm -rf "$root/zulip" "$root"/csrc/*.o   # luarocks builds in the source tree
  smoke "$bin" "$tmp/rocks$v/share/lua/$v/?.lua;$tmp/rocks$v/share/lua/$v/?/init.lua" "$tmp/rocks$v/lib/lua/$v/?.so"
done

echo "install-check: make install PREFIX=$tmp/prefix"
make --no-print-directory install PREFIX="$tmp/prefix" >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
smoke lua5.4 "$tmp/prefix/share/lua/5.4/?.lua;$tmp/prefix/share/lua/5.4/?/init.lua" "$tmp/prefix/lib/lua/5.4/?.so"
echo "install-check: ok"
