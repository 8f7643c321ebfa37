/* engine.c: a client's engine: one curl multi handle, driven through zpoll (see engine.h).
 * curl's socket and timer callbacks only record; curl is called back from zeng_drive alone. */
#include "engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void zsess_wipe(char *p) {
  volatile char *v = p;
  if (p == NULL) return;
  while (*v) *v++ = 0;
}

int zsess_strset(char **slot, const char *value) {
  char *copy = NULL;
  if (value != NULL) {
    size_t n = strlen(value) + 1;
    copy = malloc(n);
    if (copy == NULL) return -1;
    memcpy(copy, value, n);
  }
  zsess_wipe(*slot);  /* the old value may be a secret */
  free(*slot);
  *slot = copy;
  return 0;
}

static const char *zsess_site_path(const char *site) {
  const char *p = strstr(site, "://");
  p = p ? strchr(p + 3, '/') : NULL;
  return p ? p : "";
}

static void zsess_free_url(zsess *s) {
#if ZSESS_CURLU
  curl_url_cleanup(s->url);
#endif
  s->url = NULL;
}

/* The site, its path, and the site parsed once: libcurl copies a parsed URL (CURLOPT_CURLU) for
 * each request, where from CURLOPT_URL it parses the text again and prints it back (callgrind: 9.9k
 * of the 267k instructions a poll of bench row 2 costs). The flags are the ones libcurl parses
 * CURLOPT_URL with, so a site means what it meant. */
int zsess_set_site(zsess *s, const char *site) {
  zsess_free_url(s);
  s->site_path = "";
  if (zsess_strset(&s->base_url, site) != 0) return -1;
  if (s->base_url == NULL) return 0;
  s->site_path = zsess_site_path(s->base_url);
#if ZSESS_CURLU
  if ((s->url = curl_url()) == NULL) return -1;
  if (curl_url_set(s->url, CURLUPART_URL, s->base_url, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
    curl_url_cleanup(s->url);
    s->url = NULL;
  }
#endif
  return 0;
}

zsess *zsess_new(void) {
  zsess *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->refs = 1;
  s->site_path = "";
  s->connect_timeout_ms = 10000;
  s->max_reply_bytes = (size_t)256 << 20;
  s->low_speed_limit = 1024;
  s->low_speed_time = 30;
  return s;
}

/* The request headers, made once per client: curl would make each of them again for every request
 * (Basic auth from CURLOPT_USERNAME/PASSWORD, User-Agent, Accept-Encoding), with a printf that
 * appends one byte at a time: a fifth of the instructions curl spent on a poll. */
static void zsess_free_headers(struct curl_slist *l) {
  struct curl_slist *h;
  for (h = l; h != NULL; h = h->next) zsess_wipe(h->data);
  curl_slist_free_all(l);
}

/* Appends name + value to *l; 0, or -1 when out of memory. */
static int zsess_add_header(struct curl_slist **l, const char *name, const char *value) {
  size_t n = strlen(name) + strlen(value) + 1;
  char *line = malloc(n);
  struct curl_slist *more;
  if (line == NULL) return -1;
  snprintf(line, n, "%s%s", name, value);
  more = curl_slist_append(*l, line);  /* copies it */
  zsess_wipe(line);
  free(line);
  if (more == NULL) return -1;
  *l = more;
  return 0;
}

int zsess_headers(zsess *s) {
  const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  char encodings[64] = "";
  struct curl_slist *l = NULL;
  int failed = zsess_add_header(&l, "Expect:", "");  /* never wait for a 100 */
  failed |= zsess_add_header(&l, "Accept:", "");     /* curl's own Accept (any type) says nothing: not sent */
  failed |= zsess_add_header(&l, "Authorization: Basic ", s->userpwd_b64);
  if (s->user_agent != NULL) failed |= zsess_add_header(&l, "User-Agent: ", s->user_agent);
  /* what CURLOPT_ACCEPT_ENCODING "" would offer: every encoding this libcurl decodes */
  if (v->features & CURL_VERSION_LIBZ) strcat(encodings, ", deflate, gzip");
#ifdef CURL_VERSION_BROTLI
  if (v->features & CURL_VERSION_BROTLI) strcat(encodings, ", br");
#endif
#ifdef CURL_VERSION_ZSTD
  if (v->features & CURL_VERSION_ZSTD) strcat(encodings, ", zstd");
#endif
  if (encodings[0] != 0) failed |= zsess_add_header(&l, "Accept-Encoding: ", encodings + 2);
  if (failed) {
    zsess_free_headers(l);
    return -1;
  }
  zsess_free_headers(s->headers);
  s->headers = l;
  return 0;
}

void zsess_release(zsess *s) {
  char **strs[10];
  size_t i;
  if (s == NULL || --s->refs > 0) return;
  zsess_free_headers(s->headers);
  zsess_free_url(s);
  strs[0] = &s->base_url; strs[1] = &s->api_key; strs[2] = &s->userpwd_b64;
  strs[3] = &s->user_agent; strs[4] = &s->cert_bundle; strs[5] = &s->client_cert;
  strs[6] = &s->client_key; strs[7] = &s->proxy; strs[8] = &s->no_proxy; strs[9] = NULL;
  for (i = 0; strs[i] != NULL; i++) zsess_strset(strs[i], NULL);
  free(s);
}

/* ---- curl's callbacks: they only record ---- */

static int zeng_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp) {
  zeng *e = userp;
  (void)easy; (void)sockp;
  if (e->poll == NULL) return 0;
  zpoll_watch(e->poll, (int)fd, what == CURL_POLL_REMOVE ? 0 :
              ((what & CURL_POLL_IN) ? ZPOLL_IN : 0) | ((what & CURL_POLL_OUT) ? ZPOLL_OUT : 0));
  return 0;
}

static int zeng_on_timer(CURLM *multi, long timeout_ms, void *userp) {
  zeng *e = userp;
  (void)multi;
  /* + 1: zpoll_now_ms rounds down, and curl's own deadline is now + timeout to the microsecond;
   * acting up to 1 ms before it finds nothing due and costs a second wake-up. */
  e->curl_due_ms = timeout_ms < 0 ? -1 : zpoll_now_ms() + timeout_ms + (timeout_ms > 0);
  e->due_stale = 1;
  return 0;  /* the timer follows when control returns to the caller (zeng_rearm) */
}

/* ---- engines ---- */

zeng *zeng_new(zsess *s, char *err, size_t errlen) {
  zeng *e = calloc(1, sizeof *e);
  if (e == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  e->refs = 1;
  e->curl_due_ms = e->alarm_ms = -1;
  e->due_stale = 1;
  e->poll = zpoll_new(err, errlen);
  if (e->poll == NULL) {
    free(e);
    return NULL;
  }
  errno = 0;
  e->multi = curl_multi_init();  /* makes a socket pair for curl_multi_wakeup: fds too */
  if (e->multi == NULL) {
    if (errno == EMFILE || errno == ENFILE)
      snprintf(err, errlen, "out of file descriptors (%s): raise the open-files limit "
               "(ulimit -n, RLIMIT_NOFILE) or close clients", strerror(errno));
    else
      snprintf(err, errlen, "out of memory");
    zpoll_free(e->poll);
    free(e);
    return NULL;
  }
  curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, zeng_on_socket);
  curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
  curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, zeng_on_timer);
  curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
  /* HTTP/2 multiplexing is curl's default (CURLPIPE_MULTIPLEX); each transfer sets PIPEWAIT so
   * that requests started together wait for one connection instead of opening one each. */
  s->refs++;
  e->sess = s;
  return e;
}

void zeng_close(zeng *e) {
  if (e->closed) return;
  e->closed = 1;  /* first: zxfer_cancel below sees it */
  while (e->running != NULL) zxfer_cancel(e->running);
  while (e->done != NULL) zxfer_cancel(e->done);
  curl_multi_cleanup(e->multi);  /* closes the connections; no waiting */
  e->multi = NULL;
  zpoll_free(e->poll);
  e->poll = NULL;
}

void zeng_release(zeng *e) {
  if (e == NULL || --e->refs > 0) return;
  zeng_close(e);
  zsess_release(e->sess);
  free(e);
}

int zeng_fd(const zeng *e) {
  return e->closed ? -1 : zpoll_fd(e->poll);
}

static long long zeng_min(long long a, long long b) {
  if (a < 0) return b;
  if (b < 0) return a;
  return a < b ? a : b;
}

/* When the engine next needs a call without socket activity (curl's timer, a transfer's connect
 * deadline or low-speed window), -1: never. */
static long long zeng_due(zeng *e) {
  long long due = e->curl_due_ms;
  const zxfer *x;
  if (!e->due_stale) return e->due_ms;
  for (x = e->running; x != NULL; x = x->next) due = zeng_min(due, zxfer_due_ms(x));
  e->due_ms = due;
  e->due_stale = 0;
  return due;
}

static void zeng_rearm(zeng *e) {
  if (!e->closed) zpoll_arm(e->poll, zeng_min(zeng_due(e), e->alarm_ms));
}

void zeng_alarm(zeng *e, long ms) {
  e->alarm_ms = ms < 0 ? -1 : zpoll_now_ms() + ms;
  zeng_rearm(e);
}

long zeng_timeout_ms(zeng *e) {
  long long due, now;
  if (e->closed) return -1;
  if (e->done != NULL) return 0;
  due = zeng_due(e);
  /* without one fd that carries the timer (poll(2)), the loop must wake for the alarm itself */
  if (!zpoll_single_fd()) due = zeng_min(due, e->alarm_ms);
  if (due < 0) return -1;
  now = zpoll_now_ms();
  return due <= now ? 0 : (long)(due - now);
}

static void zeng_collect(zeng *e) {
  CURLMsg *msg;
  int left;
  while (!e->closed && (msg = curl_multi_info_read(e->multi, &left)) != NULL) {
    zxfer *x = NULL;
    if (msg->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    if (x != NULL && x->state == ZXFER_RUNNING) zxfer_finish(x, msg->data.result);
  }
}

static void zeng_act(zeng *e, curl_socket_t fd, int flags) {
  int running;
  curl_multi_socket_action(e->multi, fd, flags, &running);
  e->due_stale = 1;  /* curl's callbacks ran: a reply may have started its low-speed window */
  zeng_collect(e);
}

/* What is due now, done. */
static void zeng_due_now(zeng *e) {
  long long now = zpoll_now_ms();
  zxfer *x, *next;
  e->due_stale = 1;  /* what is checked below moves or ends */
  if (e->curl_due_ms >= 0 && e->curl_due_ms <= now) {
    e->curl_due_ms = -1;
    zeng_act(e, CURL_SOCKET_TIMEOUT, 0);
  }
  for (x = e->running; x != NULL; x = next) {
    long long due = zxfer_due_ms(x);
    next = x->next;
    /* a pending connect deadline is looked at on every pass: once the request is out it goes
     * before the fd is re-armed, so a kept connection never wakes the loop for it */
    if (x->connect_due_ms >= 0 || (due >= 0 && due <= now)) zxfer_check(x, now);
  }
  if (e->alarm_ms >= 0 && e->alarm_ms <= now) e->alarm_ms = -1;  /* a drive is the wake-up it asked for */
}

static int zeng_count_done(const zeng *e) {
  int n = 0;
  const zxfer *x;
  for (x = e->done; x != NULL; x = x->next_done) n += !x->detached;
  return n;
}

int zeng_drive(zeng *e, long wait_ms) {
  long long deadline = wait_ms < 0 ? -1 : zpoll_now_ms() + wait_ms;
  int polled = 0;
  if (e->closed) return 0;
  for (;;) {
    zpoll_event evs[16];
    long long now, due;
    long t;
    int n, i;
    zeng_due_now(e);
    /* any transfer that ended, a background one too: a caller waiting for the backgrounds to
     * end (a blocking q:close) must see it now, not at its deadline */
    if (e->closed || e->done != NULL) break;
    now = zpoll_now_ms();
    if (polled && deadline >= 0 && now >= deadline) break;
    if (e->running == NULL && deadline < 0) break;  /* nothing can end: never wait for ever */
    due = zeng_min(zeng_due(e), deadline);
    t = due < 0 ? -1 : (due > now ? (long)(due - now) : 0);
    n = zpoll_wait(e->poll, t, evs, (int)(sizeof evs / sizeof evs[0]));
    polled = 1;
    if (n < 0) {
      zeng_rearm(e);
      return -1;
    }
    for (i = 0; i < n && !e->closed; i++) {
      if (evs[i].fd < 0) continue;  /* the timer: zeng_due_now looks at what fell due */
      zeng_act(e, (curl_socket_t)evs[i].fd,
               ((evs[i].what & ZPOLL_IN) ? CURL_CSELECT_IN : 0) | ((evs[i].what & ZPOLL_OUT) ? CURL_CSELECT_OUT : 0) |
               ((evs[i].what & ZPOLL_ERR) ? CURL_CSELECT_ERR : 0));
    }
  }
  zeng_rearm(e);  /* the fd now tells a foreign loop when the next call is due */
  return zeng_count_done(e);
}

int zeng_detached(const zeng *e) {
  int n = 0;
  const zxfer *x;
  for (x = e->running; x != NULL; x = x->next) n += x->detached;
  return n;
}

zxfer *zeng_take(zeng *e) {
  zxfer *x;
  while ((x = e->done) != NULL && x->detached) zxfer_cancel(x);  /* ended: nobody to tell, free it */
  if (x == NULL) return NULL;
  e->done = x->next_done;
  if (e->done == NULL) e->done_tail = NULL;
  x->next_done = NULL;
  x->state = ZXFER_IDLE;  /* its result stays readable until the next start */
  x->refs--;              /* the engine's reference (the caller holds its own) */
  return x;
}
