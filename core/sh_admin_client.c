/* sh_admin_client.c -- `sockhost admin`: see sh_admin_client.h. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sh_admin_client.h"

static int dial (const char *progname, const char *addr) {
  struct sockaddr_un un;
  const char *path;
  size_t len;
  socklen_t salen;
  int fd;
  if (strncmp(addr, "unix:", 5) != 0) {
    fprintf(stderr, "%s admin: unix:PATH expected, not '%s'\n", progname, addr);
    return -1;
  }
  path = addr + 5;
  len = strlen(path);
  if (len == 0 || len >= sizeof un.sun_path) {
    fprintf(stderr, "%s admin: bad path '%s'\n", progname, path);
    return -1;
  }
  memset(&un, 0, sizeof un);
  un.sun_family = AF_UNIX;
  memcpy(un.sun_path, path, len);
  if (path[0] == '@') un.sun_path[0] = '\0';   /* an abstract name */
  salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '@' ? 0 : 1));
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&un, salen) != 0) {
    fprintf(stderr, "%s admin: cannot connect to %s: %s\n", progname, addr, strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

static int send_line (int fd, const char *line, size_t len) {
  while (len > 0) {
    ssize_t w = send(fd, line, len, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    line += w;
    len -= (size_t)w;
  }
  return 0;
}

/* Print the reply: 0, 1 if it began with "error", -1 if the connection
** ended first. */
static int print_reply (FILE *in) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  int first = 1, rc = -1;
  while ((n = getline(&line, &cap, in)) > 0) {
    const char *p = line;
    if (strcmp(line, ".\n") == 0) { rc = rc < 0 ? 0 : rc; break; }
    if (p[0] == '.') p++;
    if (first) rc = strncmp(p, "error", 5) == 0 ? 1 : -1;
    first = 0;
    fputs(p, stdout);
  }
  if (n <= 0 && rc == 1) rc = -1;
  free(line);
  fflush(stdout);
  return rc;
}

int sh_admin_client (const char *progname, int argc, char **argv) {
  FILE *in;
  int fd, rc = 0;
  if (argc < 1) {
    fprintf(stderr, "usage: %s admin unix:PATH [command]\n", progname);
    return 1;
  }
  if ((fd = dial(progname, argv[0])) < 0) return 1;
  if ((in = fdopen(dup(fd), "r")) == NULL) { close(fd); return 1; }
  if (argc > 1) {
    int i;
    for (i = 1; i < argc && rc == 0; i++)
      rc = send_line(fd, argv[i], strlen(argv[i])) != 0 ||
           send_line(fd, i + 1 < argc ? " " : "\n", 1) != 0;
    if (rc == 0) rc = print_reply(in);
  } else {
    char *line = NULL;
    size_t cap = 0;
    int tty = isatty(0);
    for (;;) {
      ssize_t n;
      if (tty) { fputs("sockhost> ", stdout); fflush(stdout); }
      if ((n = getline(&line, &cap, stdin)) <= 0) break;
      if (line[n - 1] != '\n') {                /* the last line, without its end */
        char *l2 = realloc(line, (size_t)n + 2);
        if (l2 == NULL) break;
        line = l2;
        line[n++] = '\n';
        line[n] = '\0';
      }
      if (n == 1) continue;
      if (send_line(fd, line, (size_t)n) != 0 || (rc = print_reply(in)) < 0) break;
      rc = 0;                                  /* an error reply: go on */
    }
    free(line);
  }
  if (rc < 0) fprintf(stderr, "%s admin: the console closed the connection\n", progname);
  fclose(in);
  close(fd);
  return rc != 0;
}
