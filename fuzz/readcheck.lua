-- readcheck.lua -- a property check of the stream read path, shared by the
-- libFuzzer target (fuzz/read_fuzz.c) and spec/fuzz_spec.lua.
--
-- check(input): the first byte picks the read format, the second seeds the
-- chunk sizes; the rest is sent through a real Unix-socket connection in
-- chunks of those sizes, and what the reader gets must put the bytes back
-- together exactly. Raises on a mismatch.
local sh = require "sockhost"

local M = {}
local NAME = "unix:@sockhost-readcheck-" .. tostring(math.random(1, 1e9))

local function chunks(payload, seed)
  local out, i, x = {}, 1, seed * 2654435761 % 4294967296 + 1
  while i <= #payload do
    x = (x * 1103515245 + 12345) % 2147483648
    local n = 1 + x % ((seed % 7 == 0) and 3 or 700)   -- often tiny pieces
    out[#out + 1] = payload:sub(i, i + n - 1)
    i = i + n
  end
  return out
end

local readers = {
  -- "L": lines with their ends, then the unterminated rest
  function(c)
    local t = {}
    while true do
      local l, err = c:read("L")
      if not l then assert(err == "closed", err) break end
      t[#t + 1] = l
    end
    return table.concat(t)
  end,
  -- "l": lines without their ends; CRLF or LF
  function(c, payload)
    local t = {}
    while true do
      local l, err = c:read("l")
      if not l then assert(err == "closed", err) break end
      t[#t + 1] = l
    end
    local expect, rest = {}, payload
    for line, nl in payload:gmatch("([^\n]*)(\n?)") do
      if nl == "" and line == "" then break end
      expect[#expect + 1] = nl == "\n" and line:gsub("\r$", "") or line
      if nl == "" then break end
    end
    assert(table.concat(t, "|") == table.concat(expect, "|"), "lines differ")
    return rest
  end,
  -- read(n): whole blocks, then nil, "closed", the rest
  function(c, _, seed)
    local n, t = 1 + seed % 97, {}
    while true do
      local s, err, partial = c:read(n)
      if not s then
        assert(err == "closed", err)
        assert(#partial < n, "partial too long")
        t[#t + 1] = partial
        break
      end
      assert(#s == n, "short block")
      t[#t + 1] = s
    end
    return table.concat(t)
  end,
  -- read_until: pieces between delimiters, then the rest
  function(c)
    local t = {}
    while true do
      local s, err, partial = c:read_until("\r\n")
      if not s then assert(err == "closed", err) t[#t + 1] = partial break end
      t[#t + 1] = s .. "\r\n"
    end
    return table.concat(t)
  end,
  -- read_some: everything, in whatever pieces
  function(c)
    local t = {}
    while true do
      local s, err = c:read_some(1 + #t % 300)
      if not s then assert(err == "closed", err) break end
      t[#t + 1] = s
    end
    return table.concat(t)
  end,
}

function M.check(input)
  if #input < 2 then return end
  local which = 1 + input:byte(1) % #readers
  local seed = input:byte(2)
  local payload = input:sub(3)
  local got, err
  sh.run(function()
    local srv = assert(sh.listen(NAME, function(c)
      c:setlimits({ max_line = 1 << 20 })
      local ok, res = pcall(readers[which], c, payload, seed)
      if ok then got = res else err = res end
    end))
    local c = assert(sh.connect(NAME))
    for _, piece in ipairs(chunks(payload, seed)) do
      assert(c:write(piece))
      if seed % 3 == 0 then sh.sleep(0) end   -- let the reader see the pieces apart
    end
    c:close()
    while got == nil and err == nil do sh.sleep(0.001) end
    srv:close()
  end, { timeout = 10 })
  if err then error("reader " .. which .. ": " .. tostring(err)) end
  if which ~= 2 and got ~= payload then
    error(("reader %d: %d bytes in, %d bytes out"):format(which, #payload, #got))
  end
end

return M
