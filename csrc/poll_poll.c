/* poll_poll.c: zpoll with plain POSIX poll(2), for any Unix without epoll or kqueue (see zpoll.h).
 *
 * poll(2) keeps no set in the kernel, so there is no fd that aggregates the sockets. What this
 * poller promises a foreign loop instead:
 *   zpoll_fd   the read end of a self-pipe, readable when the timer is armed for a time already
 *              due: work to do at once (zeng_alarm(0): a callback to run, a request to start);
 *   zpoll_fds  the pipe, then every socket with the events curl wants on it: a loop that watches
 *              them all (zulip.step_all, zulip.uv) sees every socket's activity at once;
 *   the timer  nothing fires it behind the loop's back: its time is counted in zeng_timeout_ms,
 *              so a loop must also wake when the timeout it was given has passed.
 * Blocking calls (zpoll_wait) poll the pipe and the sockets themselves. */
#define _POSIX_C_SOURCE 200809L
#include "zpoll.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct zpoll {
  int pipe_r, pipe_w;  /* the self-pipe, both ends non-blocking and close-on-exec */
  int signalled;       /* a byte is in the pipe */
  long long armed_ms;  /* the timer, -1: disarmed */
  struct pollfd *fds;  /* [0] is pipe_r; then the sockets, nfds in all */
  int nfds, cap;
};

const char *zpoll_name(void) {
  return "poll";
}

int zpoll_single_fd(void) {
  return 0;
}

/* O_NONBLOCK and FD_CLOEXEC by fcntl: pipe2(2) is not in every Unix. */
static int zpoll_set_flags(int fd) {
  int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);
  if (fl < 0 || fdf < 0) return -1;
  if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  return fcntl(fd, F_SETFD, fdf | FD_CLOEXEC);
}

zpoll *zpoll_new(char *err, size_t errlen) {
  int fds[2] = { -1, -1 };
  zpoll *p = calloc(1, sizeof *p);
  if (p != NULL) p->fds = malloc(8 * sizeof *p->fds);
  if (p == NULL || p->fds == NULL) {
    if (p != NULL) free(p);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  p->cap = 8;
  p->armed_ms = -1;
  if (pipe(fds) != 0 || zpoll_set_flags(fds[0]) != 0 || zpoll_set_flags(fds[1]) != 0) {
    int e = errno;
    if (e == EMFILE || e == ENFILE)
      snprintf(err, errlen, "out of file descriptors (%s): raise the open-files limit "
               "(ulimit -n, RLIMIT_NOFILE) or close clients", strerror(e));
    else
      snprintf(err, errlen, "cannot make its self-pipe: %s", strerror(e));
    if (fds[0] >= 0) close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
    free(p->fds);
    free(p);
    return NULL;
  }
  p->pipe_r = fds[0];
  p->pipe_w = fds[1];
  p->fds[0].fd = p->pipe_r;
  p->fds[0].events = POLLIN;
  p->nfds = 1;
  return p;
}

void zpoll_free(zpoll *p) {
  if (p == NULL) return;
  close(p->pipe_r);
  close(p->pipe_w);
  free(p->fds);
  free(p);
}

int zpoll_fd(const zpoll *p) {
  return p->pipe_r;
}

static int zpoll_what(short events) {
  return ((events & POLLIN) ? ZPOLL_IN : 0) | ((events & POLLOUT) ? ZPOLL_OUT : 0);
}

int zpoll_fds(const zpoll *p, zpoll_event *evs, int max) {
  int i;
  for (i = 0; i < p->nfds && i < max; i++) {
    evs[i].fd = p->fds[i].fd;
    evs[i].what = zpoll_what(p->fds[i].events);
  }
  return p->nfds;
}

void zpoll_watch(zpoll *p, int fd, int what) {
  short events = (short)(((what & ZPOLL_IN) ? POLLIN : 0) | ((what & ZPOLL_OUT) ? POLLOUT : 0));
  int i;
  for (i = 1; i < p->nfds && p->fds[i].fd != fd; i++) {}
  if (i < p->nfds) {
    if (events != 0) {
      p->fds[i].events = events;
    } else {
      p->fds[i] = p->fds[--p->nfds];  /* order does not matter past the pipe */
    }
    return;
  }
  if (events == 0) return;
  if (p->nfds == p->cap) {
    /* curl's socket callback cannot fail, so out of memory leaves the socket unwatched: the
     * transfer then ends on its own timeout, not in a hang */
    struct pollfd *bigger = p->cap > INT_MAX / 2 ? NULL : realloc(p->fds, (size_t)p->cap * 2 * sizeof *bigger);
    if (bigger == NULL) return;
    p->fds = bigger;
    p->cap *= 2;
  }
  p->fds[p->nfds].fd = fd;
  p->fds[p->nfds].events = events;
  p->fds[p->nfds].revents = 0;
  p->nfds++;
}

static void zpoll_drain(zpoll *p) {
  char buf[64];
  if (!p->signalled) return;
  while (read(p->pipe_r, buf, sizeof buf) > 0) {}
  p->signalled = 0;
}

/* Like a timerfd: the pipe is readable exactly while the timer is armed for a time that was due
 * when it was armed (work to do at once: a callback to run, a request to start), so a loop that
 * watches only the pipe gets that. Arming it again for later, or disarming it, makes the pipe
 * unreadable again. A timer for later does not make it readable when it falls due: nothing runs
 * then to write the byte (the loop wakes for it through timeout(), see above). */
void zpoll_arm(zpoll *p, long long due) {
  if (due == p->armed_ms) return;
  if (due >= 0 && due <= zpoll_now_ms()) {
    if (!p->signalled) {
      char b = 1;
      if (write(p->pipe_w, &b, 1) == 1) p->signalled = 1;
    }
  } else {
    zpoll_drain(p);
  }
  p->armed_ms = due;
}

int zpoll_wait(zpoll *p, long ms, zpoll_event *evs, int max) {
  long long now = zpoll_now_ms();
  int n, i, k = 0, t;
  if (p->armed_ms >= 0) {
    long long left = p->armed_ms > now ? p->armed_ms - now : 0;
    if (ms < 0 || left < ms) ms = (long)left;
  }
  t = ms < 0 ? -1 : (int)(ms > 86400000L ? 86400000L : ms);
  n = poll(p->fds, (nfds_t)p->nfds, t);
  if (n < 0) return errno == EINTR ? -1 : 0;
  if (p->armed_ms >= 0 && p->armed_ms <= zpoll_now_ms() && k < max) {
    p->armed_ms = -1;  /* one-shot: it fired */
    evs[k].fd = -1;
    evs[k++].what = ZPOLL_IN;
  }
  if (n == 0) return k;
  if (p->fds[0].revents != 0) zpoll_drain(p);  /* the wake-up it carried is this very call */
  for (i = 1; i < p->nfds && k < max; i++) {
    short r = p->fds[i].revents;
    if (r == 0) continue;
    evs[k].fd = p->fds[i].fd;
    evs[k++].what = zpoll_what(r) | ((r & (POLLERR | POLLHUP | POLLNVAL)) ? ZPOLL_ERR : 0);
  }
  return k;
}
