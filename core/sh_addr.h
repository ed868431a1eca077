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
** other host name is left for the resolver (sh_addr.resolved == 0).
**
** A host is an IPv4 literal (a.b.c.d, no leading zeros), an IPv6 literal in
** brackets, "localhost", "*" (0.0.0.0), or a host name: labels of 1..63
** letters, digits, '-' and '_' between dots, at most 253 bytes (a final dot
** aside), its last label not all digits (1.2.3.999 is a bad IPv4 address,
** never a name to look up). */
#ifndef SH_ADDR_H
#define SH_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

typedef enum { SH_TCP, SH_UDP, SH_UNIX, SH_UNIXGRAM, SH_TLS } sh_scheme;   /* tls: TCP + TLS */

typedef struct sh_addr {
  sh_scheme scheme;
  int resolved;                  /* 'sa' holds the address */
  int port;                      /* 0..65535; -1 for Unix addresses */
  char host[256];                /* a host name as written; an IP literal in
                                 ** its canonical text (sh_ip_format), a
                                 ** zone after it as written ("fe80::1%eth0");
                                 ** no brackets. Unix: the path or @name */
  struct sockaddr_storage sa;    /* the socket address, if resolved */
  socklen_t salen;
} sh_addr;

/* Parse the 'len' bytes at 'text', which a NUL follows at text[len] (as a
** C string or a Lua string). A NUL byte among them is refused, never taken
** as the end. Returns 0, or -1 with a
** message in 'err' ("bad address 'x': port out of range"; a NUL in the
** text is written there as "\x00"). */
int sh_addr_parse(const char *text, size_t len, sh_addr *a, char *err, size_t errlen);

/* Write "bad address '<text>': <why>" into 'err' as sh_addr_parse does (the
** text cut at 200 bytes, a NUL in it as "\x00"). Returns -1. */
int sh_addr_error(const char *text, size_t len, const char *why, char *err, size_t errlen);

/* Check a name to resolve ('len' bytes, a NUL at text[len]): a host name
** or an IP literal without brackets or zone, as in an address. Returns 0,
** or -1 with "bad address '<text>': <why>" in 'err' (why: "empty name",
** "NUL byte in name", "bad host name", "bad IPv4 address", "bad IPv6
** address"). */
int sh_addr_check_name(const char *text, size_t len, char *err, size_t errlen);

/* The canonical address string of a parsed 'a': "tcp://host:port" (an IPv6
** host in brackets), "unix:/path", "unixgram:@name". It parses back to the
** same scheme, host and port or path. Returns the length written
** (truncated to 'n'). */
size_t sh_addr_text(const sh_addr *a, char *buf, size_t n);

/* "tcp", "tls", "udp", "unix", "unixgram". */
const char *sh_addr_scheme_name(sh_scheme scheme);

/* ---------------- IP literals ---------------- */

#define SH_IP_TEXT 46                /* the longest text, with its NUL */

/* The 4 (IPv4) or 16 (IPv6) bytes, in network order, of the 'len' bytes at
** 'text': a.b.c.d without leading zeros, or IPv6 text (RFC 4291, a.b.c.d
** in its last 32 bits allowed), without brackets or zone. Returns 4 or 16,
** or 0 if 'text' is neither (a NUL byte in it included). */
size_t sh_ip_parse(const char *text, size_t len, unsigned char out[16]);

/* The canonical text of 4 or 16 bytes into 'buf' (SH_IP_TEXT bytes):
** a.b.c.d, or IPv6 as RFC 5952 has it (lower-case hex without leading
** zeros, the first longest run of two or more zero fields as "::", an
** IPv4-mapped address as ::ffff:a.b.c.d). Returns its length; 0 (and "")
** for another 'len'. */
size_t sh_ip_format(const unsigned char *ip, size_t len, char *buf);

/* Format a socket address as an address string of the given scheme
** ("tcp://127.0.0.1:80", "tcp://[::1]:80", "tcp://[fe80::1%eth0]:80",
** "unix:/tmp/s"); IPs in their canonical text (sh_ip_format), IPv4-mapped
** IPv6 addresses as IPv4, a zone by its interface's name (its number if it
** has none). Returns the length
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
