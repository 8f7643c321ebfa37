/* pollclock.c: zpoll_now_ms, the monotonic clock every poller's timer is armed on (see zpoll.h). */
#define _POSIX_C_SOURCE 200809L
#include "zpoll.h"

#include <time.h>

long long zpoll_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
