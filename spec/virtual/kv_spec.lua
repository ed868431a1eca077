-- scripts/kv.lua, tested with sockhost.test: in-process, scripted peers,
-- virtual time (the expiries and the 0.1 s sweeper follow the spec's clock).
-- Runs over the in-memory transport by default, and over real loopback
-- sockets with SOCKHOST_TEST_TRANSPORT=loopback.
require "sockhost"
local T = require "sockhost.test"
local resp = require "sockhost.resp"

local ADDR = "tcp://127.0.0.1:6380"              -- the script's default address

-- A command as a client library sends it: a RESP array of bulk strings.
local function cmd(...) return resp.encode({ ... }) end

local OK, NIL = "+OK\r\n", "$-1\r\n"
local function int(n) return ":" .. n .. "\r\n" end
local function bulk(s) return "$" .. #s .. "\r\n" .. s .. "\r\n" end

describe("kv.lua (virtual time)", function()
  local t
  -- as `sockhost --idle-timeout 8 --line-timeout 3 scripts/kv.lua`: short
  -- host limits, to see them act on slow and broken clients
  local function start(opts)
    t = T.new(opts or { idle_timeout = 8, line_timeout = 3 })
    t:script("scripts/kv.lua")
  end
  after_each(function() t:close() end)

  local function client(name) return t:connect(ADDR, name) end

  -- Send a command (RESP) and expect exactly 'reply'.
  local function call(p, reply, ...)
    p:send(cmd(...))
    p:expect(reply)
  end

  describe("commands", function()
    -- a longer line limit here: over loopback TCP the peer's last small
    -- piece may wait in the kernel (Nagle) for tens of real milliseconds,
    -- which the virtual clock, moving on the 0.1 s sweeper meanwhile,
    -- can turn into seconds
    before_each(function() start { idle_timeout = 8, line_timeout = 30 } end)

    it("prints where it listens", function()
      assert.equal(1, #t.output)
      assert.truthy(t.output[1]:match("^kv: listening on "), t.output[1])
    end)

    it("answers inline commands, as typed into nc", function()
      local p = client("nc")
      p:send("PING\r\n")
      p:expect("+PONG\r\n")
      p:send("set greeting 'hello world'\n")          -- LF alone, quoted word
      p:expect(OK)
      p:send('GET greeting\r\nget "nope"\r\n')
      p:expect(bulk("hello world") .. NIL)
      p:send("\r\n\r\nEXISTS greeting nope\r\n")     -- empty lines are skipped
      p:expect(int(1))
      p:send("foo bar\r\n")
      p:expect("-ERR unknown command 'foo', with args beginning with: 'bar' \r\n")
      p:send("QUIT\r\n")
      p:expect(OK)
      p:expect_close()
    end)

    it("answers RESP arrays, binary-safe", function()
      local p = client("lib")
      call(p, OK, "SET", "k\r\n\0", "v\0\255\r\n")
      call(p, bulk("v\0\255\r\n"), "GET", "k\r\n\0")
      call(p, int(7), "INCRBY", "n", "7")
      call(p, "*3\r\n" .. bulk("7") .. NIL .. bulk("v\0\255\r\n"), "MGET", "n", "nope", "k\r\n\0")
      call(p, int(2), "DBSIZE")
      call(p, "-ERR wrong number of arguments for 'get' command\r\n", "GET")
      call(p, "-ERR value is not an integer or out of range\r\n", "SET", "k", "v", "EX", "soon")
      -- a reply of what the decoder understands
      p:send(cmd("ECHO", "round trip"))
      local r = p:expect_bytes(#bulk("round trip"))
      assert.equal("round trip", resp.decode(r))
    end)

    it("answers a pipelined batch sent one byte at a time, in order", function()
      local p = client("slow")
      local batch = cmd("SET", "a", "41") .. "INCR a\r\n" .. "GET a\r\n" .. cmd("DEL", "a")
      local want = OK .. int(42) .. bulk("42") .. int(1)
      p:send(batch, { split = 1 })
      p:expect(want)
      -- and in random pieces, with more of them
      p:send(batch:rep(4), { split = "random" })
      p:expect(want:rep(4))
    end)

    it("gathers a pipelined batch's replies into one write", function()
      local p = client("batch")
      local batch, want = {}, {}
      for i = 1, 100 do
        batch[#batch + 1] = cmd("SET", "k" .. i, ("v"):rep(i))
        want[#want + 1] = OK
      end
      batch[#batch + 1] = cmd("DBSIZE"); want[#want + 1] = int(100)
      p:send(table.concat(batch))
      p:expect(table.concat(want))
      assert.equal(1, #p.arrivals)          -- the peer's record: all of it came in one read
    end)
  end)

  describe("KEYS and SCAN", function()
    before_each(function() start { idle_timeout = 8, line_timeout = 30 } end)

    local function arr(list)
      local out = { "*" .. #list .. "\r\n" }
      for _, v in ipairs(list) do out[#out + 1] = v:sub(1, 1) == "*" and v or bulk(v) end
      return table.concat(out)
    end

    it("SCAN's cursor counts the places left: newest keys first, COUNT at a time, 0 at the end", function()
      local p = client("p")
      p:send(cmd("MSET", "a", "1", "b", "2", "c", "3", "d", "4", "e", "5"))
      p:expect(OK)
      call(p, arr { "3", arr { "e", "d" } }, "SCAN", "0", "COUNT", "2")
      call(p, arr { "1", arr { "c", "b" } }, "SCAN", "3", "COUNT", "2")
      call(p, arr { "0", arr { "a" } }, "SCAN", "1", "COUNT", "2")
      call(p, arr { "0", arr { "e", "d", "c", "b", "a" } }, "SCAN", "0")      -- COUNT 10
      call(p, arr { "2", arr { "d" } }, "SCAN", "0", "MATCH", "[bd]", "COUNT", "3")
      call(p, arr { "0", arr { "b" } }, "SCAN", "2", "MATCH", "[bd]", "COUNT", "3")
      call(p, arr { "0", arr {} }, "SCAN", "0", "TYPE", "list")
      call(p, arr { "0", arr { "a" } }, "SCAN", "99", "MATCH", "a", "TYPE", "STRING")   -- past the end: from the end
      call(p, int(1), "DEL", "b")                     -- e (the last) moves to b's place
      call(p, arr { "0", arr { "d", "c", "e", "a" } }, "SCAN", "0")
      call(p, arr { "d", "c", "e", "a" }, "KEYS", "[a-e]")          -- the same walk
      call(p, "-ERR invalid cursor\r\n", "SCAN", "1x")
    end)

    it("SCAN returns every key that stays while others are deleted and added between calls", function()
      local p = client("p")
      local batch, stays = {}, {}
      for i = 1, 300 do
        batch[i] = cmd("SET", "k" .. i, "v")
        stays["k" .. i] = true
      end
      p:send(table.concat(batch))
      p:expect(OK:rep(300))
      local ever = {}
      for k in pairs(stays) do ever[k] = true end
      local seen, cursor, calls, j = {}, "0", 0, 0
      repeat
        calls = calls + 1
        p:send(cmd("SCAN", cursor, "COUNT", "7"))
        local reply, after = resp.decode((p:received()))
        assert.is_table(reply)
        p:expect_bytes(after - 1)
        cursor = reply[1]
        for _, k in ipairs(reply[2]) do
          assert.is_true(ever[k], k)
          seen[k] = true
        end
        for _ = 1, 3 do                              -- delete 3, some seen and some not; add 2
          j = j + 1
          local victim = "k" .. (j * 37 % 300 + 1)
          stays[victim] = nil
          p:send(cmd("DEL", victim))
          p:expect_bytes(4)
        end
        for n = 1, 2 do
          local k = "new" .. calls .. "_" .. n
          ever[k] = true
          call(p, OK, "SET", k, "v")
        end
      until cursor == "0" or calls > 300
      assert.equal("0", cursor)
      for k in pairs(stays) do assert.is_true(seen[k], k) end
    end)
  end)

  describe("expiry on the virtual clock", function()
    before_each(function() start() end)

    it("SET EX 6: there at 5 s, gone at 7 s, TTL counting down", function()
      local p = client("p")
      call(p, OK, "SET", "k", "v", "EX", "6")
      call(p, int(6), "TTL", "k")
      t:advance(3)
      call(p, int(3), "TTL", "k")
      t:advance(2)
      call(p, bulk("v"), "GET", "k")
      call(p, int(1), "TTL", "k")
      call(p, int(1000), "PTTL", "k")
      t:advance(2)
      call(p, NIL, "GET", "k")
      call(p, int(-2), "TTL", "k")
      call(p, int(0), "EXISTS", "k")
    end)

    it("SET PX 1500 expires at 1.5 s to the millisecond", function()
      local p = client("p")
      call(p, OK, "SET", "k", "v", "PX", "1500")
      t:advance(1)
      call(p, int(500), "PTTL", "k")
      t:advance(0.499)
      call(p, bulk("v"), "GET", "k")
      call(p, int(1), "PTTL", "k")
      t:advance(0.002)
      call(p, NIL, "GET", "k")
      call(p, int(-2), "PTTL", "k")
    end)

    it("EXPIRE, PERSIST and KEEPTTL move the deadline as Redis does", function()
      local p = client("p")
      call(p, OK, "SET", "k", "v")
      call(p, int(1), "EXPIRE", "k", "3")
      t:advance(2)
      call(p, int(0), "EXPIRE", "k", "1", "GT")      -- 1 s from now is not later than 1 s left
      call(p, int(1), "EXPIRE", "k", "3", "GT")      -- 3 s from now is
      t:advance(2)
      call(p, OK, "SET", "k", "w", "KEEPTTL")
      call(p, int(1), "TTL", "k")
      call(p, int(1), "PERSIST", "k")
      t:advance(3)
      call(p, bulk("w"), "GET", "k")
      call(p, int(-1), "TTL", "k")
    end)

    it("reclaims expired keys in the background, without anyone asking (DBSIZE)", function()
      local p = client("p")
      local batch = {}
      for i = 1, 50 do batch[i] = cmd("SET", "tmp" .. i, "x", "PX", tostring(100 * i)) end
      batch[#batch + 1] = cmd("SET", "keep", "forever")
      p:send(table.concat(batch))
      p:expect(OK:rep(51))
      call(p, int(51), "DBSIZE")
      t:advance(2.55)                       -- tmp1 .. tmp25 are due; the sweeper runs every 0.1 s
      call(p, int(26), "DBSIZE")
      t:advance(2.55)
      call(p, int(1), "DBSIZE")
      call(p, "*1\r\n" .. bulk("keep"), "KEYS", "*")
    end)

    it("counts a key that expired but was not swept yet in DBSIZE, until the sweep or a read", function()
      -- the sweeper runs at 0.1 s, 0.2 s, ... of the session (the script
      -- started at its first instant): a key due at 1.05 s is past its
      -- deadline at 1.08 s but still stored until the sweep at 1.1 s
      local p = client("p")
      assert.equal(0, t:now())
      call(p, OK, "SET", "k", "v", "PX", "1050")
      t:advance(1.08)
      p:send(cmd("DBSIZE") .. cmd("KEYS", "*") .. cmd("DBSIZE"))
      -- DBSIZE counts it; KEYS, which reads each key, drops it as GET would
      p:expect(int(1) .. "*0\r\n" .. int(0))
      call(p, OK, "SET", "j", "v", "PX", "1050")     -- due at 2.13 s; sweeps at 2.1 s, 2.2 s
      t:advance(1.03)
      call(p, int(1), "DBSIZE")
      t:advance(0.1)                                 -- the sweep at 2.2 s
      call(p, int(0), "DBSIZE")
    end)
  end)

  describe("slow and broken clients", function()
    before_each(function() start() end)

    it("a client that resets mid-command leaves the others alone", function()
      local a, b = client("a"), client("b")
      call(b, OK, "SET", "shared", "before")
      a:send("*3\r\n$3\r\nSET\r\n$6\r\nshared\r\n$5\r\nhal")
      a:reset()
      call(b, bulk("before"), "GET", "shared")
      call(b, int(1), "DBSIZE")
      local c = client("c")
      call(c, bulk("before"), "GET", "shared")
    end)

    it("answers a huge bulk length with the protocol error, and hangs up", function()
      local p, q = client("p"), client("q")
      p:send("*2\r\n$3\r\nGET\r\n$99999999999\r\n")
      p:expect("-ERR Protocol error: bulk too large\r\n")
      p:expect_close()
      call(q, "+PONG\r\n", "PING")
    end)

    it("answers garbage with the protocol error, and hangs up", function()
      local cases = {
        { "*abc\r\n", "invalid multibulk length" },
        { "*1\r\nGET\r\n", "expected '$', got 'G'" },
        { "*1\r\n$x\r\n", "invalid bulk length" },
        { "*1\r\n$4\r\nPINGxx", "expected CRLF after bulk" },
        { 'SET "a b\r\n', "unbalanced quotes in request" },
      }
      for i, c in ipairs(cases) do
        local p = client("garbage" .. i)
        call(p, OK, "SET", "ok", tostring(i))
        p:send(c[1])
        p:expect("-ERR Protocol error: " .. c[2] .. "\r\n")
        p:expect_close()
      end
    end)

    it("cuts a client that stops half-way through a line at the line timeout (3 s)", function()
      local p, q = client("p"), client("q")
      p:send("*2\r\n$3\r\nGET\r\n$1")              -- a header line, unfinished
      p:expect_silence(2.5)
      call(q, "+PONG\r\n", "PING")
      local ended = p:expect_close(1)
      assert.truthy(ended == "closed" or ended == "reset", ended)
    end)

    it("waits on an unfinished bulk past the line timeout: no line deadline inside a bulk", function()
      local p = client("p")
      p:send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc")   -- in a bulk: read(n), no line deadline
      p:expect_silence(4)                                 -- > the line timeout
      p:send("defghij\r\n", { split = 1, pause = 0.5 })   -- the rest, a byte each 0.5 s
      p:expect(OK)
      call(p, bulk("abcdefghij"), "GET", "k")
    end)

    it("cuts a silent client after the idle timeout (8 s), not before", function()
      local p = client("p")
      call(p, "+PONG\r\n", "PING")
      p:expect_silence(7.5)
      local ended = p:expect_close(1)
      assert.truthy(ended == "closed" or ended == "reset", ended)
    end)

    it("goes on serving one client while another never reads its replies", function()
      local mute, b = client("mute"), client("b")
      local big = ("x"):rep(60000)
      call(mute, OK, "SET", "big", big)
      mute:pause()
      -- 12 MB of replies: more than the kernel (a few MiB over loopback
      -- TCP, its buffers grown) and the 64 KiB queue hold,
      -- so kv's handler for mute waits in its write and stops reading; then
      -- mute's commands pile up until the kernel takes no more of them
      mute:send(cmd("GET", "big"):rep(200))
      local set = cmd("SET", "filler", ("y"):rep(512 * 1024))
      local stuck = false
      for _ = 1, 100 do                    -- at most 50 MB (loopback TCP buffers a few MiB)
        if not pcall(mute.send, mute, set, { within = 1 }) then stuck = true; break end
      end
      assert.is_true(stuck, "kv never stopped reading mute's commands")
      call(b, int(1), "EXISTS", "big")
      call(b, NIL, "SET", "small", "x", "GET")
      call(b, bulk("x"), "GET", "small")
      call(b, int(0), "EXISTS", "filler")   -- mute's handler waits: none of its SETs ran
      -- mute goes away without reading (reading 12 MB through a peer's
      -- buffer would cost the spec seconds): its handler's write fails,
      -- and b is still served
      mute:reset()
      call(b, "+PONG\r\n", "PING")
      local c = client("c")
      call(c, bulk("x"), "GET", "small")
    end)
  end)
end)
