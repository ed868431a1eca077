-- address_spec.lua -- addresses as data and as bad input.
--
-- A malformed address given to connect, udp, udp:sendto, udp:connect or
-- resolve is bad input (it often comes from a peer): nil, "bad address
-- '<text>': <why>", never a raise; listen still raises. Then the
-- sockhost.address module: parse, format, is_ip, ip_to_bin, bin_to_ip, with
-- their round trips over many valid and invalid inputs, and the IP helpers
-- checked against python3's ipaddress module.
local H = require "helpers"
local sh = H.tracked_sh(after_each)

-- A Lua pattern that matches 's' literally.
local function lit(s) return (s:gsub("%W", "%%%0")) end

-- Run fn(...) protected in a task; its results packed, pcall's flag first.
local function call(fn, ...)
  local args = table.pack(...)
  return H.run(function() return table.pack(pcall(fn, table.unpack(args, 1, args.n))) end)
end

local function returns_bad(expected, fn, ...)
  local r = call(fn, ...)
  assert.is_true(r[1], "raised: " .. tostring(r[2]))
  assert.is_nil(r[2], "accepted")
  assert.equals(expected, r[3])
end

local function raises(pattern, fn, ...)
  local r = call(fn, ...)
  assert.is_false(r[1], "did not raise")
  assert.matches(pattern, r[2])
end

describe("a bad address is bad input: nil, err", function()
  it("sockhost.connect returns nil, 'bad address ...' for a malformed or datagram address", function()
    local cases = {
      { "tcp://127.0.0.1", "bad address 'tcp://127.0.0.1': missing port" },
      { "127.0.0.1:99999", "bad address '127.0.0.1:99999': port out of range" },
      { "tcp://[::1:80", "bad address 'tcp://[::1:80': missing ']'" },
      { "tcp://ev il:80", "bad address 'tcp://ev il:80': bad host name" },
      { "tcp://127.0.0.1:0\0junk", "bad address 'tcp://127.0.0.1:0\\x00junk': NUL byte in address" },
      { "unix:", "bad address 'unix:': empty path" },
      { "tls://:443", "bad address 'tls://:443': missing host" },
      { "http://example.com:80", "bad address 'http://example.com:80': unknown scheme" },
      { "udp://127.0.0.1:9", "bad address 'udp://127.0.0.1:9': not a stream address" },
      { "unixgram:@x", "bad address 'unixgram:@x': not a stream address" },
    }
    for _, c in ipairs(cases) do returns_bad(c[2], sh.connect, c[1]) end
    -- even outside a task: nothing is waited for
    local c, err = sh.connect("tcp://nope")
    assert.is_nil(c)
    assert.equals("bad address 'tcp://nope': missing port", err)
  end)

  it("sockhost.connect still raises for a non-string address and for bad options", function()
    raises("bad argument #1 to .*string expected, got nil", sh.connect, nil)
    raises("bad argument #1 to .*string expected, got table", sh.connect, {})
    raises("unknown option 'bogus'", sh.connect, "tcp://127.0.0.1:1", { bogus = 1 })
    raises("TLS options need a tls:// address", sh.connect, "tcp://127.0.0.1:1", { ca = "x" })
  end)

  it("sockhost.udp returns nil, 'bad address ...'", function()
    returns_bad("bad address 'udp://127.0.0.1': missing port", sh.udp, "udp://127.0.0.1")
    returns_bad("bad address 'udp://[::1%]:0': empty zone", sh.udp, "udp://[::1%]:0")
    returns_bad("bad address 'unixgram:@': empty name", sh.udp, "unixgram:@", function() end)
    returns_bad("bad address 'tcp://127.0.0.1:0': not a datagram address", sh.udp, "tcp://127.0.0.1:0")
    raises("bad argument #1 to .*string expected, got table", sh.udp, {}, function() end)
    raises("bad argument #2 to .*function expected", sh.udp, "udp://127.0.0.1", 42)
  end)

  it("udp:sendto and udp:connect return nil, 'bad address ...' and the socket carries on", function()
    local r = H.run(function()
      local rx = assert(sh.udp("udp://127.0.0.1:0"))
      local tx = assert(sh.udp("udp://127.0.0.1:0"))
      rx:settimeout(2)
      local out = {
        table.pack(pcall(tx.sendto, tx, "x", "udp://127.0.0.1:99999")),
        table.pack(pcall(tx.sendto, tx, "x", "udp://a_b..c:53")),
        table.pack(pcall(tx.sendto, tx, "x", "tcp://127.0.0.1:9")),
        table.pack(pcall(tx.sendto, tx, "x", "unixgram:@n\0hidden")),
        table.pack(pcall(tx.connect, tx, "udp://[fe80::1%no-such-if0]:53")),
        table.pack(pcall(tx.connect, tx, "unix:/tmp/x")),
        table.pack(pcall(tx.sendto, tx, "x", nil)),
      }
      assert(tx:sendto("still here", rx:address()))
      out[#out + 1] = rx:recv()
      return out
    end)
    local want = {
      "bad address 'udp://127.0.0.1:99999': port out of range",
      "bad address 'udp://a_b..c:53': bad host name",
      "bad address 'tcp://127.0.0.1:9': not a datagram address",
      "bad address 'unixgram:@n\\x00hidden': NUL byte in address",
      "bad address 'udp://[fe80::1%no-such-if0]:53': unknown zone",
      "bad address 'unix:/tmp/x': not a datagram address",
    }
    for i, w in ipairs(want) do
      assert.is_true(r[i][1], "raised: " .. tostring(r[i][2]))
      assert.same({ n = 3, true, nil, w }, r[i])
    end
    assert.is_false(r[7][1])
    assert.matches("bad argument #3 to .*string expected, got nil", r[7][2])
    assert.equals("still here", r[8])
  end)

  it("sockhost.resolve returns nil, 'bad address ...' for a name that cannot be one", function()
    local cases = {
      { "", "bad address '': empty name" },
      { "here.spec.test\0evil.test", "bad address 'here.spec.test\\x00evil.test': NUL byte in name" },
      { "ev il.example", "bad address 'ev il.example': bad host name" },
      { "[::1]", "bad address '[::1]': bad IPv6 address" },
      { "a..b", "bad address 'a..b': bad host name" },
      { ("x"):rep(64) .. ".example", "bad address '" .. ("x"):rep(64) .. ".example': bad host name" },
      { "127.0.0.256", "bad address '127.0.0.256': bad IPv4 address" },
      { "010.0.0.1", "bad address '010.0.0.1': bad IPv4 address" },
    }
    for _, c in ipairs(cases) do returns_bad(c[2], sh.resolve, c[1], { timeout = 2 }) end
    raises("bad argument #1 to .*string expected, got nil", sh.resolve, nil)
    -- a literal and a good name still resolve (the hosts file has localhost)
    local r = H.run(function()
      return { sh.resolve("::0:1"), sh.resolve("127.0.0.1"), sh.resolve("localhost.", { timeout = 5 }) }
    end)
    assert.same({ "::1" }, r[1])
    assert.same({ "127.0.0.1" }, r[2])
    assert.is_table(r[3])
  end)

  it("sockhost.listen still raises on a bad address (its address comes from the script)", function()
    raises("bad address 'tcp://x': missing port", sh.listen, "tcp://x", function() end)
    raises("bad address 'tcp://b%*d:1': bad host name", sh.listen, "tcp://b*d:1", function() end)
  end)

  it("a peer's malformed address through a CONNECT-style proxy gets an answer; the host carries on", function()
    local script = H.writefile(H.tmpname(".lua"), [[
      local sh = sockhost
      local l = assert(sh.listen("tcp://127.0.0.1:0", function(c)
        for line in c:lines() do
          local up, err = sh.connect(line, { timeout = 2 })
          if up then up:close(); c:write("ok\n") else c:write("err ", err, "\n") end
        end
      end))
      print("listening on " .. l:address())
      io.stdout:flush()
    ]])
    local p = H.start(H.q(script))
    local addr = p:wait_output("listening on (%S+)")
    local host, port = H.hostport(addr)
    local c = H.tcp(host, port)
    local got = {}
    for _, line in ipairs { "tcp://ev il:80", "127.0.0.1:70000", "udp://127.0.0.1:53", "[::1]:x", addr } do
      assert(c:send(line .. "\n"))
      got[#got + 1] = c:receive("*l")
    end
    c:close()
    local c2 = H.tcp(host, port)
    assert(c2:send(addr .. "\n"))
    got[#got + 1] = c2:receive("*l")
    c2:close()
    local rc = p:stop()
    assert.same({
      "err bad address 'tcp://ev il:80': bad host name",
      "err bad address '127.0.0.1:70000': port out of range",
      "err bad address 'udp://127.0.0.1:53': not a stream address",
      "err bad address '[::1]:x': bad port",
      "ok", "ok",
    }, got)
    assert.equals(0, rc, p:stderr())
    assert.not_matches("failed", p:stderr())
  end)
end)
