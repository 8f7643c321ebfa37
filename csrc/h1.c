/* h1.c: the HTTP/1.1 reply parser (see h1.h). */
#include "h1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <brotli/decode.h>
#include <curl/curl.h>  /* curl_getdate: Retry-After as an HTTP-date */

enum { P_STATUS, P_HEADERS, P_BODY, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_END, P_TRAILERS, P_DONE };
enum { CODING_NONE, CODING_ZLIB, CODING_BROTLI };  /* ZLIB: gzip and deflate (zlib tells which) */

static int zh1_fail(zh1_reply *r, int code, const char *msg) {
  snprintf(r->err, sizeof r->err, "%s", msg);
  return code;
}

void zh1_init(zh1_reply *r) {
  memset(r, 0, sizeof *r);
  r->retry_after = -1;
  r->remaining = -1;
}

static void zh1_end_decoders(zh1_reply *r) {
  if (r->z_live) inflateEnd(&r->z);
  r->z_live = 0;
  if (r->br != NULL) BrotliDecoderDestroyInstance(r->br);
  r->br = NULL;
}

void zh1_reset(zh1_reply *r) {
  zh1_end_decoders(r);
  r->status = 0;
  r->keep_alive = 0;
  r->retry_after = -1;
  r->body_len = 0;
  r->received = 0;
  r->err[0] = 0;
  r->phase = P_STATUS;
  r->coding = CODING_NONE;
  r->chunked = r->minor = r->z_end = r->cl_seen = 0;
  r->remaining = -1;
  r->head_bytes = 0;
  r->line_len = 0;
}

void zh1_free(zh1_reply *r) {
  zh1_end_decoders(r);
  free(r->body);
  free(r->line);
  r->body = r->line = NULL;
  r->body_len = r->body_cap = r->line_len = r->line_cap = 0;
}

/* ---- the body ---- */

static int zh1_too_large(zh1_reply *r) {
  snprintf(r->err, sizeof r->err, "reply larger than max_reply_bytes (%zu bytes)", r->max_body);
  return ZH1_TOO_LARGE;
}

/* Room for at least `more` bytes and the closing NUL, within max_body. */
static int zh1_reserve(zh1_reply *r, size_t more) {
  size_t need, cap;
  char *p;
  if (more > r->max_body - r->body_len) return zh1_too_large(r);
  need = r->body_len + more + 1;
  if (need <= r->body_cap) return 0;
  cap = r->body_cap ? r->body_cap : 16384;
  while (cap < need) cap *= 2;
  p = realloc(r->body, cap);
  if (p == NULL) return zh1_fail(r, ZH1_TOO_LARGE, "out of memory for the reply body");
  r->body = p;
  r->body_cap = cap;
  return 0;
}

/* Room for a decoder's output: at least 4 KiB more (doubling, so that a large body costs
 * log(n) reallocations), never past max_body. Returns 0 with *room > 0, or a failure. */
static int zh1_out_room(zh1_reply *r, size_t *room) {
  size_t left = r->max_body - r->body_len, have;
  int rc;
  if (left == 0) return zh1_too_large(r);
  have = r->body_cap > r->body_len + 1 ? r->body_cap - r->body_len - 1 : 0;
  if (have < 4096 && have < left) {
    size_t want = r->body_len > 16384 ? r->body_len : 16384;
    if (want > left) want = left;
    if ((rc = zh1_reserve(r, want)) != 0) return rc;
    have = r->body_cap - r->body_len - 1;
  }
  if (have > left) have = left;
  if (have > 0x40000000u) have = 0x40000000u;  /* zlib counts in uInt */
  *room = have;
  return 0;
}

static int zh1_inflate(zh1_reply *r, const char *data, size_t n) {
  if (!r->z_live) {
    memset(&r->z, 0, sizeof r->z);
    if (inflateInit2(&r->z, 15 + 32) != Z_OK)  /* 32: a gzip or a zlib header, whichever comes */
      return zh1_fail(r, ZH1_PROTOCOL, "cannot start inflating the reply");
    r->z_live = 1;
  }
  r->z.next_in = (const Bytef *)data;
  r->z.avail_in = (uInt)n;
  while (r->z.avail_in > 0 && !r->z_end) {
    size_t room;
    int zrc, rc;
    if ((rc = zh1_out_room(r, &room)) != 0) return rc;
    r->z.next_out = (Bytef *)r->body + r->body_len;
    r->z.avail_out = (uInt)room;
    zrc = inflate(&r->z, Z_NO_FLUSH);
    r->body_len = (size_t)((char *)r->z.next_out - r->body);
    if (zrc == Z_STREAM_END) {
      r->z_end = 1;  /* bytes after the end of the stream are ignored */
    } else if (zrc != Z_OK && zrc != Z_BUF_ERROR) {
      snprintf(r->err, sizeof r->err, "the reply's gzip data is damaged (%s)", r->z.msg ? r->z.msg : "zlib error");
      return ZH1_PROTOCOL;
    } else if (zrc == Z_BUF_ERROR && r->z.avail_out > 0) {
      return zh1_fail(r, ZH1_PROTOCOL, "the reply's gzip data is damaged");  /* no progress */
    }
  }
  return 0;
}

static int zh1_unbrotli(zh1_reply *r, const char *data, size_t n) {
  const uint8_t *in = (const uint8_t *)data;
  size_t avail_in = n;
  if (r->br == NULL && (r->br = BrotliDecoderCreateInstance(NULL, NULL, NULL)) == NULL)
    return zh1_fail(r, ZH1_PROTOCOL, "cannot start decoding the reply's brotli data");
  while (!r->z_end) {
    size_t room;
    uint8_t *out;
    int rc;
    BrotliDecoderResult res;
    if ((rc = zh1_out_room(r, &room)) != 0) return rc;
    out = (uint8_t *)r->body + r->body_len;
    res = BrotliDecoderDecompressStream(r->br, &avail_in, &in, &room, &out, NULL);
    r->body_len = (size_t)((char *)out - r->body);
    if (res == BROTLI_DECODER_RESULT_SUCCESS) r->z_end = 1;  /* the rest is ignored */
    else if (res == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT) break;
    else if (res == BROTLI_DECODER_RESULT_ERROR) {
      snprintf(r->err, sizeof r->err, "the reply's brotli data is damaged (%s)",
               BrotliDecoderErrorString(BrotliDecoderGetErrorCode(r->br)));
      return ZH1_PROTOCOL;
    }
  }
  return 0;
}

static int zh1_body(zh1_reply *r, const char *data, size_t n) {
  int rc;
  if (n == 0) return 0;
  if (r->coding == CODING_ZLIB) return zh1_inflate(r, data, n);
  if (r->coding == CODING_BROTLI) return zh1_unbrotli(r, data, n);
  if ((rc = zh1_reserve(r, n)) != 0) return rc;
  memcpy(r->body + r->body_len, data, n);
  r->body_len += n;
  return 0;
}

static int zh1_body_done(zh1_reply *r) {
  int rc;
  if ((r->z_live || r->br != NULL) && !r->z_end)
    return zh1_fail(r, ZH1_PROTOCOL, "the reply's compressed data is cut short");
  zh1_end_decoders(r);
  if ((rc = zh1_reserve(r, 0)) != 0) return rc;
  r->body[r->body_len] = 0;
  r->phase = P_DONE;
  return ZH1_DONE;
}

/* ---- the head ---- */

static int zh1_token_is(const char *v, size_t n, const char *word) {
  size_t w = strlen(word);
  return n == w && strncasecmp(v, word, w) == 0;
}

/* Calls fn on each comma-separated token of a header value, trimmed; stops at a non-zero. */
static int zh1_each_token(zh1_reply *r, const char *v, size_t n,
                          int (*fn)(zh1_reply *, const char *, size_t)) {
  size_t i = 0;
  while (i < n) {
    size_t s, e;
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    s = i;
    while (i < n && v[i] != ',') i++;
    e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
    if (e > s) {
      int rc = fn(r, v + s, e - s);
      if (rc != 0) return rc;
    }
  }
  return 0;
}

static int zh1_on_transfer_coding(zh1_reply *r, const char *t, size_t n) {
  if (zh1_token_is(t, n, "chunked")) r->chunked = 1;
  else if (!zh1_token_is(t, n, "identity")) {
    snprintf(r->err, sizeof r->err, "unsupported Transfer-Encoding in the reply: %.*s", (int)(n > 40 ? 40 : n), t);
    return ZH1_PROTOCOL;
  }
  return 0;
}

static int zh1_on_content_coding(zh1_reply *r, const char *t, size_t n) {
  if (zh1_token_is(t, n, "identity")) return 0;
  if (r->coding == CODING_NONE) {
    if (zh1_token_is(t, n, "gzip") || zh1_token_is(t, n, "x-gzip") || zh1_token_is(t, n, "deflate")) {
      r->coding = CODING_ZLIB;
      return 0;
    }
    if (zh1_token_is(t, n, "br")) {
      r->coding = CODING_BROTLI;
      return 0;
    }
  }
  snprintf(r->err, sizeof r->err, "unsupported Content-Encoding in the reply: %.*s", (int)(n > 40 ? 40 : n), t);
  return ZH1_PROTOCOL;
}

static int zh1_on_connection(zh1_reply *r, const char *t, size_t n) {
  if (zh1_token_is(t, n, "close")) r->keep_alive = 0;
  else if (zh1_token_is(t, n, "keep-alive") && r->minor == 0) r->keep_alive = 1;
  return 0;
}

static int zh1_content_length(zh1_reply *r, const char *v, size_t n) {
  long long len = 0;
  size_t i;
  if (n == 0) return zh1_fail(r, ZH1_PROTOCOL, "the reply's Content-Length is empty");
  for (i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') {
      snprintf(r->err, sizeof r->err, "the reply's Content-Length is not a number: %.*s", (int)(n > 40 ? 40 : n), v);
      return ZH1_PROTOCOL;
    }
    if (len > ((long long)1 << 53)) return zh1_too_large(r);  /* no real body is that long */
    len = len * 10 + (v[i] - '0');
  }
  if (r->cl_seen && len != r->remaining)
    return zh1_fail(r, ZH1_PROTOCOL, "the reply has two different Content-Lengths");
  if ((unsigned long long)len > (unsigned long long)r->max_body) return zh1_too_large(r);  /* before the body comes */
  r->cl_seen = 1;
  r->remaining = len;
  return 0;
}

static void zh1_retry_after(zh1_reply *r, const char *v, size_t n) {
  char value[64];
  char *end;
  double secs;
  if (n >= sizeof value) n = sizeof value - 1;
  memcpy(value, v, n);
  value[n] = 0;
  secs = strtod(value, &end);
  if (end != value && *end == 0 && secs >= 0 && secs < 1e9) {
    r->retry_after = secs;
  } else {
    time_t when = curl_getdate(value, NULL);  /* the HTTP-date form */
    if (when != -1) {
      double d = difftime(when, time(NULL));
      r->retry_after = d > 0 ? d : 0;
    }
  }
}

static int zh1_status_line(zh1_reply *r, const char *s, size_t n) {
  int status;
  if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ') {
    snprintf(r->err, sizeof r->err, "unsupported reply status line: %.*s", (int)(n > 40 ? 40 : n), s);
    return ZH1_PROTOCOL;
  }
  if (s[9] < '0' || s[9] > '9' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9' ||
      (n > 12 && s[12] != ' ') || s[9] == '0') {
    snprintf(r->err, sizeof r->err, "bad status in the reply: %.*s", (int)(n > 40 ? 40 : n), s);
    return ZH1_PROTOCOL;
  }
  status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
  r->minor = s[7] - '0';
  r->status = status;
  r->keep_alive = r->minor >= 1;
  r->phase = P_HEADERS;
  return 0;
}

static int zh1_header_line(zh1_reply *r, const char *s, size_t n) {
  const char *colon, *v, *end;
  size_t nl;
  if (memchr(s, 0, n) != NULL) return zh1_fail(r, ZH1_PROTOCOL, "a NUL byte in a reply header");
  if (s[0] == ' ' || s[0] == '\t') return 0;  /* an obsolete folded continuation: nothing we read */
  colon = memchr(s, ':', n);
  if (colon == NULL) return 0;
  nl = (size_t)(colon - s);
  v = colon + 1;
  end = s + n;
  while (v < end && (*v == ' ' || *v == '\t')) v++;
  while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
  switch (nl) {
    case 10:
      if (strncasecmp(s, "connection", 10) == 0) return zh1_each_token(r, v, (size_t)(end - v), zh1_on_connection);
      break;
    case 11:
      if (strncasecmp(s, "retry-after", 11) == 0) zh1_retry_after(r, v, (size_t)(end - v));
      break;
    case 14:
      if (strncasecmp(s, "content-length", 14) == 0) return zh1_content_length(r, v, (size_t)(end - v));
      break;
    case 16:
      if (strncasecmp(s, "content-encoding", 16) == 0)
        return zh1_each_token(r, v, (size_t)(end - v), zh1_on_content_coding);
      break;
    case 17:
      if (strncasecmp(s, "transfer-encoding", 17) == 0)
        return zh1_each_token(r, v, (size_t)(end - v), zh1_on_transfer_coding);
      break;
    default:
      break;
  }
  return 0;
}

/* The blank line after the headers: what follows, and how it ends. */
static int zh1_head_done(zh1_reply *r) {
  if (r->status < 200) {
    if (r->status == 101) return zh1_fail(r, ZH1_PROTOCOL, "the server switched protocols (101)");
    /* an interim reply (100 Continue, 103): the real one follows */
    r->phase = P_STATUS;
    r->coding = CODING_NONE;
    r->chunked = r->cl_seen = 0;
    r->remaining = -1;
    r->retry_after = -1;
    return 0;
  }
  if (r->status == 204 || r->status == 304) return zh1_body_done(r);
  if (r->chunked) {
    if (r->cl_seen) r->keep_alive = 0;  /* both framings: a smuggling attempt or a broken proxy */
    r->phase = P_CHUNK_SIZE;
    return 0;
  }
  r->phase = P_BODY;
  if (!r->cl_seen) {
    r->keep_alive = 0;  /* the body runs until the server closes */
    r->remaining = -1;
    return 0;
  }
  if (r->remaining == 0) return zh1_body_done(r);
  return 0;
}

static int zh1_chunk_size(zh1_reply *r, const char *s, size_t n) {
  long long size = 0;
  size_t i = 0;
  while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
  if (i == n) return zh1_fail(r, ZH1_NETWORK, "bad chunk size in the reply");
  for (; i < n; i++) {
    int d;
    char ch = s[i];
    if (ch >= '0' && ch <= '9') d = ch - '0';
    else if (ch >= 'a' && ch <= 'f') d = ch - 'a' + 10;
    else if (ch >= 'A' && ch <= 'F') d = ch - 'A' + 10;
    else if (ch == ';' || ch == ' ' || ch == '\t') break;  /* chunk extensions are ignored */
    else return zh1_fail(r, ZH1_NETWORK, "bad chunk size in the reply");
    if (size > ((long long)1 << 55)) return zh1_fail(r, ZH1_NETWORK, "bad chunk size in the reply (too large)");
    size = size * 16 + d;
  }
  if (i == 0 || (i < n && s[0] == ';')) return zh1_fail(r, ZH1_NETWORK, "bad chunk size in the reply");
  if (size == 0) {
    r->phase = P_TRAILERS;
  } else {
    r->remaining = size;
    r->phase = P_CHUNK_DATA;
  }
  return 0;
}

/* One complete line (CR and LF removed) in the current phase. */
static int zh1_line(zh1_reply *r, const char *s, size_t n) {
  switch (r->phase) {
    case P_STATUS:
      if (r->on_line) r->on_line(r->ud, s, n);
      return zh1_status_line(r, s, n);
    case P_HEADERS:
      if (n == 0) return zh1_head_done(r);
      if (r->on_line) r->on_line(r->ud, s, n);
      return zh1_header_line(r, s, n);
    case P_CHUNK_SIZE:
      return zh1_chunk_size(r, s, n);
    case P_CHUNK_END:
      if (n != 0) return zh1_fail(r, ZH1_NETWORK, "bad chunk terminator in the reply");
      r->phase = P_CHUNK_SIZE;
      return 0;
    case P_TRAILERS:
      if (n == 0) return zh1_body_done(r);
      return 0;
    default:
      return zh1_fail(r, ZH1_PROTOCOL, "internal: a line in the body");
  }
}

/* Consumes up to and including the next LF, joining with a partial line kept from earlier
 * feeds. Returns 1 with the line, 0 when the data ended first (kept for the next feed), or a
 * failure. Every line of the head counts towards ZH1_MAX_HEADERS. */
static int zh1_take_line(zh1_reply *r, const char *data, size_t n, size_t *pos,
                         const char **line, size_t *len) {
  const char *start = data + *pos, *lf;
  size_t avail = n - *pos, take;
  lf = memchr(start, '\n', avail);
  take = lf ? (size_t)(lf - start) + 1 : avail;
  if (r->phase <= P_HEADERS || r->phase == P_TRAILERS) {
    r->head_bytes += take;
    if (r->head_bytes > ZH1_MAX_HEADERS) return zh1_fail(r, ZH1_TOO_LARGE, "reply headers larger than 300 KB");
  }
  if (r->line_len + take > ZH1_MAX_LINE) return zh1_fail(r, ZH1_TOO_LARGE, "a reply header line longer than 100 KB");
  *pos += take;
  if (lf != NULL && r->line_len == 0) {  /* the common case: the whole line is in this feed */
    *line = start;
    *len = take - 1;
  } else {
    if (r->line_len + take > r->line_cap) {
      size_t cap = r->line_cap ? r->line_cap : 256;
      char *p;
      while (cap < r->line_len + take) cap *= 2;
      p = realloc(r->line, cap);
      if (p == NULL) return zh1_fail(r, ZH1_TOO_LARGE, "out of memory for a reply header");
      r->line = p;
      r->line_cap = cap;
    }
    memcpy(r->line + r->line_len, start, take);
    r->line_len += take;
    if (lf == NULL) return 0;
    *line = r->line;
    *len = r->line_len - 1;
    r->line_len = 0;  /* the caller uses the line before the next take */
  }
  if (*len > 0 && (*line)[*len - 1] == '\r') (*len)--;
  return 1;
}

int zh1_feed(zh1_reply *r, const char *data, size_t n, size_t *used) {
  size_t pos = 0;
  int rc = ZH1_MORE;
  r->received += n;
  while (rc == ZH1_MORE && pos < n) {
    if (r->phase == P_STATUS && r->line_len < 5) {
      /* say at once when this is not HTTP/1.x, rather than wait for a line that never ends */
      size_t i, k = r->line_len;
      for (i = pos; i < n && k < 5; i++, k++) {
        if (data[i] != "HTTP/"[k]) {
          rc = zh1_fail(r, ZH1_PROTOCOL, "the reply is not HTTP/1.x (HTTP/0.9 or garbage)");
          break;
        }
      }
      if (rc != ZH1_MORE) break;
    }
    if (r->phase == P_BODY || r->phase == P_CHUNK_DATA) {
      size_t take = n - pos;
      if (r->remaining >= 0 && (unsigned long long)take > (unsigned long long)r->remaining) take = (size_t)r->remaining;
      if ((rc = zh1_body(r, data + pos, take)) != 0) break;
      pos += take;
      if (r->remaining >= 0) {
        r->remaining -= (long long)take;
        if (r->remaining == 0) {
          if (r->phase == P_CHUNK_DATA) r->phase = P_CHUNK_END;
          else rc = zh1_body_done(r);
        }
      }
    } else {
      const char *line;
      size_t len;
      int got = zh1_take_line(r, data, n, &pos, &line, &len);
      if (got < 0) { rc = got; break; }
      if (got == 0) break;
      rc = zh1_line(r, line, len);
    }
  }
  if (used != NULL) *used = pos;
  if (rc == ZH1_MORE && r->phase == P_DONE) rc = ZH1_DONE;
  if (rc < 0) r->keep_alive = 0;
  return rc;
}

int zh1_eof(zh1_reply *r) {
  r->keep_alive = 0;
  switch (r->phase) {
    case P_DONE:
      return ZH1_DONE;
    case P_BODY:
      if (r->remaining < 0) return zh1_body_done(r);
      snprintf(r->err, sizeof r->err, "the connection closed with %lld bytes of the reply remaining", r->remaining);
      return ZH1_NETWORK;
    case P_STATUS:
      if (r->received == 0) return zh1_fail(r, ZH1_NETWORK, "the server closed the connection without replying");
      return zh1_fail(r, ZH1_NETWORK, "the connection closed in the reply's status line");
    case P_HEADERS:
      return zh1_fail(r, ZH1_NETWORK, "the connection closed in the reply's headers");
    default:
      return zh1_fail(r, ZH1_NETWORK, "the connection closed in the middle of a chunked reply");
  }
}
