-- sockhost.socket: LuaSocket's API on sockhost streams. LuaSocket's own
-- libraries (Debian's socket.http and socket.smtp, unchanged) run on it in
-- ./sockhost, many at once, against a python3 HTTP server and a python3
-- SMTP sink, while a ticker shows the loop never stops (and stops with the
-- real, blocking LuaSocket). The methods are checked against LuaSocket
-- itself: the same calls against the same peer (spec/fixtures/
-- luasocket_peer.py) must give the same results, here in busted with
-- LuaSocket and in a task with sockhost.socket.
local H = require "helpers"
local sh = H.sh
local cjson = require "cjson"

local PY = "/usr/bin/python3"
local real = H.socket

local function ours() return require "sockhost.socket" end

local function launch_py(script, args)
  return H.launch(("timeout -s KILL 60 %s -u %s %s"):format(PY, script, args or ""), script)
end

local function count(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do n = n + 1 end
  return n
end

describe("sockhost.socket", function()
  local peer, port

  setup(function()
    peer = launch_py("spec/fixtures/luasocket_peer.py")
    port = tonumber(peer:wait_output("port (%d+)"))
  end)
  teardown(function() peer:stop() end)

  -- fn(socket) run with LuaSocket (blocking busted) and with sockhost.socket
  -- (in a task): returns both results.
  local function both(fn)
    local want = fn(real)
    local got = H.run(function() return fn(ours()) end, 20)
    return want, got
  end

  -- A client of the peer in 'mode', with 'timeout'.
  local function client(socket, mode, timeout)
    local c = socket.tcp()
    c:settimeout(timeout or 5)
    assert(c:connect("127.0.0.1", port))
    assert(c:send(mode .. "\n"))
    return c
  end

  local function results()
    local r = {}
    return r, function(name, ...) r[#r + 1] = { name, table.pack(...) } end
  end

  describe("receive, as LuaSocket does", function()
    it("lines, counts, prefixes, timeouts with their partial, '*a' at the end", function()
      local want, got = both(function(socket)
        local r, rec = results()
        local c = client(socket, "A", 0.3)
        rec("l", c:receive("*l"))
        rec("l prefix", c:receive("*l", "PRE"))
        rec("n prefix", c:receive(3, "XY"))
        rec("n timeout", c:receive(10))
        rec("l timeout", c:receive())
        rec("send", c:send("go\n"))
        rec("a", c:receive("*a", "P"))
        rec("a again", c:receive("*a"))
        rec("l closed", c:receive())
        rec("n closed", c:receive(3))
        rec("close", c:close())
        rec("after close", c:receive())
        return r
      end)
      assert.same(want, got)
      assert.equals("abc", got[1][2][1])   -- and it did read something
    end)

    it("an unterminated last line, CRs dropped, a prefix longer than the count", function()
      local want, got = both(function(socket)
        local r, rec = results()
        local c = client(socket, "B", 0.3)
        rec("l", c:receive())
        rec("l timeout prefix", c:receive("*l", "Q"))
        rec("n short", c:receive(1, "LONG"))
        rec("send", c:send("go\n"))
        rec("l at end", c:receive())
        rec("a after", c:receive("*a", "R"))
        c:close()
        c = client(socket, "C", 0.3)
        rec("a nothing", c:receive("*a"))
        rec("l nothing", c:receive())
        c:close()
        return r
      end)
      assert.same(want, got)
    end)

    it("a line longer than sockhost's default max_line (100000 bytes)", function()
      local want, got = both(function(socket)
        local r, rec = results()
        local c = client(socket, "L")
        local line, err = c:receive()
        rec("long", line and #line, line and line:match("^y*$") ~= nil, err)
        c:close()
        return r
      end)
      assert.same(want, got)
      assert.equals(100000, got[1][2][1])
    end)

    it("send with i and j returns the last index sent; the peer gets the bytes", function()
      local want, got = both(function(socket)
        local r, rec = results()
        local c = client(socket, "E")
        rec("send i j", c:send("hello\n", 2, 4))
        rec("send i", c:send("hello\n", 4))
        rec("send -i", c:send("xyz\n", -2))
        rec("send", c:send(12345))
        rec("send nl", c:send("\n"))
        rec("echo", c:receive())
        rec("echo2", c:receive())
        c:close()
        rec("send closed", c:send("x"))
        return r
      end)
      assert.same(want, got)
    end)

    it("settimeout(0) polls: nil, 'timeout' at once, then the line once it came", function()
      local want, got = both(function(socket)
        local r, rec = results()
        local c = client(socket, "P")
        c:settimeout(0)
        rec("poll", c:receive())
        c:settimeout(5)
        c:send("go\n")
        c:settimeout(0)
        local line, polls, part, _ = nil, 0, nil, nil
        repeat
          polls = polls + 1
          line, _, part = c:receive("*l", part)   -- a partial line goes on as the prefix
          if not line then socket.sleep(0.02) end
        until line or polls > 200
        rec("line", line, polls > 1)
        c:close()
        return r
      end)
      assert.same(want, got)
    end)

    it("errors: refused, bad pattern, host not found, receive on a master", function()
      local free = H.free_port()
      local want, got = both(function(socket)
        local r, rec = results()
        rec("refused", socket.tcp():connect("127.0.0.1", free))
        rec("socket.connect", socket.connect("127.0.0.1", free))
        local c = client(socket, "E")
        rec("bad pattern", (pcall(c.receive, c, "*x")))
        rec("bad option", (pcall(c.setoption, c, "no-such-option", 1)))
        rec("option", c:setoption("tcp-nodelay", true), c:setoption("keepalive", true))
        rec("linger", c:setoption("linger", { on = true, timeout = 0 }))
        rec("shutdown", c:shutdown("send"))
        rec("closed by us", c:receive())
        c:close()
        return r
      end)
      assert.same(want, got)
    end)

    it("getpeername, getsockname, getstats, tostring", function()
      local want, got = both(function(socket)
        local r, rec = results()
        local c = client(socket, "E")
        local ip, p, family = c:getpeername()
        rec("peer", ip, p, math.type(p), family)
        local lip, lport, lfamily = c:getsockname()
        rec("sock", lip, type(lport), tonumber(lport) > 0, lfamily)
        c:send("abc\n")
        c:receive()
        local rx, tx, age = c:getstats()
        rec("stats", rx, tx, age >= 0)
        rec("tostring", (tostring(c):match("^tcp{client}: ")))
        c:close()
        return r
      end)
      assert.same(want, got)
      assert.equals(port, got[1][2][2])
    end)
  end)

  it("udp: sendto, receivefrom, setpeername, send, receive (cut to size), timeouts, as LuaSocket does", function()
    local want, got = both(function(socket)
      local r, rec = results()
      local u = socket.udp()
      u:settimeout(2)
      rec("sendto", u:sendto("hello", "127.0.0.1", port))
      local data, ip, p = u:receivefrom()
      rec("receivefrom", data, ip, p, math.type(p))
      rec("setpeername", u:setpeername("127.0.0.1", port))
      rec("tostring", (tostring(u):match("^udp{%a+}")))
      rec("send", u:send("abcdef"))
      rec("receive cut", u:receive(3))
      rec("getpeername", u:getpeername())
      local sip, sp, fam = u:getsockname()
      rec("getsockname", sip, type(sp), fam)
      u:settimeout(0.2)
      rec("timeout", u:receive())
      rec("close", u:close())
      return r
    end)
    assert.same(want, got)
    assert.equals("HELLO", got[2][2][1])
  end)

  it("a receive that waits yields the task: a ticker ticks meanwhile (not with LuaSocket)", function()
    local function ticks_during(socket)
      return H.run(function()
        local n = 0
        local t = sh.every(0.01, function() n = n + 1 end)
        local c = client(socket, "P", 5)
        c:send("go\n")
        local before = n
        local line = c:receive()
        local during = n - before
        t:cancel()
        c:close()
        return line, during
      end, 20)
    end
    local line, during = ticks_during(ours())
    assert.equals("hello", line)
    assert.is_true(during >= 3, "ticks during the receive: " .. during)
    line, during = ticks_during(real)
    assert.equals("hello", line)
    assert.equals(0, during)
  end)

  it("calls that would block outside a task raise sockhost's error", function()
    local c = ours().tcp()
    local ok, err = pcall(c.connect, c, "127.0.0.1", port)
    assert.is_false(ok)
    assert.matches("would block outside a sockhost task", err)
    assert.has_error(function() ours().sleep(0.01) end)
  end)

  describe("setkeepalive", function()
    -- Echo 'line' through a connection; mode E is sent on a new one only.
    local function ask(socket, line)
      local c = socket.tcp()
      c:settimeout(5)
      assert(c:connect("127.0.0.1", port))
      if c:getreusedtimes() == 0 then assert(c:send("E\n")) end
      assert(c:send(line .. "\n"))
      return c, c:receive()
    end

    it("puts the connection back: the next connect to host:port reuses it (one connection at the peer)", function()
      local s = ours()
      local before = count(peer:stdout(), "accepted")
      local got = H.run(function()
        local c1, r1 = ask(s, "one")
        assert.equals(1, c1:setkeepalive(10000, 4))
        assert.same({ nil, "closed", "" }, { c1:receive() })   -- this object is done with it
        local c2, r2 = ask(s, "two")
        local reused = c2:getreusedtimes()
        c2:close()
        return { r1, r2, reused }
      end)
      assert.same({ "one", "two", 1 }, got)
      assert.equals(before + 1, count(peer:stdout(), "accepted"))
    end)

    it("without it (close), the second request makes a second connection", function()
      local s = ours()
      local before = count(peer:stdout(), "accepted")
      local got = H.run(function()
        local c1, r1 = ask(s, "one")
        c1:close()
        local c2, r2 = ask(s, "two")
        local reused = c2:getreusedtimes()
        c2:close()
        return { r1, r2, reused }
      end)
      assert.same({ "one", "two", 0 }, got)
      assert.equals(before + 2, count(peer:stdout(), "accepted"))
    end)

    it("a pooled connection the peer closed meanwhile is not handed out", function()
      local s = ours()
      local got = H.run(function()
        local c = s.tcp()
        c:settimeout(5)
        assert(c:connect("127.0.0.1", port))
        c:send("O\nonce\n")
        local r = c:receive()
        assert(c:setkeepalive())
        sh.sleep(0.3)                       -- the peer closes it
        local c2 = s.tcp()
        assert(c2:connect("127.0.0.1", port))
        local reused = c2:getreusedtimes()
        c2:close()
        return { r, reused }
      end)
      assert.same({ "once", 0 }, got)
    end)

    it("unread bytes: 'connection in dubious state', the object left open", function()
      local s = ours()
      local got = H.run(function()
        local c = client(s, "A")
        local line = c:receive()                 -- "abc"; "de\rf\nghijkl" stays unread
        sh.sleep(0.1)
        local r = table.pack(c:setkeepalive())
        local rest = c:receive()
        c:close()
        return { line, r[1], r[2], rest }
      end)
      assert.same({ "abc", nil, "connection in dubious state", "def" }, got)
    end)

    -- A sockhost echo server of its own (a host:port no other case pooled
    -- for): fn(socket, port, server) in the task.
    local function with_echo(fn)
      return H.run(function()
        local srv = { accepted = 0, ended = 0 }
        srv.l = assert(sh.listen("tcp://127.0.0.1:0", function(c)
          srv.accepted = srv.accepted + 1
          for line in c:lines() do c:write(line, "\n") end
          srv.ended = srv.ended + 1
        end))
        local r = table.pack(pcall(fn, ours(), select(2, H.hostport(srv.l:address())), srv))
        srv.l:close()
        assert(r[1], r[2])
        return table.unpack(r, 2, r.n)
      end, 20)
    end

    local function echo(c, line)
      assert(c:send(line .. "\n"))
      return c:receive()
    end

    local function until_(cond)
      for _ = 1, 200 do
        if cond() then return true end
        sh.sleep(0.01)
      end
      return cond()
    end

    it("getreusedtimes counts the times the connection came out of the pool", function()
      local got = with_echo(function(s, p, srv)
        local r = {}
        for i = 1, 3 do
          local c = s.tcp()
          assert(c:connect("127.0.0.1", p))
          r[#r + 1] = echo(c, "n" .. i)
          r[#r + 1] = c:getreusedtimes()
          if i < 3 then assert(c:setkeepalive()) else c:close() end
        end
        r[#r + 1] = srv.accepted
        return r
      end)
      assert.same({ "n1", 0, "n2", 1, "n3", 2, 1 }, got)
    end)

    it("the first size given for a host:port holds for it; the oldest idle ones beyond it are closed", function()
      local got = with_echo(function(s, p, srv)
        local cs = {}
        for i = 1, 4 do
          cs[i] = s.tcp()
          assert(cs[i]:connect("127.0.0.1", p))
          assert(echo(cs[i], "c" .. i))
        end
        assert.equals(1, cs[1]:setkeepalive(10000, 2))
        for i = 2, 4 do assert.equals(1, cs[i]:setkeepalive(10000, 30)) end   -- 30 is ignored
        local closed = until_(function() return srv.ended == 2 end)
        local again, reused = {}, {}
        for i = 1, 3 do
          again[i] = s.tcp()
          assert(again[i]:connect("127.0.0.1", p))
          reused[i] = again[i]:getreusedtimes()
        end
        for i = 1, 3 do again[i]:close() end
        return { closed, srv.accepted, reused }
      end)
      assert.same({ true, 5, { 1, 1, 0 } }, got)
    end)

    it("timeout_ms is each connection's idle limit; 0 is none", function()
      local got = with_echo(function(s, p, srv)
        local a, b = s.tcp(), s.tcp()
        assert(a:connect("127.0.0.1", p))
        assert(b:connect("127.0.0.1", p))
        local la, lb = echo(a, "a"), echo(b, "b")
        assert(a:setkeepalive(0))
        assert(b:setkeepalive(150))                -- pooled last: lent first, if still there
        local closed = until_(function() return srv.ended == 1 end)
        sh.sleep(0.5)
        local c, d = s.tcp(), s.tcp()
        assert(c:connect("127.0.0.1", p))
        assert(d:connect("127.0.0.1", p))
        local r = { la, lb, closed, srv.ended, c:getreusedtimes(), echo(c, "c"), d:getreusedtimes(), srv.accepted }
        c:close() d:close()
        return r
      end)
      assert.same({ "a", "b", true, 1, 1, "c", 0, 3 }, got)
    end)

    it("raises on a bad timeout or size", function()
      local got = with_echo(function(s, p)
        local c = s.tcp()
        assert(c:connect("127.0.0.1", p))
        local e1 = select(2, pcall(c.setkeepalive, c, -1))
        local e2 = select(2, pcall(c.setkeepalive, c, 1000, 0))
        c:close()
        return { e1, e2 }
      end)
      assert.matches("bad argument #1 to 'setkeepalive' %(timeout must be a number >= 0%)", got[1])
      assert.matches("bad argument #2 to 'setkeepalive' %(size must be a number >= 1%)", got[2])
    end)
  end)

  describe("select, bind and accept", function()
    it("select reports the socket that has input; no byte is lost", function()
      local s = ours()
      local got = H.run(function()
        local a, b = client(s, "E"), client(s, "E")
        local r0, w0, e0 = s.select({ a, b }, nil, 0)
        b:send("for b\n")
        local r, w, e = s.select({ a, b }, {}, 5)
        local line = b:receive()
        local _, wr = s.select(nil, { a }, 0)
        a:close() b:close()
        return { #r0, #w0, e0, #r, r[1] == b, r[b], w and #w, e, line, wr[1] == a }
      end)
      assert.same({ 0, 0, "timeout", 1, true, 1, 0, nil, "for b", true }, got)
    end)

    it("bind, select on the server, accept, and talk to an independent client", function()
      local s = ours()
      local srv = assert(s.bind("127.0.0.1", 0))
      local _, p = srv:getsockname()
      local py = launch_py("-c", H.q(([[
import socket
c = socket.create_connection(("127.0.0.1", %d))
c.sendall(b"hi from python\n")
print(c.makefile().readline().strip(), flush=True)
]]):format(tonumber(p))))
      local got = H.run(function()
        srv:settimeout(5)
        local r = s.select({ srv }, nil, 5)
        local c = assert(srv:accept())
        c:settimeout(5)
        local line = c:receive()
        c:send("hello python\n")
        c:close()
        srv:close()
        return { #r, line }
      end)
      assert.same({ 1, "hi from python" }, got)
      assert.equals(0, py:wait(10))
      assert.equals("hello python\n", py:stdout())
    end)

    it("an accepted client dropped without close is closed by the collector; closing the server ends those never accepted", function()
      local s = ours()
      local srv = assert(s.bind("127.0.0.1", 0))
      local _, p = srv:getsockname()
      -- two python3 clients: each prints what it read until the end of the stream
      local client_src = ([[
import socket
c = socket.create_connection(("127.0.0.1", %d))
c.settimeout(10)
print("eof", repr(c.recv(100)), flush=True)
]]):format(tonumber(p))
      local py1 = launch_py("-c", H.q(client_src))
      local got = H.run(function()
        srv:settimeout(5)
        local c = assert(srv:accept())
        c = nil                             -- dropped, never closed
        collectgarbage() collectgarbage()
        local py2 = launch_py("-c", H.q(client_src))
        sh.sleep(0.5)                       -- its connection waits to be accepted
        srv:close()
        return py2
      end)
      assert.equals(0, py1:wait(10))
      assert.equals("eof b''\n", py1:stdout())
      assert.equals(0, got:wait(10))
      assert.equals("eof b''\n", got:stdout())
    end)
  end)

  describe("dns", function()
    it("toip, tohostname, gethostname as LuaSocket gives them for localhost", function()
      local function q(socket)
        local ip = socket.dns.toip("localhost")
        return { ip, (socket.dns.tohostname("127.0.0.1")), socket.dns.gethostname() }
      end
      local want = q(real)
      local got = H.run(function() return q(ours()) end)
      assert.same(want, got)
    end)

    it("looks names up through sockhost's resolver (its hosts file), with LuaSocket's results", function()
      local hosts = H.writefile(H.tmpname(".hosts"), "10.1.2.3 one.test alias.test\nfd00::5 six.test\n")
      local got = H.run(function()
        sh.resolver { hosts = hosts, nameservers = {} }
        local dns = ours().dns
        local ip, info = dns.toip("one.test")
        local ai = dns.getaddrinfo("six.test")
        local none = table.pack(dns.toip("nothere.test"))
        sh.resolver {}
        return { ip, info.ip, ai, none }
      end)
      assert.same({ "10.1.2.3", { "10.1.2.3" }, { { family = "inet6", addr = "fd00::5" } },
                    { nil, "host not found", n = 2 } }, got)
    end)
  end)

  describe("sslhandshake (OpenResty style)", function()
    local D, srv, calls

    local function path(name) return D .. "/" .. name end

    setup(function()
      D = H.sh_cmd("mktemp -d " .. H.q(H.TMP .. "/tls.XXXXXX")):gsub("%s+$", "")
      local out, rc = H.sh_cmd("sh spec/fixtures/tls_certs.sh " .. H.q(D) .. " 2>&1")
      assert(rc == 0 and out:match("ok"), "cannot make certificates: " .. out)
    end)
    teardown(function()
      if D and D:match("/tls%.") then os.execute("rm -rf " .. H.q(D)) end
    end)

    -- A sockhost TLS echo server; runs fn(socket, port) in the task.
    local function with_tls(fn)
      calls = 0
      return H.run(function()
        srv = assert(sh.listen("tls://127.0.0.1:0", function(c)
          calls = calls + 1
          for line in c:lines() do c:write(line, "\n") end
        end, { cert = path("srv.pem"), key = path("srv.key") }))
        local r = table.pack(pcall(fn, ours(), select(2, H.hostport(srv:address()))))
        srv:close()
        assert(r[1], r[2])
        return table.unpack(r, 2, r.n)
      end, 20)
    end

    local function connected(s, p)
      local c = s.tcp()
      c:settimeout(5)
      assert(c:connect("127.0.0.1", p))
      return c
    end

    it("verifies against the given CA, then send and receive go over TLS; a keep-alive reuse skips the handshake", function()
      local got = with_tls(function(s, p)
        local c = connected(s, p)
        local sess = c:sslhandshake(nil, "localhost", nil, nil, { ca = path("ca.pem") })
        c:send("over tls\n")
        local line = c:receive()
        assert(c:setkeepalive())
        local c2 = connected(s, p)
        local again = c2:sslhandshake(false, "localhost", true, nil, { ca = path("ca.pem") })
        c2:send("again\n")
        local line2 = c2:receive()
        c2:close()
        return { sess.protocol ~= nil, sess.peer.verified, line, c2:getreusedtimes() == nil, again, line2, calls }
      end)
      assert.same({ true, true, "over tls", true, true, "again", 1 }, got)
    end)

    it("verifies by default: the system's CAs do not know the test CA; verify = false skips it", function()
      local got = with_tls(function(s, p)
        local c = connected(s, p)
        local ok, err = c:sslhandshake(nil, "localhost")
        c:close()
        local c2 = connected(s, p)
        local mismatch = table.pack(c2:sslhandshake(nil, "other.example", true, nil, { ca = path("ca.pem") }))
        c2:close()
        local c3 = connected(s, p)
        local sess = c3:sslhandshake(nil, nil, false)
        c3:send("unverified\n")
        local line = c3:receive()
        c3:close()
        return { ok, (err:match("^[^:]*")), mismatch[1], (mismatch[2]:match("^[^:]*")), sess.peer.verified, line }
      end)
      assert.same({ nil, "unknown CA", nil, "name mismatch", false, "unverified" }, got)
    end)
  end)
end)

describe("LuaSocket's own libraries on sockhost.socket, in ./sockhost", function()
  local function run_script(args)
    local out, err, rc = H.exec(args, { timeout = 60 })
    assert.equals(0, rc, err)
    return out
  end

  describe("socket.http against a python3 server that takes 0.2 s per request", function()
    local server, port

    before_each(function()
      server = launch_py("spec/fixtures/slow_http.py", "0.2")
      port = tonumber(server:wait_output("port (%d+)"))
    end)
    after_each(function() server:stop() end)

    local function most_in_flight()
      local most = 0
      for n in server:stdout():gmatch("start %S+ (%d+)") do most = math.max(most, tonumber(n)) end
      return most
    end

    it("runs 20 requests at once, bodies intact (length, until-closed, chunked, POST), and the loop never stops", function()
      local out = run_script(("spec/fixtures/luasocket_http.lua %d 20 sockhost"):format(port))
      assert.equals(20, count(out, "got %d+ %a+ 200 intact\n"), out)
      assert.matches("post 200 intact", out)
      local gap = tonumber(out:match("maxgap (%S+)"))
      assert.is_true(gap < 0.5, "the ticker stopped for " .. gap .. " s")
      -- the server saw them overlap: many requests in progress at once
      assert.is_true(most_in_flight() >= 10, server:stdout())
    end)

    it("with the real LuaSocket the same script freezes the loop: one request at a time, no ticks", function()
      local out = run_script(("spec/fixtures/luasocket_http.lua %d 5 real"):format(port))
      assert.equals(5, count(out, "got %d+ %a+ 200 intact\n"), out)
      local gap = tonumber(out:match("maxgap (%S+)"))
      assert.is_true(gap > 0.5, "the ticker went on: " .. gap .. " s")
      assert.equals(1, most_in_flight())
    end)
  end)

  it("socket.smtp delivers 10 messages at once to a python3 SMTP sink, intact", function()
    local body = require "spec.fixtures.luasocket_mail"
    local sink = launch_py("spec/fixtures/smtp_sink.py")
    local port = tonumber(sink:wait_output("port (%d+)"))
    local out = run_script(("spec/fixtures/luasocket_smtp.lua %d 10"):format(port))
    assert.equals(10, count(out, "sent %d+ 1 nil\n"), out)
    local got = {}
    local deadline = real.gettime() + 5
    repeat
      got = {}
      for line in sink:stdout():gmatch("[^\n]+") do
        if line:sub(1, 1) == "{" then got[#got + 1] = cjson.decode(line) end
      end
      if #got < 10 then real.sleep(0.05) end
    until #got >= 10 or real.gettime() > deadline
    sink:stop()
    assert.equals(10, #got)
    local seen = {}
    for _, m in ipairs(got) do
      local i = tonumber(m.data:match("Subject: message (%d+)"))
      assert.equals("sender@example.test", m.from)
      assert.same({ ("rcpt%d@example.test"):format(i) }, m.to)
      -- the sink gives lines ended by \n, dots unstuffed
      local text = m.data:match("\n\n(.*)$")
      assert.equals((body(i):gsub("\r\n", "\n")), text)
      seen[i] = true
    end
    for i = 1, 10 do assert.is_true(seen[i], "message " .. i) end
  end)

  it("socket.http's errors come back as nil, err (socket.protect): a refused connection, an unknown host", function()
    local out = run_script([[-e 'require("sockhost.socket").install()
sockhost.resolver { nameservers = {} }   -- the hosts file only: no query leaves the machine
local http = require "socket.http"
print(http.request("http://127.0.0.1:]] .. H.free_port() .. [[/"))
print(http.request("http://no-such-host.invalid./"))']])
    assert.matches("^nil\tconnection refused\nnil\thost not found\n$", out)
  end)
end)
