-- sockhost.test itself: virtual time, pieces, half-close, the seeded order,
-- failure messages, transcripts, and the `sockhost test` command.
local H = require "helpers"
local sh = H.sh
local T = require "sockhost.test"

local FIX = "spec/fixtures/vt/"

describe("sockhost.test", function()
  local t
  after_each(function() if t then t:close(true) end t = nil end)

  it("runs an hour of sleep in virtual time, and the clock is real again after close", function()
    t = T.new { idle_timeout = 0 }     -- the host's default cuts at 300 s
    t:script(FIX .. "pieces.lua")
    local p = t:connect("tcp://127.0.0.1:7101")
    p:send("0123456789")
    p:expect_line("10")
    p:send_line("hi")
    p:expect_silence(3599)
    p:expect_line("late: hi", 2)
    assert.is_true(t:now() >= 3600 and t:now() < 3601)
    t:close()
    t = nil
    local a = sh.now()
    H.run(function() sh.sleep(0.02) end)
    assert.is_true(sh.now() - a >= 0.015, "the real clock moves again")
  end)

  it("sends in one-byte and random pieces, and passes a half-close on", function()
    t = T.new { seed = 7, idle_timeout = 0 }
    t:script(FIX .. "pieces.lua")
    local p = t:connect("tcp://127.0.0.1:7101")
    p:send("0123456789", { split = 1 })
    p:expect_line("1,1,1,1,1,1,1,1,1,1")
    p:send_line("x")
    t:advance(3600)
    p:expect_line("late: x")
    p:send("tail without end", { split = "random" })
    p:shutdown()
    p:expect_line("rest: tail without end")
    p:expect_close()
  end)

  it("orders tasks by the seed: the same seed gives the same order, others differ", function()
    local function order(seed)
      t = T.new { seed = seed }
      t:script(FIX .. "order.lua")
      local p = t:connect("tcp://127.0.0.1:7100")
      local got = {}
      for i = 1, 5 do got[i] = p:expect_match("^(%d)$") end
      p:expect_line("done")
      t:close()
      t = nil
      return table.concat(got)
    end
    local first = order(42)
    for _ = 1, 5 do assert.equal(first, order(42)) end
    local seen = { [first] = true }
    for seed = 1, 20 do seen[order(seed)] = true end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.is_true(n > 3, "20 seeds gave only " .. n .. " orders")
  end)

  it("says what was expected, what arrived, when, and the seed", function()
    t = T.new { seed = 1234 }
    t:script(FIX .. "pieces.lua")
    local p = t:connect("tcp://127.0.0.1:7101", "alice")
    p:send("0123456789")
    local ok, err = pcall(p.expect_line, p, "11")
    assert.is_false(ok)
    assert.matches('peer alice expected the line "11" within 5 s', err, 1, true)
    assert.matches('arrived: "10\\n"', err, 1, true)
    assert.matches("at t = 0.000 s", err, 1, true)   -- a wrong line fails at once
    assert.matches("SOCKHOST_TEST_SEED=1234", err, 1, true)
    assert.matches("harness_spec.lua:%d+:", err)   -- the spec's line, not the harness's
    -- nothing comes: the deadline passes in virtual time
    local q = t:connect("tcp://127.0.0.1:7101", "bob")
    ok, err = pcall(q.expect_line, q, "hello", 30)
    assert.is_false(ok)
    assert.matches("peer bob expected the line \"hello\" within 30 s\n  arrived: nothing\n  at t = 30.000 s", err, 1, true)
  end)

  it("reports a script's errors with the failure, and from close", function()
    t = T.new()
    t:script(FIX .. "fails.lua")
    local p = t:connect("tcp://127.0.0.1:7102")
    p:send_line("boom")
    p:expect_close()
    assert.equal(1, #t.errors)
    assert.matches("handler exploded", t.errors[1])
    local ok, err = pcall(t.close, t)
    t = nil
    assert.is_false(ok)
    assert.matches("the script failed: .*handler exploded", err)
  end)

  it("keeps and logs a script's failure with its own traceback, once, not the harness's", function()
    t = T.new()
    t:script(FIX .. "fails.lua")
    local p = t:connect("tcp://127.0.0.1:7102")
    p:send_line("boom")
    p:expect_close()
    assert.equal(1, #t.errors)
    local e = t.errors[1]
    assert.matches("handler exploded\nstack traceback:\n\t[C]: in function 'error'\n"
                   .. "\tspec/fixtures/vt/fails.lua:4: in function <spec/fixtures/vt/fails.lua:2>", e, 1, true)
    assert.is_nil(e:find("sockhost/test.lua", 1, true), e)
    t:close(true)
    t = nil
    -- the host's log line, from a `sockhost test` run
    local dir = H.tmpname("")
    os.execute("mkdir -p " .. dir)
    H.writefile(dir .. "/fails_spec.lua", [[
      local T = require "sockhost.test"
      describe("fails", function()
        it("twice", function()
          local t = T.new()
          t:script("spec/fixtures/vt/fails.lua")
          for _ = 1, 2 do
            local p = t:connect("tcp://127.0.0.1:7102")
            p:send_line("boom")
            p:expect_close()
          end
          t:close(true)
        end)
      end)
    ]])
    local out, err = H.exec("test " .. dir)
    os.execute("rm -rf " .. dir)
    local _, logged = err:gsub("ERROR conn #%d+ [^\n]* failed: [^\n]*handler exploded\n\tstack traceback:\n"
                                 .. "\t%[C%]: in function 'error'\n\tspec/fixtures/vt/fails.lua:4: in function "
                                 .. "<spec/fixtures/vt/fails.lua:2>\n", "")
    assert.equals(2, logged, out .. err)
    assert.is_nil(err:find("sockhost/test.lua", 1, true), err)
  end)

  it("keeps only the failures of tasks made during the session", function()
    sh.spawn(function() sh.sleep(1) error("not the session's") end)
    t = T.new()
    t:listen("tcp://127.0.0.1:7105", function(c) c:read("l") error("the session's") end)
    local p = t:connect("tcp://127.0.0.1:7105")
    p:send_line("x")
    p:expect_close()
    t:advance(2)
    assert.equal(1, #t.errors)
    assert.matches("the session's", t.errors[1])
  end)

  it("names what listens when a peer asks for another address", function()
    t = T.new()
    t:script(FIX .. "pieces.lua")
    local ok, err = pcall(t.connect, t, "tcp://127.0.0.1:9")
    assert.is_false(ok)
    assert.matches("nothing listens on tcp://127.0.0.1:9 %(the script listened on: tcp:7101%)", err)
  end)

  it("replays a saved session, and a changed transcript fails", function()
    t = T.new()
    t:script("scripts/chat.lua")
    local a = t:connect("tcp://127.0.0.1:7010")
    a:expect_line()
    a:send_line("/nick ann")
    a:expect_line("* guest1 is now ann")
    t:advance(2)
    a:send_line("/who")
    a:expect_line("* here: ann")
    a:send_line("/quit")
    a:expect_line("* bye")
    a:expect_close()
    local path = H.tmpname(".txt")
    a:save(path)
    t:close()

    t = T.new()
    t:script("scripts/chat.lua")
    local r = t:replay(path, "tcp://127.0.0.1:7010")
    assert.is_true(t:now() >= 2)
    assert.equal("closed", select(2, r:received()))
    t:close()

    H.writefile(path, H.readfile(path):gsub("here: ann", "here: bob"))
    t = T.new()
    t:script("scripts/chat.lua")
    local ok, err = pcall(t.replay, t, path, "tcp://127.0.0.1:7010")
    assert.is_false(ok)
    assert.matches('expected the bytes "* here: bob\\n"', err, 1, true)
    assert.matches('arrived: "* here: ann\\n"', err, 1, true)
    os.remove(path)
  end)

  it("replays a session recorded from real clients by scripts/record.lua", function()
    local port, rport = H.free_port(), H.free_port()
    local prefix = H.tmpname("")
    local echo = H.start("scripts/echo.lua tcp://127.0.0.1:" .. port)
    local rec = H.start(("scripts/record.lua tcp://127.0.0.1:%d tcp://127.0.0.1:%d %s"):format(rport, port, prefix))
    local c = H.tcp("127.0.0.1", rport, 5)
    assert(c:send("hello\n"))
    assert.equal("hello", c:receive("*l"))
    assert(c:send("world\n"))
    assert.equal("world", c:receive("*l"))
    c:shutdown("send")
    assert.is_nil(c:receive("*l"))
    c:close()
    local path = prefix .. "-1.txt"
    for _ = 1, 250 do
      if (H.readfile(path) or ""):match(" end\n$") then break end
      H.socket.sleep(0.02)
    end
    rec:stop()
    echo:stop()
    local events = T.read_transcript(path)
    assert.same({ ">", "<", ">", "<", "shutdown", "end" },
                (function() local d = {} for i, e in ipairs(events) do d[i] = e[2] end return d end)())
    t = T.new()
    t:script("scripts/echo.lua")
    t:replay(path, "tcp://127.0.0.1:7000")
    os.remove(path)
  end)

  it("runs specs with `sockhost test`, with busted's options and exit status", function()
    local dir = H.tmpname("")
    os.execute("mkdir -p " .. dir)
    H.writefile(dir .. "/ok_spec.lua", [[
      local T = require "sockhost.test"
      describe("echo", function()
        it("echoes", function()
          local t = T.new()
          t:script("scripts/echo.lua")
          local p = t:connect("tcp://127.0.0.1:7000")
          p:send("abc")
          p:expect("abc")
          t:close()
        end)
        it("fails", function()
          local t = T.new { seed = 99 }
          t:script("scripts/echo.lua")
          local p = t:connect("tcp://127.0.0.1:7000")
          p:send("abc")
          local ok, err = pcall(p.expect, p, "abd")
          t:close()
          error(err, 0)
        end)
      end)
    ]])
    local out, _, rc = H.exec("test -o TAP " .. dir)
    os.execute("rm -rf " .. dir)
    assert.matches("ok 1 %- echo echoes", out)
    assert.matches("not ok 2 %- echo fails", out)
    assert.matches('expected the bytes "abd"', out, 1, true)
    assert.matches("SOCKHOST_TEST_SEED=99", out, 1, true)
    assert.is_not.equal(0, rc)
  end)

  it("ends a spec whose script never yields, or loops on sleep(0), with a failure that says why", function()
    local dir = H.tmpname("")
    os.execute("mkdir -p " .. dir)
    H.writefile(dir .. "/hang_spec.lua", [[
      local T = require "sockhost.test"
      local sh = require "sockhost"
      describe("hangs", function()
        local t
        after_each(function() if t then t:close(true) end end)
        it("spins", function()
          t = T.new()
          t:listen("tcp://127.0.0.1:7001", function(c) c:read("l") while true do end end)
          local p = t:connect("tcp://127.0.0.1:7001")
          p:send_line("go")
          p:expect_line("never")
        end)
        it("sleeps 0 for ever", function()
          t = T.new()
          t:listen("tcp://127.0.0.1:7002", function(c) c:read("l") while true do sh.sleep(0) end end)
          local p = t:connect("tcp://127.0.0.1:7002")
          p:send_line("go")
          p:expect_line("never")
        end)
      end)
    ]])
    local t0 = H.socket.gettime()
    local out, err, rc = H.exec("test -o TAP " .. dir, { timeout = 90 })
    local took = H.socket.gettime() - t0
    os.execute("rm -rf " .. dir)
    assert.is_true(rc == 1, ("exit status %s after %.1f s\n%s%s"):format(tostring(rc), took, out, err))
    assert.matches("not ok 1 %- hangs spins", out)
    assert.matches("the script failed: conn #%d+ unix:[^\n]* stopped: ran for more than 1%.?0* s without yielding", out)
    assert.matches("not ok 2 %- hangs sleeps 0 for ever", out)
    assert.matches("the loop did not settle in 200000 steps", out, 1, true)
  end)

  it("is shown in the README by a spec that runs (spec/virtual/readme_spec.lua)", function()
    local readme = H.readfile("README.md")
    local section = readme:match("\n## Testing your scripts\n(.-)\n## ")
    assert.is_truthy(section, "README has no 'Testing your scripts' section")
    local example = section:match("```lua\n(.-)```")
    assert.equal(H.readfile("spec/virtual/readme_spec.lua"), example)
  end)

  it("checks the order of arrivals across peers, and read timeouts run on the virtual clock", function()
    t = T.new()
    t:script(FIX .. "relay.lua")
    local a = t:connect("tcp://127.0.0.1:7103", "a")
    local b = t:connect("tcp://127.0.0.1:7103", "b")
    t:expect_order({ a, "first" }, { b, "second" })
    local a2 = t:connect("tcp://127.0.0.1:7103", "a2")
    local b2 = t:connect("tcp://127.0.0.1:7103", "b2")
    local ok, err = pcall(t.expect_order, t, { b2, "second" }, { a2, "first" })
    assert.is_false(ok)
    assert.matches("expected a2's line \"first\" to arrive after b2's line \"second\", but it came first",
                   tostring(err), 1, true)

    -- a's conn has a 10 s read timeout, and 2 s have passed
    a:expect_silence(7.5)
    a:expect_line("read: timeout", 1)
    assert.is_true(t:now() >= 10 and t:now() <= 11.01)
  end)

  it("fires every(0.1) ten times in advance(1), on its start's grid, from a clock at 1000 s", function()
    t = T.new()
    assert.equal(1000, sh.now())           -- where the virtual clock starts (doc/API.md)
    local at, at3 = {}, {}
    sh.every(0.1, function() at[#at + 1] = t:now() end)
    sh.every(0.3, function() at3[#at3 + 1] = t:now() end)
    t:advance(0.3)
    t:advance(0.3)                          -- the clock is at 1000.5999999999999 now,
    assert.equal(2, #at3)                   -- the second due at 1000 + 2 * 0.3 = 1000.6
    t:advance(0.4)
    assert.equal(10, #at)                   -- each deadline the last + 0.1 made it 9
    for _ = 1, 100 do t:advance(0.1) end    -- a clock stepped by 0.1 drifts as well
    assert.equal(110, #at)
    assert.equal(36, #at3)
    for k, v in ipairs(at) do
      assert.is_true(math.abs(v - k * 0.1) < 1e-9, ("firing %d at %.17g"):format(k, v))
    end
    for k, v in ipairs(at3) do
      assert.is_true(math.abs(v - k * 0.3) < 1e-9, ("every(0.3): firing %d at %.17g"):format(k, v))
    end
  end)

  it("cuts a line that takes longer than line_timeout, in virtual time", function()
    t = T.new { line_timeout = 10 }
    t:script("scripts/echo.lua")
    local p = t:connect("tcp://127.0.0.1:7000")
    p:send("a line that never ends")        -- echo.lua reads with read_some: no line to wait for
    p:expect("a line that never ends")
    t:close()
    t = T.new { line_timeout = 10, idle_timeout = 0 }
    t:script("scripts/chat.lua")
    local c = t:connect("tcp://127.0.0.1:7010")
    c:expect_line()
    c:send("half a li")
    c:expect_silence(9.5)
    c:expect_close(1)
  end)

  it("passes the chat spec 100 times in a row (`sockhost test --repeat=100`)", function()
    local out, err, rc = H.exec([[test --repeat=100 --filter="virtual time, mem" spec/virtual/chat_spec.lua]],
                                { timeout = 120 })
    assert.equal(0, rc, out .. err)
    assert.matches("run 100 of 100", out, 1, true)
    assert.matches("6 successes / 0 failures / 0 errors", out, 1, true)
    assert.is_nil(out:match("[1-9]%d* failures") or out:match("[1-9]%d* errors"))
  end)
end)
