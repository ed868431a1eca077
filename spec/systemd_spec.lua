-- End-to-end specs for running under systemd: socket activation
-- (LISTEN_FDS, with systemd-socket-activate) and the sd_notify datagrams
-- (READY=1, RELOADING=1), read from a Unix datagram socket at $NOTIFY_SOCKET
-- that the spec listens on.
local H = require "helpers"

-- A python3 listener on a new notify socket: each datagram it gets is one
-- line of the returned file (newlines as '|'). Returns its path, the file
-- and the process.
local function notify_socket()
  local path, log = H.tmpname(".notify"), H.tmpname(".log")
  local p = H.launch_python([[
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(0.2)
print("listening", flush=True)
end = time.time() + 18
with open(sys.argv[2], "a") as f:
    while time.time() < end:
        try:
            d = s.recv(4096)
        except socket.timeout:
            continue
        f.write(d.decode().replace("\n", "|") + "\n")
        f.flush()
]], H.q(path) .. " " .. H.q(log))
  p:wait_output("listening")
  return path, log, p
end

-- Wait (bounded) until the notify log has 'n' lines; returns them.
local function notes(log, n)
  local deadline = H.socket.gettime() + 10
  local lines
  repeat
    lines = {}
    for l in (H.readfile(log) or ""):gmatch("[^\n]+") do lines[#lines + 1] = l end
    if #lines >= n then return lines end
    H.socket.sleep(0.02)
  until H.socket.gettime() > deadline
  error("notify messages: " .. table.concat(lines, " / "))
end

local alive, stop_pid = H.alive, H.stop_pid      -- (spec/helpers.lua)

-- sockhost under systemd-socket-activate (which binds 'listen' and execs
-- sockhost in its own process once a client comes), with NOTIFY_SOCKET.
local function activate(listen, script, notify, flags)
  local cmd = ("systemd-socket-activate %s -l %s -E NOTIFY_SOCKET=%s %s %s"):format(
    flags or "", listen, H.q(notify), H.bin(), H.q(script))
  return H.launch(cmd, "systemd-socket-activate")
end

describe("systemd", function()
  it("socket activation: the listener takes the socket systemd bound; a client that came first is served", function()
    local port, path = H.free_port(), H.tmpname(".lua")
    H.writefile(path, ([[
sockhost.listen("tcp://127.0.0.1:%d", function(c) c:write("v1 ", sockhost.version, "\n") c:close() end)
print("serving")
]]):format(port))
    local notify, log, np = notify_socket()
    local proc = activate("127.0.0.1:" .. port, path, notify)
    finally(function() proc:stop(); np:stop() end)   -- (busted keeps one finally per test)
    local c = H.tcp("127.0.0.1", port, 5)            -- before sockhost runs: systemd's socket holds it
    assert.matches("^v1 ", c:receive("*l"))
    c:close()
    assert.not_matches("address in use", proc:stderr())
    local n = notes(log, 1)
    assert.equals("READY=1|MAINPID=" .. proc.pid, n[1])
  end)

  it("sd_notify on reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 with the new MAINPID; a failed one READY=1 again", function()
    local port, path = H.free_port(), H.tmpname(".lua")
    local src = [[
sockhost.listen("tcp://127.0.0.1:%d", function(c) c:write(%q, "\n") c:close() end)
print("serving")
%s]]
    H.writefile(path, src:format(port, "v1", ""))
    local notify, log, np = notify_socket()
    local proc = activate("127.0.0.1:" .. port, path, notify)
    local pid = proc.pid
    finally(function() stop_pid(pid); proc:stop(); np:stop() end)   -- (one finally per test)
    local c = H.tcp("127.0.0.1", port, 5)
    assert.equals("v1", c:receive("*l"))
    c:close()
    notes(log, 1)
    H.writefile(path, src:format(port, "v2", ""))
    local t0 = tonumber((H.sh_cmd("cat /proc/uptime"):match("^(%S+)")))
    proc:signal("HUP")
    local n = notes(log, 3)
    local usec = tonumber(n[2]:match("^RELOADING=1|MONOTONIC_USEC=(%d+)$"))
    assert(usec, n[2])
    assert.is_true(math.abs(usec / 1e6 - t0) < 5, "MONOTONIC_USEC " .. usec)
    pid = tonumber(n[3]:match("^READY=1|MAINPID=(%d+)$"))
    assert(pid and pid ~= proc.pid, n[3])
    c = H.tcp("127.0.0.1", port, 5)
    assert.equals("v2", c:receive("*l"))
    c:close()
    -- a version that fails to start: reloading, then ready again, v2 serves
    H.writefile(path, src:format(port, "v3", "error('no')"))
    os.execute("kill -HUP " .. pid)
    n = notes(log, 5)
    assert.matches("^RELOADING=1|MONOTONIC_USEC=%d+$", n[4])
    assert.matches("^READY=1|STATUS=reload failed", n[5])
    c = H.tcp("127.0.0.1", port, 5)
    assert.equals("v2", c:receive("*l"))
    c:close()
  end)

  it("socket activation of a datagram socket", function()
    local port, path = H.free_port(), H.tmpname(".lua")
    H.writefile(path, ([[
sockhost.udp("udp://127.0.0.1:%d", function(u, data, from) u:sendto("got " .. data, from) end)
print("serving")
]]):format(port))
    local notify, log, np = notify_socket()
    local proc = activate("127.0.0.1:" .. port, path, notify, "-d")
    finally(function() proc:stop(); np:stop() end)   -- (busted keeps one finally per test)
    local deadline = H.socket.gettime() + 5          -- bound by systemd-socket-activate
    while not proc:stderr():match("Listening on") and H.socket.gettime() < deadline do
      H.socket.sleep(0.01)
    end
    local u = H.socket.udp()
    u:setpeername("127.0.0.1", port)
    u:settimeout(5)
    u:send("first")                                  -- wakes systemd-socket-activate
    assert.equals("got first", u:receive())
    u:close()
    assert.not_matches("address in use", proc:stderr())
    assert.matches("^READY=1", notes(log, 1)[1])
  end)

  it("make install: the man page names every option --help lists and the signals; scripts; units with PREFIX's paths", function()
    local dest = H.tmpname(".inst")
    local _, rc = H.sh_cmd(("make -s install DESTDIR=%s PREFIX=/usr > /dev/null 2>&1"):format(H.q(dest)))
    assert.equals(0, rc)
    local man = assert(H.readfile(dest .. "/usr/share/man/man1/sockhost.1"))
    local help = H.exec("--help")
    local n = 0
    for opt in help:gmatch("\n  (%-[%w-]*)") do
      local esc, found = opt:gsub("%-", "\\-"), false      -- roff's "\-" for each "-"
      for _, after in ipairs({" ", ",", "\"", "\n"}) do
        found = found or man:find("\n.B " .. esc .. after, 1, true) or man:find("\n.BI " .. esc .. after, 1, true)
          or man:find("\n.BI \"" .. esc .. after, 1, true) or man:find(", " .. esc .. after, 1, true)
      end
      assert(found, opt .. " is not in the man page")
      n = n + 1
    end
    assert.is_true(n >= 18, n .. " options")
    for _, word in ipairs({"SIGHUP", "SIGTERM", "EXIT STATUS", "NOTIFY_SOCKET", "LISTEN_FDS"}) do
      assert.matches(word, man, 1, true)
    end
    assert(H.readfile(dest .. "/usr/share/sockhost/scripts/echo.lua"))
    local unit = assert(H.readfile(dest .. "/usr/lib/systemd/system/sockhost@.service"))
    assert.matches("Type=notify", unit, 1, true)
    assert.matches("ExecStart=/usr/bin/sockhost /etc/sockhost/%i.lua", unit, 1, true)
    assert.matches("ExecReload=/bin/kill -HUP $MAINPID", unit, 1, true)
    local echo = assert(H.readfile(dest .. "/usr/lib/systemd/system/sockhost-echo.service"))
    assert.matches("/usr/share/sockhost/scripts/echo.lua", echo, 1, true)
    assert(H.readfile(dest .. "/usr/lib/systemd/system/sockhost-echo.socket"))
    os.execute("rm -rf " .. H.q(dest))
  end)
end)
