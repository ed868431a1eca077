-- The PROXY protocol (v1 and v2) on listeners with proxy_protocol = true:
-- ./sockhost behind a real haproxy (send-proxy, send-proxy-v2; TCP and HTTP
-- mode; a tls:// listener), and raw clients that write headers themselves
-- (garbage, truncated, too long, none at all, one byte at a time, LOCAL,
-- UNKNOWN, AF_UNIX sources). The client binds its own address (127.0.0.2 or
-- ::1) and learns its port, so conn:peer() is checked exactly.
local H = require "helpers"
local socket = H.socket

local HAPROXY = "/usr/sbin/haproxy"

-- Every process a case starts, stopped after it (even when it fails half-way).
local procs = {}
local function keep(p)
  for _, q in ipairs(procs) do if q == p then return p end end
  procs[#procs + 1] = p
  return p
end

-- A sockhost script: `listen` is the Lua source of the listen call's address
-- and options. Each handler prints "HANDLER <peer>" (stdout, line-buffered),
-- reads one line, and answers with what it saw. A second, plain listener
-- answers "refused=<n>" (the first listener's proxy_refused()).
local function backend(addr, opts, http)
  local src = [[
local sh = require "sockhost"
io.stdout:setvbuf("line")
local function seen(conn)
  local p = conn:proxy()
  local t = { "peer=" .. tostring(conn:peer()) }
  if p then
    t[#t + 1] = "version=" .. p.version
    t[#t + 1] = "command=" .. p.command
    t[#t + 1] = "source=" .. tostring(p.source)
    t[#t + 1] = "destination=" .. tostring(p.destination)
    for _, tlv in ipairs(p.tlvs or {}) do t[#t + 1] = ("tlv%d=%d"):format(tlv.type, #tlv.value) end
  else
    t[#t + 1] = "proxy=nil"
  end
  return table.concat(t, " ")
end
local srv
if HTTP then
  srv = assert(sh.http.listen(ADDR, function(req, res)
    print("HANDLER " .. tostring(req.conn:peer()))
    res:header("content-type", "text/plain")
    res:finish(seen(req.conn) .. "\n")
  end, OPTS))
else
  srv = assert(sh.listen(ADDR, function(conn)
    print("HANDLER " .. tostring(conn:peer()))
    local line = conn:read("l")
    conn:write(seen(conn), " line=", tostring(line), "\n")
  end, OPTS))
end
local stats = assert(sh.listen("tcp://127.0.0.1:0", function(conn)
  conn:write("refused=" .. srv:proxy_refused() .. "\n")
end))
print("listening on " .. srv:address() .. " stats on " .. stats:address())
]]
  src = src:gsub("ADDR", string.format("%q", addr)):gsub("OPTS", opts):gsub("HTTP", http and "true" or "false")
  local proc = keep(H.start(H.q(H.writefile(H.tmpname(".lua"), src))))
  proc.sockhost = true
  local a, s = proc:wait_output("(listening on %S+ stats on %S+)"):match("listening on (%S+) stats on (%S+)")
  proc.addr = a
  proc.port = select(2, H.hostport(a))
  proc.stats_port = select(2, H.hostport(s))
  return proc
end

local function refused(proc)
  local c = H.tcp("127.0.0.1", proc.stats_port)
  local l = c:receive("*l")
  c:close()
  return tonumber(l:match("refused=(%d+)"))
end

-- haproxy in the foreground with `cfg` (its frontends on free ports) until
-- its first frontend is bound: the port cannot be bound by us any more.
local function haproxy(cfg, port, host)
  local f = H.writefile(H.tmpname(".cfg"), cfg)
  local p = keep(H.launch(("timeout -s KILL 60 %s -db -f %s"):format(HAPROXY, H.q(f)), "haproxy"))
  local deadline = socket.gettime() + 5
  while socket.gettime() < deadline do
    local s = (host == "::1" and socket.tcp6 or socket.tcp)()
    s:setoption("reuseaddr", true)
    local ok = s:bind(host or "127.0.0.1", port)
    s:close()
    if not ok then return p end
    if p:exited() then break end
    socket.sleep(0.02)
  end
  local msg = "haproxy did not start: " .. p:stderr()
  p:stop()
  error(msg)
end

local function haproxy_cfg(front, backend_port, send, mode)
  return ([[
global
  maxconn 100
defaults
  mode %s
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend f
  bind %s
  default_backend b
backend b
  server s1 127.0.0.1:%d %s
]]):format(mode or "tcp", front, backend_port, send)
end

-- A client from 'src' (127.0.0.2, ::1) on a port of its own: the socket and
-- the address string it expects its peer to be named.
local function client(src, port, dst)
  local c = (src:find(":") and socket.tcp6 or socket.tcp)()
  c:settimeout(5)
  assert(c:bind(src, 0))
  assert(c:connect(dst or (src:find(":") and "::1" or "127.0.0.1"), port))
  local ip, cport = c:getsockname()
  assert.equals(src, ip)
  local name = src:find(":") and ("tcp://[%s]:%d"):format(ip, cport) or ("tcp://%s:%d"):format(ip, cport)
  return c, name, tonumber(cport)
end

local function ask(c, line)
  assert(c:send(line .. "\n"))
  local got, err = c:receive("*l")
  c:close()
  return got, err
end

describe("PROXY protocol", function()
  after_each(function()
    local bad = {}
    for i = #procs, 1, -1 do
      local p = procs[i]
      procs[i] = nil
      local rc = p:stop()
      if p.sockhost and rc ~= 0 then bad[#bad + 1] = ("sockhost exited %s: %s"):format(rc, p:stderr()) end
    end
    assert.same({}, bad)                       -- under make sanitize: no leak either
  end)

  describe("behind haproxy", function()
    it("send-proxy (v1): conn:peer() is the client's address and port", function()
      local sh = keep(backend("tcp://127.0.0.1:0", "{ proxy_protocol = true }"))
      local fport = H.free_port()
      keep(haproxy(haproxy_cfg("127.0.0.1:" .. fport, sh.port, "send-proxy"), fport))
      local c, name = client("127.0.0.2", fport)
      local got = ask(c, "hi")
      assert.equals(("peer=%s version=1 command=PROXY source=%s destination=tcp://127.0.0.1:%d line=hi")
        :format(name, name, fport), got)
      assert.truthy(sh:stdout():find("HANDLER " .. name, 1, true))
      assert.equals(0, refused(sh))
    end)

    it("send-proxy-v2: IPv4, then IPv6 from ::1", function()
      local sh = keep(backend("tcp://127.0.0.1:0", "{ proxy_protocol = true }"))
      local fport = H.free_port()
      keep(haproxy(haproxy_cfg("127.0.0.1:" .. fport, sh.port, "send-proxy-v2"), fport))
      local c, name = client("127.0.0.2", fport)
      assert.equals(("peer=%s version=2 command=PROXY source=%s destination=tcp://127.0.0.1:%d line=v4")
        :format(name, name, fport), (ask(c, "v4")))

      local f6 = H.free_port()
      keep(haproxy(haproxy_cfg("[::1]:" .. f6, sh.port, "send-proxy-v2"), f6, "::1"))
      local c6, name6 = client("::1", f6)
      assert.matches("^tcp://%[::1%]:%d+$", name6)
      assert.equals(("peer=%s version=2 command=PROXY source=%s destination=tcp://[::1]:%d line=v6")
        :format(name6, name6, f6), (ask(c6, "v6")))
    end)

    it("haproxy's health checks (check-send-proxy) are LOCAL: handled, never refused", function()
      local sh = keep(backend("tcp://127.0.0.1:0", "{ proxy_protocol = true }"))
      local fport = H.free_port()
      keep(haproxy(haproxy_cfg("127.0.0.1:" .. fport, sh.port,
        "send-proxy-v2 check check-send-proxy inter 100"), fport))
      local deadline = socket.gettime() + 5
      local function checks()
        local n = 0
        for _ in sh:stdout():gmatch("HANDLER tcp://127%.0%.0%.1:%d+") do n = n + 1 end
        return n
      end
      while checks() < 3 and socket.gettime() < deadline do socket.sleep(0.05) end
      assert.is_true(checks() >= 3, sh:stdout())
      assert.equals(0, refused(sh))
    end)

    it("mode http with send-proxy into sockhost.http.listen", function()
      local sh = keep(backend("tcp://127.0.0.1:0", "{ proxy_protocol = true }", true))
      local fport = H.free_port()
      keep(haproxy(haproxy_cfg("127.0.0.1:" .. fport, sh.port, "send-proxy", "http"), fport))
      local c, name = client("127.0.0.2", fport)
      assert(c:send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
      local body = c:receive("*a")
      c:close()
      assert.matches("^HTTP/1.1 200", body)
      assert.truthy(body:find(("peer=%s version=1 command=PROXY source=%s"):format(name, name), 1, true), body)
    end)

    it("a tls:// listener: the header comes before the handshake", function()
      local D = H.sh_cmd("mktemp -d " .. H.q(H.TMP .. "/pp.XXXXXX")):gsub("%s+$", "")
      local out, rc = H.sh_cmd("sh spec/fixtures/tls_certs.sh " .. H.q(D) .. " 2>&1")
      assert(rc == 0 and out:match("ok"), "cannot make certificates: " .. out)
      local sh = keep(backend("tls://127.0.0.1:0", ("{ proxy_protocol = true, cert = %q, key = %q }")
        :format(D .. "/srv.pem", D .. "/srv.key")))
      local fport = H.free_port()
      keep(haproxy(haproxy_cfg("127.0.0.1:" .. fport, sh.port, "send-proxy-v2"), fport))
      local py = keep(H.launch_python(([[
import socket, ssl
ctx = ssl.create_default_context(cafile=%q)
s = socket.create_connection(("127.0.0.1", %d), timeout=5, source_address=("127.0.0.2", 0))
print("me tls://%%s:%%d" %% s.getsockname(), flush=True)
t = ctx.wrap_socket(s, server_hostname="localhost")
t.sendall(b"tls\n")
print(t.recv(4096).decode().strip(), flush=True)
]]):format(D .. "/ca.pem", fport)))
      local name = py:wait_output("me (%S+)")
      local got = py:wait_output("(peer=[^\n]*)")
      os.execute("rm -rf " .. H.q(D))
      assert.equals(("peer=%s version=2 command=PROXY source=%s destination=tls://127.0.0.1:%d line=tls")
        :format(name, name, fport), got)
    end)
  end)

  describe("raw clients", function()
    local sh
    before_each(function()
      sh = keep(backend("tcp://127.0.0.1:0", "{ proxy_protocol = true, proxy_timeout = 0.5 }"))
    end)

    -- Send 'data' (then end our side if 'shut'); the connection must be
    -- closed without a handler, and counted.
    local function refuses(data, shut, reason)
      local before = refused(sh)
      local c = H.tcp("127.0.0.1", sh.port)
      c:send(data)        -- may fail: the server may refuse (and close) at the first bad byte
      if shut then c:shutdown("send") end
      local got, err = c:receive("*a")
      c:close()
      assert.equals("", got or "")
      assert.is_nil(sh:stdout():find("HANDLER", 1, true))
      assert.equals(before + 1, refused(sh))
      local deadline = socket.gettime() + 2
      while not sh:stderr():find(reason, 1, true) and socket.gettime() < deadline do socket.sleep(0.02) end
      assert.truthy(sh:stderr():find(reason, 1, true), sh:stderr())
      return err
    end

    it("refuses garbage, truncated and too long headers without a handler", function()
      refuses("GET / HTTP/1.0\r\n\r\n", false, "not a PROXY header")
      refuses("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", false, "bad PROXY v1 header")
      refuses("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", false, "bad PROXY v1 header")
      refuses("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", false, "bad PROXY v1 header")
      refuses("PROXY TCP4 1.2.3.4", true, "closed before a PROXY header")
      refuses("PROXY TCP4 " .. ("1"):rep(120), false, "PROXY v1 header too long")
      local sig = "\r\n\r\n\0\r\nQUIT\n"
      refuses(sig .. "\x21\x11\0\12" .. "\1\2\3\4", true, "closed before a PROXY header")
      refuses(sig .. "\x31\x11\0\12", false, "bad PROXY v2 header: version")
      refuses(sig .. "\x21\x11\x10\0", false, "PROXY v2 header too long")
      refuses(sig .. "\x21\x11\0\16" .. ("\1"):rep(12) .. "\3\0\9x", false, "bad PROXY v2 header: TLVs")
      assert.truthy(sh:stderr():find("127.0.0.1", 1, true))
    end)

    it("cuts a connection that sends nothing after proxy_timeout", function()
      local c = H.tcp("127.0.0.1", sh.port)
      local t0 = socket.gettime()
      local got, err, partial = c:receive("*a")
      local took = socket.gettime() - t0
      c:close()
      assert.equals("", got or partial, err)
      assert.is_true(took >= 0.4 and took < 2, "cut after " .. took .. " s")
      assert.is_nil(sh:stdout():find("HANDLER", 1, true))
      assert.equals(1, refused(sh))
      assert.truthy(sh:stderr():find("refused: no PROXY header in time", 1, true), sh:stderr())
    end)

    it("ends cleanly with a header half read (SIGTERM)", function()
      local c = H.tcp("127.0.0.1", sh.port)
      assert(c:send("PROXY TCP4 1.2.3.4 "))
      socket.sleep(0.1)
      table.remove(procs)
      assert.equals(0, sh:stop())
      c:close()
      assert.is_nil(sh:stdout():find("HANDLER", 1, true))
    end)

    it("takes a header written one byte at a time, and the bytes after it", function()
      local c = H.tcp("127.0.0.1", sh.port)
      c:setoption("tcp-nodelay", true)
      local hdr = "PROXY TCP6 2001:db8::7 ::1 40000 443\r\n"
      for i = 1, #hdr do assert(c:send(hdr:sub(i, i))); socket.sleep(0.005) end
      assert.equals("peer=tcp://[2001:db8::7]:40000 version=1 command=PROXY source=tcp://[2001:db8::7]:40000"
        .. " destination=tcp://[::1]:443 line=after", (ask(c, "after")))

      local sig = "\r\n\r\n\0\r\nQUIT\n"
      local v2 = sig .. "\x21\x11\0\19" .. "\10\0\0\9" .. "\127\0\0\1" .. "\0\80" .. "\1\187"
        .. "\4\0\4" .. "abcd"                       -- a TLV (type 4) of 4 bytes
      c = H.tcp("127.0.0.1", sh.port)
      c:setoption("tcp-nodelay", true)
      for i = 1, #v2 do assert(c:send(v2:sub(i, i))); socket.sleep(0.005) end
      assert.equals("peer=tcp://10.0.0.9:80 version=2 command=PROXY source=tcp://10.0.0.9:80"
        .. " destination=tcp://127.0.0.1:443 tlv4=4 line=v2", (ask(c, "v2")))
    end)

    it("LOCAL, UNKNOWN and AF_UNIX sources", function()
      local sig = "\r\n\r\n\0\r\nQUIT\n"
      local c = H.tcp("127.0.0.1", sh.port)
      local _, port = c:getsockname()
      assert.equals(("peer=tcp://127.0.0.1:%d version=2 command=LOCAL source=nil destination=nil line=hc")
        :format(port), (ask(c, sig .. "\x20\0\0\0" .. "hc")))

      c = H.tcp("127.0.0.1", sh.port)
      _, port = c:getsockname()
      assert.equals(("peer=tcp://127.0.0.1:%d version=1 command=PROXY source=nil destination=nil line=u")
        :format(port), (ask(c, "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nu")))

      local function path(p) return p .. ("\0"):rep(108 - #p) end
      c = H.tcp("127.0.0.1", sh.port)
      assert.equals("peer=unix:/tmp/cli.sock version=2 command=PROXY source=unix:/tmp/cli.sock"
        .. " destination=unix:/run/lb.sock line=ux",
        (ask(c, sig .. "\x21\x31\0\216" .. path("/tmp/cli.sock") .. path("/run/lb.sock") .. "ux")))
      assert.equals(0, refused(sh))
    end)
  end)

  it("a connection awaiting its header counts against max_conns; no busy_message to a balancer", function()
    local sh = keep(backend("tcp://127.0.0.1:0",
      '{ proxy_protocol = true, max_conns = 1, busy_message = "busy\\n", proxy_timeout = 3 }'))
    local first = H.tcp("127.0.0.1", sh.port)       -- no header yet: it holds the one place
    socket.sleep(0.1)
    local second = H.tcp("127.0.0.1", sh.port)
    local t0 = socket.gettime()
    local got, err, partial = second:receive("*a")
    second:close()
    assert.equals("", got or partial, err)
    assert.is_true(socket.gettime() - t0 < 1)
    first:close()
    local deadline = socket.gettime() + 2
    while not sh:stderr():find("at its limit of 1 connections", 1, true) and socket.gettime() < deadline do
      socket.sleep(0.02)
    end
    assert.truthy(sh:stderr():find("at its limit of 1 connections", 1, true), sh:stderr())
  end)

  it("listen checks its options", function()
    local out, err, rc = H.exec("-e " .. H.q([[
local sh = require "sockhost"
print(pcall(sh.listen, "tcp://127.0.0.1:0", print, { proxy_protocol = "yes" }))
print(pcall(sh.listen, "tcp://127.0.0.1:0", print, { proxy_protocol = true, proxy_timeout = 0 }))
print(pcall(sh.listen, "tcp://127.0.0.1:0", print, { proxy_timeout = 1 }))
]]))
    assert.equals(0, rc, err)
    assert.matches("proxy_protocol must be a boolean", out)
    assert.matches("proxy_timeout must be > 0", out)
    assert.matches("proxy_timeout needs proxy_protocol", out)
  end)
end)
