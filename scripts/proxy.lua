-- proxy.lua -- a TCP forwarder: each client is connected to the upstream
-- server, and bytes flow both ways at once until both sides are done.
--
--   sockhost scripts/proxy.lua [address] [upstream]
--       address:  where to listen        (default tcp://127.0.0.1:7020)
--       upstream: where to connect to    (default tcp://127.0.0.1:7000, echo.lua's)
--   A single argument is the upstream. Then: nc 127.0.0.1 7020
--
-- When one side ends its output (EOF), the other side's write half is shut
-- down and the other direction carries on. A side that reads slowly slows
-- the side that sends: a write parks while 64 KiB wait, and the copy stops
-- reading meanwhile, so memory stays bounded. One log line per connection.
-- Clients idle for 300 s are cut by the host (sockhost --idle-timeout S).
local sh = require "sockhost"

local listen_at, upstream = "tcp://127.0.0.1:7020", "tcp://127.0.0.1:7000"
if #arg >= 2 then
  listen_at, upstream = arg[1], arg[2]
elseif #arg == 1 then
  upstream = arg[1]
end

-- Copy one direction until `from` ends, then pass the end on. If `to` fails,
-- close both, which also ends the copy the other way. Returns the byte count.
local function pipe(from, to)
  local n = 0
  while true do
    local data = from:read_some()
    if not data then
      to:shutdown()
      return n
    end
    if not to:write(data) then
      from:close()
      to:close()
      return n
    end
    n = n + #data
  end
end

local srv = assert(sh.listen(listen_at, function(client)
  local t0, peer = sh.now(), client:peer()
  local server, err = sh.connect(upstream, { timeout = 10 })
  if not server then
    sh.log("warn", ("proxy: %s -> %s: %s"):format(peer, upstream, err))
    return                                  -- the host closes the client
  end
  server:setlimits { idle_timeout = 300 }   -- the client side's default limit
  local up = sh.spawn(pipe, client, server)
  local down = sh.spawn(pipe, server, client)
  local sent, received = up:join(), down:join()
  server:close()
  sh.log("info", ("proxy: %s -> %s: %d bytes up, %d down, %.2f s")
    :format(peer, upstream, sent, received, sh.now() - t0))
end))
print(("proxy: listening on %s, forwarding to %s"):format(srv:address(), upstream))
