/* trace.c: the debug trace (the client's `debug` option): curl's verbose text and the HTTP heads
 * sent and received, collected per transfer without Lua, with every occurrence of the API key and
 * of the Authorization value replaced by [redacted]. */
#include "engine.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ZTRACE_MAX (64u << 10)  /* per transfer; the rest is dropped */
static const char ztrace_redacted[] = "[redacted]";
static const char ztrace_truncated[] = "* [trace truncated]\n";

char *ztrace_base64(const char *in) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t n = strlen(in), i, o = 0;
  char *out = malloc((n + 2) / 3 * 4 + 1);
  if (out == NULL) return NULL;
  for (i = 0; i < n; i += 3) {
    unsigned long v = (unsigned long)(unsigned char)in[i] << 16;
    if (i + 1 < n) v |= (unsigned long)(unsigned char)in[i + 1] << 8;
    if (i + 2 < n) v |= (unsigned char)in[i + 2];
    out[o++] = tab[(v >> 18) & 63];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? tab[v & 63] : '=';
  }
  out[o] = 0;
  return out;
}

static int ztrace_put(zxfer *c, const char *s, size_t n) {
  if (c->trace_len + n + 1 > c->trace_cap) {
    size_t cap = c->trace_cap ? c->trace_cap : 1024;
    char *p;
    while (cap < c->trace_len + n + 1) cap *= 2;
    p = realloc(c->trace, cap);
    if (p == NULL) return -1;
    c->trace = p;
    c->trace_cap = cap;
  }
  memcpy(c->trace + c->trace_len, s, n);
  c->trace_len += n;
  c->trace[c->trace_len] = 0;
  return 0;
}

/* Appends one line with its prefix, every occurrence of a secret replaced. */
void ztrace_line(zxfer *c, char prefix, const char *line, size_t n) {
  const zsess *s = c->eng->sess;
  const char *secret[2];
  size_t slen[2], i = 0, k;
  char head[2];
  static const char auth[] = "authorization:", pauth[] = "proxy-authorization:";
  secret[0] = s->api_key;
  secret[1] = s->userpwd_b64;
  for (k = 0; k < 2; k++) slen[k] = secret[k] ? strlen(secret[k]) : 0;
  if (c->trace_full) return;
  if (c->trace_len + n + 3 > ZTRACE_MAX) {
    ztrace_put(c, ztrace_truncated, sizeof ztrace_truncated - 1);
    c->trace_full = 1;
    return;
  }
  head[0] = prefix;
  head[1] = ' ';
  if (ztrace_put(c, head, 2) != 0) return;
  if (prefix != '*') {  /* a header: keep the credentials' name and scheme, never their value */
    size_t hn = 0;
    if (n >= sizeof auth - 1 && strncasecmp(line, auth, sizeof auth - 1) == 0) hn = sizeof auth - 1;
    if (n >= sizeof pauth - 1 && strncasecmp(line, pauth, sizeof pauth - 1) == 0) hn = sizeof pauth - 1;
    if (hn > 0) {
      const char *v = line + hn, *end = line + n, *scheme;
      while (v < end && *v == ' ') v++;
      scheme = v;
      while (v < end && v - scheme < 16 && ((*v >= 'A' && *v <= 'Z') || (*v >= 'a' && *v <= 'z'))) v++;
      if (v == end || *v != ' ') v = scheme;  /* not "Scheme value": show the name only */
      ztrace_put(c, line, (size_t)(v - line));
      if (v > scheme) ztrace_put(c, " ", 1);
      ztrace_put(c, ztrace_redacted, sizeof ztrace_redacted - 1);
      ztrace_put(c, "\n", 1);
      return;
    }
  }
  while (i < n) {  /* copy up to the next secret, then the placeholder instead of it */
    size_t run = i, skip = 0;
    while (run < n) {
      for (k = 0; k < 2 && skip == 0; k++)
        if (slen[k] > 0 && n - run >= slen[k] && memcmp(line + run, secret[k], slen[k]) == 0) skip = slen[k];
      if (skip > 0) break;
      run++;
    }
    ztrace_put(c, line + i, run - i);
    if (skip > 0) ztrace_put(c, ztrace_redacted, sizeof ztrace_redacted - 1);
    i = run + skip;
  }
  ztrace_put(c, "\n", 1);
}

int ztrace_on_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *userp) {
  zxfer *c = userp;
  char prefix;
  size_t i = 0;
  (void)easy;
  if (type == CURLINFO_TEXT) prefix = '*';
  else if (type == CURLINFO_HEADER_OUT) prefix = '>';
  else if (type == CURLINFO_HEADER_IN) prefix = '<';
  else return 0;  /* bodies and TLS records are not traced */
  while (i < size) {
    size_t j = i, n;
    while (j < size && data[j] != '\n') j++;
    n = j - i;
    if (n > 0 && data[i + n - 1] == '\r') n--;
    if (n > 0) ztrace_line(c, prefix, data + i, n);
    i = j + 1;
  }
  return 0;
}

