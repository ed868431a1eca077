-- sockhost_chatload.lua -- the load of the chat-fanout row of `make bench`:
-- senders on one chat.lua instance, receivers on another, both on one Redis.
--
--   sockhost bench/sockhost_chatload.lua PORT_A PORT_B SENDERS RECEIVERS SECS RATE
--
-- Each sender writes RATE lines a second to instance A, each stamped with
-- this process's clock; each receiver on instance B reads the room and
-- takes the latency of every stamped line it gets (send to receipt, one
-- clock). Prints "key value" lines: sent, expected (sent x receivers),
-- delivered, rate (deliveries per second of the sending time), p50_us,
-- p99_us, lost.
local sh = require "sockhost"

local port_a, port_b = tonumber(arg[1]), tonumber(arg[2])
local senders, receivers = tonumber(arg[3]) or 10, tonumber(arg[4]) or 10
local secs, rate = tonumber(arg[5]) or 3, tonumber(arg[6]) or 100
assert(port_a and port_b, "usage: sockhost_chatload.lua PORT_A PORT_B SENDERS RECEIVERS SECS RATE")

local lat = {}                 -- latencies in seconds, every delivery
local sent = 0
local ready = sh.channel(receivers)

local function open(port)
  local c = assert(sh.connect("tcp://127.0.0.1:" .. port))
  c:settimeout(secs + 10)
  return c
end

local function receiver()
  local c = open(port_b)
  ready:send(true)
  for line in c:lines() do     -- until sh.stop() below ends the process
    local t = line:match(" m %d+ %d+ ([%d.]+)$")
    if t then lat[#lat + 1] = sh.now() - tonumber(t) end
  end
end

-- Receivers first, so that nothing is sent before they are in the room.
for _ = 1, receivers do sh.spawn(receiver) end
for _ = 1, receivers do ready:receive(10) end
sh.sleep(0.5)                  -- their joins go round the room

local start = sh.event()
local stasks = {}
for id = 1, senders do
  stasks[id] = sh.spawn(function()
    local c = open(port_a)
    start:wait()
    local t0, seq = sh.now(), 0
    while sh.now() - t0 < secs do
      seq = seq + 1
      if not c:write(("m %d %d %.6f\n"):format(id, seq, sh.now())) then break end
      sent = sent + 1
      local due = t0 + seq / rate
      local wait = due - sh.now()
      if wait > 0 then sh.sleep(wait) end
    end
    sh.sleep(1)                -- its lines reach the room before it leaves
    c:close()
  end)
end
sh.sleep(0.5)
start:set()
for _, t in ipairs(stasks) do t:join() end
sh.sleep(1)                    -- the last lines through Redis
table.sort(lat)
local function pct(p)
  if #lat == 0 then return 0 end
  return lat[math.max(1, math.ceil(#lat * p))] * 1e6
end
local expected = sent * receivers
print(("sent %d"):format(sent))
print(("expected %d"):format(expected))
print(("delivered %d"):format(#lat))
print(("rate %.1f"):format(#lat / secs))
print(("p50_us %.0f"):format(pct(0.50)))
print(("p99_us %.0f"):format(pct(0.99)))
print(("lost %d"):format(expected - #lat))
sh.stop()
