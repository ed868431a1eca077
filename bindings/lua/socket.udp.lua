-- sockhost.socket.udp -- the UDP object of sockhost.socket (LuaSocket's
-- udp{unconnected} and udp{connected}), backed by a sockhost datagram
-- socket (sockhost.udp without a handler). Receives, and sends that have to
-- wait, yield the calling task.
local sh = require "sockhost"

local M = {}
local Udp = {}
Udp.__index = Udp
Udp.__name = "sockhost.socket.udp"

-- Options that map onto udp:setoption; the others LuaSocket knows are
-- remembered only.
local MAPPED = { broadcast = "broadcast", ["ip-multicast-loop"] = "loop", ["ip-multicast-ttl"] = "ttl",
                 ["ipv6-unicast-hops"] = "ttl", ["ipv6-multicast-loop"] = "loop" }
local KNOWN = { dontroute = true, reuseaddr = true, reuseport = true, ["ipv6-v6only"] = true,
                ["ip-multicast-if"] = true, ["ip-add-membership"] = true,
                ["ip-drop-membership"] = true, ["ipv6-add-membership"] = true,
                ["ipv6-drop-membership"] = true, ["recv-buffer-size"] = "rcvbuf",
                ["send-buffer-size"] = "sndbuf" }

function M.new(family)
  return setmetatable({ family = family or "inet", opts = {} }, Udp)
end

function Udp:__tostring()
  return ("udp{%s}: %p"):format(self.peer and "connected" or "unconnected", self)
end

local function addr(host, port)
  if host == "*" then host = "0.0.0.0" end
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  return ("udp://%s:%d"):format(host, math.tointeger(tonumber(port)) or 0)
end

local function split(a)
  local t = a and sh.address.parse(a)
  if not t or not t.host then return nil end
  return t.host, t.port, t.family == "ipv6" and "inet6" or "inet"
end

local function host_error(err)
  if err:find("^cannot resolve") then return "host not found" end
  return err
end

-- The sockhost socket, made (unbound) on first use.
local function sock(self)
  if self.closed then return nil end
  if not self.u then self.u = assert(sh.udp()) end
  self.u:settimeout(self.timeout)
  return self.u
end

function Udp:setsockname(host, port)
  if self.closed then return nil, "closed" end
  local u, err = sh.udp(addr(host, port))
  if not u then return nil, host_error(err) end
  if self.u then self.u:close() end
  self.u = u
  return 1
end

-- setpeername(host, port) fixes the peer; setpeername("*") undoes it.
function Udp:setpeername(host, port)
  local u = sock(self)
  if not u then return nil, "closed" end
  if host == "*" then
    local bound = self.u:address()
    self.u:close()
    self.u, self.peer = nil, nil
    if bound then self.u = assert(sh.udp(bound)) end
    return 1
  end
  local ok, err = u:connect(addr(host, port))
  if not ok then return nil, host_error(err) end
  self.peer = true
  return 1
end

function Udp:settimeout(t)
  t = tonumber(t)
  if t and t < 0 then t = nil end
  self.timeout = t
  return 1
end

-- sendto/send return the bytes sent, as LuaSocket's.
function Udp:sendto(data, host, port)
  if self.peer then error("bad argument #1 to 'sendto' (udp{unconnected} expected)", 2) end
  local u = sock(self)
  if not u then return nil, "closed" end
  data = tostring(data)
  local ok, err = u:sendto(data, addr(host, port))
  if not ok then return nil, host_error(err) end
  return #data
end

function Udp:send(data)
  local u = sock(self)
  if not u then return nil, "closed" end
  data = tostring(data)
  local ok, err = u:send(data)
  if not ok then return nil, err end
  return #data
end

-- A datagram longer than size comes cut to size, as LuaSocket's.
function Udp:receivefrom(size)
  local u = sock(self)
  if not u then return nil, "closed" end
  local data, err, partial, from = u:recvfrom(size)
  if not data and err == "truncated" then data = partial
  elseif not data then return nil, err end
  from = from or err
  local host, port = split(from)
  return data, host, port
end

function Udp:receive(size)
  local data, err = self:receivefrom(size)
  if data then return data end
  return nil, err
end

function Udp:getsockname()
  if self.closed or not self.u then return nil, "closed" end
  local host, port, family = split(self.u:address())
  if not host then return nil, "closed" end
  return host, tostring(port), family   -- a string here, as LuaSocket's
end

function Udp:getpeername()
  if self.closed or not self.u or not self.peer then return nil, "closed" end
  local host, port, family = split(self.u:peer())
  if not host then return nil, "closed" end
  return host, port, family
end

function Udp:setoption(name, value)
  if not MAPPED[name] and not KNOWN[name] then
    error(("bad argument #1 to 'setoption' (unsupported option `%s')"):format(tostring(name)), 2)
  end
  self.opts[name] = value
  local real = MAPPED[name] or (type(KNOWN[name]) == "string" and KNOWN[name])
  if real then
    local u = sock(self)
    if not u then return nil, "closed" end
    if type(value) == "boolean" or real == "broadcast" or real == "loop" then value = value and true or false end
    local ok, err = u:setoption(real, value)
    if not ok then return nil, err end
  end
  return 1
end

function Udp:getoption(name)
  return self.opts[name]
end

function Udp:close()
  if self.u then self.u:close() self.u = nil end
  self.closed = true
  return 1
end

function Udp:dirty() return false end
function Udp:getfd() return -1 end
function Udp:setfd() return nil end

return M
