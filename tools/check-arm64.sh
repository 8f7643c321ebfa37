#!/bin/sh
# check-arm64.sh: `make check-arm64`. Builds the module and runs the Lua 5.4 specs in a Debian
# arm64 chroot under qemu-user-static, to catch what x86-64 hides (char signedness, alignment,
# header paths like /usr/include/aarch64-linux-gnu). Slow (everything runs emulated) and not in CI.
#
#   ARM64_CHROOT  where the chroot lives, outside the project (default /var/tmp/lua-zulip-arm64);
#                 made once with debootstrap and reused while its marker file is there
#   ARM64_SUITE   the Debian release (default bookworm), ARM64_MIRROR its mirror
#   SPECS         spec files to run (default: every spec/*_spec.lua but the host specs)
#
# The host specs (spec/host_*_spec.lua) are left out: they need Neovim, LÖVE under xvfb and
# WeeChat with the 5.3 and LuaJIT builds, and they measure the host's ticks against wall-clock
# shares that an emulated CPU, 10-30 times slower, cannot meet. Needs root (debootstrap, chroot,
# mounts) and binfmt_misc (qemu-user-static registers aarch64 there).
set -eu
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
CHROOT=${ARM64_CHROOT:-/var/tmp/lua-zulip-arm64}
SUITE=${ARM64_SUITE:-bookworm}
MIRROR=${ARM64_MIRROR:-http://deb.debian.org/debian}
PKGS="gcc,make,pkg-config,libc6-dev,libcurl4-openssl-dev,ca-certificates,openssl,python3,locales,\
liblua5.4-dev,lua5.4,lua-busted,lua-socket,lua-sec,lua-cjson,lua-dkjson,lua-cqueues,lua-luv,nginx,\
luajit,libluajit-5.1-dev,lua5.1,liblua5.1-0-dev,neovim,binutils"
MARK="$CHROOT/.lua-zulip-chroot"

say() { echo "check-arm64: $*"; }
case "$CHROOT" in "$root"|"$root"/*) say "ARM64_CHROOT must be outside the project"; exit 1 ;; esac
if [ "$(id -u)" != 0 ]; then say "needs root (debootstrap, chroot and mounts)"; exit 1; fi

need=""
command -v debootstrap >/dev/null || need="$need debootstrap"
[ -x /usr/bin/qemu-aarch64-static ] || need="$need qemu-user-static"
command -v update-binfmts >/dev/null || need="$need binfmt-support"
if [ -n "$need" ]; then
  say "installing$need"
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64

if [ ! -e "$MARK" ]; then
  say "debootstrap $SUITE arm64 into $CHROOT (once; takes a while under emulation)"
  start=$(date +%s)
  debootstrap --arch=arm64 --variant=minbase --include="$PKGS" "$SUITE" "$CHROOT" "$MIRROR"
  date -u > "$MARK"
  say "chroot made in $(( $(date +%s) - start )) s"
else
  say "reusing $CHROOT (made $(cat "$MARK"))"
fi

mounted=""
cleanup() {
  for m in $mounted; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || :; done
}
trap cleanup EXIT INT TERM
for m in proc dev dev/pts; do
  if ! mountpoint -q "$CHROOT/$m"; then
    case "$m" in
      proc) mount -t proc proc "$CHROOT/proc" ;;
      dev) mount --bind /dev "$CHROOT/dev" ;;
      dev/pts) mount -t devpts devpts "$CHROOT/dev/pts" ;;
    esac
    mounted="$CHROOT/$m $mounted"
  fi
done
cp /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || :

# The committed tree plus the working tree's changes, without build/.
rm -rf "$CHROOT/src"
mkdir -p "$CHROOT/src"
git ls-files -z --cached --others --exclude-standard | grep -zv '^build/' |
  xargs -0 tar -cf - | tar -xf - -C "$CHROOT/src"

if [ -z "${SPECS:-}" ]; then
  SPECS=$(ls spec/*_spec.lua | grep -v '^spec/host_' | tr '\n' ' ')
fi
say "running on $(chroot "$CHROOT" uname -m): $SPECS"
# shellcheck disable=SC2086
chroot "$CHROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  SPEC_TIMEOUT="${SPEC_TIMEOUT:-5400}" sh -c '
  set -e
  cd /src
  echo "check-arm64: $(uname -m), $(lua5.4 -v), libcurl $(pkg-config --modversion libcurl)"
  make --no-print-directory LUA=5.4 build/5.4/zulip/core.so
  sh tools/run-specs.sh 5.4 '"$SPECS"'
'
