/* sh_notify.c -- the sd_notify datagram: see sh_notify.h. */
#include "sh_notify.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int sh_notify (const char *state) {
  const char *path = getenv("NOTIFY_SOCKET");
  struct sockaddr_un un;
  size_t plen;
  socklen_t len;
  ssize_t r;
  int fd;
  if (path == NULL || path[0] == '\0') return 0;
  plen = strlen(path);
  if ((path[0] != '/' && path[0] != '@') || plen >= sizeof un.sun_path) return -1;
  memset(&un, 0, sizeof un);
  un.sun_family = AF_UNIX;
  memcpy(un.sun_path, path, plen);
  if (path[0] == '@') un.sun_path[0] = '\0';      /* abstract */
  len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '/'));
  if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) return -1;
  r = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&un, len);
  close(fd);
  return r < 0 ? -1 : 1;
}

int sh_notify_reloading (void) {
  struct timespec ts;
  char buf[96];
  clock_gettime(CLOCK_MONOTONIC, &ts);
  snprintf(buf, sizeof buf, "RELOADING=1\nMONOTONIC_USEC=%llu",
           (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
  return sh_notify(buf);
}
