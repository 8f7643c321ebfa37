/* pollset.c: the socket list and self-pipe of pollers without one pollable fd (see pollset.h). */
#define _POSIX_C_SOURCE 200809L
#include "pollset.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* O_NONBLOCK and FD_CLOEXEC by fcntl: pipe2(2) is not in every Unix. */
static int zpoll_set_flags(int fd) {
  int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);
  if (fl < 0 || fdf < 0) return -1;
  if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  return fcntl(fd, F_SETFD, fdf | FD_CLOEXEC);
}

int zpoll_set_init(zpoll_set *s, char *err, size_t errlen) {
  int fds[2] = { -1, -1 };
  memset(s, 0, sizeof *s);
  s->pipe_r = s->pipe_w = -1;
  s->fds = malloc(8 * sizeof *s->fds);
  if (s->fds == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  s->cap = 8;
  if (pipe(fds) != 0 || zpoll_set_flags(fds[0]) != 0 || zpoll_set_flags(fds[1]) != 0) {
    int e = errno;
    if (e == EMFILE || e == ENFILE)
      snprintf(err, errlen, "out of file descriptors (%s): raise the open-files limit "
               "(ulimit -n, RLIMIT_NOFILE) or close clients", strerror(e));
    else
      snprintf(err, errlen, "cannot make its self-pipe: %s", strerror(e));
    if (fds[0] >= 0) close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
    free(s->fds);
    s->fds = NULL;
    return -1;
  }
  s->pipe_r = fds[0];
  s->pipe_w = fds[1];
  s->fds[0].fd = s->pipe_r;
  s->fds[0].events = POLLIN;
  s->fds[0].revents = 0;
  s->nfds = 1;
  return 0;
}

void zpoll_set_free(zpoll_set *s) {
  if (s->pipe_r >= 0) close(s->pipe_r);
  if (s->pipe_w >= 0) close(s->pipe_w);
  free(s->fds);
  s->fds = NULL;
  s->pipe_r = s->pipe_w = -1;
}

int zpoll_set_what(short revents) {
  return ((revents & POLLIN) ? ZPOLL_IN : 0) | ((revents & POLLOUT) ? ZPOLL_OUT : 0) |
         ((revents & (POLLERR | POLLHUP | POLLNVAL)) ? ZPOLL_ERR : 0);
}

int zpoll_set_fds(const zpoll_set *s, zpoll_event *evs, int max) {
  int i;
  for (i = 0; i < s->nfds && i < max; i++) {
    evs[i].fd = s->fds[i].fd;
    evs[i].what = zpoll_set_what(s->fds[i].events);
  }
  return s->nfds;
}

void zpoll_set_watch(zpoll_set *s, int fd, int what) {
  short events = (short)(((what & ZPOLL_IN) ? POLLIN : 0) | ((what & ZPOLL_OUT) ? POLLOUT : 0));
  int i;
  for (i = 1; i < s->nfds && s->fds[i].fd != fd; i++) {}
  if (i < s->nfds) {
    if (events != 0) s->fds[i].events = events;
    else s->fds[i] = s->fds[--s->nfds];  /* order does not matter past the pipe */
    return;
  }
  if (events == 0) return;
  if (s->nfds == s->cap) {
    /* curl's socket callback cannot fail, so out of memory leaves the socket unlisted: a loop
     * then sees it no sooner than its timeout, and the transfer still ends by its own */
    struct pollfd *bigger = s->cap > INT_MAX / 2 ? NULL : realloc(s->fds, (size_t)s->cap * 2 * sizeof *bigger);
    if (bigger == NULL) return;
    s->fds = bigger;
    s->cap *= 2;
  }
  s->fds[s->nfds].fd = fd;
  s->fds[s->nfds].events = events;
  s->fds[s->nfds].revents = 0;
  s->nfds++;
}

void zpoll_set_signal(zpoll_set *s, int on) {
  if (on) {
    char b = 1;
    /* a full pipe (EAGAIN) is readable already, which is all the byte is for */
    if (!s->signalled && write(s->pipe_w, &b, 1) == 1) s->signalled = 1;
  } else if (s->signalled) {
    char buf[64];
    while (read(s->pipe_r, buf, sizeof buf) > 0) {}
    s->signalled = 0;
  }
}
