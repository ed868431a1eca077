-- resolve_spec.lua -- host names: sockhost.resolve, sockhost.resolver (own
-- hosts file, own name servers), connect, listen, udp and udp:connect trying
-- each address in turn, listen/udp/sendto on names, and proof that look-ups
-- never block the loop (a name server served by a task on the same loop
-- answers them). Then against spec/fixtures/dns_server.py, a name server in
-- python3 that keeps some names unanswered, truncates others: look-ups a
-- silent server keeps never hold up one it answers, a truncated answer is
-- asked again over TCP, and a look-up pending at exit leaks nothing.
--
-- Every test that changes the resolver puts the system's back afterwards
-- (sockhost.resolver{}: no hosts, no nameservers -> /etc/hosts and
-- /etc/resolv.conf), so other spec files are unaffected.
local H = require "helpers"

-- The module, with every socket and listener a test makes closed after it.
local sh = H.tracked_sh(after_each)

local HOSTS = [[
# spec hosts file
127.0.0.2   twoaddr.spec.test
127.0.0.1   twoaddr.spec.test
127.0.0.1   here.spec.test
::1         six.spec.test
127.0.0.2   refusing.spec.test
::1         mixed.spec.test
127.0.0.1   mixed.spec.test
127.0.0.2   lastfails.spec.test
192.0.2.1   lastfails.spec.test
]]

local hosts_file
local function hosts_only()
  hosts_file = hosts_file or H.writefile(H.tmpname(".hosts"), HOSTS)
  assert(sh.resolver { hosts = hosts_file, nameservers = {} })
end

local function port_of(addr) return tonumber(addr:match(":(%d+)$")) end

-- A name server run by a task on our own loop. Names in 'answers' get an A
-- record after 'delay' seconds; others NXDOMAIN; AAAA queries an empty
-- answer; with 'tc', every answer has the TC bit (and nothing listens on
-- its TCP port). Every query's name and type is recorded (as sent:
-- resolvers randomise the letters' case).
local function fake_dns(answers, delay, tc)
  local queries = {}
  local srv = assert(sh.udp("udp://127.0.0.1:0", function(s, q, from)
    local i, labels = 13, {}
    while q:byte(i) ~= 0 do
      local n = q:byte(i)
      labels[#labels + 1] = q:sub(i + 1, i + n)
      i = i + n + 1
    end
    local qtype = string.unpack(">I2", q, i + 1)
    local name = table.concat(labels, ".")
    queries[#queries + 1] = { name = name, qtype = qtype, at = sh.now() }
    if delay and delay > 0 then sh.sleep(delay) end
    local ip = answers[name:lower()]
    local an = (ip and qtype == 1) and 1 or 0
    local flags = 0x8180 | (ip and 0 or 3) | (tc and 0x0200 or 0)
    local resp = q:sub(1, 2) .. string.pack(">I2I2I2I2I2", flags, 1, an, 0, 0)
      .. q:sub(13, i + 4)
    if an == 1 then
      local a, b, c, d = ip:match("(%d+)%.(%d+)%.(%d+)%.(%d+)")
      resp = resp .. string.pack(">I2I2I2I4I2BBBB", 0xC00C, 1, 1, 60, 4, a, b, c, d)
    end
    s:sendto(resp, from)
  end))
  return srv, srv:address():match("//(.*)"), queries
end

describe("name resolution", function()
  after_each(function()
    sh.resolver {}
  end)

  it("resolves localhost with the system configuration", function()
    local r = H.run(function() return table.pack(sh.resolve("localhost", { timeout = 5 })) end)
    assert.is_table(r[1], tostring(r[2]))
    assert.is_truthy(({ ["127.0.0.1"] = true, ["::1"] = true })[r[1][1]])
  end)

  it("answers from a hosts file of our own, in the file's order", function()
    hosts_only()
    local r = H.run(function()
      return { sh.resolve("here.spec.test"), sh.resolve("twoaddr.spec.test"), sh.resolve("six.spec.test"),
               sh.resolve("HERE.Spec.Test") }
    end)
    assert.same({ "127.0.0.1" }, r[1])
    assert.same({ "127.0.0.2", "127.0.0.1" }, r[2])
    assert.same({ "::1" }, r[3])
    assert.same({ "127.0.0.1" }, r[4])
  end)

  it("a name that does not resolve: nil and a message naming it, at once without name servers", function()
    hosts_only()
    local r = H.run(function()
      local t0 = sh.now()
      local t = table.pack(sh.resolve("nowhere.spec.test", { timeout = 5 }))
      return { t, sh.now() - t0 }
    end)
    assert.same({ n = 2, nil, "cannot resolve 'nowhere.spec.test': name not found" }, r[1])
    assert.is_true(r[2] < 0.5, "took " .. r[2])
  end)

  it("connect tries each address in turn: 127.0.0.2 refuses, 127.0.0.1 answers", function()
    hosts_only()
    local r = H.run(function()
      local order = sh.resolve("twoaddr.spec.test")
      local l = assert(sh.listen("tcp://127.0.0.1:0", function(c) c:write("hello from .1\n") end))
      local port = port_of(l:address())
      -- the first address really refuses: nothing listens on 127.0.0.2 at that port
      local direct = table.pack(sh.connect("tcp://127.0.0.2:" .. port))
      local byname = table.pack(sh.connect("tcp://refusing.spec.test:" .. port))
      local c, err = sh.connect("tcp://twoaddr.spec.test:" .. port)
      local r = { order, direct, byname, err }
      if c then r[5], r[6] = c:peer(), c:read("l"); c:close() end
      r[7] = port
      l:close()
      return r
    end)
    assert.same({ "127.0.0.2", "127.0.0.1" }, r[1])   -- the refusing one comes first
    assert.same({ n = 2, nil, "connection refused" }, r[2])
    assert.same({ n = 2, nil, "connection refused" }, r[3])
    assert.is_nil(r[4])
    assert.equals("tcp://127.0.0.1:" .. r[7], r[5])
    assert.equals("hello from .1", r[6])
  end)

  it("connect to a name that does not resolve: nil, \"cannot resolve 'name': ...\"", function()
    hosts_only()
    local r = H.run(function() return table.pack(sh.connect("tcp://nowhere.spec.test:80")) end)
    assert.same({ n = 2, nil, "cannot resolve 'nowhere.spec.test': name not found" }, r)
  end)

  it("localhost in an address needs no resolver entry", function()
    hosts_only()                          -- our hosts file has no localhost
    local r = H.run(function()
      local l = assert(sh.listen("tcp://localhost:0", function(c) c:write("lh\n") end))
      local c = assert(sh.connect("tcp://localhost:" .. port_of(l:address())))
      local line = c:read("l")
      local a = l:address()
      c:close(); l:close()
      return { a, line }
    end)
    assert.matches("^tcp://127%.0%.0%.1:%d+$", r[1])
    assert.equals("lh", r[2])
  end)

  it("listen, udp, sendto and udp connect accept host names", function()
    hosts_only()
    local r = H.run(function()
      local l = assert(sh.listen("tcp://here.spec.test:0", function(c) c:write("named\n") end))
      local c = assert(sh.connect("tcp://here.spec.test:" .. port_of(l:address())))
      local line = c:read("l")
      c:close()
      local u = assert(sh.udp("udp://here.spec.test:0"))
      local uport = port_of(u:address())
      local cli = sh.udp()
      local sent = table.pack(cli:sendto("to a name", "udp://here.spec.test:" .. uport))
      u:settimeout(2)
      local got = u:recvfrom()
      local conn = sh.udp()
      local connected = table.pack(conn:connect("udp://here.spec.test:" .. uport))
      conn:send("connected by name")
      local got2 = u:recvfrom()
      local r = { l:address(), line, u:address(), sent, got, connected, got2 }
      l:close(); u:close(); cli:close(); conn:close()
      return r
    end)
    assert.matches("^tcp://127%.0%.0%.1:%d+$", r[1])
    assert.equals("named", r[2])
    assert.matches("^udp://127%.0%.0%.1:%d+$", r[3])
    assert.same({ n = 1, true }, r[4])
    assert.equals("to a name", r[5])
    assert.same({ n = 1, true }, r[6])
    assert.equals("connected by name", r[7])
  end)

  it("listen on a name tries each address: the first is in use, the second is bound", function()
    hosts_only()
    local r = H.run(function()
      local order = sh.resolve("twoaddr.spec.test")
      local hold = assert(sh.listen("tcp://127.0.0.2:0", function() end))   -- 127.0.0.2:port taken
      local port = port_of(hold:address())
      local direct = table.pack(sh.listen("tcp://127.0.0.2:" .. port, function() end))
      local l, err = sh.listen("tcp://twoaddr.spec.test:" .. port, function(c) c:write("second\n") end)
      local r = { order, direct, err, port }
      if l then
        local c = assert(sh.connect(l:address()))
        r[5], r[6] = l:address(), c:read("l")
        c:close()
        l:close()
      end
      hold:close()
      return r
    end)
    assert.same({ "127.0.0.2", "127.0.0.1" }, r[1])   -- the one in use comes first
    assert.same({ n = 2, nil, "address in use" }, r[2])
    assert.is_nil(r[3])
    assert.equals("tcp://127.0.0.1:" .. r[4], r[5])
    assert.equals("second", r[6])
  end)

  it("sockhost.udp on a name tries each address: the first is in use, the second is bound", function()
    hosts_only()
    local r = H.run(function()
      -- 127.0.0.2:port taken by a LuaSocket socket: without SO_REUSEADDR on
      -- it, a second UDP bind there fails
      local hold = H.socket.udp()
      assert(hold:setsockname("127.0.0.2", 0))
      local _, port = hold:getsockname()
      local direct = table.pack(sh.udp("udp://127.0.0.2:" .. port))
      local u, err = sh.udp("udp://twoaddr.spec.test:" .. port)
      local r = { direct, u and u:address(), err, tonumber(port) }
      if u then u:close() end
      hold:close()
      return r
    end)
    assert.same({ n = 2, nil, "address in use" }, r[1])
    assert.is_nil(r[3])
    assert.equals("udp://127.0.0.1:" .. r[4], r[2])
  end)

  it("udp:connect on a name tries each address: an IPv4 socket cannot reach ::1, then 127.0.0.1", function()
    hosts_only()
    local r = H.run(function()
      local order = sh.resolve("mixed.spec.test")
      local srv = assert(sh.udp("udp://127.0.0.1:0"))
      local port = port_of(srv:address())
      local cli = assert(sh.udp("udp://127.0.0.1:0"))
      local direct = table.pack(cli:connect("udp://[::1]:" .. port))
      local byname = table.pack(cli:connect("udp://mixed.spec.test:" .. port))
      local r = { order, direct, byname, nil, nil, port }
      if byname[1] then
        r[4] = cli:peer()
        cli:send("by the second address")
        srv:settimeout(2)
        r[5] = srv:recvfrom()
      end
      srv:close()
      cli:close()
      return r
    end)
    assert.same({ "::1", "127.0.0.1" }, r[1])
    assert.is_nil(r[2][1])                  -- an IPv4 socket cannot connect to ::1
    assert.is_string(r[2][2])
    assert.same({ n = 1, true }, r[3])
    assert.equals("udp://127.0.0.1:" .. r[6], r[4])
    assert.equals("by the second address", r[5])
  end)

  it("listen on a name whose every address fails: the last address's error", function()
    hosts_only()
    local r = H.run(function()
      local hold = assert(sh.listen("tcp://127.0.0.2:0", function() end))
      local port = port_of(hold:address())
      local r = {
        sh.resolve("lastfails.spec.test"),
        table.pack(sh.listen("tcp://192.0.2.1:" .. port, function() end)),
        table.pack(sh.listen("tcp://lastfails.spec.test:" .. port, function() end)),
      }
      hold:close()
      return r
    end)
    assert.same({ "127.0.0.2", "192.0.2.1" }, r[1])
    -- 192.0.2.1 (TEST-NET-1) is no address of this host
    assert.same({ n = 2, nil, "address not available" }, r[2])
    -- 127.0.0.2 was in use, then 192.0.2.1 not available: the last one's error
    assert.same({ n = 2, nil, "address not available" }, r[3])
  end)

  it("listen, udp, sendto and udp connect on a name that does not resolve: nil, \"cannot resolve 'name': ...\"", function()
    hosts_only()
    local r = H.run(function()
      local cli = assert(sh.udp("udp://127.0.0.1:0"))
      local r = {
        table.pack(sh.listen("tcp://nowhere.spec.test:0", function() end)),
        table.pack(sh.udp("udp://nowhere.spec.test:0")),
        table.pack(cli:sendto("x", "udp://nowhere.spec.test:9")),
        table.pack(cli:connect("udp://nowhere.spec.test:9")),
      }
      cli:close()
      return r
    end)
    for i = 1, 4 do
      assert.same({ n = 2, nil, "cannot resolve 'nowhere.spec.test': name not found" }, r[i])
    end
  end)

  it("a name server on the same loop answers while a timer keeps ticking", function()
    local r = H.run(function()
      local dns, ns, queries = fake_dns({ ["slow.spec.test"] = "10.9.8.7" }, 0.3)
      hosts_only()
      assert(sh.resolver { hosts = hosts_file, nameservers = { ns } })
      local ticks = 0
      local timer = sh.every(0.02, function() ticks = ticks + 1 end)
      local t0 = sh.now()
      local got = table.pack(sh.resolve("slow.spec.test", { timeout = 5 }))
      local took, during = sh.now() - t0, ticks
      local missing = table.pack(sh.resolve("missing.spec.test", { timeout = 5 }))
      local from_file = sh.resolve("here.spec.test", { timeout = 5 })   -- the file still counts
      timer:cancel()
      dns:close()
      return { got, took, during, queries, missing, from_file }
    end)
    assert.same({ "10.9.8.7" }, r[1][1])
    -- the answer needs 0.3 s of the loop's time: the loop went on meanwhile
    assert.is_true(r[2] >= 0.28 and r[2] < 2, "took " .. r[2])
    assert.is_true(r[3] >= 8, "timer ticks while resolving: " .. r[3])
    local asked = {}
    for _, q in ipairs(r[4]) do
      if q.name:lower() == "slow.spec.test" then asked[q.qtype] = true end
    end
    assert.is_true(asked[1], "no A query reached the name server")
    assert.same({ n = 2, nil, "cannot resolve 'missing.spec.test': name not found" }, r[5])
    assert.same({ "127.0.0.1" }, r[6])
  end)

  it("a name server that never answers: the timeout applies, the loop keeps running, look-ups overlap", function()
    local r = H.run(function()
      local seen = 0
      local blackhole = assert(sh.udp("udp://127.0.0.1:0", function() seen = seen + 1 end))
      assert(sh.resolver { nameservers = { blackhole:address():match("//(.*)") } })
      local ticks = 0
      local timer = sh.every(0.05, function() ticks = ticks + 1 end)
      local t0 = sh.now()
      local other
      local task = sh.spawn(function()
        other = table.pack(sh.resolve("second.spec.test", { timeout = 0.6 }))
      end)
      local first = table.pack(sh.resolve("first.spec.test", { timeout = 0.6 }))
      task:join()
      local took = sh.now() - t0
      timer:cancel()
      -- an unreachable server (nothing on 127.0.0.1:1) ends the same way
      assert(sh.resolver { nameservers = { "127.0.0.1:1" } })
      local t1 = sh.now()
      local closed_port = table.pack(sh.resolve("third.spec.test", { timeout = 0.4 }))
      local took2 = sh.now() - t1
      blackhole:close()
      return { first, other, took, ticks, seen, closed_port, took2 }
    end)
    assert.same({ n = 2, nil, "cannot resolve 'first.spec.test': timeout" }, r[1])
    assert.same({ n = 2, nil, "cannot resolve 'second.spec.test': timeout" }, r[2])
    assert.is_true(r[3] >= 0.55 and r[3] < 1.1, "two 0.6 s look-ups at once took " .. r[3])
    assert.is_true(r[4] >= 8, "timer ticks while waiting: " .. r[4])
    assert.is_true(r[5] >= 2, "queries the name server saw: " .. r[5])
    assert.same({ n = 2, nil, "cannot resolve 'third.spec.test': timeout" }, r[6])
    assert.is_true(r[7] >= 0.35 and r[7] < 1.5, "took " .. r[7])
  end)

  it("connect to a name gives up at its timeout while the name server stays silent", function()
    local r = H.run(function()
      local blackhole = assert(sh.udp("udp://127.0.0.1:0", function() end))
      assert(sh.resolver { nameservers = { blackhole:address():match("//(.*)") } })
      local t0 = sh.now()
      local t = table.pack(sh.connect("tcp://silent.spec.test:80", { timeout = 0.4 }))
      local took = sh.now() - t0
      blackhole:close()
      return { t, took }
    end)
    assert.is_nil(r[1][1])
    assert.equals("timeout", r[1][2])
    assert.is_true(r[2] >= 0.35 and r[2] < 1.5, "took " .. r[2])
  end)

  it("sockhost.resolver{} puts the system configuration back", function()
    hosts_only()
    local r = H.run(function()
      local own = table.pack(sh.resolve("here.spec.test"))
      sh.resolver {}
      local sys = table.pack(sh.resolve("localhost", { timeout = 5 }))
      local gone = table.pack(sh.resolve("here.spec.test", { timeout = 2 }))
      return { own, sys, gone }
    end)
    assert.same({ "127.0.0.1" }, r[1][1])
    assert.is_table(r[2][1], tostring(r[2][2]))
    assert.is_nil(r[3][1])
    assert.matches("^cannot resolve 'here.spec.test': ", r[3][2])
  end)

  it("a NUL byte in a name is refused, never cut short (resolve, resolver)", function()
    hosts_only()
    local r = H.run(function()
      return { table.pack(pcall(sh.resolve, "here.spec.test\0evil.test", { timeout = 5 })),
               table.pack(pcall(sh.resolve, "here\0.spec.test", { timeout = 5 })),
               table.pack(pcall(sh.resolver, { hosts = hosts_file .. "\0junk" })),
               table.pack(pcall(sh.resolver, { nameservers = { "127.0.0.1\0junk" } })) }
    end)
    assert.same({ n = 3, true, nil, "bad address 'here.spec.test\\x00evil.test': NUL byte in name" }, r[1])
    assert.same({ n = 3, true, nil, "bad address 'here\\x00.spec.test': NUL byte in name" }, r[2])
    assert.is_false(r[3][1])
    assert.matches("NUL byte in hosts file path", r[3][2])
    assert.is_false(r[4][1])
    assert.matches("bad name server '127%.0%.0%.1\\x00junk'", r[4][2])
  end)

  it("sockhost.resolver checks its arguments", function()
    local missing = H.tmpname(".nohosts")
    local ok1, e1 = pcall(sh.resolver, { hosts = missing })
    local ok3, e3 = pcall(sh.resolver, { bogus = 1 })
    assert.is_false(ok1)
    assert.matches("cannot read hosts file", e1)
    assert.is_false(ok3)
    assert.is_string(e3)
    local bad = {
      { { nameservers = { "not an address" } }, "bad name server 'not an address'" },
      { { timeout = 0 }, "'timeout' must be above 0 and at most 60" },
      { { timeout = 61 }, "'timeout' must be above 0 and at most 60" },
      { { attempts = 0 }, "'attempts' must be an integer from 1 to 10" },
      { { attempts = 1.5 }, "'attempts' must be an integer from 1 to 10" },
      { { max_inflight = 16385 }, "'max_inflight' must be an integer from 1 to 16384" },
    }
    for _, case in ipairs(bad) do
      local ok, e = pcall(sh.resolver, case[1])
      assert.is_false(ok)
      assert.equals("sockhost.resolver: " .. case[2], e:match("sockhost%.resolver: .*$"))
    end
    assert.is_true(sh.resolver { timeout = 60, attempts = 10, max_inflight = 16384 })
  end)
end)

-- spec/fixtures/dns_server.py on 127.0.0.1 (UDP and TCP): okN names
-- answered at once (10.x.y.z from N), halfN the same without AAAA answers,
-- silent... never answered, bigN truncated over UDP and N A records over
-- TCP, fail... SERVFAIL. Returns the process and "127.0.0.1:port".
local function dns_server()
  local p = H.launch(("timeout -s KILL 40 python3 -u %s 35"):format(
    H.q(H.ROOT .. "/spec/fixtures/dns_server.py")), "dns_server.py")
  local port = p:wait_output("port (%d+)")
  return p, "127.0.0.1:" .. port
end

-- How many questions the fixture has logged so far (to the hundred).
local function questions_seen(p)
  local n = 0
  for m in p:stdout():gmatch("seen (%d+)") do n = tonumber(m) end
  return n
end

describe("name servers that keep look-ups, truncate or fail", function()
  local dns, ns
  before_each(function() dns, ns = dns_server() end)
  after_each(function()
    sh.resolver {}
    dns:stop()
  end)

  it("an answerable name resolves promptly beside 1,000 look-ups the server never answers", function()
    local N = 1000
    local r = H.run(function()
      assert(sh.resolver { nameservers = { ns } })
      local ended, cancelled = 0, 0
      for i = 1, N do
        sh.spawn(function()
          local _, err = sh.resolve("silent" .. i .. ".spec.test", { timeout = 8 })
          ended = ended + 1
          if err == ("cannot resolve 'silent%d.spec.test': cancelled"):format(i) then
            cancelled = cancelled + 1
          end
        end)
      end
      -- their 2,000 questions (A and AAAA) reach the server first
      local deadline = sh.now() + 3
      repeat sh.sleep(0.05) until questions_seen(dns) >= 2 * N or sh.now() > deadline
      local seen = questions_seen(dns)
      local t0 = sh.now()
      local one = table.pack(sh.resolve("ok7.spec.test", { timeout = 3 }))
      local took = sh.now() - t0
      local many, tasks = {}, {}
      t0 = sh.now()
      for i = 1, 50 do
        tasks[i] = sh.spawn(function() many[i] = sh.resolve("ok" .. (1000 + i) .. ".spec.test", { timeout = 3 }) end)
      end
      for i = 1, 50 do tasks[i]:join() end
      local took_many = sh.now() - t0
      local ended_meanwhile = ended
      -- a new resolver: the silent server's look-ups end "cancelled"
      assert(sh.resolver { nameservers = { ns } })
      deadline = sh.now() + 3
      while ended < N and sh.now() < deadline do sh.sleep(0.02) end
      return { one = one, took = took, many = many, took_many = took_many, seen = seen,
               ended_meanwhile = ended_meanwhile, ended = ended, cancelled = cancelled }
    end, 25)
    assert.same({ n = 1, { "10.0.0.7" } }, r.one)
    assert.is_true(r.took < 0.5, ("took %.3f s beside %d stuck (server saw %d questions)"):format(r.took, N, r.seen))
    for i = 1, 50 do
      local n = 1000 + i
      assert.same({ ("10.0.%d.%d"):format(n >> 8, n & 255) }, r.many[i])
    end
    assert.is_true(r.took_many < 1, ("50 more at once took %.3f s"):format(r.took_many))
    assert.equals(0, r.ended_meanwhile)        -- the stuck ones were still waiting
    assert.equals(N, r.ended)
    assert.equals(N, r.cancelled)
  end)

  it("a question whose try ran out of time goes to the back: one behind it waits one try, not all", function()
    local r = H.run(function()
      -- two places: the silent name's A and AAAA questions take both
      assert(sh.resolver { nameservers = { ns }, max_inflight = 2, timeout = 0.4, attempts = 5 })
      local stuck, t_stuck
      local task = sh.spawn(function()
        t_stuck = sh.now()
        stuck = table.pack(sh.resolve("silent.spec.test", { timeout = 5 }))
      end)
      repeat sh.sleep(0.01) until t_stuck     -- its questions are out
      local got = table.pack(sh.resolve("ok9.spec.test", { timeout = 1.9 }))
      local took = sh.now() - t_stuck
      local before_new = stuck
      assert(sh.resolver {})
      task:join()
      return { got, took, before_new, stuck }
    end)
    assert.same({ n = 1, { "10.0.0.9" } }, r[1])
    -- it waited for a place until the silent name's first try ran out
    -- (0.4 s after that began), and no longer: its five tries take 2 s
    assert.is_true(r[2] >= 0.35 and r[2] < 1.0, ("answered %.3f s after the silent one began"):format(r[2]))
    assert.is_nil(r[3])
    assert.same({ n = 2, nil, "cannot resolve 'silent.spec.test': cancelled" }, r[4])
  end)

  it("a truncated answer is asked again over TCP", function()
    local r = H.run(function()
      assert(sh.resolver { nameservers = { ns } })
      local t0 = sh.now()
      local got = table.pack(sh.resolve("big40.spec.test", { timeout = 3 }))
      return { got, sh.now() - t0 }
    end)
    local want = {}
    for i = 1, 16 do want[i] = "10.1.0." .. i end     -- 40 records, 16 kept
    assert.same({ n = 1, want }, r[1])
    assert.is_true(r[2] < 1, ("took %.3f s"):format(r[2]))
    local log = dns:stdout():lower()
    assert.matches("udp big40%.spec%.test 1\n", log)
    assert.matches("tcp big40%.spec%.test 1\n", log)
  end)

  it("an A answer does not wait more than 1 s for an AAAA answer that never comes", function()
    local r = H.run(function()
      assert(sh.resolver { nameservers = { ns } })
      local t0 = sh.now()
      local got = table.pack(sh.resolve("half5.spec.test", { timeout = 4 }))
      return { got, sh.now() - t0 }
    end)
    assert.same({ n = 1, { "10.0.0.5" } }, r[1])
    assert.is_true(r[2] >= 0.9 and r[2] < 2.5, ("took %.3f s"):format(r[2]))
  end)

  it("SERVFAIL from every try: temporary failure, without waiting for the timeout", function()
    local r = H.run(function()
      assert(sh.resolver { nameservers = { ns } })
      local t0 = sh.now()
      local got = table.pack(sh.resolve("fail.spec.test", { timeout = 4 }))
      return { got, sh.now() - t0 }
    end)
    assert.same({ n = 2, nil, "cannot resolve 'fail.spec.test': temporary failure" }, r[1])
    assert.is_true(r[2] < 1, ("took %.3f s"):format(r[2]))
  end)
end)

describe("a truncated answer and no TCP", function()
  after_each(function() sh.resolver {} end)

  it("ends with name server failure once the tries are spent", function()
    local r = H.run(function()
      -- the fake server's port number held for TCP without a listener
      -- (whoever else may listen there): a connection there is refused
      local dns, addr, queries, hold
      for _ = 1, 20 do
        dns, addr, queries = fake_dns({ ["big.spec.test"] = "10.9.8.7" }, 0, true)
        hold = H.socket.tcp()
        if hold:bind("127.0.0.1", port_of(addr)) then break end
        hold:close()
        hold = nil
        dns:close()
      end
      assert(hold, "no port free for both UDP and TCP")
      assert(sh.resolver { nameservers = { addr }, attempts = 2, timeout = 0.5 })
      local t0 = sh.now()
      local got = table.pack(sh.resolve("big.spec.test", { timeout = 4 }))
      local took = sh.now() - t0
      dns:close()
      hold:close()
      local a = 0
      for _, q in ipairs(queries) do if q.qtype == 1 then a = a + 1 end end
      return { got, took, a }
    end)
    assert.same({ n = 2, nil, "cannot resolve 'big.spec.test': name server failure" }, r[1])
    assert.is_true(r[2] < 1, ("took %.3f s"):format(r[2]))
    assert.equals(2, r[3])                   -- each of the two tries asked over UDP first
  end)
end)

describe("a look-up pending when the program stops", function()
  it("leaks nothing (checked under the sanitizers and valgrind)", function()
    if not os.getenv("SOCKHOST_SANITIZED") and not H.VALGRIND then
      pending("only a leak checker sees it: make sanitize, make valgrind")
      return
    end
    local out, err, rc = H.exec(H.q(H.ROOT .. "/spec/fixtures/resolve_pending.lua"), { timeout = 60 })
    assert.equals(0, rc, err)
    assert.equals("stopping with 40 look-ups pending\n", out)
    assert.not_matches("LeakSanitizer", err)
  end)
end)
