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

struct zpoll {
  int epfd, tfd;
  long long armed_ms;  /* what the timerfd is armed for, -1: disarmed */
};

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

void zpoll_watch(zpoll *p, int fd, int what) {
  struct epoll_event ev;
  if (what == 0) {
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);  /* fails harmlessly if curl closed it already */
    return;
  }
  memset(&ev, 0, sizeof ev);
  ev.events = ((what & ZPOLL_IN) ? EPOLLIN : 0u) | ((what & ZPOLL_OUT) ? EPOLLOUT : 0u);
  ev.data.fd = fd;
  if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev);
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
    evs[k].fd = ev[i].data.fd;
    evs[k++].what = ((ev[i].events & EPOLLIN) ? ZPOLL_IN : 0) | ((ev[i].events & EPOLLOUT) ? ZPOLL_OUT : 0) |
                    ((ev[i].events & (EPOLLERR | EPOLLHUP)) ? ZPOLL_ERR : 0);
  }
  return k;
}
