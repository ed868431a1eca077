-- udp_echo.lua -- a UDP echo server: each datagram goes back to its sender,
-- from the address it arrived on.
--
--   sockhost scripts/udp_echo.lua [address]     (default udp://127.0.0.1:7001)
--   then: nc -u 127.0.0.1 7001
-- Also serves Unix datagrams: sockhost scripts/udp_echo.lua unixgram:/tmp/echo.sock
local sh = require "sockhost"

local addr = arg[1] or "udp://127.0.0.1:7001"
local sock = assert(sh.udp(addr, function(s, data, from)
  s:sendto(data, from)
end))
print("udp echo: listening on " .. sock:address())
