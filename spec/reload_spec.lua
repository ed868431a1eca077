-- End-to-end specs for reloading (SIGHUP, sockhost.reload()): a new
-- generation takes the same listening and datagram sockets, the old one
-- finishes what it started; a new version that fails to start changes
-- nothing.
local H = require "helpers"

-- The served script, version 'v': "long" gets ten lines over half a second
-- then "end <v>", anything else one line "<v>"; "reload" calls
-- sockhost.reload(). 'extra' is Lua put at the end of the main chunk.
local function script(v, port, extra)
  return ([[
local V = %q
sockhost.listen("tcp://127.0.0.1:%d", function(c)
  local what = c:read("l")
  if what == "long" then
    for i = 1, 10 do c:write(V, " ", i, "\n"); sockhost.sleep(0.05) end
    c:write("end ", V, "\n")
  elseif what == "reload" then
    c:write(tostring((sockhost.reload())), "\n")
  else
    c:write(V, "\n")
  end
  c:close()
end)
print("serving " .. V)
%s
]]):format(v, port, extra or "")
end

local alive, stop_pid = H.alive, H.stop_pid      -- (spec/helpers.lua)
local wait_err = H.wait_stderr

local function ask(port, what)
  local c = H.tcp("127.0.0.1", port, 5)
  c:send(what .. "\n")
  local line = c:receive("*l")
  c:close()
  return line
end

-- Start the script 'src' (rewritten in place by later versions).
local function start(path, args)
  local proc = H.start((args or "--grace 5") .. " " .. H.q(path))
  proc:wait_output("serving")
  return proc
end

local load_client, load_result = H.reload_load, H.reload_load_result

describe("reload", function()
  it("20 SIGHUPs under load: nothing refused or reset, each connection served by one version, new code within 1 s", function()
    local port, path = H.free_port(), H.tmpname(".lua")
    H.writefile(path, script("v1", port))
    local proc = start(path)
    local pid, pos = proc.pid, 1
    finally(function() stop_pid(pid); proc:stop() end)
    local load, out = load_client(port, 60, 50)
    local sent = {}
    for k = 2, 21 do
      H.writefile(path, script("v" .. k, port))
      sent["v" .. k] = H.socket.gettime()
      os.execute("kill -HUP " .. pid)
      local newpid
      newpid, _, pos = wait_err(proc, "reload: generation " .. k .. " %(pid (%d+)%) serving", pos)
      pid = tonumber(newpid)
      H.socket.sleep(0.3)
    end
    H.socket.sleep(1)
    H.writefile(out .. ".stop", "")
    local r = load_result(load, out)
    assert.same({}, r.errors)
    assert.equals(0, r.refused)
    assert.equals(0, r.reset)
    assert.equals(0, r.cut)
    assert.equals(0, r.other)
    assert.equals(0, r.long_mixed)
    assert.equals(r.long_tried, r.long_ok)
    assert.is_true(r.long_ok >= 300, "long connections served: " .. r.long_ok)
    assert.equals(r.short_tried, r.short_ok)
    assert.is_true(r.short_ok >= 300, "short connections served: " .. r.short_ok)
    for v, t in pairs(sent) do
      assert(r.first_seen[v], v .. " never served a new connection")
      assert.is_true(r.first_seen[v] - t < 1, v .. " served new connections only after " .. (r.first_seen[v] - t))
    end
    print(("\n  reload: 20 reloads, %d short + %d long connections, 0 refused, 0 reset")
      :format(r.short_tried, r.long_tried))
    assert.equals("v21", ask(port, "short"))
    assert.equals(0, proc:wait(10))                   -- the first generation ended on its own
  end)

  for _, case in ipairs({
    {"a syntax error", "local x = = 1\n", ":%d+: unexpected symbol near '='"},
    {"an error raised at start-up", "error('no database')\n", ":%d+: no database"},
    {"an error raised at start-up after it yielded (its listener took the socket meanwhile)",
     "sockhost.sleep(0.5) error('too late')\n", ":%d+: too late"},
  }) do
    it("to a version with " .. case[1] .. ": the old one keeps serving, the error is printed with its line", function()
      local port, path = H.free_port(), H.tmpname(".lua")
      H.writefile(path, script("v1", port))
      local proc = start(path)
      finally(function() proc:stop() end)
      local load, out = load_client(port, 2, 10)
      H.socket.sleep(0.3)
      H.writefile(path, script("v2", port, case[2]))
      proc:signal("HUP")
      wait_err(proc, "reload: generation 2 %(pid %d+%) failed to start %(exited with status 1%)")
      assert.matches(H.q(path):sub(2, -2):gsub("%p", "%%%0") .. case[3], proc:stderr())
      assert.matches("generation 1 %(pid " .. proc.pid .. "%) keeps serving", proc:stderr())
      local r = load_result(load, out)
      assert.same({}, r.errors)
      assert.equals(r.short_tried, r.short_ok)
      assert.equals(r.long_tried, r.long_ok)
      assert.same({"v1"}, (function() local t = {} for v in pairs(r.first_seen) do t[#t + 1] = v end return t end)())
      assert.equals("v1", ask(port, "short"))
      assert.is_nil(proc:exited())
    end)
  end

  it("a connection the old generation accepted before its first request is still served by it", function()
    local port, path = H.free_port(), H.tmpname(".lua")
    H.writefile(path, script("v1", port))
    local proc = start(path)
    local pid = proc.pid
    finally(function() stop_pid(pid); proc:stop() end)
    local early = H.tcp("127.0.0.1", port, 5)           -- accepted; its request not sent yet
    assert.equals("v1", ask(port, "short"))             -- so the accept has surely happened
    H.writefile(path, script("v2", port))
    proc:signal("HUP")
    pid = tonumber((wait_err(proc, "reload: generation 2 %(pid (%d+)%) serving")))
    H.socket.sleep(0.2)
    early:send("short\n")
    assert.equals("v1", early:receive("*l"))
    early:close()
    assert.equals("v2", ask(port, "short"))
  end)

  it("sockhost.reload() from the script; a script's own on_signal('HUP') keeps SIGHUP", function()
    local port, path = H.free_port(), H.tmpname(".lua")
    H.writefile(path, script("v1", port, 'sockhost.on_signal("HUP", function() print("my HUP") end)'))
    local proc = start(path)
    local pid = proc.pid
    finally(function() stop_pid(pid); proc:stop() end)
    proc:signal("HUP")
    proc:wait_output("my HUP")
    assert.equals("v1", ask(port, "short"))
    assert.not_matches("reload", proc:stderr())
    H.writefile(path, script("v2", port))
    assert.equals("true", ask(port, "reload"))
    pid = tonumber((wait_err(proc, "reload: generation 2 %(pid (%d+)%) serving after %d+ ms %(sockhost.reload%(%)%)")))
    assert.equals("v2", ask(port, "short"))
    assert.equals(0, proc:wait(10))
  end)

  it("datagram sockets are handed over: every datagram sent during a reload is answered", function()
    local port, path = H.free_port(), H.tmpname(".lua")
    local function udp_script(v)
      return ([[
sockhost.udp("udp://127.0.0.1:%d", function(u, data, from) u:sendto(%q .. " " .. data, from) end)
print("serving")
]]):format(port, v)
    end
    H.writefile(path, udp_script("v1"))
    local proc = start(path)
    local pid = proc.pid
    finally(function() stop_pid(pid); proc:stop() end)
    local u = H.socket.udp()
    u:setpeername("127.0.0.1", port)
    u:settimeout(2)
    local seen, answered = {}, 0
    H.writefile(path, udp_script("v2"))
    for i = 1, 300 do
      if i == 20 then proc:signal("HUP") end
      u:send(tostring(i))
      local reply = u:receive()
      local v, n = (reply or ""):match("^(%S+) (%d+)$")
      if tonumber(n) == i then answered = answered + 1; seen[v] = true end
      H.socket.sleep(0.002)
    end
    pid = tonumber((wait_err(proc, "reload: generation 2 %(pid (%d+)%) serving")))
    assert.equals(300, answered)
    assert.is_true(seen.v1 and seen.v2)
    u:close()
  end)

  it("a Unix socket file stays in place across a reload", function()
    local sock, path = H.tmpname(".sock"), H.tmpname(".lua")
    local function src(v)
      return ([[sockhost.listen("unix://%s", function(c) c:write(%q, "\n") c:close() end) print("serving")]])
        :format(sock, v)
    end
    H.writefile(path, src("v1"))
    local proc = start(path)
    local pid = proc.pid
    finally(function() stop_pid(pid); proc:stop() end)
    H.writefile(path, src("v2"))
    proc:signal("HUP")
    pid = tonumber((wait_err(proc, "reload: generation 2 %(pid (%d+)%) serving")))
    assert.equals(0, proc:wait(10))                   -- the old one is gone
    local c = require("socket.unix")()
    assert(c:connect(sock))
    assert.equals("v2", c:receive("*l"))
    c:close()
  end)

  it("-w 2: every worker is replaced, under load, nothing refused or reset", function()
    local port, path = H.free_port(), H.tmpname(".lua")
    local function src(v)
      return script(v, port):gsub('print%("serving " .. V%)',
        'print("serving " .. V .. " worker " .. sockhost.worker)')
    end
    H.writefile(path, src("v1"))
    local proc = H.start("-w 2 --grace 5 " .. H.q(path))
    finally(function() proc:stop() end)
    proc:wait_output("serving v1 worker 2")
    proc:wait_output("serving v1 worker 1")
    local load, out = load_client(port, 60, 20)
    local pos = 1
    for k = 2, 4 do
      H.writefile(path, src("v" .. k))
      proc:signal("HUP")
      for _ = 1, 2 do
        local _, _, e = wait_err(proc, "worker %d %(pid %d+%) handed over to pid %d+", pos)
        pos = e
      end
      H.socket.sleep(0.3)
    end
    H.socket.sleep(1)
    H.writefile(out .. ".stop", "")
    local r = load_result(load, out)
    assert.same({}, r.errors)
    assert.equals(0, r.refused + r.reset + r.cut + r.other + r.long_mixed)
    assert.equals(r.short_tried, r.short_ok)
    assert.is_true(r.first_seen.v4 ~= nil)
    assert.matches("serving v4 worker 1", proc:stdout())
    assert.matches("serving v4 worker 2", proc:stdout())
    for _ = 1, 10 do assert.equals("v4", ask(port, "short")) end
    assert.equals(0, proc:stop())                     -- the master stops the new workers
    assert.is_nil((H.socket.connect("127.0.0.1", port)))
  end)

  -- A first-generation worker dies with its master (PR_SET_PDEATHSIG); a
  -- reloaded one is the old worker's child and could not ask for that, so
  -- it lived on, serving, after the master was killed.
  it("-w 2: the workers of a reloaded generation die with a killed master", function()
    local port, path = H.free_port(), H.tmpname(".lua")
    H.writefile(path, script("v1", port))
    local proc = H.start("-w 2 --grace 5 " .. H.q(path))
    local pids = {}
    finally(function()
      for _, pid in ipairs(pids) do if alive(pid) then stop_pid(pid) end end
      proc:stop()
    end)
    proc:wait_output("serving v1.*serving v1")
    proc:signal("HUP")
    local pos = 1
    for k = 1, 2 do
      local next, _, e = wait_err(proc, "worker %d %(pid %d+%) handed over to pid (%d+)", pos)
      pos, pids[k] = e, tonumber(next)
    end
    assert.equals("v1", ask(port, "short"))
    H.socket.sleep(0.5)                              -- (adopted by the master by then)
    os.execute("kill -KILL " .. proc.pid)
    local deadline = H.socket.gettime() + 5
    while (alive(pids[1]) or alive(pids[2])) and H.socket.gettime() < deadline do H.socket.sleep(0.05) end
    assert.is_false(alive(pids[1]), "worker pid " .. pids[1] .. " outlived its master")
    assert.is_false(alive(pids[2]), "worker pid " .. pids[2] .. " outlived its master")
    assert.is_nil((H.socket.connect("127.0.0.1", port)))
  end)

  -- The master took a worker that died within its first 5 s for one that
  -- failed to start, and stopped the whole service: after a reload, the new
  -- generation's "started" came through the pipe with the handover message
  -- and was lost, and the slot's start time was the first generation's.
  it("-w 2: a worker of a reloaded generation killed soon after is restarted, the service stays up", function()
    local port, path = H.free_port(), H.tmpname(".lua")
    H.writefile(path, script("v1", port):gsub('print%("serving " .. V%)',
      'print("serving " .. V .. " worker " .. sockhost.worker .. " pid " .. '
      .. 'io.open("/proc/self/stat"):read("a"):match("^%%d+"))'))
    local proc = H.start("-w 2 --grace 5 " .. H.q(path))
    finally(function() proc:stop() end)
    proc:wait_output("serving v1 worker 2")
    proc:wait_output("serving v1 worker 1")
    proc:signal("HUP")
    local pos = 1
    local next_pid
    for _ = 1, 2 do
      local next, _, e = wait_err(proc, "worker %d %(pid %d+%) handed over to pid (%d+)", pos)
      pos, next_pid = e, tonumber(next)
    end
    os.execute("kill -KILL " .. next_pid)
    H.valgrind_expect(next_pid, "killed")
    wait_err(proc, "worker %d %(pid " .. next_pid .. "%) killed by signal 9: restarting in", pos)
    assert.is_nil(proc:stderr():find("failed to start", 1, true), proc:stderr())
    -- the replacement serves, beside the other worker
    local seen = 0
    for _ = 1, 50 do
      if ask(port, "short") == "v1" then seen = seen + 1 end
    end
    assert.equals(50, seen)
    assert.is_true(alive(proc.pid), "the master stopped")
  end)
end)
