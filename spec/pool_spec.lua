-- sockhost.pool: keep-alive pools of connections. In-process (the backend is
-- a listener in the same loop, over real TCP), under virtual time
-- (spec/fixtures/vt/pool.lua) for the idle timeout, and end to end for
-- what keeps the process alive (a python3 backend).
local H = require "helpers"
local sh = H.sh
local pool = require "sockhost.pool"
local T = require "sockhost.test"

-- A backend that answers each line with "N line" (N: its connection's
-- number, from 1) and counts the connections it saw end.
local function backend()
  local b = { accepted = 0, ended = 0, conns = {} }
  b.srv = assert(sh.listen("tcp://127.0.0.1:0", function(conn)
    b.accepted = b.accepted + 1
    local me = b.accepted
    b.conns[me] = conn
    for line in conn:lines() do conn:write(me, " ", line, "\n") end
    b.ended = b.ended + 1
  end))
  b.addr = b.srv:address()
  -- the end of a case: the listener and every connection it accepted
  function b.close()
    b.srv:close()
    for _, c in pairs(b.conns) do c:close() end
  end
  return b
end

local function new_pool(b, opts)
  opts = opts or {}
  opts.connect = opts.connect or function(key)
    return sh.connect((key:gsub("/%d+$", "")), { timeout = 5 })   -- "addr/N": another key, same place
  end
  return pool.new(opts)
end

-- One round trip: the number of the backend's connection that answered.
local function who(conn, what)
  assert(conn:write((what or "ping") .. "\n"))
  local line = assert(conn:read())
  return tonumber(line:match("^(%d+) "))
end

-- Let the loop turn until cond() holds (bounded).
local function until_(cond, secs)
  local deadline = sh.now() + (secs or 2)
  while not cond() and sh.now() < deadline do sh.sleep(0.01) end
  return cond()
end

describe("sockhost.pool", function()
  it("lends an idle connection again for its key, and counts", function()
    H.run(function()
      local b = backend()
      local p = new_pool(b)
      local c1, reused1 = assert(p:get(b.addr))
      assert.is_false(reused1)
      assert.equal(1, who(c1))
      assert.is_true(p:put(b.addr, c1))
      assert.same({ idle = 1, busy = 0, connecting = 0, waiting = 0, created = 1, reused = 0, closed = 0 }, p:stats())
      local c2, reused2 = assert(p:get(b.addr))
      assert.is_true(reused2)
      assert.equal(c1, c2)
      assert.equal(1, who(c2))
      assert.same({ idle = 0, busy = 1, connecting = 0, waiting = 0, created = 1, reused = 1, closed = 0 }, p:stats())
      p:put(b.addr, c2)
      -- another key is another connection, even to the same place
      local c3, reused3 = assert(p:get(b.addr .. "/2"))
      assert.is_false(reused3)
      assert.equal(2, who(c3))
      p:discard(b.addr .. "/2", c3)
      p:close()
      b.close()
      assert.equal(2, b.accepted)
    end)
  end)

  it("keeps at most size idle connections per key, closing the oldest", function()
    H.run(function()
      local b = backend()
      local p = new_pool(b, { size = 2 })
      local cs = {}
      for i = 1, 5 do cs[i] = assert(p:get(b.addr)) end
      for i = 1, 5 do assert.equal(i, who(cs[i])) end
      for i = 1, 5 do assert.is_true(p:put(b.addr, cs[i])) end
      local s = p:stats()
      assert.equal(2, s.idle)
      assert.equal(3, s.closed)
      assert.is_true(until_(function() return b.ended == 3 end))
      -- the two kept are the newest: connections 4 and 5, newest first
      local a = assert(p:get(b.addr))
      local c = assert(p:get(b.addr))
      assert.equal(5, who(a))
      assert.equal(4, who(c))
      local d, reused = assert(p:get(b.addr))
      assert.is_false(reused)
      assert.equal(6, who(d))
      p:discard(b.addr, a); p:discard(b.addr, c); p:discard(b.addr, d)
      assert.equal(0, p:stats().busy)
      p:close()
      b.close()
    end)
  end)

  it("size 0 keeps nothing", function()
    H.run(function()
      local b = backend()
      local p = new_pool(b, { size = 0 })
      local c = assert(p:get(b.addr))
      assert.is_false(p:put(b.addr, c))
      local _, reused = assert(p:get(b.addr))
      assert.is_false(reused)
      assert.equal(2, p:stats().created)
      p:close()
      b.close()
    end)
  end)

  it("setsize gives one key a size of its own, closing its idle connections beyond it; nil undoes it", function()
    H.run(function()
      local b = backend()
      local p = new_pool(b, { size = 3 })
      local k1, k2 = b.addr .. "/1", b.addr .. "/2"
      assert.is_true(p:setsize(k1, 1))
      local cs = {}
      for i = 1, 3 do cs[i] = assert(p:get(k1)) end
      for i = 4, 6 do cs[i] = assert(p:get(k2)) end
      for i = 1, 6 do assert.equal(i, who(cs[i])) end
      assert.same({ true, true, true }, { p:put(k1, cs[1]), p:put(k1, cs[2]), p:put(k1, cs[3]) })
      for i = 4, 6 do p:put(k2, cs[i]) end
      local s = p:stats()
      assert.same({ 4, 2 }, { s.idle, s.closed })   -- k1 kept one (the newest), k2 the pool's 3
      assert.is_true(until_(function() return b.ended == 2 end))
      local c = assert(p:get(k1))
      assert.equal(3, who(c))
      p:put(k1, c)
      -- lowering a key's size closes its oldest idle ones at once
      p:setsize(k2, 1)
      assert.same({ 2, 4 }, { p:stats().idle, p:stats().closed })
      assert.is_true(until_(function() return b.ended == 4 end))
      local d = assert(p:get(k2))
      assert.equal(6, who(d))
      -- nil: the pool's size again
      p:setsize(k1, nil)
      local more = {}
      for i = 1, 3 do more[i] = assert(p:get(k1)) end
      for i = 1, 3 do p:put(k1, more[i]) end
      assert.equal(3, p:stats().idle)
      p:setsize(k2, 0)
      assert.is_false(p:put(k2, d))
      assert.has_error(function() p:setsize(k1, -1) end, "bad argument #2 to 'setsize' (number >= 0 expected)")
      assert.has_error(function() p:setsize(7, 1) end, "bad argument #1 to 'setsize' (string expected, got number)")
      p:close()
      b.close()
    end)
  end)

  it("drops an idle connection the server closed, or that got unexpected bytes, and makes a new one", function()
    H.run(function()
      local b = backend()
      local p = new_pool(b)
      local c1 = assert(p:get(b.addr))
      assert.equal(1, who(c1))
      p:put(b.addr, c1)
      b.conns[1]:close()                       -- the server ends it while it is idle
      assert.is_true(until_(function() return select(2, c1:pending()) == true end))
      local c2, reused = assert(p:get(b.addr))
      assert.is_false(reused)
      assert.not_equal(c1, c2)
      assert.equal(2, who(c2))
      assert.equal(1, p:stats().closed)
      p:put(b.addr, c2)
      b.conns[2]:write("unasked\n")             -- bytes nobody asked for
      assert.is_true(until_(function() return (c2:pending()) > 0 end))
      local c3, reused3 = assert(p:get(b.addr))
      assert.is_false(reused3)
      assert.equal(3, who(c3))
      assert.equal(2, p:stats().closed)
      p:discard(b.addr, c3)
      p:close()
      b.close()
    end)
  end)

  it("put drops a connection that is not clean", function()
    H.run(function()
      local b = backend()
      local p = new_pool(b)
      local c = assert(p:get(b.addr))
      assert(c:write("ping\n"))                -- the answer is never read
      assert.is_true(until_(function() return (c:pending()) > 0 end))
      assert.is_false(p:put(b.addr, c))
      assert.same({ idle = 0, busy = 0, closed = 1 },
        { idle = p:stats().idle, busy = p:stats().busy, closed = p:stats().closed })
      p:close()
      b.close()
    end)
  end)

  it("never lends a connection that was not put back", function()
    H.run(function()
      local b = backend()
      local p = new_pool(b)
      local c1 = assert(p:get(b.addr))
      local c2 = assert(p:get(b.addr))
      assert.not_equal(c1, c2)
      assert.equal(1, who(c1))
      assert.equal(2, who(c2))
      -- a connection the pool did not lend, one put twice, or under another key: raise
      local foreign = assert(sh.connect(b.addr))
      assert.has_error(function() p:put(b.addr, foreign) end,
        "bad argument #2 to 'put' (not a connection lent by this pool)")
      assert.has_error(function() p:put("tcp://elsewhere:1", c1) end,
        "bad argument #1 to 'put' (the connection was lent for key '" .. b.addr .. "')")
      p:put(b.addr, c1)
      assert.has_error(function() p:put(b.addr, c1) end,
        "bad argument #2 to 'put' (not a connection lent by this pool)")
      local c3 = assert(p:get(b.addr))
      assert.equal(c1, c3)
      local c4 = assert(p:get(b.addr))
      assert.not_equal(c1, c4)
      assert.not_equal(c2, c4)
      assert.equal(3, p:stats().busy)
      foreign:close()
      p:close()
      b.close()
    end)
  end)

  it("passes a failed connect's error through and frees its place", function()
    H.run(function()
      local port = H.free_port()
      local p = pool.new { max = 1, connect = function(key) return sh.connect(key) end }
      local c, err = p:get("tcp://127.0.0.1:" .. port)
      assert.is_nil(c)
      assert.equal("connection refused", err)
      local s = p:stats()
      assert.equal(0, s.busy + s.connecting + s.idle)
      c, err = p:get("tcp://127.0.0.1:" .. port, { wait_timeout = 0 })
      assert.equal("connection refused", err)   -- the place was free: no "timeout"
    end)
  end)

  it("with max reached, waiters queue in order and time out", function()
    H.run(function()
      local b = backend()
      local p = new_pool(b, { max = 1, wait_timeout = 5 })
      local c1 = assert(p:get(b.addr))
      local t0 = sh.now()
      local c, err = p:get(b.addr, { wait_timeout = 0.2 })
      assert.is_nil(c)
      assert.equal("timeout", err)
      assert.is_true(sh.now() - t0 >= 0.19)
      assert.equal(0, p:stats().waiting)
      local order = {}
      local tasks = {}
      for i = 1, 3 do
        tasks[i] = sh.spawn(function()
          local conn, reused = assert(p:get(b.addr))
          order[#order + 1] = i
          assert.is_true(reused)
          assert.equal(1, who(conn))
          sh.sleep(0.01)
          p:put(b.addr, conn)
        end)
      end
      assert.is_true(until_(function() return p:stats().waiting == 3 end))
      p:put(b.addr, c1)
      for i = 1, 3 do tasks[i]:join() end
      assert.same({ 1, 2, 3 }, order)
      assert.equal(1, p:stats().created)
      assert.equal(1, b.accepted)
      p:close()
      b.close()
    end)
  end)

  it("with max reached by idle connections of other keys, closes the oldest of those", function()
    H.run(function()
      local b1, b2 = backend(), backend()
      local p = new_pool(b1, { max = 1, wait_timeout = 0 })
      local c1 = assert(p:get(b1.addr))
      p:put(b1.addr, c1)
      local c2, reused = assert(p:get(b2.addr))
      assert.is_false(reused)
      assert.equal(1, who(c2))
      assert.equal(1, p:stats().closed)
      assert.is_true(until_(function() return b1.ended == 1 end))
      p:discard(b2.addr, c2)
      p:close()
      b1.close(); b2.close()
    end)
  end)

  it("close: idle connections closed, get and waiters get nil, 'closed'", function()
    H.run(function()
      local b = backend()
      local p = new_pool(b, { max = 1 })
      local c1 = assert(p:get(b.addr))
      local res
      local t = sh.spawn(function() res = { p:get(b.addr) } end)
      assert.is_true(until_(function() return p:stats().waiting == 1 end))
      p:close()
      t:join()
      assert.same({ nil, "closed" }, res)
      assert.same({ nil, "closed" }, { p:get(b.addr) })
      assert.is_false(p:put(b.addr, c1))       -- closed, not kept
      b.close()
    end)
  end)

  it("raises on programming errors", function()
    assert.has_error(function() pool.new {} end, "bad argument #1 to 'pool.new' (option 'connect' must be a function)")
    assert.has_error(function() pool.new { connect = print, sise = 1 } end, "bad argument #1 to 'pool.new' (unknown option 'sise')")
    assert.has_error(function() pool.new { connect = print, size = "x" } end, "bad argument #1 to 'pool.new' (option 'size' must be a number)")
    local p = pool.new { connect = print }
    assert.has_error(function() p:get(42) end, "bad argument #1 to 'get' (string expected, got number)")
  end)
end)

describe("sockhost.pool (virtual time)", function()
  local t
  after_each(function() if t then t:close() end t = nil end)

  it("keeps an idle connection for idle_timeout, then the host's sweep closes it", function()
    t = T.new { seed = 7 }
    t:script("spec/fixtures/vt/pool.lua")
    local ctl = t:connect("tcp://127.0.0.1:7130")
    ctl:send_line("get"); ctl:expect_line("conn 1 new")
    ctl:send_line("put"); ctl:expect_line("ok")
    t:advance(59)
    ctl:send_line("get"); ctl:expect_line("conn 1 reused")
    ctl:send_line("put"); ctl:expect_line("ok")
    ctl:send_line("stats"); ctl:expect_line("idle 1 busy 0 created 1 reused 1 closed 0")
    t:advance(59.5)
    assert.is_nil(t:log_match("^backend 1 closed"))
    t:advance(1)                              -- 60 s idle, plus the sweep's 0.2 s
    assert.truthy(t:log_match("^backend 1 closed"))
    ctl:send_line("stats"); ctl:expect_line("idle 0 busy 0 created 1 reused 1 closed 1")
    ctl:send_line("get"); ctl:expect_line("conn 2 new")
  end)
end)

describe("sockhost.pool end to end", function()
  it("idle connections do not keep the process alive", function()
    local srv = H.launch_python([[
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0)); s.listen(4)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
f = c.makefile("rb")
for line in f:
    c.sendall(b"ok " + line)
]])
    local port = srv:wait_output("^(%d+)\n")
    local script = H.writefile(H.tmpname(".lua"), ([[
local sh = require "sockhost"
local pool = require "sockhost.pool"
local p = pool.new { connect = function(k) return sh.connect(k) end, idle_timeout = 60 }
local key = "tcp://127.0.0.1:%s"
local c = assert(p:get(key))
c:write("hello\n")
print(c:read())
print(p:put(key, c), p:stats().idle)
]]):format(port))
    local t0 = H.socket.gettime()
    local out, _, rc = H.exec(H.q(script))
    local took = H.socket.gettime() - t0
    srv:stop()
    assert.equal(0, rc)
    assert.equal("ok hello\ntrue\t1\n", out)
    assert.is_true(took < 5, "took " .. took .. " s")
  end)
end)
