-- sockhost_line.lua -- the line echo of `make bench`: read("L"), write it back.
--   ./sockhost bench/sockhost_line.lua tcp://127.0.0.1:PORT
local sh = require "sockhost"

assert(sh.listen(arg[1], function(conn)
  while true do
    local l = conn:read("L")
    if not l then break end
    if not conn:write(l) then break end
  end
end))
