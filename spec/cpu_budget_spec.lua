-- End-to-end specs for the CPU budget and the watchdog: script code that
-- never yields cannot freeze the host, wherever it runs (spec/fixtures/
-- escapes.lua names the ways). Each case asserts a time, not only survival.
local H = require "helpers"

local function start(flags, addr)
  local proc = H.start(flags .. " spec/fixtures/escapes.lua " .. (addr or "tcp://127.0.0.1:0"))
  local host, port = H.hostport(proc:wait_output("listening (%S+)"))
  return proc, host, port
end

-- One line echoed on a new connection: the line, or nil and the error.
local function probe(host, port, timeout)
  local c = H.tcp(host, port, timeout)
  c:send("ping\n")
  local line, err = c:receive("*l")
  c:close()
  return line, err
end

-- Send 'way' on a connection of its own and leave it spinning; returns the
-- connection and when the line went.
local function trigger(host, port, way)
  local c = H.tcp(host, port, 5)
  assert(c:send(way .. "\n"))
  return c, H.socket.gettime()
end

describe("the CPU budget", function()
  local logged = {
    gsub = "stopped: ran for more than 0.3 s without yielding",
    wrap = "stopped: ran for more than 0.3 s without yielding",
    sort = "stopped: ran for more than 0.3 s without yielding",
    xpcall = "stopped: ran for more than 0.3 s without yielding",
    tostring = "failed: %(error object is a table value%)",       -- the host's own call, stopped
    close = "failed: .*fails with a pending close",               -- the __close the host runs, stopped
  }
  for _, way in ipairs { "gsub", "wrap", "sort", "xpcall", "tostring", "close" } do
    it(("stops code that catches its error in a loop (%s); a probe is served within 2 s"):format(way), function()
      local proc, host, port = start("--budget 0.3")
      finally(function() proc:stop() end)
      local c, t0 = trigger(host, port, way)
      H.socket.sleep(0.05)                       -- it spins now
      local line, err = probe(host, port, 2)
      local dt = H.socket.gettime() - t0
      assert.equals("ping", line, ("%s: the probe got %s after %.2f s\n%s"):format(way, tostring(err), dt, proc:stderr()))
      assert.is_true(dt < 2, ("%s: the probe took %.2f s"):format(way, dt))
      c:settimeout(2)
      local data, cerr = c:receive("*l")         -- its task ended: the connection is closed
      c:close()
      assert.is_nil(data)
      assert.equals("closed", cerr)
      assert.matches(logged[way], proc:stderr())
      assert.is_nil(proc:exited())
    end)
  end
end)

describe("the watchdog", function()
  it("ends a process stuck where no hook reaches (a __gc spin) with its message and traceback", function()
    local proc, host, port = start("--budget 0.3 --watchdog 1")
    finally(function() proc:stop() end)
    H.valgrind_expect(proc.pid, "abrupt")
    local c, t0 = trigger(host, port, "gc")
    local rc = proc:wait(6)
    local dt = H.socket.gettime() - t0
    c:close()
    local err = proc:stderr()
    assert.equals(1, rc, err)
    assert.is_true(dt >= 0.9 and dt < 4, ("ended after %.2f s"):format(dt))
    assert.matches("ERROR watchdog: the loop has not turned for 1 s", err, 1, true)
    -- where it spins, in the finalizer collectgarbage() ran
    assert.matches("stack traceback:\n\tspec/fixtures/escapes.lua:6: in metamethod '__gc'\n"
                   .. "\t[C]: in global 'collectgarbage'\n\tspec/fixtures/escapes.lua:22: in ", err, 1, true)
  end)

  it("lets an idle process live past its limit", function()
    local proc, host, port = start("--budget 0.1 --watchdog 1")
    finally(function() proc:stop() end)
    H.socket.sleep(2.5)
    assert.equals("ping", (probe(host, port, 2)))
    assert.is_nil(proc:exited())
    assert.is_nil(proc:stderr():match("watchdog"))
  end)

  it("under -w 2 the master restarts the worker it ended", function()
    local port = H.free_port()
    local proc = H.start("-w 2 --budget 0.3 --watchdog 1 spec/fixtures/escapes.lua tcp://127.0.0.1:" .. port)
    finally(function() proc:stop() end)
    local deadline = H.socket.gettime() + (H.VALGRIND and 30 or 5)
    repeat H.socket.sleep(0.05) until select(2, proc:stdout():gsub("listening", "")) >= 2
      or H.socket.gettime() > deadline
    local c = trigger("127.0.0.1", port, "gc")
    deadline = H.socket.gettime() + 8
    local restarted
    repeat
      H.socket.sleep(0.05)
      restarted = proc:stderr():match("worker %d %(pid (%d+)%) exited with status 1: restarting")
    until restarted or H.socket.gettime() > deadline
    c:close()
    H.valgrind_expect(tonumber(restarted), "abrupt")
    assert.is_truthy(restarted, proc:stderr())
    assert.matches("watchdog: the loop has not turned for 1 s", proc:stderr(), 1, true)
    assert.equals("ping", (probe("127.0.0.1", port, 2)))
    -- the new worker is up (a SIGTERM during the restart's pause would find
    -- a worker still failing, and the master would rightly exit 1)
    deadline = H.socket.gettime() + (H.VALGRIND and 30 or 5)
    repeat H.socket.sleep(0.05) until select(2, proc:stdout():gsub("listening", "")) >= 3
      or H.socket.gettime() > deadline
    proc:signal("TERM")
    assert.equals(0, proc:wait(10))
  end)
end)

describe("SIGTERM and SIGINT", function()
  it("end a process stuck without a budget within the grace period plus a second", function()
    for _, sig in ipairs { "TERM", "INT" } do
      local proc, host, port = start("--budget 0 --grace 0.5")
      finally(function() proc:stop() end)
      H.valgrind_expect(proc.pid, "abrupt")
      local c = trigger(host, port, "spin")
      H.socket.sleep(0.2)
      local t0 = H.socket.gettime()
      proc:signal(sig)
      local rc = proc:wait(5)
      local dt = H.socket.gettime() - t0
      c:close()
      assert.equals(1, rc, sig .. ": " .. proc:stderr())
      assert.is_true(dt >= 1.4 and dt < 3, ("%s: ended after %.2f s"):format(sig, dt))
      assert.matches("not stopped 1.5 s after signal %d+ %(grace 0.5 s %+ 1 s%): exiting", proc:stderr())
    end
  end)

  it("a second signal ends a stuck process at once", function()
    local proc, host, port = start("--budget 0")
    finally(function() proc:stop() end)
    H.valgrind_expect(proc.pid, "abrupt")
    local c = trigger(host, port, "spin")
    H.socket.sleep(0.2)
    local t0 = H.socket.gettime()
    proc:signal("TERM")
    H.socket.sleep(0.1)
    proc:signal("TERM")
    local rc = proc:wait(5)
    local dt = H.socket.gettime() - t0
    c:close()
    assert.equals(1, rc)
    assert.is_true(dt < 1, ("ended after %.2f s"):format(dt))
    assert.matches("signal 15 again: exiting now", proc:stderr(), 1, true)
  end)
end)
