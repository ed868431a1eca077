/* sh_loop.h -- the event loop: one libevent base plus a count of the things
** that keep it alive. Knows nothing about Lua.
**
** The loop runs while its reference count is above zero: every live task,
** open listener, armed timer and stream still flushing on close holds one
** reference. Events that nobody waits for (a connection read eagerly, say)
** do not keep the process alive. */
#ifndef SH_LOOP_H
#define SH_LOOP_H

#include <stddef.h>

#include "sh_clock.h"   /* sh_now and the virtual clock, for the loop's users */

struct event_base;

typedef struct sh_loop sh_loop;

/* Create a loop. Returns NULL and fills 'err' on failure. */
sh_loop *sh_loop_new(char *err, size_t errlen);
/* Free the loop and its event base. Everything built on it must be freed
** first. */
void sh_loop_free(sh_loop *loop);

struct event_base *sh_loop_base(sh_loop *loop);

void sh_loop_ref(sh_loop *loop);     /* one more thing to wait for */
void sh_loop_unref(sh_loop *loop);   /* one less */
int sh_loop_refs(const sh_loop *loop);

/* Run until nothing holds a reference, sh_loop_stop() is called, or
** 'timeout' seconds pass (timeout < 0: no limit). Returns 0 when the loop ran
** out of work, 1 when stopped, 2 on timeout, -1 on a libevent failure. May
** be called again afterwards. */
int sh_loop_run(sh_loop *loop, double timeout);
/* Ask the running loop to return after the current callback. */
void sh_loop_stop(sh_loop *loop);
int sh_loop_running(const sh_loop *loop);

/* Things that outlive their owner on the loop (a stream still flushing after
** its connection object is gone) register here, so that sh_loop_free() can
** destroy what is left of them instead of leaking it. */
typedef struct sh_loop_item {
  struct sh_loop_item *prev, *next;
  void (*destroy)(struct sh_loop_item *item);   /* must untrack the item */
} sh_loop_item;

void sh_loop_track(sh_loop *loop, sh_loop_item *item);
void sh_loop_untrack(sh_loop *loop, sh_loop_item *item);

/* Call 'cb' from the loop each time signal 'signum' arrives. Signal
** watchers do not keep the loop alive. Returns 0, or -1. */
typedef void (*sh_signal_fn)(int signum, void *ctx);
int sh_loop_signal(sh_loop *loop, int signum, sh_signal_fn cb, void *ctx);

/* Run one iteration of the loop without waiting: callbacks already due, and
** whatever the poll finds ready now. Returns 1 if any callback ran, 0 if
** none, -1 on a libevent failure. For a test driving the loop itself. */
int sh_loop_step(sh_loop *loop);

#endif
