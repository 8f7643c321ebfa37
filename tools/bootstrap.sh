#!/bin/sh
# Installs the Debian packages the build, the tests and the demo need, when they are missing.
# Run by make before anything else. As root it installs; otherwise it only says what is missing.
set -eu
PKGS="gcc make pkg-config libc6-dev libcurl4-openssl-dev ca-certificates openssl python3 locales
liblua5.4-dev lua5.4 liblua5.3-dev lua5.3 liblua5.1-0-dev lua5.1 luajit libluajit-5.1-dev
lua-busted lua-check luarocks lua-cjson lua-dkjson lua-socket lua-sec lua-cqueues lua-luv neovim
love xvfb xauth weechat-headless weechat-lua nginx"
[ "${1:-}" = "--extra" ] && PKGS="$PKGS valgrind clang libclang-rt-14-dev cppcheck clang-tidy lua-ldoc lua-discount"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "bootstrap: missing Debian packages:$missing" >&2
  echo "bootstrap: run 'sudo apt-get install$missing' (or run make as root)" >&2
  exit 1
fi
echo "bootstrap: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
