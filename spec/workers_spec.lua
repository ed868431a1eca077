-- End-to-end specs for `sockhost -w N`: worker processes sharing listeners.
local H = require "helpers"

-- Ask the server who answers, n times; returns a set of "W:P" strings.
local function who(port, n)
  local seen, count = {}, 0
  for _ = 1, n do
    local c = H.tcp("127.0.0.1", port, 2)
    local line = c:receive("*l")
    c:close()
    local w, p = (line or ""):match("^worker (%d+) pid (%d+)$")
    if w then
      local k = w .. ":" .. p
      if not seen[k] then seen[k] = true count = count + 1 end
    end
  end
  return seen, count
end

local function pids_of(seen, worker)
  local t = {}
  for k in pairs(seen) do
    local w, p = k:match("(%d+):(%d+)")
    if w == tostring(worker) then t[#t + 1] = tonumber(p) end
  end
  return t
end

-- The processes whose parent is ppid, from /proc (zombies included).
local function children(ppid)
  local kids = {}
  local p = io.popen("ls /proc")
  for name in p:lines() do
    local pid = tonumber(name)
    local stat = pid and H.readfile("/proc/" .. pid .. "/stat")
    local _, parent = (stat or ""):match(".*%) (%S+) (%d+)")
    if tonumber(parent) == ppid then kids[#kids + 1] = pid end
  end
  p:close()
  return kids
end

-- Whether pid runs: not gone, and not a zombie left for its parent to reap.
local function alive(pid)
  local stat = H.readfile("/proc/" .. pid .. "/stat")
  return stat ~= nil and stat:match(".*%) (%S+)") ~= "Z"
end

local function running(pids)
  local t = {}
  for _, pid in ipairs(pids) do if alive(pid) then t[#t + 1] = pid end end
  return t
end

-- Whether something accepts connections on 127.0.0.1:port.
local function listening(port)
  local c = H.socket.tcp()
  c:settimeout(1)
  local ok = c:connect("127.0.0.1", port)
  c:close()
  return ok ~= nil
end

-- The master's restart lines in a log: { worker = W, pid = P, t = seconds of
-- the day }, in order.
local function restarts(log)
  local t = {}
  for h, m, s, w, p in log:gmatch("T(%d+):(%d+):([%d.]+)Z WARN  worker (%d+) %(pid (%d+)%) [^\n]*: restarting") do
    t[#t + 1] = { worker = tonumber(w), pid = tonumber(p), t = h * 3600 + m * 60 + tonumber(s) }
  end
  return t
end

-- Tell the valgrind check that the fixture's workers ended themselves with
-- os.exit (their "exiting" lines name them).
local function expect_exits(out)
  for pid in out:gmatch("pid (%d+) exiting") do H.valgrind_expect(tonumber(pid), "abrupt") end
end

local CRASHER = "spec/fixtures/crasher.lua tcp://127.0.0.1:"

describe("sockhost -w N", function()
  it("runs N workers that share one port, restarts one that dies, and stops on SIGTERM", function()
    local port = H.free_port()
    local proc = H.start("-w 2 spec/fixtures/whoami.lua tcp://127.0.0.1:" .. port)
    finally(function() proc:stop() end)
    local deadline = H.socket.gettime() + 5
    repeat H.socket.sleep(0.05) until select(2, proc:stdout():gsub("ready", "")) >= 2
      or H.socket.gettime() > deadline
    -- both workers answer on the same port (the kernel spreads connections)
    local seen, n = {}, 0
    for _ = 1, 20 do
      local s = who(port, 20)
      for k in pairs(s) do if not seen[k] then seen[k] = true n = n + 1 end end
      if n >= 2 then break end
    end
    assert.equals(2, n)
    -- said once at start: the workers do not share the script's state
    local _, warned = proc:stderr():gsub("WARN  %-w 2: each worker runs its own copy of the script", "")
    assert.equals(1, warned, proc:stderr())
    local old = pids_of(seen, 1)[1]
    assert.is_number(old)
    -- kill worker 1: the master starts a new one
    os.execute("kill -KILL " .. old)
    H.valgrind_expect(old, "killed")
    local new
    deadline = H.socket.gettime() + 10
    repeat
      H.socket.sleep(0.2)
      for _, p in ipairs(pids_of((who(port, 10)), 1)) do
        if p ~= old then new = p end
      end
    until new or H.socket.gettime() > deadline
    assert.is_number(new, "no new worker 1")
    assert.matches("worker 1 %(pid " .. old .. "%) killed by signal 9: restarting", proc:stderr())
    -- SIGTERM to the master stops everything, exit 0
    proc:signal("TERM")
    assert.equals(0, proc:wait(10))
    local _, rc = H.sh_cmd("kill -0 " .. new .. " 2>/dev/null")
    assert.is_not.equals(0, rc)
  end)

  it("takes its workers with it when the master is killed: none left within 1 s, the port free", function()
    local port = H.free_port()
    local proc = H.start("-w 2 spec/fixtures/whoami.lua tcp://127.0.0.1:" .. port)
    local kids = {}
    finally(function()
      for _, pid in ipairs(running(kids)) do os.execute("kill -KILL " .. pid) end
      proc:stop()
    end)
    proc:wait_output("ready.*ready", H.VALGRIND and 60 or 5)
    kids = children(proc.pid)
    assert.equals(2, #kids)
    os.execute("kill -KILL " .. proc.pid)
    local t0 = H.socket.gettime()
    H.valgrind_expect(proc.pid, "killed")
    for _, pid in ipairs(kids) do H.valgrind_expect(pid, "killed") end
    while #running(kids) > 0 and H.socket.gettime() < t0 + 5 do H.socket.sleep(0.01) end
    local took = H.socket.gettime() - t0
    assert.same({}, running(kids))
    assert.is_true(took < 1, ("workers lived %.2f s after the master"):format(took))
    assert.is_false(listening(port))
  end)

  it("refuses a script that does not compile once, before forking: exit 1 at once", function()
    local bad = H.writefile(H.tmpname(".lua"), "local x = = 1\n")
    local t0 = H.socket.gettime()
    local _, err, rc = H.exec("-w 4 " .. H.q(bad), { timeout = 10 })
    assert.equals(1, rc, err)
    assert.is_true(H.socket.gettime() - t0 < (H.VALGRIND and 20 or 3))
    local _, n = err:gsub("unexpected symbol near '='", "")
    assert.equals(1, n, err)
    assert.is_nil(err:find("master", 1, true), err)   -- no master, no worker forked
  end)

  it("stops the whole service, exit 1, when a worker fails before it serves", function()
    local port = H.free_port()
    local fail2 = H.q("if sockhost.worker == 2 then error('no config for worker 2') end")
    local proc = H.start("-w 2 -e " .. fail2 .. " spec/fixtures/whoami.lua tcp://127.0.0.1:" .. port)
    finally(function() proc:stop() end)
    assert.equals(1, proc:wait(H.VALGRIND and 60 or 5), proc:stderr())
    local err = proc:stderr()
    assert.matches("no config for worker 2", err)
    assert.matches("worker 2 %(pid %d+%) failed to start %(exited with status 1%): stopping", err)
    assert.is_nil(err:find("restarting", 1, true), err)
    assert.is_false(listening(port))
  end)

  it("backs off exponentially restarting a worker that keeps failing after it started; SIGTERM then exits 1", function()
    local port = H.free_port()
    local proc = H.start("-w 2 " .. CRASHER .. port .. " 0.05 1")   -- worker 1 fails
    finally(function() proc:stop() end)
    local deadline = H.socket.gettime() + (H.VALGRIND and 40 or 5)
    local gaps
    repeat
      H.socket.sleep(0.1)
      local last
      gaps = {}
      for _, r in ipairs(restarts(proc:stderr())) do
        if r.worker == 1 then
          if last then gaps[#gaps + 1] = (r.t - last) % 86400 end   -- across midnight too
          last = r.t
        end
      end
    until #gaps >= 4 or H.socket.gettime() > deadline
    assert.is_true(#gaps >= 4, "worker 1 restarted " .. #gaps + 1 .. " times:\n" .. proc:stderr())
    -- each pause doubles (0.1, 0.2, 0.4, 0.8 s, after a life of about 0.06 s)
    local shown = ("gaps %.2f %.2f %.2f %.2f"):format(table.unpack(gaps))
    assert.is_true(gaps[1] < 0.6, shown)
    assert.is_true(gaps[4] > 2.5 * gaps[1] and gaps[4] > 0.75, shown)
    assert.matches("worker 1 %(pid %d+%) exited with status 3: restarting in [%d.]+ s", proc:stderr())
    proc:signal("TERM")
    assert.equals(1, proc:wait(10), proc:stderr())
    assert.matches("workers were failing", proc:stderr())
    expect_exits(proc:stdout())
  end)

  it("never forks more than 4 workers a second, however many keep failing", function()
    local port = H.free_port()
    local n = H.VALGRIND and 4 or 16
    local proc = H.start(("-w %d %s%d 0.05"):format(n, CRASHER, port))
    finally(function() proc:stop() end)
    local t0 = H.socket.gettime()
    H.socket.sleep(H.VALGRIND and 10 or 3)
    local elapsed = H.socket.gettime() - t0
    proc:signal("TERM")
    proc:wait(H.VALGRIND and 30 or 10)
    local pids = {}
    for pid in proc:stdout():gmatch("pid (%d+) up") do pids[pid] = true end
    local forks = -n
    for _ in pairs(pids) do forks = forks + 1 end
    -- the first n are the start; the rest are restarts, at most one per 0.25 s
    assert.is_true(forks <= 4 * elapsed + 1, ("%d restarts in %.1f s"):format(forks, elapsed))
    assert.is_true(forks >= 1, proc:stderr())
    expect_exits(proc:stdout())
  end)

  it("rejects a bad worker count", function()
    local _, err, rc = H.exec("-w 0 -e ''")
    assert.equals(1, rc)
    assert.matches("number from 1 to 256", err)
  end)
end)
