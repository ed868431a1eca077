/* sh_stream.h -- a buffered, non-blocking byte stream: the one interface
** every stream transport of the host is used through (plain TCP and Unix
** sockets, TLS). Knows nothing about Lua; see bindings/l_conn.c.
**
** A transport is a small table of operations (core/sh_transport.h) with one
** implementation each: core/sh_stream_sock.c reads and writes a socket
** itself (the fast path, benchmarked), core/sh_stream_bev.c drives a
** libevent bufferevent (TLS streams, core/sh_tls.c). Owners see only this
** header; nothing here exposes a libevent type.
**
** Socket streams: writes go to the kernel at once (unless the stream is
** corked: see below); only what the kernel refuses is buffered, and only
** then is the write event armed. Reads are
** eager: while the input buffer is below its cap, whatever arrives is read
** into it, and the owner is told.
**
** Callbacks are only ever made from the event loop, never from inside one of
** the functions below, so an owner never sees re-entrant calls. An owner may
** close or abort the stream from inside its callback. */
#ifndef SH_STREAM_H
#define SH_STREAM_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "sh_loop.h"

typedef struct sh_stream sh_stream;

enum {
  SH_STREAM_READ = 1,    /* new input, or the end of it (eof/error set) */
  SH_STREAM_DRAIN = 2,   /* output fell to the low-water mark or below */
  SH_STREAM_IDLE = 4,    /* past the idle limit (see sh_sweep) */
  SH_STREAM_SLOW = 8,    /* a partial message past its limit */
  SH_STREAM_OVER = 16    /* its budget is over its limit and this stream holds
                         ** the most of it: the owner is to cut it (sh_budget) */
};

#define SH_STREAM_CAP 65536   /* input read ahead before pausing, by default */

typedef void (*sh_stream_fn)(sh_stream *s, int what, void *ctx);

/* Wrap a connected non-blocking socket. On success the stream owns 'fd'; on
** failure (NULL) the caller still does. */
sh_stream *sh_stream_new(sh_loop *loop, int fd, sh_stream_fn cb, void *ctx);

/* Give a stream that was handed out without an owner (by a TLS handshake,
** sh_tls.h) its owner. Input already buffered is reported from the loop. */
void sh_stream_set_owner(sh_stream *s, sh_stream_fn cb, void *ctx);

/* Socket streams: give the socket back and free the stream (after the
** owner's callback, if called from inside it). Buffered input and queued
** output are dropped: call it with the output flushed. The stream never
** calls back again. Returns the fd, or -1 for a transport that cannot hand
** its socket on (TLS). */
int sh_stream_detach(sh_stream *s);

/* The socket, or -1 (a transport without one). */
int sh_stream_fd(const sh_stream *s);
/* The transport's name: "socket" or "tls". */
const char *sh_stream_transport(const sh_stream *s);
/* The owner's context, or NULL once the stream is closed: owners re-check
** it after anything that may have run script code. */
void *sh_stream_ctx(const sh_stream *s);
/* Bytes buffered, without making a buffer: input not yet taken; output
** not yet handed to the kernel (queued, or held by a cork). */
size_t sh_stream_inlen(const sh_stream *s);
size_t sh_stream_outlen(const sh_stream *s);
/* The peer closed its side, or the connection failed. */
int sh_stream_eof(const sh_stream *s);
/* errno of the failure that ended the stream, or 0. */
int sh_stream_error(const sh_stream *s);

/* ---------------- The input buffer ---------------- */

/* The offset of the first 'd' (dlen bytes) in the input at or after 'from',
** or -1 if there is none yet. */
ssize_t sh_stream_find(sh_stream *s, const char *d, size_t dlen, size_t from);
/* The first 'n' input bytes, made contiguous; they stay buffered. NULL when
** fewer are buffered or out of memory. Copying SH_BUDGET_TRIM bytes or more
** to make them contiguous gives the heap's free pages back (see below). */
const char *sh_stream_peek(sh_stream *s, size_t n);
/* Remove the first 'n' input bytes (all of them if fewer). */
void sh_stream_consume(sh_stream *s, size_t n);

/* Read until the input holds 'cap' bytes, then pause. Call after taking
** bytes from the input too: it resumes reading when there is room. */
void sh_stream_set_cap(sh_stream *s, size_t cap);
/* DRAIN is reported when output falls to 'lowat' bytes or below. */
void sh_stream_set_lowat(sh_stream *s, size_t lowat);

/* ---------------- The buffer budget ----------------
** A budget counts the bytes that the streams given to it hold in their
** buffers (input not yet taken, output not yet sent; for TLS, the decrypted
** input and the plaintext output), against one limit for them all. A
** stream's charge is its buffers' length, taken again whenever bytes arrive,
** are taken, queued or sent, and dropped when it is freed. When input
** arriving on any of them leaves the budget over its limit, the stream that
** holds the most hears SH_STREAM_OVER (from the loop, as every callback):
** its owner is to cut it (sh_stream_abort), which gives its bytes back.
** Each owner bounds its own streams with sh_stream_set_cap.
**
** glibc keeps freed heap memory for reuse; when a budget's charge falls to
** half its last high point or below, by SH_BUDGET_TRIM bytes or more, the
** heap's free pages are given back to the system (malloc_trim), so that the
** memory a burst of buffered input took does not stay with the process. */

#define SH_BUDGET_TRIM (8u << 20)

typedef struct sh_budget sh_budget;

/* A budget of 'limit' bytes (0: no limit, only the count). NULL when out
** of memory. */
sh_budget *sh_budget_new(size_t limit);
/* Free it; streams still charged to it are let go (charged to nothing). */
void sh_budget_free(sh_budget *b);
void sh_budget_set_limit(sh_budget *b, size_t limit);
size_t sh_budget_limit(const sh_budget *b);
/* Bytes charged now. */
size_t sh_budget_used(const sh_budget *b);
/* Whether the budget is over its limit now. */
int sh_budget_over(const sh_budget *b);
/* Give the heap's free pages back to the system now (glibc: malloc_trim),
** for an owner that has just freed much itself (large strings of its own). */
void sh_budget_give_back(void);

/* Charge the stream's buffers to 'b' from now on (NULL: to none); what it
** holds already is charged at once. */
void sh_stream_set_budget(sh_stream *s, sh_budget *b);
/* Bytes the stream holds (input and output), as last charged. */
size_t sh_stream_charged(const sh_stream *s);

/* ---------------- Time limits ----------------
** A stream is past its limits when no byte has moved either way for 'idle'
** seconds, or when a partial message (see sh_stream_partial) has been
** pending for 'partial' seconds. A sweep checks the streams given to it
** every so often, with one timer for all (a timer per stream would cost
** more memory than an idle connection), and tells the owner of a stream
** past a limit with SH_STREAM_IDLE or SH_STREAM_SLOW; the owner closes it.
** Slow readers still draining what the kernel holds for them are not idle. */

typedef struct sh_sweep sh_sweep;

/* A sweep that checks its streams every 'every' seconds (on the loop's
** clock, virtual or real), armed only while it has streams. NULL when out
** of memory. Freeing it lets go of the streams still in it. */
sh_sweep *sh_sweep_new(sh_loop *loop, double every);
void sh_sweep_free(sh_sweep *w);

/* Set the limits (0 disables one) and hand the stream to sweep 'w' while
** either is set. */
void sh_stream_set_limits(sh_stream *s, sh_sweep *w, double idle, double partial);
/* The owner says whether it holds a partial message (a line begun, not
** ended). The clock starts at the first call with 'pending' set. */
void sh_stream_partial(sh_stream *s, int pending);

/* Send the 'n' buffers, at once if nothing is queued; queue what the kernel
** refuses, but let the queue grow only up to 'limit' bytes. Returns the bytes
** taken (sent, queued, or held by a cork), which may be fewer than offered,
** or -1 with errno if the stream is closed or failed. */
ssize_t sh_stream_write(sh_stream *s, const struct iovec *iov, int n, size_t limit);

/* ---------------- Corking ----------------
** A corked stream holds what is written instead of sending it, so that many
** small writes (the replies to a batch of pipelined requests) go out
** together: the socket transport sends what was held with one sendmsg, a
** TLS stream as few records. What is held goes out at sh_stream_flush, at
** uncorking, and when a write would take it past the write's limit (with
** the output queue): then it is sent first, the write goes on as uncorked,
** and the stream stays corked. Shutdown and close send it too; abort,
** detach and a failure drop it. It counts in sh_stream_outlen and in the
** stream's charge to its budget. */

/* Cork ('on') or uncork the stream; uncorking sends what is held. */
void sh_stream_cork(sh_stream *s, int on);
/* Send what is held now; the stream stays corked. */
void sh_stream_flush(sh_stream *s);
/* Whether the stream is corked. */
int sh_stream_corked(const sh_stream *s);

/* Half-close: no more writes; the peer sees the end of the stream once
** the queued output is sent. */
void sh_stream_shutdown(sh_stream *s);

/* Close after the queued output is sent, waiting at most 'linger' seconds.
** The stream never calls back again and frees itself. */
void sh_stream_close(sh_stream *s, double linger);

/* Close now, dropping queued output; TCP peers see a reset. */
void sh_stream_abort(sh_stream *s);

#endif
