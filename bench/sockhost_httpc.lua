-- bench/sockhost_httpc.lua -- the HTTP client side of `make bench`: N tasks
-- each sending GET url in a loop (reading each body to its end) through one
-- http.client whose pool keeps N connections, for a warm-up and then a
-- measured time. Prints one line:
--   httpc requests=R seconds=S errors=E total=T
-- (R: requests answered in the measured time; T: all, the warm-up's too)
--   sockhost bench/sockhost_httpc.lua URL CONNS SECONDS [WARMUP]
local sh = require "sockhost"
local http = require "sockhost.http"

local url = assert(arg[1], "url?")
local conns = math.tointeger(tonumber(arg[2] or "16"))
local secs, warm = tonumber(arg[3] or "3"), tonumber(arg[4] or "0.5")

local client = http.client { pool_size = conns, read_timeout = 10 }
local count, total, errors, counting = 0, 0, 0, false
local stop_at = sh.now() + warm + secs

local tasks = {}
for i = 1, conns do
  tasks[i] = sh.spawn(function()
    while sh.now() < stop_at do
      local res = client:get(url)
      local body = res and res:body()
      if body and res.status == 200 then
        total = total + 1
        if counting then count = count + 1 end
      else
        errors = errors + 1
        sh.sleep(0.01)
      end
    end
  end)
end
sh.sleep(warm)
counting = true
local t0 = sh.now()
for i = 1, conns do tasks[i]:join() end
print(("httpc requests=%d seconds=%.3f errors=%d total=%d"):format(count, sh.now() - t0, errors, total))
client:close()
