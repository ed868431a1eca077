-- bench/sockhost_redisc.lua -- the client side of the redisc rows: sockhost.redis
-- pipelining SET, then GET, as redis-benchmark -P N does, against a redis-server.
--   sockhost bench/sockhost_redisc.lua PORT [CONNS=50] [SECS=2] [PIPELINE=16]
-- Prints "set <req/s>" and "get <req/s>", then "total <requests of both phases>".
local sh = require "sockhost"
local redis = require "sockhost.redis"

local port = assert(tonumber(arg[1]), "port")
local conns, secs, depth = tonumber(arg[2] or 50), tonumber(arg[3] or 2), tonumber(arg[4] or 16)
local value = ("x"):rep(3)                      -- redis-benchmark's default 3-byte value
local keys = {}                                 -- redis-benchmark (no -r) uses one key
for k = 1, depth do keys[k] = "key:__rand_int__" end

local clients = {}
for i = 1, conns do clients[i] = assert(redis.connect("redis://127.0.0.1:" .. port)) end

local total = 0
local function phase(name)
  local done, stop = 0, sh.now() + secs
  local tasks = {}
  for i = 1, conns do
    local r = clients[i]
    tasks[i] = sh.spawn(function()
      local p = r:pipeline()
      while sh.now() < stop do
        for k = 1, depth do
          if name == "set" then p:set(keys[k], value) else p:get(keys[k]) end
        end
        local out = assert(p:run())
        done = done + out.n
      end
    end)
  end
  local t0 = sh.now()
  for _, t in ipairs(tasks) do t:join() end
  print(("%s %.0f"):format(name, done / (sh.now() - t0)))
  total = total + done
end

phase("set")
phase("get")
print(("total %d"):format(total))
for _, r in ipairs(clients) do r:close() end
