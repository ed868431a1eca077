-- sockhost.redis.stream -- read a Redis stream entry by entry with
-- XREAD BLOCK, on a connection of its own. After a transport failure it
-- connects again (jittered exponential back-off) and goes on from the last
-- id it handed out, so nothing Redis holds is lost or repeated.
local sh = require "sockhost"
local redis = require "sockhost.redis"

local M = {}

local READER_OPTS = { start_id = "string", block = "number", count = "number",
                      reconnect_min = "number", reconnect_max = "number" }

local Reader = {}
Reader.__index = Reader
Reader.__name = "sockhost.redis.stream_reader"

local function connect(rd)
  local r, err, kind = redis.connect(rd.url, rd.copts)
  if not r then return nil, err, kind end
  r:settimeout(rd.block + rd.timeout)      -- XREAD BLOCK waits up to block
  rd.r = r
  return true
end

-- "$" (only what comes later) made an id, so that a reconnection resumes
-- from there and not from whatever is newest then.
local function resolve_start(rd)
  local v, err, kind = rd.r:call("XREVRANGE", rd.key, "+", "-", "COUNT", 1)
  if v == nil then return nil, err, kind end
  rd.last = (v[1] and v[1][1]) or "0-0"
  return true
end

local function fields_of(list)
  local m = {}
  if type(list) == "table" then
    for i = 1, #list - 1, 2 do m[list[i]] = list[i + 1] end
  end
  return m
end

-- One XREAD: entries into the buffer; true, or nil, err [, "server"].
local function read_batch(rd, block)
  if rd.last == "$" then
    local ok, err, kind = resolve_start(rd)
    if not ok then return nil, err, kind end
  end
  local v, err, kind = rd.r:call("XREAD", "COUNT", rd.count, "BLOCK", math.max(1, math.floor(block * 1000)),
                                 "STREAMS", rd.key, rd.last)
  if v == nil then return nil, err, kind end
  if v == redis.null then return true end
  local entries = type(v[1]) == "table" and v[1][2]
  if type(entries) ~= "table" then return nil, "bad reply: not a stream reply" end
  for _, e in ipairs(entries) do
    if type(e) == "table" and type(e[1]) == "string" then
      rd.buf[#rd.buf + 1] = e
    end
  end
  return true
end

--- reader:next([timeout]) -> id, fields | nil, "timeout" | nil, "closed" | nil, msg, "server"
function Reader:next(timeout)
  local deadline = timeout and timeout >= 0 and sh.now() + timeout or nil
  local attempt = 0
  while true do
    if self.closed then return nil, "closed" end
    if self.bi <= #self.buf then
      local e = self.buf[self.bi]
      self.bi = self.bi + 1
      if self.bi > #self.buf then self.buf, self.bi = {}, 1 end
      self.last = e[1]
      return e[1], fields_of(e[2])
    end
    local left = deadline and deadline - sh.now() or self.block
    if left <= 0 then return nil, "timeout" end
    local ok, err, kind
    if not self.r or self.r.broken then ok, err, kind = connect(self) else ok = true end
    if ok then ok, err, kind = read_batch(self, math.min(left, self.block)) end
    if not ok then
      if kind == "server" then return nil, err, kind end
      if self.closed then return nil, "closed" end
      if self.r then self.r:close() self.r = nil end
      sh.log("info", ("redis stream reader %s: %s, connecting again"):format(self.key, err))
      local d = math.min(self.reconnect_max, self.reconnect_min * 2 ^ attempt) * (0.5 + math.random() * 0.5)
      if deadline then d = math.min(d, math.max(deadline - sh.now(), 0)) end
      self.stop:wait(d)
      attempt = attempt + 1
    else
      attempt = 0
    end
  end
end

--- reader:last_id() -> the id of the last entry handed out (or the start id)
function Reader:last_id() return self.last end

function Reader:close()
  self.closed = true
  if self.r then self.r:close() end
  self.stop:set()
  return true
end
Reader.__close = Reader.close

--- redis.stream_reader(r_or_url, key [, opts]) -> reader | nil, err
function M.new(src, key, opts)
  opts = redis.check_opts(opts, "redis.stream_reader", READER_OPTS)
  if type(key) ~= "string" then error("bad argument #2 to 'redis.stream_reader' (string expected)", 3) end
  local url, copts = src, {}
  if type(src) == "table" and src.url then        -- a client: its url and options
    url = src.url
    for k, v in pairs(src.opts or {}) do copts[k] = v end
  elseif type(src) ~= "string" then
    error("bad argument #1 to 'redis.stream_reader' (url or redis client expected)", 3)
  end
  for k, v in pairs(opts) do
    if not READER_OPTS[k] then copts[k] = v end
  end
  local rd = setmetatable({
    url = url, copts = copts, key = key, last = opts.start_id or "$",
    block = tonumber(opts.block) or 5, count = math.tointeger(tonumber(opts.count or 100)) or 100,
    timeout = tonumber(copts.timeout) or 10,
    reconnect_min = tonumber(opts.reconnect_min) or 0.05,
    reconnect_max = tonumber(opts.reconnect_max) or 1,
    buf = {}, bi = 1, closed = false, stop = sh.event(),
  }, Reader)
  local ok, err, kind = connect(rd)
  if not ok then return nil, err, kind end
  if rd.last == "$" then
    ok, err, kind = resolve_start(rd)
    if not ok then rd.r:close() return nil, err, kind end
  end
  return rd
end

return M
