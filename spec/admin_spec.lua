-- --admin unix:PATH and `sockhost admin`: the console of a running service,
-- through the real binary; peers are LuaSocket, python3 and the client run
-- as another user (setpriv).
local H = require "helpers"

local function admin(path, cmd, opts)
  opts = opts or {}
  local out, rc = H.sh_cmd(("%s timeout -s KILL 20 %s admin %s %s 2>&1%s"):format(
    opts.as or "", H.q(H.BIN), H.q("unix:" .. path), cmd or "",
    opts.stdin and (" < " .. H.q(H.writefile(H.tmpname(".in"), opts.stdin))) or ""))
  return out, rc
end

-- The line of the fixture where its "hold" handler sleeps.
local function sleep_line()
  local n = 0
  for l in io.lines("spec/fixtures/metrics_server.lua") do
    n = n + 1
    if l:match("sockhost%.sleep%(30%)") then return n end
  end
end

local function start(extra)
  local port, path = H.free_port(), H.tmpname(".admin")
  local proc = H.start(("%s --admin unix:%s spec/fixtures/metrics_server.lua %d"):format(extra or "", path, port))
  proc:wait_output(extra and extra:match("%-w") and "ready.*ready" or "ready")
  return proc, port, path
end

describe("--admin", function()
  it("makes a 0600 socket that refuses another user, checked by SO_PEERCRED", function()
    local proc, _, path = start()
    finally(function() proc:stop() end)
    local mode = H.sh_cmd("stat -c %a " .. H.q(path))
    assert.equals("600", mode:match("%d+"))
    local out, rc = admin(path, "stats")
    assert.equals(0, rc, out)
    assert.matches("connections.accepted %d+", out)
    -- the file mode alone keeps nobody out; open it, and the uid check still does
    os.execute("chmod 0666 " .. H.q(path))
    local as = "setpriv --reuid=nobody --regid=nogroup --clear-groups"
    out, rc = admin(path, "stats", { as = as })
    assert.equals(1, rc)
    assert.matches("refused", out)
    assert.not_matches("connections.accepted", out)
    assert.matches("admin: refused a peer of uid 65534", proc:stderr())
  end)

  it("lists connections and tasks, shows and closes one by id, evaluates Lua with the script's globals", function()
    local proc, port, path = start()
    finally(function() proc:stop() end)
    local c = H.tcp("127.0.0.1", port)
    assert(c:send("hello\n"))
    assert.equals("hello", c:receive("*l"))
    local _, myport = c:getsockname()
    local held = H.tcp("127.0.0.1", port)
    assert(held:send("hold\n"))
    H.socket.sleep(0.2)
    local out, rc = admin(path, "conns")
    assert.equals(0, rc, out)
    local id = out:match("\n(%d+) tcp://127%.0%.0%.1:" .. myport .. " [%d.]+ 6/6 0/0 parked:read [^\n]*metrics_server%.lua:%d+")
    assert.is_string(id, out)
    assert.matches("\n%d+ tcp://[%d.:]+ [%d.]+ 5/0 0/0 parked:sleep [^\n]*metrics_server%.lua:" .. sleep_line() .. "\n", out)
    assert.matches("%(3%)", out)                -- the two, and the console's own
    out = admin(path, "conn " .. id)
    assert.matches("bytes_in 6", out)
    assert.matches("task.waiting read", out)
    out = admin(path, "tasks")
    assert.matches("parked sleep [%d.]+ [^\n]*metrics_server%.lua:" .. sleep_line() .. "\n", out)
    -- close it: the client sees the end
    out, rc = admin(path, "close " .. id)
    assert.equals(0, rc, out)
    assert.matches("closed #" .. id, out)
    c:settimeout(2)
    local line, err = c:receive("*l")
    assert.is_nil(line)
    assert.equals("closed", err)
    out, rc = admin(path, "close " .. id)
    assert.equals(1, rc)
    assert.matches("error: no open connection", out)
    -- Lua inside the service: the script's global, an expression, an error
    out, rc = admin(path, "eval G_NAME")
    assert.equals(0, rc, out)
    assert.equals("fixture-global\n", out)
    out = admin(path, "", { stdin = "= 6 * 7\neval G_COUNT = 5\n= G_COUNT + 1\n= nosuch.x\nquit\n" })
    assert.matches("^42\n%(no value%)\n6\nerror: [^\n]*nosuch", out)
    held:close()
    c:close()
  end)

  it("changes the log level of the running service", function()
    local proc, port, path = start()
    finally(function() proc:stop() end)
    local c = H.tcp("127.0.0.1", port)
    assert(c:send("dbg\n"))
    assert.equals("ok", c:receive("*l"))
    assert.not_matches("debug line asked for", proc:stderr())
    local out, rc = admin(path, "log debug")
    assert.equals(0, rc, out)
    assert(c:send("dbg\n"))
    assert.equals("ok", c:receive("*l"))
    assert.matches("DEBUG debug line asked for", proc:stderr())
    out, rc = admin(path, "log nonsense")
    assert.equals(1, rc)
    c:close()
  end)

  it("lists 10,000 connections in chunks while the service keeps answering", function()
    local proc, port, path = start("--max-conns 20000")
    local holder = H.launch(("timeout -s KILL 60 /usr/bin/python3 -u spec/fixtures/many_conns.py %d 10000"):format(port),
      "python3")
    finally(function()                        -- (busted keeps one finally per test)
      os.execute("kill -KILL " .. holder.pid .. " 2>/dev/null")
      proc:stop()
    end)
    holder:wait_output("open 10000", 30)
    local probe = H.tcp("127.0.0.1", port)
    local listing = H.launch(("%s admin unix:%s conns"):format(H.q(H.BIN), H.q(path)), "sockhost admin")
    local worst, probes = 0, 0
    while not listing:exited() and probes < 100000 do
      local t0 = H.socket.gettime()
      assert(probe:send("ping\n"))
      assert.equals("ping", probe:receive("*l"))
      local took = H.socket.gettime() - t0
      if took > worst then worst = took end
      probes = probes + 1
    end
    assert.equals(0, listing:wait(20))
    local out = listing:stdout()
    local _, n = out:gsub("\n%d+ tcp://127%.0%.0%.1:%d+ ", "")
    assert.equals(10001, n)                    -- the holder's and the probe
    assert.matches("%(10002%)", out)           -- and the console's own
    if os.getenv("SOCKHOST_SPEC_VERBOSE") then print(("\n%d probes, worst %.3f s"):format(probes, worst)) end
    assert.is_true(probes > 0)
    assert.is_true(worst < 0.5, ("a probe waited %.3f s"):format(worst))
    probe:close()
  end)

  it("keeps nothing running by itself: a script that is done exits", function()
    local path = H.tmpname(".admin")
    local out, err, rc = H.exec(("--admin unix:%s -e 'print(\"done\")'"):format(path), { timeout = 5 })
    assert.equals(0, rc, err)
    assert.equals("done\n", out)
    assert.is_nil(io.open(path))               -- and its socket file is gone
  end)

  it("under -w 2 has one socket per worker, PATH.1 and PATH.2", function()
    local proc, _, path = start("-w 2")
    finally(function() proc:stop() end)
    for w = 1, 2 do
      local out, rc = admin(path .. "." .. w, "eval sockhost.worker")
      assert.equals(0, rc, out)
      assert.equals(w .. "\n", out)
    end
  end)
end)
