/* xfer.c: one request at a time on an easy handle of an engine (see engine.h). The handle and
 * its options are made once and reused, so a poll costs only what changes (URL, method, body). */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#define ZXFER_SMALL_BUFFER (1u << 20)      /* keep at most this much reply buffer between requests */
#define ZXFER_MAX_HEADERS (300u << 10)     /* a reply's headers, all together */

/* A character that would break the request line: a control character or a space. */
static int zxfer_unsendable(const char *p) {
  for (; *p; p++)
    if ((unsigned char)*p <= 0x20 || *p == 0x7f) return 1;
  return 0;
}

/* Seconds as Retry-After gives them ("120", "0.5"), independent of the C locale (strtod follows
 * LC_NUMERIC, which a host may have set); else the HTTP-date form. < 0 when neither. */
static double zxfer_seconds(const char *v, size_t n) {
  char value[64];
  double mant = 0, scale = 1, secs;
  size_t i = 0;
  int digits = 0;
  time_t when;
  while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n')) n--;
  /* digits into an exact integer mantissa, then one division: "0.75" is 75 / 100, as strtod makes it */
  for (; i < n && v[i] >= '0' && v[i] <= '9' && digits < 15; i++, digits++) mant = mant * 10 + (v[i] - '0');
  if (i < n && v[i] == '.' && digits > 0)
    for (i++; i < n && v[i] >= '0' && v[i] <= '9'; i++)
      if (digits < 15) mant = mant * 10 + (v[i] - '0'), scale *= 10, digits++;
  if (digits > 0 && i == n) return mant / scale;
  if (n >= sizeof value) return -1;
  memcpy(value, v, n);
  value[n] = 0;
  when = curl_getdate(value, NULL);
  if (when == -1) return -1;
  secs = difftime(when, time(NULL));
  return secs > 0 ? secs : 0;
}

/* ---- curl's callbacks for one transfer: they only record, never call into Lua ---- */

static void zxfer_started(zxfer *x) {
  if (x->window_start_ms < 0) {
    x->window_start_ms = zpoll_now_ms();
    x->window_bytes = x->received;
  }
}

static size_t zxfer_on_body(char *data, size_t size, size_t nmemb, void *userp) {
  zxfer *x = userp;
  size_t n = size * nmemb;
  zxfer_started(x);
  x->received += n;
  if (x->body_len + n > x->eng->sess->max_reply_bytes) {
    x->too_large = 1;
    return 0;  /* curl stops the transfer (CURLE_WRITE_ERROR) */
  }
  if (x->body_len + n + 1 > x->body_cap) {
    size_t cap = x->body_cap ? x->body_cap : 4096;
    char *p;
    while (cap < x->body_len + n + 1) cap *= 2;
    p = realloc(x->body, cap);
    if (p == NULL) return 0;
    x->body = p;
    x->body_cap = cap;
  }
  memcpy(x->body + x->body_len, data, n);
  x->body_len += n;
  x->body[x->body_len] = 0;
  return n;
}

static size_t zxfer_on_header(char *data, size_t size, size_t nmemb, void *userp) {
  zxfer *x = userp;
  size_t n = size * nmemb;
  zxfer_started(x);
  x->received += n;
  if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {  /* a new reply: an interim 1xx came before */
    x->header_bytes = 0;
    x->retry_after = -1;
  }
  x->header_bytes += n;
  if (x->header_bytes > ZXFER_MAX_HEADERS) {
    x->too_large = 2;
    return 0;
  }
  if (n > 12 && strncasecmp(data, "retry-after:", 12) == 0) {
    const char *v = data + 12;
    size_t vn = n - 12;
    while (vn > 0 && (*v == ' ' || *v == '\t')) v++, vn--;
    x->retry_after = zxfer_seconds(v, vn);
  }
  return n;
}

/* curl's own socket opener, plus close-on-exec and a note of why socket() failed: curl reports
 * running out of file descriptors as a plain "Couldn't connect to server". */
static curl_socket_t zxfer_on_opensocket(void *userp, curlsocktype purpose, struct curl_sockaddr *addr) {
  zxfer *x = userp;
  curl_socket_t fd;
  (void)purpose;
  fd = socket(addr->family, addr->socktype, addr->protocol);
  if (fd == CURL_SOCKET_BAD) {
    x->socket_errno = errno;
    return fd;
  }
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  if (x->eng->poll != NULL) zpoll_own(x->eng->poll, (int)fd);  /* its close comes below */
  return fd;
}

/* curl closes what zxfer_on_opensocket opened here, with the engine (which outlives its
 * connections: they close in curl_multi_cleanup) as userp, not a transfer (which may not). */
static int zxfer_on_closesocket(void *userp, curl_socket_t fd) {
  zeng *e = userp;
  if (e->poll != NULL) zpoll_forget(e->poll, (int)fd);
  return close(fd);
}

/* ---- transfers ---- */

zxfer *zxfer_new(zeng *e, char *err, size_t errlen) {
  zsess *s = e->sess;
  zxfer *x;
  CURL *h;
  if (e->closed) {
    snprintf(err, errlen, "the client is closed");
    return NULL;
  }
  x = calloc(1, sizeof *x);
  if (x == NULL || (h = curl_easy_init()) == NULL) {
    free(x);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  x->refs = 1;
  x->easy = h;
  x->retry_after = -1;
  x->window_start_ms = x->connect_due_ms = -1;
  e->refs++;
  x->eng = e;
  curl_easy_setopt(h, CURLOPT_PRIVATE, (char *)x);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, zxfer_on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, zxfer_on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, zxfer_on_opensocket);
  curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, x);
  curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, zxfer_on_closesocket);
  curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, e);
  /* the URL names the server only; each request's path and query go as its request target
   * (zxfer_start), which libcurl copies as it is: parsing a URL per request and putting its query
   * through libcurl's printf, a byte at a time, cost a quarter of its request path */
  curl_easy_setopt(h, CURLOPT_URL, s->base_url);  /* for a libcurl without CURLOPT_CURLU, or a site
                                                   * it could not parse (it says why per request) */
#if ZSESS_CURLU
  if (s->url != NULL) curl_easy_setopt(h, CURLOPT_CURLU, s->url);  /* parsed once (zsess_set_site) */
#endif
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);  /* credentials never go to another host */
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);   /* notices a half-open connection */
  curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 10L);
  curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);        /* share an HTTP/2 connection rather than open more */
  curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, ""); /* decode them (the header is one of s->headers) */
  /* Authorization, User-Agent, Accept-Encoding, made once (zsess_headers); to the server only:
   * a proxy's CONNECT gets none of them */
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, s->headers);
  curl_easy_setopt(h, CURLOPT_HEADEROPT, (long)CURLHEADER_SEPARATE);
  curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)s->max_reply_bytes);  /* by Content-Length */
  if (s->cert_bundle) curl_easy_setopt(h, CURLOPT_CAINFO, s->cert_bundle);
  if (s->client_cert) curl_easy_setopt(h, CURLOPT_SSLCERT, s->client_cert);
  if (s->client_key) curl_easy_setopt(h, CURLOPT_SSLKEY, s->client_key);
  /* both always set: left unset, libcurl reads the proxy variables of the environment for every
   * request (the Lua layer has read them once, lua/zulip/config.lua); "" is none */
  curl_easy_setopt(h, CURLOPT_PROXY, s->proxy ? s->proxy : "");
  curl_easy_setopt(h, CURLOPT_NOPROXY, s->no_proxy ? s->no_proxy : "");
  /* through any HTTP proxy, the option's or the environment's (https_proxy, ...): a CONNECT
   * tunnel, so the proxy never sees the Authorization header */
  curl_easy_setopt(h, CURLOPT_HTTPPROXYTUNNEL, 1L);
  curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);  /* the tunnel's reply is not the reply */
  if (s->insecure) {
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (s->debug) {
    curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, ztrace_on_debug);
    curl_easy_setopt(h, CURLOPT_DEBUGDATA, x);
    curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
  }
  return x;
}

static void zxfer_unlink(zxfer *x) {
  zeng *e = x->eng;
  e->due_stale = 1;
  if (x->state == ZXFER_RUNNING) {
    if (e->multi != NULL) curl_multi_remove_handle(e->multi, x->easy);
    if (x->prev) x->prev->next = x->next; else e->running = x->next;
    if (x->next) x->next->prev = x->prev;
    x->prev = x->next = NULL;
  } else if (x->state == ZXFER_DONE) {
    zxfer **p = &e->done, *prev = NULL;
    while (*p != NULL && *p != x) prev = *p, p = &(*p)->next_done;
    if (*p == x) *p = x->next_done;
    if (e->done_tail == x) e->done_tail = prev;
    x->next_done = NULL;
  }
}

void zxfer_cancel(zxfer *x) {
  if (x->state == ZXFER_IDLE) return;
  zxfer_unlink(x);
  x->state = ZXFER_IDLE;
  if (x->detached) x->refs--;  /* its own reference: nobody else holds a detached transfer */
  zxfer_release(x);            /* and the engine's */
}

int zxfer_detached(zeng *e, const char *method, const char *path_query, long timeout_ms, char *err, size_t errlen) {
  zxfer *x = zxfer_new(e, err, errlen);
  if (x == NULL) return -1;
  if (zxfer_start(x, method, path_query, NULL, 0, timeout_ms) != 0) {
    snprintf(err, errlen, "%s", x->errbuf);
    zxfer_release(x);
    return -1;
  }
  x->detached = 1;
  return 0;
}

void zxfer_release(zxfer *x) {
  if (x == NULL || --x->refs > 0) return;
  curl_easy_cleanup(x->easy);
  free(x->target);
  free(x->body);
  free(x->trace);
  zeng_release(x->eng);
  free(x);
}

static const char *zxfer_code(CURLcode rc, const char *errbuf) {
  /* a TLS alert from the server after the handshake: TLS 1.3 refuses a client certificate so */
  if ((rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR) && strstr(errbuf, " alert ") != NULL) return "TLS";
  if (rc == CURLE_RECV_ERROR && strncmp(errbuf, "Too large response headers", 26) == 0) return "TOO_LARGE";
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return "TIMEOUT";
    case CURLE_FILESIZE_EXCEEDED: return "TOO_LARGE";
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_USE_SSL_FAILED:
      return "TLS";
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_RANGE_ERROR:
      return "PROTOCOL";
    default:
      return "NETWORK";
  }
}

/* Whether any byte of the request went out (after any proxy tunnel and TLS handshake: the
 * connection is made). */
static int zxfer_request_out(const zxfer *x) {
  long n = 0;
  curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &n);
  return n > 0;
}

/* Moves a running transfer that this code ended (not curl) to done. */
static void zxfer_end(zxfer *x) {
  zeng *e = x->eng;
  x->status = 0;
  zxfer_unlink(x);
  x->state = ZXFER_DONE;
  if (e->done_tail) e->done_tail->next_done = x; else e->done = x;
  e->done_tail = x;
}

void zxfer_finish(zxfer *x, CURLcode rc) {
  zeng *e = x->eng;
  long status = 0;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
  x->status = status;
  x->sent = zxfer_request_out(x);
  if (rc == CURLE_OK && status > 0) {
    x->fail = NULL;
    e->curl_connects = 0;
  } else if (x->too_large) {
    x->fail = "TOO_LARGE";
    if (x->too_large == 2)
      snprintf(x->errbuf, sizeof x->errbuf, "the reply's headers are over %u KiB", ZXFER_MAX_HEADERS >> 10);
    else
      snprintf(x->errbuf, sizeof x->errbuf, "reply larger than max_reply_bytes (%zu bytes, after decompression)",
               e->sess->max_reply_bytes);
  } else {
    if (rc == CURLE_OK) rc = CURLE_GOT_NOTHING;
    if (rc == CURLE_FILESIZE_EXCEEDED)
      snprintf(x->errbuf, sizeof x->errbuf, "reply larger than max_reply_bytes (%zu bytes)", e->sess->max_reply_bytes);
    else if (rc == CURLE_OUT_OF_MEMORY && x->body_len == 0)  /* curl refuses a header line over 100 KiB so */
      snprintf(x->errbuf, sizeof x->errbuf, "a reply header line is over libcurl's limit (100 KiB)");
    else if (rc == CURLE_COULDNT_CONNECT && (x->socket_errno == EMFILE || x->socket_errno == ENFILE))
      snprintf(x->errbuf, sizeof x->errbuf, "cannot open a socket: out of file descriptors (%s): "
               "raise the open-files limit (ulimit -n, RLIMIT_NOFILE) or close queues",
               strerror(x->socket_errno));
    else if (x->errbuf[0] == 0)
      snprintf(x->errbuf, sizeof x->errbuf, "%s", curl_easy_strerror(rc));
    x->fail = rc == CURLE_OUT_OF_MEMORY && x->body_len == 0 ? "TOO_LARGE" : zxfer_code(rc, x->errbuf);
    if (rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_COULDNT_CONNECT)
      x->sent = 0;
  }
  zxfer_unlink(x);
  x->state = ZXFER_DONE;
  if (e->done_tail) e->done_tail->next_done = x; else e->done = x;
  e->done_tail = x;
}

/* When the low-speed window of a started reply ends, -1: none. */
static long long zxfer_window_due(const zxfer *x) {
  const zsess *s = x->eng->sess;
  if (x->window_start_ms < 0 || s->low_speed_limit <= 0 || s->low_speed_time <= 0) return -1;
  return x->window_start_ms + (long long)s->low_speed_time * 1000;
}

long long zxfer_due_ms(const zxfer *x) {
  long long window;
  if (x->state != ZXFER_RUNNING) return -1;
  window = zxfer_window_due(x);
  if (x->connect_due_ms < 0) return window;
  return window < 0 || x->connect_due_ms < window ? x->connect_due_ms : window;
}

void zxfer_check(zxfer *x, long long now) {
  const zsess *s = x->eng->sess;
  long long window;
  if (x->connect_due_ms >= 0) {
    if (zxfer_request_out(x)) {
      x->connect_due_ms = -1;
    } else if (x->connect_due_ms <= now) {
      snprintf(x->errbuf, sizeof x->errbuf, "no connection within connect_timeout (%ld ms)",
               s->connect_timeout_ms);
      x->fail = "TIMEOUT";
      x->sent = 0;
      x->eng->curl_connects = 1;
      zxfer_end(x);
      return;
    }
  }
  window = zxfer_window_due(x);
  if (window < 0 || window > now) return;
  if (x->received - x->window_bytes < (size_t)s->low_speed_limit * (size_t)s->low_speed_time) {
    snprintf(x->errbuf, sizeof x->errbuf, "reply slower than %ld bytes/s over %ld s",
             s->low_speed_limit, s->low_speed_time);
    x->fail = "TIMEOUT";
    x->sent = 1;
    zxfer_end(x);
    return;
  }
  x->window_start_ms = now;
  x->window_bytes = x->received;
}

int zxfer_start(zxfer *x, const char *method, const char *path_query, const char *body, size_t body_len,
                long timeout_ms) {
  zeng *e = x->eng;
  zsess *s = e->sess;
  CURL *h = x->easy;
  size_t bl = strlen(s->site_path), pl = strlen(path_query);
  int has_body = strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0;
  char *target;
  CURLMcode mrc;
  if (x->state != ZXFER_IDLE) {  /* a restart: the engine's reference goes, the caller's stays */
    zxfer_unlink(x);
    x->state = ZXFER_IDLE;
    x->refs--;
  }
  x->errbuf[0] = 0;
  x->fail = NULL;
  x->status = 0;
  x->retry_after = -1;
  x->too_large = x->socket_errno = x->sent = 0;
  x->body_len = x->header_bytes = x->received = x->window_bytes = 0;
  x->window_start_ms = -1;
  x->trace_len = 0;
  x->trace_full = 0;
  if (e->closed) {
    snprintf(x->errbuf, sizeof x->errbuf, "the client is closed");
    return -1;
  }
  if (!has_body && strcmp(method, "GET") != 0 && strcmp(method, "DELETE") != 0) {
    snprintf(x->errbuf, sizeof x->errbuf, "unknown method");
    return -1;
  }
  if (path_query[0] != '/' || zxfer_unsendable(path_query)) {
    snprintf(x->errbuf, sizeof x->errbuf, "the request path has a character HTTP cannot carry (a space or a control character)");
    return -1;
  }
  if (x->body_cap > ZXFER_SMALL_BUFFER) {  /* don't hold a 50 MB register reply for ever */
    free(x->body);
    x->body = NULL;
    x->body_cap = 0;
  }
  target = malloc(bl + pl + 1);
  if (target == NULL) {
    snprintf(x->errbuf, sizeof x->errbuf, "out of memory");
    return -1;
  }
  memcpy(target, s->site_path, bl);
  memcpy(target + bl, path_query, pl + 1);
  free(x->target);
  x->target = target;
  curl_easy_setopt(h, CURLOPT_REQUEST_TARGET, target);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 1L);
  /* curl's connect timer stays armed after the connection is made (or reused), so a request that
   * outlives it (a long-poll) would wake the loop once for nothing: such a request gets our own
   * deadline instead, which goes as soon as the request is out (zxfer_check). curl then spreads
   * its default (bounded by timeout_ms) over a host's addresses, so with a dead first address of
   * several it may not reach the next before our deadline: after that has happened, requests use
   * curl's timer again (which gives each address its share) until a reply comes. */
  if (timeout_ms > s->connect_timeout_ms && !e->curl_connects) {
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 0L);  /* curl's default, which timeout_ms bounds */
    x->connect_due_ms = zpoll_now_ms() + s->connect_timeout_ms;
  } else {
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
    x->connect_due_ms = -1;
  }
  if (has_body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
    curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, body ? body : "");
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") == 0 ? NULL : method);
  } else {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, strcmp(method, "GET") == 0 ? NULL : method);
  }
  mrc = curl_multi_add_handle(e->multi, h);
  if (mrc != CURLM_OK) {
    snprintf(x->errbuf, sizeof x->errbuf, "%s", curl_multi_strerror(mrc));
    return -1;
  }
  x->state = ZXFER_RUNNING;
  e->due_stale = 1;
  x->refs++;  /* the engine's, while it runs and until its result is taken */
  x->next = e->running;
  x->prev = NULL;
  if (e->running) e->running->prev = x;
  e->running = x;
  return 0;
}
