-- sockhost.pool -- a keep-alive pool of connections, protocol-agnostic.
--
-- Connections are kept per key (a string the protocol chooses: a scheme,
-- host and port, its TLS options...). p:get(key) lends an idle one of that
-- key, or makes one with the pool's connect function; p:put(key, conn)
-- takes it back once the protocol knows it is clean (nothing unread, the
-- peer willing to go on), p:discard(key, conn) closes it. The pool never
-- lends a connection that was not put back.
--
-- Idle connections hold nothing of the loop: a script with nothing else
-- to wait for ends. Their idle timeout is the host's idle limit
-- (conn:setlimits), checked by the host's one sweep timer for all
-- connections, which does not keep the process alive either; get() also
-- drops one past its time, and one the peer closed or wrote to while it was
-- idle (conn:pending(), which never waits). A full pool (max) makes get()
-- wait, in order, each waiter on an event of its own. p:setsize(key, n)
-- gives one key a size of its own (sockhost.socket's setkeepalive: the
-- first size given for a host:port holds for it).
local sh = require "sockhost"

local M = {}

local DEFAULTS = {
  size = 16,            -- idle connections kept per key
  max = -1,             -- connections open at once, lent and idle: none
  idle_timeout = 60,    -- seconds an idle connection is kept
  wait_timeout = 30,    -- seconds get() waits for a full pool
}

local NO_LIMIT = { idle_timeout = 0 }      -- a lent connection: no idle limit

local Pool = {}
Pool.__index = Pool
Pool.__name = "sockhost.pool"

local function num_opt(opts, name, fname)
  local v = opts[name]
  if v == nil then return DEFAULTS[name] end
  local n = tonumber(v)
  if n == nil then error(("bad argument #1 to '%s' (option '%s' must be a number)"):format(fname, name), 3) end
  return n
end

-- pool.new{ connect = fn(key, opts) -> conn | nil, err, size =, max =,
--           idle_timeout =, wait_timeout = } -> pool
function M.new(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'pool.new' (table expected)", 2) end
  for k in pairs(opts) do
    if k ~= "connect" and DEFAULTS[k] == nil then
      error(("bad argument #1 to 'pool.new' (unknown option '%s')"):format(tostring(k)), 2)
    end
  end
  if type(opts.connect) ~= "function" then
    error("bad argument #1 to 'pool.new' (option 'connect' must be a function)", 2)
  end
  local p = setmetatable({
    connect = opts.connect,
    size = num_opt(opts, "size", "pool.new"),
    max = num_opt(opts, "max", "pool.new"),
    idle_timeout = num_opt(opts, "idle_timeout", "pool.new"),
    wait_timeout = num_opt(opts, "wait_timeout", "pool.new"),
    idle = {},                                 -- key -> { conn, ... }, oldest first
    since = {},                                -- idle conn -> when it was put
    sizes = {},                                -- key -> its own size (setsize)
    nidle = 0,
    spare = false,                             -- an emptied idle list, for the next put
    busy = 0,                                  -- lent
    opening = 0,                               -- being made by connect
    lent = setmetatable({}, { __mode = "k" }), -- conn -> its key
    waiters = {},                              -- FIFO of { ev =, granted = }
    created = 0, reused = 0, closed = 0,
    is_closed = false,
  }, Pool)
  p.limit = { idle_timeout = p.idle_timeout }
  if p.size < 0 then error("bad argument #1 to 'pool.new' (size must be >= 0)", 2) end
  return p
end

-- Whether an idle connection is still clean: open, nothing arrived, not
-- ended by the peer.
local function clean(conn)
  local n, ended = conn:pending()
  return n == 0 and not ended
end

local function drop(p, conn)
  conn:close()
  p.closed = p.closed + 1
end

-- Hand the next waiter its turn.
local function wake_one(p)
  if p.waiters[1] == nil then return end
  local w = table.remove(p.waiters, 1)
  if w then
    w.granted = true
    w.ev:set()
  end
end

local function open_count(p)
  return p.busy + p.nidle + p.opening
end

-- Close the idle connection (of any key) idle the longest: room for another.
local function evict_oldest(p)
  local bk, bi, bsince
  for k, list in pairs(p.idle) do
    local c = list[1]
    if c and (bsince == nil or p.since[c] < bsince) then bk, bi, bsince = k, 1, p.since[c] end
  end
  if bk == nil then return false end
  local c = table.remove(p.idle[bk], bi)
  if #p.idle[bk] == 0 then p.idle[bk] = nil end
  p.nidle = p.nidle - 1
  p.since[c] = nil
  drop(p, c)
  return true
end

local function lend(p, key, conn)
  p.busy = p.busy + 1
  p.lent[conn] = key
  return conn
end

-- The newest idle connection of 'key' that is still good; the others met
-- on the way (past their time, closed by the peer or by the host's idle
-- limit, or with unexpected bytes) are closed.
local function take_idle(p, key)
  local list = p.idle[key]
  if list == nil then return nil end
  local limit, since = p.idle_timeout, p.since
  local now = limit > 0 and sh.now()
  local n = #list
  while n > 0 do
    local c = list[n]
    list[n], n = nil, n - 1
    local t = since[c]
    p.nidle, since[c] = p.nidle - 1, nil
    if (not now or now - t < limit) and clean(c) then
      if n == 0 then p.idle[key], p.spare = nil, list end
      c:setlimits(NO_LIMIT)
      return c
    end
    drop(p, c)
  end
  p.idle[key], p.spare = nil, list
  return nil
end

-- Wait for a turn until 'deadline' (nil: for ever); false on timeout.
local function wait_turn(p, deadline, front)
  local w = { ev = sh.event(), granted = false }
  if front then table.insert(p.waiters, 1, w) else p.waiters[#p.waiters + 1] = w end
  local left = deadline and math.max(deadline - sh.now(), 0) or nil
  w.ev:wait(left)
  if w.granted then return true end
  for i, x in ipairs(p.waiters) do
    if x == w then table.remove(p.waiters, i) break end
  end
  return false
end

local function check_key(key, fname)
  if type(key) ~= "string" then
    error(("bad argument #1 to '%s' (string expected, got %s)"):format(fname, type(key)), 3)
  end
end

-- p:get(key [, opts]) -> conn, reused | nil, err
-- opts: fresh = true (never an idle one), wait_timeout = s; the whole
-- table goes to the connect function as its second argument.
function Pool:get(key, opts)
  if type(key) ~= "string" then check_key(key, "get") end
  if opts ~= nil and type(opts) ~= "table" then error("bad argument #2 to 'get' (table expected)", 2) end
  local wt = self.wait_timeout
  if opts and opts.wait_timeout ~= nil then wt = assert(tonumber(opts.wait_timeout), "wait_timeout must be a number") end
  local deadline     -- made when first needed (no wait before that: the same time)
  local granted = false
  while true do
    if self.is_closed then
      if granted then wake_one(self) end
      return nil, "closed"
    end
    if not (opts and opts.fresh) then
      local conn = take_idle(self, key)
      if conn then
        self.reused = self.reused + 1
        if granted then wake_one(self) end   -- the turn was not needed: pass it on
        self.busy = self.busy + 1             -- lend(), inline
        self.lent[conn] = key
        return conn, true
      end
    end
    if self.max < 0 or open_count(self) < self.max or evict_oldest(self) then
      self.opening = self.opening + 1
      local ok, conn, err = pcall(self.connect, key, opts)
      self.opening = self.opening - 1
      if not ok then wake_one(self) error(conn, 0) end
      if not conn then
        wake_one(self)
        return nil, err
      end
      self.created = self.created + 1
      if self.is_closed then drop(self, conn) return nil, "closed" end
      return lend(self, key, conn), false
    end
    if deadline == nil then deadline = wt >= 0 and sh.now() + wt or false end
    if deadline and sh.now() >= deadline then
      if granted then wake_one(self) end
      return nil, "timeout"
    end
    granted = wait_turn(self, deadline or nil, granted)
    if not granted and not self.is_closed then return nil, "timeout" end
  end
end

local function check_lent(p, key, conn, fname)
  if type(key) ~= "string" then check_key(key, fname) end
  local lent = p.lent
  local k = lent[conn]
  if k ~= key then
    if k == nil then error(("bad argument #2 to '%s' (not a connection lent by this pool)"):format(fname), 3) end
    error(("bad argument #1 to '%s' (the connection was lent for key '%s')"):format(fname, k), 3)
  end
  lent[conn] = nil
  p.busy = p.busy - 1
end

local function size_of(p, key)
  return p.sizes[key] or p.size
end

-- Close the oldest idle connections of 'key' beyond its size.
local function trim(p, key)
  local list = p.idle[key]
  if not list then return end
  local size = size_of(p, key)
  while #list > size do
    local old = table.remove(list, 1)
    p.nidle, p.since[old] = p.nidle - 1, nil
    drop(p, old)
  end
  if #list == 0 then p.idle[key] = nil end
end

-- p:put(key, conn) -> kept: take back a clean connection, lent for 'key'.
function Pool:put(key, conn)
  check_lent(self, key, conn, "put")
  local size = self.sizes[key] or self.size
  if self.is_closed or size == 0 or not clean(conn) then
    drop(self, conn)
    wake_one(self)
    return false
  end
  local idle = self.idle
  local list = idle[key]
  if not list then                        -- the list emptied last (see take_idle), or a new one
    list = self.spare or {}
    self.spare = false
    idle[key] = list
  end
  local n = #list + 1
  list[n] = conn
  self.since[conn] = sh.now()
  self.nidle = self.nidle + 1
  if n > size then trim(self, key) end
  if self.idle_timeout > 0 then conn:setlimits(self.limit) end
  if self.waiters[1] ~= nil then wake_one(self) end
  return true
end

-- p:setsize(key [, n]) -> true: idle connections kept for 'key' from now
-- on (n >= 0), instead of the pool's size; nil: the pool's size again.
-- Idle ones beyond it are closed, the oldest first.
function Pool:setsize(key, n)
  check_key(key, "setsize")
  if n ~= nil then
    local v = tonumber(n)
    if v == nil or v < 0 then error("bad argument #2 to 'setsize' (number >= 0 expected)", 2) end
    n = v
  end
  self.sizes[key] = n
  trim(self, key)
  return true
end

-- p:discard(key, conn) -> true: close a lent connection, freeing its place.
function Pool:discard(key, conn)
  check_lent(self, key, conn, "discard")
  drop(self, conn)
  wake_one(self)
  return true
end

-- Forget idle connections the host closed meanwhile (its idle limit).
local function prune(p)
  for k, list in pairs(p.idle) do
    for i = #list, 1, -1 do
      if not list[i]:pending() then
        p.since[table.remove(list, i)] = nil
        p.nidle = p.nidle - 1
        p.closed = p.closed + 1
      end
    end
    if #list == 0 then p.idle[k] = nil end
  end
end

-- p:stats() -> { idle =, busy =, connecting =, waiting =, created =, reused =, closed = }
function Pool:stats()
  prune(self)
  return { idle = self.nidle, busy = self.busy, connecting = self.opening,
           waiting = #self.waiters, created = self.created, reused = self.reused,
           closed = self.closed }
end

-- p:close() -> true: close the idle connections; later get() returns
-- nil, "closed", waiters too; connections still lent are closed when put.
function Pool:close()
  self.is_closed = true
  for _, list in pairs(self.idle) do
    for _, c in ipairs(list) do drop(self, c) end
  end
  self.idle, self.nidle, self.since = {}, 0, {}
  local ws = self.waiters
  self.waiters = {}
  for _, w in ipairs(ws) do w.ev:set() end
  return true
end

Pool.__close = Pool.close
function Pool.__tostring(p)
  return ("sockhost.pool (%s, %d idle, %d busy)"):format(p.is_closed and "closed" or "open", p.nidle, p.busy)
end

return M
