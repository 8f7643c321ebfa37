/* JSON decoder for lua-zulip.  See json.h for the contract.
 *
 * A recursive-descent parser that pushes Lua values directly (no
 * intermediate tree).  What makes it fast:
 *   - tables are presized from the size of the previous array/object seen at
 *     the same nesting depth (API payloads are lists of same-shaped records),
 *     in this text or, through zulip_json_hints, in the caller's previous one
 *     (a queue's replies have the same shapes);
 *   - object keys and short string values go through small caches of Lua
 *     strings, which skip lua_pushlstring's hashing and string-table probe
 *     for the strings that repeat: in a large text, caches of its own kept in
 *     stack slots; in a small one (a poll's reply), caches that the Lua state
 *     keeps between decodes, in a table in the registry, since the keys of one
 *     reply are those of the next;
 *   - strings without escapes are found with an SSE2 (or word-at-a-time)
 *     scan and pushed straight from the input;
 *   - integers are accumulated in a uint64 and pushed as lua_Integer;
 *     decimals with <= 19 digits and a small exponent use an exact fast path
 *     (Clinger), everything else a locale-proof strtod.
 * Nothing here allocates C memory: escaped strings are decoded into a fixed
 * buffer on the C stack, or, when they are longer, into a userdata kept in a
 * reserved stack slot. */
#include "json.h"

#include <lauxlib.h>

#include <float.h>
#include <limits.h>
#include <locale.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HINT_LEVELS ZULIP_JSON_HINT_LEVELS
#define HINT_MAX 65536   /* never presize beyond this */
#define SCRATCH_SIZE 1024 /* on-stack buffer for escaped strings */
/* String caches (see push_cached): one for object keys, one for short
 * string values, each CACHE_SETS sets of 2 entries owning a stack slot. */
#define CACHE_SET_BITS 7
#define CACHE_SETS (1 << CACHE_SET_BITS)
#define CACHE_SIZE (2 * CACHE_SETS)
#define CACHE_KEYS 0
#define CACHE_VALUES CACHE_SIZE
#define CACHE_MAXLEN 40    /* = Lua 5.4's LUAI_MAXSHORTLEN */
#define CACHE_MINDOC 4096  /* smaller documents use the kept caches (see kept_cache) */

#if LUA_VERSION_NUM >= 503
typedef lua_Integer arr_index;
#define ARR_INDEX_MAX LUA_MAXINTEGER
#else
typedef int arr_index; /* lua_rawseti takes an int before 5.3 */
#define ARR_INDEX_MAX INT_MAX
#endif

/* -DZULIP_JSON_PORTABLE compiles only the plain C99 paths (for testing). */
#if !defined(ZULIP_JSON_PORTABLE) && (defined(__GNUC__) || defined(__clang__)) && \
    defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ZJ_LE_CTZ 1
#endif

#if !defined(ZULIP_JSON_PORTABLE) && defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__))
#include <emmintrin.h>
#define ZJ_SSE2 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ZJ_LIKELY(x) __builtin_expect(!!(x), 1)
#define ZJ_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define ZJ_NOINLINE __attribute__((noinline))
#else
#define ZJ_LIKELY(x) (x)
#define ZJ_UNLIKELY(x) (x)
#define ZJ_NOINLINE
#endif

/* The exact float fast path needs double arithmetic without excess
 * precision (no x87 double rounding). */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0 && DBL_MANT_DIG == 53
#define ZJ_FAST_FLOAT 1
#endif

enum {
  E_CHAR = 1, /* unexpected character at pos */
  E_EOF,      /* unexpected end of input */
  E_DEPTH,    /* too deeply nested */
  E_ESCAPE,   /* invalid escape: pos at the backslash */
  E_UNICODE,  /* invalid \u escape: pos at the backslash */
  E_CTRL,     /* raw control character inside a string */
  E_ARRAY     /* array longer than lua_rawseti can index */
};

/* A cached string: its length and first/last 8 bytes (which identify
 * strings of up to 16 bytes); src is an occurrence of it in the input, or,
 * in the kept caches, the bytes of the Lua string itself (which the cache's
 * table holds). */
typedef struct {
  uint64_t a, b;
  size_t len;
  const char *src;
} centry;

typedef struct {
  lua_State *L;
  const char *end;
  int maxdepth;
  int slot; /* stack index holding the big scratch userdata (or nil) */
  char *sbuf;
  size_t scap;
  int ekind;
  const char *epos;
  int ahint[HINT_LEVELS];
  int ohint[HINT_LEVELS];
  int cbase; /* stack index of cache entry 0's slot, or 0 */
  int ktab;  /* or: stack index of the kept caches' table (entry i at [i + 1]), or 0 */
  centry *cache; /* the entries: own, kept, or NULL (no caches) */
  char scratch[SCRATCH_SIZE];
  centry own[2 * CACHE_SIZE];
} decoder;

static const char *value(decoder *d, const char *p, int depth);

static const char *fail(decoder *d, int kind, const char *at) {
  d->ekind = kind;
  d->epos = at;
  return NULL;
}

static const char *unexpected(decoder *d, const char *at) {
  return fail(d, at < d->end ? E_CHAR : E_EOF, at);
}

#define ISWS(c) ((c) == ' ' || (c) == '\n' || (c) == '\r' || (c) == '\t')
#define ISDIGIT(c) ((unsigned char)((c) - '0') < 10)

/* JSON text from Zulip is compact, so test for "no whitespace" first. */
#define SKIPWS(p, end)                                                \
  do {                                                                \
    if (ZJ_UNLIKELY((p) < (end) && (unsigned char)*(p) <= ' '))       \
      while ((p) < (end) && ISWS(*(p))) (p)++;                        \
  } while (0)

/* ---- strings ---------------------------------------------------------- */

/* 1 for bytes that end a run of plain string content: '"', '\\', 0x00-0x1f. */
static const unsigned char str_special[256] = {
  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
  0,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0,
};

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Return the first p' >= p with p' == end or str_special[*p'].
 * The word test sets the high bit of every byte equal to '"' or '\\' or
 * below 0x20; false positives only occur above a true one, so the lowest
 * set bit is always a real match. */
static const char *scan_plain(const char *p, const char *end) {
#ifdef ZJ_SSE2
  const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
  const __m128i ctl = _mm_set1_epi8(0x1F);
  while (end - p >= 16) {
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bslash)),
                             _mm_cmpeq_epi8(_mm_min_epu8(x, ctl), x)); /* x <= 0x1f */
    int bits = _mm_movemask_epi8(m);
    if (bits) return p + __builtin_ctz((unsigned)bits);
    p += 16;
  }
#endif
  while (end - p >= 8) {
    uint64_t w, q, b, m;
    memcpy(&w, p, 8);
    q = w ^ (ONES * '"');
    b = w ^ (ONES * '\\');
    m = (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((w - ONES * 0x20) & ~w)) & HIGHS;
    if (m) {
#ifdef ZJ_LE_CTZ
      return p + (__builtin_ctzll(m) >> 3);
#else
      break;
#endif
    }
    p += 8;
  }
  while (p < end && !str_special[(unsigned char)*p]) p++;
  return p;
}

static const signed char hexval[256] = {
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
   0, 1, 2, 3, 4, 5, 6, 7, 8, 9,-1,-1,-1,-1,-1,-1,
  -1,10,11,12,13,14,15,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,10,11,12,13,14,15,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
  -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,
};

/* Four hex digits at p (caller guarantees they are readable); -1 if bad. */
static long hex4(const char *p) {
  int a = hexval[(unsigned char)p[0]], b = hexval[(unsigned char)p[1]];
  int c = hexval[(unsigned char)p[2]], e = hexval[(unsigned char)p[3]];
  if ((a | b | c | e) < 0) return -1;
  return ((long)a << 12) | (b << 8) | (c << 4) | e;
}

static size_t put_utf8(char *o, unsigned long cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  } else if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  } else if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Make the scratch buffer hold at least `need` bytes, keeping `used`. */
static char *grow_scratch(decoder *d, size_t used, size_t need) {
  size_t cap = d->scap * 2;
  char *nb;
  if (cap < need) cap = need;
  nb = (char *)lua_newuserdata(d->L, cap);
  memcpy(nb, d->sbuf, used);
  lua_replace(d->L, d->slot); /* old buffer (if any) becomes garbage */
  d->sbuf = nb;
  d->scap = cap;
  return nb;
}

/* Error for a bad \u escape at bs (the backslash): EOF if the input ends
 * before a non-hex digit shows up. */
static const char *bad_unicode(decoder *d, const char *bs) {
  const char *q = bs + 2;
  while (q < d->end && q < bs + 6 && hexval[(unsigned char)*q] >= 0) q++;
  if (q == d->end && q < bs + 6) return fail(d, E_EOF, q);
  return fail(d, E_UNICODE, bs);
}

/* Slow path: s is the start of the string content, p the first backslash. */
static ZJ_NOINLINE const char *string_escaped(decoder *d, const char *s, const char *p) {
  const char *end = d->end;
  char *out = d->sbuf;
  size_t w = 0, run;
  for (;;) {
    unsigned long cp;
    run = (size_t)(p - s);
    if (w + run + 4 > d->scap) out = grow_scratch(d, w, w + run + 4);
    memcpy(out + w, s, run);
    w += run;
    if (end - p < 2) return fail(d, E_EOF, end);
    switch (p[1]) {
      case '"': out[w++] = '"'; p += 2; break;
      case '\\': out[w++] = '\\'; p += 2; break;
      case '/': out[w++] = '/'; p += 2; break;
      case 'b': out[w++] = '\b'; p += 2; break;
      case 'f': out[w++] = '\f'; p += 2; break;
      case 'n': out[w++] = '\n'; p += 2; break;
      case 'r': out[w++] = '\r'; p += 2; break;
      case 't': out[w++] = '\t'; p += 2; break;
      case 'u': {
        long u;
        if (end - p < 6 || (u = hex4(p + 2)) < 0) return bad_unicode(d, p);
        p += 6;
        cp = (unsigned long)u;
        if (cp >= 0xD800 && cp <= 0xDFFF) {
          long lo;
          if (cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
              (lo = hex4(p + 2)) >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
            p += 6;
          } else {
            cp = 0xFFFD; /* lone surrogate */
          }
        }
        w += put_utf8(out + w, cp);
        break;
      }
      default:
        return fail(d, E_ESCAPE, p);
    }
    s = p;
    p = scan_plain(p, end);
    if (p == end) return fail(d, E_EOF, end);
    if (*p == '"') {
      run = (size_t)(p - s);
      if (w + run > d->scap) out = grow_scratch(d, w, w + run);
      memcpy(out + w, s, run);
      lua_pushlstring(d->L, out, w + run);
      return p + 1;
    }
    if (*p != '\\') return fail(d, E_CTRL, p);
  }
}

#if LUA_VERSION_NUM >= 502
#define COPY_SLOT(L, from, to) lua_copy(L, from, to)
#else
#define COPY_SLOT(L, from, to) (lua_pushvalue(L, from), lua_replace(L, to))
#endif

/* Push s[0..len), len <= CACHE_MAXLEN, through the cache starting at entry
 * `which`.  Keys and many short values repeat thousands of times in API
 * payloads; lua_pushlstring must hash every byte and probe the string
 * table, while a hit here costs a cheap hash of (length, first 8 bytes,
 * last 8 bytes), a compare and a lua_pushvalue.  Two-way sets: a new
 * string goes to way 0 and demotes the previous one to way 1. */
static void push_cached(decoder *d, const char *s, size_t len, int which) {
  lua_State *L = d->L;
  uint64_t a = 0, b = 0;
  unsigned set;
  int i;
  centry *e;
  if (len >= 8) {
    memcpy(&a, s, 8);
    memcpy(&b, s + len - 8, 8);
  } else {
#ifdef ZJ_LE_CTZ
    if (d->end - s >= 8) {
      memcpy(&a, s, 8);
      a &= (UINT64_C(1) << (len * 8)) - 1;
    } else
#endif
      memcpy(&a, s, len);
  }
  set = (unsigned)(((a ^ (b * UINT64_C(0x9E3779B97F4A7C15)) ^ len) *
                    UINT64_C(0xD6E8FEB86659FD93)) >> (64 - CACHE_SET_BITS));
  i = which + 2 * (int)set;
  e = &d->cache[i];
  if (e[0].len == len && e[0].a == a && e[0].b == b &&
      (len <= 16 || memcmp(e[0].src + 8, s + 8, len - 16) == 0)) {
    if (d->ktab) lua_rawgeti(L, d->ktab, i + 1); else lua_pushvalue(L, d->cbase + i);
    return;
  }
  if (e[1].len == len && e[1].a == a && e[1].b == b &&
      (len <= 16 || memcmp(e[1].src + 8, s + 8, len - 16) == 0)) {
    if (d->ktab) lua_rawgeti(L, d->ktab, i + 2); else lua_pushvalue(L, d->cbase + i + 1);
    return;
  }
  lua_pushlstring(L, s, len);
  if (d->ktab) {  /* the table's array part has every slot: these never allocate */
    if (e[0].len != (size_t)-1) {
      e[1] = e[0];
      lua_rawgeti(L, d->ktab, i + 1);
      lua_rawseti(L, d->ktab, i + 2);
    }
    lua_pushvalue(L, -1);
    lua_rawseti(L, d->ktab, i + 1);
    s = lua_tostring(L, -1);  /* the entry outlives this text: it points into the string */
  } else {
    if (e[0].len != (size_t)-1) {
      e[1] = e[0];
      COPY_SLOT(L, d->cbase + i, d->cbase + i + 1);
    }
    COPY_SLOT(L, -1, d->cbase + i);
  }
  e[0].len = len;
  e[0].a = a;
  e[0].b = b;
  e[0].src = s;
}

/* p is just after the opening quote; which: CACHE_KEYS or CACHE_VALUES. */
static const char *string(decoder *d, const char *p, int which) {
  const char *s = p;
  size_t len;
  p = scan_plain(p, d->end);
  if (ZJ_UNLIKELY(p == d->end || *p != '"')) {
    if (p == d->end) return fail(d, E_EOF, p);
    if (*p == '\\') return string_escaped(d, s, p);
    return fail(d, E_CTRL, p);
  }
  len = (size_t)(p - s);
  if (d->cache && len <= CACHE_MAXLEN)
    push_cached(d, s, len, which);
  else
    lua_pushlstring(d->L, s, len);
  return p + 1;
}

/* ---- numbers ---------------------------------------------------------- */

#ifdef ZJ_FAST_FLOAT
static const double pow10_exact[23] = {
  1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
  1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};
#endif

/* Correctly rounded conversion of the validated, unsigned JSON number
 * s[0..n) via strtod, with '.' replaced by the C locale's decimal point. */
static ZJ_NOINLINE double slow_strtod(decoder *d, const char *s, size_t n) {
  char tmp[128], *b = tmp;
  const char *dp = localeconv()->decimal_point;
  size_t dpl, i, o = 0;
  int pushed = 0;
  double v;
  if (dp == NULL || *dp == '\0') dp = ".";
  dpl = strlen(dp);
  if (n + dpl + 1 > sizeof tmp) {
    b = (char *)lua_newuserdata(d->L, n + dpl + 1);
    pushed = 1;
  }
  for (i = 0; i < n; i++) {
    if (s[i] == '.') {
      memcpy(b + o, dp, dpl);
      o += dpl;
    } else {
      b[o++] = s[i];
    }
  }
  b[o] = '\0';
  v = strtod(b, NULL);
  if (pushed) lua_pop(d->L, 1);
  return v;
}

/* Exponents beyond this (or more than 19 significant digits) go to strtod. */
#define EXP_LIMIT 100000

static const char *number(decoder *d, const char *p) {
  const char *end = d->end, *digits;
  uint64_t m = 0; /* first 19 significant digits */
  long e = 0;     /* value = m * 10^e unless slow */
  int neg = 0, slow = 0, nd = 0;
  double v;

  if (*p == '-') {
    neg = 1;
    if (++p == end) return fail(d, E_EOF, p);
  }
  digits = p;
  if (*p == '0') {
    p++;
  } else if (ISDIGIT(*p)) {
    do {
      if (nd < 19) {
        m = m * 10 + (unsigned)(*p - '0');
        nd++;
      } else {
        slow = 1;
      }
      p++;
    } while (p < end && ISDIGIT(*p));
  } else {
    return fail(d, E_CHAR, p);
  }

  if (ZJ_LIKELY(p == end || (*p != '.' && *p != 'e' && *p != 'E'))) {
    if (!slow) { /* integer literal with at most 19 digits */
#if LUA_VERSION_NUM >= 503
      if (!neg && m <= (uint64_t)LUA_MAXINTEGER) {
        lua_pushinteger(d->L, (lua_Integer)m);
        return p;
      }
      if (neg && m <= (uint64_t)LUA_MAXINTEGER + 1) {
        lua_pushinteger(d->L, m == (uint64_t)LUA_MAXINTEGER + 1 ? LUA_MININTEGER
                                                                 : -(lua_Integer)m);
        return p;
      }
#else
      if (m == 0) neg = 0; /* "-0" is the integer 0, as on 5.3+ */
#endif
      v = (double)m; /* the exact value, correctly rounded */
      lua_pushnumber(d->L, (lua_Number)(neg ? -v : v));
      return p;
    }
  } else {
    if (*p == '.') {
      p++;
      if (p == end) return fail(d, E_EOF, p);
      if (!ISDIGIT(*p)) return fail(d, E_CHAR, p);
      do {
        unsigned dg = (unsigned)(*p - '0');
        if (nd < 19) {
          if (m != 0 || dg != 0) { /* leading zeros are not significant */
            m = m * 10 + dg;
            nd++;
          }
          if (--e < -EXP_LIMIT) slow = 1;
        } else {
          slow = 1;
        }
        p++;
      } while (p < end && ISDIGIT(*p));
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
      long ev = 0;
      int eneg = 0;
      p++;
      if (p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
      if (p == end) return fail(d, E_EOF, p);
      if (!ISDIGIT(*p)) return fail(d, E_CHAR, p);
      do {
        if (ev <= EXP_LIMIT) ev = ev * 10 + (*p - '0');
        p++;
      } while (p < end && ISDIGIT(*p));
      if (ev > EXP_LIMIT) slow = 1;
      e += eneg ? -ev : ev;
    }
  }

  if (!slow && m == 0) {
    v = 0.0;
  }
#ifdef ZJ_FAST_FLOAT
  else if (!slow && m <= (UINT64_C(1) << 53) && e >= -22 && e <= 22) {
    /* m and 10^|e| are exact doubles, so one IEEE operation rounds right */
    v = (double)m;
    v = e < 0 ? v / pow10_exact[-e] : v * pow10_exact[e];
  }
#endif
  else {
    v = slow_strtod(d, digits, (size_t)(p - digits));
  }
  lua_pushnumber(d->L, (lua_Number)(neg ? -v : v));
  return p;
}

/* ---- containers ------------------------------------------------------- */

/* Room for a container level: the table, a key, a value and one temporary.
 * Failing here is a resource error (memory, or a caller-chosen maxdepth
 * beyond the Lua stack limit), not malformed input, so raise it. */
static void grow_stack(lua_State *L) {
  if (ZJ_UNLIKELY(!lua_checkstack(L, 4)))
    luaL_error(L, "JSON decode: cannot grow the Lua stack (out of memory?)");
}

static const char *array(decoder *d, const char *p, int depth) {
  lua_State *L = d->L;
  const char *end = d->end;
  int h = depth < HINT_LEVELS ? depth : HINT_LEVELS - 1;
  arr_index n = 0;
  if (depth > d->maxdepth) return fail(d, E_DEPTH, p - 1);
  grow_stack(L);
  lua_createtable(L, d->ahint[h], 0);
  SKIPWS(p, end);
  if (p < end && *p == ']') {
    d->ahint[h] = 0;
    return p + 1;
  }
  for (;;) {
    if (p == end) return fail(d, E_EOF, p);
    p = value(d, p, depth);
    if (!p) return NULL;
    if (ZJ_UNLIKELY(n == ARR_INDEX_MAX)) return fail(d, E_ARRAY, p);
    lua_rawseti(L, -2, ++n);
    SKIPWS(p, end);
    if (p == end) return fail(d, E_EOF, p);
    if (*p == ',') {
      p++;
      SKIPWS(p, end);
      continue;
    }
    if (*p == ']') break;
    return fail(d, E_CHAR, p);
  }
  d->ahint[h] = n > HINT_MAX ? HINT_MAX : (int)n;
  return p + 1;
}

static const char *object(decoder *d, const char *p, int depth) {
  lua_State *L = d->L;
  const char *end = d->end;
  int h = depth < HINT_LEVELS ? depth : HINT_LEVELS - 1;
  int n = 0;
  if (depth > d->maxdepth) return fail(d, E_DEPTH, p - 1);
  grow_stack(L);
  lua_createtable(L, 0, d->ohint[h]);
  SKIPWS(p, end);
  if (p < end && *p == '}') {
    d->ohint[h] = 0;
    return p + 1;
  }
  for (;;) {
    if (p == end || *p != '"') return unexpected(d, p);
    p = string(d, p + 1, CACHE_KEYS);
    if (!p) return NULL;
    SKIPWS(p, end);
    if (p == end || *p != ':') return unexpected(d, p);
    p++;
    SKIPWS(p, end);
    if (p == end) return fail(d, E_EOF, p);
    p = value(d, p, depth);
    if (!p) return NULL;
    lua_rawset(L, -3);
    if (n < HINT_MAX) n++;
    SKIPWS(p, end);
    if (p == end) return fail(d, E_EOF, p);
    if (*p == ',') {
      p++;
      SKIPWS(p, end);
      continue;
    }
    if (*p == '}') break;
    return fail(d, E_CHAR, p);
  }
  d->ohint[h] = n;
  return p + 1;
}

static const char *literal(decoder *d, const char *p, const char *lit, size_t n) {
  size_t i;
  if ((size_t)(d->end - p) >= n && memcmp(p, lit, n) == 0) return p + n;
  for (i = 1; i < n; i++) {
    if (p + i == d->end) return fail(d, E_EOF, p + i);
    if (p[i] != lit[i]) break;
  }
  return fail(d, E_CHAR, p + i);
}

/* p < end and *p is not whitespace. */
static const char *value(decoder *d, const char *p, int depth) {
  switch (*p) {
    case '"':
      return string(d, p + 1, CACHE_VALUES);
    case '{':
      return object(d, p + 1, depth + 1);
    case '[':
      return array(d, p + 1, depth + 1);
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
      return number(d, p);
    case 't':
      p = literal(d, p, "true", 4);
      if (p) lua_pushboolean(d->L, 1);
      return p;
    case 'f':
      p = literal(d, p, "false", 5);
      if (p) lua_pushboolean(d->L, 0);
      return p;
    case 'n':
      p = literal(d, p, "null", 4);
      if (p) lua_pushlightuserdata(d->L, NULL);
      return p;
    default:
      return fail(d, E_CHAR, p);
  }
}

/* ---- entry point ------------------------------------------------------ */

static const char kept_key = 0; /* its address names the kept caches in the registry */
enum { KEPT_ENTRIES = 2 * CACHE_SIZE }; /* keys' and values' */

/* Push the Lua state's kept caches (made at its first small decode): a table whose array part
 * holds entry i's string at [i + 1] and, at [KEPT_ENTRIES + 1], a userdata with the entries.
 * They hold at most KEPT_ENTRIES strings of up to CACHE_MAXLEN bytes (about 40 KiB in all). */
static centry *kept_cache(lua_State *L) {
  centry *c;
  int i;
  grow_stack(L);
  lua_pushlightuserdata(L, (void *)&kept_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (ZJ_LIKELY(lua_istable(L, -1))) {
    lua_rawgeti(L, -1, KEPT_ENTRIES + 1);
    c = (centry *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    return c;
  }
  lua_pop(L, 1);
  lua_createtable(L, KEPT_ENTRIES + 1, 0);
  for (i = 1; i <= KEPT_ENTRIES; i++) {  /* every slot in the array part from the start */
    lua_pushboolean(L, 0);
    lua_rawseti(L, -2, i);
  }
  c = (centry *)lua_newuserdata(L, sizeof(centry) * KEPT_ENTRIES);
  for (i = 0; i < KEPT_ENTRIES; i++) c[i].len = (size_t)-1;
  lua_rawseti(L, -2, KEPT_ENTRIES + 1);
  lua_pushlightuserdata(L, (void *)&kept_key);
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return c;
}

static void show_char(char *o, size_t n, unsigned char c) {
  if (c >= 0x20 && c < 0x7F && c != '\'' && c != '\\')
    snprintf(o, n, "'%c'", c);
  else
    snprintf(o, n, "'\\x%02x'", c);
}

static void format_error(const decoder *d, const char *buf, char *err, size_t errlen,
                         size_t *errpos) {
  size_t pos = (size_t)(d->epos - buf) + 1;
  unsigned long upos = (unsigned long)pos;
  char c[8] = "";
  if (errpos) *errpos = pos;
  if (!err || errlen == 0) return;
  switch (d->ekind) {
    case E_CHAR:
      show_char(c, sizeof c, (unsigned char)*d->epos);
      snprintf(err, errlen, "unexpected character %s at character %lu", c, upos);
      break;
    case E_ESCAPE: {
      unsigned char e = (unsigned char)d->epos[1];
      if (e >= 0x20 && e < 0x7F)
        snprintf(err, errlen, "invalid escape '\\%c' at character %lu", e, upos);
      else
        snprintf(err, errlen, "invalid escape '\\' followed by byte 0x%02x at character %lu", e,
                 upos);
      break;
    }
    case E_UNICODE:
      snprintf(err, errlen, "invalid unicode escape at character %lu", upos);
      break;
    case E_CTRL:
      show_char(c, sizeof c, (unsigned char)*d->epos);
      snprintf(err, errlen, "unescaped control character %s in string at character %lu", c,
               upos);
      break;
    case E_DEPTH:
      snprintf(err, errlen, "too deeply nested at character %lu", upos);
      break;
    case E_ARRAY:
      snprintf(err, errlen, "array too long at character %lu", upos);
      break;
    default:
      snprintf(err, errlen, "unexpected end of input at character %lu", upos);
      break;
  }
}

int zulip_json_decode(lua_State *L, const char *buf, size_t len, int maxdepth, zulip_json_hints *hints,
                      char *err, size_t errlen, size_t *errpos) {
  decoder d;
  const char *p = buf, *end = buf + len;
  int base = lua_gettop(L), i;

  d.L = L;
  d.end = end;
  d.maxdepth = maxdepth;
  d.sbuf = d.scratch;
  d.scap = sizeof d.scratch;
  d.ekind = 0;
  d.epos = buf;
  for (i = 0; i < HINT_LEVELS; i++) {
    d.ahint[i] = hints ? hints->arr[i] : 0;
    d.ohint[i] = hints ? hints->obj[i] : 0;
  }

  grow_stack(L);
  lua_pushnil(L); /* slot for a large scratch buffer */
  d.slot = base + 1;
  d.cbase = d.ktab = 0;
  d.cache = NULL;
  if (len >= CACHE_MINDOC && lua_checkstack(L, 2 * CACHE_SIZE + 6)) {
    d.cbase = base + 2;
    d.cache = d.own;
    lua_settop(L, base + 1 + 2 * CACHE_SIZE);
    for (i = 0; i < 2 * CACHE_SIZE; i++) d.own[i].len = (size_t)-1;
  } else if (len < CACHE_MINDOC) {
    d.cache = kept_cache(L);
    d.ktab = base + 2;
  }

  SKIPWS(p, end);
  if (p == end) {
    p = fail(&d, E_EOF, p);
  } else {
    p = value(&d, p, 0);
    if (p) {
      SKIPWS(p, end);
      if (p != end) p = fail(&d, E_CHAR, p);
    }
  }
  if (!p) {
    lua_settop(L, base);
    format_error(&d, buf, err, errlen, errpos);
    return 0;
  }
  lua_replace(L, d.slot); /* result takes the scratch slot */
  lua_settop(L, base + 1); /* drop the caches */
  if (hints) {
    for (i = 0; i < HINT_LEVELS; i++) {
      hints->arr[i] = (unsigned char)(d.ahint[i] < ZULIP_JSON_HINT_KEEP ? d.ahint[i] : ZULIP_JSON_HINT_KEEP);
      hints->obj[i] = (unsigned char)(d.ohint[i] < ZULIP_JSON_HINT_KEEP ? d.ohint[i] : ZULIP_JSON_HINT_KEEP);
    }
  }
  return 1;
}
