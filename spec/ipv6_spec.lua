-- ipv6_spec.lua -- IPv6 streams (and the dual-stack cases of datagrams):
-- listeners on [::1] and [::] against python3 AF_INET6 / AF_INET clients,
-- ipv6only, in-process clients, and names that resolve to ::1.
local H = require "helpers"

-- The module, with every socket and listener a test makes closed after it.
local sh = H.tracked_sh(after_each)

local function port_of(addr) return tonumber(addr:match(":(%d+)$")) end

-- A python3 process in the background (our server runs in this process, so
-- we wait for it from a task, letting the loop run).
local function py_start(src, args)
  local p = H.launch_python(src, args)
  return p
end

local function py_join(p, timeout)
  local deadline = sh.now() + (timeout or 10)
  while not H.readfile(p.rcf) do
    if sh.now() > deadline then
      os.execute(("kill -TERM %d 2>/dev/null"):format(p.pid))
      error("python did not finish: " .. (H.readfile(p.err) or ""))
    end
    sh.sleep(0.01)
  end
  return tonumber(H.readfile(p.rcf)), H.readfile(p.out) or "", H.readfile(p.err) or ""
end

-- python client: connects over IPv6 or IPv4, sends a line, reads the echo.
-- Prints "ok <echo> <its own port>", or "refused".
local PY_TCP = [[
import socket, sys
fam, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if fam == "6" else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect((host, port))
except ConnectionRefusedError:
    print("refused"); sys.exit(0)
s.sendall(b"over " + fam.encode() + b"\n")
print("ok", s.makefile("rb").readline().decode().strip(), s.getsockname()[1])
]]

-- Serve an echo on 'addr' (with 'opts'); run python clients given as
-- {fam, host} in turn. Returns the listener's address, the python outputs,
-- and the peers the handler saw.
local function serve(addr, opts, clients)
  return H.run(function()
    local peers = {}
    local l = assert(sh.listen(addr, function(c)
      peers[#peers + 1] = c:peer()
      local line = c:read("l")
      if line then c:write("echo " .. line, "\n") end
    end, opts))
    local port = port_of(l:address())
    local outs = {}
    for i, cl in ipairs(clients) do
      local rc, out, err = py_join(py_start(PY_TCP, ("%s %s %d"):format(cl[1], cl[2], port)))
      assert(rc == 0, err)
      outs[i] = out
    end
    local a = l:address()
    l:close()
    return { a, outs, peers }
  end)
end

describe("IPv6 streams", function()
  after_each(function() sh.resolver {} end)   -- one test uses a hosts file of its own

  it("listens on [::1]; a python AF_INET6 client is served, its peer shown as tcp://[::1]:port", function()
    local r = serve("tcp://[::1]:0", nil, { { "6", "::1" } })
    assert.matches("^tcp://%[::1%]:%d+$", r[1])
    local echo, pyport = r[2][1]:match("^ok (.-) (%d+)\n$")
    assert.equals("echo over 6", echo)
    assert.same({ "tcp://[::1]:" .. pyport }, r[3])
  end)

  it("[::] is dual stack: an IPv4 client is served and shown as tcp://127.0.0.1:port", function()
    local r = serve("tcp://[::]:0", nil, { { "4", "127.0.0.1" }, { "6", "::1" } })
    assert.matches("^tcp://%[::%]:%d+$", r[1])
    local echo4, port4 = r[2][1]:match("^ok (.-) (%d+)\n$")
    local echo6, port6 = r[2][2]:match("^ok (.-) (%d+)\n$")
    assert.equals("echo over 4", echo4)
    assert.equals("echo over 6", echo6)
    assert.same({ "tcp://127.0.0.1:" .. port4, "tcp://[::1]:" .. port6 }, r[3])
  end)

  it("[::] with ipv6only refuses IPv4 clients and serves IPv6 ones", function()
    local r = serve("tcp://[::]:0", { ipv6only = true }, { { "4", "127.0.0.1" }, { "6", "::1" } })
    assert.equals("refused\n", r[2][1])
    assert.equals("echo over 6", r[2][2]:match("^ok (.-) %d+\n$"))
    assert.equals(1, #r[3])
  end)

  it("in-process: connect to tcp://[::1]:port, and to a name that resolves to ::1", function()
    local hosts = H.writefile(H.tmpname(".hosts"), "::1 six.spec.test\n")
    local r = H.run(function()
      local l = assert(sh.listen("tcp://[::1]:0", function(c) c:write("v6 ", c:peer(), "\n") end))
      local port = port_of(l:address())
      local c1 = assert(sh.connect("tcp://[::1]:" .. port))
      local a = { c1:read("l"), c1:address(), c1:peer() }
      c1:close()
      sh.resolver { hosts = hosts, nameservers = {} }
      local c2, err = sh.connect("tcp://six.spec.test:" .. port)
      sh.resolver {}
      local b = c2 and c2:read("l") or err
      if c2 then c2:close() end
      l:close()
      return { a, b, port }
    end)
    assert.equals("v6 " .. r[1][2], r[1][1])
    assert.matches("^tcp://%[::1%]:%d+$", r[1][2])
    assert.equals("tcp://[::1]:" .. r[3], r[1][3])
    assert.matches("^v6 tcp://%[::1%]:%d+$", r[2])
  end)

  it("a malformed IPv6 address is an argument error", function()
    local r = H.run(function()
      return { table.pack(pcall(sh.listen, "tcp://[::1:0", function() end)),
               table.pack(pcall(sh.listen, "tcp://::1:0", function() end)) }
    end)
    assert.is_false(r[1][1])
    assert.matches("missing ']'", r[1][2])
    assert.is_false(r[2][1])
    assert.matches("IPv6 hosts go in brackets", r[2][2])
  end)

  it("a zone id after an IPv6 literal ([::1%lo], [::1%1]) is taken; an unknown or empty one is a bad address", function()
    local r = H.run(function()
      local l = assert(sh.listen("tcp://[::1%lo]:0", function(c) c:write("zoned ", c:peer(), "\n") end))
      local port = port_of(l:address())
      local got = {}
      for _, zone in ipairs { "lo", "1" } do
        local c = assert(sh.connect(("tcp://[::1%%%s]:%d"):format(zone, port)))
        got[#got + 1] = c:read("l")
        c:close()
      end
      local u = assert(sh.udp("udp://[::1%lo]:0"))
      local cli = assert(sh.udp("udp://[::1]:0"))
      assert(cli:sendto("dgram", ("udp://[::1%%lo]:%d"):format(port_of(u:address()))))
      u:settimeout(2)
      local d = table.pack(u:recvfrom())
      local bad = { table.pack(pcall(sh.listen, "tcp://[::1%no-such-if0]:0", function() end)),
                    table.pack(pcall(sh.listen, "tcp://[::1%]:0", function() end)),
                    table.pack(pcall(sh.listen, "tcp://[::1%99999999999]:0", function() end)) }
      local a = l:address()
      l:close(); u:close(); cli:close()
      return { a, got, d, cli:address(), bad }
    end)
    assert.matches("^tcp://%[::1%]:%d+$", r[1])
    assert.equals(2, #r[2])
    for _, line in ipairs(r[2]) do assert.matches("^zoned tcp://%[::1%]:%d+$", line) end
    assert.equals("dgram", r[3][1])
    assert.matches("^udp://%[::1%]:%d+$", r[3][2])
    assert.is_false(r[5][1][1])
    assert.matches("bad address 'tcp://%[::1%%no%-such%-if0%]:0': unknown zone", r[5][1][2])
    assert.is_false(r[5][2][1])
    assert.matches("bad address 'tcp://%[::1%%%]:0': empty zone", r[5][2][2])
    assert.is_false(r[5][3][1])
    assert.matches("unknown zone", r[5][3][2])
  end)
end)

describe("IPv6 datagrams, dual stack", function()
  local function v4_to(addr, opts)
    return H.run(function()
      local srv = assert(sh.udp(addr, nil, opts))
      local cli = assert(sh.udp("udp://127.0.0.1:0"))
      assert(cli:sendto("v4 datagram", "udp://127.0.0.1:" .. port_of(srv:address())))
      srv:settimeout(0.5)
      local t = table.pack(srv:recvfrom())
      local me = cli:address()
      srv:close(); cli:close()
      return { t, me }
    end)
  end

  it("udp://[::] hears IPv4 senders, shown as udp://127.0.0.1:port", function()
    local r = v4_to("udp://[::]:0")
    assert.same({ n = 2, "v4 datagram", r[2] }, r[1])
  end)

  it("udp://[::] with ipv6only does not", function()
    local r = v4_to("udp://[::]:0", { ipv6only = true })
    assert.same({ n = 2, nil, "timeout" }, r[1])
  end)
end)
