/* sh_clock.c -- the real and the virtual clock; see sh_clock.h. */
#include "sh_clock.h"

#include <time.h>

static int virt_on;       /* the virtual clock is on */
static double virt_now;   /* ... and its time */

static double seconds (clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double sh_now (void) {
  if (virt_on) return virt_now;
  return seconds(CLOCK_MONOTONIC);
}

double sh_now_coarse (void) {
  if (virt_on) return virt_now;
  return seconds(CLOCK_MONOTONIC_COARSE);
}

double sh_now_real (void) {
  return seconds(CLOCK_MONOTONIC);
}

double sh_now_real_coarse (void) {
  return seconds(CLOCK_MONOTONIC_COARSE);
}

void sh_clock_mode (int on, double start) {
  on = on != 0;
  if (on == virt_on) return;
  if (on) virt_now = start;
  virt_on = on;
}

int sh_clock_is_virtual (void) { return virt_on; }

void sh_clock_set (double t) {
  if (t > virt_now) virt_now = t;
}
