-- TLS (tls://, conn:starttls, conn:tls): our server against openssl
-- s_client, curl and python3's ssl module; our client against openssl
-- s_server; both of ours against each other for the stream methods, the
-- failures and their messages. The certificates are made at test time with
-- the openssl command (spec/fixtures/tls_certs.sh) in a fresh directory
-- under spec/tmp.
local H = require "helpers"
local sh = H.sh

local D            -- the certificates' directory

local function path(name) return D .. "/" .. name end

-- Server options for certificate NAME (NAME.pem, NAME.key), plus 'more'.
local function server_opts(name, more)
  local o = { cert = path(name .. ".pem"), key = path(name .. ".key") }
  for k, v in pairs(more or {}) do o[k] = v end
  return o
end

-- Client options trusting the test CA, plus 'more'.
local function client_opts(more)
  local o = { ca = path("ca.pem") }
  for k, v in pairs(more or {}) do o[k] = v end
  return o
end

local function port_of(addr) return select(2, H.hostport(addr)) end

-- A TLS echo server in this process; 'opts' as for sockhost.listen. The
-- handler count is in the returned table's 'calls'.
local function tls_echo(name, more)
  local stats = { calls = 0 }
  local srv = assert(sh.listen("tls://127.0.0.1:0", function(c)
    stats.calls = stats.calls + 1
    stats.last = c:tls()
    while true do
      local d = c:read_some()
      if not d or not c:write(d) then return end
    end
  end, server_opts(name or "srv", more)))
  return srv, stats
end

-- Output of a shell command, bounded in time, with its exit code.
local function cmd(s, secs)
  return H.sh_cmd(("timeout -s KILL %d sh -c %s 2>&1"):format(secs or 10, H.q(s)))
end

-- Run openssl s_client against 127.0.0.1:PORT with extra arguments and
-- 'input' on its standard input, which stays open 'secs' (0.5; 3 under
-- valgrind) longer so
-- that replies arrive before s_client quits at its end; returns its output
-- (stdout and stderr).
local function s_client(port, args, input, secs)
  local f = H.writefile(H.tmpname(".in"), input or "")
  return (cmd(("(cat %s; sleep %s) | openssl s_client -connect 127.0.0.1:%d -CAfile %s -no_ign_eof %s")
    :format(H.q(f), secs or (H.VALGRIND and 3 or 0.5), port, H.q(path("ca.pem")), args or "")))
end

describe("TLS", function()
  setup(function()
    D = H.sh_cmd("mktemp -d " .. H.q(H.TMP .. "/tls.XXXXXX")):gsub("%s+$", "")
    local out, rc = H.sh_cmd("sh spec/fixtures/tls_certs.sh " .. H.q(D) .. " 2>&1")
    assert(rc == 0 and out:match("ok"), "cannot make certificates: " .. out)
  end)
  teardown(function()
    if D and D:match("/tls%.") then os.execute("rm -rf " .. H.q(D)) end
  end)

  describe("our client and server", function()
    it("carry every read format, write and half-close over TLS, and say so in peer/address", function()
      local got = {}
      H.run(function()
        local srv = assert(sh.listen("tls://127.0.0.1:0", function(c)
          got.l = c:read("l")
          got.L = c:read("L")
          got.n = c:read(5)
          got["until"] = c:read_until("END")
          got.lines = {}
          for i = 1, 2 do
            local line = c:read()
            got.lines[i] = line
          end
          got.some = c:read_some(3)
          got.a = c:read("a")                 -- until the client's shutdown
          got.peer = c:peer()
          assert(c:write("bye\n"))
        end, server_opts("srv")))
        assert.matches("^tls://127%.0%.0%.1:%d+$", srv:address())
        local c = assert(sh.connect(srv:address(), client_opts()))
        got.address = c:address()
        got.cpeer = c:peer()
        assert(c:write("one\r\ntwo\n", "12345", "abcEND", "x\ny\n", "zzz"))
        sh.sleep(0.05)
        assert(c:write(string.rep("A", 100000)))
        assert(c:shutdown())
        got.reply = c:read("a")
        c:close()
        srv:close()
      end)
      assert.equals("one", got.l)
      assert.equals("two\n", got.L)
      assert.equals("12345", got.n)
      assert.equals("abc", got["until"])
      assert.same({ "x", "y" }, got.lines)
      assert.equals("zzz", got.some)
      assert.equals(string.rep("A", 100000), got.a)
      assert.equals("bye\n", got.reply)
      assert.matches("^tls://127%.0%.0%.1:%d+$", got.peer)
      assert.equals(got.address, got.peer)
      assert.matches("^tls://127%.0%.0%.1:%d+$", got.cpeer)
    end)

    it("conn:tls() describes the session and the peer's certificate; nil on a plain conn", function()
      local server_view, client_view, plain
      H.run(function()
        local srv, stats = tls_echo("srv")
        local c = assert(sh.connect("tls://localhost:" .. port_of(srv:address()), client_opts()))
        assert(c:write("x"))
        assert.equals("x", c:read(1))
        client_view = c:tls()
        c:close()
        srv:close()
        server_view = stats.last
        local p = assert(sh.listen("tcp://127.0.0.1:0", function(pc) plain = { pc:tls() } end))
        local pc = assert(sh.connect(p:address()))
        sh.sleep(0.05)
        pc:close()
        p:close()
      end)
      local fp = H.sh_cmd("openssl x509 -noout -fingerprint -sha256 -in " .. H.q(path("srv.pem"))):match("=(%S+)")
      local not_after = tonumber((H.sh_cmd("date -u +%s -d \"$(openssl x509 -noout -enddate -in "
        .. H.q(path("srv.pem")) .. " | cut -d= -f2)\"")))
      assert.equals("TLSv1.3", client_view.protocol)
      assert.is_string(client_view.cipher)
      assert.equals("localhost", client_view.servername)
      assert.is_nil(client_view.alpn)
      assert.equals("CN=localhost", client_view.peer.subject)
      assert.equals("CN=Test CA", client_view.peer.issuer)
      assert.equals(fp, client_view.peer.fingerprint)
      assert.matches("^%x%x:", client_view.peer.fingerprint)
      assert.equals(not_after, client_view.peer.not_after)
      assert.is_true(client_view.peer.not_before <= os.time() and os.time() < not_after)
      assert.is_true(client_view.peer.verified)
      assert.equals("TLSv1.3", server_view.protocol)
      assert.equals("localhost", server_view.servername)   -- what the client sent
      assert.is_nil(server_view.peer)                       -- no client certificate
      assert.same({ nil }, plain)
    end)

    it("fails with the reason: expired, name mismatch, unknown CA, not TLS, handshake timeout", function()
      local r = {}
      H.run(function()
        local expired = tls_echo("expired")
        local other = tls_echo("other")
        local unk = tls_echo("unk")
        local good, good_stats = tls_echo("srv")
        local banner = assert(sh.listen("tcp://127.0.0.1:0", function(c)
          c:write("220 plain text here\r\n")
          sh.sleep(0.5)
        end))
        local silent = assert(sh.listen("tcp://127.0.0.1:0", function(c) c:read("a") end))
        local function try(addr, opts) return { sh.connect(addr, client_opts(opts)) } end
        r.expired = try(expired:address())
        r.ip_mismatch = try(other:address())
        r.name_mismatch = try("tls://localhost:" .. port_of(other:address()))
        r.servername_ok = try(other:address(), { servername = "other.example" })
        r.unknown = try(unk:address())
        r.system_store = { sh.connect(good:address()) }             -- no 'ca': the system store
        r.unverified = { sh.connect(unk:address(), { verify = false }) }
        r.not_tls = try("tls://127.0.0.1:" .. port_of(banner:address()))
        local t0 = sh.now()
        r.stall = try("tls://127.0.0.1:" .. port_of(silent:address()), { handshake_timeout = 0.3 })
        r.stall_secs = sh.now() - t0
        t0 = sh.now()
        r.stall_total = try("tls://127.0.0.1:" .. port_of(silent:address()), { timeout = 0.3 })
        r.stall_total_secs = sh.now() - t0
        r.good_calls = good_stats.calls
        for _, k in ipairs { "servername_ok", "unverified" } do
          if r[k][1] then r[k][1]:close() end
        end
        for _, s in ipairs { expired, other, unk, good, banner, silent } do s:close() end
      end)
      assert.is_nil(r.expired[1])
      assert.matches("^certificate expired: ", r.expired[2])
      assert.is_nil(r.ip_mismatch[1])
      assert.matches("^name mismatch: ", r.ip_mismatch[2])
      assert.is_nil(r.name_mismatch[1])
      assert.matches("^name mismatch: ", r.name_mismatch[2])
      assert.truthy(r.servername_ok[1], r.servername_ok[2])
      assert.is_nil(r.unknown[1])
      assert.matches("^unknown CA: ", r.unknown[2])
      assert.is_nil(r.system_store[1])
      assert.matches("^unknown CA: ", r.system_store[2])
      assert.truthy(r.unverified[1], r.unverified[2])
      assert.is_nil(r.not_tls[1])
      assert.matches("^not TLS", r.not_tls[2])
      assert.same({ nil, "handshake timeout" }, r.stall)
      assert.is_true(r.stall_secs >= 0.25 and r.stall_secs < 2, tostring(r.stall_secs))
      assert.same({ nil, "handshake timeout" }, r.stall_total)
      assert.is_true(r.stall_total_secs >= 0.25 and r.stall_total_secs < 2, tostring(r.stall_total_secs))
      assert.equals(0, r.good_calls)     -- its one client rejected it: no handler ran
    end)

    it("a server runs no handler for a failed or stalled handshake, and cuts the stall at handshake_timeout", function()
      local r = {}
      H.run(function()
        local srv, stats = tls_echo("srv", { handshake_timeout = 0.3 })
        local host, port = H.hostport(srv:address())
        -- plain text to the TLS port
        local plain = assert(sh.connect("tcp://" .. host .. ":" .. port))
        plain:write("GET / HTTP/1.0\r\n\r\n")
        r.plain = { plain:read("a") }
        -- a client that trusts another CA
        r.untrusted = { sh.connect(srv:address(), { ca = path("ca2.pem") }) }
        -- a client that says nothing
        local t0 = sh.now()
        local mute = assert(sh.connect("tcp://" .. host .. ":" .. port))
        r.mute = { mute:read("a") }
        r.mute_secs = sh.now() - t0
        r.calls = stats.calls
        local ok = assert(sh.connect(srv:address(), client_opts()))
        ok:write("ping")
        r.ok = ok:read(4)
        ok:close()
        r.calls_after = stats.calls
        srv:close()
      end)
      assert.same({ "" }, r.plain)                -- closed, no TLS bytes for plain text
      assert.is_nil(r.untrusted[1])
      assert.matches("^unknown CA", r.untrusted[2])
      assert.same({ "" }, r.mute)
      assert.is_true(r.mute_secs >= 0.25 and r.mute_secs < 2, tostring(r.mute_secs))
      assert.equals(0, r.calls)
      assert.equals("ping", r.ok)
      assert.equals(1, r.calls_after)
    end)

    it("SNI picks the certificate by name (exact, then *.wildcard), the default otherwise", function()
      local subjects = {}
      H.run(function()
        local srv = tls_echo("srv", { certs = {
          ["a.example"] = { cert = path("a.pem"), key = path("a.key") },
          ["*.b.example"] = { cert = path("b.pem"), key = path("b.key") },
        } })
        for _, name in ipairs { "a.example", "x.b.example", "localhost" } do
          local c = assert(sh.connect(srv:address(), client_opts({ servername = name })))
          subjects[name] = c:tls().peer.subject
          c:close()
        end
        subjects.mismatch = { sh.connect(srv:address(), client_opts({ servername = "b.example" })) }
        srv:close()
      end)
      assert.equals("CN=a.example", subjects["a.example"])
      assert.equals("CN=*.b.example", subjects["x.b.example"])
      assert.equals("CN=localhost", subjects.localhost)
      assert.is_nil(subjects.mismatch[1])         -- the default certificate, not b's
      assert.matches("^name mismatch", subjects.mismatch[2])
    end)

    it("negotiates ALPN by the server's preference; none in common: no ALPN", function()
      local r = {}
      H.run(function()
        local srv, stats = tls_echo("srv", { alpn = { "h2", "http/1.1" } })
        local c = assert(sh.connect(srv:address(), client_opts({ alpn = { "http/1.1", "h2" } })))
        r.client = c:tls().alpn
        c:write("x"); c:read(1)
        r.server = stats.last.alpn
        c:close()
        c = assert(sh.connect(srv:address(), client_opts({ alpn = { "spdy/3" } })))
        r.none = { c:tls().alpn }
        c:close()
        srv:close()
      end)
      assert.equals("h2", r.client)
      assert.equals("h2", r.server)
      assert.same({}, r.none)
    end)

    it("requires and checks client certificates (ca + verify = true)", function()
      local r = {}
      H.run(function()
        local srv, stats = tls_echo("srv", { ca = path("ca.pem"), verify = true })
        local function attempt(opts)
          local c, err = sh.connect(srv:address(), client_opts(opts))
          if not c then return { nil, err } end
          c:write("hi")                       -- TLS 1.3: the server decides after our handshake
          local res = { c:read(2) }
          c:close()
          return res
        end
        r.none = attempt()
        r.unknown = attempt({ cert = path("unk.pem"), key = path("unk.key") })
        r.calls_before = stats.calls
        r.good = attempt({ cert = path("client.pem"), key = path("client.key") })
        r.peer = stats.last.peer
        srv:close()
      end)
      assert.is_nil(r.none[1])
      assert.is_nil(r.unknown[1])
      assert.equals(0, r.calls_before)
      assert.same({ "hi" }, r.good)
      assert.equals("CN=client", r.peer.subject)
      assert.is_true(r.peer.verified)
    end)

    it("starttls upgrades in place both ways and drops plaintext buffered before it", function()
      local r = { server = {} }
      H.run(function()
        local srv = assert(sh.listen("tcp://127.0.0.1:0", function(c)
          while true do
            local line = c:read()
            if line ~= "STARTTLS" then return end
            c:write("GO\n")
            local ok, err = c:starttls(server_opts("srv"))
            if not ok then r.server[#r.server + 1] = err; return end
            local l = c:read()
            r.server[#r.server + 1] = l
            c:write("secret:", l, "\n", c:tls().protocol, "\n")
          end
        end))
        local c = assert(sh.connect(srv:address()))
        assert(c:write("STARTTLS\n"))
        r.go = c:read()
        r.before = { c:tls() }
        r.ok = { c:starttls(client_opts({ servername = "localhost" })) }
        assert(c:write("inside\n"))
        r.reply = c:read()
        r.proto = c:read()
        r.again = { c:starttls(client_opts()) }
        c:close()
        -- injection: plaintext sent with STARTTLS must not be read as if inside TLS
        local i = assert(sh.connect(srv:address()))
        assert(i:write("STARTTLS\nINJECTED\n"))
        r.go2 = i:read()
        r.ok2 = { i:starttls(client_opts({ servername = "localhost" })) }
        if r.ok2[1] then
          assert(i:write("real\n"))
          r.reply2 = i:read()
        end
        i:close()
        sh.sleep(0.05)
        srv:close()
      end)
      assert.equals("GO", r.go)
      assert.same({ nil }, r.before)
      assert.same({ true }, r.ok)
      assert.equals("secret:inside", r.reply)
      assert.equals("TLSv1.3", r.proto)
      assert.same({ nil, "already TLS" }, r.again)
      assert.equals("GO", r.go2)
      if H.ONEBYTE and not r.ok2[1] then
        -- one byte at a time, part of "INJECTED\n" arrives after the server
        -- has switched: the handshake sees it and fails, never reads it
        assert.equals("inside", r.server[1])
        assert.matches("^not TLS", r.server[2])
        return
      end
      assert.same({ true }, r.ok2)
      assert.equals("secret:real", r.reply2)
      assert.same({ "inside", "real" }, r.server)
    end)

    it("starttls waits for output still queued to reach the peer in plain text first", function()
      local r = { got = 0, other = 0 }
      -- more than the kernel's buffers take (one byte at a time: any amount)
      local n = math.floor(H.big(32, 0.25) * 1024 * 1024)
      H.run(function()
        local srv = assert(sh.listen("tcp://127.0.0.1:0", function(c)
          c:settimeout(0.2)
          r.write = { c:write(string.rep("p", n)) }   -- times out with output queued
          c:settimeout(nil)
          r.server = { c:starttls(server_opts("srv")) }
          if r.server[1] then c:write("inside\n") end
        end))
        local c = assert(sh.connect(srv:address()))
        sh.sleep(0.5)                          -- the server is in starttls by now
        c:settimeout(0.3)
        while true do                          -- the plain text, until it stops
          local d = c:read_some()
          if not d then break end
          r.got = r.got + #d
          r.other = r.other + #d:gsub("p", "")
        end
        c:settimeout(nil)
        r.ok = { c:starttls(client_opts({ servername = "localhost" })) }
        r.inside = c:read()
        c:close()
        srv:close()
      end, 30)
      assert.same({ nil, "timeout" }, r.write)
      assert.is_true(r.got >= 65536, tostring(r.got))  -- our queue, and what the kernel took
      assert.equals(0, r.other)
      assert.same({ true }, r.ok)
      assert.same({ true }, r.server)
      assert.equals("inside", r.inside)
    end)

    it("starttls failures are nil, err and leave the conn closed", function()
      local r = {}
      H.run(function()
        local srv = assert(sh.listen("tcp://127.0.0.1:0", function(c)
          c:read()
          c:write("220 not going to do TLS\r\n")
          sh.sleep(0.3)
        end))
        local c = assert(sh.connect(srv:address()))
        c:write("STARTTLS\n")
        r.res = { c:starttls(client_opts()) }
        r.after = { c:write("x") }
        srv:close()
      end)
      assert.is_nil(r.res[1])
      assert.matches("^not TLS", r.res[2])
      assert.same({ nil, "closed" }, r.after)
    end)

    it("starttls over unix: a verifying client without servername fails, never accepts any trusted certificate", function()
      local r = {}
      local sock = H.tmpname(".sock")
      H.run(function()
        local srv = assert(sh.listen("unix:" .. sock, function(c)
          if c:read() ~= "STARTTLS" then return end
          c:write("GO\n")
          -- a certificate of the trusted test CA, made out to other.example
          if c:starttls(server_opts("other")) then c:write("inside\n") end
        end))
        local function try(opts)
          local c = assert(sh.connect("unix:" .. sock))
          c:write("STARTTLS\n")
          c:read()
          local res = { c:starttls(opts) }
          if res[1] then res.line = c:read() end
          res.still = { c:write("") }            -- a refusal before the handshake: still open
          c:close()
          return res
        end
        r.none = try(client_opts())
        r.wrong = try(client_opts({ servername = "localhost" }))
        r.right = try(client_opts({ servername = "other.example" }))
        r.unverified = try({ verify = false })
        srv:close()
      end)
      os.remove(sock)
      assert.is_nil(r.none[1])
      assert.matches("^no servername: ", r.none[2])
      assert.same({ true }, r.none.still)
      assert.is_nil(r.wrong[1])
      assert.matches("^name mismatch", r.wrong[2])
      assert.same({ nil, "closed" }, r.wrong.still)
      assert.is_true(r.right[1])
      assert.equals("inside", r.right.line)
      assert.is_true(r.unverified[1])
      assert.equals("inside", r.unverified.line)
    end)

    it("starttls while another task's starttls is in its handshake is 'busy'", function()
      local r = {}
      H.run(function()
        local srv = assert(sh.listen("tcp://127.0.0.1:0", function(c) c:read("a") end))   -- never answers
        local c = assert(sh.connect(srv:address()))
        local first = sh.spawn(function()
          return c:starttls(client_opts({ servername = "localhost", handshake_timeout = 0.5 }))
        end)
        sh.sleep(0.1)                          -- the first is in its handshake
        r.second = { c:starttls(client_opts({ servername = "localhost" })) }
        r.first = { first:join() }
        r.after = { c:starttls(client_opts({ servername = "localhost" })) }
        c:close()
        srv:close()
      end)
      assert.same({ nil, "busy" }, r.second)
      assert.same({ nil, "handshake timeout" }, r.first)
      assert.same({ nil, "closed" }, r.after)  -- the failed handshake closed it
    end)

    it("keeps settimeout, max_line, line and idle limits, close flushing and abort", function()
      local r = {}
      local flood = math.floor(H.big(3, 0.25) * 1024 * 1024)   -- far past the 64 KiB queue
      H.run(function()
        local srv = assert(sh.listen("tls://127.0.0.1:0", function(c)
          local cmd = c:read()
          if cmd == "timeout" then
            c:settimeout(0.1)
            r.timeout = { c:read() }
            c:settimeout(2)
            r.after_timeout = c:read()
          elseif cmd == "long" then
            r.long = { c:read() }
          elseif cmd == "flood" then
            c:write(string.rep("z", flood))    -- then the handler returns: close flushes
          elseif cmd == "abort" then
            c:abort()
          elseif cmd == "linger" then
            r.linger = { c:read() }
          end
        end, server_opts("srv", { max_line = 100, line_timeout = 0.3, idle_timeout = 0.6 })))
        local function client(cmd)
          local c = assert(sh.connect(srv:address(), client_opts()))
          assert(c:write(cmd, "\n"))
          return c
        end
        local c = client("timeout")
        sh.sleep(0.3)
        c:write("late\n")
        sh.sleep(0.05)
        c:close()
        c = client("long")
        c:write(string.rep("x", 200), "\n")
        sh.sleep(0.05)
        c:close()
        c = client("flood")
        r.flood = #assert(c:read("a"))
        c:close()
        c = client("abort")
        r.abort = { c:read() }
        c:close()
        c = client("linger")
        c:write("never finished")
        local t0 = sh.now()
        r.linger_read = { c:read() }
        r.linger_secs = sh.now() - t0
        c:close()
        c = assert(sh.connect(srv:address(), client_opts()))
        t0 = sh.now()
        r.idle = { c:read() }
        r.idle_secs = sh.now() - t0
        srv:close()
      end)
      assert.same({ nil, "timeout", "" }, r.timeout)
      assert.equals("late", r.after_timeout)
      assert.same({ nil, "line too long" }, r.long)
      assert.equals(flood, r.flood)
      assert.same({ nil, "closed" }, r.abort)
      assert.same({ nil, "closed" }, r.linger)
      assert.same({ nil, "closed" }, r.linger_read)
      assert.is_true(r.linger_secs > 0.2 and r.linger_secs < 1.5, tostring(r.linger_secs))
      assert.same({ nil, "closed" }, r.idle)
      assert.is_true(r.idle_secs > 0.5 and r.idle_secs < 2, tostring(r.idle_secs))
    end)

    it("writes with backpressure: 8 MiB to a peer that reads late arrive whole", function()
      local r = {}
      local n = H.big(8, 1) * 1024 * 1024
      H.run(function()
        local srv = assert(sh.listen("tls://127.0.0.1:0", function(c)
          local chunk = string.rep("0123456789abcdef", 4096)
          local t0 = sh.now()
          for _ = 1, n // #chunk do assert(c:write(chunk)) end
          r.write_secs = sh.now() - t0
        end, server_opts("srv")))
        local c = assert(sh.connect(srv:address(), client_opts()))
        sh.sleep(0.5)                     -- the writer fills the queue and parks
        r.parked = r.write_secs == nil
        r.got = #assert(c:read("a"))
        c:close()
        srv:close()
      end, 30)
      assert.is_true(r.parked)
      assert.equals(n, r.got)
    end)

    it("rejects malformed options (raises) and unusable files (nil, err)", function()
      local r = {}
      H.run(function()
        local C = server_opts("srv")
        r[1] = { pcall(sh.listen, "tcp://127.0.0.1:0", print, C) }
        r[2] = { pcall(sh.listen, "tls://127.0.0.1:0", print, server_opts("srv", { min_version = "tls1.1" })) }
        r[3] = { pcall(sh.listen, "tls://127.0.0.1:0", print, server_opts("srv", { verify = true })) }
        r[4] = { pcall(sh.listen, "tls://127.0.0.1:0", print, server_opts("srv", { alpn = "h2" })) }
        r[5] = { pcall(sh.connect, "tls://127.0.0.1:1", { servername = 5 }) }
        r[6] = { pcall(sh.connect, "tcp://127.0.0.1:1", { ca = "x" }) }
        r[7] = { sh.listen("tls://127.0.0.1:0", print, { cert = path("missing.pem"), key = path("srv.key") }) }
        r[8] = { sh.listen("tls://127.0.0.1:0", print, { cert = path("srv.pem"), key = path("a.key") }) }
        r[9] = { sh.listen("tls://127.0.0.1:0", print) }
        r[10] = { sh.connect("tls://127.0.0.1:1", { ca = path("missing.pem") }) }
      end)
      for i = 1, 6 do assert.is_false(r[i][1], "case " .. i) end
      assert.matches("tls://", r[1][2])
      assert.matches("min_version", r[2][2])
      assert.matches("ca", r[3][2])
      assert.matches("alpn", r[4][2])
      assert.matches("servername", r[5][2])
      assert.same({ nil, "cannot load certificate '" .. path("missing.pem") .. "': no such file or directory" }, r[7])
      assert.is_nil(r[8][1])
      assert.matches("^cannot load key", r[8][2])
      assert.same({ nil, "a TLS server needs cert and key" }, r[9])
      assert.is_nil(r[10][1])
      assert.matches("^cannot load CA file", r[10][2])
    end)
  end)

  describe("scripts/tls_echo.lua against real clients", function()
    local proc, port
    setup(function()
      proc = H.start(("scripts/tls_echo.lua %s %s tls://127.0.0.1:0"):format(
        H.q(path("srv.pem")), H.q(path("srv.key"))))
      port = port_of(proc:wait_output("listening on (%S+)"))
    end)
    teardown(function()
      assert.equals(0, proc:stop())
    end)

    it("echoes to openssl s_client, which verifies it", function()
      local out = s_client(port, "-servername localhost -verify_return_error", "hello s_client\n")
      assert.matches("Verify return code: 0 %(ok%)", out)
      assert.matches("\nhello s_client\n", out)
    end)

    it("echoes 32 MiB of every byte value to python3's ssl module intact by SHA-256", function()
      local mib = H.big(32, 0.25)
      local out, rc = H.sh_cmd(("timeout 60 python3 spec/fixtures/tls_client.py 127.0.0.1 %d %s localhost %s")
        :format(port, H.q(path("ca.pem")), mib))
      assert.equals(0, rc, out)
      local total, got, h1, h2, version = out:match("(%d+) (%d+) (%x+) (%x+) (%S+)")
      assert.equals(math.floor(mib * 1024 * 1024), tonumber(total))
      assert.equals(tonumber(total), tonumber(got))
      assert.equals(h1, h2)
      assert.equals("TLSv1.3", version)
    end)

    it("logs failed handshakes with the peer and the reason: not TLS, unknown CA, protocol version", function()
      local c = H.tcp("127.0.0.1", port)
      c:send("HELLO plain\r\n")
      local data, _, partial = c:receive("*a")      -- a close, or a reset: no bytes
      c:close()
      assert.equals("", data or partial or "")
      local out = s_client(port, "-verify_return_error -CAfile " .. H.q(path("ca2.pem")), "")
      assert.matches("verify error", out)
      local log
      local deadline = H.socket.gettime() + 5
      repeat
        log = proc:stderr()
        if log:match("failed: unknown CA") then break end
        H.socket.sleep(0.02)
      until H.socket.gettime() > deadline
      assert.matches("tls: handshake with tls://127%.0%.0%.1:%d+ failed: not TLS", log)
      assert.matches("tls: handshake with tls://127%.0%.0%.1:%d+ failed: unknown CA", log)
    end)
  end)

  describe("against real clients and servers", function()
    it("curl gets HTTPS from a tiny script, verifying it (--cacert), with ALPN http/1.1", function()
      local proc = H.start(("spec/fixtures/tls_http.lua %s %s"):format(H.q(path("srv.pem")), H.q(path("srv.key"))))
      finally(function() proc:stop() end)
      local port = port_of(proc:wait_output("listening on (%S+)"))
      local out, rc = cmd(("curl -sS --cacert %s https://localhost:%d/one https://localhost:%d/two")
        :format(H.q(path("ca.pem")), port, port))
      assert.equals(0, rc, out)
      assert.equals("hello over TLS TLSv1.3 http/1.1 /one\nhello over TLS TLSv1.3 http/1.1 /two\n", out)
      out, rc = cmd(("curl -sS --cacert %s https://127.0.0.1:%d/"):format(H.q(path("ca2.pem")), port))
      assert.not_equals(0, rc)
      assert.equals(0, proc:stop())
    end)

    it("s_client: SNI picks the certificate, ALPN is agreed, client certificates are required", function()
      local proc = H.start(("-e %s"):format(H.q(([[
        local sh = require "sockhost"
        local D = %q
        local srv = assert(sh.listen("tls://127.0.0.1:0", function(c)
          local t = c:tls()
          c:write(("peer=%%s alpn=%%s sni=%%s\n"):format(t.peer and t.peer.subject, t.alpn, t.servername))
        end, { cert = D .. "/srv.pem", key = D .. "/srv.key", alpn = { "h2", "http/1.1" },
               ca = D .. "/ca.pem", verify = true, min_version = "tls1.3",
               certs = { ["a.example"] = { cert = D .. "/a.pem", key = D .. "/a.key" } } }))
        print("listening on " .. srv:address())
      ]]):format(D))))
      finally(function() proc:stop() end)
      local port = port_of(proc:wait_output("listening on (%S+)"))
      local client = ("-cert %s -key %s"):format(H.q(path("client.pem")), H.q(path("client.key")))
      local out = s_client(port, "-servername a.example -alpn http/1.1,h2 " .. client)
      assert.matches("subject=CN = a%.example", out)
      assert.matches("ALPN protocol: h2", out)
      assert.matches("peer=CN=client alpn=h2 sni=a%.example", out)
      out = s_client(port, "-servername localhost " .. client)
      assert.matches("subject=CN = localhost", out)
      assert.matches("peer=CN=client alpn=nil sni=localhost", out)
      out = s_client(port, "-servername localhost")            -- no client certificate
      assert.is_nil(out:match("peer="))
      out = s_client(port, "-tls1_2 " .. client)                -- below min_version
      assert.is_nil(out:match("peer="))
      local log
      local deadline = H.socket.gettime() + 5
      repeat
        log = proc:stderr()
        if log:match("protocol version") then break end
        H.socket.sleep(0.02)
      until H.socket.gettime() > deadline
      assert.matches("failed: no client certificate", log)
      assert.matches("failed: protocol version", log)
      assert.equals(0, proc:stop())
    end)

    it("our client against openssl s_server: verified, ALPN, client certificate, echo", function()
      local port = H.free_port()
      local srv = H.launch(("timeout 10 openssl s_server -accept 127.0.0.1:%d -cert %s -key %s -naccept 1 -rev "
        .. "-alpn h2 -Verify 1 -CAfile %s"):format(port, H.q(path("srv.pem")), H.q(path("srv.key")),
        H.q(path("ca.pem"))), "openssl s_server")
      finally(function() srv:stop() end)
      srv:wait_output("ACCEPT")
      local r = {}
      H.run(function()
        local c, err = sh.connect("tls://localhost:" .. port, client_opts({
          alpn = { "h2" }, cert = path("client.pem"), key = path("client.key") }))
        assert(c, err)
        c:write("hello world\n")
        r.line = c:read()
        r.tls = c:tls()
        c:close()
      end)
      assert.equals("dlrow olleh", r.line)
      assert.equals("h2", r.tls.alpn)
      assert.equals("localhost", r.tls.servername)
      assert.equals("CN=localhost", r.tls.peer.subject)
      assert.is_true(r.tls.peer.verified)
      -- s_server -Verify 1 fails a handshake without a client certificate
      -- that it can verify: the echo above is the proof that ours passed
      srv:wait(5)
      assert.matches("1 server accepts that finished", srv:stdout())
      assert.is_nil(srv:stdout():match("[Ee]rror"))
    end)
  end)

  describe("peers that reset or half-close with our output queued", function()
    -- libevent stops a TLS bufferevent both ways at the end of its input.
    -- A reset must end the connection at once, as on a plain one (it was
    -- taken as an end of input: the output stayed queued, a parked writer
    -- slept on, a close waited out its linger of 30 s and SIGTERM its
    -- grace); after an orderly end (close_notify) our output must still go
    -- out (it stalled).
    it("a reset wakes the writer parked on the connection with 'closed' at once", function()
      local r = {}
      H.run(function()
        local srv = assert(sh.listen("tls://127.0.0.1:0", function(c)
          c:read()
          r.write = { c:write(string.rep("w", 16 * 1024 * 1024)) }   -- parks: nobody reads
          r.woken = sh.now()
        end, server_opts("srv")))
        local c = assert(sh.connect(srv:address(), client_opts()))
        c:write("go\n")
        sh.sleep(0.3)                          -- the server's writer is parked by now
        r.parked = r.write == nil
        r.reset = sh.now()
        c:abort()
        sh.sleep(0.2)
        srv:close()
      end)
      assert.is_true(r.parked)
      assert.same({ nil, "closed" }, r.write)
      assert.is_true(r.woken - r.reset < 1, tostring(r.woken - r.reset))
    end)

    it("a half-close (close_notify, FIN) still gets all of the output queued for it", function()
      local r = {}
      local n = H.big(16 * 1024 * 1024, 96 * 1024)   -- past the 64 KiB the writer queues
      H.run(function()
        local srv = assert(sh.listen("tls://127.0.0.1:0", function(c)
          c:read()
          r.write = { c:write(string.rep("w", n)) }
        end, server_opts("srv")))
        local c = assert(sh.connect(srv:address(), client_opts()))
        c:write("go\n")
        sh.sleep(0.3)                          -- the server's writer is parked by now
        r.parked = r.write == nil
        assert(c:shutdown())                   -- read by the server with its output queued
        sh.sleep(0.2)
        c:settimeout(H.ONEBYTE and 20 or 5)
        r.got = { c:read("a") }
        c:close()
        srv:close()
      end, 30)
      assert.is_true(r.parked)
      assert.same({ true }, r.write)
      assert.equals(n, #(r.got[1] or r.got[3] or ""), tostring(r.got[2]))
    end)

    -- Each sends 100 KB to scripts/tls_echo.lua, never reads the echo, and
    -- resets while the server is still echoing. (One byte at a time the
    -- server first reads, a byte a turn, what arrived before the reset, as
    -- Linux keeps it readable: it gets fewer bytes and more time.)
    it("200 clients x 100 KB that reset free their descriptors at once, and SIGTERM does not wait for them", function()
      local n, size = H.big(200, 20), H.big(100000, 4000)
      local proc = H.start(("scripts/tls_echo.lua %s %s tls://127.0.0.1:0"):format(
        H.q(path("srv.pem")), H.q(path("srv.key"))))
      finally(function() proc:stop() end)
      local port = port_of(proc:wait_output("listening on (%S+)"))
      local base = proc:fd_count()
      local out, rc = cmd(("python3 spec/fixtures/tls_reset.py 127.0.0.1 %d %s %d %d")
        :format(port, H.q(path("ca.pem")), n, size), 60)
      assert.equals(0, rc, out)
      assert.matches("reset " .. n .. "\n", out)
      local sent = tonumber(out:match("sent (%d+) of"))
      assert.equals(n * size, sent, out)
      local t0, now = H.socket.gettime(), H.socket.gettime
      while proc:fd_count() > base and now() - t0 < 10 do H.socket.sleep(0.02) end
      local freed = now() - t0
      assert.equals(base, proc:fd_count())
      assert.is_true(freed < ((H.VALGRIND or H.ONEBYTE) and 5 or 1), ("freed in %.2f s"):format(freed))
      t0 = now()
      proc:signal("TERM")
      assert.equals(0, proc:wait(H.VALGRIND and 30 or 20))
      local stopped = now() - t0
      assert.is_true(stopped < (H.VALGRIND and 10 or 2), ("stopped in %.2f s"):format(stopped))
    end)
  end)
end)
