/* sh_notify.h -- telling a service manager (systemd) how the service is:
** the sd_notify protocol, one datagram to the Unix socket named by
** $NOTIFY_SOCKET ("/path", or "@name" for an abstract one). Knows nothing
** about Lua. */
#ifndef SH_NOTIFY_H
#define SH_NOTIFY_H

/* Send 'state' ("READY=1", "RELOADING=1\nMONOTONIC_USEC=...", ...) if
** NOTIFY_SOCKET is set. Returns 1 if sent, 0 if no socket is set, -1 on
** failure. */
int sh_notify(const char *state);
/* "RELOADING=1" with the MONOTONIC_USEC systemd asks for. */
int sh_notify_reloading(void);

#endif
