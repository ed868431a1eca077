-- sockhost.resp: RESP2 encoding and decoding, in strings and over real
-- loopback connections (in-process, through sockhost.so): round trips,
-- values cut anywhere, limits, protocol errors, inline commands, and
-- pipelined commands read from the connection's buffer without yielding.
local H = require "helpers"
local sh = H.sh
local resp = require "sockhost.resp"

local MiB = 1024 * 1024

-- A value with one of everything, nested.
local function sample()
  return { "bulk", "", "\0\r\n\255binary", 42, -7, 0, math.maxinteger, math.mininteger,
           resp.status("OK"), resp.error("ERR something"), resp.null, resp.null_array,
           {}, { "nested", { 1, { resp.status("deep") } } }, ("x"):rep(70000) }
end

-- Compare decoded values with what was encoded (status/error by type and text).
local function same(a, b)
  local ta, tb = resp.type(a), resp.type(b)
  if ta ~= tb then return false end
  if ta == "status" or ta == "error" then return tostring(a) == tostring(b) end
  if ta ~= "array" then return a == b end
  if #a ~= #b then return false end
  for i = 1, #a do if not same(a[i], b[i]) then return false end end
  return true
end

-- A listener whose handler is fn(conn); returns a connected client.
local function pair(fn)
  local srv = assert(sh.listen("tcp://127.0.0.1:0", function(conn)
    fn(conn)
    conn:close()
  end))
  local c = assert(sh.connect(srv:address()))
  c:settimeout(5)
  return c, srv
end

describe("sockhost.resp", function()
  it("is require 'sockhost.resp' and the field sockhost.resp, the same table", function()
    assert.equals(resp, sh.resp)
  end)

  describe("encode", function()
    it("writes each type as RESP2 defines it", function()
      assert.equals("$5\r\nhello\r\n", resp.encode("hello"))
      assert.equals("$0\r\n\r\n", resp.encode(""))
      assert.equals(":42\r\n", resp.encode(42))
      assert.equals(":-9223372036854775808\r\n", resp.encode(math.mininteger))
      assert.equals("$3\r\n1.5\r\n", resp.encode(1.5))
      assert.equals("$-1\r\n", resp.encode(nil))
      assert.equals("$-1\r\n", resp.encode(resp.null))
      assert.equals("*-1\r\n", resp.encode(resp.null_array))
      assert.equals("+OK\r\n", resp.encode(resp.status("OK")))
      assert.equals("-ERR bad\r\n", resp.encode(resp.error("ERR bad")))
      assert.equals("*0\r\n", resp.encode({}))
      assert.equals("*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n+x\r\n",
        resp.encode({ "a", { 1, resp.null }, resp.status("x") }))
    end)

    it("turns CR and LF of statuses and errors into spaces, as Redis does", function()
      assert.equals("+a b c\r\n", resp.encode(resp.status("a\rb\nc")))
      assert.equals("-ERR x  y\r\n", resp.encode(resp.error("ERR x\r\ny")))
      assert.equals("status", resp.type(resp.status(5)))
      assert.equals("5", tostring(resp.status(5)))
    end)

    it("raises on what RESP2 cannot carry", function()
      assert.has_error(function() resp.encode(true) end, "cannot encode a boolean")
      assert.has_error(function() resp.encode({ print }) end, "cannot encode a function")
      local cycle = {}
      cycle[1] = cycle
      assert.has_error(function() resp.encode(cycle) end, "arrays nested too deep (a cycle?)")
      assert.has_error(function() resp.status({}) end, "bad status (a string expected)")
      assert.has_error(function() resp.error(nil) end, "bad error (a string expected)")
      assert.has_error(function() resp.null[1] = 1 end)
    end)

    it("names the type of each value", function()
      assert.equals("bulk", resp.type("x"))
      assert.equals("bulk", resp.type(1.5))
      assert.equals("integer", resp.type(3))
      assert.equals("null", resp.type(nil))
      assert.equals("null", resp.type(resp.null))
      assert.equals("null_array", resp.type(resp.null_array))
      assert.equals("array", resp.type({}))
      assert.equals("error", resp.type(resp.error("E")))
      assert.is_nil(resp.type(true))
    end)
  end)

  describe("decode", function()
    it("decodes what encode makes, several values in one string", function()
      local wire = resp.encode(sample()) .. resp.encode("second") .. resp.encode(7)
      local v, pos = resp.decode(wire)
      assert.is_true(same(sample(), v))
      local v2, pos2 = resp.decode(wire, pos)
      assert.equals("second", v2)
      local v3, pos3 = resp.decode(wire, pos2)
      assert.equals(7, v3)
      assert.equals(#wire + 1, pos3)
      assert.equals(resp.encode(sample()), resp.encode(v))    -- byte for byte
    end)

    it("says 'short' for a value cut anywhere, and never more", function()
      local wire = resp.encode({ "ab", 12, { resp.status("OK"), resp.null }, "" })
      for cut = 0, #wire - 1 do
        assert.same({ nil, "short" }, { resp.decode(wire:sub(1, cut)) })
      end
      for cut = 0, #wire - 1 do    -- and from a later position
        assert.same({ nil, "short" }, { resp.decode("+x\r\n" .. wire:sub(1, cut), 5) })
      end
    end)

    it("reports protocol errors instead of raising", function()
      local cases = {
        ["$x\r\n"] = "protocol error: invalid bulk length",
        ["$-2\r\n"] = "protocol error: invalid bulk length",
        ["$5\n"] = "protocol error: invalid bulk length",
        ["*x\r\n"] = "protocol error: invalid multibulk length",
        [":1.5\r\n"] = "protocol error: invalid integer",
        [":99999999999999999999\r\n"] = "protocol error: invalid integer",
        ["$2\r\nabcd"] = "protocol error: expected CRLF after bulk",
        ["+OK\n"] = "protocol error: expected CRLF",
        ["\r\n"] = "protocol error: empty line",
        ["%3\r\n"] = "protocol error: unknown type '%'",
        ["\1\r\n"] = "protocol error: unknown type '\\x01'",
        [("+" .. ("x"):rep(70000))] = "protocol error: line too long",
      }
      for wire, err in pairs(cases) do
        assert.same({ nil, err }, { resp.decode(wire) }, wire:sub(1, 20))
      end
    end)

    it("decides on a length before waiting for the bytes: a 2 GB bulk is refused at once", function()
      assert.same({ nil, "protocol error: bulk too large" }, { resp.decode("$2000000000\r\n") })
      assert.same({ nil, "protocol error: too many elements" }, { resp.decode("*2000000000\r\n") })
    end)

    it("applies the limits, defaults and given ones", function()
      -- the defaults, checked on the headers alone: "short" means accepted so far
      assert.same({ nil, "short" }, { resp.decode(("$%d\r\n"):format(8 * MiB)) })
      assert.same({ nil, "protocol error: bulk too large" },
        { resp.decode(("$%d\r\n"):format(8 * MiB + 1)) })
      local half = ("$%d\r\n%s\r\n"):format(8 * MiB, ("x"):rep(8 * MiB))   -- 16 MiB a value
      assert.same({ nil, "short" }, { resp.decode("*3\r\n" .. half .. half .. "$0\r\n") })
      assert.same({ nil, "protocol error: value too large" },
        { resp.decode("*3\r\n" .. half .. half .. "$1\r\n") })
      assert.same({ nil, "protocol error: value too large" },
        { resp.decode_command("*3\r\n" .. half .. half .. "$1\r\n") })
      assert.same({ nil, "short" }, { resp.decode(("*%d\r\n"):format(1024 * 1024)) })
      assert.same({ nil, "protocol error: too many elements" },
        { resp.decode(("*%d\r\n"):format(1024 * 1024 + 1)) })
      local deep = resp.decode(("*1\r\n"):rep(32) .. ":1\r\n")       -- 32 levels are allowed
      for _ = 1, 32 do deep = deep[1] end
      assert.equals(1, deep)
      assert.same({ nil, "protocol error: nested too deep" }, { resp.decode(("*1\r\n"):rep(33) .. ":1\r\n") })
      assert.same({ nil, "short" }, { resp.decode("+" .. ("x"):rep(65534) .. "\r") })
      assert.same({ nil, "protocol error: line too long" }, { resp.decode("+" .. ("x"):rep(65536)) })
      local lim = { max_bulk = 3, max_elements = 4, max_depth = 2, max_bytes = 5, max_line = 8 }
      assert.equals("abc", (resp.decode("$3\r\nabc\r\n", 1, lim)))
      assert.same({ nil, "protocol error: bulk too large" }, { resp.decode("$4\r\nabcd\r\n", 1, lim) })
      assert.same({ 1, 2, 3, 4 }, (resp.decode(resp.encode({ 1, 2, 3, 4 }), 1, lim)))
      assert.same({ nil, "protocol error: too many elements" },
        { resp.decode(resp.encode({ 1, 2, 3, 4, 5 }), 1, lim) })
      assert.same({ nil, "protocol error: too many elements" },   -- counted over all levels
        { resp.decode(resp.encode({ 1, { 2, 3, 4 } }), 1, lim) })
      assert.same({ { {} } }, { (resp.decode("*1\r\n*0\r\n", 1, lim)) })
      assert.same({ nil, "protocol error: nested too deep" },
        { resp.decode("*1\r\n*1\r\n*0\r\n", 1, lim) })
      assert.same({ nil, "protocol error: value too large" },
        { resp.decode(resp.encode({ "abc", "abc" }), 1, lim) })
      assert.same({ nil, "protocol error: line too long" }, { resp.decode("+123456789\r\n", 1, lim) })
      assert.same({ nil, "short" }, { resp.decode("+1234567", 1, lim) })
      assert.same({ nil, "protocol error: line too long" }, { resp.decode("+12345678", 1, lim) })
    end)

    it("raises on bad arguments (a programmer's error, not the peer's)", function()
      assert.has_error(function() resp.decode(nil) end, "bad argument #1 to 'resp.decode' (string expected)")
      assert.has_error(function() resp.decode("x", 0) end,
        "bad argument #2 to 'resp.decode' (position >= 1 expected)")
      assert.has_error(function() resp.decode("x", 1, { max_bulk = -1 }) end,
        "limit 'max_bulk' must be a non-negative integer")
      assert.has_error(function() resp.decode("x", 1, { maxbulk = 1 }) end, "unknown limit 'maxbulk'")
    end)
  end)

  describe("decode_command", function()
    it("takes arrays of bulk strings", function()
      local wire = resp.encode({ "SET", "k", "v\r\n" }) .. resp.encode({ "GET", "k" })
      local a, pos = resp.decode_command(wire)
      assert.same({ "SET", "k", "v\r\n" }, a)
      assert.same({ "GET", "k" }, (resp.decode_command(wire, pos)))
    end)

    it("takes inline commands, split as redis-server splits them", function()
      local function inline(line) return (resp.decode_command(line)) end
      assert.same({ "PING" }, inline("PING\r\n"))
      assert.same({ "PING" }, inline("PING\n"))
      assert.same({ "set", "k", "v" }, inline("  set \t k   v  \r\n"))
      assert.same({ "set", "a b", "x\n\tA\"\\" }, inline('set "a b" "x\\n\\t\\x41\\"\\\\"\r\n'))
      assert.same({ "it's", "a\\b" }, inline("'it\\'s' 'a\\b'\r\n"))
      assert.same({ "ab c" }, inline('a"b c"\r\n'))
      assert.same({ "", "x" }, inline("\"\" x\r\n"))
      assert.same({ "\255" }, inline('"\\xff"\r\n'))
      assert.same({ "get", "a" }, inline("get a\0b c\r\n"))    -- a C string ends at a NUL
      assert.same({ "a\vb" }, inline("\v a\vb \f\r\n"))
    end)

    it("skips empty commands as Redis does", function()
      local a, pos = resp.decode_command("\r\n   \r\n*0\r\n*-1\r\nPING\r\n")
      assert.same({ "PING" }, a)
      assert.equals(23, pos)
      assert.same({ nil, "short" }, { resp.decode_command("\r\n*0\r\n") })
    end)

    it("reports protocol errors with Redis's wording", function()
      local cases = {
        ['get "abc\r\n'] = "protocol error: unbalanced quotes in request",
        ['get "a"b\r\n'] = "protocol error: unbalanced quotes in request",
        ["get 'a\r\n"] = "protocol error: unbalanced quotes in request",
        ['get "a\\\r\n'] = "protocol error: unbalanced quotes in request",
        ["*x\r\n"] = "protocol error: invalid multibulk length",
        ["*1\n"] = "protocol error: invalid multibulk length",
        ["*1\r\nPING\r\n"] = "protocol error: expected '$', got 'P'",
        ["*1\r\n:1\r\n"] = "protocol error: expected '$', got ':'",
        ["*1\r\n$x\r\n"] = "protocol error: invalid bulk length",
        ["*1\r\n$-1\r\n"] = "protocol error: invalid bulk length",
        ["*1\r\n$4\r\nPINGxx"] = "protocol error: expected CRLF after bulk",
        ["*1\r\n$2000000000\r\n"] = "protocol error: bulk too large",
        ["*3000000\r\n"] = "protocol error: too many elements",
        [("x"):rep(65537)] = "protocol error: too big inline request",
        ["*1\r\n" .. ("$"):rep(65537)] = "protocol error: line too long",
      }
      for wire, err in pairs(cases) do
        assert.same({ nil, err }, { resp.decode_command(wire) }, wire:sub(1, 20))
      end
      assert.same({ nil, "protocol error: value too large" },
        { resp.decode_command(resp.encode({ "abc", "abc" }), 1, { max_bytes = 5 }) })
    end)
  end)

  it("never raises nor loops on random input (3000 strings, both decoders)", function()
    local seed = os.time()
    math.randomseed(seed)
    local alphabet = { "*", "$", "+", "-", ":", "\r", "\n", "\r\n", " ", "\t", "\v", "\0", '"', "'",
                       "\\", "x", "1", "0", "-1", "2", "99999999999999999999", "\\x4", "%" }
    for i = 1, 3000 do
      local t = {}
      for j = 1, math.random(0, 60) do
        t[j] = i % 2 == 0 and alphabet[math.random(#alphabet)] or string.char(math.random(0, 255))
      end
      local s = table.concat(t)
      for _, decode in ipairs({ resp.decode, resp.decode_command }) do
        local pos, steps = 1, 0
        while true do                       -- every value in the string, as a reader would
          debug.sethook(function() error("does not end") end, "", 1e7)   -- a bug must not hang make test
          local ok, v, nxt = pcall(decode, s, pos)
          debug.sethook()
          assert(ok, ("seed %d input %q: %s"):format(seed, s, tostring(v)))
          if v == nil then
            assert.is_string(nxt)
            break
          end
          assert.is_true(nxt > pos, ("seed %d input %q"):format(seed, s))
          pos, steps = nxt, steps + 1
          assert.is_true(steps <= #s)
        end
      end
    end
  end)

  describe("over a connection", function()
    it("writes and reads every type, the reads arriving a byte at a time", function()
      local got = H.run(function()
        local c, srv = pair(function(conn)
          for _ = 1, 3 do assert(resp.write(conn, assert(resp.read(conn)))) end
        end)
        local values = { sample(), "plain", resp.error("ERR last") }
        local wire = {}
        for i, v in ipairs(values) do wire[i] = resp.encode(v) end
        wire = table.concat(wire)
        for i = 1, #wire, 7 do
          assert(c:write(wire:sub(i, i + 6)))
          if i < 3000 and i % 70 == 1 then sh.sleep(0.001) end
        end
        local out = {}
        for i = 1, 3 do out[i] = assert(resp.read(c)) end
        assert.same({ nil, "closed" }, { resp.read(c) })
        c:close()
        srv:close()
        return out
      end)
      assert.is_true(same(sample(), got[1]))
      assert.equals("plain", got[2])
      assert.equals("error", resp.type(got[3]))
      assert.equals("ERR last", tostring(got[3]))
    end)

    it("reads pipelined commands from the buffer without yielding", function()
      local r = H.run(function()
        local ticks = 0
        local ticker = sh.spawn(function()
          for _ = 1, 2000 do ticks = ticks + 1; sh.sleep(0) end
        end)
        local c, srv = pair(function(conn)
          sh.sleep(0.2)                          -- let all of it arrive and be buffered
          local before, cmds = ticks, {}
          for i = 1, 1000 do cmds[i] = assert(resp.read_command(conn)) end
          conn:write(("%d %d %s %s\n"):format(ticks - before, #cmds, cmds[1][1], cmds[1000][2]))
        end)
        local wire = {}
        for i = 1, 500 do
          wire[#wire + 1] = resp.encode({ "SET", "k" .. i, "v" })
          wire[#wire + 1] = "GET k" .. (i + 500) .. "\r\n"        -- inline ones between
        end
        assert(c:write(table.concat(wire)))
        local line = assert(c:read("l"))
        c:close()
        srv:close()
        ticker:join()
        return line
      end)
      assert.equals("0 1000 SET k1000", r)
    end)

    it("read_commands: a pipelined batch in one call; other commands and errors as read_command's", function()
      local r = H.run(function()
        local function batches(wire, limits, max, max_line)
          local c, srv = pair(function(conn)
            if max_line then conn:setlimits({ max_line = max_line }) end
            sh.sleep(0.2)                          -- let all of it arrive and be buffered
            local out = {}
            while true do
              local cmds, n = resp.read_commands(conn, limits, max)
              if not cmds then out[#out + 1] = n; break end
              local names = {}
              for i = 1, n do names[i] = table.concat(cmds[i], " ") end
              out[#out + 1] = table.concat(names, ",")
            end
            conn:write(table.concat(out, "|"), "\n")
          end)
          assert(c:write(wire))
          c:shutdown()
          local line = c:read("l")
          c:close()
          srv:close()
          return line
        end
        local function cmd(...) return resp.encode({ ... }) end
        return {
          batches(cmd("SET", "a", "1") .. cmd("GET", "a") .. "PING x\r\n" .. cmd("GET", "b") ..
                  cmd("DEL", "a", "b") .. cmd("SET", "big", ("x"):rep(11)) .. cmd("GET", "c"),
                  { max_bulk = 10 }),
          batches(cmd("A", "1") .. cmd("B", "2") .. cmd("C", "3") .. cmd("D", "4") .. cmd("E", "5"), nil, 4),
          batches("*1\r\n$03\r\nGET\r\n*0\r\n*1\r\n$3\r\nGET\r\n*1\r\n$00000000000000000003\r\nGET\r\n",
                  nil, nil, 16),
          batches(cmd("GET", "k") .. "*2\r\n$3\r\nGET\r\n$1\r\nkX\r\n"),
          batches(cmd("GET", "k") .. "*2\r\n$3\r\nGET\r\n$1\r\nk"),
        }
      end)
      assert.same({
        "SET a 1,GET a|PING x|GET b,DEL a b|protocol error: bulk too large",
        "A 1,B 2|C 3,D 4|E 5|closed",
        "GET|GET|protocol error: line too long",
        "GET k|protocol error: expected CRLF after bulk",
        "GET k|closed",
      }, r)
    end)

    it("takes inline commands as typed into nc, and empty lines between", function()
      local got = H.run(function()
        local c, srv = pair(function(conn)
          while true do
            local a, err = resp.read_command(conn)
            if not a then resp.write(conn, resp.error(err)); return end
            resp.write(conn, a)
          end
        end)
        assert(c:write("PING\n\nset \"a b\" 'c d'\r\n", "*1\r\n$3\r\nGET\r\n", "get \"x\r\n"))
        local out = {}
        for i = 1, 4 do out[i] = assert(resp.read(c)) end
        c:close()
        srv:close()
        return out
      end)
      assert.same({ "PING" }, got[1])
      assert.same({ "set", "a b", "c d" }, got[2])
      assert.same({ "GET" }, got[3])
      assert.equals("protocol error: unbalanced quotes in request", tostring(got[4]))
    end)

    it("refuses a 2 GB bulk before reading it, and reports a peer's close mid-value", function()
      local r = H.run(function()
        local c, srv = pair(function(conn)
          local a, aerr = resp.read_command(conn)
          conn:write(tostring(a), " ", aerr, "\n")
        end)
        assert(c:write("*1\r\n$2000000000\r\nxyz"))
        local line = c:read("l")
        c:close()
        local c2, srv2 = pair(function(conn)
          local a, aerr = resp.read_command(conn)
          conn:write(tostring(a), " ", aerr, "\n")
        end)
        assert(c2:write("*2\r\n$3\r\nGET\r\n$5\r\nab"))
        c2:shutdown()
        local line2 = c2:read("l")
        c2:close()
        srv:close()
        srv2:close()
        return line .. "|" .. line2
      end)
      assert.equals("nil protocol error: bulk too large|nil closed", r)
    end)

    it("uses the connection's max_line for inline commands and header lines", function()
      local r = H.run(function()
        local c, srv = pair(function(conn)
          conn:setlimits({ max_line = 16 })
          local _, e1 = resp.read_command(conn)
          conn:write(e1, "\n")
        end)
        assert(c:write(("PING "):rep(10) .. "\r\n"))
        local line = c:read("l")
        c:close()
        srv:close()
        return line
      end)
      assert.equals("protocol error: too big inline request", r)
    end)

    it("survives random values cut at random places (200 rounds)", function()
      local seed = os.time()
      math.randomseed(seed)
      local function random_value(depth)
        local k = math.random(1, depth > 2 and 5 or 6)
        if k == 1 then
          local t = {}
          for i = 1, math.random(0, 40) do t[i] = string.char(math.random(0, 255)) end
          return table.concat(t)
        elseif k == 2 then return math.random(math.mininteger, math.maxinteger)
        elseif k == 3 then return resp.status(("s"):rep(math.random(0, 10)))
        elseif k == 4 then return resp.error("ERR " .. math.random(1, 99))
        elseif k == 5 then return math.random(2) == 1 and resp.null or resp.null_array
        end
        local t = {}
        for i = 1, math.random(0, 5) do t[i] = random_value(depth + 1) end
        return t
      end
      local values = {}
      for i = 1, 200 do values[i] = random_value(0) end
      local wire = {}
      for i, v in ipairs(values) do wire[i] = resp.encode(v) end
      wire = table.concat(wire)
      -- decode in random pieces from a growing buffer
      local buf, pos, got, at = "", 1, {}, 1
      while at <= #wire do
        local n = math.random(1, 50)
        buf = buf .. wire:sub(at, at + n - 1)
        at = at + n
        while true do
          local v, nxt = resp.decode(buf, pos)
          if v == nil then assert.equals("short", nxt); break end
          got[#got + 1], pos = v, nxt
        end
      end
      assert.equals(#values, #got, "seed " .. seed)
      for i = 1, #values do assert.is_true(same(values[i], got[i]), "seed " .. seed .. " value " .. i) end
      -- and over a connection in random pieces
      local back = H.run(function()
        local c, srv = pair(function(conn)
          for _ = 1, #values do assert(resp.write(conn, assert(resp.read(conn)))) end
        end)
        local p = 1
        while p <= #wire do
          local n = math.random(1, 300)
          assert(c:write(wire:sub(p, p + n - 1)))
          p = p + n
          if math.random(4) == 1 then sh.sleep(0) end
        end
        local out = {}
        for i = 1, #values do out[i] = assert(resp.read(c)) end
        c:close()
        srv:close()
        return out
      end)
      for i = 1, #values do assert.is_true(same(values[i], back[i]), "seed " .. seed .. " value " .. i) end
    end)
  end)
end)
