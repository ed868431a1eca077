-- sockhost.http in-process: the head parser (http-parser plus the strict
-- rules), chunk sizes, the small helpers, the router, and http.serve over
-- real loopback connections with a handler that records its calls.
local H = require "helpers"
local sh = H.sh
local http = require "sockhost.http"

local function head(lines)
  return table.concat(lines, "\r\n") .. "\r\n\r\n"
end

local function parse_err(s)
  local h, err, status = http.parse_head(s)
  assert.is_nil(h)
  return err, status
end

describe("sockhost.http.parse_head", function()
  it("is the field sockhost.http and names its parser", function()
    assert.equals(http, sh.http)
    assert.matches("^http%-parser 2%.", http.parser)
  end)

  it("returns the method, target, path, query, version, framing and lower-cased headers", function()
    local h = assert(http.parse_head(head {
      "POST /a/b%20c?x=1&y=two#frag HTTP/1.1", "Host: example", "Content-Length: 12",
      "X-Empty:", "X-Pad: \t padded \t", "Accept: a", "accept: b", "Cookie: c=1", "Cookie: d=2" }))
    assert.equals("POST", h.method)
    assert.equals("/a/b%20c?x=1&y=two#frag", h.target)
    assert.equals("/a/b%20c", h.path)
    assert.equals("x=1&y=two", h.query_string)
    assert.equals("1.1", h.version)
    assert.equals(12, h.length)
    assert.is_false(h.chunked)
    assert.is_true(h.keep_alive)
    assert.same({ host = "example", ["content-length"] = "12", ["x-empty"] = "", ["x-pad"] = "padded",
                  accept = "a, b", cookie = "c=1; d=2" }, h.headers)
  end)

  it("knows keep-alive: 1.1 unless close, 1.0 only when asked", function()
    assert.is_false(http.parse_head(head { "GET / HTTP/1.1", "Host: a", "Connection: foo, close" }).keep_alive)
    assert.is_false(http.parse_head(head { "GET / HTTP/1.0" }).keep_alive)
    local h = http.parse_head(head { "GET / HTTP/1.0", "Connection: keep-alive" })
    assert.is_true(h.keep_alive)
    assert.equals("1.0", h.version)
  end)

  it("takes chunked bodies, absolute-form and asterisk-form targets", function()
    local h = http.parse_head(head { "PUT / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked" })
    assert.is_true(h.chunked)
    assert.is_nil(h.length)
    h = http.parse_head(head { "GET http://example:8080/p/q?r=s HTTP/1.1", "Host: example:8080" })
    assert.equals("/p/q", h.path)
    assert.equals("r=s", h.query_string)
    h = http.parse_head(head { "OPTIONS * HTTP/1.1", "Host: a" })
    assert.equals("*", h.path)
  end)

  it("refuses the request-smuggling shapes with 400", function()
    local cases = {
      { "content-length with transfer-encoding", { "POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Transfer-Encoding: chunked" } },
      { "content-length with transfer-encoding", { "POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Content-Length: 5" } },
      { "duplicate content-length", { "POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Content-Length: 5" } },
      { "duplicate content-length", { "POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Content-Length: 6" } },
      { "bad content-length", { "POST / HTTP/1.1", "Host: a", "Content-Length: 5, 5" } },
      { "bad content-length", { "POST / HTTP/1.1", "Host: a", "Content-Length: +5" } },
      { "bad content-length", { "POST / HTTP/1.1", "Host: a", "Content-Length: -1" } },
      { "bad content-length", { "POST / HTTP/1.1", "Host: a", "Content-Length: 0x10" } },
      { "bad content-length", { "POST / HTTP/1.1", "Host: a", "Content-Length:" } },
      { "bad content-length", { "POST / HTTP/1.1", "Host: a", "Content-Length: 1234567890123456" } },
      { "bad transfer-encoding", { "POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked" } },
      { "bad transfer-encoding", { "POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip" } },
      { "bad transfer-encoding", { "POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked, chunked" } },
      { "bad transfer-encoding", { "POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked" } },
      { "bad transfer-encoding", { "POST / HTTP/1.1", "Host: a", "Transfer-Encoding: xchunked" } },
      { "bad transfer-encoding", { "POST / HTTP/1.0", "Transfer-Encoding: chunked" } },
      { "bad header", { "GET / HTTP/1.1", "Host : a" } },
      { "bad header", { "GET / HTTP/1.1", "Host: a", "Content-Length : 5" } },
      { "bad header", { "GET / HTTP/1.1", "Host: a", ": x" } },
      { "bad header", { "GET / HTTP/1.1", "Host: a", "X Y: x" } },
      { "bad header", { "GET / HTTP/1.1", "Host: a", "X: a\0b" } },
      { "bad header", { "GET / HTTP/1.1", "Host: a", "novalue" } },
      { "folded header", { "GET / HTTP/1.1", "Host: a", "X: a", " b" } },
      { "folded header", { "GET / HTTP/1.1", "Host: a", "X: a", "\tb" } },
      { "bare CR", { "GET / HTTP/1.1", "Host: a", "X: a\rb" } },
      { "duplicate host", { "GET / HTTP/1.1", "Host: a", "Host: b" } },
      { "missing host", { "GET / HTTP/1.1" } },
      { "bad request line", { "GET  / HTTP/1.1", "Host: a" } },
      { "bad request line", { "GET / HTTP/1.1 ", "Host: a" } },
      { "bad request line", { "GET /a b HTTP/1.1", "Host: a" } },
      { "bad request line", { "GET / HTTP/1.x", "Host: a" } },
      { "bad request line", { "GET /", "Host: a" } },
      { "bad request line", { "FOO / HTTP/1.1", "Host: a" } },
      { "bad request line", { "get / HTTP/1.1", "Host: a" } },
      { "bad request line", { "GET /\1 HTTP/1.1", "Host: a" } },
    }
    for _, c in ipairs(cases) do
      local err, status = parse_err(head(c[2]))
      assert.equals(c[1], err, table.concat(c[2], " | "))
      assert.equals(400, status)
    end
  end)

  it("refuses bare LF anywhere, and anything but exactly one head", function()
    assert.same({ "bare LF", 400 }, { select(2, http.parse_head("GET / HTTP/1.1\nHost: a\n\n")) })
    assert.same({ "bare LF", 400 }, { select(2, http.parse_head("GET / HTTP/1.1\r\nHost: a\n\r\n")) })
    assert.same({ "bare LF", 400 }, { select(2, http.parse_head("GET / HTTP/1.1\r\nHost: a\r\n\n")) })
    assert.same({ "incomplete head", 400 }, { select(2, http.parse_head("GET / HTTP/1.1\r\nHost: a\r\n")) })
    assert.same({ "incomplete head", 400 }, { select(2, http.parse_head("")) })
    assert.same({ "data after head", 400 }, { select(2, http.parse_head(head { "GET / HTTP/1.1", "Host: a" } .. "GET")) })
  end)

  it("answers 505 to other versions and 431 past max_headers", function()
    assert.same({ "unsupported version", 505 }, { select(2, http.parse_head(head { "GET / HTTP/2.0", "Host: a" })) })
    assert.same({ "unsupported version", 505 }, { select(2, http.parse_head(head { "GET / HTTP/0.9" })) })
    local lines = { "GET / HTTP/1.1", "Host: a" }
    for i = 1, 5 do lines[#lines + 1] = "X-" .. i .. ": v" end
    assert.truthy(http.parse_head(head(lines), 6))
    assert.same({ "too many headers", 431 }, { select(2, http.parse_head(head(lines), 5)) })
    assert.has_error(function() http.parse_head("", 257) end)
    lines = { "GET / HTTP/1.1", "Host: a" }
    for i = 1, 99 do lines[#lines + 1] = "X-" .. i .. ": " .. i end
    local h = assert(http.parse_head(head(lines)))       -- 100: the default limit
    assert.equals("99", h.headers["x-99"])
    lines[#lines + 1] = "X-100: 100"
    assert.same({ "too many headers", 431 }, { select(2, http.parse_head(head(lines))) })
    assert.truthy(http.parse_head(head(lines), 256))
  end)

  it("parses chunk sizes strictly", function()
    assert.equals(26, http.chunk_size("1a\r"))
    assert.equals(26, http.chunk_size("1A;name=value\r"))
    assert.equals(0, http.chunk_size("0\r"))
    assert.equals(0xfffffffffffffff, http.chunk_size("fffffffffffffff\r"))
    for _, bad in ipairs { "", "\r", "1a", " 1a\r", "1a \r", "-1\r", "+1\r", "0x1\r", "g\r",
                           "1;\0\r", "1;a\nb\r", "1000000000000000\r" } do
      assert.same({ nil, "bad chunk size" }, { http.chunk_size(bad) }, bad)
    end
  end)

  it("decodes escapes and query strings", function()
    assert.equals("a b/c", http.unescape("a%20b%2fc"))
    assert.is_nil(http.unescape("%zz"))
    assert.is_nil(http.unescape("abc%2"))
    assert.same({ a = "1", b = "x y", c = "", ["d e"] = "&" }, http.parse_query("a=1&b=x+y&c&d%20e=%26&a=2&=z&bad=%x"))
    assert.same({}, http.parse_query(nil))
    assert.equals("Sun, 06 Nov 1994 08:49:37 GMT", http.date(784111777))
    assert.equals("Not Found", http.reason(404))
  end)

  it("gives canonical paths and their kind", function()
    local real, kind = http.realpath(".")
    assert.equals("directory", kind)
    assert.equals("file", select(2, http.realpath(real .. "/Makefile")))
    assert.same({ nil, "no such file or directory" }, { http.realpath("/no/such/file") })
  end)
end)

describe("sockhost.http's parts", function()
  it("keeps every name it had", function()
    local names = {}
    for k, v in pairs(http) do names[k] = type(v) end
    assert.same({ parser = "string", parse_head = "function", chunk_size = "function", realpath = "function",
                  reason = "function", date = "function", unescape = "function", parse_query = "function",
                  serve = "function", listen = "function", router = "function", static = "function",
                  mime = "table", request = "function", get = "function", client = "function" }, names)
  end)

  it("gathers modules of their own: util, server, router, static, client and the parser", function()
    local parts = {
      ["sockhost.http.parser"] = { "parse_head", "chunk_size", "realpath" },
      ["sockhost.http.util"] = { "reason", "date", "unescape", "parse_query" },
      ["sockhost.http.server"] = { "serve", "listen" },
      ["sockhost.http.router"] = { "router" },
      ["sockhost.http.static"] = { "static", "mime" },
      ["sockhost.http.client"] = { "request", "get", "client" },
    }
    for name, fields in pairs(parts) do
      local m = require(name)
      for _, f in ipairs(fields) do assert.equals(m[f], http[f], name .. "." .. f) end
    end
    assert.equals(require("sockhost.http.parser").version, http.parser)
  end)

  it("has parts that need no other part but sockhost.http.util", function()
    local saved = {}
    for k, v in pairs(package.loaded) do
      if k:find("^sockhost%.http") and k ~= "sockhost.http.parser" then saved[k] = v end
    end
    local want = {
      util = { "sockhost.http.util" },
      router = { "sockhost.http.router", "sockhost.http.util" },
      static = { "sockhost.http.static", "sockhost.http.util" },
      server = { "sockhost.http.server", "sockhost.http.util" },
      client = { "sockhost.http.client" },      -- and sockhost.pool
    }
    local ok, err = pcall(function()
      for part, loaded in pairs(want) do
        for k in pairs(saved) do package.loaded[k] = nil end
        require("sockhost.http." .. part)
        local got = {}
        for k in pairs(package.loaded) do
          if k:find("^sockhost%.http") and k ~= "sockhost.http.parser" then got[#got + 1] = k end
        end
        table.sort(got)
        assert.same(loaded, got, part)
      end
    end)
    for k in pairs(package.loaded) do
      if k:find("^sockhost%.http") and k ~= "sockhost.http.parser" then package.loaded[k] = nil end
    end
    for k, v in pairs(saved) do package.loaded[k] = v end
    assert(ok, err)
  end)
end)

describe("sockhost.http router", function()
  local function req(method, path)
    return { method = method, path = path }
  end
  local app = http.router()
  app:get("/", function() return "root" end)
  app:get("/users/:id", function(r) return "user " .. r.params.id end)
  app:post("/users/:id", function(r) return "posted " .. r.params.id end)
  app:get("/files/*rest", function(r) return "rest " .. r.params.rest end)
  app:route("DELETE", "/a/:x/b/:y", function(r) return r.params.x .. "+" .. r.params.y end)

  it("matches literal paths, parameters (decoded) and a rest", function()
    assert.equals("root", app(req("GET", "/")))
    assert.equals("user 42", app(req("GET", "/users/42")))
    assert.equals("user a b", app(req("GET", "/users/a%20b")))
    assert.equals("user 7", app(req("HEAD", "/users/7")))
    assert.equals("posted 7", app(req("POST", "/users/7")))
    assert.equals("rest x/y%2Fz", app(req("GET", "/files/x/y%2Fz")))
    assert.equals("rest ", app(req("GET", "/files")))
    assert.equals("1+2", app(req("DELETE", "/a/1/b/2")))
  end)

  it("answers 404 for unknown paths and 405 with Allow for known ones", function()
    assert.equals(404, app(req("GET", "/nope")))
    assert.equals(404, app(req("GET", "/users/1/2")))
    local status, headers = app(req("PUT", "/users/1"))
    assert.equals(405, status)
    assert.same({ Allow = "GET, HEAD, POST" }, headers)
    status, headers = app(req("POST", "/"))
    assert.equals(405, status)
    assert.same({ Allow = "GET, HEAD" }, headers)
  end)

  it("splits paths into segments in C, saying whether one holds a '%' and is in normal form", function()
    local P = require "sockhost.http.parser"
    assert.same({ {}, false, true }, { P.split_path("/") })
    assert.same({ { "a", "b" }, false, true }, { P.split_path("/a/b") })
    assert.same({ { "a", "b" }, false, false }, { P.split_path("//a//b/") })
    assert.same({ { "a" }, false, false }, { P.split_path("/a/") })
    assert.same({ { "*" }, false, false }, { P.split_path("*") })
    assert.same({ {}, false, false }, { P.split_path("") })
    assert.same({ { "x%41", "y" }, true, true }, { P.split_path("/x%41/y") })
  end)

  it("says whether a path is in normal form as split_path does, without splitting it", function()
    local P = require "sockhost.http.parser"
    for _, path in ipairs { "/", "/a/b", "//a//b/", "/a/", "*", "", "/x%41/y", "a/b", "/a//b", "//" } do
      assert.equals(select(3, P.split_path(path)), P.normal_path(path), path)
    end
  end)

  it("matches dynamic patterns in C: the first after an index, params decoded, the rest raw", function()
    local P = require "sockhost.http.parser"
    local rs = P.routes()
    local pat, path = "", ""
    for i = 1, 20 do pat = pat .. "/:p" .. i; path = path .. "/v" .. i end   -- past the C stack's room
    assert.equals(1, rs:add(pat))
    assert.equals(2, rs:add("/long/:x"))
    assert.equals(3, rs:add("/r/*rest"))
    assert.equals(4, rs:add("/:a/items"))
    local i, p = rs:match(path)
    assert.equals(1, i)
    assert.equals("v1", p.p1)
    assert.equals("v20", p.p20)
    i, p = rs:match("/long/" .. ("%41"):rep(200))                -- decoded past the C stack's room
    assert.same({ 2, { x = ("A"):rep(200) } }, { i, p })
    assert.is_nil(rs:match("/long/" .. ("%41"):rep(200) .. "%4"))  -- a malformed escape: no match
    assert.is_nil(rs:match("/long/a%zz"))
    assert.same({ 3, { rest = "a/%41/" } }, { rs:match("/r//a/%41/") })
    assert.same({ 3, { rest = "" } }, { rs:match("/r") })
    assert.same({ 3, { rest = "items" } }, { rs:match("/r/items") })   -- the rest first; then after it
    assert.same({ 4, { a = "r" } }, { rs:match("//r//items/", 3) })
    assert.is_nil(rs:match("/r/items", 4))
    assert.is_nil(rs:match("/nothing/here/at/all"))
  end)

  it("matches routes in the order they were added, whatever their first segment", function()
    local r = http.router()
    r:get("/:any/x", function() return "any" end)
    r:get("/a/:y", function() return "a" end)
    r:get("//b//*rest", function(q) return "rest " .. q.params.rest end)
    assert.equals("any", r(req("GET", "/a/x")))
    assert.equals("a", r(req("GET", "/a/z")))
    assert.equals("any", r(req("GET", "//a//x/")))
    assert.equals("rest c//d", r(req("GET", "/b/c//d")))
    assert.equals(404, r(req("GET", "/a%zz/x")))     -- a malformed escape matches no parameter
    assert.equals(404, r(req("GET", "/c")))
  end)

  it("raises on bad routes", function()
    assert.has_error(function() app:get("nope", function() end) end)
    assert.has_error(function() app:get("/*a/b", function() end) end)
    assert.has_error(function() app:get("/x", 42) end)
  end)
end)

describe("sockhost.http.serve", function()
  local tsh = H.tracked_sh(after_each)

  -- Start http.serve with 'handler' on a fresh port; send each request
  -- string (in one write), read everything until the server closes or
  -- 'settle' seconds pass without bytes; returns what came back.
  local function exchange(handler, opts, requests, settle)
    return H.run(function()
      local srv = assert(tsh.listen("tcp://127.0.0.1:0", function(conn)
        http.serve(conn, handler, opts)
      end))
      local c = assert(sh.connect(srv:address()))
      c:settimeout(settle or 0.5)
      for _, r in ipairs(requests) do assert(c:write(r)) end
      local got = {}
      while true do
        local data = c:read_some()
        if not data then break end
        got[#got + 1] = data
      end
      c:close()
      srv:close()
      return table.concat(got)
    end)
  end

  -- The responses in 'out': { status, head, body } each (Content-Length,
  -- chunked, or none for 1xx/204/304).
  local function responses(out)
    local list, pos = {}, 1
    while pos <= #out do
      local s, e = out:find("\r\n\r\n", pos, true)
      if not s then break end
      local headtext = out:sub(pos, s + 1)
      local status = tonumber(headtext:match("^HTTP/1%.1 (%d%d%d)"))
      local len = tonumber(headtext:match("\r\nContent%-Length: (%d+)\r\n"))
      local body = ""
      pos = e + 1
      if headtext:find("Transfer%-Encoding: chunked") then
        local parts = {}
        while true do
          local n, after = out:match("^(%x+)\r\n()", pos)
          n = tonumber(n, 16)
          parts[#parts + 1] = out:sub(after, after + n - 1)
          pos = after + n + 2
          if n == 0 then break end
        end
        body = table.concat(parts)
      elseif len then
        body = out:sub(pos, pos + len - 1)
        pos = pos + len
      end
      list[#list + 1] = { status = status, head = headtext, body = body }
    end
    return list
  end

  local function bodies(out)
    local t = {}
    for i, r in ipairs(responses(out)) do t[i] = r.body end
    return t
  end

  local function recorder()
    local calls = {}
    return calls, function(req, res)
      calls[#calls + 1] = req.method .. " " .. req.target
      if req.path == "/body" then
        local body, err = req:body()
        if not body then return 500, "body: " .. tostring(err) end
        return 200, "got " .. #body .. ": " .. body
      end
      if req.path == "/stream" then
        res:header("Content-Type", "text/plain")
        res:write("one,")
        res:write("two")
        return
      end
      if req.path == "/boom" then error("boom") end
      return 200, { ["X-Seen"] = tostring(#calls) }, "hello " .. req.path
    end
  end

  it("answers pipelined requests in order on one connection", function()
    local calls, handler = recorder()
    local out = exchange(handler, nil, {
      "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n" ..
      "POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" ..
      "GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" })
    assert.same({ "GET /one", "GET /two", "POST /body", "GET /three" }, calls)
    assert.same({ "hello /one", "hello /two", "got 3: abc", "hello /three" }, bodies(out))
    assert.matches("Connection: close\r\n", out)
  end)

  it("decodes chunked bodies (extensions and trailers skipped) and streams chunked responses", function()
    local calls, handler = recorder()
    local out = exchange(handler, nil, {
      "POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "3;ext=1\r\nabc\r\n0A\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
      "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n" })
    assert.same({ "POST /body", "GET /stream" }, calls)
    assert.matches("got 13: abc0123456789", out, 1, true)
    assert.matches("Transfer-Encoding: chunked\r\n\r\n4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n", out, 1, true)
  end)

  it("sends no body to HEAD, with the length GET would have", function()
    local _, handler = recorder()
    local out = exchange(handler, nil, { "HEAD /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" })
    assert.matches("^HTTP/1.1 200 OK\r\n", out)
    assert.matches("Content%-Length: 8\r\n", out)
    assert.matches("\r\n\r\n$", out)
  end)

  it("answers the smuggling shapes 400 without calling the handler, and closes", function()
    for _, bad in ipairs {
      "POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
      "POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
      "GET / HTTP/1.1\nHost: a\n\n",
      "GET / HTTP/1.1\r\nHost: a\r\nX: 1\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n",
      "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
      "POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
      "POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
      "POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
      "POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
    } do
      local calls, handler = recorder()
      local out = exchange(handler, nil, { bad .. "GET /after HTTP/1.1\r\nHost: a\r\n\r\n" })
      assert.same({}, calls, bad)
      assert.matches("^HTTP/1.1 400 Bad Request\r\n.*Connection: close\r\n\r\n400 Bad Request\n$", out)
    end
  end)

  it("answers 414, 431 and 413 past the limits without calling the handler", function()
    local opts = { max_line = 100, max_head = 300, max_headers = 4, max_body = 10 }
    local many = "GET / HTTP/1.1\r\nHost: a\r\n" .. ("X: y\r\n"):rep(4) .. "\r\n"
    for _, c in ipairs {
      { 414, "GET /" .. ("a"):rep(100) .. " HTTP/1.1\r\nHost: a\r\n\r\n" },
      { 431, "GET / HTTP/1.1\r\nHost: a\r\nX: " .. ("a"):rep(100) .. "\r\n\r\n" },
      { 431, "GET / HTTP/1.1\r\nHost: a\r\n" .. ("X: " .. ("a"):rep(90) .. "\r\n"):rep(3) .. "\r\n" },
      { 431, many },
      { 413, "POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n01234567890" },
      { 413, "POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n6\r\n012345\r\n0\r\n\r\n" },
      { 413, "POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n" },
    } do
      local calls, handler = recorder()
      local out = exchange(handler, opts, { c[2] })
      assert.same({}, calls, c[2])
      assert.matches("^HTTP/1.1 " .. c[1] .. " ", out)
      assert.matches("Connection: close\r\n", out)
    end
  end)

  it("keeps HTTP/1.0 connections open only when asked", function()
    local calls, handler = recorder()
    local out = exchange(handler, nil, { "GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n" })
    assert.same({ "GET /a" }, calls)
    assert.matches("Connection: close\r\n", out)
    calls, handler = recorder()
    out = exchange(handler, nil, { "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n" })
    assert.same({ "GET /a", "GET /b" }, calls)
    assert.matches("Connection: keep%-alive\r\n.*Connection: close\r\n", out)
  end)

  it("sends 100 Continue before reading an expected body, 417 for other expectations", function()
    local calls, handler = recorder()
    local out = exchange(handler, nil, {
      "POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi" })
    assert.same({ "POST /body" }, calls)
    assert.matches("^HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n.*got 2: hi$", out)
    calls, handler = recorder()
    out = exchange(handler, nil, { "POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: magic\r\n\r\nhi" })
    assert.same({}, calls)
    assert.matches("^HTTP/1.1 417 ", out)
  end)

  it("lets a streaming handler read the body itself (buffer_body = false)", function()
    local pieces = {}
    local out = exchange(function(req)
      while true do
        local p = req:read(4)
        if not p then break end
        pieces[#pieces + 1] = p
      end
      return 200, "ok"
    end, { buffer_body = false }, {
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789" ..
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n0\r\n\r\n" })
    for _, p in ipairs(pieces) do assert.is_true(#p >= 1 and #p <= 4) end   -- as they arrive
    assert.equals("0123456789abcdef", table.concat(pieces))
    local n = select(2, out:gsub("HTTP/1.1 200 OK", ""))
    assert.equals(2, n)
  end)

  it("hands a buffered body out through req:read too", function()
    local pieces = {}
    exchange(function(req)
      while true do
        local p = req:read(4)
        if not p then break end
        pieces[#pieces + 1] = p
      end
      assert(req:body() == "0123456789")
      return 204
    end, nil, { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789" })
    assert.same({ "0123", "4567", "89" }, pieces)
  end)

  it("answers 500 to a handler that sets a Content-Length and sends another length", function()
    local was = sh.log_level("off")
    finally(function() sh.log_level(was) end)
    local out = exchange(function(_, res) res:header("Content-Length", 5) end, nil,
      { "GET / HTTP/1.1\r\nHost: a\r\n\r\n" })
    assert.matches("^HTTP/1.1 500 ", out)
  end)

  it("drains a body the handler did not read, and keeps the connection", function()
    local calls = {}
    local out = exchange(function(req)
      calls[#calls + 1] = req.path
      return 204
    end, { buffer_body = false }, {
      "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" ..
      "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" ..
      "GET /c HTTP/1.1\r\nHost: a\r\n\r\n" })
    assert.same({ "/a", "/b", "/c" }, calls)
    assert.equals(3, select(2, out:gsub("HTTP/1.1 204 No Content\r\n", "")))
    assert.not_matches("Content%-Length", out)
  end)

  it("answers 500 when the handler raises or returns nonsense", function()
    local was = sh.log_level("off")         -- the failures are logged at error
    finally(function() sh.log_level(was) end)
    local _, handler = recorder()
    local out = exchange(handler, nil, { "GET /boom HTTP/1.1\r\nHost: a\r\n\r\n" })
    assert.matches("^HTTP/1.1 500 Internal Server Error\r\n", out)
    out = exchange(function() return {} end, nil, { "GET / HTTP/1.1\r\nHost: a\r\n\r\n" })
    assert.matches("^HTTP/1.1 500 ", out)
    out = exchange(function() return 99 end, nil, { "GET / HTTP/1.1\r\nHost: a\r\n\r\n" })
    assert.matches("^HTTP/1.1 500 ", out)
    out = exchange(function(_, res) res:header("X", "a\r\nInjected: 1") end, nil,
      { "GET / HTTP/1.1\r\nHost: a\r\n\r\n" })
    assert.matches("^HTTP/1.1 500 ", out)
    assert.not_matches("Injected", out)
  end)

  it("answers a half-sent request with 408 after the timeout, and ends idle keep-alive quietly", function()
    local calls, handler = recorder()
    local out = exchange(handler, { timeout = 0.2, keepalive_timeout = 0.2 },
      { "GET / HTTP/1.1\r\nHost: a\r\n" }, 2)
    assert.same({}, calls)
    assert.matches("^HTTP/1.1 408 ", out)
    local t0 = sh.now()
    out = exchange(handler, { keepalive_timeout = 0.2 }, { "GET / HTTP/1.1\r\nHost: a\r\n\r\n" }, 2)
    assert.matches("^HTTP/1.1 200 OK\r\n.*hello /$", out)
    assert.is_true(sh.now() - t0 < 1.5)
  end)

  it("raises on bad options and handlers", function()
    assert.has_error(function() http.serve(nil, function() end, { nope = 1 }) end, "unknown option 'nope'")
    assert.has_error(function() http.serve(nil, function() end, { max_body = 0 }) end)
    assert.has_error(function() http.serve(nil, 42) end)
    assert.has_error(function() http.listen("tcp://127.0.0.1:0", function() end, { max_headers = 300 }) end)
  end)
end)
