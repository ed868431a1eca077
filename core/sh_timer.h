/* sh_timer.h -- one-shot and repeating timers on the loop. Knows nothing
** about Lua. A running timer holds a loop reference only if asked to
** (sh_timer_new's 'keep_alive'): task deadlines do not, user timers do. */
#ifndef SH_TIMER_H
#define SH_TIMER_H

#include "sh_clock.h"
#include "sh_loop.h"

typedef struct sh_timer sh_timer;
typedef void (*sh_timer_fn)(sh_timer *t, void *ctx);

sh_timer *sh_timer_new(sh_loop *loop, int keep_alive, sh_timer_fn cb, void *ctx);
/* (Re)start: fire after 'seconds', then every 'repeat' seconds if > 0.
** Never earlier: after CPU work in the same loop turn, or with libevent's
** coarse clock, a timer that comes too early waits for the rest. A zero
** delay fires at the next turn of the loop, not in the one running. */
int sh_timer_start(sh_timer *t, double seconds, double repeat);
void sh_timer_stop(sh_timer *t);
int sh_timer_active(const sh_timer *t);
/* Stop and free. Safe from inside the callback. */
void sh_timer_free(sh_timer *t);

/* Under the virtual clock (sh_clock.h), an armed timer waits in a list
** instead of on libevent's real-time heap; a zero delay still fires at the
** next loop iteration. */

/* Turn the virtual clock on, at time 'start', or off (a no-op when it is so
** already), and move every armed timer, of every loop, to the new clock
** with what it had left. Process-wide, as the clock is. */
void sh_timer_clock(int on, double start);
/* The time the earliest timer of 'loop' is due, or -1 if none waits. */
double sh_timer_next_due(sh_loop *loop);
/* Make the timers of 'loop' due by the virtual now fire at the next loop
** iteration, earliest first. Returns how many. */
int sh_timer_fire_due(sh_loop *loop);

#endif
