-- spec/strace.lua -- run ./sockhost under strace and count the system calls
-- that send on its sockets: "one write per batch" is a count of syscalls,
-- which no peer can see (the kernel may merge segments on the way).
local H = require "helpers"

local S = {}

-- true, or false and why strace cannot count here (a spec says pending).
function S.available()
  if H.VALGRIND then return false, "not under valgrind (its own calls would be traced)" end
  if H.ONEBYTE then return false, "not under the one-byte shim (it cuts every write to a byte)" end
  local _, rc = H.sh_cmd("command -v strace > /dev/null")
  if rc ~= 0 then return false, "strace is not installed (Debian strace)" end
  _, rc = H.sh_cmd("strace -qq -o /dev/null true > /dev/null 2>&1")
  if rc ~= 0 then return false, "strace cannot trace here (ptrace not allowed)" end
  return true
end

-- The sockhost strace started, once it runs: a child of strace whose name
-- is "sockhost" (strace forks short-lived children of its own first, to
-- probe what ptrace can do; the tracee is named so only after its exec).
local function child_of(pid)
  local deadline = H.socket.gettime() + 5
  repeat
    local kids = H.readfile(("/proc/%d/task/%d/children"):format(pid, pid)) or ""
    for c in kids:gmatch("%d+") do
      if (H.readfile("/proc/" .. c .. "/comm") or ""):match("^sockhost") then return tonumber(c) end
    end
    H.socket.sleep(0.01)
  until H.socket.gettime() > deadline
  return nil
end

local function alive(pid) return H.readfile("/proc/" .. pid .. "/comm") ~= nil end

-- Start `./sockhost args` under strace. Returns the process (helpers' Proc
-- methods, with stop() ending sockhost itself: strace holds off the signals
-- sent to it, and its tracee ends it) and a function that returns the
-- socket sends so far: a list of { call, fd, result }.
function S.start(args)
  local log = H.tmpname(".strace")
  local proc = H.start(args, ("strace -f -qq -e trace=sendmsg,sendto,writev,write -o %s"):format(H.q(log)))
  proc.traced = assert(child_of(proc.pid), "strace started no sockhost")
  -- End sockhost (TERM, then KILL), then strace if it is still there.
  function proc.stop(self)
    local t = self.traced
    if alive(t) then
      os.execute(("kill -TERM %d 2>/dev/null"):format(t))
      local deadline = H.socket.gettime() + 5
      while alive(t) and H.socket.gettime() < deadline do H.socket.sleep(0.01) end
      if alive(t) then os.execute(("kill -KILL %d 2>/dev/null"):format(t)) end
    end
    local rc = self:wait(5)
    if not rc then self:signal("KILL"); rc = self:wait(5) end
    return rc
  end
  local function sends()
    local out = {}
    for line in (H.readfile(log) or ""):gmatch("[^\n]+") do
      local call, fd = line:match("^%d+%s+(%a+)%((%d+),")
      if call and (call ~= "write" or tonumber(fd) > 2) then
        out[#out + 1] = { call = call, fd = tonumber(fd), result = line:match("= (%-?%d+)") }
      end
    end
    return out
  end
  return proc, sends
end

-- How many sends there are once at least 'n' are logged (strace writes its
-- line as the call returns, which may be after the peer saw the bytes) and
-- 0.1 s more brought no other; bounded by 5 s.
function S.settle(sends, n)
  local deadline = H.socket.gettime() + 5
  local count = #sends()
  while count < n and H.socket.gettime() < deadline do
    H.socket.sleep(0.01)
    count = #sends()
  end
  H.socket.sleep(0.1)
  return #sends()
end

return S
