/* poll_epoll.c: zpoll on Linux: an epoll set holding the sockets and a timerfd (see zpoll.h). */
#define _GNU_SOURCE
#include "zpoll.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>

/* What the set knows of a socket, by fd. Adding to an epoll set allocates in the kernel what
 * deleting frees: a socket whose closing is announced (zpoll_own, zpoll_forget) stays in the set
 * between requests, parked with no events, so a kept connection's poll costs two cheap changes
 * (1.1 us less here than delete, then add). A parked socket reports only an error or a hang-up,
 * not the end of its input: a server that drops an idle connection wakes no loop. */
enum {
  ZPE_IN = 1, ZPE_OUT = 2,  /* the events it is in the epoll set for: none when parked */
  ZPE_ADDED = 4,            /* in the epoll set, as far as this set knows */
  ZPE_OWNED = 8             /* zpoll_forget comes before it closes */
};

struct zpoll {
  int epfd, tfd;
  long long armed_ms;  /* what the timerfd is armed for, -1: disarmed */
  unsigned char *fdst; /* ZPE_* by fd, fdst_len of them (0 past the end) */
  int fdst_len;
};

static unsigned zpoll_state(const zpoll *p, int fd) {
  return fd >= 0 && fd < p->fdst_len ? p->fdst[fd] : 0u;
}

/* In the epoll set for no events. */
static int zpoll_parked(unsigned st) {
  return (st & (ZPE_ADDED | ZPE_IN | ZPE_OUT)) == ZPE_ADDED;
}

/* Records st for fd; out of memory, the set keeps no state for it (and so deletes it from the
 * epoll set when its watching stops, as for a socket not owned). */
static void zpoll_set_state(zpoll *p, int fd, unsigned st) {
  if (fd < 0) return;
  if (fd >= p->fdst_len) {
    int len = p->fdst_len ? p->fdst_len : 64;
    unsigned char *more;
    if (st == 0) return;
    while (len <= fd && len < (1 << 24)) len *= 2;
    if (len <= fd) return;
    more = realloc(p->fdst, (size_t)len);
    if (more == NULL) return;
    memset(more + p->fdst_len, 0, (size_t)(len - p->fdst_len));
    p->fdst = more;
    p->fdst_len = len;
  }
  p->fdst[fd] = (unsigned char)st;
}

const char *zpoll_name(void) {
  return "epoll";
}

int zpoll_single_fd(void) {
  return 1;
}

zpoll *zpoll_new(char *err, size_t errlen) {
  struct epoll_event ev;
  zpoll *p = calloc(1, sizeof *p);
  if (p == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  p->armed_ms = -1;
  p->tfd = -1;
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->epfd >= 0) p->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (p->epfd < 0 || p->tfd < 0) {
    int e = errno;
    if (e == EMFILE || e == ENFILE)
      snprintf(err, errlen, "out of file descriptors (%s): raise the open-files limit "
               "(ulimit -n, RLIMIT_NOFILE) or close clients", strerror(e));
    else
      snprintf(err, errlen, "cannot make its epoll/timer fds: %s", strerror(e));
    zpoll_free(p);
    return NULL;
  }
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.fd = -1;
  epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->tfd, &ev);
  return p;
}

void zpoll_free(zpoll *p) {
  if (p == NULL) return;
  if (p->epfd >= 0) close(p->epfd);
  if (p->tfd >= 0) close(p->tfd);
  free(p->fdst);
  free(p);
}

int zpoll_fd(const zpoll *p) {
  return p->epfd;
}

int zpoll_fds(const zpoll *p, zpoll_event *evs, int max) {
  if (max > 0) {
    evs[0].fd = p->epfd;
    evs[0].what = ZPOLL_IN;
  }
  return 1;
}

static void zpoll_ctl(zpoll *p, int fd, unsigned want, unsigned st) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = ((want & ZPE_IN) ? EPOLLIN : 0u) | ((want & ZPE_OUT) ? EPOLLOUT : 0u);
  ev.data.fd = fd;
  if (st & ZPE_ADDED) {
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
      epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev);
  } else if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST) {
    epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev);
  }
  zpoll_set_state(p, fd, (st & ZPE_OWNED) | ZPE_ADDED | want);
}

void zpoll_watch(zpoll *p, int fd, int what) {
  unsigned st = zpoll_state(p, fd), want;
  if (what == 0) {
    if ((st & (ZPE_OWNED | ZPE_ADDED)) == (ZPE_OWNED | ZPE_ADDED)) {
      if (!zpoll_parked(st)) zpoll_ctl(p, fd, 0, st);  /* parked: stays, with no events */
      return;
    }
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);  /* fails harmlessly if curl closed it already */
    zpoll_set_state(p, fd, st & ZPE_OWNED);
    return;
  }
  want = ((what & ZPOLL_IN) ? ZPE_IN : 0u) | ((what & ZPOLL_OUT) ? ZPE_OUT : 0u);
  zpoll_ctl(p, fd, want, st);  /* even when st says it is so: st may predate a close */
}

void zpoll_own(zpoll *p, int fd) {
  zpoll_set_state(p, fd, ZPE_OWNED);  /* a new socket: not in the set, whatever its number was */
}

void zpoll_forget(zpoll *p, int fd) {
  /* deleted before the close, not by it: a forked child holding the socket would keep it in the
   * set, reporting for an fd number that is no longer it */
  if (zpoll_state(p, fd) & ZPE_ADDED) epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
  zpoll_set_state(p, fd, 0);
}

/* timerfd_settime costs 5-20 us in a VM, so it is called only when what is armed changes. */
void zpoll_arm(zpoll *p, long long due) {
  struct itimerspec its;
  if (due == p->armed_ms) return;
  memset(&its, 0, sizeof its);
  if (due >= 0) {
    its.it_value.tv_sec = (time_t)(due / 1000);
    its.it_value.tv_nsec = (long)(due % 1000) * 1000000L;
    if (due == 0) its.it_value.tv_nsec = 1;  /* an all-zero it_value would disarm the timer */
  }
  timerfd_settime(p->tfd, TFD_TIMER_ABSTIME, &its, NULL);
  p->armed_ms = due;
}

int zpoll_wait(zpoll *p, long ms, zpoll_event *evs, int max) {
  struct epoll_event ev[16];
  int n, i, k = 0;
  if (max > 16) max = 16;
  n = epoll_wait(p->epfd, ev, max, ms < 0 ? -1 : (int)(ms > 86400000L ? 86400000L : ms));
  if (n < 0) return errno == EINTR ? -1 : 0;
  for (i = 0; i < n; i++) {
    if (ev[i].data.fd == -1) {
      unsigned long long expirations;
      if (read(p->tfd, &expirations, sizeof expirations) < 0) { /* already drained */ }
      p->armed_ms = -1;  /* one-shot: it fired */
      evs[k].fd = -1;
      evs[k++].what = ZPOLL_IN;
      continue;
    }
    if (zpoll_parked(zpoll_state(p, ev[i].data.fd))) {
      /* a parked socket's error or hang-up: curl finds it dead when it next looks */
      epoll_ctl(p->epfd, EPOLL_CTL_DEL, ev[i].data.fd, NULL);
      zpoll_set_state(p, ev[i].data.fd, ZPE_OWNED);
      continue;
    }
    evs[k].fd = ev[i].data.fd;
    evs[k++].what = ((ev[i].events & EPOLLIN) ? ZPOLL_IN : 0) | ((ev[i].events & EPOLLOUT) ? ZPOLL_OUT : 0) |
                    ((ev[i].events & (EPOLLERR | EPOLLHUP)) ? ZPOLL_ERR : 0);
  }
  return k;
}
