# lua-zulip. `make` builds for Lua 5.4; `make LUA=5.1|5.3|luajit` for the others.
# `make test` runs every spec under 5.4, 5.3, 5.1 and LuaJIT; `make demo` runs the example bot.
LUA      ?= 5.4
VERSION  := $(shell sed -n 's/^return "\(.*\)"$$/\1/p' lua/zulip/version.lua)
PKG_LUA  := $(if $(filter luajit,$(LUA)),luajit,lua$(LUA))
LUA_BIN  := $(if $(filter luajit,$(LUA)),luajit,lua$(LUA))
BUILD    := build/$(LUA)
MODULE   := $(BUILD)/zulip/core.so
SRCS     := $(wildcard csrc/*.c)
HDRS     := $(wildcard csrc/*.h)
CC       ?= cc
CFLAGS   ?= -O2 -g
WARN     := -std=c99 -Wall -Wextra -Wpedantic -Werror -Wshadow -Wstrict-prototypes
ALLCFLAGS = $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden -DZULIP_VERSION='"$(VERSION)"' \
            $(shell pkg-config --cflags $(PKG_LUA) libcurl)
LIBS      = $(shell pkg-config --libs libcurl)
PREFIX   ?= /usr/local
LUAVERS  := 5.4 5.3 5.1 luajit
export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/?.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;

.PHONY: all bootstrap build test test-one demo bench lint clean install install-check ci-extra asan valgrind docs fuzz

all: build

bootstrap:
	@sh tools/bootstrap.sh

build: bootstrap
	@$(MAKE) --no-print-directory $(MODULE)

$(MODULE): $(SRCS) $(HDRS) lua/zulip/version.lua Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -shared -o $@ $(SRCS) $(LIBS)

# Every spec under every Lua; the last line is "N passed, N failed".
test: bootstrap
	@for v in $(LUAVERS); do $(MAKE) --no-print-directory LUA=$$v $(BUILD:build/$(LUA)=build/$$v)/zulip/core.so || exit 1; done
	@sh tools/run-specs.sh $(LUAVERS)

# One Lua only: make test-one LUA=5.1 [SPEC=spec/queue_spec.lua]
test-one: build
	@sh tools/run-specs.sh $(LUA) $(SPEC)

demo: build
	@$(LUA_BIN) examples/demo.lua

bench: build
	@$(LUA_BIN) bench/decode.lua

lint: bootstrap
	luacheck -q lua spec examples bench tools

# What .ci/run checks before the test suite: lint, and both install paths.
ci-extra: lint install-check

install-check: build
	@sh tools/install-check.sh

install: build
	install -d $(DESTDIR)$(PREFIX)/lib/lua/$(LUA)/zulip $(DESTDIR)$(PREFIX)/share/lua/$(LUA)/zulip
	install -m 755 $(MODULE) $(DESTDIR)$(PREFIX)/lib/lua/$(LUA)/zulip/core.so
	install -m 644 lua/zulip/*.lua $(DESTDIR)$(PREFIX)/share/lua/$(LUA)/zulip/

clean:
	rm -rf build
