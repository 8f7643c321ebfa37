/* poll_poll.c: zpoll with plain POSIX poll(2), for any Unix without epoll or kqueue (see zpoll.h).
 *
 * poll(2) keeps no set in the kernel, so there is no fd that aggregates the sockets. What this
 * poller promises a foreign loop instead (the list and the pipe are pollset.c's):
 *   zpoll_fd   the read end of a self-pipe, readable while the timer is armed for a time that was
 *              already due when it was armed: work to do at once (zeng_alarm(0): a callback to
 *              run, a request to start). Arming it for later, or disarming it, empties the pipe,
 *              as timerfd_settime does to a timerfd;
 *   zpoll_fds  the pipe, then every socket with the events curl wants on it: a loop that watches
 *              them all (zulip.step_all) sees every socket's activity at once;
 *   the timer  nothing makes the pipe readable when a later time falls due (no thread runs then):
 *              that time is counted in zeng_timeout_ms, so a loop must also wake when the timeout
 *              it was given has passed.
 * Blocking calls (zpoll_wait) poll the pipe and the sockets themselves. */
#define _POSIX_C_SOURCE 200809L
#include "zpoll.h"
#include "pollset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct zpoll {
  zpoll_set set;
  long long armed_ms;  /* the timer, -1: disarmed */
};

const char *zpoll_name(void) {
  return "poll";
}

int zpoll_single_fd(void) {
  return 0;
}

zpoll *zpoll_new(char *err, size_t errlen) {
  zpoll *p = calloc(1, sizeof *p);
  if (p == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  if (zpoll_set_init(&p->set, err, errlen) != 0) {
    free(p);
    return NULL;
  }
  p->armed_ms = -1;
  return p;
}

void zpoll_free(zpoll *p) {
  if (p == NULL) return;
  zpoll_set_free(&p->set);
  free(p);
}

int zpoll_fd(const zpoll *p) {
  return p->set.pipe_r;
}

int zpoll_fds(const zpoll *p, zpoll_event *evs, int max) {
  return zpoll_set_fds(&p->set, evs, max);
}

void zpoll_watch(zpoll *p, int fd, int what) {
  zpoll_set_watch(&p->set, fd, what);
}

/* a list in memory: stopping is free already */
void zpoll_own(zpoll *p, int fd) {
  (void)p; (void)fd;
}

void zpoll_forget(zpoll *p, int fd) {
  zpoll_set_watch(&p->set, fd, 0);
}

void zpoll_arm(zpoll *p, long long due) {
  if (due == p->armed_ms) return;
  zpoll_set_signal(&p->set, due >= 0 && due <= zpoll_now_ms());
  p->armed_ms = due;
}

int zpoll_wait(zpoll *p, long ms, zpoll_event *evs, int max) {
  zpoll_set *s = &p->set;
  int n, i, k = 0, t;
  if (p->armed_ms >= 0) {
    long long now = zpoll_now_ms(), left = p->armed_ms > now ? p->armed_ms - now : 0;
    if (ms < 0 || left < ms) ms = (long)left;
  }
  t = ms < 0 ? -1 : (int)(ms > 86400000L ? 86400000L : ms);
  n = poll(s->fds, (nfds_t)s->nfds, t);
  if (n < 0) return errno == EINTR ? -1 : 0;
  if (p->armed_ms >= 0 && p->armed_ms <= zpoll_now_ms() && max > 0) {
    p->armed_ms = -1;  /* one-shot: it fired, and the wake-up the pipe carried is this call */
    zpoll_set_signal(s, 0);
    evs[k].fd = -1;
    evs[k++].what = ZPOLL_IN;
  }
  for (i = 1; n > 0 && i < s->nfds && k < max; i++) {
    if (s->fds[i].revents == 0) continue;
    evs[k].fd = s->fds[i].fd;
    evs[k++].what = zpoll_set_what(s->fds[i].revents);
  }
  return k;
}
