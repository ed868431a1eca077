-- sockhost.redis.pool -- Redis connections on the shared keep-alive pool
-- (sockhost.pool): each call borrows a connection and gives it back when
-- its replies are all read. One that failed, or that a command left in a
-- state of its own (MULTI, WATCH, SUBSCRIBE, SELECT, ...), is discarded.
local pool = require "sockhost.pool"
local redis = require "sockhost.redis"

local M = {}

local STATEFUL = redis.STATEFUL

local function redis_call(r, ...) return r:call(...) end

local RPool = {}
RPool.__name = "sockhost.redis.pool"
RPool.__index = redis.commands_index(RPool)

local POOL_OPTS = { size = "number", idle_timeout = "number", wait_timeout = "number" }

--- redis.pool(url [, opts]) -> pool | nil, "bad url: ..."
function M.new(url, opts)
  opts = redis.check_opts(opts, "redis.pool", POOL_OPTS)
  local u, err = redis.parse_url(url)
  if not u then return nil, err end
  local copts = {}
  for k, v in pairs(opts) do
    if not POOL_OPTS[k] then copts[k] = v end
  end
  local size = math.tointeger(tonumber(opts.size or 10))
  if not size or size < 1 then error("bad argument #2 to 'redis.pool' (size must be an integer >= 1)", 2) end
  local p = pool.new {
    connect = function() return redis.connect(url, copts) end,
    size = size, max = size,
    idle_timeout = opts.idle_timeout or 60,
    wait_timeout = opts.wait_timeout or 10,
  }
  return setmetatable({ pool = p, key = url }, RPool)
end

-- Lend a connection to f(r), then give it back or discard it.
local function with(self, keep, f, ...)
  local r, err = self.pool:get(self.key)
  if not r then return nil, err end
  local res = table.pack(pcall(f, r, ...))
  if res[1] and keep and not r.broken then
    self.pool:put(self.key, r)
  else
    self.pool:discard(self.key, r)
  end
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

--- pool:call(name, ...) -> as r:call
function RPool:call(name, ...)
  if type(name) ~= "string" then error("bad argument #1 to 'call' (command name expected)", 2) end
  return with(self, not STATEFUL[name:upper()], redis_call, name, ...)
end


--- pool:pipeline(fn) -> replies | nil, err
function RPool:pipeline(fn)
  if type(fn) ~= "function" then error("bad argument #1 to 'pipeline' (function expected)", 2) end
  return with(self, true, function(r)
    local b = r:pipeline()
    fn(b)
    local out, err = b:run()
    if b.stateful then r.broken = true end     -- not given back: see STATEFUL
    return out, err
  end)
end

--- pool:multi(fn) -> as r:multi
function RPool:multi(fn)
  if type(fn) ~= "function" then error("bad argument #1 to 'multi' (function expected)", 2) end
  return with(self, true, function(r) return r:multi(fn) end)
end

--- pool:stats() -> sockhost.pool's counts
function RPool:stats() return self.pool:stats() end

function RPool:close() return self.pool:close() end
RPool.__close = RPool.close

function RPool.__tostring(p) return "sockhost.redis.pool (" .. tostring(p.pool) .. ")" end

return M
