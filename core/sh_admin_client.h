/* sh_admin_client.h -- `sockhost admin unix:PATH [command]`: the client of
** the admin console (--admin, bindings/lua/admin.lua). Knows nothing about
** Lua: it sends command lines and prints the replies.
**
** The console's protocol: one command per line; the reply is lines, ended
** by a line holding a single "."; a reply line that begins with "." has
** one more put before it (as SMTP does), which the client takes off. */
#ifndef SH_ADMIN_CLIENT_H
#define SH_ADMIN_CLIENT_H

/* argv[0]: the console's address (unix:PATH); argv[1..argc-1]: one
** command, its words joined by spaces; none: commands from standard input,
** one a line (a prompt when it is a terminal). Returns the exit status: 0,
** or 1 if the console cannot be reached, closes the connection before a
** reply ends (it refuses another user), or a reply begins with "error". */
int sh_admin_client(const char *progname, int argc, char **argv);

#endif
