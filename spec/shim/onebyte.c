/* onebyte.c -- an LD_PRELOAD shim for `make test-onebyte`: every read and
** write on a non-blocking stream socket moves at most one byte, and every
** other call fails with EAGAIN instead, as if the kernel had nothing (or no
** room) just then. Code that handles short reads, short writes and spurious
** wake-ups correctly behaves exactly as without the shim, only slower.
**
** Only these calls are cut: read, readv, recv, recvfrom, recvmsg (and the
** _FORTIFY_SOURCE variants __read_chk, __recv_chk, __recvfrom_chk), write,
** writev, send, sendto, sendmsg. Only when the descriptor is a SOCK_STREAM
** socket (getsockopt SO_TYPE) and the call is non-blocking (O_NONBLOCK on the
** descriptor, or MSG_DONTWAIT): datagram sockets, files, pipes, eventfds and
** blocking sockets pass through untouched. Nothing is cached per descriptor,
** so a reused descriptor number is always judged afresh. Zero-length calls
** pass through.
**
** Only in the processes under test: ./sockhost and lua5.4 (busted, which
** loads ./sockhost.so and LuaSocket). Anything else that inherits
** LD_PRELOAD (sh, timeout, python3, nc, curl) runs unshimmed.
**
** Proof that it ran: with SOCKHOST_ONEBYTE_REPORT=path, each shimmed process
** appends one line at exit:
**   onebyte pid=N exe=NAME rd=N rd_eagain=N wr=N wr_eagain=N
** (one-byte reads and writes done, EAGAINs made up), checked by the make
** target. Processes killed by a signal write nothing.
**
**   cc -shared -fPIC -O2 -o spec/shim/onebyte.so spec/shim/onebyte.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define PHASES 65536       /* per-descriptor alternation, fd modulo this */

static int enabled;
static unsigned char rd_phase[PHASES], wr_phase[PHASES];
static unsigned long n_rd, n_rd_eagain, n_wr, n_wr_eagain;
static char exe_name[64];

static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_readv)(int, const struct iovec *, int);
static ssize_t (*real_recv)(int, void *, size_t, int);
static ssize_t (*real_recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
static ssize_t (*real_recvmsg)(int, struct msghdr *, int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);

#define RESOLVE(name) \
  do { if (real_##name == NULL) *(void **)&real_##name = dlsym(RTLD_NEXT, #name); } while (0)

static void resolve_all (void) {
  RESOLVE(read); RESOLVE(readv); RESOLVE(recv); RESOLVE(recvfrom); RESOLVE(recvmsg);
  RESOLVE(write); RESOLVE(writev); RESOLVE(send); RESOLVE(sendto); RESOLVE(sendmsg);
}

__attribute__((constructor)) static void onebyte_init (void) {
  char path[4096];
  const char *base;
  ssize_t n;
  resolve_all();
  n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) return;
  path[n] = '\0';
  base = strrchr(path, '/');
  base = base != NULL ? base + 1 : path;
  snprintf(exe_name, sizeof exe_name, "%.63s", base);
  enabled = strcmp(base, "sockhost") == 0 || strncmp(base, "lua5.4", 6) == 0;
}

__attribute__((destructor)) static void onebyte_report (void) {
  const char *path = getenv("SOCKHOST_ONEBYTE_REPORT");
  char line[256];
  int fd, len;
  if (!enabled || path == NULL || *path == '\0') return;
  len = snprintf(line, sizeof line, "onebyte pid=%ld exe=%s rd=%lu rd_eagain=%lu wr=%lu wr_eagain=%lu\n",
                 (long)getpid(), exe_name, n_rd, n_rd_eagain, n_wr, n_wr_eagain);
  fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (real_write(fd, line, (size_t)len) < 0) { /* nothing to do */ }
  close(fd);
}

/* Cut this call? A non-blocking call on a stream socket, in a process under
** test. errno is left as it was. */
static int cut (int fd, int flags) {
  int saved = errno, type = 0, fl;
  socklen_t len = sizeof type;
  int yes = 0;
  if (!enabled || fd < 0) return 0;
  fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && ((fl & O_NONBLOCK) || (flags & MSG_DONTWAIT)) &&
      getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM)
    yes = 1;
  errno = saved;
  return yes;
}

/* Alternate: 1 = make up EAGAIN this time, 0 = do the real call. */
static int skip (unsigned char *phase, int fd, unsigned long *eagains) {
  unsigned char *p = &phase[(unsigned)fd % PHASES];
  *p ^= 1;
  if (*p) {
    __atomic_add_fetch(eagains, 1, __ATOMIC_RELAXED);
    errno = EAGAIN;
    return 1;
  }
  return 0;
}

static void count (unsigned long *n, ssize_t r) {
  if (r >= 0) __atomic_add_fetch(n, 1, __ATOMIC_RELAXED);
}

/* The first non-empty buffer of an iovec array, cut to one byte; 0 if all
** are empty. */
static int first_byte (const struct iovec *iov, size_t n, struct iovec *one) {
  size_t i;
  for (i = 0; i < n; i++)
    if (iov[i].iov_len > 0) {
      one->iov_base = iov[i].iov_base;
      one->iov_len = 1;
      return 1;
    }
  return 0;
}

/* ---------------- reads ---------------- */

ssize_t read (int fd, void *buf, size_t len) {
  ssize_t r;
  RESOLVE(read);
  if (len == 0 || !cut(fd, 0)) return real_read(fd, buf, len);
  if (skip(rd_phase, fd, &n_rd_eagain)) return -1;
  r = real_read(fd, buf, 1);
  count(&n_rd, r);
  return r;
}

ssize_t __read_chk (int fd, void *buf, size_t len, size_t buflen);
ssize_t __read_chk (int fd, void *buf, size_t len, size_t buflen) {
  if (len > buflen) abort();
  return read(fd, buf, len);
}

ssize_t readv (int fd, const struct iovec *iov, int n) {
  struct iovec one;
  ssize_t r;
  RESOLVE(readv);
  if (n <= 0 || !first_byte(iov, (size_t)n, &one) || !cut(fd, 0)) return real_readv(fd, iov, n);
  if (skip(rd_phase, fd, &n_rd_eagain)) return -1;
  r = real_readv(fd, &one, 1);
  count(&n_rd, r);
  return r;
}

ssize_t recv (int fd, void *buf, size_t len, int flags) {
  ssize_t r;
  RESOLVE(recv);
  if (len == 0 || !cut(fd, flags)) return real_recv(fd, buf, len, flags);
  if (skip(rd_phase, fd, &n_rd_eagain)) return -1;
  r = real_recv(fd, buf, 1, flags);
  count(&n_rd, r);
  return r;
}

ssize_t __recv_chk (int fd, void *buf, size_t len, size_t buflen, int flags);
ssize_t __recv_chk (int fd, void *buf, size_t len, size_t buflen, int flags) {
  if (len > buflen) abort();
  return recv(fd, buf, len, flags);
}

ssize_t recvfrom (int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen) {
  ssize_t r;
  RESOLVE(recvfrom);
  if (len == 0 || !cut(fd, flags)) return real_recvfrom(fd, buf, len, flags, from, fromlen);
  if (skip(rd_phase, fd, &n_rd_eagain)) return -1;
  r = real_recvfrom(fd, buf, 1, flags, from, fromlen);
  count(&n_rd, r);
  return r;
}

ssize_t __recvfrom_chk (int fd, void *buf, size_t len, size_t buflen, int flags,
                        struct sockaddr *from, socklen_t *fromlen);
ssize_t __recvfrom_chk (int fd, void *buf, size_t len, size_t buflen, int flags,
                        struct sockaddr *from, socklen_t *fromlen) {
  if (len > buflen) abort();
  return recvfrom(fd, buf, len, flags, from, fromlen);
}

ssize_t recvmsg (int fd, struct msghdr *msg, int flags) {
  struct iovec one;
  struct msghdr m;
  ssize_t r;
  RESOLVE(recvmsg);
  if (!first_byte(msg->msg_iov, msg->msg_iovlen, &one) || !cut(fd, flags))
    return real_recvmsg(fd, msg, flags);
  if (skip(rd_phase, fd, &n_rd_eagain)) return -1;
  m = *msg;
  m.msg_iov = &one;
  m.msg_iovlen = 1;
  r = real_recvmsg(fd, &m, flags);
  msg->msg_namelen = m.msg_namelen;         /* what the kernel filled in */
  msg->msg_controllen = m.msg_controllen;
  msg->msg_flags = m.msg_flags;
  count(&n_rd, r);
  return r;
}

/* ---------------- writes ---------------- */

ssize_t write (int fd, const void *buf, size_t len) {
  ssize_t r;
  RESOLVE(write);
  if (len == 0 || !cut(fd, 0)) return real_write(fd, buf, len);
  if (skip(wr_phase, fd, &n_wr_eagain)) return -1;
  r = real_write(fd, buf, 1);
  count(&n_wr, r);
  return r;
}

ssize_t writev (int fd, const struct iovec *iov, int n) {
  struct iovec one;
  ssize_t r;
  RESOLVE(writev);
  if (n <= 0 || !first_byte(iov, (size_t)n, &one) || !cut(fd, 0)) return real_writev(fd, iov, n);
  if (skip(wr_phase, fd, &n_wr_eagain)) return -1;
  r = real_writev(fd, &one, 1);
  count(&n_wr, r);
  return r;
}

ssize_t send (int fd, const void *buf, size_t len, int flags) {
  ssize_t r;
  RESOLVE(send);
  if (len == 0 || !cut(fd, flags)) return real_send(fd, buf, len, flags);
  if (skip(wr_phase, fd, &n_wr_eagain)) return -1;
  r = real_send(fd, buf, 1, flags);
  count(&n_wr, r);
  return r;
}

ssize_t sendto (int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen) {
  ssize_t r;
  RESOLVE(sendto);
  if (len == 0 || !cut(fd, flags)) return real_sendto(fd, buf, len, flags, to, tolen);
  if (skip(wr_phase, fd, &n_wr_eagain)) return -1;
  r = real_sendto(fd, buf, 1, flags, to, tolen);
  count(&n_wr, r);
  return r;
}

ssize_t sendmsg (int fd, const struct msghdr *msg, int flags) {
  struct iovec one;
  struct msghdr m;
  ssize_t r;
  RESOLVE(sendmsg);
  if (!first_byte(msg->msg_iov, msg->msg_iovlen, &one) || !cut(fd, flags))
    return real_sendmsg(fd, msg, flags);
  if (skip(wr_phase, fd, &n_wr_eagain)) return -1;
  m = *msg;
  m.msg_iov = &one;
  m.msg_iovlen = 1;
  r = real_sendmsg(fd, &m, flags);
  count(&n_wr, r);
  return r;
}
