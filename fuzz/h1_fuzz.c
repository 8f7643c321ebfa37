/* h1_fuzz.c: libFuzzer target for the HTTP/1.1 reply parser (csrc/h1.c) on its own, without
 * sockets, so it runs thousands of times faster than reply_fuzz and reaches deeper states.
 *
 * Input: byte 0 chooses max_body (bits 0-1: 64 bytes, 1 KiB, 64 KiB, 256 MiB) and seeds the
 * way the rest is cut into feeds; the rest is what the server sends.
 * Checks, beyond the sanitizers: the reply parsed in one feed and the same bytes cut into many
 * feeds (some of a single byte) give the same outcome, status, Retry-After, keep-alive and body
 * (a compressed body that is both damaged and too large may fail either way: where a decoder
 * stops depends on how much input it has);
 * the parser never claims bytes it was not given, never passes max_body, and a complete reply
 * has its body NUL-terminated. A parser reused for the next reply (zh1_reset) starts clean. */
#include "h1.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct outcome {
  int rc, status, keep_alive, coded;
  double retry_after;
  size_t consumed, body_len;
  char *body;
} outcome;

static void fail(const char *what) {
  fprintf(stderr, "h1_fuzz: %s\n", what);
  abort();
}

/* Feeds data in pieces whose sizes come from seed (0: one piece), then EOF if it wants more. */
static void run(zh1_reply *r, const uint8_t *data, size_t size, unsigned seed, outcome *out) {
  size_t pos = 0;
  int rc = ZH1_MORE;
  while (pos < size && rc == ZH1_MORE) {
    size_t n = size - pos, used = 0;
    if (seed != 0) {
      seed = seed * 1103515245u + 12345u;
      n = (seed >> 16) % 7 == 0 ? 1 : 1 + (seed >> 8) % 97;
      if (n > size - pos) n = size - pos;
    }
    rc = zh1_feed(r, (const char *)data + pos, n, &used);
    if (used > n) fail("used more bytes than it was given");
    if (rc == ZH1_MORE && used != n) fail("wants more but left bytes unused");
    pos += used;
  }
  if (rc == ZH1_MORE) rc = zh1_eof(r);
  if (r->body_len > r->max_body) fail("body past max_body");
  if (rc == ZH1_DONE && (r->body == NULL || r->body[r->body_len] != 0)) fail("complete body not NUL-terminated");
  if (rc < 0 && r->err[0] == 0) fail("a failure without a message");
  out->rc = rc;
  out->coded = r->coding != 0;
  out->status = r->status;
  out->keep_alive = r->keep_alive;
  out->retry_after = r->retry_after;
  out->consumed = pos;
  out->body_len = r->body_len;
  out->body = r->body;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t limits[4] = {64, 1024, 65536, (size_t)256 << 20};
  zh1_reply whole, cut;
  outcome a, b;
  unsigned seed;
  if (size < 1) return 0;
  seed = data[0] | 1u;
  zh1_init(&whole);
  zh1_init(&cut);
  whole.max_body = cut.max_body = limits[data[0] & 3];
  zh1_reset(&whole);
  zh1_reset(&cut);
  run(&whole, data + 1, size - 1, 0, &a);
  run(&cut, data + 1, size - 1, seed, &b);
  if ((a.rc < 0) != (b.rc < 0)) fail("success or failure differs when the bytes come in pieces");
  if (a.rc != b.rc && !(a.coded && b.coded)) fail("the failure differs when the bytes come in pieces");
  if (a.rc >= 0) {
    if (a.status != b.status || a.keep_alive != b.keep_alive || a.consumed != b.consumed)
      fail("status, keep-alive or length differs when the bytes come in pieces");
    if (a.retry_after != b.retry_after && !(a.retry_after > 0 && b.retry_after > 0))
      fail("Retry-After differs when the bytes come in pieces");  /* (an HTTP-date moves with the clock) */
    if (a.body_len != b.body_len || (a.body_len > 0 && memcmp(a.body, b.body, a.body_len) != 0))
      fail("body differs when the bytes come in pieces");
  }
  /* the next reply on the same parser starts from nothing */
  zh1_reset(&whole);
  if (whole.status != 0 || whole.body_len != 0 || whole.received != 0 || whole.retry_after >= 0)
    fail("zh1_reset left state behind");
  zh1_free(&whole);
  zh1_free(&cut);
  return 0;
}
