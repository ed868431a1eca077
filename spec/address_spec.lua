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

local A = sh.address

-- A string with each byte as two hex digits, and back.
local function tohex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

-- 'n' strings made from 'seeds' by one to three random edits (insert,
-- delete, replace) with bytes of 'alphabet'; the seeds come first.
local function mutations(seeds, alphabet, n)
  local out = {}
  for i, s in ipairs(seeds) do out[i] = s end
  for _ = 1, n do
    local s = seeds[math.random(#seeds)]
    for _ = 1, math.random(1, 3) do
      local p, k = math.random(0, #s), math.random(#alphabet)
      local c, op = alphabet:sub(k, k), math.random(3)
      if op == 1 then s = s:sub(1, p) .. c .. s:sub(p + 1)
      elseif op == 2 then s = s:sub(1, p - 1) .. s:sub(p + 1)
      else s = s:sub(1, p - 1) .. c .. s:sub(p + 1) end
    end
    out[#out + 1] = s
  end
  return out
end

-- The reasons a bad address can give (doc/API.md, Addresses).
local WHY = {}
for _, w in ipairs { "missing port", "bad port", "port out of range", "missing host", "host too long",
  "missing ']'", "IPv6 hosts go in brackets", "bad IPv6 address", "bad IPv4 address", "bad host name",
  "empty zone", "unknown zone", "unknown scheme", "empty path", "empty name", "path too long",
  "NUL byte in address" } do WHY[w] = true end

-- "bad address '<s>': " as the error shows s (a NUL as \x00, cut at 200 bytes).
local function shown(s) return (s:sub(1, 200):gsub("%z", "\\x00")) end

describe("sockhost.address.parse and format", function()
  it("parse gives scheme, host, port, zone, path and family", function()
    local cases = {
      { "tcp://127.0.0.1:80", { scheme = "tcp", host = "127.0.0.1", port = 80, family = "ipv4" } },
      { "10.0.0.1:0", { scheme = "tcp", host = "10.0.0.1", port = 0, family = "ipv4" } },
      { "tls://Example.COM.:443", { scheme = "tls", host = "Example.COM.", port = 443, family = "name" } },
      { "udp://[2001:DB8:0:0:0:0:0:1]:53", { scheme = "udp", host = "2001:db8::1", port = 53, family = "ipv6" } },
      { "tcp://[fe80::1%lo]:22", { scheme = "tcp", host = "fe80::1", zone = "lo", port = 22, family = "ipv6" } },
      { "tcp://[fe80::1%1]:22", { scheme = "tcp", host = "fe80::1", zone = "1", port = 22, family = "ipv6" } },
      { "tcp://[::FFFF:1.2.3.4]:1", { scheme = "tcp", host = "::ffff:1.2.3.4", port = 1, family = "ipv6" } },
      { "tcp://localhost:65535", { scheme = "tcp", host = "localhost", port = 65535, family = "ipv4" } },
      { "udp://*:5353", { scheme = "udp", host = "*", port = 5353, family = "ipv4" } },
      { "tcp://a_b-c.d9:007", { scheme = "tcp", host = "a_b-c.d9", port = 7, family = "name" } },
      { "unix:/tmp/x.sock", { scheme = "unix", path = "/tmp/x.sock", family = "unix" } },
      { "unix:rel/x y", { scheme = "unix", path = "rel/x y", family = "unix" } },
      { "unixgram:@name", { scheme = "unixgram", path = "@name", family = "unix" } },
    }
    for _, c in ipairs(cases) do
      local t, err = A.parse(c[1])
      assert.same(c[2], t, c[1] .. ": " .. tostring(err))
    end
  end)

  it("format(parse(s)) is the canonical s, and the canonical s is a fixed point", function()
    local cases = {
      { "127.0.0.1:80", "tcp://127.0.0.1:80" },
      { "tcp://[0:0:0:0:0:0:0:1]:0080", "tcp://[::1]:80" },
      { "udp://[2001:DB8::0:1]:53", "udp://[2001:db8::1]:53" },
      { "udp://[1:0:0:2:0:0:0:3]:1", "udp://[1:0:0:2::3]:1" },
      { "udp://[1:0:0:2:3:0:0:4]:1", "udp://[1::2:3:0:0:4]:1" },
      { "tcp://[::ffff:0102:0304]:1", "tcp://[::ffff:1.2.3.4]:1" },
      { "tcp://[::1.2.3.4]:1", "tcp://[::102:304]:1" },
      { "tcp://[FE80::1%lo]:9", "tcp://[fe80::1%lo]:9" },
      { "tls://Host.Example:443", "tls://Host.Example:443" },
      { "unix:@name", "unix:@name" },
      { "unixgram:/tmp/s", "unixgram:/tmp/s" },
    }
    for _, c in ipairs(cases) do
      local t = assert(A.parse(c[1]))
      assert.equals(c[2], A.format(t), c[1])
      assert.equals(c[2], A.format(assert(A.parse(c[2]))), c[2])
      assert.same(t, A.parse(c[2]))
    end
  end)

  it("a malformed address is nil, 'bad address ...' with the reason connect gives", function()
    local p107 = "/" .. ("p"):rep(106)
    local cases = {
      { "", "missing port" }, { "x", "missing port" }, { "tcp://x", "missing port" },
      { "tcp://:80", "missing host" }, { "tcp://x:", "bad port" }, { "tcp://x:+1", "bad port" },
      { "tcp://x: 1", "bad port" }, { "tcp://x:1 ", "bad port" }, { "tcp://x:0x10", "bad port" },
      { "tcp://x:-1", "bad port" }, { "tcp://x:65536", "port out of range" },
      { "tcp://x:99999999999999999999999", "port out of range" },
      { "tcp://[::1]", "missing port" }, { "tcp://[::1]80", "missing port" },
      { "tcp://[::1:80", "missing ']'" }, { "tcp://::1:80", "IPv6 hosts go in brackets" },
      { "tcp://[]:80", "missing host" }, { "tcp://[1.2.3.4]:80", "bad IPv6 address" },
      { "tcp://[[::1]]:80", "missing port" }, { "tcp://[::1]:80]", "bad port" },
      { "tcp://[::1%]:80", "empty zone" }, { "tcp://[::1%no-such-if0]:80", "unknown zone" },
      { "tcp://[::1%99999999999]:80", "unknown zone" }, { "tcp://1.2.3.4%lo:80", "bad host name" },
      { "tcp://1.2.3.256:80", "bad IPv4 address" }, { "tcp://01.2.3.4:80", "bad IPv4 address" },
      { "tcp://1.2.3:80", "bad IPv4 address" }, { "tcp://host.123:80", "bad IPv4 address" },
      { "tcp://a..b:80", "bad host name" }, { "tcp://.a:80", "bad host name" },
      { "tcp://a.b..:80", "bad host name" }, { "tcp://a b:80", "bad host name" },
      { "tcp://a/b:80", "bad host name" }, { "tcp://user@h:80", "bad host name" },
      { "tcp://h\xc3\xa9:80", "bad host name" }, { "tcp://" .. ("a"):rep(64) .. ".b:80", "bad host name" },
      { "tcp://" .. ("abcdefg."):rep(31) .. "abcdef:80", "bad host name" },   -- 254 bytes
      { "tcp://" .. ("a"):rep(256) .. ":80", "host too long" },
      { "ftp://h:21", "unknown scheme" }, { "TCP://h:1", "unknown scheme" },
      { "unix:", "empty path" }, { "unix:@", "empty name" }, { "unixgram:@", "empty name" },
      { "unix:" .. p107 .. "p", "path too long" }, { "unix:@" .. p107, "path too long" },
      { "tcp://h:80\0", "NUL byte in address" }, { "\0tcp://h:80", "NUL byte in address" },
      { "unix:@a\0b", "NUL byte in address" },
    }
    for _, c in ipairs(cases) do
      local t, err = A.parse(c[1])
      assert.is_nil(t, c[1])
      assert.equals("bad address '" .. shown(c[1]) .. "': " .. c[2], err)
      assert.is_true(WHY[c[2]])
    end
    -- the longest that is not too long
    assert.same({ scheme = "unix", path = p107, family = "unix" }, A.parse("unix:" .. p107))
    assert.same({ scheme = "unix", path = "@" .. p107:sub(2), family = "unix" },
                A.parse("unix:@" .. p107:sub(2)))
    local long = ("abcdefg."):rep(31) .. "abcde"        -- 253 bytes, and a final dot
    assert.equals(253, #long)
    assert.equals("tcp://" .. long .. ".:1", A.format(assert(A.parse("tcp://" .. long .. ".:1"))))
    assert.is_table(A.parse("tcp://" .. ("a"):rep(63) .. ".b:1"))
    -- the same words from connect and udp (in a task)
    local r = H.run(function()
      return { table.pack(sh.connect("tcp://[::1%]:80")), table.pack(sh.udp("udp://a..b:1")) }
    end)
    assert.same({ n = 2, nil, select(2, A.parse("tcp://[::1%]:80")) }, r[1])
    assert.same({ n = 2, nil, select(2, A.parse("udp://a..b:1")) }, r[2])
    -- not a string: raises
    assert.has_error(function() A.parse(nil) end)
    assert.has_error(function() A.parse({}) end)
  end)

  it("every port from 0 to 65535 is taken, as written or with leading zeros", function()
    for p = 0, 65535 do
      local t = A.parse("udp://h:" .. p)
      if not t or t.port ~= p then error("port " .. p .. " not taken") end
      if A.format(t) ~= "udp://h:" .. p then error("port " .. p .. " formatted as " .. A.format(t)) end
    end
    assert.equals(8, A.parse("tcp://h:0008").port)
    for _, p in ipairs { "65536", "70000", "2147483648", "9223372036854775808", "1" .. ("0"):rep(40) } do
      assert.same({ nil, "bad address 'tcp://h:" .. p .. "': port out of range" }, { A.parse("tcp://h:" .. p) })
    end
  end)

  it("a NUL byte anywhere is refused, never taken as the end", function()
    for _, s in ipairs { "tcp://127.0.0.1:80", "udp://[::1%lo]:5", "unix:@name", "unixgram:/tmp/p" } do
      for i = 0, #s do
        local bad = s:sub(1, i) .. "\0" .. s:sub(i + 1)
        assert.same({ nil, "bad address '" .. shown(bad) .. "': NUL byte in address" }, { A.parse(bad) })
      end
    end
  end)

  it("round trips hold over many mutated inputs: format(parse(s)) parses back to the same table", function()
    math.randomseed(20240611)
    local seeds = { "tcp://127.0.0.1:80", "udp://[::1]:53", "tls://a.example:443", "tcp://[fe80::1%lo]:1",
      "unix:/tmp/s", "unixgram:@n", "h:1", "tcp://[::ffff:1.2.3.4]:0", "udp://*:65535" }
    local inputs = mutations(seeds, "0123456789abfx:.[]%@/\0 -_lo", 4000)
    local good = 0
    for _, s in ipairs(inputs) do
      local t, err = A.parse(s)
      if t then
        good = good + 1
        local f = A.format(t)
        local back, err2 = A.parse(f)
        assert.same(t, back, ("%q -> %q: %s"):format(s, tostring(f), tostring(err2)))
        assert.equals(f, A.format(back))
      else
        local why = err:match("^bad address '.*': (.-)$")
        assert.is_true(WHY[why] == true, ("%q: %s"):format(s, err))
        assert.equals("bad address '" .. shown(s) .. "': " .. why, err)
      end
    end
    assert.is_true(good > 400 and good < #inputs - 400, "good: " .. good)   -- both kinds well covered
  end)

  it("round trips hold over made tables: parse(format(t)) == t", function()
    math.randomseed(42)
    local function label()
      local t = {}
      for i = 1, math.random(1, 12) do
        local k = math.random(38)
        t[i] = ("abcdefghijklmnopqrstuvwxyzABCDEFGH-_"):sub(k, k)
        if t[i] == "" then t[i] = "z" end
      end
      return table.concat(t)
    end
    for i = 1, 3000 do
      local kind, t = i % 5
      local scheme = ({ "tcp", "tls", "udp" })[math.random(3)]
      if kind == 0 then
        t = { scheme = ({ "unix", "unixgram" })[math.random(2)], family = "unix",
              path = (math.random(2) == 1 and "@" or "/tmp/") .. label() }
      elseif kind == 1 then
        local b = string.char(math.random(0, 255), math.random(0, 255), math.random(0, 255), math.random(0, 255))
        t = { scheme = scheme, host = A.bin_to_ip(b), family = "ipv4" }
      elseif kind == 2 then
        local b = {}
        for j = 1, 16 do b[j] = string.char(math.random() < 0.5 and 0 or math.random(0, 255)) end
        t = { scheme = scheme, host = A.bin_to_ip(table.concat(b)), family = "ipv6",
              zone = ({ nil, "lo", "1" })[math.random(3)] }
      else
        local n = {}
        for j = 1, math.random(1, 4) do n[j] = label() end
        t = { scheme = scheme, host = table.concat(n, "."), family = "name" }
      end
      if t.family ~= "unix" then t.port = math.random(0, 65535) end
      local s, err = A.format(t)
      assert.is_string(s, err)
      assert.same(t, A.parse(s), s)
    end
  end)

  it("format checks its table: wrong types raise, values that make no address are nil, err", function()
    assert.equals("tcp://h:1", A.format { host = "h", port = 1 })         -- scheme defaults to tcp
    assert.equals("tcp://[::1]:1", A.format { host = "::1", port = 1, family = "ignored" })
    assert.equals("udp://[fe80::1%lo]:1", A.format { scheme = "udp", host = "fe80::1", zone = "lo", port = 1 })
    assert.equals("unix:@x", A.format { scheme = "unix", path = "@x" })
    assert.equals("tcp://h:80", A.format { host = "h", port = 80.0 })
    local bad = {
      { { host = "h" }, "bad address 'tcp://h': missing port" },
      { { port = 1 }, "bad address 'tcp://:1': missing host" },
      { { host = "h", port = 65536 }, "bad address 'tcp://h:65536': port out of range" },
      { { host = "h", port = -1 }, "bad address 'tcp://h:-1': port out of range" },
      { { scheme = "ftp", host = "h", port = 1 }, "bad address 'ftp://h:1': unknown scheme" },
      { { scheme = "tcp\0", host = "h", port = 1 }, "bad address 'tcp\\x00://h:1': unknown scheme" },
      { { host = "a]:1", port = 2 }, "bad address 'tcp://[a]:1]:2': bad port" },
      { { host = "[::1]", port = 2 }, "bad address 'tcp://[[::1]]:2': missing port" },
      { { host = "[::1", port = 2 }, "bad address 'tcp://[[::1]:2': bad IPv6 address" },
      { { host = "1.2.3.4", zone = "lo", port = 2 }, "bad address 'tcp://[1.2.3.4%lo]:2': bad IPv6 address" },
      { { host = "::1", zone = "", port = 2 }, "bad address 'tcp://[::1%]:2': empty zone" },
      { { host = "h\0x", port = 2 }, "bad address 'tcp://h\\x00x:2': NUL byte in address" },
      { { host = "a b", port = 2 }, "bad address 'tcp://a b:2': bad host name" },
      { { scheme = "unix" }, "bad address 'unix:': empty path" },
      { { scheme = "unixgram", path = "@" }, "bad address 'unixgram:@': empty name" },
    }
    for _, c in ipairs(bad) do assert.same({ nil, c[2] }, { A.format(c[1]) }) end
    local raises_fmt = {
      { nil, "table expected" },
      { { host = 1, port = 1 }, "'host' must be a string" },
      { { host = "h", port = "80" }, "'port' must be an integer" },
      { { host = "h", port = 1.5 }, "'port' must be an integer" },
      { { scheme = 6, host = "h", port = 1 }, "'scheme' must be a string" },
      { { host = "h", port = 1, path = "/x" }, "'path' does not go with scheme 'tcp'" },
      { { scheme = "unix", path = "/x", port = 1 }, "'port' does not go with scheme 'unix'" },
      { { scheme = "unixgram", path = "/x", host = "h" }, "'host' does not go with scheme 'unixgram'" },
    }
    for _, c in ipairs(raises_fmt) do
      local ok, err = pcall(A.format, c[1])
      assert.is_false(ok)
      assert.matches(lit(c[2]), err)
    end
  end)

  it("canonical strings work as addresses: a listener's, parsed and formatted, is connected to", function()
    local r = H.run(function()
      local out = {}
      for _, where in ipairs { { host = "127.0.0.1", port = 0 }, { host = "::1", port = 0 },
                               { scheme = "unix", path = "@sockhost-addr-spec-" .. H.getpid() } } do
        local l = assert(sh.listen(assert(A.format(where)), function(c) c:write("hi\n") end))
        local t = assert(A.parse(l:address()))
        local c = assert(sh.connect(assert(A.format(t)), { timeout = 2 }))
        out[#out + 1] = { t.family, c:read("l") }
        c:close()
        l:close()
      end
      return out
    end)
    assert.same({ { "ipv4", "hi" }, { "ipv6", "hi" }, { "unix", "hi" } }, r)
  end)
end)

describe("sockhost.address IP helpers", function()
  it("is_ip, ip_to_bin and bin_to_ip on known values", function()
    assert.equals("ipv4", A.is_ip("192.0.2.1"))
    assert.equals("ipv6", A.is_ip("2001:db8::1"))
    assert.equals("ipv6", A.is_ip("::ffff:192.0.2.1"))
    for _, s in ipairs { "", "localhost", "[::1]", "fe80::1%lo", "1.2.3", "01.2.3.4", " 1.2.3.4",
                         "1.2.3.4\0", "::1::", "12345::" } do
      assert.is_false(A.is_ip(s), s)
      assert.same({ nil, "bad address '" .. shown(s) .. "': not an IP address" }, { A.ip_to_bin(s) })
    end
    assert.equals("\192\0\2\1", A.ip_to_bin("192.0.2.1"))
    assert.equals("\32\1\13\184" .. ("\0"):rep(11) .. "\1", A.ip_to_bin("2001:DB8::1"))
    assert.equals("192.0.2.1", A.bin_to_ip("\192\0\2\1"))
    assert.equals("::", A.bin_to_ip(("\0"):rep(16)))
    assert.equals("::ffff:1.2.3.4", A.bin_to_ip(("\0"):rep(10) .. "\255\255\1\2\3\4"))
    assert.equals("1::", A.bin_to_ip("\0\1" .. ("\0"):rep(14)))
    assert.same({ nil, "bad address: 5 bytes, not 4 or 16" }, { A.bin_to_ip("12345") })
    assert.same({ nil, "bad address: 0 bytes, not 4 or 16" }, { A.bin_to_ip("") })
    assert.has_error(function() A.is_ip(nil) end)
    assert.has_error(function() A.bin_to_ip({}) end)
  end)

  it("agree with python3's ipaddress: text to bytes on mutated inputs, bytes to text on random ones", function()
    math.randomseed(5952)
    local texts = mutations({ "1.2.3.4", "0.0.0.0", "255.255.255.255", "::", "::1", "1::", "fe80::1",
      "2001:db8::8:800:200c:417a", "::ffff:1.2.3.4", "::1.2.3.4", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:1.2.3.4",
      "1:0:0:2::3", "ABCD:EF01::" }, "0123456789abcdefABCDEF:.:.x \0g-", 6000)
    local bins = {}
    for i = 1, 6000 do
      local b = {}
      for j = 1, (i % 3 == 0) and 4 or 16 do
        local r = math.random()
        b[j] = string.char(r < 0.5 and 0 or r < 0.6 and 255 or math.random(0, 255))
      end
      bins[i] = table.concat(b)
      if i % 7 == 0 and #bins[i] == 16 then bins[i] = ("\0"):rep(10) .. "\255\255" .. bins[i]:sub(13) end
    end
    local input = {}
    for _, s in ipairs(texts) do input[#input + 1] = "t " .. tohex(s) end
    for _, b in ipairs(bins) do input[#input + 1] = "b " .. tohex(b) end
    local infile = H.writefile(H.tmpname(".txt"), table.concat(input, "\n") .. "\n")
    -- Python 3.11 writes an IPv4-mapped address in hex; RFC 5952 (section 5),
    -- and Python from 3.13, as ::ffff:a.b.c.d: take that form.
    local py = H.writefile(H.tmpname(".py"), [[
import ipaddress, sys
for line in open(sys.argv[1]):
    kind, hx = (line.split() + [""])[:2]
    if kind == "t":
        try: print(ipaddress.ip_address(bytes.fromhex(hx).decode("latin-1")).packed.hex())
        except ValueError: print("-")
    else:
        a = ipaddress.ip_address(bytes.fromhex(hx))
        m = a.ipv4_mapped if a.version == 6 else None
        print("::ffff:" + str(m) if m is not None else str(a))
]])
    local out, rc = H.sh_cmd(("timeout -s KILL 60 python3 %s %s"):format(H.q(py), H.q(infile)))
    assert.equals(0, rc, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equals(#texts + #bins, #lines)
    local valid = 0
    for i, s in ipairs(texts) do
      local b = A.ip_to_bin(s)
      local mine = b and tohex(b) or "-"
      assert.equals(lines[i], mine, ("%q"):format(s))
      assert.equals(b and (#b == 4 and "ipv4" or "ipv6") or false, A.is_ip(s))
      if b then
        valid = valid + 1
        assert.equals(b, A.ip_to_bin(A.bin_to_ip(b)))
      end
    end
    assert.is_true(valid > 300 and valid < #texts - 300, "valid: " .. valid)
    for i, b in ipairs(bins) do
      assert.equals(lines[#texts + i], A.bin_to_ip(b), tohex(b))
    end
  end)
end)
