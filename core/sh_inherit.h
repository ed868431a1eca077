/* sh_inherit.h -- listening and datagram sockets that pass from one process
** to the next: those a reload hands to the new generation (SOCKHOST_FDS) and
** those systemd's socket activation hands over (LISTEN_FDS, LISTEN_PID).
** Knows nothing about Lua.
**
** A process takes an inherited socket instead of binding when it would bind
** the same kind of socket to the same address (sh_inherit_take); it tracks
** the sockets it binds or takes (sh_inherit_track), which a reload hands on. */
#ifndef SH_INHERIT_H
#define SH_INHERIT_H

#include <sys/socket.h>

#define SH_INHERIT_MAX 256     /* sockets a process inherits or tracks, at most */

/* Read and clear the environment: SOCKHOST_FDS ("3 4 7"), and LISTEN_FDS
** when LISTEN_PID is this process. The sockets are marked close-on-exec.
** Returns how many sockets were inherited. Call once, at start-up. */
int sh_inherit_init(void);
/* The inherited socket of 'type' (SOCK_STREAM, SOCK_DGRAM) bound to 'sa',
** now the caller's, or -1. Port 0 matches nothing. */
int sh_inherit_take(const struct sockaddr *sa, socklen_t len, int type);
/* Whether sockets taken from a reload wait, not accepting or reading, until
** the new generation serves (so that one failing first takes nothing from
** the old one); sh_inherit_set_holding(0) when it serves. */
int sh_inherit_holding(void);
void sh_inherit_set_holding(int on);
/* Close the inherited sockets nobody took; returns how many. */
int sh_inherit_close_unused(void);

/* The sockets a reload hands on: track each one bound or taken, untrack it
** before it closes. */
void sh_inherit_track(int fd);
void sh_inherit_untrack(int fd);
/* The tracked sockets, at most 'max' into 'fds'; returns how many. */
int sh_inherit_tracked(int *fds, int max);
/* After a handover the new generation owns the sockets: a Unix socket file
** must then stay when this process closes its copy. */
void sh_inherit_set_handed_over(void);
int sh_inherit_handed_over(void);

#endif
