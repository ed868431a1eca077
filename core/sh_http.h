/* sh_http.h -- the strict HTTP/1.x request head parser. Knows nothing
** about Lua; see bindings/l_http.c (sockhost.http.parser).
**
** http-parser (Debian's libhttp-parser-dev) does the grammar: the method,
** the request target's characters, header name and value characters,
** Content-Length digits, keep-alive. It is lenient where request smuggling
** lives, so this parser adds, before and after it: every line ends in CRLF
** (no bare LF, no bare CR), no folded header lines, header names are tokens
** (no space before the colon), the request line is "METHOD SP target SP
** HTTP/1.x" with single spaces, at most one Content-Length (digits only),
** Transfer-Encoding is exactly "chunked" and never beside Content-Length,
** HTTP/1.1 has exactly one Host.
**
** Nothing is copied or allocated: the results are spans into the caller's
** head string, and the caller gives the room for the headers. */
#ifndef SH_HTTP_H
#define SH_HTTP_H

#include <stddef.h>

#define SH_HTTP_MAX_HEADERS 256    /* the highest max_headers allowed */
#define SH_HTTP_DEFAULT_HEADERS 100
#define SH_HTTP_MAX_DIGITS 15      /* Content-Length and chunk sizes: < 2^53 */

/* Why a head (or a chunk-size line) was refused. Each has a short, stable,
** lower-case text (sh_http_strerror) that scripts compare against, and the
** status to answer with (sh_http_status). */
typedef enum sh_http_err {
  SH_HTTP_OK = 0,
  SH_HTTP_INCOMPLETE,          /* "incomplete head" (400) */
  SH_HTTP_BARE_LF,             /* "bare LF" (400) */
  SH_HTTP_BARE_CR,             /* "bare CR" (400) */
  SH_HTTP_BAD_REQUEST_LINE,    /* "bad request line" (400) */
  SH_HTTP_BAD_VERSION,         /* "unsupported version" (505) */
  SH_HTTP_DATA_AFTER_HEAD,     /* "data after head" (400) */
  SH_HTTP_FOLDED,              /* "folded header" (400) */
  SH_HTTP_BAD_HEADER,          /* "bad header" (400) */
  SH_HTTP_TOO_MANY_HEADERS,    /* "too many headers" (431) */
  SH_HTTP_HEAD_TOO_LARGE,      /* "head too large" (431): http-parser's own limit */
  SH_HTTP_BAD_LENGTH,          /* "bad content-length" (400) */
  SH_HTTP_DUP_LENGTH,          /* "duplicate content-length" (400) */
  SH_HTTP_LENGTH_WITH_TE,      /* "content-length with transfer-encoding" (400) */
  SH_HTTP_BAD_TE,              /* "bad transfer-encoding" (400) */
  SH_HTTP_DUP_HOST,            /* "duplicate host" (400) */
  SH_HTTP_NO_HOST,             /* "missing host" (400) */
  SH_HTTP_BAD_CHUNK_SIZE       /* "bad chunk size" (400) */
} sh_http_err;

/* The error's text: a static string; "" for SH_HTTP_OK. */
const char *sh_http_strerror(sh_http_err e);
/* The status code to answer an error with (400, 431, 505); 0 for SH_HTTP_OK. */
int sh_http_status(sh_http_err e);

/* A piece of the head string: 'n' bytes at 'p' (not NUL-terminated). */
typedef struct sh_http_span {
  const char *p;
  size_t n;
} sh_http_span;

/* A header as sent: the name in its own letter case, the value without
** leading and trailing spaces and tabs. */
typedef struct sh_http_header {
  sh_http_span name, value;
} sh_http_header;

/* A parsed request head. Set up with sh_http_head_init; the other fields
** are the results of sh_http_parse_head, valid while the head string is. */
typedef struct sh_http_head {
  sh_http_header *headers;     /* in order of arrival, 'nh' of them */
  int nh;
  int cap, max_headers;        /* room in 'headers'; most headers accepted */
  const char *method;          /* "GET", "POST", ... (a static string) */
  sh_http_span target;         /* the request target as sent */
  sh_http_span path;           /* its raw path; the whole target for
                               ** CONNECT and for OPTIONS * */
  sh_http_span query;          /* its raw query; query.p NULL: none */
  int minor;                   /* HTTP/1.minor: 0 or 1 */
  int keep_alive;              /* the client wants the connection kept */
  int upgrade;                 /* an Upgrade request, or CONNECT */
  int chunked;                 /* Transfer-Encoding: chunked */
  long long length;            /* Content-Length, or -1 */
} sh_http_head;

/* How much room sh_http_parse_head needs for the headers of the head 's'
** ('len' bytes) with at most 'max_headers' of them: never more than
** max_headers + 1, never more than the head has lines. */
int sh_http_header_room(const char *s, size_t len, int max_headers);

/* Prepare 'h' for a parse: 'headers' has room for 'cap' of them (at least
** sh_http_header_room), 'max_headers' is 1..SH_HTTP_MAX_HEADERS. */
void sh_http_head_init(sh_http_head *h, sh_http_header *headers, int cap, int max_headers);

/* Parse one complete request head: the request line, the header lines, the
** empty line, all ending in CRLF, nothing after. Returns SH_HTTP_OK with the
** results in 'h', or why it was refused ('h' then holds nothing useful).
** The same 'h' may be parsed into again after sh_http_head_init. */
sh_http_err sh_http_parse_head(sh_http_head *h, const char *s, size_t len);

/* Whether 's' is 'lower' (a lower-case NUL-terminated string) in any
** letter case: sh_http_ieq(h->headers[i].name, "cookie"). */
int sh_http_ieq(sh_http_span s, const char *lower);

/* The size in a chunk-size line given without its LF: 1 to
** SH_HTTP_MAX_DIGITS hex digits, then optionally ";" and extensions (not
** read; no control characters but tab), then CR. Returns SH_HTTP_OK with
** the size in '*size', or SH_HTTP_BAD_CHUNK_SIZE. */
sh_http_err sh_http_chunk_size(const char *line, size_t len, long long *size);

/* The version of the linked http-parser, "http-parser 2.9.4", into 'buf'
** (cut to fit 'n' bytes, always NUL-terminated when n > 0). */
void sh_http_parser_version(char *buf, size_t n);

#endif
