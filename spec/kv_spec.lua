-- scripts/kv.lua, the Redis-protocol key-value server, driven end to end by
-- the real clients of Debian's redis-tools (redis-cli, redis-benchmark; make
-- deps installs them) and by raw sockets (LuaSocket) for pipelining, inline
-- commands and hostile input. Every expected reply below was checked against
-- a real redis-server 7.0.
local H = require "helpers"
local resp = require "sockhost.resp"

local function have(cmd)
  local _, rc = H.sh_cmd("command -v " .. cmd .. " > /dev/null")
  return rc == 0
end

-- A raw client: sends bytes, reads n replies with resp.decode.
local function raw_at(port)
  local s = H.tcp("127.0.0.1", port, 0.1)
  local c = { sock = s, buf = "", pos = 1 }
  function c.send(data) assert(s:send(data)) end
  function c.read(n)
    local out, deadline = {}, H.socket.gettime() + 10
    while #out < n do
      local v, nxt = resp.decode(c.buf, c.pos)
      if v ~= nil then
        out[#out + 1], c.pos = v, nxt
      else
        assert.equals("short", nxt)
        local data, err, partial = s:receive(65536)
        data = data or partial
        if err == "closed" and data == "" then return out, "closed" end
        c.buf = c.buf .. data
        assert(H.socket.gettime() < deadline, "no reply in time")
      end
    end
    return out
  end
  function c.closed()               -- true once the server has closed it
    local deadline = H.socket.gettime() + 5
    repeat
      local data, err, partial = s:receive(65536)
      if err == "closed" then return (data or partial) == "" end
    until H.socket.gettime() > deadline
    return false
  end
  function c.close() s:close() end
  return c
end

describe("scripts/kv.lua", function()
  local proc, port

  setup(function()
    assert(have("redis-cli") and have("redis-benchmark"),
      "redis-cli and redis-benchmark are needed (Debian redis-tools): run make deps")
    port = H.free_port()
    proc = H.start("scripts/kv.lua tcp://127.0.0.1:" .. port)
    proc:wait_output("kv: listening on tcp://127.0.0.1:%d+")
  end)

  teardown(function()
    if proc then proc:stop() end
  end)

  -- redis-cli with --no-raw, so that types show: "(integer) 1", "(nil)", ...
  local function cli(...)
    local args = {}
    for i, a in ipairs({ ... }) do args[i] = H.q(a) end
    local out = H.sh_cmd(("timeout 10 redis-cli -p %d --no-raw %s 2>&1"):format(port, table.concat(args, " ")))
    return (out:gsub("\n$", ""))
  end

  -- Each line: a command (words split on spaces) and its exact reply.
  local function check(script)
    for line in script:gmatch("[^\n]+") do
      local cmd, want = line:match("^%s*(.-)%s*=>%s?(.*)$")
      if cmd then
        local words = {}
        for w in cmd:gmatch("%S+") do words[#words + 1] = w end
        assert.equals(want:gsub("\\n", "\n"), cli(table.unpack(words)), cmd)
      end
    end
  end

  local function raw() return raw_at(port) end

  before_each(function() assert.equals("OK", cli("flushall")) end)

  it("answers PING, ECHO, QUIT and unknown commands as Redis does", function()
    check [[
      ping => PONG
      PING hello => "hello"
      ping a b => (error) ERR wrong number of arguments for 'ping' command
      echo hi => "hi"
      echo => (error) ERR wrong number of arguments for 'echo' command
      foo a b => (error) ERR unknown command 'foo', with args beginning with: 'a' 'b' 
      foo => (error) ERR unknown command 'foo', with args beginning with: 
      quit => OK
    ]]
    local long = ("x"):rep(200)
    assert.equals("(error) ERR unknown command '" .. long:sub(1, 128) .. "', with args beginning with: '"
      .. long:sub(1, 128) .. "' ", cli(long, long, long))
  end)

  it("SET with EX, PX, NX, XX, KEEPTTL and GET; GET", function()
    check [[
      set k v => OK
      get k => "v"
      get nope => (nil)
      get => (error) ERR wrong number of arguments for 'get' command
      set k w nx => (nil)
      set k w xx => OK
      set j w xx => (nil)
      set j w nx => OK
      set k x get => "w"
      set fresh x get => (nil)
      set k y nx get => "x"
      set k v ex 0 => (error) ERR invalid expire time in 'set' command
      set k v px -5 => (error) ERR invalid expire time in 'set' command
      set k v ex abc => (error) ERR value is not an integer or out of range
      set k v ex 9223372036854775807 => (error) ERR invalid expire time in 'set' command
      set k v nx xx => (error) ERR syntax error
      set k v ex 10 px 100 => (error) ERR syntax error
      set k v ex => (error) ERR syntax error
      set k v keepttl ex 5 => (error) ERR syntax error
      set k v bogus => (error) ERR syntax error
      set k v EX 100 => OK
      ttl k => (integer) 100
      set k v2 keepttl => OK
      ttl k => (integer) 100
      set k v3 => OK
      ttl k => (integer) -1
    ]]
  end)

  it("INCR, DECR, INCRBY, DECRBY with Redis's integer rules and overflow errors", function()
    check [[
      incr n => (integer) 1
      incrby n 41 => (integer) 42
      decr n => (integer) 41
      decrby n 50 => (integer) -9
      incrby n -1 => (integer) -10
      incrby n 1x => (error) ERR value is not an integer or out of range
      incrby n 01 => (error) ERR value is not an integer or out of range
      set s abc => OK
      incr s => (error) ERR value is not an integer or out of range
      set s 007 => OK
      incr s => (error) ERR value is not an integer or out of range
      set s -0 => OK
      incr s => (error) ERR value is not an integer or out of range
      set big 9223372036854775807 => OK
      incr big => (error) ERR increment or decrement would overflow
      decrby big -1 => (error) ERR increment or decrement would overflow
      decrby big -9223372036854775808 => (error) ERR decrement would overflow
      set small -9223372036854775808 => OK
      decr small => (error) ERR increment or decrement would overflow
      incr => (error) ERR wrong number of arguments for 'incr' command
      set t 5 ex 100 => OK
      incr t => (integer) 6
      ttl t => (integer) 100
    ]]
  end)

  it("DEL, EXISTS, MGET, MSET", function()
    check [[
      mset a 1 b 2 c 3 => OK
      mget a b nope c => 1) "1"\n2) "2"\n3) (nil)\n4) "3"
      mset a => (error) ERR wrong number of arguments for 'mset' command
      mset a 1 b => (error) ERR wrong number of arguments for 'mset' command
      exists a a nope b => (integer) 3
      del a nope => (integer) 1
      exists a => (integer) 0
      del => (error) ERR wrong number of arguments for 'del' command
      dbsize => (integer) 2
    ]]
  end)

  it("EXPIRE, PEXPIRE, TTL, PTTL, PERSIST; keys expire on access (PX 150)", function()
    check [[
      set k v => OK
      ttl k => (integer) -1
      ttl nope => (integer) -2
      expire nope 10 => (integer) 0
      expire k abc => (error) ERR value is not an integer or out of range
      expire k 9223372036854775807 => (error) ERR invalid expire time in 'expire' command
      expire k 10 foo => (error) ERR Unsupported option foo
      expire k 10 nx xx => (error) ERR NX and XX, GT or LT options at the same time are not compatible
      expire k 10 gt lt => (error) ERR GT and LT options at the same time are not compatible
      expire k 100 xx => (integer) 0
      expire k 100 gt => (integer) 0
      expire k 100 nx => (integer) 1
      expire k 200 nx => (integer) 0
      ttl k => (integer) 100
      expire k 50 gt => (integer) 0
      expire k 50 lt => (integer) 1
      ttl k => (integer) 50
      persist k => (integer) 1
      persist k => (integer) 0
      ttl k => (integer) -1
      expire k -1 => (integer) 1
      exists k => (integer) 0
    ]]
    -- short deadlines; a loaded machine may take long between two commands,
    -- so what depends on the time elapsed is only checked when it is clear
    local t0 = H.socket.gettime()
    assert.equals("OK", cli("set", "k", "v", "px", "1000"))
    local pttl = tonumber(cli("pttl", "k"):match("^%(integer%) (%d+)$"))
    if H.socket.gettime() - t0 < 0.9 then
      assert.is_true(pttl ~= nil and pttl > 0 and pttl <= 1000, tostring(pttl))
      assert.equals('"v"', cli("get", "k"))
    end
    assert.equals("OK", cli("set", "k2", "v", "px", "100000"))
    assert.equals("(integer) 100", cli("ttl", "k2"))
    assert.equals("(integer) 1", cli("pexpire", "k2", "150"))
    H.socket.sleep(math.max(0.3, 1.2 - (H.socket.gettime() - t0)))
    check [[
      get k2 => (nil)
      exists k2 => (integer) 0
    ]]
    check [[
      get k => (nil)
      ttl k => (integer) -2
      pttl k => (integer) -2
      exists k => (integer) 0
    ]]
  end)

  it("sweeps expired keys that nobody asks for", function()
    local c = raw()
    local wire = {}
    for i = 1, 3000 do wire[i] = resp.encode({ "SET", "tmp:" .. i, "v", "PX", "1000" }) end
    wire[#wire + 1] = resp.encode({ "SET", "stays", "v" })
    local t0 = H.socket.gettime()
    c.send(table.concat(wire))
    local replies = c.read(3001)
    c.close()
    assert.equals(3001, #replies)
    local n = cli("dbsize")                              -- DBSIZE counts unswept keys
    if H.socket.gettime() - t0 < 0.9 then assert.equals("(integer) 3001", n) end
    local deadline = H.socket.gettime() + 6
    repeat
      H.socket.sleep(0.1)
      n = cli("dbsize")
    until n == "(integer) 1" or H.socket.gettime() > deadline
    assert.equals("(integer) 1", n)
  end)

  it("KEYS with glob patterns: * ? [abc] [a-z] [^a] and \\ escapes", function()
    for _, k in ipairs({ "hallo", "hbllo", "hcllo", "hello", "hllo", "heeeello", "h[a]llo", "h*llo",
                         "h\\llo", "h-llo", "x" }) do
      assert.equals("OK", cli("set", k, "1"))
    end
    local function keys(p)
      local out = H.sh_cmd(("timeout 10 redis-cli -p %d keys %s"):format(port, H.q(p)))
      local t = {}
      for k in out:gmatch("[^\n]+") do t[#t + 1] = k end
      table.sort(t)
      return table.concat(t, " ")
    end
    assert.equals("h*llo h-llo h[a]llo h\\llo hallo hbllo hcllo heeeello hello hllo x", keys("*"))
    assert.equals("h*llo h-llo h\\llo hallo hbllo hcllo hello", keys("h?llo"))
    assert.equals("h*llo h-llo h[a]llo h\\llo hallo hbllo hcllo heeeello hello hllo", keys("h*llo"))
    assert.equals("hallo hello", keys("h[ae]llo"))
    assert.equals("h*llo h-llo h\\llo hallo hbllo hcllo", keys("h[^e]llo"))
    assert.equals("hallo hbllo", keys("h[a-b]llo"))
    assert.equals("hallo hbllo", keys("h[b-a]llo"))               -- a reversed range, as Redis
    assert.equals("h[a]llo", keys("h\\[a\\]llo"))
    assert.equals("h*llo", keys("h\\*llo"))
    assert.equals("h\\llo", keys("h\\\\llo"))
    assert.equals("h-llo hallo hcllo", keys("h[a\\-c]llo"))
    assert.equals("", keys("h[]llo"))
    assert.equals("x", keys("?"))
    assert.equals("", keys(""))
    assert.equals("", keys("%a+"))                              -- nothing reaches a Lua pattern
    assert.equals("(error) ERR wrong number of arguments for 'keys' command", cli("keys"))
  end)

  it("SCAN with MATCH, COUNT and TYPE walks every key, as redis-cli --scan shows", function()
    local c = raw()
    local wire, all, ones = {}, {}, {}
    for i = 1, 3000 do
      local k = "user:" .. i
      wire[#wire + 1] = resp.encode({ "SET", k, "v" })
      all[#all + 1] = k
      if k:match("^user:1") then ones[#ones + 1] = k end
    end
    c.send(table.concat(wire))
    assert.equals(3000, #c.read(3000))
    c.close()
    table.sort(all)
    table.sort(ones)
    local function scan(opts)
      local out = H.sh_cmd(("timeout 30 redis-cli -p %d --scan %s"):format(port, opts))
      local t = {}
      for k in out:gmatch("[^\n]+") do t[#t + 1] = k end
      table.sort(t)
      return t
    end
    assert.same(all, scan(""))                              -- each key once: nothing moved meanwhile
    assert.same(ones, scan("--pattern 'user:1*'"))
    assert.same({}, scan("--pattern 'nope*'"))
    -- one call with a COUNT past the size: the cursor back to 0, and all of them
    local out = H.sh_cmd(("timeout 10 redis-cli -p %d scan 0 count 5000 match 'user:2?'"):format(port))
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equals("0", table.remove(lines, 1))
    table.sort(lines)
    assert.equals("user:20 user:21 user:22 user:23 user:24 user:25 user:26 user:27 user:28 user:29",
      table.concat(lines, " "))
    assert.equals("(integer) 3000", cli("dbsize"))
    check [[
      scan 0 type string count 5000 match user:1000 => 1) "0"\n2) 1) "user:1000"
      scan 0 type hash count 5000 => 1) "0"\n2) (empty array)
      scan x => (error) ERR invalid cursor
      scan 18446744073709551616 => (error) ERR invalid cursor
      scan 0 count 0 => (error) ERR syntax error
      scan 0 count x => (error) ERR value is not an integer or out of range
      scan 0 match => (error) ERR syntax error
      scan 0 foo bar => (error) ERR syntax error
      scan => (error) ERR wrong number of arguments for 'scan' command
      flushall => OK
      dbsize => (integer) 0
      scan 0 => 1) "0"\n2) (empty array)
    ]]
  end)

  it("answers the CONFIG GET and COMMAND that redis-benchmark and redis-cli send", function()
    check [[
      config get save => 1) "save"\n2) ""
      config get appendonly => 1) "appendonly"\n2) "no"
      config get nothing => (empty array)
      config get => (error) ERR wrong number of arguments for 'config|get' command
      config foo => (error) ERR unknown subcommand 'foo'. Try CONFIG HELP.
      command docs => (empty array)
    ]]
    assert.matches("^%(integer%) %d+$", cli("command", "count"))
  end)

  it("stores and returns a 1 MiB value byte for byte", function()
    local t = {}
    -- one byte at a time (H.big) 64 KiB: 1 MiB would outlast redis-cli's 10 s
    for i = 1, H.big(1024 * 1024, 64 * 1024) // 16 do t[i] = ("%015x-"):format(i * 7919) end
    local value = table.concat(t)
    local file = H.writefile(H.tmpname(".val"), value)
    local out = H.sh_cmd(("timeout 10 redis-cli -p %d -x set big < %s"):format(port, H.q(file)))
    assert.equals("OK\n", out)
    out = H.sh_cmd(("timeout 10 redis-cli -p %d get big"):format(port))
    assert.equals(value .. "\n", out)
  end)

  it("answers 2000 pipelined commands in one write, in order, mixing RESP and inline", function()
    local c = raw()
    local wire = {}
    for i = 1, 1000 do
      wire[#wire + 1] = resp.encode({ "INCR", "counter" })
      wire[#wire + 1] = "GET counter\r\n"
    end
    c.send(table.concat(wire))
    local replies = c.read(2000)
    c.close()
    for i = 1, 1000 do
      assert.equals(i, replies[2 * i - 1])
      assert.equals(tostring(i), replies[2 * i])
    end
  end)

  it("takes inline commands as typed into nc, quotes included", function()
    local c = raw()
    c.send("PING\r\n\r\nset \"a key\" 'it''s'\n")   -- a closing quote must end the word
    local r = c.read(2)
    assert.equals("PONG", tostring(r[1]))
    assert.equals("ERR Protocol error: unbalanced quotes in request", tostring(r[2]))
    assert.is_true(c.closed())
    c = raw()
    c.send("set \"a key\" \"x\\x41\\n\"\r\nget \"a key\"\r\nQUIT\r\n")
    r = c.read(3)
    assert.same({ "OK", "xA\n", "OK" }, { tostring(r[1]), r[2], tostring(r[3]) })
    assert.is_true(c.closed())
  end)

  it("answers a protocol error with Redis's message, hangs up, and serves the others", function()
    local cases = {
      ["*1\r\n$2000000000\r\n"] = "ERR Protocol error: bulk too large",
      ["*x\r\n"] = "ERR Protocol error: invalid multibulk length",
      ["*1\r\nPING\r\n"] = "ERR Protocol error: expected '$', got 'P'",
      ["*1\r\n$x\r\n"] = "ERR Protocol error: invalid bulk length",
      ["*5000000\r\n"] = "ERR Protocol error: too many elements",
      [("x"):rep(70000)] = "ERR Protocol error: too big inline request",
    }
    local other = raw()                  -- a well-behaved client all along
    for wire, want in pairs(cases) do
      local c = raw()
      c.send(wire)
      local r = c.read(1)
      assert.equals(want, tostring(r[1]))
      assert.equals("error", resp.type(r[1]))
      assert.is_true(c.closed())
      c.close()
      other.send("PING\r\n")
      assert.equals("PONG", tostring(other.read(1)[1]))
    end
    other.close()
    assert.is_nil(proc:exited())
  end)

  it("refuses 12 peers' 64,000,000-byte SETs at once; their 60 MiB never stays", function()
    -- sockhost.resp's default max_bulk (8 MiB) keeps a handful of peers from
    -- filling the host's budget of buffers (256 MiB) with their values.
    local before = proc:rss_kib()
    local header = "*3\r\n$3\r\nSET\r\n$4\r\nbig1\r\n$64000000\r\n"
    local peers = {}
    for i = 1, 12 do
      peers[i] = raw()
      peers[i].send(header .. ("x"):rep(H.big(65536, 1024)))
    end
    for i = 1, 12 do
      assert.equals("ERR Protocol error: bulk too large", tostring(peers[i].read(1)[1]))
      peers[i].close()
    end
    -- The same peers sending their 60 MiB as fast as they can: each is told
    -- at once, and what it sends on is read and dropped until it hangs up.
    local go = H.tmpname(".go")
    local peer = H.launch(("timeout -s KILL 60 python3 -u spec/fixtures/big_announce.py 127.0.0.1 %d 12 64000000 %d %s")
      :format(port, H.big(60 * 1024 * 1024, 32 * 1024), H.q(go)), "python3")
    local deadline = H.socket.gettime() + 60
    while not peer:stdout():find("sent") and H.socket.gettime() < deadline do H.socket.sleep(0.05) end
    local during = proc:rss_kib()
    H.writefile(go, "")
    assert.matches("sent %d+ %d+", peer:stdout())
    assert.equals("PONG", cli("ping"))
    if not H.VALGRIND and not os.getenv("SOCKHOST_SANITIZED") then
      assert.is_true(during - before < 16 * 1024, ("RSS grew %d KiB"):format(during - before))
    end
  end)

  it("lives through clients that hang up mid-command or send random bytes", function()
    math.randomseed(os.time())
    for i = 1, 60 do
      local s = H.tcp("127.0.0.1", port, 2)
      local bytes = {}
      if i % 3 == 0 then
        bytes = { "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc" }          -- hangs up in a bulk
      else
        for j = 1, math.random(1, 400) do bytes[j] = string.char(math.random(0, 255)) end
        if i % 3 == 1 then bytes[1] = "*" end
      end
      s:send(table.concat(bytes))
      s:close()
    end
    assert.equals("PONG", cli("ping"))
    assert.is_nil(proc:exited())
    assert.is_nil(proc:stderr():find("failed"), proc:stderr())     -- no handler raised
  end)

  local function benchmark(extra)
    -- (under the one-byte shim, every byte a system call: fewer requests)
    local out = H.sh_cmd(("timeout 120 redis-benchmark -p %d -t ping,set,get,incr,mset -n %d %s -q 2>&1")
      :format(port, H.ONEBYTE and 2000 or 20000, extra))
    local rates = {}
    for line in out:gmatch("[^\r\n]+") do
      local name, rate = line:match("^([%w_]+)[^:]*: ([%d.]+) requests per second")
      if name then rates[name] = tonumber(rate) end
    end
    return rates, out
  end

  for _, extra in ipairs({ "-P 16", "" }) do
    it("serves redis-benchmark " .. (extra == "" and "without pipelining" or extra) .. " without errors", function()
      local rates, out = benchmark(extra)
      for _, name in ipairs({ "PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET" }) do
        assert.is_true((rates[name] or 0) > 0, name .. " missing in:\n" .. out)
      end
      assert.is_nil(out:find("ERR"), out)
      assert.is_nil(out:find("[Ee]rror"), out)
      assert.is_nil(out:find("WARNING"), out)                      -- e.g. could not fetch CONFIG
    end)
  end

  it("stops at once on SIGTERM, with exit status 0", function()
    local t0 = H.socket.gettime()
    assert.equals(0, proc:stop())
    assert.is_true(H.socket.gettime() - t0 < 3)
    proc = nil
  end)
end)

-- Commands whose work grows with the store or their arguments, on half a
-- million keys, under a budget of 0.4 s: a command that ran its loop
-- without yielding would be stopped (and its client cut) long before the
-- end (the script before it yielded: its KEYS was). Here each must be
-- answered in full, and another client served while KEYS walks the store.
-- (Half a million: under 2^19, whose table rebuild takes 0.14 s here.)
describe("scripts/kv.lua on half a million keys", function()
  local SMALL = H.ONEBYTE or H.VALGRIND               -- every byte a syscall, or valgrind: fewer keys
  local N = SMALL and 20000 or 500000
  local proc, port

  setup(function()
    port = H.free_port()
    -- (valgrind and the sanitizers slow the rebuild of a growing table, which no yield splits)
    local budget = H.VALGRIND and 3 or os.getenv("SOCKHOST_SANITIZED") and 1 or 0.4
    proc = H.start(("--budget %s scripts/kv.lua tcp://127.0.0.1:%d"):format(budget, port))
    proc:wait_output("kv: listening on tcp://127.0.0.1:%d+")
  end)
  teardown(function() if proc then proc:stop() end end)

  -- Many MiB at once to a raw client's socket (whose timeout is short).
  local function send_big(c, data)
    c.sock:settimeout(30)
    c.send(data)
    c.sock:settimeout(0.1)
  end

  -- An array reply of bulk strings (or nils, as false), read from a raw client.
  local function read_array(c)
    local s = c.sock
    s:settimeout(30)
    local head = assert(s:receive("*l"))
    local n = assert(tonumber(head:match("^%*(%d+)$")), head)
    local out = {}
    for i = 1, n do
      local len = tonumber(assert(s:receive("*l")):match("^%$(%-?%d+)$"))
      out[i] = len >= 0 and assert(s:receive(len + 2)):sub(1, len)
    end
    s:settimeout(0.1)
    return out
  end

  it("answers KEYS, MGET, EXISTS, DEL, DBSIZE and FLUSHALL in full, serving another client meanwhile", function()
    -- fill with MSET, 1000 keys a command
    local fill = raw_at(port)
    local wire = {}
    for b = 0, N // 1000 - 1 do
      local cmd = { "MSET" }
      for i = b * 1000 + 1, b * 1000 + 1000 do cmd[#cmd + 1], cmd[#cmd + 2] = "key:" .. i, "v" .. i end
      wire[#wire + 1] = resp.encode(cmd)
    end
    send_big(fill, table.concat(wire))
    wire = nil
    local oks = fill.read(N // 1000)
    for i = 1, N // 1000 do assert.equals("OK", tostring(oks[i])) end
    fill.send(resp.encode({ "DBSIZE" }))
    assert.equals(N, fill.read(1)[1])

    -- KEYS * from one client; meanwhile another deletes keys at random and
    -- adds new ones, each answered in turn, until the KEYS reply comes
    local a, b = raw_at(port), raw_at(port)
    a.send(resp.encode({ "KEYS", "*" }))
    local deleted, added, trips, slowest = {}, {}, 0, 0
    local t_end = H.socket.gettime() + 60
    math.randomseed(os.time())
    while #H.socket.select({ a.sock }, nil, 0) == 0 and trips < 5000 and H.socket.gettime() < t_end do
      trips = trips + 1
      local victim, new = "key:" .. math.random(N), "new:" .. trips
      local t0 = H.socket.gettime()
      b.send(resp.encode({ "DEL", victim }) .. resp.encode({ "SET", new, "x" }))
      local r = b.read(2)
      slowest = math.max(slowest, H.socket.gettime() - t0)
      if r[1] == 1 then deleted[victim] = true end
      added[new] = true
    end
    local keys = read_array(a)
    assert.is_true(trips >= 1 and slowest < 1, ("%d round trips, the slowest %.3f s"):format(trips, slowest))
    -- each key once, none that never was, every one there throughout (one
    -- assert for all: busted's take 10 us each)
    local seen, wrong, ndeleted = {}, nil, 0
    for _, k in ipairs(keys) do
      if seen[k] then wrong = wrong or "twice: " .. k end
      seen[k] = true
      local i = tonumber(k:match("^key:(%d+)$"))
      if not (added[k] or (i and i >= 1 and i <= N)) then wrong = wrong or "never set: " .. k end
    end
    for i = 1, N do
      local k = "key:" .. i
      if deleted[k] then ndeleted = ndeleted + 1 elseif not seen[k] then wrong = wrong or "missing: " .. k end
    end
    assert.is_nil(wrong)

    -- MGET and EXISTS of every key, DEL of them all, in one command each
    local cmd = { "MGET" }
    for i = 1, N do cmd[i + 1] = "key:" .. i end
    local wire_keys = resp.encode(cmd)
    send_big(a, wire_keys)
    local values = read_array(a)
    assert.equals(N, #values)
    for i = 1, N do
      if values[i] ~= (not deleted["key:" .. i] and "v" .. i) then wrong = wrong or "MGET: " .. i end
    end
    assert.is_nil(wrong)
    send_big(a, (wire_keys:gsub("^(%*%d+\r\n)%$4\r\nMGET", "%1$6\r\nEXISTS")))
    assert.equals(N - ndeleted, a.read(1)[1])
    send_big(a, (wire_keys:gsub("^(%*%d+\r\n)%$4\r\nMGET", "%1$3\r\nDEL")))
    assert.equals(N - ndeleted, a.read(1)[1])
    a.send(resp.encode({ "DBSIZE" }) .. resp.encode({ "FLUSHALL" }) .. resp.encode({ "DBSIZE" }))
    local r = a.read(3)
    assert.same({ trips, "OK", 0 }, { r[1], tostring(r[2]), r[3] })
    for _, c in ipairs { fill, a, b } do c.close() end
    assert.is_nil(proc:stderr():find("without yielding", 1, true), proc:stderr())
    assert.is_nil(proc:exited())
  end)
end)

-- How many system calls a pipelined batch costs: kv.lua corks its
-- connections, so the replies to a batch go out in one write once the
-- handler has to wait for more (as redis-benchmark -P 16 sends them).
describe("scripts/kv.lua's writes, counted with strace", function()
  local S = require "strace"

  it("answers each pipelined batch of 16 commands with one sendmsg", function()
    local ok, why = S.available()
    if not ok then pending(why) return end
    local port = H.free_port()
    local proc, sends = S.start("scripts/kv.lua tcp://127.0.0.1:" .. port)
    finally(function() proc:stop() end)
    proc:wait_output("kv: listening on tcp://127.0.0.1:%d+")
    local c = raw_at(port)
    local batch = {}
    for i = 1, 8 do
      batch[#batch + 1] = resp.encode({ "SET", "k" .. i, "v" .. i })
      batch[#batch + 1] = resp.encode({ "GET", "k" .. i })
    end
    for round = 1, 3 do
      c.send(table.concat(batch))
      local r = c.read(16)
      assert.equals(16, #r)
      assert.same({ "OK", "v8" }, { tostring(r[15]), r[16] }, "round " .. round)
    end
    c.close()
    assert.equals(3, S.settle(sends, 3))
  end)
end)
