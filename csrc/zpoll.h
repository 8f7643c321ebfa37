/* zpoll.h: the one OS-specific piece of the transport: a set of sockets and one timer behind a
 * single file descriptor that a foreign event loop can watch. poll_epoll.c implements it with
 * epoll and a timerfd (Linux). No Lua, no curl. */
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
/* The descriptor that is readable when a socket of the set or the timer has activity. */
int zpoll_fd(const zpoll *p);
/* Watches fd for what (ZPOLL_IN | ZPOLL_OUT); what 0 stops watching it. */
void zpoll_watch(zpoll *p, int fd, int what);
/* Arms the timer for an absolute time on the monotonic clock of zpoll_now_ms (a time already past
 * fires at once); < 0 disarms it. Does nothing when that is what is armed already. */
void zpoll_arm(zpoll *p, long long due_ms);
/* Waits up to ms (0: not at all, < 0: no limit) and fills at most max events. Returns their
 * number, or -1 when a signal interrupted the wait. A timer event also disarms the timer. */
int zpoll_wait(zpoll *p, long ms, zpoll_event *evs, int max);
long long zpoll_now_ms(void);

#endif
