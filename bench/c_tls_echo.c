/* c_tls_echo.c -- the plain-C TLS baseline of `make bench`: an echo server
** on libevent's OpenSSL bufferevents, the classic way.
**
**   c_tls_echo CERT KEY PORT
**
** evconnlistener; per connection bufferevent_openssl_socket_new (accepting,
** BEV_OPT_CLOSE_ON_FREE); its read callback moves the whole input buffer to
** the output (bufferevent_write_buffer), and the connection is freed at the
** end of the stream or on an error. The same context settings as sockhost's
** (TLS 1.2 at least, no renegotiation, released buffers), so that the two
** do the same cryptographic work; no callbacks deferred, no Lua.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static struct event_base *base;
static SSL_CTX *ctx;

static void on_read (struct bufferevent *bev, void *arg) {
  (void)arg;
  bufferevent_write_buffer(bev, bufferevent_get_input(bev));
}

static void on_event (struct bufferevent *bev, short what, void *arg) {
  (void)arg;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) bufferevent_free(bev);
}

static void on_accept (struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                       int len, void *arg) {
  struct bufferevent *bev;
  SSL *ssl = SSL_new(ctx);
  int one = 1;
  (void)l; (void)sa; (void)len; (void)arg;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  bev = ssl ? bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE) : NULL;
  if (bev == NULL) { evutil_closesocket(fd); return; }
  bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
  bufferevent_setcb(bev, on_read, NULL, on_event, NULL);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void on_signal (evutil_socket_t sig, short what, void *arg) {
  (void)sig; (void)what; (void)arg;
  event_base_loopbreak(base);
}

int main (int argc, char **argv) {
  struct sockaddr_in sin;
  struct evconnlistener *l;
  struct event *sig;
  if (argc < 4) {
    fprintf(stderr, "usage: c_tls_echo CERT KEY PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  ctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_use_certificate_chain_file(ctx, argv[1]) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, argv[2], SSL_FILETYPE_PEM) != 1) {
    ERR_print_errors_fp(stderr);
    return 1;
  }
  base = event_base_new();
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((unsigned short)atoi(argv[3]));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  l = evconnlistener_new_bind(base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                              511, (struct sockaddr *)&sin, sizeof sin);
  if (l == NULL) { perror("listen"); return 1; }
  sig = evsignal_new(base, SIGTERM, on_signal, NULL);
  event_add(sig, NULL);
  event_base_dispatch(base);
  event_free(sig);
  evconnlistener_free(l);
  event_base_free(base);
  SSL_CTX_free(ctx);
  return 0;
}
