/* http.c: libcurl multi + epoll transport (see http.h). No Lua here. */
#define _GNU_SOURCE
#include "http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#define ZHTTP_SMALL_BUFFER (1u << 20)  /* keep at most this much reply buffer between polls */

long long zhttp_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int zhttp_strset(char **slot, const char *value) {
  char *copy = NULL;
  if (value != NULL) {
    size_t n = strlen(value) + 1;
    copy = malloc(n);
    if (copy == NULL) return -1;
    memcpy(copy, value, n);
  }
  if (*slot != NULL) {
    /* the old value may be a secret: wipe before freeing */
    size_t n = strlen(*slot);
    volatile char *p = *slot;
    while (n--) *p++ = 0;
    free(*slot);
  }
  *slot = copy;
  return 0;
}

/* ---- sessions ---- */

zhttp_session *zhttp_session_new(void) {
  zhttp_session *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->refs = 1;
  s->connect_timeout_ms = 10000;
  s->max_reply_bytes = (size_t)256 << 20;
  s->low_speed_limit = 1024;
  s->low_speed_time = 30;
  s->share = curl_share_init();
  s->headers = curl_slist_append(NULL, "Expect:");
  if (s->share == NULL || s->headers == NULL) {
    zhttp_session_release(s);
    return NULL;
  }
  curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  /* Not CURL_LOCK_DATA_CONNECT: each queue has its own multi, and a shared cache is trimmed to
   * 4 x the easy handles of the multi returning a connection (4), so with more than a few queues
   * curl closed nearly every connection after each poll (50 queues, 1,000 polls: 1,018 new TCP
   * connections against 0 unshared). Each queue keeps its own connection alive between polls,
   * concurrent long-polls need one connection each anyway, and TLS resumption is shared above. */
  return s;
}

void zhttp_session_release(zhttp_session *s) {
  if (s == NULL || --s->refs > 0) return;
  if (s->share != NULL) curl_share_cleanup(s->share);
  curl_slist_free_all(s->headers);
  zhttp_strset(&s->base_url, NULL);
  zhttp_strset(&s->userpwd, NULL);
  zhttp_strset(&s->userpwd_b64, NULL);
  zhttp_strset(&s->user_agent, NULL);
  zhttp_strset(&s->cert_bundle, NULL);
  zhttp_strset(&s->client_cert, NULL);
  zhttp_strset(&s->client_key, NULL);
  zhttp_strset(&s->proxy, NULL);
  free(s);
}

/* ---- curl callbacks: they only record, never call into Lua ---- */

static int zhttp_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp) {
  zhttp_conn *c = userp;
  struct epoll_event ev;
  (void)easy; (void)sockp;
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, NULL);  /* fails harmlessly if already closed */
    return 0;
  }
  memset(&ev, 0, sizeof ev);
  ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
  ev.data.fd = fd;
  if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
    epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev);
  return 0;
}

/* One timerfd serves two one-shot timers, curl's and the owner's alarm: arm it for the earlier.
 * Absolute times on CLOCK_MONOTONIC (the clock of zhttp_now_ms), so a late re-arm cannot drift;
 * a time already past fires at once. Re-arming also clears a pending expiry.
 * timerfd_settime is costly (5-20 us in a VM: it reprograms the hardware timer, and a time
 * already past fires through the interrupt path), so the fd is brought in line with the due
 * times only when control goes back to the caller (the end of zhttp_drive, zhttp_abort,
 * zhttp_alarm) and only when that changes what is armed: curl's timer callback just records.
 * Inside zhttp_drive the epoll timeout follows timer_due_ms itself, so a blocking poll makes no
 * timerfd syscall at all (it made three). */
static void zhttp_arm(zhttp_conn *c, long long due) {
  struct itimerspec its;
  if (due == c->armed_ms) return;
  memset(&its, 0, sizeof its);
  if (due >= 0) {
    its.it_value.tv_sec = (time_t)(due / 1000);
    its.it_value.tv_nsec = (long)(due % 1000) * 1000000L;
    if (due == 0) its.it_value.tv_nsec = 1;  /* an all-zero it_value would disarm the timer */
  }
  timerfd_settime(c->tfd, TFD_TIMER_ABSTIME, &its, NULL);
  c->armed_ms = due;
}

static void zhttp_rearm(zhttp_conn *c) {
  long long due = c->timer_due_ms;
  if (c->alarm_due_ms >= 0 && (due < 0 || c->alarm_due_ms < due)) due = c->alarm_due_ms;
  zhttp_arm(c, due);
}

static int zhttp_on_timer(CURLM *multi, long timeout_ms, void *userp) {
  zhttp_conn *c = userp;
  (void)multi;
  /* + 1: zhttp_now_ms rounds down, and curl's own deadline is now + timeout to the microsecond;
   * acting up to 1 ms before it finds nothing due and costs every queue a second wake-up. */
  c->timer_due_ms = timeout_ms < 0 ? -1 : zhttp_now_ms() + timeout_ms + (timeout_ms > 0);
  return 0;  /* the timerfd follows when control returns to the caller (zhttp_arm) */
}

void zhttp_alarm(zhttp_conn *c, long ms) {
  c->alarm_due_ms = ms < 0 ? -1 : zhttp_now_ms() + ms;
  zhttp_rearm(c);
}

static size_t zhttp_on_body(char *data, size_t size, size_t nmemb, void *userp) {
  zhttp_conn *c = userp;
  size_t n = size * nmemb;
  if (n > c->session->max_reply_bytes - c->body_len || c->body_len + n > c->session->max_reply_bytes) {
    c->too_large = 1;
    return 0;  /* curl aborts with CURLE_WRITE_ERROR */
  }
  if (c->body_len + n + 1 > c->body_cap) {
    size_t cap = c->body_cap ? c->body_cap : 16384;
    char *p;
    while (cap < c->body_len + n + 1) cap *= 2;
    p = realloc(c->body, cap);
    if (p == NULL) return 0;
    c->body = p;
    c->body_cap = cap;
  }
  memcpy(c->body + c->body_len, data, n);
  c->body_len += n;
  return n;
}

static size_t zhttp_on_header(char *data, size_t size, size_t nmemb, void *userp) {
  zhttp_conn *c = userp;
  size_t n = size * nmemb;
  static const char name[] = "retry-after:";
  if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
    c->retry_after = -1;  /* a new response (after 100 Continue or a proxy's 200) starts */
    if (c->window_start_ms < 0) c->window_start_ms = zhttp_now_ms();
  } else if (n > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
    char value[64];
    size_t len = n - (sizeof name - 1);
    char *end;
    double secs;
    if (len >= sizeof value) len = sizeof value - 1;
    memcpy(value, data + sizeof name - 1, len);
    value[len] = 0;
    secs = strtod(value, &end);
    if (end != value && secs >= 0 && secs < 1e9) {
      c->retry_after = secs;
    } else {
      time_t when = curl_getdate(value, NULL);  /* the HTTP-date form */
      if (when != -1) {
        double d = difftime(when, time(NULL));
        c->retry_after = d > 0 ? d : 0;
      }
    }
  }
  return n;
}

/* curl's own socket opener, plus a note of why socket() failed: curl reports running out of
 * file descriptors as a plain "Couldn't connect to server". */
static curl_socket_t zhttp_on_opensocket(void *userp, curlsocktype purpose, struct curl_sockaddr *addr) {
  zhttp_conn *c = userp;
  curl_socket_t fd;
  (void)purpose;
  fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
  if (fd == CURL_SOCKET_BAD) c->socket_errno = errno;
  return fd;
}

/* Low-speed guard for replies that have started: a long-poll may be silent for 90 s before its
 * headers, so curl's own CURLOPT_LOW_SPEED_* (which counts from the request) cannot be used. */
static int zhttp_on_progress(void *userp, curl_off_t dltotal, curl_off_t dlnow,
                             curl_off_t ultotal, curl_off_t ulnow) {
  zhttp_conn *c = userp;
  zhttp_session *s = c->session;
  long long now;
  (void)dltotal; (void)ultotal; (void)ulnow;
  if (c->window_start_ms < 0 || s->low_speed_limit <= 0 || s->low_speed_time <= 0) return 0;
  now = zhttp_now_ms();
  if (now - c->window_start_ms < s->low_speed_time * 1000) return 0;
  if (dlnow - c->window_bytes < (curl_off_t)s->low_speed_limit * s->low_speed_time) {
    c->too_slow = 1;
    return 1;  /* curl aborts with CURLE_ABORTED_BY_CALLBACK */
  }
  c->window_start_ms = now;
  c->window_bytes = dlnow;
  return 0;
}

/* ---- the debug trace: curl's verbose text, collected without Lua, secrets scrubbed ---- */

#define ZHTTP_TRACE_MAX (64u << 10)  /* per transfer; the rest is dropped */
static const char zhttp_redacted[] = "[redacted]";
static const char zhttp_truncated[] = "* [trace truncated]\n";

static char *zhttp_base64(const char *in) {
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

static int zhttp_trace_put(zhttp_conn *c, const char *s, size_t n) {
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
static void zhttp_trace_line(zhttp_conn *c, char prefix, const char *line, size_t n) {
  zhttp_session *s = c->session;
  const char *secret[2];
  size_t slen[2], i = 0, k;
  char head[2];
  static const char auth[] = "authorization:", pauth[] = "proxy-authorization:";
  secret[0] = s->userpwd ? strchr(s->userpwd, ':') : NULL;  /* the key: after "email:" */
  if (secret[0] != NULL) secret[0]++;
  secret[1] = s->userpwd_b64;
  for (k = 0; k < 2; k++) slen[k] = secret[k] ? strlen(secret[k]) : 0;
  if (c->trace_full) return;
  if (c->trace_len + n + 3 > ZHTTP_TRACE_MAX) {
    zhttp_trace_put(c, zhttp_truncated, sizeof zhttp_truncated - 1);
    c->trace_full = 1;
    return;
  }
  head[0] = prefix;
  head[1] = ' ';
  if (zhttp_trace_put(c, head, 2) != 0) return;
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
      zhttp_trace_put(c, line, (size_t)(v - line));
      if (v > scheme) zhttp_trace_put(c, " ", 1);
      zhttp_trace_put(c, zhttp_redacted, sizeof zhttp_redacted - 1);
      zhttp_trace_put(c, "\n", 1);
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
    zhttp_trace_put(c, line + i, run - i);
    if (skip > 0) zhttp_trace_put(c, zhttp_redacted, sizeof zhttp_redacted - 1);
    i = run + skip;
  }
  zhttp_trace_put(c, "\n", 1);
}

static int zhttp_on_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *userp) {
  zhttp_conn *c = userp;
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
    if (n > 0) zhttp_trace_line(c, prefix, data + i, n);
    i = j + 1;
  }
  return 0;
}

const char *zhttp_trace(const zhttp_conn *c, size_t *len) {
  *len = c->trace_len;
  return c->trace_len > 0 ? c->trace : NULL;
}

/* ---- connections ---- */

int zhttp_conn_init(zhttp_conn *c, zhttp_session *s) {
  struct epoll_event ev;
  memset(c, 0, sizeof *c);
  c->epfd = c->tfd = -1;
  c->timer_due_ms = c->alarm_due_ms = c->armed_ms = -1;
  c->retry_after = -1;
  c->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (c->epfd >= 0) c->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (c->epfd < 0 || c->tfd < 0) {
    int e = errno;
    if (e == EMFILE || e == ENFILE)
      snprintf(c->errbuf, sizeof c->errbuf, "out of file descriptors (%s): raise the open-files limit "
               "(ulimit -n, RLIMIT_NOFILE) or close queues", strerror(e));
    else
      snprintf(c->errbuf, sizeof c->errbuf, "cannot make its epoll/timer fds: %s", strerror(e));
    zhttp_conn_free(c);
    return -1;
  }
  c->multi = curl_multi_init();
  c->easy = curl_easy_init();
  if (c->multi == NULL || c->easy == NULL) {
    strcpy(c->errbuf, "out of memory");
    zhttp_conn_free(c);
    return -1;
  }
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.fd = c->tfd;
  epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->tfd, &ev);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, zhttp_on_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, zhttp_on_timer);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  s->refs++;
  c->session = s;
  return 0;
}

void zhttp_conn_free(zhttp_conn *c) {
  if (c->multi != NULL && c->state == ZHTTP_BUSY) curl_multi_remove_handle(c->multi, c->easy);
  if (c->easy != NULL) curl_easy_cleanup(c->easy);
  if (c->multi != NULL) curl_multi_cleanup(c->multi);
  if (c->epfd >= 0) close(c->epfd);
  if (c->tfd >= 0) close(c->tfd);
  free(c->body);
  if (c->trace != NULL) memset(c->trace, 0, c->trace_cap);  /* scrubbed, but it held headers */
  free(c->trace);
  zhttp_session_release(c->session);
  c->easy = NULL;
  c->multi = NULL;
  c->epfd = c->tfd = -1;
  c->body = NULL;
  c->body_len = c->body_cap = 0;
  c->trace = NULL;
  c->trace_len = c->trace_cap = 0;
  c->session = NULL;
  c->state = ZHTTP_IDLE;
}

static void zhttp_set_common(zhttp_conn *c, long timeout_ms) {
  zhttp_session *s = c->session;
  CURL *e = c->easy;
  curl_easy_setopt(e, CURLOPT_SHARE, s->share);
  curl_easy_setopt(e, CURLOPT_PRIVATE, c);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, zhttp_on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, zhttp_on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
  curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, zhttp_on_progress);
  curl_easy_setopt(e, CURLOPT_XFERINFODATA, c);
  curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, zhttp_on_opensocket);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->headers);
  curl_easy_setopt(e, CURLOPT_USERPWD, s->userpwd);
  curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
  curl_easy_setopt(e, CURLOPT_USERAGENT, s->user_agent);
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");  /* every encoding this libcurl decodes */
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);   /* never carry credentials to another host */
  /* a Content-Length past the limit fails at once (TOO_LARGE), before any of the body comes */
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)s->max_reply_bytes);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 10L);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  if (s->cert_bundle) curl_easy_setopt(e, CURLOPT_CAINFO, s->cert_bundle);
  if (s->client_cert) curl_easy_setopt(e, CURLOPT_SSLCERT, s->client_cert);
  if (s->client_key) curl_easy_setopt(e, CURLOPT_SSLKEY, s->client_key);
  if (s->proxy) curl_easy_setopt(e, CURLOPT_PROXY, s->proxy);
  if (s->insecure) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (s->debug) {
    if (s->userpwd_b64 == NULL && s->userpwd != NULL) s->userpwd_b64 = zhttp_base64(s->userpwd);
    curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, zhttp_on_debug);
    curl_easy_setopt(e, CURLOPT_DEBUGDATA, c);
    curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
  }
}

int zhttp_start(zhttp_conn *c, const char *method, const char *path_query,
                const char *body, size_t body_len, long timeout_ms) {
  zhttp_session *s = c->session;
  size_t blen = strlen(s->base_url), plen = strlen(path_query);
  char *url;
  CURLMcode mrc;
  int is_get;
  if (c->state == ZHTTP_BUSY) zhttp_abort(c);
  url = malloc(blen + plen + 1);
  if (url == NULL) {
    strcpy(c->errbuf, "out of memory");
    return -1;
  }
  memcpy(url, s->base_url, blen);
  memcpy(url + blen, path_query, plen + 1);
  is_get = strcmp(method, "GET") == 0;
  if (is_get && c->plain_get) {
    /* Polls are GETs one after another: the handle still holds the common options and GET, so
     * only the URL and the timeout change. The reset and the ~30 options after it were a tenth
     * of a poll's CPU; curl re-initialises its per-transfer state itself. */
    curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
  } else {
    curl_easy_reset(c->easy);  /* keeps the live connection, DNS and TLS caches */
    zhttp_set_common(c, timeout_ms);
  }
  c->plain_get = is_get;
  curl_easy_setopt(c->easy, CURLOPT_URL, url);  /* curl copies it */
  free(url);
  if (is_get) {
    curl_easy_setopt(c->easy, CURLOPT_HTTPGET, 1L);
  } else {
    if (strcmp(method, "POST") != 0) curl_easy_setopt(c->easy, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL || strcmp(method, "POST") == 0) {
      curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
      curl_easy_setopt(c->easy, CURLOPT_COPYPOSTFIELDS, body != NULL ? body : "");
    }
  }
  c->errbuf[0] = 0;
  c->rc = CURLE_OK;
  c->status = 0;
  c->retry_after = -1;
  c->too_large = c->too_slow = 0;
  c->socket_errno = 0;
  c->window_start_ms = -1;
  c->window_bytes = 0;
  c->body_len = 0;
  c->trace_len = 0;
  c->trace_full = 0;
  c->alarm_due_ms = -1;  /* the transfer's own sockets and timer say when to act now */
  if (c->body_cap > ZHTTP_SMALL_BUFFER) {  /* don't hold a 50 MB register reply for ever */
    free(c->body);
    c->body = NULL;
    c->body_cap = 0;
  }
  mrc = curl_multi_add_handle(c->multi, c->easy);
  if (mrc != CURLM_OK) {
    snprintf(c->errbuf, sizeof c->errbuf, "%s", curl_multi_strerror(mrc));
    zhttp_rearm(c);
    return -1;
  }
  c->state = ZHTTP_BUSY;
  /* curl's first timer is due at once and every caller drives next, which acts on it without
   * the fd: arming the timerfd for "now" would cost a syscall and a spurious wake-up. */
  zhttp_arm(c, -1);
  return 0;
}

static void zhttp_collect(zhttp_conn *c) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE || msg->easy_handle != c->easy) continue;
    c->rc = msg->data.result;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &c->status);
    if (c->rc == CURLE_COULDNT_CONNECT && (c->socket_errno == EMFILE || c->socket_errno == ENFILE))
      snprintf(c->errbuf, sizeof c->errbuf, "cannot open a socket: out of file descriptors (%s): "
               "raise the open-files limit (ulimit -n, RLIMIT_NOFILE) or close queues",
               strerror(c->socket_errno));  /* curl itself only says "Couldn't connect" */
    curl_multi_remove_handle(c->multi, c->easy);
    if (c->body != NULL) c->body[c->body_len] = 0;
    c->state = ZHTTP_DONE;
  }
}

static void zhttp_act(zhttp_conn *c, curl_socket_t fd, int flags) {
  int running;
  curl_multi_socket_action(c->multi, fd, flags, &running);
}

static int zhttp_drive_pass(zhttp_conn *c, long wait_ms) {
  struct epoll_event evs[8];
  long long deadline = wait_ms < 0 ? -1 : zhttp_now_ms() + wait_ms;
  for (;;) {
    long long now;
    long t;
    int n, i;
    if (c->state != ZHTTP_BUSY) return c->state == ZHTTP_DONE;
    now = zhttp_now_ms();
    if (c->timer_due_ms >= 0 && c->timer_due_ms <= now) {
      c->timer_due_ms = -1;
      zhttp_act(c, CURL_SOCKET_TIMEOUT, 0);
      zhttp_collect(c);
      continue;
    }
    /* sleep until curl's timer or the caller's deadline, whichever is first */
    t = -1;
    if (c->timer_due_ms >= 0) t = (long)(c->timer_due_ms - now);
    if (deadline >= 0) {
      long left = deadline > now ? (long)(deadline - now) : 0;
      if (t < 0 || left < t) t = left;
    }
    n = epoll_wait(c->epfd, evs, (int)(sizeof evs / sizeof evs[0]), (int)t);
    if (n < 0) {
      if (errno == EINTR) return -1;
      n = 0;
    }
    for (i = 0; i < n; i++) {
      if (evs[i].data.fd == c->tfd) {
        unsigned long long expirations;
        if (read(c->tfd, &expirations, sizeof expirations) < 0) { /* already drained */ }
        c->armed_ms = -1;  /* one-shot: it fired; zhttp_drive re-arms it on the way out */
        if (c->alarm_due_ms >= 0 && c->alarm_due_ms <= zhttp_now_ms()) c->alarm_due_ms = -1;
        continue;  /* the timer check at the top of the loop acts on curl's */
      }
      zhttp_act(c, evs[i].data.fd,
                ((evs[i].events & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                ((evs[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                ((evs[i].events & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0));
    }
    zhttp_collect(c);
    if (c->state != ZHTTP_BUSY) return 1;
    if (deadline >= 0 && zhttp_now_ms() >= deadline) {
      /* one last look at a timer that fell due while we waited */
      if (c->timer_due_ms >= 0 && c->timer_due_ms <= zhttp_now_ms()) continue;
      return 0;
    }
  }
}

int zhttp_drive(zhttp_conn *c, long wait_ms) {
  int r = zhttp_drive_pass(c, wait_ms);
  zhttp_rearm(c);  /* the fd now tells a foreign loop when the next call is due */
  return r;
}

void zhttp_abort(zhttp_conn *c) {
  if (c->state == ZHTTP_BUSY) curl_multi_remove_handle(c->multi, c->easy);
  c->state = ZHTTP_IDLE;
  c->timer_due_ms = -1;
  zhttp_rearm(c);  /* keeps an alarm the owner set */
}

long zhttp_timeout_ms(const zhttp_conn *c) {
  long long now;
  if (c->state != ZHTTP_BUSY || c->timer_due_ms < 0) return -1;
  now = zhttp_now_ms();
  return c->timer_due_ms <= now ? 0 : (long)(c->timer_due_ms - now);
}

void zhttp_reset_result(zhttp_conn *c) {
  if (c->state == ZHTTP_DONE) c->state = ZHTTP_IDLE;
}
