-- udp_spec.lua -- datagram sockets: sockhost.udp for UDP (IPv4 and IPv6) and
-- Unix datagrams. scripts/udp_echo.lua runs as ./sockhost against python3
-- clients (bulk echo with exact checks and loss counted); the API is checked
-- in-process, against python3 peers where the other side must be independent.
local H = require "helpers"
local cjson = require "cjson"

-- The module, with every socket and listener a test makes closed after it.
local sh = H.tracked_sh(after_each)

local ECHO = H.q(H.ROOT .. "/scripts/udp_echo.lua")

local function start_echo(addr, flags)
  local p = H.start((flags or "") .. " " .. ECHO .. " " .. H.q(addr))
  return p, p:wait_output("udp echo: listening on (%S+)")
end

-- python3 --------------------------------------------------------------

local function pyfile(src) return H.writefile(H.tmpname(".py"), src) end

-- Run a python3 script to completion (blocks: only for servers in another
-- process). Returns stdout+stderr, rc.
local function py_run(src, args, timeout)
  return H.sh_cmd(("timeout -s KILL %d python3 %s %s 2>&1"):format(timeout or 30, H.q(pyfile(src)), args or ""))
end

-- A python3 process in the background (for servers in this process).
local function py_start(src, args)
  local p = H.launch_python(src, args)
  function p.stdout() return H.readfile(p.out) or "" end
  function p.stderr() return H.readfile(p.err) or "" end
  function p.exited() local rc = H.readfile(p.rcf); return rc and tonumber(rc) end
  function p.stop()        -- by PID: TERM to the 'timeout' wrapper, which passes it on
    if not p.exited() then os.execute(("kill -TERM %d 2>/dev/null"):format(p.pid)) end
  end
  return p
end

-- From inside a task: wait (bounded) for python to print a line matching
-- 'pattern', letting our loop run meanwhile. Returns the capture.
local function py_wait_output(p, pattern, timeout)
  local deadline = sh.now() + (timeout or 8)
  while true do
    local m = p.stdout():match(pattern)
    if m then return m end
    if p.exited() or sh.now() > deadline then
      p.stop()
      error(("python: no %q\nstdout: %s\nstderr: %s"):format(pattern, p.stdout(), p.stderr()))
    end
    sh.sleep(0.01)
  end
end

-- From inside a task: wait (bounded) for python to exit; returns rc, stdout.
local function py_join(p, timeout)
  local deadline = sh.now() + (timeout or 8)
  while not p.exited() do
    if sh.now() > deadline then
      p.stop()
      error("python did not finish\nstdout: " .. p.stdout() .. "\nstderr: " .. p.stderr())
    end
    sh.sleep(0.01)
  end
  return p.exited(), p.stdout()
end

local function port_of(addr) return tonumber(addr:match(":(%d+)$")) end

-- The bulk client: sends 'count' datagrams of mixed sizes (1..1400 bytes,
-- every hundredth 1401..65507, one exactly 65507), keeping at most 'window'
-- unanswered (and at most 160 kB), and checks each echo against what is
-- outstanding: exact bytes, so a merged, cut or altered datagram counts as
-- bad. Whatever has not come back 3 s after the last echo counts as lost.
local PY_BULK = [[
import socket, sys, random, struct, time, json
fam, target, count, window = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if fam == "unix":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[5]); addr = target
else:
    host, port = target.rsplit(":", 1)
    s = socket.socket(socket.AF_INET6 if fam == "inet6" else socket.AF_INET, socket.SOCK_DGRAM)
    addr = (host.strip("[]"), int(port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.settimeout(3.0)
rng = random.Random(12345)
sizes = [rng.randint(1401, 65507) if i % 100 == 50 else rng.randint(1, 1400) for i in range(count)]
sizes[count // 2] = 65507
def payload(i, n):
    body = random.Random(i).randbytes(n)
    return struct.pack("!II", i, n) + body[8:] if n >= 8 else body
out, outbytes, outn = {}, 0, 0
st = {"sent": 0, "received": 0, "bad": 0, "n65507": 0, "max": 0, "bytes": 0}
def take():
    global outbytes, outn
    data = s.recv(70000)
    if out.get(data, 0) > 0:
        out[data] -= 1
        if out[data] == 0: del out[data]
        st["received"] += 1; outbytes -= len(data); outn -= 1
        st["bytes"] += len(data); st["max"] = max(st["max"], len(data))
        if len(data) == 65507: st["n65507"] += 1
    else:
        st["bad"] += 1
t0 = time.time()
try:
    for i in range(count):
        p = payload(i, sizes[i])
        while outn >= window or (outn > 0 and outbytes + len(p) > 160000):
            take()
        s.sendto(p, addr); st["sent"] += 1
        out[p] = out.get(p, 0) + 1; outbytes += len(p); outn += 1
    while outn > 0:
        take()
except socket.timeout:
    pass
st["lost"] = outn
st["seconds"] = round(time.time() - t0, 3)
st["rate"] = round(st["received"] / st["seconds"]) if st["seconds"] > 0 else 0
print(json.dumps(st))
]]

local function bulk(fam, target, count, window, mypath)
  local out, rc = py_run(PY_BULK, ("%s %s %d %d %s"):format(fam, H.q(target), count, window,
    mypath and H.q(mypath) or ""), 90)
  assert.equals(0, rc, out)
  local st = cjson.decode(out:match("{.*}"))
  if os.getenv("SOCKHOST_SPEC_STATS") then
    io.stderr:write(("\n[udp bulk %s window %d] %s\n"):format(fam, window, out:match("{.*}")))
  end
  return st
end

-- A datagram once out and back, from python: prints the echo's length, whether
-- it equals what was sent, and where the echo came from.
local PY_ONCE = [[
import socket, sys, os
fam, target, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
if fam == "unix":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[4]); addr = target
else:
    host, port = target.rsplit(":", 1)
    s = socket.socket(socket.AF_INET6 if fam == "inet6" else socket.AF_INET, socket.SOCK_DGRAM)
    addr = (host.strip("[]"), int(port))
s.settimeout(3)
data = os.urandom(size)
s.sendto(data, addr)
got, frm = s.recvfrom(70000)
print("len", len(got), "same", got == data, "from", frm, "me", s.getsockname())
]]

-- Known bugs, found by the tests below: each test that meets one goes
-- pending with its name instead of failing, and runs in full once fixed.
local BUG_WRITERS = "BUG (l_udp.c send_now): a sender that meets a full queue while another "
  .. "already waits is never queued (only an empty queue takes it), so it stays parked for ever: "
  .. "30 handlers echoing to a Unix datagram peer that reads late deliver 12, the rest never finish"
local BUG_TIMEOUT = "BUG: settimeout does not bound a sendto waiting for room at an unconnected "
  .. "Unix datagram peer: each spurious wake-up re-parks it with a fresh deadline, so with "
  .. "settimeout(0.2) it was still waiting after 2 s (it returns only once the peer reads)"
local BUG_SPIN = "BUG: a sender waiting for room at an unconnected Unix datagram peer spins "
  .. "the CPU (the socket polls writable at once, the retry meets EAGAIN again)"

-- 30 handlers each echo a datagram to a Unix datagram peer that reads only
-- after 0.1 s (its queue holds 10): how many echoes got through? (Once.)
local writers_done
local function writers_case()
  if writers_done ~= nil then return writers_done end
  local a, b = H.tmpname(".sock"), H.tmpname(".sock")
  local done = 0
  H.run(function()
    local srv = assert(sh.udp("unixgram:" .. a, function(s, data, from)
      if s:sendto(data, from) then done = done + 1 end
    end))
    srv:settimeout(1)                   -- so that no sender can stay parked
    local c = assert(sh.udp("unixgram:" .. b))
    for i = 1, 30 do assert(c:sendto("m" .. i, "unixgram:" .. a)) end
    sh.sleep(0.1)                       -- more than the peer's queue holds (10 here)
    c:settimeout(0.5)
    repeat local d = c:recvfrom() until not d
    c:close()
    srv:close()
  end)
  writers_done = done
  return done
end
local function has_writers_bug() return writers_case() < 30 end

describe("scripts/udp_echo.lua under ./sockhost, python3 clients", function()
  it("keeps serving when it has nothing else to do", function()
    local p = start_echo("udp://127.0.0.1:0")
    H.socket.sleep(0.3)
    assert.is_nil(p:exited(), "udp_echo.lua exited by itself: a handler socket must hold the loop")
    local addr = p:stdout():match("listening on (%S+)")
    local out, rc = py_run(PY_ONCE, "inet " .. H.q(addr:match("//(.*)")) .. " 100")
    assert.equals(0, p:stop())
    assert.equals(0, rc, out)
    assert.matches("len 100 same True", out)
  end)

  it("UDP: echoes 10,000 datagrams of mixed sizes, none lost, merged or cut", function()
    local p, addr = start_echo("udp://127.0.0.1:0")
    local st = bulk("inet", addr:match("//(.*)"), 10000, 32)
    assert.equals(0, p:stop())
    assert.same({ sent = 10000, received = 10000, lost = 0, bad = 0 },
      { sent = st.sent, received = st.received, lost = st.lost, bad = st.bad })
    assert.equals(65507, st.max)
    assert.is_true(st.n65507 >= 1)
    assert.is_true(st.bytes > 5e6, "bytes echoed: " .. st.bytes)
  end)

  it("UDP: echoes a 65,507-byte datagram intact, from the address it was sent to", function()
    local p, addr = start_echo("udp://127.0.0.1:0")
    local out, rc = py_run(PY_ONCE, "inet " .. H.q(addr:match("//(.*)")) .. " 65507")
    assert.equals(0, p:stop())
    assert.equals(0, rc, out)
    assert.matches("len 65507 same True from %('127.0.0.1', " .. port_of(addr) .. "%)", out)
  end)

  it("IPv6 UDP: echoes to a python AF_INET6 client", function()
    local p, addr = start_echo("udp://[::1]:0")
    assert.matches("^udp://%[::1%]:%d+$", addr)
    local st = bulk("inet6", addr:match("//(.*)"), 2000, 32)
    assert.equals(0, p:stop())
    assert.same({ sent = 2000, received = 2000, lost = 0, bad = 0 },
      { sent = st.sent, received = st.received, lost = st.lost, bad = st.bad })
  end)

  it("Unix datagrams: echoes 10,000 datagrams to a python AF_UNIX client; the file goes at exit", function()
    local path, mine = H.tmpname(".sock"), H.tmpname(".sock")
    local p, addr = start_echo("unixgram:" .. path)
    assert.equals("unixgram:" .. path, addr)
    assert.equals(0, select(2, H.sh_cmd("test -S " .. H.q(path))))
    -- a window of 8: below the kernel's queue for Unix datagrams (10), so
    -- the echo never meets a full queue at the client
    local st = bulk("unix", path, 10000, 8, mine)
    assert.equals(0, p:stop())
    os.remove(mine)
    assert.same({ sent = 10000, received = 10000, lost = 0, bad = 0 },
      { sent = st.sent, received = st.received, lost = st.lost, bad = st.bad })
    assert.equals(65507, st.max)
    assert.equals(1, select(2, H.sh_cmd("test -e " .. H.q(path))), "socket file left behind")
  end)

  it("Unix datagrams: a client 32 ahead (more than its queue holds) still gets every echo", function()
    local path, mine = H.tmpname(".sock"), H.tmpname(".sock")
    local p = start_echo("unixgram:" .. path, "--grace 1")
    local st = bulk("unix", path, 3000, 32, mine)
    local rc = p:stop()
    os.remove(mine)
    assert.equals(0, st.bad)
    if st.lost > 0 and has_writers_bug() then
      -- (the stuck handlers also hold SIGTERM's shutdown to its --grace)
      pending(BUG_WRITERS .. (" (here: %d of %d echoes lost)"):format(st.lost, st.sent))
      return
    end
    assert.equals(0, rc)
    assert.same({ sent = 3000, received = 3000, lost = 0 },
      { sent = st.sent, received = st.received, lost = st.lost })
  end)

  it("a failing handler is logged and the socket keeps serving", function()
    local script = H.writefile(H.tmpname(".lua"), [[
      local sh = require "sockhost"
      local s = assert(sh.udp("udp://127.0.0.1:0", function(s, data, from)
        if data == "boom" then error("handler exploded") end
        s:sendto("ok:" .. data, from)
      end))
      print("at " .. s:address())
      io.stdout:flush()
    ]])
    local p = H.start(H.q(script))
    local addr = p:wait_output("at (%S+)")
    local out, rc = py_run([[
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
for m in (b"one", b"boom", b"two"):
    s.sendto(m, (host, int(port)))
print(s.recv(100), s.recv(100))
]], H.q(addr:match("//(.*)")))
    H.socket.sleep(0.1)
    local err = p:stderr()
    assert.equals(0, p:stop())
    assert.equals(0, rc, out)
    assert.equals("b'ok:one' b'ok:two'\n", out)
    assert.matches("handler exploded", err)
  end)
end)

describe("sockhost.udp in-process", function()
  it("recvfrom gives the data and a from address that sendto accepts", function()
    local got = H.run(function()
      local srv = assert(sh.udp("udp://127.0.0.1:0"))
      local cli = assert(sh.udp("udp://127.0.0.1:0"))
      assert(cli:sendto("ping", srv:address()))
      local data, from = srv:recvfrom()
      assert(srv:sendto("pong:" .. data, from))
      local reply, rfrom = cli:recvfrom()
      local r = { data, from, reply, rfrom, cli:address(), srv:address() }
      srv:close(); cli:close()
      return r
    end)
    assert.equals("ping", got[1])
    assert.equals(got[5], got[2])          -- from: the client's own address
    assert.equals("pong:ping", got[3])
    assert.equals(got[6], got[4])
  end)

  it("an unbound client gets its socket on the first sendto", function()
    local r = H.run(function()
      local srv = assert(sh.udp("udp://127.0.0.1:0"))
      local cli = sh.udp()
      local before = { cli:address() }
      local rbefore = { cli:recvfrom() }
      assert(cli:sendto("x", srv:address()))
      local _, from = srv:recvfrom()
      local after = cli:address()
      srv:close(); cli:close()
      return { before, rbefore, from, after }
    end)
    assert.same({ nil, "not bound" }, r[1])
    assert.same({ nil, "not bound" }, r[2])
    assert.equals(port_of(r[4]), port_of(r[3]))
  end)

  it("a datagram longer than max is reported truncated, with its start, never as whole", function()
    local r = H.run(function()
      local srv = assert(sh.udp("udp://127.0.0.1:0"))
      local cli = assert(sh.udp("udp://127.0.0.1:0"))
      assert(cli:sendto("0123456789", srv:address()))
      assert(cli:sendto("abcdef", srv:address()))
      local t1 = table.pack(srv:recvfrom(4))
      local t2 = table.pack(srv:recvfrom(6))        -- exactly fits
      local a = cli:address()
      srv:close(); cli:close()
      return { t1, t2, a }
    end)
    assert.same({ n = 4, nil, "truncated", "0123", r[3] }, r[1])
    assert.same({ n = 2, "abcdef", r[3] }, r[2])
  end)

  it("recv on a connected socket: data only, and 'truncated' with the start", function()
    local r = H.run(function()
      local srv = assert(sh.udp("udp://127.0.0.1:0"))
      local cli = assert(sh.udp())
      assert(cli:connect(srv:address()))
      assert(cli:send("hello"))
      local _, from = srv:recvfrom()
      assert(srv:sendto("0123456789", from))
      assert(srv:sendto("whole", from))
      local t1 = table.pack(cli:recv(4))
      local t2 = table.pack(cli:recv())
      srv:close(); cli:close()
      return { t1, t2 }
    end)
    assert.same({ n = 3, nil, "truncated", "0123" }, r[1])
    assert.same({ n = 1, "whole" }, r[2])
  end)

  it("over IPv4, 65,507 bytes go whole and 65,508 give 'message too long'", function()
    local r = H.run(function()
      local srv = assert(sh.udp("udp://127.0.0.1:0"))
      local cli = assert(sh.udp("udp://127.0.0.1:0"))
      local big = string.rep("0123456789abcdef", 4096):sub(1, 65507)
      local t1 = table.pack(cli:sendto(big .. "x", srv:address()))
      local t2 = table.pack(cli:sendto(big, srv:address()))
      srv:settimeout(2)
      local got = srv:recvfrom()
      srv:close(); cli:close()
      return { t1, t2, got == big, #got }
    end)
    assert.same({ n = 2, nil, "message too long" }, r[1])
    assert.same({ n = 1, true }, r[2])
    assert.is_true(r[3])
    assert.equals(65507, r[4])
  end)

  it("recvfrom times out after settimeout's seconds with nil, 'timeout'", function()
    local r = H.run(function()
      local s = assert(sh.udp("udp://127.0.0.1:0"))
      s:settimeout(0.2)
      local t0 = sh.now()
      local t = table.pack(s:recvfrom())
      local took = sh.now() - t0
      local t2 = table.pack(s:recv())
      s:close()
      return { t, took, t2 }
    end)
    assert.same({ n = 2, nil, "timeout" }, r[1])
    assert.is_true(r[2] >= 0.18 and r[2] < 1.5, "took " .. r[2])
    assert.same({ n = 2, nil, "timeout" }, r[3])
  end)

  it("a second reader gets nil, 'busy'; the first still gets the datagram", function()
    local r = H.run(function()
      local srv = assert(sh.udp("udp://127.0.0.1:0"))
      local cli = assert(sh.udp("udp://127.0.0.1:0"))
      local first
      local task = sh.spawn(function() first = table.pack(srv:recvfrom()) end)
      sh.sleep(0.02)
      local second = table.pack(srv:recvfrom())
      assert(cli:sendto("for the first", srv:address()))
      task:join()
      srv:close(); cli:close()
      return { first, second }
    end)
    assert.same({ nil, "busy" }, { r[2][1], r[2][2] })
    assert.equals("for the first", r[1][1])
  end)

  it("close wakes a parked reader with nil, 'closed'; later calls say 'closed'", function()
    local r = H.run(function()
      local s = assert(sh.udp("udp://127.0.0.1:0"))
      local parked
      local task = sh.spawn(function() parked = table.pack(s:recvfrom()) end)
      sh.sleep(0.02)
      s:close()
      task:join()
      return { parked, table.pack(s:recvfrom()), table.pack(s:sendto("x", "udp://127.0.0.1:9")),
               table.pack(s:send("x")), table.pack(s:address()) }
    end)
    for i = 1, 5 do assert.same({ n = 2, nil, "closed" }, r[i]) end
  end)

  it("a socket with a handler refuses recvfrom (raises)", function()
    local ok, err = H.run(function()
      local s = assert(sh.udp("udp://127.0.0.1:0", function() end))
      local ok, err = pcall(s.recvfrom, s)
      s:close()
      return ok, err
    end)
    assert.is_false(ok)
    assert.matches("handler", err)
  end)

  it("runs a task per datagram: slow handlers overlap", function()
    local r = H.run(function()
      local srv = assert(sh.udp("udp://127.0.0.1:0", function(s, data, from)
        sh.sleep(0.3)
        s:sendto("done " .. data, from)
      end))
      local cli = assert(sh.udp("udp://127.0.0.1:0"))
      cli:settimeout(2)
      local t0 = sh.now()
      for i = 1, 5 do assert(cli:sendto(tostring(i), srv:address())) end
      local got = {}
      for i = 1, 5 do got[i] = assert(cli:recvfrom()) end
      local took = sh.now() - t0
      srv:close(); cli:close()
      table.sort(got)
      return { got, took }
    end)
    assert.same({ "done 1", "done 2", "done 3", "done 4", "done 5" }, r[1])
    assert.is_true(r[2] < 1.0, "5 handlers sleeping 0.3 s took " .. r[2])
  end)

  it("connected mode against a python UDP server: send/recv, and only the peer is heard", function()
    local r = H.run(function()
      local py = py_start([[
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.settimeout(5)
print("port", s.getsockname()[1], flush=True)
for i in range(2):
    d, a = s.recvfrom(100)
    s.sendto(b"echo:" + d, a)
    print("from", a[1], flush=True)
]])
      local port = tonumber(py_wait_output(py, "port (%d+)"))
      local cli = assert(sh.udp())
      assert(cli:connect("udp://127.0.0.1:" .. port))
      local peer = cli:peer()
      cli:settimeout(3)
      assert(cli:send("hello"))
      local a = table.pack(cli:recv())
      -- a stranger's datagram to our address is not delivered to a connected socket
      local stranger = assert(sh.udp("udp://127.0.0.1:0"))
      assert(stranger:sendto("stranger", (cli:address():gsub("%[::%]", "127.0.0.1"))))
      assert(cli:send("again"))
      local b = table.pack(cli:recv())
      local rc, out = py_join(py)
      local mine = port_of(cli:address())
      cli:close(); stranger:close()
      return { peer, a, b, rc, out, mine, port }
    end)
    assert.equals("udp://127.0.0.1:" .. r[7], r[1])
    assert.same({ n = 1, "echo:hello" }, r[2])
    assert.same({ n = 1, "echo:again" }, r[3])
    assert.equals(0, r[4])
    assert.equals(("from %d\nfrom %d\n"):format(r[6], r[6]), r[5]:match("from.*"))
  end)

  it("IPv6: in-process client and server on [::1], from shown as udp://[::1]:port", function()
    local r = H.run(function()
      local srv = assert(sh.udp("udp://[::1]:0"))
      local cli = assert(sh.udp())
      assert(cli:sendto("six", srv:address()))
      srv:settimeout(2)
      local data, from = srv:recvfrom()
      assert(srv:sendto("back", from))
      cli:settimeout(2)
      local back, bfrom = cli:recvfrom()
      local a = srv:address()
      srv:close(); cli:close()
      return { data, from, back, bfrom, a }
    end)
    assert.equals("six", r[1])
    assert.matches("^udp://%[::1%]:%d+$", r[2])
    assert.equals("back", r[3])
    assert.equals(r[5], r[4])
  end)

  it("IPv6: a python AF_INET6 client gets its echo from [::1]", function()
    local r = H.run(function()
      local srv = assert(sh.udp("udp://[::1]:0", function(s, data, from) s:sendto(data, from) end))
      local py = py_start(PY_ONCE, "inet6 " .. H.q(srv:address():match("//(.*)")) .. " 1200")
      local rc, out = py_join(py)
      local a = srv:address()
      srv:close()
      return { rc, out, a }
    end)
    assert.equals(0, r[1], r[2])
    assert.matches("len 1200 same True from %('::1', " .. port_of(r[3]) .. ", 0, 0%)", r[2])
  end)

  it("Unix datagrams in-process: paths and abstract names; the file goes on close", function()
    local a, b = H.tmpname(".sock"), H.tmpname(".sock")
    local name = "sockhost-spec-" .. H.getpid() .. "-" .. math.random(1e6)
    local r = H.run(function()
      local srv = assert(sh.udp("unixgram:" .. a))
      local cli = assert(sh.udp("unixgram:" .. b))
      local abs = assert(sh.udp("unixgram:@" .. name))
      assert(cli:sendto("to a file", srv:address()))
      local d1, f1 = srv:recvfrom()
      assert(cli:sendto("to a name", "unixgram:@" .. name))
      local d2, f2 = abs:recvfrom()
      assert(abs:sendto("reply", f2))
      local d3, f3 = cli:recvfrom()
      local exists = select(2, H.sh_cmd("test -S " .. H.q(a)))
      local addrs = { srv:address(), abs:address() }
      srv:close(); cli:close(); abs:close()
      return { d1, f1, d2, f2, d3, f3, exists, addrs }
    end)
    assert.same({ "to a file", "unixgram:" .. b, "to a name", "unixgram:" .. b,
                  "reply", "unixgram:@" .. name },
                { r[1], r[2], r[3], r[4], r[5], r[6] })
    assert.equals(0, r[7])
    assert.same({ "unixgram:" .. a, "unixgram:@" .. name }, r[8])
    assert.equals(1, select(2, H.sh_cmd("test -e " .. H.q(a) .. " || test -e " .. H.q(b))))
  end)

  it("Unix datagrams: an unbound client gets an abstract name the server can answer", function()
    local a = H.tmpname(".sock")
    local r = H.run(function()
      local srv = assert(sh.udp("unixgram:" .. a, function(s, d, from) s:sendto("re:" .. d, from) end))
      local cli = sh.udp()
      assert(cli:sendto("anon", "unixgram:" .. a))
      cli:settimeout(2)
      local t = table.pack(cli:recvfrom())
      local me = cli:address()
      srv:close(); cli:close()
      return { t, me }
    end)
    assert.equals("re:anon", r[1][1])
    assert.equals("unixgram:" .. a, r[1][2])
    assert.matches("^unixgram:@", r[2])
  end)

  it("Unix datagrams: every sender waiting for room at a slow peer gets through", function()
    if has_writers_bug() then
      pending(BUG_WRITERS .. (" (this run: %d of 30)"):format(writers_case()))
      return
    end
    assert.equals(30, writers_case())
  end)

  -- A task sends 1000 datagrams to a Unix datagram peer that does not read:
  -- it soon waits for room. Then the peer reads them all.
  local function slow_peer(timeout, watch)
    local a, b = H.tmpname(".sock"), H.tmpname(".sock")
    return H.run(function()
      local srv = assert(sh.udp("unixgram:" .. a))
      local peer = assert(sh.udp("unixgram:" .. b))
      srv:settimeout(timeout)
      local sent, failed = 0, nil
      local task = sh.spawn(function()
        for i = 1, 1000 do
          local ok, err = srv:sendto("d" .. i, peer:address())
          if not ok then failed = err; break end
          sent = sent + 1
        end
      end)
      sh.sleep(0.1)
      local r = watch(function() return sent, failed end)
      peer:settimeout(2)
      local got = 0
      while got < sent or (not failed and got < 1000) do
        if not peer:recvfrom() then break end
        got = got + 1
      end
      task:join()
      srv:close(); peer:close()
      r.sent, r.got, r.failed = sent, got, failed
      return r
    end)
  end

  it("Unix datagrams: a sender waiting for room at a slow peer does not spin the CPU", function()
    local r = slow_peer(-1, function(state)
      local before = state()
      local c0 = os.clock()
      sh.sleep(0.5)
      return { cpu = os.clock() - c0, waiting = before == state() }
    end)
    assert.is_true(r.waiting, "the sender never had to wait: nothing measured")
    assert.same({ 1000, 1000 }, { r.sent, r.got })
    if r.cpu > 0.25 then
      pending(BUG_SPIN .. (": %.2f s of CPU in 0.5 s of waiting"):format(r.cpu))
      return
    end
    assert.is_true(r.cpu < 0.1, "CPU while waiting: " .. r.cpu)
  end)

  it("Unix datagrams: settimeout bounds a sender waiting for room", function()
    local r = slow_peer(0.2, function(state)
      local deadline = sh.now() + 2
      repeat sh.sleep(0.02) until select(2, state()) or sh.now() > deadline
      return { failed_in_time = select(2, state()) }
    end)
    assert.equals(r.sent, r.got)
    if r.failed_in_time == nil then     -- still waiting after 2 s; it got through once drained
      assert.equals(1000, r.sent)
      pending(BUG_TIMEOUT)
      return
    end
    assert.is_true(r.sent > 0 and r.sent < 1000, "sent " .. r.sent)
    assert.equals("timeout", r.failed_in_time)
  end)
end)

describe("replies from the arrival address", function()
  -- A python client CONNECTED to 127.0.0.2: the kernel drops datagrams from
  -- any other source, so it hears the echo only if it comes from 127.0.0.2.
  local PY_ARRIVAL = [[
import socket, sys
port = int(sys.argv[1])
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(2)
c.connect(("127.0.0.2", port))
c.send(b"via .2")
try:
    print("connected got", c.recv(100))
except socket.timeout:
    print("connected timeout")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
u.sendto(b"via .2 again", ("127.0.0.2", port))
d, a = u.recvfrom(100)
print("unconnected got", d, "from", a[0])
]]

  local function arrival(addr)
    return H.run(function()
      local srv = assert(sh.udp(addr, function(s, data, from) s:sendto(data, from) end))
      local py = py_start(PY_ARRIVAL, tostring(port_of(srv:address())))
      local rc, out = py_join(py)
      srv:close()
      return { rc, out }
    end)
  end

  it("udp://0.0.0.0: a client that sent to 127.0.0.2 hears the reply from 127.0.0.2", function()
    local r = arrival("udp://0.0.0.0:0")
    assert.equals(0, r[1], r[2])
    assert.equals("connected got b'via .2'\nunconnected got b'via .2 again' from 127.0.0.2\n", r[2])
  end)

  it("udp://[::] (dual stack): an IPv4 client that sent to 127.0.0.2 hears the reply from 127.0.0.2", function()
    local r = arrival("udp://[::]:0")
    assert.equals(0, r[1], r[2])
    if r[2]:match("connected timeout") and r[2]:match("from 127%.0%.0%.1") then
      pending("BUG: on a dual-stack udp://[::] socket, replies to IPv4 clients leave from the "
        .. "default address: a client that sent to 127.0.0.2 gets the echo from 127.0.0.1 "
        .. "(a v4-mapped peer is remembered, but the from string is IPv4, so sendto's "
        .. "destination never matches it)")
      return
    end
    assert.equals("connected got b'via .2'\nunconnected got b'via .2 again' from 127.0.0.2\n", r[2])
  end)
end)

describe("broadcast and multicast on loopback", function()
  it("broadcast to 127.255.255.255 needs the broadcast option", function()
    local r = H.run(function()
      local rx = assert(sh.udp("udp://0.0.0.0:0"))
      local to = "udp://127.255.255.255:" .. port_of(rx:address())
      local plain = assert(sh.udp("udp://127.0.0.1:0"))
      local refused = table.pack(plain:sendto("no", to))
      local opt = assert(sh.udp("udp://127.0.0.1:0", nil, { broadcast = true }))
      local sent1 = table.pack(opt:sendto("by option", to))
      assert(plain:setoption("broadcast", true))
      local sent2 = table.pack(plain:sendto("by setoption", to))
      rx:settimeout(2)
      local d1, f1 = rx:recvfrom()
      local d2, f2 = rx:recvfrom()
      local r = { refused, sent1, sent2, d1, f1, d2, f2, opt:address(), plain:address() }
      rx:close(); plain:close(); opt:close()
      return r
    end)
    assert.same({ n = 2, nil, "permission denied" }, r[1])
    assert.same({ n = 1, true }, r[2])
    assert.same({ n = 1, true }, r[3])
    assert.same({ "by option", r[8], "by setoption", r[9] }, { r[4], r[5], r[6], r[7] })
  end)

  it("multicast: a member on 127.0.0.1 hears a group datagram sent with loop; not after leave", function()
    local group = ("239.%d.%d.%d"):format(math.random(1, 254), math.random(1, 254), math.random(1, 254))
    local r = H.run(function()
      local rx = assert(sh.udp("udp://0.0.0.0:0"))
      local to = "udp://" .. group .. ":" .. port_of(rx:address())
      assert(rx:join(group, "127.0.0.1"))
      local tx = assert(sh.udp("udp://127.0.0.1:0", nil, { loop = true, ttl = 1 }))
      -- joining a group on 127.0.0.1 also makes it the sending interface
      assert(tx:join("239.255.0." .. math.random(1, 254), "127.0.0.1"))
      local s1 = table.pack(tx:sendto("to the group", to))
      rx:settimeout(2)
      local d, from = rx:recvfrom()
      assert(rx:leave(group, "127.0.0.1"))
      assert(tx:sendto("after leave", to))
      rx:settimeout(0.3)
      local after = table.pack(rx:recvfrom())
      local r = { s1, d, from, tx:address(), after }
      rx:close(); tx:close()
      return r
    end)
    assert.same({ n = 1, true }, r[1])
    assert.equals("to the group", r[2])
    assert.equals(r[4], r[3])
    assert.same({ n = 2, nil, "timeout" }, r[5])
  end)

  it("setoption and join check their arguments", function()
    local r = H.run(function()
      local s = assert(sh.udp("udp://127.0.0.1:0"))
      local t = {
        table.pack(s:setoption("ttl", 4)),
        table.pack(s:setoption("rcvbuf", 65536)),
        table.pack(pcall(s.setoption, s, "nonsense", 1)),
        table.pack(pcall(s.join, s, "not an ip")),
      }
      s:close()
      t[5] = table.pack(s:setoption("ttl", 4))
      return t
    end)
    assert.same({ n = 1, true }, r[1])
    assert.same({ n = 1, true }, r[2])
    assert.is_false(r[3][1])
    assert.is_false(r[4][1])
    assert.same({ n = 2, nil, "closed" }, r[5])
  end)
end)
