-- luv_echo.lua -- the Lua 5.4 + luv (libuv) peer of `make bench`, written the usual way.
--   lua5.4 bench/luv_echo.lua echo|line|udp PORT
local uv = require "luv"
local mode, port = arg[1], tonumber(arg[2])
local host = "127.0.0.1"

if mode == "udp" then
  local s = uv.new_udp()
  assert(s:bind(host, port))
  s:recv_start(function(err, data, addr)
    if data then s:send(data, addr.ip, addr.port) end
  end)
elseif mode == "echo" or mode == "line" then
  local server = uv.new_tcp()
  assert(server:bind(host, port))
  assert(server:listen(511, function(err)
    assert(not err, err)
    local client = uv.new_tcp()
    server:accept(client)
    client:nodelay(true)
    if mode == "echo" then
      client:read_start(function(rerr, data)
        if data then client:write(data)
        else client:close() end
      end)
    else
      local pending = ""
      client:read_start(function(rerr, data)
        if not data then client:close() return end
        pending = pending .. data
        local start = 1
        while true do
          local nl = pending:find("\n", start, true)
          if not nl then break end
          client:write(pending:sub(start, nl))
          start = nl + 1
        end
        pending = pending:sub(start)
      end)
    end
  end))
else
  io.stderr:write("usage: lua5.4 luv_echo.lua echo|line|udp PORT\n")
  os.exit(2)
end
uv.run()
