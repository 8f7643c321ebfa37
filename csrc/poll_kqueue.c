/* poll_kqueue.c: zpoll on macOS and the BSDs (and on Linux through libkqueue): one kqueue holding
 * a read and a write filter per socket and one EVFILT_TIMER (see zpoll.h). A kqueue fd is itself
 * pollable (readable while events are pending), so it is the one fd a foreign loop watches.
 *
 * The timer is relative and one-shot: absolute kqueue timers differ between systems (NOTE_ABSTIME
 * on FreeBSD counts on the wall clock, macOS has NOTE_ABSOLUTE in its own units), while a relative
 * time in milliseconds, the default unit, means the same everywhere.
 *
 * libkqueue (kqueue on Linux and others, for testing this file there) hands out a kqueue fd that
 * never becomes readable (the write end of a pipe it watches for close). Built against it, with
 * ZPOLL_KQUEUE_POLLABLE 0 (the Makefile's default off macOS and the BSDs), this poller keeps
 * kevent(2) for its own waits and gives loops what poll_poll.c gives them: a self-pipe and the
 * socket list of pollset.c. */
#define _POSIX_C_SOURCE 200809L  /* struct timespec under -std=c99 */
#if defined(__APPLE__)
#define _DARWIN_C_SOURCE         /* macOS hides the types <sys/event.h> uses under strict POSIX */
#endif
#include "zpoll.h"
#include "pollset.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>

#ifndef ZPOLL_KQUEUE_POLLABLE
#define ZPOLL_KQUEUE_POLLABLE 1  /* the kernel's kqueue: its fd is readable while events are pending */
#endif

#if !ZPOLL_KQUEUE_POLLABLE && defined(__linux__)  /* libkqueue on Linux */
#define ZPOLL_LIBKQUEUE 1
/* libkqueue frees a closed kqueue's descriptors later, from its thread. Newer versions finish that
 * on request (exported, though not in its header); with it, closing a client frees its
 * descriptors at once, as closing a kernel kqueue does. */
extern void libkqueue_drain_pending_close(void) __attribute__((weak));
#else
#define ZPOLL_LIBKQUEUE 0
#endif

#define ZPOLL_TIMER_ID 1  /* the timer's ident; timers have an ident space of their own */

struct zpoll {
  int kq;
  long long armed_ms;  /* what the timer is armed for, -1: disarmed */
#if !ZPOLL_KQUEUE_POLLABLE
  zpoll_set set;       /* what loops watch instead of the kqueue fd */
#endif
};

const char *zpoll_name(void) {
  return "kqueue";
}

int zpoll_single_fd(void) {
  return ZPOLL_KQUEUE_POLLABLE;
}

/* One change; errors are the caller's to ignore (deleting a filter that is not there). */
static int zpoll_change(zpoll *p, int ident, short filter, unsigned short flags, long long data) {
  struct kevent kev;
  memset(&kev, 0, sizeof kev);
  kev.ident = (uintptr_t)ident;
  kev.filter = filter;
  kev.flags = flags;
  kev.data = (intptr_t)data;
  return kevent(p->kq, &kev, 1, NULL, 0, NULL);
}

zpoll *zpoll_new(char *err, size_t errlen) {
  zpoll *p = calloc(1, sizeof *p);
  if (p == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  p->armed_ms = -1;
#if !ZPOLL_KQUEUE_POLLABLE
  if (zpoll_set_init(&p->set, err, errlen) != 0) {
    free(p);
    return NULL;
  }
#endif
  p->kq = kqueue();
  if (p->kq < 0) {
    int e = errno;
    if (e == EMFILE || e == ENFILE)
      snprintf(err, errlen, "out of file descriptors (%s): raise the open-files limit "
               "(ulimit -n, RLIMIT_NOFILE) or close clients", strerror(e));
    else
      snprintf(err, errlen, "cannot make its kqueue: %s", strerror(e));
#if !ZPOLL_KQUEUE_POLLABLE
    zpoll_set_free(&p->set);
#endif
    free(p);
    return NULL;
  }
  /* kqueue(2) has no close-on-exec flag of its own: a child must not inherit it */
  (void)fcntl(p->kq, F_SETFD, fcntl(p->kq, F_GETFD) | FD_CLOEXEC);
  return p;
}

void zpoll_free(zpoll *p) {
  if (p == NULL) return;
  if (p->kq >= 0) close(p->kq);
#if ZPOLL_LIBKQUEUE
  if (p->kq >= 0 && libkqueue_drain_pending_close != NULL) libkqueue_drain_pending_close();
#endif
#if !ZPOLL_KQUEUE_POLLABLE
  zpoll_set_free(&p->set);
#endif
  free(p);
}

int zpoll_fd(const zpoll *p) {
#if ZPOLL_KQUEUE_POLLABLE
  return p->kq;
#else
  return p->set.pipe_r;
#endif
}

int zpoll_fds(const zpoll *p, zpoll_event *evs, int max) {
#if ZPOLL_KQUEUE_POLLABLE
  if (max > 0) {
    evs[0].fd = p->kq;
    evs[0].what = ZPOLL_IN;
  }
  return 1;
#else
  return zpoll_set_fds(&p->set, evs, max);
#endif
}

void zpoll_watch(zpoll *p, int fd, int what) {
  /* deleting what is not there fails harmlessly (ENOENT), as does anything on an fd curl closed */
  (void)zpoll_change(p, fd, EVFILT_READ, (what & ZPOLL_IN) ? EV_ADD : EV_DELETE, 0);
  (void)zpoll_change(p, fd, EVFILT_WRITE, (what & ZPOLL_OUT) ? EV_ADD : EV_DELETE, 0);
#if !ZPOLL_KQUEUE_POLLABLE
  zpoll_set_watch(&p->set, fd, what);
#endif
}

/* closing an fd takes its filters out of every kqueue: nothing to keep */
void zpoll_own(zpoll *p, int fd) {
  (void)p; (void)fd;
}

void zpoll_forget(zpoll *p, int fd) {
  zpoll_watch(p, fd, 0);
}

void zpoll_arm(zpoll *p, long long due) {
  if (due == p->armed_ms) return;
#if !ZPOLL_KQUEUE_POLLABLE
  zpoll_set_signal(&p->set, due >= 0 && due <= zpoll_now_ms());  /* as in poll_poll.c */
#endif
  if (due < 0) {
    (void)zpoll_change(p, ZPOLL_TIMER_ID, EVFILT_TIMER, EV_DELETE, 0);
  } else {
    long long left = due - zpoll_now_ms();
    /* EV_ADD on an armed timer re-arms it for the new time */
    (void)zpoll_change(p, ZPOLL_TIMER_ID, EVFILT_TIMER, EV_ADD | EV_ONESHOT, left > 0 ? left : 0);
  }
  p->armed_ms = due;
}

int zpoll_wait(zpoll *p, long ms, zpoll_event *evs, int max) {
  struct kevent ev[16];
  struct timespec ts, *tsp = NULL;
  int n, i, k = 0;
  if (max > 16) max = 16;
  if (ms >= 0) {
    if (ms > 86400000L) ms = 86400000L;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (ms % 1000) * 1000000L;
    tsp = &ts;
  }
  n = kevent(p->kq, NULL, 0, ev, max, tsp);
  if (n < 0) return errno == EINTR ? -1 : 0;
  for (i = 0; i < n; i++) {
    if (ev[i].filter == EVFILT_TIMER) {
      p->armed_ms = -1;  /* one-shot: it fired */
#if !ZPOLL_KQUEUE_POLLABLE
      zpoll_set_signal(&p->set, 0);
#endif
      evs[k].fd = -1;
      evs[k++].what = ZPOLL_IN;
      continue;
    }
    evs[k].fd = (int)ev[i].ident;
    evs[k].what = ev[i].filter == EVFILT_WRITE ? ZPOLL_OUT : ZPOLL_IN;
    /* EV_EOF alone is a peer that closed: curl reads that from the socket; a pending socket error
     * comes in fflags, EV_ERROR is a failed change */
    if ((ev[i].flags & EV_ERROR) || ((ev[i].flags & EV_EOF) && ev[i].fflags != 0)) evs[k].what |= ZPOLL_ERR;
    k++;
  }
  return k;
}
