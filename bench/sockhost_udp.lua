-- sockhost_udp.lua -- the UDP echo of `make bench`.
--   ./sockhost bench/sockhost_udp.lua udp://127.0.0.1:PORT
local sh = require "sockhost"

assert(sh.udp(arg[1], function(s, data, from)
  s:sendto(data, from)
end))
