-- sockhost.socket -- a module shaped like LuaSocket's `socket`, backed by
-- sockhost's streams: libraries written for LuaSocket (socket.http,
-- socket.smtp, ...) run unchanged inside sockhost tasks, where every call
-- that would block yields the task instead, and the loop goes on.
--
--   local socket = require("sockhost.socket").install()
--   local http = require "socket.http"     -- Debian's, unchanged
--
-- install() makes it `package.loaded.socket` (and "socket.core"). See
-- doc/API.md, "Using LuaSocket libraries", for what is supported and what
-- differs.
local sh = require "sockhost"
local tcp = require "sockhost.socket.tcp"
local udp = require "sockhost.socket.udp"

local M = {
  _VERSION = "LuaSocket 3.0 (sockhost.socket)",
  BLOCKSIZE = 2048,
  _SETSIZE = 1024,
  _SOCKETINVALID = -1,
  dns = require "sockhost.socket.dns",
}

---------------------------------------------------------------- objects

function M.tcp() return tcp.new("inet") end
function M.tcp4() return tcp.new("inet") end
function M.tcp6() return tcp.new("inet6") end

function M.udp() return udp.new("inet") end
function M.udp4() return udp.new("inet") end
function M.udp6() return udp.new("inet6") end

-- connect(host, port [, locaddr [, locport [, family]]]) -> client | nil, err
-- A local address other than the wildcard with port 0 is not supported.
function M.connect(host, port, locaddr, locport)
  if (locaddr and locaddr ~= "*" and locaddr ~= "0.0.0.0" and locaddr ~= "::")
     or (locport and tonumber(locport) ~= 0) then
    return nil, "local address not supported"
  end
  local s = tcp.new()
  local ok, err = s:connect(host, port)
  if not ok then return nil, err end
  return s
end
function M.connect4(...) return M.connect(...) end
function M.connect6(...) return M.connect(...) end

-- bind(host, port [, backlog]) -> server | nil, err
function M.bind(host, port, backlog)
  local s = tcp.new()
  s:setoption("reuseaddr", true)
  local ok, err = s:bind(host, port)
  if ok then ok, err = s:listen(backlog) end
  if not ok then s:close() return nil, err end
  return s
end

---------------------------------------------------------------- time

-- Seconds since the epoch, with fractions (wall clock, as LuaSocket's).
local epoch_at, mono_at = os.time(), sh.now()
function M.gettime()
  return epoch_at + (sh.now() - mono_at)
end

-- Yields the calling task (raises outside one, as sockhost.sleep does).
function M.sleep(seconds)
  seconds = tonumber(seconds) or 0
  if seconds < 0 then seconds = 0 end
  sh.sleep(seconds)
end

---------------------------------------------------------------- select

local function ready_now(s)
  if s.state == "server" then return s.ready ~= nil end
  return s.state ~= "client" or s.pending ~= "" or s.rx_closed or s.at_end ~= nil
end

-- Each socket of recvt that can be read without waiting, by position and
-- by itself, as LuaSocket returns them.
local function add(list, s)
  list[#list + 1] = s
  list[s] = #list
end

-- The sockhost.select case that waits for s to become readable: its
-- accept queue, or one byte of its conn (kept in s.pending once read).
local function case_of(s)
  if s.state == "server" then return s.queue end
  s.conn:settimeout(nil)
  return { s.conn, 1 }
end

-- Note in s what the case of sockhost.select gave, for the next receive
-- or accept.
local function keep(s, value, err)
  if s.state == "server" then s.ready = value
  elseif value then s.pending = s.pending .. value
  else s.at_end = err end   -- the stream ended (or failed): receive tells
end

-- Wait for the first of the cases; the readable list, or nil.
local function wait_readable(cases, owners, timeout)
  local key, value, err = sh.select(cases, timeout)
  if key == nil then return nil end
  local s = owners[key]
  keep(s, value, err)
  local readable = {}
  add(readable, s)
  return readable
end

-- select(recvt, sendt [, timeout]) -> readable, writable | {}, {}, "timeout"
-- Connected sockets in sendt are always writable (writes are buffered and
-- wait inside send). For recvt it waits, in the task, for the first socket
-- that has a byte to read, a connection to accept, or has ended.
function M.select(recvt, sendt, timeout)
  local readable, writable = {}, {}
  for _, s in ipairs(sendt or {}) do
    if s.state == "client" then add(writable, s) end
  end
  local cases, owners = {}, {}
  for _, s in ipairs(recvt or {}) do
    if ready_now(s) then add(readable, s)
    else
      cases[#cases + 1] = case_of(s)
      owners[#cases] = s
    end
  end
  if #readable > 0 or #writable > 0 then return readable, writable end
  timeout = tonumber(timeout)
  if #cases == 0 or timeout == 0 then
    if #cases == 0 and timeout and timeout > 0 then sh.sleep(timeout) end
    return readable, writable, "timeout"
  end
  readable = wait_readable(cases, owners, timeout)
  if not readable then return {}, writable, "timeout" end
  return readable, writable
end

---------------------------------------------------------------- errors

-- An error raised by a `try` carries its message in a table of this kind,
-- so that protect can tell it from any other error.
local Failure = { __name = "sockhost.socket.failure" }
function Failure.__tostring(f) return tostring(f[1]) end

-- newtry([finalizer]) -> try: try(ok, ...) returns its arguments when ok is
-- true; otherwise it calls finalizer() and raises ... for protect to catch.
function M.newtry(finalizer)
  return function(ok, ...)
    if ok then return ok, ... end
    if finalizer then pcall(finalizer) end
    error(setmetatable({ (...) }, Failure), 0)
  end
end

M.try = M.newtry()

-- protect(fn) -> a function that returns nil, err where fn raised by a
-- try; any other error goes on up.
function M.protect(fn)
  return function(...)
    local r = table.pack(pcall(fn, ...))
    if r[1] then return table.unpack(r, 2, r.n) end
    local e = r[2]
    if getmetatable(e) == Failure then return nil, e[1] end
    error(e, 0)
  end
end

-- skip(d, ...) -> the arguments after the first d
function M.skip(d, ...)
  return select(d + 1, ...)
end

-- choose(t) -> f(name, a, b): t[name](a, b), name "default" when not a string
function M.choose(t)
  return function(name, a, b)
    if type(name) ~= "string" then name, a, b = "default", name, a end
    local f = t[name or "nil"]
    if not f then error("unknown key (" .. tostring(name) .. ")", 3) end
    return f(a, b)
  end
end

---------------------------------------------------------------- LTN12 sources and sinks

M.sourcet, M.sinkt = {}, {}

-- A callable table with getfd and dirty, as LuaSocket's sources and sinks.
local function callable(sock, fn)
  return setmetatable({
    getfd = function() return sock:getfd() end,
    dirty = function() return sock:dirty() end,
  }, { __call = function(_, ...) return fn(...) end })
end

M.sinkt["close-when-done"] = function(sock)
  return callable(sock, function(chunk)
    if chunk then return sock:send(chunk) end
    sock:close()
    return 1
  end)
end

M.sinkt["keep-open"] = function(sock)
  return callable(sock, function(chunk)
    if chunk then return sock:send(chunk) end
    return 1
  end)
end
M.sinkt.default = M.sinkt["keep-open"]
M.sink = M.choose(M.sinkt)

M.sourcet["by-length"] = function(sock, length)
  return callable(sock, function()
    if length <= 0 then return nil end
    local chunk, err = sock:receive(math.min(M.BLOCKSIZE, length))
    if not chunk then return nil, err end
    length = length - #chunk
    return chunk
  end)
end

M.sourcet["until-closed"] = function(sock)
  local finished = false
  return callable(sock, function()
    if finished then return nil end
    local chunk, err, partial = sock:receive(M.BLOCKSIZE)
    if chunk then return chunk end
    if err ~= "closed" then return nil, err end
    sock:close()
    finished = true
    return partial
  end)
end
M.sourcet.default = M.sourcet["until-closed"]
M.source = M.choose(M.sourcet)

---------------------------------------------------------------- install

-- Make this module the `socket` that require finds (and "socket.core"), so
-- that unchanged LuaSocket libraries load on top of it. Modules of the
-- socket.* family already loaded on another `socket` are forgotten, so
-- that the next require loads them again on this one. Returns the module.
function M.install()
  if package.loaded.socket ~= M then
    for name in pairs(package.loaded) do
      if type(name) == "string" and name:find("^socket%.") and name ~= "socket.core" then
        package.loaded[name] = nil
      end
    end
  end
  package.loaded.socket = M
  package.loaded["socket.core"] = M
  return M
end

return M
