-- tcp_server.lua -- o servidor TCP do exemplo Python ("Sockets"), em sockhost:
-- espera UM cliente, imprime o que ele enviou (até 1024 bytes) e termina.
--
--   sockhost scripts/tcp_server.lua [address]    (default tcp://127.0.0.1:12345)
--   then: sockhost scripts/tcp_client.lua        (or the Python client)
-- With port 0 (tcp://127.0.0.1:0) the "Escutando em" line tells the real port.
local sh = require "sockhost"

local srv
srv = assert(sh.listen(arg[1] or "tcp://127.0.0.1:12345", function(conn)
  srv:close()                                   -- one client only, like accept()
  print("Conexão estabelecida com " .. conn:peer())
  local data = conn:read_some(1024) or ""       -- like recv(1024)
  print("Dados recebidos do cliente: " .. data)
  conn:close()
end))
print("Escutando em " .. srv:address())
print("Aguardando conexão...")
