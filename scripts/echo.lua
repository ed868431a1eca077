-- echo.lua -- a byte echo server: whatever a client sends comes back.
--
--   sockhost scripts/echo.lua [address]      (default tcp://127.0.0.1:7000)
--   then: nc 127.0.0.1 7000
local sh = require "sockhost"

local addr = arg[1] or "tcp://127.0.0.1:7000"
local srv = assert(sh.listen(addr, function(conn)
  while true do
    local data = conn:read_some()
    if not data then return end            -- the peer closed
    if not conn:write(data) then return end
  end
end))
print("echo: listening on " .. srv:address())
