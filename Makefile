# sockhost -- build, test, install.
#   make            build ./sockhost (the host), ./sockhost-tls.so (its TLS,
#                   opened when first used) and ./sockhost.so (the Lua module)
#   make run        start scripts/echo.lua on 127.0.0.1:7000
#   make test       run the specs (busted)
#   make sanitize   run the specs under AddressSanitizer + UBSan (./sockhost
#                   processes also check for leaks), then rebuild normally
#   make test-onebyte  the whole suite with every socket read and write cut to
#                   one byte, EAGAIN between (LD_PRELOAD spec/shim/onebyte.c)
#   make valgrind   the process specs with each ./sockhost under valgrind, and
#                   the stream specs in-process: no errors, definite leaks or
#                   descriptors left open
#   make stress     the long hostile-peer suite (spec/stress/*_stress.lua, not
#                   part of test): 10,000 idle connections, 100,000-connection
#                   churn, 1,000 slowloris peers, ulimit -n 64, SIGTERM under
#                   1,000 requests; 40-70 s here
#   make install PREFIX=/usr/local
# 'run', 'test' and 'stress' first install missing Debian packages (make deps).

.DEFAULT_GOAL := all
LUA_PC  ?= lua5.4
PKGS    := $(LUA_PC) libevent_core libevent_openssl openssl
PREFIX  ?= /usr/local
OPT     ?= -O2 -g
LUA     ?= lua5.4
BUSTED  ?= /usr/bin/busted

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ifdef SANITIZE
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
endif
# Mandatory flags live here; a user's CFLAGS adds to them.
FINAL_CFLAGS  = -std=c99 -D_GNU_SOURCE -fPIC -MMD -pthread $(WARN) $(OPT) $(SAN) \
                $(shell pkg-config --cflags $(PKGS)) $(OBJ_FLAGS) $(CFLAGS)
FINAL_LDFLAGS = -pthread $(SAN) $(LDFLAGS)
# libevent_core only: nothing of libevent_extra (evdns, evhttp, ...) is used.
LIBS_EVENT    = $(shell pkg-config --libs libevent_core)
LIBS_LUA      = $(shell pkg-config --libs $(LUA_PC))
LIBS_HTTP     = -lhttp_parser
# libevent_openssl's own .pc would add the whole libevent: name it alone.
LIBS_TLS      = -levent_openssl $(shell pkg-config --libs openssl)

CORE_OBJ = core/sh_blocks.o core/sh_clock.o core/sh_loop.o core/sh_util.o core/sh_addr.o core/sh_stream.o \
           core/sh_stream_sock.o core/sh_stream_bev.o core/sh_net.o core/sh_timer.o core/sh_log.o \
           core/sh_resolve.o core/sh_dgram.o core/sh_watchdog.o core/sh_proxy.o \
           core/sh_collector.o core/sh_admin_client.o \
           core/sh_inherit.o core/sh_handover.o core/sh_notify.o core/sh_fswatch.o
BIND_OBJ = bindings/l_opts.o bindings/l_host.o bindings/l_sched.o bindings/l_task.o bindings/l_conn.o \
           bindings/l_listener.o bindings/l_timer.o bindings/l_sockhost.o \
           bindings/l_resolve.o bindings/l_udp.o bindings/l_shutdown.o \
           bindings/l_modules.o bindings/modules_gen.o bindings/l_http.o bindings/l_test.o \
           bindings/l_address.o bindings/l_channel.o bindings/l_event.o bindings/l_select.o \
           bindings/l_stats.o bindings/l_report.o bindings/l_admin.o \
           bindings/l_reload.o bindings/l_gc.o
OBJ      = $(CORE_OBJ) $(BIND_OBJ)
# The Lua module: TLS linked in, not loaded on first use.
SO_OBJ   = $(filter-out core/sh_tls_load.o,$(OBJ)) core/sh_tls.o
# Lua modules shipped inside the binary (sockhost.http, ...): see l_modules.c.
LUA_MODS = $(sort $(wildcard bindings/lua/*.lua))
# TLS streams (tls://) on libevent's OpenSSL bufferevents. The executable
# has only sh_tls_load.o, which opens the module sockhost-tls.so (sh_tls.o
# and sh_tls_module.o, with OpenSSL) when TLS is first used: a process
# without TLS never maps libssl and libcrypto. The Lua module sockhost.so
# has sh_tls.o itself. The stamp (a checksum of the headers both sides are
# built against) keeps a module of another build from being used.
CORE_OBJ += core/sh_tls_load.o
BIND_OBJ += bindings/l_tls.o
TLS_MOD_OBJ = core/sh_tls.o core/sh_tls_module.o
TLS_STAMP_HDRS = core/sh_tls.h core/sh_tls_module.h core/sh_stream.h core/sh_transport.h \
                 core/sh_loop.h core/sh_util.h core/sh_log.h
TLS_STAMP := $(shell cat $(TLS_STAMP_HDRS) 2>/dev/null | cksum | cut -d' ' -f1)
core/sh_tls_load.o core/sh_tls_module.o: OBJ_FLAGS += -DSH_TLS_STAMP='"$(TLS_STAMP)"'
core/sh_tls_load.o core/sh_tls_module.o: $(TLS_STAMP_HDRS)
# The module's own symbols are hidden: only sh_tls_module_api is exported
# (rebuilt when the Makefile changes, so that no object without it stays).
$(TLS_MOD_OBJ): OBJ_FLAGS += -fvisibility=hidden
$(TLS_MOD_OBJ): Makefile
# The strict HTTP request head parser, on http-parser (LIBS_HTTP).
CORE_OBJ += core/sh_http.o core/sh_route.o
BIND_OBJ += bindings/l_route.o
# The fast path of reading RESP commands (conn:resp_commands, sockhost.resp).
CORE_OBJ += core/sh_resp.o
# The fast path of reading HTTP response heads (conn:take_response, the client).
CORE_OBJ += core/sh_httpc.o
# SHA-1, base64, random bytes, the WebSocket mask, UTF-8 (sockhost.crypto).
CORE_OBJ += core/sh_crypto.o
BIND_OBJ += bindings/l_crypto.o

SUDO_APT = sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; $$sudo apt-get install -y -qq
DEBIAN_PKGS = lua5.4 liblua5.4-dev libevent-dev pkg-config make gcc lua-busted \
              lua-socket lua-cjson python3 netcat-openbsd libhttp-parser-dev curl redis-tools \
              libssl-dev openssl nginx libnginx-mod-http-lua lua-resty-core wrk redis-server haproxy python3-prometheus-client prometheus \
              python3-websockets nodejs chromium chromium-driver
# Node's `ws` (test-only WebSocket peer of spec/websocket_spec.lua and
# spec/ws_chat_spec.lua), in a git-ignored project directory.
NODE_WS = spec/.node/node_modules/ws/package.json

.PHONY: all run test stress sanitize test-onebyte valgrind check-layers install uninstall \
        clean deps fuzz

all: sockhost sockhost-tls.so sockhost.so

# The executable exports only what sockhost-tls.so calls (sockhost.dynlist,
# from the module's undefined symbols): a smaller symbol table to map.
sockhost: $(OBJ) bindings/main.o sockhost.dynlist
	$(CC) $(FINAL_LDFLAGS) -o $@ $(OBJ) bindings/main.o $(LIBS_LUA) $(LIBS_EVENT) $(LIBS_HTTP) -lm \
	  -Wl,--dynamic-list=sockhost.dynlist

sockhost.dynlist: sockhost-tls.so
	{ echo '{'; nm -D --undefined-only sockhost-tls.so | awk '$$2 ~ /^sh_/ {print "  " $$2 ";"}'; \
	  echo '};'; } > $@

# TLS for the executable, opened with dlopen when first used (sh_tls_load.c).
sockhost-tls.so: $(TLS_MOD_OBJ)
	$(CC) $(FINAL_LDFLAGS) -shared -o $@ $^ $(LIBS_TLS) $(LIBS_EVENT)

# The module for plain lua5.4: Lua's symbols come from the interpreter.
sockhost.so: $(SO_OBJ)
	$(CC) $(FINAL_LDFLAGS) -shared -o $@ $^ $(LIBS_TLS) $(LIBS_EVENT) $(LIBS_HTTP)

%.o: %.c
	$(CC) $(FINAL_CFLAGS) -c -o $@ $<

bindings/modules_gen.c: bindings/embed.lua $(LUA_MODS)
	$(LUA) bindings/embed.lua $@ $(LUA_MODS)

# Install what is missing (Debian); a no-op when everything is there.
deps:
	@missing=""; for p in $(DEBIAN_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@if ! command -v npm >/dev/null; then $(SUDO_APT) npm; fi   # some nodejs builds carry their own
	@[ -f $(NODE_WS) ] || npm install --prefix spec/.node --no-audit --no-fund --silent ws@8

run: deps
	$(MAKE) all
	./sockhost scripts/echo.lua tcp://127.0.0.1:7000

test: deps
	$(MAKE) all check-layers
	$(LUA) $(BUSTED) --lpath='./spec/?.lua' spec/

# The long hostile-peer suite (not part of test: its files are named
# *_stress.lua, which busted's default pattern '_spec' leaves out). Its
# clients: bench/.build/loadgen and python3.
stress: deps
	$(MAKE) all bench/.build/loadgen
	$(LUA) $(BUSTED) --lpath='./spec/?.lua' --pattern=_stress spec/stress/

bench/.build/loadgen: bench/loadgen.c
	@mkdir -p bench/.build
	$(CC) -O2 -g $(WARN) -o $@ bench/loadgen.c

# The side-by-side benchmark (not part of test): C baseline, sockhost and the
# installed peers; table in bench/results.txt, plot in bench/results.png.
# BENCH_QUICK=1 for a short run; other knobs at the top of bench/run.
.PHONY: bench
bench: deps
	$(MAKE) all
	bench/run

sanitize: deps
	$(MAKE) clean
	$(MAKE) SANITIZE=1 OPT="-O1 -g" all
	ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD="$$($(CC) -print-file-name=libasan.so)" \
	  SOCKHOST_SANITIZED=1 $(LUA) $(BUSTED) --lpath='./spec/?.lua' spec/
	$(MAKE) clean
	$(MAKE) all

# The one-byte I/O shim (spec/shim/onebyte.c, LD_PRELOAD): the whole suite
# with every read and write on a non-blocking stream socket of ./sockhost and
# of busted's lua5.4 cut to one byte, with a made-up EAGAIN between.
# SOCKHOST_ONEBYTE=1 scales down the few cases that move many MiB (H.big in
# spec/helpers.lua); then the shim's report must show that it cut I/O in both.
# The specs in spec/virtual/ are left out: they run script and peers in one
# process on sockhost.test's virtual clock, where every byte costs a settled
# loop step, so their 64 KiB floods take many minutes one byte at a time;
# the process specs cover the same scripts over real sockets.
ONEBYTE_SPECS  = $(wildcard spec/*_spec.lua)
ONEBYTE_SO     = spec/shim/onebyte.so
ONEBYTE_REPORT = spec/tmp/onebyte.report
$(ONEBYTE_SO): spec/shim/onebyte.c
	$(CC) -std=c99 -Wall -Wextra -Werror -O2 -g -shared -fPIC -o $@ $< -ldl

test-onebyte: deps
	$(MAKE) all $(ONEBYTE_SO)
	@mkdir -p spec/tmp && rm -f $(ONEBYTE_REPORT)
	status=0; \
	SOCKHOST_ONEBYTE=1 SOCKHOST_ONEBYTE_REPORT=$(CURDIR)/$(ONEBYTE_REPORT) \
	  LD_PRELOAD=$(CURDIR)/$(ONEBYTE_SO) $(LUA) $(BUSTED) --lpath='./spec/?.lua' $(ONEBYTE_SPECS) || status=1; \
	$(LUA) spec/shim/onebyte_report.lua $(ONEBYTE_REPORT) || status=1; \
	exit $$status

# valgrind's memcheck on the normal build: the specs that start ./sockhost
# processes, each process under valgrind (SOCKHOST_VALGRIND: H.bin in
# spec/helpers.lua), then the in-process stream specs with busted's own lua5.4
# under valgrind (the module ./sockhost.so). spec/valgrind/check.lua then
# fails on any memcheck error, definite leak, or descriptor that a process
# opened and left open at exit. Logs in spec/tmp/valgrind/.
VALGRIND_SPECS  ?= spec/echo_spec.lua spec/udp_spec.lua spec/unix_spec.lua spec/shutdown_spec.lua \
                   spec/seed_spec.lua spec/workers_spec.lua spec/hardening_spec.lua spec/tls_spec.lua \
                   spec/proxy_protocol_spec.lua
VALGRIND_INPROC ?= spec/stream_spec.lua
VALGRIND_DIR     = spec/tmp/valgrind
valgrind: deps
	@command -v valgrind >/dev/null || $(SUDO_APT) valgrind
	$(MAKE) all
	rm -rf $(VALGRIND_DIR) && mkdir -p $(VALGRIND_DIR)
	export SOCKHOST_VALGRIND=$(CURDIR)/$(VALGRIND_DIR); status=0; \
	$(LUA) $(BUSTED) --lpath='./spec/?.lua' $(VALGRIND_SPECS) || status=1; \
	valgrind --leak-check=full --errors-for-leak-kinds=definite --track-fds=yes \
	  --error-exitcode=99 --child-silent-after-fork=yes --log-file=$(VALGRIND_DIR)/busted.%p.log \
	  $(LUA) $(BUSTED) --lpath='./spec/?.lua' $(VALGRIND_INPROC) || status=1; \
	$(LUA) spec/valgrind/check.lua $(VALGRIND_DIR) || status=1; \
	exit $$status

# libFuzzer (clang) on the read path, the address parser, the HTTP head and
# the PROXY header parsers, the RESP command fast path, the HTTP client's
# response head fast path, FUZZ_TIME
# seconds each; findings go to fuzz/crash-*.
FUZZ_TIME ?= 30
FUZZ_CC   ?= clang
FUZZ_FLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -std=c99 -D_GNU_SOURCE -pthread \
             $(shell pkg-config --cflags $(PKGS))
fuzz: deps bindings/modules_gen.c
	@command -v $(FUZZ_CC) >/dev/null || $(SUDO_APT) clang
	$(FUZZ_CC) $(FUZZ_FLAGS) -o fuzz/addr_fuzz fuzz/addr_fuzz.c core/sh_addr.c
	$(FUZZ_CC) $(FUZZ_FLAGS) -o fuzz/read_fuzz fuzz/read_fuzz.c $(CORE_OBJ:.o=.c) \
	  $(BIND_OBJ:.o=.c) $(LIBS_LUA) $(LIBS_TLS) $(LIBS_EVENT) $(LIBS_HTTP) -lm
	$(FUZZ_CC) $(FUZZ_FLAGS) -o fuzz/http_fuzz fuzz/http_fuzz.c $(CORE_OBJ:.o=.c) \
	  $(BIND_OBJ:.o=.c) $(LIBS_LUA) $(LIBS_TLS) $(LIBS_EVENT) $(LIBS_HTTP) -lm
	$(FUZZ_CC) $(FUZZ_FLAGS) -o fuzz/proxy_fuzz fuzz/proxy_fuzz.c $(CORE_OBJ:.o=.c) \
	  $(LIBS_TLS) $(LIBS_EVENT) $(LIBS_HTTP) -lm
	$(FUZZ_CC) $(FUZZ_FLAGS) -o fuzz/resp_fuzz fuzz/resp_fuzz.c core/sh_resp.c
	$(FUZZ_CC) $(FUZZ_FLAGS) -o fuzz/httpc_fuzz fuzz/httpc_fuzz.c core/sh_httpc.c
	@for t in addr_fuzz read_fuzz http_fuzz proxy_fuzz resp_fuzz httpc_fuzz; do \
	  echo "fuzz/$$t for $(FUZZ_TIME) s"; \
	  ASAN_OPTIONS=detect_leaks=0 ./fuzz/$$t -max_total_time=$(FUZZ_TIME) -max_len=4096 \
	    -artifact_prefix=fuzz/ -print_final_stats=1 > fuzz/$$t.log 2>&1 \
	    || { tail -40 fuzz/$$t.log; echo "fuzz/$$t: FAILED (see fuzz/$$t.log)"; exit 1; }; \
	  grep -E 'stat::number_of_executed_units|stat::new_units_added' fuzz/$$t.log; \
	done

# The layers (spec/layers.sh): core/ free of Lua, bindings/ free of libevent
# (it reaches the loop and streams only through core/'s headers), and no
# circle between object files; spec/layers_spec.lua shows each rule fail.
check-layers: $(OBJ) bindings/main.o $(TLS_MOD_OBJ)
	@sh spec/layers.sh . $(OBJ) bindings/main.o
	@sh spec/layers.sh . $(SO_OBJ) core/sh_tls_module.o

# Also the man page sockhost(1), the example scripts, and systemd units
# (sockhost@.service, and sockhost-echo.socket/.service for socket
# activation) with this PREFIX's paths.
MANDIR  ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share/sockhost
UNITDIR ?= $(PREFIX)/lib/systemd/system
# sockhost-tls.so: found by the executable at ../lib/sockhost from its folder.
LIBDIR   = $(PREFIX)/lib/sockhost
UNITS    = sockhost@.service sockhost-echo.socket sockhost-echo.service

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/lua/5.4 $(DESTDIR)$(MANDIR)/man1 \
	  $(DESTDIR)$(DATADIR)/scripts $(DESTDIR)$(UNITDIR) $(DESTDIR)$(LIBDIR)
	install -m 755 sockhost $(DESTDIR)$(PREFIX)/bin/sockhost
	install -m 644 sockhost-tls.so $(DESTDIR)$(LIBDIR)/sockhost-tls.so
	install -m 755 sockhost.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/sockhost.so
	install -m 644 doc/sockhost.1 $(DESTDIR)$(MANDIR)/man1/sockhost.1
	install -m 644 scripts/*.lua $(DESTDIR)$(DATADIR)/scripts/
	for u in $(UNITS); do \
	  sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@DATADIR@|$(DATADIR)|g' dist/$$u \
	    > $(DESTDIR)$(UNITDIR)/$$u && chmod 644 $(DESTDIR)$(UNITDIR)/$$u; done

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/sockhost $(DESTDIR)$(PREFIX)/lib/lua/5.4/sockhost.so \
	  $(DESTDIR)$(MANDIR)/man1/sockhost.1
	rm -rf $(DESTDIR)$(LIBDIR)
	rm -rf $(DESTDIR)$(DATADIR)
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$u; done

clean:
	rm -f sockhost sockhost-tls.so sockhost.dynlist sockhost.so core/*.o core/*.d bindings/*.o bindings/*.d bindings/modules_gen.c \
	  fuzz/addr_fuzz fuzz/read_fuzz fuzz/proxy_fuzz fuzz/resp_fuzz fuzz/httpc_fuzz spec/shim/onebyte.so

-include $(wildcard core/*.d bindings/*.d)
