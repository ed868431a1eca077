-- unix_spec.lua -- Unix-domain stream sockets: scripts/unix_echo.lua under
-- ./sockhost against python3 AF_UNIX clients; listeners in-process (file
-- mode, removal on close and at exit, stale files, refusals), abstract
-- names, conn:peercred().
local H = require "helpers"
local cjson = require "cjson"

-- The module, with every socket and listener a test makes closed after it.
local sh = H.tracked_sh(after_each)

local ECHO = H.q(H.ROOT .. "/scripts/unix_echo.lua")

-- python3 --------------------------------------------------------------

local function pyfile(src) return H.writefile(H.tmpname(".py"), src) end

-- Run python3 to completion (blocks: only for servers in another process).
local function py_run(src, args, timeout)
  return H.sh_cmd(("timeout -s KILL %d python3 %s %s 2>&1"):format(timeout or 30, H.q(pyfile(src)), args or ""))
end

-- A python3 process in the background.
local function py_start(src, args)
  local p = H.launch_python(src, args)
  function p.stdout() return H.readfile(p.out) or "" end
  function p.stderr() return H.readfile(p.err) or "" end
  function p.exited() local rc = H.readfile(p.rcf); return rc and tonumber(rc) end
  function p.stop()        -- by PID: TERM to the 'timeout' wrapper, which passes it on
    if not p.exited() then os.execute(("kill -TERM %d 2>/dev/null"):format(p.pid)) end
    local dl = H.socket.gettime() + 5
    while not p.exited() and H.socket.gettime() < dl do H.socket.sleep(0.01) end
  end
  -- Wait (bounded) for a line matching 'pattern'. In a task (our loop must
  -- keep running) pass sleep = sh.sleep.
  function p.wait_output(pattern, sleep, timeout)
    sleep = sleep or H.socket.sleep
    local dl = H.socket.gettime() + (timeout or 8)
    while true do
      local m = p.stdout():match(pattern)
      if m then return m end
      if p.exited() or H.socket.gettime() > dl then
        p.stop()
        error(("python: no %q\nstdout: %s\nstderr: %s"):format(pattern, p.stdout(), p.stderr()))
      end
      sleep(0.01)
    end
  end
  function p.join(sleep, timeout)
    sleep = sleep or H.socket.sleep
    local dl = H.socket.gettime() + (timeout or 8)
    while not p.exited() do
      if H.socket.gettime() > dl then
        p.stop()
        error("python did not finish\nstdout: " .. p.stdout() .. "\nstderr: " .. p.stderr())
      end
      sleep(0.01)
    end
    return p.exited(), p.stdout()
  end
  return p
end

local function is_socket(path) return select(2, H.sh_cmd("test -S " .. H.q(path))) == 0 end
local function exists(path) return select(2, H.sh_cmd("test -e " .. H.q(path))) == 0 end
local function mode_of(path) return (H.sh_cmd("stat -c %a " .. H.q(path))):match("%d+") end

-- A python client of unix_echo: connects (to a path, or "@name" for an
-- abstract one), reads the greeting, sends lines, reads them back. Prints
-- JSON with its own pid and uid.
local PY_UNIX_CLIENT = [[
import socket, sys, os, json
target, rounds = sys.argv[1], int(sys.argv[2])
addr = "\0" + target[1:] if target.startswith("@") else target
res = {"pid": os.getpid(), "uid": os.getuid(), "greetings": [], "echo_ok": 0}
lines = [b"hello", b"", b"x" * 5000, bytes(range(1, 10)) + bytes(range(11, 256))]
for r in range(rounds):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(5)
    s.connect(addr)
    f = s.makefile("rb")
    res["greetings"].append(f.readline().decode())
    s.sendall(b"".join(l + b"\n" for l in lines))
    back = [f.readline() for _ in lines]
    if back == [l + b"\n" for l in lines]:
        res["echo_ok"] += 1
    s.close()
print(json.dumps(res))
]]

describe("scripts/unix_echo.lua under ./sockhost, python3 AF_UNIX clients", function()
  it("greets with the client's pid and uid, echoes lines; socket file 0600, removed at SIGTERM", function()
    local path = H.tmpname(".sock")
    local p = H.start(ECHO .. " " .. H.q("unix:" .. path))
    assert.equals("unix:" .. path, p:wait_output("unix echo: listening on (%S+)"))
    assert.is_true(is_socket(path))
    assert.equals("600", mode_of(path))
    local out, rc = py_run(PY_UNIX_CLIENT, H.q(path) .. " 3")
    local still_there = is_socket(path)
    assert.equals(0, p:stop())
    assert.equals(0, rc, out)
    local res = cjson.decode(out:match("{.*}"))
    assert.equals(3, res.echo_ok)
    for _, g in ipairs(res.greetings) do
      assert.equals(("hello pid %d uid %d\n"):format(res.pid, res.uid), g)
    end
    assert.is_true(still_there)
    assert.is_false(exists(path), "socket file left after SIGTERM")
  end)

  it("serves an abstract name (unix:@name) to python's \\0name", function()
    local name = ("sockhost-spec-%d-%d"):format(H.getpid(), math.random(1e9))
    local p = H.start(ECHO .. " " .. H.q("unix:@" .. name))
    assert.equals("unix:@" .. name, p:wait_output("unix echo: listening on (%S+)"))
    local out, rc = py_run(PY_UNIX_CLIENT, H.q("@" .. name) .. " 5")
    assert.equals(0, p:stop())
    assert.equals(0, rc, out)
    local res = cjson.decode(out:match("{.*}"))
    assert.equals(5, res.echo_ok)
    assert.equals(("hello pid %d uid %d\n"):format(res.pid, res.uid), res.greetings[5])
  end)

  it("removes its socket file when the script ends by itself (sockhost.stop)", function()
    local path = H.tmpname(".sock")
    local script = H.writefile(H.tmpname(".lua"), ([[
      local sh = require "sockhost"
      local l = assert(sh.listen("unix:%s", function() end))
      print("up", l:address())
      io.stdout:flush()
      sh.sleep(0.3)
      sh.stop()
    ]]):format(path))
    local p = H.start(H.q(script))
    p:wait_output("up")
    local during = is_socket(path)
    assert.equals(0, p:wait(5))
    assert.is_true(during)
    assert.is_false(exists(path), "socket file left after a normal exit")
  end)

  it("refuses to start on a path a live process serves, and leaves it serving", function()
    local path = H.tmpname(".sock")
    local first = H.start(ECHO .. " " .. H.q("unix:" .. path))
    first:wait_output("listening on")
    local out, err, rc = H.exec(ECHO .. " " .. H.q("unix:" .. path), { timeout = 10 })
    local res_out, res_rc = py_run(PY_UNIX_CLIENT, H.q(path) .. " 1")
    assert.equals(0, first:stop())
    assert.are_not.equals(0, rc, out)
    assert.matches("address in use: a live process serves '" .. path:gsub("%p", "%%%0") .. "'", err)
    assert.equals(0, res_rc, res_out)
    assert.equals(1, cjson.decode(res_out:match("{.*}")).echo_ok)
  end)
end)

describe("unix listeners in-process", function()
  it("listen/connect on a path: address, peercred of our own process, data both ways", function()
    local path = H.tmpname(".sock")
    local r = H.run(function()
      local cred, served
      local l = assert(sh.listen("unix:" .. path, function(c)
        cred = c:peercred()
        served = c:read("l")
        c:write("re:" .. served .. "\n")
      end))
      local c = assert(sh.connect("unix:" .. path))
      assert(c:write("ping\n"))
      local back = c:read("l")
      local a = l:address()
      local ccred = c:peercred()
      c:close(); l:close()
      return { a, cred, back, ccred }
    end)
    assert.equals("unix:" .. path, r[1])
    assert.equals(H.getpid(), r[2].pid)
    assert.equals(tonumber((H.sh_cmd("id -u"))), r[2].uid)
    assert.equals(tonumber((H.sh_cmd("id -g"))), r[2].gid)
    assert.equals("re:ping", r[3])
    assert.equals(H.getpid(), r[4].pid)    -- the listener is us too
  end)

  it("sets the socket file's mode from opts.mode (0600, 0666)", function()
    local a, b = H.tmpname(".sock"), H.tmpname(".sock")
    local r = H.run(function()
      local la = assert(sh.listen("unix:" .. a, function() end, { mode = tonumber("600", 8) }))
      local lb = assert(sh.listen("unix:" .. b, function() end, { mode = tonumber("666", 8) }))
      local m = { mode_of(a), mode_of(b) }
      la:close(); lb:close()
      return m
    end)
    assert.same({ "600", "666" }, r)
  end)

  it("removes its socket file on close, but not a file that replaced it", function()
    local a, b = H.tmpname(".sock"), H.tmpname(".sock")
    local r = H.run(function()
      local la = assert(sh.listen("unix:" .. a, function() end))
      local lb = assert(sh.listen("unix:" .. b, function() end))
      local before = { is_socket(a), is_socket(b) }
      la:close()
      os.remove(b)
      H.writefile(b, "somebody else's file")
      lb:close()
      return { before, exists(a), H.readfile(b) }
    end)
    os.remove(b)
    assert.same({ true, true }, r[1])
    assert.is_false(r[2])
    assert.equals("somebody else's file", r[3])
  end)

  it("replaces a stale socket file left by a dead process", function()
    local path = H.tmpname(".sock")
    local out, rc = py_run([[
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
s.close()                                  # no unlink: the file stays
]], H.q(path))
    assert.equals(0, rc, out)
    assert.is_true(is_socket(path), "python left no stale file")
    local r = H.run(function()
      local l, err = sh.listen("unix:" .. path, function(c) c:write("new server\n") end)
      if not l then return { nil, err } end
      local c = assert(sh.connect("unix:" .. path))
      local line = c:read("l")
      c:close(); l:close()
      return { true, line }
    end)
    assert.same({ true, "new server" }, r)
    assert.is_false(exists(path))
  end)

  it("refuses a regular file at the path, and leaves it untouched", function()
    local path = H.writefile(H.tmpname(".sock"), "precious data\n")
    local r = H.run(function()
      return table.pack(sh.listen("unix:" .. path, function() end))
    end)
    local content = H.readfile(path)
    os.remove(path)
    assert.same({ n = 2, nil, ("address in use: '%s' is not a socket"):format(path) }, r)
    assert.equals("precious data\n", content)
  end)

  it("refuses a path a live python process listens on; python still serves afterwards", function()
    local path = H.tmpname(".sock")
    local py = py_start([[
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:                  # (sockhost's liveness probe connects and hangs up at once)
        c.sendall(b"py-alive\n")
    except OSError:
        pass
    c.close()
]], H.q(path))
    py.wait_output("ready")
    local r = H.run(function()
      local t = table.pack(sh.listen("unix:" .. path, function() end))
      local c = assert(sh.connect("unix:" .. path))
      c:settimeout(3)
      local line = c:read("l")
      c:close()
      return { t, line }
    end)
    local alive = py.exited() == nil
    local sock = is_socket(path)
    py.stop()
    os.remove(path)
    assert.same({ n = 2, nil, ("address in use: a live process serves '%s'"):format(path) }, r[1])
    assert.equals("py-alive", r[2])
    assert.is_true(alive)
    assert.is_true(sock)
  end)

  it("abstract names: in-process client, and a python client whose pid peercred reports", function()
    local name = ("sockhost-spec-%d-%d"):format(H.getpid(), math.random(1e9))
    local r = H.run(function()
      local creds = {}
      local l = assert(sh.listen("unix:@" .. name, function(c)
        creds[#creds + 1] = c:peercred()
        c:write(c:read("l"):upper(), "\n")
      end))
      local c = assert(sh.connect("unix:@" .. name))
      c:write("in-process\n")
      local mine = c:read("l")
      c:close()
      local py = py_start([[
import socket, sys, os
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(5)
s.connect("\0" + sys.argv[1])
s.sendall(b"from python\n")
print(os.getpid(), s.makefile("rb").readline().decode().strip())
]], H.q(name))
      local rc, out = py.join(sh.sleep)
      local a = l:address()
      l:close()
      -- the name is free again once closed
      local again = assert(sh.listen("unix:@" .. name, function() end))
      again:close()
      return { a, mine, rc, out, creds }
    end)
    assert.equals("unix:@" .. name, r[1])
    assert.equals("IN-PROCESS", r[2])
    assert.equals(0, r[3], r[4])
    local pypid, reply = r[4]:match("^(%d+) (.-)\n")
    assert.equals("FROM PYTHON", reply)
    assert.equals(H.getpid(), r[5][1].pid)
    assert.equals(tonumber(pypid), r[5][2].pid)
  end)

  it("peercred on a TCP connection gives nil, err", function()
    local r = H.run(function()
      local got
      local l = assert(sh.listen("tcp://127.0.0.1:0", function(c) got = table.pack(c:peercred()) end))
      local c = assert(sh.connect(l:address()))
      sh.sleep(0.05)
      c:close(); l:close()
      return got
    end)
    assert.is_nil(r[1])
    assert.is_string(r[2])
  end)
end)

describe("Unix datagram socket files", function()
  -- A python unixgram server: binds the path, prints each datagram until
  -- "last" (or 5 s of silence).
  local PY_DGRAM_SERVER = [[
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("ready", flush=True)
s.settimeout(5)
while True:
    try:
        d = s.recv(100)
    except socket.timeout:
        print("silence", flush=True); break
    print("got", d.decode(), flush=True)
    if d == b"last":
        break
]]

  it("a live python unixgram server keeps its socket: udp and listen on its path get 'address in use'", function()
    local path = H.tmpname(".sock")
    local py = py_start(PY_DGRAM_SERVER, H.q(path))
    py.wait_output("ready")
    local r = H.run(function()
      local u = table.pack(sh.udp("unixgram:" .. path))
      local l = table.pack(sh.listen("unix:" .. path, function() end))
      local cli = assert(sh.udp())
      assert(cli:sendto("after", "unixgram:" .. path))
      assert(cli:sendto("last", "unixgram:" .. path))
      cli:close()
      local rc, out = py.join(sh.sleep)
      return { u, l, rc, out }
    end)
    os.remove(path)
    local live = ("address in use: a live process serves '%s'"):format(path)
    assert.same({ n = 2, nil, live }, r[1])
    assert.same({ n = 2, nil, live }, r[2])
    assert.equals(0, r[3])
    assert.equals("ready\ngot after\ngot last\n", r[4])
  end)

  it("a stale unixgram file (its python process gone) is replaced by udp and by listen", function()
    local a, b = H.tmpname(".sock"), H.tmpname(".sock")
    local out, rc = py_run([[
import socket, sys
for p in sys.argv[1:]:
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).bind(p)   # closed, file left
]], H.q(a) .. " " .. H.q(b))
    assert.equals(0, rc, out)
    assert.is_true(is_socket(a) and is_socket(b), "python left no stale files")
    local r = H.run(function()
      local u = assert(sh.udp("unixgram:" .. a))
      local l = assert(sh.listen("unix:" .. b, function() end))
      local got = { u:address(), l:address() }
      u:close(); l:close()
      return got
    end)
    assert.same({ "unixgram:" .. a, "unix:" .. b }, r)
    assert.is_false(exists(a) or exists(b))
  end)

  it("closing a unixgram socket removes its own file, but leaves a file that replaced it alone", function()
    local a, b = H.tmpname(".sock"), H.tmpname(".sock")
    local r = H.run(function()
      local ua = assert(sh.udp("unixgram:" .. a))
      local ub = assert(sh.udp("unixgram:" .. b, function() end))
      local before = { is_socket(a), is_socket(b) }
      ua:close()
      os.remove(b)
      H.writefile(b, "somebody else's file")
      ub:close()
      return { before, exists(a), H.readfile(b) }
    end)
    os.remove(b)
    assert.same({ true, true }, r[1])
    assert.is_false(r[2])
    assert.equals("somebody else's file", r[3])
  end)

  it("at the end of the loop too, a file that replaced the socket's is left alone", function()
    local path = H.tmpname(".sock")
    local script = H.writefile(H.tmpname(".lua"), ([[
      local sh = require "sockhost"
      assert(sh.udp("unixgram:%s", function() end))
      print("up")
      io.stdout:flush()
      sh.sleep(0.3)
      sh.stop()
    ]]):format(path))
    local p = H.start(H.q(script))
    p:wait_output("up")
    os.remove(path)
    H.writefile(path, "somebody else's file")
    local rc = p:wait(5)
    local content = H.readfile(path)
    os.remove(path)
    assert.equals(0, rc, p:stderr())
    assert.equals("somebody else's file", content)
  end)
end)

describe("Unix addresses and options checked", function()
  local function raises(pattern, f, ...)
    local t = table.pack(pcall(f, ...))
    assert.is_false(t[1], "accepted: " .. tostring(t[2]))
    assert.matches(pattern, t[2])
  end

  it("a NUL byte in an address is a bad address, never cut short", function()
    local path = H.tmpname(".sock")
    local name = ("sockhost-spec-%d-%d"):format(H.getpid(), math.random(1e9))
    local r = H.run(function()
      local out = {}
      local function try(f, ...) out[#out + 1] = table.pack(pcall(f, ...)) end
      local cli = assert(sh.udp("unixgram:@" .. name .. "-cli"))
      try(sh.listen, "unix:@" .. name .. "\0hidden", function() end)
      try(sh.listen, "unix:" .. path .. "\0evil", function() end)
      try(sh.udp, "unixgram:" .. path .. "\0evil")
      try(sh.connect, "unix:" .. path .. "\0evil")
      try(sh.listen, "tcp://127.0.0.1:0\0junk", function() end)
      try(cli.sendto, cli, "x", "unixgram:@" .. name .. "\0hidden")
      try(cli.connect, cli, "unixgram:@" .. name .. "\0hidden")
      cli:close()
      -- nothing was bound to the cut names
      local free = assert(sh.listen("unix:@" .. name, function() end))
      free:close()
      return { out, exists(path) }
    end)
    local esc = function(s) return (s:gsub("%p", "%%%0")) end
    -- listen raises; udp, connect, sendto and udp:connect return nil, err
    local returned = { [3] = true, [4] = true, [6] = true, [7] = true }
    for i, t in ipairs(r[1]) do
      if returned[i] then
        assert.is_true(t[1], ("case %d raised: %s"):format(i, tostring(t[2])))
        assert.is_nil(t[2], ("case %d accepted"):format(i))
        t[2] = t[3]
      else
        assert.is_false(t[1], ("case %d accepted: %s"):format(i, tostring(t[2])))
      end
    end
    assert.matches("bad address 'unix:@" .. esc(name) .. "\\x00hidden': NUL byte in address", r[1][1][2])
    assert.matches("bad address 'unix:" .. esc(path) .. "\\x00evil': NUL byte in address", r[1][2][2])
    assert.matches("bad address 'unixgram:" .. esc(path) .. "\\x00evil': NUL byte in address", r[1][3][2])
    assert.matches("bad address 'unix:" .. esc(path) .. "\\x00evil': NUL byte in address", r[1][4][2])
    assert.matches("bad address 'tcp://127%.0%.0%.1:0\\x00junk': NUL byte in address", r[1][5][2])
    assert.matches("NUL byte in address", r[1][6][2])
    assert.matches("NUL byte in address", r[1][7][2])
    assert.is_false(r[2])
  end)

  it("an empty abstract name is refused as unix: with no path is", function()
    raises("bad address 'unix:@': empty name", sh.listen, "unix:@", function() end)
    assert.same({ nil, "bad address 'unixgram:@': empty name" }, { sh.udp("unixgram:@") })
    raises("bad address 'unix:': empty path", sh.listen, "unix:", function() end)
  end)

  it("mode must be a whole number in range", function()
    local path = H.tmpname(".sock")
    raises("mode must be an integer", sh.listen, "unix:" .. path, function() end, { mode = 0.5 })
    raises("mode must be an integer", sh.udp, "unixgram:" .. path, { mode = 384.5 })
    raises("mode out of range", sh.listen, "unix:" .. path, function() end, { mode = -1 })
    raises("mode out of range", sh.listen, "unix:" .. path, function() end, { mode = 4096 })
    assert.is_false(exists(path))
  end)

  it("mode is refused where there is no socket file to apply it to", function()
    local name = ("sockhost-spec-%d-%d"):format(H.getpid(), math.random(1e9))
    local what = "mode applies only to a Unix socket file"
    local m = tonumber("600", 8)
    raises(what, sh.listen, "tcp://127.0.0.1:0", function() end, { mode = m })
    raises(what, sh.listen, "unix:@" .. name, function() end, { mode = m })
    raises(what, sh.udp, "udp://127.0.0.1:0", { mode = m })
    raises(what, sh.udp, "unixgram:@" .. name, { mode = m })
    raises(what, sh.udp, nil, nil, { mode = m })
    -- and where there is one, it applies (unixgram: as unix:)
    local path = H.tmpname(".sock")
    local u = assert(sh.udp("unixgram:" .. path, { mode = m }))
    local got = mode_of(path)
    u:close()
    assert.equals("600", got)
  end)
end)
