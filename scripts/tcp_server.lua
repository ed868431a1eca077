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
  -- Up to 1024 bytes, fewer if the client closes first. (recv(1024) in the
  -- Python original returns what has arrived so far, which may be only part
  -- of a message that comes in pieces.)
  local data, _, partial = conn:read(1024)
  data = data or partial or ""
  print("Dados recebidos do cliente: " .. data)
  conn:close()
end))
print("Escutando em " .. srv:address())
print("Aguardando conexão...")
