-- sockhost.websocket -- WebSocket (RFC 6455), server and client, on a conn.
--
-- Server: websocket.upgrade(req, res [, opts]) in any sockhost.http handler
-- checks the handshake and switches the connection over (res:upgrade);
-- websocket.handler(fn [, opts]) makes a whole handler of fn(ws, req), and
-- router:websocket(pattern, fn [, opts]) (sockhost.http.router) routes to
-- one. Client: websocket.connect("ws://..." | "wss://..." [, opts]).
--
-- A ws reads whole messages (fragments joined, control frames answered in
-- between) in ws:receive; writes each frame with one conn:write, so frames
-- of several sending tasks never interleave. The byte work is C
-- (sockhost.crypto: SHA-1 and base64 from OpenSSL, the XOR mask, UTF-8
-- checks); framing is here.
--
-- Failures close the connection with the RFC's codes: 1002 (protocol
-- error: reserved bits or opcodes, unmasked client frames, masked server
-- frames, bad fragmentation, bad control frames), 1007 (a text message or
-- close reason that is not UTF-8), 1009 (a message over max_message).
local sh = require "sockhost"
local crypto = require "sockhost.crypto"

local M = {}

local GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
local OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
local MAX_HEAD_LINES = 100        -- client: header lines of the 101 answer
local MAX_HEAD_LINE = 8192        -- client: one line of it
local SMALL = 4096                -- frames up to this: mask key and payload in one read

-- Options of every ws (server and client), with their defaults.
local COMMON = {
  max_message = 16 * 1024 * 1024, -- bytes of one message, fragments joined (1009 past it)
  max_queued = 16 * 1024 * 1024,  -- bytes of frames that sending tasks may hold at once
  send_timeout = 30,              -- seconds a send may wait for the peer to read
  ping_interval = 0,              -- seconds between pings; 0: none
  ping_timeout = 20,              -- seconds a ping may go unanswered (then dropped)
  close_timeout = 5,              -- seconds the close handshake may take
}
local SERVER_ONLY = { origins = true, protocols = true }
local CLIENT_ONLY = { protocols = true, headers = true, timeout = true }
local TLS_KEYS = { cert = true, key = true, ca = true, verify = true, servername = true,
                   alpn = true, min_version = true, handshake_timeout = true }

local function checklist(v, name, level, fn_ok)
  if fn_ok and type(v) == "function" then return v end
  if type(v) ~= "table" then error(("option '%s' must be a list of strings"):format(name), level + 1) end
  for _, x in ipairs(v) do
    if type(x) ~= "string" then error(("option '%s' must be a list of strings"):format(name), level + 1) end
  end
  return v
end

-- The options, checked, defaults filled in; 'extra' names what else this
-- side takes (it is checked by its user).
local function options(opts, extra, level)
  if opts ~= nil and type(opts) ~= "table" then error("options must be a table", level + 1) end
  local o = {}
  for k, v in pairs(COMMON) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if COMMON[k] ~= nil then
      v = tonumber(v)
      if v == nil then error(("option '%s' must be a number"):format(k), level + 1) end
      if k:sub(1, 4) == "max_" then
        if v < 1 or v ~= math.floor(v) then error(("option '%s' must be a positive integer"):format(k), level + 1) end
        v = math.tointeger(v)
      end
      o[k] = v
    elseif extra[k] then
      o[k] = v
    else
      error(("unknown option '%s'"):format(tostring(k)), level + 1)
    end
  end
  if o.protocols ~= nil then checklist(o.protocols, "protocols", level + 1) end
  if o.origins ~= nil then checklist(o.origins, "origins", level + 1, true) end
  if o.headers ~= nil and type(o.headers) ~= "table" then error("option 'headers' must be a table", level + 1) end
  return o
end

-- ---------------------------------------------------------------- frames

local WS = {}
WS.__index = WS

-- Header and payload of a frame (masked with a fresh key by a client).
local function frame(self, op, payload, fin)
  local n, b1 = #payload, (fin == false and 0 or 0x80) | op
  local mbit = self._client and 0x80 or 0
  local head
  if n < 126 then
    head = string.pack(">BB", b1, mbit | n)
  elseif n < 65536 then
    head = string.pack(">BBI2", b1, mbit | 126, n)
  else
    head = string.pack(">BBI8", b1, mbit | 127, n)
  end
  if mbit == 0 then return head, payload end
  local key = crypto.random(4)
  return head .. key, crypto.mask(payload, key)
end

--- ws:abort() -> true. Closes the connection now, without a close
-- handshake (the peer sees 1006); queued output is dropped.
function WS:abort()
  if self._state ~= "closed" then self._state, self._code, self._reason = "closed", 1006, "" end
  self.conn:abort()
  self:_stop_pinging()
  if self._closed_ev then self._closed_ev:set() end
  return true
end

-- Close the connection at once and for good ('why' is logged).
local function drop(self, why)
  if self._state ~= "closed" then
    sh.log("warn", ("websocket: %s: %s, dropped"):format(tostring(self.conn), why))
  end
  self:abort()
end

-- One frame, in one conn:write (frames of several tasks never interleave).
local function write_frame(self, op, payload, fin)
  local head, body = frame(self, op, payload, fin)
  local size = #head + #body
  if self._queued > 0 and self._queued + size > self._o.max_queued then
    drop(self, ("%d bytes waiting to be sent, over max_queued"):format(self._queued))
    return nil, "send queue full"
  end
  self._queued = self._queued + size
  self.conn:settimeout(self._o.send_timeout)
  local ok, err = self.conn:write(head, body)
  self._queued = self._queued - size
  if not ok then
    if err == "timeout" then drop(self, "the peer does not read") end
    return nil, err
  end
  return true
end

-- The TCP close after the close handshake: a server closes first; a client
-- waits (bounded) for the server's end, then closes.
local function finish(self)
  self:_stop_pinging()
  if self._client then
    local deadline = sh.now() + self._o.close_timeout
    repeat
      local left = deadline - sh.now()
      self.conn:settimeout(left > 0 and left or 0)
      local data = self.conn:read_some()
    until not data
  end
  self.conn:close()
  if self._closed_ev then self._closed_ev:set() end
end

local function valid_code(code)
  return (code >= 1000 and code <= 1003) or (code >= 1007 and code <= 1014)
    or (code >= 3000 and code <= 4999)
end

-- Fail the connection with a close code: send the close frame (if none
-- was sent) and close. Returns nil, err, code.
local function fail(self, code, err)
  if self._state == "open" then
    self._state = "closing"
    self.conn:settimeout(self._o.close_timeout)
    self.conn:write(frame(self, OP_CLOSE, string.pack(">I2", code) .. err))
  end
  if self._state ~= "closed" then
    self._state, self._code, self._reason = "closed", code, err
    sh.log("info", ("websocket: %s: %s (%d), closing"):format(tostring(self.conn), err, code))
  end
  self:_stop_pinging()
  self.conn:close()
  if self._closed_ev then self._closed_ev:set() end
  return nil, err, code
end

-- The connection ended without a close handshake (or after ours).
local function lost(self, err)
  if err == "timeout" then return nil, "timeout" end
  if self._state ~= "closed" then
    self._state, self._code, self._reason = "closed", 1006, ""
    self:_stop_pinging()
    self.conn:close()
    if self._closed_ev then self._closed_ev:set() end
  end
  return nil, "closed", self._code, self._reason
end

-- conn:read(n) bounded by the receive's deadline and by send_timeout (the
-- conn has one timeout for reads and writes: see doc/API.md). A read that
-- times out consumes nothing, so it is tried again until the deadline.
local function read(self, n, deadline)
  if n == 0 then return "" end
  while true do
    local t = self._o.send_timeout
    if deadline then
      local left = deadline - sh.now()
      if left < 0 then left = 0 end
      if t < 0 or left < t then t = left end
    end
    self.conn:settimeout(t)
    local data, err = self.conn:read(n)
    if data or err ~= "timeout" or (deadline and sh.now() >= deadline) then return data, err end
  end
end

-- A close frame from the peer.
local function on_close(self, payload)
  local code, reason = 1005, ""
  if #payload == 1 then return fail(self, 1002, "protocol error") end
  if #payload >= 2 then
    code, reason = string.unpack(">I2", payload), payload:sub(3)
    if not valid_code(code) then return fail(self, 1002, "protocol error") end
    if not crypto.utf8_valid(reason) then return fail(self, 1007, "invalid utf-8") end
  end
  if self._state == "open" then           -- the peer began: answer with its code
    self._state = "closing"
    self.conn:settimeout(self._o.close_timeout)
    self.conn:write(frame(self, OP_CLOSE, code == 1005 and "" or string.pack(">I2", code)))
  end
  self._state, self._code, self._reason = "closed", code, reason
  finish(self)
  return nil, "closed", code, reason
end

-- The next frame's header into rx (kept across a timeout): false, results
-- when the frame is refused.
local function read_head(self, rx, deadline)
  if not rx.op then
    local h, err = read(self, 2, deadline)
    if not h then return false, lost(self, err) end
    local b1, b2 = h:byte(1, 2)
    rx.fin, rx.op, rx.masked, rx.len = b1 & 0x80 ~= 0, b1 & 0x0f, b2 & 0x80 ~= 0, b2 & 0x7f
    local op = rx.op
    if b1 & 0x70 ~= 0 or (op > OP_BINARY and op < OP_CLOSE) or op > OP_PONG
      or (op >= OP_CLOSE and (not rx.fin or rx.len > 125))
      or rx.masked == self._client                  -- servers get masked frames only
      or (op < OP_CLOSE and (op == OP_CONT) ~= (self._msg ~= nil)) then -- continuation iff a message is open
      return false, fail(self, 1002, "protocol error")
    end
  end
  if rx.len >= 126 and not rx.ext then
    local ext, err = read(self, rx.len == 126 and 2 or 8, deadline)
    if not ext then return false, lost(self, err) end
    rx.ext, rx.len = true, string.unpack(rx.len == 126 and ">I2" or ">i8", ext)
    if rx.len < 0 then return false, fail(self, 1002, "protocol error") end
  end
  if rx.op < OP_CLOSE and (self._msg and self._msg.size or 0) + rx.len > self._o.max_message then
    return false, fail(self, 1009, "message too large")
  end
  if rx.masked and not rx.key and rx.len > SMALL then
    local key, err = read(self, 4, deadline)
    if not key then return false, lost(self, err) end
    rx.key = key
  end
  return true
end

-- A whole message: data, "text" | "binary"; or nil, err, ...
local function receive(self, deadline)
  while true do
    local rx = self._rx
    local ok, a, b, c, d = read_head(self, rx, deadline)
    if not ok then return a, b, c, d end
    local payload, err
    if rx.masked and not rx.key then        -- a small frame: its key and payload in one read
      payload, err = read(self, 4 + rx.len, deadline)
      if not payload then return lost(self, err) end
      payload = crypto.mask(payload:sub(5), payload:sub(1, 4))
    else
      payload, err = read(self, rx.len, deadline)
      if not payload then return lost(self, err) end
      if rx.key then payload = crypto.mask(payload, rx.key) end
    end
    self._rx = {}
    local op = rx.op
    if op == OP_CLOSE then
      return on_close(self, payload)
    elseif op == OP_PING then
      if self._state == "open" then write_frame(self, OP_PONG, payload) end
    elseif op == OP_PONG then
      self._pong_at = sh.now()
    else                                        -- data (dropped while closing)
      local kind, data
      if op ~= OP_CONT and rx.fin then
        kind, data = op, payload
      else
        local m = self._msg
        if not m then
          m = { op = op, size = 0 }
          self._msg = m
        end
        m[#m + 1], m.size = payload, m.size + #payload
        if rx.fin then
          self._msg = nil
          kind, data = m.op, table.concat(m)
        end
      end
      if kind and self._state == "open" then
        if kind == OP_BINARY then return data, "binary" end
        if not crypto.utf8_valid(data) then return fail(self, 1007, "invalid utf-8") end
        return data, "text"
      end
    end
  end
end

--- ws:receive([timeout]) -> data, "text" | "binary" | nil, err [, code, reason]
function WS:receive(timeout)
  if timeout ~= nil and type(timeout) ~= "number" then error("bad timeout (a number expected)", 2) end
  if self._state == "closed" then return nil, "closed", self._code, self._reason end
  if self._reading then return nil, "busy" end
  self._reading = true
  local a, b, c, d = receive(self, timeout and timeout >= 0 and sh.now() + timeout or nil)
  self._reading = false
  return a, b, c, d
end

--- ws:send(data [, kind]) -> true | nil, err. kind: "text" (default) or "binary".
function WS:send(data, kind)
  if type(data) == "number" then data = tostring(data) end
  if type(data) ~= "string" then error("bad data (a string expected)", 2) end
  local op = OP_TEXT
  if kind == "binary" then op = OP_BINARY
  elseif kind ~= nil and kind ~= "text" then error("bad kind (\"text\" or \"binary\" expected)", 2) end
  if self._state ~= "open" then return nil, "closed" end
  if op == OP_TEXT and not crypto.utf8_valid(data) then return nil, "invalid utf-8" end
  return write_frame(self, op, data)
end

--- ws:ping([data]) -> true | nil, err. The pong is seen by ws:receive.
function WS:ping(data)
  data = data or ""
  if type(data) ~= "string" or #data > 125 then error("bad ping data (a string of at most 125 bytes expected)", 2) end
  if self._state ~= "open" then return nil, "closed" end
  return write_frame(self, OP_PING, data)
end

--- ws:close([code [, reason]]) -> true. The close handshake, then the TCP close.
function WS:close(code, reason)
  code, reason = code or 1000, reason or ""
  if math.type(code) ~= "integer" or not valid_code(code) or code == 1010 and not self._client
    or code == 1011 and self._client then
    error(("bad close code %s"):format(tostring(code)), 2)
  end
  if type(reason) ~= "string" or #reason > 123 or not crypto.utf8_valid(reason) then
    error("bad close reason (UTF-8, at most 123 bytes)", 2)
  end
  if self._state == "closed" then return true end
  if self._state == "open" then
    self._state = "closing"
    self.conn:settimeout(self._o.close_timeout)
    if not self.conn:write(frame(self, OP_CLOSE, string.pack(">I2", code) .. reason)) then
      drop(self, "close frame not sent")
      return true
    end
  end
  local deadline = sh.now() + self._o.close_timeout
  if self._reading then                 -- another task's receive sees the answer
    self._closed_ev = self._closed_ev or sh.event()
    self._closed_ev:wait(self._o.close_timeout)
  else
    self._reading = true
    repeat until not receive(self, deadline)   -- data still coming is dropped
    self._reading = false
  end
  if self._state ~= "closed" then drop(self, "no answer to the close") end
  return true
end

--- ws:close_status() -> code, reason of the close (nil while open).
function WS:close_status()
  if self._state ~= "closed" then return nil end
  return self._code, self._reason
end

function WS:_stop_pinging()
  if self._pinger then self._pinger:cancel(); self._pinger = nil end
  if self._ping_check then self._ping_check:cancel(); self._ping_check = nil end
end

-- Ping every ping_interval; a ping unanswered for ping_timeout drops the peer.
local function start_pinging(self)
  local o = self._o
  if o.ping_interval <= 0 then return end
  self._pinger = sh.every(o.ping_interval, function()
    if self._state ~= "open" then return self:_stop_pinging() end
    if self._ping_check then return end         -- one ping at a time
    local sent = sh.now()
    self._ping_check = sh.after(o.ping_timeout, function()
      self._ping_check = nil
      if self._state == "open" and (self._pong_at or -1) < sent then
        drop(self, ("no pong in %g s"):format(o.ping_timeout))
      end
    end)
    if not self:ping("") then self:_stop_pinging() end
  end)
end

WS.__tostring = function(self) return "websocket " .. tostring(self.conn) end
WS.__close = function(self) if self._state ~= "closed" then self:close() end end

local function new_ws(conn, o, client, protocol)
  local self = setmetatable({ conn = conn, protocol = protocol, _o = o, _client = client,
                              _state = "open", _queued = 0, _rx = {} }, WS)
  start_pinging(self)
  return self
end

-- ---------------------------------------------------------------- server

local function tokens(s)
  local t = {}
  for x in (s or ""):gmatch("[^,%s]+") do t[#t + 1] = x end
  return t
end

local function has_token(s, want)
  for _, x in ipairs(tokens(s)) do
    if x:lower() == want then return true end
  end
  return false
end

local function accept_key(key)
  return crypto.base64_encode(crypto.sha1(key .. GUID))
end

local function refuse(res, status, err, headers)
  res:status(status)
  for k, v in pairs(headers or {}) do res:header(k, v) end
  res:finish(err .. "\n")
  return nil, err
end

local function origin_ok(o, origin, req)
  if o.origins == nil then return true end
  if type(o.origins) == "function" then return o.origins(origin, req) and true or false end
  for _, x in ipairs(o.origins) do
    if x == origin then return true end
  end
  return false
end

local SERVER_EXTRA = SERVER_ONLY

local function upgrade(req, res, o)
  local h = req.headers
  if not has_token(h.upgrade, "websocket") then
    return refuse(res, 426, "not a websocket handshake",
      { Upgrade = "websocket", Connection = "Upgrade", ["Sec-WebSocket-Version"] = "13" })
  end
  if h["sec-websocket-version"] ~= "13" then
    return refuse(res, 426, "unsupported version", { ["Sec-WebSocket-Version"] = "13" })
  end
  local key = h["sec-websocket-key"]
  local raw = key and crypto.base64_decode(key)
  if req.method ~= "GET" or req.version ~= "1.1" or not has_token(h.connection, "upgrade")
    or not raw or #raw ~= 16 then
    return refuse(res, 400, "bad handshake")
  end
  if not origin_ok(o, h.origin, req) then return refuse(res, 403, "origin not allowed") end
  local protocol
  if o.protocols and h["sec-websocket-protocol"] then
    for _, p in ipairs(tokens(h["sec-websocket-protocol"])) do
      for _, mine in ipairs(o.protocols) do
        if p == mine then protocol = p break end
      end
      if protocol then break end
    end
  end
  local conn, err = res:upgrade({ Upgrade = "websocket", Connection = "Upgrade",
                                  ["Sec-WebSocket-Accept"] = accept_key(key),
                                  ["Sec-WebSocket-Protocol"] = protocol })
  if not conn then return nil, err end
  return new_ws(conn, o, false, protocol)
end

--- websocket.upgrade(req, res [, opts]) -> ws | nil, err. A refused
-- handshake has been answered (400, 403, 426) when this returns.
function M.upgrade(req, res, opts)
  if type(req) ~= "table" or type(res) ~= "table" then error("bad request or response", 2) end
  return upgrade(req, res, options(opts, SERVER_EXTRA, 2))
end

--- websocket.handler(fn [, opts]) -> handler(req, res) for sockhost.http:
-- upgrades and calls fn(ws, req); when fn returns (or fails) the ws is
-- closed (1000, or 1011 after an error).
function M.handler(fn, opts)
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error("bad handler (a function expected)", 2)
  end
  local o = options(opts, SERVER_EXTRA, 2)
  return function(req, res)
    local ws = upgrade(req, res, o)
    if not ws then return end
    local ok, err = pcall(fn, ws, req)
    if ws._state ~= "closed" then ws:close(ok and 1000 or 1011) end
    if not ok then error(err, 0) end
  end
end

-- ---------------------------------------------------------------- client

-- "ws://host:port/path?q" -> address for sockhost.connect, Host, target.
local function parse_url(url)
  local scheme, authority, target = url:match("^([wW][sS][sS]?)://([^/?#]+)([^#]*)")
  if not scheme then return nil end
  scheme = scheme:lower()
  local host, port = authority:match("^(%[[^%]]+%]):?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host or authority:find("@", 1, true) then return nil end
  if port == "" then port = scheme == "wss" and "443" or "80" end
  if target == "" then target = "/" elseif target:sub(1, 1) == "?" then target = "/" .. target end
  return (scheme == "wss" and "tls://" or "tcp://") .. host .. ":" .. port, authority, target, scheme
end

-- The 101 answer's head: status, headers (lower-cased names) | nil, err.
local function read_answer(conn, deadline)
  local function line()
    local left = deadline - sh.now()
    conn:settimeout(left > 0 and left or 0)
    local l, err = conn:read_until("\n", MAX_HEAD_LINE)
    if not l then return nil, err == "line too long" and "bad handshake" or err end
    return (l:gsub("\r$", ""))
  end
  local first, err = line()
  if not first then return nil, err end
  local status = tonumber(first:match("^HTTP/1%.1 (%d%d%d)"))
  if not status then return nil, "bad handshake" end
  local headers = {}
  for _ = 1, MAX_HEAD_LINES do
    local l
    l, err = line()
    if not l then return nil, err end
    if l == "" then return status, headers end
    local name, value = l:match("^([^:%s]+):%s*(.-)%s*$")
    if not name then return nil, "bad handshake" end
    name = name:lower()
    headers[name] = headers[name] and headers[name] .. ", " .. value or value
  end
  return nil, "bad handshake"
end

local CLIENT_EXTRA = {}
for k in pairs(CLIENT_ONLY) do CLIENT_EXTRA[k] = true end
for k in pairs(TLS_KEYS) do CLIENT_EXTRA[k] = true end

--- websocket.connect(url [, opts]) -> ws | nil, err [, status]
function M.connect(url, opts)
  if type(url) ~= "string" then error("bad url (a string expected)", 2) end
  local o = options(opts, CLIENT_EXTRA, 2)
  local addr, authority, target, scheme = parse_url(url)
  if not addr then return nil, ("bad url '%s'"):format(url) end
  local copts = { timeout = o.timeout }
  for k in pairs(TLS_KEYS) do
    if o[k] ~= nil then
      if scheme ~= "wss" then error("TLS options need a wss:// url", 2) end
      copts[k] = o[k]
    end
  end
  local timeout = tonumber(o.timeout) or 30
  local deadline = sh.now() + (timeout >= 0 and timeout or math.huge)
  local conn, err = sh.connect(addr, copts)
  if not conn then return nil, err end
  local key = crypto.base64_encode(crypto.random(16))
  local t = { "GET ", target, " HTTP/1.1\r\nHost: ", authority,
              "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ", key,
              "\r\nSec-WebSocket-Version: 13\r\n" }
  if o.protocols and #o.protocols > 0 then
    t[#t + 1] = "Sec-WebSocket-Protocol: " .. table.concat(o.protocols, ", ") .. "\r\n"
  end
  for k, v in pairs(o.headers or {}) do
    if type(k) ~= "string" or not k:find("^[%w!#$%%&'*+%-.^_`|~]+$")
      or type(v) ~= "string" or v:find("[%z\r\n]") then
      conn:close()
      error(("bad header %s"):format(tostring(k)), 2)
    end
    t[#t + 1] = k .. ": " .. v .. "\r\n"
  end
  t[#t + 1] = "\r\n"
  conn:settimeout(deadline - sh.now())
  local ok
  ok, err = conn:write(table.concat(t))
  if not ok then conn:close() return nil, err end
  local status, h = read_answer(conn, deadline)
  if not status then conn:close() return nil, h end
  if status ~= 101 then conn:close() return nil, "handshake refused", status end
  local protocol = h["sec-websocket-protocol"]
  local offered = false
  for _, p in ipairs(o.protocols or {}) do offered = offered or p == protocol end
  if not has_token(h.upgrade, "websocket") or not has_token(h.connection, "upgrade")
    or h["sec-websocket-accept"] ~= accept_key(key) or (protocol and not offered) then
    conn:close()
    return nil, "bad handshake"
  end
  return new_ws(conn, o, true, protocol)
end

return M
