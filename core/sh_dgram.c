/* sh_dgram.c -- datagram sockets; see sh_dgram.h. */
#include "sh_dgram.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "sh_inherit.h"
#include "sh_util.h"

struct sh_dgram {
  sh_loop_item item;      /* tracked so a socket file is removed at the end */
  sh_loop *loop;
  struct event ev;        /* readable/writable as asked by 'watch' */
  int fd;
  int family;
  int watch;              /* SH_DGRAM_READ | SH_DGRAM_WRITE */
  int want;               /* what the owner asked for (watch, unless held) */
  int added;              /* 'ev' is added */
  sh_dgram_fn cb;
  void *ctx;
  unsigned in_cb : 1;     /* inside the owner's callback */
  unsigned pktinfo : 1;   /* arrival addresses asked for (wildcard bound) */
  unsigned dead : 1;      /* freed from inside it */
  unsigned held : 1;      /* taken from a reload: no reading until released */
  unsigned tracked : 1;   /* bound: a reload hands it on (sh_inherit_track) */
  sh_sockfile file;       /* our socket file, if any */
};

static void on_event(evutil_socket_t fd, short what, void *arg);

static int is_wildcard (const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET)
    return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
  if (sa->sa_family == AF_INET6)
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
  return 0;
}

/* Ask the kernel for the arrival address of each datagram. */
static void want_pktinfo (int fd, int family) {
  int one = 1;
  setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);   /* also v4 on v6 sockets */
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
}

static void destroy_orphan(sh_loop_item *item);
static void hold(sh_dgram *d);
static void unhold(sh_dgram *d);

sh_dgram *sh_dgram_open (sh_loop *loop, int family, const struct sockaddr *sa, socklen_t len,
                         const sh_sockopts *o, sh_dgram_fn cb, void *ctx,
                         char *err, size_t errlen) {
  sh_dgram *d = calloc(1, sizeof *d);
  int taken;
  if (d == NULL) { snprintf(err, errlen, "out of memory"); return NULL; }
  d->loop = loop;
  d->family = family;
  d->cb = cb;
  d->ctx = ctx;
  d->fd = sa != NULL ? sh_inherit_take(sa, len, SOCK_DGRAM) : -1;
  taken = d->fd >= 0;
  if (taken) {
    sh_sockfile_adopt(sa, &d->file);        /* handed over, already bound */
    if (sh_inherit_holding()) hold(d);
  } else {
    d->fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (d->fd < 0) { snprintf(err, errlen, "%s", sh_strerror(errno)); free(d); return NULL; }
  }
  if (sa != NULL) {
    if (!taken &&
        (sh_socket_options(d->fd, family, o, err, errlen) != 0 ||
         sh_socket_bind(d->fd, sa, len, o, &d->file, err, errlen) != 0)) {
      close(d->fd);
      free(d);
      return NULL;
    }
    if (is_wildcard(sa)) { want_pktinfo(d->fd, family); d->pktinfo = 1; }
    d->tracked = 1;                          /* a bound socket: a reload hands it on */
    sh_inherit_track(d->fd);
  } else if (family == AF_UNIX) {
    sa_family_t af = AF_UNIX;                /* autobind: an abstract name */
    bind(d->fd, (const struct sockaddr *)&af, sizeof af);
  } else if (family == AF_INET6) {
    int zero = 0;                            /* unbound: talk to v4 and v6 */
    setsockopt(d->fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  }
  event_assign(&d->ev, sh_loop_base(loop), d->fd, EV_PERSIST, on_event, d);
  d->item.destroy = destroy_orphan;
  sh_loop_track(loop, &d->item);
  return d;
}

static void destroy (sh_dgram *d) {
  if (d->in_cb) { d->dead = 1; return; }
  sh_loop_untrack(d->loop, &d->item);
  if (d->added) event_del(&d->ev);
  if (d->tracked) sh_inherit_untrack(d->fd);
  if (d->held) unhold(d);
  close(d->fd);
  if (!sh_inherit_handed_over()) sh_sockfile_remove(&d->file);   /* only if still ours */
  free(d);
}

static void destroy_orphan (sh_loop_item *item) {
  sh_dgram *d = (sh_dgram *)item;
  d->in_cb = 0;
  destroy(d);
}

void sh_dgram_free (sh_dgram *d) {
  d->cb = NULL;
  destroy(d);
}

int sh_dgram_family (const sh_dgram *d) { return d->family; }
int sh_dgram_fd (const sh_dgram *d) { return d->fd; }
void *sh_dgram_ctx (const sh_dgram *d) { return d->cb != NULL ? d->ctx : NULL; }

/* The sockets waiting for sh_dgram_release_held, and what they asked for. */
static sh_dgram *held[SH_INHERIT_MAX];
static int nheld;

static void hold (sh_dgram *d) {
  if (nheld < SH_INHERIT_MAX) { held[nheld++] = d; d->held = 1; }
}

static void unhold (sh_dgram *d) {
  int i;
  for (i = 0; i < nheld; i++)
    if (held[i] == d) { held[i] = held[--nheld]; return; }
}

void sh_dgram_release_held (void) {
  while (nheld > 0) {
    sh_dgram *d = held[--nheld];
    int want = d->want;
    d->held = 0;
    d->watch = -1;                           /* apply it again */
    sh_dgram_watch(d, want);
  }
}

void sh_dgram_watch (sh_dgram *d, int what) {
  short ev;
  d->want = what;
  if (d->held) what &= ~SH_DGRAM_READ;
  ev = (short)(((what & SH_DGRAM_READ) ? EV_READ : 0) | ((what & SH_DGRAM_WRITE) ? EV_WRITE : 0));
  if (what == d->watch) return;
  if (d->added) { event_del(&d->ev); d->added = 0; }
  d->watch = what;
  if (ev == 0) return;
  event_assign(&d->ev, sh_loop_base(d->loop), d->fd, (short)(ev | EV_PERSIST), on_event, d);
  if (event_add(&d->ev, NULL) == 0) d->added = 1;
}

static void on_event (evutil_socket_t fd, short what, void *arg) {
  sh_dgram *d = arg;
  int w = ((what & EV_READ) ? SH_DGRAM_READ : 0) | ((what & EV_WRITE) ? SH_DGRAM_WRITE : 0);
  (void)fd;
  if (d->cb == NULL) return;
  d->in_cb = 1;
  d->cb(d, w, d->ctx);
  d->in_cb = 0;
  if (d->dead) destroy(d);
}

/* ====================== Sending and receiving ====================== */

static void read_local (struct msghdr *msg, sh_dgram_msg *m) {
  struct cmsghdr *c;
  for (c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      struct in_pktinfo pi;
      struct sockaddr_in *in4 = (struct sockaddr_in *)&m->local;
      memcpy(&pi, CMSG_DATA(c), sizeof pi);
      memset(in4, 0, sizeof *in4);
      in4->sin_family = AF_INET;
      in4->sin_addr = pi.ipi_addr;
      m->has_local = 1;
    } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      struct in6_pktinfo pi;
      struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&m->local;
      memcpy(&pi, CMSG_DATA(c), sizeof pi);
      memset(in6, 0, sizeof *in6);
      in6->sin6_family = AF_INET6;
      in6->sin6_addr = pi.ipi6_addr;
      m->has_local = 1;
    }
  }
}

ssize_t sh_dgram_recv (sh_dgram *d, void *buf, size_t len, sh_dgram_msg *m) {
  union { char buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(struct in_pktinfo))];
          struct cmsghdr align; } control;
  struct iovec iov;
  struct msghdr msg;
  ssize_t n;
  iov.iov_base = buf;
  iov.iov_len = len;
  memset(&msg, 0, sizeof msg);
  memset(m, 0, sizeof *m);
  msg.msg_name = &m->from;
  msg.msg_namelen = sizeof m->from;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (d->pktinfo) {                      /* only wildcard sockets get them */
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
  }
  do n = recvmsg(d->fd, &msg, 0); while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  m->fromlen = msg.msg_namelen;
  m->truncated = (msg.msg_flags & MSG_TRUNC) != 0;
  if (d->pktinfo) read_local(&msg, m);
  return n;
}

/* On an IPv6 socket, an IPv4 destination is written as v4-mapped. */
static socklen_t map_v4 (const sh_dgram *d, const struct sockaddr *to, socklen_t tolen,
                         struct sockaddr_in6 *out) {
  const struct sockaddr_in *in4 = (const struct sockaddr_in *)to;
  if (d->family != AF_INET6 || to->sa_family != AF_INET) return tolen;
  memset(out, 0, sizeof *out);
  out->sin6_family = AF_INET6;
  out->sin6_port = in4->sin_port;
  out->sin6_addr.s6_addr[10] = 0xff;
  out->sin6_addr.s6_addr[11] = 0xff;
  memcpy(&out->sin6_addr.s6_addr[12], &in4->sin_addr, 4);
  return sizeof *out;
}

ssize_t sh_dgram_send (sh_dgram *d, const void *buf, size_t len, const struct sockaddr *to,
                       socklen_t tolen, const struct sockaddr_storage *src) {
  union { char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))]; struct cmsghdr align; } control;
  struct sockaddr_in6 mapped;
  struct iovec iov;
  struct msghdr msg;
  ssize_t n;
  memset(&msg, 0, sizeof msg);
  iov.iov_base = (void *)buf;
  iov.iov_len = len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (to != NULL) {
    socklen_t l = map_v4(d, to, tolen, &mapped);
    msg.msg_name = l != tolen ? (void *)&mapped : (void *)to;   /* mapped or as is */
    msg.msg_namelen = l;
  }
  if (src != NULL && (src->ss_family == AF_INET || src->ss_family == AF_INET6)) {
    struct cmsghdr *c;
    memset(&control, 0, sizeof control);
    msg.msg_control = control.buf;
    c = (struct cmsghdr *)control.buf;
    if (src->ss_family == AF_INET) {
      struct in_pktinfo pi;
      memset(&pi, 0, sizeof pi);
      pi.ipi_spec_dst = ((const struct sockaddr_in *)src)->sin_addr;
      c->cmsg_level = IPPROTO_IP;
      c->cmsg_type = IP_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof pi);
      memcpy(CMSG_DATA(c), &pi, sizeof pi);
      msg.msg_controllen = CMSG_SPACE(sizeof pi);
    } else {
      struct in6_pktinfo pi;
      memset(&pi, 0, sizeof pi);
      pi.ipi6_addr = ((const struct sockaddr_in6 *)src)->sin6_addr;
      c->cmsg_level = IPPROTO_IPV6;
      c->cmsg_type = IPV6_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof pi);
      memcpy(CMSG_DATA(c), &pi, sizeof pi);
      msg.msg_controllen = CMSG_SPACE(sizeof pi);
    }
  }
  do n = sendmsg(d->fd, &msg, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EINVAL && msg.msg_control != NULL) {   /* no source choice here */
    msg.msg_control = NULL;
    msg.msg_controllen = 0;
    do n = sendmsg(d->fd, &msg, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  }
  return n;
}

int sh_dgram_connect (sh_dgram *d, const struct sockaddr *sa, socklen_t len) {
  struct sockaddr_in6 mapped;
  socklen_t l = map_v4(d, sa, len, &mapped);
  return connect(d->fd, l != len ? (const struct sockaddr *)&mapped : sa, l);
}

/* ====================== Options ====================== */

int sh_dgram_setopt (sh_dgram *d, const char *name, int value) {
  int v6 = d->family == AF_INET6;
  unsigned char c = (unsigned char)value;
  if (strcmp(name, "broadcast") == 0)
    return setsockopt(d->fd, SOL_SOCKET, SO_BROADCAST, &value, sizeof value);
  if (strcmp(name, "rcvbuf") == 0)
    return setsockopt(d->fd, SOL_SOCKET, SO_RCVBUF, &value, sizeof value);
  if (strcmp(name, "sndbuf") == 0)
    return setsockopt(d->fd, SOL_SOCKET, SO_SNDBUF, &value, sizeof value);
  if (strcmp(name, "ttl") == 0)
    return v6 ? setsockopt(d->fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &value, sizeof value)
              : setsockopt(d->fd, IPPROTO_IP, IP_MULTICAST_TTL, &c, sizeof c);
  if (strcmp(name, "loop") == 0)
    return v6 ? setsockopt(d->fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &value, sizeof value)
              : setsockopt(d->fd, IPPROTO_IP, IP_MULTICAST_LOOP, &c, sizeof c);
  errno = EINVAL;
  return -1;
}

int sh_dgram_membership (sh_dgram *d, int join, const struct sockaddr *group,
                         const struct sockaddr *iface) {
  if (group->sa_family == AF_INET) {
    struct ip_mreq mr;
    memset(&mr, 0, sizeof mr);
    mr.imr_multiaddr = ((const struct sockaddr_in *)group)->sin_addr;
    mr.imr_interface.s_addr = htonl(INADDR_ANY);
    if (iface != NULL && iface->sa_family == AF_INET) {
      mr.imr_interface = ((const struct sockaddr_in *)iface)->sin_addr;
      if (join)                             /* send to the group from there too */
        setsockopt(d->fd, IPPROTO_IP, IP_MULTICAST_IF, &mr.imr_interface,
                   sizeof mr.imr_interface);
    }
    return setsockopt(d->fd, IPPROTO_IP, join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP,
                      &mr, sizeof mr);
  }
  if (group->sa_family == AF_INET6) {
    struct ipv6_mreq mr;
    memset(&mr, 0, sizeof mr);
    mr.ipv6mr_multiaddr = ((const struct sockaddr_in6 *)group)->sin6_addr;
    return setsockopt(d->fd, IPPROTO_IPV6, join ? IPV6_JOIN_GROUP : IPV6_LEAVE_GROUP,
                      &mr, sizeof mr);
  }
  errno = EAFNOSUPPORT;
  return -1;
}
