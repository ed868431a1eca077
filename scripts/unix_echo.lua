-- unix_echo.lua -- a line echo server on a Unix-domain stream socket, for
-- processes on the same machine. It tells each client who it is.
--
--   sockhost scripts/unix_echo.lua [address]    (default unix:/tmp/sockhost-echo.sock)
--   then: nc -U /tmp/sockhost-echo.sock       (or socat - UNIX-CONNECT:/tmp/sockhost-echo.sock)
-- Abstract names work too: unix:@sockhost-echo
local sh = require "sockhost"

local addr = arg[1] or "unix:/tmp/sockhost-echo.sock"
-- the file only this user may use (an abstract name has no file to chmod)
local opts = addr:match("^unix:@") and {} or { mode = tonumber("600", 8) }
local srv = assert(sh.listen(addr, function(conn)
  local cred = conn:peercred()
  conn:write(("hello pid %d uid %d\n"):format(cred.pid, cred.uid))
  for line in conn:lines() do
    conn:write(line, "\n")
  end
end, opts))
print("unix echo: listening on " .. srv:address())
