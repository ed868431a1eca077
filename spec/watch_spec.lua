-- End-to-end specs for `sockhost --watch`: a reload (as on SIGHUP) whenever
-- the script or a module loaded from its folder changes, debounced, one
-- line each with how long it took.
local H = require "helpers"

-- A folder of its own for the script and its module.
local function folder()
  local dir = H.tmpname(".d")
  assert(os.execute("mkdir -p " .. H.q(dir)))
  return dir
end

-- The script, version 'v': as in reload_spec ("long": ten lines then
-- "end <v>"; else "<v> <module's value>").
local function script(v, port, extra)
  return ([[
local m = require "watchmod"
local V = %q
sockhost.listen("tcp://127.0.0.1:%d", function(c)
  local what = c:read("l")
  if what == "long" then
    for i = 1, 10 do c:write(V, " ", i, "\n"); sockhost.sleep(0.05) end
    c:write("end ", V, "\n")
  else
    c:write(V, m.suffix, "\n")
  end
  c:close()
end)
print("serving " .. V)
%s]]):format(v, port, extra or "")
end

local function module(suffix) return ("return { suffix = %q }\n"):format(suffix) end

local alive, stop_pid = H.alive, H.stop_pid      -- (spec/helpers.lua)
local wait_err = H.wait_stderr

local function count(s, pattern)
  local n = 0
  for _ in s:gmatch(pattern) do n = n + 1 end
  return n
end

local function ask(port)
  local c = H.tcp("127.0.0.1", port, 5)
  c:send("short\n")
  local line = c:receive("*l")
  c:close()
  return line
end

-- Start `sockhost --watch` on dir/main.lua, its module dir/watchmod.lua.
local function start(dir, port)
  H.writefile(dir .. "/watchmod.lua", module(""))
  H.writefile(dir .. "/main.lua", script("v1", port))
  local proc = H.start("--watch --grace 5 " .. H.q(dir .. "/main.lua"),
    "LUA_PATH=" .. H.q(dir .. "/?.lua;;"))
  proc:wait_output("serving v1")
  return proc
end

describe("--watch", function()
  it("the script rewritten 6 times under load: a reload each, nothing refused or reset, new code within 1 s", function()
    local dir, port = folder(), H.free_port()
    local proc = start(dir, port)
    local pid, pos = proc.pid, 1
    finally(function() stop_pid(pid); proc:stop() end)
    local load, out = H.reload_load(port, 60, 30)
    local written = {}
    for k = 2, 7 do
      H.writefile(dir .. "/main.lua", script("v" .. k, port))
      written["v" .. k] = H.socket.gettime()
      local newpid, ms
      newpid, ms, pos = wait_err(proc,
        "reload: generation " .. k .. " %(pid (%d+)%) serving after (%d+) ms %(%-%-watch: main%.lua changed%)", pos)
      pid = tonumber(newpid)
      assert.is_true(tonumber(ms) < 1000)
      H.socket.sleep(0.4)
    end
    H.socket.sleep(1)
    H.writefile(out .. ".stop", "")
    local r = H.reload_load_result(load, out)
    assert.same({}, r.errors)
    assert.equals(0, r.refused + r.reset + r.cut + r.other + r.long_mixed)
    assert.equals(r.short_tried, r.short_ok)
    assert.equals(r.long_tried, r.long_ok)
    for v, t in pairs(written) do
      assert(r.first_seen[v], v .. " never served")
      assert.is_true(r.first_seen[v] - t < 1, v .. " only after " .. (r.first_seen[v] - t))
    end
    assert.equals(6, count(proc:stderr(), "starting generation"))   -- one line per reload
    assert.equals(6, count(proc:stderr(), "serving after %d+ ms"))
  end)

  it("debounced: ten writes within 100 ms make one reload", function()
    local dir, port = folder(), H.free_port()
    local proc = start(dir, port)
    local pid = proc.pid
    finally(function() stop_pid(pid); proc:stop() end)
    for k = 1, 10 do
      H.writefile(dir .. "/main.lua", script("w" .. k, port))
      H.socket.sleep(0.01)
    end
    pid = tonumber((wait_err(proc, "reload: generation 2 %(pid (%d+)%) serving")))
    H.socket.sleep(0.6)
    assert.equals(1, count(proc:stderr(), "starting generation"))
    assert.equals("w10", ask(port))
  end)

  it("a module loaded from the script's folder counts; another file there does not", function()
    local dir, port = folder(), H.free_port()
    local proc = start(dir, port)
    local pid = proc.pid
    finally(function() stop_pid(pid); proc:stop() end)
    H.writefile(dir .. "/notes.txt", "not loaded")
    H.writefile(dir .. "/other.lua", "return 1")
    H.socket.sleep(0.5)
    assert.equals(0, count(proc:stderr(), "starting generation"))
    H.writefile(dir .. "/watchmod.lua", module("+m2"))
    pid = tonumber((wait_err(proc, "reload: generation 2 %(pid (%d+)%) serving after %d+ ms %(%-%-watch: watchmod%.lua changed%)")))
    assert.equals("v1+m2", ask(port))
  end)

  it("a version that does not load: the error with its line, the old one serves; the fix reloads", function()
    local dir, port = folder(), H.free_port()
    local proc = start(dir, port)
    local pid = proc.pid
    finally(function() stop_pid(pid); proc:stop() end)
    H.writefile(dir .. "/main.lua", script("v2", port, "local x = = 1\n"))
    wait_err(proc, "reload: generation 2 %(pid %d+%) failed to start")
    assert.matches("main%.lua:%d+: unexpected symbol near '='", proc:stderr())
    assert.equals("v1", ask(port))
    H.writefile(dir .. "/main.lua", script("v3", port))
    pid = tonumber((wait_err(proc, "reload: generation 2 %(pid (%d+)%) serving")))
    assert.equals("v3", ask(port))
  end)
end)
