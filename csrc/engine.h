/* engine.h: the transport, with no Lua in it. libcurl does the HTTP; this drives it.
 *
 * zsess   what every request of one client shares: site, credentials, TLS and proxy settings,
 *         limits. Reference-counted: engines and their transfers may outlive the Lua object.
 * zeng    one client's engine: a curl multi handle driven through zpoll (its sockets and one
 *         timer behind a single fd, for foreign event loops), so all of a client's requests and
 *         queues share connections (HTTP/2 streams where the server offers h2) and one fd.
 * zxfer   one HTTP request at a time on an easy handle of its own, reused for the next one.
 *
 * What libcurl does not do and this code does: a limit on the decompressed reply, the low-speed
 * rule for replies that have started (curl's own counts from the start, so it would end an idle
 * long-poll), Retry-After as a float, and refusing request text HTTP cannot carry. */
#ifndef ZULIP_ENGINE_H
#define ZULIP_ENGINE_H

#include <stddef.h>
#include <curl/curl.h>
#include "zpoll.h"

#if LIBCURL_VERSION_NUM >= 0x073f00  /* CURLOPT_CURLU: 7.63 */
#define ZSESS_CURLU 1
typedef CURLU zsess_url;
#else
#define ZSESS_CURLU 0
typedef void zsess_url;
#endif

typedef struct zsess {
  int refs;
  char *base_url;              /* "https://chat.example.com", no trailing slash */
  const char *site_path;       /* in base_url: its path ("/zulip"), which every request target
                                * starts with; "" for most sites (zsess_set_site) */
  zsess_url *url;              /* base_url parsed once, which each transfer is given (CURLOPT_CURLU);
                                * NULL when curl could not parse it (curl then says why per request) */
  char *api_key;               /* secret: never printed; kept only to scrub it from the trace */
  char *userpwd_b64;           /* base64 of "email:key", only to scrub it from the trace */
  char *user_agent;
  struct curl_slist *headers;  /* what every request sends: Authorization (secret), User-Agent, ... */
  char *cert_bundle, *client_cert, *client_key;
  char *proxy, *no_proxy;      /* NULL: none (libcurl is not left to read the environment) */
  int insecure;
  int debug;                   /* collect curl's verbose trace (secrets scrubbed) per transfer */
  long connect_timeout_ms;
  size_t max_reply_bytes;
  long low_speed_limit;        /* bytes/s a started reply must keep up ... */
  long low_speed_time;         /* ... over this many seconds */
} zsess;

typedef struct zxfer zxfer;

typedef struct zeng {
  int refs;                    /* the Lua object and each transfer */
  int closed;
  CURLM *multi;
  zpoll *poll;
  zsess *sess;                 /* counted reference */
  long long curl_due_ms;       /* curl's timer, -1 when unset */
  /* zeng_due's answer, kept until due_stale (set when a transfer starts, ends or moves a deadline,
   * and when curl ran): a loop may ask for the timeout of each of a thousand queues, and each
   * answer would walk every running transfer */
  long long due_ms;
  int due_stale;
  int curl_connects;           /* our connect deadline ended a transfer: until a reply comes, requests
                                * use curl's own, which moves on to a host's next address in time */
  long long alarm_ms;          /* the owner's wake-up (zeng_alarm), -1 when unset */
  zxfer *running;              /* transfers in the multi handle */
  zxfer *done, *done_tail;     /* finished, not yet taken by zeng_take */
} zeng;

enum zxfer_state { ZXFER_IDLE, ZXFER_RUNNING, ZXFER_DONE };

struct zxfer {
  int refs;                    /* the Lua object, and the engine while it runs */
  int detached;                /* no Lua object: a request nobody waits for, freed when it ends */
  zeng *eng;                   /* counted reference */
  CURL *easy;
  enum zxfer_state state;
  zxfer *prev, *next;          /* in eng->running */
  zxfer *next_done;            /* in eng->done */
  char *target;                /* the site's path + the path and query of the current request */
  char *body;                  /* the reply body, body_len bytes, NUL after them */
  size_t body_len, body_cap;
  size_t header_bytes;         /* of the reply so far, for the header limit */
  long status;
  double retry_after;          /* from Retry-After, seconds; < 0 when absent */
  const char *fail;            /* after the transfer: NULL when a reply came, else the code ("NETWORK",
                                * "TIMEOUT", "TLS", "PROTOCOL", "TOO_LARGE", "CANCELLED"), with the
                                * message in errbuf */
  int too_large;               /* a callback stopped the transfer: over max_reply_bytes */
  int socket_errno;            /* errno of a failed socket() (EMFILE: out of fds), else 0 */
  int sent;                    /* any byte of the request went out */
  long long connect_due_ms;    /* our connect deadline, until the request is out; -1: none (or curl's) */
  long long window_start_ms;   /* low-speed window: starts when the reply's first bytes come, -1 */
  size_t window_bytes;         /* reply bytes when the window started */
  size_t received;             /* reply bytes so far, headers included */
  char *trace;                 /* with sess->debug: "* text", "> sent header", "< received header" */
  size_t trace_len, trace_cap; /* lines, each ending in \n; emptied by each start */
  int trace_full;
  char errbuf[CURL_ERROR_SIZE];
};

/* Sessions. */
zsess *zsess_new(void);                         /* NULL when out of memory */
void zsess_release(zsess *s);                   /* drops one reference; frees (and wipes) at zero */
int zsess_headers(zsess *s);                    /* makes s->headers (credentials, user agent); 0 ok */
int zsess_strset(char **slot, const char *value); /* copies value into *slot (wiping the old); 0 ok */
int zsess_set_site(zsess *s, const char *site);   /* base_url, site_path and url; 0 ok, -1 out of memory */

/* Engines. zeng_new returns NULL with a reason in err. */
zeng *zeng_new(zsess *s, char *err, size_t errlen);
void zeng_close(zeng *e);                       /* cancels every transfer, frees curl and zpoll */
void zeng_release(zeng *e);                     /* drops one reference */
int zeng_fd(const zeng *e);                     /* -1 once closed */
/* One bounded pass: waits up to wait_ms (0: not at all, < 0: until a transfer ends) for socket or
 * timer activity and lets curl act on it. Returns the number of finished transfers waiting in
 * eng->done, or -1 when a signal interrupted the wait (the caller should return to Lua). */
int zeng_drive(zeng *e, long wait_ms);
zxfer *zeng_take(zeng *e);                      /* the next finished transfer, or NULL */
int zeng_detached(const zeng *e);               /* detached transfers still running */
long zeng_timeout_ms(zeng *e);                  /* ms until a drive is due; -1: only on fd activity
                                                 * (with poll(2) the alarm counts too: see zpoll.h) */
/* Makes the fd readable after ms (0: at once; < 0: cancels), so a loop watching only the fd wakes
 * for the owner's own timers (a retry's backoff, a queue with events to hand out). One-shot:
 * the next drive consumes it. */
void zeng_alarm(zeng *e, long ms);

/* Transfers. */
zxfer *zxfer_new(zeng *e, char *err, size_t errlen);
void zxfer_release(zxfer *x);                   /* cancels it if running; frees at zero */
/* Starts a request: path_query ("/api/v1/...") goes after the site; body (may be NULL) is the form
 * body for POST, PUT and PATCH. Returns 0, or -1 with the reason in x->errbuf (text HTTP cannot
 * carry, out of memory, a closed engine). */
int zxfer_start(zxfer *x, const char *method, const char *path_query, const char *body, size_t body_len,
                long timeout_ms);
void zxfer_cancel(zxfer *x);                    /* ends a running transfer; no callback, no result */
/* Starts a request that no Lua object owns (a queue's DELETE from the garbage collector, which
 * must not make new Lua objects: at lua_close this module may be unloaded before they are
 * finalized). It is freed when it ends. Returns 0, or -1 with the reason in err. */
int zxfer_detached(zeng *e, const char *method, const char *path_query, long timeout_ms, char *err, size_t errlen);
/* Engine internals shared by engine.c and xfer.c. */
void zxfer_finish(zxfer *x, CURLcode rc);       /* curl said it ended: classify, move to done */
long long zxfer_due_ms(const zxfer *x);         /* when its deadlines must be checked, -1: never */
/* Ends a running transfer whose connect deadline or low-speed window has passed (moved to done);
 * forgets the connect deadline once the request is out. */
void zxfer_check(zxfer *x, long long now);

/* The trace (trace.c). */
void ztrace_line(zxfer *x, char prefix, const char *line, size_t n);
int ztrace_on_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *userp);
char *ztrace_base64(const char *in);            /* malloc'd; NULL when out of memory */

#endif
