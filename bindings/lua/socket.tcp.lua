-- sockhost.socket.tcp -- the TCP object of sockhost.socket (LuaSocket's
-- tcp{master}, tcp{client} and tcp{server} in one Lua object), backed by a
-- sockhost conn or listener. Blocking methods yield the calling task.
--
-- Results follow LuaSocket 3.0: 1 for success, nil, err [, partial] for
-- failures, "closed" / "timeout" as LuaSocket spells them.
local sh = require "sockhost"
local pool = require "sockhost.pool"

local M = {}
local Tcp = {}

-- LuaSocket reads a line of any length; sockhost's default max_line is
-- 64 KiB. This one stays under a connection's share of the buffer budget.
local LINE_MAX = 16 * 1024 * 1024
Tcp.__index = Tcp
Tcp.__name = "sockhost.socket.tcp"

---------------------------------------------------------------- the keep-alive pool

-- OpenResty's defaults (lua_socket_pool_size, lua_socket_keepalive_timeout).
local POOL_SIZE, KEEPALIVE = 30, 60

-- Every client connection connect makes is lent by this one sockhost.pool
-- (the process's, as OpenResty's is a worker's), keyed by "host:port":
-- setkeepalive puts it back, close discards it. The pool keeps no time of
-- its own (idle_timeout 0): setkeepalive sets each connection's idle limit
-- (conn:setlimits, the host's sweep closes it), and the first size given
-- for a key holds for it (p:setsize). No 'max': connect never waits.
local keepalive = pool.new {
  connect = function(_, o)
    local conn, err = sh.connect(o.url, { timeout = o.timeout })
    if not conn then return nil, err end
    conn:setlimits { max_line = LINE_MAX }
    return conn
  end,
  size = POOL_SIZE, idle_timeout = 0,
}
local sized = {}                              -- key -> true once its size is fixed
local reuses = setmetatable({}, { __mode = "k" })   -- conn -> times it came out of the pool

-- Options setoption takes (LuaSocket's names). TCP_NODELAY is always on in
-- sockhost; the others are remembered (getoption) and not applied.
local OPTIONS = {
  ["keepalive"] = true, ["linger"] = true, ["reuseaddr"] = true, ["reuseport"] = true,
  ["tcp-nodelay"] = true, ["tcp-keepidle"] = true, ["tcp-keepcnt"] = true,
  ["tcp-keepintvl"] = true, ["tcp-defer-accept"] = true, ["tcp-fastopen"] = true,
  ["tcp-fastopen-connect"] = true, ["ipv6-v6only"] = true, ["dontroute"] = true,
  ["broadcast"] = true, ["send-buffer-size"] = true, ["recv-buffer-size"] = true,
}

function M.new(family)
  return setmetatable({ state = "master", family = family or "inet", opts = {},
                        received = 0, sent = 0, born = sh.now(), pending = "" }, Tcp)
end

-- A client object around an accepted or pooled conn.
function M.wrap(conn, on_close)
  local t = M.new()
  t.state, t.conn, t.on_close = "client", conn, on_close
  return t
end

function Tcp:__tostring()
  return ("tcp{%s}: %p"):format(self.state, self)
end

---------------------------------------------------------------- addresses

local function bracket(host)
  if host:find(":", 1, true) then return "[" .. host .. "]" end
  return host
end

-- ip, port (a string, as LuaSocket gives it), family of an address string.
local function split(addr)
  local t = addr and sh.address.parse(addr)
  if not t or not t.host then return nil end
  return t.host, tostring(t.port), t.family == "ipv6" and "inet6" or "inet"
end

---------------------------------------------------------------- connecting

-- LuaSocket's words for a connect failure.
local function connect_error(err)
  if err:find("^cannot resolve") then return "host not found" end
  return err
end

function Tcp:connect(host, port)
  if self.state ~= "master" then return nil, "already connected" end
  assert(type(host) == "string", "bad argument #1 to 'connect' (string expected)")
  port = assert(math.tointeger(tonumber(port)), "bad argument #2 to 'connect' (port expected)")
  local key = bracket(host) .. ":" .. port
  -- A timeout of 0 does not make a connect fail at once: it waits (yielding)
  -- up to sockhost's default connect timeout.
  local t = self.timeout
  if t == 0 then t = nil elseif t == nil then t = -1 end
  local conn, reused = keepalive:get(key, { url = "tcp://" .. key, timeout = t })
  if not conn then return nil, connect_error(reused) end
  if reused then reuses[conn] = (reuses[conn] or 0) + 1 end
  self.state, self.conn, self.host, self.key = "client", conn, host, key
  return 1
end

-- OpenResty: how many times this connection came out of the pool.
function Tcp:getreusedtimes()
  if not self.conn then return nil, "closed" end
  return reuses[self.conn] or 0
end

function Tcp:bind(host, port)
  if self.state ~= "master" or self.bound then return nil, "already bound" end
  if host == "*" then host = "0.0.0.0" end
  self.bound = ("tcp://%s:%d"):format(bracket(host), math.tointeger(tonumber(port)) or 0)
  return 1
end

-- Accepted conns go into a channel; each handler task waits until the
-- client object made of its conn is closed (the conn lives as long as its
-- handler).
function Tcp:listen(backlog)
  if self.state ~= "master" or not self.bound then return nil, "not bound" end
  local queue = sh.channel(math.max(1, backlog or 32))
  local ok, srv, err = pcall(sh.listen, self.bound, function(conn)
    local done = sh.event()
    if queue:send({ conn = conn, done = done }) then done:wait() end
  end, { max_line = LINE_MAX, idle_timeout = 0, line_timeout = 0, backlog = backlog,
         reuseport = self.opts.reuseport and true or nil,
         ipv6only = self.opts["ipv6-v6only"] == nil and nil or (self.opts["ipv6-v6only"] and true) })
  if not ok then return nil, srv end
  if not srv then return nil, err end
  self.state, self.listener, self.queue = "server", srv, queue
  return 1
end

local function accepted(item)
  return M.wrap(item.conn, function() item.done:set() end)
end

function Tcp:accept()
  if self.state ~= "server" then return nil, "closed" end
  if self.ready then
    local item = self.ready
    self.ready = nil
    return accepted(item)
  end
  local item, err = self.queue:receive(self.timeout)
  if not item then return nil, err end
  return accepted(item)
end

---------------------------------------------------------------- timeouts

-- t: seconds; nil or negative: block (the task, never the loop); 0: poll.
-- mode "b" and "t" are both taken as a bound on each whole call.
function Tcp:settimeout(t, mode)
  if mode ~= nil and (type(mode) ~= "string" or not mode:find("^[btr]")) then
    error("bad argument #2 to 'settimeout' (invalid timeout mode)", 2)
  end
  t = tonumber(t)
  if t and t < 0 then t = nil end
  self.timeout = t
  return 1
end

local function armed(self)
  local conn = self.conn
  if conn then conn:settimeout(self.timeout) end
  return conn
end

---------------------------------------------------------------- sending

function Tcp:send(data, i, j)
  if type(data) ~= "string" and type(data) ~= "number" then
    error("bad argument #1 to 'send' (string expected, got " .. type(data) .. ")", 2)
  end
  data = tostring(data)
  local first = i or 1
  if first < 0 then first = math.max(#data + first + 1, 1) end
  local s = data:sub(first, j or -1)
  local conn = self.tx_closed and nil or armed(self)
  if not conn then return nil, "closed", first - 1 end
  local ok, err = conn:write(s)
  if not ok then return nil, err, first - 1 end
  self.sent = self.sent + #s
  return first - 1 + #s, nil, nil   -- three values, as LuaSocket's
end

---------------------------------------------------------------- receiving

-- Take back bytes a timed-out sockhost read left buffered (it hands a copy):
-- LuaSocket hands them over as the partial result, consumed.
local function consume(conn, partial)
  if partial and #partial > 0 then conn:read(#partial) end
  return partial or ""
end

-- Each returns what receive returns, and the bytes it took from the stream.
local function receive_line(conn, prefix)
  local line, err, partial = conn:read("L")
  if line and line:sub(-1) == "\n" then
    return #line, prefix .. line:sub(1, -2):gsub("\r", "")
  end
  if line then partial, err = line, "closed"   -- the stream ended mid-line
  elseif err == "timeout" then partial = consume(conn, partial) end
  partial = partial or ""
  return #partial, nil, err, prefix .. partial:gsub("\r", "")
end

local function receive_count(conn, n, prefix)
  if n <= 0 then return 0, prefix end
  local data, err, partial = conn:read(n)
  if data then return #data, prefix .. data end
  if err == "timeout" then partial = consume(conn, partial) end
  partial = partial or ""
  return #partial, nil, err, prefix .. partial
end

local function receive_all(conn, prefix)
  local data, err, partial = conn:read("a")
  if data == "" then return 0, nil, "closed", prefix end   -- nothing came before the end
  if data then return #data, prefix .. data end
  if err == "timeout" then partial = consume(conn, partial) end
  partial = partial or ""
  return #partial, nil, err, prefix .. partial
end

local function pattern_of(pattern)
  if pattern == nil then return "l" end
  if type(pattern) == "number" then
    if pattern < 0 then return nil end
    return math.floor(pattern)
  end
  if pattern == "*l" or pattern == "l" then return "l" end
  if pattern == "*a" or pattern == "a" then return "a" end
  return nil
end

-- A byte that socket.select read for this object (self.pending) comes first.
function Tcp:receive(pattern, prefix)
  local p = pattern_of(pattern)
  if p == nil then error("bad argument #1 to 'receive' (invalid receive pattern)", 2) end
  prefix = prefix and tostring(prefix) or ""
  local conn = (not self.rx_closed) and armed(self)
  if not conn then return nil, "closed", prefix end
  local pend = self.pending
  if pend ~= "" then
    self.pending = ""
    self.received = self.received + #pend
    if p == "l" and pend == "\n" then return prefix, nil, nil end
    prefix = prefix .. (p == "l" and pend:gsub("\r", "") or pend)
  end
  local r
  if p == "l" then r = table.pack(receive_line(conn, prefix))
  elseif p == "a" then r = table.pack(receive_all(conn, prefix))
  else r = table.pack(receive_count(conn, p - #prefix, prefix)) end
  self.received = self.received + r[1]
  if p == "a" and pend ~= "" and r[3] == "closed" and r[1] == 0 then r[2] = prefix end
  if r[2] then return r[2], nil, nil end   -- three values, as LuaSocket's
  return table.unpack(r, 2, r.n)
end

---------------------------------------------------------------- TLS (OpenResty)

-- sslhandshake([reused_session [, server_name [, verify [, send_status_req [, opts]]]]])
-- -> session (a table, conn:tls()'s) | true when reused_session is false | nil, err
-- verify is on unless false is given; opts: more sockhost TLS options (ca, ...).
function Tcp:sslhandshake(reused_session, server_name, verify, _, opts)
  local conn = armed(self)
  if not conn then return nil, "closed" end
  if not conn:tls() then
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.servername = server_name or o.servername
    if o.servername == nil and self.host and not sh.address.is_ip(self.host) then
      o.servername = self.host
    end
    if verify ~= nil then o.verify = verify and true or false end
    local ok, err = conn:starttls(o)
    if not ok then return nil, err end
  end
  if reused_session == false then return true end
  return conn:tls()
end

---------------------------------------------------------------- keep-alive (OpenResty)

-- setkeepalive([timeout_ms [, size]]): back into the pool for host:port;
-- this object is closed. As OpenResty: timeout in milliseconds (nil: 60 s,
-- 0: no limit), size the most idle conns kept for that key, fixed by the
-- first setkeepalive for it (nil: 30). A conn with unread bytes is not
-- pooled: "connection in dubious state", the object left as it was. One
-- the peer has ended is closed by the pool (1 all the same: the pool drops
-- a connection ended while idle just as well).
function Tcp:setkeepalive(timeout, size)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("bad argument #1 to 'setkeepalive' (timeout must be a number >= 0)", 2)
  end
  if size ~= nil and (type(size) ~= "number" or size < 1) then
    error("bad argument #2 to 'setkeepalive' (size must be a number >= 1)", 2)
  end
  local conn = self.conn
  if not conn or not self.key then return nil, "closed" end
  if self.pending ~= "" or self.rx_closed or self.tx_closed or (conn:pending() or 0) > 0 then
    return nil, "connection in dubious state"
  end
  local key = self.key
  self.conn, self.state = nil, "closed"
  if not sized[key] then
    sized[key] = true
    keepalive:setsize(key, size or POOL_SIZE)
  end
  if keepalive:put(key, conn) then
    conn:setlimits { idle_timeout = timeout == nil and KEEPALIVE or timeout / 1000 }
  end
  return 1
end

---------------------------------------------------------------- the rest

function Tcp:close()
  if self.listener then
    self.listener:close()
    -- connections never accepted: their handlers end, closing them
    local item = self.ready or self.queue:receive(0)
    self.ready = nil
    while item do
      item.done:set()
      item = self.queue:receive(0)
    end
    self.queue:close()   -- and those still on their way in
    self.listener = nil
  end
  if self.conn then
    if self.key then keepalive:discard(self.key, self.conn) else self.conn:close() end
    self.conn = nil
  end
  if self.on_close then self.on_close() self.on_close = nil end
  self.state = "closed"
  return 1
end

-- An accepted client object dropped without close: its handler task is
-- told to end (which closes the conn), as a conn dropped is closed.
function Tcp:__gc()
  if self.on_close then pcall(self.on_close) end
end

function Tcp:shutdown(how)
  how = how or "both"
  local conn = self.conn
  if not conn then return nil, "closed" end
  if how == "send" or how == "both" then
    self.tx_closed = true
    conn:shutdown()
  end
  if how == "receive" or how == "both" then self.rx_closed = true end
  if how ~= "send" and how ~= "receive" and how ~= "both" then
    error("bad argument #1 to 'shutdown' (invalid shutdown method)", 2)
  end
  return 1
end

function Tcp:setoption(name, value)
  if not OPTIONS[name] then
    error(("bad argument #1 to 'setoption' (unsupported option `%s')"):format(tostring(name)), 2)
  end
  self.opts[name] = value
  return 1
end

function Tcp:getoption(name)
  if not OPTIONS[name] then
    error(("bad argument #1 to 'getoption' (unsupported option `%s')"):format(tostring(name)), 2)
  end
  if name == "tcp-nodelay" then return true end
  return self.opts[name] or false
end

function Tcp:getpeername()
  if not self.conn then return nil, "closed" end
  local host, port, family = split(self.conn:peer())
  if not host then return nil, "closed" end
  return host, tonumber(port), family   -- a number here, a string in getsockname (as LuaSocket)
end

function Tcp:getsockname()
  local addr
  if self.conn then addr = self.conn:address()
  elseif self.listener then addr = self.listener:address()
  else return nil, "closed" end
  local host, port, family = split(addr)
  if not host then return nil, "closed" end
  return host, port, family
end

function Tcp:getstats()
  return self.received, self.sent, sh.now() - self.born
end

function Tcp:setstats(received, sent, age)
  self.received, self.sent = received or self.received, sent or self.sent
  if age then self.born = sh.now() - age end
  return 1
end

-- True when bytes are waiting here for the next receive (a byte that
-- socket.select took); bytes buffered inside the conn are not seen.
function Tcp:dirty()
  return self.pending ~= ""
end

-- There is no descriptor to hand out: sockhost owns it.
function Tcp:getfd() return -1 end
function Tcp:setfd() return nil end

-- The sockhost conn underneath (nil for a master or server object).
function Tcp:getconn() return self.conn end

return M
