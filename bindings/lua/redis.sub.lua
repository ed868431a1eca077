-- sockhost.redis.sub -- a Pub/Sub subscriber: its own connection, read by a
-- task of its own into a bounded queue that sub:next() takes from. When
-- the connection fails, the task connects again (jittered exponential
-- back-off), subscribes again to every channel and pattern, and queues a
-- "gap" event: what was published meanwhile is lost. A full queue drops
-- its oldest message and counts it (sub:dropped()).
local sh = require "sockhost"
local resp = require "sockhost.resp"
local redis = require "sockhost.redis"

local M = {}

local SUB_OPTS = { max_queued = "number", reconnect_min = "number", reconnect_max = "number" }

local Sub = {}
Sub.__index = Sub
Sub.__name = "sockhost.redis.subscriber"

---------------------------------------------------------------- the queue

local function push(s, ev)
  if s.count >= s.max_queued then
    s.q[s.head] = nil
    s.head = s.head + 1
    s.count = s.count - 1
    s.ndropped = s.ndropped + 1
  end
  s.q[s.head + s.count] = ev
  s.count = s.count + 1
  s.ready:set()
end

local function pop(s)
  local ev = s.q[s.head]
  s.q[s.head] = nil
  s.head = s.head + 1
  s.count = s.count - 1
  if s.count == 0 then s.ready:clear() end
  return ev
end

---------------------------------------------------------------- the connection

local function encode(cmd, names)
  local buf = { "*" .. (#names + 1) .. "\r\n$" .. #cmd .. "\r\n" .. cmd .. "\r\n" }
  for _, n in ipairs(names) do buf[#buf + 1] = "$" .. #n .. "\r\n" .. n .. "\r\n" end
  return table.concat(buf)
end

local function keys(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- Send a (P)(UN)SUBSCRIBE for names; the count of confirmations it asks for.
local function send(s, cmd, names)
  if #names == 0 then return true end
  s.expected = s.expected + #names
  local ok, err = s.r.conn:write(encode(cmd, names))
  if not ok then return nil, err end
  return true
end

-- A new connection with every channel and pattern subscribed again.
local function connect(s)
  local r, err = redis.connect(s.url, s.copts)
  if not r then return nil, err end
  r:settimeout(nil)
  s.r, s.gen, s.expected, s.confirmed = r, s.gen + 1, 0, 0
  local ok
  ok, err = send(s, "SUBSCRIBE", keys(s.channels))
  if ok then ok, err = send(s, "PSUBSCRIBE", keys(s.patterns)) end
  if not ok then r:close() s.r = nil return nil, err end
  return true
end

local function confirmation(s)
  s.confirmed = s.confirmed + 1
  if s.gap_at and s.confirmed >= s.gap_at then
    s.gap_at = nil
    push(s, { "gap", nil, s.gap_why })
  end
  s.acked:set()
  s.acked:clear()
end

local KINDS = { subscribe = true, psubscribe = true, unsubscribe = true, punsubscribe = true }

-- One value read from the connection: a message, or a confirmation.
local function dispatch(s, v)
  if type(v) ~= "table" then return end
  local kind = v[1]
  if kind == "message" then
    push(s, { "message", v[2], v[3] })
  elseif kind == "pmessage" then
    push(s, { "pmessage", v[3], v[4], v[2] })
  elseif KINDS[kind] then
    confirmation(s)
  end
end

local function backoff(s, attempt)
  local d = math.min(s.reconnect_max, s.reconnect_min * 2 ^ attempt)
  d = d * (0.5 + math.random() * 0.5)
  s.stop:wait(d)
end

-- The reader task: read, dispatch; on failure connect again until closed.
local function run(s)
  while not s.closed do
    local v, err = resp.read(s.r.conn, s.r.limits or nil)
    if v == nil then
      if s.closed then break end
      s.r:close()
      s.r = nil
      s.acked:set()                       -- waiting subscribe calls: the connection changed
      s.acked:clear()
      sh.log("info", ("redis subscriber %s: %s, connecting again"):format(s.addr, err))
      local attempt = 0
      while not s.closed do
        backoff(s, attempt)
        if s.closed then break end
        if connect(s) then break end
        attempt = attempt + 1
      end
      if s.closed then break end
      s.gap_why = err:match("^protocol error: (.*)") and "bad reply" or err
      s.gap_at = s.expected
      if s.gap_at == 0 then s.gap_at = nil; push(s, { "gap", nil, s.gap_why }) end
    else
      dispatch(s, redis.convert(v))
    end
  end
  if s.r then s.r:close() s.r = nil end
end

---------------------------------------------------------------- methods

-- Wait until the confirmations asked for up to 'target' came, or the
-- connection changed (it then subscribes again to everything).
local function wait_acked(s, target, gen)
  local deadline = sh.now() + s.timeout
  while not s.closed and s.gen == gen and s.r and s.confirmed < target do
    local left = deadline - sh.now()
    if left <= 0 or not s.acked:wait(left) then return nil, "timeout" end
  end
  if s.closed then return nil, "closed" end
  return true
end

local function change(s, cmd, set, add, ...)
  if s.closed then return nil, "closed" end
  local names = { ... }
  for i, n in ipairs(names) do
    if type(n) ~= "string" then error(("bad argument #%d to '%s' (string expected)"):format(i, cmd:lower()), 3) end
  end
  if #names == 0 and not add then names = keys(set) end
  for _, n in ipairs(names) do set[n] = add or nil end
  if not s.r then return true end            -- connecting: it subscribes again to the sets
  local ok, err = send(s, cmd, names)
  if not ok then return true end             -- the reader sees it fail and connects again
  ok, err = wait_acked(s, s.expected, s.gen)
  if not ok then return nil, err end
  return true
end

--- sub:subscribe(channel, ...) -> true | nil, err
function Sub:subscribe(...) return change(self, "SUBSCRIBE", self.channels, true, ...) end
--- sub:psubscribe(pattern, ...) -> true | nil, err
function Sub:psubscribe(...) return change(self, "PSUBSCRIBE", self.patterns, true, ...) end
--- sub:unsubscribe([channel, ...]) -> true | nil, err (none: all)
function Sub:unsubscribe(...) return change(self, "UNSUBSCRIBE", self.channels, false, ...) end
--- sub:punsubscribe([pattern, ...]) -> true | nil, err (none: all)
function Sub:punsubscribe(...) return change(self, "PUNSUBSCRIBE", self.patterns, false, ...) end

--- sub:next([timeout]) -> kind, channel, message [, pattern] | nil, "timeout" | nil, "closed"
function Sub:next(timeout)
  local deadline = timeout and timeout >= 0 and sh.now() + timeout or nil
  while self.count == 0 do
    if self.closed then return nil, "closed" end
    local left = deadline and math.max(deadline - sh.now(), 0) or nil
    if not self.ready:wait(left) then
      if self.count > 0 then break end
      return nil, "timeout"
    end
  end
  local ev = pop(self)
  return ev[1], ev[2], ev[3], ev[4]
end

--- sub:dropped() -> n: messages dropped from a full queue, ever.
function Sub:dropped() return self.ndropped end

--- sub:queued() -> n: events waiting for next().
function Sub:queued() return self.count end

--- sub:close() -> true
function Sub:close()
  if self.closed then return true end
  self.closed = true
  if self.r then self.r:close() end
  self.stop:set()
  self.ready:set()
  self.acked:set()
  return true
end
Sub.__close = Sub.close

function Sub.__tostring(s)
  return ("sockhost.redis.subscriber (%s, %s)"):format(s.addr, s.closed and "closed" or "open")
end

--- redis.subscriber(url [, opts]) -> sub | nil, err [, "server"]
function M.new(url, opts)
  opts = redis.check_opts(opts, "redis.subscriber", SUB_OPTS)
  local copts = {}
  for k, v in pairs(opts) do
    if not SUB_OPTS[k] then copts[k] = v end
  end
  copts.timeout = nil
  local s = setmetatable({
    url = url, copts = copts, addr = "?",
    timeout = tonumber(opts.timeout) or 10,
    max_queued = math.max(1, math.tointeger(tonumber(opts.max_queued or 1000)) or 1000),
    reconnect_min = tonumber(opts.reconnect_min) or 0.05,
    reconnect_max = tonumber(opts.reconnect_max) or 1,
    q = {}, head = 1, count = 0, ndropped = 0,
    channels = {}, patterns = {},
    ready = sh.event(), acked = sh.event(), stop = sh.event(),
    gen = 0, expected = 0, confirmed = 0, closed = false,
  }, Sub)
  local ok, err, kind = connect(s)
  if not ok then return nil, err, kind end
  s.addr = s.r.addr
  sh.spawn(run, s)
  return s
end

return M
