/* sh_log.h -- one line per event on standard error:
**   2026-11-30T16:53:23.123Z ERROR conn #3 tcp://127.0.0.1:5555: handler failed: ...
** Control characters in messages (C0, DEL, C1) are escaped ("\n", "\t",
** "\x1b", "\u{9b}"), and so are bytes that are not UTF-8 ("\xff") and the
** characters that reorder or break a line (the bidi controls U+061C, U+200E,
** U+200F, U+202A..U+202E, U+2066..U+2069; U+2028, U+2029: "\u{202e}"), so a
** peer cannot forge log lines or make one read otherwise; the rest of UTF-8
** is written as it is. */
#ifndef SH_LOG_H
#define SH_LOG_H

typedef enum { SH_LOG_DEBUG, SH_LOG_INFO, SH_LOG_WARN, SH_LOG_ERROR, SH_LOG_OFF } sh_log_level;

void sh_log_set_level(sh_log_level level);
sh_log_level sh_log_get_level(void);
/* Parse "debug", "info", "warn", "error", "off"; -1 if none of those. */
int sh_log_parse_level(const char *name);
const char *sh_log_level_name(sh_log_level level);

void sh_log(sh_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 2, 3)))
#endif
  ;

/* A sink that gets every line as it is logged, whatever the level, after
** escaping and without the time stamp: sockhost.test keeps the host's own
** messages for a spec to check. It must not log. NULL: none. */
typedef void (*sh_log_sink_fn)(sh_log_level level, const char *line, void *ctx);
void sh_log_set_sink(sh_log_sink_fn fn, void *ctx);

/* The same, followed by a stack traceback written as it is, on indented
** continuation lines (it comes from the script's code, not from peers). */
void sh_log_trace(sh_log_level level, const char *trace, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 3, 4)))
#endif
  ;

#endif
