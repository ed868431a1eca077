-- spec/helpers.lua -- shared by the specs.
--
-- In-process: `H.sh` is the sockhost module loaded into busted's own Lua
-- (./sockhost.so); `H.run(fn, timeout)` runs fn as a task and drives the loop
-- until nothing is left (bounded: default 10 s).
--
-- End to end: `H.start(args)` starts ./sockhost as a separate process with
-- its output in files; `proc:wait_output(pattern)`, `proc:stop()`, ...
-- Independent clients: LuaSocket (`H.socket`) and python3.
local H = {}

package.cpath = "./?.so;" .. package.cpath
H.sh = require "sockhost"
H.socket = require "socket"

H.ROOT = os.getenv("PWD") or "."
H.BIN = H.ROOT .. "/sockhost"
H.TMP = H.ROOT .. "/spec/tmp"
os.execute("mkdir -p " .. H.TMP)

-- The bound only catches a hung test: under the one-byte shim or valgrind
-- (H.ONEBYTE, H.VALGRIND below) the cases that move a lot need longer.
function H.run(fn, timeout)
  local slow = os.getenv("SOCKHOST_ONEBYTE") or os.getenv("SOCKHOST_VALGRIND")
  return H.sh.run(fn, { timeout = timeout or (slow and 30 or 10) })
end

-- In-process: start a server whose handler is 'handler' (sockhost.listen's
-- opts), connect a client to it, and run client(c, srv) in the main task;
-- both are closed afterwards. Returns what client returned.
function H.with_server(handler, client, opts)
  local sh = H.sh
  return H.run(function()
    local srv = assert(sh.listen("tcp://127.0.0.1:0", handler, opts))
    local c, err = sh.connect(srv:address())
    if not c then srv:close() error(err) end
    local r = table.pack(pcall(client, c, srv))
    c:close()
    srv:close()
    assert(r[1], r[2])
    return table.unpack(r, 2, r.n)
  end)
end

-- Under `make sanitize` busted's Lua runs with ASan preloaded; commands we
-- start must not inherit that (bash and python3 would report their own
-- leaks), while ./sockhost, built with ASan, checks for leaks at exit.
H.SHELL_PREFIX = os.getenv("SOCKHOST_SANITIZED")
  and "unset LD_PRELOAD; export ASAN_OPTIONS=detect_leaks=1; " or ""

-- Under `make test-onebyte` (spec/shim/onebyte.c preloaded, SOCKHOST_ONEBYTE
-- set) every socket read and write moves one byte, with a made-up EAGAIN
-- between: a transfer of many MiB would take hours. The few cases that move
-- that much take H.big(normal, onebyte) bytes (or MiB): fewer, but still past
-- every buffer and high-water mark the case is about (scale down, do not skip).
H.ONEBYTE = os.getenv("SOCKHOST_ONEBYTE") ~= nil
function H.big(normal, onebyte)
  if H.ONEBYTE then return onebyte end
  return normal
end

-- Shell-quote a string.
function H.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Under `make valgrind` SOCKHOST_VALGRIND names a directory: every ./sockhost
-- process the specs start (H.start, H.exec) runs under valgrind's memcheck
-- with its log there (vg.PID.log; forked workers get their own), which the
-- target checks afterwards for errors, definite leaks and descriptors left
-- open. H.VALGRIND is then true: time bounds may be wider, RSS bounds off.
H.VALGRIND = os.getenv("SOCKHOST_VALGRIND")
if H.VALGRIND == "" then H.VALGRIND = nil end

-- The command that runs ./sockhost, shell-ready: prefix its arguments.
function H.bin()
  if not H.VALGRIND then return H.q(H.BIN) end
  return ("valgrind --leak-check=full --errors-for-leak-kinds=definite --track-fds=yes "
    .. "--error-exitcode=99 --log-file=%s %s"):format(H.q(H.VALGRIND .. "/vg.%p.log"), H.q(H.BIN))
end

-- A spec that ends a process on purpose tells the valgrind check: "killed"
-- (SIGKILL: no summary to check) or "abrupt" (it exits at once by design,
-- its descriptors still open: errors and leaks are checked, descriptors
-- not). A no-op without valgrind.
function H.valgrind_expect(pid, how)
  if not H.VALGRIND then return end
  assert(how == "killed" or how == "abrupt", how)
  local log = ("%s/vg.%d.log"):format(H.VALGRIND, pid)
  assert(os.rename(log, ("%s/vg.%d.%s.log"):format(H.VALGRIND, pid, how)))
end

function H.readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function H.writefile(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  return path
end

-- busted reloads this module for each spec file, so a counter alone would
-- repeat names across files: add a random part, and never reuse a name.
local seq = 0
local run_id = math.random(1, 1e9)
function H.tmpname(suffix)
  local name
  repeat
    seq = seq + 1
    name = string.format("%s/%d_%d_%d%s", H.TMP, H.getpid(), run_id, seq, suffix or "")
  until not io.open(name)
  return name
end

function H.getpid()
  if not H._pid then
    local f = io.open("/proc/self/stat")
    H._pid = f and tonumber(f:read("a"):match("^(%d+)")) or 0
    if f then f:close() end
  end
  return H._pid
end

-- Whether pid runs (a zombie does not).
function H.alive(pid)
  local stat = H.readfile("/proc/" .. pid .. "/stat")
  return stat ~= nil and stat:match(".*%) (%S+)") ~= "Z"
end

-- End a process we started, by pid, and wait (bounded) until it is gone.
function H.stop_pid(pid)
  os.execute("kill -TERM " .. pid .. " 2>/dev/null")
  local deadline = H.socket.gettime() + 5
  while H.alive(pid) and H.socket.gettime() < deadline do H.socket.sleep(0.02) end
  if H.alive(pid) then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
end

-- Wait (bounded) for a started process's stderr to match 'pattern' after
-- position 'from'; returns the first two captures and where the match ended.
function H.wait_stderr(proc, pattern, from, timeout)
  local deadline = H.socket.gettime() + (timeout or 10)
  repeat
    local s, e, a, b = proc:stderr():find(pattern, from or 1)
    if s then return a, b, e end
    H.socket.sleep(0.01)
  until H.socket.gettime() > deadline
  error(("no %q in stderr:\n%s"):format(pattern, proc:stderr()))
end

-- Run a shell command; returns stdout, exit code.
function H.sh_cmd(cmd)
  local p = io.popen(H.SHELL_PREFIX .. cmd .. "; echo \"__rc=$?\"")
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return out:gsub("__rc=%d+%s*$", ""), rc
end

-- Run ./sockhost to completion with a time bound; returns stdout, stderr, rc.
function H.exec(args, opts)
  opts = opts or {}
  local out, err = H.tmpname(".out"), H.tmpname(".err")
  local input = opts.stdin and (" < " .. H.q(H.writefile(H.tmpname(".in"), opts.stdin))) or " < /dev/null"
  local _, rc = H.sh_cmd(string.format("timeout -s KILL %d %s %s > %s 2> %s%s",
    opts.timeout or 20, H.bin(), args, out, err, input))
  return H.readfile(out), H.readfile(err), rc
end

local Proc = {}
Proc.__index = Proc

-- Run a shell command in the background with its output, pid and exit code
-- in files: returns { out, err, pidf, rcf, pid } once the pid is known, with
-- the methods of a started process (wait_output, wait, stop, ...).
function H.launch(cmd, what)
  local p = { out = H.tmpname(".out"), err = H.tmpname(".err"),
              pidf = H.tmpname(".pid"), rcf = H.tmpname(".rc") }
  os.execute(string.format("%s(%s > %s 2> %s < /dev/null & echo $! > %s; wait $!; echo $? > %s) > /dev/null 2>&1 &",
    H.SHELL_PREFIX, cmd, p.out, p.err, p.pidf, p.rcf))
  local deadline = H.socket.gettime() + 5
  repeat
    p.pid = tonumber(H.readfile(p.pidf) or "")
    if not p.pid then H.socket.sleep(0.01) end
  until p.pid or H.socket.gettime() > deadline
  assert(p.pid, (what or cmd) .. " did not start")
  return setmetatable(p, Proc)
end

-- The reload specs' load client (spec/fixtures/reload_load.py) against
-- port: new short connections and 'nlong' long ones for 'seconds' (or until
-- OUT.stop is written); returns the process and OUT, its JSON report.
function H.reload_load(port, seconds, nlong)
  local out = H.tmpname(".json")
  local p = H.launch(("timeout -s KILL %d python3 -u spec/fixtures/reload_load.py %d %s %d %s")
    :format(math.ceil(seconds) + 20, port, seconds, nlong, out), "load client")
  p:wait_output("running", 10)
  return p, out
end

-- Wait for that client to end (it must exit 0) and return its report.
function H.reload_load_result(load, out)
  local rc = load:wait(30)
  assert(rc == 0, ("the load client exited with %s: %s"):format(tostring(rc), load:stderr()))
  return require("cjson").decode(H.readfile(out))
end

-- A python3 script (source text) in the background, bounded to 20 s.
function H.launch_python(src, args)
  return H.launch(("timeout -s KILL 20 python3 -u %s %s"):format(
    H.q(H.writefile(H.tmpname(".py"), src)), args or ""), "python3")
end

-- Start ./sockhost in the background: args is a shell-ready string; env, if
-- given, goes before the command (variables, or a wrapper that execs it, such
-- as 'prlimit --nofile=64:64').
function H.start(args, env)
  return setmetatable(H.launch(("%s %s %s"):format(env or "", H.bin(), args), "sockhost"), Proc)
end

function Proc:stdout() return H.readfile(self.out) or "" end
function Proc:stderr() return H.readfile(self.err) or "" end

-- Wait (bounded) until stdout matches the pattern; returns the capture.
-- Under valgrind a process takes seconds to start: the default bound is wider.
-- On failure the process is stopped, so that a failed test leaves none behind.
function Proc:wait_output(pattern, timeout)
  local deadline = H.socket.gettime() + (timeout or (H.VALGRIND and 30 or 5))
  repeat
    local m = self:stdout():match(pattern)
    if m then return m end
    if self:exited() then break end
    H.socket.sleep(0.01)
  until H.socket.gettime() > deadline
  local msg = ("no %q in output\nstdout: %s\nstderr: %s"):format(pattern, self:stdout(), self:stderr())
  self:stop()
  error(msg)
end

-- The exit code once it has exited, else nil.
function Proc:exited()
  local rc = H.readfile(self.rcf)
  return rc and tonumber(rc)
end

-- Wait (bounded) for the process to exit; returns its exit code or nil.
function Proc:wait(timeout)
  local deadline = H.socket.gettime() + (timeout or 5)
  repeat
    local rc = self:exited()
    if rc then return rc end
    H.socket.sleep(0.01)
  until H.socket.gettime() > deadline
  return nil
end

function Proc:signal(sig)
  os.execute(("kill -%s %d 2>/dev/null"):format(sig or "TERM", self.pid))
end

-- Stop the process if it still runs: TERM, then KILL. Returns the exit code.
function Proc:stop()
  if self:exited() then return self:exited() end
  self:signal("TERM")
  local rc = self:wait(H.VALGRIND and 30 or 5)   -- valgrind's leak check takes a while
  if not rc then self:signal("KILL"); rc = self:wait(5) end
  return rc
end

-- Resident memory of the process, in KiB.
function Proc:rss_kib()
  local s = H.readfile("/proc/" .. self.pid .. "/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

-- The open descriptors of the process (numbers from /proc/PID/fd, sorted),
-- and how many there are. (It may have inherited some from whoever started
-- the specs, at any number.)
function Proc:fds()
  local p = io.popen("ls /proc/" .. self.pid .. "/fd 2>/dev/null")
  local fds = {}
  for l in p:lines() do fds[#fds + 1] = tonumber(l) end
  p:close()
  table.sort(fds)
  return fds
end

function Proc:fd_count() return #self:fds() end

-- CPU time the process has used so far, user + system, in seconds.
local clk_tck
function Proc:cpu_seconds()
  local s = H.readfile("/proc/" .. self.pid .. "/stat")
  local f = {}
  for w in ((s or ""):match(".*%) (.*)$") or ""):gmatch("%S+") do f[#f + 1] = w end
  if not f[13] then return nil end
  clk_tck = clk_tck or tonumber((H.sh_cmd("getconf CLK_TCK"))) or 100
  return (tonumber(f[12]) + tonumber(f[13])) / clk_tck   -- utime, stime
end

-- A LuaSocket TCP client to host:port with a timeout; retries briefly while
-- the server comes up.
function H.tcp(host, port, timeout)
  local deadline = H.socket.gettime() + 5
  while true do
    local c = H.socket.tcp()
    c:settimeout(timeout or 5)
    local ok, err = c:connect(host, port)
    if ok then return c end
    c:close()
    if H.socket.gettime() > deadline then error("cannot connect: " .. tostring(err)) end
    H.socket.sleep(0.02)
  end
end

-- Split "tcp://127.0.0.1:4000" into host, port.
function H.hostport(addr)
  local host, port = addr:match("^%a+://%[?([^%]]+)%]?:(%d+)$")
  return host, tonumber(port)
end

-- A free TCP port on 127.0.0.1 (bound then released).
function H.free_port()
  local s = H.socket.bind("127.0.0.1", 0)
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- The module, except that every socket and listener a test makes is closed
-- after it, even when the test fails half-way: an open listener or handler
-- socket keeps the loop busy, and later H.run calls would wait on it. Pass
-- busted's after_each.
function H.tracked_sh(after_each)
  local made = {}
  local function keep(obj, ...)
    if obj then made[#made + 1] = obj end
    return obj, ...
  end
  after_each(function()
    for i = #made, 1, -1 do
      pcall(made[i].close, made[i])
      made[i] = nil
    end
  end)
  return setmetatable({
    udp = function(...) return keep(H.sh.udp(...)) end,
    listen = function(...) return keep(H.sh.listen(...)) end,
  }, { __index = H.sh })
end

return H
