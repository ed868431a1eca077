/* sh_log.c -- see sh_log.h. */
#include "sh_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define LOG_MAX 4096    /* longest message kept; the rest is cut */

static sh_log_level current = SH_LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error", "off"};
static const char *const tags[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};

void sh_log_set_level (sh_log_level level) { current = level; }
sh_log_level sh_log_get_level (void) { return current; }
const char *sh_log_level_name (sh_log_level level) { return names[level]; }

int sh_log_parse_level (const char *name) {
  int i;
  for (i = 0; i <= SH_LOG_OFF; i++)
    if (strcmp(name, names[i]) == 0) return i;
  return -1;
}

/* The length (1 to 4) of the well-formed UTF-8 sequence at s, its code
** point in *cp; 0 if s does not start one (a stray or missing continuation
** byte, an overlong form, a surrogate, past U+10FFFF). s ends in a NUL,
** which no continuation byte matches. */
static int utf8_seq (const unsigned char *s, unsigned long *cp) {
  unsigned char c = s[0], lo = 0x80, hi = 0xbf;
  int n, i;
  if (c < 0x80) { *cp = c; return 1; }
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) n = 3;
  else if (c >= 0xf0 && c <= 0xf4) n = 4;
  else return 0;
  if (c == 0xe0) lo = 0xa0;                 /* no overlong forms */
  else if (c == 0xed) hi = 0x9f;            /* no surrogates */
  else if (c == 0xf0) lo = 0x90;
  else if (c == 0xf4) hi = 0x8f;            /* nothing past U+10FFFF */
  if (s[1] < lo || s[1] > hi) return 0;
  *cp = c & (0x7f >> n);
  for (i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    *cp = (*cp << 6) | (s[i] & 0x3f);
  }
  return n;
}

/* Characters that are valid UTF-8 but would let a message act on how the
** line shows: the C1 controls, and the bidi controls and separators that
** reorder or break a line. */
static int escaped_char (unsigned long cp) {
  return (cp >= 0x80 && cp <= 0x9f) || cp == 0x61c || cp == 0x200e || cp == 0x200f ||
         (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

/* Write the form of the character at s into e (room for 12); its length in
** the message in *len. */
static size_t escape_one (const char *s, char *e, size_t *len) {
  unsigned char c = (unsigned char)*s;
  unsigned long cp;
  int n = utf8_seq((const unsigned char *)s, &cp);
  *len = n > 0 ? (size_t)n : 1;
  if (c == '\n') return (size_t)snprintf(e, 12, "\\n");
  if (c == '\t') return (size_t)snprintf(e, 12, "\\t");
  if (n == 0 || c < 0x20 || c == 0x7f) return (size_t)snprintf(e, 12, "\\x%02x", c);
  if (escaped_char(cp)) return (size_t)snprintf(e, 12, "\\u{%lx}", cp);
  memcpy(e, s, *len);
  return *len;
}

/* Copy 'msg' to 'out' with control characters, bytes that are not UTF-8 and
** the characters of escaped_char escaped; newlines and tabs are kept as "\n"
** / "\t" escapes too, so one event is one line. Cut (with "...") before the
** first escape that does not fit in 'out'. */
static void escape (const char *msg, char *out, size_t n) {
  size_t o = 0, len, elen;
  char e[12];
  while (*msg != '\0') {
    elen = escape_one(msg, e, &len);
    if (o + elen + 4 > n - 1) break;        /* room for this and "..." */
    memcpy(out + o, e, elen);
    o += elen;
    msg += len;
  }
  if (*msg != '\0') { memcpy(out + o, "...", 3); o += 3; }
  out[o] = '\0';
}

static sh_log_sink_fn sink;          /* also gets every line, whatever the level */
static void *sink_ctx;

void sh_log_set_sink (sh_log_sink_fn fn, void *ctx) {
  sink = fn;
  sink_ctx = ctx;
}

static void emit (sh_log_level level, const char *msg, const char *trace) {
  char line[LOG_MAX * 2], stamp[32];
  struct timeval tv;
  struct tm tm;
  escape(msg, line, sizeof line);
  if (sink != NULL) sink(level, line, sink_ctx);
  if (level < current) return;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  fprintf(stderr, "%s.%03dZ %-5s %s\n", stamp, (int)(tv.tv_usec / 1000),
          tags[level], line);
  if (trace != NULL) fprintf(stderr, "\t%s\n", trace);
  fflush(stderr);
}

/* End a message that filled msg[n] with "...", not in the middle of a
** UTF-8 character. */
static void cut (char *msg, size_t n) {
  size_t k = n - 4, back = 0;
  while (back < 3 && ((unsigned char)msg[k - back] & 0xc0) == 0x80) back++;
  if (((unsigned char)msg[k - back] & 0xc0) == 0xc0) k -= back;   /* the lead byte goes too */
  memcpy(msg + k, "...", 4);
}

static void vlog (sh_log_level level, const char *trace, const char *fmt, va_list ap) {
  char msg[LOG_MAX];
  int n;
  if ((level < current && sink == NULL) || level >= SH_LOG_OFF) return;
  n = vsnprintf(msg, sizeof msg, fmt, ap);
  if (n >= (int)sizeof msg) cut(msg, sizeof msg);
  emit(level, msg, trace);
}

void sh_log (sh_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, NULL, fmt, ap);
  va_end(ap);
}

void sh_log_trace (sh_log_level level, const char *trace, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, trace, fmt, ap);
  va_end(ap);
}
