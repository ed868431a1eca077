/* sh_resp.h -- the fast path of reading RESP commands (sockhost.resp):
** a command as redis-benchmark and client libraries send it, "*<n>\r\n"
** then n times "$<len>\r\n<len bytes>\r\n", checked in a buffer that holds
** it whole. Knows nothing about Lua; see conn:resp_commands in
** bindings/l_conn.c.
**
** It accepts only what the general reader of bindings/lua/resp.lua
** (read_command) would take as the same command, within the same limits,
** and says SH_RESP_SHORT or SH_RESP_OTHER for everything else: a command
** not yet whole, an inline command, an empty one ("*0", "*-1"), anything
** malformed or over a limit. The caller then leaves that command to the
** general reader, which waits for the rest, or skips it, or refuses it, with
** the same errors as ever. Nothing is copied or allocated. */
#ifndef SH_RESP_H
#define SH_RESP_H

#include <stddef.h>

typedef struct sh_resp_limits {
  size_t max_bulk;       /* longest argument */
  size_t max_bytes;      /* all the arguments of a command together */
  size_t max_elements;   /* arguments of a command */
  size_t max_line;       /* a header line: bytes before its LF */
} sh_resp_limits;

enum {
  SH_RESP_OK = 0,        /* a whole command */
  SH_RESP_SHORT,         /* its start, well formed so far */
  SH_RESP_OTHER          /* not one for the fast path (see above) */
};

/* Called for argument i (from 0) of n: its bytes p[0..len). */
typedef void (*sh_resp_arg_fn)(void *ud, size_t i, size_t n, const char *p, size_t len);

/* Check the command at the start of buf[0..len). On SH_RESP_OK, *nargs is
** its argument count (> 0) and *used the bytes it takes; fn (unless NULL)
** was called for each argument, in order. On the other results fn may have
** been called for some arguments; *nargs and *used are left alone. */
int sh_resp_command(const char *buf, size_t len, const sh_resp_limits *lim,
                    sh_resp_arg_fn fn, void *ud, size_t *nargs, size_t *used);

#endif
