/* sh_route.h -- the path patterns of sockhost.http's router ("/users/:id",
** "/files/\*rest") matched against request paths, with nothing allocated.
** Knows nothing about Lua; see bindings/l_route.c.
**
** A path is taken as its non-empty segments between slashes ("/a//b/" is
** "a", "b"). A pattern's segments are literals (equal bytes), ":name" (any
** one segment) or, last, "*name" (the rest of the path after the segments
** before it, its leading slashes dropped, possibly empty). */
#ifndef SH_ROUTE_H
#define SH_ROUTE_H

#include <stddef.h>

enum { SH_ROUTE_LITERAL, SH_ROUTE_PARAM, SH_ROUTE_REST };

/* A piece of a string: 'n' bytes at 'p'. */
typedef struct sh_route_span {
  const char *p;
  size_t n;
} sh_route_span;

/* One segment of a pattern: its kind and its literal text or parameter
** name (without ':' or '*'), pointing into the pattern's string. */
typedef struct sh_route_part {
  sh_route_span text;
  int kind;
} sh_route_part;

/* The number of segments of 'pat' ('len' bytes). */
size_t sh_route_count(const char *pat, size_t len);

/* The segments of 'pat' into 'parts' (room for sh_route_count of them);
** returns how many are parameters (":name" or "*name"). */
size_t sh_route_compile(const char *pat, size_t len, sh_route_part *parts);

/* Whether 'path' ('len' bytes) matches the 'n' segments 'parts'; if so
** 'vals' (room for the parameters) gets each parameter's raw value, in
** order, pointing into 'path'. */
int sh_route_match(const sh_route_part *parts, size_t n, const char *path, size_t len,
                   sh_route_span *vals);

/* Decode %XX escapes of 's' into 'out' (room for 'n' bytes): the decoded
** length, or -1 when a '%' is not followed by two hex digits. */
long sh_route_unescape(const char *s, size_t n, char *out);

#endif
