/* http.c: connections made by libcurl, HTTP/1.1 spoken over them, driven by epoll (see http.h).
 * No Lua here. */
#define _GNU_SOURCE
#include "http.h"
#include "trace.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#define ZHTTP_SMALL_BUFFER (1u << 20)  /* keep at most this much reply buffer between polls */
#define ZHTTP_IDLE_CHECK_MS 1000       /* a connection idle this long is checked before reuse */
#define ZHTTP_RECV_CHUNK 16384

long long zhttp_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void zhttp_wipe(char *p, size_t n) {
  volatile char *v = p;
  while (n--) *v++ = 0;
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
    zhttp_wipe(*slot, strlen(*slot));  /* the old value may be a secret */
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
  if (s->share == NULL) {
    zhttp_session_release(s);
    return NULL;
  }
  curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  /* No connections in the share: each queue keeps its own connection alive between polls, and
   * concurrent long-polls need one connection each anyway; TLS resumption is shared above. */
  return s;
}

void zhttp_session_release(zhttp_session *s) {
  if (s == NULL || --s->refs > 0) return;
  if (s->share != NULL) curl_share_cleanup(s->share);
  zhttp_strset(&s->base_url, NULL);
  zhttp_strset(&s->userpwd, NULL);
  zhttp_strset(&s->userpwd_b64, NULL);
  zhttp_strset(&s->user_agent, NULL);
  zhttp_strset(&s->cert_bundle, NULL);
  zhttp_strset(&s->client_cert, NULL);
  zhttp_strset(&s->client_key, NULL);
  zhttp_strset(&s->proxy, NULL);
  zhttp_strset(&s->origin, NULL);
  zhttp_strset(&s->prefix, NULL);
  zhttp_strset(&s->head, NULL);
  free(s);
}

/* A character that would break the request line or a header: a control character, or a space
 * where the text goes into the request line. */
static int zhttp_unsendable(const char *p, int space_ok) {
  for (; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f || (*p == ' ' && !space_ok)) return 1;
  return 0;
}

/* Splits the site into what curl connects to and the path before every request, and makes the
 * head every request carries. Returns 0, or -1 with a message in errbuf. */
static int zhttp_session_prepare(zhttp_session *s, char *errbuf) {
  const char *url = s->base_url ? s->base_url : "", *auth, *path, *host, *at, *ua;
  size_t host_len, n, cap;
  char *head;
  if (s->head != NULL) return 0;
  if (strncmp(url, "https://", 8) == 0) auth = url + 8;
  else if (strncmp(url, "http://", 7) == 0) auth = url + 7;
  else {
    snprintf(errbuf, CURL_ERROR_SIZE, "the site must start with http:// or https://");
    return -1;
  }
  path = strchr(auth, '/');
  if (path == NULL) path = auth + strlen(auth);
  host = auth;
  for (at = auth; at < path; at++)
    if (*at == '@') host = at + 1;  /* no credentials in the Host header */
  host_len = (size_t)(path - host);
  if (host_len == 0 || zhttp_unsendable(url, 0) || (s->user_agent != NULL && zhttp_unsendable(s->user_agent, 1))) {
    snprintf(errbuf, CURL_ERROR_SIZE, "the site or the user agent has a character HTTP cannot carry");
    return -1;
  }
  if (s->userpwd_b64 == NULL && s->userpwd != NULL) s->userpwd_b64 = zhttp_base64(s->userpwd);
  n = (size_t)(path - url) + 2;
  free(s->origin);  /* from an earlier try that ran out of memory */
  s->origin = malloc(n);
  if (s->origin != NULL) {
    memcpy(s->origin, url, n - 2);
    memcpy(s->origin + n - 2, "/", 2);
  }
  if (zhttp_strset(&s->prefix, path) != 0 || s->origin == NULL || s->userpwd_b64 == NULL) goto oom;
  ua = s->user_agent;
  cap = host_len + strlen(s->userpwd_b64) + (ua ? strlen(ua) : 0) + 128;  /* the fixed text is shorter */
  head = malloc(cap);
  if (head == NULL) goto oom;
  n = (size_t)snprintf(head, cap, "Host: %.*s\r\nAuthorization: Basic %s\r\n%s%s%sAccept-Encoding: "
                       ZH1_ACCEPT_ENCODING "\r\n", (int)host_len, host, s->userpwd_b64,
                       ua ? "User-Agent: " : "", ua ? ua : "", ua ? "\r\n" : "");
  s->head = head;
  s->head_len = n;
  return 0;
oom:
  snprintf(errbuf, CURL_ERROR_SIZE, "out of memory");
  return -1;
}

/* ---- curl callbacks: they only record, never call into Lua ---- */

static int zhttp_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp) {
  zhttp_conn *c = userp;
  struct epoll_event ev;
  (void)easy; (void)sockp;
  if (fd == c->sock) return 0;  /* the connection is ours once made */
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

static int zhttp_on_timer(CURLM *multi, long timeout_ms, void *userp) {
  zhttp_conn *c = userp;
  (void)multi;
  /* + 1: zhttp_now_ms rounds down, and curl's own deadline is now + timeout to the microsecond;
   * acting up to 1 ms before it finds nothing due and costs a second wake-up. */
  c->timer_due_ms = timeout_ms < 0 ? -1 : zhttp_now_ms() + timeout_ms + (timeout_ms > 0);
  return 0;  /* the timerfd follows when control returns to the caller (zhttp_rearm) */
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

static void zhttp_on_reply_line(void *ud, const char *line, size_t n) {
  zhttp_trace_line(ud, '<', line, n);
}

/* ---- timers ---- */

/* One timerfd serves every timer: curl's while connecting, the request's deadline and low-speed
 * window, and the owner's alarm; it is armed for the earliest. Absolute times on CLOCK_MONOTONIC
 * (the clock of zhttp_now_ms), so a late re-arm cannot drift; a time already past fires at once.
 * timerfd_settime is costly (5-20 us in a VM), so the fd is brought in line only when control
 * goes back to the caller (the end of zhttp_drive, zhttp_abort, zhttp_alarm) and only when that
 * changes what is armed; inside zhttp_drive the epoll timeout follows the due times itself, so
 * a blocking poll makes no timerfd syscall at all. */
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

static long long zhttp_min(long long a, long long b) {
  if (a < 0) return b;
  if (b < 0) return a;
  return a < b ? a : b;
}

/* When the running transfer next needs a call without fd activity, -1: never. */
static long long zhttp_transfer_due(const zhttp_conn *c) {
  long long due;
  const zhttp_session *s = c->session;
  if (c->state != ZHTTP_BUSY) return -1;
  due = c->deadline_ms;
  if (c->phase == ZHTTP_CONNECTING) due = zhttp_min(due, c->timer_due_ms);
  if (c->window_start_ms >= 0 && s->low_speed_limit > 0 && s->low_speed_time > 0)
    due = zhttp_min(due, c->window_start_ms + s->low_speed_time * 1000);
  return due;
}

static void zhttp_rearm(zhttp_conn *c) {
  zhttp_arm(c, zhttp_min(zhttp_transfer_due(c), c->alarm_due_ms));
}

void zhttp_alarm(zhttp_conn *c, long ms) {
  c->alarm_due_ms = ms < 0 ? -1 : zhttp_now_ms() + ms;
  zhttp_rearm(c);
}

/* ---- the connection ---- */

/* Closes the connection (or the attempt to make one). */
static void zhttp_drop(zhttp_conn *c) {
  c->sock = -1;  /* from here on curl's REMOVE for it is curl's business again */
  c->sock_added = c->sock_armed = 0;
  c->reused = 0;
  if (c->attached) curl_multi_remove_handle(c->multi, c->easy);  /* closes a CONNECT_ONLY connection */
  c->attached = 0;
  c->timer_due_ms = -1;
}

/* Waits for the socket once (EPOLLONESHOT: an idle connection that the server closes never
 * makes the fd readable, so a foreign loop is not woken for nothing). */
static void zhttp_watch(zhttp_conn *c, unsigned int events) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = events | EPOLLONESHOT;
  ev.data.fd = c->sock;
  if (epoll_ctl(c->epfd, c->sock_added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->sock, &ev) != 0) {
    if (errno == ENOENT) epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->sock, &ev);
    else if (errno == EEXIST) epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->sock, &ev);
  }
  c->sock_added = c->sock_armed = 1;
}

/* A connection that was idle for a while may have been closed by the server, or may hold bytes
 * nobody asked for; either way it cannot carry a request. */
static int zhttp_alive(const zhttp_conn *c) {
  char b;
  ssize_t n = recv(c->sock, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static const char *zhttp_curl_code(CURLcode rc, const char *errbuf) {
  static const char headers_too_large[] = "Too large response headers";  /* a proxy's CONNECT reply */
  if (rc == CURLE_RECV_ERROR && strncmp(errbuf, headers_too_large, sizeof headers_too_large - 1) == 0)
    return "TOO_LARGE";
  /* a TLS alert from the server after the handshake: TLS 1.3 refuses a client certificate so */
  if ((rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR) && strstr(errbuf, " alert ") != NULL) return "TLS";
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return "TIMEOUT";
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
      return "PROTOCOL";
    default:
      return "NETWORK";
  }
}

/* Ends the transfer: fail NULL when a reply came (its message is then unused), else the code
 * with errbuf already saying what went wrong. A connection that cannot carry another request
 * is closed. */
static void zhttp_finish(zhttp_conn *c, const char *fail) {
  c->fail = fail;
  c->state = ZHTTP_DONE;
  if (fail != NULL || !c->reply.keep_alive || c->sock_armed) {
    zhttp_drop(c);
  } else {
    c->reused = 1;
    c->idle_since_ms = zhttp_now_ms();
  }
}

static void zhttp_fail(zhttp_conn *c, const char *code, const char *msg) {
  snprintf(c->errbuf, sizeof c->errbuf, "%s", msg);
  zhttp_finish(c, code);
}

/* Starts making a connection (CONNECT_ONLY): curl resolves, connects, does TLS and any proxy
 * tunnel; its callbacks put the sockets it waits on into the epoll set. */
static int zhttp_connect(zhttp_conn *c) {
  zhttp_session *s = c->session;
  CURL *e = c->easy;
  long long left = c->deadline_ms - zhttp_now_ms();
  CURLMcode mrc;
  zhttp_drop(c);
  curl_easy_reset(e);
  curl_easy_setopt(e, CURLOPT_URL, s->origin);
  curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
  curl_easy_setopt(e, CURLOPT_SHARE, s->share);
  curl_easy_setopt(e, CURLOPT_PRIVATE, c);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, zhttp_on_opensocket);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(left > 0 ? left : 1));
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);  /* notices a half-open connection */
  curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 10L);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  if (s->cert_bundle) curl_easy_setopt(e, CURLOPT_CAINFO, s->cert_bundle);
  if (s->client_cert) curl_easy_setopt(e, CURLOPT_SSLCERT, s->client_cert);
  if (s->client_key) curl_easy_setopt(e, CURLOPT_SSLKEY, s->client_key);
  if (s->proxy) curl_easy_setopt(e, CURLOPT_PROXY, s->proxy);
  /* through any HTTP proxy, the option's or the environment's (https_proxy, ...): CONNECT, then
   * our requests go to the site as if directly */
  curl_easy_setopt(e, CURLOPT_HTTPPROXYTUNNEL, 1L);
  if (s->insecure) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (s->debug) {
    curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, zhttp_on_debug);
    curl_easy_setopt(e, CURLOPT_DEBUGDATA, c);
    curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
  }
  c->socket_errno = 0;
  mrc = curl_multi_add_handle(c->multi, e);
  if (mrc != CURLM_OK) {
    snprintf(c->errbuf, sizeof c->errbuf, "%s", curl_multi_strerror(mrc));
    return -1;
  }
  c->attached = 1;
  c->phase = ZHTTP_CONNECTING;
  return 0;
}

/* The request is sent again on a fresh connection when the one it went out on was kept from an
 * earlier exchange and broke before any byte of the reply came: the server closed it while it
 * was idle, a race no client can avoid. Once per request. */
static int zhttp_resend(zhttp_conn *c) {
  if (!c->reused || c->retried || c->reply.received > 0) return 0;
  c->retried = 1;
  c->req_sent = 0;
  if (zhttp_connect(c) != 0) {
    zhttp_finish(c, "NETWORK");
    return 1;
  }
  return 1;
}

/* send or recv on the connection failed with rc (errbuf says why) */
static void zhttp_broken(zhttp_conn *c, CURLcode rc) {
  if (zhttp_resend(c)) return;
  if (c->errbuf[0] == 0) snprintf(c->errbuf, sizeof c->errbuf, "%s", curl_easy_strerror(rc));
  zhttp_finish(c, zhttp_curl_code(rc, c->errbuf));
}

/* After a send or recv: 0 when it moved bytes, 1 when the caller must return because it now
 * waits for the fd (events) or the connection broke. */
static int zhttp_stalled(zhttp_conn *c, CURLcode crc, unsigned int events) {
  if (crc == CURLE_OK) return 0;
  if (crc == CURLE_AGAIN) zhttp_watch(c, events);
  else zhttp_broken(c, crc);
  return 1;
}

static const char *zhttp_h1_code(int rc) {
  return rc == ZH1_TOO_LARGE ? "TOO_LARGE" : rc == ZH1_PROTOCOL ? "PROTOCOL" : "NETWORK";
}

/* The time-based checks of a running transfer: its deadline and the low-speed window. */
static void zhttp_check_time(zhttp_conn *c, long long now) {
  zhttp_session *s = c->session;
  if (now >= c->deadline_ms) {
    snprintf(c->errbuf, sizeof c->errbuf, "%s timed out after %ld ms with %zu bytes of the reply received",
             c->phase == ZHTTP_CONNECTING ? "connecting" : "the request", c->timeout_ms, c->reply.received);
    zhttp_finish(c, "TIMEOUT");
    return;
  }
  if (c->window_start_ms >= 0 && s->low_speed_limit > 0 && s->low_speed_time > 0 &&
      now - c->window_start_ms >= s->low_speed_time * 1000) {
    if (c->reply.received - c->window_bytes < (size_t)s->low_speed_limit * (size_t)s->low_speed_time) {
      snprintf(c->errbuf, sizeof c->errbuf, "reply slower than %ld bytes/s over %ld s",
               s->low_speed_limit, s->low_speed_time);
      zhttp_finish(c, "TIMEOUT");
      return;
    }
    c->window_start_ms = now;
    c->window_bytes = c->reply.received;
  }
}

static void zhttp_receive(zhttp_conn *c) {
  char buf[ZHTTP_RECV_CHUNK];
  for (;;) {
    size_t n = 0, used = 0;
    int rc;
    if (zhttp_stalled(c, curl_easy_recv(c->easy, buf, sizeof buf, &n), EPOLLIN)) return;
    if (n == 0) {  /* the server closed the connection */
      rc = zh1_eof(&c->reply);
      if (rc == ZH1_DONE) {
        zhttp_finish(c, NULL);
      } else if (!zhttp_resend(c)) {
        snprintf(c->errbuf, sizeof c->errbuf, "%s", c->reply.err);
        zhttp_finish(c, zhttp_h1_code(rc));
      }
      return;
    }
    if (c->window_start_ms < 0) {
      c->window_start_ms = zhttp_now_ms();
      c->window_bytes = 0;
    }
    rc = zh1_feed(&c->reply, buf, n, &used);
    if (rc == ZH1_DONE) {
      if (used < n) c->reply.keep_alive = 0;  /* bytes after the reply: the stream is not ours */
      zhttp_finish(c, NULL);
      return;
    }
    if (rc < 0) {
      snprintf(c->errbuf, sizeof c->errbuf, "%s", c->reply.err);
      zhttp_finish(c, zhttp_h1_code(rc));
      return;
    }
    zhttp_check_time(c, zhttp_now_ms());
    if (c->state != ZHTTP_BUSY) return;
  }
}

/* Sends what is left of the request, then waits for the reply. */
static void zhttp_io(zhttp_conn *c) {
  c->want_io = 0;
  if (c->phase == ZHTTP_SENDING) {
    while (c->req_sent < c->req_len) {
      size_t n = 0;
      if (zhttp_stalled(c, curl_easy_send(c->easy, c->req + c->req_sent, c->req_len - c->req_sent, &n),
                        EPOLLOUT)) return;
      c->req_sent += n;
    }
    c->phase = ZHTTP_RECEIVING;
    /* No recv yet: the server has not answered in the microseconds since; wait for the fd. TLS
     * may hold decrypted bytes that the fd does not show, but not before the first read. */
    zhttp_watch(c, EPOLLIN);
    return;
  }
  if (c->phase == ZHTTP_RECEIVING) zhttp_receive(c);
}

/* The connection attempt ended (curl's message): send on it, or fail. */
static void zhttp_collect(zhttp_conn *c) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
    CURLcode rc;
    curl_socket_t fd = CURL_SOCKET_BAD;
    if (msg->msg != CURLMSG_DONE || msg->easy_handle != c->easy || c->phase != ZHTTP_CONNECTING) continue;
    rc = msg->data.result;
    if (rc == CURLE_OK && curl_easy_getinfo(c->easy, CURLINFO_ACTIVESOCKET, &fd) == CURLE_OK && fd != CURL_SOCKET_BAD) {
      epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, NULL);  /* curl's interest in it ends; ours begins */
      c->sock = (int)fd;
      c->sock_added = c->sock_armed = 0;
      c->timer_due_ms = -1;
      c->phase = ZHTTP_SENDING;
      c->want_io = 1;
      continue;
    }
    if (rc == CURLE_OK) {
      snprintf(c->errbuf, sizeof c->errbuf, "connected, but curl has no socket for the connection");
      rc = CURLE_COULDNT_CONNECT;
    }
    if (rc == CURLE_COULDNT_CONNECT && (c->socket_errno == EMFILE || c->socket_errno == ENFILE))
      snprintf(c->errbuf, sizeof c->errbuf, "cannot open a socket: out of file descriptors (%s): "
               "raise the open-files limit (ulimit -n, RLIMIT_NOFILE) or close queues",
               strerror(c->socket_errno));  /* curl itself only says "Couldn't connect" */
    else if (c->errbuf[0] == 0)
      snprintf(c->errbuf, sizeof c->errbuf, "%s", curl_easy_strerror(rc));
    zhttp_finish(c, zhttp_curl_code(rc, c->errbuf));
    return;
  }
}

/* ---- connections ---- */

int zhttp_conn_init(zhttp_conn *c, zhttp_session *s) {
  struct epoll_event ev;
  memset(c, 0, sizeof *c);
  c->epfd = c->tfd = c->sock = -1;
  c->timer_due_ms = c->alarm_due_ms = c->armed_ms = -1;
  zh1_init(&c->reply);
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
  if (c->multi != NULL) zhttp_drop(c);
  if (c->easy != NULL) curl_easy_cleanup(c->easy);
  if (c->multi != NULL) curl_multi_cleanup(c->multi);
  if (c->epfd >= 0) close(c->epfd);
  if (c->tfd >= 0) close(c->tfd);
  zh1_free(&c->reply);
  if (c->req != NULL) zhttp_wipe(c->req, c->req_cap);    /* it held the credentials */
  free(c->req);
  if (c->trace != NULL) zhttp_wipe(c->trace, c->trace_cap);  /* scrubbed, but it held headers */
  free(c->trace);
  zhttp_session_release(c->session);
  c->easy = NULL;
  c->multi = NULL;
  c->epfd = c->tfd = c->sock = -1;
  c->req = NULL;
  c->req_len = c->req_cap = c->req_sent = 0;
  c->trace = NULL;
  c->trace_len = c->trace_cap = 0;
  c->session = NULL;
  c->state = ZHTTP_IDLE;
}

static char *zhttp_put(char *p, const void *src, size_t n) {
  if (n > 0) memcpy(p, src, n);
  return p + n;
}

/* The request's bytes: request line, the session's head, a body's headers, the body. */
static int zhttp_build(zhttp_conn *c, const char *method, const char *path_query,
                       const char *body, size_t body_len) {
  zhttp_session *s = c->session;
  int with_len = body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                 strcmp(method, "PATCH") == 0;
  char lenhdr[96];
  size_t ml = strlen(method), pl = strlen(s->prefix), ql = strlen(path_query), hl = 0, need;
  char *p;
  if (with_len)
    hl = (size_t)snprintf(lenhdr, sizeof lenhdr, "Content-Type: application/x-www-form-urlencoded\r\n"
                          "Content-Length: %zu\r\n", body != NULL ? body_len : 0);
  need = ml + 1 + pl + ql + 11 + s->head_len + hl + 2 + (body != NULL ? body_len : 0);
  if (need > c->req_cap) {
    size_t cap = c->req_cap ? c->req_cap : 512;
    while (cap < need) cap *= 2;
    if (c->req != NULL) zhttp_wipe(c->req, c->req_cap);
    free(c->req);
    c->req_cap = 0;
    c->req = malloc(cap);
    if (c->req == NULL) return -1;
    c->req_cap = cap;
  }
  p = c->req;
  p = zhttp_put(p, method, ml);
  p = zhttp_put(p, " ", 1);
  p = zhttp_put(p, s->prefix, pl);
  p = zhttp_put(p, path_query, ql);
  p = zhttp_put(p, " HTTP/1.1\r\n", 11);
  p = zhttp_put(p, s->head, s->head_len);
  p = zhttp_put(p, lenhdr, hl);
  p = zhttp_put(p, "\r\n", 2);
  if (body != NULL) p = zhttp_put(p, body, body_len);
  c->req_len = (size_t)(p - c->req);
  c->req_sent = 0;
  return 0;
}

static void zhttp_trace_request(zhttp_conn *c) {
  const char *p = c->req, *end = c->req + c->req_len;
  while (p < end) {
    const char *eol = memchr(p, '\r', (size_t)(end - p));
    if (eol == NULL || eol == p) break;  /* the blank line: the head ends */
    zhttp_trace_line(c, '>', p, (size_t)(eol - p));
    p = eol + 2;
  }
}

int zhttp_start(zhttp_conn *c, const char *method, const char *path_query,
                const char *body, size_t body_len, long timeout_ms) {
  zhttp_session *s = c->session;
  long long now = zhttp_now_ms();
  if (c->state == ZHTTP_BUSY) zhttp_abort(c);
  c->state = ZHTTP_IDLE;
  c->errbuf[0] = 0;
  c->fail = NULL;
  c->window_start_ms = -1;
  c->window_bytes = 0;
  c->trace_len = 0;
  c->trace_full = 0;
  c->retried = 0;
  c->want_io = 0;
  c->alarm_due_ms = -1;  /* the transfer's own fd and timers say when to act now */
  c->timeout_ms = timeout_ms;
  c->deadline_ms = now + timeout_ms;
  if (c->reply.body_cap > ZHTTP_SMALL_BUFFER) {  /* don't hold a 50 MB register reply for ever */
    free(c->reply.body);
    c->reply.body = NULL;
    c->reply.body_cap = 0;
  }
  zh1_reset(&c->reply);
  c->reply.max_body = s->max_reply_bytes;
  c->reply.on_line = s->debug ? zhttp_on_reply_line : NULL;
  c->reply.ud = c;
  if (zhttp_session_prepare(s, c->errbuf) != 0 || zhttp_build(c, method, path_query, body, body_len) != 0) {
    if (c->errbuf[0] == 0) strcpy(c->errbuf, "out of memory");
    zhttp_rearm(c);
    return -1;
  }
  c->state = ZHTTP_BUSY;
  if (s->debug) zhttp_trace_request(c);
  if (zhttp_unsendable(path_query, 0) || path_query[0] != '/') {
    zhttp_fail(c, "PROTOCOL", "the request path has a character HTTP cannot carry");
  } else if (c->sock >= 0 && (now - c->idle_since_ms < ZHTTP_IDLE_CHECK_MS || zhttp_alive(c))) {
    c->phase = ZHTTP_SENDING;
    c->want_io = 1;
  } else if (zhttp_connect(c) != 0) {
    c->state = ZHTTP_IDLE;
    zhttp_rearm(c);
    return -1;
  }
  /* every caller drives next, which sends or lets curl connect without the fd: arming the
   * timerfd now would cost a syscall that the drive makes unnecessary */
  zhttp_arm(c, -1);
  return 0;
}

static void zhttp_act(zhttp_conn *c, curl_socket_t fd, int flags) {
  int running;
  curl_multi_socket_action(c->multi, fd, flags, &running);
}

/* Whatever is due now, done: returns 1 when something was, 0 when only waiting is left. */
static int zhttp_due_now(zhttp_conn *c) {
  long long now, due;
  if (c->want_io) {
    zhttp_io(c);
    return 1;
  }
  now = zhttp_now_ms();
  if (c->phase == ZHTTP_CONNECTING && c->timer_due_ms >= 0 && c->timer_due_ms <= now) {
    c->timer_due_ms = -1;
    zhttp_act(c, CURL_SOCKET_TIMEOUT, 0);
    zhttp_collect(c);
    return 1;
  }
  due = zhttp_transfer_due(c);
  if (due >= 0 && due <= now) {
    zhttp_check_time(c, now);
    return 1;
  }
  return 0;
}

static int zhttp_drive_pass(zhttp_conn *c, long wait_ms) {
  struct epoll_event evs[8];
  long long deadline = wait_ms < 0 ? -1 : zhttp_now_ms() + wait_ms;
  for (;;) {
    long long now, due;
    long t;
    int n, i;
    if (c->state != ZHTTP_BUSY) return c->state == ZHTTP_DONE;
    if (zhttp_due_now(c)) continue;
    /* sleep until a timer or the caller's deadline, whichever is first */
    now = zhttp_now_ms();
    due = zhttp_transfer_due(c);
    t = due < 0 ? -1 : (long)(due - now);
    if (deadline >= 0) {
      long left = deadline > now ? (long)(deadline - now) : 0;
      if (t < 0 || left < t) t = left;
    }
    n = epoll_wait(c->epfd, evs, (int)(sizeof evs / sizeof evs[0]), (int)t);
    if (n < 0) {
      if (errno == EINTR) return -1;
      n = 0;
    }
    for (i = 0; i < n && c->state == ZHTTP_BUSY; i++) {
      int fd = evs[i].data.fd;
      if (fd == c->tfd) {
        unsigned long long expirations;
        if (read(c->tfd, &expirations, sizeof expirations) < 0) { /* already drained */ }
        c->armed_ms = -1;  /* one-shot: it fired; zhttp_drive re-arms it on the way out */
        if (c->alarm_due_ms >= 0 && c->alarm_due_ms <= zhttp_now_ms()) c->alarm_due_ms = -1;
      } else if (fd == c->sock) {
        c->sock_armed = 0;  /* EPOLLONESHOT: it fired and is off until watched again */
        c->want_io = 1;
      } else if (c->phase == ZHTTP_CONNECTING) {
        zhttp_act(c, fd,
                  ((evs[i].events & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                  ((evs[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                  ((evs[i].events & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0));
        zhttp_collect(c);
      }
    }
    if (c->state != ZHTTP_BUSY) return 1;
    if (deadline >= 0 && zhttp_now_ms() >= deadline) {
      /* one last look at what fell due while we waited */
      if (zhttp_due_now(c)) continue;
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
  if (c->state == ZHTTP_BUSY) {
    /* a connection in the middle of an exchange cannot carry the next one */
    if (c->phase != ZHTTP_SENDING || c->req_sent > 0 || c->sock_armed) zhttp_drop(c);
  }
  c->state = ZHTTP_IDLE;
  c->want_io = 0;
  c->timer_due_ms = -1;
  zhttp_rearm(c);  /* keeps an alarm the owner set */
}

long zhttp_timeout_ms(const zhttp_conn *c) {
  long long now, due;
  if (c->state != ZHTTP_BUSY) return -1;
  if (c->want_io) return 0;
  due = zhttp_transfer_due(c);
  if (due < 0) return -1;
  now = zhttp_now_ms();
  return due <= now ? 0 : (long)(due - now);
}

void zhttp_reset_result(zhttp_conn *c) {
  if (c->state == ZHTTP_DONE) c->state = ZHTTP_IDLE;
}
