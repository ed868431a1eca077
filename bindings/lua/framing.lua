-- sockhost.framing -- length-prefixed messages over a connection or in a
-- string: a big-endian length of 1, 2 or 4 bytes ("u8", "u16", "u32") or a
-- varint ("varint": 7 bits a byte, least significant group first, high bit
-- set on all but the last byte, as in Protocol Buffers), then that many
-- bytes. Every read takes a maximum; a longer message is refused before any
-- of it is read.
local M = {}

local DEFAULT_MAX = 1024 * 1024
local fixed = { u8 = 1, u16 = 2, u32 = 4 }
local fmt = { u8 = ">I1", u16 = ">I2", u32 = ">I4" }
local VARINT_MAX_BYTES = 10      -- enough for any 64-bit length

local function checkkind(kind, level)
  if fixed[kind] == nil and kind ~= "varint" then
    error(("bad framing kind '%s' (expected u8, u16, u32 or varint)"):format(tostring(kind)), level + 1)
  end
end

local function checkmax(max, level)
  if max == nil then return DEFAULT_MAX end
  if math.type(max) ~= "integer" or max < 0 then
    error("bad maximum (a non-negative integer expected)", level + 1)
  end
  return max
end

local function varint(n)
  local out = {}
  repeat
    local b = n & 0x7f
    n = n >> 7
    out[#out + 1] = string.char(n ~= 0 and (b | 0x80) or b)
  until n == 0
  return table.concat(out)
end

--- framing.encode(kind, payload) -> the framed string.
-- Raises on a bad kind or a payload too long for the prefix.
function M.encode(kind, payload)
  checkkind(kind, 2)
  if type(payload) ~= "string" then error("bad payload (a string expected)", 2) end
  local n = #payload
  if kind == "varint" then return varint(n) .. payload end
  if n >= 1 << (8 * fixed[kind]) then
    error(("payload of %d bytes too long for a %s length"):format(n, kind), 2)
  end
  return string.pack(fmt[kind], n) .. payload
end

--- framing.decode(kind, s [, pos [, max]]) -> payload, next_pos
-- One message from s at pos (default 1). nil, "short" when s does not
-- hold all of it yet (append more and call again); nil, "too large" when
-- its length exceeds max; nil, "bad length" for a varint over 10 bytes.
function M.decode(kind, s, pos, max)
  checkkind(kind, 2)
  if type(s) ~= "string" then error("bad argument #2 (a string expected)", 2) end
  pos = pos or 1
  max = checkmax(max, 2)
  local n, start
  if kind == "varint" then
    n, start = 0, nil
    for i = 0, VARINT_MAX_BYTES - 1 do
      local b = s:byte(pos + i)
      if b == nil then return nil, "short" end
      n = n | ((b & 0x7f) << (7 * i))
      if b < 0x80 then start = pos + i + 1; break end
    end
    if start == nil or n < 0 then return nil, "bad length" end
  else
    local w = fixed[kind]
    if #s - pos + 1 < w then return nil, "short" end
    n, start = string.unpack(fmt[kind], s, pos)
  end
  if n > max then return nil, "too large" end
  if #s - start + 1 < n then return nil, "short" end
  return s:sub(start, start + n - 1), start + n
end

--- framing.read(conn, kind [, max]) -> payload | nil, err [, partial]
-- Blocking: reads one message from a connection. Errors: those of the
-- connection's reads ("closed", "timeout"), "too large" (the length exceeds
-- max, default 1 MiB; nothing of the body is read and the stream is out of
-- step, so close it), "bad length" (a varint over 10 bytes).
function M.read(conn, kind, max)
  checkkind(kind, 2)
  max = checkmax(max, 2)
  local n
  if kind == "varint" then
    n = 0
    for i = 0, VARINT_MAX_BYTES do
      if i == VARINT_MAX_BYTES then return nil, "bad length" end
      local b, err, partial = conn:read(1)
      if not b then return nil, err, partial end
      b = b:byte()
      n = n | ((b & 0x7f) << (7 * i))
      if b < 0x80 then break end
    end
    if n < 0 then return nil, "bad length" end
  else
    local head, err, partial = conn:read(fixed[kind])
    if not head then return nil, err, partial end
    n = string.unpack(fmt[kind], head)
  end
  if n > max then return nil, "too large" end
  if n == 0 then return "" end
  return conn:read(n)
end

--- framing.write(conn, kind, payload) -> true | nil, err
-- Blocking: sends the length and the payload in one write.
function M.write(conn, kind, payload)
  checkkind(kind, 2)
  if type(payload) ~= "string" then error("bad payload (a string expected)", 2) end
  if kind ~= "varint" and #payload >= 1 << (8 * fixed[kind]) then
    error(("payload of %d bytes too long for a %s length"):format(#payload, kind), 2)
  end
  local head = kind == "varint" and varint(#payload) or string.pack(fmt[kind], #payload)
  return conn:write(head, payload)
end

return M
