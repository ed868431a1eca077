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

/* Copy 'msg' to 'out' with control bytes escaped; newlines and tabs are kept
** as "\n" / "\t" escapes too, so one event is one line. */
static void escape (const char *msg, char *out, size_t n) {
  size_t o = 0;
  for (; *msg != '\0' && o + 5 < n; msg++) {
    unsigned char c = (unsigned char)*msg;
    if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
    else if (c == '\t') { out[o++] = '\\'; out[o++] = 't'; }
    else if (c < 0x20 || c == 0x7f) o += (size_t)snprintf(out + o, n - o, "\\x%02x", c);
    else out[o++] = (char)c;
  }
  if (*msg != '\0' && o + 4 < n) { memcpy(out + o, "...", 3); o += 3; }
  out[o] = '\0';
}

static void emit (sh_log_level level, const char *msg, const char *trace) {
  char line[LOG_MAX * 2], stamp[32];
  struct timeval tv;
  struct tm tm;
  escape(msg, line, sizeof line);
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  fprintf(stderr, "%s.%03dZ %-5s %s\n", stamp, (int)(tv.tv_usec / 1000),
          tags[level], line);
  if (trace != NULL) fprintf(stderr, "\t%s\n", trace);
  fflush(stderr);
}

static void vlog (sh_log_level level, const char *trace, const char *fmt, va_list ap) {
  char msg[LOG_MAX];
  int n;
  if (level < current || level >= SH_LOG_OFF) return;
  n = vsnprintf(msg, sizeof msg, fmt, ap);
  if (n >= (int)sizeof msg) memcpy(msg + sizeof msg - 4, "...", 4);   /* cut: say so */
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
