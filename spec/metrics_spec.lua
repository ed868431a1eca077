-- --metrics: /metrics in the Prometheus text format, read by independent
-- peers: prometheus_client's own parser (Debian's python3), and a real
-- prometheus server scraping a -w 2 service. Counters summed across
-- workers, and never going back when a worker is killed.
local H = require "helpers"
local json = require "cjson"

local PY = "/usr/bin/python3"

-- GET /metrics: status line, headers, body.
local function scrape(port)
  local c = H.tcp("127.0.0.1", port, H.ONEBYTE and 30 or 5)   -- (a byte a read under the shim)
  assert(c:send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
  local all, err, partial = c:receive("*a")
  c:close()
  assert(all, ("GET /metrics: %s after %d bytes"):format(tostring(err), partial and #partial or 0))
  local head, body = all:match("^(.-)\r\n\r\n(.*)$")
  return head, body
end

-- The samples of the text, as prometheus_client parses them.
local function parse(text)
  local f = H.writefile(H.tmpname(".prom"), text)
  local out, rc = H.sh_cmd(PY .. " spec/fixtures/prom_parse.py " .. H.q(f))
  assert.equals(0, rc, out)
  return json.decode(out)
end

local function value(samples, name, labels)
  for _, s in ipairs(samples) do
    if s.name == name then
      local ok = true
      for k, v in pairs(labels or {}) do ok = ok and s.labels[k] == v end
      if ok then return s.value, s end
    end
  end
end

local function lines(port, n, text)
  local c = H.tcp("127.0.0.1", port)
  for _ = 1, n do
    assert(c:send(text .. "\n"))
    assert.equals(text, c:receive("*l"))
  end
  c:close()
end

local function who(port)
  local c = H.tcp("127.0.0.1", port)
  assert(c:send("who\n"))
  local w, p = c:receive("*l"):match("^worker (%d+) pid (%d+)$")
  c:close()
  return tonumber(w), tonumber(p)
end

-- Wait (bounded) until f() is true; returns it.
local function eventually(f, secs)
  local deadline = H.socket.gettime() + (secs or 10)
  repeat
    local v = f()
    if v then return v end
    H.socket.sleep(0.1)
  until H.socket.gettime() > deadline
  return f()
end

describe("--metrics", function()
  it("serves the host's and the script's metrics in the text format prometheus_client parses", function()
    local port, mport = H.free_port(), H.free_port()
    local proc = H.start(("--metrics tcp://127.0.0.1:%d spec/fixtures/metrics_server.lua %d"):format(mport, port))
    finally(function() proc:stop() end)
    proc:wait_output("ready")
    lines(port, 3, "abc")                       -- 3 bytes: bucket 4
    lines(port, 2, "abcdefghij")                -- 10: bucket 16
    lines(port, 1, '"odd one')                  -- the odd label value
    local held = H.tcp("127.0.0.1", port)       -- one handler stays
    assert(held:send("x\n"))
    assert.equals("x", held:receive("*l"))
    local head, body = scrape(mport)
    assert.matches("^HTTP/1.1 200", head)
    assert.matches("Content%-Type: text/plain; version=0.0.4", head)
    local s = parse(body)
    assert.equals(1, value(s, "sockhost_processes_reporting"))
    assert.equals(4, value(s, "sockhost_connections_accepted_total"))
    assert.equals(1, value(s, "sockhost_connections_open"))
    local listener = "tcp://127.0.0.1:" .. port
    assert.equals(4, value(s, "sockhost_listener_accepted_total", { listener = listener }))
    local _, fam = value(s, "sockhost_listener_accepted_total")
    assert.equals("counter", fam.type)
    assert.equals("sockhost_listener_accepted", fam.family)
    -- bytes: each line and its newline read, echoed back
    local bytes = 3 * 4 + 2 * 11 + 9 + 2
    assert.equals(bytes, value(s, "sockhost_read_bytes_total"))
    assert.equals(bytes, value(s, "sockhost_written_bytes_total"))
    assert.equals(1, value(s, "sockhost_tasks_parked", { reason = "read" }))
    assert.equals(0, value(s, "sockhost_limit_hits_total", { limit = "idle_cut" }))
    -- the script's: labels escaped and parsed back, help text too
    assert.equals(6, value(s, "app_lines_total", { kind = "plain" }))
    local odd, o = value(s, "app_lines_total", { kind = 'quote"d\nnew\\line' })
    assert.equals(1, odd)
    assert.equals("Lines echoed\nby \\ handlers", o.help)
    assert.equals(1, value(s, "app_handlers"))
    assert.equals(4, value(s, "app_line_bytes_bucket", { le = "4" }))
    assert.equals(7, value(s, "app_line_bytes_bucket", { le = "16" }))
    assert.equals(7, value(s, "app_line_bytes_bucket", { le = "+Inf" }))
    assert.equals(7, value(s, "app_line_bytes_count"))
    assert.equals(3 * 3 + 2 * 10 + 8 + 1, value(s, "app_line_bytes_sum"))
    held:close()
    -- anything else than GET /metrics
    local c = H.tcp("127.0.0.1", mport)
    assert(c:send("GET / HTTP/1.1\r\n\r\n"))
    assert.matches("^HTTP/1.1 404", c:receive("*l"))
    c:close()
  end)

  -- A scrape's connection, accepted by the collector (a thread of the
  -- master) before the master forked a worker, was copied into the worker:
  -- the collector's close after the answer did not end it, and the client
  -- waited for the end until its timeout (found under the one-byte shim).
  it("a scrape open while a worker is restarted still ends with the answer", function()
    local port, mport = H.free_port(), H.free_port()
    local proc = H.start(("-w 2 --metrics tcp://127.0.0.1:%d spec/fixtures/metrics_server.lua %d"):format(mport, port))
    finally(function() proc:stop() end)
    proc:wait_output("ready.*ready")
    local c = H.tcp("127.0.0.1", mport, 5)      -- accepted, its request not sent yet
    H.socket.sleep(0.3)
    local _, victim = who(port)
    os.execute("kill -KILL " .. victim)
    H.valgrind_expect(victim, "killed")
    proc:wait_output("ready.*ready.*ready", 10)   -- the replacement was forked
    assert(c:send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
    c:settimeout(H.ONEBYTE and 20 or 3)
    local all, err, partial = c:receive("*a")
    c:close()
    assert(all, ("the answer did not end: %s after %d bytes"):format(tostring(err), partial and #partial or 0))
    assert.matches("^HTTP/1.1 200", all)
  end)

  it("rejects bad metric names and label use", function()
    local out, err, rc = H.exec("-e " .. H.q([[
      local m = sockhost.metrics
      for _, f in ipairs({
        function() m.counter("good:name_1", "x", { "a", "b" }):inc(2, { "x", "y" }) end,
        function() m.counter("1bad", "x") end,
        function() m.counter("sockhost_mine", "x") end,
        function() m.gauge("ok_name", "x", { "__reserved" }) end,
        function() m.histogram("h", "x", { 1, 1 }) end,
        function() m.histogram("h2", "x", { 1 }, { "le" }) end,
        function() m.counter("c", "x"):inc(-1) end,
        function() m.counter("d", "x", { "a" }):inc(1) end,
        function() m.gauge("g", "x"); m.gauge("g", "x") end,
      }) do print((pcall(f))) end
    ]]))
    assert.equals(0, rc, err)
    assert.equals("true\n" .. ("false\n"):rep(8), out)
  end)

  it("sums -w 2 workers, and keeps counters going up when a worker is killed", function()
    local port, mport = H.free_port(), H.free_port()
    local proc = H.start(("-w 2 --metrics tcp://127.0.0.1:%d spec/fixtures/metrics_server.lua %d"):format(mport, port))
    finally(function() proc:stop() end)
    proc:wait_output("ready.*ready")
    eventually(function() return value(parse(select(2, scrape(mport))), "sockhost_processes_reporting") == 2 end)
    -- 20 connections of 5 lines: spread over both workers by the kernel
    local seen = {}
    for _ = 1, 20 do
      lines(port, 5, "hello")
      local w, p = who(port)
      seen[w] = p
    end
    assert.is_number(seen[1])
    assert.is_number(seen[2])
    local s = parse(select(2, scrape(mport)))
    assert.equals(2, value(s, "sockhost_processes_reporting"))
    assert.equals(40, value(s, "sockhost_connections_accepted_total"))
    assert.equals(100, value(s, "app_lines_total", { kind = "plain" }))
    assert.equals(100, value(s, "app_line_bytes_count"))
    -- kill worker 1: its counts stay in the sum
    os.execute("kill -KILL " .. seen[1])
    H.valgrind_expect(seen[1], "killed")
    local s2 = eventually(function()
      local t = parse(select(2, scrape(mport)))
      return value(t, "sockhost_processes_reporting") == 2 and t
    end, 15)
    assert.is_table(s2, "worker 1 was not restarted")
    for _, x in ipairs(s) do                  -- no counter went back
      if x.type == "counter" or x.type == "histogram" then
        local v = value(s2, x.name, x.labels)
        assert.is_true(v ~= nil and v >= x.value, x.name .. " went back")
      end
    end
    assert.equals(40, value(s2, "sockhost_connections_accepted_total"))
    assert.equals(100, value(s2, "app_lines_total", { kind = "plain" }))
    -- and more activity adds to it
    for _ = 1, 10 do lines(port, 2, "again") end
    local s3 = parse(select(2, scrape(mport)))
    assert.equals(50, value(s3, "sockhost_connections_accepted_total"))
    assert.equals(120, value(s3, "app_lines_total", { kind = "plain" }))
    assert.equals(0, value(s3, "app_handlers"))   -- a gauge: the live ones only
    -- a worker (whichever answers) asks for the whole service's sum: the
    -- connection asking is the 51st, the 52nd, ...
    for i = 1, 5 do
      local c = H.tcp("127.0.0.1", port)
      assert(c:send("all\n"))
      assert.equals(("%d 2"):format(50 + i), c:receive("*l"))
      c:close()
    end
  end)

  -- A reload replaces the workers by a new generation (exec'd: the
  -- collector's name reaches it through the environment). Without -w,
  -- --metrics runs one worker under a master, so that the collector and
  -- its totals outlive the reload (before: the reloaded process could not
  -- bind the metrics address again, and the reload failed).
  for _, workers in ipairs { "", "-w 2 " } do
    it(("keeps counting across reloads (%s)"):format(workers == "" and "no -w" or "-w 2"), function()
      local port, mport = H.free_port(), H.free_port()
      local proc = H.start(("%s--metrics tcp://127.0.0.1:%d spec/fixtures/metrics_server.lua %d")
        :format(workers, mport, port))
      finally(function() proc:stop() end)
      local n = workers == "" and 1 or 2
      proc:wait_output(n == 1 and "ready" or "ready.*ready")
      eventually(function() return value(parse(select(2, scrape(mport))), "sockhost_processes_reporting") == n end)
      local total = 0
      for reload = 1, 3 do
        for _ = 1, 4 do lines(port, 2, "hello") end
        total = total + 4
        local _, before = who(port)
        os.execute("kill -HUP " .. proc.pid)
        -- the new generation answers, and reports to the same collector
        assert.is_truthy(eventually(function()
          local ok, w = pcall(function() return select(2, who(port)) end)
          return ok and w ~= before
        end, 10), "no new generation after reload " .. reload)
        total = total + 1 + 1           -- the 'who' connections, before and after
        local s = eventually(function()
          local t = parse(select(2, scrape(mport)))
          return value(t, "sockhost_processes_reporting") == n
            and value(t, "sockhost_connections_accepted_total") >= total and t
        end, 10)
        assert.is_table(s, "reload " .. reload .. ": the sum did not come back to " .. total)
        assert.equals(8 * reload, value(s, "app_lines_total", { kind = "plain" }))
      end
      assert.is_nil(proc:stderr():match("failed to start"), proc:stderr())
    end)
  end

  it("is scraped by a real prometheus server, whose query API gives the counters", function()
    local port, mport, pport = H.free_port(), H.free_port(), H.free_port()
    local proc = H.start(("-w 2 --metrics tcp://127.0.0.1:%d spec/fixtures/metrics_server.lua %d"):format(mport, port))
    proc:wait_output("ready.*ready")
    local dir = H.tmpname(".prom.d")
    os.execute("mkdir -p " .. H.q(dir .. "/data"))
    H.writefile(dir .. "/prometheus.yml", ([[
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sockhost
    static_configs:
      - targets: ["127.0.0.1:%d"]
]]):format(mport))
    local prom = H.launch(("exec /usr/bin/prometheus --config.file=%s --storage.tsdb.path=%s "
      .. "--web.listen-address=127.0.0.1:%d"):format(H.q(dir .. "/prometheus.yml"), H.q(dir .. "/data"), pport),
      "prometheus")
    finally(function()                        -- (busted keeps one finally per test)
      os.execute("kill -TERM " .. prom.pid .. " 2>/dev/null")
      prom:wait(10)
      os.execute("rm -rf " .. H.q(dir))
      proc:stop()
    end)
    for _ = 1, 12 do lines(port, 3, "prom") end
    local function query(q)
      local ok, c = pcall(H.tcp, "127.0.0.1", pport, 2)
      if not ok then return nil end
      c:send(("GET /api/v1/query?query=%s HTTP/1.0\r\n\r\n"):format(q:gsub("[^%w_]", function(ch)
        return ("%%%02X"):format(ch:byte()) end)))
      local all = c:receive("*a") or ""
      c:close()
      local body = all:match("\r\n\r\n(.*)$")
      local okj, t = pcall(json.decode, body or "")
      if not okj or t.status ~= "success" or not t.data.result[1] then return nil end
      return tonumber(t.data.result[1].value[2])
    end
    local got = eventually(function()
      return query("sockhost_connections_accepted_total") == 12 and query('app_lines_total{kind="plain"}') == 36
    end, 40)
    assert.is_true(got, ("prometheus says accepted %s, lines %s"):format(
      tostring(query("sockhost_connections_accepted_total")), tostring(query('app_lines_total{kind="plain"}'))))
    assert.equals(2, query("sockhost_processes_reporting"))
    assert.equals(1, query('up{job="sockhost"}'))
    -- a reload (a new generation of both workers), more lines, a worker
    -- killed, more lines: prometheus sees the sums go on, and its resets()
    -- finds no counter that went back.
    local from = #proc:stderr() + 1
    os.execute("kill -HUP " .. proc.pid)
    proc:wait_output("ready.*ready.*ready.*ready", 10)   -- both workers, twice
    -- Until a worker has handed over, its old generation accepts too, and
    -- as documented (a graceful shutdown) closes a connection that has had
    -- an answer when it waits for the next line: lines() would see its
    -- second line refused. Under the sanitizers that window was long enough
    -- to be hit.
    H.wait_stderr(proc, "worker 1 %(pid %d+%) handed over", from, 20)
    H.wait_stderr(proc, "worker 2 %(pid %d+%) handed over", from, 20)
    for _ = 1, 4 do lines(port, 3, "prom") end
    assert.is_truthy(eventually(function()
      return query("sockhost_connections_accepted_total") == 16 and query('app_lines_total{kind="plain"}') == 48
    end, 30), "after the reload: " .. tostring(query('app_lines_total{kind="plain"}')))
    local _, victim = who(port)
    -- (what a killed worker counted since its last report is lost, up to
    -- a second of it: wait until its count of the 'who' is in)
    assert.is_truthy(eventually(function() return query("sockhost_connections_accepted_total") == 17 end, 30))
    os.execute("kill -KILL " .. victim)
    H.valgrind_expect(victim, "killed")
    -- (a connection made while the killed worker's listening socket is
    -- still open may be queued there and reset with it, as documented:
    -- wait until it is gone; under the sanitizers that took long enough)
    assert.is_truthy(eventually(function() return not H.alive(victim) end, 30))
    proc:wait_output("ready.*ready.*ready.*ready.*ready", 30)   -- its replacement
    assert.is_truthy(eventually(function() return query("sockhost_processes_reporting") == 2 end, 30))
    for _ = 1, 4 do lines(port, 3, "prom") end
    -- the 'who' connection counts as accepted: 16 + 1 + 4
    assert.is_truthy(eventually(function()
      return query("sockhost_connections_accepted_total") == 21 and query('app_lines_total{kind="plain"}') == 60
    end, 30), ("after the crash: accepted %s, lines %s"):format(
      tostring(query("sockhost_connections_accepted_total")), tostring(query('app_lines_total{kind="plain"}'))))
    assert.equals(0, query('resets(sockhost_connections_accepted_total[5m])'))
    assert.equals(0, query('resets(app_lines_total{kind="plain"}[5m])'))
  end)
end)
