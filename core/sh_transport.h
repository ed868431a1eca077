/* sh_transport.h -- how a transport plugs into sh_stream (for core/ only;
** owners use sh_stream.h).
**
** In the spirit of Redis's ConnectionType: a stream is the state every
** transport shares (owner, limits, closing, half-close) plus a table of
** operations with one implementation per transport. core/sh_stream.c holds
** the shared logic and calls only through the table; each transport file
** holds its own I/O and reports back through the sh_transport_* calls below.
** Adding a transport: write the table and a constructor that calls
** sh_transport_new; sh_stream.c does not change.
**
**   socket     core/sh_stream_sock.c   reads and writes the fd itself
**   bufferevent core/sh_stream_bev.c   a libevent bufferevent does the I/O
**                                      (TLS: core/sh_tls.c adds its hooks) */
#ifndef SH_TRANSPORT_H
#define SH_TRANSPORT_H

#include <event2/event_struct.h>

#include "sh_stream.h"

struct evbuffer;
struct bufferevent;

typedef struct sh_transport {
  /* The transport's name (sh_stream_transport). */
  const char *(*name)(const sh_stream *s);
  /* Bytes in the input buffer and in the output queue. */
  size_t (*inlen)(const sh_stream *s);
  size_t (*outlen)(const sh_stream *s);
  /* The input buffer, or NULL if there is none yet ('make': make one). */
  struct evbuffer *(*input)(sh_stream *s, int make);
  /* Start or stop reading, from the shared flags (eof, closing, cap). */
  void (*update_read)(sh_stream *s);
  /* s->cap or s->lowat changed. */
  void (*set_cap)(sh_stream *s);
  void (*set_lowat)(sh_stream *s);
  /* Send or queue up to 'limit' bytes in all; sh_stream_write's contract. */
  ssize_t (*write)(sh_stream *s, const struct iovec *iov, int n, size_t limit);
  /* Report the moment the output queue is empty (a shutdown or close
  ** waits for it), whatever the low-water mark. */
  void (*want_empty)(sh_stream *s);
  /* Our side's end of stream, once the output is out. */
  void (*half_close)(sh_stream *s);
  /* Closing: drop buffered input and read without a cap until the peer's end. */
  void (*discard_input)(sh_stream *s);
  /* Bytes the transport holds and sends on its own, out of the stream's
  ** sight (for the idle limit). */
  size_t (*unsent)(const sh_stream *s);
  /* Whether bytes moved out of the stream's sight since the last call
  ** (TLS records trickling out); NULL: never. */
  int (*moved)(sh_stream *s);
  /* Hand the socket back (sh_stream_detach); NULL: cannot. */
  int (*detach)(sh_stream *s);
  /* Free what the transport holds (the socket too, unless detached). */
  void (*destroy)(sh_stream *s);
} sh_transport;

/* A bufferevent transport's hooks (TLS: close_notify, the byte counts). */
typedef struct sh_bev_hooks {
  const char *name;
  void (*on_shut)(struct bufferevent *bev);          /* before our end; or NULL */
  unsigned long long (*moved)(struct bufferevent *bev);   /* or NULL */
} sh_bev_hooks;

struct sh_stream {
  sh_loop_item item;          /* first: tracked by the loop once orphaned */
  const sh_transport *ops;
  sh_loop *loop;
  int fd;                     /* the socket; -1 for a transport without one */
  struct event *linger;       /* close deadline; created on close */
  sh_sweep *sweep;            /* checks the limits, while any is set */
  sh_stream *sw_prev, *sw_next;   /* in its list */
  int limited;                /* idle or partial-message limit set */
  double idle;                /* seconds without progress allowed; 0: any */
  double partial;             /* seconds a partial message may take; 0: any */
  double last_active;         /* when a byte last moved */
  double partial_since;       /* when the pending partial message began; 0: none */
  double outq_at;             /* when 'outq' was sampled */
  int outq;                   /* bytes waiting for the peer then */
  sh_budget *budget;          /* charged to it, or NULL */
  size_t charged;             /* bytes charged: input + output when last taken */
  sh_stream *bu_prev, *bu_next;   /* in the budget's list while charged > 0 */
  size_t cap;                 /* pause reading when the input holds this much */
  size_t lowat;               /* report DRAIN at or below this */
  sh_stream_fn cb;            /* owner's callback; NULL once closed */
  void *ctx;                  /* owner's context */
  struct evbuffer *held;      /* corked writes not yet given to the transport;
                              ** made on the first, freed once sent */
  int err;                    /* errno that ended the stream, or 0 */
  unsigned corked : 1;        /* sh_stream_cork: writes are held */
  unsigned eof : 1;           /* no more input will come */
  unsigned shut_pending : 1;  /* half-close once output drains */
  unsigned shut_done : 1;     /* our side is half-closed */
  unsigned closing : 1;       /* sh_stream_close() was called */
  unsigned holds_ref : 1;     /* keeps the loop alive while flushing */
  unsigned in_cb : 1;         /* inside the owner's callback */
  unsigned dead : 1;          /* destroy was deferred */
  union {                     /* the transport's own state */
    struct {
      struct event rev;       /* readable; added while 'reading' */
      struct event *wev;      /* writable; made on the first pushback */
      struct evbuffer *in;    /* bytes read, not yet taken by the owner */
      struct evbuffer *out;   /* bytes the kernel refused so far */
      unsigned reading : 1, writing : 1, detached : 1;
    } sock;
    struct {
      struct bufferevent *bev;
      const sh_bev_hooks *hooks;
      unsigned long long moved;   /* hooks->moved as last read */
    } bev;
  } u;
};

/* A stream of transport 'ops' over 'fd' (-1: none), with defaults set; the
** constructor then fills s->u. NULL when out of memory. */
sh_stream *sh_transport_new(sh_loop *loop, const sh_transport *ops, int fd, sh_stream_fn cb,
                            void *ctx);
/* Free a stream whose constructor failed (nothing of the transport held). */
void sh_transport_discard(sh_stream *s);
/* Call the owner (the stream's charge taken again first). Returns 0 if
** the stream was destroyed meanwhile. */
int sh_transport_notify(sh_stream *s, int what);
/* Charge the stream's buffers as they are now (after bytes were taken,
** queued or sent; sh_stream.c does it for the calls it handles). */
void sh_transport_charge(sh_stream *s);
/* Input arrived: charge it, and if that leaves the budget over its limit,
** tell the stream holding the most (SH_STREAM_OVER). Call before telling
** the owner READ. Returns 0 if 's' was destroyed meanwhile. */
int sh_transport_arrived(sh_stream *s);
/* The input ended: 'err' 0 for the peer's orderly end, else its errno. */
void sh_transport_eof(sh_stream *s, int err);
/* Output went out: 'before' and 'after' are the queue's length around the
** send (before unknown: SIZE_MAX). Half-closes, finishes a close, or tells
** the owner DRAIN, as due. */
void sh_transport_sent(sh_stream *s, size_t before, size_t after);
/* Our side's end now (the shared half of a half-close). */
void sh_transport_half_close(sh_stream *s);
/* The output is out or lost on a closing stream: end it. */
void sh_transport_finish_close(sh_stream *s);

/* A byte moved: the idle clock starts again. */
static inline void sh_transport_touch (sh_stream *s) {
  if (s->limited) s->last_active = sh_now_coarse();
}

/* ---------------- The bufferevent transport ---------------- */

/* Wrap a bufferevent (made with BEV_OPT_CLOSE_ON_FREE if its socket is to
** be closed with it, and BEV_OPT_DEFER_CALLBACKS): it does the I/O, the
** stream keeps the interface and its semantics. The stream owns 'bev' on
** success and replaces its callbacks and watermarks; on failure (NULL) the
** caller still owns it. 'hooks' (static, or NULL) name the transport and
** add its own end of stream. Input already buffered is reported from the
** loop. Writes queue up to the limit in all. */
sh_stream *sh_stream_new_bev(sh_loop *loop, struct bufferevent *bev, const sh_bev_hooks *hooks,
                             sh_stream_fn cb, void *ctx);
/* The bufferevent of a bufferevent stream, else NULL. */
struct bufferevent *sh_stream_bev(const sh_stream *s);

#endif
