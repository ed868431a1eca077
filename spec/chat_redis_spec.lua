-- scripts/chat.lua --redis: one room across processes. Two sockhost
-- processes (one of them -w 2) on one real redis-server; LuaSocket clients.
local H = require "helpers"
local RS = require "redis_server"

local function now() return H.socket.gettime() end

local Client = {}
Client.__index = Client

local function connect(port)
  local s = H.tcp("127.0.0.1", port, 0.05)
  return setmetatable({ s = s, partial = "", got = {} }, Client)
end

-- The next line within 'within' seconds, or nil.
function Client:line(within)
  local deadline = now() + (within or 5)
  while now() < deadline do
    local l, err, partial = self.s:receive("*l", self.partial)
    if l then
      self.partial = ""
      self.got[#self.got + 1] = l
      return l
    end
    if err ~= "timeout" then return nil end
    self.partial = partial
  end
  return nil
end

-- Read until a line equal to 'want' (others are kept in self.got); fails
-- after 'within' seconds.
function Client:expect(want, within)
  local deadline = now() + (within or 5)
  local seen = {}
  while now() < deadline do
    local l = self:line(deadline - now())
    if l == want then return l end
    if l then seen[#seen + 1] = l end
  end
  error(("%s: no %q; got: %s"):format(self.name or "?", want, table.concat(seen, " | ")), 2)
end

-- Read until a line matches the pattern; its captures.
function Client:expect_match(pat, within)
  local deadline = now() + (within or 5)
  while now() < deadline do
    local l = self:line(deadline - now())
    if l and l:match(pat) then return l:match(pat) end
  end
  error(("%s: nothing matching %q"):format(self.name or "?", pat), 2)
end

function Client:say(l) assert(self.s:send(l .. "\n")) end
function Client:close() self.s:close() end

describe("scripts/chat.lua --redis", function()
  local redis, A, B, portA, portB, a, b, c
  local procs = {}

  -- Which instance (by its worker number, "0" without -w) has the nick.
  local function worker_of(nick)
    local inst = redis:cli("HGET", "chat:members", nick):match("^(%S+)")
    return inst and inst:match("^(%d+)%.")
  end

  setup(function()
    redis = RS.start()
    A = H.start("scripts/chat.lua tcp://127.0.0.1:0 --redis " .. redis:url())
    procs[#procs + 1] = A
    portA = select(2, H.hostport(A:wait_output("chat: listening on (%S+)")))
    portB = H.free_port()
    B = H.start(("-w 2 scripts/chat.lua tcp://127.0.0.1:%d --redis %s"):format(portB, redis:url()))
    procs[#procs + 1] = B
    B:wait_output("chat: listening on (%S+)")
    -- both workers up: two "listening" lines
    local deadline = now() + 10
    while now() < deadline and select(2, B:stdout():gsub("listening on", "")) < 2 do H.socket.sleep(0.02) end
  end)

  teardown(function()
    for _, x in ipairs { a, b, c } do pcall(x.close, x) end
    for _, p in ipairs(procs) do p:stop() end
    redis:stop()
  end)

  it("three clients on three processes (one worker each of a -w 2 instance) share one room", function()
    assert.matches("WARN  %-w 2: each worker runs its own copy", B:stderr())
    a = connect(portA)
    a.name = "a"
    a.nick = a:expect_match("^%* welcome, you are (%S+) ")
    assert.equals("0", worker_of(a.nick))
    -- clients of B until one is on worker 1 and one on worker 2
    local on = {}
    for i = 1, 40 do
      local x = connect(portB)
      x.seq = i
      x.nick = x:expect_match("^%* welcome, you are (%S+) ")
      local w = worker_of(x.nick)
      if w and not on[w] then on[w] = x else x:say("/quit") x:close() end
      if on["1"] and on["2"] then break end
    end
    assert(on["1"] and on["2"], "no client landed on each worker")
    b, c = on["1"], on["2"]
    b.name, c.name = "b", "c"
    local first, second = b, c
    if c.seq < b.seq then first, second = c, b end
    a:expect("* " .. first.nick .. " joined")      -- joins cross processes
    a:expect("* " .. second.nick .. " joined")
    first:expect("* " .. second.nick .. " joined")

    a:say("hello from a")
    b:expect("<" .. a.nick .. "> hello from a")
    c:expect("<" .. a.nick .. "> hello from a")
    -- per sender, in the order sent
    for i = 1, 20 do b:say("line " .. i) end
    for _, x in ipairs { a, c } do
      for i = 1, 20 do x:expect("<" .. b.nick .. "> line " .. i) end
    end
    c:say("and c")
    a:expect("<" .. c.nick .. "> and c")
    b:expect("<" .. c.nick .. "> and c")

    local all = { a.nick, b.nick, c.nick }
    table.sort(all)
    c:say("/who")
    c:expect("* here: " .. table.concat(all, " "))

    a:say("/nick alice")
    for _, x in ipairs { a, b, c } do x:expect("* " .. a.nick .. " is now alice") end
    a.nick = "alice"
    c:say("/nick alice")
    c:expect("* alice is taken")
    b:say("/nick " .. c.nick)
    b:expect("* " .. c.nick .. " is taken")
  end)

  it("redis-server restarted: both instances reconnect within 2 s, clients hear of the gap, lines flow", function()
    redis:kill()
    H.socket.sleep(0.3)
    redis:launch()
    local t0 = now()
    local GAP = "* the room was cut off for a moment: lines may be missing"
    for _, x in ipairs { a, b, c } do x:expect(GAP, 3) end
    assert.is_true(now() - t0 < 2.5, "gap told after " .. (now() - t0))
    b:say("after the restart")
    a:expect("<" .. b.nick .. "> after the restart")
    c:expect("<" .. b.nick .. "> after the restart")
    -- the heartbeats wrote the room again: /who lists everyone
    H.socket.sleep(1.2)
    local all = { a.nick, b.nick, c.nick }
    table.sort(all)
    a:say("/who")
    a:expect("* here: " .. table.concat(all, " "))
  end)

  it("an instance killed with SIGKILL: the others announce its users gone within the heartbeat bound", function()
    A:signal("KILL")
    A:wait(5)
    local t0 = now()
    b:expect("* alice left (gone)", 7)
    c:expect("* alice left (gone)", 7)
    assert.is_true(now() - t0 < 5.5, "announced after " .. (now() - t0))
    b:say("/who")
    local all = { b.nick, c.nick }
    table.sort(all)
    b:expect("* here: " .. table.concat(all, " "))
    c:say("/quit")
    b:expect("* " .. c.nick .. " left")
  end)
end)
