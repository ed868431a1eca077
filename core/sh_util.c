/* sh_util.c -- see sh_util.h. */
#include "sh_util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

struct timeval sh_timeval (double seconds) {
  struct timeval tv;
  if (!(seconds > 0)) seconds = 0;   /* also catches NaN */
  if (seconds > 1e9) seconds = 1e9;  /* about 31 years: "forever" */
  tv.tv_sec = (time_t)seconds;
  tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
  if (tv.tv_usec >= 1000000) { tv.tv_sec++; tv.tv_usec -= 1000000; }
  return tv;
}

const char *sh_strerror (int err) {
  static char buf[128];
  size_t i;
  switch (err) {
    case ECONNREFUSED: return "connection refused";
    case ETIMEDOUT: return "timeout";
    case EADDRINUSE: return "address in use";
    case EADDRNOTAVAIL: return "address not available";
    case EACCES: case EPERM: return "permission denied";
    case ENETUNREACH: return "network unreachable";
    case EHOSTUNREACH: return "host unreachable";
    case ECONNRESET: return "connection reset";
    case EPIPE: return "closed";
    case EMFILE: case ENFILE: return "too many open files";
    case ENOENT: return "no such file or directory";
    case ENOMEM: case ENOBUFS: return "out of memory";
    default: break;
  }
  snprintf(buf, sizeof buf, "%s", strerror(err));
  for (i = 0; buf[i] != '\0'; i++) buf[i] = (char)tolower((unsigned char)buf[i]);
  return buf;
}

int sh_fd_prepare (int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  fl = fcntl(fd, F_GETFD);
  if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0) return -1;
  return 0;
}
