-- sockhost.redis against a real redis-server (started by this file), and
-- against fake ones (sockhost listeners in this process) that answer
-- garbage.
local H = require "helpers"
local RS = require "redis_server"
local sh = H.sh
local redis = require "sockhost.redis"

local function rss_kib()
  return tonumber((H.readfile("/proc/self/status") or ""):match("VmRSS:%s*(%d+)"))
end

-- H.run, with every client, pool, subscriber, reader and listener made
-- through 'keep' closed afterwards, even when the test fails half-way (a
-- subscriber left open would keep the next test's loop running).
local made = {}
local function keep(obj, ...)
  if obj then made[#made + 1] = obj end
  return obj, ...
end
local function run(fn, timeout)
  return H.run(function()
    local ok, err = pcall(fn)
    for i = #made, 1, -1 do pcall(made[i].close, made[i]) made[i] = nil end
    if not ok then error(err, 0) end
  end, timeout)
end
local function kredis(name)
  return function(...) return keep(redis[name](...)) end
end
local rconnect, rpool, rsub, rstream = kredis("connect"), kredis("pool"), kredis("subscriber"), kredis("stream_reader")

describe("sockhost.redis", function()
  local srv
  setup(function() srv = RS.start() end)
  teardown(function() srv:stop() end)

  local function connect(path, opts)
    return assert(rconnect(srv:url(path), opts))
  end

  it("runs commands as methods and through call; nil replies are redis.null", function()
    run(function()
      local r = connect()
      local key = "k" .. math.random(1e9)
      assert.equals("OK", r:set(key, "v1"))
      assert.equals("v1", r:get(key))
      assert.equals("v1", r:call("GET", key))
      assert.equals(redis.null, r:get(key .. "missing"))
      assert.equals(5, r:incrby(key .. "n", 5))
      assert.equals(6, r:incr(key .. "n"))
      assert.equals(2, r:hset(key .. "h", "a", 1, "b", "two"))
      assert.equals("1", r:hget(key .. "h", "a"))
      assert.same({ a = "1", b = "two" }, r:hgetall(key .. "h"))
      assert.equals(1, r:expire(key, 100))
      local ttl = r:ttl(key)
      assert.is_true(ttl > 90 and ttl <= 100)
      assert.equals(3, r:del(key, key .. "n", key .. "h"))
      assert.equals(2, r:rpush(key .. "l", "x", 2.5))
      assert.same({ "x", "2.5" }, r:lrange(key .. "l", 0, -1))
      assert.equals("PONG", r:ping())
      assert.matches("id=%d+ addr=127%.0%.0%.1", r:client_info())      -- CLIENT INFO
      local bin = "a\0b\r\n" .. ("z"):rep(100000)
      assert.equals("OK", r:set(key, bin))
      assert.equals(bin, r:get(key))
      r:close()
      assert.same({ nil, "closed" }, { r:get(key) })
    end)
  end)

  it("sends a pipeline in one write and returns the replies in order", function()
    run(function()
      local r = connect()
      local out = assert(r:pipeline(function(p)
        p:set("p1", "a")
        p:get("p1")
        p:call("INCR", "p1")      -- a server error, in its place
        p:del("p1")
        p:get("p1")
      end))
      assert.equals(5, out.n)
      assert.equals("OK", out[1])
      assert.equals("a", out[2])
      assert.matches("^ERR value is not an integer", redis.error_message(out[3]))
      assert.equals(1, out[4])
      assert.equals(redis.null, out[5])
      assert.is_nil(redis.error_message(out[1]))
      local p = r:pipeline()
      for i = 1, 100 do p:set("pk" .. i, i) end
      for i = 1, 100 do p:get("pk" .. i) end
      out = assert(p:run())
      assert.equals(200, out.n)
      for i = 1, 100 do assert.equals(tostring(i), out[100 + i]) end
      -- one write: the server saw them as one batch (the counter of commands moves by 200 + 1)
      r:close()
    end)
  end)

  it("runs MULTI/EXEC transactions; a rejected one is a server error; WATCH conflicts give redis.null", function()
    run(function()
      local r, other = connect(), connect()
      local res = assert(r:multi(function(tx)
        tx:set("t1", 10)
        tx:incr("t1")
        tx:get("t1")
      end))
      assert.same({ "OK", 11, "11", n = 3 }, res)
      local v, err, kind = r:multi(function(tx)
        tx:set("t1", 1)
        tx:call("NOSUCHCMD")
      end)
      assert.is_nil(v)
      assert.matches("^EXECABORT", err)
      assert.equals("server", kind)
      assert.equals("11", r:get("t1"))           -- nothing of it ran
      assert.equals("OK", r:watch("t1"))
      assert.equals("OK", other:set("t1", 99))
      assert.equals(redis.null, r:multi(function(tx) tx:set("t1", 5) end))
      assert.equals("99", r:get("t1"))
      -- a run-time error inside EXEC is in its place
      res = assert(r:multi(function(tx) tx:lpush("t1", "x") tx:get("t1") end))
      assert.matches("^WRONGTYPE", redis.error_message(res[1]))
      assert.equals("99", res[2])
      r:close() other:close()
    end)
  end)

  it("tells server errors (nil, msg, 'server') from transport errors (nil, err)", function()
    run(function()
      local r = connect(nil, { timeout = 0.3 })
      local v, err, kind = r:call("NOSUCH", "x")
      assert.is_nil(v)
      assert.matches("^ERR unknown command", err)
      assert.equals("server", kind)
      r:set("str", "x")
      v, err, kind = r:lpush("str", "y")
      assert.same({ nil, "server" }, { v, kind })
      assert.matches("^WRONGTYPE", err)
      assert.equals("x", r:get("str"))         -- still usable after a server error
      -- a timeout: BLPOP waits 2 s, the command timeout is 0.3 s
      local t0 = sh.now()
      assert.same({ nil, "timeout" }, { r:blpop("nolist", 2) })
      assert.is_true(sh.now() - t0 < 1)
      assert.same({ nil, "closed" }, { r:get("str") })   -- out of step: closed
      -- the server closes the connection
      local r2 = connect()
      local id = r2:client_id()
      local killer = connect()
      assert.equals(1, killer:client_kill("ID", id))
      assert.same({ nil, "closed" }, { r2:get("str") })
      killer:close()
      -- connect errors
      local port = H.free_port()
      assert.same({ nil, "connection refused" }, { redis.connect("redis://127.0.0.1:" .. port) })
    end)
  end)

  it("raises on programmer errors: bad arguments and options", function()
    run(function()
      local r = connect()
      assert.has_error(function() r:set("k", {}) end)
      assert.has_error(function() r:set("k", true) end)
      assert.has_error(function() redis.connect(srv:url(), { nosuch = 1 }) end)
      assert.has_error(function() redis.connect(srv:url(), { ca = "x" }) end)   -- TLS option on redis://
      assert.has_error(function() r:multi() end)
      r:close()
    end)
  end)

  it("parses urls, and says why one is bad", function()
    local u = assert(redis.parse_url("redis://us%40er:p%3Ass@localhost:7000/3"))
    assert.same({ addr = "tcp://localhost:7000", tls = false, username = "us@er", password = "p:ss", db = 3 }, u)
    u = assert(redis.parse_url("rediss://:secret@[::1]/2"))
    assert.same({ addr = "tls://[::1]:6379", tls = true, password = "secret", db = 2 }, u)
    u = assert(redis.parse_url("unix:/tmp/r.sock?db=4&password=x"))
    assert.same({ addr = "unix:/tmp/r.sock", tls = false, password = "x", db = 4 }, u)
    for url, why in pairs {
      ["localhost:6379"] = "no scheme", ["http://x"] = "not redis, rediss or unix",
      ["redis://:1"] = "no host", ["redis://h:99999"] = "bad port", ["redis://h:1/x"] = "bad db",
      ["unix:/x?db=a"] = "bad db", ["unix:/x?nosuch=1"] = "unknown parameter 'nosuch'",
    } do
      assert.same({ nil, "bad url: " .. why }, { redis.parse_url(url) }, url)
      run(function() assert.same({ nil, "bad url: " .. why }, { redis.connect(url) }, url) end)
    end
  end)

  it("AUTHs on connect (password, user and password), and reports a refused one", function()
    local sec = RS.start("--requirepass s3cr3t")
    sec.password = "s3cr3t"
    local ok, e = pcall(run, function()
      local r = assert(rconnect(sec:url()))
      local v, err, kind = r:get("x")
      assert.same({ nil, "server" }, { v, kind })
      assert.matches("^NOAUTH", err)
      r:close()
      r = assert(rconnect(("redis://:s3cr3t@127.0.0.1:%d"):format(sec.port)))
      assert.equals("OK", r:set("x", 1))
      r:close()
      r = assert(rconnect(("redis://default:s3cr3t@127.0.0.1:%d"):format(sec.port)))
      assert.equals("1", r:get("x"))
      r:close()
      r = assert(rconnect(sec:url(), { password = "s3cr3t" }))
      assert.equals("1", r:get("x"))
      r:close()
      v, err, kind = redis.connect(("redis://:wrong@127.0.0.1:%d"):format(sec.port))
      assert.same({ nil, "server" }, { v, kind })
      assert.matches("^WRONGPASS", err)
    end)
    sec:stop()
    assert(ok, e)
  end)

  it("speaks TLS with rediss:// and the TLS options; an unknown CA fails the handshake", function()
    local D = H.tmpname(".pki")
    assert(os.execute("mkdir -p " .. H.q(D)))
    local _, rc = H.sh_cmd("sh spec/fixtures/tls_certs.sh " .. H.q(D) .. " 2>&1")
    assert.equals(0, rc)
    local tls = RS.start(nil, nil, D)
    local ok, e = pcall(run, function()
      local url = ("rediss://127.0.0.1:%d/2"):format(tls.port)
      local r = assert(rconnect(url, { ca = D .. "/ca.pem" }))
      assert.equals("OK", r:set("t", "over tls"))
      assert.equals("over tls", r:get("t"))
      assert.matches(" db=2 ", r:client_info())
      local v, err, kind = redis.connect(url, { ca = D .. "/ca2.pem", connect_timeout = 3 })
      assert.same({ nil, nil }, { v, kind })
      assert.matches("^unknown CA", err)
      -- plain RESP to the TLS port: no reply that parses, never a raise
      v, err = redis.connect(("redis://127.0.0.1:%d"):format(tls.port), { timeout = 1 })
      if v then
        v, err = v:ping()
        assert.is_nil(v)
        assert.is_string(err)
      end
    end)
    tls:stop()
    assert(ok, e)
  end)

  it("SELECTs the db of the url, over TCP and over a Unix socket", function()
    run(function()
      local r3 = connect("/3")
      assert.matches(" db=3 ", r3:client_info())
      assert.equals("OK", r3:set("dbkey", "three"))
      local r0 = connect()
      assert.equals(redis.null, r0:get("dbkey"))
      local u = assert(rconnect("unix:" .. srv.unix .. "?db=3"))
      assert.equals("three", u:get("dbkey"))
      assert.matches("addr=" .. srv.unix:gsub("%p", "%%%0"), u:client_info())
      local u0 = assert(rconnect("unix:" .. srv.unix))
      assert.equals(redis.null, u0:get("dbkey"))
      local r5 = connect(nil, { db = 5 })
      assert.matches(" db=5 ", r5:client_info())
      local v, err, kind = redis.connect(srv:url("/99999"))
      assert.same({ nil, "server" }, { v, kind })
      assert.matches("^ERR DB index is out of range", err)
      for _, c in ipairs { r3, r0, u, u0, r5 } do c:close() end
    end)
  end)

  it("a pool of 10 serves 200 tasks: never more than 10 connections, each reply to its task", function()
    run(function()
      local before = connect()
      local base = assert(before:info("clients"):match("connected_clients:(%d+)"))
      local p = assert(rpool(srv:url(), { size = 10, wait_timeout = 10 }))
      local most, done, bad = 0, 0, {}
      local sampling = true
      local sampler = sh.spawn(function()
        while sampling do
          local n = tonumber(before:info("clients"):match("connected_clients:(%d+)")) - tonumber(base)
          if n > most then most = n end
          sh.sleep(0.002)
        end
      end)
      local tasks = {}
      for i = 1, 200 do
        tasks[i] = sh.spawn(function()
          for round = 1, 5 do
            local key, val = "pool:" .. i, ("task %d round %d"):format(i, round)
            local ok, err = p:set(key, val)
            if ok ~= "OK" then bad[#bad + 1] = tostring(err) end
            sh.sleep(0)
            local got = p:get(key)
            if got ~= val then bad[#bad + 1] = ("%s: %s"):format(key, tostring(got)) end
          end
          done = done + 1
        end)
      end
      for _, t in ipairs(tasks) do t:join() end
      sampling = false
      sampler:join()
      assert.same({}, bad)
      assert.equals(200, done)
      local st = p:stats()
      assert.is_true(st.created <= 10, "created " .. st.created)
      assert.is_true(most >= 2 and most <= 10, "most " .. most)
      assert.equals(0, st.busy)
      -- the connection a failed call used is not given back
      local id = p:client_id()
      before:client_kill("ID", id)
      local ids = {}
      for _ = 1, 20 do ids[#ids + 1] = p:client_id() end      -- one of them meets the killed one
      for _, x in ipairs(ids) do assert.is_true(x == nil or x ~= id) end
      p:close()
      before:close()
    end, 30)
  end)

  it("a pool never gives back a connection in a transaction or subscribed", function()
    run(function()
      local p = assert(rpool(srv:url(), { size = 2 }))
      local id1 = p:client_id()
      assert.equals("OK", p:call("MULTI"))                   -- discarded afterwards
      local res = assert(p:multi(function(tx) tx:set("pm", 1) tx:get("pm") end))
      assert.same({ "OK", "1", n = 2 }, res)
      local ids = {}
      for _ = 1, 4 do ids[p:client_id()] = true end
      assert.is_nil(ids[id1])                                -- the MULTI one is gone
      local st = p:stats()
      assert.is_true(st.closed >= 1)
      assert.equals("1", p:get("pm"))                         -- not queued in a transaction
      p:close()
    end)
  end)

  it("subscribes to channels and patterns; unsubscribes", function()
    run(function()
      local pub = connect()
      local sub = assert(rsub(srv:url()))
      assert.is_true(sub:subscribe("news", "sport"))
      assert.is_true(sub:psubscribe("wx.*"))
      assert.equals(1, pub:publish("news", "hello"))
      assert.equals(1, pub:publish("wx.paris", "rain"))
      assert.equals(1, pub:publish("sport", "goal"))
      assert.equals(0, pub:publish("other", "nobody"))
      assert.same({ "message", "news", "hello" }, { sub:next(2) })
      assert.same({ "pmessage", "wx.paris", "rain", "wx.*" }, { sub:next(2) })
      assert.same({ "message", "sport", "goal" }, { sub:next(2) })
      assert.same({ nil, "timeout" }, { sub:next(0.1) })
      assert.is_true(sub:unsubscribe("news"))
      assert.equals(0, pub:publish("news", "gone"))
      assert.equals(1, pub:publish("sport", "again"))
      assert.same({ "message", "sport", "again" }, { sub:next(2) })
      sub:close()
      assert.same({ nil, "closed" }, { sub:next(1) })
      pub:close()
    end)
  end)

  it("a subscriber that stops reading keeps max_queued messages and counts the dropped", function()
    run(function()
      local pub = connect()
      -- redis-server cuts a subscriber whose output buffer passes 32 MB (its
      -- pubsub limit): the flood must meet our bound, not redis's (under
      -- the sanitizers the subscriber reads slowly enough for redis's)
      assert(pub:call("CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0"))
      local sub = assert(rsub(srv:url(), { max_queued = 10 }))
      assert(sub:subscribe("flood"))
      local payload = ("x"):rep(H.big(10000, 1000))
      collectgarbage()
      local before = collectgarbage("count")
      local n = H.big(5000, 300)
      for c = 0, n - 1, 100 do
        local p = pub:pipeline()
        for i = c + 1, math.min(c + 100, n) do p:publish("flood", i .. ":" .. payload) end
        assert(p:run())
      end
      assert.equals(1, pub:publish("flood", "last"))
      local deadline = sh.now() + 10
      while sh.now() < deadline and sub:dropped() < n + 1 - 10 do sh.sleep(0.01) end
      assert.equals(n + 1 - 10, sub:dropped())
      assert.equals(10, sub:queued())
      collectgarbage()
      local grew = collectgarbage("count") - before          -- KiB: 10 messages queued
      -- (all of them kept would be n x the payload: 50 MB, or 300 KB under the shim)
      assert.is_true(grew < H.big(2 * 1024, 100), "the Lua heap grew " .. grew .. " KiB")
      for i = n - 8, n do
        local kind, ch, msg = sub:next(1)
        assert.same({ "message", "flood", i .. ":" .. payload }, { kind, ch, msg })
      end
      assert.same({ "message", "flood", "last" }, { sub:next(1) })
      sub:close()
      pub:close()
    end, 30)
  end)

  it("reads a stream with XREAD BLOCK and resumes after its connection is cut, losing nothing", function()
    run(function()
      local r = connect()
      local key = "st" .. math.random(1e9)
      local ids = {}
      for i = 1, 3 do ids[i] = r:xadd(key, "*", "n", i) end
      local rd = assert(rstream(r, key, { start_id = "0", block = 0.5, count = 2 }))
      for i = 1, 2 do
        local id, fields = rd:next(2)
        assert.equals(ids[i], id)
        assert.same({ n = tostring(i) }, fields)
      end
      -- cut every other client's connection (the reader's), add meanwhile
      assert.is_true(r:client_kill("TYPE", "normal", "SKIPME", "yes") >= 1)
      for i = 4, 6 do ids[i] = r:xadd(key, "*", "n", i) end
      for i = 3, 6 do
        local id, fields = rd:next(3)
        assert.equals(ids[i], id)
        assert.same({ n = tostring(i) }, fields)
      end
      assert.same({ nil, "timeout" }, { rd:next(0.2) })
      -- a reader from "$" sees only what comes later
      local later = assert(rstream(srv:url(), key, { block = 0.2 }))
      local waiter = sh.spawn(function() return later:next(3) end)
      sh.sleep(0.1)
      local id7 = r:xadd(key, "*", "n", 7)
      assert.equals(id7, (waiter:join()))
      later:close()
      rd:close()
      r:close()
    end)
  end)
end)

describe("sockhost.redis against a redis-server killed and started again", function()
  it("the subscriber connects again within 2 s, subscribes again, hands a gap, then messages flow", function()
    local srv = RS.start()
    local ok, e = pcall(run, function()
      local sub = assert(rsub(srv:url(), { reconnect_max = 0.5 }))
      assert(sub:subscribe("ch"))
      assert(sub:psubscribe("p.*"))
      local pub = assert(rconnect(srv:url()))
      pub:publish("ch", "one")
      assert.same({ "message", "ch", "one" }, { sub:next(2) })
      srv:kill()
      sh.sleep(0.3)
      srv:launch()                               -- same port
      local t0 = sh.now()
      local kind, _, why = sub:next(5)
      assert.equals("gap", kind)
      assert.equals("closed", why)
      assert.is_true(sh.now() - t0 < 2, "gap after " .. (sh.now() - t0))
      pub = assert(rconnect(srv:url()))
      assert.equals(2, pub:publish("ch", "two") + pub:publish("p.x", "three"))
      assert.same({ "message", "ch", "two" }, { sub:next(2) })
      assert.same({ "pmessage", "p.x", "three", "p.*" }, { sub:next(2) })
      sub:close()
      pub:close()
    end, 20)
    srv:stop()
    assert(ok, e)
  end)
end)

describe("sockhost.redis against a fake server that answers garbage", function()
  -- A sockhost peer that reads one command and answers 'reply' (then
  -- closes, if told to).
  local function fake(reply, close)
    local lst = keep(assert(sh.listen("tcp://127.0.0.1:0", function(conn)
      local resp = require "sockhost.resp"
      while resp.read_command(conn) do
        conn:write(reply)
        if close then conn:close() return end
      end
    end)))
    local port = select(2, H.hostport(lst:address()))
    return lst, "redis://127.0.0.1:" .. port
  end

  for _, case in ipairs {
    { "an unknown type", "hello\r\n", "bad reply: unknown type 'h'" },
    { "a bad bulk length", "$abc\r\n", "bad reply: invalid bulk length" },
    { "closed mid-reply", "$10\r\nabc", "closed", true },
    { "closed before a reply", "", "closed", true },
    { "a 1 GB bulk length", "$1000000000\r\n", "bad reply: bulk too large" },
    { "a huge array", "*100000000\r\n", "bad reply: too many elements" },
    { "no CRLF after a bulk", "$3\r\nabcXY", "bad reply: expected CRLF after bulk" },
    { "a line over 64 KiB", "+" .. ("x"):rep(70000) .. "\r\n", "bad reply: line too long" },
  } do
    it(case[1] .. ": nil, '" .. case[3] .. "', no raise, memory bounded", function()
      run(function()
        local lst, url = fake(case[2], case[4])
        local r = assert(rconnect(url, { timeout = 2 }))
        local before = rss_kib()
        local t0 = sh.now()
        local v, err, kind = r:get("x")
        assert.same({ nil, case[3] }, { v, err })
        assert.is_nil(kind)
        assert.is_true(sh.now() - t0 < H.big(1.5, 10))   -- (70 KB a byte a syscall, under the shim)
        assert.is_true(rss_kib() - before < 20 * 1024)
        assert.same({ nil, "closed" }, { r:get("x") })
        -- in a pipeline, in a pool, in a subscriber's connect
        r = assert(rconnect(url, { timeout = 2 }))
        assert.same({ nil, case[3] }, { r:pipeline(function(p) p:get("a") p:get("b") end) })
        local p = assert(rpool(url, { size = 2 }))
        assert.same({ nil, case[3] }, { p:get("x") })
        assert.equals(0, p:stats().idle)
        p:close()
        lst:close()
      end)
    end)
  end

  it("an AUTH answered with half a reply fails connect with nil, 'timeout'", function()
    run(function()
      local lst, url = fake("*2\r\n:1\r\n")
      assert.same({ nil, "timeout" },
        { redis.connect(url:gsub("//", "//:pw@"), { timeout = 0.5 }) } )
      lst:close()
    end)
  end)
end)
