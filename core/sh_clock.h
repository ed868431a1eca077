/* sh_clock.h -- the time core/ and the bindings read: monotonic seconds, or
** a virtual clock for tests. Depends on nothing else in core/; knows nothing
** about Lua.
**
** The virtual clock (sockhost.test) is process-wide: while it is on, sh_now
** and sh_now_coarse return its time, which moves only by sh_clock_set.
** Timers follow the clock through sh_timer_clock (sh_timer.h), which also
** moves the armed ones from one clock to the other. */
#ifndef SH_CLOCK_H
#define SH_CLOCK_H

/* Monotonic time in seconds; the virtual time while that clock is on. */
double sh_now(void);
/* The same, coarse (a few ms) but cheaper: for budgets and the like. */
double sh_now_coarse(void);
/* The real monotonic time, virtual clock or not. */
double sh_now_real(void);
/* The same, coarse (a few ms) but cheaper: for CPU budgets, which measure
** real time also while the virtual clock is on. */
double sh_now_real_coarse(void);

/* Turn the virtual clock on, at time 'start', or off (a no-op when it is so
** already). Only what sh_now reads changes: no timer moves. Call
** sh_timer_clock instead, which calls this and moves the armed timers. */
void sh_clock_mode(int on, double start);
/* Whether the virtual clock is on. */
int sh_clock_is_virtual(void);
/* Move the virtual clock to 't'; never backwards. */
void sh_clock_set(double t);

#endif
