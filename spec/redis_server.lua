-- spec/redis_server.lua -- a real redis-server per spec file (Debian's
-- /usr/bin/redis-server), on a free loopback port, no persistence; stopped
-- by its PID.
local H = require "helpers"

local R = {}
R.__index = R

local function cli(port, ...)
  local args = {}
  for _, a in ipairs { ... } do args[#args + 1] = H.q(a) end
  return (H.sh_cmd(("redis-cli -h 127.0.0.1 -p %d %s 2>&1"):format(port, table.concat(args, " "))))
end

-- Start one: extra is more shell-ready arguments (--requirepass x, ...).
-- With tls_dir (spec/fixtures/tls_certs.sh's files), the port speaks TLS
-- only (srv.pem, for 127.0.0.1; clients need not show a certificate).
function R.start(extra, port, tls_dir)
  extra = extra or ""
  local self = setmetatable({ port = port or H.free_port() }, R)
  if tls_dir then
    local d = H.q(tls_dir)
    extra = ("%s --tls-port %d --tls-cert-file %s/srv.pem --tls-key-file %s/srv.key "
      .. "--tls-ca-cert-file %s/ca.pem --tls-auth-clients no"):format(extra, self.port, d, d, d)
    self.plain_port = 0
  end
  self.extra = extra
  self.unix = H.tmpname(".sock")
  self:launch()
  return self
end

function R:launch()
  -- (without the one-byte shim of make test-onebyte: it is there for sockhost)
  self.proc = H.launch(("exec env -u LD_PRELOAD redis-server --save '' --appendonly no --port %d --bind 127.0.0.1 "
    .. "--unixsocket %s --unixsocketperm 700 %s"):format(self.plain_port or self.port, H.q(self.unix), self.extra),
    "redis-server")
  local deadline = H.socket.gettime() + 10
  while H.socket.gettime() < deadline do
    local c = H.socket.tcp()
    c:settimeout(0.2)
    if c:connect("127.0.0.1", self.port) then c:close() return end
    c:close()
    H.socket.sleep(0.02)
  end
  error("redis-server did not start on " .. self.port .. ": " .. self.proc:stdout())
end

function R:url(path) return ("redis://127.0.0.1:%d%s"):format(self.port, path or "") end

-- redis-cli's output (with a password when the server asks for one).
function R:cli(...)
  if self.password then return cli(self.port, "--no-auth-warning", "-a", self.password, ...) end
  return cli(self.port, ...)
end

-- SIGKILL, waiting until it is gone.
function R:kill()
  self.proc:signal("KILL")
  self.proc:wait(5)
end

function R:stop() return self.proc:stop() end

-- The connected clients, as INFO clients counts them.
function R:clients()
  return tonumber(self:cli("INFO", "clients"):match("connected_clients:(%d+)"))
end

return R
