-- End-to-end specs for `sockhost -w N`: worker processes sharing listeners.
local H = require "helpers"

-- Ask the server who answers, n times; returns a set of "W:P" strings.
local function who(port, n)
  local seen, count = {}, 0
  for _ = 1, n do
    local c = H.tcp("127.0.0.1", port, 2)
    local line = c:receive("*l")
    c:close()
    local w, p = (line or ""):match("^worker (%d+) pid (%d+)$")
    if w then
      local k = w .. ":" .. p
      if not seen[k] then seen[k] = true count = count + 1 end
    end
  end
  return seen, count
end

local function pids_of(seen, worker)
  local t = {}
  for k in pairs(seen) do
    local w, p = k:match("(%d+):(%d+)")
    if w == tostring(worker) then t[#t + 1] = tonumber(p) end
  end
  return t
end

describe("sockhost -w N", function()
  it("runs N workers that share one port, restarts one that dies, and stops on SIGTERM", function()
    local port = H.free_port()
    local proc = H.start("-w 2 spec/fixtures/whoami.lua tcp://127.0.0.1:" .. port)
    finally(function() proc:stop() end)
    local deadline = H.socket.gettime() + 5
    repeat H.socket.sleep(0.05) until select(2, proc:stdout():gsub("ready", "")) >= 2
      or H.socket.gettime() > deadline
    -- both workers answer on the same port (the kernel spreads connections)
    local seen, n = {}, 0
    for _ = 1, 20 do
      local s = who(port, 20)
      for k in pairs(s) do if not seen[k] then seen[k] = true n = n + 1 end end
      if n >= 2 then break end
    end
    assert.equals(2, n)
    local old = pids_of(seen, 1)[1]
    assert.is_number(old)
    -- kill worker 1: the master starts a new one
    os.execute("kill -KILL " .. old)
    H.valgrind_expect(old, "killed")
    local new
    deadline = H.socket.gettime() + 10
    repeat
      H.socket.sleep(0.2)
      for _, p in ipairs(pids_of((who(port, 10)), 1)) do
        if p ~= old then new = p end
      end
    until new or H.socket.gettime() > deadline
    assert.is_number(new, "no new worker 1")
    assert.matches("worker 1 %(pid " .. old .. "%) killed by signal 9: restarting", proc:stderr())
    -- SIGTERM to the master stops everything, exit 0
    proc:signal("TERM")
    assert.equals(0, proc:wait(10))
    local _, rc = H.sh_cmd("kill -0 " .. new .. " 2>/dev/null")
    assert.is_not.equals(0, rc)
  end)

  it("rejects a bad worker count", function()
    local _, err, rc = H.exec("-w 0 -e ''")
    assert.equals(1, rc)
    assert.matches("number from 1 to 256", err)
  end)
end)
