-- sockhost.http.server -- the HTTP/1.1 server part of sockhost.http: serve
-- a connection (keep-alive, pipelining, request bodies by Content-Length or
-- chunked, HEAD, Expect: 100-continue) with a handler(req, res), and listen.
--
-- The request head is taken in one call when it is buffered whole
-- (conn:take_head, the common case), else read line by line (every read
-- bounded, and every limit answered there), and parsed whole by http-parser (the C module sockhost.http.parser, bindings/l_http.c
-- on core/sh_http.c), which also enforces the strict rules against request
-- smuggling. A request that breaks them is answered 400 (431, 414, 413, 505)
-- and the connection closed, without calling the handler.
local sh = require "sockhost"
local P = require "sockhost.http.parser"
local util = require "sockhost.http.util"

local M = {}

local reason, callable = util.reason, util.callable

local MAX_HEADERS_LIMIT = 256 -- the most max_headers may be (the parser's own cap)
local DEFAULTS = {
  max_line = 8192,          -- request line (414) and each header line (431)
  max_head = 65536,         -- request line + headers (431)
  max_headers = 100,        -- header lines (431); at most MAX_HEADERS_LIMIT
  max_body = 1048576,       -- request body (413)
  timeout = 30,             -- each read and write inside a request (408)
  keepalive_timeout = 15,   -- waiting for the next request on a connection
  buffer_body = true,       -- read the body before calling the handler
  date = true,              -- send a Date header
}
local MAX_CHUNK_LINE = 1024 -- a chunk-size line with its extensions
local BODY_PIECE = 65536    -- req:read's default: the most one piece of a body holds

-- ---------------------------------------------------------------- options

local function options(opts, level)
  if opts == nil then return DEFAULTS end
  if type(opts) ~= "table" then error("options must be a table", level + 1) end
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  for k, v in pairs(opts) do
    local d = DEFAULTS[k]
    if d == nil then error(("unknown option '%s'"):format(tostring(k)), level + 1) end
    if type(d) == "boolean" then
      if type(v) ~= "boolean" then error(("option '%s' must be a boolean"):format(k), level + 1) end
    else
      v = tonumber(v)
      if v == nil then error(("option '%s' must be a number"):format(k), level + 1) end
      if k:sub(1, 4) == "max_" then
        if v < 1 or v ~= math.floor(v) then error(("option '%s' must be a positive integer"):format(k), level + 1) end
        v = math.tointeger(v)
      end
    end
    o[k] = v
  end
  if o.max_headers > MAX_HEADERS_LIMIT then
    error(("option 'max_headers' must be at most %d"):format(MAX_HEADERS_LIMIT), level + 1)
  end
  return o
end

-- ---------------------------------------------------------------- responses

local function checkstatus(status, level)
  if math.type(status) ~= "integer" or status < 100 or status > 999 then
    error(("bad status %s (an integer 100..999 expected)"):format(tostring(status)), level + 1)
  end
  if status == 101 then
    error("status 101 switches protocols: use res:upgrade", level + 1)
  elseif status < 200 then
    error(("informational status %d is not a final response (send it with res:inform)")
      :format(status), level + 1)
  end
end

-- A complete response with no handler involved (errors from the server).
local function send_plain(conn, o, status, close, extra)
  local body = ("%d %s\n"):format(status, reason(status))
  return conn:write("HTTP/1.1 ", status, " ", reason(status), "\r\n",
    o.date and ("Date: " .. util.date() .. "\r\n") or "",
    extra or "",
    "Content-Type: text/plain; charset=utf-8\r\nContent-Length: ", #body,
    close and "\r\nConnection: close\r\n\r\n" or "\r\n\r\n", body)
end

local Res = {}
Res.__index = Res

-- (_state and _responding are there from the start: setting a field a
-- table has is cheaper than adding one.)
local function new_res(req, o)
  return setmetatable({ _req = req, _conn = req.conn, _o = o, _code = 200, _state = false,
                        _responding = false, _close = not req.keep_alive,
                        _head_only = req.method == "HEAD" }, Res)
end

--- res:status(code) -> res
function Res:status(code)
  checkstatus(code, 2)
  if self._state then error("response already started", 2) end
  self._code = code
  return self
end

local function sent(self, ok, err)
  if not ok then self._close = true; self._failed = err end
  return ok, err
end

-- A header name and value as a response may carry them (raises at 'level').
local function checkheader(name, value, level)
  if type(name) ~= "string" or not name:find("^[%w!#$%%&'*+%-.^_`|~]+$") then
    error(("bad header name %s"):format(tostring(name)), level + 1)
  end
  if type(value) == "number" then value = tostring(value) end
  if type(value) ~= "string" or value:find("[%z\r\n]") then
    error(("bad value for header '%s'"):format(name), level + 1)
  end
  return value
end

-- The header lines of a table { name = value or { values } }, checked.
local function header_lines(headers, level)
  local t = {}
  for k, v in pairs(headers or {}) do
    for _, x in ipairs(type(v) == "table" and v or { v }) do
      t[#t + 1] = k .. ": " .. checkheader(k, x, level + 1) .. "\r\n"
    end
  end
  return table.concat(t)
end

--- res:inform(code [, headers]) -> true | nil, err. Sends an informational
-- (1xx) response at once, before the final one: 100 Continue, 102
-- Processing, 103 Early Hints (a proxy relays a backend's with it). Not
-- sent to an HTTP/1.0 client, which would take it for the final response;
-- 100 only to a client that sent Expect: 100-continue and has not had it
-- yet (reading the body sends it by itself).
function Res:inform(code, headers)
  if math.type(code) ~= "integer" or code < 100 or code > 199 or code == 101 then
    error(("bad informational status %s (100..199 expected; 101 is res:upgrade)")
      :format(tostring(code)), 2)
  end
  if headers ~= nil and type(headers) ~= "table" then error("bad headers (a table expected)", 2) end
  local lines = header_lines(headers, 2)
  if self._state then error("response already started", 2) end
  self._informed = true
  if self._req.version ~= "1.1" then return true end
  if code == 100 then                    -- only to a client that waits for it
    if not self._req._expect then return true end
    self._req._expect = nil
  end
  return sent(self, self._conn:write("HTTP/1.1 ", code, " ", reason(code), "\r\n", lines, "\r\n"))
end

--- res:upgrade([headers]) -> conn | nil, err. Switches protocols: sends
-- 101 Switching Protocols with the headers (Upgrade, Connection: upgrade,
-- ...), and hands the connection over: sockhost.http reads no further
-- requests from it, and the handler speaks the new protocol on the conn.
function Res:upgrade(headers)
  if headers ~= nil and type(headers) ~= "table" then error("bad headers (a table expected)", 2) end
  local lines = header_lines(headers, 2)
  if self._state then error("response already started", 2) end
  self._state, self._switched, self._req._expect = "done", true, nil
  local ok, err = sent(self, self._conn:write("HTTP/1.1 101 ", reason(101), "\r\n", lines, "\r\n"))
  if not ok then return nil, err end
  return self._conn
end

--- res:header(name, value) -> res. Adds a header (repeats allowed, e.g.
-- Set-Cookie). Content-Length and Connection: close are understood;
-- Transfer-Encoding is the host's to set.
function Res:header(name, value)
  value = checkheader(name, value, 2)
  if self._state then error("response already started", 2) end
  local lname = name:lower()
  if lname == "content-length" then
    local n = math.tointeger(tonumber(value))
    if not n or n < 0 or not value:find("^%d+$") then error("bad Content-Length", 2) end
    self._length = n
    return self
  elseif lname == "connection" then
    if value:lower():find("close", 1, true) then self._close = true end
    return self
  elseif lname == "transfer-encoding" then
    error("Transfer-Encoding is set by sockhost.http", 2)
  elseif lname == "content-type" then
    self._ctype = true
  elseif lname == "date" then
    self._date = true
  end
  local h = self._h
  if h == nil then h = {}; self._h = h end
  h[#h + 1] = name
  h[#h + 1] = value
  return self
end

local function no_body(code)
  return code < 200 or code == 204 or code == 304
end

-- The pieces of a head, made once: status lines by code, Content-Length
-- lines by length (up to CL_CACHED), the Date line for the current second.
local STATUS_LINE = setmetatable({}, { __index = function(t, code)
  local line = "HTTP/1.1 " .. code .. " " .. reason(code) .. "\r\n"
  t[code] = line                          -- codes are 100..999: bounded
  return line
end })
local CL_CACHED = 4096
local CL_LINE = setmetatable({}, { __index = function(t, n)
  local line = "Content-Length: " .. n .. "\r\n"
  if n <= CL_CACHED then t[n] = line end
  return line
end })
local CTYPE = "Content-Type: text/plain; charset=utf-8\r\n"
local STATUS_200 = STATUS_LINE[200]
local date_at, date_line

-- The response's head with 'body' after it, in one conn:write: the status
-- line, the handler's headers, Date, 'ctype' (a Content-Type line or ""),
-- 'framing' (the Content-Length or Transfer-Encoding line, or ""),
-- Connection, the empty line.
local function write_head(self, ctype, framing, body)
  local h, hdrs = self._h, ""
  if h then
    local t = {}
    for i = 1, #h, 2 do
      t[#t + 1] = h[i]; t[#t + 1] = ": "; t[#t + 1] = h[i + 1]; t[#t + 1] = "\r\n"
    end
    hdrs = table.concat(t)
  end
  local date = ""
  if self._o.date and not self._date then
    local now = os.time()
    if now ~= date_at then date_at, date_line = now, "Date: " .. util.date(now) .. "\r\n" end
    date = date_line
  end
  local last = "\r\n"
  if self._close then
    last = "Connection: close\r\n\r\n"
  elseif self._req.version == "1.0" then
    last = "Connection: keep-alive\r\n\r\n"
  end
  return self._conn:write(STATUS_LINE[self._code], hdrs, date, ctype, framing, last, body)
end

--- res:write(data) -> true | nil, err. Streams part of the body: the first
-- call sends the head, with Content-Length if res:header set one, else
-- chunked (HTTP/1.1) or until the connection closes (HTTP/1.0).
function Res:write(data)
  if type(data) == "number" then data = tostring(data) end
  if type(data) ~= "string" then error("bad body (a string expected)", 2) end
  if self._state == "done" then error("response already finished", 2) end
  local conn = self._conn
  if not self._state then
    self._state = "head"
    local framing, ctype = "", ""
    if no_body(self._code) then
      self._mode = "none"
    elseif self._length then
      self._mode, self._left = "length", self._length
      framing = CL_LINE[self._length]
    elseif self._req.version == "1.1" then
      self._mode = "chunked"
      framing = "Transfer-Encoding: chunked\r\n"
    else
      self._mode, self._close = "close", true
    end
    if not self._ctype and self._mode ~= "none" then ctype = CTYPE end
    local ok, err = sent(self, write_head(self, ctype, framing, ""))
    if not ok then return nil, err end
  end
  if #data == 0 or self._head_only or self._mode == "none" then return true end
  if self._mode == "chunked" then
    return sent(self, conn:write(("%x\r\n"):format(#data), data, "\r\n"))
  elseif self._mode == "length" then
    if #data > self._left then error("body longer than its Content-Length", 2) end
    self._left = self._left - #data
  end
  return sent(self, conn:write(data))
end

-- The whole response at once, with Content-Length.
local function send_full(self, body)
  local code = self._code
  if no_body(code) then body = "" end
  local framing, ctype = "", ""
  if not no_body(code) then
    if self._length and self._length ~= #body then
      error(("body of %d bytes, but Content-Length %d"):format(#body, self._length), 3)
    end
    framing = CL_LINE[#body]
    if not self._ctype and #body > 0 then ctype = CTYPE end
  end
  self._state = "done"
  if self._head_only then body = "" end
  return sent(self, write_head(self, ctype, framing, body))
end

--- res:finish([data]) -> true | nil, err. Ends the response: all of it with
-- Content-Length if nothing was written yet, else the last piece.
function Res:finish(data)
  if data ~= nil and type(data) ~= "string" then
    if type(data) ~= "number" then error("bad body (a string expected)", 2) end
    data = tostring(data)
  end
  if self._state == "done" then error("response already finished", 2) end
  if not self._state then
    if self._length and data == nil and self._head_only then
      -- HEAD with a known length: the head only
      self._state = "done"
      return sent(self, write_head(self, "", no_body(self._code) and "" or CL_LINE[self._length], ""))
    end
    return send_full(self, data or "")
  end
  if data and #data > 0 then
    local ok, err = self:write(data)
    if not ok then self._state = "done"; return nil, err end
  end
  self._state = "done"
  if self._mode == "chunked" and not self._head_only then
    return sent(self, self._conn:write("0\r\n\r\n"))
  elseif self._mode == "length" and self._left > 0 and not self._head_only then
    self._close = true                    -- short body: the peer must not wait for more
  end
  return true
end

--- res:started() -> whether the head has been sent.
function Res:started()
  return self._state ~= false
end

-- The common response, in short: the handler returned a body alone and set
-- no header (so no Content-Length either): 200, Content-Length, Content-Type
-- when there is a body, as send_full and write_head would make it.
local function send_body(res, body)
  res._state = "done"
  local date, last, ctype, n = "", "\r\n", CTYPE, #body
  if res._o.date then
    local now = os.time()
    if now ~= date_at then date_at, date_line = now, "Date: " .. util.date(now) .. "\r\n" end
    date = date_line
  end
  if res._close then
    last = "Connection: close\r\n\r\n"
  elseif res._req.version == "1.0" then
    last = "Connection: keep-alive\r\n\r\n"
  end
  if n == 0 then ctype = "" end
  if res._head_only then body = "" end
  local ok, err = res._conn:write(STATUS_200, date, ctype, CL_LINE[n], last, body)
  if not ok then res._close, res._failed = true, err end
end

-- ---------------------------------------------------------------- requests

local Req = {}
Req.__index = Req

-- A body read failed: the stream is out of step, so the connection ends
-- after the response; 'status' is the answer if none was started.
local function body_fail(self, status, err)
  self._body, self._err, self._status = nil, err, status
  self._res._close = true
  return nil, err
end

local function read_fail(self, err)
  if err == "timeout" then return body_fail(self, 408, err) end
  return body_fail(self, nil, err)        -- closed: no answer
end

local function continue100(self)
  if self._expect then
    self._expect = nil
    if not self._res._state then self.conn:write("HTTP/1.1 100 Continue\r\n\r\n") end
  end
end

-- Trailer lines after the last chunk: checked like header lines, skipped.
local function skip_trailers(self)
  local o, conn, n, size = self._o, self.conn, 0, 0
  while true do
    local line, err = conn:read_until("\n", o.max_line)
    if not line then
      if err == "line too long" then return body_fail(self, 431, "trailer too large") end
      return read_fail(self, err)
    end
    if line:byte(-1) ~= 13 then return body_fail(self, 400, "bare LF") end
    if line == "\r" then return true end
    n, size = n + 1, size + #line + 1
    if n > o.max_headers or size > o.max_head then return body_fail(self, 431, "trailer too large") end
    if line:find("^[ \t]") or not line:find("^[%w!#$%%&'*+%-.^_`|~]+:") then
      return body_fail(self, 400, "bad trailer")
    end
  end
end

--- req:read([max]) -> piece | nil (the end) | nil, err. The next piece of
-- the body, at most max bytes (default BODY_PIECE, 65536).
function Req:read(max)
  max = max or BODY_PIECE
  if math.type(max) ~= "integer" or max < 1 then error("bad maximum (a positive integer expected)", 2) end
  local mode = self._body
  if mode == nil then
    if self._err then return nil, self._err end
    local text, pos = self._text, self._tpos or 1
    if text and pos <= #text then           -- read already (buffer_body): hand it out
      self._tpos = pos + max
      return text:sub(pos, pos + max - 1)
    end
    return nil
  end
  continue100(self)
  local conn = self.conn
  if mode == "chunked" and self._left == 0 then
    if self._crlf then
      local crlf, err = conn:read(2)
      if not crlf then return read_fail(self, err) end
      if crlf ~= "\r\n" then return body_fail(self, 400, "bad chunk") end
      self._crlf = false
    end
    local line, err = conn:read_until("\n", MAX_CHUNK_LINE)
    if not line then
      if err == "line too long" then return body_fail(self, 400, "bad chunk size") end
      return read_fail(self, err)
    end
    local n = P.chunk_size(line)
    if not n then return body_fail(self, 400, "bad chunk size") end
    if n == 0 then
      if not skip_trailers(self) then return nil, self._err end
      self._body = nil
      return nil
    end
    self._got = self._got + n
    if self._got > self._o.max_body then return body_fail(self, 413, "too large") end
    self._left, self._crlf = n, true
  end
  local want = self._left < max and self._left or max
  local data, err = conn:read_some(want)
  if not data then return read_fail(self, err) end
  self._left = self._left - #data
  if mode == "length" and self._left == 0 then self._body = nil end
  return data
end

--- req:body() -> the whole body ("" when none) | nil, err. Read on the
-- first call (at most max_body bytes); later calls return the same string.
function Req:body()
  if self._text then return self._text end
  if self._body == "length" then
    continue100(self)
    local data, err = self.conn:read(self._left)
    if not data then return read_fail(self, err) end
    self._left, self._body = 0, nil
    self._text = data
    return data
  end
  local parts = {}
  while true do
    local piece, err = self:read(BODY_PIECE)
    if not piece then
      if err then return nil, err end
      break
    end
    parts[#parts + 1] = piece
  end
  if self._err then return nil, self._err end
  self._text = table.concat(parts)
  return self._text
end

-- Read the rest of an unread body (bounded by max_body) to keep the
-- connection in step; false if that failed.
local function drain(req)
  while req._body do
    local piece = req:read(BODY_PIECE)
    if not piece then break end
  end
  return req._err == nil
end

-- ---------------------------------------------------------------- serving

-- The request head, line by line, every read bounded: the head string, or
-- nil and the status to answer with (nil: end quietly).
local function read_head(conn, o)
  if o.keepalive_timeout ~= o.timeout then conn:settimeout(o.keepalive_timeout) end
  local line, err, partial = conn:read_until("\n", o.max_line)
  if line == "\r" or line == "" then        -- one empty line before a request is allowed
    line, err, partial = conn:read_until("\n", o.max_line)
  end
  if o.keepalive_timeout ~= o.timeout then conn:settimeout(o.timeout) end
  if not line then
    if err == "line too long" then return nil, 414, "request line too long" end
    if err == "timeout" and partial and #partial > 0 then return nil, 408, err end
    return nil, nil, err
  end
  local parts, n, size = { line }, 1, #line + 1
  while true do
    line, err = conn:read_until("\n", o.max_line)
    if not line then
      if err == "line too long" then return nil, 431, "header line too long" end
      if err == "timeout" then return nil, 408, err end
      return nil, nil, err
    end
    n, size = n + 1, size + #line + 1
    if size > o.max_head then return nil, 431, "head too large" end
    if line == "\r" or line == "" then
      parts[n] = line == "" and "\n" or "\r\n"
      break
    end
    if n > o.max_headers + 1 then return nil, 431, "too many headers" end
    parts[n] = line
  end
  return table.concat(parts, "\n")
end

-- The handler's return values, when it did not finish the response itself.
local function respond(res, a, b, c)
  if type(a) == "string" then a, b, c = 200, nil, a   -- return body
  elseif type(b) ~= "table" then c, b = b, nil end    -- return status [, body]
  checkstatus(a, 3)
  res._code = a
  if b then
    for k, v in pairs(b) do
      if type(v) == "table" then
        for _, x in ipairs(v) do res:header(k, x) end
      else
        res:header(k, v)
      end
    end
  end
  if c == nil and a >= 400 then
    c = ("%d %s\n"):format(a, reason(a))
  end
  return res:finish(c)
end

-- The handler, then its response when it did not finish one itself (in
-- one protected call; res._responding marks an error as the response's).
-- What it leaves to serve: a switched protocol, and the cases answered
-- without the handler's values (only an informational response sent, a
-- body that failed).
local function run(handler, req, res)
  local a, b, c = handler(req, res)
  local state = res._state
  if state == "done" or res._switched then return end
  if not state then
    if a == nil then
      if res._informed or req._status then return end
    elseif type(a) == "string" and res._h == nil and res._length == nil then
      res._responding = true
      return send_body(res, a)
    end
  end
  res._responding = true
  if state or a == nil then return res:finish() end
  return respond(res, a, b, c)
end

local parse_query = util.parse_query

local function serve(conn, handler, o)
  conn:settimeout(o.timeout)
  local max_line, max_head, max_headers, wait = o.max_line, o.max_head, o.max_headers, o.keepalive_timeout
  while true do
    -- A head already buffered whole is taken and parsed in one call; else
    -- (and for every error) it is read line by line.
    local req, err, status
    local method, target, path, query_string, version, keep_alive, chunked, upgrade, length, headers =
      conn:take_request(max_line, max_head, max_headers, wait)
    if method then
      req = setmetatable({ method = method, target = target, path = path,
        query_string = query_string, version = version, keep_alive = keep_alive,
        chunked = chunked, upgrade = upgrade, length = length, headers = headers,
        conn = conn, _o = o, query = query_string and parse_query(query_string) or {},
        _res = false }, Req)
    elseif method == nil then
      return                                -- nothing came: "timeout", "closed"
    elseif target then                      -- false, err, status: a head refused
      sh.log("debug", "http:", tostring(conn), "bad request:", target)
      send_plain(conn, o, path, true)
      return
    else
      local head
      head, status = read_head(conn, o)
      if not head then
        if status then send_plain(conn, o, status, true) end
        return
      end
      req, err, status = P.parse_head(head, max_headers)
      if not req then
        sh.log("debug", "http:", tostring(conn), "bad request:", err)
        send_plain(conn, o, status, true)
        return
      end
      setmetatable(req, Req)
      req.conn, req._o = conn, o
      req.query = parse_query(req.query_string)
    end
    if req.length and req.length > o.max_body then
      send_plain(conn, o, 413, true)
      return
    end
    if req.chunked then
      req._body, req._left, req._got, req._crlf = "chunked", 0, 0, false
    elseif req.length and req.length > 0 then
      req._body, req._left = "length", req.length
    end
    local expect = req.headers.expect
    if expect and req.version == "1.1" then
      if expect:lower() ~= "100-continue" then
        send_plain(conn, o, 417, true)
        return
      end
      req._expect = req._body ~= nil
    end
    local res = new_res(req, o)
    req._res = res
    -- With buffer_body, a body that breaks the framing or max_body is
    -- answered before the handler runs, like a bad head.
    if o.buffer_body and req._body and not req:body() then
      if req._status then send_plain(conn, o, req._status, true) end
      return
    end
    local ok
    ok, err = xpcall(run, debug.traceback, handler, req, res)
    if not ok then
      if res._responding then
        sh.log("error", ("http: %s %s %s: bad response: %s"):format(tostring(conn), req.method, req.path, tostring(err)))
      else
        sh.log("error", ("http: %s %s %s failed: %s"):format(tostring(conn), req.method, req.path, tostring(err)))
      end
      if not res._state then send_plain(conn, o, 500, true) end
      return
    end
    if res._switched then return end      -- the connection is the handler's now
    if res._state ~= "done" then
      if res._informed then
        sh.log("error", ("http: %s %s %s: handler ended after only an informational response")
          :format(tostring(conn), req.method, req.path))
        send_plain(conn, o, 500, true)
      else
        send_plain(conn, o, req._status, true)
      end
      return
    end
    -- A body the handler left unread is drained to keep the stream in step,
    -- unless the client still waits for its 100 Continue.
    if res._close or res._failed or req._err or req._expect then return end
    if req._body and not drain(req) then return end
  end
end

--- http.serve(conn, handler [, opts]) -- serve HTTP requests on conn, one
-- after another, until the connection ends (it is not closed here).
-- handler(req, res) is called once per request.
function M.serve(conn, handler, opts)
  if not callable(handler) then error("bad handler (a function expected)", 2) end
  return serve(conn, handler, options(opts, 2))
end

local HTTP_OPTS = {}
for k in pairs(DEFAULTS) do HTTP_OPTS[k] = true end

--- http.listen(addr, handler [, opts]) -> listener | nil, err.
-- sockhost.listen + http.serve: opts holds both kinds of options.
function M.listen(addr, handler, opts)
  if not callable(handler) then error("bad handler (a function expected)", 2) end
  local hopts, lopts = {}, {}
  for k, v in pairs(opts or {}) do
    if HTTP_OPTS[k] then hopts[k] = v else lopts[k] = v end
  end
  local o = options(hopts, 2)
  return sh.listen(addr, function(conn) return serve(conn, handler, o) end, lopts)
end

return M
