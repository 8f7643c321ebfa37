/* http.h: the transport, with no Lua in it.
 *
 * A zhttp_session holds what every request of one client shares: the site, credentials,
 * TLS and proxy settings, the request head every request starts with, and a curl share handle
 * (DNS cache, TLS sessions). It is reference-counted because queues may outlive the Lua object
 * that made it.
 *
 * A zhttp_conn is one connection of its own. libcurl makes it (DNS, TCP, TLS, a proxy tunnel:
 * CURLOPT_CONNECT_ONLY on a multi handle, so connecting never blocks) and this file speaks
 * HTTP/1.1 over it with curl_easy_send/curl_easy_recv, the reply parsed by h1.c. Requests here
 * are few and of a fixed shape, and libcurl's general request path cost about twice a bare
 * client's CPU per poll (bench/RESULTS.md, row 2). An epoll fd aggregates every socket curl
 * opens while connecting (CURLMOPT_SOCKETFUNCTION), the connection itself (EPOLLONESHOT, so an
 * idle connection never wakes anyone) and a timerfd for curl's timer, the request's own
 * deadlines and the owner's alarm, so a foreign event loop can watch a single fd.
 * Blocking calls are built on the same non-blocking pass (zhttp_drive). */
#ifndef ZULIP_HTTP_H
#define ZULIP_HTTP_H

#include <stddef.h>
#include <curl/curl.h>
#include "h1.h"

typedef struct zhttp_session {
  int refs;
  CURLSH *share;
  char *base_url;              /* "https://chat.example.com", no trailing slash */
  char *userpwd;               /* "email:key": secret, never printed */
  char *userpwd_b64;           /* its base64, the Authorization value: secret too */
  char *user_agent;
  char *cert_bundle, *client_cert, *client_key, *proxy;
  int insecure;
  int debug;                   /* collect curl's verbose trace (secrets scrubbed) per transfer */
  long connect_timeout_ms;
  size_t max_reply_bytes;
  long low_speed_limit;        /* bytes/s a started reply must keep up ... */
  long low_speed_time;         /* ... over this many seconds */
  /* made from the above before the first request (zhttp_start) */
  char *origin;                /* "https://chat.example.com:8443/": what curl connects to */
  char *prefix;                /* the site's path ("" or "/zulip"), before every request path */
  char *head;                  /* "Host: ...\r\nAuthorization: Basic ...\r\n...": secret */
  size_t head_len;
} zhttp_session;

enum zhttp_state { ZHTTP_IDLE, ZHTTP_BUSY, ZHTTP_DONE };

enum zhttp_phase { ZHTTP_CONNECTING, ZHTTP_SENDING, ZHTTP_RECEIVING };

typedef struct zhttp_conn {
  CURLM *multi;
  CURL *easy;                  /* CONNECT_ONLY: it makes the connection and carries our bytes */
  zhttp_session *session;      /* counted reference */
  int epfd, tfd;               /* epoll set, timerfd */
  enum zhttp_state state;
  enum zhttp_phase phase;      /* while BUSY */
  int attached;                /* easy is in multi: a connection exists or is being made */
  int sock;                    /* the connected socket (curl's), -1 when none */
  int sock_added;              /* sock is in the epoll set (EPOLLONESHOT) */
  int sock_armed;              /* ... and armed: an event may still come */
  int want_io;                 /* send or receive without waiting for the fd first */
  int reused;                  /* the connection completed an exchange before this one */
  int retried;                 /* this request was already resent on a fresh connection */
  long long idle_since_ms;     /* when the connection's last exchange ended */
  const char *fail;            /* after a transfer: NULL when a reply came, else the error code
                                * ("NETWORK", "TIMEOUT", "TLS", "PROTOCOL", "TOO_LARGE"), with the
                                * message in errbuf */
  long timeout_ms;             /* of the request ... */
  long long deadline_ms;       /* ... and when it runs out */
  long long timer_due_ms;      /* curl's timer while connecting, -1 when unset */
  long long armed_ms;          /* what the timerfd is armed for (absolute ms), -1: disarmed */
  long long alarm_due_ms;      /* the owner's wake-up (zhttp_alarm) on the same clock, -1 when unset */
  int socket_errno;            /* errno of a failed socket() (EMFILE: out of fds), else 0 */
  long long window_start_ms;   /* low-speed window: starts when the reply's first bytes come */
  size_t window_bytes;         /* reply bytes received when the window started */
  char *req;                   /* the request, req_len bytes, req_sent of them sent */
  size_t req_len, req_sent, req_cap;
  zh1_reply reply;             /* the reply (status, Retry-After, body) when fail is NULL; its
                                * body buffer is kept between requests */
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
/* Starts a request; the body (may be NULL) is copied. Returns 0, or -1 with c->errbuf set.
 * path_query starts with "/" and is sent as it is (after the site's own path). */
int zhttp_start(zhttp_conn *c, const char *method, const char *path_query,
                const char *body, size_t body_len, long timeout_ms);
/* One bounded pass: waits up to wait_ms (0: not at all, < 0: until the transfer ends) for socket
 * or timer activity and lets curl act on it. Returns 1 when the transfer has ended (state DONE),
 * 0 when it goes on, -1 when a signal interrupted the wait (the caller should return to Lua). */
int zhttp_drive(zhttp_conn *c, long wait_ms);
void zhttp_abort(zhttp_conn *c);               /* ends an in-flight transfer, keeps the handles */
long zhttp_timeout_ms(const zhttp_conn *c);    /* ms until a call is due; -1: only on fd activity */
/* Makes the epoll fd readable after ms (0: at once; < 0: cancels) while no transfer runs, so a
 * foreign loop watching only that fd wakes for the owner's own timers (a retry's backoff). It
 * shares the timerfd with curl's timer (armed for the earlier of the two); starting a transfer
 * cancels it, and so does any expiry that zhttp_drive consumes. */
void zhttp_alarm(zhttp_conn *c, long ms);
void zhttp_reset_result(zhttp_conn *c);        /* DONE -> IDLE; keeps the buffers for reuse */
/* The debug trace of the last transfer (NULL when there is none) and its length; the next
 * zhttp_start empties it. The API key and the Authorization value are already scrubbed. */
const char *zhttp_trace(const zhttp_conn *c, size_t *len);
long long zhttp_now_ms(void);

#endif
