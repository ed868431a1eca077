/* sh_handover.h -- a reload: start the next generation of this process with
** the sockets it tracks (sh_inherit.h), and learn whether it started.
** Knows nothing about Lua.
**
** The new generation is this program run again (same executable, command
** line and environment) in a child process, with the sockets in
** SOCKHOST_FDS, the write end of a pipe in SOCKHOST_READY_FD and its number
** in SOCKHOST_GENERATION. It writes one byte to the pipe once it serves
** (sh_handover_ready); the pipe closing first means it failed. */
#ifndef SH_HANDOVER_H
#define SH_HANDOVER_H

#include <stddef.h>

#include "sh_loop.h"

/* The outcome: ok 1, the new generation 'pid' serves, 'secs' after the
** start; ok 0, it ended first with wait status 'status' (reaped). */
typedef void (*sh_handover_fn)(int ok, int pid, int status, double secs, void *ctx);

/* At start-up: remember the command line to run again, and read this
** process's place from the environment (SOCKHOST_READY_FD,
** SOCKHOST_GENERATION, removed from it). */
void sh_handover_init(int argc, char **argv);
/* Keep 'fd' open in the next generations too (not only the sockets). */
void sh_handover_keep_fd(int fd);
/* This process's generation: 1, then one more with each reload. */
int sh_handover_generation(void);
/* Start the next generation. Returns its pid, or -1 with a message in
** 'err' (one already starting: "a reload is already under way"). 'cb' is
** called once, from the loop. Watching the pipe holds no loop reference. */
int sh_handover_start(sh_loop *loop, sh_handover_fn cb, void *ctx, char *err, size_t errlen);
/* Whether a new generation is starting and has not yet answered. */
int sh_handover_pending(void);
/* In a new generation: tell the old one that this one serves. Once; does
** nothing in a process no reload started. */
void sh_handover_ready(void);

#endif
