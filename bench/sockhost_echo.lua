-- sockhost_echo.lua -- the byte echo of `make bench`.
--   ./sockhost bench/sockhost_echo.lua tcp://127.0.0.1:PORT
local sh = require "sockhost"

assert(sh.listen(arg[1], function(conn)
  while true do
    local d = conn:read_some()
    if not d then break end
    if not conn:write(d) then break end
  end
end))
