-- The sockhost server of the ws-* bench rows: a WebSocket echo on "/"
-- (sockhost.http's router and sockhost.websocket). arg[1]: the address.
local http = require "sockhost.http"

local app = http.router()
app:websocket("/", function(ws)
  while true do
    local msg, kind = ws:receive()
    if not msg or not ws:send(msg, kind) then return end
  end
end)
assert(http.listen(arg[1] or "tcp://127.0.0.1:7030", app))
