-- End-to-end specs: the host keeps serving when peers or handlers misbehave.
-- Each case asserts a number (a time, a count, a size), not only survival.
local H = require "helpers"

local function start(args, flags)
  local proc = H.start((flags or "") .. " spec/fixtures/limits.lua tcp://127.0.0.1:0 " .. (args or ""))
  local host, port = H.hostport(proc:wait_output("listening (%S+)"))
  return proc, host, port
end

local function echo_ok(host, port)
  local c = H.tcp(host, port, 2)
  c:send("ping\n")
  local line = c:receive("*l")
  c:close()
  return line == "ping"
end

describe("hostile peers", function()
  it("slowloris: 200 connections trickling a line byte by byte are cut at the line deadline", function()
    local proc, host, port = start("line_timeout=0.5")
    finally(function() proc:stop() end)
    local conns = {}
    for i = 1, 200 do conns[i] = H.tcp(host, port, 2) end
    local t0 = H.socket.gettime()
    -- trickle for up to 3 s; each connection sends a byte every 100 ms
    local closed, served = 0, 0
    while H.socket.gettime() - t0 < 3 and closed < #conns do
      closed = 0
      for _, c in ipairs(conns) do
        local ok = c:send("x")
        if not ok then closed = closed + 1 end
      end
      if echo_ok(host, port) then served = served + 1 end
      H.socket.sleep(0.1)
    end
    local elapsed = H.socket.gettime() - t0
    for _, c in ipairs(conns) do c:close() end
    assert.equals(200, closed)                 -- every slow line was cut
    assert.is_true(elapsed < 2.5, "took " .. elapsed)
    assert.is_true(served >= 1)                -- a normal client was served meanwhile
    assert.matches("line not finished in time, closing", proc:stderr())
  end)

  it("idle connections are closed after the idle timeout; busy ones are not", function()
    local proc, host, port = start("idle_timeout=0.4")
    finally(function() proc:stop() end)
    local idle = H.tcp(host, port, 2)
    local busy = H.tcp(host, port, 2)
    local t0 = H.socket.gettime()
    for _ = 1, 8 do
      busy:send("still here\n")
      assert.equals("still here", busy:receive("*l"))
      H.socket.sleep(0.1)
    end
    idle:settimeout(2)
    local data, err = idle:receive("*l")
    assert.is_nil(data)
    assert.equals("closed", err)
    assert.is_true(H.socket.gettime() - t0 < 2)
    busy:close()
    assert.matches("idle too long, closing", proc:stderr())
  end)

  it("10 MiB without a newline to a line handler: cut at the line limit, memory growth under 1 MiB", function()
    local proc, host, port = start("max_line=65536")
    finally(function() proc:stop() end)
    H.socket.sleep(0.1)
    local before = proc:rss_kib()
    local c = H.tcp(host, port, 5)
    local chunk = string.rep("y", 65536)
    local sent = 0
    for _ = 1, 160 do
      local n = c:send(chunk)
      if not n then break end
      sent = sent + #chunk
    end
    c:close()
    H.socket.sleep(0.2)
    local after = proc:rss_kib()
    if not os.getenv("SOCKHOST_SANITIZED") and not H.VALGRIND then   -- ASan's and valgrind's bookkeeping grow RSS
      assert.is_true(after - before < 1024, ("RSS grew %d KiB"):format(after - before))
    end
    assert.matches("line too long", proc:stderr())
    assert.is_true(echo_ok(host, port))
  end)

  it("at max_conns new connections get the busy message and service resumes as others close", function()
    local proc, host, port = start("max_conns=3 busy_message=busy")
    finally(function() proc:stop() end)
    local held = {}
    for i = 1, 3 do
      held[i] = H.tcp(host, port, 2)
      held[i]:send("hi\n")
      assert.equals("hi", held[i]:receive("*l"))
    end
    local extra = H.tcp(host, port, 2)
    assert.equals("busy", extra:receive("*a"))
    extra:close()
    held[1]:close()
    H.socket.sleep(0.1)
    assert.is_true(echo_ok(host, port))
    for i = 2, 3 do held[i]:close() end
    assert.matches("at its limit of 3 connections", proc:stderr())
  end)

  it("a busy_message larger than the kernel takes at once still arrives whole", function()
    -- 8 MiB is more than a loopback socket takes in one send; one byte at a
    -- time (H.big) 16 KiB, which the made-up EAGAINs cut all the same
    local size = H.big(8 * 1024 * 1024, 16 * 1024)
    local msg = string.rep("0123456789abcdef", size // 16)
    local got, err
    H.run(function()
      local sh = H.sh
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function(c) c:read("l") end,
        { max_conns = 1, busy_message = msg }))
      local held = assert(sh.connect(srv:address()))
      sh.sleep(0.05)                           -- accepted: the listener is full
      local extra = assert(sh.connect(srv:address()))
      extra:settimeout(5)
      got, err = extra:read("a")
      extra:close()
      held:close()
      srv:close()
    end)
    assert.is_nil(err)
    assert.equals(#msg, #got)
    assert.is_true(got == msg)
  end)
end)

describe("misbehaving handlers", function()
  it("an infinite loop, also under pcall, is stopped after the budget; others are served", function()
    local proc, host, port = start("", "--budget 0.3")
    finally(function() proc:stop() end)
    for _, cmd in ipairs({ "loop", "ploop" }) do
      local c = H.tcp(host, port, 5)
      local t0 = H.socket.gettime()
      c:send(cmd .. "\n")
      local data, err = c:receive("*l")
      local dt = H.socket.gettime() - t0
      c:close()
      assert.is_nil(data)
      assert.equals("closed", err)
      assert.is_true(dt >= 0.25 and dt < 2, cmd .. " took " .. dt)
      assert.is_true(echo_ok(host, port))
    end
    assert.equals(2, select(2, proc:stderr():gsub("without yielding", "")))
  end)

  it("a memory bomb fails in its own task under --max-memory; the process lives on", function()
    -- (--budget 10: the bomb is CPU work too, and on a loaded machine the
    -- 1 s budget, which counts wall time once it looks, can stop it before
    -- it meets the cap; the budget has cases of its own)
    local proc, host, port = start("", "--max-memory 64 --budget 10")
    finally(function() proc:stop() end)
    local c = H.tcp(host, port, H.VALGRIND and 60 or 10)   -- memcheck makes the bomb slow
    c:send("bomb\n")
    local data, err = c:receive("*l")
    c:close()
    assert.is_nil(data)
    assert.equals("closed", err)
    assert.matches("not enough memory", proc:stderr())
    assert.is_nil(proc:exited())
    assert.is_true(echo_ok(host, port))
    assert.is_true(proc:rss_kib() < 200 * 1024)
  end)
end)
