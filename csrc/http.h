/* http.h: the transport, with no Lua in it.
 *
 * A zhttp_session holds what every request of one client shares: the site, credentials,
 * TLS and proxy settings, and a curl share handle (DNS cache, TLS sessions, connections).
 * It is reference-counted because queues may outlive the Lua object that made it.
 *
 * A zhttp_conn is one curl multi handle with one easy handle and an epoll fd that aggregates
 * every socket curl opens for it (CURLMOPT_SOCKETFUNCTION) plus a timerfd that fires when curl's
 * timer (CURLMOPT_TIMERFUNCTION) is due, so a foreign event loop can watch a single fd.
 * Blocking calls are built on the same non-blocking pass (zhttp_drive). */
#ifndef ZULIP_HTTP_H
#define ZULIP_HTTP_H

#include <stddef.h>
#include <curl/curl.h>

typedef struct zhttp_session {
  int refs;
  CURLSH *share;
  struct curl_slist *headers;  /* constant request headers ("Expect:") */
  char *base_url;              /* "https://chat.example.com", no trailing slash */
  char *userpwd;               /* "email:key": secret, never printed */
  char *userpwd_b64;           /* its base64 (the Authorization value), made when debug is on */
  char *user_agent;
  char *cert_bundle, *client_cert, *client_key, *proxy;
  int insecure;
  int debug;                   /* collect curl's verbose trace (secrets scrubbed) per transfer */
  long connect_timeout_ms;
  size_t max_reply_bytes;
  long low_speed_limit;        /* bytes/s a started reply must keep up ... */
  long low_speed_time;         /* ... over this many seconds */
} zhttp_session;

enum zhttp_state { ZHTTP_IDLE, ZHTTP_BUSY, ZHTTP_DONE };

typedef struct zhttp_conn {
  CURLM *multi;
  CURL *easy;
  zhttp_session *session;      /* counted reference */
  int epfd, tfd;               /* epoll set, timerfd for curl's timer */
  enum zhttp_state state;
  CURLcode rc;                 /* outcome of the finished transfer */
  long status;                 /* HTTP status of the finished transfer */
  double retry_after;          /* Retry-After header in seconds, < 0 when absent */
  int too_large;               /* the reply passed max_reply_bytes */
  long long timer_due_ms;      /* curl's timer on the monotonic clock, -1 when unset */
  long long armed_ms;          /* what the timerfd is armed for (absolute ms), -1: disarmed */
  long long alarm_due_ms;      /* the owner's wake-up (zhttp_alarm) on the same clock, -1 when unset */
  int too_slow;                /* the reply trickled below the low-speed limit */
  int plain_get;               /* the easy handle holds the common options and GET (zhttp_start) */
  int socket_errno;            /* errno of a failed socket() (EMFILE: out of fds), else 0 */
  long long window_start_ms;   /* low-speed window: starts when the reply's headers begin */
  curl_off_t window_bytes;     /* bytes received when the window started */
  char *body;                  /* reply body, body_len bytes (capacity body_cap) */
  size_t body_len, body_cap;
  char *trace;                 /* with session->debug: "* text", "> sent header", "< received header" */
  size_t trace_len, trace_cap; /* lines, each ending in \n; reset by zhttp_start */
  int trace_full;              /* the trace reached its limit (64 KiB) and ends in a note saying so */
  char errbuf[CURL_ERROR_SIZE];
} zhttp_conn;

/* Sessions. zhttp_session_new returns NULL when out of memory or curl refuses the share. */
zhttp_session *zhttp_session_new(void);
void zhttp_session_release(zhttp_session *s);  /* drops one reference; frees at zero */
int zhttp_strset(char **slot, const char *value); /* copies value into *slot; 0 on success */

/* Connections. init returns 0 on success, or -1 with a reason in c->errbuf. */
int zhttp_conn_init(zhttp_conn *c, zhttp_session *s);
void zhttp_conn_free(zhttp_conn *c);           /* idempotent */
/* Starts a request; the body (may be NULL) is copied. Returns 0, or -1 with c->errbuf set. */
int zhttp_start(zhttp_conn *c, const char *method, const char *path_query,
                const char *body, size_t body_len, long timeout_ms);
/* One bounded pass: waits up to wait_ms (0: not at all, < 0: until the transfer ends) for socket
 * or timer activity and lets curl act on it. Returns 1 when the transfer has ended (state DONE),
 * 0 when it goes on, -1 when a signal interrupted the wait (the caller should return to Lua). */
int zhttp_drive(zhttp_conn *c, long wait_ms);
void zhttp_abort(zhttp_conn *c);               /* ends an in-flight transfer, keeps the handles */
long zhttp_timeout_ms(const zhttp_conn *c);    /* ms until curl wants a call; -1: only on fd activity */
/* Makes the epoll fd readable after ms (0: at once; < 0: cancels) while no transfer runs, so a
 * foreign loop watching only that fd wakes for the owner's own timers (a retry's backoff). It
 * shares the timerfd with curl's timer (armed for the earlier of the two); starting a transfer
 * cancels it, and so does any expiry that zhttp_drive consumes. */
void zhttp_alarm(zhttp_conn *c, long ms);
void zhttp_reset_result(zhttp_conn *c);        /* DONE -> IDLE; keeps the buffer for reuse */
/* The debug trace of the last transfer (NULL when there is none) and its length; the next
 * zhttp_start empties it. The API key and the Authorization value are already scrubbed. */
const char *zhttp_trace(const zhttp_conn *c, size_t *len);
long long zhttp_now_ms(void);

#endif
