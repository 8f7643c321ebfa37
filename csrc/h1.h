/* h1.h: HTTP/1.1 replies, parsed incrementally, with no I/O and no Lua in it.
 *
 * The transport (http.c) lets libcurl make the connection (DNS, TCP, TLS, proxy tunnels) and
 * speaks HTTP/1.1 over it itself: a Zulip client sends a handful of fixed-shape requests, and
 * libcurl's general request path cost twice a bare client's CPU per poll. This file is the
 * reply half: feed it the bytes as they come and it says when the reply is complete, with the
 * status, Retry-After, whether the connection may be reused, and the body (de-chunked, and
 * decoded from gzip, deflate or brotli). It never reads past the end of a reply. Fuzzed by fuzz/h1_fuzz.c. */
#ifndef ZULIP_H1_H
#define ZULIP_H1_H

#include <stddef.h>
#ifndef ZLIB_CONST
#define ZLIB_CONST  /* z_stream.next_in is const */
#endif
#include <zlib.h>

/* Results of zh1_feed and zh1_eof; the failures carry a message in r->err. */
enum {
  ZH1_MORE = 0,           /* needs more bytes */
  ZH1_DONE = 1,           /* the reply is complete */
  ZH1_NETWORK = -1,       /* the stream broke off or its framing is damaged (cut short, chunks) */
  ZH1_PROTOCOL = -2,      /* not an HTTP/1.x reply, or a header or body coding we cannot read */
  ZH1_TOO_LARGE = -3      /* the body passed max_body, or the headers their limits */
};

/* What the transport asks for: every coding this file decodes. */
#define ZH1_ACCEPT_ENCODING "gzip, deflate, br"

#define ZH1_MAX_LINE (100u << 10)     /* one header line */
#define ZH1_MAX_HEADERS (300u << 10)  /* all header lines of one reply */

typedef void (*zh1_line_fn)(void *ud, const char *line, size_t n);

typedef struct zh1_reply {
  /* set by the owner */
  size_t max_body;             /* larger (decoded) bodies, or Content-Lengths, fail TOO_LARGE */
  zh1_line_fn on_line;         /* optional: each status and header line, without CRLF */
  void *ud;
  /* the result */
  int status;                  /* 0 until the status line came */
  int keep_alive;              /* the connection may carry another request after this reply */
  double retry_after;          /* seconds, < 0 when absent */
  char *body;                  /* body_len bytes and a NUL; the buffer is the owner's to keep */
  size_t body_len, body_cap;
  size_t received;             /* raw bytes fed, headers included */
  char err[160];
  /* private */
  int phase, coding, chunked, minor, z_live, z_end, cl_seen;  /* z_end: the coded stream ended */
  long long remaining;         /* body or chunk bytes still to come; -1: until EOF */
  size_t head_bytes;           /* header bytes of this reply so far */
  char *line;                  /* a line split across feeds */
  size_t line_len, line_cap;
  z_stream z;                  /* gzip and deflate */
  struct BrotliDecoderStateStruct *br;  /* brotli (brotli/decode.h) */
} zh1_reply;

void zh1_init(zh1_reply *r);
/* Ready for the next reply; keeps the buffers (and max_body, on_line, ud). */
void zh1_reset(zh1_reply *r);
void zh1_free(zh1_reply *r);  /* frees the buffers; zh1_init again to reuse */
/* Feeds n bytes; *used says how many belong to this reply (all of them unless it completed). */
int zh1_feed(zh1_reply *r, const char *data, size_t n, size_t *used);
/* The connection closed: completes a reply that runs until EOF, else says what was missing. */
int zh1_eof(zh1_reply *r);

#endif
