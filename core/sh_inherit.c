/* sh_inherit.c -- sockets passed from one process to the next: see
** sh_inherit.h. */
#include "sh_inherit.h"

#include <fcntl.h>
#include <stddef.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define SD_LISTEN_FDS_START 3   /* systemd's first socket */

typedef struct inherited {
  int fd;
  int systemd;                  /* from socket activation */
} inherited;

static inherited pool[SH_INHERIT_MAX];   /* not yet taken: fd -1 once taken */
static int npool;
static int tracked[SH_INHERIT_MAX];
static int ntracked;
static int handed;
static int holding;

static int is_socket (int fd) {
  int type;
  socklen_t len = sizeof type;
  return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
}

static void add (int fd, int systemd) {
  if (npool >= SH_INHERIT_MAX || fd < 0 || !is_socket(fd)) return;
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  pool[npool].fd = fd;
  pool[npool++].systemd = systemd;
}

/* SOCKHOST_FDS: numbers separated by spaces. */
static void from_reload (const char *s) {
  char *end;
  while (s != NULL && *s != '\0') {
    long fd = strtol(s, &end, 10);
    if (end == s) break;
    add((int)fd, 0);
    s = end;
  }
}

/* LISTEN_FDS sockets from 3, when LISTEN_PID is us. */
static void from_systemd (const char *fds, const char *pid) {
  long n = fds != NULL ? strtol(fds, NULL, 10) : 0, i;
  if (pid == NULL || strtol(pid, NULL, 10) != (long)getpid()) return;
  for (i = 0; i < n && i < SH_INHERIT_MAX; i++) add(SD_LISTEN_FDS_START + (int)i, 1);
}

int sh_inherit_init (void) {
  holding = getenv("SOCKHOST_FDS") != NULL;
  from_reload(getenv("SOCKHOST_FDS"));
  from_systemd(getenv("LISTEN_FDS"), getenv("LISTEN_PID"));
  unsetenv("SOCKHOST_FDS");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDNAMES");
  return npool;
}

/* Whether two addresses of the same family name the same place. */
static int same_address (const struct sockaddr *a, const struct sockaddr *b, socklen_t blen) {
  if (a->sa_family != b->sa_family) return 0;
  if (a->sa_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
    return y->sin_port != 0 && x->sin_port == y->sin_port &&
           x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  if (a->sa_family == AF_INET6) {
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return y->sin6_port != 0 && x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
  }
  if (a->sa_family == AF_UNIX) {
    const struct sockaddr_un *x = (const void *)a, *y = (const void *)b;
    size_t off = offsetof(struct sockaddr_un, sun_path);
    if (blen <= off) return 0;
    if (y->sun_path[0] != '\0')
      return strncmp(x->sun_path, y->sun_path, sizeof x->sun_path) == 0;
    return memcmp(x->sun_path, y->sun_path, blen - off) == 0;   /* abstract */
  }
  return 0;
}

/* Whether inherited socket 'fd' is of 'type' and bound to 'sa'. */
static int matches (int fd, const struct sockaddr *sa, socklen_t len, int type) {
  struct sockaddr_storage ss;
  socklen_t sslen = sizeof ss;
  int t;
  socklen_t tlen = sizeof t;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &tlen) != 0 || t != type) return 0;
  if (getsockname(fd, (struct sockaddr *)&ss, &sslen) != 0) return 0;
  return same_address((const struct sockaddr *)&ss, sa, len);
}

int sh_inherit_take (const struct sockaddr *sa, socklen_t len, int type) {
  int i, fd;
  for (i = 0; i < npool; i++) {
    if (pool[i].fd < 0 || !matches(pool[i].fd, sa, len, type)) continue;
    fd = pool[i].fd;
    pool[i].fd = -1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
  }
  return -1;
}

int sh_inherit_close_unused (void) {
  int i, n = 0;
  for (i = 0; i < npool; i++)
    if (pool[i].fd >= 0) {
      close(pool[i].fd);
      pool[i].fd = -1;
      n++;
    }
  npool = 0;
  return n;
}

void sh_inherit_track (int fd) {
  if (ntracked < SH_INHERIT_MAX) tracked[ntracked++] = fd;
}

void sh_inherit_untrack (int fd) {
  int i;
  for (i = 0; i < ntracked; i++)
    if (tracked[i] == fd) {
      tracked[i] = tracked[--ntracked];
      return;
    }
}

int sh_inherit_tracked (int *fds, int max) {
  int i;
  for (i = 0; i < ntracked && i < max; i++) fds[i] = tracked[i];
  return i;
}

int sh_inherit_holding (void) { return holding; }
void sh_inherit_set_holding (int on) { holding = on; }

void sh_inherit_set_handed_over (void) { handed = 1; }
int sh_inherit_handed_over (void) { return handed; }
