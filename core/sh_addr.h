/* sh_addr.h -- the address strings of the Lua API, parsed into socket
** addresses and formatted back. Knows nothing about Lua.
**
**   tcp://host:port     udp://host:port     host:port (means tcp)
**   tcp://[::1]:port    unix:/path/to.sock  unixgram:/path/to.sock
**   unix:@name          (a Linux abstract socket)
**   tls://host:port     (TCP with TLS on it: see sh_tls.h)
**
**   tcp://[fe80::1%eth0]:port  (an IPv6 literal with a zone: an interface
**                      name or number, for link-local addresses)
**
** Parsing never blocks: IP literals and "localhost" are resolved here; any
** other host name is left for the resolver (sh_addr.resolved == 0). */
#ifndef SH_ADDR_H
#define SH_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

typedef enum { SH_TCP, SH_UDP, SH_UNIX, SH_UNIXGRAM, SH_TLS } sh_scheme;   /* tls: TCP + TLS */

typedef struct sh_addr {
  sh_scheme scheme;
  int resolved;                  /* 'sa' holds the address */
  int port;                      /* 0..65535; -1 for Unix addresses */
  char host[256];                /* host as written, without brackets */
  struct sockaddr_storage sa;    /* the socket address, if resolved */
  socklen_t salen;
} sh_addr;

/* Parse the 'len' bytes at 'text', which a NUL follows at text[len] (as a
** C string or a Lua string). A NUL byte among them is refused, never taken
** as the end. Returns 0, or -1 with a
** message in 'err' ("bad address 'x': port out of range"; a NUL in the
** text is written there as "\x00"). */
int sh_addr_parse(const char *text, size_t len, sh_addr *a, char *err, size_t errlen);

/* Format a socket address as an address string of the given scheme
** ("tcp://127.0.0.1:80", "tcp://[::1]:80", "tcp://[fe80::1%eth0]:80",
** "unix:/tmp/s"); IPv4-mapped IPv6 addresses are written as IPv4, a zone by
** its interface's name (its number if it has none). Returns the length
** written (truncated to 'n'). */
size_t sh_addr_format(const struct sockaddr *sa, socklen_t len, sh_scheme scheme,
                      char *buf, size_t n);

/* Mark 'a' resolved to 'sa' (keeping its scheme and host). */
void sh_addr_set(sh_addr *a, const struct sockaddr *sa, socklen_t len);

/* The bare host of an IP socket address: "127.0.0.1", "::1". */
size_t sh_addr_host(const struct sockaddr *sa, char *buf, size_t n);

/* True for a stream scheme (tcp, tls, unix). */
int sh_addr_is_stream(sh_scheme scheme);

/* True for an address that names a file: unix:/path, unixgram:/path (not
** an abstract @name, not an IP address). */
int sh_addr_has_file(const sh_addr *a);

#endif
