#!/bin/sh
# run-specs.sh VERSION... [SPEC...]: runs busted under each Lua and sums up.
# ZULIP_BUILD_TAG (set by make for a non-default poller, e.g. "-poll") picks build/<lua><tag>.
# Prints busted's own report per version, then one line "N passed, N failed".
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
passed=0; failed=0; status=0
for v in $versions; do
  case "$v" in luajit) bin=luajit ;; *) bin="lua$v" ;; esac
  out=$(mktemp)
  echo "== Lua $v ($bin, build/$v${ZULIP_BUILD_TAG:-})"
  LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/?.lua;;" \
  LUA_CPATH="$root/build/$v${ZULIP_BUILD_TAG:-}/?.so;;" \
  ZULIP_TEST_LUA="$v" \
    timeout -k 10 "${SPEC_TIMEOUT:-900}" "$bin" /usr/bin/busted --output=utfTerminal ${spec:-spec} >"$out" 2>&1
  rc=$?
  cat "$out"
  line=$(grep -E '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' "$out" | tail -n 1)
  ok=$(echo "$line" | sed -n 's/^\([0-9]*\) success.*/\1/p')
  bad=$(echo "$line" | sed -n 's/.* \([0-9]*\) failures\{0,1\} \/ \([0-9]*\) errors\{0,1\}.*/\1 \2/p')
  if [ -z "$ok" ]; then
    echo "run-specs: busted under $bin printed no summary (exit $rc)"
    ok=0; bad="0 1"
  fi
  set -- $bad
  passed=$((passed + ok)); failed=$((failed + $1 + $2))
  [ "$rc" = 0 ] || status=1
  rm -f "$out"
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] || status=1
exit $status
