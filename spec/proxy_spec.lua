-- scripts/proxy.lua, end to end: ./sockhost runs the proxy in front of an
-- upstream (scripts/echo.lua, a python3 server, or a flooding fixture), and
-- python3 or LuaSocket clients talk through it.
local H = require "helpers"

-- Under the one-byte shim (make test-onebyte) transfers are scaled down with
-- H.big; the case whose point is to fill the kernel's buffers is pending there.
local big = H.big or function(n) return n end

local function now() return H.socket.gettime() end

-- RSS bounds hold for the plain build; under valgrind, and under ASan (whose
-- quarantine keeps freed strings a while), only the other checks run.
local CHECK_RSS = not H.VALGRIND and not os.getenv("SOCKHOST_SANITIZED")

-- Start the proxy in front of `upstream`; returns the process and its port.
local function start_proxy(upstream)
  local proc = H.start("scripts/proxy.lua tcp://127.0.0.1:0 " .. upstream)
  proc.sockhost = true
  local port = select(2, H.hostport(proc:wait_output("proxy: listening on (%S+),")))
  return proc, port
end

-- Peak resident memory of a process so far, in KiB.
local function peak_kib(proc)
  local s = H.readfile("/proc/" .. proc.pid .. "/status") or ""
  return tonumber(s:match("VmHWM:%s*(%d+)"))
end

-- A python3 server on an ephemeral port that runs `body` (python code, with
-- `conn` the accepted socket and `say` printing a line to its stdout) for
-- one connection. Returns the process and its port.
local function python_upstream(body)
  local src = [[
import hashlib, socket, sys, time
def say(*a):
    print(*a, flush=True)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
say("port", srv.getsockname()[1])
conn, _ = srv.accept()
conn.settimeout(20)
]] .. body
  local p = H.launch_python(src)
  return p, tonumber(p:wait_output("port (%d+)"))
end

-- Run a python3 client (source text) with its arguments (the proxy's port first).
local function python_client(src, args)
  return H.sh_cmd(("timeout 60 python3 -c %s %s"):format(H.q(src), args))
end

describe("scripts/proxy.lua", function()
  local it_unless_onebyte = H.ONEBYTE and pending or it
  local procs
  before_each(function() procs = {} end)
  after_each(function()                  -- the sockhost ones (proxy, upstreams) must exit 0
    local failed = {}
    for _, p in ipairs(procs) do
      local rc = p:stop()
      if p.sockhost and rc ~= 0 then failed[#failed + 1] = ("exit %s: %s"):format(rc, p:stderr()) end
    end
    assert.same({}, failed)
  end)
  local function keep(p, ...) procs[#procs + 1] = p; return p, ... end

  it("carries 100 MiB each way at once to scripts/echo.lua, intact by SHA-256, in bounded memory", function()
    local echo = keep(H.start("scripts/echo.lua tcp://127.0.0.1:0"))
    echo.sockhost = true
    local upstream = echo:wait_output("listening on (%S+)")
    local proxy, port = keep(start_proxy(upstream))
    local mib = big(100, 0.25)
    H.socket.sleep(0.1)
    local before = proxy:rss_kib()
    local t0 = now()
    local out, rc = H.sh_cmd(("timeout 120 python3 spec/fixtures/echo_client.py 127.0.0.1 %d %s"):format(port, mib))
    local took = now() - t0
    assert.equals(0, rc, out)
    local total, got, h1, h2 = out:match("(%d+) (%d+) (%x+) (%x+)")
    assert.equals(mib * 1024 * 1024, tonumber(total))
    assert.equals(tonumber(total), tonumber(got))
    assert.equals(h1, h2)
    -- the proxy's line for the connection counts both directions
    local n = math.floor(mib * 1024 * 1024)
    local line, deadline = nil, now() + 5
    repeat
      line = proxy:stderr():match("INFO  proxy: (tcp://127%.0%.0%.1:%d+ %-> " .. upstream:gsub("%p", "%%%0") .. ": .-)\n")
      if not line then H.socket.sleep(0.02) end
    until line or now() > deadline
    assert.truthy(line and line:match(": " .. n .. " bytes up, " .. n .. " down, [%d.]+ s$"), proxy:stderr())
    if CHECK_RSS then
      local grew = peak_kib(proxy) - before
      assert.is_true(grew < 16 * 1024, ("proxy peak RSS %d KiB above its start"):format(grew))
    end
    assert.is_true(took < 60, ("%s MiB each way took %.1f s"):format(mib, took))
  end)

  it("passes the client's half-close on: upstream sees EOF, its reply still comes back", function()
    local up, up_port = keep(python_upstream [[
data = b""
while True:
    piece = conn.recv(65536)
    if not piece:
        break
    data += piece
say("upstream got EOF after", len(data))
conn.sendall(b"got %d bytes, sha256 %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode()))
conn.close()
]])
    local _, port = keep(start_proxy("tcp://127.0.0.1:" .. up_port))
    local size = big(1048576, 131072)
    local out, rc = python_client([[
import hashlib, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
data = bytes(range(256)) * (int(sys.argv[2]) // 256)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
reply = b""
while True:
    piece = s.recv(65536)
    if not piece:
        break
    reply += piece
print(reply.decode().strip())
print("expected: got %d bytes, sha256 %s" % (len(data), hashlib.sha256(data).hexdigest()))
]], port .. " " .. size)
    assert.equals(0, rc, out)
    local reply, expected = out:match("^(.-)\nexpected: (.-)\n$")
    assert.equals(expected, reply)
    assert.equals(tostring(size), up:wait_output("upstream got EOF after (%d+)"))
  end)

  it("passes the upstream's half-close on: the client sees EOF and can still send", function()
    local up, up_port = keep(python_upstream [[
conn.sendall(b"greetings, then EOF\n")
conn.shutdown(socket.SHUT_WR)
n = 0
while True:
    piece = conn.recv(65536)
    if not piece:
        break
    n += len(piece)
say("upstream got", n)
]])
    local _, port = keep(start_proxy("tcp://127.0.0.1:" .. up_port))
    local out, rc = python_client([[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
got = b""
while True:
    piece = s.recv(65536)
    if not piece:
        break
    got += piece
print("client got", repr(got.decode()), "then EOF")
s.sendall(b"z" * 300000)                         # after the EOF, the other way
s.close()
]], port)
    assert.equals(0, rc, out)
    assert.equals("client got 'greetings, then EOF\\n' then EOF\n", out)
    assert.equals("300000", up:wait_output("upstream got (%d+)", 30))
  end)

  it("backpressure toward a client that does not read: the upstream is held, the proxy's memory is not", function()
    local mib = big(100, 1)
    local flood = keep(H.start("spec/fixtures/flood.lua tcp://127.0.0.1:0 " .. mib))
    flood.sockhost = true
    local proxy, port = keep(start_proxy(flood:wait_output("listening (%S+)")))
    H.socket.sleep(0.1)
    local before = proxy:rss_kib()
    local c = H.tcp("127.0.0.1", port, 20)
    H.socket.sleep(1.0)                          -- the upstream writes, nobody reads
    local during = proxy:rss_kib()
    assert.is_nil(flood:stdout():match("sent"))   -- the flood is held back, not buffered
    local got = 0
    while true do
      local data, err, partial = c:receive(65536)
      got = got + #(data or partial)
      if err then break end
    end
    c:close()
    assert.equals(mib * 1024 * 1024, got)
    assert.truthy(flood:wait_output("sent (%d+)"))
    if CHECK_RSS then
      assert.is_true(during - before < 8 * 1024,
        ("proxy RSS grew %d KiB while the client did not read"):format(during - before))
    end
  end)

  -- (the client must send more than the kernel buffers on three sockets hold:
  -- several MiB, too many for the one-byte shim)
  it_unless_onebyte("backpressure toward an upstream that does not read: the client is held, the proxy's memory is not", function()
    local mib = 100
    local up, up_port = keep(python_upstream [[
say("accepted")
time.sleep(3)                                    # not reading meanwhile
n = 0
while True:
    piece = conn.recv(1 << 16)
    if not piece:
        break
    n += len(piece)
say("upstream got", n)
]])
    local proxy, port = keep(start_proxy("tcp://127.0.0.1:" .. up_port))
    H.socket.sleep(0.1)
    local before = proxy:rss_kib()
    local client = keep(H.launch_python([[
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
block, total, t0 = b"q" * 65536, int(sys.argv[2]) * 1048576, time.monotonic()
for _ in range(total // len(block)):
    s.sendall(block)
s.shutdown(socket.SHUT_WR)
print("client sent", total, "in %.1f s" % (time.monotonic() - t0), flush=True)
s.recv(1)
]], port .. " " .. mib))
    up:wait_output("accepted", 20)
    H.socket.sleep(1.0)                          -- the client writes, nobody reads
    local during = proxy:rss_kib()
    assert.is_nil(client:stdout():match("client sent"))   -- held back by the upstream
    assert.equals(tostring(mib * 1024 * 1024), up:wait_output("upstream got (%d+)", 60))
    assert.truthy(client:wait_output("client sent (%d+)"))
    if CHECK_RSS then
      assert.is_true(during - before < 8 * 1024,
        ("proxy RSS grew %d KiB while the upstream did not read"):format(during - before))
    end
  end)

  it("upstream refuses: the client is closed at once, with a log line", function()
    local dead = "tcp://127.0.0.1:" .. H.free_port()     -- nothing listens there
    local proxy, port = keep(start_proxy(dead))
    local out, rc = python_client([[
import socket, sys, time
t0 = time.monotonic()
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
data = s.recv(100)
print(repr(data), "after %.2f s" % (time.monotonic() - t0))
]], port)
    assert.equals(0, rc, out)
    local data, took = out:match("^(%S+) after ([%d.]+) s")
    assert.equals("b''", data)
    assert.is_true(tonumber(took) < 2, out)
    assert.truthy(proxy:stderr():match("WARN  proxy: tcp://127%.0%.0%.1:%d+ %-> "
      .. dead:gsub("%p", "%%%0") .. ": connection refused"), proxy:stderr())
  end)

  it("a client that resets mid-transfer: both sides are closed and the connection logged", function()
    local flood = keep(H.start("spec/fixtures/flood.lua tcp://127.0.0.1:0 " .. big(100, 1)))
    flood.sockhost = true
    local proxy, port = keep(start_proxy(flood:wait_output("listening (%S+)")))
    H.socket.sleep(0.1)
    local fds = proxy:fd_count()
    local out, rc = python_client([[
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
n = 0
while n < int(sys.argv[2]):
    n += len(s.recv(65536))
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()                                        # a reset, not a FIN
print("read", n)
]], port .. " " .. big(1000000, 100000))
    assert.equals(0, rc, out)
    local deadline, line = now() + 5, nil
    repeat
      line = proxy:stderr():match("INFO  proxy: [^\n]* bytes up, %d+ down, [%d.]+ s")
      if not line then H.socket.sleep(0.02) end
    until line or now() > deadline
    assert.truthy(line, proxy:stderr())
    deadline = now() + 5                          -- closing the upstream waits up to 2 s for its FIN
    while proxy:fd_count() > fds and now() < deadline do H.socket.sleep(0.05) end
    assert.equals(fds, proxy:fd_count())          -- both connections closed
  end)

  it("a client that half-closes, stops reading, then resets: both sides are closed promptly", function()
    local flood = keep(H.start("spec/fixtures/flood.lua tcp://127.0.0.1:0 " .. big(100, 1)))
    flood.sockhost = true
    local proxy, port = keep(start_proxy(flood:wait_output("listening (%S+)")))
    H.socket.sleep(0.1)
    local fds = proxy:fd_count()
    local out, rc = python_client([[
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
n = 0
while n < 200000:
    n += len(s.recv(65536))
s.shutdown(socket.SHUT_WR)                       # passed on to the upstream
time.sleep(1)                                    # the proxy's writer to us parks
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
print("ok")
]], port)
    assert.equals(0, rc, out)
    local t0, line = now(), nil
    repeat
      line = proxy:stderr():match("INFO  proxy: [^\n]* bytes up, %d+ down, [%d.]+ s")
      if not line then H.socket.sleep(0.02) end
    until line or now() - t0 > 5
    assert.truthy(line, proxy:stderr())
    while proxy:fd_count() > fds and now() - t0 < 8 do H.socket.sleep(0.05) end
    assert.equals(fds, proxy:fd_count())
  end)

  it("curl through the proxy to scripts/http.lua: GET, a 900 KiB POST body back intact, keep-alive", function()
    local http = keep(H.start("scripts/http.lua tcp://127.0.0.1:0"))
    http.sockhost = true
    local proxy, port = keep(start_proxy(http:wait_output("listening on (tcp://[%d.:]+)")))
    local base = "http://127.0.0.1:" .. port
    local function curl(args) return H.sh_cmd("curl -sS --max-time 20 " .. args .. " 2>&1") end
    assert.same({ "hello\n", 0 }, { curl(base .. "/") })
    assert.same({ "hello, proxy\n", 0 }, { curl(("'%s/hello?name=proxy'"):format(base)) })
    local body, back = H.tmpname(".bin"), H.tmpname(".bin")
    local size = big(921600, 131072)
    local out, rc = curl(("--data-binary @%s -o %s %s/echo"):format(
      H.writefile(body, H.sh_cmd("head -c " .. size .. " /dev/urandom")), back, base))
    assert.equals(0, rc, out)
    assert.equals(size, #H.readfile(back))
    assert.is_true(H.readfile(body) == H.readfile(back), "the body came back changed")
    -- two URLs on one connection through the proxy
    out = curl(("-o /dev/null -o /dev/null -w '%%{num_connects} ' %s/ %s/hello"):format(base, base))
    assert.equals("1 0 ", out)
    local deadline, lines = now() + 5, 0
    repeat
      lines = select(2, proxy:stderr():gsub("INFO  proxy: [^\n]+ bytes up, %d+ down", ""))
      if lines < 4 then H.socket.sleep(0.02) end
    until lines >= 4 or now() > deadline
    assert.equals(4, lines)                        -- one per client connection
    os.remove(body); os.remove(back)
  end)

  -- scripts/kv.lua is being written alongside; the case runs once it is there.
  local it_if_kv = (H.readfile("scripts/kv.lua") and H.sh_cmd("command -v redis-benchmark") ~= "")
    and it or pending
  it_if_kv("redis-benchmark through the proxy to scripts/kv.lua: 20 clients, pipelined; every INCR counted", function()
    local kv = keep(H.start("scripts/kv.lua tcp://127.0.0.1:0"))
    kv.sockhost = true
    local _, port = keep(start_proxy(kv:wait_output("listening on (tcp://[%d.:]+)")))
    local n = big(5000, 200)
    local out, rc = H.sh_cmd(("timeout 60 redis-benchmark -h 127.0.0.1 -p %d -n %d -c 20 -P 8 -t set,get,incr -q 2>&1")
      :format(port, n))
    assert.equals(0, rc, out)
    for _, cmd in ipairs { "SET", "GET", "INCR" } do
      assert.truthy(out:match(cmd .. ": [%d.]+ requests per second"), out)
    end
    -- redis-benchmark's keys: every INCR reached the store, once
    local cli = ("timeout 10 redis-cli -h 127.0.0.1 -p %d "):format(port)
    assert.equals(tostring(n) .. "\n", (H.sh_cmd(cli .. "get counter:__rand_int__")))
    assert.equals("OK\n", (H.sh_cmd(cli .. "set greeting 'through the proxy'")))
    assert.equals("through the proxy\n", (H.sh_cmd(cli .. "get greeting")))
  end)
end)
