/* sh_httpc.h -- the fast path of reading an HTTP/1.x response head (the
** client of sockhost.http): the status line and header lines of a head
** buffered whole, checked, with what frames the body, in one pass. Knows
** nothing about Lua; see conn:take_response in bindings/l_conn.c.
**
** It accepts only heads that the general reader of
** bindings/lua/http.client.lua (read_head, check_lines and framing) takes,
** within the same max_head, and that it would read the same way; it says
** SH_HTTPC_SHORT or SH_HTTPC_OTHER for everything else: a head not yet
** whole, a malformed status line or header line, a head over max_head, two
** Transfer-Encoding headers or one other than "chunked", a Content-Length
** that is not plain digits (a list, conflicting values), both framings,
** Transfer-Encoding in HTTP/1.0. The caller then leaves the head to the
** general reader, which waits for the rest or refuses it with its errors
** ("bad response: bad status line", "... bad header line", "too large",
** ...). Nothing is copied or allocated. */
#ifndef SH_HTTPC_H
#define SH_HTTPC_H

#include <stddef.h>

enum {
  SH_HTTPC_OK = 0,       /* a whole head, taken */
  SH_HTTPC_SHORT,        /* no blank line yet within max_head */
  SH_HTTPC_OTHER         /* not one for the fast path (see above) */
};

typedef struct sh_httpc_head {
  size_t used;           /* bytes of the head, its blank line included */
  int minor;             /* HTTP/1.<minor>: 0 or 1 */
  int status;            /* 100..599 */
  size_t reason_off, reason_len;  /* the reason phrase (may be empty) */
  size_t fields_off, fields_len;  /* the header lines, CRLF between them,
                                  ** none after the last; 0 bytes: none */
  long long length;      /* Content-Length, or -1: none */
  int chunked;           /* Transfer-Encoding: chunked */
  int close;             /* a "close" token in Connection */
  int keep_alive;        /* a "keep-alive" token in Connection */
} sh_httpc_head;

/* Check the head at the start of buf[0..len) against max_head (the longest
** status line; the header lines as the general reader bounds them). On
** SH_HTTPC_OK, *h describes it; otherwise *h is undefined. */
int sh_httpc_head_parse(const char *buf, size_t len, size_t max_head, sh_httpc_head *h);

#endif
