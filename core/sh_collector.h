/* sh_collector.h -- --metrics: one /metrics for the whole service.
**
** The collector is a thread of the top process (the master of -w N, or the
** single process), with a loop of its own (poll): it serves HTTP on the
** --metrics address and talks to the reporters, one per process that runs
** scripts, over a Unix stream socket in the abstract namespace. Knows
** nothing about Lua: a reporter's report is exposition text, which the
** collector sums.
**
** The protocol, one line each way, then a body:
**   reporter -> collector   "hello <worker> <pid>\n" once connected
**   collector -> reporter   "Q <seq>\n": report, please
**   reporter -> collector   "R <seq> <len>\n" and len bytes of exposition text
**   reporter -> collector   "A <seq>\n": the sum of all, please
**   collector -> reporter   "T <seq> <len>\n" and the summed text
** A reporter answers from its event loop, never blocking it; the collector
** asks every reporter once a second and at each scrape, and a scrape waits
** for the answers at most SH_COLLECT_WAIT seconds, then uses the last ones.
**
** Sums: a sample's value is the sum over the reporters connected. For the
** counters (TYPE counter, and a histogram's series) the collector keeps the
** last value each reporter sent and, when a reporter goes away (its worker
** exited, was killed, or replaced by a new generation), folds that value
** into a base that every later sum adds: the service's counters never go
** backwards. Gauges count only the reporters connected. */
#ifndef SH_COLLECTOR_H
#define SH_COLLECTOR_H

#include <stddef.h>

#define SH_COLLECT_WAIT 1.0     /* seconds a scrape waits for the reports */
#define SH_COLLECT_EVERY 1.0    /* seconds between the collector's own asks */

/* Start the collector for 'addr' (tcp://IP:port, or unix:/path): the
** listening socket is made here, so that an error is told at once. Returns
** 0, or -1 with a message in 'err'. Once per process. */
int sh_collector_start(const char *addr, char *err, size_t errlen);

/* In a worker just forked from the collector's process: close the
** collector's sockets that the fork copied (a scrape's connection would
** otherwise outlive the collector's close). Does nothing elsewhere. */
void sh_collector_forked(void);
/* The environment variable that carries the collector's name to workers
** a reload exec'd (a forked worker has it in memory). */
#define SH_COLLECTOR_ENV "SOCKHOST_COLLECTOR"

/* Connect to the collector of this process or of its master (a forked
** worker inherits its name; an exec'd one finds it in SH_COLLECTOR_ENV): a
** blocking socket, or -1 if there is none. */
int sh_collector_connect(void);

#endif
