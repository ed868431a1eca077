-- sockhost.http.client -- the HTTP/1.1 client part of sockhost.http:
-- http.request(method, url [, opts]), http.get(url [, opts]), and
-- http.client([opts]) for a client with a keep-alive pool of its own.
--
-- Connections come from a sockhost.pool keyed by scheme, host, port and TLS
-- options. A connection goes back to the pool only when its response was
-- read to its end and both sides are willing to go on; any other is
-- closed. A request on a pooled connection that the server had closed
-- meanwhile (nothing of a response came) is sent once more on a new
-- connection, for idempotent methods with a body that can be sent again.
--
-- The response head is checked strictly: anything another client could
-- read differently is "bad response: ...". A head that arrived whole and
-- is plainly well formed is checked and taken in one C call
-- (conn:take_response, core/sh_httpc.c), with its framing; any other (not
-- whole yet, malformed, over max_head, a framing that needs more care) is
-- read line by line here (read_head, check_lines, framing: every read
-- bounded by max_head), which answers it. Failures are nil, err; only
-- programming errors (a url that is not a string, an unknown option) raise.
--
-- The common request costs no pattern match and few tables: the request
-- head comes from the url's cache, the state is one table of 16 fields,
-- the response one of 12 (res.headers is made on first use, from the
-- header lines as one string), and the timeout is set once per connection.
local sh = require "sockhost"
local P = require "sockhost.http.parser"
local pool = require "sockhost.pool"

local M = {}

local KiB, MiB = 1024, 1024 * 1024
local REQUEST_DEFAULTS = {
  connect_timeout = 10,     -- seconds to connect (and the TLS handshake)
  read_timeout = 30,        -- seconds for each read and write
  timeout = -1,             -- seconds for the whole request, redirects and body included
  max_body = 16 * MiB,      -- longest response body
  max_head = 64 * KiB,      -- longest response head (status line and headers)
  redirects = 0,            -- redirects followed
}
local CLIENT_DEFAULTS = {
  pool_size = 16,           -- idle connections kept per scheme, host, port, TLS options
  idle_timeout = 60,        -- seconds an idle connection is kept
  max_conns = -1,           -- connections open at once: no limit
  wait_timeout = 30,        -- seconds a request waits for a place (max_conns)
}
local TLS_OPTS = { "ca", "verify", "servername", "cert", "key", "min_version", "handshake_timeout" }
local TLS_ERRORS = {
  ["certificate expired"] = true, ["certificate not yet valid"] = true, ["unknown CA"] = true,
  ["name mismatch"] = true, ["certificate rejected"] = true, ["certificate required"] = true,
  ["protocol version"] = true, ["handshake failure"] = true, ["not TLS"] = true,
  ["handshake timeout"] = true, ["closed during handshake"] = true, ["handshake failed"] = true,
}
local METHODS = { GET = "GET", HEAD = "HEAD", POST = "POST", PUT = "PUT", DELETE = "DELETE",
                  OPTIONS = "OPTIONS", PATCH = "PATCH", TRACE = "TRACE" }
local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true, TRACE = true }
local MAX_CHUNK_LINE = 1024
local MAX_INTERIM = 16      -- 1xx responses skipped before the final one
local PIECE = 65536
local TOKEN = "^[%w!#$%%&'*+%-.^_`|~]+$"

-- ---------------------------------------------------------------- urls

-- "http://host:port/path?q" -> { scheme, host, port, target, hostport } | nil, err
local function parse_url(url)
  if url:find("[%c ]") then return nil, "bad url: bad character" end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil, "bad url: no scheme" end
  scheme = scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then return nil, "bad url: not http or https" end
  local authority, target = rest:match("^([^/?#]*)(.*)$")
  target = target:gsub("#.*$", "")
  if target == "" then target = "/" elseif target:sub(1, 1) == "?" then target = "/" .. target end
  if authority:find("@", 1, true) then return nil, "bad url: user info not supported" end
  local host, port = authority:match("^(%[[%x:.]+%])(.*)$")
  if not host then host, port = authority:match("^([^:%[%]]*)(.*)$") end
  if not host or host == "" then return nil, "bad url: no host" end
  if port == "" then
    port = scheme == "https" and 443 or 80
  else
    port = port:match("^:(%d+)$")
    port = port and #port <= 5 and tonumber(port)
    if not port or port < 1 or port > 65535 then return nil, "bad url: bad port" end
  end
  local default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
  return {
    scheme = scheme, host = host, port = port, target = target,
    hostport = default and host or (host .. ":" .. port),
  }
end

-- A Location resolved against the url it came from.
local function resolve_location(base, loc)
  if loc:find("^%a[%w+.-]*://") then return loc end
  local origin = base.scheme .. "://" .. base.hostport
  if loc:sub(1, 2) == "//" then return base.scheme .. ":" .. loc end
  if loc:sub(1, 1) == "/" then return origin .. loc end
  local path = base.target:gsub("[?#].*$", "")
  if loc:sub(1, 1) == "?" then return origin .. path .. loc end
  return origin .. path:gsub("[^/]*$", "") .. loc
end

-- ---------------------------------------------------------------- options

local function check_opts(opts, allowed, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(("bad argument to '%s' (options must be a table)"):format(fname), 3) end
  for k, v in pairs(opts) do
    local d = allowed[k]
    if d == nil then error(("bad argument to '%s' (unknown option '%s')"):format(fname, tostring(k)), 3) end
    if d == "number" and tonumber(v) == nil then
      error(("bad argument to '%s' (option '%s' must be a number)"):format(fname, k), 3)
    end
  end
  return opts
end

local REQUEST_ALLOWED = { headers = "table", body = "any", client = "table" }
for k in pairs(REQUEST_DEFAULTS) do REQUEST_ALLOWED[k] = "number" end
for _, k in ipairs(TLS_OPTS) do REQUEST_ALLOWED[k] = "any" end
local CLIENT_ALLOWED = {}
for k in pairs(CLIENT_DEFAULTS) do CLIENT_ALLOWED[k] = "number" end
for k in pairs(REQUEST_DEFAULTS) do CLIENT_ALLOWED[k] = "number" end
for _, k in ipairs(TLS_OPTS) do CLIENT_ALLOWED[k] = "any" end

-- The request's headers as lines, checked: a name that is not a token or a
-- value with CR, LF or NUL is a programming error.
local function header_lines(headers, out, seen)
  if headers == nil then return end
  if type(headers) ~= "table" then error("bad argument to 'http.request' (option 'headers' must be a table)", 4) end
  for name, value in pairs(headers) do
    if type(name) ~= "string" or not name:find(TOKEN) then
      error(("bad argument to 'http.request' (bad header name '%s')"):format(tostring(name)), 4)
    end
    local lname = name:lower()
    if lname == "content-length" or lname == "transfer-encoding" then
      error(("bad argument to 'http.request' (header '%s' is set by the client)"):format(name), 4)
    end
    local values = type(value) == "table" and value or { value }
    for _, v in ipairs(values) do
      if type(v) == "number" then v = tostring(v) end
      if type(v) ~= "string" or v:find("[\r\n%z]") then
        error(("bad argument to 'http.request' (bad value for header '%s')"):format(name), 4)
      end
      out[#out + 1] = name .. ": " .. v .. "\r\n"
    end
    seen[lname] = values[#values]
  end
end

-- ---------------------------------------------------------------- responses

-- Header lookup in any case; repeated headers joined with ", ".
local Headers = {}
Headers.__index = function(t, k)
  if type(k) ~= "string" then return nil end
  return rawget(t, k:lower())
end

local Res = {}

-- res.headers: made on first use; filled on its first use from the header
-- lines (a string, checked already) or the list of names and values.
local Lazy = {}
Res.__index = function(t, k)
  local m = Res[k]
  if m ~= nil or k ~= "headers" then return m end
  local h = setmetatable({ [Lazy] = rawget(t, "_list") }, Lazy)
  rawset(t, "headers", h)
  return h
end
local check_lines
local function fill(t)
  local list = rawget(t, Lazy)
  if type(list) == "string" then list = check_lines(list) end   -- checked already
  rawset(t, Lazy, nil)
  setmetatable(t, Headers)
  for i = 1, #list, 2 do
    local name, v = list[i], list[i + 1]
    local old = rawget(t, name)
    t[name] = old and (old .. ", " .. v) or v
  end
  return t
end
Lazy.__index = function(t, k) return fill(t)[k] end
Lazy.__pairs = function(t) return next, fill(t), nil end
Lazy.__len = function() return 0 end

local function bad(msg) return nil, "bad response: " .. msg end

-- A token list header (Connection) holds a token, in any case.
local function has_token(value, token)
  if not value then return false end
  value = value:lower()
  if value == token then return true end
  if not value:find(",", 1, true) then return false end
  for t in value:gmatch("[^,%s]+") do
    if t:lower() == token then return true end
  end
  return false
end

local CTL = "[%z\1-\8\10-\31\127]"             -- control characters but tab
local NOT_TOKEN = "[^%w!#$%%&'*+%-.^_`|~]"
local find, sub, byte, match, lower = string.find, string.sub, string.byte, string.match, string.lower

-- The header lines of a head (CRLF between them, none after the last) as
-- a list of names (lower case) and values (without the white space around
-- them) in turn | nil, why. Checks every line.
function check_lines(block)
  local list, n = { nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil }, 0
  local pos, size = 1, #block
  while pos <= size do
    local e = find(block, "\r\n", pos, true) or size + 1   -- the end of this line
    local lf, cr = find(block, "\n", pos, true), find(block, "\r", pos, true)
    if (lf and lf <= e) or (cr and cr < e) then return nil, "bare LF" end
    local colon = find(block, ":", pos, true)
    if not colon or colon >= e or colon == pos then return nil, "bad header line" end
    local name = sub(block, pos, colon - 1)
    if find(name, NOT_TOKEN) then return nil, "bad header line" end
    if byte(block, colon + 1) == 32 then colon = colon + 1 end   -- the usual one space
    local value = sub(block, colon + 1, e - 1)
    local b1, bn = byte(value, 1), byte(value, -1)
    if b1 == 32 or b1 == 9 or bn == 32 or bn == 9 then value = match(value, "^[ \t]*(.-)[ \t]*$") end
    if find(value, "%c") and find(value, CTL) then return nil, "bad header value" end
    list[n + 1], list[n + 2] = lower(name), value
    n, pos = n + 2, e + 2
  end
  return list
end

-- Read a head: { version, status, reason, headers, list } | nil, err
-- [, true when nothing at all came]. Three reads at most: the status line
-- (so that a head with bare LFs fails at once), then either the CRLF of an
-- empty header section or the header lines up to the blank line. 'list'
-- holds the header names (lower case) and values in turn.
local function read_head(conn, max_head)
  local line, err, partial = conn:read_until("\n", max_head)
  if not line then
    if err == "line too long" then return nil, "too large" end
    if err == "closed" then
      if partial == nil or partial == "" then return nil, "closed", true end
      return bad("closed in the head")
    end
    return nil, err
  end
  if line:byte(-1) ~= 13 then return bad(line == "" and "empty head" or "bare LF") end
  if line == "\r" then return bad("empty head") end
  local minor, status, sp, reason = line:match("^HTTP/1%.([01]) ([1-5]%d%d)( ?)([^\r]*)\r$")
  if not minor or (reason ~= "" and sp == "") or (find(reason, "%c") and find(reason, CTL)) then
    return bad("bad status line")
  end
  local left = max_head - #line - 1
  local block
  block, err, partial = conn:read(2)
  if block == "\r\n" then
    block = ""                                   -- no header lines
  elseif block then
    if left < 4 then return nil, "too large" end
    local two, rest = block, nil
    rest, err, partial = conn:read_until("\r\n\r\n", left - 4)
    block = rest and two .. rest
    partial = partial and two .. partial
  end
  if not block then
    if err == "line too long" then return nil, "too large" end
    if err == "closed" then
      if partial and partial:find("\n\r?\n") and partial:find("[^\r]\n") then return bad("bare LF") end
      return bad("closed in the head")
    end
    return nil, err
  end
  local list, why = check_lines(block)
  if not list then return bad(why) end
  return { version = minor == "1" and "1.1" or "1.0", status = tonumber(status), reason = reason,
           list = list }
end

-- How the body of a final response is framed: "none", "length" (with its
-- length), "chunked" or "close", and its Connection header | nil, err.
local function framing(head, method)
  local s = head.status
  local te, cl, conn
  local list = head.list
  for i = 1, #list, 2 do
    local name = list[i]
    if name == "connection" then
      conn = conn and (conn .. ", " .. list[i + 1]) or list[i + 1]
    elseif name == "transfer-encoding" then
      if te then return bad("two transfer-encoding headers") end
      te = list[i + 1]
    elseif name == "content-length" and find(list[i + 1], "^%d+$") and #list[i + 1] <= 15 then
      local v = tonumber(list[i + 1])
      if cl and cl ~= v then return bad("conflicting content-length") end
      cl = v
    elseif name == "content-length" then
      for v in (list[i + 1] .. ","):gmatch("([^,]*),") do
        v = v:match("^%s*(.-)%s*$")
        if not v:find("^%d+$") or #v > 15 then return bad("bad content-length") end
        if cl and cl ~= tonumber(v) then return bad("conflicting content-length") end
        cl = tonumber(v)
      end
    end
  end
  if te and cl then return bad("both content-length and transfer-encoding") end
  if te and te:lower() ~= "chunked" then return bad("transfer-encoding other than chunked") end
  if te and head.version == "1.0" then return bad("transfer-encoding in HTTP/1.0") end
  if method == "HEAD" or s < 200 or s == 204 or s == 304 then return "none", 0, conn end
  if te then return "chunked", 0, conn end
  if cl then
    if cl == 0 then return "none", 0, conn end
    return "length", cl, conn
  end
  return "close", 0, conn
end

-- ---------------------------------------------------------------- connections

-- The timeout for the next read or write: read_timeout, or what is left of
-- the whole request's; false once that is over.
local function arm(st)
  local t = st.read_timeout
  if not st.deadline then                 -- read_timeout alone: set once per connection
    local conn = st.conn
    if st.armed ~= conn then conn:settimeout(t); st.armed = conn end
    return true
  end
  if st.deadline then
    local left = st.deadline - sh.now()
    if left <= 0 then return false end
    if t < 0 or left < t then t = left end
  end
  st.conn:settimeout(t)
  return true
end

-- The connection is done with: back to the pool if it may be used again.
local function release(st, reusable)
  local conn = st.conn
  if not conn then return end
  st.conn = nil
  local p = st.u.pool
  if reusable then p:put(st.key, conn) else p:discard(st.key, conn) end
end

local function fail(st, err)
  release(st, false)
  return nil, err
end

-- ---------------------------------------------------------------- bodies

local function body_done(self)
  self._mode = nil
  release(self._st, self._keep)
  return nil
end

local function body_fail(self, err)
  self._mode, self._err = nil, err
  release(self._st, false)
  return nil, err
end

local function read_err(self, err)
  if err == "closed" then
    if self._mode == "close" then return body_done(self) end
    return body_fail(self, "bad response: body cut short")
  end
  return body_fail(self, err)
end

-- Count what arrived against max_body.
local function got(self, n)
  self._got = self._got + n
  return self._max < 0 or self._got <= self._max
end

local function skip_trailers(self, conn)
  local size = 0
  while true do
    local line, err = conn:read_until("\n", self._st.max_head)
    if not line then
      if err == "line too long" then return body_fail(self, "too large") end
      return read_err(self, err == "closed" and "bad response: closed in the trailers" or err)
    end
    size = size + #line + 1
    if size > self._st.max_head then return body_fail(self, "too large") end
    if line:byte(-1) ~= 13 then return body_fail(self, "bad response: bare LF") end
    if line == "\r" then return true end
    if not line:find("^[%w!#$%%&'*+%-.^_`|~]+:") then return body_fail(self, "bad response: bad trailer") end
  end
end

-- The next piece of the body, at most max bytes (see res:read).
local function read_piece(self, max)
  local mode = self._mode
  if mode == nil then return nil, self._err end
  local st = self._st
  local conn = st.conn
  if (st.deadline or st.armed ~= conn) and not arm(st) then return body_fail(self, "timeout") end
  if mode == "chunked" and self._left == 0 then
    if self._crlf then
      local crlf, err = conn:read(2)
      if not crlf then return read_err(self, err == "closed" and "bad response: body cut short" or err) end
      if crlf ~= "\r\n" then return body_fail(self, "bad response: bad chunk") end
      self._crlf = false
    end
    local line, err = conn:read_until("\n", MAX_CHUNK_LINE)
    if not line then
      if err == "line too long" then return body_fail(self, "bad response: bad chunk size") end
      return read_err(self, err == "closed" and "bad response: body cut short" or err)
    end
    local n = P.chunk_size(line)
    if not n then return body_fail(self, "bad response: bad chunk size") end
    if n == 0 then
      if not skip_trailers(self, conn) then return nil, self._err end
      return body_done(self)
    end
    if not got(self, n) then return body_fail(self, "too large") end
    self._left, self._crlf = n, true
  end
  local want = max
  if mode ~= "close" and self._left < want then want = self._left end
  local data, err = conn:read_some(want)
  if not data then return read_err(self, err) end
  if mode == "close" then
    if not got(self, #data) then return body_fail(self, "too large") end
  else
    self._left = self._left - #data
    if mode == "length" and self._left == 0 then
      self._mode = nil
      release(st, self._keep)
    end
  end
  return data
end

--- res:read([max]) -> piece | nil (the end) | nil, err
function Res:read(max)
  max = max or PIECE
  if math.type(max) ~= "integer" or max < 1 then error("bad argument #1 to 'read' (positive integer expected)", 2) end
  return read_piece(self, max)
end

--- res:body([max]) -> the whole body ("" when none) | nil, err
function Res:body(max)
  if self._text then return self._text end
  if max ~= nil then
    if math.type(max) ~= "integer" then error("bad argument #1 to 'body' (integer expected)", 2) end
    self._max = max
  end
  if self._mode == "length" and self._max >= 0 and self._left > self._max then
    return body_fail(self, "too large")
  end
  local piece, err = read_piece(self, PIECE)
  if not piece then
    if err then return nil, err end
    piece = ""
  elseif self._mode ~= nil then                -- more to come
    local parts = { piece }
    while true do
      piece, err = read_piece(self, PIECE)
      if not piece then
        if err then return nil, err end
        break
      end
      parts[#parts + 1] = piece
    end
    piece = table.concat(parts)
  end
  self._text = piece
  return piece
end

--- res:header_all(name) -> { value, ... } each as received ({} when none)
function Res:header_all(name)
  if type(name) ~= "string" then error("bad argument #1 to 'header_all' (string expected)", 2) end
  name = name:lower()
  local out = {}
  local list = self._list
  if type(list) == "string" then list = check_lines(list); self._list = list end
  for i = 1, #list, 2 do
    if list[i] == name then out[#out + 1] = list[i + 1] end
  end
  return out
end

--- res:close() -> true: done with the response; an unread body closes the
-- connection.
function Res:close()
  if self._mode then body_fail(self, "closed") end
  return true
end

Res.__close = Res.close
Res.__gc = function(self) if self._mode then pcall(body_fail, self, "closed") end end
function Res.__tostring(self) return ("sockhost.http response %d %s"):format(self.status, self.reason) end

-- ---------------------------------------------------------------- requests

-- Send the request; true | nil, err.
local function send(st)
  local conn = st.conn
  if (st.deadline or st.armed ~= conn) and not arm(st) then return nil, "timeout" end
  local body = st.body
  if type(body) ~= "function" then
    return conn:write(st.head, body or "")
  end
  conn:cork()
  local ok, err = conn:write(st.head)
  if not ok then return nil, err end
  while true do
    local okc, piece, perr = pcall(body)
    if not okc then return nil, piece, "raise" end
    if piece == nil then
      if perr ~= nil then return nil, "body: " .. tostring(perr), true end
      break
    end
    if type(piece) ~= "string" then
      return nil, "bad argument to 'http.request' (the body function must return strings)", "raise"
    end
    if #piece > 0 then
      if not arm(st) then return nil, "timeout" end
      ok, err = conn:write(("%x\r\n"):format(#piece), piece, "\r\n")
      if not ok then return nil, err end
    end
  end
  if not arm(st) then return nil, "timeout" end
  ok, err = conn:write("0\r\n\r\n")
  if not ok then return nil, err end
  conn:uncork()
  return true
end

-- One exchange on one connection: res | nil, err, retry (true: a pooled
-- connection was found closed before any of the response came).
local function exchange(st, reused)
  local ok, err, final = send(st)
  if not ok then
    if final == "raise" then release(st, false) error(err, 0) end
    if final then return fail(st, err) end
    if err == "timeout" then return fail(st, err) end
    local n = st.conn:pending()
    if not n or n == 0 then return nil, err, reused end   -- nothing came: maybe stale
    -- the server answered before it took the whole body: read it
  end
  local conn, method = st.conn, st.method
  local status, reason, minor, list, mode, len, keep
  for _ = 1, MAX_INTERIM + 1 do
    if (st.deadline or st.armed ~= conn) and not arm(st) then return fail(st, "timeout") end
    local fields, length, chunked, cclose, ckeep
    status, reason, minor, fields, length, chunked, cclose, ckeep = conn:take_response(st.max_head)
    if status then                                 -- the common case: the whole head, checked in C
      list = fields
      if status >= 200 then
        if method == "HEAD" or status == 204 or status == 304 then mode, len = "none", 0
        elseif chunked then mode, len = "chunked", 0
        elseif length > 0 then mode, len = "length", length
        elseif length == 0 then mode, len = "none", 0
        else mode, len = "close", 0 end
        keep = mode ~= "close" and not st.close
        if minor == 0 then keep = keep and ckeep else keep = keep and not cclose end
        break
      end
    elseif status == nil then                      -- nothing came
      if reason ~= "closed" then return fail(st, reason) end
      if reused then return nil, "closed", true end
      return fail(st, "bad response: closed before the response")
    else                                           -- anything else: line by line
      local head, herr, nothing = read_head(conn, st.max_head)
      if not head then
        if nothing then
          if reused then return nil, "closed", true end
          return fail(st, "bad response: closed before the response")
        end
        return fail(st, herr)
      end
      status, reason, minor, list = head.status, head.reason, head.version == "1.1" and 1 or 0, head.list
      if status >= 200 then
        local connection
        mode, len, connection = framing(head, method)
        if not mode then return fail(st, len) end
        keep = mode ~= "close" and not st.close
        if minor == 0 then
          keep = keep and has_token(connection, "keep-alive")
        else
          keep = keep and not has_token(connection, "close")
        end
        break
      end
    end
    if status == 101 then return fail(st, "bad response: 101 without an upgrade") end
    status = nil                                   -- 100, 102, 103: the final one follows
  end
  if not status then return fail(st, "bad response: too many 1xx responses") end
  local res = setmetatable({
    status = status, reason = reason, version = minor == 1 and "1.1" or "1.0",
    url = st.u.url, _list = list, _st = st, _keep = keep, _got = 0, _max = st.max_body,
    _mode = mode, _left = len, _crlf = false,
  }, Res)
  if mode == "none" then
    res._mode = nil
    release(st, keep)
  elseif mode == "length" and st.max_body >= 0 and len > st.max_body then
    return body_fail(res, "too large")
  end
  return res
end

local function is_redirect(s) return s == 301 or s == 302 or s == 303 or s == 307 or s == 308 end

-- The request line and headers of one request to url u.
local function build(method, u, opts, body)
  local lines, seen = { method, " ", u.target, " HTTP/1.1\r\n" }, {}
  local hl = {}
  header_lines(opts.headers, hl, seen)
  if not seen.host then lines[#lines + 1] = "Host: " .. u.hostport .. "\r\n" end
  if not seen["user-agent"] then lines[#lines + 1] = "User-Agent: sockhost/" .. sh.version .. "\r\n" end
  for _, l in ipairs(hl) do lines[#lines + 1] = l end
  if type(body) == "string" then
    lines[#lines + 1] = "Content-Length: " .. #body .. "\r\n"
  elseif type(body) == "function" then
    lines[#lines + 1] = "Transfer-Encoding: chunked\r\n"
  elseif method == "POST" or method == "PUT" or method == "PATCH" then
    lines[#lines + 1] = "Content-Length: 0\r\n"
  end
  lines[#lines + 1] = "\r\n"
  return table.concat(lines), has_token(seen.connection, "close")
end

local Client = {}
Client.__index = Client

local EMPTY = setmetatable({}, { __newindex = function() error("read-only", 2) end })

local function pool_key(u, tls)
  local parts = { u.scheme, u.host, tostring(u.port) }
  for _, k in ipairs(TLS_OPTS) do
    if k ~= "handshake_timeout" then parts[#parts + 1] = tostring(tls[k]) end
  end
  return table.concat(parts, "|")
end

-- The pool's connect function: the address and options come with get's
-- opts (the request's state). TLS failures (handshake, files) are
-- prefixed "tls: ".
local function connect_fn(_, g)
  local copts = { timeout = g.ct }
  for k, v in pairs(g.tls) do copts[k] = v end
  local conn, err = sh.connect(g.u.addr, copts)
  if not conn then
    if g.u.https and (TLS_ERRORS[err:match("^([^:]*)")] or err:find("^cannot load") or err:find("^key '")) then
      err = "tls: " .. err
    end
    return nil, err
  end
  return conn
end

-- The url parsed, with what follows from it alone: kept per client (at
-- most URL_CACHE of them; then the cache starts again).
local URL_CACHE = 256
local function url_of(client, url)
  local u = client.urls[url]
  if u then return u end
  local err
  u, err = parse_url(url)
  if not u then return nil, err end
  u.url = url
  u.https = u.scheme == "https"
  u.origin = u.scheme .. "://" .. u.hostport
  u.addr = (u.https and "tls://" or "tcp://") .. u.host .. ":" .. u.port
  u.heads, u.pool = {}, client.pool
  if client.nurls >= URL_CACHE then client.urls, client.nurls = {}, 0 end
  client.urls[url], client.nurls = u, client.nurls + 1
  return u
end

-- The TLS options and pool key of a request to u.
local function tls_key(client, u, opts)
  if not u.https then
    u.key = u.key or pool_key(u, EMPTY)
    return EMPTY, u.key
  end
  local own = false
  if opts ~= EMPTY then
    for _, k in ipairs(TLS_OPTS) do if opts[k] ~= nil then own = true break end end
  end
  if not own and u.tls then return u.tls, u.key end
  local tls = {}
  for _, k in ipairs(TLS_OPTS) do
    local v = opts[k]
    if v == nil then v = client.opts[k] end
    tls[k] = v
  end
  local key = pool_key(u, tls)
  if not own then u.tls, u.key = tls, key end
  return tls, key
end

-- One request to one url (no redirects): res | nil, err.
local function once(client, method, u, opts, st)
  local tls, key
  if u.https or not u.key then tls, key = tls_key(client, u, opts) else tls, key = EMPTY, u.key end
  local body = st.body
  local head, close
  if opts.headers == nil and body == nil then      -- the common case: made once per url
    head = u.heads[method]
    if not head then head = build(method, u, opts, nil); u.heads[method] = head end
    close = false
  else
    head, close = build(method, u, opts, body)
  end
  st.method, st.head, st.close, st.u, st.key, st.tls = method, head, close, u, key, tls
  local retryable = IDEMPOTENT[method] and type(body) ~= "function"
  for attempt = 1, 2 do
    local ct = st.connect_timeout
    if st.deadline then
      local left = st.deadline - sh.now()
      if left <= 0 then return nil, "timeout" end
      if ct < 0 or left < ct then ct = left end
    end
    st.ct, st.fresh = ct, attempt > 1
    local conn, reused = client.pool:get(key, st)
    if not conn then return nil, reused end
    st.conn, st.armed = conn, false
    local res, err, stale = exchange(st, reused)
    if res then return res end
    if not stale then return nil, err end
    release(st, false)
    if not retryable or attempt == 2 then return nil, err end
  end
end

-- The state of one request: its limits, from opts over the client's.
local function state(client, opts, body)
  local d = client.d
  local rt, ct, mb, mh, timeout, redirects = d.read_timeout, d.connect_timeout, d.max_body,
    d.max_head, d.timeout, d.redirects
  if opts ~= EMPTY then
    local function get(k) local v = opts[k] if v == nil then return d[k] end return tonumber(v) end
    rt, ct, timeout, redirects = get("read_timeout"), get("connect_timeout"), get("timeout"), get("redirects")
    mb = math.tointeger(get("max_body")) or -1
    mh = math.tointeger(get("max_head")) or REQUEST_DEFAULTS.max_head
  end
  -- every field it will have, so that the table is made once at its size
  return { body = body, read_timeout = rt, connect_timeout = ct, max_body = mb, max_head = mh,
           deadline = timeout >= 0 and sh.now() + timeout or false,
           method = false, head = false, close = false, u = false, key = false, tls = false,
           ct = false, fresh = false, conn = false, armed = false }, redirects
end

--- client:request(method, url [, opts]) -> res | nil, err
function Client:request(method, url, opts)
  if METHODS[method] == nil and (type(method) ~= "string" or not method:find(TOKEN)) then
    error("bad argument #1 to 'request' (method expected)", 2)
  end
  if type(url) ~= "string" then error("bad argument #2 to 'request' (string expected, got " .. type(url) .. ")", 2) end
  if opts == nil then opts = EMPTY else opts = check_opts(opts, REQUEST_ALLOWED, "http.request") end
  local body = opts.body
  if body ~= nil and type(body) ~= "string" and type(body) ~= "function" then
    error("bad argument to 'http.request' (option 'body' must be a string or a function)", 2)
  end
  local st, redirects = state(self, opts, body)
  method = METHODS[method] or method:upper()
  local first_origin, followed = nil, 0
  while true do
    local u, err = url_of(self, url)
    if not u then return nil, err end
    first_origin = first_origin or u.origin
    local o = opts
    if u.origin ~= first_origin and opts.headers then
      -- credentials do not follow a redirect to another origin
      o = setmetatable({ headers = {} }, { __index = opts })
      for k, v in pairs(opts.headers) do
        local lk = type(k) == "string" and k:lower()
        if lk ~= "authorization" and lk ~= "cookie" then o.headers[k] = v end
      end
    end
    local res, rerr = once(self, method, u, o, st)
    if not res then return nil, rerr end
    if redirects <= 0 or not is_redirect(res.status) then return res end
    local loc = res.headers.location
    if not loc then return res end
    if res.status == 303 or ((res.status == 301 or res.status == 302) and method == "POST") then
      if method ~= "HEAD" then method = "GET" end
      st.body = nil
    elseif type(st.body) == "function" then
      return res                                -- a streamed body cannot be sent again
    end
    res:body(PIECE)                             -- a short body: the connection is kept
    res:close()
    if followed >= redirects then return nil, "too many redirects" end
    followed = followed + 1
    url = resolve_location(u, loc)
  end
end

function Client:get(url, opts) return self:request("GET", url, opts) end

--- client:stats() -> the pool's counts
function Client:stats() return self.pool:stats() end

--- client:close() -> true: close its idle connections
function Client:close() return self.pool:close() end

Client.__close = Client.close

--- http.client([opts]) -> client
function M.client(opts)
  opts = check_opts(opts, CLIENT_ALLOWED, "http.client")
  local function n(k)
    local v = opts[k]
    if v == nil then return CLIENT_DEFAULTS[k] end
    return tonumber(v)
  end
  local ropts = {}
  for k, v in pairs(opts) do
    if CLIENT_DEFAULTS[k] == nil then ropts[k] = v end
  end
  local d = {}
  for k, v in pairs(REQUEST_DEFAULTS) do
    d[k] = ropts[k] ~= nil and tonumber(ropts[k]) or v
  end
  d.max_body = math.tointeger(d.max_body) or -1
  d.max_head = math.tointeger(d.max_head) or REQUEST_DEFAULTS.max_head
  local c = setmetatable({ opts = ropts, d = d, urls = {}, nurls = 0,
                           wait_timeout = n("wait_timeout") }, Client)
  c.pool = pool.new {
    connect = connect_fn,
    size = n("pool_size"), max = n("max_conns"),
    idle_timeout = n("idle_timeout"), wait_timeout = n("wait_timeout"),
  }
  return c
end

local default_client

--- http.request(method, url [, opts]) -> res | nil, err: through the
-- default client (created on first use; opts.client names another).
function M.request(method, url, opts)
  local client = opts and opts.client
  if client == nil then
    default_client = default_client or M.client()
    client = default_client
  end
  return client:request(method, url, opts)
end

function M.get(url, opts) return M.request("GET", url, opts) end

M.parse_url = parse_url

return M
