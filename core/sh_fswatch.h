/* sh_fswatch.h -- files written in a folder (inotify), for --watch. Knows
** nothing about Lua. */
#ifndef SH_FSWATCH_H
#define SH_FSWATCH_H

#include <stddef.h>

#include "sh_loop.h"

typedef struct sh_fswatch sh_fswatch;

/* Whether a change to 'name' (a file in the folder) counts. */
typedef int (*sh_fswatch_want)(const char *name, void *ctx);
/* Files that count changed, and then nothing for the quiet period; 'name'
** is the last one. */
typedef void (*sh_fswatch_fn)(const char *name, void *ctx);

/* Watch folder 'dir' for files written, renamed into place or made; call
** 'cb' once changes that 'want' counts have stopped for 'quiet' seconds. The
** watch holds no loop reference; one left at sh_loop_free is freed then.
** Returns NULL with a message in 'err'. */
sh_fswatch *sh_fswatch_new(sh_loop *loop, const char *dir, double quiet, sh_fswatch_want want,
                           sh_fswatch_fn cb, void *ctx, char *err, size_t errlen);
void sh_fswatch_free(sh_fswatch *w);

#endif
