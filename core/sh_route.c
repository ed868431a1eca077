/* sh_route.c -- router path patterns (see sh_route.h). */
#include <string.h>

#include "sh_route.h"

/* The next non-empty segment of s[*i..len): its start and length; 0 if
** there is none. *i moves past it. */
static int next_seg (const char *s, size_t len, size_t *i, sh_route_span *seg) {
  size_t k = *i;
  while (k < len && s[k] == '/') k++;
  if (k == len) { *i = k; return 0; }
  seg->p = s + k;
  while (k < len && s[k] != '/') k++;
  seg->n = (size_t)(s + k - seg->p);
  *i = k;
  return 1;
}

size_t sh_route_count (const char *pat, size_t len) {
  size_t i = 0, n = 0;
  sh_route_span seg;
  while (next_seg(pat, len, &i, &seg)) n++;
  return n;
}

size_t sh_route_compile (const char *pat, size_t len, sh_route_part *parts) {
  size_t i = 0, n = 0, params = 0;
  sh_route_span seg;
  while (next_seg(pat, len, &i, &seg)) {
    sh_route_part *pt = &parts[n++];
    pt->kind = seg.p[0] == ':' ? SH_ROUTE_PARAM : seg.p[0] == '*' ? SH_ROUTE_REST : SH_ROUTE_LITERAL;
    pt->text = seg;
    if (pt->kind != SH_ROUTE_LITERAL) {
      pt->text.p++;
      pt->text.n--;
      params++;
    }
  }
  return params;
}

int sh_route_match (const sh_route_part *parts, size_t n, const char *path, size_t len,
                    sh_route_span *vals) {
  size_t i = 0, k, v = 0;
  sh_route_span seg;
  for (k = 0; k < n; k++) {
    const sh_route_part *pt = &parts[k];
    if (pt->kind == SH_ROUTE_REST) {        /* the rest, leading slashes dropped */
      while (i < len && path[i] == '/') i++;
      vals[v].p = path + i;
      vals[v].n = len - i;
      return 1;
    }
    if (!next_seg(path, len, &i, &seg)) return 0;
    if (pt->kind == SH_ROUTE_PARAM) vals[v++] = seg;
    else if (seg.n != pt->text.n || memcmp(seg.p, pt->text.p, seg.n) != 0) return 0;
  }
  return !next_seg(path, len, &i, &seg);   /* no segment left over */
}

static int hexval (char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

long sh_route_unescape (const char *s, size_t n, char *out) {
  size_t i, o = 0;
  for (i = 0; i < n; i++) {
    if (s[i] == '%') {
      int hi, lo;
      if (i + 2 >= n) return -1;            /* not two characters after it */
      hi = hexval(s[i + 1]);
      lo = hexval(s[i + 2]);
      if (hi < 0 || lo < 0) return -1;
      out[o++] = (char)(hi * 16 + lo);
      i += 2;
    } else {
      out[o++] = s[i];
    }
  }
  return (long)o;
}
