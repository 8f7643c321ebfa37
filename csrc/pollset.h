/* pollset.h: what a poller without one pollable fd gives a loop instead (see zpoll.h): a list of
 * the watched sockets in poll(2) form, headed by a self-pipe that is readable while work is due at
 * once. poll_poll.c waits on the list itself; poll_kqueue.c uses it when its kqueue fd cannot be
 * polled (libkqueue on Linux). */
#ifndef ZULIP_POLLSET_H
#define ZULIP_POLLSET_H

#include <poll.h>
#include <stddef.h>
#include "zpoll.h"

typedef struct zpoll_set {
  int pipe_r, pipe_w;  /* the self-pipe, both ends non-blocking and close-on-exec */
  int signalled;       /* a byte is in the pipe */
  struct pollfd *fds;  /* [0] is pipe_r, then the sockets: nfds in all */
  int nfds, cap;
} zpoll_set;

/* 0, or -1 with the reason in err (out of file descriptors says so). */
int zpoll_set_init(zpoll_set *s, char *err, size_t errlen);
void zpoll_set_free(zpoll_set *s);
/* Watches fd for what (ZPOLL_IN | ZPOLL_OUT); what 0 stops watching it. */
void zpoll_set_watch(zpoll_set *s, int fd, int what);
/* The pipe for ZPOLL_IN, then each socket with its events; fills at most max, returns how many. */
int zpoll_set_fds(const zpoll_set *s, zpoll_event *evs, int max);
/* on: makes the pipe readable (once: a byte at most); off: empties it. */
void zpoll_set_signal(zpoll_set *s, int on);
/* ZPOLL_IN | ZPOLL_OUT | ZPOLL_ERR of poll(2)'s revents. */
int zpoll_set_what(short revents);

#endif
