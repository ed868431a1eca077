-- conn:cork(), conn:uncork() and conn:buffered(): writes held and sent
-- together. In-process (sockhost.so) for what the peer sees and when; through
-- ./sockhost under strace for how many system calls a batch costs.
local H = require "helpers"
local S = require "strace"
local sh = H.sh
local socket = H.socket

local with_server = H.with_server

-- Read from c until 'n' bytes came or the stream ended (bounded by its timeout).
local function read_upto(c, n)
  local got = {}
  local len = 0
  while len < n do
    local d = c:read_some()
    if not d then break end
    got[#got + 1] = d
    len = len + #d
  end
  return table.concat(got)
end

describe("conn:cork()", function()
  it("holds writes until uncork, and buffered() counts them", function()
    local s = {}
    with_server(function(c)
      s.cork = { c:cork() }
      s.buf0 = c:buffered()
      assert(c:write("a"))
      sh.sleep(0.1)
      assert(c:write("b", "c"))
      s.buf1 = c:buffered()
      sh.sleep(0.1)
      s.uncorked_at = sh.now()
      s.uncork = { c:uncork() }
      s.buf2 = c:buffered()                   -- the kernel took the three bytes
      c:read("a")
    end, function(c)
      c:settimeout(5)
      local first = c:read_some()
      s.first_at = sh.now()
      s.got = first .. read_upto(c, 3 - #first)
    end)
    assert.same({ true }, s.cork)
    assert.same({ true }, s.uncork)
    assert.equals(0, s.buf0)
    assert.equals(3, s.buf1)
    if H.ONEBYTE then assert.is_true(s.buf2 <= 3) else assert.equals(0, s.buf2) end
    assert.equals("abc", s.got)
    assert.is_true(s.first_at >= s.uncorked_at, "a byte arrived before the uncork")
  end)

  it("sends what is held when a read has to wait: a pipelined batch is answered", function()
    local got = {}
    with_server(function(c)
      c:cork()
      for line in c:lines() do assert(c:write("r", line, "\n")) end
    end, function(c)
      c:settimeout(5)
      assert(c:write("1\n2\n3\n"))
      for i = 1, 3 do got[i] = { c:read() } end
      assert(c:write("4\n"))
      got[4] = { c:read() }
    end)
    assert.same({ { "r1" }, { "r2" }, { "r3" }, { "r4" } }, got)
  end)

  it("sends a write at once while a read on the conn waits", function()
    local got
    with_server(function(c)
      c:cork()
      sh.spawn(function()
        sh.sleep(0.05)                         -- the handler waits in its read
        assert(c:write("push\n"))
      end)
      c:read()
    end, function(c)
      c:settimeout(5)
      got = { c:read() }
    end)
    assert.same({ "push" }, got)
  end)

  it("never holds more than the high-water mark: past it, what is held goes out", function()
    local s = { most = 0 }
    local piece = string.rep("x", 1000)
    with_server(function(c)
      c:cork()
      for _ = 1, 100 do                        -- 100,000 bytes, written without a read
        assert(c:write(piece))
        s.most = math.max(s.most, c:buffered())
      end
      local deadline = sh.now() + (H.ONEBYTE and 60 or 10)
      while not s.client_got and sh.now() < deadline do sh.sleep(0.01) end
      s.uncorked_at = sh.now()
      c:uncork()
      c:read("a")
    end, function(c)
      c:settimeout(H.ONEBYTE and 60 or 10)
      s.first = { c:read(65536) }              -- only what went out at the mark
      s.client_got = true
      s.rest = read_upto(c, 100000 - 65536)
    end)
    assert.is_true(s.most <= 65536, "held " .. s.most)
    assert.equals(65536, #s.first[1])
    assert.is_not_nil(s.uncorked_at)
    assert.equals(100000 - 65536, #s.rest)
  end)

  it("shutdown, close and the handler's end send what is held", function()
    local got = {}
    H.run(function()
      local n = 0
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function(c)
        n = n + 1
        c:cork()
        assert(c:write("held ", n))
        if n == 1 then
          assert(c:shutdown())
          c:read("a")
        elseif n == 2 then
          c:close()
        end                                    -- 3: the handler returns
      end))
      for i = 1, 3 do
        local c = assert(sh.connect(srv:address()))
        c:settimeout(5)
        got[i] = c:read("a")
        c:close()
      end
      srv:close()
    end)
    assert.same({ "held 1", "held 2", "held 3" }, got)
  end)

  it("abort drops what is held", function()
    local got
    with_server(function(c)
      c:read()                                 -- the client is there
      c:cork()
      assert(c:write("never"))
      c:abort()
    end, function(c)
      c:settimeout(5)
      assert(c:write("go\n"))
      got = { c:read("a") }
    end)
    assert.is_true(got[1] == "" or (got[1] == nil and got[2] == "closed"), tostring(got[1]))
  end)

  it("a peer's reset drops what is held; later writes fail", function()
    local s = {}
    with_server(function(c)
      c:cork()
      assert(c:write("lost"))
      s.before = c:buffered()
      sh.sleep(0.3)                            -- no read: nothing sends it; the reset comes
      s.after = c:buffered()
      s.read = { c:read() }
      s.write = { c:write("x") }
    end, function(c)
      sh.sleep(0.05)
      c:abort()
      sh.sleep(0.4)
    end)
    assert.equals(4, s.before)
    assert.same({ nil, "closed" }, s.read)
    assert.equals(0, s.after)
    assert.same({ nil, "closed" }, s.write)
  end)

  it("cork, uncork and buffered on a closed conn return nil, 'closed'", function()
    local got
    with_server(function(c) c:read("a") end, function(c)
      c:close()
      got = { { c:cork() }, { c:uncork() }, { c:buffered() } }
    end)
    assert.same({ { nil, "closed" }, { nil, "closed" }, { nil, "closed" } }, got)
  end)

  it("uncork when not corked, and cork twice, are harmless", function()
    local got
    with_server(function(c)
      assert(c:uncork())
      assert(c:cork())
      assert(c:cork())
      assert(c:write("one"))
      assert(c:uncork())
      assert(c:uncork())
      assert(c:write("two"))                   -- uncorked: at once
      c:read("a")
    end, function(c)
      c:settimeout(5)
      got = read_upto(c, 6)
    end)
    assert.equals("onetwo", got)
  end)

  it("buffered() counts what the kernel refused from a peer that does not read", function()
    local s = {}
    with_server(function(c)
      c:settimeout(0.3)
      local chunk = string.rep("q", 65536)
      for _ = 1, H.big(200, 4) do
        local ok, err = c:write(chunk)
        if not ok then s.err = err break end
      end
      s.buffered = c:buffered()
    end, function(c)
      sh.sleep(H.ONEBYTE and 1.5 or 1)
      c:abort()
    end)
    if not H.ONEBYTE then assert.equals("timeout", s.err) end
    assert.is_true(s.buffered > 0 and s.buffered <= 65536, "buffered " .. tostring(s.buffered))
  end)
end)

describe("conn:cork() over TLS", function()
  local D
  local function path(name) return D .. "/" .. name end
  setup(function()
    D = H.sh_cmd("mktemp -d " .. H.q(H.TMP .. "/cork.XXXXXX")):gsub("%s+$", "")
    local out, rc = H.sh_cmd("sh spec/fixtures/tls_certs.sh " .. H.q(D) .. " 2>&1")
    assert(rc == 0 and out:match("ok"), "cannot make certificates: " .. out)
  end)
  teardown(function()
    if D and D:match("/cork%.") then os.execute("rm -rf " .. H.q(D)) end
  end)

  it("holds writes on a tls:// conn until uncork", function()
    local s = {}
    H.run(function()
      local srv = assert(sh.listen("tls://127.0.0.1:0", function(c)
        c:cork()
        assert(c:write("a"))
        sh.sleep(0.1)
        assert(c:write("bc"))
        s.buf = c:buffered()
        s.uncorked_at = sh.now()
        c:uncork()
        c:read("a")
      end, { cert = path("srv.pem"), key = path("srv.key") }))
      local c = assert(sh.connect(srv:address(), { ca = path("ca.pem") }))
      c:settimeout(5)
      local first = c:read_some()
      s.first_at = sh.now()
      s.got = first .. read_upto(c, 3 - #first)
      c:close()
      srv:close()
    end)
    assert.equals(3, s.buf)
    assert.equals("abc", s.got)
    assert.is_true(s.first_at >= s.uncorked_at, "a byte arrived before the uncork")
  end)

  it("stays corked across starttls, and sends what was held before the handshake", function()
    local s = {}
    H.run(function()
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function(c)
        sh.sleep(0.1)                          -- "go" is buffered: the read below does not wait
        c:cork()
        assert(c:write("plain\n"))             -- held, until starttls sends it
        assert(c:read() == "go")
        assert(c:starttls({ cert = path("srv.pem"), key = path("srv.key") }))
        assert(c:write("a"))
        sh.sleep(0.1)
        assert(c:write("b"))
        s.buf = c:buffered()
        s.uncorked_at = sh.now()
        c:uncork()
        c:read("a")
      end))
      local c = assert(sh.connect(srv:address()))
      c:settimeout(5)
      assert(c:write("go\n"))
      s.plain = c:read()
      assert(c:starttls({ ca = path("ca.pem"), servername = "localhost" }))
      local first = c:read_some()
      s.first_at = sh.now()
      s.got = first .. read_upto(c, 2 - #first)
      c:close()
      srv:close()
    end)
    assert.equals("plain", s.plain)
    assert.equals(2, s.buf)
    assert.equals("ab", s.got)
    assert.is_true(s.first_at >= s.uncorked_at, "a byte arrived before the uncork")
  end)
end)

describe("a corked batch through ./sockhost, counted with strace", function()
  -- Each line in, a reply out; with cork on port 1 and without on port 2.
  local SCRIPT = [[
    local sh = require "sockhost"
    local function serve(corked)
      return function(c)
        if corked then c:cork() end
        for line in c:lines() do c:write("+", line, "\r\n") end
      end
    end
    local a = assert(sh.listen("tcp://127.0.0.1:0", serve(true)))
    local b = assert(sh.listen("tcp://127.0.0.1:0", serve(false)))
    print("corked " .. a:address() .. " plain " .. b:address())
  ]]

  -- Send 'rounds' batches of 16 lines, each in one send, reading the 16
  -- replies before the next; returns what came.
  local function batches(port, rounds)
    local c = H.tcp("127.0.0.1", port, 5)
    local got = {}
    for r = 1, rounds do
      local wire = {}
      for i = 1, 16 do wire[i] = ("r%d-%d\r\n"):format(r, i) end
      assert(c:send(table.concat(wire)))
      for _ = 1, 16 do got[#got + 1] = assert(c:receive("*l")) end
    end
    c:close()
    return got
  end

  it("costs one sendmsg per batch of 16 replies (16 without cork)", function()
    local ok, why = S.available()
    if not ok then pending(why) return end
    local proc, sends = S.start(H.q(H.writefile(H.tmpname(".lua"), SCRIPT)))
    finally(function() proc:stop() end)
    local a = proc:wait_output("corked (%S+)")
    local b = proc:wait_output("plain (%S+)")
    local _, pa = H.hostport(a)
    local _, pb = H.hostport(b)
    local got = batches(pa, 3)
    assert.equals(48, #got)
    assert.equals("+r3-16", got[48])
    local corked = S.settle(sends, 3)
    assert.equals(48, #batches(pb, 3))
    local plain = S.settle(sends, corked + 48) - corked
    assert.equals(3, corked)
    assert.equals(48, plain)
  end)
end)
