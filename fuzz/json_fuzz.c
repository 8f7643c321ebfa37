/* json_fuzz.c: libFuzzer target for the JSON decoder (csrc/json.c). `make fuzz` builds it with
 * clang -fsanitize=fuzzer,address,undefined; ASan catches any read outside the input (libFuzzer
 * hands us an exactly sized heap copy), UBSan any undefined arithmetic. Beyond "no crash" it
 * checks what json.h promises:
 *   - the same with the table-size hints a transfer carries between replies (here from each input
 *     to the next), and with the string caches the Lua state keeps between small decodes;
 *   - success pushes exactly one value, failure pushes nothing, and only malformed input fails
 *     with a message and a 1-based position inside the input (or just past its end);
 *   - no Lua error escapes for malformed input (only a memory error may);
 *   - a lone number decodes exactly as the C library's strtoll/strtod read it;
 *   - re-encoding a decoded value and decoding that again gives an equal value (so every double
 *     survives a %.17g round trip: the decoder rounds correctly). */
#include "json.h"

#include <lauxlib.h>
#include <lualib.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *fuzz_L;
/* carried from each decode to the next, as a transfer carries them between its replies: every
 * input is decoded with tables presized from the shapes of the ones before it */
static zulip_json_hints fuzz_hints;

typedef struct decode_call {
  const char *buf;
  size_t len;
  int ok;
  char err[160];
  size_t pos;
} decode_call;

static void fuzz_fail(const char *what, const decode_call *c) {
  fprintf(stderr, "json_fuzz: %s (len %zu, err '%s', pos %zu)\n", what, c->len, c->err, c->pos);
  abort();
}

/* Runs under lua_pcall: a raised error (memory) must not skip the stack checks. */
static int fuzz_decode(lua_State *L) {
  decode_call *c = lua_touserdata(L, 1);
  int top = lua_gettop(L);
  c->err[0] = 0;
  c->pos = 0;
  c->ok = zulip_json_decode(L, c->buf, c->len, ZULIP_JSON_MAXDEPTH, &fuzz_hints, c->err, sizeof c->err, &c->pos);
  if (lua_gettop(L) != top + (c->ok ? 1 : 0)) fuzz_fail("stack not balanced", c);
  if (!c->ok) {
    if (c->err[0] == 0 || strlen(c->err) >= sizeof c->err) fuzz_fail("failure without a message", c);
    if (c->pos < 1 || c->pos > c->len + 1) fuzz_fail("error position outside the input", c);
    return 0;
  }
  return 1;
}

/* ---- a small canonical encoder, for the round trip ---- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    b->p = realloc(b->p, cap);
    if (b->p == NULL) abort();
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void encode_string(sbuf *b, const char *s, size_t n) {
  size_t i;
  sb_put(b, "\"", 1);
  for (i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\' || ch < 0x20) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\u%04x", ch);
      sb_puts(b, esc);
    } else {
      sb_put(b, s + i, 1);
    }
  }
  sb_put(b, "\"", 1);
}

/* Encodes the value at idx. Tables: a sequence 1..n is an array, anything else an object with
 * string keys (the decoder makes nothing else). Returns 0 for a value JSON cannot spell (an
 * infinity from a literal such as 1e999), and then the round trip is skipped. */
static int encode_value(lua_State *L, int idx, sbuf *b) {
  char num[64];
  int ok = 1;
  idx = lua_absindex(L, idx);
  if (!lua_checkstack(L, 4)) abort();
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      encode_string(b, s, n);
      break;
    }
    case LUA_TNUMBER: {
      double d;
#if LUA_VERSION_NUM >= 503
      if (lua_isinteger(L, idx)) {
        snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, idx));
        sb_puts(b, num);
        break;
      }
#endif
      d = (double)lua_tonumber(L, idx);
      if (isinf(d) || isnan(d)) return 0;
      snprintf(num, sizeof num, "%.17g", d);
      sb_puts(b, num);
      if (strpbrk(num, ".eE") == NULL) sb_puts(b, ".0");  /* "3" would come back an integer */
      break;
    }
    case LUA_TBOOLEAN:
      sb_puts(b, lua_toboolean(L, idx) ? "true" : "false");
      break;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) != NULL) abort();  /* null is the NULL lightuserdata */
      sb_puts(b, "null");
      break;
    case LUA_TTABLE: {
      size_t n = (size_t)lua_rawlen(L, idx), count = 0;
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        count++;
        lua_pop(L, 1);
      }
      if (count == n && n > 0) {
        size_t i;
        sb_put(b, "[", 1);
        for (i = 1; i <= n && ok; i++) {
          if (i > 1) sb_put(b, ",", 1);
          lua_rawgeti(L, idx, (int)i);
          ok = encode_value(L, -1, b);
          lua_pop(L, 1);
        }
        sb_put(b, "]", 1);
      } else {
        int first = 1;
        sb_put(b, "{", 1);
        lua_pushnil(L);
        while (ok && lua_next(L, idx)) {
          size_t kn;
          const char *k;
          if (lua_type(L, -2) != LUA_TSTRING) abort();  /* the decoder made a non-string key */
          k = lua_tolstring(L, -2, &kn);
          if (!first) sb_put(b, ",", 1);
          first = 0;
          encode_string(b, k, kn);
          sb_put(b, ":", 1);
          ok = encode_value(L, -1, b);
          lua_pop(L, 1);
        }
        if (!ok) lua_pop(L, 1);  /* the key lua_next left */
        sb_put(b, "}", 1);
      }
      break;
    }
    default:
      abort();  /* the decoder made a value JSON has no name for */
  }
  return ok;
}

/* Deep equality of the values at a and b: same types, integers stay integers. */
static int same_value(lua_State *L, int a, int b) {
  a = lua_absindex(L, a);
  b = lua_absindex(L, b);
  if (!lua_checkstack(L, 4)) abort();
  if (lua_type(L, a) != lua_type(L, b)) return 0;
  switch (lua_type(L, a)) {
    case LUA_TNUMBER:
#if LUA_VERSION_NUM >= 503
      if (lua_isinteger(L, a) != lua_isinteger(L, b)) return 0;
      if (lua_isinteger(L, a)) return lua_tointeger(L, a) == lua_tointeger(L, b);
#endif
      return lua_tonumber(L, a) == lua_tonumber(L, b);
    case LUA_TTABLE: {
      size_t na = 0, nb = 0;
      int same = 1;
      lua_pushnil(L);
      while (lua_next(L, b)) {
        nb++;
        lua_pop(L, 1);
      }
      lua_pushnil(L);
      while (same && lua_next(L, a)) {
        na++;
        lua_pushvalue(L, -2);
        lua_rawget(L, b);
        same = same_value(L, -2, -1);
        lua_pop(L, 2);
      }
      if (!same) lua_pop(L, 1);
      return same && na == nb;
    }
    default:
      return lua_rawequal(L, a, b);
  }
}

/* The input without JSON whitespace around it, when it is one number token. */
static int lone_number(const char *s, size_t n, char *out, size_t outlen) {
  size_t i = 0, j = n, k;
  while (i < n && strchr(" \t\r\n", s[i]) != NULL && s[i] != 0) i++;
  while (j > i && strchr(" \t\r\n", s[j - 1]) != NULL && s[j - 1] != 0) j--;
  if (j == i || j - i >= outlen) return 0;
  for (k = i; k < j; k++)
    if (strchr("0123456789+-.eE", s[k]) == NULL || s[k] == 0) return 0;
  memcpy(out, s + i, j - i);
  out[j - i] = 0;
  return 1;
}

static void check_number(lua_State *L, const char *text, decode_call *c) {
  char *end;
  errno = 0;
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, -1)) {
    long long v = strtoll(text, &end, 10);
    if (*end != 0 || errno == ERANGE || v != (long long)lua_tointeger(L, -1))
      fuzz_fail("an integer literal decoded to another value", c);
    return;
  }
#endif
  {
    double v = strtod(text, &end);
    if (*end != 0) fuzz_fail("a number the C library does not read decoded", c);
    double got = (double)lua_tonumber(L, -1);
    if (v != got || signbit(v) != signbit(got))  /* -0.0 is not 0.0 here */
      fuzz_fail("a number decoded to another double than strtod's", c);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = fuzz_L;
  decode_call c;
  char num[512];
  sbuf b = {NULL, 0, 0};
  int ok;
  if (L == NULL) {
    L = fuzz_L = luaL_newstate();
    if (L == NULL) abort();
    luaL_openlibs(L);
  }
  memset(&c, 0, sizeof c);
  c.buf = (const char *)data;
  c.len = size;
  lua_pushcfunction(L, fuzz_decode);
  lua_pushlightuserdata(L, &c);
  ok = lua_pcall(L, 1, 1, 0);
  if (ok == LUA_ERRMEM) {
    lua_settop(L, 0);
    return 0;
  }
  if (ok != 0) fuzz_fail("the decoder raised a Lua error", &c);
  if (!c.ok) {
    lua_settop(L, 0);
    return 0;
  }
  /* stack: [1] the decoded value */
  if (lua_type(L, 1) == LUA_TNUMBER && lone_number(c.buf, c.len, num, sizeof num)) check_number(L, num, &c);
  if (encode_value(L, 1, &b)) {
    decode_call again;
    memset(&again, 0, sizeof again);
    again.buf = b.p;
    again.len = b.len;
    lua_pushcfunction(L, fuzz_decode);
    lua_pushlightuserdata(L, &again);
    ok = lua_pcall(L, 1, 1, 0);
    if (ok == 0 && !again.ok) {
      fprintf(stderr, "json_fuzz: re-encoded text: %.200s\n", b.p);
      fuzz_fail("the re-encoded value does not decode", &again);
    }
    if (ok == 0 && !same_value(L, 1, 2)) {
      fprintf(stderr, "json_fuzz: re-encoded text: %.200s\n", b.p);
      fuzz_fail("the value changed in a round trip", &c);
    }
  }
  free(b.p);
  lua_settop(L, 0);
  return 0;
}
