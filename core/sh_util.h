/* sh_util.h -- small helpers shared by the core: time conversion, socket
** flags and the short, stable error vocabulary scripts compare against. */
#ifndef SH_UTIL_H
#define SH_UTIL_H

#include <sys/time.h>

/* Seconds (>= 0) to a struct timeval. */
struct timeval sh_timeval(double seconds);

/* Short, stable, lower-case text for an errno value: "connection refused",
** "address in use", "timeout", ...; strerror() lower-cased otherwise. The
** result is a static string. */
const char *sh_strerror(int err);

/* Make 'fd' non-blocking and close-on-exec. Returns 0, or -1 with errno. */
int sh_fd_prepare(int fd);

#endif
