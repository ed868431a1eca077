-- tls_echo.lua -- a byte echo server over TLS: whatever a client sends comes
-- back, encrypted both ways.
--
--   sockhost scripts/tls_echo.lua cert.pem key.pem [address]
--                                            (default tls://127.0.0.1:7443)
--   then: openssl s_client -connect 127.0.0.1:7443 -CAfile ca.pem
-- Each connection is logged with its TLS version and cipher; a failed
-- handshake is logged by the host ("tls: handshake with ... failed: ...")
-- and never reaches the handler.
local sh = require "sockhost"

local cert, key = arg[1], arg[2]
if not cert or not key then
  io.stderr:write("usage: sockhost scripts/tls_echo.lua cert.pem key.pem [address]\n")
  os.exit(2)
end
local addr = arg[3] or "tls://127.0.0.1:7443"
local srv = assert(sh.listen(addr, function(conn)
  local t = conn:tls()
  sh.log("info", conn:peer(), t.protocol, t.cipher)
  while true do
    local data = conn:read_some()
    if not data then return end            -- the peer closed
    if not conn:write(data) then return end
  end
end, { cert = cert, key = key }))
print("tls_echo: listening on " .. srv:address())
