/* JSON decoder for lua-zulip: decodes a JSON text straight into Lua values. */
#ifndef ZULIP_JSON_H
#define ZULIP_JSON_H

#include <lua.h>
#include <stddef.h>

#define ZULIP_JSON_MAXDEPTH 1000
#define ZULIP_JSON_HINT_LEVELS 32  /* depths with a table-size hint */
#define ZULIP_JSON_HINT_KEEP 64    /* the largest size a hint keeps from one decode to the next */

/* Table sizes carried from one decode to the next by a caller that decodes many texts of one
 * shape (a queue's poll replies): the length of the last array and the key count of the last
 * object seen at each depth, with which the next decode presizes its first tables there instead
 * of growing them a rehash at a time. Zero-initialise it. A size over ZULIP_JSON_HINT_KEEP is
 * kept as that, so one odd reply costs the next one at most a few KiB of table. */
typedef struct {
  unsigned char arr[ZULIP_JSON_HINT_LEVELS];
  unsigned char obj[ZULIP_JSON_HINT_LEVELS];
} zulip_json_hints;

/* Decode buf[0..len) and push exactly one Lua value. hints: NULL, or what the caller's previous
 * decodes left there (updated by a successful one).
 * Returns 1 on success (value on top of the stack).
 * Returns 0 on malformed input: pushes nothing and writes a message such as
 * "unexpected character 'x' at character 17" / "unexpected end of input at character 42" /
 * "too deeply nested at character 1001" into err (NUL-terminated, at most errlen bytes) and sets *errpos
 * to the 1-based character position.
 * May raise a Lua memory error; it allocates no C memory of its own that could leak on such an error
 * (any scratch buffer must be Lua-owned, e.g. a userdata or luaL_Buffer on the stack, or a fixed stack array).
 * Never reads past buf+len (buf need not be NUL-terminated).
 *
 * If the Lua stack cannot grow (out of memory, or a maxdepth so large that the
 * nesting exceeds Lua's stack limit) it raises a Lua error.
 *
 * Mapping: object -> table with string keys (duplicate keys: last wins);
 * array -> sequence 1..n; null -> lua_pushlightuserdata(L, NULL);
 * integer literal (no '.', 'e', 'E') fitting lua_Integer -> integer
 * (on Lua 5.1/LuaJIT: a number); any other number -> correctly rounded
 * double, independent of the C locale; strings -> UTF-8 with escapes decoded
 * (lone surrogate escapes become U+FFFD; raw bytes are passed through
 * unvalidated; raw control characters are rejected). */
int zulip_json_decode(lua_State *L, const char *buf, size_t len, int maxdepth, zulip_json_hints *hints,
                      char *err, size_t errlen, size_t *errpos);

#endif
