-- The budget of buffered bytes (--max-buffers): what every connection holds
-- in its buffers counts against one limit of the host, and one connection
-- may hold a quarter of it. The attack: peers announce a 64,000,000-byte
-- bulk as a Redis client would and send 60 MiB of it, never the rest, to a
-- service that reads the length its peer chose (spec/fixtures/read_n.lua,
-- plain conn:read(n)); python3 is the peer (spec/fixtures/big_announce.py).
-- Resident memory is read from /proc/PID/status (VmRSS now, VmHWM the peak).
local H = require "helpers"

local MiB = 1024 * 1024
-- RSS figures mean something for the plain build at full size only: ASan and
-- valgrind keep freed memory on purpose, and the one-byte shim's sizes are
-- tiny.
local CHECK_RSS = not H.VALGRIND and not os.getenv("SOCKHOST_SANITIZED") and not H.ONEBYTE

local function status_kib(proc, field)
  local s = H.readfile("/proc/" .. proc.pid .. "/status") or ""
  return tonumber(s:match(field .. ":%s*(%d+)"))
end

local started = {}   -- the processes of a case: stopped after it, even when it fails

local function start(args)
  local proc = H.start(args)
  started[#started + 1] = proc
  local addr = proc:wait_output("listening on (%S+)")
  return proc, addr
end

-- big_announce.py against port: returns the peer process and the file that
-- lets it close its connections.
local function announce(port, clients, size, send, cafile)
  local go = H.tmpname(".go")
  local src = assert(H.readfile("spec/fixtures/big_announce.py"))
  local peer = H.launch(("timeout -s KILL 60 python3 -u %s 127.0.0.1 %d %d %d %d %s %s"):format(
    H.q(H.writefile(H.tmpname(".py"), src)), port, clients, size, send, H.q(go),
    cafile and H.q(cafile) or ""), "python3")
  started[#started + 1] = peer
  return peer, go
end

local function wait_output(proc, pattern, secs)
  local deadline = H.socket.gettime() + secs
  repeat
    local m = proc:stdout():match(pattern)
    if m then return m end
    H.socket.sleep(0.05)
  until H.socket.gettime() > deadline
  error(("no %q from %d within %d s: %s %s"):format(pattern, proc.pid, secs, proc:stdout(), proc:stderr()))
end

-- A well-behaved client: "ping" -> "pong".
local function ping(port)
  local c = H.tcp("127.0.0.1", port, 10)
  assert(c:send("ping\n"))
  local line, err = c:receive("*l")
  c:close()
  return line or err
end

-- Each log line of a cut connection names it and its peer.
local function cuts(proc, why)
  local n = 0
  for line in proc:stderr():gmatch("[^\n]+") do
    if line:find(why, 1, true) then
      assert.matches("INFO  conn #%d+ tcp://127%.0%.0%.1:%d+: .*, closing$", line)
      n = n + 1
    end
  end
  return n
end

-- Poll RSS until it is at most 'kib' (bounded): the last value seen.
local function rss_falls_to(proc, kib, secs)
  local deadline, rss = H.socket.gettime() + secs, nil
  repeat
    rss = proc:rss_kib()
    if rss <= kib then return rss end
    H.socket.sleep(0.1)
  until H.socket.gettime() > deadline
  return rss
end

describe("the budget of buffered bytes", function()
  after_each(function()
    for i = #started, 1, -1 do
      started[i]:stop()
      started[i] = nil
    end
  end)

  it("12 peers sending 60 MiB of a 64,000,000-byte read: RSS under the budget, then back", function()
    -- Defaults: a 256 MiB budget, 64 MiB a connection (64,000,000 fits in
    -- it); the Lua state capped at 64 MiB. One-byte shim: the same story in
    -- a budget of 128 KiB.
    local budget = H.big(256, 0.125)
    local size, send = H.big(64000000, 30000), H.big(60 * MiB, 28 * 1024)
    local proc, addr = start("--max-memory 64 " .. (H.ONEBYTE and "--max-buffers 0.125 " or "")
                             .. "spec/fixtures/read_n.lua tcp://127.0.0.1:0")
    local port = select(2, H.hostport(addr))
    local before = proc:rss_kib()
    local peer, go = announce(port, 12, size, send)
    local full = wait_output(peer, "sent (%d+) %d+", 60)
    assert.equals(12, full + tonumber(peer:stdout():match("sent %d+ (%d+)")))
    -- The budget holds: some are cut (all 12 would need 720 MiB), the others
    -- hold what they sent, and the host still answers a new client.
    wait_output(proc, "read %d+: out of memory", 60)
    assert.equals("pong", ping(port))
    local held = proc:rss_kib()
    H.writefile(go, "")
    wait_output(peer, "closed", 30)
    -- Those cut heard "out of memory" in their read, with a log line each;
    -- the others' reads end "closed" when their peers go.
    assert.is_true(cuts(proc, "bytes, the most, with all buffers over their limit") >= 1, proc:stderr())
    local after = rss_falls_to(proc, before + 8 * 1024, 30)
    assert.equals("pong", ping(port))
    local peak = status_kib(proc, "VmHWM")
    local out = proc:stdout()
    proc:stop()
    if os.getenv("BUDGET_DEBUG") then
      io.stderr:write(("\nbefore %d held %d peak %d after %d KiB\n"):format(before, held, peak, after))
    end
    local oom = select(2, out:gsub("read %d+: out of memory", ""))
    assert.is_true(oom >= 1, out)
    if CHECK_RSS then
      -- The peak: the budget, plus one connection's share being handed to
      -- its script (made contiguous, then a Lua string), plus the Lua cap.
      local bound = (budget + budget / 4 + 64 + 8) * 1024
      assert.is_true(held - before < (budget + 16) * 1024, ("held %d KiB more"):format(held - before))
      assert.is_true(peak - before < bound, ("peak %d KiB over a start of %d"):format(peak - before, before))
      assert.is_true(after <= before + 8 * 1024, ("%d KiB after, %d before"):format(after, before))
    end
  end)

  it("a read of more than a connection's share fails 'too large', is cut and logged", function()
    -- --max-buffers 64: a connection may hold 16 MiB.
    local proc, addr = start("--max-buffers 64 spec/fixtures/read_n.lua tcp://127.0.0.1:0")
    local port = select(2, H.hostport(addr))
    local before = proc:rss_kib()
    local peer, go = announce(port, 12, 64000000, H.big(60 * MiB, 64 * 1024))
    wait_output(peer, "sent %d+ %d+", 60)
    H.writefile(go, "")
    wait_output(peer, "closed", 30)
    assert.equals("pong", ping(port))
    local grew = proc:rss_kib() - before
    local out, err = proc:stdout(), proc:stderr()
    proc:stop()
    assert.equals(12, select(2, out:gsub("read 64000000: too large", "")), out)
    assert.equals(12, cuts(proc, "a read of 64000000 bytes, over the 16777216 a connection may hold"), err)
    if CHECK_RSS then assert.is_true(grew < 8 * 1024, ("RSS grew %d KiB"):format(grew)) end
  end)

  it("read('a'), read_until and lines stop at the share: 'too large', cut", function()
    -- --max-buffers 1: a connection may hold 256 KiB (one-byte shim: 0.125,
    -- 32 KiB).
    local budget = H.big(1, 0.125)
    local share = math.floor(budget * MiB / 4)
    local script = H.writefile(H.tmpname(".lua"), [[
      local sh = require "sockhost"
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function(conn)
        conn:setlimits{ max_line = 1 << 20 }
        local how = conn:read("l")
        local ok, a, b
        if how == "a" then a, b = conn:read("a")
        elseif how == "until" then a, b = conn:read_until("END", 1 << 20)
        else ok, a = pcall(function() for _ in conn:lines() do end end); b = a end
        print(how, b)
        print(how, "write", conn:write("x"))
      end))
      print("listening on " .. srv:address())
    ]])
    local proc, addr = start(("--max-buffers %s %s"):format(budget, H.q(script)))
    local port = select(2, H.hostport(addr))
    for _, how in ipairs({ "a", "until", "lines" }) do
      local c = H.tcp("127.0.0.1", port, 10)
      assert(c:send(how .. "\n"))
      local left = share + 40 * 1024
      while left > 0 do
        local ok = c:send(("y"):rep(math.min(left, 4096)))
        if not ok then break end
        left = left - 4096
      end
      c:receive("*a")                  -- until the server cuts it
      c:close()
    end
    wait_output(proc, "lines\twrite", 10)
    local out, err = proc:stdout(), proc:stderr()
    proc:stop()
    assert.matches("a\ttoo large\n", out, 1, true)
    assert.matches("until\ttoo large\n", out, 1, true)
    assert.matches("lines\t[^\n]*conn:lines%(%): too large\n", out)
    for _, how in ipairs({ "a", "until", "lines" }) do
      assert.matches(how .. "\twrite\tnil\tclosed\n", out, 1, true)   -- cut already
    end
    assert.equals(3, cuts(proc, ("no end in the %d bytes a connection may hold"):format(share)), err)
  end)

  it("counts TLS connections' buffers too", function()
    local D = H.sh_cmd("mktemp -d " .. H.q(H.TMP .. "/tls.XXXXXX")):gsub("%s+$", "")
    local certs, rc = H.sh_cmd("sh spec/fixtures/tls_certs.sh " .. H.q(D) .. " 2>&1")
    assert(rc == 0 and certs:match("ok"), certs)
    -- --max-buffers 4: 4 MiB in all, 1 MiB a connection; 12 peers send
    -- 900 KiB each of a 1,000,000-byte read.
    local proc, addr = start(("--max-buffers 4 spec/fixtures/read_n.lua tls://127.0.0.1:0 tls %s %s")
      :format(H.q(D .. "/srv.pem"), H.q(D .. "/srv.key")))
    local port = select(2, H.hostport(addr))
    local peer, go = announce(port, 12, 1000000, H.big(900 * 1024, 64 * 1024), D .. "/ca.pem")
    wait_output(peer, "sent %d+ %d+", 60)
    if not H.ONEBYTE then wait_output(proc, "read %d+: out of memory", 30) end
    H.writefile(go, "")
    wait_output(peer, "closed", 30)
    local out, err = proc:stdout(), proc:stderr()
    proc:stop()
    os.execute("rm -rf " .. H.q(D))
    if not H.ONEBYTE then                -- 12 x 64 KiB fit in 4 MiB
      assert.is_true(select(2, out:gsub("read 1000000: out of memory", "")) >= 1, out)
      local n = 0
      for line in err:gmatch("[^\n]+") do
        if line:find("the most, with all buffers over their limit of 4194304, closing", 1, true) then
          assert.matches("INFO  conn #%d+ tls://127%.0%.0%.1:%d+: holds %d+ bytes", line)
          n = n + 1
        end
      end
      assert.is_true(n >= 1, err)
    end
  end)
end)
