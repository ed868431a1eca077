-- sockhost.redis -- a non-blocking Redis client on sockhost.resp and
-- sockhost streams: one connection (redis.connect), commands as methods,
-- pipelines sent in one write, MULTI/EXEC built client-side.
--
-- Results: a reply as a Lua value (bulk string, integer, status text such as
-- "OK", a table for an array, redis.null for a nil bulk or array). A server
-- error is nil, "<its message>", "server"; a transport failure is nil, err
-- with no third value ("closed", "timeout", "bad reply: ...", connect's
-- errors), after which the connection is closed: its replies can no longer
-- be matched to its commands. Peer input never raises.
--
-- Pools (redis.pool, in redis.pool.lua), subscribers (redis.subscriber, in
-- redis.sub.lua) and stream readers (redis.stream_reader, in
-- redis.stream.lua) are loaded when first used.
local sh = require "sockhost"
local resp = require "sockhost.resp"

local M = {}

local mtype, format, concat = math.type, string.format, table.concat

M.null = resp.null
local STATUS_MT = getmetatable(resp.status("x"))
local ERROR_MT = getmetatable(resp.error("x"))

local TLS_OPTS = { "cert", "key", "ca", "verify", "servername", "alpn", "min_version", "handshake_timeout" }
local LIMIT_OPTS = { "max_bulk", "max_bytes", "max_elements", "max_depth" }
local OPTS = { connect_timeout = "number", timeout = "number", username = "string",
               password = "string", db = "number" }
for _, k in ipairs(TLS_OPTS) do OPTS[k] = "any" end
for _, k in ipairs(LIMIT_OPTS) do OPTS[k] = "number" end

---------------------------------------------------------------- urls

local function unescape(s)
  if s == nil then return nil end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function query_of(q, u)
  for k, v in (q or ""):gmatch("([^&=]+)=([^&]*)") do
    k, v = unescape(k), unescape(v)
    if k == "db" then u.db = v
    elseif k == "password" then u.password = v
    elseif k == "username" then u.username = v
    else return nil, "bad url: unknown parameter '" .. k .. "'" end
  end
  return u
end

--- redis.parse_url(url) -> { addr =, tls =, username =, password =, db = } | nil, "bad url: ..."
function M.parse_url(url)
  if type(url) ~= "string" then error("bad argument #1 to 'redis.connect' (string expected)", 3) end
  local path, q = url:match("^unix:([^?]+)%??(.*)$")
  if path then
    local u, err = query_of(q, { addr = "unix:" .. path, tls = false })
    if not u then return nil, err end
    if u.db ~= nil and not u.db:match("^%d+$") then return nil, "bad url: bad db" end
    u.db = tonumber(u.db)
    return u
  end
  local scheme, rest = url:match("^(%a+)://(.*)$")
  if not scheme then return nil, "bad url: no scheme" end
  if scheme ~= "redis" and scheme ~= "rediss" then return nil, "bad url: not redis, rediss or unix" end
  local auth, hostport, db = rest:match("^([^@/]*@)([^/]*)/?(.*)$")
  if not auth then auth, hostport, db = "", rest:match("^([^/]*)/?(.*)$") end
  local u = { tls = scheme == "rediss" }
  if auth ~= "" then
    local user, pass = auth:match("^([^:]*):(.*)@$")
    if not user then user, pass = "", auth:sub(1, -2) end   -- redis://secret@host: a password alone
    u.username = user ~= "" and unescape(user) or nil
    u.password = pass ~= "" and unescape(pass) or nil
  end
  local host, port = hostport:match("^%[([^%]]+)%]:?(%d*)$")
  if not host then host, port = hostport:match("^([^:]*):?(%d*)$") end
  if not host or host == "" then return nil, "bad url: no host" end
  if hostport:find(":", 1, true) and port == "" and not hostport:find("^%[") then return nil, "bad url: bad port" end
  port = port == "" and 6379 or tonumber(port)
  if port < 1 or port > 65535 then return nil, "bad url: bad port" end
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  u.addr = (u.tls and "tls://" or "tcp://") .. host .. ":" .. port
  local dbs, q2 = db:match("^([^?]*)%??(.*)$")
  if dbs ~= "" and not dbs:match("^%d+$") then return nil, "bad url: bad db" end
  u.db = tonumber(dbs)
  if q2 ~= "" then
    local ok, err = query_of(q2, u)
    if not ok then return nil, err end
    if type(u.db) == "string" then
      if not u.db:match("^%d+$") then return nil, "bad url: bad db" end
      u.db = tonumber(u.db)
    end
  end
  return u
end

---------------------------------------------------------------- options

local function check_opts(opts, fname, extra)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(("bad argument #2 to '%s' (table expected)"):format(fname), 3) end
  for k, v in pairs(opts) do
    local want = OPTS[k] or (extra and extra[k])
    if want == nil then error(("bad argument #2 to '%s' (unknown option '%s')"):format(fname, tostring(k)), 3) end
    if want == "number" and tonumber(v) == nil then
      error(("bad argument #2 to '%s' (option '%s' must be a number)"):format(fname, k), 3)
    end
    if want == "string" and type(v) ~= "string" then
      error(("bad argument #2 to '%s' (option '%s' must be a string)"):format(fname, k), 3)
    end
  end
  return opts
end
M.check_opts = check_opts

---------------------------------------------------------------- commands

-- Append the RESP encoding of the command args[i..j] to buf (n entries so
-- far); returns the new count. Raises on an argument that is neither a
-- string nor a number.
local function encode(buf, n, args, i, j)
  buf[n + 1] = "*" .. (j - i + 1) .. "\r\n"
  n = n + 1
  for k = i, j do
    local a = args[k]
    if type(a) == "number" then
      a = mtype(a) == "integer" and tostring(a) or format("%.17g", a)
    elseif type(a) ~= "string" then
      error(("bad argument #%d to 'call' (string or number expected, got %s)"):format(k - i + 1, type(a)), 4)
    end
    buf[n + 1], buf[n + 2], buf[n + 3] = "$" .. #a .. "\r\n", a, "\r\n"
    n = n + 3
  end
  return n
end

-- A reply as the script sees it: status objects become their text, nil
-- bulks and arrays redis.null; error objects stay (inside arrays).
local function convert(v)
  if type(v) ~= "table" then return v end
  local mt = getmetatable(v)
  if mt == STATUS_MT then return v.msg end
  if mt == ERROR_MT then return v end
  if v == resp.null or v == resp.null_array then return M.null end
  for i = 1, #v do v[i] = convert(v[i]) end
  return v
end
M.convert = convert

--- redis.error_message(v) -> the message of a server error reply in a
-- pipeline's or transaction's results, or nil for any other value.
function M.error_message(v)
  if type(v) == "table" and getmetatable(v) == ERROR_MT then return v.msg end
  return nil
end

local function transport_error(err)
  local why = err:match("^protocol error: (.*)$")
  if why then return "bad reply: " .. why end
  if err == "line too long" then return "bad reply: line too long" end
  return err
end

-- Commands whose reply is turned into a table field -> value.
local AS_MAP = { HGETALL = true, CONFIG = false }

local function to_map(v)
  if type(v) ~= "table" or v == M.null then return v end
  local m = {}
  for i = 1, #v - 1, 2 do m[v[i]] = v[i + 1] end
  return m
end

---------------------------------------------------------------- the client

local Client = {}
Client.__name = "sockhost.redis"

-- r:method for any command: r:get(k) is r:call("GET", k); an underscore
-- splits a two-word command (r:client_list() is CLIENT LIST).
local function command_method(name)
  local words = {}
  for w in name:gmatch("[^_]+") do words[#words + 1] = w:upper() end
  local f
  if #words == 1 then
    local cmd = words[1]
    if AS_MAP[cmd] then
      f = function(self, ...)
        local v, err, kind = self:call(cmd, ...)
        if v == nil then return nil, err, kind end
        return to_map(v)
      end
    else
      f = function(self, ...) return self:call(cmd, ...) end
    end
  else
    local a, b = words[1], words[2]
    f = function(self, ...) return self:call(a, b, ...) end
  end
  return f
end
M.command_method = command_method

-- Give a class every command as a method, made on first use and kept in
-- the class. (So every field of its objects must never be nil: reading it
-- would make a method.)
function M.commands_index(class)
  setmetatable(class, { __index = function(_, k)
    if type(k) ~= "string" or not k:match("^%a[%w]*_?[%w]*$") then return nil end
    local m = command_method(k)
    rawset(class, k, m)
    return m
  end })
  return class
end
Client.__index = M.commands_index(Client)

-- One task at a time talks on the connection; the others wait in order.
local function acquire(r)
  if not r.locked then r.locked = true return end
  local ev = sh.event()
  r.waiters[#r.waiters + 1] = ev
  ev:wait()
end

local function release(r)
  local ev = table.remove(r.waiters, 1)
  if ev then ev:set() else r.locked = false end
end

-- A transport failure: the connection is out of step, close it.
local function fail(r, err)
  r.broken = true
  if r.conn then r.conn:close() end
  return nil, transport_error(err)
end

-- A connection whose next line was read already: resp.read reads through
-- it, so that a reply the fast path below leaves is parsed as a whole.
local Replay = {}
Replay.__index = Replay
function Replay.read(self, what)
  local line = self.line
  if what == "L" and line then
    self.line = nil
    return line
  end
  return self.conn:read(what)
end

local byte, sub, match = string.byte, string.sub, string.match
local PLUS, COLON, DOLLAR, CR, LF = 43, 58, 36, 13, 10
local MAX_BULK = 8 * 1024 * 1024          -- resp's default

-- One reply. The common ones (a status, an integer, a bulk string of
-- allowed size) are read here; the others (errors, nil, arrays, anything
-- malformed) by resp.read, which has every check.
local function read_reply(r)
  local conn = r.conn
  local line, err = conn:read("L")
  if not line then return nil, err end
  local t = byte(line, 1)
  if byte(line, -1) == LF and byte(line, -2) == CR then
    if t == PLUS then return sub(line, 2, -3) end
    if t == COLON then
      local n = math.tointeger(tonumber(match(line, "^:(%-?%d+)\r\n$")))
      if n then return n end
    elseif t == DOLLAR then
      local n = tonumber(match(line, "^%$(%d+)\r\n$"))
      if n and n <= (r.limits and r.limits.max_bulk or MAX_BULK) then
        local data
        data, err = conn:read(n + 2)
        if not data then return nil, err end
        if sub(data, -2) ~= "\r\n" then return nil, "protocol error: expected CRLF after bulk" end
        return sub(data, 1, n)
      end
    end
  end
  local v
  v, err = resp.read(setmetatable({ conn = conn, line = line }, Replay), r.limits or nil)
  if v == nil then return nil, err end
  return convert(v)
end

-- Send the encoded commands in buf, read n replies into a table.
local function exchange(r, buf, n)
  if r.broken then return nil, "closed" end
  local ok, err
  if #buf <= 256 then ok, err = r.conn:write(table.unpack(buf)) else ok, err = r.conn:write(concat(buf)) end
  if not ok then return fail(r, err) end
  local out = {}
  for i = 1, n do
    local v
    v, err = read_reply(r)
    if v == nil then return fail(r, err) end
    out[i] = v
  end
  return out
end

local function locked_exchange(r, buf, n)
  acquire(r)
  local out, err = exchange(r, buf, n)
  release(r)
  return out, err
end

--- r:call(name, ...) -> reply | nil, msg, "server" | nil, err
function Client:call(...)
  local buf = {}
  encode(buf, 0, { ... }, 1, select("#", ...))
  local out, err = locked_exchange(self, buf, 1)
  if not out then return nil, err end
  local v = out[1]
  if getmetatable(v) == ERROR_MT then return nil, v.msg, "server" end
  return v
end

-- A batch of commands gathered by a pipeline or transaction.
local Batch = {}
Batch.__name = "sockhost.redis.batch"
Batch.__index = M.commands_index(Batch)

-- Commands after which a connection is not like the others any more: a
-- pool never gives it back.
M.STATEFUL = {
  MULTI = true, EXEC = true, DISCARD = true, WATCH = true, UNWATCH = true,
  SUBSCRIBE = true, PSUBSCRIBE = true, SSUBSCRIBE = true, MONITOR = true,
  SELECT = true, AUTH = true, HELLO = true, RESET = true, CLIENT = true,
  READONLY = true, READWRITE = true, QUIT = true, SYNC = true, PSYNC = true,
}

-- The bulk headers "$<len>\r\n" of short strings, made once (a number
-- in a concatenation is formatted with snprintf each time).
local BULK = {}
for i = 0, 512 do BULK[i] = "$" .. i .. "\r\n" end

-- STATEFUL by any spelling of the name, kept (up to a bound) as it is met.
local STATEFUL_ANY, nspellings = {}, 0
setmetatable(STATEFUL_ANY, { __index = function(t, k)
  local v = M.STATEFUL[k:upper()] or false
  if nspellings < 1000 then rawset(t, k, v) nspellings = nspellings + 1 end
  return v
end })

function Batch:call(...)
  local n = select("#", ...)
  if n == 0 or type((...)) ~= "string" then error("bad argument #1 to 'call' (command name expected)", 2) end
  if STATEFUL_ANY[...] then self.stateful = true end
  local buf, k = self.buf, self.n
  self.count = self.count + 1
  local c, a, b = ...
  if n <= 3 and type(a) == "string" and #a <= 512 and (n == 2 or type(b) == "string" and #b <= 512) then
    if n == 3 then             -- SET k v, HGET h f, ...: one string
      buf[k + 1] = "*3\r\n" .. BULK[#c] .. c .. "\r\n" .. BULK[#a] .. a .. "\r\n" .. BULK[#b] .. b .. "\r\n"
    else                       -- GET k, INCR k, ...
      buf[k + 1] = "*2\r\n" .. BULK[#c] .. c .. "\r\n" .. BULK[#a] .. a .. "\r\n"
    end
    self.n = k + 1
    return self
  end
  buf[k + 1] = "*" .. n .. "\r\n"
  k = k + 1
  for i = 1, n do
    local v = select(i, ...)
    if type(v) ~= "string" then
      if type(v) ~= "number" then
        error(("bad argument #%d to 'call' (string or number expected, got %s)"):format(i, type(v)), 2)
      end
      v = mtype(v) == "integer" and tostring(v) or format("%.17g", v)
    end
    if #v <= 512 then
      buf[k + 1] = "$" .. #v .. "\r\n" .. v .. "\r\n"
      k = k + 1
    else                                    -- not copied once more
      buf[k + 1], buf[k + 2], buf[k + 3] = "$" .. #v .. "\r\n", v, "\r\n"
      k = k + 3
    end
  end
  self.n = k
  return self
end

local function new_batch(r)
  return setmetatable({ r = r, buf = {}, n = 0, count = 0, stateful = false }, Batch)
end

-- Run a function over a new batch (if given): the batch, or raises what fn raised.
local function fill(r, fn)
  local b = new_batch(r)
  if fn ~= nil then
    if type(fn) ~= "function" then error("bad argument #1 to 'pipeline' (function expected)", 3) end
    fn(b)
  end
  return b
end

--- p:run() -> replies (a table, n = count) | nil, err
function Batch:run()
  if self.count == 0 then return { n = 0 } end
  local out, err = locked_exchange(self.r, self.buf, self.count)
  self.buf, self.n, self.count = {}, 0, 0
  if not out then return nil, err end
  out.n = #out
  return out
end

--- r:pipeline([fn]) -> replies | nil, err (with fn); a batch to fill and :run() (without)
function Client:pipeline(fn)
  local b = fill(self, fn)
  if fn == nil then return b end
  return b:run()
end

-- MULTI, the batch's commands, EXEC: the results of EXEC.
local function run_multi(r, b)
  local buf = { "*1\r\n$5\r\nMULTI\r\n" }
  for i = 1, b.n do buf[i + 1] = b.buf[i] end
  buf[#buf + 1] = "*1\r\n$4\r\nEXEC\r\n"
  local out, err = locked_exchange(r, buf, b.count + 2)
  if not out then return nil, err end
  local exec = out[#out]
  if getmetatable(exec) == ERROR_MT then return nil, exec.msg, "server" end
  if getmetatable(out[1]) == ERROR_MT then return nil, out[1].msg, "server" end
  if type(exec) == "table" and exec ~= M.null then exec.n = #exec end
  return exec
end
M.run_multi = run_multi

--- r:multi(fn) -> results of EXEC | redis.null (WATCH) | nil, msg, "server" | nil, err
function Client:multi(fn)
  if type(fn) ~= "function" then error("bad argument #1 to 'multi' (function expected)", 2) end
  return run_multi(self, fill(self, fn))
end

function Client:close()
  self.broken = true
  if self.conn then self.conn:close() end
  return true
end

function Client:is_closed() return self.broken end

-- For sockhost.pool: the connection's state, and its idle limit.
function Client:pending()
  if self.broken then return nil, "closed" end
  return self.conn:pending()
end
function Client:setlimits(l)
  if self.broken then return nil, "closed" end
  return self.conn:setlimits(l)
end

--- r:settimeout(seconds) -> true: the per-command timeout.
function Client:settimeout(t)
  self.timeout = t or false
  if not self.broken then self.conn:settimeout(t) end
  return true
end

function Client.__tostring(r)
  return ("sockhost.redis (%s, %s)"):format(r.addr, r.broken and "closed" or "open")
end
Client.__close = Client.close

---------------------------------------------------------------- connect

--- redis.connect(url [, opts]) -> client | nil, err [, "server"]
function M.connect(url, opts)
  opts = check_opts(opts, "redis.connect")
  local u, err = M.parse_url(url)
  if not u then return nil, err end
  local copts = { timeout = tonumber(opts.connect_timeout) or 10 }
  for _, k in ipairs(TLS_OPTS) do
    if opts[k] ~= nil then
      if not u.tls then error(("bad argument #2 to 'redis.connect' (option '%s' needs rediss://)"):format(k), 2) end
      copts[k] = opts[k]
    end
  end
  local limits
  for _, k in ipairs(LIMIT_OPTS) do
    if opts[k] ~= nil then limits = limits or {}; limits[k] = math.tointeger(tonumber(opts[k])) end
  end
  local conn
  conn, err = sh.connect(u.addr, copts)
  if not conn then return nil, err end
  local r = setmetatable({ conn = conn, addr = u.addr, url = url, opts = opts, limits = limits or false, timeout = false,
                           locked = false, waiters = {}, broken = false }, Client)
  r:settimeout(opts.timeout ~= nil and tonumber(opts.timeout) or nil)
  local password = opts.password or u.password
  local username = opts.username or u.username
  local db = opts.db ~= nil and tonumber(opts.db) or u.db
  local b = new_batch(r)
  if password then
    if username then b:call("AUTH", username, password) else b:call("AUTH", password) end
  end
  if db and db ~= 0 then b:call("SELECT", db) end
  if b.count > 0 then
    local out
    out, err = b:run()
    if not out then return nil, err end
    for i = 1, out.n do
      if getmetatable(out[i]) == ERROR_MT then r:close() return nil, out[i].msg, "server" end
    end
  end
  return r
end

--- redis.pool(url [, opts]) -> pool | nil, err   (redis.pool.lua)
function M.pool(url, opts) return require("sockhost.redis.pool").new(url, opts) end

--- redis.subscriber(url [, opts]) -> sub | nil, err   (redis.sub.lua)
function M.subscriber(url, opts) return require("sockhost.redis.sub").new(url, opts) end

--- redis.stream_reader(r_or_url, key [, opts]) -> reader | nil, err   (redis.stream.lua)
function M.stream_reader(src, key, opts) return require("sockhost.redis.stream").new(src, key, opts) end

M.TLS_OPTS, M.LIMIT_OPTS = TLS_OPTS, LIMIT_OPTS
return M
