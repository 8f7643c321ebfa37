# lua-zulip. `make` builds for Lua 5.4; `make LUA=5.1|5.3|luajit` for the others.
# `make test` runs every spec under 5.4, 5.3, 5.1 and LuaJIT; `make demo` runs the example bot.
# POLLER=epoll|kqueue|poll picks the poller built in (csrc/poll_<POLLER>.c, see csrc/zpoll.h);
# the default is the system's own: epoll on Linux, kqueue on macOS and the BSDs, else poll. A
# non-default one builds into build/<lua>-<poller>/ (`make test POLLER=poll` tests that core).
# KQUEUE_CFLAGS and KQUEUE_LIBS point POLLER=kqueue at a kqueue that is not the system's (e.g.
# libkqueue on Linux; by default its pkg-config file, if pkg-config finds one).
LUA      ?= 5.4
VERSION  := $(shell sed -n 's/^return "\(.*\)"$$/\1/p' lua/zulip/version.lua)
PKG_LUA  := $(if $(filter luajit,$(LUA)),luajit,lua$(LUA))
LUA_BIN  := $(if $(filter luajit,$(LUA)),luajit,lua$(LUA))
UNAME_S  := $(shell uname -s)
POLLER_DEFAULT := $(if $(filter Linux,$(UNAME_S)),epoll,$(if $(filter Darwin %BSD DragonFly,$(UNAME_S)),kqueue,poll))
POLLER   ?= $(POLLER_DEFAULT)
ifeq ($(filter epoll kqueue poll,$(POLLER)),)
$(error POLLER must be epoll, kqueue or poll, not '$(POLLER)')
endif
# "" for the default poller, else "-<poller>"; tools/run-specs.sh and the specs read it too
export ZULIP_BUILD_TAG := $(if $(filter $(POLLER_DEFAULT),$(POLLER)),,-$(POLLER))
KQUEUE_SYSTEM := $(filter Darwin %BSD DragonFly,$(UNAME_S))
KQUEUE_CFLAGS ?= $(if $(KQUEUE_SYSTEM),,$(shell pkg-config --cflags libkqueue 2>/dev/null))
KQUEUE_LIBS   ?= $(if $(KQUEUE_SYSTEM),,$(shell pkg-config --libs libkqueue 2>/dev/null))
# libkqueue's kqueue fd is never readable: off macOS and the BSDs the kqueue core gives loops a
# self-pipe and its sockets instead (csrc/poll_kqueue.c); KQUEUE_POLLABLE=1 says otherwise
KQUEUE_POLLABLE ?= $(if $(KQUEUE_SYSTEM),1,0)
POLL_CFLAGS = $(if $(filter kqueue,$(POLLER)),$(KQUEUE_CFLAGS) -DZPOLL_KQUEUE_POLLABLE=$(KQUEUE_POLLABLE))
POLL_LIBS   = $(if $(filter kqueue,$(POLLER)),$(KQUEUE_LIBS))
BUILD    := build/$(LUA)$(ZULIP_BUILD_TAG)
MODULE   := $(BUILD)/zulip/core.so
POLLERS  := $(wildcard csrc/poll_*.c)
SRCS     := $(filter-out $(POLLERS),$(wildcard csrc/*.c)) csrc/poll_$(POLLER).c
HDRS     := $(wildcard csrc/*.h)
CC       ?= cc
CFLAGS   ?= -O2 -g
WARN     := -std=c99 -Wall -Wextra -Wpedantic -Werror -Wshadow -Wstrict-prototypes
ALLCFLAGS = $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden -DZULIP_VERSION='"$(VERSION)"' \
            $(shell pkg-config --cflags $(PKG_LUA) libcurl) $(POLL_CFLAGS)
LIBS      = $(shell pkg-config --libs libcurl) $(POLL_LIBS)
PREFIX   ?= /usr/local
LUAVERS  := 5.4 5.3 5.1 luajit
export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/?.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;

.PHONY: all bootstrap build test test-one demo bench lint clean install install-check ci-extra asan valgrind docs fuzz \
        portable-check check-arm64

all: build

bootstrap:
	@sh tools/bootstrap.sh

build: bootstrap
	@$(MAKE) --no-print-directory $(MODULE)

$(MODULE): $(SRCS) $(HDRS) lua/zulip/version.lua Makefile
	@if [ $(POLLER) = kqueue ] && [ -z "$(KQUEUE_SYSTEM)" ] && [ -z "$(KQUEUE_CFLAGS)" ]; then \
	  echo "POLLER=kqueue on $(UNAME_S) needs a kqueue library: set KQUEUE_CFLAGS and KQUEUE_LIBS (libkqueue)" >&2; exit 1; fi
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -shared -o $@ $(SRCS) $(LIBS)

# Every spec under every Lua; the last line is "N passed, N failed".
test: bootstrap
	@for v in $(LUAVERS); do $(MAKE) --no-print-directory LUA=$$v build/$$v$(ZULIP_BUILD_TAG)/zulip/core.so || exit 1; done
	@sh tools/run-specs.sh $(LUAVERS)

# One Lua only: make test-one LUA=5.1 [SPEC=spec/queue_spec.lua]
test-one: build
	@sh tools/run-specs.sh $(LUA) $(SPEC)

demo: build
	@$(LUA_BIN) examples/demo.lua

# `make bench [ROWS="2 3"]`: row 1 is bench/decode.lua; rows 2-6 are bench/e2e.lua, each in a
# process of its own; row 7 is bench/state.lua (no server). Results and the machine: bench/RESULTS.md.
ROWS     ?= 1 2 3 4 5 6 7
BENCH_SO := build/bench/$(LUA)/rusage.so build/bench/$(LUA)/rawpoll.so

build/bench/$(LUA)/%.so: bench/%.c Makefile
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden -shared $(shell pkg-config --cflags $(PKG_LUA)) -o $@ $<

bench: build
	@$(MAKE) --no-print-directory $(BENCH_SO)
	@for r in $(ROWS); do \
	  if [ $$r = 1 ]; then $(LUA_BIN) bench/decode.lua || exit 1; continue; fi; \
	  if [ -z "$$hdr" ]; then hdr=1; echo; echo "$(LUA_BIN): rows 2-7, lua-zulip vs the baselines (bench/RESULTS.md)"; \
	    echo "| measure | lua-zulip | baseline | ratio | target |"; echo "|---|---|---|---|---|"; fi; \
	  if [ $$r = 7 ]; then $(LUA_BIN) bench/state.lua || exit 1; continue; fi; \
	  (ulimit -n 8192 2>/dev/null; LUA_CPATH='$(CURDIR)/$(BUILD)/?.so;$(CURDIR)/build/bench/$(LUA)/?.so;;' \
	    $(LUA_BIN) bench/e2e.lua $$r) || exit 1; \
	done

# luacheck, cppcheck, clang-tidy and -Werror builds under gcc and clang (see the hardening block)
lint: bootstrap-extra
	@$(MAKE) --no-print-directory luacheck cppcheck clang-tidy warnings

# What .ci/run checks before the test suite: lint, both install paths, the whole suite under
# ASan+UBSan and under valgrind, and the fuzz targets over their corpora and past crash inputs.
ci-extra: lint install-check asan valgrind fuzz-regress

install-check: build
	@sh tools/install-check.sh

# The Lua 5.4 specs (but the host specs) on Debian arm64 under qemu-user-static, in a chroot made
# once under ARM64_CHROOT (default /var/tmp/lua-zulip-arm64). Slow; not in CI. Needs root.
check-arm64:
	@sh tools/check-arm64.sh

# The kqueue and poll cores compiled as strict POSIX (no _GNU_SOURCE, _POSIX_C_SOURCE=200809L,
# -Werror) with $(CC): nothing outside poll_epoll.c may lean on Linux or glibc. On a system
# without kqueue, the kqueue core needs KQUEUE_CFLAGS (libkqueue's headers), else it is skipped.
PORTABLE_FLAGS = $(WARN) -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden -DZULIP_VERSION='"$(VERSION)"' \
                 $(shell pkg-config --cflags lua5.4 libcurl)
portable-check:
	@mkdir -p build/portable
	@for p in poll kqueue; do \
	  extra=""; \
	  if [ $$p = kqueue ]; then \
	    if [ -z "$(KQUEUE_SYSTEM)" ] && [ -z "$(KQUEUE_CFLAGS)" ]; then \
	      echo "== portable-check: kqueue SKIPPED: no kqueue on $(UNAME_S) and no KQUEUE_CFLAGS (libkqueue's headers)"; \
	      continue; fi; \
	    extra="$(KQUEUE_CFLAGS) -DZPOLL_KQUEUE_POLLABLE=$(KQUEUE_POLLABLE)"; fi; \
	  echo "== portable-check: $$p core, $(CC) -D_POSIX_C_SOURCE=200809L"; \
	  for f in $(filter-out $(POLLERS),$(wildcard csrc/*.c)) csrc/poll_$$p.c; do \
	    $(CC) $(PORTABLE_FLAGS) $$extra -c -o build/portable/$$(basename $$f .c)-$$p.o $$f || exit 1; \
	  done; \
	done
	@echo "portable-check: ok"

install: build
	install -d $(DESTDIR)$(PREFIX)/lib/lua/$(LUA)/zulip $(DESTDIR)$(PREFIX)/share/lua/$(LUA)/zulip
	install -m 755 $(MODULE) $(DESTDIR)$(PREFIX)/lib/lua/$(LUA)/zulip/core.so
	install -m 644 lua/zulip/*.lua $(DESTDIR)$(PREFIX)/share/lua/$(LUA)/zulip/

# HTML reference from the LDoc comments (Debian's lua-ldoc) into build/docs/
docs:
	@sh tools/bootstrap.sh --extra
	ldoc -q .
	@echo "docs: build/docs/index.html"

clean:
	rm -rf build

# ---- Hardening: sanitizers, valgrind, fuzzing, static analysis -----------------------
# make asan       build/asan/zulip/core.so with ASan+UBSan (gcc); the whole suite under lua5.4
# make valgrind   the whole suite under valgrind (memcheck); a definite leak or an error fails it
# make fuzz       libFuzzer targets (clang-14) in build/fuzz/, FUZZ_SECONDS (60) each: the JSON
#                 decoder, the HTTP/1.1 reply parser (h1, with reply.dict), and reply handling end to end
# make fuzz-regress  each fuzz target over its seed corpus and the committed crash inputs
# make lint       luacheck, cppcheck, clang-tidy and `make warnings` (-Werror under gcc and clang)
# Every run of the suite here uses spec/support/gc_helper.lua: a full GC after each spec.
HARD_SPECS   ?= spec
HARD_TIMEOUT ?= 1800
HARD_BUSTED   = lua5.4 /usr/bin/busted --helper=spec/support/gc_helper.lua --output=utfTerminal $(HARD_SPECS)
HARD_ENV      = ZULIP_TEST_LUA=5.4 LUA_PATH='$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/?.lua;;'
HARD_CFLAGS   = $(WARN) -fPIC -fvisibility=hidden -DZULIP_VERSION='"$(VERSION)"' \
                $(shell pkg-config --cflags lua5.4 libcurl)
ASAN_CC      ?= gcc
ASAN_MODULE  := build/asan/zulip/core.so
ASAN_FLAGS   := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# lua_close unloads the module before LeakSanitizer reports, so a leak's stack shows frames in it as
# "<unknown module>"; to see them, add build/asan/zulip/core.so to LD_PRELOAD by hand (not by
# default: libp11-kit's destructor then deadlocks in exit).
ASAN_PRELOAD  = $(shell $(ASAN_CC) -print-file-name=libasan.so) $(shell $(ASAN_CC) -print-file-name=libubsan.so)
ASAN_ENV      = LD_PRELOAD='$(ASAN_PRELOAD)' \
                ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=1 \
                LSAN_OPTIONS=suppressions=$(CURDIR)/tools/lsan.supp:print_suppressions=0:exitcode=87 \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=88
VALGRIND_ENV  = GLIBCXX_FORCE_NEW=1
VALGRIND      = valgrind -q --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
                --error-exitcode=89 --suppressions=$(CURDIR)/tools/valgrind.supp --num-callers=30 \
                --keep-debuginfo=yes
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_TARGETS := json reply
FUZZ_BINS    := $(FUZZ_TARGETS:%=build/fuzz/%_fuzz)
FUZZ_SRCS_json  := csrc/json.c
FUZZ_SRCS_reply := $(SRCS)

.PHONY: bootstrap-extra fuzz-build fuzz-regress warnings cppcheck clang-tidy luacheck

bootstrap-extra: bootstrap
	@sh tools/bootstrap.sh --extra

$(ASAN_MODULE): $(SRCS) $(HDRS) lua/zulip/version.lua Makefile
	@mkdir -p $(dir $@)
	$(ASAN_CC) $(HARD_CFLAGS) $(ASAN_FLAGS) -shared -o $@ $(SRCS) $(LIBS)

# Processes the specs start run without the sanitizers, on the plain build (spec/support/gc_helper.lua).
asan: build bootstrap-extra
	@$(MAKE) --no-print-directory $(ASAN_MODULE)
	@start=$$(date +%s); \
	timeout -k 10 $(HARD_TIMEOUT) env $(HARD_ENV) LUA_CPATH='$(CURDIR)/build/asan/?.so;;' ZULIP_CHILD_CPATH='$(CURDIR)/build/5.4/?.so' \
	  ZULIP_ASAN_CPATH='$(CURDIR)/build/asan/?.so' \
	  $(ASAN_ENV) $(HARD_BUSTED); rc=$$?; \
	echo "asan: exit $$rc after $$(( $$(date +%s) - start )) s"; exit $$rc

valgrind: build bootstrap-extra
	@start=$$(date +%s); \
	timeout -k 10 $(HARD_TIMEOUT) env $(HARD_ENV) LUA_CPATH='$(CURDIR)/build/5.4/?.so;;' $(VALGRIND_ENV) \
	  $(VALGRIND) $(HARD_BUSTED); rc=$$?; \
	echo "valgrind: exit $$rc after $$(( $$(date +%s) - start )) s"; exit $$rc

build/fuzz/%_fuzz: fuzz/%_fuzz.c $(SRCS) $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(HARD_CFLAGS) $(FUZZ_FLAGS) -Icsrc -DZULIP_SRC_DIR='"$(CURDIR)"' -o $@ $< \
	  $(FUZZ_SRCS_$(*F)) $(LIBS) $(shell pkg-config --libs lua5.4) -lpthread

fuzz-build: bootstrap-extra
	@$(MAKE) --no-print-directory $(FUZZ_BINS)

# Fuzz each target for FUZZ_SECONDS; new inputs go to build/fuzz/corpus-*, crashes to build/fuzz/.
fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus-$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  build/fuzz/$${t}_fuzz -max_total_time=$(FUZZ_SECONDS) -timeout=10 -max_len=16384 -print_final_stats=1 \
	    -artifact_prefix=build/fuzz/$$t- -dict=fuzz/$$t.dict \
	    build/fuzz/corpus-$$t fuzz/corpus/$$t || exit 1; \
	done

# Replays the seeds and every crash input ever found (spec/fixtures/fuzz/<target>/): no fuzzing.
fuzz-regress: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  build/fuzz/$${t}_fuzz -runs=0 fuzz/corpus/$$t $$(ls -d spec/fixtures/fuzz/$$t 2>/dev/null) || exit 1; \
	done

luacheck:
	luacheck -q lua spec examples bench tools fuzz

# cppcheck does not read the system headers, so it gets the few values luaconf.h and json.c test
# from them; variableScope is off because declaring at the top of a block is our style.
cppcheck:
	cppcheck --quiet --std=c99 --enable=warning,style,performance,portability --error-exitcode=1 \
	  --inline-suppr --suppress=missingIncludeSystem --suppress=variableScope \
	  -DZULIP_VERSION='"lint"' -DZULIP_SRC_DIR='"lint"' -DLLONG_MAX=9223372036854775807LL \
	  -DFLT_EVAL_METHOD=0 -DDBL_MANT_DIG=53 -D__GNUC__=12 -D__SSE2__ -D__BYTE_ORDER__=1234 \
	  -D__ORDER_LITTLE_ENDIAN__=1234 $(shell pkg-config --cflags-only-I lua5.4 libcurl) -Icsrc \
	  $(filter-out csrc/poll_kqueue.c,$(wildcard csrc/*.c)) fuzz
	@if [ -n "$(KQUEUE_SYSTEM)$(KQUEUE_CFLAGS)" ]; then \
	  cppcheck --quiet --std=c99 --enable=warning,style,performance,portability --error-exitcode=1 \
	    --inline-suppr --suppress=missingIncludeSystem --suppress=variableScope -Icsrc \
	    $(filter -I%,$(KQUEUE_CFLAGS)) csrc/poll_kqueue.c; \
	else echo "cppcheck: csrc/poll_kqueue.c SKIPPED: no kqueue headers (set KQUEUE_CFLAGS to libkqueue's)"; fi

# poll_kqueue.c needs <sys/event.h>: the system's, or libkqueue's through KQUEUE_CFLAGS, else skipped
clang-tidy:
	clang-tidy --quiet $(filter-out csrc/poll_kqueue.c,$(wildcard csrc/*.c)) fuzz/*.c -- -std=c99 \
	  -DZULIP_VERSION='"lint"' -DZULIP_SRC_DIR='"lint"' -Icsrc $(shell pkg-config --cflags lua5.4 libcurl)
	@if [ -n "$(KQUEUE_SYSTEM)$(KQUEUE_CFLAGS)" ]; then \
	  clang-tidy --quiet csrc/poll_kqueue.c -- -std=c99 -Icsrc $(KQUEUE_CFLAGS) -DZPOLL_KQUEUE_POLLABLE=$(KQUEUE_POLLABLE); \
	else echo "clang-tidy: csrc/poll_kqueue.c SKIPPED: no kqueue headers (set KQUEUE_CFLAGS to libkqueue's)"; fi

# -Werror builds of the module with gcc and with clang against every Lua's headers (in build/warn-*),
# then of the other pollers' cores against Lua 5.4's (kqueue: only with its headers, see above).
warnings:
	@for cc in gcc clang; do for lua in lua5.4 lua5.3 lua5.1 luajit; do \
	  mkdir -p build/warn-$$cc-$$lua; \
	  echo "== $$cc, $$lua"; \
	  $$cc $(WARN) -fPIC -fvisibility=hidden -DZULIP_VERSION='"$(VERSION)"' -O2 $$(pkg-config --cflags $$lua libcurl) \
	    $(POLL_CFLAGS) -shared -o build/warn-$$cc-$$lua/core.so $(SRCS) $(LIBS) || exit 1; \
	done; \
	for p in epoll kqueue poll; do \
	  [ $$p = $(POLLER) ] && continue; \
	  [ $$p = epoll ] && [ "$(UNAME_S)" != Linux ] && continue; \
	  extra=""; libs=""; \
	  if [ $$p = kqueue ]; then \
	    if [ -z "$(KQUEUE_SYSTEM)" ] && [ -z "$(KQUEUE_CFLAGS)" ]; then \
	      echo "== $$cc, kqueue core SKIPPED: no kqueue headers (set KQUEUE_CFLAGS and KQUEUE_LIBS)"; continue; fi; \
	    extra="$(KQUEUE_CFLAGS) -DZPOLL_KQUEUE_POLLABLE=$(KQUEUE_POLLABLE)"; libs="$(KQUEUE_LIBS)"; fi; \
	  mkdir -p build/warn-$$cc-$$p; \
	  echo "== $$cc, lua5.4, $$p core"; \
	  $$cc $(WARN) -fPIC -fvisibility=hidden -DZULIP_VERSION='"$(VERSION)"' -O2 $$(pkg-config --cflags lua5.4 libcurl) \
	    $$extra -shared -o build/warn-$$cc-$$p/core.so $(filter-out $(POLLERS),$(wildcard csrc/*.c)) csrc/poll_$$p.c \
	    $(shell pkg-config --libs libcurl) $$libs || exit 1; \
	done; done
