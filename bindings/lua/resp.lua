-- sockhost.resp -- RESP2, the Redis protocol, for servers and clients:
-- read a command (RESP array of bulk strings, or an inline command line as
-- typed into nc) or any reply from a connection; encode and write values;
-- decode from a string buffer.
--
-- Values: bulk string <-> Lua string; integer <-> Lua integer; simple
-- string <-> resp.status(s); error <-> resp.error(s); nil bulk <-> resp.null
-- (also Lua nil when encoding); nil array <-> resp.null_array; array <-> a
-- Lua sequence. Peer input never raises: a malformed or oversized value is
-- nil, "protocol error: ...", decided before anything too large is read.
local M = {}

local byte, sub, find, match, format = string.byte, string.sub, string.find, string.match, string.format
local concat, mtype = table.concat, math.type

local MiB = 1024 * 1024
-- A peer chooses the lengths it announces: the defaults keep what a handful
-- of peers can make a default host hold (--max-buffers, 256 MiB) small. A
-- bulk string is read into the connection's buffer before it becomes a Lua
-- string, and a command's strings are all held until it is whole: with 8 MiB
-- and 16 MiB (twice the bulk, as Redis's client-query-buffer-limit is twice
-- its proto-max-bulk-len), 32 peers sending their largest at once fit in
-- that budget, and one is far below a connection's share (64 MiB).
local DEFAULTS = {
  max_bulk = 8 * MiB,          -- longest bulk string
  max_bytes = 16 * MiB,        -- all the bulk strings of one value together
  max_elements = 1024 * 1024,  -- array elements in one value, all levels counted
  max_depth = 32,              -- arrays within arrays (a command: 1, always)
  max_line = 64 * 1024,        -- longest line, for decode (a conn has its own max_line)
}

local STAR, DOLLAR, PLUS, MINUS, COLON = 42, 36, 43, 45, 58
local CR, LF = 13, 10

---------------------------------------------------------------- values

local Status = { __name = "resp.status" }
local Error = { __name = "resp.error" }
function Status.__tostring(v) return v.msg end
function Error.__tostring(v) return v.msg end

local function one_line(s, what)
  if type(s) == "number" then s = tostring(s) end
  if type(s) ~= "string" then error(("bad %s (a string expected)"):format(what), 3) end
  if find(s, "[\r\n]") then s = s:gsub("[\r\n]", " ") end   -- as Redis does
  return s
end

--- resp.status(s) -> a simple string ("+OK"). CR and LF become spaces.
function M.status(s) return setmetatable({ msg = one_line(s, "status") }, Status) end

--- resp.error(s) -> an error reply ("-ERR ..."). CR and LF become spaces.
function M.error(s) return setmetatable({ msg = one_line(s, "error") }, Error) end

--- The nil bulk string ("$-1") and the nil array ("*-1").
M.null = setmetatable({}, { __name = "resp.null", __tostring = function() return "resp.null" end,
  __newindex = function() error("resp.null is read-only", 2) end })
M.null_array = setmetatable({}, { __name = "resp.null_array",
  __tostring = function() return "resp.null_array" end,
  __newindex = function() error("resp.null_array is read-only", 2) end })

--- resp.type(v) -> "bulk", "integer", "status", "error", "null",
-- "null_array", "array", or nil for what cannot be encoded.
function M.type(v)
  local tv = type(v)
  if tv == "string" or tv == "number" then return mtype(v) == "integer" and "integer" or "bulk" end
  if v == nil or v == M.null then return "null" end
  if v == M.null_array then return "null_array" end
  if tv ~= "table" then return nil end
  local mt = getmetatable(v)
  if mt == Status then return "status" end
  if mt == Error then return "error" end
  return "array"
end

---------------------------------------------------------------- encoding

local MAX_ENCODE_DEPTH = 256

local function put(buf, n, v, depth)
  local tv = type(v)
  if tv == "string" then
    buf[n + 1], buf[n + 2], buf[n + 3] = "$" .. #v .. "\r\n", v, "\r\n"
    return n + 3
  elseif tv == "number" then
    if mtype(v) == "integer" then buf[n + 1] = ":" .. v .. "\r\n"; return n + 1 end
    return put(buf, n, format("%.17g", v), depth)
  elseif v == nil or v == M.null then
    buf[n + 1] = "$-1\r\n"
  elseif v == M.null_array then
    buf[n + 1] = "*-1\r\n"
  elseif tv ~= "table" then
    error(("cannot encode a %s"):format(tv), depth + 3)
  elseif getmetatable(v) == Status then
    buf[n + 1] = "+" .. v.msg .. "\r\n"
  elseif getmetatable(v) == Error then
    buf[n + 1] = "-" .. v.msg .. "\r\n"
  else
    if depth >= MAX_ENCODE_DEPTH then error("arrays nested too deep (a cycle?)", depth + 3) end
    local len = #v
    buf[n + 1] = "*" .. len .. "\r\n"
    n = n + 1
    for i = 1, len do n = put(buf, n, v[i], depth + 1) end
    return n
  end
  return n + 1
end

--- resp.encode(v) -> string. Raises on what RESP2 cannot carry
-- (booleans, functions, ...) and on arrays nested over 256 deep.
function M.encode(v)
  if type(v) == "string" then return "$" .. #v .. "\r\n" .. v .. "\r\n" end
  if mtype(v) == "integer" then return ":" .. v .. "\r\n" end
  local buf = {}
  put(buf, 0, v, 0)
  return concat(buf)
end

--- resp.write(conn, v) -> true | nil, err: conn:write of the encoding.
function M.write(conn, v)
  if type(v) == "string" then return conn:write("$", #v, "\r\n", v, "\r\n") end
  return conn:write(M.encode(v))
end

---------------------------------------------------------------- limits

local function limits_of(l)
  if l == nil then return DEFAULTS end
  if type(l) ~= "table" then error("bad limits (a table expected)", 3) end
  local out = {}
  for k, v in pairs(l) do
    if DEFAULTS[k] == nil then error(("unknown limit '%s'"):format(tostring(k)), 3) end
    if mtype(v) ~= "integer" or v < 0 then
      error(("limit '%s' must be a non-negative integer"):format(k), 3)
    end
  end
  for k, v in pairs(DEFAULTS) do
    if l[k] == nil then out[k] = v else out[k] = l[k] end
  end
  return out
end

---------------------------------------------------------------- sources

-- The parser reads through rd(src, what), with what "L" (a line with its
-- end) or a byte count, as conn:read does: for a connection rd is its read
-- method; for a string, string_read over { s =, pos =, max_line = } that
-- says "short" when s ends too soon.
local function string_read(src, what)
  local s, pos = src.s, src.pos
  if what == "L" then
    local e = find(s, "\n", pos, true)
    if not e then
      if #s - pos + 1 > src.max_line then return nil, "line too long" end
      return nil, "short"
    end
    if e - pos > src.max_line then return nil, "line too long" end
    src.pos = e + 1
    return sub(s, pos, e)
  end
  if #s - pos + 1 < what then return nil, "short" end
  src.pos = pos + what
  return sub(s, pos, pos + what - 1)
end

-- A line that did not end in LF came at the end of the stream.
local function unterminated(line) return byte(line, -1) ~= LF end

local function shown(b)
  if b == nil then return "" end
  if b >= 32 and b < 127 then return string.char(b) end
  return format("\\x%02x", b)
end

-- The integer of a header line "<type><digits>\r\n", or nil.
local function header_int(line)
  local n = tonumber(match(line, "^.(%-?%d+)\r\n$"))
  if n and mtype(n) == "integer" then return n end
  return nil
end

local E_CRLF = "protocol error: expected CRLF after bulk"

-- The bulk payload of n bytes and its CRLF.
local function bulk(rd, src, n)
  local data, err = rd(src, n)
  if not data then return nil, err end
  local crlf
  crlf, err = rd(src, 2)
  if not crlf then return nil, err end
  if crlf ~= "\r\n" then return nil, E_CRLF end
  return data
end

---------------------------------------------------------------- replies

local parse_value

-- st counts what the value has taken so far: st.elements, st.bytes.
local function parse_array(rd, src, L, st, n, depth)
  if depth > L.max_depth then return nil, "protocol error: nested too deep" end
  st.elements = st.elements + n
  if st.elements > L.max_elements then return nil, "protocol error: too many elements" end
  local arr = {}
  for i = 1, n do
    local v, err = parse_value(rd, src, L, st, depth)
    if v == nil then return nil, err end
    arr[i] = v
  end
  return arr
end

local function sized(line, what)
  local n = header_int(line)
  if n == nil or n < -1 then return nil, "protocol error: invalid " .. what .. " length" end
  return n
end

function parse_value(rd, src, L, st, depth)
  local line, err = rd(src, "L")
  if not line then
    if err == "line too long" then err = "protocol error: line too long" end
    return nil, err
  end
  if unterminated(line) then return nil, "closed" end
  local t = byte(line, 1)
  if t == DOLLAR then
    local n, e = sized(line, "bulk")
    if n == nil then return nil, e end
    if n == -1 then return M.null end
    if n > L.max_bulk then return nil, "protocol error: bulk too large" end
    st.bytes = st.bytes + n
    if st.bytes > L.max_bytes then return nil, "protocol error: value too large" end
    return bulk(rd, src, n)
  elseif t == STAR then
    local n, e = sized(line, "multibulk")
    if n == nil then return nil, e end
    if n == -1 then return M.null_array end
    return parse_array(rd, src, L, st, n, depth + 1)
  elseif t == COLON then
    local n = header_int(line)
    if n == nil then return nil, "protocol error: invalid integer" end
    return n
  elseif t == PLUS or t == MINUS then
    if byte(line, -2) ~= CR then return nil, "protocol error: expected CRLF" end
    return setmetatable({ msg = sub(line, 2, -3) }, t == PLUS and Status or Error)
  elseif t == CR or t == LF then
    return nil, "protocol error: empty line"
  end
  return nil, ("protocol error: unknown type '%s'"):format(shown(t))
end

local function read_value(rd, src, limits)
  return parse_value(rd, src, limits, { elements = 0, bytes = 0 }, 0)
end

---------------------------------------------------------------- commands

local SPACE = "[ \t\n\v\f\r]"        -- C's isspace, as Redis's sdssplitargs
local ESCAPES = { n = "\n", r = "\r", t = "\t", b = "\b", a = "\a" }

-- A "double-quoted" section from pos (after the quote): its text and the
-- position after the closing quote, or nil when it is not closed.
local function dquoted(line, pos, parts)
  while true do
    local e = find(line, '[\\"]', pos)
    if not e then return nil end
    parts[#parts + 1] = sub(line, pos, e - 1)
    if byte(line, e) == 34 then return e + 1 end
    local hex = match(line, "^x(%x%x)", e + 1)
    if hex then
      parts[#parts + 1] = string.char(tonumber(hex, 16))
      pos = e + 4
    else
      local c = sub(line, e + 1, e + 1)
      if c == "" then return nil end
      parts[#parts + 1] = ESCAPES[c] or c
      pos = e + 2
    end
  end
end

-- A 'single-quoted' section: only \' is an escape.
local function squoted(line, pos, parts)
  while true do
    local e = find(line, "['\\]", pos)
    if not e then return nil end
    if byte(line, e) == 39 then
      parts[#parts + 1] = sub(line, pos, e - 1)
      return e + 1
    end
    if byte(line, e + 1) == 39 then
      parts[#parts + 1] = sub(line, pos, e - 1) .. "'"
      pos = e + 2
    else
      parts[#parts + 1] = sub(line, pos, e)
      pos = e + 1
    end
  end
end

local UNBALANCED = "protocol error: unbalanced quotes in request"

-- Split an inline command as redis-server does (sdssplitargs): words
-- separated by spaces; "..." with \n \r \t \b \a \xHH and \<c> escapes;
-- '...' with \'; a closing quote must be followed by a space or the end.
local function split_inline(line)
  local args, pos = {}, 1
  while true do
    pos = find(line, "[^ \t\n\v\f\r]", pos)
    if not pos then return args end
    local parts = {}
    while true do
      local b = byte(line, pos)
      if b == nil or b == 32 or b == 9 or b == 10 or b == 13 then break end
      if b == 34 or b == 39 then
        pos = (b == 34 and dquoted or squoted)(line, pos + 1, parts)
        if not pos or (pos <= #line and not find(line, "^" .. SPACE, pos)) then
          return nil, UNBALANCED
        end
        break
      end
      local e = find(line, "[ \t\n\r\"']", pos) or #line + 1
      parts[#parts + 1] = sub(line, pos, e - 1)
      pos = e
    end
    args[#args + 1] = concat(parts)
  end
end

local function parse_inline(line)
  local stop = #line - 1                        -- drop the LF ...
  if byte(line, stop) == CR then stop = stop - 1 end   -- ... and a CR before it
  local nul = find(line, "\0", 1, true)         -- Redis's C string ends at a NUL
  if nul and nul <= stop then stop = nul - 1 end
  return split_inline(sub(line, 1, stop))
end

-- Why a bulk header line of a command is not "$<len>\r\n".
local function bad_bulk_header(line, err)
  if not line then
    if err == "line too long" then err = "protocol error: line too long" end
    return nil, err
  end
  if unterminated(line) then return nil, "closed" end
  if byte(line, 1) ~= DOLLAR then
    return nil, ("protocol error: expected '$', got '%s'"):format(shown(byte(line, 1)))
  end
  return nil, "protocol error: invalid bulk length"
end

-- The n bulk strings of a command (n > 0). This is the hot path of a
-- server: one pattern match and three reads per argument, none of which
-- yields while the bytes are buffered.
local function command_args(rd, src, L, n)
  local args, bytes, max_bulk, max_bytes = {}, 0, L.max_bulk, L.max_bytes
  for i = 1, n do
    local line, err = rd(src, "L")
    local len = line and tonumber(match(line, "^%$(%d+)\r\n$"))
    if not len then return bad_bulk_header(line, err) end
    if len > max_bulk then return nil, "protocol error: bulk too large" end
    bytes = bytes + len
    if bytes > max_bytes then return nil, "protocol error: value too large" end
    local v, crlf
    v, err = rd(src, len)
    if not v then return nil, err end
    crlf, err = rd(src, 2)
    if crlf ~= "\r\n" then return nil, crlf and E_CRLF or err end
    args[i] = v
  end
  return args
end

-- A first line that is not "*<n>\r\n" with n >= 0: an error, the end of
-- the stream, "*-1" and such (an empty command), or an inline command.
local function other_command(line, err)
  if not line then
    if err == "line too long" then err = "protocol error: too big inline request" end
    return nil, err
  end
  if unterminated(line) then return nil, "closed" end
  if byte(line, 1) ~= STAR then return parse_inline(line) end
  if header_int(line) == nil then return nil, "protocol error: invalid multibulk length" end
  return {}                                     -- a negative count: nothing, as Redis
end

-- One command: a list of strings. Empty commands (an empty line, "*0") are
-- skipped, as Redis does.
local function read_command(rd, src, L)
  while true do
    local line, err = rd(src, "L")
    local n = line and tonumber(match(line, "^%*(%d+)\r\n$"))
    if n then
      if n > L.max_elements then return nil, "protocol error: too many elements" end
      if n > 0 then return command_args(rd, src, L, n) end
    else
      local args, perr = other_command(line, err)
      if args == nil or args[1] ~= nil then return args, perr end
    end
  end
end

---------------------------------------------------------------- API

--- resp.read(conn [, limits]) -> value | nil, err
-- Blocking: one value (a reply, or any RESP2 value) from a connection.
function M.read(conn, limits)
  return read_value(conn.read, conn, limits == nil and DEFAULTS or limits_of(limits))
end

-- The fast path (conn:resp_commands, core/sh_resp.c): waits while nothing
-- is buffered, then takes up to max commands (and arguments) of the common
-- form that are
-- whole in the input at once; false when the first is anything else (not
-- whole yet, inline, empty, malformed, over a limit), which the general
-- reader then takes as it always has. A conn-like object without the
-- method (a test double) always takes the general path.
local function fast_commands(conn, L, max)
  local f = conn.resp_commands
  if f == nil then return false end
  return f(conn, max, L.max_bulk, L.max_bytes, L.max_elements)
end

--- resp.read_command(conn [, limits]) -> { "SET", "k", "v" } | nil, err
-- Blocking: one command, a RESP array of bulk strings or an inline line.
function M.read_command(conn, limits)
  local L = limits == nil and DEFAULTS or limits_of(limits)
  local cmds, err = fast_commands(conn, L, 1)
  if cmds then return cmds[1] end
  if cmds == nil then return nil, err end
  return read_command(conn.read, conn, L)
end

--- resp.read_commands(conn [, limits [, max]]) -> { args, ... }, n | nil, err
-- Blocking: at least one command (as resp.read_command reads it) and, with
-- it, those after it already buffered whole, up to max of them (default
-- 1024), none begun once they hold max arguments: a pipelined batch in one
-- call, and a long one in parts between which the caller can yield. Each
-- args is a list of strings.
function M.read_commands(conn, limits, max)
  local L = limits == nil and DEFAULTS or limits_of(limits)
  local cmds, n = fast_commands(conn, L, max or 1024)
  if cmds then return cmds, n end
  if cmds == nil then return nil, n end
  local args, err = read_command(conn.read, conn, L)
  if args == nil then return nil, err end
  return { args }, 1
end

local function string_source(s, pos, L, fname)
  if type(s) ~= "string" then error(("bad argument #1 to '%s' (string expected)"):format(fname), 3) end
  if pos == nil then pos = 1 end
  if mtype(pos) ~= "integer" or pos < 1 then
    error(("bad argument #2 to '%s' (position >= 1 expected)"):format(fname), 3)
  end
  return { s = s, pos = pos, max_line = L.max_line }
end

-- Run a parser over a string: value, next position | nil, "short" | nil, err.
local function decode_with(parse, s, pos, limits, fname)
  local L = limits_of(limits)
  local src = string_source(s, pos, L, fname)
  local v, err = parse(string_read, src, L)
  if v == nil then return nil, err end
  return v, src.pos
end

--- resp.decode(s [, pos [, limits]]) -> value, next_pos | nil, "short" | nil, err
function M.decode(s, pos, limits)
  return decode_with(read_value, s, pos, limits, "resp.decode")
end

--- resp.decode_command(s [, pos [, limits]]) -> args, next_pos | nil, "short" | nil, err
function M.decode_command(s, pos, limits)
  return decode_with(read_command, s, pos, limits, "resp.decode_command")
end

return M
