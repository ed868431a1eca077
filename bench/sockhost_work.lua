-- sockhost_work.lua -- the echo of `make bench`'s worker-scaling case, with
-- some Lua work per message (a 64-byte checksum folded 20 times), so that
-- the server, not the load generator, is what runs out of CPU.
--   ./sockhost -w N bench/sockhost_work.lua tcp://127.0.0.1:PORT
local sh = require "sockhost"
local byte = string.byte

local function work(d)
  local h = 0
  for _ = 1, 20 do
    for i = 1, #d do h = (h * 31 + byte(d, i)) & 0xffffffff end
  end
  return h
end

assert(sh.listen(arg[1], function(conn)
  while true do
    local d = conn:read_some()
    if not d then break end
    work(d)
    if not conn:write(d) then break end
  end
end))
