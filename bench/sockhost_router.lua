-- bench/sockhost_router.lua -- the http-router-50 case of bench/run: a
-- sockhost.http router with 20 routes, each with path parameters; the load
-- asks for one of the last ones (/svc19/users/42/items/7), which answers
-- "hello\n" like scripts/http.lua's "/".
--   sockhost bench/sockhost_router.lua [address]
local http = require "sockhost.http"

local app = http.router()
for i = 1, 20 do
  local name = "svc" .. i
  app:get("/" .. name .. "/users/:id/items/:item", function(req)
    local p = req.params
    if p.id == nil or p.item == nil then return 500 end
    return "hello\n"
  end)
end

assert(http.listen(arg[1] or "tcp://127.0.0.1:8081", app))
