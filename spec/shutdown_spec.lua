-- End-to-end specs for stopping: SIGTERM drains gracefully, a second signal
-- stops at once, scripts can hook shutdown and signals.
local H = require "helpers"

local function start(args)
  local proc = H.start(args)
  local host, port = H.hostport(proc:wait_output("listening (%S+)"))
  return proc, host, port
end

describe("graceful shutdown", function()
  it("SIGTERM with 300 requests in flight: every one gets its full reply, exit 0 within the grace", function()
    local proc, host, port = start("spec/fixtures/slow_reply.lua tcp://127.0.0.1:0 0.5")
    finally(function() proc:stop() end)
    local conns = {}
    for i = 1, 300 do
      conns[i] = H.tcp(host, port, 5)
      assert(conns[i]:send("req" .. i .. "\n"))
    end
    local idle = H.tcp(host, port, 5)          -- a keep-alive conn with nothing in flight
    H.socket.sleep(0.1)
    local t0 = H.socket.gettime()
    proc:signal("TERM")
    local got = 0
    for i, c in ipairs(conns) do
      if c:receive("*l") == "done req" .. i then got = got + 1 end
      -- after the reply the handler waits for another request: the host closes it
      local rest, _, partial = c:receive("*a")
      assert.equals("", rest or partial)       -- then the end, with nothing more
      c:close()
    end
    assert.equals(300, got)
    local data, err = idle:receive("*l")
    assert.is_nil(data)
    assert.equals("closed", err)
    assert.equals(0, proc:wait(10))
    local took = H.socket.gettime() - t0
    assert.is_true(took < 3, "took " .. took)
    assert.matches("shutdown hook ran", proc:stdout())
    -- no longer accepting
    local c = H.socket.tcp()
    c:settimeout(1)
    assert.is_nil((c:connect(host, port)))
    c:close()
  end)

  it("handlers that outlive the grace period are cut when it ends", function()
    local proc, host, port = start("--grace 0.3 spec/fixtures/slow_reply.lua tcp://127.0.0.1:0 5")
    finally(function() proc:stop() end)
    local c = H.tcp(host, port, 5)
    c:send("slow\n")
    H.socket.sleep(0.1)
    local t0 = H.socket.gettime()
    proc:signal("TERM")
    assert.equals(0, proc:wait(5))
    local took = H.socket.gettime() - t0
    assert.is_true(took >= 0.25 and took < 2, "took " .. took)
    assert.matches("grace period of 0.3 s over", proc:stderr())
    c:close()
  end)

  it("a second signal exits at once", function()
    local proc, host, port = start("spec/fixtures/slow_reply.lua tcp://127.0.0.1:0 5")
    finally(function() proc:stop() end)
    H.valgrind_expect(proc.pid, "abrupt")      -- _exit(1): its descriptors stay open
    local c = H.tcp(host, port, 5)
    c:send("slow\n")
    H.socket.sleep(0.1)
    local t0 = H.socket.gettime()
    proc:signal("TERM")
    H.socket.sleep(0.1)
    proc:signal("TERM")
    assert.equals(1, proc:wait(5))
    assert.is_true(H.socket.gettime() - t0 < 1)
    c:close()
  end)

  it("sockhost.on_signal runs a script's handler for SIGUSR1", function()
    local proc = start("spec/fixtures/slow_reply.lua tcp://127.0.0.1:0")
    finally(function() proc:stop() end)
    proc:signal("USR1")
    proc:wait_output("got USR1")
    proc:signal("USR1")
    local deadline = H.socket.gettime() + 3
    while select(2, proc:stdout():gsub("got USR1", "")) < 2 and H.socket.gettime() < deadline do
      H.socket.sleep(0.02)
    end
    assert.equals(2, select(2, proc:stdout():gsub("got USR1", "")))
    assert.is_nil(proc:exited())
    assert.equals(0, proc:stop())
  end)
end)
