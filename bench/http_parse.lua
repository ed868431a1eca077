-- http_parse.lua -- micro-benchmark behind sockhost.http's choice of parser:
-- the C head parser on http-parser (sockhost.http.parse_head) against a
-- hand-written strict Lua parser (patterns; the same checks for the cases
-- it covers), on the head wrk sends and on a browser-like head.
--   ./sockhost bench/http_parse.lua [iterations]
local http = require "sockhost.http"
local N = tonumber(arg and arg[1]) or 200000

local TCHAR = "^([%w!#$%%&'*+%-.^_`|~]+):[ \t]*([^\r\n]-)[ \t]*\r\n()"

-- A strict hand-written parser: request line, token names, CRLF only, no
-- folding, control characters refused, one Content-Length of digits,
-- Transfer-Encoding exactly chunked and not with Content-Length, one Host.
local function lua_parse(s)
  local method, target, major, minor, pos = s:match("^(%u+) ([^ %c]+) HTTP/(%d)%.(%d)\r\n()")
  if not method then return nil, "bad request line", 400 end
  if major ~= "1" or (minor ~= "0" and minor ~= "1") then return nil, "unsupported version", 505 end
  local headers, n, length, chunked, nhost = {}, 0, nil, false, 0
  while true do
    if s:byte(pos) == 13 and s:byte(pos + 1) == 10 then pos = pos + 2; break end
    local name, value, nxt = s:match(TCHAR, pos)
    if not name or value:find("[%z\1-\8\11-\31\127]") then return nil, "bad header", 400 end
    n = n + 1
    if n > 100 then return nil, "too many headers", 431 end
    name = name:lower()
    if name == "content-length" then
      if length or chunked or not value:find("^%d+$") or #value > 15 then return nil, "bad content-length", 400 end
      length = tonumber(value)
    elseif name == "transfer-encoding" then
      if length or chunked or value:lower() ~= "chunked" or minor == "0" then return nil, "bad transfer-encoding", 400 end
      chunked = true
    elseif name == "host" then
      nhost = nhost + 1
    end
    local old = headers[name]
    headers[name] = old and (old .. ", " .. value) or value
    pos = nxt
  end
  if pos ~= #s + 1 then return nil, "data after head", 400 end
  if nhost > 1 or (nhost == 0 and minor == "1") then return nil, "bad host", 400 end
  local path, query = target:match("^([^?#]*)%??([^#]*)")
  return { method = method, target = target, path = path, query_string = query ~= "" and query or nil,
           version = major .. "." .. minor, headers = headers, length = length, chunked = chunked,
           keep_alive = minor == "1" and not (headers.connection or ""):lower():find("close") }
end

local heads = {
  wrk = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
  browser = table.concat({
    "GET /static/app.js?v=3 HTTP/1.1", "Host: example.org",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0",
    "Accept: */*", "Accept-Language: en-US,en;q=0.5", "Accept-Encoding: gzip, deflate, br",
    "Referer: https://example.org/", "Connection: keep-alive", "Cookie: a=1; b=2; session=0123456789abcdef",
    "Sec-Fetch-Dest: script", "Sec-Fetch-Mode: no-cors", "Sec-Fetch-Site: same-origin",
    "If-None-Match: \"abc123\"", "Cache-Control: max-age=0" }, "\r\n") .. "\r\n\r\n",
}

-- Both must agree on these before their speed means anything.
for _, h in pairs(heads) do
  local a, b = http.parse_head(h), lua_parse(h)
  assert(a.method == b.method and a.path == b.path and a.headers.host == b.headers.host)
end
for _, bad in ipairs { "GET / HTTP/1.1\nHost: a\n\n", "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
                       "GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
                       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n" } do
  assert(not http.parse_head(bad) and not lua_parse(bad), bad)
end

local function time(f, s)
  local t0 = os.clock()
  for _ = 1, N do f(s) end
  return (os.clock() - t0) / N * 1e9
end

print(("%d iterations each, ns per head (lower is better); %s"):format(N, http.parser))
for _, name in ipairs { "wrk", "browser" } do
  local s = heads[name]
  local c, l = time(http.parse_head, s), time(lua_parse, s)
  print(("%-8s %4d bytes  C/http-parser %6.0f ns   hand-written Lua %6.0f ns   Lua/C %.2f")
    :format(name, #s, c, l, l / c))
  sockhost.sleep(0)
end
