-- sockhost.stats(): the values checked against known activity, through the
-- real binary with LuaSocket clients in this process.
local H = require "helpers"

local function stats(c)
  assert(c:send("stats\n"))
  local t, bytes = {}, 0
  while true do
    local l = assert(c:receive("*l"))
    bytes = bytes + #l + 1
    if l == "." then break end
    local k, v = l:match("^(.-)=(.*)$")
    t[k] = tonumber(v) or v
  end
  return t, bytes
end

describe("sockhost.stats()", function()
  it("counts connections, bytes, tasks, timers and each limit that fired", function()
    local echo, line, ctl = H.free_port(), H.free_port(), H.free_port()
    local proc = H.start(("--budget 0.5 --max-memory 40 spec/fixtures/stats_server.lua %d %d %d"):format(echo, line, ctl))
    finally(function() proc:stop() end)
    proc:wait_output("ready")
    local c = H.tcp("127.0.0.1", ctl)
    local sent_in, sent_out = 0, 0       -- what the server read and wrote so far
    local s, n = stats(c)
    sent_in = sent_in + 6
    assert.equals(0, s["connections.open"] - 1)          -- only the control conn
    assert.equals(1, s["timers"])
    assert.equals(sent_in, s["bytes.in"])
    assert.equals(0, s["bytes.out"])
    sent_out = sent_out + n
    -- three echo clients, 10 lines each of known size
    local clients = {}
    for i = 1, 3 do
      local e = H.tcp("127.0.0.1", echo)
      for j = 1, 10 do
        local msg = ("client %d line %d"):format(i, j)
        assert(e:send(msg .. "\n"))
        assert.equals(msg, e:receive("*l"))
        sent_in, sent_out = sent_in + #msg + 1, sent_out + #msg + 1
      end
      clients[i] = e
    end
    -- a fourth is refused at max_conns = 3
    local extra = H.tcp("127.0.0.1", echo)
    extra:settimeout(2)
    assert.is_nil((extra:receive("*l")))
    extra:close()
    s, n = stats(c)
    sent_in = sent_in + 6
    local key = "listeners.tcp://127.0.0.1:" .. echo
    assert.equals(3, s[key .. ".open"])
    assert.equals(3, s[key .. ".accepted"])
    assert.equals(1, s[key .. ".refused"])
    assert.equals(1, s["limits.max_conns"])
    assert.equals(4, s["connections.open"])
    assert.equals(4, s["connections.accepted"])
    assert.equals(sent_in, s["bytes.in"])
    assert.equals(sent_out, s["bytes.out"])
    sent_out = sent_out + n
    -- the three echo handlers are parked in a read; the control's runs
    assert.equals(3, s["tasks.waiting.read"])
    assert.equals(3, s["tasks.parked"])
    assert.equals(1, s["tasks.running"])
    assert.equals(0, s["limits.idle_cut"])
    assert.is_true(s["memory.lua"] > 10000)
    assert.is_true(s["memory.rss"] > s["memory.lua"])
    -- idle for over 1 s: the three are cut
    H.socket.sleep(1.6)
    s, n = stats(c)
    sent_in, sent_out = sent_in + 6, sent_out + n
    assert.equals(3, s["limits.idle_cut"])
    assert.equals(0, s[key .. ".open"])
    assert.equals(0, s["tasks.waiting.read"])
    for _, e in ipairs(clients) do e:close() end
    -- a line begun and not finished in 0.3 s
    local l = H.tcp("127.0.0.1", line)
    assert(l:send("partial"))
    H.socket.sleep(0.8)
    l:close()
    -- a handler that spins: the budget stops it
    local e = H.tcp("127.0.0.1", echo)
    assert(e:send("spin\n"))
    e:settimeout(3)
    assert.is_nil((e:receive("*l")))
    e:close()
    sent_in = sent_in + 5             -- "spin\n"; the partial line was cut unread
    s = stats(c)
    sent_in = sent_in + 6
    assert.equals(0, s["limits.memory"])
    local stalls = s["limits.slow_turn"]
    assert.is_true(stalls >= 1)            -- the spinning also kept the loop
    -- a handler that blocks the loop, one that asks for too much memory
    e = H.tcp("127.0.0.1", echo)
    assert(e:send("block\n"))
    assert.equals("block", e:receive("*l"))
    assert(e:send("hog\n"))
    assert.equals("false", e:receive("*l"))
    e:close()
    sent_in = sent_in + 10
    s = stats(c)
    sent_in = sent_in + 6
    assert.equals(1, s["limits.line_deadline"])
    assert.equals(1, s["limits.budget"])
    assert.equals(3, s["limits.idle_cut"])
    assert.is_true(s["limits.slow_turn"] >= stalls + 1)
    assert.is_true(s["limits.memory"] >= 1)
    assert.equals(7, s["connections.accepted"])
    assert.equals(sent_in, s["bytes.in"])
    c:close()
  end)
end)
