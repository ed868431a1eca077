/* sh_stream.h -- a buffered, non-blocking byte stream over a connected
** socket (TCP or Unix). Knows nothing about Lua; see bindings/l_conn.c.
**
** Writes go to the kernel at once; only what the kernel refuses is buffered,
** and only then is the write event armed (DESIGN.md, "Performance notes").
** Reads are eager: while the input buffer is below its cap, whatever arrives
** is read into it, and the owner is told.
**
** The same interface over any bufferevent (sh_stream_new_bev): TLS streams
** use it, with libevent's OpenSSL bufferevents (see sh_tls.h).
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

struct evbuffer;

typedef struct sh_stream sh_stream;

enum {
  SH_STREAM_READ = 1,    /* new input, or the end of it (eof/error set) */
  SH_STREAM_DRAIN = 2    /* output fell to the low-water mark or below */
};

typedef void (*sh_stream_fn)(sh_stream *s, int what, void *ctx);

/* Wrap a connected non-blocking socket. On success the stream owns 'fd'; on
** failure (NULL) the caller still does. */
sh_stream *sh_stream_new(sh_loop *loop, int fd, sh_stream_fn cb, void *ctx);

/* Wrap any bufferevent (a TLS one, one of a pair, ...): the bufferevent
** does the I/O, the stream keeps the interface and its semantics. On
** success the stream owns 'bev' and frees it (make it with
** BEV_OPT_CLOSE_ON_FREE if its socket is to be closed then, and with
** BEV_OPT_DEFER_CALLBACKS, so that callbacks come from the loop, never from
** inside the functions below); it replaces the bufferevent's callbacks and
** watermarks. On failure (NULL) the caller still owns 'bev'. Input that is
** already buffered in it is reported from the loop. Writes queue up to the
** limit in all (nothing goes to the kernel at once). */
struct bufferevent;
sh_stream *sh_stream_new_bev(sh_loop *loop, struct bufferevent *bev, sh_stream_fn cb, void *ctx);
/* The bufferevent of a stream made by sh_stream_new_bev, else NULL. */
struct bufferevent *sh_stream_bev(const sh_stream *s);
/* Bufferevent streams: 'fn' runs when the stream half-closes (shutdown, or
** close once the output is out), before the socket's FIN (or the pair's
** end of stream): a TLS stream sends its close_notify there. */
typedef void (*sh_stream_hook_fn)(struct bufferevent *bev);
void sh_stream_set_shutdown_hook(sh_stream *s, sh_stream_hook_fn fn);
/* Bufferevent streams: 'fn' tells how many bytes the bufferevent has moved
** to and from its socket so far, for the idle limit, which would otherwise
** not see bytes that move out of sight (a TLS record going out a few bytes
** at a time to a slow reader). Read at each sh_stream_limit_passed. */
typedef unsigned long long (*sh_stream_count_fn)(struct bufferevent *bev);
void sh_stream_set_counter(sh_stream *s, sh_stream_count_fn fn);

/* Socket streams: give the socket back and free the stream (after the
** owner's callback, if called from inside it). Buffered input and queued
** output are dropped: call it with the output flushed. The stream never
** calls back again. Returns the fd, or -1 for a bufferevent stream. */
int sh_stream_detach(sh_stream *s);

/* The socket, or -1 (a bufferevent without one). */
int sh_stream_fd(const sh_stream *s);
/* The owner's context, or NULL once the stream is closed: owners re-check
** it after anything that may have run script code. */
void *sh_stream_ctx(const sh_stream *s);
/* The input buffer (made on demand; NULL only when out of memory). */
struct evbuffer *sh_stream_input(sh_stream *s);
/* Bytes buffered, without making a buffer. */
size_t sh_stream_inlen(const sh_stream *s);
size_t sh_stream_outlen(const sh_stream *s);
/* The peer closed its side, or the connection failed. */
int sh_stream_eof(const sh_stream *s);
/* errno of the failure that ended the stream, or 0. */
int sh_stream_error(const sh_stream *s);

/* Read until the input holds 'cap' bytes, then pause. Call after taking
** bytes from the input too: it resumes reading when there is room. */
void sh_stream_set_cap(sh_stream *s, size_t cap);
/* DRAIN is reported when output falls to 'lowat' bytes or below. */
void sh_stream_set_lowat(sh_stream *s, size_t lowat);

/* Time limits: a stream is past them when no byte has moved either way for
** 'idle' seconds, or when a partial message (see sh_stream_partial) has
** been pending for 'partial' seconds. 0 disables a limit. The owner checks
** with sh_stream_limit_passed (the coarse clock is enough). */
void sh_stream_set_limits(sh_stream *s, double idle, double partial);
/* The owner says whether it holds a partial message (a line begun, not
** ended). The clock starts at the first call with 'pending' set. */
void sh_stream_partial(sh_stream *s, int pending);
/* 0 while within the limits; 1 idle too long; 2 a partial message too slow. */
int sh_stream_limit_passed(sh_stream *s, double now);

/* Send the 'n' buffers, at once if nothing is queued; queue what the kernel
** refuses, but let the queue grow only up to 'limit' bytes. Returns the bytes
** taken (sent or queued), which may be fewer than offered, or -1 with errno
** if the stream is closed or failed. */
ssize_t sh_stream_write(sh_stream *s, const struct iovec *iov, int n, size_t limit);

/* Half-close: no more writes; the peer sees the end of the stream once
** the queued output is sent. */
void sh_stream_shutdown(sh_stream *s);

/* Close after the queued output is sent, waiting at most 'linger' seconds.
** The stream never calls back again and frees itself. */
void sh_stream_close(sh_stream *s, double linger);

/* Close now, dropping queued output; TCP peers see a reset. */
void sh_stream_abort(sh_stream *s);

#endif
