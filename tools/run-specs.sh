#!/bin/sh
# run-specs.sh VERSION... [SPEC...]: runs busted under each Lua and sums up.
# ZULIP_BUILD_TAG (set by make for a non-default poller, e.g. "-poll") picks build/<lua><tag>.
# The versions run side by side (the suite mostly waits on servers and timers; every spec's
# servers have ports of their own), at most SPEC_JOBS at a time (default: all of them; 1 runs
# them one after the other). Prints busted's own report per version, in the order given, then
# one line "N passed, N failed". Each version's TMPDIR is a directory of this run's own, removed
# at the end: what the specs make there (TLS material, server logs) does not outlive the run.
set -u
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
spec=""
versions=""
for a in "$@"; do
  case "$a" in
    *.lua|spec/*) spec="$spec $a" ;;
    *) versions="$versions $a" ;;
  esac
done
jobs=${SPEC_JOBS:-0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run_one() {  # version: busted's report into $work/$1.out, its exit status into $work/$1.rc
  case "$1" in luajit) bin=luajit ;; *) bin="lua$1" ;; esac
  mkdir -p "$work/$1.tmp"
  TMPDIR="$work/$1.tmp" \
  LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/?.lua;;" \
  LUA_CPATH="$root/build/$1${ZULIP_BUILD_TAG:-}/?.so;;" \
  ZULIP_TEST_LUA="$1" \
    timeout -k 10 "${SPEC_TIMEOUT:-900}" "$bin" /usr/bin/busted --output=utfTerminal ${spec:-spec} \
      >"$work/$1.out" 2>&1
  echo $? >"$work/$1.rc"
}

running=0
for v in $versions; do
  run_one "$v" &
  running=$((running + 1))
  if [ "$jobs" -gt 0 ] && [ "$running" -ge "$jobs" ]; then wait; running=0; fi
done
wait

passed=0; failed=0; status=0
for v in $versions; do
  case "$v" in luajit) bin=luajit ;; *) bin="lua$v" ;; esac
  echo "== Lua $v ($bin, build/$v${ZULIP_BUILD_TAG:-})"
  cat "$work/$v.out"
  rc=$(cat "$work/$v.rc" 2>/dev/null || echo 1)
  line=$(grep -E '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' "$work/$v.out" | tail -n 1)
  ok=$(echo "$line" | sed -n 's/^\([0-9]*\) success.*/\1/p')
  bad=$(echo "$line" | sed -n 's/.* \([0-9]*\) failures\{0,1\} \/ \([0-9]*\) errors\{0,1\}.*/\1 \2/p')
  if [ -z "$ok" ]; then
    echo "run-specs: busted under $bin printed no summary (exit $rc)"
    ok=0; bad="0 1"
  fi
  set -- $bad
  passed=$((passed + ok)); failed=$((failed + $1 + $2))
  [ "$rc" = 0 ] || status=1
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] || status=1
exit $status
