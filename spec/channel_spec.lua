-- In-process specs for coordination between tasks: sockhost.channel,
-- sockhost.event, sockhost.select, and sockhost.every's overlap option.
local H = require "helpers"
local sh = H.sh

-- Wait (bounded: 200 turns of 10 ms) until cond() holds; true if it did.
local function until_true(cond)
  for _ = 1, 200 do
    if cond() then return true end
    sh.sleep(0.01)
  end
  return cond()
end

describe("sockhost.channel", function()
  it("unbuffered: a send waits until a receiver takes the value", function()
    local log = {}
    H.run(function()
      local ch = sh.channel()
      local s = sh.spawn(function()
        log[#log + 1] = "send"
        assert.is_true(ch:send("v"))
        log[#log + 1] = "sent"
      end)
      sh.sleep(0.02)
      assert.equals("waiting", s:status())
      assert.same({ "send" }, log)
      assert.equals(0, #ch)
      assert.equals("v", ch:receive())
      s:join()
    end)
    assert.same({ "send", "sent" }, log)
  end)

  it("unbuffered: a receive waits for a sender, which goes on at once", function()
    H.run(function()
      local ch = sh.channel(0)
      local r = sh.spawn(function() return ch:receive() end)
      sh.sleep(0.01)
      assert.equals("waiting", r:status())
      assert.is_true(ch:send(false))          -- a receiver waits: no wait here
      assert.is_false(r:join())
    end)
  end)

  it("buffered: sends wait only when full; values and waiting senders keep their order", function()
    local got = {}
    H.run(function()
      local ch = sh.channel(2)
      assert.is_true(ch:send(1))
      assert.is_true(ch:send(2))
      assert.equals(2, #ch)
      local s3 = sh.spawn(function() return ch:send(3) end)
      local s4 = sh.spawn(function() return ch:send(4) end)
      sh.sleep(0.01)
      assert.equals("waiting", s3:status())
      assert.equals("waiting", s4:status())
      for i = 1, 4 do got[i] = ch:receive() end
      assert.is_true(s3:join())
      assert.is_true(s4:join())
      assert.equals(0, #ch)
    end)
    assert.same({ 1, 2, 3, 4 }, got)
  end)

  it("feeds a pool of workers in the order they wait, values of any type", function()
    local done = {}
    H.run(function()
      local jobs = sh.channel()
      local t = {}
      local workers = {}
      for w = 1, 3 do
        workers[w] = sh.spawn(function()
          while true do
            local job = jobs:receive()
            if job == nil then return end
            done[#done + 1] = w .. ":" .. job.n
            sh.sleep(0)
          end
        end)
      end
      sh.sleep(0.01)
      for n = 1, 6 do t[n] = { n = n }; assert.is_true(jobs:send(t[n])) end
      jobs:close()
      for w = 1, 3 do workers[w]:join() end
    end)
    -- the first three went to the workers in the order they waited; each job once
    assert.same({ "1:1", "2:2", "3:3" }, { done[1], done[2], done[3] })
    local jobs = {}
    for _, d in ipairs(done) do jobs[#jobs + 1] = tonumber(d:match(":(%d+)$")) end
    table.sort(jobs)
    assert.same({ 1, 2, 3, 4, 5, 6 }, jobs)
  end)

  it("close: the buffer is drained first, then nil, 'closed'; waiting senders get it too", function()
    H.run(function()
      local ch = sh.channel(1)
      assert.is_true(ch:send("a"))
      local s = sh.spawn(function() return ch:send("b") end)
      sh.sleep(0.01)
      assert.is_true(ch:close())
      assert.is_true(ch:close())               -- again: nothing more
      assert.is_true(ch:is_closed())
      assert.same({ nil, "closed" }, { s:join() })
      assert.same({ nil, "closed" }, { ch:send("c") })
      assert.equals("a", ch:receive())
      assert.same({ nil, "closed" }, { ch:receive() })
      assert.same({ nil, "closed" }, { ch:receive(0) })
      -- receivers waiting when it closes
      local ch2 = sh.channel()
      local r1 = sh.spawn(function() return ch2:receive() end)
      local r2 = sh.spawn(function() return ch2:receive(5) end)
      sh.sleep(0.01)
      do local c <close> = ch2 end               -- __close closes it
      assert.same({ nil, "closed" }, { r1:join() })
      assert.same({ nil, "closed" }, { r2:join() })
    end)
  end)

  it("timeouts: nil, 'timeout', and the waiter leaves the queue", function()
    H.run(function()
      local ch = sh.channel()
      local t0 = sh.now()
      assert.same({ nil, "timeout" }, { ch:receive(0.05) })
      assert.is_true(sh.now() - t0 >= 0.04)
      -- the receiver that timed out is gone: a later send finds nobody
      assert.same({ nil, "timeout" }, { ch:send("x", 0) })
      assert.same({ nil, "timeout" }, { ch:send("x", 0.02) })
      -- ... and the sender that timed out too: its value is not delivered
      assert.same({ nil, "timeout" }, { ch:receive(0) })
      local full = sh.channel(1)
      assert.is_true(full:send(1, 0))
      assert.same({ nil, "timeout" }, { full:send(2, 0) })
      assert.equals(1, full:receive(0))
      assert.same({ nil, "timeout" }, { full:receive(0) })
    end)
  end)

  it("works outside a task when it need not wait, and raises when it would", function()
    local ch = sh.channel(1)
    assert.is_true(ch:send("x"))
    assert.same({ nil, "timeout" }, { ch:send("y", 0) })
    assert.equals("x", ch:receive())
    assert.same({ nil, "timeout" }, { ch:receive(0) })
    local ok, err = pcall(ch.receive, ch)
    assert.is_false(ok)
    assert.matches("channel:receive%(%) would block outside a sockhost task", err)
    assert.is_true(ch:send("z"))
    ok, err = pcall(ch.send, ch, "w")
    assert.is_false(ok)
    assert.matches("channel:send%(%) would block outside a sockhost task", err)
    assert.equals("z", ch:receive())
  end)

  it("raises on bad arguments", function()
    local ch = sh.channel()
    assert.has_error(function() sh.channel(-1) end, "bad argument #1 to 'channel' (capacity must be non-negative)")
    assert.has_error(function() sh.channel(1.5) end)
    assert.has_error(function() sh.channel("x") end)
    local ok, err = pcall(ch.send, ch, nil)
    assert.is_false(ok)
    assert.matches("cannot send nil", err)
    ok, err = pcall(ch.send, ch)
    assert.is_false(ok)
    assert.matches("value expected", err)
    assert.has_error(function() ch.receive(42) end)
    assert.matches("^sockhost.channel %(open, 0/0%): ", tostring(ch))
    ch:close()
    assert.matches("^sockhost.channel %(closed, 0/0%): ", tostring(ch))
  end)
end)

describe("sockhost.event", function()
  it("set wakes every waiter and stays set until clear", function()
    H.run(function()
      local ev = sh.event()
      assert.is_false(ev:is_set())
      local w = {}
      for i = 1, 3 do w[i] = sh.spawn(function() return ev:wait() end) end
      sh.sleep(0.01)
      for i = 1, 3 do assert.equals("waiting", w[i]:status()) end
      assert.is_true(ev:set())
      for i = 1, 3 do assert.is_true(w[i]:join()) end
      assert.is_true(ev:is_set())
      assert.is_true(ev:wait())                 -- at once
      assert.is_true(ev:clear())
      assert.same({ nil, "timeout" }, { ev:wait(0.02) })
      assert.matches("^sockhost.event %(clear%): ", tostring(ev))
    end)
  end)

  it("signal wakes only the first waiter and leaves the flag down", function()
    H.run(function()
      local ev = sh.event()
      assert.is_false(ev:signal())              -- nobody waits
      local order = {}
      local a = sh.spawn(function() ev:wait() order[#order + 1] = "a" end)
      local b = sh.spawn(function() ev:wait() order[#order + 1] = "b" end)
      sh.sleep(0.01)
      assert.is_true(ev:signal())
      sh.sleep(0.01)
      assert.same({ "a" }, order)
      assert.equals("waiting", b:status())
      assert.is_false(ev:is_set())
      assert.is_true(ev:signal())
      a:join(); b:join()
      assert.same({ "a", "b" }, order)
    end)
  end)

  it("raises when a wait would block outside a task", function()
    local ev = sh.event()
    assert.same({ nil, "timeout" }, { ev:wait(0) })
    local ok, err = pcall(ev.wait, ev)
    assert.is_false(ok)
    assert.matches("event:wait%(%) would block outside a sockhost task", err)
    ev:set()
    assert.is_true(ev:wait())
  end)
end)

describe("sockhost.select", function()
  it("takes the first ready case in key order: integers, then strings", function()
    H.run(function()
      local a, b, c = sh.channel(1), sh.channel(1), sh.channel(1)
      a:send("a"); b:send("b"); c:send("c")
      assert.same({ 2, "b" }, { sh.select({ [2] = b, zz = a, aa = c }) })
      assert.same({ "aa", "c" }, { sh.select({ zz = a, aa = c }) })
      local ev = sh.event()
      ev:set()
      assert.same({ "x", "a" }, { sh.select({ x = a, y = ev }) })
      assert.same({ "y", true }, { sh.select({ x = a, y = ev }, 0) })
    end)
  end)

  it("waits for the first of several channels; the others keep their values", function()
    H.run(function()
      local a, b = sh.channel(), sh.channel(1)
      local s = sh.spawn(function() return sh.select({ a = a, b = b }) end)
      sh.sleep(0.01)
      assert.equals("waiting", s:status())
      assert.is_true(b:send("B"))             -- to the select, at once
      assert.same({ "b", "B" }, { s:join() })
      -- the select no longer waits on a: nobody receives there
      assert.same({ nil, "timeout" }, { a:send("A", 0) })
      -- nor on b: a value sent there stays in its buffer
      assert.is_true(b:send("B2"))
      assert.equals(1, #b)
      assert.equals("B2", b:receive())
    end)
  end)

  it("waits in turn with plain receivers, and the same channel twice is one wait", function()
    H.run(function()
      local ch = sh.channel()
      local r = sh.spawn(function() return ch:receive() end)
      sh.sleep(0.01)
      local s = sh.spawn(function() return sh.select({ ch, ch }) end)
      sh.sleep(0.01)
      ch:send(1)                               -- the receiver was first
      ch:send(2)
      assert.equals(1, r:join())
      assert.same({ 1, 2 }, { s:join() })
      assert.same({ nil, "timeout" }, { ch:send(3, 0) })
    end)
  end)

  it("reports a closed channel, a set event and an ended task", function()
    H.run(function()
      local ch = sh.channel()
      local s = sh.spawn(function() return sh.select({ jobs = ch }) end)
      sh.sleep(0.01)
      ch:close()
      assert.same({ "jobs", nil, "closed" }, { s:join() })
      local ev = sh.event()
      s = sh.spawn(function() return sh.select({ stop = ev, jobs = sh.channel() }) end)
      sh.sleep(0.01)
      ev:set()
      assert.same({ "stop", true }, { s:join() })
      local ok = sh.spawn(function() sh.sleep(0.02) return 1 end)
      local was = sh.log_level("off")          -- the failure is logged: not here
      local bad = sh.spawn(function() sh.sleep(0.01) error("boom") end)
      local quiet = sh.channel()
      assert.same({ "bad", "failed" }, { sh.select({ ok = ok, bad = bad, q = quiet }) })
      sh.log_level(was)
      assert.same({ "ok", "done" }, { sh.select({ ok = ok, q = quiet }) })
      assert.same({ "ok", "done" }, { sh.select({ ok = ok }, 0) })   -- already ended
      assert.equals(1, ok:join())
    end)
  end)

  it("times out with nil, 'timeout', and waits nowhere afterwards", function()
    H.run(function()
      local ch, ev = sh.channel(), sh.event()
      local waiter = sh.spawn(function() sh.sleep(0.3) end)
      local t0 = sh.now()
      assert.same({ nil, "timeout" }, { sh.select({ ch, ev, waiter }, 0.05) })
      assert.is_true(sh.now() - t0 >= 0.04)
      assert.same({ nil, "timeout" }, { ch:send(1, 0) })
      assert.is_false(ev:signal())
      assert.same({ nil, "timeout" }, { sh.select({ ch, ev }, 0) })
      -- the sleeper ends on its own: no helper is left joining it
      assert.same({ nil, "timeout" }, { sh.select({ waiter }, 0.01) })
    end)
  end)

  it("reads a conn; a read called off consumes nothing", function()
    local seen = {}
    H.run(function()
      local more, rest = sh.event(), sh.event()
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function(conn)
        local inbox = sh.channel(1)
        inbox:send("first")
        -- a read is tried by its helper, after the call: the ready channel wins
        seen[#seen + 1] = { sh.select({ conn, inbox }) }
        -- the line arrives later: the read wins
        seen[#seen + 1] = { sh.select({ line = conn, msg = inbox }) }
        -- half a line comes; three reads are called off by their timeouts
        more:set()
        for _ = 1, 3 do seen[#seen + 1] = { sh.select({ line = { conn, "l" }, msg = inbox }, 0.02) } end
        rest:set()
        seen[#seen + 1] = { sh.select({ line = { conn, "*l" }, msg = inbox }) }
        seen[#seen + 1] = { conn:read("l") }
        seen[#seen + 1] = { sh.select({ { conn, 4 } }) }
        conn:write("bye\n")
        seen[#seen + 1] = { sh.select({ { conn } }) }
      end))
      local c = assert(sh.connect(srv:address()))
      c:write("one\n")
      more:wait()
      c:write("tw")
      rest:wait()
      c:write("o\nabcdthree\nwxyz")
      assert.equals("bye", c:read())
      c:close()
      until_true(function() return #seen == 9 end)
      srv:close()
    end)
    assert.same({ 2, "first" }, seen[1])
    assert.same({ "line", "one" }, seen[2])
    for i = 3, 5 do assert.same({ nil, "timeout" }, seen[i]) end
    assert.same({ "line", "two" }, seen[6])
    assert.same({ "abcdthree" }, seen[7])
    assert.same({ 1, "wxyz" }, seen[8])
    assert.same({ 1, nil, "closed" }, seen[9])
  end)

  it("a read in a select ends with the conn's errors", function()
    local got
    H.run(function()
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function(conn)
        conn:settimeout(0.05)
        got = { sh.select({ r = conn, never = sh.channel() }) }
      end))
      local c = assert(sh.connect(srv:address()))
      c:write("partial")
      until_true(function() return got ~= nil end)
      c:close()
      srv:close()
    end)
    assert.same({ "r", nil, "timeout", "partial" }, got)
  end)

  it("raises on bad cases, and when it would wait outside a task", function()
    local ch = sh.channel()
    local function err_of(...)
      local ok, e = pcall(sh.select, ...)
      assert.is_false(ok)
      return e
    end
    assert.matches("bad argument #1 to 'sockhost.select' %(table expected", err_of(nil))
    assert.matches("%(no cases%)", err_of({}))
    assert.matches("%(case 'x': a channel, an event, a task or a conn expected%)", err_of({ x = 42 }))
    assert.matches("%(case %[2%]: a channel", err_of({ ch, "no" }))
    assert.matches("%(case %[2.5%]: keys must be integers or strings%)", err_of({ [2.5] = ch }))
    assert.matches("%(case 'r': a table case is { conn %[, format%] }", err_of({ r = { ch } }))
    assert.matches("select%(%) would block outside a sockhost task", err_of({ ch }))
    H.run(function()
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function() end))
      local c = assert(sh.connect(srv:address()))
      assert.matches("%(case 'b': another case reads the same conn%)", err_of({ a = c, b = { c, 5 } }))
      c:close()
      srv:close()
    end)
    assert.same({ nil, "timeout" }, { sh.select({ ch }, 0) })
    -- a bad case raises even when an earlier one is ready
    local full = sh.channel(1)
    full:send(1)
    assert.matches("case 'z'", err_of({ a = full, z = true }))
    assert.equals(1, #full)
    local e
    H.run(function()
      local me
      me = sh.spawn(function() sh.sleep(0.01) e = err_of({ me }) end)
      me:join()
    end)
    assert.matches("%(case %[1%]: a task cannot wait for its own end%)", e)
  end)
end)

describe("sockhost.every", function()
  it("with overlap = false skips (and counts) firings while the last one runs", function()
    local most, runs, skipped = 0, 0, nil
    H.run(function()
      local gate = sh.event()
      local running = 0
      local tm = sh.every(0.01, function()
        runs = runs + 1
        running = running + 1
        if running > most then most = running end
        gate:wait()
        running = running - 1
      end, { overlap = false })
      assert.is_true(until_true(function() return tm:skipped() >= 3 end))
      assert.equals(1, runs)
      gate:set()
      assert.is_true(until_true(function() return runs >= 2 end))
      tm:cancel()
      skipped = tm:skipped()
    end)
    assert.equals(1, most)
    assert.is_true(skipped >= 3)
  end)

  it("overlaps by default, and with overlap = true", function()
    for _, opts in ipairs({ {}, { overlap = true } }) do
      local most = 0
      H.run(function()
        local gate = sh.event()
        local running = 0
        local tm = sh.every(0.01, function()
          running = running + 1
          if running > most then most = running end
          gate:wait()
          running = running - 1
        end, opts.overlap ~= nil and opts or nil)
        assert.is_true(until_true(function() return most >= 3 end))
        tm:cancel()
        assert.equals(0, tm:skipped())
        gate:set()
      end)
      assert.is_true(most >= 3)
    end
  end)

  it("raises on unknown options and a non-boolean overlap", function()
    local f = function() end
    assert.has_error(function() sh.every(1, f, { overlapp = false }) end, "unknown option 'overlapp'")
    assert.has_error(function() sh.every(1, f, { overlap = 0 }) end, "option 'overlap' must be a boolean")
    assert.has_error(function() sh.every(1, f, 5) end)
  end)
end)

describe("waiters at exit", function()
  it("the executable stops with tasks waiting on channels, events and selects", function()
    local script = H.writefile(H.tmpname(".lua"), [[
local sh = require "sockhost"
local ch, ev, full = sh.channel(), sh.event(), sh.channel()
local srv = assert(sh.listen("tcp://127.0.0.1:0", function(conn)
  sh.select({ a = ch, b = ev, c = conn })
end))
local c = assert(sh.connect(srv:address()))
local t = sh.spawn(function() return ch:receive() end)
sh.spawn(function() return sh.select({ ch, ev, t, { c, "a" } }) end)
sh.spawn(function() ev:wait() end)
sh.spawn(function() full:send("x") end)
sh.sleep(0.05)
print("stopping")
sh.stop()
]])
    local out, err, rc = H.exec(H.q(script))
    os.remove(script)
    assert.equals("stopping\n", out)
    assert.equals("", err)
    assert.equals(0, rc)
  end)
end)
