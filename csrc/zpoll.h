/* zpoll.h: the one OS-specific piece of the transport: a set of sockets and one timer, waited on
 * together, and what a foreign event loop must watch to know when to call back. No Lua, no curl.
 * One implementation is built in, chosen by `make POLLER=`:
 *   poll_epoll.c   epoll + timerfd (Linux)
 *   poll_kqueue.c  kqueue + EVFILT_TIMER (macOS, the BSDs; libkqueue elsewhere)
 * Both put everything behind one fd: zpoll_fd is readable when a socket or the timer has activity.
 *   poll_poll.c    poll(2), any POSIX system. poll(2) has no aggregate fd, so zpoll_fd is the read
 *                  end of a self-pipe, readable only when the timer is armed for a time already
 *                  due; the sockets a loop must also watch come from zpoll_fds, and the timer's
 *                  time from the caller's own bookkeeping (zeng_timeout_ms counts it). */
#ifndef ZULIP_ZPOLL_H
#define ZULIP_ZPOLL_H

#include <stddef.h>

#define ZPOLL_IN 1
#define ZPOLL_OUT 2
#define ZPOLL_ERR 4

typedef struct zpoll zpoll;

typedef struct zpoll_event {
  int fd;              /* the socket, or -1 for the timer */
  int what;            /* ZPOLL_IN | ZPOLL_OUT | ZPOLL_ERR */
} zpoll_event;

/* A new set; NULL with a reason in err (out of file descriptors says so). */
zpoll *zpoll_new(char *err, size_t errlen);
void zpoll_free(zpoll *p);
/* The descriptor that is readable when a socket of the set or the timer has activity (when
 * zpoll_single_fd() is 0: only when the timer is armed for a time already due, see above). */
int zpoll_fd(const zpoll *p);
/* Everything a loop must watch, for what: with zpoll_single_fd() just zpoll_fd for ZPOLL_IN, else
 * zpoll_fd first, then each watched socket. Fills at most max, returns how many there are. */
int zpoll_fds(const zpoll *p, zpoll_event *evs, int max);
/* The poller's name: "epoll", "kqueue" or "poll". */
const char *zpoll_name(void);
/* 1 when zpoll_fd alone tells a loop of all activity (epoll, kqueue); 0 for poll(2). */
int zpoll_single_fd(void);
/* Watches fd for what (ZPOLL_IN | ZPOLL_OUT); what 0 stops watching it. */
void zpoll_watch(zpoll *p, int fd, int what);
/* fd is a socket whose closing the set will hear of (zpoll_forget comes first). epoll: when its
 * watching stops, it stays in the OS's set with no events (a kept connection's next request then
 * costs one cheap change there); an error or hang-up meanwhile takes it out unreported, and the
 * end of its input reports nothing. The other pollers keep nothing. */
void zpoll_own(zpoll *p, int fd);
/* fd is about to be closed: out of the set, and no longer owned. */
void zpoll_forget(zpoll *p, int fd);
/* Arms the timer for an absolute time on the monotonic clock of zpoll_now_ms (a time already past
 * fires at once); < 0 disarms it. Does nothing when that is what is armed already. */
void zpoll_arm(zpoll *p, long long due_ms);
/* Waits up to ms (0: not at all, < 0: no limit) and fills at most max events. Returns their
 * number, or -1 when a signal interrupted the wait. A timer event also disarms the timer. */
int zpoll_wait(zpoll *p, long ms, zpoll_event *evs, int max);
long long zpoll_now_ms(void);

#endif
