-- bench/httpc_ir.lua -- bench/httpc_ir's client: CONNS tasks sending GET url
-- through one http.client (a pool of CONNS keep-alive connections, each
-- body read) until N requests are done. Prints "httpc_ir requests=N errors=E".
--   sockhost bench/httpc_ir.lua URL CONNS N
local sh = require "sockhost"
local http = require "sockhost.http"

local url = assert(arg[1], "url?")
local conns = math.tointeger(tonumber(arg[2] or "50"))
local n = math.tointeger(tonumber(arg[3] or "1000"))

local client = http.client { pool_size = conns, read_timeout = 30 }
local started, errors = 0, 0
local tasks = {}
for i = 1, conns do
  tasks[i] = sh.spawn(function()
    while started < n do
      started = started + 1
      local res = client:get(url)
      local body = res and res:body()
      if not (body and res.status == 200) then errors = errors + 1 end
    end
  end)
end
for i = 1, conns do tasks[i]:join() end
print(("httpc_ir requests=%d errors=%d"):format(started, errors))
client:close()
