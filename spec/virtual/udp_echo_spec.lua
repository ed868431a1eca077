-- scripts/udp_echo.lua, tested with sockhost.test: in-process, scripted
-- datagram peers, virtual time. Unix datagrams (abstract names) by default,
-- real UDP on 127.0.0.1 with SOCKHOST_TEST_TRANSPORT=loopback.
require "sockhost"
local T = require "sockhost.test"
local core = require "sockhost.test.core"

local ADDR = "udp://127.0.0.1:7001"              -- the script's default address

describe("udp_echo.lua (virtual time)", function()
  local t
  before_each(function()
    t = T.new()
    t:script("scripts/udp_echo.lua")
  end)
  after_each(function() t:close() end)

  it("prints where it listens", function()
    assert.equal(1, #t.output)
    assert.truthy(t.output[1]:match("^udp echo: listening on "), t.output[1])
  end)

  it("echoes each datagram to its sender, one for one", function()
    local d = t:udp(ADDR, "d")
    d:send("hello")
    d:expect("hello")
    d:send("one"); d:send("two"); d:send("three")
    d:expect("one"); d:expect("two"); d:expect("three")
    d:send("line\nwith\0bytes\r\n\255")
    d:expect("line\nwith\0bytes\r\n\255")
  end)

  it("keeps several peers apart when their datagrams interleave", function()
    local peers = {}
    for i = 1, 4 do peers[i] = t:udp(ADDR, "d" .. i) end
    for round = 1, 5 do
      for i = 4, 1, -1 do peers[i]:send(("from %d, round %d"):format(i, round)) end
    end
    for i = 1, 4 do
      for round = 1, 5 do
        local n, r = peers[i]:expect_match("^from (%d), round (%d)$")
        assert.equal(i, tonumber(n)); assert.equal(round, tonumber(r))
      end
      peers[i]:expect_silence(0)
    end
  end)

  it("echoes a large datagram (8 KiB) whole", function()
    local d = t:udp(ADDR, "d")
    local big = {}
    for i = 1, 8192 do big[i] = string.char((i * 7) % 256) end
    big = table.concat(big)
    d:send(big)
    d:expect(big)
    d:send(("x"):rep(8192) .. "y")
    d:expect(("x"):rep(8192) .. "y")
  end)

  -- A bare socket of sockhost.test.core, outside the session's polling:
  -- sends to the script's socket and reads nothing until asked.
  local function bare(tag)
    local real = t.addrs["udp:7001"]
    local bind = real:match("^unixgram:") and ("unixgram:@sockhost-test-%s-%d"):format(tag, t.seed) or nil
    return assert(core.datagram(real, bind))
  end

  it("echoes an empty datagram", function()
    local d = t:udp(ADDR, "d")
    d:send("")
    d:expect("")
    d:send("after")
    d:expect("after")
    d:expect_silence(1)
  end)

  it("sends nothing unasked, however long the wait", function()
    local d = t:udp(ADDR, "d")
    d:expect_silence(3600)
    d:send("still there?")
    d:expect("still there?")
    d:expect_silence(60)
  end)

  it("carries on when a sender is gone before its echo is sent", function()
    local s = bare("gone")
    assert.equal(21, s:send("nobody will read this"))
    s:close()                                 -- before the loop runs: the echo finds no one
    local d = t:udp(ADDR, "d")
    d:send("after a vanished peer")
    d:expect("after a vanished peer")
  end)
end)
