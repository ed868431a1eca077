/* sh_watchdog.h -- the last line of defence against a stuck process: a
** thread outside the event loop (and outside any interpreter) that ends the
** process when the loop has not turned for a hard limit, or when a SIGTERM
** or SIGINT has not ended it in time. It never relies on the stuck code
** giving control back. Knows nothing about Lua: its user says what ran.
**
** One per process (the one that runs the loop: a -w worker, not the
** master), started once, never stopped: it ends with the process. */
#ifndef SH_WATCHDOG_H
#define SH_WATCHDOG_H

#include <stddef.h>

#include "sh_loop.h"

/* Write an account of what was running (a traceback) into 'buf', at most
** 'len' bytes with the NUL. Called on the loop's thread, from a signal
** handler that interrupted it, just before the process ends: it must not
** allocate, lock or call stdio. */
typedef void (*sh_watchdog_fn)(char *buf, size_t len, void *ctx);

/* Start watching 'loop'; call after the loop's SIGTERM and SIGINT watchers
** are in (sh_loop_signal), from the thread that runs the loop.
**  - 'limit' > 0: when for 'limit' seconds neither has the loop turned (a
**    timer on it ticks a few times per limit) nor sh_watchdog_kick been
**    called, the process ends (0: no such limit).
**  - Always: the first SIGTERM or SIGINT (noted, then passed on to the
**    loop's watcher) arms a deadline of 'grace' + 1 s, past which the
**    process ends; a second one ends it at once.
** Ending: an ERROR line on standard error saying why, then 'describe''s
** account (NULL: none), then exit status 1 (without flushing stdio or
** running atexit handlers). If the loop's thread does not answer within
** 2 s, the watchdog's thread ends the process itself, with the line only.
** Returns 0, or -1 with errno set if it cannot start (the stop signals are
** then still noted, but nothing ends the process). */
int sh_watchdog_start(sh_loop *loop, double limit, double grace, sh_watchdog_fn describe,
                      void *ctx);

/* Progress: something ran (a task was resumed). Cheap: call it freely. */
void sh_watchdog_kick(void);

/* Stalls: a run of script code (the user brackets each with run_begin and
** run_end) that keeps the loop from turning for more than 'warn' seconds,
** using CPU or waiting in a system call. The watchdog's thread samples the
** run's start a few times per 'warn'; when a run passes it, and again
** each 'warn' it goes on, it signals the loop's thread, whose handler calls
** 'fn' (in a signal handler, interrupting the run: it may not allocate,
** lock or call stdio). 'warn' 0: off. Call before sh_watchdog_start. */
typedef void (*sh_watchdog_stall_fn)(void *ctx);
void sh_watchdog_set_stall(double warn, sh_watchdog_stall_fn fn, void *ctx);
/* Bracket a run (on the loop's thread; two stores: call them freely). */
void sh_watchdog_run_begin(void);
void sh_watchdog_run_end(void);
/* Seconds since the current run began (0: none is running). */
double sh_watchdog_run_time(void);

#endif
