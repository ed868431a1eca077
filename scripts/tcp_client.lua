-- tcp_client.lua -- o cliente TCP do exemplo Python ("Sockets"), em sockhost:
-- conecta, envia "Hello, servidor!" e fecha.
--
--   sockhost scripts/tcp_client.lua [address]    (default tcp://127.0.0.1:12345)
-- Start scripts/tcp_server.lua (or the Python server) first.
local sh = require "sockhost"

local conn = assert(sh.connect(arg[1] or "tcp://127.0.0.1:12345"))
assert(conn:write("Hello, servidor!"))
conn:close()
